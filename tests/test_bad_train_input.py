"""Bad input to `train` and `evaluate` (issue 13): one line naming the value or file and the fix,
exit 1 (2 for options), no traceback, no half-made run folder, inputs unchanged.

Hyperparameters that are NaN, infinite or out of range; damaged, foreign or malicious checkpoints
and config.json files; test labels outside the model's classes; training stopped by Ctrl-C or by
divergence. Everything runs on the CPU on conftest's 8x8 learnable tree, two epochs at most.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.errors import ColumnError, DatasetError, OptionError
from datadiet_cli.io.manifest import read_manifest, write_manifest
from datadiet_cli.io.rundir import CHECKPOINT_FILE, CONFIG_FILE, RunDir
from datadiet_cli.train import loop
from datadiet_cli.train.evaluate import evaluate_run
from datadiet_cli.train.loop import TrainProgress, train_run
from datadiet_cli.train.models import build_model
from datadiet_cli.train.recipes import Precision, TrainConfig, recipe_with

runner = CliRunner()
CHECKPOINT_FIX = "delete it, then `datadiet train ... --resume` trains the run again from epoch 0"
DAMAGED_RUN_FIX = "the run folder is damaged or was edited: restore the file or train the run again into a new -o"
# The library config the CLI arguments below make: resuming with the CLI continues a run made here.
TRAIN_ARGS = ("--recipe", "fast", "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--precision", "fp32")


def tiny_config(**changes: Any) -> TrainConfig:
    recipe = dataclasses.replace(recipe_with("fast", epochs=2, batch_size=16), **changes)
    return TrainConfig(recipe=recipe, device="cpu", precision=Precision.fp32)


class Runs:
    """Module-wide inputs: the train and test manifests and two finished-or-paused runs (never modified)."""

    def __init__(self, folder: Path, tree: Path) -> None:
        self.train_path = write_manifest(
            ingest_source(IngestConfig(source=str(tree), split=Split.train)), folder / "train.parquet"
        )
        self.test_path = write_manifest(
            ingest_source(IngestConfig(source=str(tree), split=Split.test)), folder / "test.parquet"
        )
        self.train = read_manifest(self.train_path)
        self.test = read_manifest(self.test_path)
        self.whole = folder / "whole"  # 2 of 2 epochs
        train_run(self.train, tiny_config(), self.whole)
        self.paused = folder / "paused"  # epoch 1 of 2: stopped by Ctrl-C in epoch 2
        with pytest.raises(KeyboardInterrupt):
            train_run(self.train, tiny_config(), self.paused, progress=interrupt_at(epoch=2))

    def copy(self, name: str, target: Path) -> Path:
        return Path(shutil.copytree(getattr(self, name), target))


@pytest.fixture(scope="module")
def runs(learnable_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("bad-train-input"), learnable_tree)


def interrupt_at(epoch: int, step: int | None = None) -> Callable[[TrainProgress], None]:
    """A progress callback that presses Ctrl-C at `step` of `epoch` (its first report there when None)."""

    def progress(state: TrainProgress) -> None:
        if state.epoch == epoch and (step is None or state.step == step):
            raise KeyboardInterrupt

    return progress


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "1000"})


def one_error_line(result: Any) -> str:
    """The CLI's whole output, which must be a single `error: ...` line (no traceback)."""
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return lines[0].removeprefix("error: ")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (temporaries included) and its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# -- 1. hyperparameters: NaN, infinite, out of range --------------------------------------------------------

