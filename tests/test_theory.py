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

CELLS = [
    (1.0, 1.0, Keep.hard),
    (3.0, 0.2, Keep.hard),
    (0.5, 0.3, Keep.easy),
    (5.0, 0.01, Keep.hard),
    (2.0, 1e-300, Keep.easy),  # the smallest fraction solved: band [37.1, ∞)
]


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


# -- extreme inputs: the limit where the math has one, else one clean line; never a hang or a warning -----


def phi(x: float) -> float:
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def second_moment(a: float) -> float:
    return (1 + a * a) * ndtr(a) + a * phi(a)


@pytest.mark.filterwarnings("error")
def test_large_alpha_is_the_limit_of_the_kept_density_at_the_band_edge() -> None:
    from scipy.optimize import brentq

    # r = α p(lo) H(u*), H(u) = ∫_0^∞ F(u - s) ds = uF(u) at u*: at f = 1, ε·α → 1/(π·2φ(0)·u*F(u*)).
    u = brentq(lambda x: x**3 * ndtr(x) - (1 - x * x) * phi(x), 0.1, 1.0, xtol=1e-16)
    epsilon_alpha, kappa_alpha = 1 / (math.pi * 2 * phi(0) * u * second_moment(u)), 1 / (2 * phi(0) * second_moment(u))
    assert (epsilon_alpha, kappa_alpha) == pytest.approx((0.50049, 1.00446), abs=1e-5)
    assert replica.error(1e6) * 1e6 == pytest.approx(epsilon_alpha, rel=1e-11)  # the solve, corrections O(1/α²)
    for alpha in (1e100, 1e307):
        solution = replica.solve(alpha)
        assert solution.R == 1.0
        assert (solution.epsilon * alpha, solution.kappa * alpha) == pytest.approx(
            (epsilon_alpha, kappa_alpha), rel=1e-14
        )
    assert replica.error(1e100, 1e-3) == pytest.approx(epsilon_alpha * 1e-3 / 1e100, rel=1e-14)  # keep hard: ε ∝ f/α
    # Where the limit takes over from the solve, ε·α carries on (keep easy's limit sees the density at γ).
    for fraction, keep, switch in [(1.0, Keep.hard, 1e12), (1e-3, Keep.hard, 1e12), (0.5, Keep.easy, 1e20)]:
        above = replica.error(switch * (1 + 1e-9), fraction, keep) * (1 + 1e-9)
        assert above == pytest.approx(replica.error(switch, fraction, keep), rel=1e-12)


@pytest.mark.filterwarnings("error")
def test_small_alpha_is_the_student_that_all_but_ignores_the_teacher() -> None:
    # R → ⟨|t|⟩√α and κ → 1/√α, on both sides of the closed form's threshold 1e-20 (the solve used to say R = 0).
    for alpha in (1e-10, 1e-19, 1e-21, 1e-300, 5e-324):
        solution = replica.solve(alpha)
        cosine = solution.R
        assert cosine == pytest.approx(math.sqrt(2 / math.pi * alpha), rel=1e-9)
        assert solution.kappa * math.sqrt(alpha) == pytest.approx(1.0, rel=1e-9)
        assert 0.5 - solution.epsilon == pytest.approx(cosine / math.pi, rel=1e-9, abs=1e-16)


@pytest.mark.filterwarnings("error")
def test_memorising_student_below_the_scan_is_found() -> None:
    # At α = 1e-6 every a = k - r|t| > 12, so F(a) = 1 + a² and κ(r) = (r m + √(K² - r²V))/√(1 + r²) exactly
    # (m, V the mean and variance of the kept |t|, K² = 1/α - 1): its maximum is below the scan's r = e^-8.
    alpha, fraction = 1e-6, 0.5
    gamma = replica.kept_band(fraction, Keep.hard)[1]
    mean = 2 * (phi(0) - phi(gamma)) / fraction
    variance = 1 - 2 * gamma * phi(gamma) / fraction - mean * mean
    k2 = 1 / alpha - 1
    r = mean * math.sqrt(k2) / math.sqrt((k2 + variance) ** 2 + mean * mean * variance)
    assert r < math.exp(-8)
    cosine = replica.solve(alpha, fraction).R
    assert cosine == pytest.approx(r / math.sqrt(1 + r * r), rel=1e-9)


@pytest.mark.filterwarnings("error")
def test_tiny_fraction_keep_hard_scales_with_the_band() -> None:
    # Below f = 1e-10 the band [0, γ] is flat: ε ∝ f for the aligned student (also near the steep drop,
    # 1e-5 above it), and memorising students stay at ε = 1/2. f = 1e-9 is still the direct solve.
    assert replica.kept_band(1e-300, Keep.hard)[1] == pytest.approx(math.sqrt(math.pi / 2) * 1e-300, rel=1e-15)
    for alpha in (3.0, 2.00001):
        per_fraction = replica.error(alpha, 1e-9) / 1e-9
        for fraction in (1e-11, 1e-100, 1e-300):
            assert replica.error(alpha, fraction) / fraction == pytest.approx(per_fraction, rel=1e-8)
    assert replica.error(1.5, 1e-300) == 0.5


