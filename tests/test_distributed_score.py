"""`score` under torchrun: two gloo ranks give the one-process columns exactly; one rank's error ends both.

The session's one real 2-process job (tests/ranks.py: share) runs every command, so torch is imported once per rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from ranks import RankResult, SharedJob, share
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.distributed import Ranks
from datadiet_cli.errors import OptionError
from datadiet_cli.io.manifest import read_manifest, write_manifest
from datadiet_cli.score import probes
from datadiet_cli.score.config import ScoreConfig, check_config
from datadiet_cli.score.registry import Metric

PROBE_ARGS = ["--probes", "2", "--probe-epochs", "1", "--recipe", "fast", "--device", "cpu"]
# What each scoring of the job adds to PROBE_ARGS: forgetting needs 2 presentations to count events;
# memorization's 3 probes give the ranks unequal shares (probes 0, 2 on rank 0; probe 1 on rank 1).
METRIC_ARGS = {
    "el2n": [],
    "forgetting": ["--probe-epochs", "2"],
    "memorization": ["--probes", "3", "--subset", "0.5"],
}
DAMAGED_FIX = "the run folder is damaged or was edited: restore the file or train the run again into a new -o"


@dataclass(frozen=True)
class Job:
    folder: Path  # the 2-rank job's outputs: <metric>.parquet, <metric>.probes/, from_runs.parquet, broken.*
    reference: Path  # the same scorings by one process with --jobs 1
    ranks: list[RankResult]


def score_args(source: Path, output: Path, metric: str, *extra: str) -> list[str]:
    return ["score", str(source), "-o", str(output), "--metric", metric, *PROBE_ARGS, *METRIC_ARGS[metric], *extra]


def prepare(folder: Path) -> list[Any]:
    """160 digits and a probes folder only rank 1 trips over; the module's commands for the shared job."""
    manifest = ingest_source(IngestConfig(source="builtin:digits", split=Split.train))
    labels = manifest.labels()
    rows = np.sort(np.concatenate([np.flatnonzero(labels == c)[:16] for c in range(10)]))  # 160 rows
    source = write_manifest(manifest.take(rows), folder / "small.parquet")
    # A probe folder only rank 1 (which trains probe 1 of 2) opens: its config.json is not a JSON object.
    (folder / "broken.probes" / "probe-01").mkdir(parents=True)
    (folder / "broken.probes" / "probe-01" / "config.json").write_text("[]\n")
    el2n_runs = [str(folder / "el2n.probes" / f"probe-0{k}") for k in (0, 1)]
    return [
        score_args(source, folder / "el2n.parquet", "el2n"),  # the only one not --quiet: who prints what
        score_args(source, folder / "forgetting.parquet", "forgetting", "--quiet"),
        score_args(source, folder / "memorization.parquet", "memorization", "--quiet"),
        score_args(source, folder / "from_runs.parquet", "el2n", "--quiet",
                   "--from-runs", el2n_runs[0], "--from-runs", el2n_runs[1]),
        {"args": score_args(source, folder / "broken.parquet", "el2n", "--quiet"), "expect": 1},
    ]  # fmt: skip


share("score", prepare)


