"""Pixels behind a manifest: find the dataset, decode its images, cache the decoded array.

A manifest says where its pixels are (`dataset.kind`, `dataset.root`, the `path` column):
image files under a root (`imagefolder`), rows of CIFAR python pickles (`cifar-python`,
paths like `data_batch_1#123`), or a dataset shipped inside a package (`builtin`, paths like
`load_digits#42`). `load_images` decodes them once into a uint8 (N, H, W, C) array and
caches it as .npy under $DATADIET_CACHE, keyed by the dataset and the exact id list, so
every later step memory-maps it instead of decoding 50,000 JPEGs again. The cache is not
invalidated when image files change in place: delete $DATADIET_CACHE/pixels to force it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from datadiet_cli.errors import DatasetError
from datadiet_cli.io.files import atomic_path
from datadiet_cli.io.manifest import Manifest

ProgressCallback = Callable[[int, int], None]

# Bumped when the layout of cached arrays changes, so old cache files are never misread.
CACHE_FORMAT = 1
# Rows decoded per task: large enough to amortise scheduling, small enough for a smooth progress bar.
DECODE_CHUNK = 512
# Below this many pixels per image, decode in one thread. PIL releases the GIL only inside the
# decoder; for small images that is ~30% of the work, and threads fighting over the GIL were
# slower than one (2 cores, CIFAR 32x32 JPEGs: 0.57x; 64x64: 1.1x; 128x128: 1.2x; 256x256: 2.1x).
THREADED_DECODE_MIN_PIXELS = 96 * 96
# PIL modes kept as one channel; everything else (RGB, RGBA, P, CMYK, YCbCr, ...) becomes RGB.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})
# Names accepted by `datadiet ingest builtin:NAME` (each shipped inside an installed package).
BUILTIN_DATASETS = ("digits",)
# Where built-in and CIFAR rows point inside their container: `container#row`.
ROW_SEPARATOR = "#"


def cache_dir() -> Path:
    """$DATADIET_CACHE, or ~/.cache/datadiet."""
    return Path(os.environ.get("DATADIET_CACHE") or Path.home() / ".cache" / "datadiet").expanduser()


def channels_of_mode(mode: str) -> int:
    """1 for grayscale PIL modes (16-bit too), else 3: palette and alpha images are converted to RGB."""
    return 1 if mode in GRAYSCALE_MODES or mode.startswith("I;") else 3


def pil_mode_for_channels(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


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
    """The `--root` override or the root recorded by ingest; None for built-in datasets."""
    dataset = dataset_info(manifest)
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetError(f"--root {root}: no such directory")
        return root.resolve()
    if dataset["kind"] == "builtin":
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


def split_row_path(path: str, manifest: Manifest) -> tuple[str, int]:
    """`data_batch_1#123` -> ("data_batch_1", 123)."""
    container, separator, row = path.rpartition(ROW_SEPARATOR)
    if not separator or not row.isdigit():
        raise DatasetError(f"{manifest.name}: path '{path}' is not of the form CONTAINER#ROW; re-run `datadiet ingest`")
    return container, int(row)


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
    cache_file = cache_dir() / "pixels" / f"{cache_key(dataset, resolved_root, manifest, paths)}.npy"
    expected_shape = (len(paths), height, width, channels)
    if cache:
        cached = read_cached(cache_file, expected_shape)
        if cached is not None:
            if progress is not None:
                progress(len(paths), len(paths))
            return cached
    if dataset["kind"] == "imagefolder":
        assert resolved_root is not None
        pixels = decode_files(manifest, resolved_root, paths, (height, width, channels), progress)
    elif dataset["kind"] == "cifar-python":
        assert resolved_root is not None
        pixels = gather_rows(manifest, paths, lambda name: read_cifar_batch(resolved_root / name)[0])
    elif dataset["kind"] == "builtin":
        pixels = gather_rows(manifest, paths, lambda name: builtin_pixels(dataset.get("name", ""), name))
    else:
        raise DatasetError(f"{manifest.name}: unknown dataset kind '{dataset['kind']}'; re-run `datadiet ingest`")
    if pixels.shape != expected_shape:
        raise DatasetError(
            f"{manifest.name}: images are {pixels.shape[1:]} but dataset.image_shape says {tuple(shape)}; "
            "re-run `datadiet ingest`"
        )
    if dataset["kind"] != "imagefolder" and progress is not None:
        progress(len(paths), len(paths))
    if cache:
        write_cached(cache_file, pixels)
    pixels.flags.writeable = False
    return pixels


def cache_key(dataset: dict[str, Any], root: Path | None, manifest: Manifest, paths: Sequence[str]) -> str:
    """sha256 of what determines the pixels: dataset identity, root, shape, and each row's id and path."""
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
    return digest.hexdigest()


