"""What the theory says about a pruning budget: the best kept fraction at a training size (the Pareto
frontier), which examples to keep at a data size (the easy/hard crossover), and how far an imperfect
metric lets you prune (f_min). Built on the saddle point in replica.py; docs/theory.md has the reading.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datadiet_cli.errors import OptionError, SolverError
from datadiet_cli.theory import replica
from datadiet_cli.theory.replica import (
    Keep,
    check_alpha,
    check_fraction,
    check_solvable_fraction,
    check_theta,
    error,
    normal_pdf,
)

# Each grid point of `pareto` costs two saddle-point solves (5-50 ms each) per --alpha: 1000 take up to a minute.
MAX_POINTS = 1000


@dataclass(frozen=True)
class ParetoPoint:
    alpha: float  # α_prune = kept examples per parameter
    fraction: float  # f_opt: the kept fraction with the lowest ε at this α_prune
    keep: Keep  # the policy that reaches it
    epsilon: float  # ε at f_opt
    epsilon_unpruned: float  # ε at f = 1 (the same α_prune drawn at random), for comparison
    at_grid_edge: bool  # f_opt is the smallest fraction searched: the true optimum may be smaller still


def fraction_grid(smallest: float = 0.01, points: int = 41) -> tuple[float, ...]:
    """Log-spaced kept fractions from `smallest` to 1 (the search grid of `pareto_point`)."""
    check_solvable_fraction(smallest, "--min-fraction")
    if points < 2:
        raise OptionError(f"--points {points} is too few; use at least 2 (e.g. --points 41)")
    if points > MAX_POINTS:
        raise OptionError(
            f"--points {points} is too many (at most {MAX_POINTS}): each costs two saddle-point solves per --alpha"
        )
    return tuple(float(f) for f in np.geomspace(smallest, 1.0, points))


DEFAULT_FRACTIONS = fraction_grid()


def _best_fraction(alpha: float, grid: np.ndarray, keep: Keep, option: str) -> tuple[float, float, Keep]:
    """(ε, f, keep) at the lowest ε of one policy: the grid's best, refined between its neighbours."""
    from scipy.optimize import minimize_scalar

    errors = np.array([error(alpha, f, keep, fraction_option=option) for f in grid])
    i = int(np.argmin(errors))
    best = (float(errors[i]), float(grid[i]), keep)
    if 0 < i < len(grid) - 1:
        refined = minimize_scalar(
            lambda log_f: error(alpha, math.exp(log_f), keep),
            bounds=(math.log(grid[i - 1]), math.log(grid[i + 1])),
            method="bounded",
            options={"xatol": 1e-6},
        )
        if refined.fun < best[0]:
            best = (float(refined.fun), float(math.exp(refined.x)), keep)
    return best


def pareto_point(
    alpha: float, fractions: Sequence[float] = DEFAULT_FRACTIONS, *, fraction_option: str = "fraction"
) -> ParetoPoint:
    """The kept fraction (and policy) with the lowest ε at this α_prune, on the grid then refined between neighbours.

    `fraction_option` names the grid's fractions in error messages (the smallest fails first: ε grows with f).
    """
    alpha = check_alpha(alpha)
    grid = np.unique(np.asarray([check_fraction(f, fraction_option) for f in fractions] + [1.0]))
    best: tuple[float, float, Keep] = (math.inf, 1.0, Keep.hard)
    for keep in Keep:
        best = min(best, _best_fraction(alpha, grid, keep, fraction_option), key=lambda c: c[0])
    epsilon, fraction, keep = best
    return ParetoPoint(
        alpha=alpha,
        fraction=fraction,
        keep=keep,
        epsilon=epsilon,
        epsilon_unpruned=error(alpha, 1.0),
        at_grid_edge=bool(fraction <= grid[0] * (1 + 1e-9)),
    )


def pareto_frontier(alphas: Sequence[float], smallest: float = 0.01, points: int = 41) -> list[ParetoPoint]:
    """`pareto_point` at each α_prune, searching `points` log-spaced kept fractions from `smallest` to 1."""
    grid = fraction_grid(smallest, points)
    return [pareto_point(alpha, grid, fraction_option="--min-fraction") for alpha in alphas]


# Past 1 - f = 1e-5 the two policies differ by less than the solver's precision where they cross
# (α_tot ≈ 2.0053/(1 - f): at 1 - f = 1e-4 and 1e-5 it agrees to 6e-7, at 1e-6 only to 1e-2).
MAX_CROSSOVER_FRACTION = 0.99999


