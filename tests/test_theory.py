"""`datadiet theory`: the saddle point against independent high-precision solves, known limits, f_min,
simulation, the numbers each figure draws (read back from its artists), and the command line."""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import ndtr
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.errors import OptionError, SolverError
from datadiet_cli.theory import budget, figures, replica, simulation
from datadiet_cli.theory.replica import Keep
from datadiet_cli.theory.simulation import SimulationConfig

runner = CliRunner()

CELLS = [(1.0, 1.0, Keep.hard), (3.0, 0.2, Keep.hard), (0.5, 0.3, Keep.easy), (5.0, 0.01, Keep.hard)]


def order_parameters(solution: replica.Solution) -> tuple[float, float]:
    """(k, r) from ε and κ without the cancellation in 1 - R² near R = 1."""
    r = 1.0 / math.tan(math.pi * solution.epsilon)
    return solution.kappa * math.sqrt(1.0 + r * r), r


# -- the saddle point -------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "fraction", "keep"), CELLS[:3])
def test_solution_matches_an_independent_mpmath_solve_to_1e_9(alpha: float, fraction: float, keep: Keep) -> None:
    # mpmath's tanh-sinh quadrature at its default 15 digits: an independent solve good to ~1e-14 in ε.
    mp = pytest.importorskip("mpmath").mp
    solution = replica.solve(alpha, fraction, keep)
    k0, r0 = order_parameters(solution)
    with mp.workdps(15):
        f = mp.mpf(fraction)
        if fraction == 1.0:
            lo, hi = mp.mpf(0), mp.inf
        elif keep is Keep.hard:
            lo, hi = mp.mpf(0), mp.sqrt(2) * mp.erfinv(f)
        else:
            lo, hi = mp.sqrt(2) * mp.erfinv(1 - f), mp.inf

        def phi(x):
            return mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi)

        def equations(k, r):
            points = [lo, *([k / r] if lo < k / r < hi else []), hi]

            def average(g):
                return mp.quad(lambda t: 2 * phi(t) / f * g(k - r * t, t), points)

            second = average(lambda a, t: (1 + a * a) * mp.ncdf(a) + a * phi(a))
            slope_t = average(lambda a, t: 2 * (a * mp.ncdf(a) + phi(a)) * t)
            slope = average(lambda a, t: 2 * (a * mp.ncdf(a) + phi(a)))
            return alpha * second - 1, ((1 + r * r) * slope_t - k * r * slope) / (1 + r * r)

        _, r = mp.findroot(equations, (mp.mpf(k0), mp.mpf(r0)), tol=mp.mpf(10) ** -20)
        reference = float(mp.atan(1 / r) / mp.pi)
    assert solution.epsilon == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize(("alpha", "fraction", "keep"), CELLS)
def test_solution_satisfies_both_equations_under_tight_quadrature(alpha: float, fraction: float, keep: Keep) -> None:
    k, r = order_parameters(replica.solve(alpha, fraction, keep))
    lo, hi = replica.kept_band(fraction, keep)
    cut = k / r

    def average(g) -> float:
        def integrand(t: float) -> float:
            return 2 * math.exp(-t * t / 2) / math.sqrt(2 * math.pi) / fraction * g(k - r * t, t)

        pieces = [(lo, cut), (cut, hi)] if lo < cut < hi else [(lo, hi)]
        return sum(quad(integrand, a, b, epsabs=0, epsrel=1e-13, limit=500)[0] for a, b in pieces)

    def second(a: float, t: float) -> float:
        return (1 + a * a) * ndtr(a) + a * math.exp(-a * a / 2) / math.sqrt(2 * math.pi)

    def slope(a: float, t: float) -> float:
        return 2 * (a * ndtr(a) + math.exp(-a * a / 2) / math.sqrt(2 * math.pi))

    assert alpha * average(second) == pytest.approx(1.0, rel=1e-9)
    rising = (1 + r * r) * average(lambda a, t: slope(a, t) * t)
    assert rising == pytest.approx(k * r * average(slope), rel=1e-8)


