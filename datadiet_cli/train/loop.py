"""`datadiet train`: train a classifier from scratch on exactly the examples of a manifest.

Readable training, in the spirit of torchvision's reference scripts and airbench:
`train_run` is the training loop and `predict_batches` the evaluation loop, and each reads
top to bottom. The rest of this module is bookkeeping for the run directory:

    RUN_DIR/config.json       every setting, the input manifest's digest, classes, normalisation, model
    RUN_DIR/metrics.jsonl     one line per epoch: epoch, step, lr, train_loss, train_acc, seconds, images_per_s
    RUN_DIR/checkpoint.pt     model, optimizer, step and RNG states after the last finished epoch
    RUN_DIR/dynamics.parquet  with record_dynamics: per example, epoch and source (train/eval) the
                              loss, correct, p_label, el2n = ||softmax - onehot||_2 and margin

Imports torch at module level: the CLI imports this module inside the `train` command only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from datadiet_cli import __version__
from datadiet_cli.data import seeds
from datadiet_cli.data.batches import (
    ImageData,
    Normalisation,
    load_data,
    split_batches,
)
from datadiet_cli.device import fast_bf16, select_device
from datadiet_cli.errors import ColumnError, ManifestError, OptionError
from datadiet_cli.io.files import atomic_path, file_digest, to_jsonable
from datadiet_cli.io.manifest import Manifest
from datadiet_cli.io.tables import read_table, write_table
from datadiet_cli.select.prune import full_size
from datadiet_cli.train.models import build_model
from datadiet_cli.train.recipes import (
    Augment,
    Precision,
    TrainConfig,
    base_learning_rate,
    learning_rate,
    milestone_steps,
    steps_per_epoch,
    total_steps,
)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
DYNAMICS_FILE = "dynamics.parquet"
# Per-epoch dynamics shards, merged into dynamics.parquet when the run ends (and kept across --resume).
DYNAMICS_PARTS = ".dynamics-parts"
CHECKPOINT_FORMAT = 1
# What dynamics.parquet holds per example, epoch and source, in this order.
DYNAMICS_COLUMNS = ("loss", "correct", "p_label", "el2n", "margin")
# Settings that may change on --resume without changing what is trained.
RESUMABLE_CHANGES = ("device", "workers", "root")
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
) -> TrainResult:
    """Train a new model on every row of `manifest` (its labels, its dataset's pixels) into `run_dir`.

    `resume` continues the run in `run_dir` from its last finished epoch and ends with the
    same weights as an uninterrupted run. `pixels` (uint8 (N, H, W, C), row order) skips
    decoding for callers that train many models on one dataset. The caller's torch RNG
    state is left as it was.
    """
    run_dir = Path(run_dir)
    recipe = config.recipe

    # -- What to train on and for how long -----------------------------------------------------
    classes = class_names(manifest)
    labels = manifest.labels()  # (n,) int64; raises a one-line error on null labels
    check_label_range(manifest, labels, classes)
    n_kept, n_full = manifest.num_rows, full_size(manifest)
    # App. J: matched iterations stretch the run towards the full data's step count; milestones,
    # being fractions of the run, stretch with it.
    steps = total_steps(n_kept, n_full, recipe.batch_size, recipe.epochs, config.matched_iterations)
    batches_per_epoch = steps_per_epoch(n_kept, recipe.batch_size)
    epochs = math.ceil(steps / batches_per_epoch)  # the last epoch is partial when steps do not divide
    # Paul et al. measure EL2N early in a full-length run: the schedule is planned for every epoch,
    # and the run ends after `stop_after` of them, at whatever learning rate it has reached.
    last_epoch = stop_epoch(config, epochs)
    eval_epochs = dynamics_eval_epochs(config, last_epoch)

    device = select_device(config.device)
    bf16 = use_bf16(config.precision, device)
    # NHWC is what cuDNN and oneDNN convolutions prefer (CPU, smallcnn: 1.4x in fp32, 1.6x in bf16).
    channels_last = config.channels_last if config.channels_last is not None else device.type in ("cuda", "cpu")

    with isolated_torch_state(device):
        torch.manual_seed(config.seed)
        data = load_data(
            manifest,
            recipe,
            device,
            channels_last=channels_last,
            workers=config.workers,
            root=config.root,
            pixels=pixels,
        )
        model = build_model(recipe.arch, len(classes), data.in_channels, data.image_size)
        model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        # The paper decays every parameter, BatchNorm's included, as torchvision's CIFAR references do.
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=base_learning_rate(recipe),
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
        settings = run_settings(
            manifest, config, classes, data, steps, epochs, eval_epochs, device, bf16, channels_last
        )
        resumed_after = open_run_dir(run_dir, settings, resume)
        if resumed_after:
            load_checkpoint(run_dir / CHECKPOINT_FILE, model, optimizer, device)
        hashes = seeds.id_hashes(manifest.ids())  # (n,) uint64: this run's place in the full dataset's order
        ids = manifest.ids()
        history = read_metrics(run_dir)[:resumed_after]
        trained_seconds, trained_images = 0.0, 0

        for epoch in range(resumed_after + 1, last_epoch + 1):
            # -- One pass over the kept examples, in this epoch's fixed order ----------------------
            first_step = (epoch - 1) * batches_per_epoch
            order = seeds.epoch_order(hashes, config.seed, epoch)
            epoch_batches = split_batches(order, batches_per_epoch)[: steps - first_step]
            model.train()
            # Running sums stay on the device: reading them every step would sync the GPU every step.
            loss_sum = torch.zeros((), device=device)
            correct_sum = torch.zeros((), device=device, dtype=torch.int64)
            seen_dynamics = DynamicsBuffer(n_kept, device) if config.record_dynamics else None
            images_seen, last_report = 0, time.perf_counter()
            started = time.perf_counter()
            batches = data.batches(
                epoch_batches, recipe.augment, seeds.torch_seed(config.seed, epoch, seeds.AUGMENT_STREAM)
            )
            for index, (positions, images, targets) in enumerate(batches):  # (B,), (B, C, H, W), (B,)
                step = first_step + index
                lr = learning_rate(recipe, step, steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(images)  # (B, classes)
                # Loss in fp32 even under autocast: softmax over bf16 logits loses the small differences.
                losses = F.cross_entropy(
                    logits.float(), targets, reduction="none", label_smoothing=recipe.label_smoothing
                )
                optimizer.zero_grad(set_to_none=True)
                losses.mean().backward()
                optimizer.step()

                loss_sum += losses.detach().sum()
                correct_sum += (logits.detach().argmax(dim=1) == targets).sum()
                images_seen += len(targets)
                if seen_dynamics is not None:
                    # As seen in training, before this step's update had any effect (forgetting events).
                    seen_dynamics.record(positions, logits.detach(), targets)
                if progress is not None and (
                    time.perf_counter() - last_report >= PROGRESS_INTERVAL_S or index == len(epoch_batches) - 1
                ):
                    last_report = time.perf_counter()
                    progress(
                        TrainProgress(
                            epoch=epoch,
                            epochs=last_epoch,
                            step=index + 1,
                            steps=len(epoch_batches),
                            loss=loss_sum.item() / images_seen,
                            accuracy=correct_sum.item() / images_seen,
                            images_per_second=images_seen / (last_report - started),
                        )
                    )
            synchronize(device)
            seconds = time.perf_counter() - started
            trained_seconds += seconds
            trained_images += images_seen

            # -- End of the epoch: measurements, dynamics, checkpoint (in that order) ---------------
            history.append(
                {
                    "epoch": epoch,
                    "step": first_step + len(epoch_batches),
                    "lr": lr,
                    "train_loss": loss_sum.item() / images_seen,
                    "train_acc": correct_sum.item() / images_seen,
                    "seconds": round(seconds, 4),
                    "images_per_s": round(images_seen / seconds, 2),
                }
            )
            if seen_dynamics is not None:
                write_dynamics_part(run_dir, seen_dynamics.columns(ids, epoch, "train"), epoch, "train")
            if config.record_dynamics and epoch in eval_epochs:
                evaluated = DynamicsBuffer(n_kept, device)
                for positions, logits in predict_batches(model, data, 2 * recipe.batch_size, bf16):
                    evaluated.record(positions, logits, data.labels.index_select(0, positions))
                write_dynamics_part(run_dir, evaluated.columns(ids, epoch, "eval"), epoch, "eval")
            write_metrics(run_dir, history)
            # Written last: a checkpoint means everything of its epoch is on disk.
            save_checkpoint(run_dir / CHECKPOINT_FILE, model, optimizer, epoch, first_step + len(epoch_batches), device)

    if config.record_dynamics:
        merge_dynamics(run_dir, settings)
    last = history[-1]
    return TrainResult(
        run_dir=run_dir,
        epochs=last_epoch,
        steps=int(history[-1]["step"]),  # the step count after the last epoch: below the plan under --stop-after
        train_loss=last["train_loss"],
        train_accuracy=last["train_acc"],
        seconds=trained_seconds,
        images_per_second=trained_images / trained_seconds if trained_seconds else 0.0,
        resumed_after=resumed_after,
    )


@torch.no_grad()
def predict_batches(
    model: nn.Module, data: ImageData, batch_size: int, bf16: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The evaluation loop: every example once, in row order, never augmented.

    Yields (positions (B,), logits (B, classes) float32) on the device; the model is left in
    the mode it was in.
    """
    was_training = model.training
    model.eval()  # BatchNorm normalises with its running averages, not with the batch's own statistics
    batches = split_batches(np.arange(data.count), steps_per_epoch(data.count, batch_size))
    try:
        for positions, images, _ in data.batches(batches, Augment.none, epoch_seed=0):
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(images)  # (B, classes)
            yield positions, logits.float()
    finally:
        model.train(was_training)


# -- training dynamics ------------------------------------------------------------------------------


def example_measurements(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, C) logits, (B,) labels -> (5, B) float32 rows in DYNAMICS_COLUMNS order.

    loss = -log p_label; correct = argmax == label (1.0/0.0); el2n = ||softmax - onehot||_2
    (Paul et al. 2021); margin = p_label - the largest other probability (negative when wrong).
    """
    log_probs = F.log_softmax(logits.float(), dim=1)  # (B, C)
    probs = log_probs.exp()
    label_log_prob = log_probs.gather(1, labels[:, None]).squeeze(1)  # (B,)
    p_label = label_log_prob.exp()
    largest_other = probs.scatter(1, labels[:, None], -1.0).max(dim=1).values  # (B,)
    el2n = (probs - F.one_hot(labels, probs.shape[1]).float()).norm(dim=1)
    correct = (logits.argmax(dim=1) == labels).float()
    return torch.stack([-label_log_prob, correct, p_label, el2n, p_label - largest_other])


class DynamicsBuffer:
    """Measurements of one pass over the examples, kept on the device until the pass ends.

    Each step writes its (5, B) measurements into a (5, N) tensor without leaving the device;
    the one copy to the host happens in `columns`, once per pass.
    """

    def __init__(self, count: int, device: torch.device) -> None:
        self.values = torch.full((len(DYNAMICS_COLUMNS), count), float("nan"), device=device)  # (5, N)

    def record(self, positions: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.values[:, positions] = example_measurements(logits, labels)

    def columns(self, ids: np.ndarray, epoch: int, source: str) -> dict[str, np.ndarray]:
        values = self.values.cpu().numpy()  # (5, N)
        seen = ~np.isnan(values[0])  # the last epoch of a --matched-iterations run may be partial
        count = int(seen.sum())
        columns: dict[str, np.ndarray] = {
            "id": np.asarray(ids, dtype=object)[seen],
            "epoch": np.full(count, epoch, dtype=np.int32),
            "source": np.full(count, source, dtype=object),
        }
        for row, name in enumerate(DYNAMICS_COLUMNS):
            columns[name] = values[row, seen].astype(bool) if name == "correct" else values[row, seen]
        return columns


def write_dynamics_part(run_dir: Path, columns: dict[str, np.ndarray], epoch: int, source: str) -> None:
    write_table(columns, run_dir / DYNAMICS_PARTS / f"epoch-{epoch:05d}-{source}.parquet", {})


def merge_dynamics(run_dir: Path, settings: dict[str, Any]) -> None:
    """Concatenate the per-epoch parts into dynamics.parquet (sorted by epoch, then train before eval)."""
    parts_dir = run_dir / DYNAMICS_PARTS
    parts = sorted(parts_dir.glob("epoch-*.parquet"), key=lambda p: (p.stem.split("-")[1], p.stem.endswith("eval")))
    if not parts:
        return  # merged already (a --resume of a finished run)
    tables = [read_table(part) for part in parts]
    merged = {name: np.concatenate([table[name] for table in tables]) for name in tables[0]}
    metadata = {
        "columns": list(DYNAMICS_COLUMNS),
        "sources": {"train": "measured on the training batch as the example was seen", "eval": "eval pass"},
        "classes": settings["classes"],
        "manifest": settings["manifest"],
        "epochs": settings["plan"]["epochs"],
    }
    write_table(merged, run_dir / DYNAMICS_FILE, metadata)
    shutil.rmtree(parts_dir, ignore_errors=True)


def read_dynamics(run_dir: Path | str) -> dict[str, np.ndarray]:
    """dynamics.parquet of a run as columns: id, epoch, source, loss, correct, p_label, el2n, margin."""
    path = Path(run_dir) / DYNAMICS_FILE
    if not path.is_file():
        raise OptionError(f"{path}: no such file; train with --record-dynamics to write it")
    return read_table(path)


def dynamics_matrix(
    dynamics: dict[str, np.ndarray], ids: np.ndarray, column: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """One measurement as (epochs (T,), values (T, N)) aligned to `ids`; NaN where an example was not measured."""
    chosen = dynamics["source"] == source
    epochs = np.unique(dynamics["epoch"][chosen])
    position = {example_id: i for i, example_id in enumerate(ids)}
    rows = np.searchsorted(epochs, dynamics["epoch"][chosen])
    cols = np.array([position.get(example_id, -1) for example_id in dynamics["id"][chosen]], dtype=np.int64)
    known = cols >= 0
    values = np.full((len(epochs), len(ids)), np.nan)
    values[rows[known], cols[known]] = dynamics[column][chosen][known]
    return epochs, values


# -- the run directory ----------------------------------------------------------------------------


def run_settings(
    manifest: Manifest,
    config: TrainConfig,
    classes: list[str],
    data: ImageData,
    steps: int,
    epochs: int,
    eval_epochs: tuple[int, ...],
    device: torch.device,
    bf16: bool,
    channels_last: bool,
) -> dict[str, Any]:
    """The config.json document: everything needed to evaluate the model or reproduce the run."""
    source = manifest.source if manifest.source is not None and Path(manifest.source).is_file() else None
    return {
        "datadiet_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "manifest": {
            "path": str(Path(source).resolve()) if source else None,
            "sha256": file_digest(source) if source else None,
            "content_sha256": content_digest(manifest),  # ids and labels: what resume checks
            "rows": manifest.num_rows,
            "full_size": full_size(manifest),
            # what made this subset (score, keep policy, fraction, seed): `report` reads it from here
            "lineage": manifest.meta.get("lineage", []),
            "scores": manifest.meta.get("scores", {}),
        },
        "dataset": manifest.meta.get("dataset", {}),
        "classes": classes,
        "config": to_jsonable(config),
        "model": {
            "arch": config.recipe.arch,
            "num_classes": len(classes),
            "in_channels": data.in_channels,
            "image_size": data.image_size,
            "in_memory": data.in_memory,
        },
        "normalisation": to_jsonable(data.normalisation),
        "plan": {
            "epochs": epochs,
            "stop_after_epoch": stop_epoch(config, epochs),
            "steps_per_epoch": steps_per_epoch(manifest.num_rows, config.recipe.batch_size),
            "total_steps": steps,
            "base_lr": base_learning_rate(config.recipe),
            "milestone_steps": milestone_steps(config.recipe, steps),
            "dynamics_eval_epochs": list(eval_epochs) if config.record_dynamics else [],
            "example_order": "per epoch: kept ids sorted by splitmix64(blake2b64(id) ^ splitmix64(seed, epoch))",
        },
        "runtime": {
            "device": str(device),
            "precision": "bf16" if bf16 else "fp32",
            "channels_last": channels_last,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
    }


def content_digest(manifest: Manifest) -> str:
    digest = hashlib.sha256()
    for example_id, label in zip(manifest.ids(), manifest.labels(), strict=True):
        digest.update(f"{example_id}\0{label}\n".encode())
    return digest.hexdigest()


def resume_key(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that must match for --resume to continue the same run."""
    config = {k: v for k, v in settings["config"].items() if k not in RESUMABLE_CHANGES}
    return {"manifest": settings["manifest"]["content_sha256"], **flatten(config)}


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def open_run_dir(run_dir: Path, settings: dict[str, Any], resume: bool) -> int:
    """Check RUN_DIR and write config.json; the epoch to continue after (0 = start fresh)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise OptionError(f"{run_dir}: is a file; -o takes a directory for the run")
    config_path, checkpoint_path = run_dir / CONFIG_FILE, run_dir / CHECKPOINT_FILE
    if not resume and (config_path.exists() or checkpoint_path.exists()):
        raise OptionError(f"{run_dir}: already holds a training run; pass --resume to continue it or choose another -o")
    if resume and not config_path.exists():
        raise OptionError(f"--resume: {run_dir} holds no training run (no {CONFIG_FILE}); drop --resume to start one")
    if resume:
        recorded = json.loads(config_path.read_text())
        old, new = resume_key(recorded), resume_key(settings)
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                what = "the input manifest" if key == "manifest" else key.replace("recipe.", "")
                raise OptionError(
                    f"--resume: {run_dir} was trained with {what} = {old.get(key)!r}, not {new.get(key)!r}; "
                    "resume with the same input and settings, or choose another -o"
                )
        if checkpoint_path.exists():
            epoch = int(torch.load(checkpoint_path, map_location="cpu", weights_only=True)["epoch"])
            discard_dynamics_after(run_dir, epoch)
            return epoch
    discard_dynamics_after(run_dir, 0)
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(config_path) as temporary:
        temporary.write_text(json.dumps(settings, indent=2) + "\n")
    return 0


def discard_dynamics_after(run_dir: Path, epoch: int) -> None:
    """Parts written after the last checkpoint belong to an epoch that will run again."""
    for part in (run_dir / DYNAMICS_PARTS).glob("epoch-*.parquet"):
        if int(part.stem.split("-")[1]) > epoch:
            part.unlink()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(run_dir / METRICS_FILE) as temporary:
        temporary.write_text("".join(json.dumps(line) + "\n" for line in history))


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int, device: torch.device
) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
    }
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device) -> int:
    """Restore model (and optimizer and RNG states when given an optimizer); the checkpoint's epoch."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise OptionError(f"{path}: no such checkpoint; train the run first") from None
    except Exception as error:  # torch raises many kinds for a damaged file
        raise ManifestError(f"{path}: unreadable checkpoint ({type(error).__name__}); train the run again") from None
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if device.type == "cuda" and state["rng_cuda"].numel():
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)
    return int(state["epoch"])


