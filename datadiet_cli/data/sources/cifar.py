"""CIFAR-10/100 python batches: `data_batch_1..5`, `test_batch`, `batches.meta` / `train`, `test`, `meta`.

Rows keep the official order. Ids are `<split>/<index in that order>` (`train/00042`); paths
point into the batch file, `data_batch_1#123`. The batches are pickles, read by an unpickler
that builds numpy arrays and nothing else, so a batch file cannot run code.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from datadiet_cli.data.sources.base import (
    ROW_SEPARATOR,
    ContainerSource,
    Listing,
    Location,
    ProgressCallback,
    Split,
)
from datadiet_cli.errors import DatasetError, OptionError

if TYPE_CHECKING:
    from datadiet_cli.data.ingest import IngestConfig

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
# The folders the official archives unpack to, accepted as SOURCE's only content.
CIFAR_PACKAGE_FOLDERS = ("cifar-10-batches-py", "cifar-100-python")
# Every batch holds N x 3072 bytes: 32x32 images, red plane, then green, then blue.
IMAGE_SHAPE = (32, 32, 3)


@dataclass(frozen=True)
class CifarBatches:
    """The batch files of one split, found by `locate` and all present."""

    directory: Path  # the folder holding the batches (SOURCE or its cifar-10-batches-py/...)
    split: Split  # the split listed
    batches: tuple[str, ...]  # batch file names of the split, in the official order

    def list(self, config: IngestConfig, progress: ProgressCallback | None) -> Listing:
        """Rows of the split's batches in order (read in one go, so `progress` hears nothing)."""
        is_cifar10 = (self.directory / "batches.meta").is_file()
        meta = read_cifar_pickle(self.directory / ("batches.meta" if is_cifar10 else "meta"))
        class_key, label_key = ("label_names", "labels") if is_cifar10 else ("fine_label_names", "fine_labels")
        if class_key not in meta:
            raise DatasetError(f"{self.directory}: the meta file has no '{class_key}'; is this CIFAR python data?")
        classes = names_of(meta[class_key])
        labels: list[np.ndarray] = []
        coarse: list[np.ndarray] = []
        paths: list[str] = []
        for name in self.batches:
            pixels, batch_labels = read_cifar_batch(self.directory / name)
            if label_key not in batch_labels:
                raise DatasetError(f"{self.directory / name}: no '{label_key}' entry; is this CIFAR python data?")
            labels.append(batch_labels[label_key])
            if "coarse_labels" in batch_labels:
                coarse.append(batch_labels["coarse_labels"])
            paths.extend(f"{name}{ROW_SEPARATOR}{row}" for row in range(len(pixels)))
        all_labels = np.concatenate(labels)
        if len(all_labels) and (all_labels.min() < 0 or all_labels.max() >= len(classes)):
            raise DatasetError(f"{self.directory}: labels run outside the {len(classes)} classes of the meta file")
        width = max(5, len(str(len(paths) - 1)))
        ids = [f"{self.split.value}/{index:0{width}d}" for index in range(len(paths))]
        dataset: dict[str, Any] = {
            "kind": CifarPython.kind,
            "name": "cifar10" if is_cifar10 else "cifar100",
            "root": str(self.directory),
            "classes": classes,
            "split": self.split.value,
            "image_shape": list(IMAGE_SHAPE),
            "source": config.source,
        }
        extra: dict[str, Any] = {}
        if coarse and len(coarse) == len(labels):
            extra["coarse_label"] = pa.array(np.concatenate(coarse), type=pa.int64())
            if "coarse_label_names" in meta:
                dataset["coarse_classes"] = names_of(meta["coarse_label_names"])
        # The batch format fixes the shape, so no header needs sampling.
        return Listing(ids, all_labels, paths, dataset, 0, extra)


class CifarPython(ContainerSource):
    """CIFAR python batches; a row is one image of a batch file under the dataset root."""

    kind: str = "cifar-python"
    prefix: str | None = None
    claims_any_folder: bool = False
    has_root: bool = True
    short_name: str = "CIFAR batches"
    layout: str = "CIFAR-10/100 python batches (data_batch_1..5 + test_batch + batches.meta, or train + test + meta)"

    def locate(self, config: IngestConfig, folder: Path | None) -> CifarBatches | None:
        directory = find_cifar_batches(folder) if folder is not None else None
        if directory is None:
            return None
        split = config.split or Split.train
        if (directory / "batches.meta").is_file():
            batches = list(CIFAR10_TRAIN_BATCHES) if split is Split.train else ["test_batch"]
        else:
            batches = [split.value]
        missing = [name for name in batches if not (directory / name).is_file()]
        if missing and split is Split.test:
            raise OptionError(f"{config.source}: has no test split ({missing[0]} is missing); use --split train")
        if missing:
            raise DatasetError(
                f"{directory}: {', '.join(missing)} missing; the CIFAR train split needs every batch file "
                "(re-extract the archive)"
            )
        return CifarBatches(directory, split, tuple(batches))

    def read_container(self, location: Location, name: str) -> np.ndarray:
        assert location.root is not None  # images.dataset_root gives every source with has_root a root
        return read_cifar_batch(location.root / name)[0]

    def container_file(self, location: Location, name: str) -> Path:
        assert location.root is not None
        file = location.root / name
        if not file.is_file():
            raise missing_batch(file)
        return file


def find_cifar_batches(directory: Path) -> Path | None:
    """The folder holding CIFAR python batches: SOURCE itself or its cifar-10-batches-py/cifar-100-python."""
    for candidate in (directory, *(directory / name for name in CIFAR_PACKAGE_FOLDERS)):
        if (candidate / "batches.meta").is_file() or (
            (candidate / "meta").is_file() and ((candidate / "train").is_file() or (candidate / "test").is_file())
        ):
            return candidate
    return None


def names_of(values: Any) -> list[str]:
    """Class names as str (they are bytes in the Python 2 originals)."""
    return [name.decode() if isinstance(name, bytes) else str(name) for name in values]


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
        raise missing_batch(file) from None
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
        raise missing_batch(file) from None
    return _cifar_batch_cached(str(file), modified_ns)


def missing_batch(file: Path) -> DatasetError:
    return DatasetError(
        f"{file}: no such CIFAR batch file; if the dataset has moved, pass --root with its new location"
    )
