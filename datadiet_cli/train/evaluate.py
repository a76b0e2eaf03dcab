"""`datadiet evaluate`: measure a trained run on a test manifest.

Top-1 and top-k accuracy (k = min(5, classes)), mean cross-entropy, and accuracy per class
(the paper's App. I checks that pruning does not buy average accuracy with some classes'),
all as fractions in [0, 1]. `predict` is the reusable part: class probabilities of any
manifest, labeled or not (scoring helpers use it for held-out examples).

Imports torch at module level: the CLI imports this module inside the `evaluate` command only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datadiet_cli.device import select_device
from datadiet_cli.distributed import SINGLE, Ranks, all_sum, gather_rows, together
from datadiet_cli.errors import ColumnError, DatasetError, ManifestError, OptionError, OutputError, RunDirError
from datadiet_cli.io.files import check_output, describe_file
from datadiet_cli.io.manifest import Manifest
from datadiet_cli.io.rundir import DAMAGED_RUN_FIX, RunDir
from datadiet_cli.io.tables import write_table
from datadiet_cli.train.batches import ImageData, label_array, load_data
from datadiet_cli.train.loop import load_trained_model, normalisation_of, predict_batches, use_bf16
from datadiet_cli.train.recipes import Precision, Recipe, at_least, check_recipe, recipe_from_json

TOP_K = 5

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Predictions:
    ids: np.ndarray  # (N,) str, in the manifest's row order
    labels: np.ndarray  # (N,) int64, -1 where the manifest has no label
    probs: np.ndarray  # (N, C) float32 softmax
    loss: np.ndarray  # (N,) float64 cross-entropy of the label; NaN where there is no label


def model_and_data(
    run_dir: Path | str | RunDir,
    manifest: Manifest,
    *,
    device: str = "auto",
    root: Path | None = None,
    workers: int = 4,
    pixels: np.ndarray | None = None,
) -> tuple[torch.nn.Module, ImageData, bool]:
    """The run's trained model (eval mode), `manifest`'s examples prepared exactly as in training
    (same normalisation, same in-memory or streamed path), and whether to autocast to bf16."""
    chosen = select_device(device)
    model, settings = load_trained_model(run_dir, chosen)
    check_classes(manifest, settings["classes"], RunDir.of(run_dir).path)
    spec = settings["model"]
    if spec["in_memory"] and pixels is None:
        check_image_shape(manifest, settings)
    recipe, precision = trained_recipe(settings, RunDir.of(run_dir).config_path)
    data = load_data(
        manifest,
        recipe,
        chosen,
        normalisation=normalisation_of(settings),
        workers=workers,
        root=root,
        pixels=pixels,
        in_channels=spec["in_channels"],
        in_memory=spec["in_memory"],
        training=False,
    )
    return model, data, use_bf16(precision, chosen)


def trained_recipe(settings: dict[str, Any], config_path: Path) -> tuple[Recipe, Precision]:
    """The recipe and precision recorded in config.json, or a one-line error naming the file."""
    try:
        recipe = recipe_from_json(settings["config"]["recipe"])
        check_recipe(recipe)
        return recipe, Precision(settings["config"]["precision"])
    except (KeyError, TypeError, ValueError, OptionError) as error:
        raise RunDirError(
            f"{config_path}: 'config.recipe' or 'config.precision' is not what datadiet train writes "
            f"({type(error).__name__}: {error}); {DAMAGED_RUN_FIX}"
        ) from None


def predict(
    run_dir: Path | str | RunDir,
    manifest: Manifest,
    *,
    device: str = "auto",
    batch_size: int = 512,
    root: Path | None = None,
    workers: int = 4,
    pixels: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> Predictions:
    """Class probabilities of every row of `manifest` under the run's model (no augmentation)."""
    at_least("--batch-size", batch_size, 1)
    run = RunDir.of(run_dir)
    num_classes = int(run.finished_config()["model"]["num_classes"])
    known = label_array(manifest)
    check_labels(manifest, np.where(known == -1, 0, known), num_classes, run.path)  # -1: no label
    model, data, bf16 = model_and_data(run, manifest, device=device, root=root, workers=workers, pixels=pixels)
    logits = torch.empty(data.count, num_classes)  # (N, C) on the host
    for positions, batch_logits in predict_batches(model, data, batch_size, bf16):
        logits[positions.cpu()] = batch_logits.cpu()
        if progress is not None:
            progress(len(positions), data.count)
    labels = data.labels.cpu()
    has_label = labels >= 0
    loss = torch.full((data.count,), float("nan"), dtype=torch.float64)
    loss[has_label] = F.cross_entropy(logits[has_label], labels[has_label], reduction="none").double()
    return Predictions(
        ids=np.asarray(manifest.ids(), dtype=object),
        labels=labels.numpy(),
        probs=torch.softmax(logits, dim=1).numpy(),
        loss=loss.numpy(),
    )


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, loss: np.ndarray, classes: list[str], ranks: Ranks = SINGLE
) -> dict[str, Any]:
    """top1, top5 (top-k with k = min(5, C)), mean loss, n and per-class accuracy from (N, C) probabilities.

    top-1 is the argmax (first index on ties); top-k counts a hit when fewer than k classes
    score strictly higher than the label. per_class maps class name -> accuracy (None for a
    class with no test examples). Under torchrun each rank passes its shard's rows and the
    counts are summed over the ranks.
    """
    count, num_classes = probs.shape
    k = min(TOP_K, num_classes)
    label_prob = probs[np.arange(count), labels]  # (N,)
    rank = (probs > label_prob[:, None]).sum(axis=1)  # (N,) classes scoring above the label
    correct = probs.argmax(axis=1) == labels
    # [n, top-1 hits, top-k hits, loss sum, hits per class (C), examples per class (C)]
    sums = np.concatenate([
        [count, correct.sum(), (rank < k).sum(), loss.sum()],
        np.bincount(labels[correct], minlength=num_classes),
        np.bincount(labels, minlength=num_classes),
    ]).astype(np.float64)  # fmt: skip
    sums = all_sum(ranks, sums)
    total, hits, per_class_n = sums[0], sums[4 : 4 + num_classes], sums[4 + num_classes :]
    return {
        "top1": float(sums[1] / total),
        "top5": float(sums[2] / total),
        "top_k": k,
        "loss": float(sums[3] / total),
        "n": int(total),
        "per_class": {
            name: float(hits[i] / per_class_n[i]) if per_class_n[i] else None for i, name in enumerate(classes)
        },
        "per_class_n": {name: int(per_class_n[i]) for i, name in enumerate(classes)},
    }


