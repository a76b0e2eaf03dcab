"""`train` and `evaluate` under torchrun: 2 gloo ranks on the CPU train and measure the run one process would.

The session's one real 2-process job (tests/ranks.py: share) runs this module's distributed commands; the
one-process references run here, in the test process.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import write_learnable_tree
from ranks import RankResult, SharedJob, run_ranks, share

from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.distributed import Ranks
from datadiet_cli.errors import OptionError
from datadiet_cli.io.manifest import read_manifest, write_manifest
from datadiet_cli.io.rundir import RunDir
from datadiet_cli.train.evaluate import evaluate_run, predict
from datadiet_cli.train.loop import train_run
from datadiet_cli.train.parallel import check_world
from datadiet_cli.train.recipes import Precision, TrainConfig, recipe_with

# 60 images in batches of 16: 4 global batches of 15, split 8 + 7 over the two ranks.
TRAIN = ["--recipe", "fast", "--epochs", "2", "--batch-size", "16", "--precision", "fp32", "--device", "cpu"]
TRAIN += ["--sync-bn", "--record-dynamics", "--dynamics-epochs", "1,2", "--seed", "3", "-q"]
# Float sums in another order over 8 SGD steps: the runs agree to about 1e-6; this leaves room.
CLOSE = dict(rtol=1e-4, atol=1e-5)


@dataclasses.dataclass(frozen=True)
class Job:
    folder: Path
    ranks: list[RankResult]


def prepare(folder: Path) -> list[Any]:
    """Train and test manifests of 8x8 images; the module's commands for the shared 2-rank job."""
    write_learnable_tree(folder / "tree", {"train": 20, "test": 6})
    for split in (Split.train, Split.test):
        manifest = ingest_source(IngestConfig(source=str(folder / "tree"), split=split))
        write_manifest(manifest, folder / f"{split.value}.parquet")
    train = ["train", str(folder / "train.parquet"), *TRAIN, "-o"]
    return [
        [*train, str(folder / "whole")],
        {"args": [*train, str(folder / "broken")], "interrupt_epoch": 2},
        [*train, str(folder / "broken"), "--resume"],
        {"args": [*train, str(folder / "handoff")], "interrupt_epoch": 2},
        [
            "evaluate",
            str(folder / "whole"),
            str(folder / "test.parquet"),
            "--device",
            "cpu",
            "-q",
            "--predictions",
            str(folder / "predictions.parquet"),
            "-o",
            str(folder / "eval.json"),
        ],
        [*[arg for arg in train if arg != "--sync-bn"], str(folder / "unsynced")],
        {"args": [*train, str(folder / "odd"), "--batch-size", "15"], "expect": 2},
    ]


share("train", prepare)


@pytest.fixture(scope="module")
def job(shared_ranks: SharedJob) -> Job:
    return Job(shared_ranks.folder / "train", shared_ranks.parts["train"])


def config() -> TrainConfig:
    recipe = recipe_with("fast", epochs=2, batch_size=16)
    return TrainConfig(recipe=recipe, device="cpu", precision=Precision.fp32, seed=3, sync_bn=True,
                       record_dynamics=True, dynamics_epochs=(1, 2))  # fmt: skip


def checkpoint(run: Path) -> dict:
    return RunDir(run).load_checkpoint("cpu")


