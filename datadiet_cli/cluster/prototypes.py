"""The paper's prototype scores, from k-means fits of one or more embeddings of the manifest.

Sorscher et al. (2022, Sec. 5) embed every example with a self-supervised encoder, run
k-means with k about the number of classes, and call an example hard when it lies far
from its nearest centroid (`proto_dist`): prototypical examples are easy, outliers hard.
With labels the same machinery gives the supervised prototype score (`sup_proto_dist`):
the distance to the mean embedding of the example's own class. `with_prototype_scores`
writes the columns and the lineage. torch is imported inside functions.
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
from datadiet_cli.errors import EmbeddingError, OptionError
from datadiet_cli.io.lineage import LineageStep
from datadiet_cli.io.manifest import Manifest

ProgressCallback = Callable[[int, int], None]
PROTO_METRIC = "self_supervised_prototype"
SUP_PROTO_METRIC = "supervised_prototype"


def class_prototype_distances(
    embeddings: np.ndarray, labels: np.ndarray, spherical: bool, device: str = "cpu"
) -> np.ndarray:
    """Supervised prototype score: distance of each row to the mean embedding of its own class (float32)."""
    import torch

    with torch.inference_mode():
        points = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(device)
        if spherical:
            points = unit_rows(points)
        classes, inverse = np.unique(labels, return_inverse=True)
        assigned = torch.from_numpy(inverse.astype(np.int64)).to(device)
        sums = torch.zeros(len(classes), points.shape[1], dtype=torch.float64, device=device)
        sums.index_add_(0, assigned, points.double())
        counts = torch.bincount(assigned, minlength=len(classes)).double()
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


def check_embeddings(matrix: np.ndarray, ids: np.ndarray, source: str, spherical: bool) -> None:
    """One-line errors for embeddings that k-means cannot use (wrong shape, NaN/inf, zero rows with cosine)."""
    if matrix.ndim != 2 or len(matrix) != len(ids):
        raise EmbeddingError(f"{source}: embeddings have shape {matrix.shape}, expected ({len(ids)}, D)")
    bad_rows = ~np.isfinite(matrix).all(axis=1)
    if bad_rows.any():
        first = int(np.flatnonzero(bad_rows)[0])
        raise EmbeddingError(
            f"{source}: {int(bad_rows.sum())} embeddings contain NaN or inf (first at id '{ids[first]}'); "
            "fix or drop those rows before clustering"
        )
    if spherical:
        zero_rows = ~matrix.any(axis=1)
        if zero_rows.any():
            first = int(np.flatnonzero(zero_rows)[0])
            raise EmbeddingError(
                f"{source}: {int(zero_rows.sum())} embeddings are all zeros (first at id '{ids[first]}'); "
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


def validate_config(manifest: Manifest, config: ClusterConfig, n_sources: int) -> int:
    """Every option check that needs no embeddings (run before the expensive embedding); returns k."""
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
    resolve_engine(config.engine, "cpu", config.spherical)
    return k


def with_prototype_scores(
    manifest: Manifest,
    sources: Sequence[Embeddings],
    config: ClusterConfig,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    embed_options: Mapping[str, Any] | None = None,
) -> Manifest:
    """Add `cluster`, `proto_dist` and (with labels) `sup_proto_dist`; record the fit in the lineage.

    With several sources (`config.ensemble`), each is clustered on its own, the scores are
    standardised per source and averaged, and `cluster` comes from the first source.
    """
    k = validate_config(manifest, config, len(sources))
    labels = full_labels(manifest)
    ids = manifest.ids()
    fits: list[KMeansResult] = []
    supervised: list[np.ndarray] = []
    for source in sources:
        check_embeddings(source.matrix, ids, source_label(source), config.spherical)
        fits.append(kmeans(source.matrix, k, config, device, progress))
        if labels is not None:
            supervised.append(class_prototype_distances(source.matrix, labels, config.spherical, device))
    combine = (lambda scores: np.mean([standardise(s) for s in scores], axis=0)) if len(sources) > 1 else None
    proto = combine([f.distances for f in fits]) if combine else fits[0].distances
    distance = "cosine" if config.spherical else "euclidean"
    params = {
        "k": k,
        "distance": distance,
        "encoders": [dict(s.identity) for s in sources],
        "combined": "mean of per-source z-scores" if combine else "raw distance",
    }
    clustered = manifest.with_column("cluster", fits[0].labels, pa.int64()).with_score(
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
                "cluster_sizes": np.bincount(fit.labels, minlength=k).tolist(),
            }
            for source, fit in zip(sources, fits, strict=True)
        ],
        "device": device,
        "supervised": labels is not None,
        **({"embedding": dict(embed_options)} if embed_options else {}),
    }
    inputs = [manifest.source] if manifest.source is not None else []
    return clustered.with_lineage(LineageStep("cluster", config, inputs, stats))
