"""`datadiet train`: recipe schedules, matched iterations, example order, seeding, resume, dynamics.

Everything runs on the CPU on 60 tiny 8x8 images of 3 classes, one or two epochs at a time.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.data.seeds import epoch_order, id_hashes
from datadiet_cli.errors import ColumnError, OptionError
from datadiet_cli.io.manifest import Manifest, write_manifest
from datadiet_cli.io.rundir import CHECKPOINT_FILE, RunDir
from datadiet_cli.select.prune import Keep, PruneConfig, prune_manifest
from datadiet_cli.train import loop
from datadiet_cli.train.batches import crop_flip, draw_crop_flip, pack_pixels, split_batches, unpack_pixels
from datadiet_cli.train.dynamics import dynamics_matrix
from datadiet_cli.train.loop import TrainProgress, train_run
from datadiet_cli.train.models import build_model
from datadiet_cli.train.recipes import (
    RECIPES,
    Augment,
    Precision,
    TrainConfig,
    learning_rate,
    parse_dynamics_epochs,
    parse_milestones,
    recipe_with,
    total_steps,
)

runner = CliRunner()
CLASSES = ("ant", "bee", "cow")


@pytest.fixture(scope="module")
def tiny_root(learnable_tree: Path) -> Path:
    """train/ (20 per class) and test/ (6 per class) 8x8 images whose brightness is the class (conftest)."""
    return learnable_tree


@pytest.fixture
def tiny(tiny_root: Path, tmp_path: Path) -> Manifest:
    """60 training images (3 classes x 20), written to tmp_path/train.parquet."""
    manifest = ingest_source(IngestConfig(source=str(tiny_root), split=Split.train))
    write_manifest(manifest, tmp_path / "train.parquet")
    from datadiet_cli.io.manifest import read_manifest

    return read_manifest(tmp_path / "train.parquet")


def tiny_config(**changes: object) -> TrainConfig:
    """fast recipe, 2 epochs of batches of 16, fp32 (the same numbers on every CPU)."""
    recipe = recipe_with("fast", epochs=2, batch_size=16)
    run_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    recipe_changes = {k: v for k, v in changes.items() if k not in run_fields}
    run_changes = {k: v for k, v in changes.items() if k in run_fields}
    return TrainConfig(
        recipe=dataclasses.replace(recipe, **recipe_changes),
        device="cpu",
        precision=Precision.fp32,
        **run_changes,  # type: ignore[arg-type]
    )


def checkpoint_state(run_dir: Path) -> dict:
    return torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)


def assert_same_tensors(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


# -- recipes and the schedule ---------------------------------------------------------------------


def test_cifar_schedule_is_the_papers() -> None:
    cifar = RECIPES["cifar"]
    steps = total_steps(50_000, 50_000, cifar.batch_size, cifar.epochs, 0.0)
    assert steps == 200 * 391
    expected = {0: 0.1, 23_459: 0.1, 23_460: 0.02, 46_919: 0.02, 46_920: 0.004, 62_559: 0.004, 62_560: 0.0008}
    for step, lr in expected.items():
        assert learning_rate(cifar, step, steps) == pytest.approx(lr, rel=1e-12), step
    assert learning_rate(cifar, steps - 1, steps) == pytest.approx(0.0008)
    # Milestones are fractions of the run: at 20 epochs the first decay comes after epoch 6.
    short = recipe_with("cifar", epochs=20)
    short_steps = total_steps(50_000, 50_000, 128, 20, 0.0)
    assert learning_rate(short, 6 * 391 - 1, short_steps) == pytest.approx(0.1)
    assert learning_rate(short, 6 * 391, short_steps) == pytest.approx(0.02)


def test_imagenet_lr_scales_per_256_images_and_decays_tenfold() -> None:
    imagenet = RECIPES["imagenet"]
    steps = total_steps(1_281_167, 1_281_167, 256, 105, 0.0)
    assert steps == 105 * 5005
    expected = {0: 0.1, 150_149: 0.1, 150_150: 0.01, 300_300: 1e-3, 450_449: 1e-3, 450_450: 1e-4, 500_500: 1e-5}
    for step, lr in expected.items():
        assert learning_rate(imagenet, step, steps) == pytest.approx(lr, rel=1e-12), step
    big_batch = recipe_with("imagenet", batch_size=1024)
    assert learning_rate(big_batch, 0, 1000) == pytest.approx(0.4)


def test_warmup_rises_linearly_to_the_peak() -> None:
    fast = recipe_with("fast", warmup=0.1, milestones=())
    assert [learning_rate(fast, step, 100) for step in (0, 4, 9, 10, 99)] == pytest.approx([0.02, 0.1, 0.2, 0.2, 0.2])


def test_matched_iterations_interpolate_between_kept_and_full_step_counts() -> None:
    # 300 of 1,000 examples, batch 128, 10 epochs: 10 * 3 steps at M=0, 10 * 8 at M=1.
    assert total_steps(300, 1000, 128, 10, 0.0) == 30
    assert total_steps(300, 1000, 128, 10, 1.0) == 80
    assert total_steps(300, 1000, 128, 10, 0.5) == 55
    assert total_steps(300, 1000, 128, 10, 0.25) == 43  # 42.5 rounds half up
    with pytest.raises(OptionError, match=r"--matched-iterations 1.5 is outside \[0, 1\]"):
        total_steps(300, 1000, 128, 10, 1.5)


def test_option_parsers_and_recipe_errors() -> None:
    assert parse_milestones("0.8,0.3") == (0.3, 0.8)
    assert parse_milestones("none") == ()
    assert parse_milestones(None) is None
    assert parse_dynamics_epochs("5,1,5") == (1, 5)
    assert parse_dynamics_epochs("last") is None
    assert parse_dynamics_epochs("none") == ()
    with pytest.raises(OptionError, match="unknown recipe; use one of cifar, imagenet, fast"):
        recipe_with("resnet")
    with pytest.raises(OptionError, match=r"--milestones 60\.0 is outside"):
        recipe_with("cifar", milestones=(60.0,))


# -- example order and augmentation -----------------------------------------------------------------


def test_epoch_order_of_a_subset_is_the_full_order_filtered() -> None:
    ids = np.array([f"img{i:04d}" for i in range(500)], dtype=object)
    kept = np.sort(np.random.default_rng(1).choice(500, size=150, replace=False))
    for epoch in (1, 2):
        full = ids[epoch_order(id_hashes(ids), seed=7, epoch=epoch)]
        subset = ids[kept][epoch_order(id_hashes(ids[kept]), seed=7, epoch=epoch)]
        assert list(subset) == [i for i in full if i in set(ids[kept])]
    assert not np.array_equal(epoch_order(id_hashes(ids), 7, 1), epoch_order(id_hashes(ids), 7, 2))
    assert not np.array_equal(epoch_order(id_hashes(ids), 7, 1), epoch_order(id_hashes(ids), 8, 1))


def test_batches_have_near_equal_sizes() -> None:
    sizes = [len(batch) for batch in split_batches(np.arange(50_000), 391)]
    assert len(sizes) == 391 and set(sizes) == {127, 128} and sum(sizes) == 50_000


@pytest.mark.parametrize("channels", [1, 3])
def test_crop_flip_matches_pad_then_crop_then_flip(channels: int) -> None:
    images = torch.randint(0, 256, (64, 6, 5, channels), dtype=torch.uint8)  # (B, H, W, C)
    drawn = draw_crop_flip(64, 2, torch.Generator().manual_seed(3))
    out = unpack_pixels(crop_flip(pack_pixels(images, 2), 2, drawn), channels)
    replay = torch.Generator().manual_seed(3)
    top = torch.randint(0, 5, (64,), generator=replay)
    left = torch.randint(0, 5, (64,), generator=replay)
    flip = torch.rand(64, generator=replay) < 0.5
    padded = F.pad(images.permute(0, 3, 1, 2), (2, 2, 2, 2))  # (B, C, H+4, W+4), zeros outside
    assert out.shape == (64, channels, 6, 5)
    for i in range(64):
        crop = padded[i, :, top[i] : top[i] + 6, left[i] : left[i] + 5]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    assert flip.any() and not flip.all()
    assert torch.equal(unpack_pixels(pack_pixels(images, 0), channels), images.permute(0, 3, 1, 2))


def test_small_cnn_fits_digits_and_cifar_shapes() -> None:
    for channels, size in ((1, 8), (3, 32)):
        model = build_model("smallcnn", 10, channels, size)
        assert model(torch.zeros(2, channels, size, size)).shape == (2, 10)
    resnet = build_model("resnet18", 10, 1, 8)
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.in_channels == 1
    with pytest.raises(OptionError, match="--arch vgg: unknown architecture"):
        build_model("vgg", 10, 3, 32)
    with pytest.raises(OptionError, match="--arch torchvision:nope: not a torchvision classification model"):
        build_model("torchvision:nope", 10, 3, 32)


# -- runs -------------------------------------------------------------------------------------------


def test_same_seed_same_weights_different_seed_different_weights(tiny: Manifest, tmp_path: Path) -> None:
    config = tiny_config(epochs=1)
    train_run(tiny, config, tmp_path / "a")
    train_run(tiny, config, tmp_path / "b")
    train_run(tiny, dataclasses.replace(config, seed=1), tmp_path / "c")
    a, b, c = (checkpoint_state(tmp_path / name)["model"] for name in "abc")
    assert_same_tensors(a, b)
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_run_dir_holds_config_metrics_and_checkpoint(tiny: Manifest, tmp_path: Path) -> None:
    result = train_run(tiny, tiny_config(), tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["classes"] == list(CLASSES)
    assert config["manifest"]["path"] == str((tmp_path / "train.parquet").resolve())
    assert len(config["manifest"]["sha256"]) == 64 and config["manifest"]["rows"] == 60
    assert config["model"] == {
        "arch": "smallcnn",
        "num_classes": 3,
        "in_channels": 3,
        "image_size": 8,
        "in_memory": True,
    }
    assert len(config["normalisation"]["mean"]) == 3
    assert config["plan"]["total_steps"] == 8 and config["plan"]["steps_per_epoch"] == 4
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2] and [line["step"] for line in lines] == [4, 8]
    assert set(lines[0]) == {"epoch", "step", "lr", "train_loss", "train_acc", "seconds", "images_per_s"}
    assert result.steps == 8 and result.epochs == 2 and 0 <= result.train_accuracy <= 1


def test_matched_iterations_stretch_a_pruned_run(tiny: Manifest, tmp_path: Path) -> None:
    half = prune_manifest(tiny, PruneConfig(keep=Keep.random, fraction=0.5))  # 30 of 60 rows
    # batch 16, 2 epochs: 2 * 2 steps on 30 rows at M=0, 2 * 4 on the full 60 at M=1.
    result = train_run(half, tiny_config(), tmp_path / "m0")
    assert result.steps == 4
    result = train_run(half, tiny_config(matched_iterations=1.0), tmp_path / "m1")
    assert (result.steps, result.epochs) == (8, 4)
    result = train_run(half, tiny_config(matched_iterations=0.5), tmp_path / "m5")
    assert (result.steps, result.epochs) == (6, 3)  # the third epoch is half an epoch
    lines = [json.loads(line) for line in (tmp_path / "m5" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4, 6]


class Interrupt(Exception):
    pass


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tiny: Manifest, tmp_path: Path) -> None:
    config = tiny_config(record_dynamics=True, dynamics_epochs=(1, 2))
    train_run(tiny, config, tmp_path / "whole")

    def interrupt_in_epoch_two(state: TrainProgress) -> None:
        if state.epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_run(tiny, config, tmp_path / "broken", progress=interrupt_in_epoch_two)
    assert checkpoint_state(tmp_path / "broken")["epoch"] == 1
    result = train_run(tiny, config, tmp_path / "broken", resume=True)

    assert result.resumed_after == 1
    whole, resumed = checkpoint_state(tmp_path / "whole"), checkpoint_state(tmp_path / "broken")
    assert_same_tensors(whole["model"], resumed["model"])
    assert_same_tensors(whole["optimizer"]["state"][0], resumed["optimizer"]["state"][0])
    assert whole["step"] == resumed["step"] == 8
    lines = (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    for column in ("loss", "p_label", "epoch"):
        assert np.array_equal(
            RunDir(tmp_path / "whole").read_dynamics()[column], RunDir(tmp_path / "broken").read_dynamics()[column]
        )


def test_ctrl_c_mid_epoch_leaves_the_last_epoch_and_resume_is_bit_identical(
    tiny: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (KeyboardInterrupt from the progress callback) at step 2 of 4 in epoch 2."""
    monkeypatch.setattr(loop, "PROGRESS_INTERVAL_S", 0.0)  # a progress report after every step
    config = tiny_config(record_dynamics=True, dynamics_epochs=(1, 2))
    train_run(tiny, config, tmp_path / "whole")

    def ctrl_c_in_epoch_two(state: TrainProgress) -> None:
        if (state.epoch, state.step) == (2, 2):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(tiny, config, tmp_path / "run", progress=ctrl_c_in_epoch_two)

    files = sorted(str(path.relative_to(tmp_path / "run")) for path in (tmp_path / "run").rglob("*"))
    assert files == [
        ".dynamics-parts",
        ".dynamics-parts/epoch-00001-eval.parquet",
        ".dynamics-parts/epoch-00001-train.parquet",
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
    ]  # epoch 1 whole, nothing of epoch 2, no temporaries
    assert [line["epoch"] for line in RunDir(tmp_path / "run").read_metrics()] == [1]
    assert checkpoint_state(tmp_path / "run")["epoch"] == 1

    result = train_run(tiny, config, tmp_path / "run", resume=True)

    assert result.resumed_after == 1
    whole, resumed = checkpoint_state(tmp_path / "whole"), checkpoint_state(tmp_path / "run")
    assert_same_tensors(whole["model"], resumed["model"])
    for index, buffers in whole["optimizer"]["state"].items():
        assert_same_tensors(buffers, resumed["optimizer"]["state"][index])
    assert torch.equal(whole["rng_cpu"], resumed["rng_cpu"]) and whole["step"] == resumed["step"] == 8
    timing = ("seconds", "images_per_s")
    metrics = [
        [{k: v for k, v in line.items() if k not in timing} for line in RunDir(tmp_path / name).read_metrics()]
        for name in ("whole", "run")
    ]
    assert metrics[0] == metrics[1]
    for column in ("id", "epoch", "source", "loss", "p_label"):
        whole_dynamics = RunDir(tmp_path / "whole").read_dynamics()[column]
        assert np.array_equal(whole_dynamics, RunDir(tmp_path / "run").read_dynamics()[column]), column


