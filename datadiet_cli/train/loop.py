"""`datadiet train`: train a classifier from scratch on exactly the examples of a manifest.

Readable training, in the spirit of torchvision's reference scripts and airbench: `train_run`
reads top to bottom, and its step loop is forward, loss, backward, learning rate, step. What
happens around it — running measurements and progress (`EpochMeter`), dynamics
(train/dynamics.py), the run folder's files (io/rundir.py) — are small helpers called at
epoch boundaries. `predict_batches` is the evaluation loop.

Imports torch at module level: the CLI imports this module inside the `train` command only.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datadiet_cli.data import seeds
from datadiet_cli.device import fast_bf16, select_device
from datadiet_cli.distributed import SINGLE, Ranks, all_sum, all_sum_, broadcast, together
from datadiet_cli.errors import OptionError, RunDirError
from datadiet_cli.io.manifest import Manifest
from datadiet_cli.io.rundir import CHECKPOINT_FIX, DAMAGED_RUN_FIX, METRICS_FILE, RunDir
from datadiet_cli.train.batches import ImageData, Normalisation, load_data, split_batches
from datadiet_cli.train.dynamics import DynamicsBuffer, dynamics_metadata
from datadiet_cli.train.models import build_model
from datadiet_cli.train.parallel import (
    batch_loss,
    check_world,
    data_parallel,
    synced_batchnorm,
    synchronise_buffers,
)
from datadiet_cli.train.plan import Plan, plan_run, run_settings
from datadiet_cli.train.recipes import (
    Augment,
    Precision,
    Recipe,
    TrainConfig,
    base_learning_rate,
    learning_rate,
    steps_per_epoch,
)

CHECKPOINT_FORMAT = 1
# The progress callback is called at most this often; each call syncs the device once.
PROGRESS_INTERVAL_S = 0.25


@dataclass(frozen=True)
class TrainProgress:
    """What the progress callback gets during an epoch (running means over the epoch so far)."""

    epoch: int  # 1-based
    epochs: int
    step: int  # steps done in this epoch
    steps: int  # steps in this epoch
    loss: float
    accuracy: float
    images_per_second: float


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs: int  # epochs the run trains (the last may be partial under --matched-iterations; --stop-after ends early)
    steps: int  # SGD steps those epochs take
    train_loss: float  # last epoch's mean training loss
    train_accuracy: float  # last epoch's training accuracy (on augmented batches), in [0, 1]
    seconds: float  # training time of the epochs run by this call
    images_per_second: float  # over the epochs run by this call
    resumed_after: int  # the epoch a --resume continued from (0 = a fresh run)


ProgressCallback = Callable[[TrainProgress], None]


def train_run(
    manifest: Manifest,
    config: TrainConfig,
    run_dir: Path | str,
    progress: ProgressCallback | None = None,
    *,
    resume: bool = False,
    pixels: np.ndarray | None = None,
    ranks: Ranks = SINGLE,
) -> TrainResult:
    """Train a new model on every row of `manifest` (its labels, its dataset's pixels) into `run_dir`.

    `resume` continues the run in `run_dir` from its last finished epoch and ends with the
    same weights as an uninterrupted run. `pixels` (uint8 (N, H, W, C), row order) skips
    decoding for callers that train many models on one dataset. The caller's torch RNG
    state is left as it was. Under torchrun (`ranks`), every rank calls it alike; the ranks
    share each global batch (train/parallel.py) and rank 0 alone writes the run folder.
    """
    run, recipe = RunDir(run_dir), config.recipe
    with together(ranks):  # the same checks on every rank: one line, printed once, however many fail
        plan = plan_run(manifest, config)  # what to train on and for how long; every check before any work
        check_world(recipe.batch_size, manifest.num_rows, ranks)
        run.check_can_open(resume)
        device = select_device(ranks.device if ranks.distributed else config.device)
    bf16 = use_bf16(config.precision, device)
    # NHWC is what cuDNN and oneDNN convolutions prefer (CPU, smallcnn: 1.4x in fp32, 1.6x in bf16).
    channels_last = config.channels_last if config.channels_last is not None else device.type in ("cuda", "cpu")

    # A fresh run stopped before its first checkpoint (an error, Ctrl-C) leaves no run folder behind.
    with isolated_torch_state(device), run.discarded_unless_checkpointed():
        torch.manual_seed(config.seed)
        with together(ranks):
            data = load_data(manifest, recipe, device, channels_last=channels_last, workers=config.workers,
                             root=config.root, pixels=pixels)  # fmt: skip
        net = build_model(recipe.arch, len(plan.classes), data.in_channels, data.image_size)
        net = net.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        net = synced_batchnorm(net, ranks, device, config.sync_bn)
        optimizer = sgd(net, recipe)
        settings = run_settings(manifest, config, plan, data, device, bf16, channels_last, ranks.world)
        with together(ranks):  # rank 0 opens the folder; every rank reads the checkpoint a resume continues
            resumed_after = run.open(settings, resume) if ranks.main else 0
        resumed_after = int(broadcast(ranks, np.array([resumed_after]), np.int64)[0])
        with together(ranks):
            history = restore_checkpoint(run, net, optimizer, device, plan, recipe.arch) if resumed_after else []
        model = data_parallel(net, ranks, device, config.sync_bn)
        ids = manifest.ids()
        hashes = seeds.id_hashes(ids)  # (n,) uint64: this run's place in the full dataset's order
        trained_seconds, trained_images = 0.0, 0

        for epoch in range(resumed_after + 1, plan.last_epoch + 1):
            # -- One pass over the kept examples, in this epoch's fixed order -------------------------
            first_step = (epoch - 1) * plan.batches_per_epoch
            order = seeds.epoch_order(hashes, config.seed, epoch)
            epoch_batches = split_batches(order, plan.batches_per_epoch)[: plan.steps - first_step]
            meter = EpochMeter(device, epoch, plan.last_epoch, len(epoch_batches), progress, ranks.world)
            seen = DynamicsBuffer(len(ids), device) if config.record_dynamics else None
            model.train()
            augment_seed = seeds.torch_seed(config.seed, epoch, seeds.AUGMENT_STREAM)
            for index, (positions, images, targets) in enumerate(
                data.batches(epoch_batches, recipe.augment, augment_seed, ranks)
            ):
                lr = set_learning_rate(optimizer, recipe, first_step + index, plan.steps)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(images)  # (B, classes): this rank's part of the global batch
                # Loss in fp32 even under autocast: softmax over bf16 logits loses the small differences.
                losses = F.cross_entropy(
                    logits.float(), targets, reduction="none", label_smoothing=recipe.label_smoothing
                )
                optimizer.zero_grad(set_to_none=True)
                batch_loss(losses, len(epoch_batches[index]), ranks).backward()
                optimizer.step()

                meter.add(losses.detach(), logits.detach(), targets)
                if seen is not None:  # as seen in training, before this step's update had any effect (forgetting)
                    seen.record(positions, logits.detach(), targets)

            # -- End of the epoch: measurements, dynamics, checkpoint (in that order) -------------------
            history.append(meter.finish(first_step + len(epoch_batches), lr, ranks))
            synchronise_buffers(net, ranks, config.sync_bn)
            check_not_diverged(history[-1], net, recipe, run)  # before anything of a diverged epoch is written
            trained_seconds, trained_images = trained_seconds + meter.seconds, trained_images + meter.images
            trained = seen.columns(ids, epoch, "train", ranks) if seen is not None else None
            evaluated = None
            if epoch in plan.eval_epochs:
                evaluated = eval_dynamics(net, data, ids, epoch, 2 * recipe.batch_size, bf16, ranks)
            with together(ranks):  # rank 0 writes; a failed write stops every rank
                if ranks.main:
                    write_epoch(run, epoch, history, trained, evaluated)
                    # Written last: a checkpoint means everything of its epoch is on disk.
                    run.save_checkpoint(checkpoint_state(net, optimizer, epoch, int(history[-1]["step"]), device))

    with together(ranks):
        if config.record_dynamics and ranks.main:
            run.merge_dynamics(dynamics_metadata(settings))
    return result_of(run, plan, history, trained_seconds, trained_images, resumed_after)


def write_epoch(
    run: RunDir,
    epoch: int,
    history: list[dict[str, Any]],
    trained: dict[str, np.ndarray] | None,
    evaluated: dict[str, np.ndarray] | None,
) -> None:
    """An epoch's dynamics (as seen in training, then the eval pass) and the metrics so far."""
    if trained is not None:
        run.write_dynamics_part(trained, epoch, "train")
    if evaluated is not None:
        run.write_dynamics_part(evaluated, epoch, "eval")
    run.write_metrics(history)


def sgd(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    # The paper decays every parameter, BatchNorm's included, as torchvision's CIFAR references do.
    return torch.optim.SGD(model.parameters(), lr=base_learning_rate(recipe), momentum=recipe.momentum,
                           nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)  # fmt: skip


def set_learning_rate(optimizer: torch.optim.Optimizer, recipe: Recipe, step: int, steps: int) -> float:
    lr = learning_rate(recipe, step, steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def check_not_diverged(metrics: dict[str, Any], model: nn.Module, recipe: Recipe, run: RunDir) -> None:
    """Refuse to save an epoch whose loss or weights are NaN or infinite: a NaN model is no finished run."""
    floats = [tensor for tensor in model.state_dict().values() if tensor.is_floating_point()]
    weights_finite = bool(torch.stack([torch.isfinite(tensor).all() for tensor in floats]).all())  # one sync
    if not (math.isfinite(metrics["train_loss"]) and weights_finite):
        epoch = metrics["epoch"]
        kept = f" ({run.path} keeps epochs 1..{epoch - 1}: use another -o)" if epoch > 1 else ""
        raise OptionError(
            f"--lr {recipe.lr}: training diverged in epoch {epoch} (mean loss {metrics['train_loss']:.4g}"
            f"{'' if weights_finite else ', weights not finite'}); train again with a lower --lr or a longer "
            f"--warmup{kept}"
        )


class EpochMeter:
    """Running loss and accuracy of one epoch, its timing, and progress reports.

    The sums stay on the device: reading them every step would sync the GPU every step.
    """

    def __init__(
        self,
        device: torch.device,
        epoch: int,
        epochs: int,
        steps: int,
        progress: ProgressCallback | None,
        world: int = 1,
    ) -> None:
        self.device, self.epoch, self.epochs, self.steps, self.progress = device, epoch, epochs, steps, progress
        self.world = world  # under torchrun, progress shows this rank's running means and the job's speed
        self.loss_sum = torch.zeros((), device=device)
        self.correct_sum = torch.zeros((), device=device, dtype=torch.int64)
        self.images, self.done, self.seconds = 0, 0, 0.0
        self.started = self.last_report = time.perf_counter()

    def add(self, losses: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """(B,) losses, (B, C) logits, (B,) targets of one step."""
        self.loss_sum += losses.sum()
        self.correct_sum += (logits.argmax(dim=1) == targets).sum()
        self.images += len(targets)
        self.done += 1
        now = time.perf_counter()
        if self.progress is not None and (now - self.last_report >= PROGRESS_INTERVAL_S or self.done == self.steps):
            self.last_report = now
            loss, accuracy = self.loss_sum.item() / self.images, self.correct_sum.item() / self.images
            speed = self.images * self.world / (now - self.started)
            self.progress(TrainProgress(self.epoch, self.epochs, self.done, self.steps, loss, accuracy, speed))

    def finish(self, step: int, lr: float, ranks: Ranks = SINGLE) -> dict[str, Any]:
        """The epoch's line of metrics.jsonl (over every rank's images)."""
        if ranks.distributed:
            sums = torch.stack([self.loss_sum.double(), self.correct_sum.double()])
            self.loss_sum, self.correct_sum = all_sum_(ranks, sums).unbind()
            self.images = int(all_sum(ranks, np.array([self.images], dtype=np.int64))[0])
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.started
        return {
            "epoch": self.epoch,
            "step": step,
            "lr": lr,
            "train_loss": self.loss_sum.item() / self.images,
            "train_acc": self.correct_sum.item() / self.images,
            "seconds": round(self.seconds, 4),
            "images_per_s": round(self.images / self.seconds, 2),
        }


def eval_dynamics(
    model: nn.Module, data: ImageData, ids: np.ndarray, epoch: int, batch_size: int, bf16: bool, ranks: Ranks = SINGLE
) -> dict[str, np.ndarray]:
    """Dynamics columns of an eval pass over every kept example (no augmentation, BatchNorm in eval mode);
    under torchrun each rank passes over its shard of the rows."""
    evaluated = DynamicsBuffer(data.count, data.labels.device)
    for positions, logits in predict_batches(
        model, data, batch_size, bf16, np.arange(data.count)[ranks.shard(data.count)]
    ):
        evaluated.record(positions, logits, data.labels.index_select(0, positions))
    return evaluated.columns(ids, epoch, "eval", ranks)


def result_of(
    run: RunDir, plan: Plan, history: list[dict[str, Any]], seconds: float, images: int, resumed_after: int
) -> TrainResult:
    last = history[-1]
    return TrainResult(
        run_dir=run.path,
        epochs=plan.last_epoch,
        steps=int(last["step"]),  # the step count after the last epoch: below the plan under --stop-after
        train_loss=last["train_loss"],
        train_accuracy=last["train_acc"],
        seconds=seconds,
        images_per_second=images / seconds if seconds else 0.0,
        resumed_after=resumed_after,
    )


@torch.no_grad()
def predict_batches(
    model: nn.Module, data: ImageData, batch_size: int, bf16: bool, rows: np.ndarray | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The evaluation loop: every example once (or the positions `rows`), in row order, never augmented.

    Yields (positions (B,), logits (B, classes) float32) on the device; the model is left in
    the mode it was in.
    """
    was_training = model.training
    model.eval()  # BatchNorm normalises with its running averages, not with the batch's own statistics
    rows = np.arange(data.count) if rows is None else rows
    batches = split_batches(rows, steps_per_epoch(len(rows), batch_size)) if len(rows) else []
    try:
        for positions, images, _ in data.batches(batches, Augment.none, epoch_seed=0):
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(images)  # (B, classes)
            yield positions, logits.float()
    finally:
        model.train(was_training)


# -- checkpoints and trained models ---------------------------------------------------------------


def checkpoint_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int, device: torch.device
) -> dict[str, Any]:
    """Everything a --resume needs to continue bit for bit: weights, optimizer and RNG states."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
    }


def restore_checkpoint(
    run: RunDir, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, plan: Plan, arch: str
) -> list[dict[str, Any]]:
    """Weights, optimizer and RNG states of the run's checkpoint, checked to fit; the metrics of its epochs."""
    state = run.load_checkpoint(device)
    path, epoch = run.checkpoint_path, state["epoch"]
    missing = [key for key in ("optimizer", "rng_cpu", "rng_cuda") if key not in state]
    if state.get("format") != CHECKPOINT_FORMAT or missing:
        what = f"no {missing[0]!r} entry" if missing else f"format {state.get('format')!r}, not {CHECKPOINT_FORMAT}"
        raise RunDirError(f"{path}: cannot be resumed from ({what}); {CHECKPOINT_FIX}")
    if epoch > plan.last_epoch:
        raise RunDirError(f"{path}: is after epoch {epoch} but this run has {plan.last_epoch}; {CHECKPOINT_FIX}")
    load_weights(model, state["model"], path, arch)
    load_optimizer(optimizer, state["optimizer"], path)
    try:
        torch.set_rng_state(state["rng_cpu"].cpu())
        if device.type == "cuda" and state["rng_cuda"].numel():
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)
    except (AttributeError, TypeError, ValueError, RuntimeError):
        raise RunDirError(f"{path}: its random number generator states are damaged; {CHECKPOINT_FIX}") from None
    history = run.read_metrics()[:epoch]
    if [line.get("epoch") for line in history] != list(range(1, epoch + 1)) or not all(
        {"step", "train_loss", "train_acc"} <= set(line) for line in history
    ):
        raise RunDirError(
            f"{run.path / METRICS_FILE}: does not hold epochs 1..{epoch} of {path} (written last, after them); "
            f"{CHECKPOINT_FIX}"
        )
    return history


def load_weights(model: nn.Module, weights: dict[str, Any], path: Path, arch: str) -> None:
    """A checkpoint's "model" entry into `model`, or a one-line error saying how it does not fit."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    resized = [
        key
        for key in expected
        if key in weights and (not isinstance(weights[key], torch.Tensor) or weights[key].shape != expected[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing, e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unknown weights, e.g. {unexpected[0]}")
    if resized:
        key = resized[0]
        found = tuple(weights[key].shape) if isinstance(weights[key], torch.Tensor) else type(weights[key]).__name__
        problems.append(f"{key} is {found}, not {tuple(expected[key].shape)}")
    if not problems:
        try:
            model.load_state_dict(weights)
            return
        except (RuntimeError, TypeError, ValueError) as error:
            problems.append(type(error).__name__)
    raise RunDirError(
        f"{path}: does not fit this run's {arch} model ({'; '.join(problems)}): it belongs to another run "
        f"(another --arch, classes or image size); {CHECKPOINT_FIX}"
    )


# The optimizer settings a checkpoint must share with the recipe (lr is set at every step anyway).
OPTIMIZER_SETTINGS = ("momentum", "dampening", "weight_decay", "nesterov", "maximize")


def load_optimizer(optimizer: torch.optim.Optimizer, state: Any, path: Path) -> None:
    """A checkpoint's "optimizer" entry into `optimizer`, refused unless its settings and buffers fit."""
    recipe_settings = [[group.get(key) for key in OPTIMIZER_SETTINGS] for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError):
        raise RunDirError(f"{path}: its optimizer state does not fit this run's model; {CHECKPOINT_FIX}") from None
    loaded = [[group.get(key) for key in OPTIMIZER_SETTINGS] for group in optimizer.param_groups]
    if loaded != recipe_settings:
        raise RunDirError(
            f"{path}: its optimizer settings {dict(zip(OPTIMIZER_SETTINGS, loaded[0], strict=True))} differ from "
            f"this run's {dict(zip(OPTIMIZER_SETTINGS, recipe_settings[0], strict=True))}; {CHECKPOINT_FIX}"
        )
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            buffer = optimizer.state.get(parameter, {}).get("momentum_buffer")
            if buffer is not None and (not isinstance(buffer, torch.Tensor) or buffer.shape != parameter.shape):
                raise RunDirError(f"{path}: its momentum buffers do not fit this run's model; {CHECKPOINT_FIX}")


def load_trained_model(run_dir: Path | str | RunDir, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The run's model in eval mode on `device`, and its config.json document."""
    run = RunDir.of(run_dir)
    settings = run.finished_config()
    spec = settings["model"]
    try:
        model = build_model(spec["arch"], spec["num_classes"], spec["in_channels"], spec["image_size"]).to(device)
    except OptionError as error:  # an --arch this datadiet cannot build: the config names it, not the command line
        raise RunDirError(f"{run.config_path}: 'model.arch': {error}; {DAMAGED_RUN_FIX}") from None
    load_weights(model, run.load_checkpoint(device)["model"], run.checkpoint_path, spec["arch"])
    return model.eval(), settings


def normalisation_of(settings: dict[str, Any]) -> Normalisation:
    return Normalisation(tuple(settings["normalisation"]["mean"]), tuple(settings["normalisation"]["std"]))


# -- device helpers ---------------------------------------------------------------------------------


def use_bf16(precision: Precision, device: torch.device) -> bool:
    if precision is Precision.auto:
        return fast_bf16(device)
    return precision is Precision.bf16


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextlib.contextmanager
def isolated_torch_state(device: torch.device) -> Iterator[None]:
    """Seeded, deterministic (on the CPU) and fast (cuDNN autotuning on GPUs) without leaking global state."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        try:
            if device.type == "cpu":
                torch.use_deterministic_algorithms(True)  # CPU kernels are deterministic at no cost
            elif device.type == "cuda":
                torch.backends.cudnn.benchmark = True  # fixed batch shapes: autotune once, then fastest kernels
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.backends.cudnn.benchmark = benchmark