@pytest.mark.filterwarnings("error")
def test_crossover_at_extreme_fractions() -> None:
    # Small f: keep hard's steep drop, α_prune → 2 (2/f below f = 1e-10); f near 1: α_tot·(1 - f) → 2.0053.
    assert budget.crossover(1e-5) * 1e-5 == pytest.approx(2.0, rel=1e-5)
    assert budget.crossover(1e-300) == 2.0 / 1e-300
    assert budget.crossover(0.99999) * (1 - 0.99999) == pytest.approx(2.00526, rel=1e-5)


@pytest.mark.filterwarnings("error")
def test_f_min_at_small_angles() -> None:
    # γ → √3·sin θ: f_min → √(6/π)·θ in radians, also where sin²θ underflows.
    for theta in (1e-300, 1e-12, 1e-5):
        assert budget.f_min(theta) == pytest.approx(math.sqrt(6 / math.pi) * math.radians(theta), rel=1e-9)
    # The defining identity, where 1 - 2γφ(γ)/(2Φ(γ) - 1) used to cancel (to 1e-5 at 0.0058°, 2e-11 at 0.5°).
    for theta in (0.0058, 0.5, 5.7):
        gamma = replica.kept_band(budget.f_min(theta), Keep.hard)[1]
        spread = quad(lambda t: t * t * phi(t), 0, gamma, epsrel=1e-14)[0] / quad(phi, 0, gamma, epsrel=1e-14)[0]
        assert spread == pytest.approx(math.sin(math.radians(theta)) ** 2, rel=1e-11)


EXTREME_ERRORS = [
    (["error", "--alpha", "inf"], "--alpha inf must be a positive number of examples per parameter, e.g. --alpha 2"),
    (["error", "--alpha", "nan"], "--alpha nan must be a positive number of examples per parameter, e.g. --alpha 2"),
    (["error", "--alpha", "0"], "--alpha 0.0 must be a positive number of examples per parameter, e.g. --alpha 2"),
    (["error", "--alpha", "-1"], "--alpha -1.0 must be a positive number of examples per parameter, e.g. --alpha 2"),
    (["error", "--alpha", "1e10", "--fraction", "1e-300"], "--fraction 1e-300 is too small at --alpha 1e+10 --keep "
     "hard (at least 4.45e-298): ε ≈ 5e-311 would be below 2.23e-308, the smallest double at full precision"),
    (["error", "--alpha", "2.0000001", "--f", "1e-300"], "--fraction 1e-300 is too small at --alpha 2.0000001 --keep "
     "hard (at least 1e-10 for --alpha within 1e-06 of 2): this close to the steep drop at α_prune = 2 the "
     "solution is sharper than doubles resolve"),
    (["error", "--alpha", "2", "--fraction", "1e-310"], "--fraction 1e-310 is too small to solve (at least 1e-300): "
     "the kept density 2φ(t)/f would leave the range of doubles"),
    (["error", "--alpha", "2", "--fraction", "0"], "--fraction 0.0 is outside (0, 1]; e.g. --fraction 0.3 keeps 30% "
     "of the data"),
    (["error", "--alpha", "2", "--fraction", "nan"], "--fraction nan is outside (0, 1]; e.g. --fraction 0.3 keeps 30% "
     "of the data"),
    (["pareto", "--alpha", "2", "--points", "100000000000"], "--points 100000000000 is too many (at most 1000): "
     "each costs two saddle-point solves per --alpha"),
    (["pareto", "--alpha", "2", "--points", "1"], "--points 1 is too few; use at least 2 (e.g. --points 41)"),
    (["pareto", "--alpha", "1e12", "--min-fraction", "1e-300"], "--min-fraction 1e-300 is too small at --alpha 1e+12 "
     "--keep hard (at least 4.45e-296): ε ≈ 5e-313 would be below 2.23e-308, the smallest double at full precision"),
    (["pareto", "--alpha", "2", "--min-f", "1e-310"], "--min-fraction 1e-310 is too small to solve (at least "
     "1e-300): the kept density 2φ(t)/f would leave the range of doubles"),
    (["crossover", "--fraction", "0.999999"], "--fraction 0.999999 is too close to 1 (at most 0.99999): keep easy and "
     "keep hard then differ by less than the solver resolves where they cross, near α_tot = 2/(1 - f)"),
    (["crossover", "--fraction", "0"], "--fraction 0.0 is outside (0, 1]; e.g. --fraction 0.3 keeps 30% of the data"),
    (["fmin", "--theta", "1e308"], "--theta 1e+308 is outside [0, 90] degrees; e.g. --theta 10 for a good probe"),
    (["fmin", "--theta", "nan"], "--theta nan is outside [0, 90] degrees; e.g. --theta 10 for a good probe"),
    (["fmin", "--theta", "-1"], "--theta -1.0 is outside [0, 90] degrees; e.g. --theta 10 for a good probe"),
    (["simulate", "--alpha-tot", "1e308"], "--alpha-tot 1e+308 --fraction 1 --n 200: one draw would hold 2e+310 "
     "probe margins and 2e+310 kept examples of 200 inputs, about 2.24e+296 EiB of memory (at most 8 GiB); lower "
     "--alpha-tot or --n"),
    (["simulate", "--alpha-tot", "4", "--n", "10000000"], "--alpha-tot 4 --fraction 1 --n 10000000: one draw would "
     "hold 4e+07 probe margins and 4e+07 kept examples of 10000000 inputs, about 22.7 PiB of memory (at most 8 GiB); "
     "lower --alpha-tot or --n"),
    (["simulate", "--alpha-tot", "4", "--seed", "-1"], "Invalid value for '--seed': -1 is outside 0..4294967295 (2**32-1); a seed is a non-negative "
     "32-bit integer (see 'datadiet theory simulate --help')"),
    (["simulate", "--alpha-tot", "4", "--fraction", "1e-300"], "--alpha-tot 4.0 --fraction 1e-300 keeps no examples "
     "at --n 200; raise one of them"),
    (["simulate", "--alpha-tot", "4", "--theta", "nan"], "--theta nan is outside [0, 90] degrees; e.g. --theta 10 "
     "for a good probe"),
]  # fmt: skip


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(("args", "message"), EXTREME_ERRORS, ids=[" ".join(args) for args, _ in EXTREME_ERRORS])
def test_cli_extreme_inputs_are_one_line_usage_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["theory", *args])
    assert (result.exit_code, result.output) == (2, f"error: {message}\n")


