"""Same inputs and seed give byte-identical Parquet when SOURCE_DATE_EPOCH replaces the clock."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.io.manifest import read_manifest

runner = CliRunner()
EPOCH = "1700000000"  # 2023-11-14T22:13:20+00:00


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args: str) -> None:
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output


def twice(tmp_path: Path, output: Path, *args: str) -> tuple[str, str]:
    """Run the same command twice to the same path (moving the first result aside); both digests."""
    run(*args)
    first = output.rename(tmp_path / f"first-{output.name}")
    run(*args)
    return digest(first), digest(output)


@pytest.fixture
def digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "digits.parquet"
    run("ingest", "builtin:digits", "--split", "train", "--per-class", "12", "-o", str(path))
    return path


def test_ingest_is_byte_identical_and_records_the_epoch(digits: Path, tmp_path: Path) -> None:
    first, second = twice(tmp_path, digits, "ingest", "builtin:digits", "--split", "train", "--per-class", "12",
                          "-o", str(digits))  # fmt: skip
    assert first == second
    assert [step.time for step in read_manifest(digits).lineage()] == ["2023-11-14T22:13:20+00:00"]


def test_prune_random_is_byte_identical(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept.parquet"
    first, second = twice(tmp_path, out, "prune", str(digits), "-o", str(out), "--keep", "random",
                          "--fraction", "0.5", "--seed", "3")  # fmt: skip
    assert first == second


def test_score_random_is_byte_identical(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "scored.parquet"
    first, second = twice(tmp_path, out, "score", str(digits), "-o", str(out), "--metric", "random", "--seed", "5")
    assert first == second


def test_cluster_pixels_is_byte_identical(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "clustered.parquet"
    first, second = twice(tmp_path, out, "cluster", str(digits), "-o", str(out), "--encoder", "pixels",
                          "--k", "4", "--seed", "1", "--device", "cpu")  # fmt: skip
    assert first == second


def test_without_the_epoch_the_time_is_the_clock(digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    out = tmp_path / "kept.parquet"
    run("prune", str(digits), "-o", str(out), "--keep", "random", "--count", "10")
    assert read_manifest(out).lineage()[-1].time > "2026"


def test_a_malformed_epoch_is_one_usage_error_and_writes_nothing(digits: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    out = tmp_path / "scored.parquet"
    # Refused before any probe trains, not when the lineage is written at the end.
    result = runner.invoke(app, ["score", str(digits), "-o", str(out), "--metric", "el2n", "--recipe", "fast"])
    assert (result.exit_code, result.output.strip()) == (
        2,
        "error: SOURCE_DATE_EPOCH=yesterday: not a count of seconds since 1970-01-01 UTC; "
        "set it to e.g. $(git log -1 --format=%ct), or unset it to record the current time",
    )
    assert not out.exists() and not (tmp_path / "scored.probes").exists()


def test_train_dynamics_and_evaluate_predictions_are_byte_identical(digits: Path, tmp_path: Path) -> None:
    run_dir, predictions = tmp_path / "run", tmp_path / "predictions.parquet"
    train = ("train", str(digits), "-o", str(run_dir), "--recipe", "fast", "--epochs", "1", "--augment", "none",
             "--record-dynamics", "--device", "cpu", "--seed", "2")  # fmt: skip
    evaluate = ("evaluate", str(run_dir), str(digits), "--predictions", str(predictions), "--device", "cpu")
    copies = []
    for attempt in range(2):
        run(*train)
        run(*evaluate)
        files = [run_dir / "dynamics.parquet", run_dir / "config.json", predictions]
        copies.append([digest(path) for path in files])
        run_dir.rename(tmp_path / f"run-{attempt}")
    assert copies[0] == copies[1]
