"""What every dataset source shares: the interface the registry dispatches on, and the pieces two formats use.

A source is one dataset format. It LISTS its format for `ingest` (`locate` checks SOURCE, the
returned `Located` lists it into a `Listing`) and DECODES it for `load_images` and `open_image`
(`decoder` gives the pixels of one row from its `path`, `open_image` one PIL image). The dataset
document a source writes into the manifest names its `kind`, which is how the registry finds the
same source again when the manifest is decoded.
"""

from __future__ import annotations

import abc
import enum
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from datadiet_cli.errors import DatasetError

if TYPE_CHECKING:
    from datadiet_cli.data.ingest import IngestConfig

# Library functions that do long work accept `progress(done_delta, total)` callbacks of this shape.
ProgressCallback = Callable[[int, int], None]
# One row's pixels from its `path`: a uint8 (H, W, C) array. Called from several threads at once.
RowDecoder = Callable[[str], np.ndarray]
# PIL modes kept as one channel; everything else (RGB, RGBA, P, CMYK, YCbCr, ...) becomes RGB.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})
# Where rows of a container file or array point inside it: `container#row` (`data_batch_1#123`).
ROW_SEPARATOR = "#"
# What the pixel cache knows of one file behind some rows: (name, size in bytes, modification time in ns).
FileStamp = tuple[str, int, int]


class Split(str, enum.Enum):
    train = "train"
    test = "test"


@dataclass(frozen=True)
class Listing:
    """What a source holds for one split, before it becomes a manifest."""

    ids: list[str]  # stable example ids, one per row
    labels: np.ndarray  # (N,) int64 class indices into dataset["classes"]
    paths: list[str]  # where each row's pixels are, as the source's decoder reads them
    dataset: dict[str, Any]  # the manifest's `dataset` document; its "kind" names the source
    shape_sampled: int  # how many images the image_shape was read from (0: the format fixes it)
    extra_columns: dict[str, Any]  # further per-row Arrow columns (CIFAR-100's coarse_label)


@dataclass(frozen=True)
class Location:
    """Where a manifest's pixels are, as a source needs it to decode them."""

    manifest: str  # the manifest's name, for error messages
    dataset: Mapping[str, Any]  # its `dataset` document, as the source wrote it at ingest
    root: Path | None  # the dataset root (--root or the recorded one); None where the source has none


class Located(Protocol):
    """A SOURCE its format has recognised and checked (cheaply, so errors come early), ready to list."""

    def list(self, config: IngestConfig, progress: ProgressCallback | None) -> Listing:
        """Every row of the chosen split; `progress` hears of work that takes long enough to watch."""
        ...


class DatasetSource(Protocol):
    """One dataset format: how ingest recognises and lists it, and how its rows decode."""

    kind: str  # the `dataset.kind` its manifests record, by which the registry finds it again
    prefix: str | None  # SOURCE names such a dataset as PREFIX + NAME (builtin:digits); None: a folder on disk
    claims_any_folder: bool  # it takes any folder of folders, so it is tried after the formats with their own files
    has_root: bool  # its rows lie under a dataset root folder (False: shipped inside an installed package)
    short_name: str  # as named in "give an image folder, CIFAR batches, or builtin:digits"
    layout: str  # what SOURCE looks like, as named in "ingest accepts ..."

    def locate(self, config: IngestConfig, folder: Path | None) -> Located | None:
        """The checked SOURCE, or None if it is not of this format (errors where it is, but broken).

        `folder` is SOURCE as an existing, resolved directory; None for a source with a prefix.
        """
        ...

    def decoder(self, location: Location, shape: tuple[int, int, int]) -> RowDecoder:
        """Decodes rows of one manifest whose images are all `shape` (H, W, C)."""
        ...

    def open_image(self, location: Location, path: str) -> Image.Image:
        """One row's image, mode L or RGB, whatever its size."""
        ...

    def file_stamps(self, location: Location, paths: Sequence[str]) -> list[FileStamp]:
        """Size and modification time of every file these rows' pixels come from (one per image file,
        or each container file once), in a fixed order: the pixel cache is keyed on them, so a file
        replaced or deleted after ingest is noticed. Only stat() calls: fast for 50,000 files.
        Raises the same one-line DatasetError as decoding for a file that is gone."""
        ...


def channels_of_mode(mode: str) -> int:
    """1 for grayscale PIL modes (16-bit too), else 3: palette and alpha images are converted to RGB."""
    return 1 if mode in GRAYSCALE_MODES or mode.startswith("I;") else 3


def pil_mode_for_channels(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def split_row_path(path: str, manifest: str) -> tuple[str, int]:
    """`data_batch_1#123` -> ("data_batch_1", 123)."""
    container, separator, row = path.rpartition(ROW_SEPARATOR)
    if not separator or not row.isdigit():
        raise DatasetError(f"{manifest}: path '{path}' is not of the form CONTAINER#ROW; re-run `datadiet ingest`")
    return container, int(row)


class ContainerSource(abc.ABC):
    """Decoding for formats whose rows are `container#row` in whole-container arrays (N, H, W, C)."""

    @abc.abstractmethod
    def read_container(self, location: Location, name: str) -> np.ndarray:
        """Every image of container `name` as a read-only uint8 (N, H, W, C) array."""

    def container_file(self, location: Location, name: str) -> Path | None:
        """The file container `name` is read from (its one-line error if it is gone); None for a
        container that is no file of its own, which the cache then keys on its name alone."""
        return None

    def file_stamps(self, location: Location, paths: Sequence[str]) -> list[FileStamp]:
        """Each container file once, by name: the cache of any of its rows goes stale with the file."""
        stamps: list[FileStamp] = []
        for name in sorted({path.rpartition(ROW_SEPARATOR)[0] for path in paths}):
            file = self.container_file(location, name)
            if file is None:
                stamps.append((name, -1, -1))
                continue
            try:
                info = os.stat(file)
            except OSError as error:
                raise DatasetError(
                    f"{file}: cannot read the file ({error.strerror}); re-run `datadiet ingest`"
                ) from None
            stamps.append((name, info.st_size, info.st_mtime_ns))
        return stamps

    def decoder(self, location: Location, shape: tuple[int, int, int]) -> RowDecoder:
        """Rows picked out of their containers, each container read once (load_images checks `shape`)."""
        containers: dict[str, np.ndarray] = {}

        def decode(path: str) -> np.ndarray:
            name, index = split_row_path(path, location.manifest)
            if name not in containers:  # two threads racing here only read the container twice
                containers[name] = self.read_container(location, name)
            container = containers[name]
            if index >= len(container):
                raise DatasetError(
                    f"{location.manifest}: path '{name}{ROW_SEPARATOR}{index}' is past the end of {name} "
                    f"({len(container)} rows); re-run `datadiet ingest`"
                )
            return container[index]

        return decode

    def open_image(self, location: Location, path: str) -> Image.Image:
        name, index = split_row_path(path, location.manifest)
        pixels = self.read_container(location, name)[index]
        return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
