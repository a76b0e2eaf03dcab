"""`datadiet cluster` under torchrun: two gloo ranks give one process's clusters, save and read
embeddings folders, and fail together; the folder checks and the option checks in one process.

The session's one real 2-process job (tests/ranks.py: share) runs this module's distributed commands; the
one-process references run in the pytest process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from ranks import RankResult, SharedJob, share
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.cluster.kmeans import ClusterConfig, Engine, resolve_engine
from datadiet_cli.cluster.pipeline import check_outputs
from datadiet_cli.cluster.prototypes import validate_config
from datadiet_cli.distributed import Ranks
from datadiet_cli.errors import EmbeddingError, OptionError, TableError
from datadiet_cli.io.manifest import new_manifest, read_manifest, write_manifest
from datadiet_cli.io.tables import embedding_parts, read_embeddings, write_embeddings

runner = CliRunner()
CLASSES = ("ant", "bee", "cow")
PER_CLASS = 16  # 48 rows: rank 0 holds rows 0-23, rank 1 rows 24-47
BAD_ROW = 40  # in rank 1's block
DATASET = {"kind": "builtin", "name": "toy", "root": None, "classes": ["a", "b"], "split": None,
           "image_shape": None, "source": "toy"}  # fmt: skip
CLUSTER = ["--encoder", "pixels", "--engine", "torch", "--k", "3"]


def duplicates(folder: Path) -> list[str]:
    return ["--embeddings", str(folder / "dup-emb.parquet"), "--engine", "torch", "--k", "3"]


def write_tree(root: Path) -> None:
    """8x8 RGB noise whose brightness band is the class (PER_CLASS images per class)."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for index in range(PER_CLASS):
            pixels = rng.integers(0, 80, size=(8, 8, 3)) + 80 * label
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{index:03d}.png")


def invoke(arguments: list[str], cache: Path) -> None:
    result = runner.invoke(app, [*arguments, "-q"], env={"DATADIET_CACHE": str(cache)})
    assert result.exit_code == 0, result.output


@dataclass(frozen=True)
class Job:
    folder: Path
    ranks: list[RankResult]
    bad_image: Path


def prepare(folder: Path) -> list[Any]:
    """Images, a copy with one corrupt image in rank 1's block, duplicate-heavy embeddings; the module's
    commands for the shared 2-rank job (cluster + save a folder, cluster from the folder, cluster the
    duplicates, the corrupt copy)."""
    cache = folder / "cache"  # the module's own pixel cache, for the inputs and the references
    write_tree(folder / "tree")
    invoke(["ingest", str(folder / "tree"), "-o", str(folder / "in.parquet")], cache)
    write_tree(folder / "bad")
    invoke(["ingest", str(folder / "bad"), "-o", str(folder / "bad.parquet")], cache)
    bad_image(folder).write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    # 5 + 5 copies of two points, k = 3: a cluster empties, and k-means++ runs out of distinct rows.
    ids = [f"d{i}" for i in range(10)]
    write_manifest(new_manifest(ids, np.array([0, 1] * 5), DATASET), folder / "dup.parquet")
    points = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]], dtype=np.float32), 5, axis=0)
    write_embeddings(ids, points, folder / "dup-emb.parquet", {})
    return [
        ["cluster", str(folder / "in.parquet"), "-o", str(folder / "two.parquet"), *CLUSTER,
         "--save-embeddings", str(folder / "emb")],
        ["cluster", str(folder / "in.parquet"), "-o", str(folder / "again.parquet"), "--embeddings",
         str(folder / "emb"), "--engine", "torch", "--k", "3", "-q"],
        ["cluster", str(folder / "dup.parquet"), "-o", str(folder / "dup-two.parquet"), *duplicates(folder), "-q"],
        {"args": ["cluster", str(folder / "bad.parquet"), "-o", str(folder / "bad-out.parquet"), *CLUSTER, "-q"],
         "expect": 1},
    ]  # fmt: skip


def bad_image(folder: Path) -> Path:
    return folder / "bad" / read_manifest(folder / "bad.parquet").table.column("path")[BAD_ROW].as_py()


share("cluster", prepare)


@pytest.fixture(scope="module")
def job(shared_ranks: SharedJob) -> Job:
    """The shared job's cluster results, and the one-process references."""
    folder = shared_ranks.folder / "cluster"
    invoke(["cluster", str(folder / "in.parquet"), "-o", str(folder / "one.parquet"), *CLUSTER,
            "--save-embeddings", str(folder / "one-emb.parquet")], folder / "cache")  # fmt: skip
    invoke(["cluster", str(folder / "dup.parquet"), "-o", str(folder / "dup-one.parquet"), *duplicates(folder)],
           folder / "cache")  # fmt: skip
    return Job(folder, shared_ranks.parts["cluster"], bad_image(folder))