def evaluate_run(
    run_dir: Path | str,
    manifest: Manifest,
    *,
    output: Path | None = None,
    predictions_path: Path | None = None,
    device: str = "auto",
    batch_size: int = 512,
    root: Path | None = None,
    workers: int = 4,
    progress: ProgressCallback | None = None,
    ranks: Ranks = SINGLE,
) -> dict[str, Any]:
    """Evaluate the run on a labeled manifest; writes `output` (default RUN_DIR/eval.json) atomically
    and, when asked, per-example predictions (id, label, predicted, p_label, loss) as Parquet.

    Under torchrun each rank predicts its shard of the rows; rank 0 writes.
    """
    run = RunDir(run_dir)
    with together(ranks):
        at_least("--batch-size", batch_size, 1)
        check_outputs(run, manifest, output, predictions_path)
        labels = manifest.labels()  # every test example needs a label: one-line error otherwise
        check_labels(manifest, labels, int(run.finished_config()["model"]["num_classes"]), run.path)
        check_rows(manifest.num_rows, ranks)
        started = time.perf_counter()
        mine = (
            manifest.take(np.arange(manifest.num_rows)[ranks.shard(manifest.num_rows)])
            if ranks.distributed
            else manifest
        )
        predictions = predict(
            run, mine, device=ranks.device if ranks.distributed else device, batch_size=batch_size, root=root,
            workers=workers, progress=progress,
        )  # fmt: skip
    classes = list(run.finished_config()["classes"])
    metrics = classification_metrics(predictions.probs, predictions.labels, predictions.loss, classes, ranks)
    columns = gathered(prediction_columns(predictions), ranks, manifest) if predictions_path is not None else None
    source = manifest.source if manifest.source is not None and Path(manifest.source).is_file() else None
    report = {
        **metrics,
        "run_dir": str(run.path.resolve()),
        "test_manifest": describe_file(source) if source else None,
        "device": str(select_device(ranks.device if ranks.distributed else device)),
        "seconds": round(time.perf_counter() - started, 3),
    }
    with together(ranks):
        if ranks.main:
            write_outputs(run, report, output, columns, predictions_path)
    return report


