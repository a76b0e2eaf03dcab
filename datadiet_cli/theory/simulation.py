"""The paper's App. B simulation: exact max-margin students trained on pruned Gaussian data.

It checks the replica solution (replica.py) where the theory applies (θ = 0) and goes where it does
not (a probe θ degrees off the teacher, Fig. 2). Draw d of a simulation uses the random stream
seeds.rng(seed, d), so the same seed gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from datadiet_cli.data import seeds
from datadiet_cli.errors import OptionError, SolverError
from datadiet_cli.theory.replica import Keep, check_alpha, check_fraction, check_theta, error


@dataclass(frozen=True)
class SimulationConfig:
    alpha_tot: float  # α_tot = P_tot/N: examples per parameter before pruning
    fraction: float = 1.0  # f: kept fraction, α_prune = f·α_tot
    n: int = 200  # input dimension N (the paper's App. B used 200)
    theta: float = 0.0  # angle between probe and teacher in degrees (0 = prune by the teacher's own margin)
    keep: Keep = Keep.hard  # which probe margins are kept
    draws: int = 100  # independent datasets (the paper used 100)
    seed: int = 0  # draw d uses the stream (seed, d): same seed, same numbers


@dataclass(frozen=True)
class SimulationResult:
    epsilon_mean: float  # mean test error over draws
    sem: float  # standard error of that mean
    epsilons: tuple[float, ...]  # per-draw test errors
    n_kept: int  # P = round(f·P_tot) examples the student is trained on
    alpha_prune: float  # n_kept / N


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
    worst, violation = _worst_kkt_violation(examples, w, multipliers)
    if violation > tolerance:
        raise SolverError(f"max-margin solve failed its KKT check ({worst}: {violation:.2e}); try another --seed")
    return w


def _worst_kkt_violation(examples: np.ndarray, w: np.ndarray, multipliers: np.ndarray) -> tuple[str, float]:
    """The KKT condition the candidate (w, multipliers) breaks most, and by how much (relative)."""
    margins = examples @ w
    norm2 = float(w @ w)
    violations = {
        "smallest margin below 1": max(0.0, 1.0 - float(margins.min())),
        "complementary slackness": float(np.max(np.abs(multipliers * (margins - 1.0)))) / max(1.0, norm2),
        "duality gap": abs(float(multipliers.sum()) - norm2) / norm2,
        "stationarity": float(np.linalg.norm(examples.T @ multipliers - w)) / math.sqrt(norm2),
    }
    worst = max(violations, key=violations.__getitem__)
    return worst, violations[worst]


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
    kept = order[:n_kept] if config.keep is Keep.hard else order[n_total - n_kept :]
    rest = rng.standard_normal((n_kept, config.n))
    rest -= np.outer(rest @ probe, probe)
    inputs = rest + np.outer(probe_margins[kept], probe)
    labels = np.where(inputs @ teacher >= 0, 1.0, -1.0)
    w = max_margin(labels[:, None] * inputs)
    cosine = float(np.clip(w @ teacher / np.linalg.norm(w), -1.0, 1.0))
    return math.acos(cosine) / math.pi


# The most one simulation may hold at once. A draw holds its P_tot probe margins (with their |·| and sort
# order: 24 bytes each) and the kept examples with the NNLS system built from them (about 64 bytes per entry
# of the P × (N + 1) matrix, measured); the per-draw errors add ~64 bytes a draw.
MEMORY_LIMIT = 8 * 2**30
_BYTES_PER_MARGIN, _BYTES_PER_ENTRY, _BYTES_PER_DRAW = 24, 64, 64


def _size(log10_bytes: float) -> str:
    """A byte count given by its log10 (counts here can pass the largest double), in binary units."""
    for power, unit in enumerate(("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")):
        if log10_bytes < math.log10(1024.0) * (power + 1) or unit == "EiB":
            return f"{_count(log10_bytes - math.log10(1024.0) * power)} {unit}"
    raise AssertionError("unreachable")


def _count(log10_value: float) -> str:
    """A positive number given by its log10, as %.3g would print it, also beyond the largest double."""
    if log10_value < 300:
        return f"{10.0**log10_value:.3g}"
    exponent = math.floor(log10_value)
    return f"{10.0 ** (log10_value - exponent):.3g}e+{exponent}"


def check_draws(draws: int) -> int:
    """--draws: at least 2 (a standard error), and few enough that their results fit in MEMORY_LIMIT."""
    if draws < 2:
        raise OptionError(f"--draws {draws} gives no standard error; use at least 2 (the paper used 100)")
    if draws * _BYTES_PER_DRAW > MEMORY_LIMIT:
        raise OptionError(
            f"--draws {draws} is too many (at most {MEMORY_LIMIT // _BYTES_PER_DRAW}): their results alone would "
            f"need {_size(math.log10(draws * _BYTES_PER_DRAW))} of memory (the paper used 100)"
        )
    return draws


def _checked_sizes(config: SimulationConfig) -> tuple[int, int]:
    """(P_tot, P_kept) of the config, after checking every field a user can get wrong."""
    check_alpha(config.alpha_tot, "--alpha-tot")
    check_fraction(config.fraction)
    check_theta(config.theta)
    if config.n < 2:
        raise OptionError(f"--n {config.n} is too small; use at least 2 (the paper used --n 200)")
    check_draws(config.draws)
    seeds.check_seed(config.seed)
    # Refuse up front what one draw could not hold, in logs: α_tot·N may pass the largest double.
    log_total = math.log10(config.alpha_tot) + math.log10(config.n)
    log_kept = log_total + math.log10(config.fraction)
    log_margins = math.log10(_BYTES_PER_MARGIN) + log_total
    log_system = math.log10(_BYTES_PER_ENTRY) + log_kept + math.log10(config.n + 1)
    log_need = max(log_margins, log_system) + math.log10(1.0 + 10.0 ** -abs(log_margins - log_system))
    if log_need > math.log10(MEMORY_LIMIT):
        raise OptionError(
            f"--alpha-tot {config.alpha_tot:g} --fraction {config.fraction:g} --n {config.n}: one draw would hold "
            f"{_count(log_total)} probe margins and {_count(log_kept)} kept examples of {config.n} inputs, about "
            f"{_size(log_need)} of memory (at most {_size(math.log10(MEMORY_LIMIT))}); lower --alpha-tot or --n"
        )
    total = config.alpha_tot * config.n
    n_total = round(total)
    n_kept = round(config.fraction * n_total)
    if n_kept < 1:
        raise OptionError(
            f"--alpha-tot {config.alpha_tot} --fraction {config.fraction} keeps no examples at --n {config.n}; "
            "raise one of them"
        )
    return n_total, n_kept


def simulate(config: SimulationConfig, progress: Callable[[int, int], None] | None = None) -> SimulationResult:
    """Mean test error (± s.e.m.) of exact max-margin students over independent pruned datasets."""
    n_total, n_kept = _checked_sizes(config)
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


def simulate_against_theory(
    config: SimulationConfig, progress: Callable[[int, int], None] | None = None
) -> tuple[SimulationResult, float | None]:
    """The simulation and, at θ = 0 where the replica theory applies, the theory's ε at the same α_prune."""
    result = simulate(config, progress)
    theory = error(result.alpha_prune, config.fraction, config.keep) if config.theta == 0 else None
    return result, theory
