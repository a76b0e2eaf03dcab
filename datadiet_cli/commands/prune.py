from __future__ import annotations

from typing import Annotated

import typer

from datadiet_cli import console
from datadiet_cli.io.files import check_output
from datadiet_cli.io.manifest import read_manifest, write_manifest
from datadiet_cli.options import InputManifest, OutputManifest, Quiet, Seed
from datadiet_cli.select.prune import Keep, PruneConfig, prune_manifest


def prune(
    manifest: InputManifest,
    output: OutputManifest,
    keep: Annotated[
        Keep,
        typer.Option(
            help="Which examples to keep: hard (highest scores; when data is abundant), easy (lowest; "
            "when data is scarce), random (a seeded sample, the baseline), or window (a band of ranks "
            "starting at --window-start).",
            show_default=False,
        ),
    ],
    score: Annotated[
        str | None,
        typer.Option(
            help="Score column to rank by (higher = harder). Not needed with --keep random.",
            show_default=False,
        ),
    ] = None,
    fraction: Annotated[
        float | None,
        typer.Option(help="Fraction of rows to keep, in (0, 1]; keeps round(F*N) rows.", show_default=False),
    ] = None,
    count: Annotated[
        int | None, typer.Option(help="Number of rows to keep (instead of --fraction).", show_default=False)
    ] = None,
    window_start: Annotated[
        float,
        typer.Option(
            help="With --keep window: quantile of the easy->hard ranking where the kept band starts, in [0, 1)."
        ),
    ] = 0.0,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Keep a fraction of the rows of a manifest, ranked by a difficulty score.

    The output keeps the input's row order and columns, and records the policy and the
    full dataset size in its lineage (balance and train --matched-iterations read them).

    Example: datadiet prune scored.parquet -o kept.parquet --score el2n --keep hard --fraction 0.7
    """
    check_output(output, manifest)
    config = PruneConfig(keep=keep, score=score, fraction=fraction, count=count, window_start=window_start, seed=seed)
    pruned = prune_manifest(read_manifest(manifest), config)
    write_manifest(pruned, output)
    stats = pruned.lineage()[-1].stats
    console.summary(
        quiet,
        f"kept {stats['rows_kept']:,} of {stats['rows_in']:,} rows ({stats['fraction_kept']:.1%}, keep {keep.value}"
        + (f" by {score}" if score and keep is not Keep.random else "")
        + f") -> {output}",
    )
