"""The manifest contract: validation, metadata round trip, atomic writes, interop with pandas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datadiet_cli.errors import ColumnError, ManifestError, OptionError
from datadiet_cli.io.files import atomic_path, check_output, file_digest
from datadiet_cli.io.lineage import LineageStep
from datadiet_cli.io.manifest import HIGHER_IS_HARDER, new_manifest, read_json_metadata, read_manifest, write_manifest


def toy(n: int = 5):
    return new_manifest(
        [f"img{i}" for i in range(n)],
        [i % 2 for i in range(n)],
        {"kind": "test", "root": None, "classes": ["even", "odd"]},
    )


def test_round_trip_keeps_rows_types_and_metadata(tmp_path: Path) -> None:
    manifest = toy().with_score("el2n", np.array([0.5, 0.1, 0.9, 0.3, 0.7]), "el2n", {"probes": 10})
    manifest = manifest.with_lineage(LineageStep("ingest", {"source": "x"}, [], {"rows": 5}))
    path = write_manifest(manifest, tmp_path / "m.parquet")

    back = read_manifest(path)
    assert back.ids().tolist() == ["img0", "img1", "img2", "img3", "img4"]
    assert back.labels().tolist() == [0, 1, 0, 1, 0]
    assert back.score("el2n").tolist() == [0.5, 0.1, 0.9, 0.3, 0.7]
    assert back.table.schema.field("label").type == pa.int64()
    assert back.table.schema.field("el2n").type == pa.float64()
    assert back.meta["format_version"] == 1
    assert back.meta["scores"]["el2n"] == {"metric": "el2n", "direction": HIGHER_IS_HARDER, "params": {"probes": 10}}
    assert back.classes == ["even", "odd"]
    [step] = back.lineage()
    assert step.command == "ingest" and step.stats == {"rows": 5} and step.version


def test_metadata_is_plain_json_any_parquet_reader_sees(tmp_path: Path) -> None:
    path = write_manifest(toy(), tmp_path / "m.parquet")
    raw = pq.read_schema(path).metadata[b"datadiet"]
    assert json.loads(raw)["dataset"]["classes"] == ["even", "odd"]
    assert read_json_metadata(path)["dataset"]["kind"] == "test"
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_parquet(path)
    assert list(frame.columns) == ["id", "label"] and len(frame) == 5


def test_plain_parquet_without_metadata_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "label": pa.array([1, 0], pa.int32()), "s": [0.1, 0.2]}), path)
    manifest = read_manifest(path)
    assert manifest.meta["lineage"] == [] and manifest.table.schema.field("label").type == pa.int64()


def test_lineage_records_input_digests(tmp_path: Path) -> None:
    source = write_manifest(toy(), tmp_path / "in.parquet")
    out = toy().with_lineage(LineageStep("prune", {"keep": "hard"}, [source], {}))
    [entry] = out.lineage().of_command("prune")
    assert entry.inputs[0].sha256 == file_digest(source)
    assert entry.inputs[0].path == source.resolve()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"label": [1]}), "no 'id' column"),
        (pa.table({"id": [1, 2]}), "column 'id' is int64; ids must be strings"),
        (pa.table({"id": ["a", None]}), "column 'id' has 1 null values"),
        (pa.table({"id": ["a", "b", "a"]}), "column 'id' has 1 duplicated values (e.g. 'a'); ids must be unique"),
        (pa.table({"id": pa.array([], pa.string())}), "the manifest is empty (0 rows)"),
        (pa.table({"id": ["a"], "label": ["cat"]}), "column 'label' is string; it must hold integers"),
    ],
)
def test_contract_violations_name_the_problem(tmp_path: Path, table: pa.Table, message: str) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(ManifestError) as error:
        read_manifest(path)
    assert str(error.value).startswith(f"{path}: {message}")


def test_not_parquet_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.parquet"
    bad.write_text("hello")
    with pytest.raises(ManifestError, match=r"notes.parquet: not a Parquet manifest"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match=r"nope.parquet: no such file"):
        read_manifest(tmp_path / "nope.parquet")


def test_score_column_checks(tmp_path: Path) -> None:
    manifest = toy(3).with_score("s", np.array([0.1, np.nan, 0.3]), "toy", {})
    with pytest.raises(ColumnError, match=r"score column 's' has 1 NaN/inf values \(first at id 'img1'\)"):
        manifest.score("s")
    with pytest.raises(ColumnError, match=r"no score column 'missing' \(score columns here: s\)"):
        manifest.score("missing")


def test_labels_needed_but_null() -> None:
    unlabeled = new_manifest(["a", "b"], None, {"kind": "test"})
    with pytest.raises(ColumnError, match="column 'label' has 2 null values"):
        unlabeled.labels()


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_output_may_not_overwrite_input(tmp_path: Path) -> None:
    source = write_manifest(toy(), tmp_path / "m.parquet")
    with pytest.raises(OptionError, match="the output would overwrite the input"):
        check_output(tmp_path / "." / "m.parquet", source)


def test_take_keeps_order_given() -> None:
    assert toy().take(np.array([3, 1])).ids().tolist() == ["img3", "img1"]
