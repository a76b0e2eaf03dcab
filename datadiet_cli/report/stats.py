"""The numbers behind the report, pure: records and arrays in, records and arrays out.

Runs are aggregated over seeds into cells, cells into scaling-law fits across starting sizes
(Fig. 3/11); scores give Spearman correlations (Fig. 5A), class balance under pruning (Fig. 20),
the easiest and hardest examples of a class (Fig. 6B/C) and cluster/class overlap (Fig. 6A).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datadiet_cli.report.runs import RunRecord, Selection


@dataclass(frozen=True)
class Cell:
    """The runs of one selection at one fraction and starting size, aggregated over seeds."""

    setting: str  # recipe/arch/epochs shared by the runs
    start_size: int  # examples in the set they were pruned from
    selection: Selection  # how their subsets were chosen
    fraction: float  # fraction of the starting set kept
    n: int  # runs averaged (seeds)
    rows: float  # mean examples trained on
    error: float  # mean test error (1 - top1)
    error_std: float  # sample std (n - 1) over the runs; NaN for a single run
    top1: float  # mean top-1 accuracy
    top1_std: float  # its sample std; NaN for a single run
    top5: float  # mean top-5 accuracy
    top5_std: float  # its sample std; NaN for a single run
    runs: tuple[str, ...] = ()  # run folders averaged


@dataclass(frozen=True)
class Fit:
    """A least-squares line through (x, log error): power law or exponential."""

    kind: str  # "power" (error = a * P^-exponent) or "exponential" (error = a * exp(-exponent * P))
    a: float  # the prefactor
    exponent: float  # nu for the power law, b for the exponential
    rms_log: float  # root-mean-square residual of log(error): which law fits better
    points: int  # points the line went through (perfect runs left out)

    def predict(self, sizes: np.ndarray) -> np.ndarray:
        sizes = np.asarray(sizes, dtype=np.float64)
        if self.kind == "power":
            return self.a * sizes ** (-self.exponent)
        return self.a * np.exp(-self.exponent * sizes)


@dataclass(frozen=True)
class SizeCurve:
    """Test error against pruned size for one selection at one fraction, across starting sizes."""

    setting: str  # recipe/arch/epochs of the cells
    selection: Selection  # how the subsets were chosen
    fraction: float  # fraction kept at every starting size
    cells: tuple[Cell, ...]  # one per starting size, smallest pruned size first
    power: Fit | None  # error = a * P^-nu; None without 2 distinct usable sizes
    exponential: Fit | None  # error = a * exp(-b P); None without 2 distinct usable sizes


@dataclass(frozen=True)
class Correlation:
    """Spearman rank correlation between score columns on the examples they share (Fig. 5A)."""

    names: tuple[str, ...]  # score names in clustered order
    rho: np.ndarray  # (names, names) correlations in that order
    rows: int  # examples every manifest holds


@dataclass(frozen=True)
class BalanceCurve:
    """Class balance of the subsets one keep policy leaves of one score column, across fractions (Fig. 20)."""

    score: str  # the score's name as shown
    keep: str  # hard | easy | random
    fractions: tuple[float, ...]  # fractions kept
    pruned: tuple[float, ...]  # b of the pruned set
    balanced: tuple[float, ...]  # b after `balance` with min_ratio


@dataclass(frozen=True)
class ClassBalance:
    """Every balance curve of the report, and the --min-ratio their balanced halves used."""

    curves: tuple[BalanceCurve, ...]  # keep hard and easy per score, then the keep random reference
    min_ratio: float  # balance's guarantee: each class keeps at least this share of its fair share


@dataclass(frozen=True)
class ClusterOverlap:
    """Fig. 6A: how the k-means clusters of one manifest spread over its classes."""

    manifest: str  # the manifest as given
    counts: np.ndarray  # (k, classes): examples of each class in each cluster
    classes: tuple[str, ...]  # class names, in label order
    purity: float  # share of examples in their cluster's majority class
    adjusted_rand: float  # clusters vs labels; 0 = chance, 1 = the same partition


# -- runs: aggregation and fits ---------------------------------------------------------------------


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std is NaN for a single value."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan


def aggregate(runs: Sequence[RunRecord]) -> list[Cell]:
    """Runs grouped by setting, starting size, selection and fraction (seeds averaged), sorted."""
    groups: dict[tuple[str, int, Selection, float], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(run.setting, run.start_size, run.selection, round(run.fraction, 9))].append(run)
    cells = []
    for (setting, start_size, selection, fraction), members in sorted(groups.items()):
        error, error_std = mean_std(r.error for r in members)
        top1, top1_std = mean_std(r.top1 for r in members)
        top5, top5_std = mean_std(r.top5 for r in members)
        cells.append(
            Cell(
                setting=setting,
                start_size=start_size,
                selection=selection,
                fraction=fraction,
                n=len(members),
                rows=float(np.mean([r.rows for r in members])),
                error=error,
                error_std=error_std,
                top1=top1,
                top1_std=top1_std,
                top5=top5,
                top5_std=top5_std,
                runs=tuple(r.run_dir for r in members),
            )
        )
    return cells


def by_panel(cells: Sequence[Cell]) -> dict[tuple[str, int], list[Cell]]:
    """Cells per (setting, starting size), in that order: one figure panel and one summary table each."""
    panels: dict[tuple[str, int], list[Cell]] = defaultdict(list)
    for cell in cells:
        panels[(cell.setting, cell.start_size)].append(cell)
    return dict(sorted(panels.items()))


def fit_power_law(sizes: Sequence[float], errors: Sequence[float]) -> Fit | None:
    """error = a * P^-nu by least squares on log error vs log P; None with fewer than 2 distinct sizes."""
    x, y = _positive_points(sizes, errors)
    if x is None:
        return None
    return _line_fit("power", np.log(x), np.log(y))


def fit_exponential(sizes: Sequence[float], errors: Sequence[float]) -> Fit | None:
    """error = a * exp(-b P) by least squares on log error vs P; None with fewer than 2 distinct sizes."""
    x, y = _positive_points(sizes, errors)
    if x is None:
        return None
    return _line_fit("exponential", x, np.log(y))


def _positive_points(sizes: Sequence[float], errors: Sequence[float]) -> tuple[Any, Any]:
    x, y = np.asarray(sizes, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    usable = (x > 0) & (y > 0) & np.isfinite(y)  # log(0 error) is -inf: a perfect run cannot be on the line
    x, y = x[usable], y[usable]
    if len(np.unique(x)) < 2:
        return None, None
    return x, y


def _line_fit(kind: str, x: np.ndarray, log_y: np.ndarray) -> Fit:
    slope, intercept = np.polyfit(x, log_y, 1)
    residual = log_y - (slope * x + intercept)
    return Fit(kind, float(np.exp(intercept)), float(-slope), float(np.sqrt(np.mean(residual**2))), len(x))


def size_curves(cells: Sequence[Cell]) -> list[SizeCurve]:
    """For each setting, selection and fraction seen at 2+ starting sizes: the cells and both fits."""
    grouped: dict[tuple[str, Selection, float], list[Cell]] = defaultdict(list)
    for cell in cells:
        grouped[(cell.setting, cell.selection, cell.fraction)].append(cell)
    curves = []
    for (setting, selection, fraction), members in sorted(grouped.items()):
        if len({cell.start_size for cell in members}) < 2:
            continue
        members.sort(key=lambda cell: cell.rows)
        sizes, errors = [cell.rows for cell in members], [cell.error for cell in members]
        curves.append(
            SizeCurve(
                setting,
                selection,
                fraction,
                tuple(members),
                fit_power_law(sizes, errors),
                fit_exponential(sizes, errors),
            )
        )
    return curves


def random_baseline(cells: Sequence[Cell], cell: Cell) -> Cell | None:
    """The keep=random cell at the same setting, starting size and fraction (the unpruned one at 1.0).

    An unbalanced random cell is preferred; a balanced one stands in (balancing a random subset
    moves a handful of rows, since random pruning keeps every class near its fair share)."""
    randoms = [
        other
        for other in cells
        if (other.setting, other.start_size, other.fraction) == (cell.setting, cell.start_size, cell.fraction)
        and other.selection.is_random
    ]
    if randoms:
        return min(randoms, key=lambda other: other.selection.balanced)
    if cell.fraction == 1.0:
        for other in cells:
            if (other.setting, other.start_size) == (cell.setting, cell.start_size) and other.selection.is_reference:
                return other
    return None


def easy_hard_pairs(cells: Sequence[Cell]) -> list[tuple[Cell, Cell]]:
    """(keep easy, keep hard) cells of the same metric, balancing, fraction, setting and starting size."""
    easy = {
        (c.setting, c.start_size, c.selection.metric, c.selection.balanced, c.fraction): c
        for c in cells
        if c.selection.keep == "easy"
    }
    pairs = []
    for cell in cells:
        key = (cell.setting, cell.start_size, cell.selection.metric, cell.selection.balanced, cell.fraction)
        if cell.selection.keep == "hard" and key in easy:
            pairs.append((easy[key], cell))
    return sorted(
        pairs, key=lambda pair: (pair[1].setting, pair[1].selection.metric, pair[1].start_size, -pair[1].fraction)
    )


# -- scores -----------------------------------------------------------------------------------------


def spearman_matrix(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Spearman rank correlation between every pair of equally long columns (ties get average ranks)."""
    from scipy.stats import rankdata

    ranks = np.stack([rankdata(np.asarray(values, dtype=np.float64)) for values in columns.values()])
    centred = ranks - ranks.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (centred @ centred.T) / np.outer(norms, norms)  # NaN for a constant column: no ranking at all
    np.fill_diagonal(rho, 1.0)
    return rho


