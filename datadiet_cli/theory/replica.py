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
Where that solve would leave its range, the saddle point's limit is exact to double precision and is
returned instead: tiny α (the student ignores the teacher), huge α (only the kept density at the band's
edge matters) and keep hard's tiny f (ε scales with the band). What no double can hold (ε below
2.2e-308, f below 1e-300, the steep drop at α = 2 for f below 1e-10) is an OptionError naming the limit.
Everything here is pure numpy/scipy; scipy is imported inside the functions that use it.
"""

from __future__ import annotations

import enum
import functools
import math
import sys
from dataclasses import dataclass

import numpy as np

from datadiet_cli.errors import OptionError, SolverError

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(20)
# Beyond 12 standard units both the Gaussian weight and F(a) (a < -12) are below 1e-31 of what is kept.
_TAIL = 12.0
_LOG_R_MAX = 80.0  # ε = arctan(1/r)/π below 1e-35 is beyond any question anyone asks
# κ(r)'s features are wider than half a unit of log r; below r = e^-8 it has at most one: the maximum of a
# student that ignores the teacher (κ'(0) = ⟨|t|⟩ > 0), searched down to r = e^-80 (then ε rounds to 0.5).
_SCAN_START, _SCAN_STEP, _LOG_R_MIN = -8.0, 0.5, -80.0

# Where a limit replaces the saddle-point solve: each is exact to double precision where it takes over
# (the reasons are in the functions; tests/test_theory.py checks each against the solve next to its threshold).
_ALPHA_SMALL = 1e-20  # below, F(a) = 1 + a² on the whole band: the saddle point is closed-form (errors O(α))
_ALPHA_LARGE = 1e12  # above, a band from t = 0 only matters through its density there (errors O(1/α²))
_ALPHA_LARGE_EASY = 1e20  # the same for keep easy's band from γ > 0, whose errors are O(γ/α) instead
FRACTION_NARROW = 1e-10  # below, keep hard's band [0, γ] is flat (errors O(γ²) < 1e-20): ε scales with γ
# ... except on the steep drop at α = 2, where ε ∝ f^(1/3) and that scaling holds only for |α - 2| ≫ f^(2/3):
# from f = 1e-10 it is good to 1e-12 beyond |α - 2| = 1e-6, and closer, doubles cannot resolve the drop's
# order parameter (u ~ f^(2/3) against F(a) ≈ 1/2 + 0.8a known to 1e-16).
_STEEP_DROP, _STEEP_DROP_WIDTH = 2.0, 1e-6
_FRACTION_MIN = 1e-300  # below, the kept density 2φ(t)/f leaves the range of doubles
# ε below the smallest normal double (2.2e-308) would be returned with fewer significant digits, or as 0.
_EPSILON_MIN = sys.float_info.min

Band = tuple[float, float]  # the kept interval of |teacher margin|
Profile = tuple[float, float, float]  # (u, κ, h) at one r, u = k - r·lo, h with the sign of dκ/dr


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


def show(value: float) -> str:
    """A number for a message: as %g prints it where that is exact, else every digit (2.0000001, not 2)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def check_alpha(alpha: float, option: str = "--alpha") -> float:
    if not (math.isfinite(alpha) and alpha > 0):
        raise OptionError(f"{option} {alpha} must be a positive number of examples per parameter, e.g. {option} 2")
    return float(alpha)


def check_fraction(fraction: float, option: str = "--fraction") -> float:
    if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
        raise OptionError(f"{option} {fraction} is outside (0, 1]; e.g. {option} 0.3 keeps 30% of the data")
    return float(fraction)


def check_solvable_fraction(fraction: float, option: str = "--fraction") -> float:
    """A kept fraction in (0, 1] that is also large enough for the saddle point's doubles."""
    fraction = check_fraction(fraction, option)
    if fraction < _FRACTION_MIN:
        raise OptionError(
            f"{option} {show(fraction)} is too small to solve (at least {_FRACTION_MIN:g}): "
            "the kept density 2φ(t)/f would leave the range of doubles"
        )
    return fraction


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
    if keep is Keep.hard and fraction < 1e-3:  # 0.5 + f/2 would round f by up to 1e-16/f relative
        from scipy.special import erfinv

        return 0.0, math.sqrt(2.0) * float(erfinv(fraction))
    if keep is Keep.hard:
        return 0.0, float(ndtri(0.5 + 0.5 * fraction))
    return float(-ndtri(0.5 * fraction)), math.inf  # not ndtri(1 - f/2): exact for tiny f