def test_unpruned_perceptron_tends_to_the_classical_half_over_alpha() -> None:
    # Max-margin perceptron (Gardner; Engel & Van den Broeck): ε·α → 0.50 at large α.
    products = [replica.error(alpha) * alpha for alpha in (1e2, 1e3, 1e4)]
    assert products == pytest.approx([0.5005] * 3, abs=1e-3)
    assert abs(products[2] - products[1]) < 1e-5


def test_known_unpruned_values_and_monotone_learning_curve() -> None:
    errors = [replica.error(alpha) for alpha in (0.5, 1.0, 2.0, 5.0, 10.0)]
    assert errors == pytest.approx([0.32885, 0.26571, 0.18848, 0.093827, 0.049183], rel=1e-4)
    assert all(a > b for a, b in itertools.pairwise(errors))


def test_keep_easy_and_keep_hard_coincide_at_f_1() -> None:
    assert replica.error(2.0, 1.0, Keep.easy) == replica.error(2.0, 1.0, Keep.hard)


def test_solution_is_the_global_maximum_of_the_margin_across_the_steep_drop() -> None:
    # Keep hard, tiny f: below α ≈ 2 the kept points can be memorised without the teacher (ε ≈ 1/2),
    # above it the student is pinned to the teacher with an error proportional to the band width.
    assert replica.error(1.5, 0.03) > 0.45
    assert replica.error(2.5, 0.03) < 0.01
    assert replica.error(3.0, 1e-4) / replica.error(3.0, 1e-5) == pytest.approx(10.0, rel=1e-2)


def test_tolerance_is_relative_for_tiny_errors() -> None:
    tiny = replica.error(5.0, 1e-6)
    assert 0 < tiny < 1e-6
    assert tiny == pytest.approx(replica.error(5.0, 1e-5) / 10, rel=1e-3)


def test_bad_inputs_raise_option_errors() -> None:
    with pytest.raises(OptionError, match=r"--alpha -1\.0 must be a positive number"):
        replica.solve(-1.0)
    with pytest.raises(OptionError, match=r"--fraction 0\.0 is outside \(0, 1\]"):
        replica.solve(1.0, 0.0)
    with pytest.raises(OptionError, match=r"--theta 91\.0 is outside \[0, 90\]"):
        budget.f_min(91.0)


# -- pareto, crossover, f_min --------------------------------------------------------------------


def test_pareto_point_is_the_minimum_over_its_grid() -> None:
    grid = budget.fraction_grid(0.1, 11)
    point = budget.pareto_point(1.0, grid)
    on_grid = min(replica.error(1.0, f, keep) for f in grid for keep in Keep)
    assert point.epsilon <= on_grid
    assert point.epsilon < point.epsilon_unpruned == replica.error(1.0)
    assert point.keep is Keep.easy  # scarce data: keep the easy examples


@pytest.fixture(scope="module")
def crossover_at_half() -> float:
    """α_tot where keep easy and keep hard meet at f = 0.5 (the slowest solve here: computed once)."""
    return budget.crossover(0.5)


def test_crossover_separates_easy_from_hard(crossover_at_half: float) -> None:
    alpha_tot = crossover_at_half
    assert 3.0 < alpha_tot < 8.0
    below, above = 0.9 * alpha_tot * 0.5, 1.1 * alpha_tot * 0.5
    assert replica.error(below, 0.5, Keep.easy) < replica.error(below, 0.5, Keep.hard)
    assert replica.error(above, 0.5, Keep.hard) < replica.error(above, 0.5, Keep.easy)
    with pytest.raises(OptionError, match="--fraction 1 keeps everything"):
        budget.crossover(1.0)


