"""The registry of dataset sources: the one place that turns a SOURCE or a manifest into its format.

`ingest` asks `locate` which source SOURCE is; `load_images` and `open_image` ask `source_of`
which source wrote a manifest (by its `dataset.kind`). A new format is one module beside these
(listing and decoding it, see base.DatasetSource) and one entry in SOURCES.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from datadiet_cli.data.sources.base import DatasetSource, Located
from datadiet_cli.data.sources.cifar import CifarPython
from datadiet_cli.data.sources.digits import BuiltinDigits
from datadiet_cli.data.sources.imagefolder import ImageFolder
from datadiet_cli.errors import DatasetError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from datadiet_cli.data.ingest import IngestConfig

# Every format ingest reads, in the order its messages name them.
SOURCES: tuple[DatasetSource, ...] = (ImageFolder(), CifarPython(), BuiltinDigits())
# A SOURCE file named like this is an archive the user meant to unpack.
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz")


def locate(config: IngestConfig) -> Located:
    """Recognise SOURCE and check the split exists; every error about SOURCE itself is raised here."""
    for source in SOURCES:
        if source.prefix is not None and config.source.startswith(source.prefix):
            located = source.locate(config, None)
            if located is not None:
                return located
    folder = existing_folder(config.source)
    folder_formats = [source for source in SOURCES if source.prefix is None]
    # A folder of folders is an ImageFolder tree to torchvision, so formats with files of their own go first.
    for source in sorted(folder_formats, key=lambda source: source.claims_any_folder):
        located = source.locate(config, folder)
        if located is not None:
            return located
    raise DatasetError(f"{config.source}: not a recognisable dataset; ingest accepts {accepted_layouts()}")


def existing_folder(text: str) -> Path:
    """SOURCE as a resolved directory, or the error saying what it is instead."""
    directory = Path(text).expanduser()
    if not directory.exists():
        raise DatasetError(f"{text}: no such directory; give {or_list(source.short_name for source in SOURCES)}")
    if not directory.is_dir():
        if text.lower().endswith(ARCHIVE_SUFFIXES):
            raise DatasetError(f"{text}: is an archive; unpack it first (e.g. tar -xzf {text}) and give the folder")
        raise DatasetError(f"{text}: is a file, not a dataset folder; ingest accepts {accepted_layouts()}")
    return directory.resolve()


def source_of(dataset: Mapping[str, Any], manifest: str) -> DatasetSource:
    """The source whose rows a manifest lists, by the `dataset.kind` ingest recorded."""
    for source in SOURCES:
        if source.kind == dataset["kind"]:
            return source
    raise DatasetError(f"{manifest}: unknown dataset kind '{dataset['kind']}'; re-run `datadiet ingest`")


def accepted_layouts() -> str:
    return or_list(source.layout for source in SOURCES)


def or_list(items: Iterable[str]) -> str:
    """The items as `a, b, or c`."""
    *first, last = items
    return f"{', '.join(first)}, or {last}" if first else last
