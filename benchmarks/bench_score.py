"""Difficulty metrics on real CIFAR-10: agreement (the paper's Fig. 5A), stability, usefulness, cost.

A class-balanced random subset of the CIFAR-10 train split (from /root/.cache/datadiet/cifar10)
is split into two class-balanced halves A and B. Probes train on A with the `fast` recipe
(smallcnn), every metric scores A's examples, and:

1. Agreement: Spearman rank correlation between every pair of metrics on A (the paper's Fig. 5A).
2. Stability: Spearman between the same metric from probes with seeds 0..K-1 and K..2K-1.
3. Usefulness: one more probe (another seed) trains on B only and predicts A. Each metric's
   ROC-AUC at telling apart the A examples that held-out probe misclassifies (random ~ 0.5).
4. Cost, as ratios against a probe's training time measured in the same run (interleaved,
   best of --repeats): training with recorded dynamics (what forgetting needs) / without, and
   each metric's scoring step (prediction passes, gradient norms, reading dynamics) / training.

Probes are trained once and reused through `score_manifest(..., from_runs=...)`, the library path
of `datadiet score --from-runs`; memorization trains its own subset probes, as `datadiet score
--metric memorization` does. Exact GraNd (per-example full gradients) runs on a smaller slice of A.

Usage:
    python benchmarks/bench_score.py --threads 1                   # n 4000, K 3, 10 epochs (~10 min on a shared 2-core CPU)
    python benchmarks/bench_score.py --n 2000 --probes 2 --epochs 4 # a quick look

On a CPU shared with other processes, --threads 1 avoids torch's thread pools spinning against
each other (14x faster than 2 threads under a load of 6 on 2 cores in our measurement).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from datadiet_cli.data.images import load_images
from datadiet_cli.data.ingest import IngestConfig, Split, ingest_source
from datadiet_cli.io.manifest import Manifest, read_manifest, write_manifest
from datadiet_cli.score.config import GrandMode, ScoreConfig
from datadiet_cli.score.pipeline import score_manifest
from datadiet_cli.score.readings import training_membership
from datadiet_cli.score.registry import Metric
from datadiet_cli.train.evaluate import evaluate_run, predict
from datadiet_cli.train.loop import train_run
from datadiet_cli.train.recipes import TrainConfig, recipe_with

CIFAR_ROOT = Path.home() / ".cache" / "datadiet" / "cifar10"
# The metrics scored from the K shared probes (memorization needs its own subset probes).
FROM_PROBES = ("el2n", "grand_ll", "forgetting", "uncertainty", "ddd")


def balanced_halves(manifest: Manifest, count: int, seed: int) -> tuple[Manifest, Manifest]:
    """Two disjoint class-balanced halves of a class-balanced random subset of `count` rows."""
    labels = manifest.labels()
    classes = np.unique(labels)
    per_class = count // len(classes)
    rng = np.random.default_rng(seed)
    half_a, half_b = [], []
    for label in classes:
        rows = rng.choice(np.flatnonzero(labels == label), per_class, replace=False)
        half_a.append(rows[: per_class // 2])
        half_b.append(rows[per_class // 2 :])
    return manifest.take(np.sort(np.concatenate(half_a))), manifest.take(np.sort(np.concatenate(half_b)))


def balanced_slice(manifest: Manifest, count: int) -> Manifest:
    """The first count / classes rows of each class (rows are already in random order within a class)."""
    labels = manifest.labels()
    per_class = max(1, count // len(np.unique(labels)))
    rows = np.concatenate([np.flatnonzero(labels == label)[:per_class] for label in np.unique(labels)])
    return manifest.take(np.sort(rows))


def saved(manifest: Manifest, path: Path) -> Manifest:
    write_manifest(manifest, path)
    return read_manifest(path)


def timed_train(manifest: Manifest, config: TrainConfig, run_dir: Path, pixels: np.ndarray) -> float:
    """Wall seconds of the whole train_run call (setup, epochs, checkpoints, dynamics merge)."""
    started = time.perf_counter()
    train_run(manifest, config, run_dir, pixels=pixels)
    return time.perf_counter() - started


def timed_score(manifest: Manifest, config: ScoreConfig, runs: list[Path]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    scored = score_manifest(manifest, config, None, from_runs=runs)
    return scored.score(config.column or config.metric.value), time.perf_counter() - started


def score_all(
    manifest: Manifest, base: ScoreConfig, runs: list[Path]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every metric computable from the shared probes: scores and scoring seconds."""
    variants = {
        "el2n": dataclasses.replace(base, metric=Metric.el2n),
        "grand_ll": dataclasses.replace(base, metric=Metric.grand, grand_mode=GrandMode.last_layer, column="grand_ll"),
        "forgetting": dataclasses.replace(base, metric=Metric.forgetting),
        "uncertainty": dataclasses.replace(base, metric=Metric.uncertainty),
        "ddd": dataclasses.replace(base, metric=Metric.ddd),
    }
    scores, seconds = {}, {}
    for name, config in variants.items():
        scores[name], seconds[name] = timed_score(manifest, config, runs)
    return scores, seconds


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def print_matrix(names: list[str], scores: dict[str, np.ndarray]) -> None:
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for row in names:
        cells = [f"{spearman(scores[row], scores[col]):.2f}" if row != col else "1" for col in names]
        print(f"| {row} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="class-balanced CIFAR-10 train rows (halves A and B)")
    parser.add_argument("--probes", type=int, default=3, help="K probes per seed set")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per probe (fast recipe compressed to them)")
    parser.add_argument("--memorization-probes", type=int, default=6, help="subset probes for memorization")
    parser.add_argument("--exact-rows", type=int, default=400, help="rows of A for exact GraNd (0 = skip)")
    parser.add_argument("--test-rows", type=int, default=1000, help="test rows for the probes' accuracy")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats (best of)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    if not CIFAR_ROOT.is_dir():
        print(f"bench_score: skipped, {CIFAR_ROOT} is absent (unpack ../shared/data/cifar10-jpg.tar.gz there)")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    K, epochs = args.probes, args.epochs
    print(
        f"# bench_score: torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {np.__version__}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"device {args.device}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-score-"))
    try:
        run(args, K, epochs, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, K: int, epochs: int, workdir: Path) -> None:
    # -- Data: class-balanced halves A (scored) and B (the held-out probe's training set) ----------
    train = ingest_source(IngestConfig(source=str(CIFAR_ROOT), split=Split.train))
    half_a, half_b = balanced_halves(train, args.n, args.seed)
    half_a, half_b = saved(half_a, workdir / "a.parquet"), saved(half_b, workdir / "b.parquet")
    test = ingest_source(IngestConfig(source=str(CIFAR_ROOT), split=Split.test))
    test = saved(balanced_halves(test, 2 * args.test_rows, args.seed)[0], workdir / "test.parquet")
    pixels_a, pixels_b = load_images(half_a), load_images(half_b)  # decoded once, outside every timing
    load_images(test)
    recipe = recipe_with("fast", epochs=epochs)
    plain = TrainConfig(recipe=recipe, device=args.device, seed=0)
    # What `datadiet score --metric forgetting` trains: training-time measurements only, no extra eval pass.
    dynamics = dataclasses.replace(plain, record_dynamics=True, dynamics_epochs=())
    print(
        f"\nCIFAR-10 train: {args.n:,} class-balanced random images -> A {half_a.num_rows:,} (scored), "
        f"B {half_b.num_rows:,} (held-out probe); recipe fast ({recipe.arch}, batch {recipe.batch_size}, "
        f"lr {recipe.lr}), {epochs} epochs per probe, K = {K}, memorization K = {args.memorization_probes} "
        f"(subset 0.7), exact GraNd on {args.exact_rows} rows of A"
    )

    # -- Cost of recording dynamics: interleaved, best of repeats (the first dynamics run is probe 0) --
    plain_seconds, dynamics_seconds = [], []
    for repeat in range(args.repeats):
        plain_seconds.append(timed_train(half_a, plain, workdir / f"plain-{repeat}", pixels_a))
        run_dir = workdir / ("probe-00" if repeat == 0 else f"dynamics-{repeat}")
        dynamics_seconds.append(timed_train(half_a, dynamics, run_dir, pixels_a))
        print(f"  timing repeat {repeat + 1}: plain {plain_seconds[-1]:.1f} s, dynamics {dynamics_seconds[-1]:.1f} s")
    probe_seconds = min(plain_seconds)

    # -- Probes: seeds 0..K-1 and K..2K-1 on A, one held-out probe on B ------------------------------
    runs = [workdir / f"probe-{seed:02d}" for seed in range(2 * K)]
    for seed, run_dir in enumerate(runs):
        if not (run_dir / "checkpoint.pt").is_file():
            train_run(half_a, dataclasses.replace(dynamics, seed=seed), run_dir, pixels=pixels_a)
    held_out_run = workdir / "held-out"
    train_run(half_b, dataclasses.replace(plain, seed=1000 + args.seed), held_out_run, pixels=pixels_b)
    print(f"  trained {2 * K} probes on A and 1 on B")

    # -- Scores ------------------------------------------------------------------------------------
    base = ScoreConfig(metric=Metric.el2n, probes=K, probe_epochs=epochs, recipe="fast", device=args.device)
    scores, seconds = score_all(half_a, base, runs[:K])
    scores_2, _ = score_all(half_a, base, runs[K:])
    scores["random"] = score_manifest(half_a, dataclasses.replace(base, metric=Metric.random), None).score("random")
    memorization = dataclasses.replace(base, metric=Metric.memorization, probes=args.memorization_probes)
    started = time.perf_counter()
    memorized = score_manifest(half_a, memorization, workdir / "memorization")
    memorization_total = time.perf_counter() - started
    memorization_runs = [Path(p["path"]) for p in memorized.meta["scores"]["memorization"]["params"]["probe_runs"]]
    scores["memorization"], seconds["memorization"] = timed_score(half_a, memorization, memorization_runs)
    gaps = memorized.meta["scores"]["memorization"]["params"]
    exact_slice = None
    if args.exact_rows:
        exact_slice = balanced_slice(half_a, args.exact_rows)
        load_images(exact_slice)
        exact = dataclasses.replace(base, metric=Metric.grand, grand_mode=GrandMode.exact)
        exact_scores, seconds["grand_exact (slice)"] = timed_score(exact_slice, exact, runs[:K])

    # -- Probe quality (context for everything below) -----------------------------------------------
    held_out = predict(held_out_run, half_a, device=args.device, pixels=pixels_a)
    wrong = held_out.probs.argmax(axis=1) != half_a.labels()
    test_top1 = [evaluate_run(run_dir, test, device=args.device)["top1"] for run_dir in runs[:K]]
    held_out_test = evaluate_run(held_out_run, test, device=args.device)["top1"]
    print(
        f"\nprobe test top-1 ({test.num_rows:,} test images): A probes {', '.join(f'{t:.3f}' for t in test_top1)}; "
        f"held-out probe (trained on B) {held_out_test:.3f}, misclassifies {wrong.mean():.1%} of A"
    )

    names = ["random", "el2n", "grand_ll", "forgetting", "uncertainty", "ddd", "memorization"]
    print(f"\n## 1. Spearman rank correlation between metrics ({half_a.num_rows:,} examples of A, K = {K})")
    print_matrix(names, scores)
    if exact_slice is not None:
        position = {example_id: row for row, example_id in enumerate(half_a.ids())}
        rows = np.array([position[example_id] for example_id in exact_slice.ids()])
        cells = " | ".join(f"{spearman(exact_scores, scores[name][rows]):.2f}" for name in names)
        print(f"\ngrand_exact on {exact_slice.num_rows} rows of A, Spearman with the metrics above on those rows:")
        print("| | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        print(f"| grand_exact | {cells} |")

    print(f"\n## 2. Stability: Spearman between probe seeds 0..{K - 1} and {K}..{2 * K - 1} (same data, same recipe)")
    print("| metric | Spearman |")
    print("|---|---:|")
    for name in FROM_PROBES:
        print(f"| {name} | {spearman(scores[name], scores_2[name]):.3f} |")

    print(
        f"\n## 3. ROC-AUC for 'the held-out probe (trained on B) misclassifies this A example' "
        f"({int(wrong.sum()):,} of {wrong.size:,} wrong)"
    )
    print("| metric | ROC-AUC |")
    print("|---|---:|")
    for name in names:
        ties = "" if name != "ddd" else f" (K + 1 = {K + 1} distinct values)"
        print(f"| {name} | {roc_auc_score(wrong, scores[name]):.3f}{ties} |")
    if exact_slice is not None:
        print(f"| grand_exact ({exact_slice.num_rows} rows) | {roc_auc_score(wrong[rows], exact_scores):.3f} |")
        print(f"| grand_ll on the same rows | {roc_auc_score(wrong[rows], scores['grand_ll'][rows]):.3f} |")

    print(f"\n## 4. Cost, relative to one probe's training time ({probe_seconds:.1f} s, best of {args.repeats})")
    print("| step | ratio to one probe's training | ratio to the K probes' training |")
    print("|---|---:|---:|")
    overhead = min(dynamics_seconds) / probe_seconds
    print(f"| train with --record-dynamics (forgetting) / plain, same seed | {overhead:.3f} | {overhead:.3f} |")
    for name, value in seconds.items():
        k = args.memorization_probes if name == "memorization" else K
        extra = ""
        if name == "grand_exact (slice)" and exact_slice is not None:
            value_all = value * half_a.num_rows / exact_slice.num_rows
            extra = (
                f" (x{half_a.num_rows / exact_slice.num_rows:.0f} rows for all of A: {value_all / probe_seconds:.2f})"
            )
        print(f"| scoring step: {name} | {value / probe_seconds:.3f}{extra} | {value / (k * probe_seconds):.3f} |")
    print(
        f"| memorization: train {args.memorization_probes} subset probes + score | "
        f"{memorization_total / probe_seconds:.2f} | {memorization_total / (args.memorization_probes * probe_seconds):.2f} |"
    )
    # Why memorization can rank differently here: with underfit probes P(correct | in) is far from 1.
    correct = np.stack(
        [predict(r, half_a, device=args.device, pixels=pixels_a).probs.argmax(axis=1) == half_a.labels()
         for r in memorization_runs]
    )  # fmt: skip
    in_train = np.stack([training_membership(half_a, r) for r in memorization_runs])
    never_right = ~correct.any(axis=0)
    print(
        f"\nmemorization probes: accuracy on their own training rows {correct[in_train].mean():.3f}, on the rows "
        f"they held out {correct[~in_train].mean():.3f}; {never_right.mean():.1%} of A is never classified correctly "
        f"(score 0 - 0 = 0), and those are {never_right[wrong].mean():.1%} of the held-out probe's errors; "
        f"{gaps['never_held_out']} examples never held out, {gaps['never_trained_on']} never trained on "
        f"(their missing term is the population mean)"
    )


if __name__ == "__main__":
    main()
