"""`cluster_manifest`: the one library call behind `datadiet cluster`, and `write_outputs`, its writes.

Check every option first (nothing expensive happens before a bad option fails), gather the
embeddings (encoders run over the images once decoded, and saved files), then k-means and the
prototype scores. The caller writes the manifest, and the embeddings when it asked to keep them.

Under torchrun (`ranks`) every rank runs the same calls on its own block of rows. A step that can
fail on one rank only (an unreadable image in its block) runs inside `together`, so every rank
stops with that rank's error and nothing is written; only rank 0 writes the manifest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datadiet_cli.cluster.embed import EmbedConfig, Embeddings
from datadiet_cli.cluster.encoders import SWAV_ENCODER
from datadiet_cli.cluster.kmeans import ClusterConfig, kmeans_device, resolve_engine
from datadiet_cli.cluster.prototypes import validate_config, with_prototype_scores
from datadiet_cli.cluster.sources import PhaseProgress, embedding_sources, no_progress
from datadiet_cli.distributed import SINGLE, Ranks, broadcast, together
from datadiet_cli.errors import OptionError
from datadiet_cli.io.files import check_output, check_output_folder
from datadiet_cli.io.manifest import Manifest, write_manifest
from datadiet_cli.io.tables import (
    PART_KEY,
    PARTS_KEY,
    check_parts_folder,
    part_name,
    prepare_staging,
    publish_folder,
    staging_folder,
    write_embeddings,
)


@dataclass(frozen=True)
class ClusterJob:
    """Everything `datadiet cluster` is asked: where embeddings come from, how they are made and clustered."""

    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # k-means and scores; the step's lineage options
    embed: EmbedConfig = field(default_factory=EmbedConfig)  # how encoders run; recorded in the step's stats
    encoders: tuple[str, ...] = ()  # --encoder specs in order; with no embedding files either, swav-resnet50
    weights: tuple[Path, ...] = ()  # the i-th goes to the i-th encoder that takes weights
    embedding_files: tuple[Path, ...] = ()  # saved embeddings (Parquet file or folder, or .npy with embedding_ids)
    embedding_ids: Path | None = None  # ids of a .npy embeddings file, one per row
    root: Path | None = None  # dataset root overriding the manifest's (encoders only)
    keep_embeddings: bool = False  # return the source's embeddings for saving; needs exactly one source

    def encoder_specs(self) -> tuple[str, ...]:
        """The encoders to run: those named, else swav-resnet50 when no embedding file is given either."""
        return self.encoders or (() if self.embedding_files else (SWAV_ENCODER,))


@dataclass(frozen=True)
class Clustered:
    manifest: Manifest | None  # the input with cluster, proto_dist (and sup_proto_dist); None on ranks but 0
    embeddings: Embeddings | None  # the one source's embeddings (this rank's rows) when the job kept them


def cluster_manifest(
    manifest: Manifest, job: ClusterJob, phase: PhaseProgress = no_progress, ranks: Ranks = SINGLE
) -> Clustered:
    """Embed (or read) every source, cluster, and score each row's distance to its prototype.

    `phase(description, unit)` gives a context with the progress callback of each phase:
    decoding, embedding with each encoder, k-means. Under torchrun every rank calls this with the
    whole manifest and embeds its own rows (`ranks.shard(N)`).
    """
    with together(ranks):
        encoders = job.encoder_specs()
        n_sources = len(encoders) + len(job.embedding_files)
        validate_config(manifest, job.cluster, n_sources, ranks)
        if job.keep_embeddings and n_sources != 1:
            raise OptionError(f"--save-embeddings writes one source's embeddings; {n_sources} were given")
        device = kmeans_device(job.embed.device)
        # e.g. faiss on a GPU fails before embedding
        resolve_engine(job.cluster.engine, device, job.cluster.spherical, ranks.distributed)
    with together(ranks):
        sources = embedding_sources(manifest, encoders, job.weights, job.embedding_files, job.embedding_ids,
                                    job.embed, job.root, phase, ranks)  # fmt: skip
    with phase("k-means", "iterations") as progress:
        clustered = with_prototype_scores(
            manifest, sources, job.cluster, device, progress, dataclasses.asdict(job.embed), ranks
        )
    return Clustered(clustered, sources[0] if job.keep_embeddings else None)


# -- outputs ------------------------------------------------------------------------------------


def check_outputs(output: Path, embeddings: Path | None, inputs: tuple[Path, ...], ranks: Ranks = SINGLE) -> None:
    """Refuse output paths before any work. Under torchrun --save-embeddings names a folder (one part
    per rank), which may replace only a folder of parts, never one of the inputs."""
    check_output(output, *inputs)
    if embeddings is None:
        return
    if not ranks.distributed:
        check_output(embeddings, *inputs, output, option="--save-embeddings")
        return
    check_output_folder(embeddings, option="--save-embeddings", what="folder of embeddings parts")
    for other in (*inputs, output):
        if os.path.abspath(other) == os.path.abspath(embeddings):
            raise OptionError(
                f"--save-embeddings {embeddings}: it would overwrite an input or the output; choose another folder"
            )
    check_parts_folder(embeddings)


def write_outputs(
    result: Clustered, manifest: Manifest, output: Path, embeddings: Path | None, ranks: Ranks = SINGLE
) -> None:
    """Write the kept embeddings (when `embeddings` is given), then the manifest (rank 0)."""
    if embeddings is not None and result.embeddings is not None:
        save_embeddings(manifest.ids()[ranks.shard(manifest.num_rows)], result.embeddings, embeddings, ranks)
    with together(ranks):
        if result.manifest is not None:
            write_manifest(result.manifest, output)


def save_embeddings(ids: np.ndarray, embeddings: Embeddings, path: Path, ranks: Ranks = SINGLE) -> None:
    """One Parquet file in one process. Under torchrun a folder with one part per rank, in row order
    (part-00000.parquet, ...), that appears whole or not at all: the parts are written into a staging
    folder, which rank 0 moves into place once every rank has written its part."""
    metadata = {"encoder": dict(embeddings.identity)}
    if not ranks.distributed:
        write_embeddings(ids, embeddings.matrix, path, metadata)
        return
    # Rank 0's identity for every part (only rank 0 digests a saved folder) and its process id.
    shared = json.dumps({"pid": os.getpid(), "metadata": metadata}).encode() if ranks.main else None
    sent = broadcast(ranks, None if shared is None else np.frombuffer(shared, dtype=np.uint8).copy(), np.uint8)
    agreed = json.loads(sent.tobytes())
    staging = staging_folder(path, agreed["pid"])
    try:
        with together(ranks):
            if ranks.main:
                prepare_staging(path, agreed["pid"])
        with together(ranks):
            part = {**agreed["metadata"], PART_KEY: ranks.rank, PARTS_KEY: ranks.world}
            write_embeddings(ids, embeddings.matrix, staging / part_name(ranks.rank), part)
        with together(ranks):
            if ranks.main:
                publish_folder(staging, path)
    finally:
        if ranks.main:
            shutil.rmtree(staging, ignore_errors=True)
