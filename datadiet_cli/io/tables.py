"""Parquet files that are not manifests: embeddings (id + vector) and plain per-example tables.

Training dynamics and predictions are plain tables; their metadata is JSON in the schema.
Embeddings are one Parquet file, or (written under torchrun, one part per rank) a folder of
part-00000.parquet, part-00001.parquet, ... that pyarrow, DuckDB and polars read as one table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datadiet_cli.errors import ColumnError, DatadietError, EmbeddingError, OptionError, OutputError, TableError
from datadiet_cli.io.files import atomic_path, stale_temporaries, temporary_name, to_jsonable, unsearchable_folder


def read_parquet(
    path: Path, what: str, error: type[DatadietError], *, missing: str = "no such file", fix: str = ""
) -> pa.Table:
    """The whole Parquet file, or one `error` line: `missing` when absent, else 'not WHAT (reason)FIX'."""
    try:
        found = path.is_file()
    except PermissionError:  # a folder on the way may not be looked into
        folder = unsearchable_folder(path)
        raise error(
            f"{path}: the folder {folder} may not be looked into (permission denied); fix its permissions"
        ) from None
    if not found:
        raise error(f"{path}: {missing}")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: cannot be read (permission denied); fix its permissions or copy the file")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as failure:  # not Parquet, damaged, or a type Arrow cannot read
        reason = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
        raise error(f"{path}: not {what} ({reason}){fix}") from None


# -- embeddings files ---------------------------------------------------------------------

EMBEDDINGS_METADATA_KEY = b"datadiet_embeddings"


def write_embeddings(
    ids: Sequence[str] | np.ndarray, matrix: np.ndarray, path: Path | str, metadata: Mapping[str, Any]
) -> Path:
    """Write per-example vectors as Parquet: `id` (string) + `embedding` (fixed-size list of float32).

    `metadata` (e.g. which encoder made them) is stored as JSON in the schema. Atomic.
    """
    path = Path(path)
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise ValueError(f"embeddings must be (len(ids), D); got {matrix.shape} for {len(ids)} ids")
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
    table = pa.table({"id": pa.array(ids, type=pa.string()), "embedding": vectors})
    encoded = json.dumps(to_jsonable(dict(metadata))).encode()
    table = table.replace_schema_metadata({EMBEDDINGS_METADATA_KEY: encoded})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, compression="zstd")
    return path


def read_embeddings(path: Path | str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read an embeddings Parquet file -> (ids as str array, float32 (N, D) matrix, metadata dict).

    Accepts any Parquet file with a string `id` column and an `embedding` column holding a
    list of floats per row, all of one length (fixed-size or variable-size lists).
    """
    path = Path(path)
    table = read_parquet(path, "a Parquet embeddings file", TableError, missing="no such embeddings file")
    for column in ("id", "embedding"):
        if column not in table.column_names:
            raise ColumnError(
                f"{path}: no '{column}' column; an embeddings file has 'id' and a float list column 'embedding'"
            )
    ids = table.column("id")
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        raise ColumnError(f"{path}: column 'id' is {ids.type}; ids must be strings")
    if ids.null_count:
        raise ColumnError(f"{path}: column 'id' has {ids.null_count} null values")
    vectors = table.column("embedding").combine_chunks()
    matrix = _list_column_matrix(path, vectors)
    raw = table.schema.metadata or {}
    try:
        metadata = json.loads(raw[EMBEDDINGS_METADATA_KEY]) if EMBEDDINGS_METADATA_KEY in raw else {}
    except json.JSONDecodeError:
        metadata = {}
    return ids.to_numpy(zero_copy_only=False).astype(object), matrix, metadata


