"""`datadiet balance`: floors per group, the prune's own ranking for added/dropped rows, b, errors."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.io.manifest import Manifest, new_manifest, read_manifest, write_manifest
from datadiet_cli.select.balance import (
    BalanceConfig,
    Group,
    balance,
    balance_indices,
    balance_manifest,
    balance_score,
    dense_group_numbers,
)
from datadiet_cli.select.prune import Keep, PruneConfig, keep_count, prune_manifest, select, selection_priority

runner = CliRunner()

# Two classes: 0 has six hard rows, 1 has four easy ones (keep=hard starves class 1 entirely).
TWO_LABELS = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
TWO_SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.1, 0.4, 0.2, 0.3]
# Four classes of 5, 4, 3, 4 rows; the top 8 scores (>= 0.60) keep 4, 3, 0, 1 of them.
FOUR_LABELS = [0] * 5 + [1] * 4 + [2] * 3 + [3] * 4
FOUR_SCORES = [0.99, 0.97, 0.93, 0.70, 0.30, 0.95, 0.90, 0.62, 0.20, 0.50, 0.10, 0.40, 0.60, 0.55, 0.05, 0.15]


def toy(labels: list[int | None] | None, scores: list[float], cluster: list[int | None] | None = None) -> Manifest:
    n = len(scores)
    extra: dict[str, object] = {"note": [f"n{i}" for i in range(n)]}
    if cluster is not None:
        extra["cluster"] = cluster
    manifest = new_manifest([f"r{i}" for i in range(n)], labels, {"kind": "builtin", "name": "toy"}, extra)
    return manifest.with_score("s", np.array(scores), metric="toy", params={})


def ids(indices: list[int]) -> list[str]:
    return [f"r{i}" for i in sorted(indices)]


def row_ids(manifest: Manifest) -> list[str]:
    return manifest.table.column("id").to_pylist()


def prune_files(tmp_path: Path, full: Manifest, config: PruneConfig) -> tuple[Path, Path]:
    """Write FULL, prune it from the file (so the lineage records it), write PRUNED."""
    full_path = write_manifest(full, tmp_path / "full.parquet")
    pruned_path = write_manifest(prune_manifest(read_manifest(full_path), config), tmp_path / "pruned.parquet")
    return full_path, pruned_path


def balanced(full: Manifest, config: PruneConfig, min_ratio: float = 0.5, by: Group = Group.label) -> Manifest:
    return balance_manifest(prune_manifest(full, config), full, BalanceConfig(min_ratio=min_ratio, by=by))


# -- the class-balance score b ----------------------------------------------------------------


def brute_force_b(sizes: list[int]) -> float:
    pairs = [
        1.0 if max(a, b) == 0 else min(a, b) / max(a, b)
        for i, a in enumerate(sizes)
        for j, b in enumerate(sizes)
        if i < j
    ]
    return sum(pairs) / len(pairs) if pairs else 1.0


def test_b_on_hand_computed_toys() -> None:
    assert balance_score(np.array([1, 2, 4])) == pytest.approx((1 / 2 + 1 / 4 + 2 / 4) / 3, abs=1e-15)
    assert balance_score(np.array([4, 1, 2])) == pytest.approx((1 / 2 + 1 / 4 + 2 / 4) / 3, abs=1e-15)
    assert balance_score(np.array([5, 5, 5, 5])) == 1.0
    assert balance_score(np.array([0, 0, 3])) == pytest.approx(1 / 3, abs=1e-15)  # 0/0 = 1, 0/3, 0/3
    assert balance_score(np.array([0, 7])) == 0.0
    assert balance_score(np.array([3])) == 1.0
    assert balance_score(np.array([], dtype=np.int64)) == 1.0


@pytest.mark.parametrize("seed", range(20))
def test_b_matches_a_brute_force_double_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, rng.integers(1, 30), size=rng.integers(1, 25)).tolist()
    assert balance_score(np.array(sizes)) == pytest.approx(brute_force_b(sizes), rel=1e-12, abs=1e-15)


# -- the core on hand-made toys ---------------------------------------------------------------


def test_hard_adds_the_hardest_unkept_and_drops_the_easiest_kept() -> None:
    result = balanced(toy(TWO_LABELS, TWO_SCORES), PruneConfig(keep=Keep.hard, score="s", count=5))
    # f = 0.5; floors ceil(0.25 * 6) = 2 and ceil(0.25 * 4) = 1. Class 1 gets its hardest row r7 (0.4);
    # class 0 gives up its easiest kept row r4 (0.5).
    assert row_ids(result) == ids([0, 1, 2, 3, 7])
    stats = result.lineage().last("balance").stats
    assert stats == {
        "by": "label",
        "groups": 2,
        "rows_full": 10,
        "rows_in": 5,
        "rows_out": 5,
        "rows_added": 1,
        "rows_dropped": 1,
        "floors_total": 3,
        "rows_grown": 0,
        "b_before": 0.0,
        "b_after": 0.25,
        "min_group_before": 0,
        "max_group_before": 5,
        "min_group_after": 1,
        "max_group_after": 4,
    }


def test_hard_with_min_ratio_1() -> None:
    result = balanced(toy(TWO_LABELS, TWO_SCORES), PruneConfig(keep=Keep.hard, score="s", count=5), min_ratio=1.0)
    # floors 3 and 2: add r7 (0.4) and r9 (0.3), drop r4 (0.5) and r3 (0.6).
    assert row_ids(result) == ids([0, 1, 2, 7, 9])


def test_easy_adds_the_easiest_unkept_and_drops_the_hardest_kept() -> None:
    result = balanced(toy(TWO_LABELS, TWO_SCORES), PruneConfig(keep=Keep.easy, score="s", count=5))
    # Kept r5 r6 r7 r8 r9 (class 0 has 1 < floor 2): add class 0's easiest unkept r4 (0.5), drop class 1's
    # hardest kept r7 (0.4).
    assert row_ids(result) == ids([4, 5, 6, 8, 9])


def test_drops_are_globally_worst_but_never_below_a_floor() -> None:
    result = balanced(toy(FOUR_LABELS, FOUR_SCORES), PruneConfig(keep=Keep.hard, score="s", count=8))
    # Floors 2, 1, 1, 1. Class 2 (0 kept) gets r9 (0.50). The easiest kept row is r12 (0.60) but class 3
    # sits at its floor, so the next easiest, r7 (0.62 in class 1), goes.
    assert row_ids(result) == ids([0, 1, 2, 3, 5, 6, 9, 12])
    stats = result.lineage().last("balance").stats
    assert (stats["rows_added"], stats["rows_dropped"], stats["rows_out"]) == (1, 1, 8)


def test_floors_above_the_kept_size_grow_the_output(tmp_path: Path) -> None:
    _, pruned_path = prune_files(
        tmp_path, toy(FOUR_LABELS, FOUR_SCORES), PruneConfig(keep=Keep.hard, score="s", count=8)
    )
    out = tmp_path / "balanced.parquet"
    result = runner.invoke(app, ["balance", str(pruned_path), "-o", str(out), "--min-ratio", "1"])
    assert result.exit_code == 0, result.output
    # Floors ceil(0.5 n) = 3, 2, 2, 2 add up to 9 > 8: every group ends exactly at its floor.
    assert row_ids(read_manifest(out)) == ids([0, 1, 2, 5, 6, 9, 11, 12, 13])
    stats = read_manifest(out).lineage().last("balance").stats
    assert (stats["rows_out"], stats["floors_total"], stats["rows_grown"]) == (9, 9, 1)
    assert result.output.splitlines()[-1] == (
        "the floors alone need 9 rows, more than the 8 pruned: the output grew by 1 rows"
    )


def test_window_adds_the_rows_nearest_the_band() -> None:
    labels = [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    # Rank = row. The band is ranks 3..6 (all class 0); class 1 needs 1 row: r1 is nearest the band.
    # Class 0 gives up an edge of the band; r3 and r6 are equally far, the easier side (r3) is preferred.
    result = balanced(toy(labels, list(range(10))), PruneConfig(keep=Keep.window, score="s", count=4, window_start=0.3))
    assert row_ids(result) == ids([1, 3, 4, 5])


def test_random_uses_the_prunes_seeded_permutation() -> None:
    labels = [0] * 8 + [1] * 4
    full = toy(labels, [0.0] * 12)
    config = PruneConfig(keep=Keep.random, count=6, seed=2)
    kept = set(select(np.zeros(12), config).tolist())
    assert sum(1 for i in kept if labels[i] == 1) == 1  # below its floor of 2: balance has work to do
    permutation = np.random.default_rng(2).permutation(12)
    result = set(int(r[1:]) for r in row_ids(balanced(full, config, min_ratio=1.0)))
    # floors: ceil(0.5 * 8) = 4, ceil(0.5 * 4) = 2. Expected: per group, the best of the permutation.
    expected = set()
    for group, floor in ((0, 4), (1, 2)):
        members = [i for i in range(12) if labels[i] == group]
        kept_here = sorted((i for i in members if i in kept), key=lambda i: -permutation[i])
        unkept = sorted((i for i in members if i not in kept), key=lambda i: -permutation[i])
        expected |= set(kept_here[:floor]) | set(unkept[: max(0, floor - len(kept_here))])
    assert result == expected


def test_min_ratio_0_changes_nothing() -> None:
    full = toy(FOUR_LABELS, FOUR_SCORES)
    config = PruneConfig(keep=Keep.hard, score="s", count=8)
    assert row_ids(balanced(full, config, min_ratio=0.0)) == row_ids(prune_manifest(full, config))


def test_floors_use_exact_decimals() -> None:
    # f = 20/50 and n = 25: 0.9 * 0.4 * 25 = 9 exactly, but 9.000000000000002 in floats (ceil 10).
    groups = np.array([0] * 25 + [1] * 25)
    kept = np.zeros(50, dtype=bool)
    kept[25:45] = True
    result = balance(groups, kept, -np.arange(50.0), 0.9)
    assert result.floors.tolist() == [9, 9]
    assert result.kept_after.tolist() == [9, 11]
    assert result.indices.tolist() == [*range(9), *range(25, 36)]


# -- invariants on random toys ------------------------------------------------------------------


def reference_balance(groups: np.ndarray, kept: np.ndarray, priority: np.ndarray, min_ratio: float) -> list[int]:
    """The spec as a plain loop: top up each group, then greedily drop the globally worst droppable row."""
    n_kept, n_rows = int(kept.sum()), len(groups)
    ratio = Fraction(str(min_ratio))
    floors = {
        g: min(int((groups == g).sum()), math.ceil(ratio * n_kept * int((groups == g).sum()) / n_rows))
        for g in set(groups.tolist())
    }
    chosen = set(np.flatnonzero(kept).tolist())
    for group, floor in floors.items():
        unkept = sorted(
            (i for i in range(n_rows) if groups[i] == group and i not in chosen), key=lambda i: -priority[i]
        )
        have = sum(1 for i in chosen if groups[i] == group)
        chosen |= set(unkept[: max(0, floor - have)])
    target = max(n_kept, sum(floors.values()))
    while len(chosen) > target:
        counts = {g: sum(1 for i in chosen if groups[i] == g) for g in floors}
        droppable = [i for i in chosen if kept[i] and counts[groups[i]] > floors[groups[i]]]
        chosen.remove(min(droppable, key=lambda i: priority[i]))
    return sorted(chosen)


@pytest.mark.parametrize("seed", range(25))
def test_matches_the_plain_loop_and_keeps_every_floor(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_rows = int(rng.integers(1, 60))
    groups = rng.integers(0, int(rng.integers(1, 9)), size=n_rows) * 3 - 4  # sparse, negative ids too
    scores = np.round(rng.random(n_rows), 1)  # many ties
    keep = list(Keep)[seed % 4]
    config = PruneConfig(keep=keep, score="s", count=int(rng.integers(1, n_rows + 1)), seed=seed)
    if keep is Keep.window:
        assert config.count is not None
        start = math.floor(rng.random() * (n_rows - config.count) / n_rows * 100) / 100
        config = PruneConfig(keep=keep, score="s", count=config.count, window_start=start, seed=seed)
    min_ratio = float(rng.choice([0.0, 0.3, 0.5, 0.9, 1.0]))
    kept = np.zeros(n_rows, dtype=bool)
    kept[select(scores, config)] = True
    priority = selection_priority(scores, config, n_rows, keep_count(n_rows, None, config.count))

    indices = balance_indices(groups, kept, priority, min_ratio)
    assert indices.tolist() == reference_balance(groups, kept, priority, min_ratio)
    assert np.all(np.diff(indices) > 0)
    n_kept = int(kept.sum())
    floors_total = 0
    for group in np.unique(groups):
        size = int((groups == group).sum())
        floor = min(size, math.ceil(Fraction(str(min_ratio)) * n_kept * size / n_rows))
        floors_total += floor
        assert int((groups[indices] == group).sum()) >= floor
    assert len(indices) == max(n_kept, floors_total)
    # Balancing a balanced set again changes nothing (same f, so same floors).
    if len(indices) == n_kept:
        again = np.zeros(n_rows, dtype=bool)
        again[indices] = True
        assert balance_indices(groups, again, priority, min_ratio).tolist() == indices.tolist()


# -- manifests and the command --------------------------------------------------------------------


def test_cli_balances_with_full_from_the_lineage(tmp_path: Path) -> None:
    full = toy(TWO_LABELS, TWO_SCORES)
    full_path, pruned_path = prune_files(tmp_path, full, PruneConfig(keep=Keep.hard, score="s", count=5))
    out = tmp_path / "balanced.parquet"
    result = runner.invoke(app, ["balance", str(pruned_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"kept 5 of 10 rows, balanced over 2 label groups -> {out}",
        "class balance b 0.000 -> 0.250; rows per group: min 0 -> 1, max 5 -> 4",
        "added 1 rows to groups below their floor, dropped 1 from groups above it",
    ]
    written = read_manifest(out)
    assert row_ids(written) == ids([0, 1, 2, 3, 7])  # FULL's row order
    assert written.table.column_names == full.table.column_names
    assert written.table.column("note").to_pylist() == ["n0", "n1", "n2", "n3", "n7"]
    assert written.meta["scores"] == full.meta["scores"]
    assert [step.command for step in written.lineage()] == ["prune", "balance"]
    step = written.lineage().of_command("balance")[0]
    assert step.options == {"min_ratio": 0.5, "by": "label"}
    assert [str(entry.path) for entry in step.inputs] == [str(pruned_path.resolve()), str(full_path.resolve())]
    quiet = runner.invoke(app, ["balance", str(pruned_path), "-o", str(out), "-q", "--full", str(full_path)])
    assert quiet.exit_code == 0 and quiet.output == ""
    assert row_ids(read_manifest(out)) == ids([0, 1, 2, 3, 7])


def test_by_cluster_balances_unlabeled_data(tmp_path: Path) -> None:
    full = toy(None, TWO_SCORES, cluster=TWO_LABELS)
    _, pruned_path = prune_files(tmp_path, full, PruneConfig(keep=Keep.hard, score="s", count=5))
    out = tmp_path / "balanced.parquet"
    result = runner.invoke(app, ["balance", str(pruned_path), "-o", str(out), "--by", "cluster"])
    assert result.exit_code == 0, result.output
    assert row_ids(read_manifest(out)) == ids([0, 1, 2, 3, 7])
    assert result.output.splitlines()[0] == f"kept 5 of 10 rows, balanced over 2 cluster groups -> {out}"


def run_error(tmp_path: Path, args: list[str]) -> tuple[int, str]:
    """Run balance; check that it wrote nothing; return (exit code, the single output line)."""
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    result = runner.invoke(app, ["balance", *args])
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    return result.exit_code, lines[0]


def test_null_labels_need_by_cluster(tmp_path: Path) -> None:
    full_path, pruned_path = prune_files(tmp_path, toy(None, TWO_SCORES), PruneConfig(keep=Keep.random, count=5))
    out = tmp_path / "out.parquet"
    assert run_error(tmp_path, [str(pruned_path), "-o", str(out), "--full", str(full_path)]) == (
        1,
        f"error: {full_path}: column 'label' has 10 null values; use --by cluster for unlabeled data",
    )
    assert run_error(tmp_path, [str(pruned_path), "-o", str(out), "--full", str(full_path), "--by", "cluster"]) == (
        1,
        f"error: {full_path}: no column 'cluster'; run `datadiet cluster` first to add it",
    )


def test_changed_full_is_refused(tmp_path: Path) -> None:
    full_path, pruned_path = prune_files(
        tmp_path, toy(TWO_LABELS, TWO_SCORES), PruneConfig(keep=Keep.hard, score="s", count=5)
    )
    write_manifest(toy(TWO_LABELS, [*TWO_SCORES[:-1], 0.35]), full_path)
    assert run_error(tmp_path, [str(pruned_path), "-o", str(tmp_path / "out.parquet")]) == (
        1,
        f"error: {full_path.resolve()}: the manifest {pruned_path} was pruned from has changed since (sha256 differs); "
        "pass the full manifest with --full",
    )


def test_moved_full_is_refused_until_passed(tmp_path: Path) -> None:
    full_path, pruned_path = prune_files(
        tmp_path, toy(TWO_LABELS, TWO_SCORES), PruneConfig(keep=Keep.hard, score="s", count=5)
    )
    moved = tmp_path / "moved.parquet"
    os.replace(full_path, moved)
    out = tmp_path / "out.parquet"
    assert run_error(tmp_path, [str(pruned_path), "-o", str(out)]) == (
        1,
        f"error: {full_path.resolve()}: the manifest {pruned_path} was pruned from is gone (moved or deleted); "
        "pass the full manifest with --full",
    )
    result = runner.invoke(app, ["balance", str(pruned_path), "-o", str(out), "--full", str(moved)])
    assert result.exit_code == 0, result.output
    assert row_ids(read_manifest(out)) == ids([0, 1, 2, 3, 7])


def test_pruned_ids_must_be_in_full(tmp_path: Path) -> None:
    full_path, pruned_path = prune_files(
        tmp_path, toy(TWO_LABELS, TWO_SCORES), PruneConfig(keep=Keep.hard, score="s", count=5)
    )
    smaller = write_manifest(
        read_manifest(full_path).take(np.array([1, 2, 3, 5, 6, 7, 8, 9])), tmp_path / "small.parquet"
    )
    assert run_error(tmp_path, [str(pruned_path), "-o", str(tmp_path / "out.parquet"), "--full", str(smaller)]) == (
        1,
        f"error: {pruned_path}: id 'r0' (2 of 5 ids) is not in {smaller}; pass the manifest it was pruned from with --full",
    )


def test_pruned_needs_a_prune_step(tmp_path: Path) -> None:
    full_path = write_manifest(toy(TWO_LABELS, TWO_SCORES), tmp_path / "full.parquet")
    assert run_error(tmp_path, [str(full_path), "-o", str(tmp_path / "out.parquet")]) == (
        1,
        f"error: {full_path}: has no `prune` step in its lineage; pass a manifest written by `datadiet prune`",
    )


def test_bad_min_ratio_and_output_over_an_input(tmp_path: Path) -> None:
    full_path, pruned_path = prune_files(
        tmp_path, toy(TWO_LABELS, TWO_SCORES), PruneConfig(keep=Keep.hard, score="s", count=5)
    )
    assert run_error(tmp_path, [str(pruned_path), "-o", str(tmp_path / "out.parquet"), "--min-ratio", "1.5"]) == (
        2,
        "error: --min-ratio 1.5 is outside [0, 1]; the paper uses 0.5",
    )
    for target in (pruned_path, full_path):
        assert run_error(tmp_path, [str(pruned_path), "-o", str(target)]) == (
            2,
            f"error: {target}: the output would overwrite the input; choose another -o path",
        )


@pytest.mark.parametrize(
    "groups", [[3, 3, 0, 7, 0], [-2, 5, -2, 9], [10**12, 1, 10**12], [4], [0.5, -1.0, 0.5]]
)  # fmt: skip
def test_dense_group_numbers_match_numpy_unique(groups: list[float]) -> None:
    values = np.array(groups)
    assert dense_group_numbers(values).tolist() == np.unique(values, return_inverse=True)[1].tolist()