BAD_OPTIONS = [
    (["--momentum", "nan"], "--momentum nan: must be a finite number in [0, 1) (the paper: 0.9)"),
    (["--momentum", "1"], "--momentum 1.0: must be a finite number in [0, 1) (the paper: 0.9)"),
    (
        ["--momentum", "0"],
        "--momentum 0.0: Nesterov momentum needs a momentum in (0, 1); pass --no-nesterov to train without it",
    ),
    (
        ["--weight-decay", "inf"],
        "--weight-decay inf: must be a finite number >= 0 (the paper: 5e-4 on CIFAR-10, 1e-3 on ImageNet)",
    ),
    (
        ["--weight-decay", "-0.1"],
        "--weight-decay -0.1: must be a finite number >= 0 (the paper: 5e-4 on CIFAR-10, 1e-3 on ImageNet)",
    ),
    (
        ["--gamma", "-1"],
        "--gamma -1.0: must be a finite number in (0, 1] (the factor lr is multiplied by at each milestone)",
    ),
    (
        ["--gamma", "nan"],
        "--gamma nan: must be a finite number in (0, 1] (the factor lr is multiplied by at each milestone)",
    ),
    (["--lr", "0"], "--lr 0.0: must be a finite number > 0 (the paper: 0.1)"),
    (["--lr", "-0.1"], "--lr -0.1: must be a finite number > 0 (the paper: 0.1)"),
    (["--lr", "nan"], "--lr nan: must be a finite number > 0 (the paper: 0.1)"),
    (["--lr", "inf"], "--lr inf: must be a finite number > 0 (the paper: 0.1)"),
    (["--warmup", "1.5"], "--warmup 1.5: must be a finite number in [0, 1) (a fraction of the run)"),
    (["--warmup", "nan"], "--warmup nan: must be a finite number in [0, 1) (a fraction of the run)"),
    (["--label-smoothing", "1"], "--label-smoothing 1.0: must be a finite number in [0, 1) (0 is none)"),
    (["--label-smoothing", "nan"], "--label-smoothing nan: must be a finite number in [0, 1) (0 is none)"),
    (["--epochs", "0"], "--epochs 0: must be a whole number of at least 1"),
    (["--batch-size", "0"], "--batch-size 0: must be a whole number of at least 1"),
    (
        ["--matched-iterations", "nan"],
        "--matched-iterations nan: must be a finite number in [0, 1] "
        "(0: the recipe's epochs over the kept data, 1: the full data's steps)",
    ),
    (
        ["--matched-iterations", "-0.5"],
        "--matched-iterations -0.5: must be a finite number in [0, 1] "
        "(0: the recipe's epochs over the kept data, 1: the full data's steps)",
    ),
    (
        ["--matched-iterations", "1.5"],
        "--matched-iterations 1.5: must be a finite number in [0, 1] "
        "(0: the recipe's epochs over the kept data, 1: the full data's steps)",
    ),
    (
        ["--milestones", "nan"],
        "--milestones nan is outside (0, 1); milestones are fractions of the run, "
        "e.g. 0.3,0.6,0.8 for epochs 60,120,160 of 200",
    ),
    (["--stop-after", "0"], "--stop-after 0: must be a whole number of at least 1"),
    (["--stop-after", "3"], "--stop-after 3: must be between 1 and the run's 2 epochs"),
    (["--workers", "-1"], "--workers -1: must be a whole number of at least 0"),
    (["--arch", "vgg"], "--arch vgg: unknown architecture; use one of smallcnn, resnet18, resnet50, torchvision:NAME"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=[" ".join(options) for options, _ in BAD_OPTIONS])
def test_bad_hyperparameters_are_refused_before_training(
    runs: Runs, tmp_path: Path, options: list[str], message: str
) -> None:
    result = invoke("train", str(runs.train_path), "-o", str(tmp_path / "run"), *TRAIN_ARGS, "--quiet", *options)
    assert one_error_line(result) == message
    assert result.exit_code == 2
    assert not (tmp_path / "run").exists()  # refused before any run folder is made


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"momentum": math.nan}, "--momentum nan: must be a finite number in [0, 1) (the paper: 0.9)"),
        ({"lr": -1.0}, "--lr -1.0: must be a finite number > 0 (the paper: 0.1)"),
        ({"crop_padding": -1}, "--crop-padding -1: must be a whole number of at least 0"),
        ({"image_size": 0}, "--image-size 0: must be a whole number of at least 1"),
        (
            {"image_size": 224, "eval_resize": 200},
            "--eval-resize 200: must be a whole number >= --image-size 224 "
            "(evaluation crops the image size out of the resized image)",
        ),
    ],
)
def test_library_callers_get_the_same_refusals(
    runs: Runs, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    """Configs made without recipe_with (probes, scripts) are checked by train_run itself."""
    with pytest.raises(OptionError) as error:
        train_run(runs.train, tiny_config(**changes), tmp_path / "run")
    assert str(error.value) == message
    assert not (tmp_path / "run").exists()
    with pytest.raises(OptionError, match=r"^--workers -2: must be a whole number of at least 0$"):
        train_run(runs.train, dataclasses.replace(tiny_config(), workers=-2), tmp_path / "run")


def test_evaluate_batch_size_zero_is_refused(runs: Runs) -> None:
    before = snapshot(runs.whole)
    result = invoke("evaluate", str(runs.whole), str(runs.test_path), "--batch-size", "0", "--device", "cpu", "-q")
    assert one_error_line(result) == "--batch-size 0: must be a whole number of at least 1"
    assert result.exit_code == 2
    assert snapshot(runs.whole) == before  # no eval.json


def test_a_diverging_run_is_an_error_not_a_finished_run_of_nan_weights(runs: Runs, tmp_path: Path) -> None:
    with pytest.raises(OptionError) as error:
        train_run(runs.train, tiny_config(lr=1e30), tmp_path / "first")
    assert str(error.value) == (
        "--lr 1e+30: training diverged in epoch 1 (mean loss nan, weights not finite); "
        "train again with a lower --lr or a longer --warmup"
    )
    assert not (tmp_path / "first").exists()  # nothing finished: nothing left

    with pytest.raises(OptionError) as error:
        train_run(runs.train, tiny_config(lr=1e3), tmp_path / "second")
    # The loss of the diverging epoch is whatever the CPU's float arithmetic made of it.
    assert re.fullmatch(
        r"--lr 1000\.0: training diverged in epoch 2 \(mean loss \S+, weights not finite\); train again with a lower "
        rf"--lr or a longer --warmup \({re.escape(str(tmp_path / 'second'))} keeps epochs 1\.\.1: use another -o\)",
        str(error.value),
    ), error.value
    state = torch.load(tmp_path / "second" / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(tensor).all() for tensor in state["model"].values())
    assert len(RunDir(tmp_path / "second").read_metrics()) == 1


# -- 2. evaluate: labels, foreign checkpoints, damaged config.json ---------------------------------------------


@pytest.mark.parametrize("bad_label", [3, -1])
def test_test_labels_outside_the_models_classes_are_named(runs: Runs, tmp_path: Path, bad_label: int) -> None:
    labels = runs.test.labels().tolist()
    labels[4] = bad_label
    test = runs.test.with_column("label", labels)
    with pytest.raises(ColumnError) as error:
        evaluate_run(runs.whole, test, output=tmp_path / "eval.json", device="cpu")
    assert str(error.value) == (
        f"{runs.test.name}: label {bad_label} of id '{runs.test.ids()[4]}' is outside the model's classes 0..2 "
        f"({runs.whole}); fix the label column or evaluate on a manifest ingested from the same dataset"
    )
    assert not (tmp_path / "eval.json").exists()


def checkpoint_of(model: dict[str, torch.Tensor], **entries: Any) -> dict[str, Any]:
    return {"format": 1, "epoch": 2, "step": 8, "model": model, **entries}


def test_a_checkpoint_of_another_architecture_is_named(runs: Runs, tmp_path: Path) -> None:
    run = runs.copy("whole", tmp_path / "run")
    foreign = build_model("resnet18", 3, 3, 8).state_dict()  # a resnet18 run's weights, copied in
    torch.save(checkpoint_of(foreign), run / CHECKPOINT_FILE)
    before = snapshot(run)

    result = invoke("evaluate", str(run), str(runs.test_path), "--device", "cpu", "-q")

    assert one_error_line(result) == (
        f"{run / CHECKPOINT_FILE}: does not fit this run's smallcnn model (14 weights missing, e.g. 0.weight; "
        "122 unknown weights, e.g. conv1.weight): it belongs to another run (another --arch, classes or image "
        f"size); {CHECKPOINT_FIX}"
    )
    assert result.exit_code == 1
    assert snapshot(run) == before


def test_a_checkpoint_of_other_shapes_is_named(runs: Runs, tmp_path: Path) -> None:
    run = runs.copy("whole", tmp_path / "run")
    weights = build_model("smallcnn", 4, 3, 8).state_dict()  # a 4-class model's
    torch.save(checkpoint_of(weights), run / CHECKPOINT_FILE)
    result = invoke("evaluate", str(run), str(runs.test_path), "--device", "cpu", "-q")
    assert one_error_line(result) == (
        f"{run / CHECKPOINT_FILE}: does not fit this run's smallcnn model (9.weight is (4, 64), not (3, 64)): it "
        f"belongs to another run (another --arch, classes or image size); {CHECKPOINT_FIX}"
    )
    assert result.exit_code == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ({"weights": {}, "epoch": 1}, "not a datadiet checkpoint (no 'model' entry)"),
        ({"model": {}}, "not a datadiet checkpoint (no 'epoch' entry)"),
        (
            {"model": [1, 2], "epoch": 1},
            "not a datadiet checkpoint ('model' must be a state dict and 'epoch' at least 1)",
        ),
        ([1, 2, 3], "holds a list, not a datadiet checkpoint"),
    ],
)
def test_a_checkpoint_without_the_expected_keys_is_named(
    runs: Runs, tmp_path: Path, content: Any, problem: str
) -> None:
    run = runs.copy("whole", tmp_path / "run")
    torch.save(content, run / CHECKPOINT_FILE)
    result = invoke("evaluate", str(run), str(runs.test_path), "--device", "cpu", "-q")
    assert one_error_line(result) == f"{run / CHECKPOINT_FILE}: {problem}; {CHECKPOINT_FIX}"
    assert result.exit_code == 1
    assert not (run / "eval.json").exists()


