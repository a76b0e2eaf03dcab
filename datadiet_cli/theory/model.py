"""`datadiet theory`: the teacher-student perceptron theory of data pruning (Sorscher et al. 2022, §3, App. A).

Setting: inputs x ~ N(0, I_N), labels y = sign(T·x) from a teacher T, a pruning probe T_p at angle θ to T.
A dataset of P_tot = α_tot·N examples is pruned by probe margin |T_p·x| (keep hard = the fraction f with the
smallest margins, keep easy = the f largest) to P = α·N examples, α = α_prune = f·α_tot, and a max-margin
student J is trained on them. Its test error is ε = arccos(R)/π, R the cosine between J and T.

Theory (θ = 0, derivation in docs/theory.md): with r = R/√(1-R²), k = κ/√(1-R²) (κ the student's margin),
F(a) = E_z[(a - z)_+²] and ⟨·⟩ the average over the kept teacher margins |t|, the replica saddle point is

    α ⟨F(k - r|t|)⟩ = 1                                  (the version space shrinks to one point)
    κ(r) = k(r)/√(1 + r²) is globally maximal over r      (stationary: (1 + r²)⟨F'·|t|⟩ = k r ⟨F'⟩)

Both are solved in log r, so the tolerance on ε = arctan(1/r)/π is relative, however small ε is.
Everything here is pure numpy/scipy; scipy and matplotlib are imported inside the functions that use them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datadiet_cli.data import seeds
from datadiet_cli.errors import OptionError, SolverError

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(20)
# Beyond 12 standard units both the Gaussian weight and F(a) (a < -12) are below 1e-31 of what is kept.
_TAIL = 12.0
_LOG_R_MAX = 80.0  # ε = arctan(1/r)/π below 1e-35 is beyond any question anyone asks
# κ(r) is flat below r = e^-8 (it moves by r² there) and its features are wider than half a unit of log r.
_SCAN_START, _SCAN_STEP = -8.0, 0.5


class Policy(str, enum.Enum):
    hard = "hard"  # keep the f smallest |margins| (near the boundary): best when data is abundant
    easy = "easy"  # keep the f largest |margins|: best when data is scarce


@dataclass(frozen=True)
class Solution:
    epsilon: float  # test error arccos(R)/π of the max-margin student
    R: float  # cosine between the student and the teacher
    kappa: float  # the student's margin κ (inputs and weights normalised as in the paper)


@dataclass(frozen=True)
class ParetoPoint:
    alpha: float  # α_prune = kept examples per parameter
    fraction: float  # f_opt: the kept fraction with the lowest ε at this α_prune
    keep: Policy  # the policy that reaches it
    epsilon: float  # ε at f_opt
    epsilon_unpruned: float  # ε at f = 1 (the same α_prune drawn at random), for comparison
    at_grid_edge: bool  # f_opt is the smallest fraction searched: the true optimum may be smaller still


@dataclass(frozen=True)
class SimulationConfig:
    alpha_tot: float  # α_tot = P_tot/N: examples per parameter before pruning
    fraction: float = 1.0  # f: kept fraction, α_prune = f·α_tot
    n: int = 200  # input dimension N (the paper's App. B used 200)
    theta: float = 0.0  # angle between probe and teacher in degrees (0 = prune by the teacher's own margin)
    keep: Policy = Policy.hard  # which probe margins are kept
    draws: int = 100  # independent datasets (the paper used 100)
    seed: int = 0  # draw d uses the stream (seed, d): same seed, same numbers


@dataclass(frozen=True)
class SimulationResult:
    epsilon_mean: float  # mean test error over draws
    sem: float  # standard error of that mean
    epsilons: tuple[float, ...]  # per-draw test errors
    n_kept: int  # P = round(f·P_tot) examples the student is trained on
    alpha_prune: float  # n_kept / N


# -- validation --------------------------------------------------------------------------------


def check_alpha(alpha: float, option: str = "--alpha") -> float:
    if not (math.isfinite(alpha) and alpha > 0):
        raise OptionError(f"{option} {alpha} must be a positive number of examples per parameter, e.g. {option} 2")
    return float(alpha)


def check_fraction(fraction: float, option: str = "--f") -> float:
    if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
        raise OptionError(f"{option} {fraction} is outside (0, 1]; e.g. {option} 0.3 keeps 30% of the data")
    return float(fraction)


def check_theta(theta: float) -> float:
    if not (math.isfinite(theta) and 0.0 <= theta <= 90.0):
        raise OptionError(f"--theta {theta} is outside [0, 90] degrees; e.g. --theta 10 for a good probe")
    return float(theta)


# -- special functions ---------------------------------------------------------------------------


def _gauss(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / _SQRT_2PI


def _second_moment(a: np.ndarray) -> np.ndarray:
    """F(a) = E_z[(a - z)_+²] for z ~ N(0, 1)."""
    from scipy.special import ndtr

    return (1.0 + a * a) * ndtr(a) + a * _gauss(a)


def _second_moment_slope(a: np.ndarray) -> np.ndarray:
    """F'(a) = 2 E_z[(a - z)_+]."""
    from scipy.special import ndtr

    return 2.0 * (a * ndtr(a) + _gauss(a))


