"""File helpers every writer shares: atomic replacement, digests, JSON-safe config values.

Every datadiet output (manifest, run-folder file, report) is written through `atomic_path`,
so a failed or interrupted step leaves no partial file behind.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from datadiet_cli.errors import OptionError


def describe_file(path: Path) -> dict[str, Any]:
    """Absolute path, sha256 and size of a file, so a later step can check it is unchanged."""
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": file_digest(path), "bytes": path.stat().st_size}


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_jsonable(value: Any) -> Any:
    """Config dataclasses, enums, paths and numpy scalars as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def check_output(output: Path | str, *inputs: Path | str) -> Path:
    """Refuse an output path that would overwrite one of the step's inputs."""
    output = Path(output)
    for source in inputs:
        if Path(source).resolve() == output.resolve():
            raise OptionError(f"{output}: the output would overwrite the input; choose another -o path")
    if output.is_dir():
        raise OptionError(f"{output}: is a directory; -o takes a .parquet file path")
    return output