@pytest.mark.filterwarnings("error")
def test_cli_extreme_inputs_with_a_limit_print_it() -> None:
    assert run_json("error", "--alpha", "1e100")["epsilon"] == pytest.approx(0.5004889317774185e-100, rel=1e-14)
    tiny = run_json("error", "--alpha", "1e-300", "--fraction", "0.5", "--keep", "easy")
    assert (tiny["epsilon"], tiny["kappa"]) == (0.5, pytest.approx(1e150, rel=1e-14))
    assert run_json("error", "--alpha", "3", "--fraction", "1e-300")["epsilon"] == pytest.approx(
        replica.error(3.0, 1e-9) * 1e-291, rel=1e-8
    )
    assert run_json("crossover", "--fraction", "1e-300")["alpha_tot"] == 2.0 / 1e-300
    assert run_json("fmin", "--theta", "90")["f_min"] == 1.0
    assert run_json("fmin", "--theta", "1e-12")["f_min"] == pytest.approx(2.4120041818608917e-14, rel=1e-14)


# These used to hang (a solve looping on 1e308, draws looping, figure curves computed before the error):
# in a subprocess with a timeout, so that a regression fails here instead of stalling the suite.
FORMER_HANGS = [
    (["error", "--alpha", "1e308"], "--alpha 1e+308 is too large (at most 2.25e+307): ε ≈ 5e-309 would be below "
     "2.23e-308, the smallest double at full precision"),
    (["error", "--alpha", "1e308", "--fraction", "0.5"], "--alpha 1e+308 is too large at --fraction 0.5 --keep hard "
     "(at most 1.12e+307): ε ≈ 2.5e-309 would be below 2.23e-308, the smallest double at full precision"),
    (["pareto", "--alpha", "1e308"], "--alpha 1e+308 is too large at --min-fraction 0.01 --keep hard (at most "
     "2.25e+305): ε ≈ 5e-311 would be below 2.23e-308, the smallest double at full precision"),
    (["simulate", "--alpha-tot", "4", "--n", "20", "--draws", "100000000000"], "--draws 100000000000 is too many "
     "(at most 134217728): their results alone would need 5.82 TiB of memory (the paper used 100)"),
    (["plot", "-o", "{tmp}", "--draws", "100000000000"], "--draws 100000000000 is too many (at most 134217728): "
     "their results alone would need 5.82 TiB of memory (the paper used 100)"),
]  # fmt: skip


@pytest.fixture(scope="module")
def former_hangs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Each FORMER_HANGS command run as its own `python -m datadiet_cli theory` process, all at once
    (a hang would end in the 10 s timeout): {command: (exit code, stdout, stderr)}."""
    import os
    import subprocess

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    tmp = tmp_path_factory.mktemp("former-hangs")
    running = {
        " ".join(args): subprocess.Popen(
            [sys.executable, "-m", "datadiet_cli", "theory", *(arg.format(tmp=tmp) for arg in args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args, _ in FORMER_HANGS
    }
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=10)
        results[name] = (process.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize(("args", "message"), FORMER_HANGS, ids=[" ".join(args) for args, _ in FORMER_HANGS])
def test_cli_former_hangs_fail_fast_in_a_subprocess(
    args: list[str], message: str, former_hangs: dict[str, tuple[int, str, str]]
) -> None:
    # Exactly the one line on stderr: no warning, no traceback, no progress bar.
    assert former_hangs[" ".join(args)] == (2, "", f"error: {message}\n")