def test_stop_after_is_the_start_of_the_full_schedule_not_a_shorter_one(tiny: Manifest, tmp_path: Path) -> None:
    whole = tiny_config(epochs=3)
    full_result = train_run(tiny, whole, tmp_path / "whole")
    result = train_run(tiny, dataclasses.replace(whole, stop_after=2), tmp_path / "stopped")
    assert result.epochs == 2 and result.steps == full_result.steps * 2 // 3  # 4 steps per epoch here
    full = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    stopped = [json.loads(line) for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    strip = [{k: v for k, v in line.items() if k not in ("seconds", "images_per_s")} for line in full[:2]]
    assert [{k: v for k, v in line.items() if k not in ("seconds", "images_per_s")} for line in stopped] == strip
    compressed = train_run(tiny, tiny_config(epochs=2), tmp_path / "compressed")
    assert compressed.epochs == 2  # the same length, but its schedule anneals within those 2 epochs:
    assert (
        json.loads((tmp_path / "compressed" / "metrics.jsonl").read_text().splitlines()[-1])["lr"] != stopped[-1]["lr"]
    )
    plan = json.loads((tmp_path / "stopped" / "config.json").read_text())["plan"]
    assert plan["epochs"] == 3 and plan["stop_after_epoch"] == 2
    with pytest.raises(OptionError, match=r"--stop-after 4: must be between 1 and the run's 3 epochs"):
        train_run(tiny, dataclasses.replace(whole, stop_after=4), tmp_path / "late")


def test_resume_refuses_other_settings_and_fresh_runs_refuse_a_used_dir(tiny: Manifest, tmp_path: Path) -> None:
    train_run(tiny, tiny_config(epochs=1), tmp_path / "run")
    with pytest.raises(OptionError, match=r"already holds a training run; pass --resume to continue it"):
        train_run(tiny, tiny_config(epochs=1), tmp_path / "run")
    with pytest.raises(OptionError, match=r"was trained with epochs = 1, not 3; resume with the same input"):
        train_run(tiny, tiny_config(epochs=3), tmp_path / "run", resume=True)
    finished = train_run(tiny, tiny_config(epochs=1), tmp_path / "run", resume=True)
    assert finished.resumed_after == 1 and finished.seconds == 0.0  # nothing left to do
    with pytest.raises(OptionError, match=r"holds no training run \(no config.json\); drop --resume"):
        train_run(tiny, tiny_config(), tmp_path / "empty", resume=True)


def test_unlabeled_rows_and_missing_devices_are_one_line_errors(tiny: Manifest, tmp_path: Path) -> None:
    labels = tiny.labels().astype(object)
    labels[5] = None
    unlabeled = tiny.with_column("label", list(labels))
    with pytest.raises(ColumnError, match="column 'label' has 1 null values"):
        train_run(unlabeled, tiny_config(), tmp_path / "run")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="--device cuda: no CUDA GPU is visible"):
            train_run(tiny, dataclasses.replace(tiny_config(), device="cuda"), tmp_path / "run")