def kept_band(fraction: float, keep: Policy) -> tuple[float, float]:
    """The interval of |teacher margin| that the policy keeps, holding the fraction f of N(0, 1)."""
    from scipy.special import ndtri

    if fraction >= 1.0:
        return 0.0, math.inf
    if keep is Policy.hard:
        return 0.0, float(ndtri(0.5 + 0.5 * fraction))
    return float(-ndtri(0.5 * fraction)), math.inf  # not ndtri(1 - f/2): exact for tiny f


# -- the saddle point --------------------------------------------------------------------------


def _nodes(lo: float, hi: float, k: float, r: float, density_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights (including the kept density 2φ(t)/f) on the band, in panels of ≤ 1/r."""
    top = min(hi, lo + _TAIL)
    if r > 0:
        top = min(top, (k + _TAIL) / r)  # beyond, a = k - r t < -12 and F(a) is negligible
    if top <= lo:
        return np.array([lo]), np.array([0.0])
    width = min(0.5, 1.0 / r) if r > 0 else 0.5
    edges = np.linspace(lo, top, math.ceil((top - lo) / width) + 1)
    left, right = edges[:-1, None], edges[1:, None]
    t = (0.5 * (left + right) + 0.5 * (right - left) * _GAUSS_NODES).ravel()
    w = (0.5 * (right - left) * _GAUSS_WEIGHTS).ravel()
    return t, w * density_scale * _gauss(t)


def _averages(k: float, r: float, band: tuple[float, float], fraction: float) -> tuple[float, float, float]:
    """⟨F(a)⟩, ⟨F'(a)|t|⟩, ⟨F'(a)⟩ over the kept margins, a = k - r|t|."""
    t, w = _nodes(band[0], band[1], k, r, 2.0 / fraction)
    a = k - r * t
    slope = _second_moment_slope(a)
    return float(w @ _second_moment(a)), float(w @ (slope * t)), float(w @ slope)


def _margin_for(
    r: float, alpha: float, band: tuple[float, float], fraction: float, guess: float | None = None
) -> float:
    """k solving α⟨F(k - r|t|)⟩ = 1 by Newton's method from the right.

    ⟨F⟩ is convex and increasing in k, so Newton started where the left side exceeds 1 descends
    monotonically onto the unique root (no overshoot, no bracketing needed).
    """
    k = r * band[0] + 1.0 if guess is None else guess
    step = max(0.1, 0.1 * abs(k))
    value, _, slope = _averages(k, r, band, fraction)
    while alpha * value <= 1.0:
        k += step
        step *= 2.0
        value, _, slope = _averages(k, r, band, fraction)
    for _ in range(200):
        change = (alpha * value - 1.0) / (alpha * slope)
        k -= change
        if abs(change) <= 4e-16 * max(1.0, abs(k)):
            break
        value, _, slope = _averages(k, r, band, fraction)
        if alpha * value <= 1.0:  # rounding reached the root from below: it is as exact as doubles allow
            break
    return k


def _profile(
    log_r: float, alpha: float, band: tuple[float, float], fraction: float, guess: float | None = None
) -> tuple[float, float, float]:
    """(k, κ, h) at r = e^log_r, where h has the sign of dκ/dr and lies in [-1, 1]."""
    r = math.exp(log_r)
    k = _margin_for(r, alpha, band, fraction, guess)
    _, slope_t, slope = _averages(k, r, band, fraction)
    rising, falling = (1.0 + r * r) * slope_t, k * r * slope
    return k, k / math.sqrt(1.0 + r * r), (rising - falling) / (rising + abs(falling))


def solve(alpha: float, fraction: float = 1.0, keep: Policy = Policy.hard) -> Solution:
    """R, κ and ε of the max-margin student trained on α_prune·N examples kept by the policy (θ = 0).

    The max-margin student is the global maximum of κ(r). κ(r) can have two local maxima (keep hard
    with small f near α = 2: one student that ignores the teacher and memorises, one aligned with it);
    the jump between them is the steep drop of the learning curve. So κ is scanned on a grid of log r
    and every local maximum is refined; the largest κ wins.
    """
    from scipy.optimize import brentq

    alpha = check_alpha(alpha)
    fraction = check_fraction(fraction)
    band = kept_band(fraction, keep)
    width = band[1] - band[0] if math.isfinite(band[1]) else 1.0
    # Past the scales of both α (f = 1: r ≈ 0.64 α) and the band (r·width ≫ 1) κ only falls.
    top = max(math.log(max(alpha, 1.0)), -math.log(min(width, 1.0))) + 4.0
    grid, profiles = [_SCAN_START], [_profile(_SCAN_START, alpha, band, fraction)]
    while grid[-1] < top or any(p[2] > 0 for p in profiles[-3:]):
        if grid[-1] >= _LOG_R_MAX:
            raise SolverError(f"no saddle point for --alpha {alpha} --f {fraction} below r = e^80")
        grid.append(grid[-1] + _SCAN_STEP)
        profiles.append(_profile(grid[-1], alpha, band, fraction, guess=profiles[-1][0]))

    candidates: list[tuple[float, float, float]] = []  # (κ, log r, k)
    if profiles[0][2] <= 0:  # κ falls from r = 0 on: the student is uncorrelated with the teacher
        candidates.append((_margin_for(0.0, alpha, band, fraction), -math.inf, 0.0))
    for i in range(len(grid) - 1):
        if profiles[i][2] > 0 >= profiles[i + 1][2]:
            guess = profiles[i][0]
            log_r = brentq(
                lambda x, guess=guess: _profile(x, alpha, band, fraction, guess)[2],
                grid[i],
                grid[i + 1],
                xtol=1e-13,
                rtol=4 * np.finfo(float).eps,
                maxiter=500,
            )
            k, kappa, _ = _profile(log_r, alpha, band, fraction, guess)
            candidates.append((kappa, log_r, k))
    kappa, log_r, _ = max(candidates)
    if log_r == -math.inf:
        return Solution(epsilon=0.5, R=0.0, kappa=kappa)
    r = math.exp(log_r)
    return Solution(epsilon=math.atan2(1.0, r) / math.pi, R=r / math.sqrt(1.0 + r * r), kappa=kappa)


def error(alpha: float, fraction: float = 1.0, keep: Policy = Policy.hard) -> float:
    """ε(α_prune, f) for the policy."""
    return solve(alpha, fraction, keep).epsilon


# -- what to do with it ----------------------------------------------------------------------------


def fraction_grid(smallest: float = 0.01, points: int = 41) -> tuple[float, ...]:
    """Log-spaced kept fractions from `smallest` to 1 (the search grid of `pareto_point`)."""
    check_fraction(smallest, "--min-f")
    if points < 2:
        raise OptionError(f"--points {points} is too few; use at least 2 (e.g. --points 41)")
    return tuple(float(f) for f in np.geomspace(smallest, 1.0, points))


DEFAULT_FRACTIONS = fraction_grid()


def pareto_point(alpha: float, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> ParetoPoint:
    """The kept fraction (and policy) with the lowest ε at this α_prune, on the grid then refined between neighbours."""
    from scipy.optimize import minimize_scalar

    alpha = check_alpha(alpha)
    grid = np.unique(np.asarray([check_fraction(f, "fraction") for f in fractions] + [1.0]))
    best: tuple[float, float, Policy] = (math.inf, 1.0, Policy.hard)
    for keep in Policy:
        errors = np.array([error(alpha, f, keep) for f in grid])
        i = int(np.argmin(errors))
        candidate = (float(errors[i]), float(grid[i]), keep)
        if 0 < i < len(grid) - 1:
            refined = minimize_scalar(
                lambda log_f, keep=keep: error(alpha, math.exp(log_f), keep),
                bounds=(math.log(grid[i - 1]), math.log(grid[i + 1])),
                method="bounded",
                options={"xatol": 1e-6},
            )
            if refined.fun < candidate[0]:
                candidate = (float(refined.fun), float(math.exp(refined.x)), keep)
        best = min(best, candidate, key=lambda c: c[0])
    epsilon, fraction, keep = best
    return ParetoPoint(
        alpha=alpha,
        fraction=fraction,
        keep=keep,
        epsilon=epsilon,
        epsilon_unpruned=error(alpha, 1.0),
        at_grid_edge=bool(fraction <= grid[0] * (1 + 1e-9)),
    )


def crossover(fraction: float) -> float:
    """α_tot at which keep easy and keep hard give the same ε when keeping the fraction f (Fig. 1B/C).

    Below it keep easy wins (scarce data), above it keep hard wins (abundant data).
    """
    from scipy.optimize import brentq

    fraction = check_fraction(fraction)
    if fraction >= 1.0:
        raise OptionError("--f 1 keeps everything, so keep easy and keep hard are the same; use --f below 1")

    def hard_minus_easy(log_alpha_tot: float) -> float:
        alpha = fraction * math.exp(log_alpha_tot)
        return error(alpha, fraction, Policy.hard) - error(alpha, fraction, Policy.easy)

    grid = np.linspace(math.log(1e-2), math.log(1e5), 17)
    values = [hard_minus_easy(g) for g in grid]
    for i in range(len(grid) - 1):
        if values[i] > 0 >= values[i + 1]:
            root = brentq(hard_minus_easy, grid[i], grid[i + 1], xtol=1e-12, rtol=4 * np.finfo(float).eps)
            return float(math.exp(root))
    raise SolverError(f"keep easy and keep hard do not cross for --f {fraction} between α_tot 0.01 and 1e5")


def f_min(theta: float) -> float:
    """The smallest kept fraction that still selects on the teacher's margin with a probe θ degrees off.

    The probe margin is t_p = cos θ·t + sin θ·u with u ~ N(0, 1) independent of the teacher margin t:
    noise of variance sin²θ on top of the signal. Keeping the band |t_p| < γ selects on the teacher as long
    as the spread of the kept margins, E[t_p² | |t_p| < γ], exceeds that noise; f_min is where the two are
    equal. This reproduces the paper's f_min(10°) ≈ 24% and f_min(20°) ≈ 46% (docs/theory.md).
    """
    from scipy.optimize import brentq
    from scipy.special import ndtr

    theta = check_theta(theta)
    noise = math.sin(math.radians(theta)) ** 2
    if noise == 0.0:
        return 0.0
    if noise >= 1.0:
        return 1.0

    def band_spread_minus_noise(gamma: float) -> float:
        kept = 2.0 * ndtr(gamma) - 1.0
        # E[t² | |t| < γ] = 1 - 2γφ(γ)/(2Φ(γ) - 1); the series avoids the cancellation at small γ.
        spread = (
            gamma * gamma / 3.0 * (1.0 - gamma**2 / 5.0)
            if gamma < 1e-4
            else 1.0 - 2.0 * gamma * float(_gauss(np.float64(gamma))) / kept
        )
        return spread - noise

    gamma = brentq(band_spread_minus_noise, 1e-12, 40.0, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    return float(2.0 * ndtr(gamma) - 1.0)


# -- simulation (App. B) -------------------------------------------------------------------------------


def max_margin(examples: np.ndarray, tolerance: float = 1e-7) -> np.ndarray:
    """The max-margin direction w (min |w|² subject to w·z ≥ 1) for the rows z = y·x, KKT-checked.

    Solved as a least-distance program through non-negative least squares (Lawson & Hanson, ch. 23),
    then verified independently: every margin ≥ 1, multipliers ≥ 0, complementary slackness, zero
    duality gap. A failed check raises instead of returning an approximate answer.
    """
    from scipy.optimize import nnls

    n_examples, dim = examples.shape
    system = np.vstack([examples.T, np.ones((1, n_examples))])
    target = np.zeros(dim + 1)
    target[-1] = 1.0
    weights, _ = nnls(system, target, maxiter=max(100, 50 * n_examples))
    residual = system @ weights - target
    # -residual[-1] = 1/(1 + |w|²): zero when no w exists, below 1e-12 when the best margin is under 1e-6.
    if not -residual[-1] > 1e-12:
        raise SolverError("the pruned examples are not linearly separable through the origin; use more examples")
    multipliers = weights / -residual[-1]
    w = -residual[:dim] / residual[-1]
    margins = examples @ w
    norm2 = float(w @ w)
    violations = {
        "smallest margin below 1": max(0.0, 1.0 - float(margins.min())),
        "complementary slackness": float(np.max(np.abs(multipliers * (margins - 1.0)))) / max(1.0, norm2),
        "duality gap": abs(float(multipliers.sum()) - norm2) / norm2,
        "stationarity": float(np.linalg.norm(examples.T @ multipliers - w)) / math.sqrt(norm2),
    }
    worst = max(violations, key=violations.__getitem__)
    if violations[worst] > tolerance:
        raise SolverError(
            f"max-margin solve failed its KKT check ({worst}: {violations[worst]:.2e}); try another --seed"
        )
    return w


def _draw_error(config: SimulationConfig, n_total: int, n_kept: int, draw: int) -> float:
    rng = seeds.rng(config.seed, draw)
    teacher = rng.standard_normal(config.n)
    teacher /= np.linalg.norm(teacher)
    other = rng.standard_normal(config.n)
    other -= (other @ teacher) * teacher
    other /= np.linalg.norm(other)
    angle = math.radians(config.theta)
    probe = math.cos(angle) * teacher + math.sin(angle) * other
    # x = t_p·probe + (a Gaussian orthogonal to the probe): draw every probe margin, the rest only for kept rows.
    probe_margins = rng.standard_normal(n_total)
    order = np.argsort(np.abs(probe_margins), kind="stable")
    kept = order[:n_kept] if config.keep is Policy.hard else order[n_total - n_kept :]
    rest = rng.standard_normal((n_kept, config.n))
    rest -= np.outer(rest @ probe, probe)
    inputs = rest + np.outer(probe_margins[kept], probe)
    labels = np.where(inputs @ teacher >= 0, 1.0, -1.0)
    w = max_margin(labels[:, None] * inputs)
    cosine = float(np.clip(w @ teacher / np.linalg.norm(w), -1.0, 1.0))
    return math.acos(cosine) / math.pi


def simulate(config: SimulationConfig, progress: Callable[[int, int], None] | None = None) -> SimulationResult:
    """Mean test error (± s.e.m.) of exact max-margin students over independent pruned datasets."""
    check_alpha(config.alpha_tot, "--alpha-tot")
    check_fraction(config.fraction)
    check_theta(config.theta)
    if config.n < 2:
        raise OptionError(f"--n {config.n} is too small; use at least 2 (the paper used --n 200)")
    if config.draws < 2:
        raise OptionError(f"--draws {config.draws} gives no standard error; use at least 2 (the paper used 100)")
    n_total = round(config.alpha_tot * config.n)
    n_kept = round(config.fraction * n_total)
    if n_kept < 1:
        raise OptionError(
            f"--alpha-tot {config.alpha_tot} --f {config.fraction} keeps no examples at --n {config.n}; raise one of them"
        )
    errors = []
    for draw in range(config.draws):
        errors.append(_draw_error(config, n_total, n_kept, draw))
        if progress is not None:
            progress(1, config.draws)
    values = np.asarray(errors)
    return SimulationResult(
        epsilon_mean=float(values.mean()),
        sem=float(values.std(ddof=1) / math.sqrt(len(values))),
        epsilons=tuple(float(e) for e in values),
        n_kept=n_kept,
        alpha_prune=n_kept / config.n,
    )


# -- figures ---------------------------------------------------------------------------------------

FIGURE_FRACTIONS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.1)  # the kept fractions drawn in Fig. 1A
SIMULATED_FRACTIONS = (1.0, 0.4, 0.1)  # ... of which these get simulation dots
SIMULATED_ALPHAS = (0.5, 1.0, 2.0, 4.0, 8.0)


def figure_learning_curves(
    draws: int = 20, seed: int = 0, n: int = 200, progress: Callable[[int, int], None] | None = None
) -> Any:
    """Fig. 1A: ε vs α_prune for several f (keep hard), the Pareto frontier over f ≥ 0.1, simulation dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = np.geomspace(0.2, 20.0, 61)
    frontier_alphas = np.geomspace(0.2, 20.0, 25)
    n_sims = len(SIMULATED_FRACTIONS) * len(SIMULATED_ALPHAS) if draws > 0 else 0
    total = len(FIGURE_FRACTIONS) + 1 + len(frontier_alphas) + n_sims
    tick = progress if progress is not None else (lambda done, total: None)
    figure, axes = plt.subplots(figsize=(7.0, 5.0), dpi=150)
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(FIGURE_FRACTIONS)))
    color_of = dict(zip(FIGURE_FRACTIONS, colors, strict=True))
    for fraction in FIGURE_FRACTIONS:
        axes.plot(
            alphas, [error(a, fraction) for a in alphas], color=color_of[fraction], lw=1.8, label=f"f = {fraction:g}"
        )
        tick(1, total)
    axes.plot(
        alphas, [error(a, 0.1, Policy.easy) for a in alphas], color="gray", ls=":", lw=1.5, label="f = 0.1, keep easy"
    )
    tick(1, total)
    grid = fraction_grid(0.1, 21)
    frontier = []
    for a in frontier_alphas:
        frontier.append(pareto_point(float(a), grid).epsilon)
        tick(1, total)
    axes.plot(
        frontier_alphas, frontier, color="black", ls="--", lw=1.5, label="Pareto frontier (f ≥ 0.1, both policies)"
    )
    if draws > 0:
        for fraction in SIMULATED_FRACTIONS:
            means, sems = [], []
            for a in SIMULATED_ALPHAS:
                result = simulate(
                    SimulationConfig(alpha_tot=a / fraction, fraction=fraction, n=n, draws=draws, seed=seed)
                )
                means.append(result.epsilon_mean)
                sems.append(result.sem)
                tick(1, total)
            axes.errorbar(SIMULATED_ALPHAS, means, yerr=sems, fmt="o", ms=4, color=color_of[fraction], capsize=2)
        axes.plot([], [], "o", color="gray", ms=4, label=f"simulation, N = {n}, {draws} draws (± s.e.m.)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("α_prune = kept examples / parameters  (P_kept / N)")
    axes.set_ylabel("test error ε = arccos(R) / π")
    axes.set_title("Keep hard (smallest teacher margins): learning curves")
    axes.grid(True, which="both", alpha=0.25)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    return figure


def figure_easy_minus_hard(progress: Callable[[int, int], None] | None = None) -> Any:
    """Fig. 1C: ε(keep easy) - ε(keep hard) over data size α_tot and kept fraction f, with the crossover."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    totals = np.geomspace(0.5, 100.0, 36)
    fractions = np.linspace(0.05, 0.95, 19)
    tick = progress if progress is not None else (lambda done, total: None)
    difference = np.empty((len(fractions), len(totals)))
    for i, fraction in enumerate(fractions):
        for j, total in enumerate(totals):
            alpha = fraction * total
            difference[i, j] = error(alpha, fraction, Policy.easy) - error(alpha, fraction, Policy.hard)
        tick(1, len(fractions))
    # Keep easy can win by 0.3 while keep hard wins by a few 0.01: two slopes, so both sides stay visible.
    norm = TwoSlopeNorm(0.0, min(float(difference.min()), -1e-3), max(float(difference.max()), 1e-3))
    figure, axes = plt.subplots(figsize=(7.0, 5.0), dpi=150)
    mesh = axes.pcolormesh(totals, fractions, difference, cmap="RdBu_r", norm=norm, shading="nearest")
    axes.contour(totals, fractions, difference, levels=[0.0], colors="black", linewidths=1.5)
    axes.set_xscale("log")
    axes.set_xlabel("α_tot = examples before pruning / parameters  (P_tot / N)")
    axes.set_ylabel("kept fraction f")
    axes.set_title("ε(keep easy) − ε(keep hard); black line: crossover")
    bar = figure.colorbar(mesh, ax=axes)
    bar.set_ticks(np.r_[np.linspace(norm.vmin, 0.0, 5), np.linspace(0.0, norm.vmax, 4)[1:]])
    bar.ax.yaxis.set_major_formatter("{x:.3f}")
    bar.set_label(
        "ε(easy) − ε(hard)   (red: keep hard better, blue: keep easy better;\nthe two halves of the scale differ)"
    )
    figure.tight_layout()
    return figure


PROBE_ANGLES = (0.0, 10.0, 20.0)  # degrees, the probes simulated in Fig. 2's right panel
PROBE_FRACTIONS = (0.1, 0.15, 0.2, 0.24, 0.3, 0.35, 0.46, 0.6, 0.8, 1.0)
PROBE_ALPHA_TOT = 20.0


def figure_fmin(
    draws: int = 20, seed: int = 0, n: int = 200, progress: Callable[[int, int], None] | None = None
) -> Any:
    """Fig. 2-style: f_min(θ), and simulated ε vs f at α_tot = 20 for probes θ degrees off the teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tick = progress if progress is not None else (lambda done, total: None)
    thetas = np.linspace(0.0, 90.0, 181)
    minimum = [f_min(t) for t in thetas]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.5), dpi=150)
    left.plot(thetas, minimum, color="C3", lw=2, label="f_min(θ): E[t_p² | kept] = sin²θ")
    left.fill_between(thetas, 0, minimum, color="C3", alpha=0.12, label="pruning selects on probe noise")
    for theta, quoted in ((10.0, 0.24), (20.0, 0.46)):
        left.plot([theta], [quoted], "ks", ms=6)
        left.annotate(
            f"paper: f_min({theta:g}°) ≈ {quoted:.0%}", (theta, quoted), xytext=(8, -12), textcoords="offset points"
        )
    left.set_xlim(0, 90)
    left.set_ylim(0, 1.02)
    left.set_xlabel("θ = angle between pruning probe and teacher (degrees)")
    left.set_ylabel("minimum useful kept fraction f_min")
    left.set_title("How far an imperfect metric lets you prune")
    left.grid(True, alpha=0.25)
    left.legend(loc="lower right", fontsize=8)
    for color, theta in zip(("C0", "C1", "C3"), PROBE_ANGLES, strict=True):
        if draws > 0:
            results = []
            for fraction in PROBE_FRACTIONS:
                config = SimulationConfig(
                    alpha_tot=PROBE_ALPHA_TOT, fraction=fraction, n=n, theta=theta, draws=draws, seed=seed
                )
                results.append(simulate(config))
                tick(1, len(PROBE_ANGLES) * len(PROBE_FRACTIONS))
            right.errorbar(
                PROBE_FRACTIONS,
                [r.epsilon_mean for r in results],
                yerr=[r.sem for r in results],
                fmt="o-",
                ms=4,
                color=color,
                capsize=2,
                label=f"θ = {theta:g}°",
            )
        if theta > 0:
            right.axvline(f_min(theta), color=color, ls="--", lw=1)
    right.axvline(2.0 / PROBE_ALPHA_TOT, color="C0", ls=":", lw=1, label="α_prune = 2 (θ = 0 drop)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("kept fraction f (keep hard by probe margin); dashed: f_min(θ)")
    right.set_ylabel("simulated test error ε")
    right.set_title(f"Simulation: α_tot = {PROBE_ALPHA_TOT:g}, N = {n}, {draws} draws (± s.e.m.)")
    right.grid(True, which="both", alpha=0.25)
    right.legend(fontsize=8)
    figure.tight_layout()
    return figure


def write_figures(
    directory: Path, draws: int = 20, seed: int = 0, progress: Callable[[int, int], None] | None = None
) -> list[Path]:
    """Write the three PNGs into `directory` (each atomically); returns their paths."""
    import matplotlib.pyplot as plt

    from datadiet_cli.io.files import atomic_path

    if draws < 0 or draws == 1:
        raise OptionError(f"--draws {draws} must be 0 (no simulation dots) or at least 2")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OptionError(f"{directory}: is a file; -o takes a folder for the PNGs")
    simulated = len(SIMULATED_FRACTIONS) * len(SIMULATED_ALPHAS) + len(PROBE_ANGLES) * len(PROBE_FRACTIONS)
    steps = len(FIGURE_FRACTIONS) + 1 + 25 + 19 + (simulated if draws else 0)
    report = (lambda done, total: progress(done, steps)) if progress is not None else None
    makers = {
        "fig1a_learning_curves.png": lambda: figure_learning_curves(draws, seed, progress=report),
        "fig1c_easy_minus_hard.png": lambda: figure_easy_minus_hard(report),
        "fig2_fmin.png": lambda: figure_fmin(draws, seed, progress=report),
    }
    written = []
    for name, make in makers.items():
        figure = make()
        with atomic_path(directory / name) as temporary:
            figure.savefig(temporary, format="png")
        plt.close(figure)
        written.append(directory / name)
    return written
