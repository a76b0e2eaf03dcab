"""`datadiet theory ...`: the perceptron theory of data pruning, computed (no manifests, no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from datadiet_cli import console
from datadiet_cli.io.files import check_output_folder, to_jsonable
from datadiet_cli.options import Quiet, Seed
from datadiet_cli.theory import budget, figures, replica, simulation
from datadiet_cli.theory.replica import Keep

# The first spellings of the kept fraction; `prune --fraction` named it better. Still read, no longer listed.
_HIDDEN_ALIASES = {"--f": "--fraction", "--min-f": "--min-fraction"}


def _canonical_options(args: list[str]) -> list[str]:
    """`args` with every hidden alias (also as `--f=0.5`) spelled as the option it stands for."""
    split = (arg.partition("=") for arg in args)
    return [_HIDDEN_ALIASES.get(name, name) + equals + value for name, equals, value in split]


class _AliasedCommand(TyperCommand):
    """A command that also accepts the _HIDDEN_ALIASES: --help shows only the current names.

    Every argument is rewritten, values too, so it is only for commands whose values are numbers or choices.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _canonical_options(args))


app = typer.Typer(
    name="theory",
    help=(
        "The teacher-student perceptron theory of data pruning (Sorscher et al. 2022, §3 and App. A): the test "
        "error of a max-margin student trained on a pruned set, solved and simulated, to reason about a pruning "
        "budget before spending GPU hours (docs/theory.md).\n\n"
        "Example: datadiet theory error --alpha 2 --fraction 0.5 --keep hard"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

Alpha = Annotated[
    float, typer.Option("--alpha", help="α_prune: kept examples per parameter, P_kept / N.", show_default=False)
]
FractionOption = Annotated[float, typer.Option("--fraction", help="Kept fraction f of the full dataset, in (0, 1].")]
KeepOption = Annotated[Keep, typer.Option("--keep", help="hard: keep the f smallest |margins|; easy: the f largest.")]
Theta = Annotated[
    float, typer.Option("--theta", help="Angle between pruning probe and teacher, degrees (0 = perfect).")
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of text.")]


def _emit(as_json: bool, payload: dict[str, Any], *lines: str) -> None:
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        console.summary(False, *lines)


@app.command("error", cls=_AliasedCommand)
def error(alpha: Alpha, fraction: FractionOption = 1.0, keep: KeepOption = Keep.hard, as_json: Json = False) -> None:
    """Test error ε = arccos(R)/π of the max-margin student on a set pruned by the teacher's margin.

    Solves the replica saddle point for R (student-teacher cosine) and κ (the student's margin). f = 1 is the classical max-margin perceptron, ε ≈ 0.50/α at large α.

    Example: datadiet theory error --alpha 2 --fraction 0.5 --keep hard --json
    """
    s = replica.solve(alpha, fraction, keep)
    _emit(
        as_json,
        {"epsilon": s.epsilon, "R": s.R, "kappa": s.kappa, "alpha": alpha, "f": fraction, "keep": keep.value},
        f"ε = {s.epsilon:.6g}  (R = {s.R:.6g}, κ = {s.kappa:.6g}) at α_prune {alpha:g}, f {fraction:g}, "
        f"keep {keep.value}",
    )


@app.command("pareto", cls=_AliasedCommand)
def pareto(
    alpha: Annotated[
        list[float], typer.Option("--alpha", help="α_prune values; repeat the option.", show_default=False)
    ],
    min_fraction: Annotated[
        float, typer.Option("--min-fraction", help="Smallest kept fraction searched (grid from it to 1).")
    ] = 0.01,
    points: Annotated[int, typer.Option("--points", help="Grid points in f (log-spaced), per policy.")] = 41,
    as_json: Json = False,
) -> None:
    """For each α_prune, the kept fraction f and policy with the lowest ε (Fig. 1A's Pareto frontier, Fig. 1E's f_opt).

    With a perfect metric ε keeps falling as f shrinks at fixed α_prune, so f_opt often sits at --min-fraction (flagged at_grid_edge): the real limit is the raw data it needs, alpha_tot = α_prune / f.

    Example: datadiet theory pareto --alpha 1 --alpha 3 --alpha 10 --min-fraction 0.1 --json
    """
    results = budget.pareto_frontier(alpha, min_fraction, points)
    rows = [{**to_jsonable(p), "alpha_tot": p.alpha / p.fraction} for p in results]
    _emit(
        as_json,
        {"pareto": rows},
        *(
            f"α_prune {p.alpha:g}: keep {p.keep.value} f = {p.fraction:.4g} -> ε = {p.epsilon:.4g} "
            f"(unpruned {p.epsilon_unpruned:.4g}; needs α_tot {p.alpha / p.fraction:.4g})"
            + " at --min-fraction"
            * p.at_grid_edge
            for p in results
        ),
    )


@app.command("crossover", cls=_AliasedCommand)
def crossover(
    fraction: Annotated[float, typer.Option("--fraction", help="Kept fraction f, in (0, 1).", show_default=False)],
    as_json: Json = False,
) -> None:
    """The data size α_tot at which keep easy and keep hard give the same test error (Fig. 1B/C).

    Below it (scarce data) keep the easy examples, above it (abundant data) keep the hard ones.

    Example: datadiet theory crossover --fraction 0.5 --json
    """
    alpha_tot = budget.crossover(fraction)
    _emit(
        as_json,
        {"alpha_tot": alpha_tot, "alpha_prune": fraction * alpha_tot, "f": fraction},
        f"keep easy below α_tot = {alpha_tot:.6g}, keep hard above it "
        f"(f {fraction:g}, α_prune {fraction * alpha_tot:.6g})",
    )


@app.command("fmin")
def fmin(
    theta: Annotated[float, typer.Option("--theta", help="Probe-teacher angle, degrees.", show_default=False)],
    as_json: Json = False,
) -> None:
    """The smallest useful kept fraction f_min(θ) when the pruning metric is a probe θ degrees off the teacher (App. A.7).

    Pruning below f_min selects on the probe's error rather than on difficulty; the paper quotes f_min(10°) ≈ 24%, f_min(20°) ≈ 46%.

    Example: datadiet theory fmin --theta 10 --json
    """
    value = budget.f_min(theta)
    _emit(as_json, {"f_min": value, "theta": theta}, f"f_min({theta:g}°) = {value:.4f}: keep at least {value:.1%}")


@app.command("simulate", cls=_AliasedCommand)
def simulate(
    alpha_tot: Annotated[
        float, typer.Option("--alpha-tot", help="α_tot: examples per parameter before pruning.", show_default=False)
    ],
    fraction: FractionOption = 1.0,
    n: Annotated[int, typer.Option("--n", help="Input dimension N (the paper: 200).")] = 200,
    theta: Theta = 0.0,
    keep: KeepOption = Keep.hard,
    draws: Annotated[int, typer.Option("--draws", help="Independent datasets (the paper: 100).")] = 100,
    seed: Seed = 0,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train exact max-margin students on pruned Gaussian data (App. B) and report mean ε ± s.e.m.

    Each optimum is checked against the KKT conditions; at θ = 0 the theory's ε is printed alongside.

    Example: datadiet theory simulate --n 200 --alpha-tot 4 --fraction 0.5 --keep hard --draws 20 --json
    """
    config = simulation.SimulationConfig(
        alpha_tot=alpha_tot, fraction=fraction, n=n, theta=theta, keep=keep, draws=draws, seed=seed
    )
    with console.progress_bar("max-margin students", quiet or as_json, unit="draws") as advance:
        result, theory = simulation.simulate_against_theory(config, progress=advance)
    payload = {**to_jsonable(config), **to_jsonable(result), "epsilon_theory": theory}
    payload.pop("epsilons")
    _emit(
        as_json,
        payload,
        f"ε = {result.epsilon_mean:.4g} ± {result.sem:.2g} (s.e.m., {draws} draws, {result.n_kept} examples at N {n})"
        + (f"; theory {theory:.4g}" if theory is not None else ""),
    )


@app.command("plot")
def plot(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs (created).", show_default=False)],
    draws: Annotated[
        int, typer.Option("--draws", help="Simulation draws per dot in Fig. 1A and Fig. 2 (0: no dots).")
    ] = 20,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Write fig1a_learning_curves.png, fig1c_easy_minus_hard.png and fig2_fmin.png (Fig. 1A, 1C, 2-style).

    Simulation dots use N = 200 and --draws datasets each; with the default 20 the whole run takes a few minutes on 2 CPU cores.

    Example: datadiet theory plot -o docs/figures/theory
    """
    check_output_folder(output, what="folder for the PNGs")
    with console.progress_bar("theory figures", quiet, unit="steps") as advance:
        written = figures.write_figures(output, draws=draws, seed=seed, progress=advance)
    console.summary(quiet, *(f"wrote {path}" for path in written))
