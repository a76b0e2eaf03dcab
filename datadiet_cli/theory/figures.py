"""The three figures of `datadiet theory plot`: Fig. 1A (learning curves), Fig. 1C (easy minus hard), Fig. 2 (f_min).

Each figure function returns a matplotlib Figure whose artists hold the computed numbers (a line's
ydata is the curve), so a test can read back what is drawn. matplotlib is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datadiet_cli.data.seeds import check_seed
from datadiet_cli.errors import OptionError
from datadiet_cli.theory.budget import f_min, fraction_grid, pareto_point
from datadiet_cli.theory.replica import Keep, error
from datadiet_cli.theory.simulation import SimulationConfig, check_draws, simulate

ProgressCallback = Callable[[int, int], None]
Tick = Callable[[], None]

FIGURE_FRACTIONS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.1)  # the kept fractions drawn in Fig. 1A
SIMULATED_FRACTIONS = (1.0, 0.4, 0.1)  # ... of which these get simulation dots
SIMULATED_ALPHAS = (0.5, 1.0, 2.0, 4.0, 8.0)
PROBE_ANGLES = (0.0, 10.0, 20.0)  # degrees, the probes simulated in Fig. 2's right panel
PROBE_FRACTIONS = (0.1, 0.15, 0.2, 0.24, 0.3, 0.35, 0.46, 0.6, 0.8, 1.0)
PROBE_ALPHA_TOT = 20.0
FIGURE_NAMES = ("fig1a_learning_curves.png", "fig1c_easy_minus_hard.png", "fig2_fmin.png")


@dataclass(frozen=True)
class FigureGrids:
    """How finely the theory curves are sampled; the defaults draw the figures in docs/figures/theory."""

    curve_points: int = 61  # α_prune values per learning curve of Fig. 1A, log-spaced from 0.2 to 20
    frontier_points: int = 25  # α_prune values on Fig. 1A's Pareto frontier, over the same range
    frontier_fractions: int = 21  # kept fractions searched per policy at each frontier point, 0.1 to 1
    totals: int = 36  # α_tot columns of Fig. 1C, log-spaced from 0.5 to 100
    fractions: int = 19  # kept-fraction rows of Fig. 1C, evenly spaced from 0.05 to 0.95
    thetas: int = 181  # probe angles on Fig. 2's f_min curve, evenly spaced from 0 to 90 degrees


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, even where a display exists
    import matplotlib.pyplot as plt

    return plt


def _ticker(progress: ProgressCallback | None, total: int) -> Tick:
    return (lambda: progress(1, total)) if progress is not None else (lambda: None)


# -- Fig. 1A ---------------------------------------------------------------------------------------


def _learning_curve_steps(draws: int, grids: FigureGrids) -> int:
    """Progress steps of `figure_learning_curves`: one per curve, frontier point and simulation dot."""
    dots = len(SIMULATED_FRACTIONS) * len(SIMULATED_ALPHAS) if draws > 0 else 0
    return len(FIGURE_FRACTIONS) + 1 + grids.frontier_points + dots


def _simulation_dots(axes: Any, color: Any, fraction: float, draws: int, seed: int, n: int, tick: Tick) -> None:
    """Mean ε ± s.e.m. of simulated students at each of SIMULATED_ALPHAS, keep hard at this fraction."""
    means, sems = [], []
    for a in SIMULATED_ALPHAS:
        result = simulate(SimulationConfig(alpha_tot=a / fraction, fraction=fraction, n=n, draws=draws, seed=seed))
        means.append(result.epsilon_mean)
        sems.append(result.sem)
        tick()
    axes.errorbar(SIMULATED_ALPHAS, means, yerr=sems, fmt="o", ms=4, color=color, capsize=2)


def _learning_curves(axes: Any, colors: dict[float, Any], grids: FigureGrids, tick: Tick) -> None:
    """ε vs α_prune, keep hard at each of FIGURE_FRACTIONS, and keep easy at f = 0.1 for contrast."""
    alphas = np.geomspace(0.2, 20.0, grids.curve_points)
    for fraction in FIGURE_FRACTIONS:
        axes.plot(
            alphas, [error(a, fraction) for a in alphas], color=colors[fraction], lw=1.8, label=f"f = {fraction:g}"
        )
        tick()
    axes.plot(
        alphas, [error(a, 0.1, Keep.easy) for a in alphas], color="gray", ls=":", lw=1.5, label="f = 0.1, keep easy"
    )
    tick()


def _frontier(axes: Any, grids: FigureGrids, tick: Tick) -> None:
    """The lowest ε over kept fractions f ≥ 0.1 and both policies, at each α_prune."""
    alphas = np.geomspace(0.2, 20.0, grids.frontier_points)
    fractions = fraction_grid(0.1, grids.frontier_fractions)
    frontier = []
    for a in alphas:
        frontier.append(pareto_point(float(a), fractions).epsilon)
        tick()
    axes.plot(alphas, frontier, color="black", ls="--", lw=1.5, label="Pareto frontier (f ≥ 0.1, both policies)")


def figure_learning_curves(
    draws: int = 20,
    seed: int = 0,
    n: int = 200,
    progress: ProgressCallback | None = None,
    grids: FigureGrids = FigureGrids(),
) -> Any:
    """Fig. 1A: ε vs α_prune for several f (keep hard), the Pareto frontier over f ≥ 0.1, simulation dots."""
    plt = _pyplot()
    tick = _ticker(progress, _learning_curve_steps(draws, grids))
    figure, axes = plt.subplots(figsize=(7.0, 5.0), dpi=150)
    colors = dict(zip(FIGURE_FRACTIONS, plt.cm.viridis(np.linspace(0.0, 0.85, len(FIGURE_FRACTIONS))), strict=True))
    _learning_curves(axes, colors, grids, tick)
    _frontier(axes, grids, tick)
    if draws > 0:
        for fraction in SIMULATED_FRACTIONS:
            _simulation_dots(axes, colors[fraction], fraction, draws, seed, n, tick)
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


# -- Fig. 1C ---------------------------------------------------------------------------------------


def _easy_minus_hard(totals: np.ndarray, fractions: np.ndarray, tick: Tick) -> np.ndarray:
    """ε(keep easy) - ε(keep hard), one row per kept fraction f and one column per α_tot."""
    difference = np.empty((len(fractions), len(totals)))
    for i, fraction in enumerate(fractions):
        for j, total in enumerate(totals):
            alpha = fraction * total
            difference[i, j] = error(alpha, fraction, Keep.easy) - error(alpha, fraction, Keep.hard)
        tick()
    return difference


def figure_easy_minus_hard(progress: ProgressCallback | None = None, grids: FigureGrids = FigureGrids()) -> Any:
    """Fig. 1C: ε(keep easy) - ε(keep hard) over data size α_tot and kept fraction f, with the crossover."""
    from matplotlib.colors import TwoSlopeNorm

    plt = _pyplot()
    totals = np.geomspace(0.5, 100.0, grids.totals)
    fractions = np.linspace(0.05, 0.95, grids.fractions)
    difference = _easy_minus_hard(totals, fractions, _ticker(progress, grids.fractions))
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


# -- Fig. 2 ----------------------------------------------------------------------------------------


def _probe_steps(draws: int) -> int:
    """Progress steps of `figure_fmin`: one per simulated probe and kept fraction."""
    return len(PROBE_ANGLES) * len(PROBE_FRACTIONS) if draws > 0 else 0


def _fmin_panel(axes: Any, grids: FigureGrids) -> None:
    """f_min(θ) over 0-90 degrees, the region below it shaded, and the paper's two quoted values."""
    thetas = np.linspace(0.0, 90.0, grids.thetas)
    minimum = [f_min(t) for t in thetas]
    axes.plot(thetas, minimum, color="C3", lw=2, label="f_min(θ): E[t_p² | kept] = sin²θ")
    axes.fill_between(thetas, 0, minimum, color="C3", alpha=0.12, label="pruning selects on probe noise")
    for theta, quoted in ((10.0, 0.24), (20.0, 0.46)):
        axes.plot([theta], [quoted], "ks", ms=6)
        axes.annotate(
            f"paper: f_min({theta:g}°) ≈ {quoted:.0%}", (theta, quoted), xytext=(8, -12), textcoords="offset points"
        )
    axes.set_xlim(0, 90)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("θ = angle between pruning probe and teacher (degrees)")
    axes.set_ylabel("minimum useful kept fraction f_min")
    axes.set_title("How far an imperfect metric lets you prune")
    axes.grid(True, alpha=0.25)
    axes.legend(loc="lower right", fontsize=8)


