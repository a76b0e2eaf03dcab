"""Benchmark `datadiet cluster`: k-means engines, embedding throughput, and the full CIFAR-10 run.

Every time is reported beside a reference measured in the same run, as a ratio:

- kmeans: Lloyd iterations of the chunked torch engine vs scikit-learn's KMeans (and faiss when
  importable), all from the same k-means++ seeds, same iteration count; seconds per iteration
  and the objective (inertia) relative to torch. Then `kmeans()` end to end per engine.
- embed: `embed_pixels` (uint8 HWC -> float, resize, forward) vs a bare forward loop over
  pre-made float tensors of the same shape, same encoder, batch and device.
- cifar: `datadiet ingest` + `datadiet cluster` on the CIFAR-10 train tree with the shared
  EfficientNet program; wall time, then cluster/class agreement (ARI, purity, the cluster x
  class heat map as PNG, the paper's Fig. 6A) and how proto_dist relates to difficulty.

Usage: python benchmarks/bench_cluster.py [--sections kmeans,embed,cifar] [--out DIR] [--image-size 64]
       (faiss is optional: PYTHONPATH=/path/with/faiss adds it to the k-means table)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ENCODER = SHARED / "models" / "efficientnet_lite0_imagenet.pt2"
CIFAR_TREE = Path.home() / ".cache" / "datadiet" / "cifar10"
# CIFAR-10 with the shared encoder (k = classes, and 10x), the 200k x 128, and ImageNet's
# shape (1.28M x 2048, k = 1000: ~1,300 rows per centroid) scaled to 2 cores: 64 rows per centroid.
KMEANS_SHAPES = ((50_000, 1280, 10), (50_000, 1280, 100), (200_000, 128, 100), (19_200, 2048, 300))


# --clock cpu swaps in process CPU time: with --threads 1 it measures the work itself, which other
# processes on a shared machine barely disturb (wall time there can swing 4x between runs).
CLOCK: Callable[[], float] = time.perf_counter


def mixture(n: int, d: int, components: int, seed: int) -> np.ndarray:
    """Overlapping Gaussian blobs: k-means has real work to do at k = 10 and k = 100."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(components, d)).astype(np.float32) * 1.5
    return (centres[rng.integers(components, size=n)] + rng.normal(size=(n, d)).astype(np.float32)).astype(np.float32)


def interleaved(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, tuple[float, object]]:
    """Best time of each run over `repeats` rounds, the runs alternating within a round.

    On a shared machine load comes and goes; alternating makes every engine meet the same load.
    """
    best: dict[str, tuple[float, object]] = {name: (float("inf"), None) for name in runs}
    for _ in range(repeats):
        for name, work in runs.items():
            start = CLOCK()
            result = work()
            elapsed = CLOCK() - start
            if elapsed < best[name][0]:
                best[name] = (elapsed, result)
    return best


