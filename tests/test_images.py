"""The pixel-loading API: exact pixels in row order, the .npy cache, --root, one-line errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datadiet_cli.data import images
from datadiet_cli.data.images import dataset_root, load_images, open_image
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.data.sources.imagefolder import ImageFolder
from datadiet_cli.errors import DatasetError
from datadiet_cli.io.manifest import new_manifest, read_manifest, write_manifest

RGB_FILES = {"cat/0.png": (4, 6, 3), "cat/1.png": (4, 6, 3), "dog/0.png": (4, 6, 3)}


def ingest(root: Path):
    return ingest_source(IngestConfig(source=str(root)))


def cached_files(cache: Path) -> list[Path]:
    return sorted((cache / "pixels").glob("*.npy"))


def test_pixels_equal_the_lossless_files_in_row_order(tmp_path: Path, make_image_tree) -> None:
    written = make_image_tree(tmp_path / "t", RGB_FILES)
    manifest = ingest(tmp_path / "t")

    pixels = load_images(manifest)

    assert pixels.dtype == np.uint8 and pixels.shape == (3, 4, 6, 3)
    for row, path in enumerate(manifest.table.column("path").to_pylist()):
        np.testing.assert_array_equal(pixels[row], written[path])
    reordered = load_images(manifest.take(np.array([2, 0])))
    np.testing.assert_array_equal(reordered, pixels[[2, 0]])


def test_grayscale_stays_one_channel(tmp_path: Path, make_image_tree) -> None:
    written = make_image_tree(tmp_path / "t", {"a/0.png": (5, 3, 1), "b/0.png": (5, 3, 1)})
    pixels = load_images(ingest(tmp_path / "t"))
    assert pixels.shape == (2, 5, 3, 1)
    np.testing.assert_array_equal(pixels[1], written["b/0.png"])


def test_palette_and_rgba_become_rgb(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    (tmp_path / "t" / "a").mkdir(parents=True)
    Image.fromarray(np.dstack([rgb, np.full((4, 4), 7, np.uint8)]), "RGBA").save(tmp_path / "t" / "a" / "rgba.png")
    palette = Image.fromarray(rgb).quantize(colors=4)
    palette.save(tmp_path / "t" / "a" / "palette.png")

    manifest = ingest(tmp_path / "t")
    pixels = load_images(manifest)

    assert manifest.meta["dataset"]["image_shape"] == [4, 4, 3]
    assert manifest.table.column("id").to_pylist() == ["a/palette", "a/rgba"]
    np.testing.assert_array_equal(pixels[0], np.asarray(palette.convert("RGB")))
    np.testing.assert_array_equal(pixels[1], rgb)  # alpha dropped, colour kept


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    (tmp_path / "t" / "a").mkdir(parents=True)
    deep = np.array([[0, 257, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "t" / "a" / "deep.png")
    pixels = load_images(ingest(tmp_path / "t"))
    assert pixels[0, :, :, 0].tolist() == [[0, 1, 255]]


def test_second_call_memory_maps_the_identical_cached_array(
    tmp_path: Path, make_image_tree, isolated_pixel_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_image_tree(tmp_path / "t", RGB_FILES)
    manifest = ingest(tmp_path / "t")

    first = load_images(manifest)
    (cache_file,) = cached_files(isolated_pixel_cache)

    def no_decoding(*args: object) -> None:
        raise AssertionError("a cache hit must not decode the files")

    monkeypatch.setattr(ImageFolder, "decoder", no_decoding)
    second = load_images(manifest)

    assert isinstance(second, np.memmap) and Path(second.filename) == cache_file
    np.testing.assert_array_equal(second, first)
    assert not first.flags.writeable and not second.flags.writeable


def test_cache_is_keyed_by_the_ids(tmp_path: Path, make_image_tree, isolated_pixel_cache: Path) -> None:
    written = make_image_tree(tmp_path / "t", RGB_FILES)
    manifest = ingest(tmp_path / "t")
    load_images(manifest)

    subset = load_images(manifest.take(np.array([1])))

    assert len(cached_files(isolated_pixel_cache)) == 2
    np.testing.assert_array_equal(subset[0], written["cat/1.png"])


def test_cache_false_neither_reads_nor_writes(tmp_path: Path, make_image_tree, isolated_pixel_cache: Path) -> None:
    make_image_tree(tmp_path / "t", RGB_FILES)
    manifest = ingest(tmp_path / "t")
    pixels = load_images(manifest, cache=False)
    assert cached_files(isolated_pixel_cache) == []
    np.testing.assert_array_equal(load_images(manifest), pixels)  # writes the cache
    assert len(cached_files(isolated_pixel_cache)) == 1
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "t" / "dog" / "0.png")
    assert load_images(manifest, cache=False)[2].max() == 0  # decoded afresh
    assert len(cached_files(isolated_pixel_cache)) == 1  # and not cached


def test_a_corrupt_cache_file_is_rebuilt(tmp_path: Path, make_image_tree, isolated_pixel_cache: Path) -> None:
    written = make_image_tree(tmp_path / "t", RGB_FILES)
    manifest = ingest(tmp_path / "t")
    load_images(manifest)
    (cache_file,) = cached_files(isolated_pixel_cache)
    cache_file.write_bytes(b"garbage")
    np.testing.assert_array_equal(load_images(manifest)[2], written["dog/0.png"])


def test_progress_reports_every_row(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "t", RGB_FILES)
    calls: list[tuple[int, int]] = []
    load_images(ingest(tmp_path / "t"), progress=lambda done, total: calls.append((done, total)))
    assert sum(done for done, _ in calls) == 3 and {total for _, total in calls} == {3}


def test_threaded_decode_of_larger_images(tmp_path: Path, make_image_tree, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "DECODE_CHUNK", 2)
    monkeypatch.setattr(images, "THREADED_DECODE_MIN_PIXELS", 1)  # force the thread pool on tiny images
    written = make_image_tree(tmp_path / "t", {f"c/{i}.png": (3, 2, 3) for i in range(7)})
    pixels = load_images(ingest(tmp_path / "t"), cache=False)
    for row in range(7):
        np.testing.assert_array_equal(pixels[row], written[f"c/{row}.png"])


def test_moved_dataset_needs_root(tmp_path: Path, make_image_tree) -> None:
    written = make_image_tree(tmp_path / "old", RGB_FILES)
    manifest_path = write_manifest(ingest(tmp_path / "old"), tmp_path / "m.parquet")
    shutil.move(tmp_path / "old", tmp_path / "new")
    manifest = read_manifest(manifest_path)

    with pytest.raises(DatasetError) as error:
        load_images(manifest)
    assert str(error.value) == (
        f"dataset root {(tmp_path / 'old').resolve()} (recorded in {manifest_path}) does not exist; "
        "pass --root with the dataset's current location"
    )
    pixels = load_images(manifest, root=tmp_path / "new")
    np.testing.assert_array_equal(pixels[0], written["cat/0.png"])
    assert dataset_root(manifest, tmp_path / "new") == (tmp_path / "new").resolve()


def test_missing_root_override_is_refused(tmp_path: Path) -> None:
    manifest = ingest_source(IngestConfig(source="builtin:digits"))
    with pytest.raises(DatasetError, match=r"^--root .*nowhere: no such directory$"):
        dataset_root(manifest, tmp_path / "nowhere")
    assert dataset_root(manifest) is None


def test_missing_image_file_names_the_file_and_root(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "t", RGB_FILES)
    manifest = ingest(tmp_path / "t")
    (tmp_path / "t" / "dog" / "0.png").unlink()
    with pytest.raises(DatasetError) as error:
        load_images(manifest)
    root = (tmp_path / "t").resolve()
    assert str(error.value) == (
        f"{root}/dog/0.png: no such image (dataset root {root} from <manifest>); "
        "if the dataset has moved, pass --root with its new location"
    )


def test_an_image_of_another_size_is_named(tmp_path: Path, make_image_tree) -> None:
    files = {f"c/{i:02d}.png": (4, 4, 3) for i in range(30)}
    make_image_tree(tmp_path / "t", files)
    manifest = ingest_source(IngestConfig(source=str(tmp_path / "t"), shape_sample=2))  # samples rows 0 and 29
    Image.new("RGB", (5, 4)).save(tmp_path / "t" / "c" / "13.png")
    with pytest.raises(DatasetError, match=r"c/13.png: image is 4x5 but <manifest> says all are 4x4"):
        load_images(manifest, cache=False)


def test_varying_sizes_cannot_be_one_array(tmp_path: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "t", {"a/0.png": (4, 4, 3), "a/1.png": (5, 4, 3)})
    with pytest.raises(DatasetError, match=r"the images vary in size \(dataset.image_shape is null\)"):
        load_images(ingest(tmp_path / "t"))


def test_manifest_without_dataset_metadata(tmp_path: Path) -> None:
    bare = new_manifest(["a"], [0], {}, {"path": ["a.png"]})
    with pytest.raises(DatasetError, match=r"does not say where its images are .*make it with `datadiet ingest`"):
        load_images(bare)


def test_open_image_for_each_kind(tmp_path: Path, make_image_tree) -> None:
    written = make_image_tree(tmp_path / "t", RGB_FILES)
    folder = ingest(tmp_path / "t")
    image = open_image(folder, 2)
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), written["dog/0.png"])

    digits = ingest_source(IngestConfig(source="builtin:digits", split=Split.test))
    digit = open_image(digits, 5)
    assert digit.mode == "L" and digit.size == (8, 8)
    np.testing.assert_array_equal(np.asarray(digit), load_images(digits)[5, :, :, 0])


def test_cifar_rows_load_from_the_batches_and_open_singly(tmp_path: Path) -> None:
    import pickle

    directory = tmp_path / "c"
    directory.mkdir()
    rows = np.random.default_rng(0).integers(0, 256, size=(2, 3072), dtype=np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(directory / name, "wb") as handle:
            pickle.dump({b"labels": [0, 1], b"data": rows}, handle)
    with open(directory / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [b"a", b"b"]}, handle)
    manifest = ingest_source(IngestConfig(source=str(directory)))

    pixels = load_images(manifest.take(np.array([9, 0])))

    expected = rows.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(pixels, expected[[1, 0]])
    np.testing.assert_array_equal(np.asarray(open_image(manifest, 9)), expected[1])


# -- the cache notices files changed after ingest ---------------------------------------------------------


def bump_mtime(file: Path) -> None:
    """A modification time 1 s later than the file's: a later edit, even where the clock is coarse."""
    modified_ns = file.stat().st_mtime_ns + 10**9
    os.utime(file, ns=(modified_ns, modified_ns))