def edit_config(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        document = json.loads(path.read_text())
        edit(document)  # in place
        path.write_text(json.dumps(document))

    return write


BAD_CONFIGS = [
    (lambda path: path.write_text('{"model": '), "is not valid JSON (Expecting value: line 1 column 11 (char 10))"),
    (lambda path: path.write_text("[1, 2]"), "is not a JSON object"),
    (
        edit_config(lambda config: config.pop("model")),
        "has no 'model' object (arch, num_classes, in_channels, image_size, in_memory)",
    ),
    (edit_config(lambda config: config.pop("classes")), "'classes' is not a list of at least 2 class names"),
    (
        edit_config(lambda config: config.update(classes="ant,bee,cow")),
        "'classes' is not a list of at least 2 class names",
    ),
    (
        edit_config(lambda config: config["model"].update(num_classes="3")),
        "'model.num_classes' is \"3\", not a whole number",
    ),
    (
        edit_config(lambda config: config["model"].update(num_classes=5)),
        "'model.num_classes' is 5 but 'classes' names 3",
    ),
    (edit_config(lambda config: config["model"].pop("arch")), "'model.arch' is null, not a name"),
    (edit_config(lambda config: config.pop("normalisation")), "'normalisation.mean' is not 3 finite numbers"),
    (
        edit_config(lambda config: config["normalisation"].update(std=[0.2, 0.0, 0.2])),
        "'normalisation.std' is not 3 finite numbers > 0",
    ),
    (edit_config(lambda config: config.pop("config")), "has no 'config.recipe' object"),
    (
        edit_config(lambda config: config["config"]["recipe"].pop("lr")),
        "'config.recipe' or 'config.precision' is not what datadiet train writes "
        "(TypeError: Recipe.__init__() missing 1 required positional argument: 'lr')",
    ),
    (
        edit_config(lambda config: config["config"]["recipe"].update(momentum="fast")),
        "'config.recipe' or 'config.precision' is not what datadiet train writes "
        "(OptionError: --momentum fast: must be a finite number in [0, 1) (the paper: 0.9))",
    ),
    (
        edit_config(lambda config: config["model"].update(arch="vgg")),
        "'model.arch': --arch vgg: unknown architecture; use one of smallcnn, resnet18, resnet50, torchvision:NAME",
    ),
]


@pytest.mark.parametrize(("damage", "problem"), BAD_CONFIGS, ids=[problem[:40] for _, problem in BAD_CONFIGS])
def test_a_damaged_config_json_is_one_line_naming_it(
    runs: Runs, tmp_path: Path, damage: Callable[[Path], None], problem: str
) -> None:
    run = runs.copy("whole", tmp_path / "run")
    damage(run / CONFIG_FILE)
    before = snapshot(run)
    result = invoke("evaluate", str(run), str(runs.test_path), "--device", "cpu", "-q")
    assert one_error_line(result) == f"{run / CONFIG_FILE}: {problem}; {DAMAGED_RUN_FIX}"
    assert result.exit_code == 1
    assert snapshot(run) == before


def test_evaluate_outputs_never_overwrite_an_input(runs: Runs, tmp_path: Path) -> None:
    args = ("evaluate", str(runs.whole), str(runs.test_path), "--device", "cpu", "-q")
    before = runs.test_path.read_bytes()
    result = invoke(*args, "--predictions", str(runs.test_path))
    assert (
        one_error_line(result)
        == f"{runs.test_path}: the output would overwrite the input; choose another --predictions path"
    )
    assert result.exit_code == 2 and runs.test_path.read_bytes() == before
    result = invoke(*args, "-o", str(tmp_path))
    assert one_error_line(result) == f"{tmp_path}: is a directory; -o takes a .json file path"
    result = invoke(*args, "-o", str(tmp_path / "same.json"), "--predictions", str(tmp_path / "same.json"))
    assert (
        one_error_line(result)
        == f"--predictions {tmp_path / 'same.json'}: is also -o; give the two outputs different paths"
    )
    assert list(tmp_path.iterdir()) == []


# -- 3. train --resume with a damaged or malicious checkpoint ------------------------------------------------------


def resume(runs: Runs, run: Path) -> Any:
    return invoke("train", str(runs.train_path), "-o", str(run), *TRAIN_ARGS, "--quiet", "--resume")


def truncated(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (truncated, "unreadable checkpoint, truncated or not written by datadiet train (RuntimeError)"),
        (random_bytes, "unreadable checkpoint, truncated or not written by datadiet train (UnpicklingError)"),
        (
            lambda path: path.write_bytes(b""),
            "unreadable checkpoint, truncated or not written by datadiet train (EOFError)",
        ),
    ],
    ids=["truncated", "random-bytes", "empty"],
)
def test_resume_from_a_damaged_checkpoint_is_refused_and_the_folder_kept(
    runs: Runs, tmp_path: Path, damage: Callable[[Path], None], problem: str
) -> None:
    run = runs.copy("paused", tmp_path / "run")
    original = (run / CHECKPOINT_FILE).read_bytes()
    damage(run / CHECKPOINT_FILE)
    before = snapshot(run)

    result = resume(runs, run)

    assert one_error_line(result) == f"{run / CHECKPOINT_FILE}: {problem}; {CHECKPOINT_FIX}"
    assert result.exit_code == 1
    assert snapshot(run) == before
    (run / CHECKPOINT_FILE).write_bytes(original)  # still resumable once the checkpoint is back
    assert resume(runs, run).exit_code == 0 and RunDir(run).load_checkpoint("cpu")["epoch"] == 2