def assert_close_weights(left: Path, right: Path, **tolerance: float) -> None:
    a, b = checkpoint(left)["model"], checkpoint(right)["model"]
    assert a.keys() == b.keys()
    for key in a:
        if tolerance:
            torch.testing.assert_close(a[key], b[key], **tolerance, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def dynamics(run: Path) -> dict[str, np.ndarray]:
    table = RunDir(run).read_dynamics()
    order = np.lexsort((table["id"].astype(str), table["epoch"], table["source"].astype(str)))
    return {name: np.asarray(values)[order] for name, values in table.items()}


def test_two_ranks_train_what_one_process_trains(job: Job) -> None:
    assert [rank.returncode for rank in job.ranks] == [2, 2]  # the last command fails, as it should
    alone = job.folder / "alone"
    train_run(read_manifest(job.folder / "train.parquet"), config(), alone)

    assert_close_weights(alone, job.folder / "whole", **CLOSE)
    one, two = RunDir(alone).read_metrics(), RunDir(job.folder / "whole").read_metrics()
    assert [line["step"] for line in two] == [line["step"] for line in one] == [4, 8]
    assert [line["train_loss"] for line in two] == pytest.approx([line["train_loss"] for line in one], rel=1e-5)
    # Dynamics gathered from both ranks: every example of every epoch, once, as one process measured it.
    one_dyn, two_dyn = dynamics(alone), dynamics(job.folder / "whole")
    assert list(two_dyn["id"]) == list(one_dyn["id"]) and len(two_dyn["id"]) == 60 * 4  # 2 epochs x (train, eval)
    np.testing.assert_allclose(two_dyn["loss"], one_dyn["loss"], **CLOSE)
    settings = RunDir(job.folder / "whole").config()
    assert settings["runtime"]["world_size"] == 2 and settings["config"]["sync_bn"] is True


def test_a_resumed_ddp_run_ends_with_the_weights_of_an_uninterrupted_one(job: Job) -> None:
    whole, broken = job.folder / "whole", job.folder / "broken"
    assert_close_weights(whole, broken)  # bit for bit: the same ranks do the same sums
    assert torch.equal(checkpoint(whole)["optimizer"]["state"][0]["momentum_buffer"],
                       checkpoint(broken)["optimizer"]["state"][0]["momentum_buffer"])  # fmt: skip
    measured = ("epoch", "step", "lr", "train_loss", "train_acc")  # not the timings
    assert [[line[key] for key in measured] for line in RunDir(whole).read_metrics()] == [
        [line[key] for key in measured] for line in RunDir(broken).read_metrics()
    ]
    for column in ("loss", "p_label", "epoch"):
        assert np.array_equal(dynamics(whole)[column], dynamics(broken)[column])


def test_a_checkpoint_of_two_ranks_resumes_in_one_process(job: Job) -> None:
    handoff = job.folder / "handoff"
    assert checkpoint(handoff)["epoch"] == 1
    result = train_run(read_manifest(job.folder / "train.parquet"), config(), handoff, resume=True)
    assert result.resumed_after == 1 and result.steps == 8
    assert_close_weights(job.folder / "whole", handoff, **CLOSE)


def test_two_ranks_evaluate_as_one_process_does(job: Job) -> None:
    alone = job.folder / "eval-alone.json"
    report = evaluate_run(job.folder / "whole", read_manifest(job.folder / "test.parquet"), output=alone,
                          predictions_path=job.folder / "predictions-alone.parquet", device="cpu")  # fmt: skip
    shared = json.loads((job.folder / "eval.json").read_text())
    for key in ("top1", "top5", "n", "per_class", "per_class_n", "top_k"):
        assert shared[key] == report[key], key
    assert shared["n"] == 18 and shared["loss"] == pytest.approx(report["loss"], rel=1e-12)
    one = pq.read_table(job.folder / "predictions-alone.parquet").to_pydict()
    two = pq.read_table(job.folder / "predictions.parquet").to_pydict()
    assert one["id"] == two["id"] and one["label"] == two["label"] and one["predicted"] == two["predicted"]
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-6)


def test_a_global_batch_that_does_not_split_is_one_line_printed_once(job: Job) -> None:
    first, second = job.ranks
    assert first.stderr.strip().splitlines()[-1] == (
        "error: --batch-size 15: the global batch must split evenly over 2 ranks; use a multiple of 2"
    )
    assert "error" not in second.stderr and not (job.folder / "odd").exists()


def test_the_real_torchrun_launches_datadiet_and_one_process_commands_refuse(tmp_path: Path) -> None:
    (done,) = run_ranks([["prune", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out.parquet"),
                          "--keep", "random", "--fraction", "0.5"]], torchrun=True)  # fmt: skip
    assert done.returncode == 1  # torchrun's own code for a job whose processes failed
    refusal = (
        "error: prune runs in one process: run it without torchrun (torchrun runs train, score, cluster, evaluate)"
    )
    # torchrun stops the other rank as soon as one fails, so it may not live to print the line too.
    assert 1 <= done.stdout.count(refusal) + done.stderr.count(refusal) <= 2
    assert not (tmp_path / "out.parquet").exists()


def test_without_sync_bn_the_eval_pass_measures_the_checkpointed_model_on_every_rank(job: Job) -> None:
    # Each rank's BatchNorm statistics drift with its own part of the last step; the epoch ends with rank 0's.
    run = job.folder / "unsynced"
    predictions = predict(run, read_manifest(job.folder / "train.parquet"), device="cpu")
    table = dynamics(run)
    last = (table["source"] == "eval") & (table["epoch"] == 2)
    measured = dict(zip(table["id"][last], table["loss"][last], strict=True))
    np.testing.assert_allclose([measured[i] for i in predictions.ids], predictions.loss, rtol=1e-5, atol=1e-6)


def test_a_rank_with_no_example_of_a_batch_is_refused_before_any_work() -> None:
    two = Ranks(rank=0, world=2)
    check_world(16, 60, two)
    with pytest.raises(OptionError) as refused:
        check_world(2, 59, two)  # 30 batches: 29 of 2 and one of 1
    assert str(refused.value) == (
        "--batch-size 2: 59 examples make batches of 1, fewer than the 2 ranks; use a larger --batch-size or fewer "
        "processes"
    )
    with pytest.raises(OptionError, match=r"^1 example\(s\) cannot be shared by 2 ranks; start fewer processes$"):
        check_world(2, 1, two)


def test_each_rank_takes_its_own_device_and_a_named_gpu_is_refused() -> None:
    from datadiet_cli.distributed import rank_device

    two = Ranks(rank=1, world=2, local_rank=1)
    assert rank_device("cuda:0", Ranks()) == "cuda:0"  # one process: the option as given
    assert rank_device("cpu", two) == "cpu"
    with pytest.raises(OptionError, match=r"^--device cuda:3: under torchrun each rank takes cuda:LOCAL_RANK; "):
        rank_device("cuda:3", two)
    if not torch.cuda.is_available():
        assert rank_device("auto", two) == "cpu"
        with pytest.raises(OptionError, match=r"^--device cuda: no CUDA GPU is visible to torch "):
            rank_device("cuda", two)
