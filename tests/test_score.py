"""`score`: every metric end to end on tiny data, GraNd against a plain loop, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.io.manifest import read_manifest, write_manifest
from datadiet_cli.score.config import ScoreConfig
from datadiet_cli.score.grand import exact_gradient_norms, last_layer_gradient_norms
from datadiet_cli.score.metrics import el2n
from datadiet_cli.score.probes import probe_jobs
from datadiet_cli.score.registry import METRICS, Metric, Need
from datadiet_cli.train.evaluate import predict
from datadiet_cli.train.models import build_model
from datadiet_cli.train.recipes import RECIPES

runner = CliRunner()
PROBE_ARGS = ["--probes", "2", "--probe-epochs", "1", "--recipe", "fast", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 digits (16 per class), written to disk like any manifest."""
    manifest = ingest_source(IngestConfig(source="builtin:digits", split=Split.train))
    labels = manifest.labels()
    rows = np.sort(np.concatenate([np.flatnonzero(labels == c)[:16] for c in range(10)]))
    return write_manifest(manifest.take(rows), tmp_path_factory.mktemp("digits") / "small.parquet")


def run_score(small_digits: Path, tmp_path: Path, metric: str, *extra: str) -> Path:
    output = tmp_path / f"{metric}.parquet"
    result = runner.invoke(
        app, ["score", str(small_digits), "-o", str(output), "--metric", metric, *PROBE_ARGS, *extra]
    )
    assert result.exit_code == 0, result.output
    return output


def test_random_is_seeded_and_needs_no_probes(small_digits: Path, tmp_path: Path) -> None:
    first = read_manifest(run_score(small_digits, tmp_path, "random", "--seed", "3"))
    again = read_manifest(run_score(small_digits, tmp_path / "again", "random", "--seed", "3"))
    assert np.array_equal(first.score("random"), again.score("random"))
    assert first.meta["scores"]["random"]["direction"] == "higher_is_harder"
    assert not (tmp_path / "random.probes").exists()


@pytest.fixture(scope="module")
def el2n_scored(small_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """el2n from 2 probes trained in this process, shared by the tests that compare against it."""
    return run_score(small_digits, tmp_path_factory.mktemp("el2n"), "el2n")


def test_el2n_equals_the_mean_over_probe_predictions(small_digits: Path, el2n_scored: Path, tmp_path: Path) -> None:
    scored = read_manifest(el2n_scored)
    runs = sorted((el2n_scored.parent / "el2n.probes").glob("probe-*"))
    assert [run.name for run in runs] == ["probe-00", "probe-01"]
    manifest = read_manifest(small_digits)
    probs = np.stack([predict(run, manifest, device="cpu").probs.astype(np.float64) for run in runs])
    mean, std = el2n(probs, manifest.labels())
    np.testing.assert_allclose(scored.score("el2n"), mean, rtol=1e-6)
    np.testing.assert_allclose(scored.score("el2n_std"), std, rtol=1e-5, atol=1e-7)
    params = scored.meta["scores"]["el2n"]["params"]
    assert params["config"]["probes"] == 2 and len(params["probe_runs"]) == 2
    assert scored.lineage().last("score").options["metric"] == "el2n"
    # Probes already trained are reused: scoring again from them gives the same column.
    rescored = read_manifest(run_score(small_digits, tmp_path / "again", "el2n", "--from-runs", str(runs[0]),
                                       "--from-runs", str(runs[1])))  # fmt: skip
    np.testing.assert_allclose(rescored.score("el2n"), scored.score("el2n"))


def test_forgetting_ddd_uncertainty_memorization_ranges(small_digits: Path, tmp_path: Path) -> None:
    forgetting = read_manifest(run_score(small_digits, tmp_path, "forgetting", "--probe-epochs", "2"))
    values = forgetting.score("forgetting")
    # 2 presentations: at most 1 forgetting event, 2 for never learned.
    assert set(np.unique(values)) <= {0.0, 0.5, 1.0, 1.5, 2.0}
    ddd = read_manifest(run_score(small_digits, tmp_path, "ddd")).score("ddd")
    assert set(np.unique(ddd)) <= {0.0, 1.0, 2.0}
    uncertainty = read_manifest(run_score(small_digits, tmp_path, "uncertainty")).score("uncertainty")
    assert ((uncertainty >= 0) & (uncertainty <= 0.9 + 1e-9)).all()  # 1 - max mean prob, 10 classes
    memorized = read_manifest(run_score(small_digits, tmp_path, "memorization", "--probes", "3", "--subset", "0.5"))
    assert ((memorized.score("memorization") >= -1) & (memorized.score("memorization") <= 1)).all()
    subsets = sorted((tmp_path / "memorization.probes").glob("probe-*.parquet"))
    assert [read_manifest(path).num_rows for path in subsets] == [80, 80, 80]


def test_probe_subsets_are_seeded_per_probe() -> None:
    config = ScoreConfig(metric=Metric.memorization, probes=3, subset=0.5, seed=1)
    first = probe_jobs(100, config, Path("p"))
    more = probe_jobs(100, ScoreConfig(metric=Metric.memorization, probes=4, subset=0.5, seed=1), Path("p"))
    for a, b in zip(first, more[:3], strict=True):
        assert np.array_equal(a.rows, b.rows) and len(a.rows) == 50
    assert not np.array_equal(first[0].rows, first[1].rows)


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=3, in_channels=1, image_size=8).eval()
    return model


