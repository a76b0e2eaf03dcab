"""Pixels behind a manifest: find the dataset, decode its images, cache the decoded array.

A manifest says where its pixels are (`dataset.kind`, `dataset.root`, the `path` column); the
source registered for that kind (`sources/`) decodes them: image files under a root
(`imagefolder`), rows of CIFAR python pickles (`cifar-python`, paths like `data_batch_1#123`),
or a dataset shipped inside a package (`builtin`, paths like `load_digits#42`). `load_images`
decodes them once into a uint8 (N, H, W, C) array and caches it as .npy under $DATADIET_CACHE,
keyed by the dataset, the exact id list and the size and modification time (ns) of every file
behind the rows (each image file; each CIFAR batch or package data file once), so every later
step memory-maps it instead of decoding 50,000 JPEGs again, and an image replaced or deleted
since is noticed (decoded again, or the usual one-line error) instead of served stale. Keying
costs one stat() per file (50,000 files: a fraction of a second), never reading one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datadiet_cli.data import sources
from datadiet_cli.data.sources.base import FileStamp, Location, ProgressCallback, RowDecoder
from datadiet_cli.errors import DatasetError
from datadiet_cli.io.files import atomic_path
from datadiet_cli.io.manifest import Manifest

# Bumped when the layout of cached arrays changes, so old cache files are never misread.
CACHE_FORMAT = 2
# Rows decoded per task: large enough to amortise scheduling, small enough for a smooth progress bar.
DECODE_CHUNK = 512
# Below this many pixels per image, decode in one thread. PIL releases the GIL only inside the
# decoder; for small images that is ~30% of the work, and threads fighting over the GIL were
# slower than one (2 cores, CIFAR 32x32 JPEGs: 0.57x; 64x64: 1.1x; 128x128: 1.2x; 256x256: 2.1x).
THREADED_DECODE_MIN_PIXELS = 96 * 96


def cache_dir() -> Path:
    """$DATADIET_CACHE, or ~/.cache/datadiet."""
    return Path(os.environ.get("DATADIET_CACHE") or Path.home() / ".cache" / "datadiet").expanduser()


# -- where the dataset is -------------------------------------------------------------------


def dataset_info(manifest: Manifest) -> dict[str, Any]:
    dataset = manifest.meta.get("dataset") or {}
    if not dataset.get("kind"):
        raise DatasetError(
            f"{manifest.name}: the manifest does not say where its images are (no 'dataset' metadata); "
            "make it with `datadiet ingest`"
        )
    return dataset


def dataset_root(manifest: Manifest, root: Path | None = None) -> Path | None:
    """The `--root` override or the root recorded by ingest; None for datasets shipped inside a package."""
    dataset = dataset_info(manifest)
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetError(f"--root {root}: no such directory")
        return root.resolve()
    if not sources.source_of(dataset, manifest.name).has_root:
        return None
    recorded = dataset.get("root")
    if not recorded:
        raise DatasetError(f"{manifest.name}: no dataset root recorded; pass --root with the dataset's location")
    if not Path(recorded).is_dir():
        raise DatasetError(
            f"dataset root {recorded} (recorded in {manifest.name}) does not exist; "
            "pass --root with the dataset's current location"
        )
    return Path(recorded)


def image_paths(manifest: Manifest) -> list[str]:
    if not manifest.has_column("path"):
        raise DatasetError(
            f"{manifest.name}: no 'path' column, so the images cannot be found; re-run `datadiet ingest`"
        )
    paths = manifest.table.column("path")
    if paths.null_count:
        raise DatasetError(
            f"{manifest.name}: column 'path' has {paths.null_count} null values; re-run `datadiet ingest`"
        )
    return paths.to_pylist()


# -- loading --------------------------------------------------------------------------------


def load_images(
    manifest: Manifest,
    root: Path | None = None,
    progress: ProgressCallback | None = None,
    cache: bool = True,
) -> np.ndarray:
    """All images of the manifest as a read-only uint8 array (N, H, W, C), in row order.

    Needs one image size (`dataset.image_shape` not null). The first call decodes (images
    in parallel threads; PIL releases the GIL while decoding) and writes the cache; later
    calls with the same dataset and ids memory-map the cached .npy. `cache=False` neither
    reads nor writes the cache.
    """
    dataset = dataset_info(manifest)
    shape = dataset.get("image_shape")
    if not shape:
        raise DatasetError(
            f"{manifest.name}: the images vary in size (dataset.image_shape is null), so they do not fit one array; "
            "resize them to one size and re-ingest, or stream them with open_image"
        )
    height, width, channels = (int(v) for v in shape)
    resolved_root = dataset_root(manifest, root)
    paths = image_paths(manifest)
    location = Location(manifest.name, dataset, resolved_root)
    source = sources.source_of(dataset, manifest.name)
    if cache:
        stamps = source.file_stamps(location, paths)  # a file gone since ingest: its one-line error here
        cache_file = cache_dir() / "pixels" / f"{cache_key(dataset, resolved_root, manifest, paths, stamps)}.npy"
        cached = read_cached(cache_file, (len(paths), height, width, channels))
        if cached is not None:
            if progress is not None:
                progress(len(paths), len(paths))
            return cached
    decode = source.decoder(location, (height, width, channels))
    pixels = decode_rows(decode, paths, (height, width, channels), manifest.name, progress)
    if cache:
        write_cached(cache_file, pixels)
    pixels.flags.writeable = False
    return pixels


def cache_key(
    dataset: dict[str, Any], root: Path | None, manifest: Manifest, paths: Sequence[str], stamps: Sequence[FileStamp]
) -> str:
    """sha256 of what determines the pixels: dataset identity, root, shape, each row's id and path,
    and the size and modification time of each file they come from (`DatasetSource.file_stamps`)."""
    digest = hashlib.sha256()
    identity = {
        "format": CACHE_FORMAT,
        "kind": dataset.get("kind"),
        "name": dataset.get("name"),
        "root": str(root) if root is not None else None,
        "image_shape": dataset.get("image_shape"),
    }
    digest.update(json.dumps(identity, sort_keys=True).encode())
    for example_id, path in zip(manifest.ids(), paths, strict=True):
        digest.update(b"\0" + example_id.encode() + b"\1" + path.encode())
    for name, size, modified_ns in stamps:
        digest.update(f"\2{name}\3{size}\3{modified_ns}".encode())
    return digest.hexdigest()


def read_cached(cache_file: Path, expected_shape: tuple[int, ...]) -> np.ndarray | None:
    """The memory-mapped cache, or None when absent or unusable (then it is rebuilt)."""
    if not cache_file.is_file():
        return None
    try:
        cached = np.load(cache_file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if cached.shape != expected_shape or cached.dtype != np.uint8:
        return None
    return cached


def write_cached(cache_file: Path, pixels: np.ndarray) -> None:
    try:
        with atomic_path(cache_file) as temporary, open(temporary, "wb") as handle:
            # A handle, not a path: np.save would append ".npy" to the temporary name.
            np.save(handle, pixels, allow_pickle=False)
    except OSError:
        pass  # the cache only saves time; an unwritable cache directory must not fail the step


def decode_rows(
    decode: RowDecoder,
    paths: Sequence[str],
    shape: tuple[int, int, int],
    manifest: str,
    progress: ProgressCallback | None,
) -> np.ndarray:
    """Every row's pixels, uint8 (N, H, W, C) for `shape` (H, W, C): in threads when the images are large."""
    height, width, _ = shape
    pixels = np.empty((len(paths), *shape), dtype=np.uint8)

    def decode_chunk(start: int, stop: int) -> int:
        for row in range(start, stop):
            image = decode(paths[row])
            if image.shape != shape:
                raise DatasetError(
                    f"{manifest}: images are {image.shape} but dataset.image_shape says {shape}; "
                    "re-run `datadiet ingest`"
                )
            pixels[row] = image
        return stop - start

    chunks = [(start, min(start + DECODE_CHUNK, len(paths))) for start in range(0, len(paths), DECODE_CHUNK)]
    workers = min(32, os.cpu_count() or 1, len(chunks)) if height * width >= THREADED_DECODE_MIN_PIXELS else 1
    if workers <= 1:
        for start, stop in chunks:
            decode_chunk(start, stop)
            if progress is not None:
                progress(stop - start, len(paths))
        return pixels
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datadiet-decode") as pool:
        futures = [pool.submit(decode_chunk, start, stop) for start, stop in chunks]
        try:
            for future in as_completed(futures):
                done = future.result()
                if progress is not None:
                    progress(done, len(paths))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return pixels


def open_image(manifest: Manifest, row_index: int, root: Path | None = None) -> Image.Image:
    """One image of the manifest as a PIL image (mode L or RGB), for streaming large images."""
    dataset = dataset_info(manifest)
    path = manifest.table.column("path")[row_index].as_py() if manifest.has_column("path") else None
    if path is None:
        raise DatasetError(f"{manifest.name}: row {row_index} has no 'path'; re-run `datadiet ingest`")
    location = Location(manifest.name, dataset, dataset_root(manifest, root))
    return sources.source_of(dataset, manifest.name).open_image(location, path)
