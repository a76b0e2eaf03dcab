"""`datadiet report`: figures and tables from finished runs and scored manifests, no retraining.

What a run was trained on is read from its config.json (the training manifest's whole
lineage, which `train` copies there) and how well it did from the eval.json that `evaluate`
leaves beside it. The pure core turns those documents into a table of runs, aggregates
them over seeds, fits scaling laws, and computes what the paper plots from scored manifests
(Spearman correlation of scores, Fig. 5A; class balance under pruning, Fig. 20; the easiest
and hardest images per class, Fig. 6B/C; how k-means clusters overlap the classes, Fig. 6A). Figures use matplotlib (Agg, imported inside the
functions); `build_report` writes everything into OUT_DIR at once, or nothing.

How a run's subset is read from its lineage (docs/report.md):
- the *policy* is the last `prune` step, unless a `score` or `cluster` step follows it: then
  the scores were computed on the pruned set, which is the run's starting set, and the run
  is unpruned (fraction 1.0, the reference for every metric);
- the starting set is the input of the policy prune; its size is the "starting size";
- a `balance` step after the policy marks the run as balanced;
- a keep=random run is also the fraction-1.0 reference of the runs that were pruned further
  from exactly its subset (the same prune step appears earlier in their lineage).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datadiet_cli import __version__
from datadiet_cli.errors import ColumnError, DatadietError, OptionError, RunDirError
from datadiet_cli.io.lineage import SCORING_COMMANDS, Lineage, RecordedFile
from datadiet_cli.io.manifest import Manifest, read_manifest

EVAL_FILE = "eval.json"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.md"
FRACTION_FIGURE = "error_vs_fraction.png"
SIZE_FIGURE = "error_vs_size.png"
CORRELATION_FIGURE = "score_correlation.png"
BALANCE_FIGURE = "class_balance.png"
CLUSTER_FIGURE = "cluster_classes.png"
EXTREMES_PREFIX = "extremes_"
# Steps that compute scores: a prune before one of them made the set that was scored, not a pruned subset.
UNPRUNED = "none"
RANDOM_POLICY = "keep random"  # the balance figure's reference curve (a score column may be called "random")  # metric and keep of a run trained on its whole starting set
DPI = 150

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ReportConfig:
    scores: tuple[str, ...] = ()  # score columns for the manifest figures; () = every described score column
    classes: tuple[str, ...] = ()  # classes of the contact sheets (names or label numbers); () = the first 10
    per_side: int = 8  # easiest and hardest images shown per class (the paper's Fig. 6 shows a handful)
    balance_fractions: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # Fig. 20's x
    min_ratio: float = 0.5  # balance's guarantee in the class-balance figure (the paper's 50% of the fair share)
    seed: int = 0  # tie-breaking in the balance figure and the contact sheets, as prune's --seed


@dataclass(frozen=True)
class RunRecord:
    """One finished run, as read from its config.json and eval.json."""

    run_dir: str
    metric: str  # score column the policy ranked by; "random" for keep=random; "none" when unpruned
    keep: str  # hard | easy | random | window@START | none
    fraction: float  # fraction of the starting set kept (the prune's --fraction, else rows kept / rows in)
    balanced: bool  # a `balance` step followed the prune
    start_size: int  # examples in the set the policy pruned from
    full_size: int  # examples of the dataset before any pruning
    rows: int  # examples trained on
    seed: int  # train --seed
    prune_seed: int | None  # prune --seed (ties and keep=random draws); None when unpruned
    top1: float
    top5: float
    loss: float
    test_n: int
    setting: str  # recipe/arch/epochs: runs of different settings are never averaged together
    test_set: str  # sha256 of the test manifest (first 12 hex digits), "" when unknown
    start_key: str  # identity of the starting set (which prune made it), to match reference runs
    subset_key: str  # identity of the trained subset's prune

    @property
    def error(self) -> float:
        return 1.0 - self.top1

    @property
    def policy(self) -> Policy:
        return Policy(self.metric, self.keep, self.balanced)


@dataclass(frozen=True, order=True)
class Policy:
    metric: str
    keep: str
    balanced: bool

    @property
    def is_reference(self) -> bool:
        return self.keep == UNPRUNED

    @property
    def is_random(self) -> bool:
        return self.keep == "random"

    @property
    def label(self) -> str:
        if self.is_reference:
            return "unpruned"
        name = "random" if self.is_random else f"{self.metric}, keep {self.keep}"
        return name + (" + balance" if self.balanced else "")


@dataclass(frozen=True)
class Cell:
    """The runs of one policy at one fraction and starting size, aggregated over seeds."""

    setting: str
    start_size: int
    policy: Policy
    fraction: float
    n: int
    rows: float  # mean examples trained on
    error: float  # mean test error (1 - top1)
    error_std: float  # sample std (n - 1) over the runs; NaN for a single run
    top1: float
    top1_std: float
    top5: float
    top5_std: float
    runs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fit:
    """A least-squares line through (x, log error): power law or exponential."""

    kind: str  # "power" (error = a * P^-exponent) or "exponential" (error = a * exp(-exponent * P))
    a: float
    exponent: float  # nu for the power law, b for the exponential
    rms_log: float  # root-mean-square residual of log(error): which law fits better
    points: int

    def predict(self, sizes: np.ndarray) -> np.ndarray:
        sizes = np.asarray(sizes, dtype=np.float64)
        if self.kind == "power":
            return self.a * sizes ** (-self.exponent)
        return self.a * np.exp(-self.exponent * sizes)


@dataclass(frozen=True)
class SizeCurve:
    """Test error against pruned size for one policy at one fraction, across starting sizes."""

    setting: str
    policy: Policy
    fraction: float
    cells: tuple[Cell, ...]
    power: Fit | None
    exponential: Fit | None


@dataclass(frozen=True)
class ScoreSource:
    """One score column of one manifest, under the name the report shows."""

    name: str
    column: str
    manifest: Manifest


@dataclass(frozen=True)
class BalanceCurve:
    score: str
    keep: str
    fractions: tuple[float, ...]
    pruned: tuple[float, ...]  # b of the pruned set
    balanced: tuple[float, ...]  # b after `balance` with min_ratio


@dataclass(frozen=True)
class Extremes:
    score: str
    file: str
    classes: tuple[str, ...]
    easiest: tuple[tuple[str, ...], ...]  # ids per class, easiest first
    hardest: tuple[tuple[str, ...], ...]  # ids per class, hardest first


@dataclass(frozen=True)
class ClusterOverlap:
    """Fig. 6A: how the k-means clusters of one manifest spread over its classes."""

    manifest: str
    counts: np.ndarray  # (k, classes): examples of each class in each cluster
    classes: tuple[str, ...]
    purity: float  # share of examples in their cluster's majority class
    adjusted_rand: float  # clusters vs labels; 0 = chance, 1 = the same partition


@dataclass
class Report:
    """Everything `build_report` computed; what summary.md and the figures show."""

    runs: list[RunRecord] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    size_curves: list[SizeCurve] = field(default_factory=list)
    correlation: tuple[list[str], np.ndarray, int] | None = None  # names (clustered order), rho, rows
    balance_curves: list[BalanceCurve] = field(default_factory=list)
    cluster_overlaps: list[ClusterOverlap] = field(default_factory=list)
    extremes: list[Extremes] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- reading runs ---------------------------------------------------------------------------------


def describe_subset(lineage: Lineage, rows: int) -> dict[str, Any]:
    """metric, keep, fraction, balanced, start_size, prune_seed, start_key, subset_key from a lineage.

    `rows` is the size of the trained set (the fraction and starting size of an unpruned run).
    """
    last_prune = lineage.index_of_last("prune")
    scored_after = last_prune is not None and any(
        step.command in SCORING_COMMANDS for step in lineage[last_prune + 1 :]
    )
    if last_prune is None or scored_after:
        made_by = lineage[last_prune].key() if last_prune is not None else "dataset"
        return {
            "metric": UNPRUNED,
            "keep": UNPRUNED,
            "fraction": 1.0,
            "balanced": False,
            "start_size": rows,
            "prune_seed": None,
            "start_key": made_by,
            "subset_key": made_by,
        }
    step = lineage[last_prune]
    options, stats = step.options, step.stats
    keep = str(options.get("keep"))
    rows_in = int(stats.get("rows_in") or rows)
    requested = options.get("fraction")
    fraction = float(requested) if requested is not None else int(stats.get("rows_kept") or rows) / rows_in
    if keep == "window":
        keep = f"window@{float(options.get('window_start') or 0.0):g}"
    earlier = [i for i, s in enumerate(lineage[:last_prune]) if s.command == "prune"]
    return {
        "metric": "random" if keep == "random" else str(options.get("score")),
        "keep": keep,
        "fraction": fraction,
        "balanced": any(s.command == "balance" for s in lineage[last_prune + 1 :]),
        "start_size": rows_in,
        "prune_seed": int(options.get("seed") or 0),
        "start_key": lineage[earlier[-1]].key() if earlier else "dataset",
        "subset_key": step.key(),
    }


def read_run(run_dir: Path | str) -> RunRecord:
    """One run directory as a RunRecord, with one-line errors for what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory; create it with `datadiet train ... -o {run_dir}`")
    config_path, eval_path = run_dir / CONFIG_FILE, run_dir / EVAL_FILE
    if not config_path.is_file():
        raise RunDirError(f"{run_dir}: not a training run (no {CONFIG_FILE}); create it with `datadiet train`")
    if not eval_path.is_file():
        raise RunDirError(f"{run_dir}: has no {EVAL_FILE}; run `datadiet evaluate {run_dir} TEST.parquet` first")
    settings = _read_json(config_path)
    evaluation = _read_json(eval_path)
    manifest = settings.get("manifest") or {}
    rows = int(manifest.get("rows") or 0)
    subset = describe_subset(_lineage_of(run_dir, manifest), rows)
    config = settings.get("config") or {}
    recipe = config.get("recipe") or {}
    test = evaluation.get("test_manifest") or {}
    try:
        return RunRecord(
            run_dir=str(run_dir),
            rows=rows,
            full_size=int(manifest.get("full_size") or rows),
            seed=int(config.get("seed") or 0),
            top1=float(evaluation["top1"]),
            top5=float(evaluation.get("top5", math.nan)),
            loss=float(evaluation.get("loss", math.nan)),
            test_n=int(evaluation.get("n") or 0),
            setting=f"{recipe.get('name', '?')}/{recipe.get('arch', '?')}/{recipe.get('epochs', '?')} epochs"
            + (f"/matched {config['matched_iterations']:g}" if config.get("matched_iterations") else ""),
            test_set=str(test.get("sha256") or "")[:12],
            **subset,
        )
    except (KeyError, TypeError, ValueError):
        raise RunDirError(
            f"{eval_path}: has no top1 accuracy; run `datadiet evaluate {run_dir} TEST.parquet` again"
        ) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path}: is not valid JSON ({error}); write it again with datadiet") from None
    if not isinstance(document, dict):
        raise RunDirError(f"{path}: is not a JSON object; write it again with datadiet")
    return document


