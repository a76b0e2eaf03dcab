"""k-means and prototype scores (datadiet_cli.cluster) and `datadiet cluster` on precomputed embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.cluster import kmeans as cluster_module
from datadiet_cli.cluster.embed import Embeddings
from datadiet_cli.cluster.kmeans import (
    CPU_ENGINE,
    ClusterConfig,
    Engine,
    faiss_available,
    fit_sample,
    kmeans,
    nearest_centroids,
    resolve_engine,
)
from datadiet_cli.cluster.pipeline import ClusterJob, cluster_manifest
from datadiet_cli.cluster.prototypes import class_prototype_distances, standardise, with_prototype_scores
from datadiet_cli.errors import DatadietError, OptionError
from datadiet_cli.io.manifest import new_manifest, read_manifest, write_manifest
from datadiet_cli.io.tables import read_embeddings, write_embeddings

runner = CliRunner()
DATASET = {"kind": "builtin", "name": "toy", "root": None, "classes": ["a", "b", "c", "d"], "split": None,
           "image_shape": None, "source": "toy"}  # fmt: skip


def blobs(n: int = 400, centers: int = 4, features: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(n_samples=n, n_features=features, centers=centers, cluster_std=0.6, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64)


def exact_euclidean(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float32 differences summed in float64, rounded to float32: the documented definition."""
    difference = (x - centroids[labels]).astype(np.float64)
    return np.sqrt((difference**2).sum(axis=1)).astype(np.float32)


needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed (pip install faiss-cpu)")
ENGINES = [Engine.torch, Engine.sklearn, pytest.param(Engine.faiss, marks=needs_faiss)]

# -- k-means on arrays ------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_recovers_well_separated_blobs(engine: Engine) -> None:
    x, y = blobs()
    result = kmeans(x, 4, ClusterConfig(engine=engine))
    assert adjusted_rand_score(y, result.labels) >= 0.95
    assert result.engine == engine.value and result.converged and result.fit_rows == len(x)
    assert result.labels.dtype == np.int64 and result.distances.dtype == np.float32


def test_proto_dist_is_the_exact_distance_to_the_assigned_centroid() -> None:
    x, _ = blobs(n=300, features=16)
    result = kmeans(x, 4, ClusterConfig())
    np.testing.assert_array_equal(result.distances, exact_euclidean(x, result.centroids, result.labels))
    # ... and the assigned centroid is the nearest one.
    all_distances = np.linalg.norm(x[:, None, :].astype(np.float64) - result.centroids[None].astype(np.float64), axis=2)
    np.testing.assert_array_equal(result.labels, all_distances.argmin(axis=1))
    assert result.inertia == pytest.approx(
        float((exact_euclidean(x, result.centroids, result.labels) ** 2).sum()), rel=1e-6
    )


def test_same_seed_same_output_and_the_seed_matters() -> None:
    x = np.random.default_rng(0).normal(size=(500, 6)).astype(np.float32)  # no structure: init decides
    first, second = kmeans(x, 8, ClusterConfig(seed=3)), kmeans(x, 8, ClusterConfig(seed=3))
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.distances, second.distances)
    np.testing.assert_array_equal(first.centroids, second.centroids)
    other = kmeans(x, 8, ClusterConfig(seed=4))
    assert not np.array_equal(first.centroids, other.centroids)


def test_fit_fraction_fits_on_the_recorded_sample_and_assigns_every_row() -> None:
    x, y = blobs(n=400)
    config = ClusterConfig(fit_fraction=0.25, seed=7)
    result = kmeans(x, 4, config)
    sample = fit_sample(len(x), 0.25, 4, 7)
    assert result.fit_rows == len(sample) == 100
    assert len(result.labels) == 400 and adjusted_rand_score(y, result.labels) >= 0.95
    # Converged centroids are the means of their *sample* rows (rows outside the sample never moved them).
    for cluster in range(4):
        members = sample[result.labels[sample] == cluster]
        np.testing.assert_allclose(result.centroids[cluster], x[members].mean(axis=0), rtol=1e-5, atol=1e-5)
    assert fit_sample(400, 0.001, 4, 7) is not None and len(fit_sample(400, 0.001, 4, 7)) == 4  # at least k


