from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from datadiet_cli import console, distributed
from datadiet_cli.io.rundir import RunDir
from datadiet_cli.options import ArchOption, Device, DeviceOption, InputManifest, Quiet, RecipeOption, RootOption, Seed
from datadiet_cli.train.recipes import (
    Augment,
    Precision,
    TrainConfig,
    check_config,
    parse_dynamics_epochs,
    parse_milestones,
    recipe_with,
)


def _option(help: str, **extra: Any) -> Any:
    return typer.Option(help=help, show_default=False, **extra)


RunFolder = Annotated[Path, typer.Option("--output", "-o", help="Run directory to create (or continue with --resume).")]
Epochs = Annotated[int | None, _option("Passes over the kept data (default: the recipe's).")]
BatchSize = Annotated[int | None, _option("Images per SGD step (default: the recipe's).")]
Lr = Annotated[float | None, _option("Peak learning rate (imagenet: per 256 images) (default: the recipe's).")]
Momentum = Annotated[float | None, _option("SGD momentum (default: the recipe's).")]
Nesterov = Annotated[bool | None, _option("Nesterov momentum (default: the recipe's).")]
WeightDecay = Annotated[float | None, _option("Weight decay (default: the recipe's).")]
Milestones = Annotated[str | None, _option("Comma-separated fractions of the run after which lr *= gamma, or none.")]
Gamma = Annotated[float | None, _option("Learning-rate decay factor at each milestone (default: the recipe's).")]
Warmup = Annotated[float | None, _option("Fraction of the run with linear lr warmup (default: the recipe's).")]
LabelSmoothing = Annotated[float | None, _option("Cross-entropy label smoothing (default: the recipe's).")]
AugmentOption = Annotated[Augment | None, _option("Training augmentation (default: the recipe's).")]
MatchedIterations = Annotated[
    float,
    typer.Option(
        help="0: the recipe's epochs over the kept data; 1: as many steps as the full dataset (from the prune "
        "lineage) would take; linear in between (the paper's App. J)."
    ),
]
StopAfter = Annotated[
    int | None,
    typer.Option(
        help="End after this many epochs of the planned schedule, learning rate and all (default: train to the end). "
        "For early-training probes like Paul et al.'s EL2N.",
        show_default=False,
    ),
]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        help="Forward-pass precision; auto = bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32."
    ),
]
RecordDynamics = Annotated[
    bool,
    typer.Option(
        "--record-dynamics", help="Write dynamics.parquet: per example and epoch, loss/correct/p_label/el2n/margin."
    ),
]
DynamicsEpochs = Annotated[
    str, typer.Option(help="Epochs that end with an eval pass over the kept data for dynamics: 5,10 | last | none.")
]
Workers = Annotated[int, typer.Option(help="DataLoader workers for large images (small images need none).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in -o from its last finished epoch.")]
SyncBn = Annotated[
    bool,
    typer.Option(
        "--sync-bn",
        help="Under torchrun: BatchNorm normalises with the whole global batch's statistics (as one process "
        "would), not each rank's part; for small per-GPU batches. No effect in one process.",
    ),
]