def _lineage_of(run_dir: Path, manifest: Mapping[str, Any]) -> Lineage:
    """The training manifest's lineage: from config.json, else from the unchanged manifest file itself."""
    if "lineage" in manifest:
        return Lineage.of(manifest["lineage"], str(run_dir / CONFIG_FILE))
    recorded = RecordedFile.of(manifest)
    if recorded.unchanged():
        return read_manifest(recorded.path).lineage()
    raise RunDirError(
        f"{run_dir / CONFIG_FILE}: records no lineage of its training manifest (an older datadiet) and "
        f"{manifest.get('path') or 'the manifest'} is gone or changed; train the run again with this datadiet"
    )


def collect_runs(run_dirs: Sequence[Path | str]) -> list[RunRecord]:
    """Every run directory read once (duplicates by path dropped), in the order given."""
    seen: set[Path] = set()
    runs = []
    for run_dir in run_dirs:
        resolved = Path(run_dir).resolve()
        if resolved not in seen:
            seen.add(resolved)
            runs.append(read_run(run_dir))
    return runs


def with_references(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs plus, for each keep=random run whose exact subset others pruned further, its reading as
    those runs' unpruned fraction-1.0 reference."""
    starts = {(run.setting, run.start_key) for run in runs}
    extra = [
        dataclasses.replace(
            run,
            metric=UNPRUNED,
            keep=UNPRUNED,
            fraction=1.0,
            balanced=False,
            start_size=run.rows,
            start_key=run.subset_key,
        )
        for run in runs
        if run.keep == "random" and not run.balanced and (run.setting, run.subset_key) in starts
    ]
    return [*runs, *extra]


# -- aggregation and fits -----------------------------------------------------------------------------


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std is NaN for a single value."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan


def aggregate(runs: Sequence[RunRecord]) -> list[Cell]:
    """Runs grouped by setting, starting size, policy and fraction (seeds averaged), sorted."""
    groups: dict[tuple[str, int, Policy, float], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(run.setting, run.start_size, run.policy, round(run.fraction, 9))].append(run)
    cells = []
    for (setting, start_size, policy, fraction), members in sorted(groups.items()):
        error, error_std = mean_std(r.error for r in members)
        top1, top1_std = mean_std(r.top1 for r in members)
        top5, top5_std = mean_std(r.top5 for r in members)
        cells.append(
            Cell(
                setting=setting,
                start_size=start_size,
                policy=policy,
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
    """For each setting, policy and fraction seen at 2+ starting sizes: the cells and both fits."""
    grouped: dict[tuple[str, Policy, float], list[Cell]] = defaultdict(list)
    for cell in cells:
        grouped[(cell.setting, cell.policy, cell.fraction)].append(cell)
    curves = []
    for (setting, policy, fraction), members in sorted(grouped.items()):
        if len({cell.start_size for cell in members}) < 2:
            continue
        members.sort(key=lambda cell: cell.rows)
        sizes, errors = [cell.rows for cell in members], [cell.error for cell in members]
        curves.append(
            SizeCurve(
                setting,
                policy,
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
        and other.policy.is_random
    ]
    if randoms:
        return min(randoms, key=lambda other: other.policy.balanced)
    if cell.fraction == 1.0:
        for other in cells:
            if (other.setting, other.start_size) == (cell.setting, cell.start_size) and other.policy.is_reference:
                return other
    return None


# -- scores of manifests --------------------------------------------------------------------------


def described_score_columns(manifest: Manifest) -> list[str]:
    """Difficulty columns the metadata describes and the table holds (spreads such as el2n_std left out)."""
    columns = []
    for column, description in (manifest.meta.get("scores") or {}).items():
        spread = str((description or {}).get("metric", "")).endswith("_std") or "of" in (
            (description or {}).get("params") or {}
        )
        if manifest.has_column(column) and not spread:
            columns.append(column)
    return columns


def score_sources(manifests: Sequence[Manifest], wanted: Sequence[str] = ()) -> list[ScoreSource]:
    """The score columns to show: `wanted` (each must exist in some manifest), else every described one.

    A column found in several manifests is shown as MANIFEST_STEM:COLUMN for each.
    """
    found: list[tuple[str, Manifest]] = []
    for manifest in manifests:
        columns = [c for c in wanted if manifest.has_column(c)] if wanted else described_score_columns(manifest)
        found.extend((column, manifest) for column in columns)
    for column in wanted:
        if not any(found_column == column for found_column, _ in found):
            _missing_column(manifests, column)
    counts = defaultdict(int)
    for column, _ in found:
        counts[column] += 1
    sources = []
    for column, manifest in found:
        manifest.score(column)  # validated: numeric, no nulls, no NaN
        stem = Path(manifest.name).stem
        sources.append(ScoreSource(f"{stem}:{column}" if counts[column] > 1 else column, column, manifest))
    if manifests and not sources:
        names = ", ".join(m.name for m in manifests)
        raise ColumnError(f"{names}: no score columns; add them with `datadiet score` or `datadiet cluster`")
    return sources


def _missing_column(manifests: Sequence[Manifest], column: str) -> None:
    known = sorted({c for m in manifests for c in described_score_columns(m)})
    raise ColumnError(
        f"--score {column}: no score column '{column}' in {', '.join(m.name for m in manifests)} "
        f"(score columns there: {', '.join(known) or 'none'}); add it with `datadiet score` or `datadiet cluster`"
    )


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


def aligned_scores(sources: Sequence[ScoreSource]) -> tuple[dict[str, np.ndarray], int]:
    """Each source's scores on the ids that every source's manifest holds (in the first one's order)."""
    common: set[str] | None = None
    for source in sources:
        ids = set(source.manifest.ids().tolist())
        common = ids if common is None else common & ids
    assert common is not None
    first_ids = sources[0].manifest.ids()
    order = [example_id for example_id in first_ids.tolist() if example_id in common]
    aligned = {}
    for source in sources:
        position = {example_id: i for i, example_id in enumerate(source.manifest.ids().tolist())}
        rows = np.fromiter((position[example_id] for example_id in order), dtype=np.int64, count=len(order))
        aligned[source.name] = source.manifest.score(source.column)[rows]
    return aligned, len(order)


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


def chosen_classes(manifest: Manifest, wanted: Sequence[str]) -> list[int]:
    """Label numbers of the contact-sheet classes: names or numbers as given, else the first 10."""
    names = manifest.classes
    if not wanted:
        return list(range(min(10, len(names))))
    labels = []
    for item in wanted:
        if item in names:
            labels.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            labels.append(int(item))
        else:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise OptionError(f"--classes {item}: no such class in {manifest.name} (classes: {shown})")
    return labels


# -- the whole report --------------------------------------------------------------------------------


def build_report(
    run_dirs: Sequence[Path | str],
    manifest_paths: Sequence[Path | str],
    out_dir: Path | str,
    config: ReportConfig = ReportConfig(),
    progress: ProgressCallback | None = None,
) -> Report:
    """Read the runs and manifests, compute, draw and write OUT_DIR; all files appear together or none."""
    out_dir = Path(out_dir)
    if not run_dirs and not manifest_paths:
        raise OptionError(
            "no run directories given; pass RUN_DIR... written by `datadiet train` and `datadiet evaluate` "
            "(or --manifest SCORED.parquet for the score figures alone)"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise OptionError(f"{out_dir}: is a file; -o takes a directory for the report")
    if not 0.0 <= config.min_ratio <= 1.0:
        raise OptionError(f"--min-ratio {config.min_ratio} is outside [0, 1]; the paper uses 0.5")
    if config.per_side < 1:
        raise OptionError(f"--per-class {config.per_side} must be at least 1")
    report = Report()
    report.runs = collect_runs(run_dirs)
    manifests = [read_manifest(path) for path in manifest_paths]
    report.manifests = [str(path) for path in manifest_paths]
    sources = score_sources(manifests, config.scores) if manifests else []
    if config.classes and manifests:
        for manifest in manifests:
            chosen_classes(manifest, config.classes)  # unknown class names fail before any work
    steps = 4 + len(sources)
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(1, steps)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        if report.runs:
            readings = with_references(report.runs)
            report.cells = aggregate(readings)
            report.size_curves = size_curves(report.cells)
            write_results_csv(report.runs, staging / RESULTS_FILE)
            plot_error_vs_fraction(report.cells, staging / FRACTION_FIGURE)
            if report.size_curves:
                plot_error_vs_size(report.size_curves, staging / SIZE_FIGURE)
            if len({run.test_set for run in report.runs}) > 1:
                report.notes.append("the runs were evaluated on different test manifests (see results.csv)")
        advance()
        aligned, rows = aligned_scores(sources) if len(sources) >= 2 else ({}, 0)
        if len(sources) >= 2 and rows < 3:
            report.notes.append(f"score correlation not drawn: the manifests share only {rows} example ids")
        elif len(sources) >= 2:
            rho = spearman_matrix(aligned)
            order = cluster_order(rho)
            names = [list(aligned)[i] for i in order]
            report.correlation = (names, rho[np.ix_(order, order)], rows)
            plot_score_correlation(names, report.correlation[1], rows, staging / CORRELATION_FIGURE)
        elif sources:
            report.notes.append("score correlation not drawn: it needs at least two score columns")
        advance()
        report.cluster_overlaps = [
            cluster_overlap(manifest, str(path))
            for manifest, path in zip(manifests, manifest_paths, strict=True)
            if "cluster" in manifest.table.column_names and _labels_or_none(manifest) is not None
        ]
        if report.cluster_overlaps:
            plot_cluster_classes(report.cluster_overlaps, staging / CLUSTER_FIGURE)
        report.balance_curves = balance_curves_of(sources, config, report.notes)
        if report.balance_curves:
            plot_class_balance(report.balance_curves, config.min_ratio, staging / BALANCE_FIGURE)
        advance()
        used_files: set[str] = set()
        for source in sources:
            extremes = contact_sheet(source, config, staging, used_files, report.notes)
            if extremes is not None:
                report.extremes.append(extremes)
            advance()
        report.files = [*sorted(path.name for path in staging.iterdir()), SUMMARY_FILE]
        (staging / SUMMARY_FILE).write_text(summary_markdown(report, config))
        advance()
        publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def balance_curves_of(sources: Sequence[ScoreSource], config: ReportConfig, notes: list[str]) -> list[BalanceCurve]:
    curves: list[BalanceCurve] = []
    if not sources:
        return curves
    # A fraction that keeps no row of the smallest manifest cannot be pruned to.
    smallest = min(source.manifest.num_rows for source in sources)
    fractions = tuple(f for f in config.balance_fractions if round(f * smallest) >= 1)
    reference_labels = None
    for source in sources:
        labels = _labels_or_none(source.manifest)
        if labels is None:
            notes.append(f"class balance of {source.name}: skipped, {source.manifest.name} has unlabeled rows")
            continue
        reference_labels = labels if reference_labels is None else reference_labels
        scores = source.manifest.score(source.column)
        for keep in ("hard", "easy"):
            pruned, balanced = balance_curve(scores, labels, keep, fractions, config.min_ratio, config.seed)
            curves.append(BalanceCurve(source.name, keep, fractions, tuple(pruned), tuple(balanced)))
    if reference_labels is not None:  # keep random on the first labeled manifest: the reference curve
        pruned, balanced = balance_curve(
            np.zeros(len(reference_labels)), reference_labels, "random", fractions, config.min_ratio, config.seed
        )
        curves.append(BalanceCurve(RANDOM_POLICY, "random", fractions, tuple(pruned), tuple(balanced)))
    return curves


def cluster_class_counts(clusters: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(k, classes) contingency table; clusters are renumbered 0..k-1 in order of their ids."""
    _, dense = np.unique(clusters, return_inverse=True)
    counts = np.zeros((int(dense.max()) + 1 if len(dense) else 0, n_classes), dtype=np.int64)
    np.add.at(counts, (dense, labels), 1)
    return counts


def purity(counts: np.ndarray) -> float:
    total = counts.sum()
    return float(counts.max(axis=1).sum() / total) if total else float("nan")


def cluster_overlap(manifest: Manifest, name: str) -> ClusterOverlap:
    from sklearn.metrics import adjusted_rand_score

    labels, clusters = manifest.labels(), manifest.groups("cluster")
    counts = cluster_class_counts(clusters, labels, len(manifest.classes))
    ari = float(adjusted_rand_score(labels, clusters))
    return ClusterOverlap(name, counts, tuple(manifest.classes), purity(counts), ari)


def _labels_or_none(manifest: Manifest) -> np.ndarray | None:
    try:
        return manifest.labels()
    except ColumnError:
        return None


def contact_sheet(
    source: ScoreSource, config: ReportConfig, folder: Path, used: set[str], notes: list[str]
) -> Extremes | None:
    """Draw extremes_<score>.png for one score column; None (and a note) when its images cannot be shown."""
    manifest = source.manifest
    labels = _labels_or_none(manifest)
    if labels is None:
        notes.append(f"easiest/hardest images of {source.name}: skipped, {manifest.name} has unlabeled rows")
        return None
    scores = manifest.score(source.column)
    classes = chosen_classes(manifest, config.classes)
    easiest, hardest = [], []
    for label in classes:
        easy_rows, hard_rows = class_extremes(scores, labels, label, config.per_side, config.seed)
        easiest.append(easy_rows)
        hardest.append(hard_rows)
    try:
        thumbnails = thumbnail_rows(manifest, easiest, hardest)
    except DatadietError as error:
        notes.append(f"easiest/hardest images of {source.name}: skipped, {error}")
        return None
    file = EXTREMES_PREFIX + _safe_name(source.name, used) + ".png"
    names = [manifest.classes[label] if label < len(manifest.classes) else str(label) for label in classes]
    plot_extremes(source.name, names, thumbnails, config.per_side, folder / file)
    ids = manifest.ids()
    return Extremes(
        score=source.name,
        file=file,
        classes=tuple(names),
        easiest=tuple(tuple(ids[rows].tolist()) for rows in easiest),
        hardest=tuple(tuple(ids[rows].tolist()) for rows in hardest),
    )


def thumbnail_rows(
    manifest: Manifest, easiest: Sequence[np.ndarray], hardest: Sequence[np.ndarray]
) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """The chosen images as RGB uint8 arrays of one size (larger than 64 px: resized to 64 x 64).

    Only these few images are decoded (open_image), not the whole dataset.
    """
    from PIL import Image

    from datadiet_cli.data.images import open_image

    def rgb(row: int) -> np.ndarray:
        image = open_image(manifest, int(row)).convert("RGB")
        if max(image.size) > 64:
            image = image.resize((64, 64), Image.BILINEAR)
        return np.asarray(image)

    rows = [([rgb(r) for r in easy], [rgb(r) for r in hard]) for easy, hard in zip(easiest, hardest, strict=True)]
    shapes = {image.shape for easy, hard in rows for image in (*easy, *hard)}
    if len(shapes) > 1:  # small images of several sizes: bring them to one
        side = max(max(shape[:2]) for shape in shapes)
        rows = [
            (
                [np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR)) for image in easy],
                [np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR)) for image in hard],
            )
            for easy, hard in rows
        ]
    return rows


def _safe_name(name: str, used: set[str]) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "score"
    candidate, number = safe, 2
    while candidate in used:
        candidate, number = f"{safe}_{number}", number + 1
    used.add(candidate)
    return candidate


def publish(staging: Path, out_dir: Path) -> None:
    """Move the finished files into OUT_DIR: a rename of the whole folder when OUT_DIR is new; otherwise
    file by file, after removing the report files of an earlier report that this one does not rewrite."""
    if not out_dir.exists():
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); a report folder is an ordinary one
        os.replace(staging, out_dir)
        return
    produced = {path.name for path in staging.iterdir()}
    report_files = {
        RESULTS_FILE,
        SUMMARY_FILE,
        FRACTION_FIGURE,
        SIZE_FIGURE,
        CORRELATION_FIGURE,
        BALANCE_FIGURE,
        CLUSTER_FIGURE,
    }
    for old in out_dir.iterdir():
        stale = old.name in report_files or (old.name.startswith(EXTREMES_PREFIX) and old.suffix == ".png")
        if stale and old.is_file() and old.name not in produced:
            old.unlink()
    for name in sorted(produced, key=lambda n: n == SUMMARY_FILE):  # summary.md last: it lists the others
        os.replace(staging / name, out_dir / name)


# -- tables and summary -----------------------------------------------------------------------------

RESULT_COLUMNS = (
    "run_dir",
    "metric",
    "keep",
    "fraction",
    "balanced",
    "start_size",
    "full_size",
    "rows",
    "seed",
    "prune_seed",
    "top1",
    "top5",
    "error",
    "loss",
    "test_n",
    "setting",
    "test_set",
)


def write_results_csv(runs: Sequence[RunRecord], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(RESULT_COLUMNS)
        for run in runs:
            writer.writerow(["" if (v := getattr(run, c)) is None else v for c in RESULT_COLUMNS])


def _percent(value: float, std: float | None = None) -> str:
    if value is None or math.isnan(value):
        return "-"
    shown = f"{100 * value:.2f}"
    if std is not None:
        shown += " ± " + ("-" if math.isnan(std) else f"{100 * std:.2f}")
    return shown


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def summary_markdown(report: Report, config: ReportConfig) -> str:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    lines = ["# datadiet report", "", f"Written {now} by datadiet {__version__}. Files: {', '.join(report.files)}.", ""]
    if report.runs:
        lines += _runs_section(report)
        lines += _fraction_section(report)
        lines += _easy_or_hard_section(report)
        lines += _size_section(report)
    if report.manifests:
        lines += ["## Scored manifests read", ""] + [f"- `{path}`" for path in report.manifests] + [""]
    lines += _correlation_section(report)
    lines += _cluster_section(report)
    lines += _balance_section(report, config)
    lines += _extremes_section(report)
    if report.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    return "\n".join(lines)


def _heading(title: str, intro: str) -> list[str]:
    """A summary.md section's title and the paragraph that says how to read it."""
    return [f"## {title}", "", intro, ""]


def _runs_section(report: Report) -> list[str]:
    lines = _heading(
        f"Runs read ({len(report.runs)})",
        "Metric, keep policy, fraction and starting size are read from each run's training lineage (docs/report.md). "
        "Accuracies in %.",
    )
    rows = [
        (
            f"`{run.run_dir}`",
            run.metric,
            run.keep,
            f"{run.fraction:g}",
            "yes" if run.balanced else "no",
            f"{run.start_size:,}",
            f"{run.rows:,}",
            run.seed,
            "-" if run.prune_seed is None else run.prune_seed,
            _percent(run.top1),
            _percent(run.top5),
            run.setting,
        )
        for run in report.runs
    ]
    header = ("run", "metric", "keep", "fraction", "balanced", "start size", "rows", "seed", "prune seed")
    return lines + _table((*header, "top-1", "top-5", "setting"), rows)


def _fraction_section(report: Report) -> list[str]:
    lines = _heading(
        f"Test error against fraction kept (`{FRACTION_FIGURE}`)",
        "Mean ± sample std over the runs of each cell (n runs: seeds). Δ random: this cell's mean error minus "
        "keep=random's at the same fraction, in points (negative = better than random).",
    )
    for (setting, start_size), cells in _by_panel(report.cells).items():
        lines += [f"### {setting}, starting from {start_size:,} examples", ""]
        rows = []
        for cell in cells:
            baseline = random_baseline(report.cells, cell)
            delta = (
                "-"
                if baseline is None or baseline is cell or baseline.policy == cell.policy
                else f"{100 * (cell.error - baseline.error):+.2f}"
            )
            rows.append(
                (
                    cell.policy.label,
                    f"{cell.fraction:g}",
                    f"{cell.rows:,.0f}",
                    cell.n,
                    _percent(cell.error, cell.error_std),
                    _percent(cell.top1, cell.top1_std),
                    _percent(cell.top5, cell.top5_std),
                    delta,
                )
            )
        header = ("policy", "fraction", "rows", "n", "test error %", "top-1 %", "top-5 %", "Δ random")
        lines += _table(header, rows)
        lines += ["Top-1 % (mean ± std over seeds) by fraction kept:", "", *_accuracy_grid(cells)]
    return lines


def easy_hard_pairs(cells: Sequence[Cell]) -> list[tuple[Cell, Cell]]:
    """(keep easy, keep hard) cells of the same metric, balancing, fraction, setting and starting size."""
    easy = {
        (c.setting, c.start_size, c.policy.metric, c.policy.balanced, c.fraction): c
        for c in cells
        if c.policy.keep == "easy"
    }
    pairs = []
    for cell in cells:
        key = (cell.setting, cell.start_size, cell.policy.metric, cell.policy.balanced, cell.fraction)
        if cell.policy.keep == "hard" and key in easy:
            pairs.append((easy[key], cell))
    return sorted(
        pairs, key=lambda pair: (pair[1].setting, pair[1].policy.metric, pair[1].start_size, -pair[1].fraction)
    )


def _easy_or_hard_section(report: Report) -> list[str]:
    """The paper's first prediction: keep easy when data is scarce, keep hard when it is abundant."""
    pairs = easy_hard_pairs(report.cells)
    if not pairs:
        return []
    lines = _heading(
        "Keep easy or keep hard?",
        "The paper predicts keep easy wins from small starting sets and keep hard from large ones. "
        "Top-1 % (mean ± std over seeds); the difference is easy minus hard, in points.",
    )
    rows = [
        (
            easy.setting,
            easy.policy.metric + (" + balance" if easy.policy.balanced else ""),
            f"{easy.start_size:,}",
            f"{easy.fraction:g}",
            _grid_value(easy),
            _grid_value(hard),
            f"{100 * (easy.top1 - hard.top1):+.2f}",
            "easy" if easy.top1 > hard.top1 else "hard" if hard.top1 > easy.top1 else "tie",
        )
        for easy, hard in pairs
    ]
    header = ("setting", "score", "start size", "fraction", "keep easy", "keep hard", "easy − hard", "better")
    return lines + _table(header, rows)


def _grid_value(cell: Cell) -> str:
    return _percent(cell.top1, cell.top1_std if cell.n > 1 else None)


def _accuracy_grid(cells: Sequence[Cell]) -> list[str]:
    """One row per policy, one column per fraction kept (largest first): the results table at a glance."""
    fractions = sorted({cell.fraction for cell in cells}, reverse=True)
    by_policy: dict[Policy, dict[float, Cell]] = defaultdict(dict)
    for cell in cells:
        by_policy[cell.policy][cell.fraction] = cell
    order = sorted(by_policy, key=lambda policy: (not policy.is_reference, not policy.is_random, policy))
    rows = [
        (
            policy.label,
            *(_grid_value(by_policy[policy][f]) if f in by_policy[policy] else "" for f in fractions),
        )
        for policy in order
    ]
    return _table(("policy", *(f"{f:g}" for f in fractions)), rows)


def _size_section(report: Report) -> list[str]:
    lines = [f"## Test error against pruned dataset size (`{SIZE_FIGURE}`)", ""]
    if not report.size_curves:
        sizes = sorted({run.start_size for run in report.runs})
        return [
            *lines,
            f"Not drawn: every policy and fraction starts from one size ({', '.join(f'{s:,}' for s in sizes)} "
            "examples). Sweep several starting sizes (`datadiet ingest --per-class N`, or `datadiet prune --keep random --count N` first) to see "
            "how test error scales with data.",
            "",
        ]
    lines += [
        "Fits by least squares on log error: power law error = a·P^(−ν), exponential error = a·exp(−b·P). "
        "rms = root-mean-square residual of ln(error); the smaller one fits better. With 2 sizes both fits are exact.",
        "",
    ]
    rows = []
    for curve in report.size_curves:
        power, exponential = curve.power, curve.exponential
        better = "-"
        if power and exponential and power.points > 2:
            better = "power" if power.rms_log < exponential.rms_log else "exponential"
        rows.append(
            (
                curve.setting,
                curve.policy.label,
                f"{curve.fraction:g}",
                ", ".join(f"{cell.rows:,.0f}" for cell in curve.cells),
                ", ".join(_percent(cell.error) for cell in curve.cells),
                f"{power.a:.3g}, {power.exponent:.3f}, {power.rms_log:.3f}" if power else "-",
                f"{exponential.a:.3g}, {exponential.exponent:.3g}, {exponential.rms_log:.3f}" if exponential else "-",
                better,
            )
        )
    header = ("setting", "policy", "f", "sizes P", "test error %", "power a, ν, rms", "exp a, b, rms", "better")
    return lines + _table(header, rows)


def _correlation_section(report: Report) -> list[str]:
    if report.correlation is None:
        return []
    names, rho, rows = report.correlation
    lines = _heading(
        f"Spearman rank correlation between scores (`{CORRELATION_FIGURE}`)",
        f"On the {rows:,} examples every manifest holds; order from average-linkage clustering on 1 − ρ.",
    )
    table_rows = [(name, *(f"{value:.3f}" for value in rho[i])) for i, name in enumerate(names)]
    return lines + _table(("", *names), table_rows)


def _cluster_section(report: Report) -> list[str]:
    if not report.cluster_overlaps:
        return []
    lines = _heading(
        f"k-means clusters against classes (`{CLUSTER_FIGURE}`)",
        "Purity: share of examples in their cluster's majority class. Adjusted Rand index: 0 = chance, 1 = the classes.",
    )
    rows = [
        (f"`{overlap.manifest}`", overlap.counts.shape[0], f"{overlap.purity:.3f}", f"{overlap.adjusted_rand:.3f}")
        for overlap in report.cluster_overlaps
    ]
    return lines + _table(("manifest", "clusters", "purity", "adjusted Rand"), rows) + [""]


def _balance_section(report: Report, config: ReportConfig) -> list[str]:
    if not report.balance_curves:
        return []
    lines = _heading(
        f"Class balance against fraction kept (`{BALANCE_FIGURE}`)",
        "b = expected min/max size ratio of two random classes (1 = balanced). 'balanced' = after `datadiet balance "
        f"--min-ratio {config.min_ratio:g}`.",
    )
    fractions = report.balance_curves[0].fractions
    rows = []
    for curve in report.balance_curves:
        label = curve.score if curve.keep == "random" else f"{curve.score}, keep {curve.keep}"
        rows.append((label, "pruned", *(f"{b:.3f}" for b in curve.pruned)))
        rows.append((label, "balanced", *(f"{b:.3f}" for b in curve.balanced)))
    return lines + _table(("score", "", *(f"f={f:g}" for f in fractions)), rows)


def _extremes_section(report: Report) -> list[str]:
    if not report.extremes:
        return []
    lines = ["## Easiest and hardest examples per class", ""]
    for extremes in report.extremes:
        lines += [f"### {extremes.score} (`{extremes.file}`)", ""]
        rows = [
            (name, ", ".join(easy), ", ".join(hard))
            for name, easy, hard in zip(extremes.classes, extremes.easiest, extremes.hardest, strict=True)
        ]
        lines += _table(("class", "easiest ids (easiest first)", "hardest ids (hardest first)"), rows)
    return lines


def _by_panel(cells: Sequence[Cell]) -> dict[tuple[str, int], list[Cell]]:
    panels: dict[tuple[str, int], list[Cell]] = defaultdict(list)
    for cell in cells:
        panels[(cell.setting, cell.start_size)].append(cell)
    return dict(sorted(panels.items()))


# -- figures ------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _policy_style(policy: Policy, colors: Mapping[str, Any]) -> dict[str, Any]:
    if policy.is_reference:
        return {"color": "black", "marker": "*", "linestyle": "none", "markersize": 11}
    if policy.is_random:
        return {"color": "black", "marker": "s", "linestyle": "--"}
    linestyle = {"hard": "-", "easy": ":"}.get(policy.keep, "-.")
    style = {"color": colors[policy.metric], "marker": "o", "linestyle": linestyle}
    if policy.balanced:
        style |= {"marker": "^", "markerfacecolor": "white"}
    return style


def _metric_colors(metrics: Iterable[str]) -> dict[str, Any]:
    plt = _pyplot()
    palette = plt.get_cmap("tab10").colors
    names = sorted(set(metrics))
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def plot_error_vs_fraction(cells: Sequence[Cell], path: Path) -> None:
    """Fig. 5B/C: test error against fraction kept; one curve per policy, unpruned runs closing every curve."""
    plt = _pyplot()
    panels = _by_panel(cells)
    colors = _metric_colors(
        cell.policy.metric for cell in cells if not (cell.policy.is_random or cell.policy.is_reference)
    )
    figure, axes = _panel_grid(plt, len(panels))
    for axis, ((setting, start_size), panel) in zip(axes, panels.items(), strict=False):
        reference = [cell for cell in panel if cell.policy.is_reference]
        policies = sorted({cell.policy for cell in panel if not cell.policy.is_reference})
        for policy in policies:
            points = sorted((c for c in panel if c.policy == policy), key=lambda c: c.fraction)
            if reference and points[-1].fraction < 1.0:
                points.append(reference[0])  # pruning nothing is the same run for every metric
            _errorbar(axis, points, policy.label, _policy_style(policy, colors))
        for cell in reference:
            _errorbar(axis, [cell], "unpruned", _policy_style(cell.policy, colors))
        axis.set_xlabel("fraction of training data kept")
        axis.set_ylabel("test error (%)")
        axis.set_title(f"{setting}\nstarting from {start_size:,} examples", fontsize=10)
        axis.set_xlim(0, 1.05)
        axis.set_ylim(bottom=0)  # an error axis that starts at 0 does not exaggerate small differences
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Test error vs. fraction of data kept (mean ± std over seeds)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _panel_grid(plt: Any, count: int) -> tuple[Any, list[Any]]:
    """A figure with `count` panels, at most 3 per row; the unused ones hidden."""
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.8 * rows), squeeze=False)
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat)[:count]


def _errorbar(axis: Any, cells: Sequence[Cell], label: str, style: Mapping[str, Any], x: str = "fraction") -> None:
    xs = [cell.fraction if x == "fraction" else cell.rows for cell in cells]
    ys = [100 * cell.error for cell in cells]
    spread = [0.0 if math.isnan(cell.error_std) else 100 * cell.error_std for cell in cells]
    axis.errorbar(xs, ys, yerr=spread, label=label, capsize=3, **style)


def plot_error_vs_size(curves: Sequence[SizeCurve], path: Path) -> None:
    """Fig. 3/11: test error against pruned size on log axes, per policy; colour = fraction kept, with fits."""
    plt = _pyplot()
    panels: dict[tuple[str, Policy], list[SizeCurve]] = defaultdict(list)
    for curve in curves:
        panels[(curve.setting, curve.policy)].append(curve)
    references = {curve.setting: curve for curve in curves if curve.policy.is_reference}
    keys = [key for key in sorted(panels) if not key[1].is_reference] or sorted(panels)
    figure, axes = _panel_grid(plt, len(keys))
    fractions = sorted({curve.fraction for curve in curves if not curve.policy.is_reference})
    cmap = plt.get_cmap("viridis")
    for axis, key in zip(axes, keys, strict=True):
        shown = list(panels[key])
        if key[0] in references and not key[1].is_reference:
            shown.append(references[key[0]])
        for curve in shown:
            if curve.policy.is_reference:
                color, label = "black", "unpruned (f=1)"
            else:
                position = fractions.index(curve.fraction) / max(1, len(fractions) - 1)
                color, label = cmap(0.85 * position), f"f={curve.fraction:g}"
            if curve.power is not None and curve.exponential is not None:
                label += f": ν={curve.power.exponent:.2f}, b={curve.exponential.exponent:.2g}"
            _errorbar(axis, curve.cells, label, {"color": color, "marker": "o", "linestyle": "none"}, x="rows")
            sizes = np.geomspace(curve.cells[0].rows, curve.cells[-1].rows, 50)
            for fit, linestyle in ((curve.power, "-"), (curve.exponential, "--")):
                if fit is not None:
                    axis.plot(sizes, 100 * fit.predict(sizes), color=color, linestyle=linestyle, linewidth=1)
        axis.set_xscale("log")
        axis.set_yscale("log")
        _plain_log_ticks(axis.yaxis)
        axis.set_xlabel("pruned training set size P (examples)")
        axis.set_ylabel("test error (%)")
        axis.set_title(f"{key[1].label}\n{key[0]}", fontsize=10)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    figure.suptitle(
        "Test error vs. pruned dataset size (mean ± std over seeds), per fraction kept f: "
        "power law a·P^-ν (solid), exponential a·e^-bP (dashed)",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis ticks at 1, 2, 5 x 10^k written as plain numbers (3, 20, 50) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_score_correlation(names: Sequence[str], rho: np.ndarray, rows: int, path: Path) -> None:
    """Fig. 5A: Spearman rank correlation between score columns, in clustered order."""
    plt = _pyplot()
    size = max(4.5, 0.7 * len(names) + 2.5)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(rho, cmap="RdBu_r", vmin=-1, vmax=1)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            value = rho[i, j]
            text = "nan" if math.isnan(value) else f"{value:.2f}"
            axis.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if abs(value) > 0.6 else "black")
    figure.colorbar(image, ax=axis, label="Spearman ρ")
    axis.set_title(f"Spearman rank correlation of scores\n({rows:,} examples, clustered order)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def plot_cluster_classes(overlaps: Sequence[ClusterOverlap], path: Path) -> None:
    """Fig. 6A: share of each cluster's examples in each class; clusters sorted by their majority class."""
    plt = _pyplot()
    width = max(5.0, 0.45 * max(len(o.classes) for o in overlaps) + 2.5)
    height = max(4.0, 0.3 * max(o.counts.shape[0] for o in overlaps) + 2.0)
    figure, axes = plt.subplots(1, len(overlaps), figsize=(width * len(overlaps), height), squeeze=False)
    for axis, overlap in zip(axes[0], overlaps, strict=True):
        sizes = overlap.counts.sum(axis=1, keepdims=True)
        shares = overlap.counts / np.maximum(sizes, 1)
        order = np.lexsort((-shares.max(axis=1), shares.argmax(axis=1)))
        image = axis.imshow(shares[order], cmap="viridis", vmin=0, vmax=1, aspect="auto")
        axis.set_xticks(range(len(overlap.classes)), overlap.classes, rotation=45, ha="right")
        axis.set_yticks(range(len(order)), [f"{sizes[i, 0]:,}" for i in order], fontsize=7)
        axis.set_xlabel("class")
        axis.set_ylabel("cluster (its size), sorted by majority class")
        axis.set_title(
            f"{Path(overlap.manifest).name}: purity {overlap.purity:.2f}, ARI {overlap.adjusted_rand:.2f}", fontsize=10
        )
        figure.colorbar(image, ax=axis, label="share of the cluster's examples")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def plot_class_balance(curves: Sequence[BalanceCurve], min_ratio: float, path: Path) -> None:
    """Fig. 20: class balance b against fraction kept for each score, pruned (solid) and balanced (dashed)."""
    plt = _pyplot()
    policies = [keep for keep in ("hard", "easy") if any(curve.keep == keep for curve in curves)]
    colors = _metric_colors(curve.score for curve in curves if curve.keep != "random")
    figure, axes = plt.subplots(1, len(policies), figsize=(6.4 * len(policies), 4.8), squeeze=False)
    for axis, keep in zip(axes[0], policies, strict=True):
        for curve in curves:
            if curve.keep not in (keep, "random"):
                continue
            color = "black" if curve.keep == "random" else colors[curve.score]
            name = curve.score
            axis.plot(curve.fractions, curve.pruned, color=color, marker="o", markersize=3, label=f"{name}, pruned")
            axis.plot(curve.fractions, curve.balanced, color=color, linestyle="--", marker="^", markersize=3,
                      markerfacecolor="white", label=f"{name}, + balance")  # fmt: skip
        axis.set_xlabel("fraction of training data kept")
        axis.set_ylabel("class balance b (E[min/max class size])")
        axis.set_title(f"keep {keep}", fontsize=10)
        axis.set_xlim(0, 1.02)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    figure.suptitle(f"Class balance of pruned sets, without and with balance --min-ratio {min_ratio:g}", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def plot_extremes(
    score: str,
    class_names: Sequence[str],
    thumbnails: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]],
    per_side: int,
    path: Path,
) -> None:
    """Fig. 6B/C: one row per class running from easy to hard: its easiest images, a gap, its hardest."""
    plt = _pyplot()
    height, width = next(images[0].shape[:2] for side in thumbnails for images in side if images)
    border = max(1, width // 16)
    gap = max(2, width // 2)
    cell_w, cell_h = width + border, height + border
    mosaic_w = 2 * per_side * cell_w + gap + border
    mosaic_h = len(thumbnails) * cell_h + border
    mosaic = np.full((mosaic_h, mosaic_w, 3), 255, dtype=np.uint8)
    for row, (easy, hard) in enumerate(thumbnails):
        top = row * cell_h + border
        # Hardest last, so each row reads from the easiest (far left) to the hardest (far right).
        hard_left = per_side * cell_w + gap + (per_side - len(hard)) * cell_w
        placed = [(column * cell_w, image) for column, image in enumerate(easy)]
        placed += [(hard_left + column * cell_w, image) for column, image in enumerate(reversed(hard))]
        for left, image in placed:
            mosaic[top : top + height, left + border : left + border + width] = image
    width_in = float(np.clip(mosaic_w / 50, 7.0, 14.0))
    figure, axis = plt.subplots(figsize=(width_in + 1.0, width_in * mosaic_h / mosaic_w + 1.2))
    axis.imshow(mosaic, interpolation="nearest")
    axis.set_yticks([row * cell_h + border + height / 2 for row in range(len(thumbnails))], class_names)
    axis.set_xticks(
        [per_side * cell_w / 2, per_side * cell_w + gap + per_side * cell_w / 2],
        [f"{per_side} easiest (easiest at far left)", f"{per_side} hardest (hardest at far right)"],
    )
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    axis.set_title(f"{score}: easiest and hardest examples per class (lowest and highest score)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
