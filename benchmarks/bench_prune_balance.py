"""How much slower than a plain Parquet round trip are `prune` and `balance`?

Builds an ImageNet-sized manifest (1.28M rows, 1,000 classes, a float score; written to a
temporary folder), then times, best of --repeats:
  plain    pq.read_table + pq.write_table of that file (zstd, like write_manifest) -- the reference
  prune    read_manifest + prune_manifest (keep hard, 30%) + write_manifest
  balance  read PRUNED and FULL + balance_manifest + write_manifest (includes hashing both inputs)
  core     balance_indices alone (arrays in, arrays out)
and the CLI end to end once (`datadiet prune`, `datadiet balance`: interpreter start-up included).
Prints ratios to `plain`, timed in the same run (absolute times are noisy across machines).

Usage: python benchmarks/bench_prune_balance.py [--rows 1281167] [--classes 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from timing import best_of

from datadiet_cli.io.manifest import new_manifest, read_manifest, write_manifest
from datadiet_cli.select.balance import BalanceConfig, balance_indices, balance_manifest, kept_mask
from datadiet_cli.select.prune import Keep, PruneConfig, prune_manifest, selection_priority


def build_manifest(rows: int, classes: int, path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, size=rows)
    # Class-dependent difficulty, so keep=hard really starves the easy classes and balance has work to do.
    difficulty = rng.normal(size=classes)
    scores = difficulty[labels] + rng.normal(size=rows)
    ids = np.char.add("n", np.char.zfill(np.arange(rows).astype(str), 8)).astype(object)
    paths = np.char.add(np.char.add("train/", labels.astype(str)), np.char.add("/", ids.astype(str))).astype(object)
    manifest = new_manifest(
        ids,
        labels,
        {"kind": "imagefolder", "name": "bench", "classes": [f"c{i}" for i in range(classes)]},
        extra_columns={"path": paths},
    )
    write_manifest(manifest.with_score("el2n", scores, metric="synthetic", params={}), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_281_167)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="datadiet-bench-"))
    try:
        full_path, pruned_path = folder / "full.parquet", folder / "pruned.parquet"
        start = time.perf_counter()
        build_manifest(args.rows, args.classes, full_path)
        print(f"built {args.rows:,} rows x {args.classes:,} classes in {time.perf_counter() - start:.1f}s "
              f"({full_path.stat().st_size / 1e6:.1f} MB)")  # fmt: skip
        prune_config = PruneConfig(keep=Keep.hard, score="el2n", fraction=0.3)

        def plain() -> None:
            pq.write_table(pq.read_table(full_path), folder / "plain.parquet", compression="zstd")

        def prune() -> None:
            write_manifest(prune_manifest(read_manifest(full_path), prune_config), pruned_path)

        def balance() -> None:
            pruned, full = read_manifest(pruned_path), read_manifest(full_path)
            write_manifest(balance_manifest(pruned, full, BalanceConfig()), folder / "balanced.parquet")

        full = read_manifest(full_path)
        scores, labels = full.score("el2n"), full.labels()
        prune()
        kept = kept_mask(read_manifest(pruned_path), full)
        n_keep = int(kept.sum())
        priority = selection_priority(scores, prune_config, len(scores), n_keep)

        timings = {
            "plain": best_of(args.repeats, plain),
            "prune": best_of(args.repeats, prune),
            "balance": best_of(args.repeats, balance),
            "core": best_of(args.repeats, lambda: balance_indices(labels, kept, priority, 0.5)),
        }
        cli = {}
        for name, argv in {
            "cli prune": ["prune", str(full_path), "-o", str(pruned_path), "--keep", "hard", "--score", "el2n",
                          "--fraction", "0.3", "-q"],
            "cli balance": ["balance", str(pruned_path), "-o", str(folder / "balanced.parquet"), "-q"],
        }.items():  # fmt: skip
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "datadiet_cli", *argv], check=True)
            cli[name] = time.perf_counter() - start

        stats = read_manifest(folder / "balanced.parquet").lineage().last("balance").stats
        print(
            f"balance: b {stats['b_before']:.3f} -> {stats['b_after']:.3f}, min/max per class "
            f"{stats['min_group_before']}/{stats['max_group_before']} -> {stats['min_group_after']}/"
            f"{stats['max_group_after']}, added {stats['rows_added']:,}, dropped {stats['rows_dropped']:,}"
        )
        reference = timings["plain"]
        print(f"\n{'step':<12} {'seconds':>8} {'x plain':>8}")
        for name, seconds in {**timings, **cli}.items():
            print(f"{name:<12} {seconds:>8.3f} {seconds / reference:>8.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