def cluster_order(rho: np.ndarray) -> list[int]:
    """Leaf order of an average-linkage clustering on 1 - rho: correlated scores end up side by side."""
    if len(rho) < 3:
        return list(range(len(rho)))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = 1.0 - np.nan_to_num(rho, nan=0.0)
    distance = (distance + distance.T) / 2
    np.fill_diagonal(distance, 0.0)
    return [int(i) for i in leaves_list(linkage(squareform(np.clip(distance, 0.0, 2.0)), method="average"))]


def correlation(columns: Mapping[str, np.ndarray], rows: int) -> Correlation:
    """The Spearman matrix of equally long columns, rows and columns in clustered order."""
    rho = spearman_matrix(columns)
    order = cluster_order(rho)
    names = [list(columns)[i] for i in order]
    return Correlation(tuple(names), rho[np.ix_(order, order)], rows)


def balance_curve(
    scores: np.ndarray, labels: np.ndarray, keep: str, fractions: Sequence[float], min_ratio: float, seed: int
) -> tuple[list[float], list[float]]:
    """Class balance b of the subset `prune` keeps at each fraction, and after `balance` (Fig. 20)."""
    from datadiet_cli.select.balance import balance, balance_score
    from datadiet_cli.select.prune import Keep, PruneConfig, keep_count, select, selection_priority

    class_sizes_full = np.bincount(labels)
    present = class_sizes_full > 0
    pruned, balanced = [], []
    for fraction in fractions:
        config = PruneConfig(keep=Keep(keep), fraction=fraction, seed=seed)
        kept = select(scores, config)
        pruned.append(balance_score(np.bincount(labels[kept], minlength=len(present))[present]))
        mask = np.zeros(len(scores), dtype=bool)
        mask[kept] = True
        priority = selection_priority(scores, config, len(scores), keep_count(len(scores), fraction, None))
        result = balance(labels, mask, priority, min_ratio)
        balanced.append(balance_score(result.kept_after))
    return pruned, balanced


def class_extremes(
    scores: np.ndarray, labels: np.ndarray, label: int, per_side: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the easiest (lowest score first) and hardest (highest first) examples of one class."""
    from datadiet_cli.select.prune import rank_easy_to_hard

    rows = np.flatnonzero(labels == label)
    ranked = rows[rank_easy_to_hard(scores[rows], seed)]
    count = min(per_side, len(ranked) // 2) if len(ranked) > 1 else len(ranked)
    return ranked[:count], ranked[::-1][:count]


def cluster_class_counts(clusters: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(k, classes) contingency table; clusters are renumbered 0..k-1 in order of their ids."""
    _, dense = np.unique(clusters, return_inverse=True)
    counts = np.zeros((int(dense.max()) + 1 if len(dense) else 0, n_classes), dtype=np.int64)
    np.add.at(counts, (dense, labels), 1)
    return counts


def purity(counts: np.ndarray) -> float:
    total = counts.sum()
    return float(counts.max(axis=1).sum() / total) if total else float("nan")
