"""Benchmark `ingest` and `load_images` on the CIFAR-10 JPEG train tree against bare references.

Each step is timed beside a reference doing the least possible work for the same result, in
the same run, and reported as a ratio (absolute times on shared machines are noisy):

- ingest (list 50,000 files, labels, ids, sample headers)  vs  a bare `os.walk` + extension filter
- load_images cold (decode every JPEG)                      vs  a serial loop of PIL open/convert/asarray
- load_images warm (cache hit, memory-mapped, then read)    vs  `np.load` of an equal-size .npy, read fully

Usage: python benchmarks/bench_ingest.py [--root ~/.cache/datadiet/cifar10] [--repeats 3] [--cold-repeats 2]
       [--decode-rows 50000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL
from PIL import Image
from timing import best_of

from datadiet_cli import __version__
from datadiet_cli.data.images import load_images
from datadiet_cli.data.ingest import IngestConfig, ingest_source
from datadiet_cli.data.sources.imagefolder import IMG_EXTENSIONS


def walk_listing(tree: Path) -> list[str]:
    files = []
    for directory, _, names in os.walk(tree):
        files.extend(os.path.join(directory, name) for name in names if name.lower().endswith(IMG_EXTENSIONS))
    return files


def serial_decode(files: list[str]) -> np.ndarray:
    pixels = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for row, file in enumerate(files):
        with Image.open(file) as image:
            pixels[row] = np.asarray(image.convert("RGB"))
    return pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.home() / ".cache" / "datadiet" / "cifar10")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold-repeats", type=int, default=2, help="runs of each cold decode (they are slow)")
    parser.add_argument("--decode-rows", type=int, default=50_000, help="rows decoded by the cold steps")
    args = parser.parse_args()
    if not (args.root / "train").is_dir():
        sys.exit(f"{args.root}/train not found; unpack ../shared/data/cifar10-jpg.tar.gz into {args.root.parent}")

    with tempfile.TemporaryDirectory(prefix="datadiet-bench-") as scratch:
        os.environ["DATADIET_CACHE"] = scratch  # a cold cache of our own, removed afterwards
        rows: list[tuple[str, float, str, float]] = []

        manifest = ingest_source(IngestConfig(source=str(args.root)))
        ingest_time = best_of(args.repeats, lambda: ingest_source(IngestConfig(source=str(args.root))))
        walk_time = best_of(args.repeats, lambda: walk_listing(args.root / "train"))
        rows.append((f"ingest ({manifest.num_rows:,} files)", ingest_time, "os.walk listing", walk_time))

        subset = manifest.take(np.linspace(0, manifest.num_rows - 1, args.decode_rows).round().astype(np.int64))
        files = [str(args.root / path) for path in subset.table.column("path").to_pylist()]
        # Interleaved, so the page cache and other processes favour neither side.
        cold_times, serial_times = [], []
        for _ in range(args.cold_repeats):
            cold_times.append(best_of(1, lambda: load_images(subset, cache=False)))
            serial_times.append(best_of(1, lambda: serial_decode(files)))
        cold_time, serial_time = min(cold_times), min(serial_times)
        rows.append((f"load_images cold ({len(files):,})", cold_time, "serial PIL loop", serial_time))

        load_images(subset)  # fills the cache
        warm_time = best_of(args.repeats, lambda: np.array(load_images(subset)))
        reference_file = Path(scratch) / "reference.npy"
        np.save(reference_file, np.zeros((len(files), 32, 32, 3), dtype=np.uint8))
        npy_time = best_of(args.repeats, lambda: np.array(np.load(reference_file, mmap_mode="r")))
        rows.append((f"load_images warm ({len(files):,})", warm_time, "np.load same size", npy_time))

    print(
        f"datadiet {__version__}, Python {platform.python_version()}, numpy {np.__version__}, "
        f"Pillow {PIL.__version__}, {os.cpu_count()} CPUs, repeats={args.repeats}, cold repeats={args.cold_repeats}"
    )
    print(f"{'step':<32} {'datadiet s':>10}  {'reference':<20} {'ref s':>8} {'ratio':>7}")
    for step, ours, reference, theirs in rows:
        print(f"{step:<32} {ours:>10.3f}  {reference:<20} {theirs:>8.3f} {ours / theirs:>6.2f}x")
    print(f"(median ratio {statistics.median(r[1] / r[3] for r in rows):.2f}x; ratio = datadiet / reference)")


if __name__ == "__main__":
    main()