def test_exact_grand_matches_a_plain_backward_loop() -> None:
    model = tiny_model()
    images, labels = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    fast = exact_gradient_norms(model, images, labels)
    for i in range(5):
        model.zero_grad()
        F.cross_entropy(model(images[i : i + 1]), labels[i : i + 1]).backward()
        norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
        torch.testing.assert_close(fast[i], norm, rtol=1e-4, atol=1e-6)


def test_last_layer_grand_matches_autograd_of_the_last_layer() -> None:
    model = tiny_model()
    final = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    images, labels = torch.randn(4, 1, 8, 8), torch.tensor([2, 0, 1, 1])
    closed_form = last_layer_gradient_norms(model, images, labels)
    for i in range(4):
        model.zero_grad()
        F.cross_entropy(model(images[i : i + 1]), labels[i : i + 1]).backward()
        norm = torch.sqrt(final.weight.grad.pow(2).sum() + final.bias.grad.pow(2).sum())
        torch.testing.assert_close(closed_form[i], norm, rtol=1e-4, atol=1e-6)


def test_grand_from_the_cli(small_digits: Path, tmp_path: Path) -> None:
    exact = read_manifest(run_score(small_digits, tmp_path, "grand", "--probes", "1"))
    last = read_manifest(run_score(small_digits, tmp_path / "last", "grand", "--probes", "1", "--grand-mode", "last-layer",
                                   "--probes-dir", str(tmp_path / "grand.probes")))  # fmt: skip
    assert (exact.score("grand") > last.score("grand") - 1e-6).all()  # the full gradient includes the last layer's


