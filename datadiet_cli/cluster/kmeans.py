"""k-means on embeddings: k-means++ seeding, Lloyd iterations on one of several engines, exact distances.

Arrays in, arrays out (`kmeans`); prototypes.py turns the fit into the paper's scores.
k-means runs in chunks of rows, so memory grows with chunk x k, never with N x k.
Engines: torch (any device), scikit-learn's Lloyd (CPU), or faiss's nearest-centroid search
inside the same Lloyd loop as torch (CPU). torch is imported inside functions.

Under torchrun (`ranks`) each rank holds a contiguous block of the rows: k-means++ and Lloyd run
on every rank's rows at once (sharded.py: sums, counts and the few rows the seeding picks travel;
the embeddings never do). One process is the world-size-1 case of the same code, so the torch and
faiss engines give the same clusters at any world size; scikit-learn runs in one process only.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from datadiet_cli.cluster.sharded import (
    draw_rows,
    farthest_rows,
    fetch_rows,
    mean_variance,
    row_blocks,
    sums_by_rank,
)
from datadiet_cli.data import seeds
from datadiet_cli.distributed import SINGLE, Ranks, all_sum, all_sum_
from datadiet_cli.errors import OptionError

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[int, int], None]


class Engine(str, enum.Enum):
    auto = "auto"
    torch = "torch"
    sklearn = "sklearn"
    faiss = "faiss"


# The CPU engine `auto` picks, by benchmarks/bench_cluster.py (docs/cluster.md has the tables). Per core
# and iteration, from the same seeds: scikit-learn needs 0.65-1.13x torch's time, and `--engine faiss`
# (faiss's nearest-centroid search inside datadiet's Lloyd loop) 0.61-1.04x, up to 1.2x faster than
# scikit-learn and on par with it at 200,000 x 128. So faiss when installed (`pip install
# 'datadiet[faiss]'`), else scikit-learn: it runs one parallel region per iteration where torch runs
# several per chunk, so when other processes share the cores torch's threads wait for each other
# (2-30x slower wall time) and sklearn's barely do.
CPU_ENGINE = Engine.sklearn
# Floats per chunk (rows x (k + D)): bounds k-means memory independently of N. Big chunks on the CPU too:
# fewer parallel regions is what keeps torch usable on a busy machine (cache-sized chunks were ~20% faster idle).
CHUNK_FLOATS_CPU = 1 << 24
CHUNK_FLOATS_GPU = 1 << 28
# Below this many centroids the distance GEMM is computed transposed (measured faster on the CPU).
NARROW_K = 32
# Rows per faiss search call: faiss's own query block (distance_compute_blas_query_bs).
FAISS_QUERY_ROWS = 4096


@dataclass(frozen=True)
class ClusterConfig:
    k: int | None = None  # clusters; None = the number of classes (the paper's choice; App. F: robust within 10x)
    iters: int = 100  # most Lloyd iterations (stops earlier at the tolerance)
    tol: float = 1e-4  # stop when the summed squared centroid shift <= tol x mean feature variance (sklearn's rule)
    fit_fraction: float = 1.0  # fit centroids on this seeded fraction of rows, then assign every row
    spherical: bool = False  # cluster L2-normalised embeddings; distances become cosine distances 1 - cos
    engine: Engine = Engine.auto  # auto: torch on a GPU; on the CPU faiss when installed, else CPU_ENGINE
    ensemble: bool = False  # several embeddings: average their standardised scores (the paper's App. G)
    seed: int = 0  # k-means++ draws and the fit sample; same seed, same clusters


@dataclass(frozen=True)
class KMeansResult:
    labels: np.ndarray  # (N,) int64 cluster of every row
    distances: np.ndarray  # (N,) float32 exact distance to the assigned centroid (cosine distance when spherical)
    centroids: np.ndarray  # (k, D) float32 (unit vectors when spherical)
    inertia: float  # sum over all N rows of the squared Euclidean distance to the assigned centroid
    iterations: int  # Lloyd iterations run
    converged: bool  # stopped by the tolerance or unchanged assignments, not by the iteration limit
    engine: str  # which implementation fitted the centroids
    fit_rows: int  # rows the centroids were fitted on (all rows unless fit_fraction < 1)


# -- k-means ----------------------------------------------------------------------------------


def kmeans_device(device: str) -> str:
    """The torch device k-means runs on for a --device choice; MPS has no float64 for the centroid sums, so CPU."""
    from datadiet_cli.device import select_device

    chosen = select_device(device)
    return "cpu" if chosen.type in ("cpu", "mps") else str(chosen)


def resolve_engine(engine: Engine, device: str, spherical: bool, distributed: bool = False) -> Engine:
    """The engine that runs: `auto` is torch on a GPU; on the CPU faiss when installed, else scikit-learn
    in one process and torch under torchrun (`distributed`), where scikit-learn cannot run."""
    if engine is Engine.sklearn and distributed:
        raise OptionError("--engine sklearn runs in one process; under torchrun use --engine torch or faiss")
    if engine is Engine.sklearn and spherical:
        raise OptionError("--engine sklearn cannot keep unit-length centroids for --spherical; use --engine torch")
    if engine is Engine.faiss:
        if device != "cpu":
            raise OptionError("--engine faiss runs on the CPU; use --device cpu, or --engine torch on a GPU")
        if not faiss_available():
            raise OptionError("--engine faiss needs the faiss-cpu package: pip install 'datadiet[faiss]'")
    if engine is not Engine.auto:
        return engine
    if device != "cpu":
        return Engine.torch
    if faiss_available():
        return Engine.faiss
    return Engine.torch if spherical or distributed else CPU_ENGINE


def faiss_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


def fit_sample(n_rows: int, fraction: float, k: int, seed: int) -> np.ndarray | None:
    """Sorted row indices to fit on (None = all rows): round(fraction x N), at least k."""
    if not 0.0 < fraction <= 1.0 or math.isnan(fraction):
        raise OptionError(f"--fit-fraction {fraction} is outside (0, 1]; e.g. --fit-fraction 0.1 fits on 10%")
    size = max(k, math.floor(fraction * n_rows + 0.5))
    if size >= n_rows:
        return None
    return np.sort(seeds.rng(seed, seeds.KMEANS_SAMPLE).choice(n_rows, size=size, replace=False))


def kmeans(
    embeddings: np.ndarray,
    k: int,
    config: ClusterConfig,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    ranks: Ranks = SINGLE,
) -> KMeansResult:
    """k-means++ then Lloyd on (a seeded sample of) the rows; every row assigned to the final centroids.

    embeddings: (n, D) this rank's block of the N rows clustered (all N in one process; under torchrun
    rank r holds the r-th contiguous block). The result's labels and distances are this rank's rows;
    centroids, inertia, iterations and fit_rows are the whole job's, equal on every rank.
    """
    import torch

    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    blocks = row_blocks(ranks, len(matrix))
    n_rows = blocks.total
    if k < 1:
        raise OptionError(f"--k {k} must be at least 1")
    if k > n_rows:
        raise OptionError(f"--k {k} is larger than the number of rows ({n_rows}); use a smaller --k")
    if config.iters < 1:
        raise OptionError(f"--iters {config.iters} must be at least 1")
    engine = resolve_engine(config.engine, device, config.spherical, ranks.distributed)
    sample = fit_sample(n_rows, config.fit_fraction, k, config.seed)
    rng = seeds.rng(config.seed, seeds.KMEANS_INIT)
    with torch.inference_mode():
        points = torch.from_numpy(matrix).to(device)
        if config.spherical:
            points = unit_rows(points)
        if sample is not None:  # this rank's rows of the global sample, as positions in its block
            sample = sample[(sample >= blocks.start) & (sample < blocks.start + len(matrix))] - blocks.start
        fit_points = points if sample is None else points[torch.from_numpy(sample).to(device)]
        fit_sq = fit_points.square().sum(1)
        chunk = chunk_rows(len(fit_points), k + fit_points.shape[1], device)
        tolerance = config.tol * mean_variance(fit_points, fit_sq, ranks)
        initial, initial_rows = seed_centres(fit_points, fit_sq, k, rng, ranks)
        if engine is Engine.sklearn:
            centroids, iterations, converged = _lloyd_sklearn(fit_points, initial, config)
            centroids = centroids.to(device)
            if progress is not None:
                progress(config.iters, config.iters)
        else:
            centroids, iterations, converged = _lloyd_torch(
                fit_points, fit_sq, initial_rows, config, tolerance, chunk, progress, engine, ranks
            )
        final_chunk = chunk_rows(len(points), k + points.shape[1], device)
        labels, _ = nearest_centroids(points, points.square().sum(1), centroids, final_chunk, engine)
        distances, squared = exact_distances(points, centroids, labels, config.spherical)
    return KMeansResult(
        labels=labels.cpu().numpy().astype(np.int64),
        distances=distances.cpu().numpy(),
        centroids=centroids.float().cpu().numpy(),
        inertia=float(all_sum(ranks, np.array([float(squared.sum())]))[0]),
        iterations=iterations,
        converged=converged,
        engine=engine.value,
        fit_rows=row_blocks(ranks, len(fit_points)).total,
    )


def unit_rows(points: torch.Tensor) -> torch.Tensor:
    import torch

    return points / points.norm(dim=1, keepdim=True).clamp_min(torch.finfo(points.dtype).tiny)


def chunk_rows(n_rows: int, width: int, device: str) -> int:
    budget = CHUNK_FLOATS_CPU if device == "cpu" else CHUNK_FLOATS_GPU
    return max(1, min(n_rows, max(256, budget // max(width, 1))))


def nearest_centroids(
    points: torch.Tensor, points_sq: torch.Tensor, centroids: torch.Tensor, chunk: int, engine: Engine = Engine.torch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and squared distance to the nearest centroid, one chunk of rows at a time."""
    labels, squared, _, _ = assign(points, points_sq, centroids, chunk, accumulate=False, engine=engine)
    return labels, squared