def test_an_image_replaced_after_caching_gives_its_new_pixels(
    tmp_path: Path, make_image_tree, isolated_pixel_cache: Path
) -> None:
    written = make_image_tree(tmp_path / "t", RGB_FILES)
    manifest = ingest(tmp_path / "t")
    np.testing.assert_array_equal(load_images(manifest)[2], written["dog/0.png"])  # cached

    size = (tmp_path / "t" / "dog" / "0.png").stat().st_size
    replacement = np.arange(72, dtype=np.uint8).reshape(4, 6, 3)
    Image.fromarray(replacement).save(tmp_path / "t" / "dog" / "0.png")
    assert (tmp_path / "t" / "dog" / "0.png").stat().st_size != size  # told apart by size, whatever the clock
    pixels = load_images(manifest)

    np.testing.assert_array_equal(pixels[2], replacement)
    np.testing.assert_array_equal(pixels[0], written["cat/0.png"])
    assert pixels[2, 0, 0].tolist() == [0, 1, 2] and pixels[2, 3, 5].tolist() == [69, 70, 71]
    assert len(cached_files(isolated_pixel_cache)) == 2  # a miss: cached again under the new key
    np.testing.assert_array_equal(load_images(manifest)[2], replacement)  # and a hit from then on


def test_an_image_of_the_same_byte_size_is_told_apart_by_its_modification_time(
    tmp_path: Path, isolated_pixel_cache: Path
) -> None:
    (tmp_path / "t" / "a").mkdir(parents=True)
    file = tmp_path / "t" / "a" / "0.bmp"  # uncompressed: any 2x2 RGB image is the same number of bytes
    Image.fromarray(np.full((2, 2, 3), 10, np.uint8)).save(file)
    Image.fromarray(np.full((2, 2, 3), 20, np.uint8)).save(tmp_path / "t" / "a" / "1.bmp")
    manifest = ingest(tmp_path / "t")
    assert load_images(manifest)[0].max() == 10
    size = file.stat().st_size

    Image.fromarray(np.full((2, 2, 3), 99, np.uint8)).save(file)
    bump_mtime(file)

    assert file.stat().st_size == size
    assert load_images(manifest)[:, 0, 0].tolist() == [[99, 99, 99], [20, 20, 20]]