def test_f_min_reproduces_the_papers_quoted_values() -> None:
    assert round(budget.f_min(10.0), 2) == 0.24
    assert round(budget.f_min(20.0), 2) == 0.46


def test_f_min_limits_and_defining_identity() -> None:
    assert budget.f_min(0.0) == 0.0
    assert budget.f_min(90.0) == 1.0
    values = [budget.f_min(t) for t in np.linspace(1, 89, 23)]
    assert all(a < b for a, b in itertools.pairwise(values))
    # The kept band |t_p| < γ holds f_min of the mass and has E[t_p² | kept] = sin²θ.
    fraction = budget.f_min(30.0)
    gamma = replica.kept_band(fraction, Keep.hard)[1]
    spread = (
        quad(lambda t: t * t * math.exp(-t * t / 2), 0, gamma)[0] / quad(lambda t: math.exp(-t * t / 2), 0, gamma)[0]
    )
    assert spread == pytest.approx(0.25, rel=1e-9)


# -- simulation ---------------------------------------------------------------------------------------


def test_max_margin_on_a_hand_made_toy() -> None:
    # min |w|² s.t. w·z ≥ 1: with z = (1, 0), (0, 1) and the inactive (2, 2), w = (1, 1).
    w = simulation.max_margin(np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]))
    assert w == pytest.approx([1.0, 1.0], abs=1e-12)
    with pytest.raises(SolverError, match="not linearly separable"):
        simulation.max_margin(np.array([[1.0, 0.0], [-1.0, 0.0]]))


@pytest.mark.parametrize(("alpha_tot", "fraction", "keep"), [(4.0, 0.5, Keep.hard), (10.0, 0.2, Keep.easy)])
def test_simulation_agrees_with_theory_within_3_sem(alpha_tot: float, fraction: float, keep: Keep) -> None:
    config = SimulationConfig(alpha_tot=alpha_tot, fraction=fraction, keep=keep, n=200, draws=10, seed=1)
    result = simulation.simulate(config)
    assert result.n_kept == round(fraction * alpha_tot * 200)
    expected = replica.error(result.alpha_prune, fraction, keep)
    assert abs(result.epsilon_mean - expected) < 3 * result.sem


def test_simulation_is_reproducible_and_reports_progress() -> None:
    config = SimulationConfig(alpha_tot=2.0, fraction=0.5, n=30, theta=20.0, draws=3, seed=7)
    calls: list[tuple[int, int]] = []
    first = simulation.simulate(config, progress=lambda done, total: calls.append((done, total)))
    assert simulation.simulate(config).epsilons == first.epsilons
    assert calls == [(1, 3)] * 3
    with pytest.raises(OptionError, match="--draws 1 gives no standard error"):
        simulation.simulate(SimulationConfig(alpha_tot=2.0, draws=1))


# -- figures --------------------------------------------------------------------------------------