# -- dynamics ---------------------------------------------------------------------------------------


def test_dynamics_have_one_row_per_example_epoch_and_source(tiny: Manifest, tmp_path: Path) -> None:
    train_run(tiny, tiny_config(record_dynamics=True, dynamics_epochs=(2,)), tmp_path / "run")
    dynamics = RunDir(tmp_path / "run").read_dynamics()
    ids = tiny.ids()
    train_rows = dynamics["source"] == "train"
    assert train_rows.sum() == 2 * 60 and (~train_rows).sum() == 60
    for epoch in (1, 2):
        assert sorted(dynamics["id"][train_rows & (dynamics["epoch"] == epoch)]) == sorted(ids)
    assert set(dynamics["epoch"][~train_rows]) == {2}
    np.testing.assert_allclose(dynamics["loss"], -np.log(dynamics["p_label"]), rtol=1e-4, atol=1e-6)
    assert np.array_equal(dynamics["correct"], dynamics["margin"] > 0)
    assert ((dynamics["el2n"] >= 0) & (dynamics["el2n"] <= np.sqrt(2) + 1e-6)).all()
    epochs, correct = dynamics_matrix(dynamics, ids, "correct", "train")
    assert list(epochs) == [1, 2] and correct.shape == (2, 60) and not np.isnan(correct).any()


