"""The Parquet manifest: the one file format every datadiet step reads and writes.

This module alone reads and writes manifests. A manifest is one row per example with a
stable string `id`, an int64 `label` (null for unlabeled data), optional `path`/`split`,
float64 score columns oriented higher = harder, and a JSON document under the schema
metadata key `datadiet` that describes the dataset, every score column and the lineage
of every step that produced the file. The contract is written out in docs/manifest.md.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datadiet_cli import __version__
from datadiet_cli.errors import ColumnError, LineageError, ManifestError
from datadiet_cli.io.files import atomic_path, to_jsonable
from datadiet_cli.io.lineage import Lineage, LineageStep
from datadiet_cli.io.tables import read_parquet

FORMAT_VERSION = 1
METADATA_KEY = b"datadiet"
HIGHER_IS_HARDER = "higher_is_harder"
INT64_MAX = 2**63 - 1


def empty_metadata() -> dict[str, Any]:
    """The metadata document of a manifest that no datadiet step has described yet."""
    return {"format_version": FORMAT_VERSION, "dataset": {}, "scores": {}, "lineage": []}


@dataclass(frozen=True)
class Manifest:
    """An in-memory manifest: the Arrow table plus its `datadiet` metadata document."""

    table: pa.Table
    meta: dict[str, Any] = field(default_factory=empty_metadata)
    source: Path | None = None  # the file it was read from, for error messages and lineage

    # -- reading columns -------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def name(self) -> str:
        return str(self.source) if self.source is not None else "<manifest>"

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("dataset", {}).get("classes") or [])

    def has_column(self, column: str) -> bool:
        return column in self.table.column_names

    def ids(self) -> np.ndarray:
        """The `id` column as a numpy array of Python strings."""
        return self.table.column("id").to_numpy(zero_copy_only=False)

    def labels(self) -> np.ndarray:
        """The `label` column as int64, raising if it is absent or has nulls."""
        return self._non_null_int64("label", needed_for="this step needs a label for every example")

    def groups(self, column: str) -> np.ndarray:
        """An integer grouping column (`label` or `cluster`) as int64, no nulls allowed."""
        hint = {
            "label": "use --by cluster for unlabeled data",
            "cluster": "run `datadiet cluster` first to add it",
        }.get(column, "choose another column")
        return self._non_null_int64(column, needed_for=hint)

    def _non_null_int64(self, column: str, needed_for: str) -> np.ndarray:
        if column not in self.table.column_names:
            raise ColumnError(f"{self.name}: no column '{column}'; {needed_for}")
        values = self.table.column(column)
        if values.null_count:
            raise ColumnError(f"{self.name}: column '{column}' has {values.null_count} null values; {needed_for}")
        return values.to_numpy().astype(np.int64, copy=False)

    def score(self, column: str) -> np.ndarray:
        """A score column as float64, refusing missing columns, nulls, NaN and inf."""
        if column not in self.table.column_names:
            raise ColumnError(self._no_score_column(column))
        values = self.table.column(column)
        if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
            raise ColumnError(f"{self.name}: column '{column}' is {values.type}, not a numeric score")
        if values.null_count:
            raise ColumnError(f"{self.name}: score column '{column}' has {values.null_count} null values")
        array = values.to_numpy().astype(np.float64, copy=False)
        bad = ~np.isfinite(array)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ColumnError(
                f"{self.name}: score column '{column}' has {int(bad.sum())} NaN/inf values "
                f"(first at id '{self.table.column('id')[first].as_py()}')"
            )
        return array

    def numeric_columns(self) -> list[str]:
        """Columns that could be scores: numeric, other than the `label` and `cluster` groupings."""
        return [
            field.name
            for field in self.table.schema
            if field.name not in ("label", "cluster")
            and (pa.types.is_floating(field.type) or pa.types.is_integer(field.type))
        ]

    def _no_score_column(self, column: str) -> str:
        """'no score column X', the columns there are, and the close match when X looks misspelt."""
        described = sorted(name for name in self.meta.get("scores", {}) if name in self.table.column_names)
        if described:
            known = f" (score columns here: {', '.join(described)})"
        else:  # a plain Parquet file: its numeric columns are what --score can name
            numeric = self.numeric_columns()
            known = f" (numeric columns here: {', '.join(numeric)})" if numeric else " (it has no numeric columns)"
        candidates = list(dict.fromkeys(described + self.numeric_columns()))
        close = difflib.get_close_matches(column, candidates, n=1, cutoff=0.6)
        if not close:  # a difference of case only ('EL2N' for 'el2n')
            close = [name for name in candidates if name.lower() == column.lower()][:1]
        fix = f"did you mean '{close[0]}'?" if close else "add it with `datadiet score` or `datadiet cluster`"
        return f"{self.name}: no score column '{column}'{known}; {fix}"

    # -- making new manifests ----------------------------------------------------------
    def take(self, indices: np.ndarray) -> Manifest:
        """The rows at `indices`, in that order, with the same metadata."""
        return dataclasses.replace(self, table=self.table.take(pa.array(indices, type=pa.int64())))

    def with_column(self, name: str, values: np.ndarray | pa.Array, type: pa.DataType | None = None) -> Manifest:
        """Add or replace a column (keeping its position when it exists)."""
        array = pa.array(values, type=type)
        if name in self.table.column_names:
            table = self.table.set_column(self.table.column_names.index(name), name, array)
        else:
            table = self.table.append_column(name, array)
        return dataclasses.replace(self, table=table)

    def with_score(self, column: str, values: np.ndarray, metric: str, params: Mapping[str, Any]) -> Manifest:
        """Add a float64 score column and describe it in the metadata (higher = harder)."""
        manifest = self.with_column(column, np.asarray(values, dtype=np.float64), pa.float64())
        meta = copy.deepcopy(manifest.meta)
        meta.setdefault("scores", {})[column] = {
            "metric": metric,
            "direction": HIGHER_IS_HARDER,
            "params": to_jsonable(params),
        }
        return dataclasses.replace(manifest, meta=meta)

    def with_meta(self, **updates: Any) -> Manifest:
        meta = copy.deepcopy(self.meta)
        meta.update(to_jsonable(updates))
        return dataclasses.replace(self, meta=meta)

    def with_lineage(self, step: LineageStep) -> Manifest:
        meta = copy.deepcopy(self.meta)
        meta.setdefault("lineage", []).append(step.to_json())
        return dataclasses.replace(self, meta=meta)

    def lineage(self) -> Lineage:
        """The steps that made this manifest, oldest first (typed; see io/lineage.py)."""
        return Lineage.of(self.meta.get("lineage"), self.name)


# -- reading ------------------------------------------------------------------------------


def read_manifest(path: Path | str) -> Manifest:
    """Read and validate a manifest; every contract violation is a one-line ManifestError."""
    path = Path(path)
    if str(path) == "-":
        raise ManifestError("-: datadiet reads manifests from files, not standard input; give a .parquet path")
    if os.path.isdir(path):  # False where a folder on the way may not be looked into: read_parquet says so
        raise ManifestError(f"{path}: is a directory, not a Parquet manifest")
    table = read_parquet(path, "a Parquet manifest", ManifestError, fix="; create one with `datadiet ingest`")
    meta = _decode_metadata(path, table.schema.metadata or {})
    table = table.replace_schema_metadata(None)
    manifest = Manifest(table=table, meta=meta, source=path)
    return validate(manifest)


def _decode_metadata(path: Path, raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    if METADATA_KEY not in raw:
        # A plain Parquet file from pandas/polars/DuckDB is welcome: it just has no history yet.
        return empty_metadata()
    try:
        meta = json.loads(raw[METADATA_KEY])
    except (ValueError, RecursionError) as error:  # JSONDecodeError, bad UTF-8, absurd nesting
        reason = {RecursionError: "nested too deeply", UnicodeDecodeError: "not UTF-8"}.get(type(error), str(error))
        raise ManifestError(f"{path}: the 'datadiet' schema metadata is not valid JSON ({reason}){_REWRITE}") from None
    if not isinstance(meta, dict):
        raise ManifestError(
            f"{path}: the 'datadiet' schema metadata is {_json_kind(meta)}, not a JSON object{_REWRITE}"
        )
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: manifest format version {_short(version)} is not supported "
            f"(this datadiet {__version__} reads version {FORMAT_VERSION})"
        )
    for key, default in empty_metadata().items():
        if meta.get(key) is None:
            meta[key] = default
    check_metadata_shape(path, meta)
    return meta


_REWRITE = "; write it again with datadiet (or drop its 'datadiet' schema metadata)"

# What each metadata field must be, where a later step reads it (None = null allowed).
_DATASET_FIELDS: dict[str, tuple[type, ...]] = {
    "kind": (str,),
    "name": (str,),
    "root": (str,),
    "source": (str,),
    "split": (str,),
    "classes": (list,),
    "image_shape": (list,),
}
_STEP_FIELDS: dict[str, tuple[type, ...]] = {
    "command": (str,),
    "argv": (str,),
    "version": (str,),
    "time": (str,),
    "options": (dict,),
    "inputs": (list,),
    "stats": (dict,),
}
# Lineage stats that later steps read as counts: prune's sizes (balance; train reads rows_in as the full size).
_COUNT_STATS = {"prune": ("rows_in", "rows_kept", "full_size")}
_REQUIRED_STATS = {"prune": ("rows_in",)}


def check_metadata_shape(path: Path | str, meta: Mapping[str, Any]) -> None:
    """Refuse metadata that is valid JSON of the wrong shape (docs/manifest.md), naming the field."""

    def refuse(where: str, value: Any, expected: str) -> ManifestError:
        return ManifestError(f"{path}: metadata '{where}' is {_json_kind(value)}, not {expected}{_REWRITE}")

    def expect(where: str, value: Any, types: tuple[type, ...], expected: str) -> None:
        if value is not None and not isinstance(value, types):
            raise refuse(where, value, expected)

    dataset = meta["dataset"]
    expect("dataset", dataset, (dict,), "an object")
    for key, types in _DATASET_FIELDS.items():
        expect(f"dataset.{key}", dataset.get(key), types, "a list" if list in types else "a string")
    for index, name in enumerate(dataset.get("classes") or []):
        expect(f"dataset.classes[{index}]", name, (str,), "a string (a class name)")
    for index, size in enumerate(dataset.get("image_shape") or []):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise refuse(f"dataset.image_shape[{index}]", size, "a positive integer")
    scores = meta["scores"]
    expect("scores", scores, (dict,), "an object (score column -> description)")
    for column, description in scores.items():
        expect(f"scores.{column}", description, (dict,), "an object")
    lineage = meta["lineage"]
    if not isinstance(lineage, list):
        raise LineageError(f"{path}: metadata 'lineage' is {_json_kind(lineage)}, not a list of steps{_REWRITE}")
    for index, step in enumerate(lineage):
        where = f"lineage[{index}]"
        if not isinstance(step, dict):
            raise LineageError(f"{path}: metadata '{where}' is {_json_kind(step)}, not an object{_REWRITE}")
        for key, types in _STEP_FIELDS.items():
            if step.get(key) is not None and not isinstance(step[key], types):
                expected = {dict: "an object", list: "a list", str: "a string"}[types[0]]
                raise LineageError(
                    f"{path}: metadata '{where}.{key}' is {_json_kind(step[key])}, not {expected}{_REWRITE}"
                )
        for number, item in enumerate(step.get("inputs") or []):
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                raise LineageError(
                    f"{path}: metadata '{where}.inputs[{number}]' is {_json_kind(item)}, "
                    f"not a recorded file (an object with a 'path'){_REWRITE}"
                )
        for stat in _COUNT_STATS.get(str(step.get("command")), ()):
            value = (step.get("stats") or {}).get(stat)
            if value is None and stat in _REQUIRED_STATS.get(str(step.get("command")), ()):
                raise LineageError(f"{path}: metadata '{where}.stats.{stat}' is missing (a row count){_REWRITE}")
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise LineageError(
                    f"{path}: metadata '{where}.stats.{stat}' is {_json_kind(value)}, not a row count{_REWRITE}"
                )
    Lineage.of(lineage, str(path))  # the typed reading every later step does, so it cannot fail later


def _json_kind(value: Any) -> str:
    """How a JSON value reads in a message: 'a list', 'a string ("abc")', 'the number -3'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string ({_short(value)})"
    return f"the number {_short(value)}"


