"""`cluster_manifest`: the one library call behind `datadiet cluster`.

Check every option first (nothing expensive happens before a bad option fails), gather the
embeddings (encoders run over the images once decoded, and saved files), then k-means and the
prototype scores. The caller writes the manifest, and the embeddings when it asked to keep them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from datadiet_cli.cluster.embed import EmbedConfig, Embeddings
from datadiet_cli.cluster.encoders import SWAV_ENCODER
from datadiet_cli.cluster.kmeans import ClusterConfig, kmeans_device, resolve_engine
from datadiet_cli.cluster.prototypes import validate_config, with_prototype_scores
from datadiet_cli.cluster.sources import PhaseProgress, embedding_sources, no_progress
from datadiet_cli.errors import OptionError
from datadiet_cli.io.manifest import Manifest


@dataclass(frozen=True)
class ClusterJob:
    """Everything `datadiet cluster` is asked: where embeddings come from, how they are made and clustered."""

    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # k-means and scores; the step's lineage options
    embed: EmbedConfig = field(default_factory=EmbedConfig)  # how encoders run; recorded in the step's stats
    encoders: tuple[str, ...] = ()  # --encoder specs in order; with no embedding files either, swav-resnet50
    weights: tuple[Path, ...] = ()  # the i-th goes to the i-th encoder that takes weights
    embedding_files: tuple[Path, ...] = ()  # saved embeddings (Parquet, or .npy with embedding_ids), after encoders
    embedding_ids: Path | None = None  # ids of a .npy embeddings file, one per row
    root: Path | None = None  # dataset root overriding the manifest's (encoders only)
    keep_embeddings: bool = False  # return the source's embeddings for saving; needs exactly one source

    def encoder_specs(self) -> tuple[str, ...]:
        """The encoders to run: those named, else swav-resnet50 when no embedding file is given either."""
        return self.encoders or (() if self.embedding_files else (SWAV_ENCODER,))


@dataclass(frozen=True)
class Clustered:
    manifest: Manifest  # the input with cluster, proto_dist (and sup_proto_dist) added and the step recorded
    embeddings: Embeddings | None  # the one source's embeddings when the job kept them, else None


def cluster_manifest(manifest: Manifest, job: ClusterJob, phase: PhaseProgress = no_progress) -> Clustered:
    """Embed (or read) every source, cluster, and score each row's distance to its prototype.

    `phase(description, unit)` gives a context with the progress callback of each phase:
    decoding, embedding with each encoder, k-means.
    """
    encoders = job.encoder_specs()
    n_sources = len(encoders) + len(job.embedding_files)
    validate_config(manifest, job.cluster, n_sources)
    if job.keep_embeddings and n_sources != 1:
        raise OptionError(f"--save-embeddings writes one source's embeddings; {n_sources} were given")
    device = kmeans_device(job.embed.device)
    resolve_engine(job.cluster.engine, device, job.cluster.spherical)  # e.g. faiss on a GPU fails before embedding
    sources = embedding_sources(manifest, encoders, job.weights, job.embedding_files, job.embedding_ids, job.embed,
                                job.root, phase)  # fmt: skip
    with phase("k-means", "iterations") as progress:
        clustered = with_prototype_scores(
            manifest, sources, job.cluster, device, progress, dataclasses.asdict(job.embed)
        )
    return Clustered(clustered, sources[0] if job.keep_embeddings else None)