class RunsCode:
    """Unpickling it calls exec(), which creates `marker`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').close()"

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


def test_a_checkpoint_whose_unpickling_would_run_code_is_refused_unrun(runs: Runs, tmp_path: Path) -> None:
    proof = tmp_path / "proof-the-payload-works"
    torch.save({"model": RunsCode(proof), "epoch": 1}, tmp_path / "payload.pt")
    torch.load(tmp_path / "payload.pt", weights_only=False)  # what an unsafe loader would do
    assert proof.is_file()

    run = runs.copy("paused", tmp_path / "run")
    marker = tmp_path / "marker"
    torch.save(checkpoint_of(RunsCode(marker), optimizer={}), run / CHECKPOINT_FILE)  # type: ignore[arg-type]
    before = snapshot(run)

    for result in (resume(runs, run), invoke("evaluate", str(run), str(runs.test_path), "--device", "cpu", "-q")):
        assert one_error_line(result) == (
            f"{run / CHECKPOINT_FILE}: refused: loading it would call exec, and a datadiet checkpoint holds "
            f"only tensors and numbers (it was not written by datadiet train); {CHECKPOINT_FIX}"
        )
        assert result.exit_code == 1
    assert not marker.exists()
    assert snapshot(run) == before


def paused_state(runs: Runs) -> dict[str, Any]:
    return torch.load(runs.paused / CHECKPOINT_FILE, weights_only=True)


def without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda state: state.pop(key)


def resized_last_layer(state: dict[str, Any]) -> None:
    state["model"]["9.weight"] = torch.zeros(4, 64)


def resized_momentum(state: dict[str, Any]) -> None:
    state["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(1)


def other_momentum(state: dict[str, Any]) -> None:
    state["optimizer"]["param_groups"][0]["momentum"] = 0.5


def short_rng(state: dict[str, Any]) -> None:
    state["rng_cpu"] = torch.zeros(3, dtype=torch.uint8)


def later_epoch(state: dict[str, Any]) -> None:
    state["epoch"] = 7


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (without("optimizer"), "cannot be resumed from (no 'optimizer' entry)"),
        (without("rng_cpu"), "cannot be resumed from (no 'rng_cpu' entry)"),
        (without("format"), "cannot be resumed from (format None, not 1)"),
        (
            resized_last_layer,
            "does not fit this run's smallcnn model (9.weight is (4, 64), not (3, 64)): it belongs to another run "
            "(another --arch, classes or image size)",
        ),
        (resized_momentum, "its momentum buffers do not fit this run's model"),
        (
            other_momentum,
            "its optimizer settings {'momentum': 0.5, 'dampening': 0, 'weight_decay': 0.0005, 'nesterov': True, "
            "'maximize': False} differ from this run's {'momentum': 0.9, 'dampening': 0, 'weight_decay': 0.0005, "
            "'nesterov': True, 'maximize': False}",
        ),
        (short_rng, "its random number generator states are damaged"),
        (later_epoch, "is after epoch 7 but this run has 2"),
    ],
    ids=["no-optimizer", "no-rng", "no-format", "weights-shape", "momentum-shape", "momentum", "rng", "epoch"],
)
def test_resume_from_a_checkpoint_with_wrong_keys_or_shapes_is_refused(
    runs: Runs, tmp_path: Path, change: Callable[[dict[str, Any]], None], problem: str
) -> None:
    run = runs.copy("paused", tmp_path / "run")
    state = paused_state(runs)
    change(state)
    torch.save(state, run / CHECKPOINT_FILE)
    before = snapshot(run)

    result = resume(runs, run)

    assert one_error_line(result) == f"{run / CHECKPOINT_FILE}: {problem}; {CHECKPOINT_FIX}"
    assert result.exit_code == 1
    assert snapshot(run) == before


def test_resume_with_metrics_that_do_not_match_the_checkpoint_is_refused(runs: Runs, tmp_path: Path) -> None:
    run = runs.copy("paused", tmp_path / "run")
    (run / "metrics.jsonl").write_text("")
    result = resume(runs, run)
    assert one_error_line(result) == (
        f"{run / 'metrics.jsonl'}: does not hold epochs 1..1 of {run / CHECKPOINT_FILE} (written last, after them); "
        f"{CHECKPOINT_FIX}"
    )
    (run / "metrics.jsonl").write_text("{not json\n")
    result = resume(runs, run)
    assert one_error_line(result) == f"{run / 'metrics.jsonl'}: line 1 is not a JSON object; {DAMAGED_RUN_FIX}"
    assert result.exit_code == 1


def test_resume_with_a_config_json_of_the_wrong_shape_is_refused(runs: Runs, tmp_path: Path) -> None:
    run = runs.copy("paused", tmp_path / "run")
    (run / CONFIG_FILE).write_text('{"classes": []}')
    result = resume(runs, run)
    assert one_error_line(result) == (
        f"{run / CONFIG_FILE}: has no 'config' and 'manifest.content_sha256' entries to resume by; {DAMAGED_RUN_FIX}"
    )
    assert result.exit_code == 1


# -- 5. interrupted training ------------------------------------------------------------------------------------


def test_a_fresh_run_stopped_before_its_first_checkpoint_leaves_no_folder(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "PROGRESS_INTERVAL_S", 0.0)
    nested = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(KeyboardInterrupt):
        train_run(runs.train, tiny_config(), nested, progress=interrupt_at(epoch=1, step=2))
    assert list(tmp_path.iterdir()) == []  # the folders it made are gone too

    (tmp_path / "mine").mkdir()  # a folder the user made stays, empty
    with pytest.raises(KeyboardInterrupt):
        train_run(runs.train, tiny_config(), tmp_path / "mine", progress=interrupt_at(epoch=1))
    assert list((tmp_path / "mine").iterdir()) == []
    assert train_run(runs.train, tiny_config(), tmp_path / "mine").resumed_after == 0  # a fresh run, no --resume


def test_an_interrupted_resume_of_an_unstarted_run_keeps_its_config(runs: Runs, tmp_path: Path) -> None:
    """A folder whose run never finished an epoch (config.json only) resumes from epoch 0."""
    run = runs.copy("paused", tmp_path / "run")
    (run / CHECKPOINT_FILE).unlink()
    with pytest.raises(KeyboardInterrupt):
        train_run(runs.train, tiny_config(), run, resume=True, progress=interrupt_at(epoch=1))
    assert (run / CONFIG_FILE).is_file()  # not this call's to remove
    assert train_run(runs.train, tiny_config(), run, resume=True).resumed_after == 0
    assert RunDir(run).load_checkpoint("cpu")["epoch"] == 2


# -- 4. images that change after ingest (streamed; the pixel cache's cases are in test_images.py) -----------------


def test_an_image_deleted_while_streaming_is_one_line_from_the_worker(tmp_path: Path) -> None:
    """DataLoader re-raises a worker's error with the worker's traceback in its message: it is one line again."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("ant", "bee", "cow")):
        (tmp_path / "data" / name).mkdir(parents=True)
        for index in range(2):
            height, width = rng.integers(40, 90, size=2)  # sizes vary: streamed, not cached
            pixels = rng.integers(0, 80, size=(height, width, 3)) + 80 * label
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "data" / name / f"{index}.png")
    manifest = ingest_source(IngestConfig(source=str(tmp_path / "data")))
    recipe = recipe_with("imagenet", arch="smallcnn", epochs=2, batch_size=3, image_size=32, eval_resize=36)
    config = TrainConfig(recipe=recipe, device="cpu", precision=Precision.fp32, workers=1)
    gone = tmp_path / "data" / "cow" / "1.png"

    def delete_after_epoch_one(state: TrainProgress) -> None:
        if state.epoch == 1 and state.step == state.steps:
            gone.unlink()

    with pytest.raises(DatasetError) as error:
        train_run(manifest, config, tmp_path / "run", progress=delete_after_epoch_one)

    root = (tmp_path / "data").resolve()
    assert str(error.value) == (
        f"{root}/cow/1.png: no such image (dataset root {root} from <manifest>); "
        "if the dataset has moved, pass --root with its new location"
    )
    assert RunDir(tmp_path / "run").load_checkpoint("cpu")["epoch"] == 1  # epoch 1 stays, resumable


