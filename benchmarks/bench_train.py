"""Training throughput and cost: the full `train` path against a bare loop, and against the kept fraction.

Prints ratios against references timed in the same run (absolute times are noisy on shared machines):

1. images/s of `train_run` (decoding cache, order, on-device augmentation, normalisation,
   running metrics, checkpoints) / images/s of a bare loop over pre-made device tensors with
   the same model, batch, precision, layout and device. Target: >= 0.9. Also with
   --record-dynamics (target: within a few percent of the plain run).
2. seconds per epoch at kept fractions 1, 0.5, 0.25 / seconds at 1: should follow the fraction.
3. with --cifar: the `fast` recipe on CIFAR-10 (ingested from /root/.cache/datadiet/cifar10),
   test accuracy and wall time on the full train split and on a random 30% subset.

Usage:
    python benchmarks/bench_train.py                       # builtin digits + 32x32 CIFAR-like data if present
    python benchmarks/bench_train.py --cifar               # also the CIFAR-10 fast-recipe runs (~7 min on 2 idle cores)
    python benchmarks/bench_train.py --device cuda --arch resnet18 --cifar-recipe cifar --cifar-epochs 15
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from datadiet_cli.data.images import load_images
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.device import select_device
from datadiet_cli.io.manifest import Manifest, read_manifest, write_manifest
from datadiet_cli.select.prune import Keep, PruneConfig, prune_manifest
from datadiet_cli.train.evaluate import evaluate_run
from datadiet_cli.train.loop import train_run, use_bf16
from datadiet_cli.train.models import build_model
from datadiet_cli.train.recipes import Precision, TrainConfig, base_learning_rate, recipe_with

CIFAR_ROOT = Path.home() / ".cache" / "datadiet" / "cifar10"


class BareLoop:
    """The same model/optimizer/precision/layout over pre-made device tensors: the ceiling for train_run."""

    def __init__(self, config: TrainConfig, in_channels: int, size: int, classes: int) -> None:
        device = select_device(config.device)
        self.device, self.bf16 = device, use_bf16(config.precision, device)
        channels_last = device.type in ("cuda", "cpu")
        recipe = config.recipe
        torch.manual_seed(0)
        self.model = build_model(recipe.arch, classes, in_channels, size).to(
            device, memory_format=torch.channels_last if channels_last else torch.preserve_format
        )
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=base_learning_rate(recipe),
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
        self.batch_size = recipe.batch_size
        batches = [torch.randn(recipe.batch_size, in_channels, size, size, device=device) for _ in range(4)]
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.batches = [b.contiguous(memory_format=memory_format) for b in batches]
        self.labels = torch.randint(0, classes, (recipe.batch_size,), device=device)
        for i in range(3):
            self.step(self.batches[i % 4])

    def step(self, images: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(images)
        loss = F.cross_entropy(logits.float(), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def images_per_second(self, steps: int) -> float:
        synchronize(self.device)
        started = time.perf_counter()
        for i in range(steps):
            self.step(self.batches[i % 4])
        synchronize(self.device)
        return steps * self.batch_size / (time.perf_counter() - started)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rates(manifest: Manifest, config: TrainConfig, workdir: Path) -> tuple[float, float, float]:
    """One train_run: (best epoch images/s over epochs 2.., end-to-end images/s of the call, median s/epoch).

    Epoch 1 pays one-off warm-up (oneDNN/cuDNN kernel selection); end-to-end includes it, the
    setup (pixels to the device, normalisation, model), metrics and checkpoints.
    """
    run_dir = workdir / f"run-{time.monotonic_ns()}"
    started = time.perf_counter()
    train_run(manifest, config, run_dir)
    wall = time.perf_counter() - started
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(run_dir)
    later = lines[1:] or lines
    images = sum(line["images_per_s"] * line["seconds"] for line in lines)
    return max(line["images_per_s"] for line in later), images / wall, float(np.median([x["seconds"] for x in later]))


def throughput_section(name: str, manifest: Manifest, config: TrainConfig, workdir: Path, repeats: int) -> None:
    pixels = load_images(manifest)  # fills the cache, so the runs time training, not decoding
    _, height, width, channels = pixels.shape
    steps_per_epoch = -(-manifest.num_rows // config.recipe.batch_size)
    bare = BareLoop(config, channels, max(height, width), len(manifest.classes))
    dynamics_config = dataclasses.replace(config, record_dynamics=True, dynamics_epochs=())
    best = {"bare": 0.0, "plain": 0.0, "plain_e2e": 0.0, "dynamics": 0.0}
    # Interleaved repeats, best of each: load from other processes hits all paths alike.
    for _ in range(repeats):
        best["bare"] = max(best["bare"], bare.images_per_second(steps_per_epoch))
        epoch_rate, end_to_end, _ = train_rates(manifest, config, workdir)
        best["plain"], best["plain_e2e"] = max(best["plain"], epoch_rate), max(best["plain_e2e"], end_to_end)
        best["dynamics"] = max(best["dynamics"], train_rates(manifest, dynamics_config, workdir)[0])
    reference = best["bare"]
    print(
        f"\n## {name}: {manifest.num_rows:,} images {height}x{width}x{channels}, {config.recipe.arch}, "
        f"batch {config.recipe.batch_size}, {config.recipe.epochs} epochs, device {config.device}, best of {repeats}"
    )
    print("| path | images/s | ratio to bare loop |")
    print("|---|---:|---:|")
    print(f"| bare loop over pre-made device tensors | {reference:,.0f} | 1.00 |")
    print(f"| train_run, epochs 2.. | {best['plain']:,.0f} | {best['plain'] / reference:.2f} |")
    print(
        f"| train_run, whole call (setup, epoch 1, checkpoints) | {best['plain_e2e']:,.0f} | "
        f"{best['plain_e2e'] / reference:.2f} |"
    )
    print(
        f"| train_run --record-dynamics, epochs 2.. | {best['dynamics']:,.0f} | {best['dynamics'] / reference:.2f} "
        f"({best['dynamics'] / best['plain']:.3f} of plain) |"
    )


def fraction_section(name: str, manifest: Manifest, config: TrainConfig, workdir: Path, repeats: int) -> None:
    print(f"\n## {name}: seconds per epoch vs kept fraction (random subsets, epochs 2..)")
    print("| kept fraction | rows | s/epoch | ratio to full | ideal |")
    print("|---:|---:|---:|---:|---:|")
    full = None
    for fraction in (1.0, 0.5, 0.25):
        subset = (
            manifest if fraction == 1.0 else prune_manifest(manifest, PruneConfig(keep=Keep.random, fraction=fraction))
        )
        seconds = min(train_rates(subset, config, workdir)[2] for _ in range(repeats))
        full = full or seconds
        print(f"| {fraction:.2f} | {subset.num_rows:,} | {seconds:.2f} | {seconds / full:.2f} | {fraction:.2f} |")


def cifar_accuracy_section(args: argparse.Namespace, workdir: Path) -> None:
    train = ingest_source(IngestConfig(source=str(CIFAR_ROOT), split=Split.train))
    test = ingest_source(IngestConfig(source=str(CIFAR_ROOT), split=Split.test))
    write_manifest(test, workdir / "cifar-test.parquet")
    test = read_manifest(workdir / "cifar-test.parquet")
    load_images(train), load_images(test)  # decode once, outside the timed runs
    recipe = recipe_with(args.cifar_recipe, arch=args.arch, epochs=args.cifar_epochs)
    config = TrainConfig(recipe=recipe, device=args.device, seed=0)
    print(
        f"\n## CIFAR-10, recipe {recipe.name} ({recipe.arch}, {recipe.epochs} epochs, batch {recipe.batch_size}, "
        f"lr {recipe.lr}), {args.device}"
    )
    print("| train set | rows | wall s (train) | s/epoch | test top-1 | test loss |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, fraction in (("full", 1.0), ("random 30%", 0.3)):
        subset = train if fraction == 1.0 else prune_manifest(train, PruneConfig(keep=Keep.random, fraction=fraction))
        run_dir = workdir / f"cifar-{fraction}"
        started = time.perf_counter()
        result = train_run(subset, config, run_dir)
        wall = time.perf_counter() - started
        report = evaluate_run(run_dir, test, device=args.device)
        print(
            f"| {label} | {subset.num_rows:,} | {wall:.0f} | {result.seconds / result.epochs:.1f} | "
            f"{report['top1']:.4f} | {report['loss']:.4f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default=None, help="network for every section (default: the recipe's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cifar", action="store_true", help="also train the fast recipe on all of CIFAR-10")
    parser.add_argument("--cifar-recipe", default="fast")
    parser.add_argument("--cifar-epochs", type=int, default=None)
    parser.add_argument("--subset", type=int, default=10_000, help="CIFAR rows for the throughput sections")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    print(
        f"# bench_train: torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        fast = recipe_with("fast", epochs=3, arch=args.arch)
        config = TrainConfig(recipe=fast, device=args.device, precision=Precision.auto)
        digits = ingest_source(IngestConfig(source="builtin:digits", split=Split.train))
        digits_config = dataclasses.replace(config, recipe=recipe_with("fast", epochs=4, arch=args.arch))
        throughput_section("builtin:digits", digits, digits_config, workdir, args.repeats)
        if CIFAR_ROOT.is_dir():
            cifar = ingest_source(IngestConfig(source=str(CIFAR_ROOT), split=Split.train))
            cifar = prune_manifest(cifar, PruneConfig(keep=Keep.random, count=min(args.subset, cifar.num_rows)))
            throughput_section(f"CIFAR-10 ({args.subset:,} random train images)", cifar, config, workdir, args.repeats)
            fraction_section(f"CIFAR-10 ({args.subset:,} random train images)", cifar, config, workdir, args.repeats)
            if args.cifar:
                cifar_accuracy_section(args, workdir)
        else:
            print(f"\n(skipping the CIFAR-10 sections: {CIFAR_ROOT} is absent)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