def test_eval_dynamics_match_a_forward_pass_of_the_final_model(tiny: Manifest, tmp_path: Path) -> None:
    from datadiet_cli.train.evaluate import predict

    train_run(tiny, tiny_config(record_dynamics=True), tmp_path / "run")
    dynamics = RunDir(tmp_path / "run").read_dynamics()
    evaluated = dynamics["source"] == "eval"
    predictions = predict(tmp_path / "run", tiny, device="cpu")
    row_of = {example_id: row for row, example_id in enumerate(predictions.ids)}
    rows = np.array([row_of[i] for i in dynamics["id"][evaluated]])
    probs, labels = predictions.probs[rows], predictions.labels[rows]
    p_label = probs[np.arange(len(rows)), labels]
    np.testing.assert_allclose(dynamics["p_label"][evaluated], p_label, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dynamics["loss"][evaluated], predictions.loss[rows], rtol=1e-5, atol=1e-6)
    el2n = np.linalg.norm(probs - np.eye(3)[labels], axis=1)
    np.testing.assert_allclose(dynamics["el2n"][evaluated], el2n, rtol=1e-5, atol=1e-6)
    assert np.array_equal(dynamics["correct"][evaluated], probs.argmax(axis=1) == labels)


def test_train_dynamics_are_measured_before_the_update_on_the_training_batch(tiny: Manifest, tmp_path: Path) -> None:
    """The first batch of epoch 1 saw the initial model: replay it by hand and compare."""
    config = tiny_config(record_dynamics=True, dynamics_epochs=(), augment=Augment.none, epochs=1)
    train_run(tiny, config, tmp_path / "run")
    settings = json.loads((tmp_path / "run" / "config.json").read_text())
    torch.manual_seed(config.seed)
    model = build_model("smallcnn", 3, 3, 8).train()
    from datadiet_cli.data.images import load_images

    first_batch = split_batches(epoch_order(id_hashes(tiny.ids()), config.seed, 1), 4)[0]
    pixels = torch.from_numpy(np.array(load_images(tiny)[first_batch])).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(settings["normalisation"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(settings["normalisation"]["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model(((pixels - mean) / std).contiguous(memory_format=torch.channels_last))
    labels = torch.from_numpy(tiny.labels()[first_batch])
    expected_loss = F.cross_entropy(logits, labels, reduction="none").numpy()

    dynamics = RunDir(tmp_path / "run").read_dynamics()
    loss_of = dict(zip(dynamics["id"], dynamics["loss"], strict=True))
    recorded = np.array([loss_of[i] for i in tiny.ids()[first_batch]])
    np.testing.assert_allclose(recorded, expected_loss, rtol=1e-4, atol=1e-5)


# -- the command -------------------------------------------------------------------------------------


def test_train_command_writes_a_run_and_reports_it(tiny: Manifest, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            *("train", str(tmp_path / "train.parquet"), "-o", str(tmp_path / "run"), "--recipe", "fast"),
            *("--epochs", "1", "--batch-size", "32", "--device", "cpu", "--milestones", "none", "--record-dynamics"),
        ],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 0, result.output
    assert "trained smallcnn for 1 epochs (2 steps" in result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["recipe"]["milestones"] == [] and config["config"]["recipe"]["batch_size"] == 32
    assert (tmp_path / "run" / "dynamics.parquet").is_file()


def test_train_command_errors_are_one_line(tiny: Manifest, tmp_path: Path) -> None:
    args = ["train", str(tmp_path / "train.parquet"), "-o", str(tmp_path / "run"), "--recipe", "fast", "--quiet"]
    result = runner.invoke(
        app, [*args, "--record-dynamics", "--dynamics-epochs", "9", "--epochs", "1"], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2
    assert result.output.strip() == "error: --dynamics-epochs 9: the run has only 1 epochs"
    result = runner.invoke(app, [*args, "--recipe", "tiny"], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: Invalid value for '--recipe': Value error, 'tiny' is not one of 'cifar', 'imagenet', 'fast'. "
        "(see 'datadiet train --help')"
    )


# -- large images: streamed through a DataLoader --------------------------------------------------------


def test_images_of_varying_size_stream_through_workers(tmp_path: Path) -> None:
    from datadiet_cli.train.evaluate import evaluate_run

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for index in range(4):
                height, width = rng.integers(40, 90, size=2)  # image_shape is null: sizes vary
                pixels = rng.integers(0, 80, size=(height, width, 3)) + 80 * label
                Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "data" / split / name / f"{index}.png")
    train = ingest_source(IngestConfig(source=str(tmp_path / "data"), split=Split.train))
    assert train.meta["dataset"]["image_shape"] is None
    recipe = recipe_with("imagenet", arch="smallcnn", epochs=1, batch_size=4, image_size=32, eval_resize=36)
    config = TrainConfig(recipe=recipe, device="cpu", precision=Precision.fp32, workers=1, record_dynamics=True)

    result = train_run(train, config, tmp_path / "run")

    settings = json.loads((tmp_path / "run" / "config.json").read_text())
    assert settings["model"]["in_memory"] is False and settings["model"]["image_size"] == 32
    assert result.steps == 3 and len(RunDir(tmp_path / "run").read_dynamics()["id"]) == 12 + 12  # train + eval pass
    test = ingest_source(IngestConfig(source=str(tmp_path / "data"), split=Split.test))
    report = evaluate_run(tmp_path / "run", test, device="cpu", workers=0)
    assert report["n"] == 12 and 0 <= report["top1"] <= 1