def bench_kmeans(repeats: int, iters: int) -> None:
    import torch

    from datadiet_cli.cluster.kmeans import (
        ClusterConfig,
        Engine,
        _lloyd_sklearn,
        _lloyd_torch,
        chunk_rows,
        exact_distances,
        kmeans,
        kmeans_plusplus,
        nearest_centroids,
    )

    try:
        import faiss
    except ImportError:
        faiss = None
    print(f"\n## k-means: {iters} Lloyd iterations from the same k-means++ seeds (best of {repeats}, interleaved)")
    print(
        "| N x D, k | k-means++ s | torch s/iter | sklearn / torch | faiss / torch | objective sklearn, faiss vs torch "
        "| engine faiss / faiss.Kmeans |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, d, k in KMEANS_SHAPES:
        x = mixture(n, d, 20, seed=0)
        points = torch.from_numpy(x)
        points_sq = points.square().sum(1)
        chunk = chunk_rows(n, k + d, "cpu")
        start = time.perf_counter()
        seeds = kmeans_plusplus(points, points_sq, k, np.random.default_rng(0))
        init_s = time.perf_counter() - start

        def objective(centroids: torch.Tensor, points=points, points_sq=points_sq, chunk=chunk) -> float:
            labels, _ = nearest_centroids(points, points_sq, centroids, chunk)
            return float(exact_distances(points, centroids, labels, False)[1].sum())

        # tol -1 never stops on the shift, so torch runs as many iterations as faiss (unless labels freeze).
        runs: dict[str, Callable[[], object]] = {
            "torch": lambda p=points, q=points_sq, s=seeds, c=chunk: _lloyd_torch(
                p, q, p[s].clone(), ClusterConfig(iters=iters, tol=-1), -1.0, c, None
            ),
            "sklearn": lambda p=points, s=seeds: _lloyd_sklearn(p, s, ClusterConfig(iters=iters, tol=0.0)),
        }
        if faiss is not None:
            # faiss runs exactly niter iterations; ours stop once the labels freeze. Timing faiss for as many
            # iterations as torch really ran keeps "per iteration" the same work (after a freeze, faiss's
            # remaining iterations cost it a fraction of a real one, which would flatter its average).
            lloyd_iters = runs["torch"]()[1]

            def run_faiss(x=x, n=n, d=d, k=k, seeds=seeds, lloyd_iters=lloyd_iters) -> np.ndarray:
                # max_points_per_centroid=n: faiss would otherwise silently fit on a 256*k subsample.
                model = faiss.Kmeans(d, k, niter=lloyd_iters, seed=0, max_points_per_centroid=n, verbose=False)
                model.train(x, init_centroids=x[seeds])
                return model.centroids

            runs["faiss"] = run_faiss
            # datadiet's --engine faiss: our Lloyd loop (update, tolerance, empty clusters) around faiss's search.
            runs["engine_faiss"] = lambda p=points, q=points_sq, s=seeds, c=chunk: _lloyd_torch(
                p, q, p[s].clone(), ClusterConfig(iters=iters, tol=-1), -1.0, c, None, Engine.faiss
            )
        best = interleaved(repeats, runs)
        torch_s, (torch_c, torch_it, _) = best["torch"]
        sk_s, (sk_c, sk_it, _) = best["sklearn"]
        per_torch, per_sk = torch_s / torch_it, sk_s / sk_it
        base = objective(torch_c)
        faiss_ratio, faiss_obj, engine_ratio = "n/a", "n/a", "n/a"
        if "faiss" in best:
            faiss_s, faiss_c = best["faiss"]
            faiss_ratio = f"{(faiss_s / lloyd_iters) / per_torch:.2f}"
            faiss_obj = f"{objective(torch.from_numpy(faiss_c)) / base - 1:+.4%}"
            engine_s, (_, engine_it, _) = best["engine_faiss"]
            engine_ratio = f"{(engine_s / engine_it) / (faiss_s / lloyd_iters):.2f} ({engine_it} it)"
        print(
            f"| {n:,} x {d}, k={k} | {init_s:.2f} | {per_torch:.3f} ({torch_it} it) | {per_sk / per_torch:.2f} "
            f"({sk_it} it) | {faiss_ratio} | {objective(sk_c) / base - 1:+.4%}, {faiss_obj} | {engine_ratio} |"
        )
    print("\n## kmeans() end to end, default tolerance (what `--engine` changes; interleaved)")
    engines = [Engine.torch, Engine.sklearn] + ([Engine.faiss] if faiss is not None else [])
    print(
        "| N x D, k | torch s | "
        + " | ".join(f"{e.value} / torch" for e in engines[1:])
        + " | iterations | inertia vs torch |"
    )
    print("|---|---|" + "---|" * (len(engines) - 1) + "---|---|")
    for n, d, k in KMEANS_SHAPES:
        x = mixture(n, d, 20, seed=0)
        best = interleaved(
            repeats,
            {
                engine.value: lambda engine=engine, x=x, k=k: kmeans(x, k, ClusterConfig(engine=engine))
                for engine in engines
            },
        )
        t_s, t_fit = best["torch"]
        others = [best[e.value] for e in engines[1:]]
        print(
            f"| {n:,} x {d}, k={k} | {t_s:.2f} | "
            + " | ".join(f"{o_s / t_s:.2f}" for o_s, _ in others)
            + f" | {', '.join(str(fit.iterations) for _, fit in [best['torch'], *others])} | "
            + ", ".join(f"{fit.inertia / t_fit.inertia - 1:+.4%}" for _, fit in others)
            + " |"
        )


def cifar_pixels(rows: int) -> np.ndarray:
    if CIFAR_TREE.is_dir():
        from datadiet_cli.data.images import load_images
        from datadiet_cli.data.ingest import IngestConfig, ingest_source

        manifest = ingest_source(IngestConfig(source=str(CIFAR_TREE), split=None), None)
        return np.asarray(load_images(manifest.take(np.arange(rows))))
    return np.random.default_rng(0).integers(0, 256, size=(rows, 32, 32, 3), dtype=np.uint8)


def bench_embed(repeats: int, rows: int, batch: int) -> None:
    import torch

    from datadiet_cli.cluster.embed import embed_pixels
    from datadiet_cli.cluster.encoders import load_encoder

    if not ENCODER.is_file():
        print(f"\n## embed: skipped ({ENCODER} is absent)")
        return
    device = torch.device("cpu")
    encoder = load_encoder(str(ENCODER), None, device)
    pixels = cifar_pixels(rows)
    print(f"\n## embed: {rows:,} CIFAR images (32 px), batch {batch}, EfficientNet-Lite0 program (best of {repeats})")
    print("| S | bare forward img/s | command path img/s | command / bare |")
    print("|---|---|---|---|")
    for size in (64, 128):
        tensors = [torch.rand(min(batch, rows - s), 3, size, size) for s in range(0, rows, batch)]

        def bare(tensors=tensors) -> None:
            with torch.inference_mode():
                for tensor in tensors:
                    encoder.module(tensor)

        def command(size=size) -> None:
            embed_pixels(pixels, encoder, size, batch, device)

        bare()  # warm-up: the first call of an exported program at a new shape is slower
        best = interleaved(repeats, {"bare": bare, "command": command})
        bare_s, command_s = best["bare"][0], best["command"][0]
        print(f"| {size} | {rows / bare_s:.0f} | {rows / command_s:.0f} | {bare_s / command_s:.2f} |")


def run_timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def bench_cifar(out: Path, image_size: int, k: int | None) -> None:
    from scipy.stats import spearmanr
    from sklearn.metrics import adjusted_rand_score

    from datadiet_cli.data.images import load_images
    from datadiet_cli.io.manifest import read_manifest

    if not (ENCODER.is_file() and CIFAR_TREE.is_dir()):
        print(f"\n## cifar: skipped (needs {ENCODER} and {CIFAR_TREE})")
        return
    out.mkdir(parents=True, exist_ok=True)
    listed, clustered, saved = out / "cifar_train.parquet", out / "cifar_clustered.parquet", out / "cifar_emb.parquet"
    ingest_s = run_timed(["datadiet", "ingest", str(CIFAR_TREE), "--split", "train", "-o", str(listed), "-q"])
    start = time.perf_counter()
    load_images(read_manifest(listed))  # decodes once into $DATADIET_CACHE (a cache hit if decoded before)
    decode_s = time.perf_counter() - start
    command = ["datadiet", "cluster", str(listed), "-o", str(clustered), "--encoder", str(ENCODER),
               "--image-size", str(image_size), "--save-embeddings", str(saved), "-q"]  # fmt: skip
    command += ["--k", str(k)] if k is not None else []
    wall = run_timed(command)
    again = out / "cifar_again.parquet"
    kmeans_only = run_timed(["datadiet", "cluster", str(listed), "-o", str(again), "--embeddings", str(saved), "-q"]
                            + (["--k", str(k)] if k is not None else []))  # fmt: skip
    manifest = read_manifest(clustered)
    labels, clusters = manifest.labels(), manifest.groups("cluster")
    proto, sup = manifest.score("proto_dist"), manifest.score("sup_proto_dist")
    fit = manifest.lineage().last("cluster").stats["fits"][0]
    overlap = np.zeros((clusters.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(overlap, (clusters, labels), 1)
    purity = overlap.max(axis=1).sum() / len(labels)
    n = len(labels)
    print(f"\n## cifar: `datadiet cluster` with {ENCODER.name} at S={image_size} on {n:,} train images")
    print(f"- ingest {ingest_s:.1f} s; decode to the pixel cache {decode_s:.1f} s (0 if cached before)")
    print(f"- `datadiet cluster` (pixels cached): {wall:.1f} s = {n / wall:.0f} img/s end to end; "
          f"from --embeddings (k-means + I/O only): {kmeans_only:.1f} s")  # fmt: skip
    print(f"- k={manifest.meta['scores']['proto_dist']['params']['k']}, engine {fit['engine']}, "
          f"{fit['iterations']} iterations, converged {fit['converged']}")  # fmt: skip
    print(f"- ARI(cluster, label) = {adjusted_rand_score(labels, clusters):.3f}; purity = {purity:.3f}")
    print(f"- Spearman(proto_dist, sup_proto_dist) = {spearmanr(proto, sup).statistic:.3f}")
    embeddings = saved_matrix(saved, manifest)
    difficulty = probe_errors(embeddings, labels)
    classes = manifest.classes
    class_err = np.array([difficulty[labels == c].mean() for c in range(len(classes))])
    class_proto = np.array([proto[labels == c].mean() for c in range(len(classes))])
    class_sup = np.array([sup[labels == c].mean() for c in range(len(classes))])
    print(
        f"- difficulty = a 2-fold cross-validated linear probe (logistic regression) misclassifies: {difficulty.mean():.3f}"
    )
    print(f"- per class, Spearman(mean proto_dist, probe error) = {spearmanr(class_proto, class_err).statistic:.3f}; "
          f"(mean sup_proto_dist, probe error) = {spearmanr(class_sup, class_err).statistic:.3f}")  # fmt: skip
    print("| class | probe error | mean proto_dist | mean sup_proto_dist |")
    print("|---|---|---|---|")
    for c in np.argsort(class_err):
        print(f"| {classes[c]} | {class_err[c]:.3f} | {class_proto[c]:.3f} | {class_sup[c]:.3f} |")
    print("\nPer example, how well each score ranks the probe's mistakes above its hits (ROC AUC; 0.5 = no signal):")
    print("| distance | k | ARI | AUC proto_dist | AUC sup_proto_dist | Spearman(proto, sup) | k-means s |")
    print("|---|---|---|---|---|---|---|")
    from datadiet_cli.cluster.kmeans import ClusterConfig, kmeans
    from datadiet_cli.cluster.prototypes import class_prototype_distances

    for spherical in (False, True):
        supervised = class_prototype_distances(embeddings, labels, spherical)
        for clusters_k in (10, 100):
            start = time.perf_counter()
            fit_k = kmeans(embeddings, clusters_k, ClusterConfig(spherical=spherical))
            seconds = time.perf_counter() - start
            print(
                f"| {'cosine (--spherical)' if spherical else 'euclidean'} | {clusters_k} | "
                f"{adjusted_rand_score(labels, fit_k.labels):.3f} | {auc(fit_k.distances, difficulty):.3f} | "
                f"{auc(supervised, difficulty):.3f} | {spearmanr(fit_k.distances, supervised).statistic:.3f} | {seconds:.1f} |"
            )
    heat_map(overlap, classes, out / "cifar_cluster_class_overlap.png")
    summary = {"wall_s": wall, "kmeans_only_s": kmeans_only, "decode_s": decode_s, "purity": purity, "fit": fit}
    (out / "cifar_summary.json").write_text(json.dumps(summary, indent=1))


def saved_matrix(path: Path, manifest: object) -> np.ndarray:
    from datadiet_cli.cluster.sources import align_to_manifest
    from datadiet_cli.io.tables import read_embeddings

    ids, matrix, _ = read_embeddings(path)
    return align_to_manifest(manifest, ids, matrix, str(path))  # type: ignore[arg-type]


def probe_errors(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where a 2-fold cross-validated linear probe misclassifies the example: a cheap difficulty."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200, C=0.1))
    predicted = cross_val_predict(probe, embeddings, labels, cv=2)
    return (predicted != labels).astype(np.float64)


def auc(scores: np.ndarray, positives: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positives, scores))


def heat_map(overlap: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.lexsort((-overlap.max(axis=1), overlap.argmax(axis=1)))  # clusters grouped by majority class
    share = overlap[order] / overlap[order].sum(axis=1, keepdims=True)
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(order) + 1.5))
    image = axis.imshow(share, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_ylabel("k-means cluster (sorted by majority class)")
    axis.set_title("Share of each cluster's images per CIFAR-10 class")
    figure.colorbar(image, ax=axis, label="fraction of cluster")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"- heat map: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="kmeans,embed,cifar")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10, help="Lloyd iterations per k-means timing")
    parser.add_argument("--embed-rows", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=64, help="encoder input side for the CIFAR run")
    parser.add_argument("--k", type=int, default=None, help="clusters for the CIFAR run (default: 10 classes)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/datadiet-bench-cluster"))
    parser.add_argument("--threads", type=int, default=None, help="threads for torch, BLAS/OpenMP and faiss")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time")
    args = parser.parse_args()
    import sklearn
    import torch

    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
        try:
            import faiss

            faiss.omp_set_num_threads(args.threads)
        except ImportError:
            pass

    from datadiet_cli import __version__

    print(
        f"datadiet {__version__}, python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__}, {platform.machine()}, "
        f"cuda {torch.cuda.is_available()}, clock {args.clock}"
    )
    sections = set(args.sections.split(","))
    if "kmeans" in sections:
        bench_kmeans(args.repeats, args.iters)
    if "embed" in sections:
        bench_embed(args.repeats, args.embed_rows, args.batch_size)
    if "cifar" in sections:
        bench_cifar(args.out, args.image_size, args.k)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
