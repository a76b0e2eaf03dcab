"""`datadiet evaluate`: exact metrics on toys, the outputs it writes, and its one-line refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.io.manifest import read_manifest, write_manifest
from datadiet_cli.io.tables import read_table
from datadiet_cli.train import evaluate
from datadiet_cli.train.evaluate import classification_metrics, evaluate_run
from datadiet_cli.train.loop import train_run
from datadiet_cli.train.recipes import Precision, TrainConfig, recipe_with

runner = CliRunner()
CLASSES = ("ant", "bee", "cow")


def write_tree(root: Path, classes: tuple[str, ...], per_class: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                pixels = (rng.integers(0, 80, size=(8, 8, 3)) + 80 * label).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{index:03d}.png")


def ingest(root: Path, split: Split, target: Path) -> Path:
    write_manifest(ingest_source(IngestConfig(source=str(root), split=split)), target)
    return target


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(run dir, train manifest, test manifest): 1 epoch of smallcnn on 3 x 6 images, tested on 3 x 6."""
    folder = tmp_path_factory.mktemp("evaluate")
    write_tree(folder / "data", CLASSES, per_class=6)
    train = ingest(folder / "data", Split.train, folder / "train.parquet")
    test = ingest(folder / "data", Split.test, folder / "test.parquet")
    config = TrainConfig(recipe=recipe_with("fast", epochs=1, batch_size=6), device="cpu", precision=Precision.fp32)
    train_run(read_manifest(train), config, folder / "run")
    return folder / "run", train, test


# -- metrics ------------------------------------------------------------------------------------------


def test_metrics_exact_on_hand_made_probabilities() -> None:
    classes = [f"c{i}" for i in range(6)]
    probs = np.array(
        [
            [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],  # label 0: top-1 hit
            [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],  # label 1: second, a top-5 hit
            [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],  # label 5: tied 5th with class 4 (4 classes above): top-5 hit
            [0.05, 0.10, 0.15, 0.20, 0.25, 0.25],  # label 0: last, 5 classes above: a miss
        ]
    )
    labels = np.array([0, 1, 5, 0])
    loss = -np.log(probs[np.arange(4), labels])
    metrics = classification_metrics(probs, labels, loss, classes)
    assert metrics["top1"] == 0.25
    assert metrics["top5"] == 0.75 and metrics["top_k"] == 5
    assert metrics["loss"] == pytest.approx(loss.mean())
    assert metrics["n"] == 4
    assert metrics["per_class"] == {"c0": 0.5, "c1": 0.0, "c2": None, "c3": None, "c4": None, "c5": 0.0}
    assert metrics["per_class_n"] == {"c0": 2, "c1": 1, "c2": 0, "c3": 0, "c4": 0, "c5": 1}


def test_top5_with_fewer_than_five_classes_is_top_k_of_all() -> None:
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    metrics = classification_metrics(probs, np.array([0, 0]), np.zeros(2), ["a", "b", "c"])
    assert metrics["top_k"] == 3 and metrics["top5"] == 1.0 and metrics["top1"] == 0.5


class ConstantLogits(nn.Module):
    """Predicts class 0 for every image, with logits (3, 2, 1)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([3.0, 2.0, 1.0]).expand(images.shape[0], 3)


def test_evaluate_run_with_a_model_whose_predictions_are_known(
    trained: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run_dir, _, test = trained
    settings = json.loads((run_dir / "config.json").read_text())
    monkeypatch.setattr(evaluate, "load_trained_model", lambda run, device: (ConstantLogits(), settings))

    report = evaluate_run(run_dir, read_manifest(test), output=tmp_path / "eval.json", device="cpu")

    log_softmax = torch.log_softmax(torch.tensor([3.0, 2.0, 1.0]), dim=0).tolist()
    assert report["top1"] == pytest.approx(1 / 3) and report["top5"] == 1.0
    assert report["per_class"] == {"ant": 1.0, "bee": 0.0, "cow": 0.0}
    assert report["loss"] == pytest.approx(-sum(log_softmax) / 3, rel=1e-6)
    assert report["n"] == 18
    assert json.loads((tmp_path / "eval.json").read_text())["top1"] == report["top1"]


# -- outputs -------------------------------------------------------------------------------------------


def test_metrics_agree_with_the_predictions_file(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run_dir, _, test = trained
    report = evaluate_run(run_dir, read_manifest(test), predictions_path=tmp_path / "pred.parquet", device="cpu")
    predictions = read_table(tmp_path / "pred.parquet")
    assert set(predictions) == {"id", "label", "predicted", "p_label", "loss"}
    assert list(predictions["id"]) == list(read_manifest(test).ids())
    correct = predictions["predicted"] == predictions["label"]
    assert report["top1"] == pytest.approx(correct.mean())
    assert report["loss"] == pytest.approx(predictions["loss"].mean())
    np.testing.assert_allclose(predictions["loss"], -np.log(predictions["p_label"]), rtol=1e-4, atol=1e-6)
    for label, name in enumerate(CLASSES):
        assert report["per_class"][name] == pytest.approx(correct[predictions["label"] == label].mean())
    written = json.loads((run_dir / "eval.json").read_text())  # the default output
    assert {"top1", "top5", "loss", "n", "per_class"} <= set(written) and 0 <= written["top1"] <= 1


def test_evaluate_command_prints_a_table_and_writes_json(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run_dir, _, test = trained
    result = runner.invoke(
        app,
        ["evaluate", str(run_dir), str(test), "-o", str(tmp_path / "m.json"), "--device", "cpu"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert f"{report['top1']:.2%}" in result.output and "top-3" in result.output and "cow" in result.output


# -- refusals ------------------------------------------------------------------------------------------


def test_class_mismatch_is_one_line_naming_both(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run_dir, _, _ = trained
    write_tree(tmp_path / "other", ("ant", "bee", "dog"), per_class=1)
    other = ingest(tmp_path / "other", Split.test, tmp_path / "other.parquet")
    result = runner.invoke(app, ["evaluate", str(run_dir), str(other), "--quiet"], env={"COLUMNS": "400"})
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: {other}: classes [ant, bee, dog] differ from the model's [ant, bee, cow] ({run_dir}); "
        "evaluate on a manifest ingested from the same dataset"
    )


def test_unlabeled_test_rows_and_missing_runs_are_refused(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run_dir, _, test = trained
    manifest = read_manifest(test)
    labels = manifest.labels().astype(object)
    labels[0] = None
    write_manifest(manifest.with_column("label", list(labels)), tmp_path / "unlabeled.parquet")
    result = runner.invoke(app, ["evaluate", str(run_dir), str(tmp_path / "unlabeled.parquet")], env={"COLUMNS": "400"})
    assert result.exit_code == 1 and "column 'label' has 1 null values" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nowhere"), str(test)], env={"COLUMNS": "400"})
    assert result.output.strip() == (
        f"error: {tmp_path / 'nowhere'}: no such run directory; create it with `datadiet train ... -o {tmp_path / 'nowhere'}`"
    )


def test_predictions_on_unlabeled_data_have_nan_loss(trained: tuple[Path, Path, Path]) -> None:
    run_dir, _, test = trained
    manifest = read_manifest(test)
    unlabeled = manifest.with_column("label", [None] * manifest.num_rows, type=pa.int64())
    predictions = evaluate.predict(run_dir, unlabeled, device="cpu")
    assert predictions.probs.shape == (18, 3) and np.allclose(predictions.probs.sum(axis=1), 1, atol=1e-5)
    assert (predictions.labels == -1).all() and all(math.isnan(v) for v in predictions.loss)
