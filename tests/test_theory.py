"""`datadiet theory`: the saddle point against independent high-precision solves, known limits, f_min, simulation."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import ndtr
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.errors import OptionError, SolverError
from datadiet_cli.theory import model as theory
from datadiet_cli.theory.model import Policy, SimulationConfig

runner = CliRunner()

CELLS = [(1.0, 1.0, Policy.hard), (3.0, 0.2, Policy.hard), (0.5, 0.3, Policy.easy), (5.0, 0.01, Policy.hard)]


def order_parameters(solution: theory.Solution) -> tuple[float, float]:
    """(k, r) from ε and κ without the cancellation in 1 - R² near R = 1."""
    r = 1.0 / math.tan(math.pi * solution.epsilon)
    return solution.kappa * math.sqrt(1.0 + r * r), r


# -- the saddle point -------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "fraction", "keep"), CELLS[:3])
def test_solution_matches_an_independent_mpmath_solve_to_1e_6(alpha: float, fraction: float, keep: Policy) -> None:
    mp = pytest.importorskip("mpmath").mp
    mp.dps = 20
    solution = theory.solve(alpha, fraction, keep)
    k0, r0 = order_parameters(solution)
    f = mp.mpf(fraction)
    if fraction == 1.0:
        lo, hi = mp.mpf(0), mp.inf
    elif keep is Policy.hard:
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

    _, r = mp.findroot(equations, (mp.mpf(k0), mp.mpf(r0)), tol=mp.mpf(10) ** -28)
    reference = float(mp.atan(1 / r) / mp.pi)
    assert solution.epsilon == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize(("alpha", "fraction", "keep"), CELLS)
def test_solution_satisfies_both_equations_under_tight_quadrature(alpha: float, fraction: float, keep: Policy) -> None:
    k, r = order_parameters(theory.solve(alpha, fraction, keep))
    lo, hi = theory.kept_band(fraction, keep)
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
    products = [theory.error(alpha) * alpha for alpha in (1e2, 1e3, 1e4)]
    assert products == pytest.approx([0.5005] * 3, abs=1e-3)
    assert abs(products[2] - products[1]) < 1e-5


def test_known_unpruned_values_and_monotone_learning_curve() -> None:
    errors = [theory.error(alpha) for alpha in (0.5, 1.0, 2.0, 5.0, 10.0)]
    assert errors == pytest.approx([0.32885, 0.26571, 0.18848, 0.093827, 0.049183], rel=1e-4)
    assert all(a > b for a, b in itertools.pairwise(errors))


def test_keep_easy_and_keep_hard_coincide_at_f_1() -> None:
    assert theory.error(2.0, 1.0, Policy.easy) == theory.error(2.0, 1.0, Policy.hard)


def test_solution_is_the_global_maximum_of_the_margin_across_the_steep_drop() -> None:
    # Keep hard, tiny f: below α ≈ 2 the kept points can be memorised without the teacher (ε ≈ 1/2),
    # above it the student is pinned to the teacher with an error proportional to the band width.
    assert theory.error(1.5, 0.03) > 0.45
    assert theory.error(2.5, 0.03) < 0.01
    assert theory.error(3.0, 1e-4) / theory.error(3.0, 1e-5) == pytest.approx(10.0, rel=1e-2)


def test_tolerance_is_relative_for_tiny_errors() -> None:
    tiny = theory.error(5.0, 1e-6)
    assert 0 < tiny < 1e-6
    assert tiny == pytest.approx(theory.error(5.0, 1e-5) / 10, rel=1e-3)


def test_bad_inputs_raise_option_errors() -> None:
    with pytest.raises(OptionError, match=r"--alpha -1\.0 must be a positive number"):
        theory.solve(-1.0)
    with pytest.raises(OptionError, match=r"--f 0\.0 is outside \(0, 1\]"):
        theory.solve(1.0, 0.0)
    with pytest.raises(OptionError, match=r"--theta 91\.0 is outside \[0, 90\]"):
        theory.f_min(91.0)


# -- pareto, crossover, f_min --------------------------------------------------------------------


def test_pareto_point_is_the_minimum_over_its_grid() -> None:
    grid = theory.fraction_grid(0.1, 11)
    point = theory.pareto_point(1.0, grid)
    on_grid = min(theory.error(1.0, f, keep) for f in grid for keep in Policy)
    assert point.epsilon <= on_grid
    assert point.epsilon < point.epsilon_unpruned == theory.error(1.0)
    assert point.keep is Policy.easy  # scarce data: keep the easy examples


def test_crossover_separates_easy_from_hard() -> None:
    alpha_tot = theory.crossover(0.5)
    assert 3.0 < alpha_tot < 8.0
    below, above = 0.9 * alpha_tot * 0.5, 1.1 * alpha_tot * 0.5
    assert theory.error(below, 0.5, Policy.easy) < theory.error(below, 0.5, Policy.hard)
    assert theory.error(above, 0.5, Policy.hard) < theory.error(above, 0.5, Policy.easy)
    with pytest.raises(OptionError, match="--f 1 keeps everything"):
        theory.crossover(1.0)


def test_f_min_reproduces_the_papers_quoted_values() -> None:
    assert round(theory.f_min(10.0), 2) == 0.24
    assert round(theory.f_min(20.0), 2) == 0.46


def test_f_min_limits_and_defining_identity() -> None:
    assert theory.f_min(0.0) == 0.0
    assert theory.f_min(90.0) == 1.0
    values = [theory.f_min(t) for t in np.linspace(1, 89, 23)]
    assert all(a < b for a, b in itertools.pairwise(values))
    # The kept band |t_p| < γ holds f_min of the mass and has E[t_p² | kept] = sin²θ.
    fraction = theory.f_min(30.0)
    gamma = theory.kept_band(fraction, Policy.hard)[1]
    spread = (
        quad(lambda t: t * t * math.exp(-t * t / 2), 0, gamma)[0] / quad(lambda t: math.exp(-t * t / 2), 0, gamma)[0]
    )
    assert spread == pytest.approx(0.25, rel=1e-9)


# -- simulation ---------------------------------------------------------------------------------------


def test_max_margin_on_a_hand_made_toy() -> None:
    # min |w|² s.t. w·z ≥ 1: with z = (1, 0), (0, 1) and the inactive (2, 2), w = (1, 1).
    w = theory.max_margin(np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]))
    assert w == pytest.approx([1.0, 1.0], abs=1e-12)
    with pytest.raises(SolverError, match="not linearly separable"):
        theory.max_margin(np.array([[1.0, 0.0], [-1.0, 0.0]]))


@pytest.mark.parametrize(("alpha_tot", "fraction", "keep"), [(4.0, 0.5, Policy.hard), (10.0, 0.2, Policy.easy)])
def test_simulation_agrees_with_theory_within_3_sem(alpha_tot: float, fraction: float, keep: Policy) -> None:
    config = SimulationConfig(alpha_tot=alpha_tot, fraction=fraction, keep=keep, n=200, draws=10, seed=1)
    result = theory.simulate(config)
    assert result.n_kept == round(fraction * alpha_tot * 200)
    expected = theory.error(result.alpha_prune, fraction, keep)
    assert abs(result.epsilon_mean - expected) < 3 * result.sem


def test_simulation_is_reproducible_and_reports_progress() -> None:
    config = SimulationConfig(alpha_tot=2.0, fraction=0.5, n=30, theta=20.0, draws=3, seed=7)
    calls: list[tuple[int, int]] = []
    first = theory.simulate(config, progress=lambda done, total: calls.append((done, total)))
    assert theory.simulate(config).epsilons == first.epsilons
    assert calls == [(1, 3)] * 3
    with pytest.raises(OptionError, match="--draws 1 gives no standard error"):
        theory.simulate(SimulationConfig(alpha_tot=2.0, draws=1))


# -- the command line -----------------------------------------------------------------------------


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["theory", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_json_outputs() -> None:
    error = run_json("error", "--alpha", "2", "--f", "0.5", "--keep", "hard")
    assert {"epsilon", "R", "kappa"} <= error.keys()
    assert error["epsilon"] == pytest.approx(theory.error(2.0, 0.5))
    assert run_json("fmin", "--theta", "10")["f_min"] == pytest.approx(theory.f_min(10.0))
    assert run_json("crossover", "--f", "0.5")["alpha_tot"] == pytest.approx(theory.crossover(0.5))
    rows = run_json("pareto", "--alpha", "1", "--alpha", "5", "--min-f", "0.2", "--points", "5")["pareto"]
    assert [row["alpha"] for row in rows] == [1.0, 5.0]
    assert {"fraction", "keep", "epsilon", "alpha_tot", "at_grid_edge"} <= rows[0].keys()
    simulated = run_json("simulate", "--n", "40", "--alpha-tot", "3", "--f", "0.5", "--draws", "3")
    assert {"epsilon_mean", "sem", "epsilon_theory", "n_kept"} <= simulated.keys()


def test_cli_bad_input_is_one_line() -> None:
    result = runner.invoke(app, ["theory", "error", "--alpha", "2", "--f", "1.5"])
    assert result.exit_code == 2
    assert "--f 1.5 is outside (0, 1]; e.g. --f 0.3 keeps 30% of the data" in result.output
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


def test_cli_plot_writes_the_three_figures_without_simulation_dots(tmp_path: Path) -> None:
    from PIL import Image

    result = runner.invoke(app, ["theory", "plot", "-o", str(tmp_path / "figs"), "--draws", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in (tmp_path / "figs").iterdir())
    assert names == ["fig1a_learning_curves.png", "fig1c_easy_minus_hard.png", "fig2_fmin.png"]
    for name in names:
        with Image.open(tmp_path / "figs" / name) as image:
            assert image.format == "PNG" and min(image.size) >= 400
