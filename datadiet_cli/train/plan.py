"""What a training run will do, decided before it starts: classes, step counts, and its config.json.

Everything here is checked up front, so a bad label or a --stop-after beyond the run is a
one-line error before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datadiet_cli import __version__
from datadiet_cli.errors import ColumnError, ManifestError, OptionError
from datadiet_cli.io.clock import recorded_time
from datadiet_cli.io.files import file_digest, to_jsonable
from datadiet_cli.io.manifest import Manifest
from datadiet_cli.train.batches import ImageData
from datadiet_cli.train.models import check_architecture
from datadiet_cli.train.recipes import (
    TrainConfig,
    base_learning_rate,
    check_config,
    milestone_steps,
    steps_per_epoch,
    total_steps,
)


@dataclass(frozen=True)
class Plan:
    """The run's length in SGD steps and epochs."""

    classes: list[str]  # dataset.classes of the manifest; the model has one output per name
    steps: int  # SGD steps of the whole planned schedule
    batches_per_epoch: int  # steps in one full pass over the kept examples
    epochs: int  # planned epochs (the last one partial when steps do not divide)
    last_epoch: int  # the epoch the run stops after: `epochs`, or --stop-after
    eval_epochs: tuple[int, ...]  # epochs that end with a dynamics eval pass


def plan_run(manifest: Manifest, config: TrainConfig) -> Plan:
    """Check the config, the manifest's labels and the config's epochs, and lay out the schedule."""
    check_config(config)
    check_architecture(config.recipe.arch)
    classes = class_names(manifest)
    check_label_range(manifest, manifest.labels(), classes)
    recipe = config.recipe
    n_kept, n_full = manifest.num_rows, manifest.lineage().full_size(manifest.num_rows)
    # App. J: matched iterations stretch the run towards the full data's step count; milestones,
    # being fractions of the run, stretch with it.
    steps = total_steps(n_kept, n_full, recipe.batch_size, recipe.epochs, config.matched_iterations)
    batches_per_epoch = steps_per_epoch(n_kept, recipe.batch_size)
    epochs = math.ceil(steps / batches_per_epoch)
    # Paul et al. measure EL2N early in a full-length run: the schedule is planned for every epoch,
    # and the run ends after `stop_after` of them, at whatever learning rate it has reached.
    last_epoch = stop_epoch(config, epochs)
    return Plan(classes, steps, batches_per_epoch, epochs, last_epoch, dynamics_eval_epochs(config, last_epoch))


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
            f"(dataset.classes has {len(classes)} names); fix the label column or re-run `datadiet ingest`"
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


def run_settings(
    manifest: Manifest,
    config: TrainConfig,
    plan: Plan,
    data: ImageData,
    device: torch.device,
    bf16: bool,
    channels_last: bool,
    world_size: int = 1,
) -> dict[str, Any]:
    """The config.json document: everything needed to evaluate the model or reproduce the run."""
    source = manifest.source if manifest.source is not None and Path(manifest.source).is_file() else None
    return {
        "datadiet_version": __version__,
        "created": recorded_time(),
        "manifest": {
            "path": str(Path(source).resolve()) if source else None,
            "sha256": file_digest(source) if source else None,
            "content_sha256": content_digest(manifest),  # ids and labels: what resume checks
            "rows": manifest.num_rows,
            "full_size": manifest.lineage().full_size(manifest.num_rows),
            # what made this subset (score, keep policy, fraction, seed): `report` reads it from here
            "lineage": manifest.meta.get("lineage", []),
            "scores": manifest.meta.get("scores", {}),
        },
        "dataset": manifest.meta.get("dataset", {}),
        "classes": plan.classes,
        "config": to_jsonable(config),
        "model": {
            "arch": config.recipe.arch,
            "num_classes": len(plan.classes),
            "in_channels": data.in_channels,
            "image_size": data.image_size,
            "in_memory": data.in_memory,
        },
        "normalisation": to_jsonable(data.normalisation),
        "plan": {
            "epochs": plan.epochs,
            "stop_after_epoch": plan.last_epoch,
            "steps_per_epoch": plan.batches_per_epoch,
            "total_steps": plan.steps,
            "base_lr": base_learning_rate(config.recipe),
            "milestone_steps": milestone_steps(config.recipe, plan.steps),
            "dynamics_eval_epochs": list(plan.eval_epochs),
            "example_order": "per epoch: kept ids sorted by splitmix64(blake2b64(id) ^ splitmix64(seed, epoch))",
        },
        "runtime": {
            "device": str(device),
            "precision": "bf16" if bf16 else "fp32",
            "channels_last": channels_last,
            "world_size": world_size,  # processes under torchrun: the run is the same at any (docs/distributed.md)
            "torch": torch.__version__,
            "torchvision": version("torchvision"),  # without importing it: smallcnn runs need none of it
        },
    }


def content_digest(manifest: Manifest) -> str:
    """sha256 of the (id, label) pairs: the examples a run trains on, whatever file holds them."""
    digest = hashlib.sha256()
    for example_id, label in zip(manifest.ids(), manifest.labels(), strict=True):
        digest.update(f"{example_id}\0{label}\n".encode())
    return digest.hexdigest()
