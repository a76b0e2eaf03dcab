"""`datadiet ingest`: ImageFolder trees (torchvision's order), CIFAR python batches, builtin:digits, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.data.images import load_images
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source, sample_per_class
from datadiet_cli.data.sources.digits import digits_split, digits_to_uint8
from datadiet_cli.data.sources.imagefolder import IMG_EXTENSIONS
from datadiet_cli.errors import DatasetError, OptionError
from datadiet_cli.io.manifest import read_manifest

runner = CliRunner()
SMALL = (6, 5, 3)  # H, W, C of most test images


def ingest_cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["ingest", *args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def column(manifest, name: str) -> list:
    return manifest.table.column(name).to_pylist()


# -- ImageFolder trees ------------------------------------------------------------------------------


def test_extensions_are_torchvisions() -> None:
    from torchvision.datasets.folder import IMG_EXTENSIONS as torchvision_extensions

    assert torchvision_extensions == IMG_EXTENSIONS


def test_imagefolder_rows_classes_and_order_match_torchvision(tmp_path: Path, make_image_tree) -> None:
    from torchvision.datasets import ImageFolder

    root = tmp_path / "pets"
    make_image_tree(
        root,
        {
            "dog/b.png": SMALL,
            "dog/a.png": SMALL,
            "cat/z.png": SMALL,
            "cat/nested/a.png": SMALL,  # class folders may nest; torchvision walks them
            "Zebra/UPPER.PNG": SMALL,  # upper-case class sorts first; extensions are case-insensitive
        },
    )
    (root / "cat" / "notes.txt").write_text("not an image")

    manifest = ingest_source(IngestConfig(source=str(root)))

    reference = ImageFolder(str(root))
    assert manifest.classes == reference.classes == ["Zebra", "cat", "dog"]
    assert column(manifest, "path") == [str(Path(p).relative_to(root).as_posix()) for p, _ in reference.samples]
    assert column(manifest, "label") == [label for _, label in reference.samples]
    assert column(manifest, "id") == [
        "Zebra/UPPER",
        "cat/z",
        "cat/nested/a",
        "dog/a",
        "dog/b",
    ]  # a folder before its subfolders
    assert column(manifest, "split") == [None] * 5
    dataset = manifest.meta["dataset"]
    assert dataset["kind"] == "imagefolder" and dataset["name"] == "pets"
    assert dataset["root"] == str(root.resolve()) and dataset["split"] is None
    assert dataset["image_shape"] == [6, 5, 3] and dataset["source"] == str(root)


def test_train_test_tree_picks_a_split_with_stable_ids(tmp_path: Path, make_image_tree) -> None:
    root = tmp_path / "cifar10"
    make_image_tree(
        root,
        {
            "train/cat/0001.png": SMALL,
            "train/cat/0000.png": SMALL,
            "train/dog/0000.png": SMALL,
            "train/emu/0000.png": SMALL,
            "test/cat/0000.png": SMALL,
            "test/emu/0000.png": SMALL,  # test has no dog: labels must still agree with train
        },
    )

    train = ingest_source(IngestConfig(source=str(root)))
    test = ingest_source(IngestConfig(source=str(root), split=Split.test))

    assert column(train, "id") == ["train/cat/0000", "train/cat/0001", "train/dog/0000", "train/emu/0000"]
    assert column(train, "path") == [f"{i}.png" for i in column(train, "id")]
    assert column(train, "label") == [0, 0, 1, 2]
    assert column(train, "split") == ["train"] * 4
    assert column(test, "id") == ["test/cat/0000", "test/emu/0000"]
    assert column(test, "label") == [0, 2]
    assert train.classes == test.classes == ["cat", "dog", "emu"]
    assert train.meta["dataset"]["root"] == test.meta["dataset"]["root"] == str(root.resolve())
    assert (train.meta["dataset"]["split"], test.meta["dataset"]["split"]) == ("train", "test")


def test_image_shape_grayscale_and_uneven_sizes(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "gray", {"a/0.png": (4, 7, 1), "b/0.png": (4, 7, 1)})
    make_image_tree(tmp_path / "mixed", {"a/0.png": (4, 7, 1), "b/0.png": (4, 7, 3)})
    make_image_tree(tmp_path / "uneven", {"a/0.png": (4, 7, 3), "a/1.png": (5, 7, 3)})

    gray = ingest_source(IngestConfig(source=str(tmp_path / "gray")))
    mixed = ingest_source(IngestConfig(source=str(tmp_path / "mixed")))
    uneven = ingest_source(IngestConfig(source=str(tmp_path / "uneven")))

    assert gray.meta["dataset"]["image_shape"] == [4, 7, 1]
    assert mixed.meta["dataset"]["image_shape"] == [4, 7, 3]  # any colour image makes the dataset RGB
    assert uneven.meta["dataset"]["image_shape"] is None
    assert uneven.lineage().of_command("ingest")[0].stats["image_shape_sampled"] == 2


def test_image_shape_reads_only_a_sample_of_headers(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "many", {f"c/{i:02d}.png": (3, 3, 3) for i in range(40)})
    manifest = ingest_source(IngestConfig(source=str(tmp_path / "many"), shape_sample=5))
    assert manifest.lineage().of_command("ingest")[0].stats["image_shape_sampled"] == 5
    assert manifest.meta["dataset"]["image_shape"] == [3, 3, 3]


def test_lineage_records_config_and_class_counts(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "t", {"a/0.png": SMALL, "a/1.png": SMALL, "a/2.png": SMALL, "b/0.png": SMALL})
    (step,) = ingest_source(IngestConfig(source=str(tmp_path / "t"))).lineage()
    assert step.command == "ingest" and step.inputs == ()
    assert step.options == {"source": str(tmp_path / "t"), "split": None, "shape_sample": 16, "digits_test_every": 5,
                               "per_class": None, "seed": 0}  # fmt: skip
    assert step.stats["rows"] == 4 and step.stats["classes"] == 2
    assert step.stats["per_class_counts"] == {"min": 1, "max": 3, "mean": 2.0}


def test_plain_tree_with_split_train_is_recorded_as_train(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "t", {"a/0.png": SMALL})
    manifest = ingest_source(IngestConfig(source=str(tmp_path / "t"), split=Split.train))
    assert column(manifest, "split") == ["train"] and manifest.meta["dataset"]["split"] == "train"


def test_duplicate_ids_are_refused(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "t", {"a/0.png": SMALL, "a/0.bmp": SMALL})
    with pytest.raises(DatasetError, match=r"a/0.bmp and a/0.png would share the id 'a/0'"):
        ingest_source(IngestConfig(source=str(tmp_path / "t")))


# -- CLI and errors -----------------------------------------------------------------------------------------


def test_cli_writes_the_manifest_and_a_summary(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "t", {"a/0.png": SMALL, "b/0.png": SMALL})
    out = tmp_path / "out.parquet"
    code, output = ingest_cli(str(tmp_path / "t"), "-o", str(out))
    assert code == 0, output
    assert f"ingested 2 images of 2 classes (6x5x3) from {tmp_path / 't'} -> {out}" in output
    manifest = read_manifest(out)
    assert column(manifest, "id") == ["a/0", "b/0"] and manifest.lineage().of_command("ingest")[0].stats["rows"] == 2


def test_cli_quiet_prints_nothing(tmp_path: Path) -> None:
    code, output = ingest_cli("builtin:digits", "-o", str(tmp_path / "d.parquet"), "--quiet")
    assert code == 0 and output == ""


def expect_error(tmp_path: Path, args: list[str], exit_code: int, message: str) -> None:
    out = tmp_path / "out.parquet"
    code, output = ingest_cli(*args, "-o", str(out))
    assert (code, output.strip()) == (exit_code, f"error: {message}")
    assert not out.exists() and list(tmp_path.glob(".out.parquet*")) == []


def test_error_missing_source(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    expect_error(
        tmp_path,
        [str(missing)],
        1,
        f"{missing}: no such directory; give an image folder, CIFAR batches, or builtin:digits",
    )


def test_error_source_is_an_archive(tmp_path: Path) -> None:
    archive = tmp_path / "data.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    expect_error(
        tmp_path,
        [str(archive)],
        1,
        f"{archive}: is an archive; unpack it first (e.g. tar -xzf {archive}) and give the folder",
    )


def test_error_unrecognisable_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    expect_error(
        tmp_path,
        [str(empty)],
        1,
        f"{empty}: not a recognisable dataset; ingest accepts an ImageFolder tree (SOURCE/<class>/<image>), "
        "a folder holding train/ and test/ ImageFolder trees, CIFAR-10/100 python batches "
        "(data_batch_1..5 + test_batch + batches.meta, or train + test + meta), or builtin:NAME (digits)",
    )


def test_error_images_without_class_folders(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "flat", {"0.png": SMALL})
    expect_error(
        tmp_path,
        [str(tmp_path / "flat")],
        1,
        f"{tmp_path / 'flat'}: holds images but no class folders; ImageFolder needs SOURCE/<class>/<image> "
        "(move the images into one folder per class)",
    )


def test_error_class_folders_without_images(tmp_path: Path) -> None:
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "b").mkdir()
    (tmp_path / "t" / "b" / "x.txt").write_text("")
    expect_error(
        tmp_path,
        [str(tmp_path / "t"), "--quiet"],  # found while listing: without --quiet the finished bar is drawn too
        1,
        f"{(tmp_path / 't').resolve()}: no images in its 2 class folders (looked for {', '.join(IMG_EXTENSIONS)})",
    )


def test_error_one_empty_class_folder(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "t", {"a/0.png": SMALL})
    (tmp_path / "t" / ".ipynb_checkpoints").mkdir()  # torchvision counts it as a class too
    with pytest.raises(DatasetError, match=r"class folder\(s\) \.ipynb_checkpoints hold no images"):
        ingest_source(IngestConfig(source=str(tmp_path / "t")))


def test_error_split_test_on_a_tree_without_splits(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "t", {"a/0.png": SMALL})
    expect_error(
        tmp_path,
        [str(tmp_path / "t"), "--split", "test"],
        2,
        f"{tmp_path / 't'}: has no test split (no train/ and test/ folders); ingest it without --split, "
        "or point SOURCE at a folder holding train/ and test/",
    )


def test_error_split_missing_from_a_split_tree(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "t", {"train/a/0.png": SMALL})
    expect_error(
        tmp_path,
        [str(tmp_path / "t"), "--split", "test"],
        2,
        f"{tmp_path / 't'}: has no test/ class folders (found train/); use --split train",
    )


def test_error_unknown_builtin(tmp_path: Path) -> None:
    expect_error(tmp_path, ["builtin:mnist"], 2, "unknown built-in dataset 'mnist'; known: digits")


# -- CIFAR python batches --------------------------------------------------------------------------------------

CIFAR10_BATCH_ROWS = 3  # rows per fake batch (the real ones hold 10,000)


def write_pickle(path: Path, content: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle)


def fake_cifar_rows(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def make_cifar10(directory: Path, with_test: bool = True) -> dict[str, dict]:
    """Fake CIFAR-10 batches in the real format: bytes keys, data N x 3072 uint8, labels a list."""
    directory.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + (["test_batch"] if with_test else [])
    batches = {}
    for seed, name in enumerate(names):
        batch = {
            b"batch_label": name.encode(),
            b"labels": [(seed + row) % 10 for row in range(CIFAR10_BATCH_ROWS)],
            b"data": fake_cifar_rows(seed, CIFAR10_BATCH_ROWS),
            b"filenames": [f"{name}_{row}.png".encode() for row in range(CIFAR10_BATCH_ROWS)],
        }
        write_pickle(directory / name, batch)
        batches[name] = batch
    classes = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_pickle(directory / "batches.meta", {b"label_names": classes, b"num_vis": 3072})
    return batches


def test_cifar10_batches_in_official_order(tmp_path: Path) -> None:
    batches = make_cifar10(tmp_path / "cifar-10-batches-py")

    # The parent folder works too: the batch folder inside it is found.
    train = ingest_source(IngestConfig(source=str(tmp_path)))
    test = ingest_source(IngestConfig(source=str(tmp_path / "cifar-10-batches-py"), split=Split.test))

    assert column(train, "id") == [f"train/{i:05d}" for i in range(15)]
    assert column(train, "path")[:4] == ["data_batch_1#0", "data_batch_1#1", "data_batch_1#2", "data_batch_2#0"]
    assert column(train, "label") == [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][b"labels"]]
    assert column(test, "id") == ["test/00000", "test/00001", "test/00002"]
    assert column(test, "label") == batches["test_batch"][b"labels"]
    dataset = train.meta["dataset"]
    assert dataset["kind"] == "cifar-python" and dataset["name"] == "cifar10"
    assert dataset["root"] == str((tmp_path / "cifar-10-batches-py").resolve())
    assert dataset["classes"][:2] == ["airplane", "automobile"] and dataset["image_shape"] == [32, 32, 3]


def test_cifar10_pixels_are_planes_of_red_green_blue(tmp_path: Path) -> None:
    batches = make_cifar10(tmp_path / "c")
    pixels = load_images(ingest_source(IngestConfig(source=str(tmp_path / "c"))))
    row = batches["data_batch_2"][b"data"][1]  # train row 3 + 1 = 4
    assert pixels.shape == (15, 32, 32, 3)
    assert tuple(pixels[4, 0, 0]) == (row[0], row[1024], row[2048])
    assert tuple(pixels[4, 1, 2]) == (row[32 + 2], row[1024 + 32 + 2], row[2048 + 32 + 2])


def test_cifar100_fine_labels_and_coarse_column(tmp_path: Path) -> None:
    directory = tmp_path / "cifar-100-python"
    directory.mkdir()
    for seed, split in enumerate(("train", "test")):
        write_pickle(
            directory / split,
            {
                b"fine_labels": [99, 0, 42],
                b"coarse_labels": [19, 0, 7],
                b"data": fake_cifar_rows(seed, 3),
            },
        )
    fine = [f"fine{i}".encode() for i in range(100)]
    write_pickle(directory / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20})

    manifest = ingest_source(IngestConfig(source=str(directory), split=Split.test))

    assert column(manifest, "id") == ["test/00000", "test/00001", "test/00002"]
    assert column(manifest, "path") == ["test#0", "test#1", "test#2"]
    assert column(manifest, "label") == [99, 0, 42]
    assert column(manifest, "coarse_label") == [19, 0, 7]
    assert manifest.meta["dataset"]["name"] == "cifar100" and len(manifest.classes) == 100


def test_cifar_without_test_batch_refuses_split_test(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "c", with_test=False)
    expect_error(
        tmp_path,
        [str(tmp_path / "c"), "--split", "test"],
        2,
        f"{tmp_path / 'c'}: has no test split (test_batch is missing); use --split train",
    )


def test_cifar_missing_train_batch_is_refused(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"data_batch_3 missing; the CIFAR train split needs every batch file"):
        ingest_source(IngestConfig(source=str(tmp_path / "c")))


class RunsCode:
    def __reduce__(self):
        return (print, ("pickles must not run code",))


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "c")
    write_pickle(tmp_path / "c" / "batches.meta", {b"label_names": RunsCode()})
    with pytest.raises(
        DatasetError, match=r"batches.meta: not a CIFAR python batch \(refusing to load builtins.print\)"
    ):
        ingest_source(IngestConfig(source=str(tmp_path / "c")))


# -- builtin:digits -------------------------------------------------------------------------------------------------


def test_digits_splits_cover_every_example_once_stratified() -> None:
    from sklearn.datasets import load_digits

    target = load_digits().target
    train = ingest_source(IngestConfig(source="builtin:digits"))
    test = ingest_source(IngestConfig(source="builtin:digits", split=Split.test))

    assert (train.num_rows, test.num_rows) == (1442, 355)
    assert sorted(column(train, "id") + column(test, "id")) == [f"{i:04d}" for i in range(1797)]
    for manifest in (train, test):
        rows = [int(i) for i in column(manifest, "id")]
        assert column(manifest, "label") == target[rows].tolist()
        assert column(manifest, "path") == [f"load_digits#{row}" for row in rows]
    per_class = np.bincount(target, minlength=10)
    assert np.bincount(test.labels(), minlength=10).tolist() == (per_class // 5).tolist()
    dataset = test.meta["dataset"]
    assert dataset == {
        "kind": "builtin",
        "name": "digits",
        "root": None,
        "classes": [str(d) for d in range(10)],
        "split": "test",
        "image_shape": [8, 8, 1],
        "source": "builtin:digits",
    }


def test_digits_split_takes_every_fifth_of_each_class() -> None:
    labels = np.array([0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    # class 0 sits at 0,2,3,4,5,10,11,12,13,14: its 5th and 10th are rows 5 and 14; class 1's 5th is row 9
    assert np.flatnonzero(digits_split(labels, 5)).tolist() == [5, 9, 14]


def test_digits_pixels_scale_0_16_to_0_255() -> None:
    from sklearn.datasets import load_digits

    assert digits_to_uint8(np.array([0, 1, 8, 15, 16])).tolist() == [0, 16, 128, 239, 255]
    images = load_digits().images
    manifest = ingest_source(IngestConfig(source="builtin:digits", split=Split.test))
    pixels = load_images(manifest)
    assert pixels.shape == (355, 8, 8, 1) and pixels.dtype == np.uint8
    row = column(manifest, "id").index("0036")  # example 36 is the 5th zero, so it is in test
    assert images[36][0, 2:5].tolist() == [6.0, 14.0, 10.0]
    assert pixels[row, 0, 2:5, 0].tolist() == [96, 223, 159]  # 6*255/16 = 95.6, 14*255/16 = 223.1, 10*255/16 = 159.4


def test_unknown_builtin_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="unknown built-in dataset 'cifar'"):
        ingest_source(IngestConfig(source="builtin:cifar"))


# -- the real CIFAR-10 JPEGs -----------------------------------------------------------------------------------------


@pytest.mark.shared
def test_real_cifar10_train_tree(cifar10_root: Path) -> None:
    manifest = ingest_source(IngestConfig(source=str(cifar10_root)))
    assert manifest.num_rows == 50_000
    assert manifest.classes == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    assert np.bincount(manifest.labels()).tolist() == [5000] * 10
    ids = column(manifest, "id")
    assert (ids[0], ids[-1]) == ("train/airplane/0000", "train/truck/4999")
    assert column(manifest, "path")[5000] == "train/automobile/0000.jpg"
    assert manifest.meta["dataset"]["image_shape"] == [32, 32, 3]
    test = ingest_source(IngestConfig(source=str(cifar10_root), split=Split.test))
    assert test.num_rows == 10_000 and test.classes == manifest.classes


def test_per_class_sample_is_stratified_seeded_and_nested() -> None:
    labels = np.repeat(np.arange(3), [5, 4, 2])
    ids = [f"img{i:02d}" for i in range(len(labels))]
    rows = sample_per_class(ids, labels, per_class=3, seed=7)
    assert np.bincount(labels[rows]).tolist() == [3, 3, 2]  # a class smaller than the cap keeps everything
    assert np.all(np.diff(rows) > 0)
    assert set(sample_per_class(ids, labels, 2, 7)) <= set(rows)  # nested as the cap grows
    other_seeds = {tuple(sample_per_class(ids, labels, 3, seed)) for seed in range(8)}
    assert len(other_seeds) > 1  # the seed matters
    shuffled = np.random.default_rng(0).permutation(len(ids))
    from_shuffled = sample_per_class([ids[i] for i in shuffled], labels[shuffled], 3, 7)
    assert sorted(ids[i] for i in shuffled[from_shuffled]) == sorted(ids[i] for i in rows)  # order-independent


def test_per_class_cli_records_option_and_counts(tmp_path: Path) -> None:
    output = tmp_path / "digits-20.parquet"
    code, output_text = ingest_cli("builtin:digits", "-o", str(output), "--per-class", "20", "--seed", "3", "--quiet")
    assert code == 0, output_text
    manifest = read_manifest(output)
    assert np.bincount(manifest.labels()).tolist() == [20] * 10
    step = manifest.lineage().of_command("ingest")[0]
    assert step.options["per_class"] == 20 and step.options["seed"] == 3
    assert step.stats["rows"] == 200


def test_per_class_zero_is_a_usage_error(tmp_path: Path) -> None:
    code, output_text = ingest_cli("builtin:digits", "-o", str(tmp_path / "x.parquet"), "--per-class", "0")
    assert code == 2
    assert output_text.strip() == "error: --per-class 0: must be at least 1 (or leave it out to keep every example)"
    assert not (tmp_path / "x.parquet").exists()
