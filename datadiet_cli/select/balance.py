"""`datadiet balance`: give every class at least a fair share of a pruned dataset.

Sorscher et al. (2022), App. H: pruning by difficulty can starve whole classes (keep=hard
drops the easy ones first). They guarantee each class at least 50% of its fair share and
measure balance with b, the expected min/max size ratio of two random classes. The pure
core (`balance_indices`, `balance_score`) takes arrays; `balance_manifest` glues it to
manifests. Rows added and dropped follow the very ranking that `prune` used.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from datadiet_cli.data import seeds
from datadiet_cli.errors import LineageError, ManifestError, OptionError
from datadiet_cli.io.lineage import LineageStep, Step
from datadiet_cli.io.manifest import Manifest
from datadiet_cli.select.prune import Keep, PruneConfig, decimal_fraction, keep_count, policy_scores, selection_priority

INT64_LIMIT = 2**63


class Group(str, enum.Enum):
    label = "label"
    cluster = "cluster"


@dataclass(frozen=True)
class BalanceConfig:
    min_ratio: float = 0.5  # each group keeps >= ceil(min_ratio * f * n_c) rows: the paper's "50% of its fair share"
    by: Group = Group.label  # balance classes (label), or k-means clusters (cluster) for unlabeled data


@dataclass(frozen=True)
class Balanced:
    """What `balance` decided: the kept rows and the per-group sizes behind its stats."""

    indices: np.ndarray  # kept rows after balancing, indices into the full dataset, ascending
    group_sizes: np.ndarray  # n_c: rows of each group in the full dataset
    kept_before: np.ndarray  # rows of each group kept by the prune
    kept_after: np.ndarray  # rows of each group kept after balancing
    floors: np.ndarray  # the minimum each group was guaranteed


def group_floors(group_sizes: np.ndarray, n_kept: int, n_rows: int, min_ratio: float) -> np.ndarray:
    """floor_c = min(n_c, ceil(min_ratio * f * n_c)) with f = n_kept / n_rows, in exact arithmetic.

    In floats 0.9 * (20 / 50) * 25 is 9.000000000000002, whose ceiling would be 10 instead of 9.
    """
    sizes = np.asarray(group_sizes, dtype=np.int64)
    ratio = decimal_fraction(min_ratio)
    numerator, denominator = ratio.numerator * n_kept, ratio.denominator * n_rows
    if sizes.size == 0:
        return sizes.copy()
    if max(numerator * int(sizes.max()), denominator) < INT64_LIMIT:
        needed = -((-numerator * sizes) // denominator)  # ceiling division
    else:  # a min_ratio with many decimals on a big dataset: Python integers cannot overflow
        needed = np.array([-((-numerator * int(size)) // denominator) for size in sizes], dtype=np.int64)
    return np.minimum(sizes, needed)


def balance(groups_full: np.ndarray, kept_mask: np.ndarray, priority: np.ndarray, min_ratio: float) -> Balanced:
    """`balance_indices` plus the group sizes it worked out (for stats)."""
    groups_full = np.asarray(groups_full)
    kept = np.asarray(kept_mask, dtype=bool)
    priority = np.asarray(priority, dtype=np.float64)
    if not (len(groups_full) == len(kept) == len(priority)):
        raise ValueError(
            f"lengths differ: {len(groups_full)} groups, {len(kept)} kept flags, {len(priority)} priorities"
        )
    n_rows = len(groups_full)
    group_of = dense_group_numbers(groups_full)
    group_sizes = np.bincount(group_of)
    n_groups = len(group_sizes)
    kept_before = np.bincount(group_of[kept], minlength=n_groups)
    n_kept = int(kept_before.sum())
    floors = group_floors(group_sizes, n_kept, n_rows, min_ratio)
    deficit = np.maximum(floors - kept_before, 0)
    surplus = np.maximum(kept_before - floors, 0)
    # The total stays n_kept unless the floors alone need more rows; then every group ends at its floor.
    target = max(n_kept, int(floors.sum()))
    n_drop = n_kept + int(deficit.sum()) - target

    # One sort instead of a loop over groups: within each group, the unkept rows best-first,
    # then the kept rows best-first. Deficit rows are a group's first positions (its best
    # unkept; deficit <= unkept since floor <= n_c); droppable rows are its last `surplus`
    # positions (its worst kept; surplus <= kept).
    # = np.lexsort((-priority, kept, group_of)), but sorting a small unsigned key stably is faster.
    best_first = np.argsort(-priority, kind="stable")
    segment = (group_of * 2 + kept).astype(np.min_scalar_type(2 * n_groups))
    order = best_first[np.argsort(segment[best_first], kind="stable")]
    sorted_group = group_of[order]
    group_starts = np.cumsum(group_sizes) - group_sizes
    position = np.arange(n_rows) - group_starts[sorted_group]
    added = order[position < deficit[sorted_group]]
    droppable = order[position >= (group_sizes - surplus)[sorted_group]]
    # Greedy "globally worst first, never below a floor" = the n_drop lowest among each group's worst `surplus`.
    dropped = droppable[np.argsort(priority[droppable], kind="stable")[:n_drop]]

    balanced = kept.copy()
    balanced[added] = True
    balanced[dropped] = False
    indices = np.flatnonzero(balanced)
    kept_after = np.bincount(group_of[indices], minlength=n_groups)
    return Balanced(indices, group_sizes, kept_before, kept_after, floors)


def dense_group_numbers(groups: np.ndarray) -> np.ndarray:
    """Group ids -> 0..G-1 in ascending id order (np.unique's inverse; O(N) for small non-negative ids)."""
    groups = np.asarray(groups)
    if (
        groups.size
        and np.issubdtype(groups.dtype, np.integer)
        and groups.min() >= 0
        and groups.max() <= 4 * groups.size
    ):
        present = np.bincount(groups) > 0
        return (np.cumsum(present) - 1)[groups]
    return np.unique(groups, return_inverse=True)[1].reshape(-1)


def balance_indices(
    groups_full: np.ndarray, kept_mask: np.ndarray, priority: np.ndarray, min_ratio: float
) -> np.ndarray:
    """Rows of the full dataset to keep so that every group c has >= min(n_c, ceil(min_ratio * f * n_c)).

    `groups_full`: group of each full-dataset row; `kept_mask`: rows the prune kept (f is their
    fraction); `priority`: higher = more wanted by the pruning policy. Groups below their floor
    get their highest-priority unkept rows; to keep the total size, the globally lowest-priority
    kept rows of groups above their floor are dropped (never taking a group below its floor).
    The total grows only when the floors alone add up to more than the kept rows. Ascending indices.
    """
    return balance(groups_full, kept_mask, priority, min_ratio).indices


def balance_score(sizes: np.ndarray) -> float:
    """The paper's class-balance score b: E[min/max size] over two distinct random groups (0/0 = 1).

    In O(G log G): with sizes sorted ascending, sum_{i<j} s_i / s_j = sum_j (s_0 + ... + s_{j-1}) / s_j.
    """
    ordered = np.sort(np.asarray(sizes, dtype=np.int64))
    n_groups = len(ordered)
    if n_groups < 2:
        return 1.0  # nothing to be unequal to
    smaller_sums = np.cumsum(ordered) - ordered
    nonzero = ordered > 0
    # Zero sizes sort first, so a zero at position j pairs only with the j zeros before it: j pairs of 0/0 = 1.
    ratio_sum = float(np.sum(smaller_sums[nonzero] / ordered[nonzero])) + float(np.sum(np.flatnonzero(~nonzero)))
    return ratio_sum / (n_groups * (n_groups - 1) / 2)


# -- manifests ----------------------------------------------------------------------------


def last_prune_step(pruned: Manifest) -> Step:
    step = pruned.lineage().last("prune")
    if step is None:
        raise LineageError(
            f"{pruned.name}: has no `prune` step in its lineage; pass a manifest written by `datadiet prune`"
        )
    return step


def recorded_prune_config(pruned: Manifest) -> PruneConfig:
    """The PruneConfig of PRUNED's last prune, rebuilt from its lineage options."""
    options = dict(last_prune_step(pruned).options)
    known = {f.name for f in dataclasses.fields(PruneConfig)}
    values = {key: value for key, value in options.items() if key in known}
    try:
        values["keep"] = Keep(values.get("keep"))
        config = PruneConfig(**values)
    except (ValueError, TypeError):
        config = None
    if config is None or not _plausible(config):
        raise LineageError(
            f"{pruned.name}: its `prune` lineage entry has unreadable options {_clipped(options)}; pass a manifest "
            "written by `datadiet prune`"
        )
    return config


def _plausible(config: PruneConfig) -> bool:
    """Whether recorded prune options have the types `prune` writes (a hand-edited lineage may not)."""

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    return (
        (config.score is None or isinstance(config.score, str))
        and (config.fraction is None or number(config.fraction))
        and (config.count is None or (isinstance(config.count, int) and not isinstance(config.count, bool)))
        and number(config.window_start)
        and isinstance(config.seed, int)
        and not isinstance(config.seed, bool)
        and 0 <= config.seed <= seeds.SEED_MAX
    )


def _clipped(options: Mapping[str, Any], limit: int = 200) -> str:
    text = str(dict(options))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def recorded_full_path(pruned: Manifest) -> Path:
    """The file PRUNED's last prune read, checked to be unchanged (same sha256)."""
    inputs = last_prune_step(pruned).inputs
    if not inputs:
        raise LineageError(
            f"{pruned.name}: its `prune` step recorded no input file; pass the full manifest with --full"
        )
    return inputs[0].verified(f"the manifest {pruned.name} was pruned from", "pass the full manifest with --full")


def kept_mask(pruned: Manifest, full: Manifest) -> np.ndarray:
    """Which rows of FULL are in PRUNED (matched by id), refusing ids that FULL lacks."""
    pruned_ids = pruned.table.column("id").combine_chunks()
    rows_in_full = pc.index_in(pruned_ids, value_set=full.table.column("id").combine_chunks())
    if rows_in_full.null_count:
        missing = pc.filter(pruned_ids, pc.is_null(rows_in_full))
        raise ManifestError(
            f"{pruned.name}: id '{missing[0].as_py()}' ({len(missing)} of {len(pruned_ids)} ids) is not in "
            f"{full.name}; pass the manifest it was pruned from with --full"
        )
    mask = np.zeros(full.num_rows, dtype=bool)
    mask[rows_in_full.to_numpy()] = True
    return mask


def balance_manifest(pruned: Manifest, full: Manifest, config: BalanceConfig) -> Manifest:
    """FULL's rows kept after balancing PRUNED, in FULL's order; PRUNED's metadata plus a `balance` step."""
    if not 0.0 <= config.min_ratio <= 1.0:
        raise OptionError(f"--min-ratio {config.min_ratio} is outside [0, 1]; the paper uses 0.5")
    step = last_prune_step(pruned)
    prune_config = recorded_prune_config(pruned)
    groups = full.groups(Group(config.by).value)
    kept = kept_mask(pruned, full)
    # The band of keep=window depends on how many rows the prune kept; use the count it recorded.
    n_keep = int(step.stats.get("rows_kept") or keep_count(full.num_rows, prune_config.fraction, prune_config.count))
    priority = selection_priority(policy_scores(full, prune_config), prune_config, full.num_rows, n_keep)
    result = balance(groups, kept, priority, config.min_ratio)

    stats = balance_stats(result, n_kept=int(kept.sum()), n_full=full.num_rows, by=Group(config.by))
    table = full.table.take(result.indices)
    meta = copy.deepcopy(pruned.meta)
    meta["scores"] = _described_scores(table.column_names, full.meta, pruned.meta)
    inputs = [m.source for m in (pruned, full) if m.source is not None]
    return Manifest(table=table, meta=meta).with_lineage(LineageStep("balance", config, inputs, stats))


def balance_stats(result: Balanced, n_kept: int, n_full: int, by: Group) -> dict[str, Any]:
    rows_out = len(result.indices)
    added = np.maximum(result.kept_after - result.kept_before, 0).sum()
    dropped = np.maximum(result.kept_before - result.kept_after, 0).sum()
    return {
        "by": by.value,
        "groups": len(result.group_sizes),
        "rows_full": n_full,
        "rows_in": n_kept,
        "rows_out": rows_out,
        "rows_added": int(added),
        "rows_dropped": int(dropped),
        "floors_total": int(result.floors.sum()),
        # > 0 only when the floors alone need more rows than the prune kept (min-ratio near 1).
        "rows_grown": rows_out - n_kept,
        "b_before": balance_score(result.kept_before),
        "b_after": balance_score(result.kept_after),
        "min_group_before": int(result.kept_before.min()),
        "max_group_before": int(result.kept_before.max()),
        "min_group_after": int(result.kept_after.min()),
        "max_group_after": int(result.kept_after.max()),
    }


def _described_scores(columns: list[str], *metas: Mapping[str, Any]) -> dict[str, Any]:
    """Score descriptions for the columns the output has (later documents win)."""
    described: dict[str, Any] = {}
    for meta in metas:
        described.update(meta.get("scores") or {})
    return {column: description for column, description in described.items() if column in columns}
