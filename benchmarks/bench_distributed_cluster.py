"""Benchmark `datadiet cluster` under torchrun: 2 processes x 1 thread against 1 process x 1 thread.

On 5,000 CIFAR-10 training images (the first 500 of each class) with the shared EfficientNet-Lite0
program at S=64, each launch times, on the same code the command runs:

- embedding: `embed_pixels` over this process's rows (pixels decoded beforehand, as the pixel
  cache serves them), until every rank is done;
- k-means++ (`seed_centres`: three small collectives per centre under torchrun);
- one Lloyd iteration (`_lloyd_torch`, torch engine, iters=1) from the k-means++ centres: the
  assignment of this rank's rows, the all-reduce of the per-centroid sums and counts, the update;
- the all-reduce alone: `all_sum_` of a (k, D + 1) float64 tensor (the sums and counts) over gloo.

Embedding and k-means++ are timed until every rank is done (a barrier after); a Lloyd iteration
and the all-reduce by rank 0's clock from a common start (a barrier before).

Rounds alternate the order of a 1-process launch and a `torchrun --nproc-per-node 2` launch, so
both meet the same load from other processes; the table gives medians over rounds (over repeats
within a launch for the k-means times), speed-ups, and the load average around every launch.

Usage: python benchmarks/bench_distributed_cluster.py [--rounds 5] [--k 100,1000] [--iterations 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ENCODER = SHARED / "models" / "efficientnet_lite0_imagenet.pt2"
CIFAR_TRAIN = Path.home() / ".cache" / "datadiet" / "cifar10" / "train"
PER_CLASS = 500
IMAGE_SIZE = 64  # the shared program's smallest input side
BATCH = 128  # the command's default --batch-size
ALL_REDUCE_REPEATS = 20


def subset_manifest(out: Path) -> Path:
    """The first PER_CLASS training images of each class, as a manifest in `out`."""
    from datadiet_cli.data.ingest import IngestConfig, ingest_source
    from datadiet_cli.io.manifest import write_manifest

    path = out / f"cifar10_train_{PER_CLASS}_per_class.parquet"
    if not path.is_file():
        listed = ingest_source(IngestConfig(source=str(CIFAR_TRAIN), split=None), None)
        labels = listed.labels()
        rows = np.sort(np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in range(labels.max() + 1)]))
        write_manifest(listed.take(rows), path)
    return path


# -- one launch: a worker process (one of the torchrun ranks, or the only process) ---------------------


def worker(manifest_path: Path, result: Path, ks: list[int], iterations: int) -> None:
    import torch

    from datadiet_cli import distributed
    from datadiet_cli.cluster.embed import embed_pixels, load_pixels
    from datadiet_cli.cluster.encoders import load_encoder
    from datadiet_cli.cluster.kmeans import ClusterConfig, Engine, _lloyd_torch, chunk_rows, seed_centres
    from datadiet_cli.io.manifest import read_manifest

    torch.set_num_threads(1)
    with distributed.launched("cpu") as ranks:
        manifest = read_manifest(manifest_path)
        rows = ranks.shard(manifest.num_rows)
        own = manifest.take(np.arange(rows.start, rows.stop)) if ranks.distributed else manifest
        pixels = np.asarray(load_pixels(own))  # decoded once per launch layout, then memory-mapped from the cache
        device = torch.device("cpu")
        encoder = load_encoder(str(ENCODER), None, device)
        embed_pixels(pixels[:BATCH], encoder, IMAGE_SIZE, BATCH, device)  # warm-up: the first call is slower

        def timed(work: object) -> tuple[float, float, float, object]:
            """(wall seconds until every rank is done, this rank's own wall and CPU seconds, the result).

            CPU time is this process's, its gloo threads' included: what the work costs when no other
            process competes for the cores."""
            distributed.barrier(ranks)
            start, start_cpu = time.perf_counter(), time.process_time()
            value = work()  # type: ignore[operator]
            own_s, own_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
            distributed.barrier(ranks)
            return time.perf_counter() - start, own_s, own_cpu_s, value

        embed_s, embed_own_s, _, embeddings = timed(lambda: embed_pixels(pixels, encoder, IMAGE_SIZE, BATCH, device))
        report: dict[str, object] = {"world": ranks.world, "embed_s": embed_s, "kmeans": {}}
        report["embed_own_s"] = distributed.all_sum(ranks, one_hot(ranks, embed_own_s)).tolist()
        points = torch.from_numpy(embeddings)
        points_sq = points.square().sum(1)
        with torch.inference_mode():
            for k in ks:
                rng = np.random.default_rng(0)
                seed_s, _, _, (_, centres) = timed(lambda k=k, rng=rng: seed_centres(points, points_sq, k, rng, ranks))
                chunk = chunk_rows(len(points), k + points.shape[1], "cpu")
                config = ClusterConfig(iters=1, tol=-1)
                # This rank's own time from a common start: in a run of iterations the all-reduce inside
                # lines the ranks up, so an iteration costs the slower rank's assignment plus the all-reduce.
                lloyd = [timed(lambda c=centres, config=config, chunk=chunk: _lloyd_torch(
                    points, points_sq, c, config, -1.0, chunk, None, Engine.torch, ranks))[1:3]
                    for _ in range(iterations)]  # fmt: skip
                packed = torch.zeros(k, points.shape[1] + 1, dtype=torch.float64)
                reduce = [timed(lambda p=packed: distributed.all_sum_(ranks, p))[1] for _ in range(ALL_REDUCE_REPEATS)]
                report["kmeans"][str(k)] = {
                    "seed_s": seed_s,
                    "lloyd_s": [wall for wall, _ in lloyd],
                    "lloyd_cpu_s": [cpu for _, cpu in lloyd],
                    "all_reduce_s": reduce,
                }  # type: ignore[index]
        if ranks.main:
            result.write_text(json.dumps(report))


def one_hot(ranks: object, value: float) -> np.ndarray:
    slots = np.zeros(ranks.world)  # type: ignore[attr-defined]
    slots[ranks.rank] = value  # type: ignore[attr-defined]
    return slots


# -- the driver ---------------------------------------------------------------------------------------


def launch(world: int, manifest: Path, out: Path, ks: list[int], iterations: int) -> dict[str, object]:
    result = out / f"result-{world}.json"
    result.unlink(missing_ok=True)
    arguments = [str(Path(__file__).resolve()), "--worker", str(result), "--manifest", str(manifest),
                 "--k", ",".join(map(str, ks)), "--iterations", str(iterations)]  # fmt: skip
    if world == 1:
        command = [sys.executable, *arguments]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
                   *arguments]  # fmt: skip
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), DATADIET_CACHE=str(out / "cache"))
    before = os.getloadavg()
    subprocess.run(command, env=environment, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    report = json.loads(result.read_text())
    report["load"] = [before, os.getloadavg()]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--k", default="100,1000", help="k-means cluster counts, comma-separated")
    parser.add_argument("--iterations", type=int, default=5, help="Lloyd iterations timed per k and launch")
    parser.add_argument("--out", type=Path, default=Path("/tmp/datadiet-bench-distributed-cluster"))
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    if args.worker is not None:
        worker(args.manifest, args.worker, ks, args.iterations)
        return
    if not (ENCODER.is_file() and CIFAR_TRAIN.is_dir()):
        sys.exit(f"needs {ENCODER} and {CIFAR_TRAIN} (unpacked by the tests' cifar10_root fixture)")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = subset_manifest(args.out)
    start = time.perf_counter()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for round_ in range(args.rounds):
        for world in (1, 2) if round_ % 2 == 0 else (2, 1):
            runs[world].append(launch(world, manifest, args.out, ks, args.iterations))
            print(f"round {round_ + 1}, {world} process(es): embed {runs[world][-1]['embed_s']:.2f} s, "
                  f"load {runs[world][-1]['load'][0][0]:.2f} -> {runs[world][-1]['load'][1][0]:.2f}", flush=True)  # fmt: skip
    report(runs, ks, args.rounds, time.perf_counter() - start)


def report(runs: dict[int, list[dict]], ks: list[int], rounds: int, wall_s: float) -> None:
    one, two = runs[1], runs[2]
    median = statistics.median
    print(f"\n## {PER_CLASS * 10:,} CIFAR-10 images, {ENCODER.name} at S={IMAGE_SIZE}, batch {BATCH}; "
          f"median of {rounds} interleaved rounds, 1 thread per process")  # fmt: skip
    print("| phase | 1 process s | 2 processes s | speed-up |")
    print("|---|---|---|---|")
    embed_1, embed_2 = median(r["embed_s"] for r in one), median(r["embed_s"] for r in two)
    print(f"| embedding (until the slower rank is done) | {embed_1:.2f} | {embed_2:.2f} | {embed_1 / embed_2:.2f}x |")
    slower = median(max(r["embed_own_s"]) / min(r["embed_own_s"]) for r in two)
    for k in ks:
        key = str(k)
        seed_1, seed_2 = (median(r["kmeans"][key]["seed_s"] for r in rs) for rs in (one, two))
        lloyd_1, lloyd_2 = (median(t for r in rs for t in r["kmeans"][key]["lloyd_s"]) for rs in (one, two))
        print(f"| k-means++, k={k} | {seed_1:.3f} | {seed_2:.3f} | {seed_1 / seed_2:.2f}x |")
        cpu_1, cpu_2 = (median(t for r in rs for t in r["kmeans"][key]["lloyd_cpu_s"]) for rs in (one, two))
        print(f"| one Lloyd iteration, k={k} | {lloyd_1 * 1e3:.1f} ms | {lloyd_2 * 1e3:.1f} ms | "
              f"{lloyd_1 / lloyd_2:.2f}x |")  # fmt: skip
        print(f"| ... its CPU time (rank 0's process, gloo threads included) | {cpu_1 * 1e3:.1f} ms | "
              f"{cpu_2 * 1e3:.1f} ms | {cpu_1 / cpu_2:.2f}x |")  # fmt: skip
    print("\n| k | gloo all-reduce of (k, D+1) float64 | share of a 2-process Lloyd iteration |")
    print("|---|---|---|")
    for k in ks:
        key = str(k)
        reduce_2 = median(t for r in two for t in r["kmeans"][key]["all_reduce_s"])
        lloyd_2 = median(t for r in two for t in r["kmeans"][key]["lloyd_s"])
        megabytes = k * 1281 * 8 / 1e6
        print(f"| {k} | {reduce_2 * 1e3:.2f} ms ({megabytes:.1f} MB) | {reduce_2 / lloyd_2:.0%} |")
    loads = [sample[0] for r in one + two for sample in r["load"]]
    print(f"\n- slower/faster rank's own embedding time: {slower:.2f} (median)")
    print(f"- 1-minute load average around the launches: min {min(loads):.2f}, median {median(loads):.2f}, "
          f"max {max(loads):.2f} on {os.cpu_count()} cores; now {os.getloadavg()}")  # fmt: skip
    print(f"- benchmark wall time {wall_s / 60:.1f} min")


if __name__ == "__main__":
    main()