def read_embedding_ids(path: Path) -> np.ndarray:
    """The `id` column alone of an embeddings file (str object array), checked as `read_embeddings` checks it."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as failure:
        reason = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
        raise TableError(f"{path}: not a Parquet embeddings file ({reason})") from None
    for column in ("id", "embedding"):
        if column not in schema.names:
            raise ColumnError(
                f"{path}: no '{column}' column; an embeddings file has 'id' and a float list column 'embedding'"
            )
    ids = pq.read_table(path, columns=["id"]).column("id")
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        raise ColumnError(f"{path}: column 'id' is {ids.type}; ids must be strings")
    if ids.null_count:
        raise ColumnError(f"{path}: column 'id' has {ids.null_count} null values")
    return ids.to_numpy(zero_copy_only=False).astype(object)


def read_embedding_matrix(path: Path) -> np.ndarray:
    """The `embedding` column alone of an embeddings file, as a float32 (N, D) matrix."""
    try:
        vectors = pq.read_table(path, columns=["embedding"]).column("embedding").combine_chunks()
    except (pa.ArrowException, OSError) as failure:
        reason = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
        raise TableError(f"{path}: not a Parquet embeddings file ({reason})") from None
    return _list_column_matrix(path, vectors)


def _list_column_matrix(path: Path, vectors: pa.Array) -> np.ndarray:
    if vectors.null_count:
        raise ColumnError(f"{path}: column 'embedding' has {vectors.null_count} null rows")
    if pa.types.is_fixed_size_list(vectors.type):
        width = vectors.type.list_size
    elif pa.types.is_list(vectors.type) or pa.types.is_large_list(vectors.type):
        lengths = np.diff(vectors.offsets.to_numpy())
        if len(lengths) and (lengths != lengths[0]).any():
            row = int(np.flatnonzero(lengths != lengths[0])[0])
            raise ColumnError(
                f"{path}: column 'embedding' rows differ in length ({lengths[0]} at row 0, {lengths[row]} at row {row}); "
                "every embedding needs the same dimension"
            )
        width = int(lengths[0]) if len(lengths) else 0
    else:
        raise ColumnError(f"{path}: column 'embedding' is {vectors.type}; it must be a list of floats per row")
    values = vectors.flatten()
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise ColumnError(f"{path}: column 'embedding' holds {values.type}, not floats")
    if values.null_count:
        raise ColumnError(f"{path}: column 'embedding' has {values.null_count} null values inside its lists")
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(vectors), width)


# -- folders of embeddings parts (one per rank) -------------------------------------------------

PART_NAME = re.compile(r"part-([0-9]{5})\.parquet")
# Metadata keys of a part: its number and how many parts were written together.
PART_KEY, PARTS_KEY = "part", "parts"


def part_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


def embedding_parts(folder: Path) -> list[Path]:
    """The Parquet files of an embeddings folder, in part order, checked to be one complete write.

    Parts datadiet wrote carry their number and the number written; every one must be there, and
    all must come from one write (the same count and encoder). A folder of other Parquet files
    (another tool's dataset) is read in name order.
    """
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(".parquet") and name[0] not in "._")
    except OSError as error:
        raise TableError(f"--embeddings {folder}: the folder cannot be read ({error.strerror or error})") from None
    if not names:
        raise TableError(
            f"--embeddings {folder}: a folder without Parquet files; give the folder --save-embeddings wrote under "
            "torchrun (part-00000.parquet, ...) or one embeddings file"
        )
    described = {name: read_embeddings_metadata(folder / name) for name in names}
    numbered = {name: meta for name, meta in described.items() if PARTS_KEY in meta}
    if not numbered:
        return [folder / name for name in names]
    first_name, first = next(iter(numbered.items()))
    parts = first[PARTS_KEY]
    if not isinstance(parts, int) or parts < 1:
        raise EmbeddingError(f"--embeddings {folder}: {first_name} says it is one of {parts!r} parts; save the "
                             "embeddings again")  # fmt: skip
    for name, meta in described.items():
        if PARTS_KEY not in meta or meta[PARTS_KEY] != parts or meta.get("encoder") != first.get("encoder"):
            raise EmbeddingError(
                f"--embeddings {folder}: {name} and {first_name} come from different writes (another number of "
                "parts or another encoder); save the embeddings again into a new folder"
            )
        if PART_NAME.fullmatch(name) is None or meta.get(PART_KEY) != int(name[5:10]):
            raise EmbeddingError(
                f"--embeddings {folder}: {name} is not named for the part it holds (part {meta.get(PART_KEY)}); "
                "keep the names --save-embeddings gave the parts"
            )
        if not 0 <= meta[PART_KEY] < parts:
            raise EmbeddingError(
                f"--embeddings {folder}: {name} is out of range: the write had {parts} parts, "
                f"part-00000.parquet to {part_name(parts - 1)}; remove it or save the embeddings again"
            )
    missing = [part_name(part) for part in range(parts) if part_name(part) not in described]
    if missing:
        raise EmbeddingError(
            f"--embeddings {folder}: {missing[0]} is missing ({len(missing)} of the {parts} parts written together "
            "are); copy the whole folder, or save the embeddings again"
        )
    return [folder / part_name(part) for part in range(parts)]


def read_embeddings_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata of an embeddings file (e.g. its encoder), without reading its rows."""
    try:
        raw = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as failure:
        reason = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
        raise TableError(f"{path}: not a Parquet embeddings file ({reason})") from None
    try:
        metadata = json.loads(raw[EMBEDDINGS_METADATA_KEY]) if EMBEDDINGS_METADATA_KEY in raw else {}
    except json.JSONDecodeError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def check_parts_folder(folder: Path) -> None:
    """An existing folder may be replaced by a new write only if it holds nothing but embeddings parts."""
    if not folder.is_dir():
        return
    others = sorted(name for name in os.listdir(folder) if PART_NAME.fullmatch(name) is None)
    if others:
        raise OptionError(
            f"--save-embeddings {folder}: the folder holds other files than embeddings parts (e.g. {others[0]}); "
            "give a new folder, or one an earlier --save-embeddings wrote"
        )


def staging_folder(target: Path, pid: int) -> Path:
    """Where a write of the folder `target` happens before it appears whole: `.NAME.tmp-PID`, the name
    every datadiet temporary has, so that what a killed writer left is recognised and removed."""
    return target.with_name(temporary_name(target, pid))


def prepare_staging(target: Path, pid: int) -> Path:
    """An empty staging folder for `target`; staging folders killed writers left are removed first."""
    staging = staging_folder(target, pid)
    for stale in [*stale_temporaries(target), staging]:
        shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as error:
        raise OutputError(f"{target}: could not be written ({error.strerror or error}); {_FOLDER_FIX}") from None
    return staging


def publish_folder(staging: Path, target: Path) -> None:
    """Put the finished staging folder in place of `target` (an earlier write is replaced only now)."""
    retired = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        check_parts_folder(target)  # nothing else appeared there since the command started
    try:
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
    except OSError as error:
        if retired.exists() and not target.exists():
            os.replace(retired, target)  # the earlier write stays as it was
        raise OutputError(f"{target}: could not be written ({error.strerror or error}); {_FOLDER_FIX}") from None
    shutil.rmtree(retired, ignore_errors=True)


_FOLDER_FIX = "check the folder's permissions and free space, or choose another --save-embeddings path"


# -- other tables (training dynamics, predictions) ------------------------------------------

TABLE_METADATA_KEY = b"datadiet_table"


def write_table(columns: Mapping[str, np.ndarray], path: Path | str, metadata: Mapping[str, Any]) -> Path:
    """Write plain columns (numpy arrays of one length; strings as object arrays) as Parquet, atomically.

    For per-example files that are not manifests (train's dynamics, evaluate's predictions);
    `metadata` is stored as JSON in the schema and comes back from `read_table_metadata`.
    """
    path = Path(path)
    table = pa.table({name: pa.array(values) for name, values in columns.items()})
    encoded = json.dumps(to_jsonable(dict(metadata))).encode()
    table = table.replace_schema_metadata({TABLE_METADATA_KEY: encoded})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, compression="zstd")
    return path


def read_table(path: Path | str) -> dict[str, np.ndarray]:
    """The columns of a Parquet file as numpy arrays (strings as object arrays), by column name."""
    table = read_parquet(Path(path), "a Parquet file", TableError)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def read_table_metadata(path: Path | str) -> dict[str, Any]:
    """The JSON metadata `write_table` stored, without reading the rows ({} when there is none)."""
    path = Path(path)
    try:
        raw = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as error:
        raise TableError(f"{path}: not a Parquet file ({error})") from None
    try:
        return json.loads(raw[TABLE_METADATA_KEY]) if TABLE_METADATA_KEY in raw else {}
    except json.JSONDecodeError:
        return {}
