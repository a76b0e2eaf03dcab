"""The replica solution of the teacher-student perceptron under data pruning (Sorscher et al. 2022, §3, App. A).

Setting: inputs x ~ N(0, I_N), labels y = sign(T·x) from a teacher T, a pruning probe T_p at angle θ to T.
A dataset of P_tot = α_tot·N examples is pruned by probe margin |T_p·x| (keep hard = the fraction f with the
smallest margins, keep easy = the f largest) to P = α·N examples, α = α_prune = f·α_tot, and a max-margin
student J is trained on them. Its test error is ε = arccos(R)/π, R the cosine between J and T.

Theory (θ = 0, derivation in docs/theory.md): with r = R/√(1-R²), k = κ/√(1-R²) (κ the student's margin),
F(a) = E_z[(a - z)_+²] and ⟨·⟩ the average over the kept teacher margins |t|, the replica saddle point is

    α ⟨F(k - r|t|)⟩ = 1                                  (the version space shrinks to one point)
    κ(r) = k(r)/√(1 + r²) is globally maximal over r      (stationary: (1 + r²)⟨F'·|t|⟩ = k r ⟨F'⟩)

Both are solved in log r, so the tolerance on ε = arctan(1/r)/π is relative, however small ε is.
Everything here is pure numpy/scipy; scipy is imported inside the functions that use it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from datadiet_cli.errors import OptionError, SolverError

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(20)
# Beyond 12 standard units both the Gaussian weight and F(a) (a < -12) are below 1e-31 of what is kept.
_TAIL = 12.0
_LOG_R_MAX = 80.0  # ε = arctan(1/r)/π below 1e-35 is beyond any question anyone asks
# κ(r) is flat below r = e^-8 (it moves by r² there) and its features are wider than half a unit of log r.
_SCAN_START, _SCAN_STEP = -8.0, 0.5

Band = tuple[float, float]  # the kept interval of |teacher margin|
Profile = tuple[float, float, float]  # (k, κ, h) at one r, h with the sign of dκ/dr


class Keep(str, enum.Enum):
    """Which probe margins pruning keeps (the same words as `datadiet prune --keep`)."""

    hard = "hard"  # keep the f smallest |margins| (near the boundary): best when data is abundant
    easy = "easy"  # keep the f largest |margins|: best when data is scarce


@dataclass(frozen=True)
class Solution:
    epsilon: float  # test error arccos(R)/π of the max-margin student
    R: float  # cosine between the student and the teacher
    kappa: float  # the student's margin κ (inputs and weights normalised as in the paper)


# -- the inputs, checked once for every command --------------------------------------------------


def check_alpha(alpha: float, option: str = "--alpha") -> float:
    if not (math.isfinite(alpha) and alpha > 0):
        raise OptionError(f"{option} {alpha} must be a positive number of examples per parameter, e.g. {option} 2")
    return float(alpha)


def check_fraction(fraction: float, option: str = "--fraction") -> float:
    if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
        raise OptionError(f"{option} {fraction} is outside (0, 1]; e.g. {option} 0.3 keeps 30% of the data")
    return float(fraction)


def check_theta(theta: float) -> float:
    if not (math.isfinite(theta) and 0.0 <= theta <= 90.0):
        raise OptionError(f"--theta {theta} is outside [0, 90] degrees; e.g. --theta 10 for a good probe")
    return float(theta)


# -- special functions ---------------------------------------------------------------------------


def normal_pdf(x: np.ndarray) -> np.ndarray:
    """φ(x), the standard normal density."""
    return np.exp(-0.5 * x * x) / _SQRT_2PI


def _second_moment(a: np.ndarray) -> np.ndarray:
    """F(a) = E_z[(a - z)_+²] for z ~ N(0, 1)."""
    from scipy.special import ndtr

    return (1.0 + a * a) * ndtr(a) + a * normal_pdf(a)


def _second_moment_slope(a: np.ndarray) -> np.ndarray:
    """F'(a) = 2 E_z[(a - z)_+]."""
    from scipy.special import ndtr

    return 2.0 * (a * ndtr(a) + normal_pdf(a))


