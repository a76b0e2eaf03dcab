from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from datadiet_cli import console, distributed
from datadiet_cli.options import Device, DeviceOption, InferenceBatchSize, Quiet, RootOption

RunDirArgument = Annotated[Path, typer.Argument(help="Run directory written by `datadiet train`.", show_default=False)]
TestManifest = Annotated[
    Path, typer.Argument(help="Labeled test manifest (.parquet) with the model's classes.", show_default=False)
]
MetricsOutput = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Metrics JSON to write (default: RUN_DIR/eval.json).", show_default=False),
]
PredictionsOutput = Annotated[
    Path | None,
    typer.Option(
        help="Also write per-example predictions (id, label, predicted, p_label, loss) as Parquet.", show_default=False
    ),
]


def evaluate(
    run_dir: RunDirArgument,
    test_manifest: TestManifest,
    output: MetricsOutput = None,
    predictions: PredictionsOutput = None,
    device: DeviceOption = Device.auto,
    batch_size: InferenceBatchSize = 512,
    root: RootOption = None,
    quiet: Quiet = False,
) -> None:
    """Measure a trained run on a test manifest: top-1, top-5, mean loss and accuracy per class.

    Accuracies are fractions in [0, 1] (top-5 is top-k with k = min(5, classes)). The JSON has the keys top1, top5, loss, n and per_class; the run's classes must match the test manifest's.

    Under torchrun (docs/distributed.md) each process predicts its share of the test rows and rank 0 writes the same JSON, e.g. torchrun --nproc-per-node 8 -m datadiet_cli evaluate runs/kept val.parquet

    Example: datadiet evaluate runs/kept test.parquet --predictions runs/kept/test-predictions.parquet
    """
    from datadiet_cli.io.manifest import read_manifest
    from datadiet_cli.io.rundir import RunDir
    from datadiet_cli.train.evaluate import evaluate_run

    manifest = read_manifest(test_manifest)
    with (
        distributed.launched(device.value) as ranks,
        console.progress_bar("evaluate", quiet or not ranks.main, unit="images") as progress,
    ):
        report = evaluate_run(
            run_dir,
            manifest,
            output=output,
            predictions_path=predictions,
            device=device.value,
            batch_size=batch_size,
            root=root,
            progress=progress,
            ranks=ranks,
        )
    if not quiet and ranks.main:
        print_report(report, output or RunDir(run_dir).eval_path)


def print_report(report: dict[str, Any], output: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{report['n']:,} test images", show_edge=False)
    table.add_column("class")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    for name, accuracy in report["per_class"].items():
        shown = "-" if accuracy is None else f"{accuracy:.1%}"
        table.add_row(name, f"{report['per_class_n'][name]:,}", shown)
    table.add_section()
    table.add_row("[bold]top-1", "", f"[bold]{report['top1']:.2%}")
    table.add_row(f"top-{report['top_k']}", "", f"{report['top5']:.2%}")
    table.add_row("mean loss", "", f"{report['loss']:.4f}")
    console.stdout.print(table)
    console.summary(False, f"-> {output}")
