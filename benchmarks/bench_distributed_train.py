"""Data-parallel `train` under torchrun: 2 processes x 1 thread against 1 process x 1 thread.

The same epoch of the same run (5,000 CIFAR-10 training images, one fixed random subset) is
trained by `datadiet train` in one process and by `torchrun --nproc-per-node 2 -m datadiet_cli
train` (gloo on the CPU), alternating, and the speed-up is the ratio of the medians of the
epoch's own time (metrics.jsonl "seconds": the step loop, not start-up). The last epoch of a
short run is timed, so decoding and warm-up are not. Also timed, inside a 2-process job: one
all-reduce of the model's gradients (what DDP adds per step) and, with --sync-bn, the
BatchNorm all-reduces; both as a share of the 2-process step.

Usage: python benchmarks/bench_distributed_train.py [--rows 5000] [--repeats 3] [--arch smallcnn] [--sync-bn]
(needs the CIFAR-10 tree unpacked at ~/.cache/datadiet/cifar10, as tests/conftest.py leaves it)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CIFAR_TREE = Path.home() / ".cache" / "datadiet" / "cifar10"
ALLREDUCE_PROBE = """
import os, statistics, time, torch, torch.distributed as dist
from datadiet_cli.train.models import build_model
dist.init_process_group("gloo")
torch.set_num_threads(1)
grads = torch.zeros(sum(p.numel() for p in build_model(os.environ["ARCH"], 10, 3, 32).parameters()))
times = []
for _ in range(60):
    dist.barrier(); start = time.perf_counter(); dist.all_reduce(grads); times.append(time.perf_counter() - start)
if dist.get_rank() == 0:
    print(statistics.median(times[10:]), grads.numel())
dist.destroy_process_group()
"""


def environment() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), NO_COLOR="1")


def datadiet(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "datadiet_cli", *arguments]


def torchrun(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *arguments]


def subset(folder: Path, rows: int) -> Path:
    """A fixed random subset of CIFAR-10's training split, `rows` images."""
    full, kept = folder / "cifar-train.parquet", folder / "subset.parquet"
    subprocess.run(datadiet("ingest", str(CIFAR_TREE / "train"), "-o", str(full), "-q"), check=True, env=environment())
    fraction = f"{rows / 50_000:.6f}"
    subprocess.run(datadiet("prune", str(full), "-o", str(kept), "--keep", "random", "--fraction", fraction,
                            "--seed", "0", "-q"), check=True, env=environment())  # fmt: skip
    # Decode once, outside the timings (both runs read the same pixel cache).
    subprocess.run(datadiet("train", str(kept), "-o", str(folder / "warm"), "--recipe", "fast", "--epochs", "1",
                            "--stop-after", "1", "-q"), check=True, env=environment())  # fmt: skip
    return kept


def epoch_seconds(command: list[str], run: Path) -> tuple[float, float]:
    """(seconds of the run's last epoch, wall seconds of the whole command)."""
    started = time.perf_counter()
    subprocess.run(command, check=True, env=environment(), capture_output=True)
    wall = time.perf_counter() - started
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return float(last["seconds"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arch", default="smallcnn")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sync-bn", action="store_true")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        kept = subset(folder, options.rows)
        train = ["train", str(kept), "--recipe", "fast", "--arch", options.arch, "--epochs", str(options.epochs),
                 "--device", "cpu", "-q"]  # fmt: skip
        if options.sync_bn:
            train.append("--sync-bn")
        times: dict[str, list[tuple[float, float]]] = {"1 process": [], "2 processes": []}
        for repeat in range(options.repeats):  # alternating: both meet the same load
            one, two = folder / f"one-{repeat}", folder / f"two-{repeat}"
            times["1 process"].append(epoch_seconds(datadiet(*train, "-o", str(one)), one))
            times["2 processes"].append(epoch_seconds(torchrun("-m", "datadiet_cli", *train, "-o", str(two)), two))
        probe = subprocess.run(torchrun(str(write_probe(folder))),
                               check=True, env=environment() | {"ARCH": options.arch}, capture_output=True, text=True)  # fmt: skip
        allreduce_s, parameters = (float(x) for x in probe.stdout.split())

    one = statistics.median(seconds for seconds, _ in times["1 process"])
    two = statistics.median(seconds for seconds, _ in times["2 processes"])
    steps = -(-options.rows // 256)
    print(f"datadiet train, {options.rows:,} CIFAR-10 images, fast recipe, {options.arch}"
          f"{', --sync-bn' if options.sync_bn else ''}; epoch {options.epochs} of {options.epochs}, "
          f"{options.repeats} alternating repeats")  # fmt: skip
    print(
        f"  1 process  x 1 thread : median epoch {one:7.2f} s   (all: {[round(s, 2) for s, _ in times['1 process']]})"
    )
    print(
        f"  2 processes x 1 thread: median epoch {two:7.2f} s   (all: {[round(s, 2) for s, _ in times['2 processes']]})"
    )
    print(f"  speed-up {one / two:.2f}x (goal >= 1.5x)")
    print(f"  gradient all-reduce ({int(parameters):,} float32): {allreduce_s * 1e3:.2f} ms per step x {steps} steps "
          f"= {allreduce_s * steps:.2f} s, {allreduce_s * steps / two:.0%} of the 2-process epoch")  # fmt: skip
    wall_one = statistics.median(wall for _, wall in times["1 process"])
    wall_two = statistics.median(wall for _, wall in times["2 processes"])
    print(f"  whole command (start-up, decoding from the cache, {options.epochs} epochs): {wall_one:.1f} s vs "
          f"{wall_two:.1f} s")  # fmt: skip
    print(f"  load average {os.getloadavg()[0]:.2f}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; torch {torch.__version__}; python {platform.python_version()}")  # fmt: skip


def write_probe(folder: Path) -> Path:
    path = folder / "allreduce_probe.py"
    path.write_text(ALLREDUCE_PROBE)
    return path


if __name__ == "__main__":
    main()
