"""`datadiet prune`: keep a fraction of a dataset, ranked by a difficulty score.

Sorscher et al. (2022), §3: when data is abundant keep the *hard* examples, when it is
scarce keep the *easy* ones; `window` keeps a band of ranks (their optimal-window policy).
Everything here is pure: arrays in, arrays out. Scores are oriented higher = harder.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from datadiet_cli.data import seeds
from datadiet_cli.errors import OptionError
from datadiet_cli.io.lineage import LineageStep
from datadiet_cli.io.manifest import Manifest


class Keep(str, enum.Enum):
    hard = "hard"
    easy = "easy"
    random = "random"
    window = "window"


@dataclass(frozen=True)
class PruneConfig:
    keep: Keep  # hard when data is abundant, easy when scarce (the paper's Fig. 1); no default on purpose
    score: str | None = None  # score column (higher = harder); unused by keep=random
    fraction: float | None = None  # fraction of rows to keep, in (0, 1]; exactly one of fraction/count
    count: int | None = None  # number of rows to keep, 1..N
    window_start: float = 0.0  # keep=window: quantile of the easy->hard ranking where the kept band starts
    seed: int = 0  # breaks score ties and draws keep=random; same seed, same subset


def keep_count(n_rows: int, fraction: float | None, count: int | None) -> int:
    """How many rows to keep: round(fraction * n) (halves round up) or count, validated."""
    if (fraction is None) == (count is None):
        raise OptionError("give exactly one of --fraction or --count")
    if fraction is not None:
        if not (0.0 < fraction <= 1.0) or math.isnan(fraction):
            raise OptionError(f"--fraction {fraction} is outside (0, 1]; e.g. --fraction 0.3 keeps 30%")
        # Exact decimal arithmetic: in floats 0.285 * 100 is 28.4999..., which would round the half down.
        kept = math.floor(decimal_fraction(fraction) * n_rows + Fraction(1, 2))
        if kept == 0:
            raise OptionError(f"--fraction {fraction} of {n_rows} rows keeps 0 rows; use at least {1 / n_rows:.3g}")
        return kept
    assert count is not None
    if count < 1:
        raise OptionError(f"--count {count} must be at least 1")
    if count > n_rows:
        raise OptionError(f"--count {count} is larger than the manifest ({n_rows} rows)")
    return count


def decimal_fraction(value: float) -> Fraction:
    """The decimal number the user typed (0.3 -> 3/10), not its nearest binary float."""
    return Fraction(str(float(value)))


def rank_easy_to_hard(scores: np.ndarray, seed: int) -> np.ndarray:
    """Indices from easiest (lowest score) to hardest; equal scores in a seeded random order."""
    # Shuffle, then sort stably: tied rows keep their shuffled order. Same result as a lexsort
    # with a random tie-break key, at half the cost (one sort instead of two).
    shuffled = seeds.rng(seed).permutation(len(scores))
    return shuffled[np.argsort(scores[shuffled], kind="stable")]


def selection_priority(scores: np.ndarray, config: PruneConfig, n_rows: int, n_keep: int) -> np.ndarray:
    """A float per row, higher = more wanted by the policy; keeping the top n_keep is the prune.

    `balance` reuses it, so rows it adds (or drops) are the next best (or worst) under the
    very policy that `prune` applied.
    """
    if config.keep is Keep.random:
        return seeds.rng(config.seed).permutation(n_rows).astype(np.float64)
    rank = np.empty(n_rows, dtype=np.float64)
    rank[rank_easy_to_hard(scores, config.seed)] = np.arange(n_rows)  # 0 = easiest
    if config.keep is Keep.hard:
        return rank
    if config.keep is Keep.easy:
        return -rank
    start = window_start_rank(n_rows, n_keep, config.window_start)
    # Twice the distance to the band's centre, an exact integer; equidistant ranks favour the easier side.
    # Integer arithmetic keeps every priority distinct (exact in float64 up to ~60M rows), so the
    # next-best rows that `balance` adds are well defined, not float round-off.
    twice_distance = np.abs(2 * rank - (2 * start + n_keep - 1))
    return -(twice_distance * n_rows + rank)


def window_start_rank(n_rows: int, n_keep: int, window_start: float) -> int:
    if not 0.0 <= window_start < 1.0:
        raise OptionError(f"--window-start {window_start} is outside [0, 1)")
    start = math.floor(decimal_fraction(window_start) * n_rows)  # 0.29 * 100 is 28.999... in floats
    if start + n_keep > n_rows:
        highest = (n_rows - n_keep) / n_rows
        raise OptionError(
            f"--window-start {window_start} with {n_keep} rows kept runs past the hardest example; "
            f"use --window-start {math.floor(highest * 1000) / 1000} or lower"
        )
    return start


def select(scores: np.ndarray, config: PruneConfig) -> np.ndarray:
    """Indices of the kept rows, ascending (the output keeps the input's row order).

    With keep=random only the length of `scores` is used.
    """
    n_rows = len(scores)
    n_keep = keep_count(n_rows, config.fraction, config.count)
    priority = selection_priority(scores, config, n_rows, n_keep)
    if n_keep == n_rows:
        return np.arange(n_rows)
    # argpartition picks the top n_keep in O(n); priorities are distinct, so the set is unique.
    return np.sort(np.argpartition(-priority, n_keep - 1)[:n_keep])


def policy_scores(manifest: Manifest, config: PruneConfig) -> np.ndarray:
    """The validated score column the policy ranks by (zeros for keep=random without --score)."""
    if config.score is None:
        if config.keep is not Keep.random:
            raise OptionError(f"--keep {config.keep.value} needs --score COLUMN (only --keep random does not)")
        return np.zeros(manifest.num_rows)
    return manifest.score(config.score)


def prune_manifest(manifest: Manifest, config: PruneConfig) -> Manifest:
    """Apply `select` to a manifest and record the policy and sizes in its lineage."""
    kept = select(policy_scores(manifest, config), config)
    stats = {
        "rows_in": manifest.num_rows,
        "rows_kept": len(kept),
        "fraction_kept": len(kept) / manifest.num_rows,
        "full_size": full_size(manifest),
    }
    inputs = [manifest.source] if manifest.source is not None else []
    return manifest.take(kept).with_lineage(LineageStep("prune", config, inputs, stats))


def full_size(manifest: Manifest) -> int:
    """Rows of the full dataset before any pruning: the input size of the first `prune` in the lineage."""
    return manifest.lineage().full_size(manifest.num_rows)
