"""`builtin:digits`: scikit-learn's 1,797 8x8 handwritten digits, shipped inside the package (no download).

Ids are the index in scikit-learn's order (`0042`); paths point into the one array,
`load_digits#42`. The split is fixed and stratified: every 5th example of each class is test.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from datadiet_cli.data.sources.base import ROW_SEPARATOR, ContainerSource, Listing, Location, ProgressCallback, Split
from datadiet_cli.errors import DatasetError, OptionError

if TYPE_CHECKING:
    from datadiet_cli.data.ingest import IngestConfig

# SOURCE names a built-in dataset as builtin:NAME.
PREFIX = "builtin:"
# Names accepted by `datadiet ingest builtin:NAME` (each shipped inside an installed package).
BUILTIN_DATASETS = ("digits",)
# The one container of builtin:digits: every image, in scikit-learn's order.
DIGITS_CONTAINER = "load_digits"


@dataclass(frozen=True)
class DigitsSplit:
    """One split of builtin:digits, checked by `locate`."""

    name: str  # the NAME of builtin:NAME
    split: Split  # the split listed

    def list(self, config: IngestConfig, progress: ProgressCallback | None) -> Listing:
        """Rows of the split in scikit-learn's order (in memory already, so `progress` hears nothing)."""
        pixels, labels = load_digits_arrays()
        in_split = digits_split(labels, config.digits_test_every) == (self.split is Split.test)
        rows = np.flatnonzero(in_split)
        dataset = {
            "kind": BuiltinDigits.kind,
            "name": self.name,
            "root": None,
            "classes": [str(digit) for digit in range(10)],
            "split": self.split.value,
            "image_shape": list(pixels.shape[1:]),
            "source": config.source,
        }
        ids = [f"{row:04d}" for row in rows]
        paths = [f"{DIGITS_CONTAINER}{ROW_SEPARATOR}{row}" for row in rows]
        return Listing(ids, labels[rows], paths, dataset, 0, {})


class BuiltinDigits(ContainerSource):
    """A dataset shipped inside an installed package, named on the command line as builtin:NAME."""

    kind: str = "builtin"
    prefix: str | None = PREFIX
    claims_any_folder: bool = False
    has_root: bool = False
    short_name: str = "builtin:digits"
    layout: str = f"builtin:NAME ({', '.join(BUILTIN_DATASETS)})"

    def locate(self, config: IngestConfig, folder: Path | None) -> DigitsSplit:
        name = config.source[len(PREFIX) :]
        if name not in BUILTIN_DATASETS:
            raise OptionError(f"unknown built-in dataset '{name}'; known: {', '.join(BUILTIN_DATASETS)}")
        return DigitsSplit(name, config.split or Split.train)

    def read_container(self, location: Location, name: str) -> np.ndarray:
        dataset_name = location.dataset.get("name", "")
        if dataset_name == "digits" and name == DIGITS_CONTAINER:
            return load_digits_arrays()[0]
        raise DatasetError(
            f"built-in dataset '{dataset_name}' has no container '{name}' (known: {', '.join(BUILTIN_DATASETS)}); "
            "re-run `datadiet ingest`"
        )

    def container_file(self, location: Location, name: str) -> Path | None:
        """scikit-learn's digits.csv.gz, found without importing scikit-learn (a cache hit never does)."""
        spec = importlib.util.find_spec("sklearn")
        if spec is None or spec.origin is None:
            return None
        file = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        return file if file.is_file() else None


def digits_split(labels: np.ndarray, test_every: int) -> np.ndarray:
    """True where an example is in the digits test split: every `test_every`-th example of its class.

    Stratified and fixed: within each class, in scikit-learn's order, examples number
    1, 2, 3, ...; those numbered test_every, 2*test_every, ... are test (355 of 1,797 for 5).
    """
    is_test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        is_test[members[test_every - 1 :: test_every]] = True
    return is_test


def digits_to_uint8(values: np.ndarray) -> np.ndarray:
    """scikit-learn digits hold 0..16; scaled to 0..255 as round-half-up(v * 255 / 16)."""
    return np.floor(np.asarray(values, dtype=np.float64) * 255.0 / 16.0 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (1797, 8, 8, 1) pixels and (1797,) int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = digits_to_uint8(digits.images)[..., np.newaxis]
    pixels.flags.writeable = False
    return pixels, np.asarray(digits.target, dtype=np.int64)
