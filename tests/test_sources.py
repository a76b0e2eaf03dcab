"""The source registry: every format lists and decodes through `sources.SOURCES`, and nothing else dispatches."""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datadiet_cli.data import sources
from datadiet_cli.data.images import load_images, open_image
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.data.sources.base import ContainerSource, DatasetSource, Listing, Location, ProgressCallback
from datadiet_cli.errors import DatasetError
from datadiet_cli.io.manifest import Manifest, read_manifest, write_manifest


@dataclasses.dataclass(frozen=True)
class Tiny:
    """A small dataset of one format, and what ingest and load_images must make of it."""

    source: str  # the SOURCE argument
    ids: list[str]  # the ids ingest must give, in row order
    labels: list[int]  # their labels
    pixels: np.ndarray  # uint8 (N, H, W, C) that load_images must give, in row order
    split: Split | None = None  # the --split to ingest


def tiny_imagefolder(tmp_path: Path) -> Tiny:
    red_blue = np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8)  # (1, 2, 3)
    green_grey = np.array([[[0, 255, 0], [7, 7, 7]]], dtype=np.uint8)
    for relative, pixels in {"b/0.png": green_grey, "a/1.png": red_blue, "a/0.png": green_grey}.items():
        (tmp_path / "tree" / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "tree" / relative)
    return Tiny(str(tmp_path / "tree"), ["a/0", "a/1", "b/0"], [0, 0, 1], np.stack([green_grey, red_blue, green_grey]))


def tiny_cifar(tmp_path: Path) -> Tiny:
    directory = tmp_path / "cifar-100-python"
    directory.mkdir()
    first = np.arange(3072) % 251  # red plane, then green, then blue: value = (plane * 1024 + y * 32 + x) % 251
    rows = np.stack([first, 250 - first]).astype(np.uint8)
    for split in ("train", "test"):
        with open(directory / split, "wb") as handle:
            pickle.dump({b"fine_labels": [1, 0], b"coarse_labels": [0, 0], b"data": rows}, handle)
    with open(directory / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [b"apple", b"bee"], b"coarse_label_names": [b"all"]}, handle)
    plane, y, x = np.arange(3)[None, None, :], np.arange(32)[:, None, None], np.arange(32)[None, :, None]
    image = ((plane * 1024 + y * 32 + x) % 251).astype(np.uint8)
    assert image[1, 2].tolist() == [34, 54, 74]
    return Tiny(str(directory), ["train/00000", "train/00001"], [1, 0], np.stack([image, 250 - image]))


def tiny_digits(tmp_path: Path) -> Tiny:
    from sklearn.datasets import load_digits

    digits = load_digits()
    seen_of_class = [int((digits.target[: row + 1] == label).sum()) for row, label in enumerate(digits.target)]
    rows = [row for row, seen in enumerate(seen_of_class) if seen % 5 == 0]  # every 5th of each class is test
    # round-half-up(v * 255 / 16) in integers: floor((v * 255 + 8) / 16)
    pixels = ((digits.images[rows].astype(np.int64) * 255 + 8) // 16).astype(np.uint8)[..., None]
    return Tiny("builtin:digits", [f"{row:04d}" for row in rows], digits.target[rows].tolist(), pixels, Split.test)


# One tiny dataset per registered kind: a source added to the registry without one fails here.
TINY: dict[str, Callable[[Path], Tiny]] = {
    "imagefolder": tiny_imagefolder,
    "cifar-python": tiny_cifar,
    "builtin": tiny_digits,
}


def written_and_read(manifest: Manifest, tmp_path: Path) -> Manifest:
    return read_manifest(write_manifest(manifest, tmp_path / "manifest.parquet"))


@pytest.mark.parametrize("source", sources.SOURCES, ids=lambda source: source.kind)
def test_every_source_round_trips_a_tiny_dataset(
    source: DatasetSource, tmp_path: Path, isolated_pixel_cache: Path
) -> None:
    tiny = TINY[source.kind](tmp_path)
    manifest = written_and_read(ingest_source(IngestConfig(source=tiny.source, split=tiny.split)), tmp_path)

    assert manifest.meta["dataset"]["kind"] == source.kind
    assert sources.source_of(manifest.meta["dataset"], manifest.name) is source
    assert manifest.ids().tolist() == tiny.ids and manifest.labels().tolist() == tiny.labels
    pixels = load_images(manifest)
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, tiny.pixels)
    np.testing.assert_array_equal(load_images(manifest), tiny.pixels)  # again, from the cache
    assert len(list((isolated_pixel_cache / "pixels").glob("*.npy"))) == 1
    for row in (0, len(tiny.ids) - 1):
        grayscale = tiny.pixels.shape[3] == 1
        image = open_image(manifest, row)
        assert image.mode == ("L" if grayscale else "RGB")
        np.testing.assert_array_equal(np.asarray(image), tiny.pixels[row, :, :, 0] if grayscale else tiny.pixels[row])