def read_run_config(run_dir: Path | str) -> dict[str, Any]:
    """config.json of a finished (or interrupted) run, with one-line errors."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise OptionError(f"{run_dir}: no such run directory; create it with `datadiet train ... -o {run_dir}`")
    if not path.is_file() or not (run_dir / CHECKPOINT_FILE).is_file():
        raise OptionError(
            f"{run_dir}: not a finished training run (no {CONFIG_FILE} or {CHECKPOINT_FILE}); run `datadiet train` first"
        )
    return json.loads(path.read_text())


def load_trained_model(run_dir: Path | str, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The run's model in eval mode on `device`, and its config.json document."""
    settings = read_run_config(run_dir)
    spec = settings["model"]
    model = build_model(spec["arch"], spec["num_classes"], spec["in_channels"], spec["image_size"]).to(device)
    load_checkpoint(Path(run_dir) / CHECKPOINT_FILE, model, None, device)
    return model.eval(), settings


def normalisation_of(settings: dict[str, Any]) -> Normalisation:
    return Normalisation(tuple(settings["normalisation"]["mean"]), tuple(settings["normalisation"]["std"]))


# -- small helpers ----------------------------------------------------------------------------------


def class_names(manifest: Manifest) -> list[str]:
    classes = manifest.classes
    if len(classes) < 2:
        raise ManifestError(
            f"{manifest.name}: dataset.classes lists {len(classes)} class(es); "
            "train needs the class names that `datadiet ingest` records"
        )
    return classes