def kept_band(fraction: float, keep: Keep) -> Band:
    """The interval of |teacher margin| that the policy keeps, holding the fraction f of N(0, 1)."""
    from scipy.special import ndtri

    if fraction >= 1.0:
        return 0.0, math.inf
    if keep is Keep.hard:
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
    return t, w * density_scale * normal_pdf(t)


def _averages(k: float, r: float, band: Band, fraction: float) -> tuple[float, float, float]:
    """⟨F(a)⟩, ⟨F'(a)|t|⟩, ⟨F'(a)⟩ over the kept margins, a = k - r|t|."""
    t, w = _nodes(band[0], band[1], k, r, 2.0 / fraction)
    a = k - r * t
    slope = _second_moment_slope(a)
    return float(w @ _second_moment(a)), float(w @ (slope * t)), float(w @ slope)


def _margin_for(r: float, alpha: float, band: Band, fraction: float, guess: float | None = None) -> float:
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


def _profile(log_r: float, alpha: float, band: Band, fraction: float, guess: float | None = None) -> Profile:
    """(k, κ, h) at r = e^log_r, where h has the sign of dκ/dr and lies in [-1, 1]."""
    r = math.exp(log_r)
    k = _margin_for(r, alpha, band, fraction, guess)
    _, slope_t, slope = _averages(k, r, band, fraction)
    rising, falling = (1.0 + r * r) * slope_t, k * r * slope
    return k, k / math.sqrt(1.0 + r * r), (rising - falling) / (rising + abs(falling))


def _scan(alpha: float, band: Band, fraction: float) -> tuple[list[float], list[Profile]]:
    """κ(r) on a grid of log r, from where it is flat to past its last rise."""
    width = band[1] - band[0] if math.isfinite(band[1]) else 1.0
    # Past the scales of both α (f = 1: r ≈ 0.64 α) and the band (r·width ≫ 1) κ only falls.
    top = max(math.log(max(alpha, 1.0)), -math.log(min(width, 1.0))) + 4.0
    grid, profiles = [_SCAN_START], [_profile(_SCAN_START, alpha, band, fraction)]
    while grid[-1] < top or any(p[2] > 0 for p in profiles[-3:]):
        if grid[-1] >= _LOG_R_MAX:
            raise SolverError(f"no saddle point for --alpha {alpha} --fraction {fraction} below r = e^80")
        grid.append(grid[-1] + _SCAN_STEP)
        profiles.append(_profile(grid[-1], alpha, band, fraction, guess=profiles[-1][0]))
    return grid, profiles


def _local_maxima(alpha: float, band: Band, fraction: float) -> list[tuple[float, float]]:
    """(κ, log r) at every local maximum of κ(r), log r = -inf for the student uncorrelated with the teacher."""
    from scipy.optimize import brentq

    grid, profiles = _scan(alpha, band, fraction)
    maxima: list[tuple[float, float]] = []
    if profiles[0][2] <= 0:  # κ falls from r = 0 on: the student is uncorrelated with the teacher
        maxima.append((_margin_for(0.0, alpha, band, fraction), -math.inf))
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
            maxima.append((_profile(log_r, alpha, band, fraction, guess)[1], log_r))
    return maxima


def solve(alpha: float, fraction: float = 1.0, keep: Keep = Keep.hard) -> Solution:
    """R, κ and ε of the max-margin student trained on α_prune·N examples kept by the policy (θ = 0).

    The max-margin student is the global maximum of κ(r). κ(r) can have two local maxima (keep hard
    with small f near α = 2: one student that ignores the teacher and memorises, one aligned with it);
    the jump between them is the steep drop of the learning curve. So κ is scanned on a grid of log r
    and every local maximum is refined; the largest κ wins.
    """
    alpha = check_alpha(alpha)
    fraction = check_fraction(fraction)
    kappa, log_r = max(_local_maxima(alpha, kept_band(fraction, keep), fraction))
    if log_r == -math.inf:
        return Solution(epsilon=0.5, R=0.0, kappa=kappa)
    r = math.exp(log_r)
    return Solution(epsilon=math.atan2(1.0, r) / math.pi, R=r / math.sqrt(1.0 + r * r), kappa=kappa)


def error(alpha: float, fraction: float = 1.0, keep: Keep = Keep.hard) -> float:
    """ε(α_prune, f) for the policy."""
    return solve(alpha, fraction, keep).epsilon