def test_digits_round_trip_spot_values() -> None:
    manifest = ingest_source(IngestConfig(source="builtin:digits", split=Split.test))
    row = manifest.ids().tolist().index("0036")  # the 5th zero: 6, 14, 10 in its first row -> 96, 223, 159
    assert load_images(manifest)[row, 0, 2:5, 0].tolist() == [96, 223, 159]
    assert np.asarray(open_image(manifest, row))[0, 2:5].tolist() == [96, 223, 159]


def test_kinds_and_prefixes_are_registered_once() -> None:
    kinds = [source.kind for source in sources.SOURCES]
    prefixes = [source.prefix for source in sources.SOURCES if source.prefix is not None]
    assert kinds == ["imagefolder", "cifar-python", "builtin"]
    assert len(set(prefixes)) == len(prefixes) == 1


# -- a format added by one registry entry -----------------------------------------------------------------

TOY_PIXELS = np.array([[[[10], [20]]], [[[30], [40]]], [[[50], [60]]]], dtype=np.uint8)  # (3, 1, 2, 1)


@dataclasses.dataclass(frozen=True)
class ToyName:
    name: str

    def list(self, config: IngestConfig, progress: ProgressCallback | None) -> Listing:
        dataset = {
            "kind": "toy",
            "name": self.name,
            "root": None,
            "classes": ["low", "high"],
            "split": None,
            "image_shape": [1, 2, 1],
            "source": config.source,
        }
        return Listing(["t0", "t1", "t2"], np.array([0, 1, 1]), ["strip#2", "strip#0", "strip#1"], dataset, 0, {})


class ToySource(ContainerSource):
    kind = "toy"
    prefix = "toy:"
    claims_any_folder = False
    has_root = False
    short_name = "toy:NAME"
    layout = "toy:NAME"

    def locate(self, config: IngestConfig, folder: Path | None) -> ToyName:
        return ToyName(config.source.removeprefix("toy:"))

    def read_container(self, location: Location, name: str) -> np.ndarray:
        assert name == "strip"
        return TOY_PIXELS


def test_a_format_added_to_the_registry_lists_and_decodes_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "SOURCES", (*sources.SOURCES, ToySource()))
    manifest = written_and_read(ingest_source(IngestConfig(source="toy:strip")), tmp_path)

    assert manifest.ids().tolist() == ["t0", "t1", "t2"] and manifest.meta["dataset"]["kind"] == "toy"
    assert load_images(manifest)[:, 0, :, 0].tolist() == [[50, 60], [10, 20], [30, 40]]
    assert np.asarray(open_image(manifest, 1)).tolist() == [[10, 20]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"meta\), builtin:NAME \(digits\), or toy:NAME$"):
        ingest_source(IngestConfig(source=str(tmp_path / "empty")))
    with pytest.raises(DatasetError, match=r"give an image folder, CIFAR batches, builtin:digits, or toy:NAME$"):
        ingest_source(IngestConfig(source=str(tmp_path / "nowhere")))


# -- errors the registry and the shared decoding raise ------------------------------------------------------


def with_dataset(manifest: Manifest, **changes: object) -> Manifest:
    meta = {**manifest.meta, "dataset": {**manifest.meta["dataset"], **changes}}
    return dataclasses.replace(manifest, meta=meta)


def test_a_manifest_of_an_unknown_kind_is_refused() -> None:
    manifest = with_dataset(ingest_source(IngestConfig(source="builtin:digits")), kind="webdataset")
    message = "<manifest>: unknown dataset kind 'webdataset'; re-run `datadiet ingest`"
    for call in (lambda: load_images(manifest), lambda: open_image(manifest, 0)):
        with pytest.raises(DatasetError) as error:
            call()
        assert str(error.value) == message


def test_rows_of_another_shape_than_recorded_are_refused() -> None:
    manifest = with_dataset(ingest_source(IngestConfig(source="builtin:digits")), image_shape=[8, 8, 3])
    with pytest.raises(DatasetError) as error:
        load_images(manifest)
    assert str(error.value) == (
        "<manifest>: images are (8, 8, 1) but dataset.image_shape says (8, 8, 3); re-run `datadiet ingest`"
    )


def test_a_row_past_the_end_of_its_container_is_refused(tmp_path: Path) -> None:
    tiny = tiny_cifar(tmp_path)
    manifest = ingest_source(IngestConfig(source=tiny.source))
    batch = Path(tiny.source) / "train"
    modified_ns = batch.stat().st_mtime_ns
    with open(batch, "wb") as handle:  # the batch shrank after ingest
        pickle.dump({b"fine_labels": [1], b"data": np.zeros((1, 3072), np.uint8)}, handle)
    os.utime(batch, ns=(modified_ns + 10**9, modified_ns + 10**9))  # a new mtime even on a coarse clock
    with pytest.raises(DatasetError) as error:
        load_images(manifest, cache=False)
    assert str(error.value) == (
        "<manifest>: path 'train#1' is past the end of train (1 rows); re-run `datadiet ingest`"
    )