def _short(value: Any, limit: int = 40) -> str:
    """A value for a message: strings quoted, anything cut to `limit` characters."""
    text = str(value) if isinstance(value, str) else repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"'{text}'" if isinstance(value, str) else text


def validate(manifest: Manifest) -> Manifest:
    """Check the contract and normalise column types (int labels -> int64, ids -> string)."""
    name, table = manifest.name, manifest.table
    if table.num_rows == 0:
        raise ManifestError(f"{name}: the manifest is empty (0 rows)")
    if "id" not in table.column_names:
        raise ColumnError(f"{name}: no 'id' column; every manifest needs a unique string id per row")
    repeated = sorted({column for column in table.column_names if table.column_names.count(column) > 1})
    if repeated:
        count = table.column_names.count(repeated[0])
        raise ColumnError(f"{name}: {count} columns are named '{repeated[0]}'; column names must be unique")
    ids = _as_strings(name, "id", table.column("id"), "ids must be strings (not row positions)")
    if ids.null_count:
        raise ColumnError(f"{name}: column 'id' has {ids.null_count} null values; every row needs an id")
    if len(pc.unique(ids)) != table.num_rows:
        counts = pc.value_counts(ids)
        duplicated = pc.filter(counts, pc.greater(counts.field("counts"), 1))
        first = duplicated[0]["values"].as_py()
        raise ColumnError(
            f"{name}: column 'id' has {len(duplicated)} duplicated values (e.g. {_short(first)}); ids must be unique"
        )
    table = table.set_column(table.column_names.index("id"), "id", ids)
    for column, meaning in (("label", "class indices"), ("cluster", "k-means cluster numbers")):
        if column in table.column_names:
            values = _as_int64(name, column, table.column(column), ids, meaning)
            table = table.set_column(table.column_names.index(column), column, values)
    for column, meaning in (("path", "file paths relative to dataset.root"), ("split", "split names")):
        if column in table.column_names and not pa.types.is_null(table.schema.field(column).type):
            values = _as_strings(name, column, table.column(column), f"it must hold strings ({meaning})")
            table = table.set_column(table.column_names.index(column), column, values)
    return dataclasses.replace(manifest, table=table)


