from __future__ import annotations

from typing import Annotated

import typer

from datadiet_cli import console
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.io.files import check_output
from datadiet_cli.io.manifest import write_manifest
from datadiet_cli.options import OutputManifest, Quiet, Seed


def ingest(
    source: Annotated[
        str,
        typer.Argument(
            help="An ImageFolder tree (`SOURCE/CLASS/IMAGE`), a folder holding `train/` and `test/` trees, "
            "a folder of CIFAR-10/100 python batches, or builtin:digits.",
            show_default=False,
        ),
    ],
    output: OutputManifest,
    split: Annotated[
        Split | None,
        typer.Option(
            help="Which split to list where the source has train/test splits (default: train). "
            "builtin:digits puts every 5th example of each class in test.",
            show_default=False,
        ),
    ] = None,
    per_class: Annotated[
        int | None,
        typer.Option(
            help="Keep at most this many images of each class, chosen by a seeded hash of their ids (default: all). "
            "Makes a smaller starting dataset; samples are nested as the number grows.",
            show_default=False,
        ),
    ] = None,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """List a dataset into a manifest: one row per image with a stable id, label, path and split.

    Nothing is decoded: class folders are listed and a few image headers read for the image size. Labels index the sorted class folders, exactly as torchvision's ImageFolder numbers them.

    Example: datadiet ingest cifar10/ --per-class 500 -o cifar-5k.parquet
    """
    check_output(output)
    config = IngestConfig(source=source, split=split, per_class=per_class, seed=seed)
    with console.progress_bar("listing", quiet, unit="classes") as progress:
        manifest = ingest_source(config, progress)
    write_manifest(manifest, output)
    dataset = manifest.meta["dataset"]
    shape = "x".join(str(v) for v in dataset["image_shape"]) if dataset["image_shape"] else "varying sizes"
    split_text = f"{dataset['split']} split, " if dataset["split"] else ""
    console.summary(
        quiet,
        f"ingested {manifest.num_rows:,} images of {len(dataset['classes'])} classes "
        f"({split_text}{shape}) from {source} -> {output}",
    )