def check_label_range(manifest: Manifest, labels: np.ndarray, classes: list[str]) -> None:
    bad = (labels < 0) | (labels >= len(classes))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ColumnError(
            f"{manifest.name}: label {labels[first]} of id '{manifest.ids()[first]}' is outside 0..{len(classes) - 1} "
            f"(dataset.classes has {len(classes)} names)"
        )


def stop_epoch(config: TrainConfig, epochs: int) -> int:
    """The last epoch this run trains: all of them, or --stop-after of the planned schedule."""
    if config.stop_after is None:
        return epochs
    if not 1 <= config.stop_after <= epochs:
        raise OptionError(f"--stop-after {config.stop_after}: must be between 1 and the run's {epochs} epochs")
    return config.stop_after


def dynamics_eval_epochs(config: TrainConfig, epochs: int) -> tuple[int, ...]:
    if not config.record_dynamics:
        return ()
    chosen = config.dynamics_epochs if config.dynamics_epochs is not None else (epochs,)
    late = [epoch for epoch in chosen if epoch > epochs]
    if late:
        raise OptionError(f"--dynamics-epochs {late[0]}: the run has only {epochs} epochs")
    return tuple(chosen)


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


def train_config_replace(config: TrainConfig, **changes: Any) -> TrainConfig:
    """TrainConfig with recipe fields and run fields changed by name (for scoring helpers)."""
    recipe_fields = {f.name for f in dataclasses.fields(config.recipe)}
    recipe_changes = {k: v for k, v in changes.items() if k in recipe_fields}
    run_changes = {k: v for k, v in changes.items() if k not in recipe_fields}
    return dataclasses.replace(config, recipe=dataclasses.replace(config.recipe, **recipe_changes), **run_changes)