def _as_strings(name: str, column: str, values: pa.ChunkedArray, rule: str) -> pa.ChunkedArray:
    """A string-like column as `string` (large_string, string_view and dictionary-encoded strings too)."""
    kind = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise ColumnError(f"{name}: column '{column}' is {values.type}; {rule}")
    return values if values.type == pa.string() else values.cast(pa.string())


def _as_int64(name: str, column: str, values: pa.ChunkedArray, ids: pa.ChunkedArray, meaning: str) -> pa.ChunkedArray:
    """An integer column as int64, refusing other types and values int64 cannot hold (uint64 > 2**63 - 1)."""
    kind = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
    fix = f"it must hold integers ({meaning}); write it as int64, with nulls for missing values"
    if pa.types.is_null(kind):  # every value null (another tool's all-None column): unlabeled
        return values.cast(pa.int64())
    if not pa.types.is_integer(kind):
        raise ColumnError(f"{name}: column '{column}' is {values.type}; {fix}")
    if pa.types.is_dictionary(values.type):
        values = values.cast(kind)
    if kind == pa.uint64():
        too_big = pc.greater(values, pa.scalar(INT64_MAX, pa.uint64()))
        if pc.any(too_big).as_py():
            first = pc.index(too_big, True).as_py()
            raise ColumnError(
                f"{name}: column '{column}' holds {values[first].as_py()} at id {_short(ids[first].as_py())}, "
                f"beyond int64 (at most {INT64_MAX}); {fix}"
            )
    return values.cast(pa.int64())