# -- the saddle point --------------------------------------------------------------------------
#
# The unknowns are r and u = k - r·lo, lo the band's inner edge, over offsets s = t - lo ≥ 0 into the band:
# a = k - r t = u - r s. For keep hard (lo = 0) u is k. For keep easy at large α, k ≈ r·γ is huge while
# u stays O(1): working with u keeps a = u - r s exact instead of cancelling k against r t.


def _nodes(band: Band, u: float, r: float, density_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets s into the band, margins t = lo + s and weights (including the kept density 2φ(t)/f).

    Panels are ≤ 1/r wide where F(a) bends (|a| ≤ 12), and 0.5 wide where a > 12: there F(a) = 1 + a²
    exactly (to 1e-33), a polynomial in s the Gauss-Legendre rule integrates against φ(t) at any width.
    """
    lo, hi = band
    length = min(hi - lo, _TAIL)
    if r > 0:
        length = min(length, (u + _TAIL) / r)  # beyond, a = u - r s < -12 and F(a) is negligible
    if length <= 0:
        return np.array([0.0]), np.array([lo]), np.array([0.0])
    width = min(0.5, 1.0 / r) if r > 0 else 0.5
    smooth = min((u - _TAIL) / r, length) if width < 0.5 else 0.0  # a > 12 on [0, smooth]
    if smooth > 0:
        coarse = np.linspace(0.0, smooth, math.ceil(smooth / 0.5) + 1)
        fine = np.linspace(smooth, length, math.ceil((length - smooth) / width) + 1)[1:]
        edges = np.concatenate([coarse, fine])
    else:
        edges = np.linspace(0.0, length, math.ceil(length / width) + 1)
    left, right = edges[:-1, None], edges[1:, None]
    s = (0.5 * (left + right) + 0.5 * (right - left) * _GAUSS_NODES).ravel()
    w = (0.5 * (right - left) * _GAUSS_WEIGHTS).ravel()
    t = lo + s
    return s, t, w * density_scale * normal_pdf(t)


def _averages(u: float, r: float, band: Band, fraction: float) -> tuple[float, float, float]:
    """⟨F(a)⟩, ⟨F'(a)·s⟩, ⟨F'(a)⟩ over the kept margins, a = u - r s, s = |t| - lo."""
    s, _, w = _nodes(band, u, r, 2.0 / fraction)
    a = u - r * s
    slope = _second_moment_slope(a)
    return float(w @ _second_moment(a)), float(w @ (slope * s)), float(w @ slope)


def _margin_for(r: float, alpha: float, band: Band, fraction: float, guess: float | None = None) -> float:
    """u solving α⟨F(u - r s)⟩ = 1 by Newton's method from the right.

    ⟨F⟩ is convex and increasing in u, so Newton started where the left side exceeds 1 descends
    monotonically onto the unique root (no overshoot, no bracketing needed).
    """
    u = 1.0 if guess is None else guess
    step = max(0.1, 0.1 * abs(u))
    value, _, slope = _averages(u, r, band, fraction)
    while alpha * value <= 1.0:
        u += step
        step *= 2.0
        value, _, slope = _averages(u, r, band, fraction)
    for _ in range(200):
        change = (alpha * value - 1.0) / (alpha * slope)
        u -= change
        if abs(change) <= 4e-16 * max(1.0, abs(u)):
            break
        value, _, slope = _averages(u, r, band, fraction)
        if alpha * value <= 1.0:  # rounding reached the root from below: it is as exact as doubles allow
            break
    return u


def _profile(log_r: float, alpha: float, band: Band, fraction: float, guess: float | None = None) -> Profile:
    """(u, κ, h) at r = e^log_r, where h has the sign of dκ/dr and lies in [-1, 1].

    dκ/dr has the sign of (1 + r²)⟨F'·t⟩ - k r⟨F'⟩; with t = lo + s and k = u + r·lo its r²·lo terms
    cancel exactly, leaving lo⟨F'⟩ + (1 + r²)⟨F'·s⟩ - u r⟨F'⟩.
    """
    r = math.exp(log_r)
    u = _margin_for(r, alpha, band, fraction, guess)
    _, slope_s, slope = _averages(u, r, band, fraction)
    lo = band[0]
    k = u + r * lo
    rising, falling = (1.0 + r * r) * (lo * slope + slope_s), k * r * slope
    return (
        u,
        k / math.sqrt(1.0 + r * r),
        (lo * slope + (1.0 + r * r) * slope_s - u * r * slope) / (rising + abs(falling)),
    )


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


Maximum = tuple[float, float, float]  # (κ, log r, u) at a local maximum of κ(r)


def _refine(
    alpha: float, band: Band, fraction: float, low: tuple[float, Profile], high: tuple[float, Profile]
) -> Maximum:
    """The local maximum of κ between two (log r, profile) points, h > 0 at the lower and h ≤ 0 at the upper."""
    from scipy.optimize import brentq

    guess = low[1][0]
    try:
        log_r = brentq(
            lambda x: _profile(x, alpha, band, fraction, guess)[2],
            low[0],
            high[0],
            xtol=1e-13,
            rtol=4 * np.finfo(float).eps,
            maxiter=500,
        )
    except ValueError:  # from one Newton start h lost its sign change: κ is flat to rounding, either point will do
        log_r, (u, kappa, _) = max(low, high, key=lambda point: point[1][1])
        return kappa, log_r, u
    u, kappa, _ = _profile(log_r, alpha, band, fraction, guess)
    return kappa, log_r, u


def _local_maxima(alpha: float, band: Band, fraction: float) -> list[Maximum]:
    """(κ, log r, u) at every local maximum of κ(r), log r = -inf for the student uncorrelated with the teacher."""
    grid, profiles = _scan(alpha, band, fraction)
    maxima: list[Maximum] = []
    if profiles[0][2] <= 0:  # κ falls at the scan's start: it rose from r = 0 to a maximum below
        lowest = _profile(_LOG_R_MIN, alpha, band, fraction, guess=profiles[0][0])
        if lowest[2] > 0:
            maxima.append(_refine(alpha, band, fraction, (_LOG_R_MIN, lowest), (grid[0], profiles[0])))
        else:  # below r = e^-80 the student is uncorrelated with the teacher to double precision
            u = _margin_for(0.0, alpha, band, fraction)
            maxima.append((u, -math.inf, u))
    for i in range(len(grid) - 1):
        if profiles[i][2] > 0 >= profiles[i + 1][2]:
            maxima.append(_refine(alpha, band, fraction, (grid[i], profiles[i]), (grid[i + 1], profiles[i + 1])))
    return maxima


# -- limits: where the solve above would leave its range, the saddle point has a closed form ------------


def _mean_kept_margin(band: Band, fraction: float) -> float:
    """⟨|t|⟩ = 2(φ(lo) - φ(hi))/f over the kept band, without cancellation for a narrow keep-hard band."""
    lo, hi = band
    if lo > 0 or math.isinf(hi):
        return 2.0 * float(normal_pdf(np.float64(lo))) / fraction
    half_square = 0.5 * hi * hi  # φ(0) - φ(γ) = φ(0)(1 - e^{-γ²/2}) = φ(0)·(γ²/2)·ratio
    ratio = -math.expm1(-half_square) / half_square if half_square > 0 else 1.0
    return (2.0 * hi / (_SQRT_2PI * fraction)) * (0.5 * hi) * ratio


def _small_alpha(alpha: float, band: Band, fraction: float) -> tuple[float, float]:
    """(r, κ) for α < _ALPHA_SMALL: a student that (almost) ignores the teacher.

    There k ≈ 1/√α > 1e10, so every a = k - r|t| exceeds 12 and F(a) = 1 + a² exactly: with K² = 1/α - 1,
    m = ⟨|t|⟩ and V its variance, α⟨F⟩ = 1 gives k = r m + √(K² - r²V), and κ = k/√(1 + r²) is largest at
    r = m K/√((K² + V)² + m²V). Dropping V (an error of O(αV), below 1e-16) leaves r = m/K, κ = √(K² + m²).
    """
    m = _mean_kept_margin(band, fraction)
    root = math.sqrt(alpha)
    return m * root / math.sqrt(1.0 - alpha), math.sqrt(1.0 - alpha + alpha * m * m) / root


@functools.cache
def _edge_margin() -> tuple[float, float]:
    """(u*, H(u*)) of the large-α limit: u* solves u³Φ(u) = (1 - u²)φ(u), H(u) = [(u³+3u)Φ(u) + (u²+2)φ(u)]/3."""
    from scipy.optimize import brentq
    from scipy.special import ndtr

    def phi(x: float) -> float:
        return math.exp(-0.5 * x * x) / _SQRT_2PI

    u = brentq(lambda x: x**3 * ndtr(x) - (1.0 - x * x) * phi(x), 0.1, 1.0, xtol=1e-16, rtol=4 * np.finfo(float).eps)
    return u, ((u**3 + 3.0 * u) * float(ndtr(u)) + (u * u + 2.0) * phi(u)) / 3.0


def _edge_density(band: Band, fraction: float) -> float:
    """p(lo) = 2φ(lo)/f, the density of the kept |t| at the band's inner edge."""
    return 2.0 * float(normal_pdf(np.float64(band[0]))) / fraction


def _large_alpha_log_r(alpha: float, band: Band, fraction: float) -> float:
    """log r for α above _ALPHA_LARGE (_ALPHA_LARGE_EASY for keep easy): the student only sees the band's edge.

    With s = r(|t| - lo) the kept density is p(lo)(1 + O(lo·s/r + s²/r²)), and the two equations become
    α p(lo) H(u)/r = 1 and H(u) = u F(u), H(u) = ∫_0^∞ F(u - s) ds. So u → u* = 0.63883 and
    r = α p(lo) H(u*): at f = 1, ε·α → 1/(π·2φ(0)·H(u*)) = 0.50049 and κ·α → 1.00446.
    """
    return math.log(alpha) + math.log(_edge_density(band, fraction)) + math.log(_edge_margin()[1])


def _narrow_band(alpha: float, band: Band) -> list[tuple[float, float, float, float]]:
    """(κ, log r, u, r) at each local maximum for keep hard with f < FRACTION_NARROW, from the solve at that f.

    On a band [0, γ] this narrow the density 2φ(t)/f is flat to O(γ²), so the problem depends on γ only
    through r·γ and r/γ: the student aligned with the teacher (r ≫ 1) has r ∝ 1/γ and κ ∝ γ at fixed u;
    the one that memorises (r ≪ 1, r ≈ ⟨|t|⟩/k ∝ γ) keeps u and κ. Each branch is scaled, then they compete.
    r is inf where it would pass the ε floor (_log_r_ceiling).
    """
    reference = kept_band(FRACTION_NARROW, Keep.hard)
    ratio = band[1] / reference[1]  # γ/γ_ref, down to 1e-290
    shift = math.log(reference[1]) - math.log(band[1])
    scaled = []
    for _, log_r, u in _local_maxima(alpha, reference, FRACTION_NARROW):
        if log_r > 0:  # aligned: κ = u/√(1 + r²) = (u/r)/√(1 + 1/r²), r = e^(log_r + shift)
            inverse = math.exp(-log_r - shift)
            r = math.exp(log_r) / ratio if log_r + shift <= _log_r_ceiling() else math.inf
            scaled.append((u * inverse / math.hypot(1.0, inverse), log_r + shift, u, r))
        else:  # memorising (or, at log r = -inf, uncorrelated)
            r = math.exp(log_r) * ratio
            scaled.append((u / math.hypot(1.0, r), log_r - shift, u, r))
    return scaled


def _log_r_ceiling() -> float:
    """log r above which ε = arctan(1/r)/π falls below _EPSILON_MIN."""
    return -math.log(math.pi * _EPSILON_MIN)


def _refuse_tiny_epsilon(option: str, value: float, bound: float, context: str, log_r: float) -> OptionError:
    """The error for ε below _EPSILON_MIN: `option` `value` is past `bound`, where ε reaches it."""
    size = "large" if bound < value else "small"
    limit = "at most" if bound < value else "at least"
    exponent = -(log_r + math.log(math.pi)) / math.log(10.0)  # log10 ε, ε = 1/(π r) itself may underflow
    epsilon = f"{10.0 ** (exponent - math.floor(exponent)):.2g}e{math.floor(exponent)}"
    return OptionError(
        f"{option} {show(value)} is too {size}{context} ({limit} {bound:.3g}): ε ≈ {epsilon} would be below "
        f"{_EPSILON_MIN:.3g}, the smallest double at full precision"
    )


def _solution(r: float, u: float, lo: float, kappa: float | None = None) -> Solution:
    """ε, R and κ at r (0: uncorrelated), k = u + r·lo (κ given where it is known more exactly)."""
    hypotenuse = math.hypot(1.0, r)
    kappa = (u + r * lo) / hypotenuse if kappa is None else kappa
    return Solution(epsilon=math.atan2(1.0, r) / math.pi, R=r / hypotenuse, kappa=kappa)


def solve(
    alpha: float, fraction: float = 1.0, keep: Keep = Keep.hard, *, fraction_option: str = "--fraction"
) -> Solution:
    """R, κ and ε of the max-margin student trained on α_prune·N examples kept by the policy (θ = 0).

    The max-margin student is the global maximum of κ(r). κ(r) can have two local maxima (keep hard
    with small f near α = 2: one student that ignores the teacher and memorises, one aligned with it);
    the jump between them is the steep drop of the learning curve. So κ is scanned on a grid of log r
    and every local maximum is refined; the largest κ wins. Where that solve would leave its range (tiny
    or huge α, keep hard's tiny f) the saddle point's limit, exact to double precision there, is returned
    instead. `fraction_option` names the fraction in error messages (pareto's is --min-fraction).
    """
    alpha = check_alpha(alpha)
    fraction = check_solvable_fraction(fraction, fraction_option)
    band = kept_band(fraction, keep)
    if alpha < _ALPHA_SMALL:
        r, kappa = _small_alpha(alpha, band, fraction)
        return _solution(r, 0.0, 0.0, kappa)
    if alpha > (_ALPHA_LARGE if band[0] == 0 else _ALPHA_LARGE_EASY):
        log_r = _large_alpha_log_r(alpha, band, fraction)
        if log_r > _log_r_ceiling():
            at = "" if fraction == 1.0 else f" at {fraction_option} {show(fraction)} --keep {keep.value}"
            raise _refuse_tiny_epsilon("--alpha", alpha, alpha * math.exp(_log_r_ceiling() - log_r), at, log_r)
        u, edge_h = _edge_margin()
        return _solution(alpha * _edge_density(band, fraction) * edge_h, u, band[0])
    if band[0] == 0 and fraction < FRACTION_NARROW:
        if abs(alpha - _STEEP_DROP) < _STEEP_DROP_WIDTH:
            raise OptionError(
                f"{fraction_option} {show(fraction)} is too small at --alpha {show(alpha)} --keep hard (at least "
                f"{FRACTION_NARROW:g} for --alpha within {_STEEP_DROP_WIDTH:g} of 2): this close to the steep drop "
                "at α_prune = 2 the solution is sharper than doubles resolve"
            )
        kappa, log_r, u, r = max(_narrow_band(alpha, band))
        if log_r > _log_r_ceiling():  # r ∝ 1/γ ∝ 1/f
            bound = fraction * math.exp(log_r - _log_r_ceiling())
            raise _refuse_tiny_epsilon(
                fraction_option, fraction, bound, f" at --alpha {show(alpha)} --keep hard", log_r
            )
        return _solution(r, u, 0.0, kappa)
    kappa, log_r, _ = max(_local_maxima(alpha, band, fraction))
    if log_r == -math.inf:
        return Solution(epsilon=0.5, R=0.0, kappa=kappa)
    r = math.exp(log_r)
    return Solution(epsilon=math.atan2(1.0, r) / math.pi, R=r / math.sqrt(1.0 + r * r), kappa=kappa)


def error(alpha: float, fraction: float = 1.0, keep: Keep = Keep.hard, *, fraction_option: str = "--fraction") -> float:
    """ε(α_prune, f) for the policy."""
    return solve(alpha, fraction, keep, fraction_option=fraction_option).epsilon
