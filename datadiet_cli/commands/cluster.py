from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datadiet_cli import console, distributed
from datadiet_cli.cluster.embed import EmbedConfig
from datadiet_cli.cluster.kmeans import ClusterConfig, Engine
from datadiet_cli.cluster.pipeline import (
    ClusterJob,
    check_outputs,
    cluster_manifest,
    write_outputs,
)
from datadiet_cli.io.manifest import read_manifest
from datadiet_cli.options import (
    Device,
    DeviceOption,
    InferenceBatchSize,
    InputManifest,
    OutputManifest,
    Quiet,
    RootOption,
    Seed,
)


def cluster(
    manifest: InputManifest,
    output: OutputManifest,
    encoder: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ENCODER",
            help="swav-resnet50 (the paper's; default), torchvision:NAME (with --weights), the path of a "
            "torch.export program (RGB [0,1] (N,3,S,S) -> (N,D)), or pixels (raw pixels, for tiny images). "
            "Repeat it with --ensemble.",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE",
            help="Checkpoint for swav-resnet50 (default: the torch hub cache) or torchvision:NAME; one per such encoder, in order.",
            show_default=False,
        ),
    ] = None,
    embeddings: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE",
            help="Precomputed embeddings instead of an encoder: Parquet with id + embedding (a file, or a folder "
            "of parts as --save-embeddings writes under torchrun), or .npy with --embedding-ids.",
            show_default=False,
        ),
    ] = None,
    embedding_ids: Annotated[
        Path | None,
        typer.Option(
            help="Ids of a .npy --embeddings file: text, one per line, or Parquet with an id column.",
            show_default=False,
        ),
    ] = None,
    save_embeddings: Annotated[
        Path | None,
        typer.Option(
            help="Also write the embeddings (Parquet: id + embedding) for reuse with --embeddings; under torchrun "
            "a folder of one part per process (part-00000.parquet, ...), read as one table.",
            show_default=False,
        ),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option(
            "--k",
            help="Number of clusters. Default: the number of classes (required for unlabeled data).",
            show_default=False,
        ),
    ] = None,
    iters: Annotated[int, typer.Option(help="Most Lloyd iterations (stops earlier at tolerance 1e-4).")] = 100,
    fit_fraction: Annotated[
        float, typer.Option(help="Fit centroids on this seeded fraction of rows, then assign every row (recorded).")
    ] = 1.0,
    spherical: Annotated[
        bool, typer.Option(help="Cluster L2-normalised embeddings; distances are cosine distances 1 - cos.")
    ] = False,
    ensemble: Annotated[
        bool, typer.Option(help="Average the standardised scores of several --encoder/--embeddings sources.")
    ] = False,
    image_size: Annotated[
        int | None,
        typer.Option(
            help="Encoder input side S. Default: 224 for swav/torchvision; for a program, the images' side rounded up to a size it accepts.",
            show_default=False,
        ),
    ] = None,
    batch_size: InferenceBatchSize = 128,
    engine: Annotated[
        Engine,
        typer.Option(
            help="k-means implementation: auto = torch on a GPU; on the CPU faiss when installed "
            "(pip install 'datadiet[faiss]'), else scikit-learn (torch under torchrun, where sklearn cannot run)."
        ),
    ] = Engine.auto,
    device: DeviceOption = Device.auto,
    root: RootOption = None,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Score every example by its distance to its k-means prototype in an encoder's embedding space (the paper's self-supervised metric).

    Adds `cluster` (int64), `proto_dist` (distance to the nearest centroid: far = atypical = hard) and, when every row is labeled, `sup_proto_dist` (distance to the mean embedding of its class). Encoder weights are never downloaded.

    Under torchrun each process embeds its share of the rows, with one process's clusters: torchrun --nproc-per-node 2 -m datadiet_cli cluster cifar.parquet -o clustered.parquet --encoder MODEL.pt2

    Example: datadiet cluster cifar.parquet -o clustered.parquet --encoder ~/models/efficientnet_lite0.pt2
    """
    inputs = (manifest, *(embeddings or ()), *([embedding_ids] if embedding_ids else []))
    with distributed.launched(device.value) as ranks:
        with distributed.together(ranks):
            check_outputs(output, save_embeddings, inputs, ranks)
            source = read_manifest(manifest)
        job = ClusterJob(
            cluster=ClusterConfig(k=k, iters=iters, fit_fraction=fit_fraction, spherical=spherical, engine=engine,
                                  ensemble=ensemble, seed=seed),
            embed=EmbedConfig(image_size=image_size, batch_size=batch_size, device=ranks.device),
            encoders=tuple(encoder or ()), weights=tuple(weights or ()), embedding_files=tuple(embeddings or ()),
            embedding_ids=embedding_ids, root=root, keep_embeddings=save_embeddings is not None,
        )  # fmt: skip
        silent = quiet or not ranks.main  # one progress display and summary per job: rank 0's
        result = cluster_manifest(source, job, lambda what, unit: console.progress_bar(what, silent, unit), ranks)
        write_outputs(result, source, output, save_embeddings, ranks)
    if result.manifest is None:
        return
    stats = result.manifest.lineage()[-1].stats
    fit = stats["fits"][0]
    console.summary(
        quiet,
        f"clustered {stats['rows']:,} rows into k={stats['k']} ({fit['engine']}, "
        + (f"{stats['processes']} processes, " if "processes" in stats else "")
        + f"{fit['iterations']} iterations, "
        f"fit on {fit['fit_rows']:,} rows); wrote cluster, proto_dist"
        + (", sup_proto_dist" if stats["supervised"] else "")
        + f" -> {output}",
    )