def test_spherical_clusters_directions_and_reports_cosine_distance() -> None:
    rng = np.random.default_rng(0)
    directions = np.eye(3, 8, dtype=np.float32) * 5 + 1
    y = rng.integers(3, size=300)
    # Same direction, wildly different lengths: Euclidean k-means splits by length, cosine by direction.
    x = (directions[y] + rng.normal(scale=0.2, size=(300, 8))) * np.exp(rng.uniform(np.log(0.1), np.log(10), (300, 1)))
    x = x.astype(np.float32)
    result = kmeans(x, 3, ClusterConfig(spherical=True))
    assert adjusted_rand_score(y, result.labels) >= 0.95
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, rtol=1e-6)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cosine = (unit.astype(np.float64) * result.centroids[result.labels].astype(np.float64)).sum(axis=1)
    np.testing.assert_allclose(result.distances, 1 - cosine, atol=1e-6)
    assert adjusted_rand_score(y, kmeans(x, 3, ClusterConfig()).labels) < 0.3


def test_chunked_assignment_equals_one_chunk() -> None:
    import torch

    x, _ = blobs(n=257)
    points = torch.from_numpy(x)
    for k in (5, 40):  # both layouts of the distance GEMM (transposed below NARROW_K centroids)
        centroids = torch.from_numpy(np.random.default_rng(k).normal(scale=10, size=(k, 8)).astype(np.float32))
        whole = nearest_centroids(points, points.square().sum(1), centroids, chunk=257)
        chunked = nearest_centroids(points, points.square().sum(1), centroids, chunk=7)
        assert torch.equal(whole[0], chunked[0])  # the same nearest centroids
        torch.testing.assert_close(whole[1], chunked[1], rtol=1e-5, atol=1e-4)  # GEMM rounding may vary by chunk


