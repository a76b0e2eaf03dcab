from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datadiet_cli import console
from datadiet_cli.io.files import check_output
from datadiet_cli.io.manifest import read_manifest, write_manifest
from datadiet_cli.options import InputManifest, OutputManifest, Quiet
from datadiet_cli.select.balance import BalanceConfig, Group, balance_manifest, recorded_full_path


def balance(
    pruned: InputManifest,
    output: OutputManifest,
    full: Annotated[
        Path | None,
        typer.Option(
            help="The full manifest PRUNED was pruned from. Default: the input recorded in PRUNED's lineage.",
            show_default=False,
        ),
    ] = None,
    min_ratio: Annotated[
        float, typer.Option(help="Each group keeps at least this fraction of its fair share f*n (the paper's 0.5).")
    ] = 0.5,
    by: Annotated[
        Group, typer.Option(help="Balance classes (label) or k-means clusters (cluster, for unlabeled data).")
    ] = Group.label,
    quiet: Quiet = False,
) -> None:
    """Top up classes that pruning starved, keeping the pruned size (the paper's App. H).

    With f the kept fraction, every group keeps at least min-ratio * f of its full size: missing rows are the best unkept ones under the prune's own ranking, and the worst kept rows of the groups above their floor make room for them.

    Example: datadiet balance kept.parquet -o balanced.parquet --min-ratio 0.5
    """
    check_output(output, pruned)
    pruned_manifest = read_manifest(pruned)
    full_path = full if full is not None else recorded_full_path(pruned_manifest)
    check_output(output, full_path)
    config = BalanceConfig(min_ratio=min_ratio, by=by)
    balanced = balance_manifest(pruned_manifest, read_manifest(full_path), config)
    write_manifest(balanced, output)
    s = balanced.lineage()[-1].stats
    lines = [
        f"kept {s['rows_out']:,} of {s['rows_full']:,} rows, balanced over {s['groups']:,} {by.value} groups -> {output}",
        f"class balance b {s['b_before']:.3f} -> {s['b_after']:.3f}; rows per group: min {s['min_group_before']:,} -> "
        f"{s['min_group_after']:,}, max {s['max_group_before']:,} -> {s['max_group_after']:,}",
        f"added {s['rows_added']:,} rows to groups below their floor, dropped {s['rows_dropped']:,} from groups above it",
    ]
    if s["rows_grown"] > 0:
        lines.append(
            f"the floors alone need {s['floors_total']:,} rows, more than the {s['rows_in']:,} pruned: "
            f"the output grew by {s['rows_grown']:,} rows"
        )
    console.summary(quiet, *lines)