def assert_same_clusters(one: Path, two: Path) -> None:
    """Equal cluster ids; distances equal up to float32 rounding (ranks sum centroids in other orders)."""
    single, double = read_manifest(one), read_manifest(two)
    np.testing.assert_array_equal(double.groups("cluster"), single.groups("cluster"))
    for column in ("proto_dist", "sup_proto_dist"):
        np.testing.assert_allclose(double.score(column), single.score(column), rtol=1e-5, atol=1e-6)
    fit_one, fit_two = (m.lineage().last("cluster").stats["fits"][0] for m in (single, double))
    assert fit_two["iterations"] == fit_one["iterations"] and fit_two["cluster_sizes"] == fit_one["cluster_sizes"]
    assert fit_two["fit_rows"] == fit_one["fit_rows"] and fit_two["engine"] == "torch"
    assert double.lineage().last("cluster").stats["processes"] == 2


def test_two_ranks_cluster_as_one_process(job: Job) -> None:
    assert_same_clusters(job.folder / "one.parquet", job.folder / "two.parquet")
    assert_same_clusters(job.folder / "one.parquet", job.folder / "again.parquet")  # from the saved folder
    clustered = read_manifest(job.folder / "two.parquet")
    labels, clusters = clustered.labels(), clustered.groups("cluster")
    assert all(len(set(clusters[labels == c])) == 1 for c in range(3))  # brightness bands: one cluster each


def test_empty_clusters_and_identical_rows_across_ranks(job: Job) -> None:
    assert_same_clusters(job.folder / "dup-one.parquet", job.folder / "dup-two.parquet")
    assert read_manifest(job.folder / "dup-two.parquet").score("proto_dist").max() == 0.0


def test_only_rank_0_prints_and_writes(job: Job) -> None:
    first, second = job.ranks
    iterations = read_manifest(job.folder / "two.parquet").lineage()[-1].stats["fits"][0]["iterations"]
    assert first.stdout == (
        f"clustered 48 rows into k=3 (torch, 2 processes, {iterations} iterations, fit on 48 rows); wrote cluster, "
        f"proto_dist, sup_proto_dist -> {job.folder / 'two.parquet'}\n"
    )
    assert (second.stdout, second.stderr) == ("", "")
    assert not list(job.folder.glob(".*tmp-*"))  # no staging folder or temporary left


def test_a_corrupt_image_on_rank_1_stops_every_rank(job: Job) -> None:
    assert [rank.returncode for rank in job.ranks] == [1, 1]
    errors = [line for line in job.ranks[0].stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == job.ranks[0].stderr.splitlines()[-1]
    assert errors[0].startswith(f"error: rank 1: {job.bad_image}: cannot decode the image (")
    assert errors[0].endswith("); remove or replace the file")
    assert not (job.folder / "bad-out.parquet").exists()


def test_saved_folder_is_one_table_of_the_one_process_embeddings(job: Job) -> None:
    folder = job.folder / "emb"
    assert sorted(os.listdir(folder)) == ["part-00000.parquet", "part-00001.parquet"]
    table = pq.read_table(folder)  # what pyarrow.dataset, DuckDB and polars read
    ids, matrix, metadata = read_embeddings(job.folder / "one-emb.parquet")
    np.testing.assert_array_equal(table.column("id").to_numpy(zero_copy_only=False), ids)
    np.testing.assert_array_equal(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), matrix)
    part_ids, _, part_meta = read_embeddings(folder / "part-00001.parquet")
    np.testing.assert_array_equal(part_ids, ids[24:])
    assert part_meta == {**metadata, "part": 1, "parts": 2}
    # One process reads the folder too, with the clusters of its own file.
    invoke(["cluster", str(job.folder / "in.parquet"), "-o", str(job.folder / "from-folder.parquet"),
            "--embeddings", str(folder), "--engine", "torch", "--k", "3"], job.folder / "cache")  # fmt: skip
    out = read_manifest(job.folder / "from-folder.parquet")
    np.testing.assert_array_equal(out.groups("cluster"), read_manifest(job.folder / "one.parquet").groups("cluster"))
    identity = out.lineage().last("cluster").stats["fits"][0]["encoder"]
    assert identity["file"] == str(folder.resolve()) and len(identity["sha256"]) == 64
    assert identity["made_by"] == metadata["encoder"]


# -- folders of parts, in one process ---------------------------------------------------------------


def write_parts(folder: Path, parts: dict[str, tuple[int, int, str]]) -> None:
    """{file name: (part, parts, encoder name)}: two 2-d rows each, ids p<part>-<row>."""
    for name, (part, count, encoder) in parts.items():
        ids = [f"p{part}-{row}" for row in range(2)]
        write_embeddings(ids, np.ones((2, 2), np.float32), folder / name,
                         {"encoder": {"name": encoder}, "part": part, "parts": count})  # fmt: skip