# -- writing ------------------------------------------------------------------------------


def write_manifest(manifest: Manifest, path: Path | str) -> Path:
    """Write atomically (temp file + rename), with the metadata document in the schema."""
    path = Path(path)
    validate(manifest)
    meta = dict(manifest.meta)
    meta["format_version"] = FORMAT_VERSION
    encoded = json.dumps(to_jsonable(meta), sort_keys=False).encode()
    table = manifest.table.replace_schema_metadata({METADATA_KEY: encoded})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, compression="zstd")
    return path


def new_manifest(
    ids: Sequence[str] | np.ndarray,
    labels: Sequence[int | None] | np.ndarray | None,
    dataset: Mapping[str, Any],
    extra_columns: Mapping[str, Any] | None = None,
) -> Manifest:
    """Build a manifest from columns (ingest's entry point); labels may be None for unlabeled data."""
    columns: dict[str, pa.Array] = {"id": pa.array(ids, type=pa.string())}
    if labels is None:
        columns["label"] = pa.nulls(len(columns["id"]), type=pa.int64())
    else:
        columns["label"] = pa.array(labels, type=pa.int64())
    for column, values in (extra_columns or {}).items():
        columns[column] = values if isinstance(values, pa.Array) else pa.array(values)
    meta = empty_metadata()
    meta["dataset"] = to_jsonable(dataset)
    return Manifest(table=pa.table(columns), meta=meta)


def read_json_metadata(path: Path | str) -> dict[str, Any]:
    """Only the metadata document, without reading the rows (cheap on big manifests)."""
    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise ManifestError(f"{path}: not a Parquet manifest ({error})") from None
    return _decode_metadata(path, schema.metadata or {})