def crossover(fraction: float) -> float:
    """α_tot at which keep easy and keep hard give the same ε when keeping the fraction f (Fig. 1B/C).

    Below it keep easy wins (scarce data), above it keep hard wins (abundant data). For small f it is keep
    hard's steep drop at α_prune = 2 - O(γ) (α_prune = 1.99976 at f = 1e-3, 1.999978 at 1e-4): below
    f = 1e-10, where the drop is sharper than doubles resolve, α_tot = 2/f is exact to 1e-11.
    """
    from scipy.optimize import brentq

    fraction = check_solvable_fraction(fraction)
    if fraction >= 1.0:
        raise OptionError(
            "--fraction 1 keeps everything, so keep easy and keep hard are the same; use --fraction below 1"
        )
    if fraction > MAX_CROSSOVER_FRACTION:
        raise OptionError(
            f"--fraction {replica.show(fraction)} is too close to 1 (at most {MAX_CROSSOVER_FRACTION:g}): keep easy "
            "and keep hard then differ by less than the solver resolves where they cross, near α_tot = 2/(1 - f)"
        )
    if fraction < replica.FRACTION_NARROW:
        return 2.0 / fraction

    def hard_minus_easy(log_alpha_tot: float) -> float:
        alpha = fraction * math.exp(log_alpha_tot)
        return error(alpha, fraction, Keep.hard) - error(alpha, fraction, Keep.easy)

    grid = np.linspace(math.log(1e-2), math.log(1e5), 17)
    # The crossing sits near α_tot = 2/f for small f and 2/(1 - f) for f near 1: continue the grid's steps to
    # 100 times that. Below α_prune = 0.1 keep easy always wins: no crossing to look for there.
    top = math.log(100.0 / min(fraction, 1.0 - fraction))
    step = grid[1] - grid[0]
    grid = np.concatenate([grid, grid[-1] + step * np.arange(1, max(0, math.ceil((top - grid[-1]) / step)) + 1)])
    grid = grid[fraction * np.exp(grid) >= 0.1]
    # Walk up the grid and stop at the first sign change instead of evaluating all of it first.
    below = hard_minus_easy(grid[0])
    for low, high in itertools.pairwise(grid):
        above = hard_minus_easy(high)
        if below > 0 >= above:
            root = brentq(hard_minus_easy, low, high, xtol=1e-12, rtol=4 * np.finfo(float).eps)
            return float(math.exp(root))
        below = above
    raise SolverError(
        f"keep easy and keep hard do not cross for --fraction {fraction} between α_tot "
        f"{math.exp(grid[0]):.3g} and {math.exp(grid[-1]):.3g}"
    )


def f_min(theta: float) -> float:
    """The smallest kept fraction that still selects on the teacher's margin with a probe θ degrees off.

    The probe margin is t_p = cos θ·t + sin θ·u with u ~ N(0, 1) independent of the teacher margin t:
    noise of variance sin²θ on top of the signal. Keeping the band |t_p| < γ selects on the teacher as long
    as the spread of the kept margins, E[t_p² | |t_p| < γ], exceeds that noise; f_min is where the two are
    equal. This reproduces the paper's f_min(10°) ≈ 24% and f_min(20°) ≈ 46% (docs/theory.md).
    """
    from scipy.optimize import brentq
    from scipy.special import erf, gammainc, ndtr

    theta = check_theta(theta)
    sine = math.sin(math.radians(theta))
    noise = sine**2
    if sine == 0.0:
        return 0.0
    if noise >= 1.0:
        return 1.0
    if sine < 1e-4:  # γ < 2e-4: E[t² | |t| < γ] = γ²/3·(1 - 2γ²/15) to 1e-17, a quadratic in γ²
        gamma = sine * math.sqrt(6.0 / (1.0 + math.sqrt(1.0 - 1.6 * noise)))  # (noise may underflow: harmless)
        return float(erf(gamma / math.sqrt(2.0)))  # 2Φ(γ) - 1 without its cancellation
    if noise < 1e-2:  # θ < 5.7°, γ < 0.17: 1 - 2γφ(γ)/(2Φ(γ) - 1) would cancel to 1e-16/γ³ of its value
        # With t² ~ χ²₁: E[t²; |t| < γ] = P(3/2, γ²/2) and P(|t| < γ) = P(1/2, γ²/2), P the regularised gamma.
        gamma = brentq(
            lambda g: float(gammainc(1.5, 0.5 * g * g) / gammainc(0.5, 0.5 * g * g)) - noise,
            1e-4,
            1.0,
            xtol=1e-300,
            rtol=4 * np.finfo(float).eps,
        )
        return float(erf(gamma / math.sqrt(2.0)))

    def band_spread_minus_noise(gamma: float) -> float:
        kept = 2.0 * ndtr(gamma) - 1.0
        # E[t² | |t| < γ] = 1 - 2γφ(γ)/(2Φ(γ) - 1); the series avoids the cancellation at small γ.
        spread = (
            gamma * gamma / 3.0 * (1.0 - gamma**2 / 5.0)
            if gamma < 1e-4
            else 1.0 - 2.0 * gamma * float(normal_pdf(np.float64(gamma))) / kept
        )
        return spread - noise

    gamma = brentq(band_spread_minus_noise, 1e-12, 40.0, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    return float(2.0 * ndtr(gamma) - 1.0)