@pytest.mark.parametrize(
    ("parts", "error", "message"),
    [
        ({}, TableError, "a folder without Parquet files; give the folder --save-embeddings wrote under torchrun "
         "(part-00000.parquet, ...) or one embeddings file"),
        ({"part-00000.parquet": (0, 3, "a"), "part-00002.parquet": (2, 3, "a")}, EmbeddingError,
         "part-00001.parquet is missing (1 of the 3 parts written together are); copy the whole folder, or save the "
         "embeddings again"),
        ({"part-00000.parquet": (0, 2, "a"), "part-00002.parquet": (2, 2, "a")}, EmbeddingError,
         "part-00002.parquet is out of range: the write had 2 parts, part-00000.parquet to part-00001.parquet; "
         "remove it or save the embeddings again"),
        ({"part-00000.parquet": (0, 2, "a"), "part-00001.parquet": (1, 2, "b")}, EmbeddingError,
         "part-00001.parquet and part-00000.parquet come from different writes (another number of parts or another "
         "encoder); save the embeddings again into a new folder"),
        ({"part-00000.parquet": (0, 2, "a"), "part-00001.parquet": (1, 3, "a")}, EmbeddingError,
         "part-00001.parquet and part-00000.parquet come from different writes (another number of parts or another "
         "encoder); save the embeddings again into a new folder"),
        ({"part-00000.parquet": (0, 2, "a"), "renamed.parquet": (1, 2, "a")}, EmbeddingError,
         "renamed.parquet is not named for the part it holds (part 1); keep the names --save-embeddings gave the parts"),
    ],
)  # fmt: skip
def test_folder_contents_that_are_not_one_write(
    tmp_path: Path, parts: dict[str, tuple[int, int, str]], error: type[Exception], message: str
) -> None:
    folder = tmp_path / "emb"
    folder.mkdir()
    write_parts(folder, parts)
    with pytest.raises(error) as raised:
        embedding_parts(folder)
    assert str(raised.value) == f"--embeddings {folder}: {message}"


def test_folder_missing_ids_and_another_tools_parts(tmp_path: Path) -> None:
    folder = tmp_path / "emb"
    folder.mkdir()
    write_parts(folder, {"part-00000.parquet": (0, 2, "a"), "part-00001.parquet": (1, 2, "a")})
    manifest = tmp_path / "m.parquet"
    write_manifest(new_manifest(["p0-0", "p0-1", "p1-0", "p1-1", "p2-0"], None, {**DATASET, "classes": []}), manifest)
    result = runner.invoke(app, ["cluster", str(manifest), "-o", str(tmp_path / "o.parquet"), "--embeddings",
                                 str(folder), "--k", "2", "-q"])  # fmt: skip
    assert (result.exit_code, result.stderr) == (1, (
        f"error: {folder}: 1 of the 5 ids of {manifest} have no embedding (e.g. 'p2-0'); "
        "embed the same dataset the manifest lists\n"
    ))  # fmt: skip
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("b.parquet", "a.parquet"):  # no part metadata: read in name order
        write_embeddings([name], np.zeros((1, 2), np.float32), plain / name, {})
    (plain / "_SUCCESS").write_text("")
    assert embedding_parts(plain) == [plain / "a.parquet", plain / "b.parquet"]


# -- options under torchrun, checked in one process --------------------------------------------------


def test_engine_under_torchrun() -> None:
    with pytest.raises(OptionError) as raised:
        resolve_engine(Engine.sklearn, "cpu", False, distributed=True)
    assert str(raised.value) == "--engine sklearn runs in one process; under torchrun use --engine torch or faiss"
    assert resolve_engine(Engine.auto, "cpu", False, distributed=True) in (Engine.faiss, Engine.torch)
    assert resolve_engine(Engine.auto, "cuda", False, distributed=True) is Engine.torch


def test_more_processes_than_rows(tmp_path: Path) -> None:
    manifest = new_manifest(["a", "b", "c"], np.array([0, 1, 0]), DATASET)
    with pytest.raises(OptionError) as raised:
        validate_config(manifest, ClusterConfig(k=2), 1, Ranks(rank=0, world=4))
    assert str(raised.value) == (
        "<manifest>: 3 rows for 4 processes; every process needs a row, so start at most 3 (torchrun --nproc-per-node)"
    )


def test_save_embeddings_folder_replaces_only_a_folder_of_parts(tmp_path: Path) -> None:
    two = Ranks(rank=0, world=2)  # no collective runs in these checks
    inputs = (tmp_path / "in.parquet",)
    parts = tmp_path / "parts"
    parts.mkdir()
    write_parts(parts, {"part-00000.parquet": (0, 1, "a")})
    check_outputs(tmp_path / "o.parquet", parts, inputs, two)  # an earlier write: replaced
    (parts / "notes.txt").write_text("mine")
    with pytest.raises(OptionError) as raised:
        check_outputs(tmp_path / "o.parquet", parts, inputs, two)
    assert str(raised.value) == (
        f"--save-embeddings {parts}: the folder holds other files than embeddings parts (e.g. notes.txt); give a new "
        "folder, or one an earlier --save-embeddings wrote"
    )
    with pytest.raises(OptionError, match=r"it would overwrite an input or the output; choose another folder$"):
        check_outputs(tmp_path / "o.parquet", inputs[0], inputs, two)
