"""`datadiet prune`: exact kept sets on hand-made toys, seeded ties, lineage, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.errors import OptionError
from datadiet_cli.io.manifest import Manifest, new_manifest, read_manifest, write_manifest
from datadiet_cli.select.prune import Keep, PruneConfig, full_size, keep_count, prune_manifest, select

runner = CliRunner()

# Ten rows; the easy->hard ranking of SCORES is r1, r3, r7, r5, r0, r8, r2, r9, r4, r6.
SCORES = np.array([0.5, 0.1, 0.7, 0.2, 0.9, 0.4, 0.95, 0.3, 0.6, 0.8])
EASY_TO_HARD = [1, 3, 7, 5, 0, 8, 2, 9, 4, 6]


def toy(scores: np.ndarray = SCORES) -> Manifest:
    n = len(scores)
    manifest = new_manifest(
        [f"r{i}" for i in range(n)],
        [i % 2 for i in range(n)],
        {"kind": "builtin", "name": "toy", "classes": ["a", "b"]},
        extra_columns={"path": [f"img/{i}.png" for i in range(n)], "note": [f"n{i}" for i in range(n)]},
    )
    return manifest.with_score("s", scores, metric="toy", params={})


def kept_ids(manifest: Manifest) -> list[str]:
    return manifest.table.column("id").to_pylist()


def ids(indices: list[int]) -> list[str]:
    return [f"r{i}" for i in sorted(indices)]


def written_toy(tmp_path: Path, manifest: Manifest | None = None) -> Path:
    return write_manifest(manifest if manifest is not None else toy(), tmp_path / "full.parquet")


# -- how many -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_rows", "fraction", "expected"),
    [(10, 0.25, 3), (10, 0.35, 4), (10, 0.34, 3), (100, 0.285, 29), (4, 0.125, 1), (10, 1.0, 10), (7, 0.5, 4)],
)
def test_keep_count_rounds_halves_up(n_rows: int, fraction: float, expected: int) -> None:
    assert keep_count(n_rows, fraction, None) == expected


def test_keep_count_takes_count_as_is() -> None:
    assert keep_count(10, None, 4) == 4
    assert keep_count(10, None, 10) == 10


@pytest.mark.parametrize(
    ("fraction", "count", "message"),
    [
        (None, None, "give exactly one of --fraction or --count"),
        (0.5, 3, "give exactly one of --fraction or --count"),
        (0.01, None, "--fraction 0.01 of 10 rows keeps 0 rows; use at least 0.1"),
        (None, 0, "--count 0 must be at least 1"),
    ],
)
def test_keep_count_errors(fraction: float | None, count: int | None, message: str) -> None:
    with pytest.raises(OptionError) as error:
        keep_count(10, fraction, count)
    assert str(error.value) == message


# -- which ----------------------------------------------------------------------------------


def test_hard_keeps_the_highest_scores() -> None:
    pruned = prune_manifest(toy(), PruneConfig(keep=Keep.hard, score="s", fraction=0.3))
    assert kept_ids(pruned) == ids([4, 6, 9])  # 0.9, 0.95, 0.8


def test_easy_keeps_the_lowest_scores() -> None:
    pruned = prune_manifest(toy(), PruneConfig(keep=Keep.easy, score="s", count=4))
    assert kept_ids(pruned) == ids([1, 3, 5, 7])  # 0.1, 0.2, 0.4, 0.3


@pytest.mark.parametrize(
    ("start", "count", "first"), [(0.0, 3, 0), (0.3, 3, 3), (0.29, 3, 2), (0.25, 4, 2), (0.7, 3, 7), (0.5, 2, 5)]
)
def test_window_keeps_the_band_of_ranks(start: float, count: int, first: int) -> None:
    """Ranks [floor(Q*N), floor(Q*N) + count) of the easy->hard ranking."""
    pruned = prune_manifest(toy(), PruneConfig(keep=Keep.window, score="s", count=count, window_start=start))
    assert kept_ids(pruned) == ids(EASY_TO_HARD[first : first + count])


def test_window_start_029_of_100_starts_at_rank_29() -> None:
    scores = np.arange(100, dtype=np.float64)  # rank = row
    kept = select(scores, PruneConfig(keep=Keep.window, score="s", count=5, window_start=0.29))
    assert kept.tolist() == [29, 30, 31, 32, 33]


def test_window_running_past_the_hardest_is_an_error() -> None:
    config = PruneConfig(keep=Keep.window, score="s", count=4, window_start=0.7)
    with pytest.raises(OptionError) as error:
        select(SCORES, config)
    assert str(error.value) == (
        "--window-start 0.7 with 4 rows kept runs past the hardest example; use --window-start 0.6 or lower"
    )


def test_random_is_seeded() -> None:
    def pick(seed: int) -> list[str]:
        return kept_ids(prune_manifest(toy(), PruneConfig(keep=Keep.random, fraction=0.5, seed=seed)))

    assert pick(3) == pick(3)
    assert len(pick(3)) == 5
    assert len({tuple(pick(seed)) for seed in range(6)}) > 1
    # keep=random needs no score and ignores it: the pick depends on the seed only.
    with_score = prune_manifest(toy(), PruneConfig(keep=Keep.random, score="s", fraction=0.5, seed=3))
    assert kept_ids(with_score) == pick(3)


@pytest.mark.parametrize("keep", [Keep.hard, Keep.easy, Keep.window])
def test_ties_are_broken_by_the_seed(keep: Keep) -> None:
    tied = np.array([0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9])

    def pick(seed: int) -> tuple[int, ...]:
        return tuple(select(tied, PruneConfig(keep=keep, score="s", count=3, window_start=0.25, seed=seed)).tolist())

    assert pick(7) == pick(7)
    assert len({pick(seed) for seed in range(12)}) > 1
    for seed in range(12):  # only tied rows are ever swapped: the clear winner/loser is fixed
        kept = set(pick(seed))
        if keep is Keep.hard:
            assert 7 in kept and 0 not in kept
        elif keep is Keep.easy:
            assert 0 in kept and 7 not in kept
        else:
            assert kept.isdisjoint({0, 7})


def test_output_keeps_row_order_columns_and_metadata() -> None:
    full = toy()
    pruned = prune_manifest(full, PruneConfig(keep=Keep.hard, score="s", count=4))
    assert pruned.table.column_names == full.table.column_names
    assert kept_ids(pruned) == ["r2", "r4", "r6", "r9"]
    assert pruned.table.column("note").to_pylist() == ["n2", "n4", "n6", "n9"]
    assert pruned.table.column("s").to_pylist() == [0.7, 0.9, 0.95, 0.8]
    assert pruned.meta["dataset"] == full.meta["dataset"]
    assert pruned.meta["scores"] == full.meta["scores"]


def test_lineage_records_config_and_full_size_through_chained_prunes(tmp_path: Path) -> None:
    full = written_toy(tmp_path)
    first = prune_manifest(read_manifest(full), PruneConfig(keep=Keep.hard, score="s", count=6))
    step = first.lineage().of_command("prune")[-1]
    assert step.options == {
        "keep": "hard",
        "score": "s",
        "fraction": None,
        "count": 6,
        "window_start": 0.0,
        "seed": 0,
    }
    assert step.stats == {"rows_in": 10, "rows_kept": 6, "fraction_kept": 0.6, "full_size": 10}
    assert step.inputs[0].path == full.resolve()
    write_manifest(first, tmp_path / "first.parquet")
    second = prune_manifest(read_manifest(tmp_path / "first.parquet"), PruneConfig(keep=Keep.easy, score="s", count=3))
    assert second.lineage().last("prune").stats == {
        "rows_in": 6,
        "rows_kept": 3,
        "fraction_kept": 0.5,
        "full_size": 10,
    }
    assert full_size(second) == 10
    assert kept_ids(second) == ["r0", "r2", "r8"]  # the 3 easiest of r0 r2 r4 r6 r8 r9


# -- the command ----------------------------------------------------------------------------


def test_cli_prunes_and_summarises(tmp_path: Path) -> None:
    full = written_toy(tmp_path)
    out = tmp_path / "kept.parquet"
    result = runner.invoke(
        app, ["prune", str(full), "-o", str(out), "--score", "s", "--keep", "hard", "--fraction", "0.3"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == f"kept 3 of 10 rows (30.0%, keep hard by s) -> {out}\n"
    kept = read_manifest(out)
    assert kept_ids(kept) == ids([4, 6, 9])
    quiet = runner.invoke(app, ["prune", str(full), "-o", str(out), "--keep", "random", "--count", "2", "-q"])
    assert quiet.exit_code == 0 and quiet.output == ""


def _error(tmp_path: Path, args: list[str], source: Path | None = None) -> tuple[int, str]:
    """Run prune, check it left nothing behind but its input, return (exit code, the one output line)."""
    source = source if source is not None else written_toy(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["prune", str(source), "-o", str(out), *args])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temp file
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    return result.exit_code, lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep", "hard", "--score", "s", "--fraction", "0"], "--fraction 0.0 is outside (0, 1]; e.g. --fraction 0.3 keeps 30%"),
        (["--keep", "hard", "--score", "s", "--fraction", "1.5"], "--fraction 1.5 is outside (0, 1]; e.g. --fraction 0.3 keeps 30%"),
        (["--keep", "hard", "--score", "s", "--count", "11"], "--count 11 is larger than the manifest (10 rows)"),
        (["--keep", "hard", "--fraction", "0.5"], "--keep hard needs --score COLUMN (only --keep random does not)"),
        (["--keep", "easy", "--score", "s"], "give exactly one of --fraction or --count"),
        (["--keep", "window", "--score", "s", "--count", "3", "--window-start", "1"], "--window-start 1.0 is outside [0, 1)"),
    ],
)  # fmt: skip
def test_option_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    assert _error(tmp_path, args) == (2, f"error: {message}")


def test_missing_score_column(tmp_path: Path) -> None:
    full = written_toy(tmp_path)
    assert _error(tmp_path, ["--keep", "hard", "--score", "el2n", "--fraction", "0.5"], full) == (
        1,
        f"error: {full}: no score column 'el2n' (score columns here: s); "
        "add it with `datadiet score` or `datadiet cluster`",
    )


def test_nan_in_score(tmp_path: Path) -> None:
    scores = SCORES.copy()
    scores[3] = np.nan
    full = written_toy(tmp_path, toy(scores))
    assert _error(tmp_path, ["--keep", "easy", "--score", "s", "--fraction", "0.5"], full) == (
        1,
        f"error: {full}: score column 's' has 1 NaN/inf values (first at id 'r3')",
    )


def test_not_parquet(tmp_path: Path) -> None:
    source = tmp_path / "notes.parquet"
    source.write_text("id,label\na,1\n")
    code, line = _error(tmp_path, ["--keep", "random", "--fraction", "0.5"], source)
    assert code == 1
    assert line.startswith(f"error: {source}: not a Parquet manifest (")
    assert line.endswith("); create one with `datadiet ingest`")


def _raw_parquet(tmp_path: Path, columns: dict[str, pa.Array]) -> Path:
    path = tmp_path / "raw.parquet"
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"name": pa.array(["a", "b"]), "label": pa.array([0, 1])}, "no 'id' column; every manifest needs a unique string id per row"),
        ({"id": pa.array(["a", "b", "a"])}, "column 'id' has 1 duplicated values (e.g. 'a'); ids must be unique"),
        ({"id": pa.array(["a", None, "c"])}, "column 'id' has 1 null values; every row needs an id"),
        ({"id": pa.array([], type=pa.string())}, "the manifest is empty (0 rows)"),
    ],
)  # fmt: skip
def test_bad_manifests(tmp_path: Path, columns: dict[str, pa.Array], message: str) -> None:
    source = _raw_parquet(tmp_path, columns)
    assert _error(tmp_path, ["--keep", "random", "--fraction", "0.5"], source) == (1, f"error: {source}: {message}")


def test_plain_parquet_without_metadata_is_pruned(tmp_path: Path) -> None:
    source = _raw_parquet(tmp_path, {"id": pa.array(["a", "b", "c", "d"]), "loss": pa.array([3.0, 1.0, 4.0, 2.0])})
    out = tmp_path / "out.parquet"
    result = runner.invoke(
        app, ["prune", str(source), "-o", str(out), "--keep", "easy", "--score", "loss", "--count", "2"]
    )
    assert result.exit_code == 0, result.output
    assert read_manifest(out).table.column("id").to_pylist() == ["b", "d"]


def test_output_equal_to_input_is_refused(tmp_path: Path) -> None:
    full = written_toy(tmp_path)
    digest = full.read_bytes()
    result = runner.invoke(app, ["prune", str(full), "-o", str(full), "--keep", "random", "--fraction", "0.5"])
    assert result.exit_code == 2
    assert result.output == f"error: {full}: the output would overwrite the input; choose another -o path\n"
    assert full.read_bytes() == digest