def train(
    manifest: InputManifest,
    output: RunFolder,
    recipe: RecipeOption,
    arch: ArchOption = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    momentum: Momentum = None,
    nesterov: Nesterov = None,
    weight_decay: WeightDecay = None,
    milestones: Milestones = None,
    gamma: Gamma = None,
    warmup: Warmup = None,
    label_smoothing: LabelSmoothing = None,
    augment: AugmentOption = None,
    matched_iterations: MatchedIterations = 0.0,
    stop_after: StopAfter = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    seed: Seed = 0,
    record_dynamics: RecordDynamics = False,
    dynamics_epochs: DynamicsEpochs = "last",
    workers: Workers = 4,
    root: RootOption = None,
    resume: Resume = False,
    sync_bn: SyncBn = False,
    quiet: Quiet = False,
) -> None:
    """Train a model from scratch on exactly the examples of a manifest.

    RUN_DIR gets config.json (every setting, the input's digest), metrics.jsonl (one line per epoch), checkpoint.pt (after every epoch; --resume continues from it) and, with --record-dynamics, dynamics.parquet. Examples are visited in a fixed per-epoch permutation of the full dataset filtered to the kept ids, so runs on different subsets are comparable.

    On several GPUs or nodes, launch it with torchrun (docs/distributed.md): the ranks share each batch (--batch-size is the global batch) and rank 0 writes RUN_DIR, e.g. torchrun --nproc-per-node 8 -m datadiet_cli train kept.parquet -o runs/kept --recipe imagenet --sync-bn

    Example: datadiet train kept.parquet -o runs/kept --recipe fast && datadiet evaluate runs/kept test.parquet
    """
    RunDir(output).check_can_open(resume)  # before torch is imported: a wrong -o fails at once
    console.on_interrupt(partial(_interrupted_run, output))
    from datadiet_cli.io.manifest import read_manifest
    from datadiet_cli.train.loop import train_run

    overrides = dict(arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, nesterov=nesterov)
    overrides |= dict(weight_decay=weight_decay, milestones=parse_milestones(milestones), gamma=gamma, warmup=warmup)
    overrides |= dict(label_smoothing=label_smoothing, augment=augment)
    config = TrainConfig(
        recipe=recipe_with(recipe, **overrides),
        device=device.value,
        seed=seed,
        matched_iterations=matched_iterations,
        stop_after=stop_after,
        precision=precision,
        record_dynamics=record_dynamics,
        dynamics_epochs=parse_dynamics_epochs(dynamics_epochs),
        workers=workers,
        root=root,
        sync_bn=sync_bn,
    )
    check_config(config)  # every option refused before the manifest is read or any file written
    with distributed.launched(device.value) as ranks, epoch_progress(quiet or not ranks.main) as progress:
        result = train_run(read_manifest(manifest), config, output, progress=progress, resume=resume, ranks=ranks)
    console.summary(
        quiet or not ranks.main,
        f"trained {config.recipe.arch} for {result.epochs} epochs ({result.steps:,} steps, "
        f"{result.seconds:.1f} s, {result.images_per_second:,.0f} images/s): "
        f"train accuracy {result.train_accuracy:.1%} -> {output}",
    )


def _interrupted_run(output: Path, written: list[Path]) -> str | None:
    """What Ctrl-C leaves: a run folder that --resume continues (from its last checkpoint, else from the start)."""
    run = RunDir(output)
    if not run.config_path.is_file():
        return None  # interrupted before the run folder was written
    if run.has_checkpoint():
        return f"interrupted; {output} holds the last finished epoch: continue with --resume"
    return f"interrupted before the first epoch ended; {output} can start again with --resume"


@contextmanager
def epoch_progress(quiet: bool) -> Iterator[Callable[[Any], None] | None]:
    """One rich progress row per epoch: steps, running loss and accuracy, images/s."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[accuracy]:.1%}  {task.fields[speed]:,.0f} img/s"),
        TimeElapsedColumn(),
    )
    # Started on the first report, so an error found before training prints its line alone (no blank line).
    bar = Progress(*columns, console=console.stderr)
    tasks: dict[int, Any] = {}

    def update(state: Any) -> None:
        fields = dict(loss=state.loss, accuracy=state.accuracy, speed=state.images_per_second)
        if not tasks:
            bar.start()
        if state.epoch not in tasks:
            tasks[state.epoch] = bar.add_task("", total=state.steps, epoch=f"{state.epoch}/{state.epochs}", **fields)
        bar.update(tasks[state.epoch], completed=state.step, **fields)

    try:
        yield update
    except BaseException:
        bar.live.transient = True  # the error (or Ctrl-C) line must stand alone: erase the bars
        raise
    finally:
        if tasks:
            bar.stop()