def test_errors(small_digits: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["score", str(small_digits), "-o", str(tmp_path / "o.parquet"), "--metric", "el2n",
                                 "--from-runs", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2
    assert result.output == f"error: --from-runs {tmp_path}: not a finished `datadiet train` run (no checkpoint.pt)\n"
    result = runner.invoke(app, ["score", str(small_digits), "-o", str(tmp_path / "o.parquet"), "--metric",
                                 "memorization", "--subset", "1"])  # fmt: skip
    assert result.exit_code == 2 and "--subset 1.0 is outside (0, 1)" in result.output
    assert not (tmp_path / "o.parquet").exists()


def test_jobs_trains_probes_in_parallel_processes_with_the_same_result(
    small_digits: Path, el2n_scored: Path, tmp_path: Path
) -> None:
    serial = read_manifest(el2n_scored)
    parallel = read_manifest(run_score(small_digits, tmp_path / "parallel", "el2n", "--jobs", "2"))
    # Same seeds per probe; only the threads per process differ, which may move the last float bits.
    np.testing.assert_allclose(parallel.score("el2n"), serial.score("el2n"), rtol=1e-4, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "parallel" / "el2n.probes").glob("probe-*")) == ["probe-00", "probe-01"]
    assert parallel.meta["scores"]["el2n"]["params"]["config"]["jobs"] == 2


def test_truncated_probes_stop_early_in_the_recipes_full_schedule(small_digits: Path, tmp_path: Path) -> None:
    run_score(small_digits, tmp_path, "el2n", "--probe-schedule", "truncated")
    plan = json.loads((tmp_path / "el2n.probes" / "probe-00" / "config.json").read_text())["plan"]
    assert plan["epochs"] == RECIPES["fast"].epochs and plan["stop_after_epoch"] == 1
    result = runner.invoke(app, ["score", str(small_digits), "-o", str(tmp_path / "late.parquet"), "--metric", "el2n",
                                 "--recipe", "fast", "--probe-epochs", "17", "--probe-schedule", "truncated"])  # fmt: skip
    assert result.exit_code == 2
    assert "--probe-epochs 17 is longer than the fast recipe's 16 epochs" in result.output


# -- the metric registry -----------------------------------------------------------------------------

# What each kind of need may read from the probes (labels come from the manifest and are always there).
READINGS_OF = {
    Need.probabilities: {"probabilities"},
    Need.dynamics: {"training_correctness"},
    Need.membership: {"probabilities", "training_membership"},
    Need.gradient_norms: {"gradient_norms"},
    Need.nothing: set(),
}


class FakeReadings:
    """Probe readings for K=3 probes and N=6 rows that refuse every reading outside `allowed`."""

    num_rows = 6

    def __init__(self, allowed: set[str]) -> None:
        rng = np.random.default_rng(0)
        probs = rng.random((3, 6, 4))
        self.arrays = {
            "probabilities": probs / probs.sum(axis=-1, keepdims=True),
            "training_correctness": rng.random((3, 5, 6)) > 0.5,
            "training_membership": np.array([[True, False] * 3, [False, True] * 3, [True] * 3 + [False] * 3]),
            "gradient_norms": rng.random((3, 6)),
        }
        self.allowed = allowed

    def labels(self) -> np.ndarray:
        return np.array([0, 1, 2, 3, 0, 1])

    def __getattr__(self, name: str) -> Any:
        if name not in self.arrays:
            raise AttributeError(name)
        assert name in self.allowed, f"read {name}, which its registry entry does not declare"
        return lambda: self.arrays[name]


def test_the_cli_offers_exactly_the_registrys_metrics() -> None:
    result = runner.invoke(app, ["score", "in.parquet", "-o", "out.parquet", "--metric", "nosuch"])
    assert result.exit_code == 2
    offered = result.output.split("is not one of ")[1].split(". (see")[0]
    assert offered == ", ".join(f"'{name}'" for name in METRICS)
    assert [metric.value for metric in Metric] == list(METRICS)
    assert set(READINGS_OF) == set(Need)


@pytest.mark.parametrize("name", list(METRICS))
def test_registry_entry_reads_only_what_it_needs_and_has_std_and_citation_as_declared(name: str) -> None:
    spec = METRICS[name]
    assert spec.name == name and spec.citation
    measured = spec.compute(FakeReadings(READINGS_OF[spec.needs]), ScoreConfig(metric=Metric(name), probes=3))
    assert measured.values.shape == (6,) and np.isfinite(measured.values).all()
    assert (measured.spread is not None) == spec.writes_std
    if spec.writes_std:
        assert measured.spread.shape == (6,)


def test_only_a_metric_needing_membership_trains_probes_on_subsets() -> None:
    on_subsets = [m for m in Metric if probe_jobs(10, ScoreConfig(metric=m, probes=1), Path("p"))[0].rows is not None]
    assert on_subsets == [m for m in Metric if METRICS[m.value].needs is Need.membership] == [Metric.memorization]