def read_cached(cache_file: Path, expected_shape: tuple[int, ...]) -> np.ndarray | None:
    """The memory-mapped cache, or None when absent or unusable (then it is rebuilt)."""
    if not cache_file.is_file():
        return None
    try:
        cached = np.load(cache_file, mmap_mode="r")
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


def decode_files(
    manifest: Manifest,
    root: Path,
    paths: Sequence[str],
    shape: tuple[int, int, int],
    progress: ProgressCallback | None,
) -> np.ndarray:
    height, width, channels = shape
    pixels = np.empty((len(paths), height, width, channels), dtype=np.uint8)
    mode = pil_mode_for_channels(channels)
    root_text = str(root)

    def decode_chunk(start: int, stop: int) -> int:
        for row in range(start, stop):
            file = os.path.join(root_text, paths[row])
            image = read_image_file(file, mode, root, manifest)
            if image.size != (width, height):
                raise DatasetError(
                    f"{file}: image is {image.size[1]}x{image.size[0]} but {manifest.name} says all are "
                    f"{height}x{width}; resize the dataset to one size and re-run `datadiet ingest`"
                )
            pixels[row] = np.asarray(image).reshape(height, width, channels)
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


def read_image_file(file: str, mode: str | None, root: Path, manifest: Manifest) -> Image.Image:
    """Decode one file into `mode` (or L/RGB by its own mode when None), with one-line errors."""
    try:
        with Image.open(file) as image:
            target = mode or pil_mode_for_channels(channels_of_mode(image.mode))
            if image.mode.startswith("I;16") and target == "L":
                # convert("L") would clip 16-bit values at 255; scale 0..65535 to 0..255 instead.
                return Image.fromarray(sixteen_bit_to_uint8(np.asarray(image)))
            # convert() on an image already in `target` still copies, which loads it before the file closes.
            return image.convert(target)
    except FileNotFoundError:
        raise DatasetError(
            f"{file}: no such image (dataset root {root} from {manifest.name}); "
            "if the dataset has moved, pass --root with its new location"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DatasetError(f"{file}: cannot decode the image ({error}); remove or replace the file") from None


def sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, round half up (65535 / 257 = 255 exactly)."""
    return np.floor(values.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)


def gather_rows(manifest: Manifest, paths: Sequence[str], container_pixels: Callable[[str], np.ndarray]) -> np.ndarray:
    """Rows `container#index` picked out of whole-container arrays, each container read once."""
    located = [split_row_path(path, manifest) for path in paths]
    containers: dict[str, np.ndarray] = {}
    for name, _ in located:
        if name not in containers:
            containers[name] = container_pixels(name)
    if not located:
        return np.empty((0, 0, 0, 0), dtype=np.uint8)
    first = next(iter(containers.values()))
    pixels = np.empty((len(located), *first.shape[1:]), dtype=np.uint8)
    for row, (name, index) in enumerate(located):
        source = containers[name]
        if index >= len(source):
            raise DatasetError(
                f"{manifest.name}: path '{name}{ROW_SEPARATOR}{index}' is past the end of {name} "
                f"({len(source)} rows); re-run `datadiet ingest`"
            )
        pixels[row] = source[index]
    return pixels


def open_image(manifest: Manifest, row_index: int, root: Path | None = None) -> Image.Image:
    """One image of the manifest as a PIL image (mode L or RGB), for streaming large images."""
    dataset = dataset_info(manifest)
    path = manifest.table.column("path")[row_index].as_py() if manifest.has_column("path") else None
    if path is None:
        raise DatasetError(f"{manifest.name}: row {row_index} has no 'path'; re-run `datadiet ingest`")
    resolved_root = dataset_root(manifest, root)
    shape = dataset.get("image_shape")
    if dataset["kind"] == "imagefolder":
        assert resolved_root is not None
        mode = pil_mode_for_channels(int(shape[2])) if shape else None
        return read_image_file(os.path.join(str(resolved_root), path), mode, resolved_root, manifest)
    name, index = split_row_path(path, manifest)
    if dataset["kind"] == "cifar-python":
        assert resolved_root is not None
        container = read_cifar_batch(resolved_root / name)[0]
    elif dataset["kind"] == "builtin":
        container = builtin_pixels(dataset.get("name", ""), name)
    else:
        raise DatasetError(f"{manifest.name}: unknown dataset kind '{dataset['kind']}'; re-run `datadiet ingest`")
    pixels = container[index]
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


# -- CIFAR python batches -------------------------------------------------------------------------


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only the numpy classes they contain, so a file cannot run code."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_pickle(file: Path) -> dict[str, Any]:
    """A CIFAR python pickle as a dict with str keys (they are bytes in the Python 2 originals)."""
    try:
        with open(file, "rb") as handle:
            content = _ArraysOnlyUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(
            f"{file}: no such CIFAR batch file; if the dataset has moved, pass --root with its new location"
        ) from None
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError) as error:
        raise DatasetError(f"{file}: not a CIFAR python batch ({error})") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{file}: not a CIFAR python batch (holds a {type(content).__name__}, not a dict)")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in content.items()}


@functools.lru_cache(maxsize=6)
def _cifar_batch_cached(file: str, modified_ns: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    content = read_cifar_pickle(Path(file))
    if "data" not in content:
        raise DatasetError(f"{file}: not a CIFAR python batch (no 'data' entry)")
    data = np.asarray(content["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{file}: 'data' is {data.shape}, not N x 3072 as in CIFAR python batches")
    # Each row is the red plane, then green, then blue, each 32x32 row-major.
    pixels = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels = {
        key: np.asarray(content[key], dtype=np.int64)
        for key in ("labels", "fine_labels", "coarse_labels")
        if key in content
    }
    for key, values in labels.items():
        if len(values) != len(pixels):
            raise DatasetError(f"{file}: {len(values)} {key} for {len(pixels)} images")
    pixels.flags.writeable = False
    return pixels, labels


def read_cifar_batch(file: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pixels (N, 32, 32, 3) and label arrays of one CIFAR batch; recently read batches stay in memory."""
    try:
        modified_ns = file.stat().st_mtime_ns
    except FileNotFoundError:
        raise DatasetError(
            f"{file}: no such CIFAR batch file; if the dataset has moved, pass --root with its new location"
        ) from None
    return _cifar_batch_cached(str(file), modified_ns)


# -- built-in datasets --------------------------------------------------------------------------------


def digits_to_uint8(values: np.ndarray) -> np.ndarray:
    """scikit-learn digits hold 0..16; scaled to 0..255 as round-half-up(v * 255 / 16)."""
    return np.floor(np.asarray(values, dtype=np.float64) * 255.0 / 16.0 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (shipped inside the package, no download) as uint8 (1797, 8, 8, 1) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = digits_to_uint8(digits.images)[..., np.newaxis]
    pixels.flags.writeable = False
    return pixels, np.asarray(digits.target, dtype=np.int64)


def builtin_pixels(dataset_name: str, container: str) -> np.ndarray:
    if dataset_name == "digits" and container == "load_digits":
        return load_digits_arrays()[0]
    raise DatasetError(
        f"built-in dataset '{dataset_name}' has no container '{container}' (known: {', '.join(BUILTIN_DATASETS)}); "
        "re-run `datadiet ingest`"
    )
