from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datadiet_cli import console
from datadiet_cli.io.files import check_output_folder
from datadiet_cli.options import Quiet, Seed

RunDirs = Annotated[
    list[Path] | None,
    typer.Argument(help="Run directories written by `datadiet train` and `datadiet evaluate`.", show_default=False),
]
OutDir = Annotated[Path, typer.Option("--output", "-o", help="Folder for summary.md, results.csv and the figures.")]
Manifests = Annotated[
    list[Path] | None,
    typer.Option(
        "--manifest",
        "-m",
        help="Scored manifest for the score-correlation, class-balance, cluster/class and easiest/hardest figures (repeatable).",
        show_default=False,
    ),
]
Scores = Annotated[
    list[str] | None,
    typer.Option("--score", "-s", help="Score column to show (repeatable; default: every one).", show_default=False),
]
Classes = Annotated[
    str | None, typer.Option(help="Comma-separated classes of the contact sheets (default: the first 10).")
]
PerClass = Annotated[int, typer.Option(help="Easiest and hardest images shown per class.")]
MinRatio = Annotated[float, typer.Option(help="balance --min-ratio used in the class-balance figure.")]


def report(
    output: OutDir,
    run_dirs: RunDirs = None,
    manifest: Manifests = None,
    score: Scores = None,
    classes: Classes = None,
    per_class: PerClass = 8,
    min_ratio: MinRatio = 0.5,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Figures and a Markdown summary from finished runs and scored manifests, without retraining.

    Reads each run's config.json (metric, keep policy, fraction and seed come from its training lineage) and the eval.json of `datadiet evaluate`. Writes OUT_DIR/summary.md, results.csv, error_vs_fraction.png, error_vs_size.png (with several starting sizes), score_correlation.png, class_balance.png, cluster_classes.png (clustered manifests) and extremes_SCORE.png, all at once (docs/report.md). summary.md also tabulates top-1 by fraction kept and keep easy against keep hard.

    Example: datadiet report runs/* -m scored.parquet -o report
    """
    from datadiet_cli.report.build import build_report
    from datadiet_cli.report.registry import ReportConfig

    check_output_folder(output, what="folder for the report")
    chosen = tuple(name.strip() for name in (classes or "").split(",") if name.strip())
    config = ReportConfig(tuple(score or ()), chosen, per_side=per_class, min_ratio=min_ratio, seed=seed)
    with console.progress_bar("report", quiet, unit="steps") as progress:
        result = build_report(run_dirs or [], manifest or [], output, config, progress=progress)
    notes = [f"note: {note}" for note in result.notes]
    console.summary(quiet, *notes, f"{len(result.runs)} runs, {len(result.manifests)} manifests -> {output}/")
    console.summary(quiet, "  " + ", ".join(result.files))
