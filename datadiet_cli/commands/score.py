from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datadiet_cli import console, distributed
from datadiet_cli.io.files import check_output, check_output_folder
from datadiet_cli.io.manifest import read_manifest, write_manifest
from datadiet_cli.options import (
    ArchOption,
    Device,
    DeviceOption,
    InputManifest,
    OutputManifest,
    Quiet,
    RecipeOption,
    Seed,
)
from datadiet_cli.score.config import GrandMode, ProbeSchedule, ScoreConfig
from datadiet_cli.score.pipeline import score_manifest
from datadiet_cli.score.registry import Metric
from datadiet_cli.train.recipes import Augment, RecipeName


def score(
    manifest: InputManifest,
    output: OutputManifest,
    metric: Annotated[
        Metric,
        typer.Option(
            help="Difficulty metric to add as a column (higher = harder); see docs/score.md.", show_default=False
        ),
    ],
    probes: Annotated[int, typer.Option(help="Number of probe models K (the paper: 10).")] = 10,
    probe_epochs: Annotated[int, typer.Option(help="Epochs each probe trains before it is measured.")] = 20,
    probe_schedule: Annotated[
        ProbeSchedule,
        typer.Option(
            help="compressed: the recipe's schedule squeezed into the probe epochs; truncated: the recipe's full "
            "schedule stopped after them, at a still-high learning rate (Paul et al.'s EL2N protocol)."
        ),
    ] = ProbeSchedule.compressed,
    recipe: RecipeOption = RecipeName.cifar,
    arch: ArchOption = None,
    augment: Annotated[
        Augment | None,
        typer.Option(
            help="Probe augmentation: crop-flip, resized-crop-flip or none (default: the recipe's).", show_default=False
        ),
    ] = None,
    probes_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the probe runs (default: OUT without .parquet + '.probes'); finished probes there are "
            "reused. Under torchrun on several nodes it must be on storage every node shares.",
            show_default=False,
        ),
    ] = None,
    from_runs: Annotated[
        list[Path] | None,
        typer.Option(
            help="Score from existing `datadiet train` run folders instead of training probes (repeatable).",
            show_default=False,
        ),
    ] = None,
    variant: Annotated[str, typer.Option(help="uncertainty only: max (1 - max mean probability) or entropy.")] = "max",
    subset: Annotated[float, typer.Option(help="memorization only: fraction of the data each probe trains on.")] = 0.7,
    grand_mode: Annotated[
        GrandMode, typer.Option(help="grand only: exact per-example gradients, or the last layer's.")
    ] = GrandMode.exact,
    column: Annotated[
        str | None, typer.Option(help="Output column name (default: the metric's name).", show_default=False)
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            help="Probes trained in parallel processes (one per GPU where several exist); under torchrun each "
            "rank is one worker, so leave it at 1."
        ),
    ] = 1,
    seed: Seed = 0,
    device: DeviceOption = Device.auto,
    quiet: Quiet = False,
) -> None:
    """Add a difficulty score column computed from probe models that datadiet trains itself.

    Each probe is an ordinary `train` run kept under --probes-dir, so an interrupted run resumes and probes can be trained elsewhere and scored with --from-runs. Adds a column named after the metric (or --column) and, for el2n, grand and forgetting, the same name + `_std`: its spread across probes.

    Example: datadiet score train.parquet -o scored.parquet --metric el2n --probes 10 --probe-epochs 20
    """
    with distributed.launched(device.value) as ranks:
        with distributed.together(ranks):  # every rank finds the same bad path: rank 0 alone says so
            check_output(output, manifest)
            probes_dir = check_output_folder(probes_dir or output.with_suffix(".probes"), option="--probes-dir")
            source = read_manifest(manifest)
        if not from_runs:
            console.on_interrupt(lambda written: f"interrupted; {output} was not written; the probe runs in {probes_dir} "
                                                 "continue from their last finished epoch when the same command runs again")  # fmt: skip
        config = ScoreConfig(metric=metric, probes=probes, probe_epochs=probe_epochs, probe_schedule=probe_schedule, recipe=recipe.value, arch=arch, augment=augment, seed=seed,
                             variant=variant, subset=subset, grand_mode=grand_mode, device=device.value,
                             jobs=jobs, column=column)  # fmt: skip
        # Rank 0's bar counts only the probes rank 0 trains; the other ranks show none.
        label = f"{metric.value}: rank 0's share of the probes" if ranks.distributed else f"{metric.value}: probes"
        with console.progress_bar(label, quiet or not ranks.main, unit="probes") as advance:
            scored = score_manifest(source, config, probes_dir, from_runs or (), advance, ranks)
        with distributed.together(ranks):  # the ranks waiting for rank 0's write stop too if it fails
            if scored is not None:
                write_manifest(scored, output)
    if scored is not None:
        stats = scored.lineage()[-1].stats
        console.summary(quiet, f"{stats['column']}: mean {stats['mean']:.4g}, std {stats['std']:.4g} over "
                               f"{scored.num_rows:,} rows from {stats['probes']} probes -> {output}")  # fmt: skip
