"""The paper's prototype scores, from k-means fits of one or more embeddings of the manifest.

Sorscher et al. (2022, Sec. 5) embed every example with a self-supervised encoder, run
k-means with k about the number of classes, and call an example hard when it lies far
from its nearest centroid (`proto_dist`): prototypical examples are easy, outliers hard.
With labels the same machinery gives the supervised prototype score (`sup_proto_dist`):
the distance to the mean embedding of the example's own class. `with_prototype_scores`
writes the columns and the lineage. torch is imported inside functions.

Under torchrun every rank scores its own block of rows; rank 0 gathers each row's cluster and
distances (never its embedding) and builds the manifest exactly as one process would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from datadiet_cli.cluster.embed import Embeddings
from datadiet_cli.cluster.kmeans import (
    ClusterConfig,
    KMeansResult,
    exact_distances,
    fit_sample,
    kmeans,
    resolve_engine,
    unit_rows,
)
from datadiet_cli.distributed import SINGLE, Ranks, all_sum, all_sum_, gather_rows, together
from datadiet_cli.errors import EmbeddingError, OptionError
from datadiet_cli.io.lineage import LineageStep
from datadiet_cli.io.manifest import Manifest

ProgressCallback = Callable[[int, int], None]
PROTO_METRIC = "self_supervised_prototype"
SUP_PROTO_METRIC = "supervised_prototype"


def class_prototype_distances(
    embeddings: np.ndarray, labels: np.ndarray, spherical: bool, device: str = "cpu", ranks: Ranks = SINGLE
) -> np.ndarray:
    """Supervised prototype score: distance of each row to the mean embedding of its own class.

    embeddings: (n, D) this rank's block of rows (all N in one process); labels: (N,) every row's
    label, so that every rank numbers the classes alike. Returns (n,) float32. Under torchrun the
    per-class sums and counts are summed over ranks.
    """
    import torch

    with torch.inference_mode():
        points = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(device)
        if spherical:
            points = unit_rows(points)
        classes, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse[ranks.shard(len(labels))]
        if len(inverse) != len(points):
            raise ValueError(f"{len(points)} embeddings for this rank's {len(inverse)} labels")
        assigned = torch.from_numpy(inverse.astype(np.int64)).to(device)
        sums = torch.zeros(len(classes), points.shape[1], dtype=torch.float64, device=device)
        sums.index_add_(0, assigned, points.double())
        counts = torch.bincount(assigned, minlength=len(classes)).double()
        if ranks.distributed:
            packed = all_sum_(ranks, torch.cat([sums, counts[:, None]], 1))
            sums, counts = packed[:, :-1], packed[:, -1]
        prototypes = (sums / counts[:, None]).float()
        if spherical:
            prototypes = unit_rows(prototypes)
        distances, _ = exact_distances(points, prototypes, assigned, spherical)
    return distances.cpu().numpy()


def standardise(scores: np.ndarray) -> np.ndarray:
    """(x - mean) / std, so scores of encoders with different embedding scales weigh the same."""
    scores = np.asarray(scores, dtype=np.float64)
    spread = scores.std()
    return (scores - scores.mean()) / (spread if spread > 0 else 1.0)


# -- manifests ----------------------------------------------------------------------------------


def check_embeddings(matrix: np.ndarray, ids: np.ndarray, source: str, spherical: bool, ranks: Ranks = SINGLE) -> None:
    """One-line errors for embeddings that k-means cannot use (wrong shape, NaN/inf, zero rows with cosine).

    matrix: (n, D) and ids: (n,), this rank's rows. Counts are over the whole job; the first bad id
    is the lowest rank's, which is the first in row order.
    """
    with together(ranks):
        if matrix.ndim != 2 or len(matrix) != len(ids):
            raise EmbeddingError(f"{source}: embeddings have shape {matrix.shape}, expected ({len(ids)}, D)")
    if ranks.distributed:
        widths = np.zeros(ranks.world, dtype=np.int64)
        widths[ranks.rank] = matrix.shape[1]
        widths = all_sum(ranks, widths)
        with together(ranks):
            if (widths != widths[0]).any():
                raise EmbeddingError(
                    f"{source}: embeddings differ in dimension between rows ({', '.join(map(str, np.unique(widths)))}); "
                    "every embedding needs the same dimension"
                )
    bad_rows = ~np.isfinite(matrix).all(axis=1)
    zero_rows = ~matrix.any(axis=1) if spherical else np.zeros(len(matrix), dtype=bool)
    bad_total, zero_total = all_sum(ranks, np.array([bad_rows.sum(), zero_rows.sum()], dtype=np.int64))
    with together(ranks):  # the lowest rank holding such a row names its first one; NaN before zeros, as in one process
        if bad_rows.any():
            first = int(np.flatnonzero(bad_rows)[0])
            raise EmbeddingError(
                f"{source}: {int(bad_total)} embeddings contain NaN or inf (first at id '{ids[first]}'); "
                "fix or drop those rows before clustering"
            )
        if bad_total == 0 and zero_rows.any():
            first = int(np.flatnonzero(zero_rows)[0])
            raise EmbeddingError(
                f"{source}: {int(zero_total)} embeddings are all zeros (first at id '{ids[first]}'); "
                "--spherical needs a direction for every row"
            )


def full_labels(manifest: Manifest) -> np.ndarray | None:
    """The labels when every row has one, else None (then there is no supervised prototype)."""
    if not manifest.has_column("label") or manifest.table.column("label").null_count:
        return None
    return manifest.labels()


def resolve_k(manifest: Manifest, requested: int | None, labels: np.ndarray | None) -> int:
    if requested is not None:
        return requested
    if labels is None:
        raise OptionError(
            f"{manifest.name}: the examples are unlabeled, so --k cannot default to the number of classes; "
            "pass --k (e.g. about the number of classes you expect)"
        )
    return len(manifest.classes) or len(np.unique(labels))


def source_label(source: Embeddings) -> str:
    """How errors name a source: the embeddings file, or the encoder that produced the vectors."""
    identity = source.identity
    if identity.get("kind") == "embeddings" and identity.get("file"):
        return str(identity["file"])
    return f"embeddings of {identity.get('name') or 'the encoder'}"


def validate_config(manifest: Manifest, config: ClusterConfig, n_sources: int, ranks: Ranks = SINGLE) -> int:
    """Every option check that needs no embeddings (run before the expensive embedding); returns k."""
    if manifest.num_rows < ranks.world:
        raise OptionError(
            f"{manifest.name}: {manifest.num_rows} rows for {ranks.world} processes; every process needs a row, "
            f"so start at most {manifest.num_rows} (torchrun --nproc-per-node)"
        )
    if n_sources == 0:
        raise OptionError("nothing to cluster: give an --encoder or --embeddings")
    if n_sources > 1 and not config.ensemble:
        raise OptionError(f"{n_sources} encoders/embeddings given; add --ensemble to average their scores")
    k = resolve_k(manifest, config.k, full_labels(manifest))
    if k < 1:
        raise OptionError(f"--k {k} must be at least 1")
    if k > manifest.num_rows:
        raise OptionError(f"--k {k} is larger than the number of rows ({manifest.num_rows}); use a smaller --k")
    if config.iters < 1:
        raise OptionError(f"--iters {config.iters} must be at least 1")
    fit_sample(manifest.num_rows, config.fit_fraction, k, config.seed)
    resolve_engine(config.engine, "cpu", config.spherical, ranks.distributed)
    return k


def with_prototype_scores(
    manifest: Manifest,
    sources: Sequence[Embeddings],
    config: ClusterConfig,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    embed_options: Mapping[str, Any] | None = None,
    ranks: Ranks = SINGLE,
) -> Manifest | None:
    """Add `cluster`, `proto_dist` and (with labels) `sup_proto_dist`; record the fit in the lineage.

    With several sources (`config.ensemble`), each is clustered on its own, the scores are
    standardised per source and averaged, and `cluster` comes from the first source.
    Under torchrun each source holds this rank's rows (`ranks.shard(N)`); rank 0 returns the
    manifest, the other ranks None.
    """
    k = validate_config(manifest, config, len(sources), ranks)
    labels = full_labels(manifest)
    ids = manifest.ids()[ranks.shard(manifest.num_rows)]
    fits: list[KMeansResult] = []
    supervised: list[np.ndarray] = []
    for source in sources:
        check_embeddings(source.matrix, ids, source_label(source), config.spherical, ranks)
        fits.append(kmeans(source.matrix, k, config, device, progress, ranks))
        if labels is not None:
            supervised.append(class_prototype_distances(source.matrix, labels, config.spherical, device, ranks))
    # Every row's cluster and distances, in row order (ranks hold consecutive blocks), on rank 0.
    # float64 holds the int64 clusters (< 2**53) and the float32 distances exactly.
    per_row = [*(fit.labels for fit in fits), *(fit.distances for fit in fits), *supervised]
    gathered = gather_rows(ranks, np.stack(per_row, axis=1).astype(np.float64))
    if gathered is None:
        return None
    columns = list(gathered.T)
    clusters = [column.astype(np.int64) for column in columns[: len(fits)]]
    distances, supervised = columns[len(fits) : 2 * len(fits)], columns[2 * len(fits) :]
    combine = (lambda scores: np.mean([standardise(s) for s in scores], axis=0)) if len(sources) > 1 else None
    proto = combine(distances) if combine else distances[0]
    distance = "cosine" if config.spherical else "euclidean"
    params = {
        "k": k,
        "distance": distance,
        "encoders": [dict(s.identity) for s in sources],
        "combined": "mean of per-source z-scores" if combine else "raw distance",
    }
    clustered = manifest.with_column("cluster", clusters[0], pa.int64()).with_score(
        "proto_dist", proto, PROTO_METRIC, params
    )
    if labels is not None:
        sup = combine(supervised) if combine else supervised[0]
        clustered = clustered.with_score(
            "sup_proto_dist", sup, SUP_PROTO_METRIC, {key: value for key, value in params.items() if key != "k"}
        )
    stats = {
        "rows": manifest.num_rows,
        "k": k,
        "fits": [
            {
                "encoder": dict(source.identity),
                "iterations": fit.iterations,
                "converged": fit.converged,
                "inertia": fit.inertia,
                "engine": fit.engine,
                "fit_rows": fit.fit_rows,
                "cluster_sizes": np.bincount(labels_of_fit, minlength=k).tolist(),
            }
            for source, fit, labels_of_fit in zip(sources, fits, clusters, strict=True)
        ],
        "device": device,
        "supervised": labels is not None,
        **({"processes": ranks.world} if ranks.distributed else {}),
        **({"embedding": dict(embed_options)} if embed_options else {}),
    }
    inputs = [manifest.source] if manifest.source is not None else []
    return clustered.with_lineage(LineageStep("cluster", config, inputs, stats))
