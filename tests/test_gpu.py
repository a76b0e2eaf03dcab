"""CUDA training and evaluation (marked `gpu`; conftest.py skips them where torch sees no CUDA device).

A tiny run on the learnable 8x8 images of conftest.py: it must learn on the GPU, record where it ran,
and its weights must give the same predictions evaluated on the CPU as on the GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.io.manifest import Manifest, read_manifest, write_manifest
from datadiet_cli.train.evaluate import evaluate_run, predict
from datadiet_cli.train.loop import train_run
from datadiet_cli.train.recipes import Precision, TrainConfig, recipe_with

pytestmark = pytest.mark.gpu


def manifest_of(root: Path, split: Split, target: Path) -> Manifest:
    write_manifest(ingest_source(IngestConfig(source=str(root), split=split)), target)
    return read_manifest(target)


def train_on_cuda(tree: Path, folder: Path, precision: Precision) -> tuple[Path, Manifest]:
    """(run dir, test manifest) of 4 epochs of smallcnn on the 60 training images, on CUDA."""
    train = manifest_of(tree, Split.train, folder / "train.parquet")
    config = TrainConfig(recipe=recipe_with("fast", epochs=4, batch_size=16), device="cuda", precision=precision)
    train_run(train, config, folder / "run")
    return folder / "run", manifest_of(tree, Split.test, folder / "test.parquet")


@pytest.fixture(scope="module")
def fp32_run(learnable_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    return train_on_cuda(learnable_tree, tmp_path_factory.mktemp("cuda-fp32"), Precision.fp32)


def test_a_cuda_run_records_its_device_and_learns(fp32_run: tuple[Path, Manifest], tmp_path: Path) -> None:
    run_dir, test = fp32_run
    runtime = json.loads((run_dir / "config.json").read_text())["runtime"]
    assert runtime["device"] == "cuda" and runtime["precision"] == "fp32"
    losses = [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and losses[-1] < 0.5 * losses[0]
    report = evaluate_run(run_dir, test, device="cuda", output=tmp_path / "eval.json")
    assert report["device"] == "cuda" and report["top1"] >= 0.9  # the CPU reaches 1.0 on these images


def test_cpu_and_cuda_evaluate_the_same_weights_alike(fp32_run: tuple[Path, Manifest]) -> None:
    run_dir, test = fp32_run
    on_cpu, on_cuda = predict(run_dir, test, device="cpu"), predict(run_dir, test, device="cuda")
    assert list(on_cuda.ids) == list(on_cpu.ids)
    # cuDNN may use TF32 for fp32 convolutions (10-bit mantissa): close, not bitwise equal.
    np.testing.assert_allclose(on_cuda.probs, on_cpu.probs, atol=1e-2)
    np.testing.assert_allclose(on_cuda.loss, on_cpu.loss, rtol=2e-2, atol=1e-3)
    assert (on_cuda.probs.argmax(axis=1) == on_cpu.probs.argmax(axis=1)).all()


def test_auto_precision_trains_in_bf16_where_the_gpu_has_it(learnable_tree: Path, tmp_path: Path) -> None:
    run_dir, test = train_on_cuda(learnable_tree, tmp_path, Precision.auto)
    runtime = json.loads((run_dir / "config.json").read_text())["runtime"]
    assert runtime["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert evaluate_run(run_dir, test, device="cuda", output=tmp_path / "eval.json")["top1"] >= 0.9
