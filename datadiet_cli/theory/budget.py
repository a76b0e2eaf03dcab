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
from datadiet_cli.theory.replica import Keep, check_alpha, check_fraction, check_theta, error, normal_pdf


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
    check_fraction(smallest, "--min-fraction")
    if points < 2:
        raise OptionError(f"--points {points} is too few; use at least 2 (e.g. --points 41)")
    return tuple(float(f) for f in np.geomspace(smallest, 1.0, points))


DEFAULT_FRACTIONS = fraction_grid()


def _best_fraction(alpha: float, grid: np.ndarray, keep: Keep) -> tuple[float, float, Keep]:
    """(ε, f, keep) at the lowest ε of one policy: the grid's best, refined between its neighbours."""
    from scipy.optimize import minimize_scalar

    errors = np.array([error(alpha, f, keep) for f in grid])
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


def pareto_point(alpha: float, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> ParetoPoint:
    """The kept fraction (and policy) with the lowest ε at this α_prune, on the grid then refined between neighbours."""
    alpha = check_alpha(alpha)
    grid = np.unique(np.asarray([check_fraction(f, "fraction") for f in fractions] + [1.0]))
    best: tuple[float, float, Keep] = (math.inf, 1.0, Keep.hard)
    for keep in Keep:
        best = min(best, _best_fraction(alpha, grid, keep), key=lambda c: c[0])
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
    return [pareto_point(alpha, fraction_grid(smallest, points)) for alpha in alphas]


def crossover(fraction: float) -> float:
    """α_tot at which keep easy and keep hard give the same ε when keeping the fraction f (Fig. 1B/C).

    Below it keep easy wins (scarce data), above it keep hard wins (abundant data).
    """
    from scipy.optimize import brentq

    fraction = check_fraction(fraction)
    if fraction >= 1.0:
        raise OptionError(
            "--fraction 1 keeps everything, so keep easy and keep hard are the same; use --fraction below 1"
        )

    def hard_minus_easy(log_alpha_tot: float) -> float:
        alpha = fraction * math.exp(log_alpha_tot)
        return error(alpha, fraction, Keep.hard) - error(alpha, fraction, Keep.easy)

    grid = np.linspace(math.log(1e-2), math.log(1e5), 17)
    # Solves slow down with α (at α_tot = 1e5 one takes ~100x longer than at 10): walk up the grid and
    # stop at the first sign change instead of evaluating all of it first.
    below = hard_minus_easy(grid[0])
    for low, high in itertools.pairwise(grid):
        above = hard_minus_easy(high)
        if below > 0 >= above:
            root = brentq(hard_minus_easy, low, high, xtol=1e-12, rtol=4 * np.finfo(float).eps)
            return float(math.exp(root))
        below = above
    raise SolverError(f"keep easy and keep hard do not cross for --fraction {fraction} between α_tot 0.01 and 1e5")


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
            else 1.0 - 2.0 * gamma * float(normal_pdf(np.float64(gamma))) / kept
        )
        return spread - noise

    gamma = brentq(band_spread_minus_noise, 1e-12, 40.0, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    return float(2.0 * ndtr(gamma) - 1.0)