@pytest.fixture(scope="module")
def job(shared_ranks: SharedJob, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    folder, reference = shared_ranks.folder / "score", tmp_path_factory.mktemp("one_process")
    # The ranks run torch with OMP_NUM_THREADS=1; the reference must too, for equal float rounding.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for metric in METRIC_ARGS:
            arguments = score_args(folder / "small.parquet", reference / f"{metric}.parquet", metric, "--quiet",
                                   "--jobs", "1")  # fmt: skip
            result = CliRunner().invoke(app, arguments)
            assert result.exit_code == 0, result.output
    finally:
        torch.set_num_threads(threads)
    yield Job(folder, reference, shared_ranks.parts["score"])


@pytest.mark.parametrize("metric", list(METRIC_ARGS))
def test_two_ranks_write_exactly_the_one_process_scores(job: Job, metric: str) -> None:
    assert (job.folder / f"{metric}.parquet").is_file(), job.ranks[0].stderr
    spread = [f"{metric}_std"] if metric != "memorization" else []
    distributed, single = (
        read_manifest(job.folder / f"{metric}.parquet"),
        read_manifest(job.reference / f"{metric}.parquet"),
    )
    for column in [metric, *spread]:
        assert np.array_equal(distributed.score(column), single.score(column)), column
    assert distributed.lineage().last("score").stats == single.lineage().last("score").stats
    # Each probe was trained once, by its rank, into the shared folder (memorization's subsets beside it).
    probes_made = sorted(path.name for path in (job.folder / f"{metric}.probes").iterdir())
    count = 3 if metric == "memorization" else 2
    runs = [f"probe-0{k}" for k in range(count)]
    subsets = [f"{run}.parquet" for run in runs] if metric == "memorization" else []
    assert probes_made == sorted(runs + subsets)


def test_from_runs_under_torchrun_is_read_by_rank_0_alone(job: Job) -> None:
    from_runs = read_manifest(job.folder / "from_runs.parquet")
    assert np.array_equal(from_runs.score("el2n"), read_manifest(job.folder / "el2n.parquet").score("el2n"))
    assert not (job.folder / "from_runs.probes").exists()


def test_only_rank_0_prints_and_its_bar_counts_its_own_probes(job: Job) -> None:
    first, second = job.ranks
    assert (second.stdout, second.stderr) == ("", "")
    output = job.folder / "el2n.parquet"
    stats = read_manifest(output).lineage().last("score").stats
    assert (
        first.stdout
        == f"el2n: mean {stats['mean']:.4g}, std {stats['std']:.4g} over 160 rows from 2 probes -> {output}\n"
    )
    assert "el2n: rank 0's share of the probes" in first.stderr and "1/1 probes" in first.stderr


def test_an_error_on_one_rank_ends_every_rank_with_that_ranks_line(job: Job) -> None:
    first, second = job.ranks
    damaged = job.folder / "broken.probes" / "probe-01" / "config.json"
    line = f"error: rank 1: {damaged}: is not a JSON object; {DAMAGED_FIX}"
    assert (first.returncode, second.returncode) == (1, 1)
    assert first.stderr.endswith(line + "\n") and first.stderr.count("error:") == 1
    assert (second.stdout, second.stderr) == ("", "")  # rank 0 alone prints the shared line
    assert not (job.folder / "broken.parquet").exists()
    assert (job.folder / "broken.probes" / "probe-00" / "checkpoint.pt").is_file()  # rank 0's probe is kept


def test_jobs_is_refused_under_torchrun() -> None:
    config = ScoreConfig(metric=Metric.el2n, jobs=2)
    check_config(config, ())  # one process: a pool of 2
    with pytest.raises(OptionError) as refused:
        check_config(config, (), Ranks(rank=1, world=4))
    assert str(refused.value) == (
        "--jobs 2: under torchrun each of the 4 ranks already trains its own probes; "
        "drop --jobs and set the number of workers with torchrun --nproc-per-node"
    )


def test_rank_r_trains_probes_r_r_plus_w_on_its_own_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained: list[tuple[int, str]] = []
    monkeypatch.setattr(
        probes, "_train_probe", lambda manifest, config, job, pixels: trained.append((job.index, job.device))
    )
    manifest = SimpleNamespace(num_rows=10)  # all train_probes itself reads of it
    config = ScoreConfig(metric=Metric.el2n, probes=5, device="auto")
    reports: list[tuple[int, int]] = []
    ranks = Ranks(rank=1, world=2, local_rank=1, device="cuda:1")
    runs = probes.train_probes(
        manifest, config, tmp_path, None, lambda done, total: reports.append((done, total)), ranks
    )  # type: ignore[arg-type]
    assert trained == [(1, "cuda:1"), (3, "cuda:1")]
    assert runs == [tmp_path / f"probe-0{k}" for k in range(5)]  # every probe, for rank 0 to read
    assert reports == [(0, 2), (1, 2), (1, 2)]