def check_rows(rows: int, ranks: Ranks) -> None:
    if rows < ranks.world:
        raise OptionError(f"{rows} test example(s) cannot be shared by {ranks.world} ranks; start fewer processes")


def gathered(columns: dict[str, np.ndarray], ranks: Ranks, manifest: Manifest) -> dict[str, np.ndarray]:
    """The predictions file's columns of every rank's shard, in row order, on rank 0."""
    if not ranks.distributed:
        return columns
    numbers = np.stack([columns["predicted"], columns["p_label"], columns["loss"]], axis=1).astype(np.float64)
    everything = gather_rows(ranks, numbers)  # (N, 3) on rank 0, None elsewhere
    if everything is None:
        return columns
    predicted, p_label, loss = everything.T
    ids, labels = np.asarray(manifest.ids(), dtype=object), manifest.labels()
    return {"id": ids, "label": labels, "predicted": predicted.astype(np.int64), "p_label": p_label, "loss": loss}


def write_outputs(
    run: RunDir,
    report: dict[str, Any],
    output: Path | None,
    columns: dict[str, np.ndarray] | None,
    predictions_path: Path | None,
) -> None:
    """The predictions (when asked), then the metrics JSON: both, or neither (a failed write is one OutputError)."""
    if predictions_path is None or columns is None:
        run.write_eval(report, output)
        return
    target = Path(predictions_path)
    made = [folder for folder in target.parents if not folder.exists()]
    write_table(columns, target, {"run_dir": report["run_dir"], "test_manifest": report["test_manifest"]})
    try:
        run.write_eval(report, output)
    except OutputError:
        target.unlink(missing_ok=True)
        for folder in made:  # innermost first: the folders made for the predictions
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def prediction_columns(predictions: Predictions) -> dict[str, np.ndarray]:
    """The columns of a predictions file: id, label, predicted class, p_label, loss."""
    rows = np.arange(len(predictions.ids))
    return {
        "id": predictions.ids,
        "label": predictions.labels,
        "predicted": predictions.probs.argmax(axis=1).astype(np.int64),
        "p_label": predictions.probs[rows, predictions.labels].astype(np.float64),
        "loss": predictions.loss,
    }


def check_classes(manifest: Manifest, model_classes: list[str], run_dir: Path) -> None:
    """The test manifest must name the same classes, in the same order, as the training manifest."""
    classes = manifest.classes
    if classes != list(model_classes):
        raise ManifestError(
            f"{manifest.name}: classes {abbreviate(classes)} differ from the model's {abbreviate(model_classes)} "
            f"({run_dir}); evaluate on a manifest ingested from the same dataset"
        )


def check_labels(manifest: Manifest, labels: np.ndarray, num_classes: int, run_dir: Path) -> None:
    """Every label must be one of the model's classes, 0..num_classes-1."""
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ColumnError(
            f"{manifest.name}: label {labels[first]} of id '{manifest.ids()[first]}' is outside the model's classes "
            f"0..{num_classes - 1} ({run_dir}); fix the label column or evaluate on a manifest ingested from the "
            "same dataset"
        )


def check_outputs(run: RunDir, manifest: Manifest, output: Path | None, predictions: Path | None) -> None:
    """Refuse outputs before any work (io/files.check_output), and never one path for both outputs."""
    inputs = [run.config_path, run.checkpoint_path] + ([Path(manifest.source)] if manifest.source else [])
    if output is not None:
        check_output(output, *inputs, suffix=".json")
    if predictions is not None:
        if output is not None and Path(output).resolve() == Path(predictions).resolve():
            raise OptionError(f"--predictions {predictions}: is also -o; give the two outputs different paths")
        check_output(predictions, *inputs, option="--predictions")


def check_image_shape(manifest: Manifest, settings: dict[str, Any]) -> None:
    trained = (settings.get("dataset") or {}).get("image_shape")
    shape = (manifest.meta.get("dataset") or {}).get("image_shape")
    if trained and shape != trained:
        described = "x".join(map(str, shape)) if shape else "of varying sizes"
        raise DatasetError(
            f"{manifest.name}: images are {described} but the model was trained on "
            f"{'x'.join(map(str, trained))} images; evaluate on a split of the same dataset"
        )


def abbreviate(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} classes)" if len(names) > limit else "")
    return f"[{shown}]"