# A few points per curve: every drawn number can be recomputed here in well under a second.
FEW_POINTS = figures.FigureGrids(
    curve_points=3, frontier_points=1, frontier_fractions=3, totals=3, fractions=3, thetas=7
)


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    """Figures made through pyplot stay open until closed: close them after every test."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def lines_by_label(axes: Any) -> dict[str, Any]:
    return {line.get_label(): line for line in axes.lines}


def test_fig1a_draws_the_solver_curves_frontier_and_simulation_means() -> None:
    figure = figures.figure_learning_curves(draws=2, seed=3, n=20, grids=FEW_POINTS)
    axes = figure.axes[0]
    lines = lines_by_label(axes)
    alphas = [0.2, 2.0, 20.0]
    for fraction in (1.0, 0.4, 0.1):
        assert lines[f"f = {fraction:g}"].get_xdata() == pytest.approx(alphas)
        assert lines[f"f = {fraction:g}"].get_ydata() == pytest.approx([replica.error(a, fraction) for a in alphas])
    easy = lines["f = 0.1, keep easy"]
    assert easy.get_ydata() == pytest.approx([replica.error(a, 0.1, Keep.easy) for a in alphas])
    frontier = lines["Pareto frontier (f ≥ 0.1, both policies)"]
    best = budget.pareto_point(0.2, budget.fraction_grid(0.1, 3))
    assert list(frontier.get_xdata()) == pytest.approx([0.2]) and list(frontier.get_ydata()) == [best.epsilon]
    # One errorbar series per simulated fraction, in SIMULATED_FRACTIONS order; the second is f = 0.4.
    dots = axes.containers[1].lines[0]
    config = SimulationConfig(alpha_tot=1.0, fraction=0.4, n=20, draws=2, seed=3)
    expected = [simulation.simulate(replace(config, alpha_tot=a / 0.4)).epsilon_mean for a in figures.SIMULATED_ALPHAS]
    assert list(dots.get_xdata()) == list(figures.SIMULATED_ALPHAS) and list(dots.get_ydata()) == expected
    assert "simulation, N = 20, 2 draws (± s.e.m.)" in [text.get_text() for text in axes.get_legend().get_texts()]


def test_fig1c_colours_easy_minus_hard_with_the_crossover_inside_the_grid(crossover_at_half: float) -> None:
    figure = figures.figure_easy_minus_hard(grids=FEW_POINTS)
    difference = np.asarray(figure.axes[0].collections[0].get_array()).reshape(3, 3)  # rows f, columns α_tot
    totals = np.geomspace(0.5, 100.0, 3)  # 0.5, 7.07, 100
    middle = [replica.error(0.5 * t, 0.5, Keep.easy) - replica.error(0.5 * t, 0.5, Keep.hard) for t in totals]
    assert difference[1] == pytest.approx(middle, rel=1e-12)
    # At f = 0.5 keep easy wins below α_tot = 5.05 and keep hard above: the sign flips between columns 0 and 1.
    assert totals[0] < crossover_at_half < totals[1]
    assert difference[1, 0] < 0 < difference[1, 1]


def test_fig2_draws_f_min_and_the_simulated_probe_curves() -> None:
    figure = figures.figure_fmin(draws=2, seed=5, n=20, grids=FEW_POINTS)
    left, right = figure.axes[:2]
    curve = left.lines[0]
    assert curve.get_xdata() == pytest.approx(np.linspace(0, 90, 7))
    assert list(curve.get_ydata()) == [budget.f_min(t) for t in np.linspace(0, 90, 7)]
    dashed = [line.get_xdata()[0] for line in right.lines if line.get_linestyle() == "--"]
    assert dashed == [budget.f_min(10.0), budget.f_min(20.0)]
    probe = {series.get_label(): series for series in right.containers}["θ = 10°"].lines[0]
    config = SimulationConfig(alpha_tot=figures.PROBE_ALPHA_TOT, n=20, theta=10.0, draws=2, seed=5)
    expected = [simulation.simulate(replace(config, fraction=f)).epsilon_mean for f in figures.PROBE_FRACTIONS]
    assert list(probe.get_xdata()) == list(figures.PROBE_FRACTIONS) and list(probe.get_ydata()) == expected


def test_write_figures_writes_three_pngs_and_counts_its_progress(tmp_path: Path) -> None:
    from PIL import Image

    calls: list[tuple[int, int]] = []
    written = figures.write_figures(tmp_path, draws=0, progress=lambda *call: calls.append(call), grids=FEW_POINTS)
    assert [path.name for path in written] == list(figures.FIGURE_NAMES)
    # Fig. 1A: 6 curves, keep easy, 1 frontier point; Fig. 1C: 3 rows; Fig. 2 without dots: none.
    assert calls == [(1, 11)] * 11
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 400
    with pytest.raises(OptionError, match="--draws 1 must be 0"):
        figures.write_figures(tmp_path, draws=1)


# -- the command line -----------------------------------------------------------------------------


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["theory", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_json_outputs(crossover_at_half: float) -> None:
    error = run_json("error", "--alpha", "2", "--fraction", "0.5", "--keep", "hard")
    assert {"epsilon", "R", "kappa"} <= error.keys() and (error["alpha"], error["f"], error["keep"]) == (
        2.0,
        0.5,
        "hard",
    )
    assert error["epsilon"] == pytest.approx(replica.error(2.0, 0.5))
    assert run_json("fmin", "--theta", "10")["f_min"] == pytest.approx(budget.f_min(10.0))
    assert run_json("crossover", "--fraction", "0.5")["alpha_tot"] == pytest.approx(crossover_at_half)
    rows = run_json("pareto", "--alpha", "1", "--alpha", "5", "--min-fraction", "0.2", "--points", "5")["pareto"]
    assert [row["alpha"] for row in rows] == [1.0, 5.0]
    assert {"fraction", "keep", "epsilon", "alpha_tot", "at_grid_edge"} <= rows[0].keys()
    simulated = run_json("simulate", "--n", "40", "--alpha-tot", "3", "--fraction", "0.5", "--draws", "3")
    assert {"epsilon_mean", "sem", "epsilon_theory", "n_kept"} <= simulated.keys()


def test_cli_old_spellings_still_work_but_help_shows_only_fraction() -> None:
    assert run_json("error", "--alpha", "2", "--f", "0.5") == run_json("error", "--alpha", "2", "--fraction", "0.5")
    assert run_json("error", "--alpha", "2", "--f=0.5")["f"] == 0.5
    old = run_json("pareto", "--alpha", "1", "--min-f", "0.2", "--points", "3")
    assert old == run_json("pareto", "--alpha", "1", "--min-fraction", "0.2", "--points", "3")
    for command in ("error", "pareto", "crossover", "simulate"):
        shown = runner.invoke(app, ["theory", command, "--help"], env={"COLUMNS": "200"}).output
        assert "--fraction" in shown or "--min-fraction" in shown
        assert "--f " not in shown and "--f=" not in shown and "--min-f " not in shown


def test_cli_pareto_text_names_the_grid_edge_option() -> None:
    result = runner.invoke(app, ["theory", "pareto", "--alpha", "20", "--min-fraction", "0.5", "--points", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("at --min-fraction")


def test_cli_bad_input_is_one_line() -> None:
    # The messages name --fraction, the option --help shows, also when the hidden --f was typed.
    for spelling in ("--fraction", "--f"):
        result = runner.invoke(app, ["theory", "error", "--alpha", "2", spelling, "1.5"])
        assert result.exit_code == 2
        assert "--fraction 1.5 is outside (0, 1]; e.g. --fraction 0.3 keeps 30% of the data" in result.output
        assert "Traceback" not in result.output
    result = runner.invoke(app, ["theory", "fmin", "--theta", "120"])
    assert result.exit_code == 2
    assert "--theta 120.0 is outside [0, 90] degrees" in result.output


def test_cli_plot_refuses_a_file_as_folder(tmp_path: Path) -> None:
    target = tmp_path / "taken.png"
    target.write_text("x")
    result = runner.invoke(app, ["theory", "plot", "-o", str(target)])
    assert result.exit_code == 2
    assert "is a file; -o takes a folder for the PNGs" in result.output


def test_cli_plot_writes_the_three_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The command's own work (options, progress bar, summary) at full size; the figures at FEW_POINTS.
    monkeypatch.setattr(figures, "write_figures", partial(figures.write_figures, grids=FEW_POINTS))
    result = runner.invoke(app, ["theory", "plot", "-o", str(tmp_path / "figs"), "--draws", "0"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"wrote {tmp_path / 'figs' / name}" for name in figures.FIGURE_NAMES]
    assert sorted(path.name for path in (tmp_path / "figs").iterdir()) == sorted(figures.FIGURE_NAMES)