def assign(
    points: torch.Tensor,
    points_sq: torch.Tensor,
    centroids: torch.Tensor,
    chunk: int,
    accumulate: bool,
    engine: Engine = Engine.torch,
    into: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Nearest centroid of every row and, with `accumulate`, the float64 sum and count of each cluster's rows.

    One pass over the rows: each chunk is summed while it is still in cache. Memory: chunk x (k + D).
    With the faiss engine, faiss's exhaustive L2 search finds the nearest centroids (CPU only).
    `into`: a zeroed float64 buffer of at least k x D + k values; the sums (k, D) and then the counts
    (k,) accumulate in it, so that one all-reduce of the buffer sums them over ranks without a copy.
    """
    import torch

    k, width = centroids.shape
    device = points.device
    centroids_sq = centroids.square().sum(1)
    index = faiss_index(centroids) if engine is Engine.faiss else None
    # MKL runs a GEMM with few output columns about 1.7x faster as (k x D)(D x B) than as (B x D)(D x k).
    narrow = k < NARROW_K
    labels = torch.empty(len(points), dtype=torch.int64, device=device)
    squared = torch.empty(len(points), dtype=points.dtype, device=device)
    sums = counts = None
    if accumulate:
        buffer = torch.zeros(k * width + k, dtype=torch.float64, device=device) if into is None else into
        sums, counts = buffer[: k * width].view(k, width), buffer[k * width : k * width + k]
    for start in range(0, len(points), chunk):
        stop = min(start + chunk, len(points))
        rows = points[start:stop]
        if index is not None:
            faiss_nearest(index, rows, squared[start:stop], labels[start:stop])
            nearest = labels[start:stop]
        else:
            # ||x||^2 is constant per row, so the argmin needs only ||c||^2 - 2 x.c (one GEMM).
            if narrow:
                best, nearest = torch.addmm(centroids_sq[:, None], centroids, rows.T, alpha=-2.0).min(0)
            else:
                best, nearest = torch.addmm(centroids_sq, rows, centroids.T, alpha=-2.0).min(1)
            squared[start:stop] = (best + points_sq[start:stop]).clamp_min_(0.0)
            labels[start:stop] = nearest
        if sums is not None and counts is not None:
            if device.type == "cpu":
                # float32 within a chunk (~10x faster than float64 here), float64 across chunks.
                sums += torch.zeros(k, width, dtype=rows.dtype, device=device).index_add_(0, nearest, rows).double()
            else:
                # index_add_ is nondeterministic on CUDA (atomics); a one-hot GEMM is not, and is cheap there.
                sums += (torch.nn.functional.one_hot(nearest, k).to(rows.dtype).T @ rows).double()
            counts += torch.bincount(nearest, minlength=k).double()
    return labels, squared, sums, counts


def faiss_nearest(index: Any, rows: torch.Tensor, squared: torch.Tensor, nearest: torch.Tensor) -> None:
    """faiss's nearest centroid of each row, written into `squared` and `nearest`, FAISS_QUERY_ROWS at a time.

    faiss computes the norms of all the rows it is given before their distances to the centroids. Given
    one of its own query blocks at a time, that second pass reads the rows from cache, not memory: at
    200,000 x 128, k=100 this took `--engine faiss` from 1.13-1.15x faiss.Kmeans's time per iteration to
    1.00-1.03x (benchmarks/bench_cluster.py, one core). The caller keeps its big chunks, so the torch ops
    (OpenMP regions) between searches stay few: cache-sized chunks throughout were as fast on an idle
    machine and slower with another job on the cores.
    """
    import torch

    for start in range(0, len(rows), FAISS_QUERY_ROWS):
        stop = min(start + FAISS_QUERY_ROWS, len(rows))
        found_sq, found = index.search(rows[start:stop].numpy(), 1)  # (B, 1) squared distances, centroid indices
        nearest[start:stop] = torch.from_numpy(found[:, 0])
        squared[start:stop] = torch.from_numpy(found_sq[:, 0]).clamp_min_(0.0)


def faiss_index(centroids: torch.Tensor) -> Any:
    """An exact (flat) L2 index over the centroids, for faiss's fast nearest-centroid search."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids.cpu().numpy(), dtype=np.float32))
    return index


def kmeans_plusplus(
    points: torch.Tensor, points_sq: torch.Tensor, k: int, rng: np.random.Generator, ranks: Ranks = SINGLE
) -> np.ndarray:
    """Greedy k-means++ (Arthur & Vassilvitskii, 2007): 2 + ln k candidates per centre, keep the best.

    Returns the (global) row indices of the k initial centres. Draws come from `rng` on the host,
    so the same seed gives the same centres on every device and at every world size.
    """
    return seed_centres(points, points_sq, k, rng, ranks)[0]


def seed_centres(
    points: torch.Tensor, points_sq: torch.Tensor, k: int, rng: np.random.Generator, ranks: Ranks = SINGLE
) -> tuple[np.ndarray, torch.Tensor]:
    """k-means++ over every rank's rows: (k,) global row indices and the (k, D) centres, on every rank.

    Each rank keeps the distances of its own rows; per centre, the candidate rows and each rank's
    share of the candidates' potentials cross ranks (two small collectives).
    """
    import torch

    blocks = row_blocks(ranks, len(points))
    n_rows = blocks.total
    trials = 2 + int(math.log(k))
    chosen = [int(rng.integers(n_rows))]
    centres = [fetch_rows(ranks, blocks, points, chosen)]
    closest = squared_distances_to_centres(points, points_sq, centres[0]).squeeze(1).double()
    potential_sum, shares = sums_by_rank(ranks, closest.sum().reshape(1))
    potential, totals = float(potential_sum[0]), shares[:, 0]
    for _ in range(1, k):
        if potential > 0:
            targets = rng.random(trials) * potential
            candidates, rows = draw_rows(ranks, blocks, torch.cumsum(closest, 0), totals, targets, points)
        else:  # every row already sits on a centre: any row will do
            candidates = rng.integers(n_rows, size=trials).tolist()
            rows = fetch_rows(ranks, blocks, points, candidates)
        candidate_sq = squared_distances_to_centres(points, points_sq, rows).double()  # (n, trials), small
        merged = torch.minimum(closest[:, None], candidate_sq)
        potentials, shares = sums_by_rank(ranks, merged.sum(0))
        best = int(potentials.argmin())
        chosen.append(candidates[best])
        centres.append(rows[best : best + 1])
        closest, potential, totals = merged[:, best].contiguous(), float(potentials[best]), shares[:, best]
    return np.asarray(chosen, dtype=np.int64), torch.cat(centres)


def squared_distances_to(points: torch.Tensor, points_sq: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """(N, len(rows)) squared distances from every point to a few of the points."""
    return squared_distances_to_centres(points, points_sq, points[list(rows)])


def squared_distances_to_centres(points: torch.Tensor, points_sq: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(N, C) squared distances from every point to each of C centres (C, D)."""
    import torch

    base = points_sq[:, None] + centres.square().sum(1)[None, :]
    return torch.addmm(base, points, centres.T, alpha=-2.0).clamp_min_(0.0)


def _lloyd_torch(
    points: torch.Tensor,
    points_sq: torch.Tensor,
    centroids: torch.Tensor,
    config: ClusterConfig,
    tolerance: float,
    chunk: int,
    progress: ProgressCallback | None,
    engine: Engine = Engine.torch,
    ranks: Ranks = SINGLE,
) -> tuple[torch.Tensor, int, bool]:
    """Lloyd iterations from `centroids` (k, D); under torchrun, on every rank's rows at once."""
    import torch

    k, width = centroids.shape
    previous: torch.Tensor | None = None
    for iteration in range(1, config.iters + 1):
        # Under torchrun one all-reduce per iteration: the sums, the counts, and how many ranks' labels moved.
        packed = (
            torch.zeros(k * width + k + 1, dtype=torch.float64, device=points.device) if ranks.distributed else None
        )
        labels, squared, sums, counts = assign(points, points_sq, centroids, chunk, True, engine, packed)
        assert sums is not None and counts is not None
        unchanged = previous is not None and torch.equal(previous, labels)
        if packed is not None:  # sums and counts are views of it, summed in place
            packed[-1] = 0.0 if unchanged else 1.0
            all_sum_(ranks, packed)
            unchanged = previous is not None and float(packed[-1]) == 0.0
        updated = (sums / counts.clamp_min(1)[:, None]).to(centroids.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            # sklearn's remedy: an empty cluster restarts at the rows farthest from their centroids.
            updated[empty] = farthest_rows(ranks, points, squared, len(empty))
        if config.spherical:
            updated = unit_rows(updated)
        shift = float((updated - centroids).double().square().sum())
        centroids = updated
        if progress is not None:
            progress(1, config.iters)
        if unchanged or shift <= tolerance:
            if progress is not None:
                progress(config.iters - iteration, config.iters)
            return centroids, iteration, True
        previous = labels
    return centroids, config.iters, False


def _lloyd_sklearn(points: torch.Tensor, seeds: np.ndarray, config: ClusterConfig) -> tuple[torch.Tensor, int, bool]:
    import torch
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    array = points.cpu().numpy()
    with warnings.catch_warnings():
        # "fewer distinct clusters than n_clusters" (duplicate rows): the result is still usable, as with torch.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = KMeans(
            n_clusters=len(seeds),
            init=array[seeds],
            n_init=1,
            max_iter=config.iters,
            tol=config.tol,
            algorithm="lloyd",
            random_state=config.seed,
        ).fit(array)
    iterations = int(model.n_iter_)
    return torch.from_numpy(model.cluster_centers_.astype(np.float32)), iterations, iterations < config.iters


def exact_distances(
    points: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, spherical: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance of each row to its own centroid, float32 differences summed in float64, then rounded.

    Returns (float32 distances: Euclidean, or 1 - cos when spherical; float64 squared Euclidean).
    Computed directly per row, not from the ||x||^2 - 2x.c + ||c||^2 expansion, which cancels badly.
    """
    import torch

    distances = torch.empty(len(points), dtype=torch.float32, device=points.device)
    squared = torch.empty(len(points), dtype=torch.float64, device=points.device)
    chunk = chunk_rows(len(points), points.shape[1], points.device.type)
    for start in range(0, len(points), chunk):
        stop = min(start + chunk, len(points))
        rows, own = points[start:stop], centroids[labels[start:stop]]
        squared[start:stop] = (rows - own).double().square().sum(1)
        if spherical:
            distances[start:stop] = (1.0 - (rows.double() * own.double()).sum(1)).float()
        else:
            distances[start:stop] = squared[start:stop].sqrt().float()
    return distances, squared