@pytest.mark.parametrize("engine", ENGINES)
def test_more_clusters_than_distinct_points_leaves_no_cluster_undefined(engine: Engine) -> None:
    x = np.array([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 5, dtype=np.float32)
    result = kmeans(x, 3, ClusterConfig(engine=engine))
    assert set(result.labels) <= {0, 1, 2} and np.isfinite(result.centroids).all()
    assert result.distances.max() == 0.0


@needs_faiss
@pytest.mark.parametrize("query_rows, chunk_floats", [(4096, None), (256, 22_000)])
def test_faiss_engine_follows_the_same_lloyd_path_as_torch(
    query_rows: int, chunk_floats: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same k-means++ centres, same update and stopping rule: only the nearest-centroid search differs.

    The second case searches 1,000-row chunks in 256-row blocks, the last of each a partial one.
    """
    monkeypatch.setattr(cluster_module, "FAISS_QUERY_ROWS", query_rows)
    if chunk_floats is not None:
        monkeypatch.setattr(cluster_module, "CHUNK_FLOATS_CPU", chunk_floats)
        assert cluster_module.chunk_rows(3000, 6 + 16, "cpu") == 1000
    x, _ = make_blobs(n_samples=3000, centers=6, n_features=16, cluster_std=3.0, random_state=1)
    x = x.astype(np.float32)
    torch_result = kmeans(x, 6, ClusterConfig(engine=Engine.torch, seed=3))
    faiss_result = kmeans(x, 6, ClusterConfig(engine=Engine.faiss, seed=3))
    assert faiss_result.engine == "faiss" and faiss_result.iterations == torch_result.iterations
    np.testing.assert_array_equal(faiss_result.labels, torch_result.labels)
    np.testing.assert_allclose(faiss_result.centroids, torch_result.centroids, rtol=1e-5, atol=1e-5)
    assert faiss_result.inertia == pytest.approx(torch_result.inertia, rel=1e-6)
    with pytest.raises(OptionError, match="--engine faiss runs on the CPU"):
        resolve_engine(Engine.faiss, "cuda", False)


def test_supervised_prototype_distances_by_hand() -> None:
    x = np.array([[0, 0], [2, 0], [0, 3], [0, 5]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    # class 0 mean (1, 0); class 1 mean (0, 4)
    np.testing.assert_array_equal(class_prototype_distances(x, labels, spherical=False), [1, 1, 1, 1])
    cosine = class_prototype_distances(np.array([[1, 0], [0, 1]], dtype=np.float32), np.array([0, 0]), True)
    np.testing.assert_allclose(cosine, [1 - np.sqrt(0.5)] * 2, atol=1e-7)


def test_standardise() -> None:
    np.testing.assert_allclose(standardise(np.array([1.0, 2.0, 3.0])), [-1.224744871, 0.0, 1.224744871])
    np.testing.assert_array_equal(standardise(np.array([2.0, 2.0])), [0.0, 0.0])


@pytest.mark.parametrize(
    ("k", "config", "message"),
    [
        (11, ClusterConfig(), "--k 11 is larger than the number of rows (10); use a smaller --k"),
        (2, ClusterConfig(fit_fraction=1.5), "--fit-fraction 1.5 is outside (0, 1]; e.g. --fit-fraction 0.1 fits on 10%"),
        (2, ClusterConfig(iters=0), "--iters 0 must be at least 1"),
        (2, ClusterConfig(spherical=True, engine=Engine.sklearn),
         "--engine sklearn cannot keep unit-length centroids for --spherical; use --engine torch"),
    ],
)  # fmt: skip
def test_kmeans_option_errors(k: int, config: ClusterConfig, message: str) -> None:
    with pytest.raises(OptionError) as error:
        kmeans(np.ones((10, 2), dtype=np.float32), k, config)
    assert str(error.value) == message


# -- manifests -------------------------------------------------------------------------------------


def toy_manifest(n: int = 200, labeled: bool = True) -> tuple[np.ndarray, np.ndarray, object]:
    x, y = blobs(n=n)
    ids = [f"ex{i:04d}" for i in range(n)]
    manifest = new_manifest(ids, y if labeled else None, DATASET if labeled else {**DATASET, "classes": []})
    return x, y, manifest


def test_cluster_manifest_columns_scores_and_lineage() -> None:
    x, y, manifest = toy_manifest()
    out = with_prototype_scores(manifest, [Embeddings(x, {"name": "toy"})], ClusterConfig(fit_fraction=0.5))
    assert out.table.schema.field("cluster").type == pa.int64()
    assert out.meta["scores"]["proto_dist"]["metric"] == "self_supervised_prototype"
    assert out.meta["scores"]["sup_proto_dist"]["metric"] == "supervised_prototype"
    assert out.meta["scores"]["proto_dist"]["params"]["k"] == 4  # = number of classes
    fit = out.lineage().last("cluster").stats["fits"][0]
    auto_engine = Engine.faiss if faiss_available() else CPU_ENGINE
    assert fit["fit_rows"] == 100 and fit["engine"] == auto_engine.value and fit["encoder"] == {"name": "toy"}
    assert adjusted_rand_score(y, out.groups("cluster")) >= 0.95
    np.testing.assert_array_equal(
        out.score("sup_proto_dist"), class_prototype_distances(x, y, False).astype(np.float64)
    )


def test_ensemble_averages_per_source_z_scores() -> None:
    x, _, manifest = toy_manifest()
    scaled = x * 100  # same geometry, 100x the scale: raw averaging would let it dominate
    sources = [Embeddings(x, {"name": "a"}), Embeddings(scaled[:, ::-1].copy(), {"name": "b"})]
    out = with_prototype_scores(manifest, sources, ClusterConfig(ensemble=True))
    single = [kmeans(s.matrix, 4, ClusterConfig()).distances for s in sources]
    np.testing.assert_allclose(out.score("proto_dist"), (standardise(single[0]) + standardise(single[1])) / 2)
    with pytest.raises(OptionError, match="2 encoders/embeddings given; add --ensemble to average their scores"):
        with_prototype_scores(manifest, sources, ClusterConfig())


# -- the command on precomputed embeddings ---------------------------------------------------------


def write_inputs(tmp_path: Path, labeled: bool = True, n: int = 200) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    x, y, manifest = toy_manifest(n, labeled)
    manifest_path, embeddings_path = tmp_path / "in.parquet", tmp_path / "emb.parquet"
    write_manifest(manifest, manifest_path)
    order = np.random.default_rng(0).permutation(n)  # the file's row order need not be the manifest's
    write_embeddings(manifest.ids()[order], x[order], embeddings_path, {"encoder": {"name": "toy"}})
    return manifest_path, embeddings_path, x, y


def cli(*args: object) -> object:
    return runner.invoke(app, ["cluster", *map(str, args), "-q"])


def test_cli_clusters_precomputed_embeddings(tmp_path: Path) -> None:
    manifest_path, embeddings_path, x, y = write_inputs(tmp_path)
    result = cli(manifest_path, "-o", tmp_path / "out.parquet", "--embeddings", embeddings_path)
    assert result.exit_code == 0, result.output
    out = read_manifest(tmp_path / "out.parquet")
    assert adjusted_rand_score(y, out.groups("cluster")) >= 0.95
    expected = kmeans(x, 4, ClusterConfig())
    np.testing.assert_array_equal(out.score("proto_dist"), expected.distances.astype(np.float64))
    identity = out.lineage().last("cluster").stats["fits"][0]["encoder"]
    assert identity["kind"] == "embeddings" and identity["made_by"] == {"name": "toy"} and len(identity["sha256"]) == 64
    again = tmp_path / "again.parquet"
    assert cli(manifest_path, "-o", again, "--embeddings", embeddings_path).exit_code == 0
    assert (
        read_manifest(again).table.select(["cluster", "proto_dist"]).equals(out.table.select(["cluster", "proto_dist"]))
    )


def test_cluster_manifest_is_the_commands_library_call(tmp_path: Path) -> None:
    manifest_path, embeddings_path, x, _ = write_inputs(tmp_path)
    manifest = read_manifest(manifest_path)
    job = ClusterJob(embedding_files=(embeddings_path,), keep_embeddings=True)
    result = cluster_manifest(manifest, job)
    np.testing.assert_array_equal(result.embeddings.matrix, x)  # back in the manifest's row order
    assert cli(manifest_path, "-o", tmp_path / "out.parquet", "--embeddings", embeddings_path).exit_code == 0
    from_cli = read_manifest(tmp_path / "out.parquet")
    for column in ("cluster", "proto_dist", "sup_proto_dist"):
        assert result.manifest.table.column(column).equals(from_cli.table.column(column))
    assert result.manifest.lineage().last("cluster").stats["embedding"] == {"image_size": None, "batch_size": 128,
                                                                             "device": "auto"}  # fmt: skip
    assert cluster_manifest(manifest, ClusterJob(embedding_files=(embeddings_path,))).embeddings is None
    # Options fail before any file is read (these do not exist).
    two = ClusterJob(cluster=ClusterConfig(ensemble=True), embedding_files=(Path("a.npy"), Path("b.npy")),
                     keep_embeddings=True)  # fmt: skip
    with pytest.raises(OptionError, match=r"^--save-embeddings writes one source's embeddings; 2 were given$"):
        cluster_manifest(manifest, two)


def test_cli_npy_embeddings_with_ids_file_and_save_round_trip(tmp_path: Path) -> None:
    manifest_path, _, x, _ = write_inputs(tmp_path)
    ids = read_manifest(manifest_path).ids()
    np.save(tmp_path / "emb.npy", x[::-1].copy())
    (tmp_path / "ids.txt").write_text("\n".join(ids[::-1]) + "\n")
    saved = tmp_path / "saved.parquet"
    result = cli(manifest_path, "-o", tmp_path / "a.parquet", "--embeddings", tmp_path / "emb.npy",
                 "--embedding-ids", tmp_path / "ids.txt", "--save-embeddings", saved)  # fmt: skip
    assert result.exit_code == 0, result.output
    saved_ids, saved_matrix, metadata = read_embeddings(saved)
    np.testing.assert_array_equal(saved_ids, ids)
    np.testing.assert_array_equal(saved_matrix, x)
    assert metadata["encoder"]["kind"] == "embeddings"
    assert pq.read_schema(saved).field("embedding").type == pa.list_(pa.float32(), 8)
    assert cli(manifest_path, "-o", tmp_path / "b.parquet", "--embeddings", saved).exit_code == 0
    a, b = read_manifest(tmp_path / "a.parquet"), read_manifest(tmp_path / "b.parquet")
    np.testing.assert_array_equal(a.score("proto_dist"), b.score("proto_dist"))


def test_cli_unlabeled_needs_k_and_has_no_supervised_score(tmp_path: Path) -> None:
    manifest_path, embeddings_path, _, y = write_inputs(tmp_path, labeled=False)
    result = cli(manifest_path, "-o", tmp_path / "out.parquet", "--embeddings", embeddings_path)
    assert result.exit_code == 2
    assert result.output == (
        f"error: {manifest_path}: the examples are unlabeled, so --k cannot default to the number of classes; "
        "pass --k (e.g. about the number of classes you expect)\n"
    )
    assert not (tmp_path / "out.parquet").exists()
    result = cli(manifest_path, "-o", tmp_path / "out.parquet", "--embeddings", embeddings_path, "--k", 4)
    assert result.exit_code == 0, result.output
    out = read_manifest(tmp_path / "out.parquet")
    assert not out.has_column("sup_proto_dist") and adjusted_rand_score(y, out.groups("cluster")) >= 0.95


def test_cli_embeddings_missing_ids_of_the_manifest(tmp_path: Path) -> None:
    manifest_path, _, x, _ = write_inputs(tmp_path)
    ids = read_manifest(manifest_path).ids()
    partial = tmp_path / "partial.parquet"
    write_embeddings(ids[:150], x[:150], partial, {})
    result = cli(manifest_path, "-o", tmp_path / "out.parquet", "--embeddings", partial)
    assert result.exit_code == 1
    assert result.output == (
        f"error: {partial}: 50 of the 200 ids of {manifest_path} have no embedding (e.g. 'ex0150'); "
        "embed the same dataset the manifest lists\n"
    )


def test_cli_nan_embeddings(tmp_path: Path) -> None:
    manifest_path, _, x, _ = write_inputs(tmp_path)
    ids = read_manifest(manifest_path).ids()
    x = x.copy()
    x[[3, 9], 1] = np.nan
    bad = tmp_path / "bad.parquet"
    write_embeddings(ids, x, bad, {})
    result = cli(manifest_path, "-o", tmp_path / "out.parquet", "--embeddings", bad)
    assert result.exit_code == 1
    assert result.output == (
        f"error: {bad.resolve()}: 2 embeddings contain NaN or inf (first at id 'ex0003'); "
        "fix or drop those rows before clustering\n"
    )


def test_cli_option_errors_come_before_any_embedding(tmp_path: Path) -> None:
    manifest_path, embeddings_path, _, _ = write_inputs(tmp_path)
    two = ["--embeddings", embeddings_path, "--embeddings", embeddings_path]
    result = cli(manifest_path, "-o", tmp_path / "o.parquet", *two)
    assert result.output == "error: 2 encoders/embeddings given; add --ensemble to average their scores\n"
    result = cli(
        manifest_path, "-o", tmp_path / "o.parquet", *two, "--ensemble", "--save-embeddings", tmp_path / "s.parquet"
    )
    assert result.output == "error: --save-embeddings writes one source's embeddings; 2 were given\n"
    result = cli(manifest_path, "-o", tmp_path / "o.parquet", "--embeddings", tmp_path / "emb.npy")
    assert (
        result.output
        == f"error: --embeddings {tmp_path / 'emb.npy'}: a .npy matrix needs --embedding-ids FILE (one id per row)\n"
    )
    assert not (tmp_path / "o.parquet").exists()


def test_read_embeddings_rejects_ragged_lists(tmp_path: Path) -> None:
    path = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "embedding": [[1.0, 2.0], [3.0]]}), path)
    with pytest.raises(DatadietError) as error:
        read_embeddings(path)
    assert str(error.value) == (
        f"{path}: column 'embedding' rows differ in length (2 at row 0, 1 at row 1); every embedding needs the same dimension"
    )
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "embedding": [[1.0, 2.0], [3.0, 4.0]]}), plain)
    ids, matrix, metadata = read_embeddings(plain)
    assert list(ids) == ["a", "b"] and matrix.dtype == np.float32 and matrix.tolist() == [[1, 2], [3, 4]]
    assert metadata == {} and json.dumps(metadata) == "{}"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("ex0000\ncafé\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 10)"),
        (np.arange(4, dtype=np.float32).tobytes() + b"\x93NUMPY", "not UTF-8 text (byte 0x80 at offset 6)"),
        (b"ex0000\n\x00\x01\x02\n", "a binary file (it holds NUL bytes), not text"),
    ],
)
def test_cli_embedding_ids_that_are_not_utf8_text(tmp_path: Path, content: bytes, reason: str) -> None:
    manifest_path, _, x, _ = write_inputs(tmp_path)
    np.save(tmp_path / "emb.npy", x)
    ids = tmp_path / "ids.txt"
    ids.write_bytes(content)
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["cluster", str(manifest_path), "-o", str(out), "--embeddings",
                                 str(tmp_path / "emb.npy"), "--embedding-ids", str(ids), "-q"])  # fmt: skip
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: --embedding-ids {ids}: {reason}; save the ids as UTF-8 text, one per line, or as Parquet with an id "
        "column\n"
    )
    assert not out.exists() and ids.read_bytes() == content


def test_embedding_ids_in_utf8_with_a_byte_order_mark(tmp_path: Path) -> None:
    manifest_path, _, x, _ = write_inputs(tmp_path)
    np.save(tmp_path / "emb.npy", x)
    (tmp_path / "ids.txt").write_bytes(("\ufeff" + "\r\n".join(read_manifest(manifest_path).ids()) + "\r\n").encode())
    result = cli(manifest_path, "-o", tmp_path / "out.parquet", "--embeddings", tmp_path / "emb.npy",
                 "--embedding-ids", tmp_path / "ids.txt")  # fmt: skip
    assert result.exit_code == 0, result.output