def test_an_image_deleted_after_caching_is_the_usual_error_not_stale_pixels(
    tmp_path: Path, make_image_tree, isolated_pixel_cache: Path
) -> None:
    make_image_tree(tmp_path / "t", RGB_FILES)
    manifest = ingest(tmp_path / "t")
    load_images(manifest)
    (tmp_path / "t" / "dog" / "0.png").unlink()

    with pytest.raises(DatasetError) as error:
        load_images(manifest)

    root = (tmp_path / "t").resolve()
    assert str(error.value) == (
        f"{root}/dog/0.png: no such image (dataset root {root} from <manifest>); "
        "if the dataset has moved, pass --root with its new location"
    )


def write_cifar100(directory: Path, rows: np.ndarray) -> None:
    import pickle

    directory.mkdir(exist_ok=True)
    with open(directory / "train", "wb") as handle:
        pickle.dump({b"fine_labels": [0] * len(rows), b"data": rows}, handle)
    with open(directory / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [b"a", b"b"]}, handle)


def test_a_cifar_batch_replaced_after_caching_gives_its_new_pixels(tmp_path: Path, isolated_pixel_cache: Path) -> None:
    directory = tmp_path / "c"
    write_cifar100(directory, np.full((2, 3072), 7, np.uint8))
    manifest = ingest(directory)
    assert load_images(manifest)[:, 0, 0].tolist() == [[7, 7, 7], [7, 7, 7]]

    rows = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072) % 251
    write_cifar100(directory, rows.astype(np.uint8))  # the same byte size
    bump_mtime(directory / "train")
    pixels = load_images(manifest)

    expected = rows.astype(np.uint8).reshape(2, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(pixels, expected)
    assert pixels[1, 0, 0].tolist() == [(3072 + 0) % 251, (3072 + 1024) % 251, (3072 + 2048) % 251]

    (directory / "train").unlink()
    with pytest.raises(DatasetError) as error:
        load_images(manifest)
    assert str(error.value) == (
        f"{directory.resolve() / 'train'}: no such CIFAR batch file; "
        "if the dataset has moved, pass --root with its new location"
    )


def test_builtin_digits_key_on_the_package_data_file(isolated_pixel_cache: Path) -> None:
    from datadiet_cli.data.sources.base import Location
    from datadiet_cli.data.sources.digits import BuiltinDigits

    manifest = ingest_source(IngestConfig(source="builtin:digits", split=Split.test))
    location = Location(manifest.name, manifest.meta["dataset"], None)
    (stamp,) = BuiltinDigits().file_stamps(location, manifest.table.column("path").to_pylist())
    data_file = BuiltinDigits().container_file(location, "load_digits")
    assert data_file is not None and data_file.name == "digits.csv.gz"
    assert stamp == ("load_digits", data_file.stat().st_size, data_file.stat().st_mtime_ns)