def _probe_curve(axes: Any, color: str, theta: float, draws: int, seed: int, n: int, tick: Tick) -> None:
    """Simulated ε ± s.e.m. vs kept fraction at α_tot = PROBE_ALPHA_TOT for a probe θ degrees off."""
    results = []
    for fraction in PROBE_FRACTIONS:
        config = SimulationConfig(
            alpha_tot=PROBE_ALPHA_TOT, fraction=fraction, n=n, theta=theta, draws=draws, seed=seed
        )
        results.append(simulate(config))
        tick()
    axes.errorbar(
        PROBE_FRACTIONS,
        [r.epsilon_mean for r in results],
        yerr=[r.sem for r in results],
        fmt="o-",
        ms=4,
        color=color,
        capsize=2,
        label=f"θ = {theta:g}°",
    )


def figure_fmin(
    draws: int = 20,
    seed: int = 0,
    n: int = 200,
    progress: ProgressCallback | None = None,
    grids: FigureGrids = FigureGrids(),
) -> Any:
    """Fig. 2-style: f_min(θ), and simulated ε vs f at α_tot = 20 for probes θ degrees off the teacher."""
    plt = _pyplot()
    tick = _ticker(progress, _probe_steps(draws))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.5), dpi=150)
    _fmin_panel(left, grids)
    for color, theta in zip(("C0", "C1", "C3"), PROBE_ANGLES, strict=True):
        if draws > 0:
            _probe_curve(right, color, theta, draws, seed, n, tick)
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


# -- the files -------------------------------------------------------------------------------------


def write_figures(
    directory: Path,
    draws: int = 20,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    grids: FigureGrids = FigureGrids(),
) -> list[Path]:
    """Write the three PNGs (FIGURE_NAMES) into `directory`, each atomically; returns their paths."""
    from datadiet_cli.io.files import atomic_path

    if draws < 0 or draws == 1:
        raise OptionError(f"--draws {draws} must be 0 (no simulation dots) or at least 2")
    if draws > 0:  # before minutes of curves, not at the first simulation dot
        check_draws(draws)
        check_seed(seed)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OptionError(f"{directory}: is a file; -o takes a folder for the PNGs")
    steps = _learning_curve_steps(draws, grids) + grids.fractions + _probe_steps(draws)
    report = (lambda done, total: progress(done, steps)) if progress is not None else None
    makers = (
        lambda: figure_learning_curves(draws, seed, progress=report, grids=grids),
        lambda: figure_easy_minus_hard(report, grids),
        lambda: figure_fmin(draws, seed, progress=report, grids=grids),
    )
    written = []
    for name, make in zip(FIGURE_NAMES, makers, strict=True):
        figure = make()
        with atomic_path(directory / name) as temporary:
            figure.savefig(temporary, format="png")
        _pyplot().close(figure)
        written.append(directory / name)
    return written