# -- outputs that cannot be written, labels outside the classes ---------------------------------------------------


def test_an_unwritable_run_folder_is_one_line_and_leaves_nothing(runs: Runs, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    args = ("train", str(runs.train_path), *TRAIN_ARGS, "--quiet", "-o")
    result = invoke(*args, str(tmp_path / "afile" / "run"))
    assert (
        one_error_line(result)
        == f"-o {tmp_path / 'afile' / 'run'}: {tmp_path / 'afile'} is a file, not a folder; choose another -o path"
    )
    assert result.exit_code == 2
    too_long = tmp_path / "new" / ("x" * 300)  # in a folder still to be made: refused up front all the same
    result = invoke(*args, str(too_long))
    assert one_error_line(result) == f"-o {too_long}: cannot be used (file name too long); choose another -o path"
    assert result.exit_code == 2
    result = invoke(*args, str(tmp_path / ("x" * 300)))  # its folder exists: refused before any writing
    assert (
        one_error_line(result)
        == f"-o {tmp_path / ('x' * 300)}: cannot be used (file name too long); choose another -o path"
    )
    assert result.exit_code == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile"]  # tmp_path/new is gone again


def test_unwritable_evaluate_outputs_are_one_line_and_leave_neither_file(runs: Runs, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    args = ("evaluate", str(runs.whole), str(runs.test_path), "--device", "cpu", "-q")
    result = invoke(*args, "-o", str(tmp_path / "afile" / "x" / "eval.json"))
    assert one_error_line(result) == (
        f"-o {tmp_path / 'afile' / 'x' / 'eval.json'}: {tmp_path / 'afile'} is a file, not a folder; "
        "choose another -o path"
    )
    assert result.exit_code == 2
    too_long = tmp_path / ("x" * 300 + ".json")
    result = invoke(*args, "-o", str(too_long), "--predictions", str(tmp_path / "predictions.parquet"))
    assert one_error_line(result) == f"-o {too_long}: cannot be used (file name too long); choose another -o path"
    assert result.exit_code == 2
    for too_long in (
        tmp_path / "new" / ("x" * 300 + ".json"),  # in a folder still to be made
        tmp_path / "new" / ("x" * 250 + ".json"),  # a name that fits, but not its temporary's
    ):  # refused up front, before the predictions are computed or written
        result = invoke(*args, "-o", str(too_long), "--predictions", str(tmp_path / "predictions.parquet"))
        assert one_error_line(result) == f"-o {too_long}: cannot be used (file name too long); choose another -o path"
        assert result.exit_code == 2
        assert sorted(path.name for path in tmp_path.iterdir()) == ["afile"]
    assert not (runs.whole / "eval.json").exists()


def test_train_labels_outside_the_classes_are_refused_before_any_folder(runs: Runs, tmp_path: Path) -> None:
    labels = runs.train.labels().tolist()
    labels[7] = 3
    with pytest.raises(ColumnError) as error:
        train_run(runs.train.with_column("label", labels), tiny_config(), tmp_path / "run")
    assert str(error.value) == (
        f"{runs.train.name}: label 3 of id '{runs.train.ids()[7]}' is outside 0..2 (dataset.classes has 3 names); "
        "fix the label column or re-run `datadiet ingest`"
    )
    assert not (tmp_path / "run").exists()
