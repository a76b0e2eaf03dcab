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
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datadiet_cli import __version__
from datadiet_cli.errors import ColumnError, ManifestError
from datadiet_cli.io.files import atomic_path, to_jsonable
from datadiet_cli.io.lineage import Lineage, LineageStep
from datadiet_cli.io.tables import read_parquet

FORMAT_VERSION = 1
METADATA_KEY = b"datadiet"
HIGHER_IS_HARDER = "higher_is_harder"


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
            scores = sorted(self.meta.get("scores", {}))
            known = f" (score columns here: {', '.join(scores)})" if scores else ""
            raise ColumnError(
                f"{self.name}: no score column '{column}'{known}; add it with `datadiet score` or `datadiet cluster`"
            )
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
    if path.is_dir():
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
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: the 'datadiet' schema metadata is not valid JSON ({error})") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: manifest format version {version!r} is not supported "
            f"(this datadiet {__version__} reads version {FORMAT_VERSION})"
        )
    for key, default in empty_metadata().items():
        meta.setdefault(key, default)
    return meta


def validate(manifest: Manifest) -> Manifest:
    """Check the contract and normalise column types (int labels -> int64, ids -> string)."""
    name, table = manifest.name, manifest.table
    if table.num_rows == 0:
        raise ManifestError(f"{name}: the manifest is empty (0 rows)")
    if "id" not in table.column_names:
        raise ColumnError(f"{name}: no 'id' column; every manifest needs a unique string id per row")
    ids = table.column("id")
    if pa.types.is_large_string(ids.type):
        ids = ids.cast(pa.string())
    elif not pa.types.is_string(ids.type):
        raise ColumnError(f"{name}: column 'id' is {ids.type}; ids must be strings (not row positions)")
    if ids.null_count:
        raise ColumnError(f"{name}: column 'id' has {ids.null_count} null values; every row needs an id")
    if len(pc.unique(ids)) != table.num_rows:
        counts = pc.value_counts(ids)
        duplicated = pc.filter(counts, pc.greater(counts.field("counts"), 1))
        first = duplicated[0]["values"].as_py()
        raise ColumnError(
            f"{name}: column 'id' has {len(duplicated)} duplicated values (e.g. '{first}'); ids must be unique"
        )
    table = table.set_column(table.column_names.index("id"), "id", ids)
    for column in ("label", "cluster"):
        if column in table.column_names:
            values = table.column(column)
            if not pa.types.is_integer(values.type):
                raise ColumnError(f"{name}: column '{column}' is {values.type}; it must hold integers")
            table = table.set_column(table.column_names.index(column), column, values.cast(pa.int64()))
    return dataclasses.replace(manifest, table=table)


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
    except (pa.ArrowInvalid, OSError) as error:
        raise ManifestError(f"{path}: not a Parquet manifest ({error})") from None
    return _decode_metadata(path, schema.metadata or {})
