"""Issue 13, bad input: every case is one line on stderr naming the file/column/value and the fix, exit 1
(2 for usage), no traceback or library warning, no output or temporary file, and the inputs unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.data import seeds
from datadiet_cli.io.lineage import LineageStep
from datadiet_cli.io.manifest import new_manifest, read_manifest, write_manifest

# A warning printed by a library (numpy, pyarrow, torch) is output the user did not ask for: fail on it.
pytestmark = pytest.mark.filterwarnings("error")

runner = CliRunner()
REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_RANGE = "is outside 0..4294967295 (2**32-1); a seed is a non-negative 32-bit integer"
REWRITE = "; write it again with datadiet (or drop its 'datadiet' schema metadata)"
WRITE_FIX = "check the folder's permissions and free space, or choose another -o path"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden temporaries too) with its sha256."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args: object) -> typer.testing.Result:
    return runner.invoke(app, [str(arg) for arg in args], env={"COLUMNS": "300"})


def expect_error(folder: Path, args: list[object], exit_code: int, message: str) -> None:
    """The command fails with exactly `error: MESSAGE` on stderr, nothing on stdout, and `folder` (inputs,
    outputs, temporaries) byte for byte as it was."""
    before = tree(folder)
    result = cli(*args)
    assert (result.exit_code, result.stderr, result.stdout) == (exit_code, f"error: {message}\n", "")
    assert tree(folder) == before


def scored_manifest(folder: Path, n: int = 8) -> Path:
    """A datadiet manifest: two labeled classes, an el2n score, an ingest step."""
    manifest = new_manifest(
        [f"img{i}" for i in range(n)], [i % 2 for i in range(n)], {"kind": "test", "classes": ["a", "b"]}
    )
    manifest = manifest.with_score("el2n", np.linspace(0.1, 0.9, n), "el2n", {"probes": 2})
    manifest = manifest.with_lineage(LineageStep("ingest", {"source": "test"}, [], {"rows": n}))
    return write_manifest(manifest, folder / "scored.parquet")


def plain_parquet(folder: Path, name: str, table: pa.Table, metadata: object = None) -> Path:
    """A Parquet file as another tool writes it; `metadata` (JSON, or raw bytes) under the 'datadiet' key."""
    if metadata is not None:
        raw = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
        table = table.replace_schema_metadata({b"datadiet": raw})
    path = folder / name
    pq.write_table(table, path)
    return path


def prune_args(source: Path, out: Path, *extra: object) -> list[object]:
    return ["prune", source, "-o", out, "--keep", "random", "--fraction", "0.5", *extra]


IDS = pa.array(["a", "b", "c"])


# -- 1. columns that overflow or mistype ------------------------------------------------------------------

INT_FIX = "write it as int64, with nulls for missing values"


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            {"label": pa.array([0, 1, 2**64 - 1], pa.uint64())},
            "column 'label' holds 18446744073709551615 at id 'c', beyond int64 (at most 9223372036854775807); "
            f"it must hold integers (class indices); {INT_FIX}",
        ),
        (
            {"cluster": pa.array([2**63, 0, 1], pa.uint64())},
            "column 'cluster' holds 9223372036854775808 at id 'a', beyond int64 (at most 9223372036854775807); "
            f"it must hold integers (k-means cluster numbers); {INT_FIX}",
        ),
        (
            {"label": ["cat", "dog", "cat"]},
            f"column 'label' is string; it must hold integers (class indices); {INT_FIX}",
        ),
        ({"label": [0.0, 1.0, None]}, f"column 'label' is double; it must hold integers (class indices); {INT_FIX}"),
        (
            {"cluster": [0.5, 1.0, 2.0]},
            f"column 'cluster' is double; it must hold integers (k-means cluster numbers); {INT_FIX}",
        ),
        ({"path": [1, 2, 3]}, "column 'path' is int64; it must hold strings (file paths relative to dataset.root)"),
    ],
    ids=["label-uint64-max", "cluster-uint64-overflow", "label-strings", "label-floats", "cluster-floats", "path-ints"],
)
def test_columns_that_overflow_or_mistype(tmp_path: Path, columns: dict[str, object], message: str) -> None:
    source = plain_parquet(tmp_path, "bad.parquet", pa.table({"id": IDS, **columns}))
    expect_error(tmp_path, prune_args(source, tmp_path / "out.parquet"), 1, f"{source}: {message}")


def test_integer_ids_are_refused(tmp_path: Path) -> None:
    source = plain_parquet(tmp_path, "bad.parquet", pa.table({"id": [1, 2, 3]}))
    expect_error(
        tmp_path,
        prune_args(source, tmp_path / "out.parquet"),
        1,
        f"{source}: column 'id' is int64; ids must be strings (not row positions)",
    )


def test_what_pandas_writes_is_read_as_the_contract_says(tmp_path: Path) -> None:
    """Dictionary-encoded ids (a categorical), uint8 labels, uint64 values int64 can hold, an all-null
    label column (no type at all) are fine."""
    table = pa.table(
        {
            "id": IDS.dictionary_encode(),
            "label": pa.array([0, 1, 0], pa.uint8()),
            "cluster": pa.array([0, 2**63 - 1, 1], pa.uint64()),
        }
    )
    manifest = read_manifest(plain_parquet(tmp_path, "ok.parquet", table))
    assert manifest.table.schema.types[:3] == [pa.string(), pa.int64(), pa.int64()]
    assert manifest.groups("cluster").tolist() == [0, 2**63 - 1, 1]
    unlabeled = read_manifest(plain_parquet(tmp_path, "unlabeled.parquet", pa.table({"id": IDS, "label": [None] * 3})))
    assert unlabeled.table.schema.field("label").type == pa.int64() and unlabeled.table.column("label").null_count == 3


# -- 1. metadata that is valid JSON of the wrong shape ------------------------------------------------------

V1 = {"format_version": 1}


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([1, 2], f"the 'datadiet' schema metadata is a list, not a JSON object{REWRITE}"),
        ("lineage", f"the 'datadiet' schema metadata is a string ('lineage'), not a JSON object{REWRITE}"),
        ({**V1, "lineage": {"command": "prune"}}, f"metadata 'lineage' is an object, not a list of steps{REWRITE}"),
        ({**V1, "lineage": ["prune"]}, f"metadata 'lineage[0]' is a string ('prune'), not an object{REWRITE}"),
        ({**V1, "lineage": [{"command": "prune", "options": [1]}]}, f"metadata 'lineage[0].options' is a list, not an object{REWRITE}"),
        (
            {**V1, "lineage": [{"command": "prune", "inputs": ["scored.parquet"]}]},
            f"metadata 'lineage[0].inputs[0]' is a string ('scored.parquet'), not a recorded file (an object with a "
            f"'path'){REWRITE}",
        ),
        (
            {**V1, "lineage": [{"command": "prune", "stats": {"rows_in": "many"}}]},
            f"metadata 'lineage[0].stats.rows_in' is a string ('many'), not a row count{REWRITE}",
        ),
        (
            {**V1, "lineage": [{"command": "ingest"}, {"command": "prune", "stats": {"rows_kept": 4}}]},
            f"metadata 'lineage[1].stats.rows_in' is missing (a row count){REWRITE}",
        ),
        ({**V1, "dataset": ["cifar10"]}, f"metadata 'dataset' is a list, not an object{REWRITE}"),
        ({**V1, "dataset": {"classes": "ab"}}, f"metadata 'dataset.classes' is a string ('ab'), not a list{REWRITE}"),
        ({**V1, "dataset": {"classes": [0, 1]}}, f"metadata 'dataset.classes[0]' is the number 0, not a string (a class name){REWRITE}"),
        ({**V1, "dataset": {"image_shape": [8, -8]}}, f"metadata 'dataset.image_shape[1]' is the number -8, not a positive integer{REWRITE}"),
        ({**V1, "scores": "el2n"}, f"metadata 'scores' is a string ('el2n'), not an object (score column -> description){REWRITE}"),
        ({**V1, "scores": {"el2n": 3}}, f"metadata 'scores.el2n' is the number 3, not an object{REWRITE}"),
        ({"format_version": [1]}, "manifest format version [1] is not supported (this datadiet 0.1.0 reads version 1)"),
        (b"{\"format_version\": 1", f"the 'datadiet' schema metadata is not valid JSON (Expecting ',' delimiter: line 1 column 21 (char 20)){REWRITE}"),
        (b"[" * 100_000, f"the 'datadiet' schema metadata is not valid JSON (nested too deeply){REWRITE}"),
    ],
    ids=[
        "document-list", "document-string", "lineage-object", "step-string", "step-options-list", "step-inputs-strings",
        "prune-stats-string", "prune-stats-missing", "dataset-list", "classes-string", "class-names-numbers", "image-shape-negative",
        "scores-string", "score-description-number", "format-version-list", "truncated-json", "deep-json",
    ],
)  # fmt: skip
def test_metadata_of_the_wrong_shape_is_refused_on_read(tmp_path: Path, metadata: object, message: str) -> None:
    source = plain_parquet(tmp_path, "bad.parquet", pa.table({"id": IDS}), metadata)
    expect_error(tmp_path, prune_args(source, tmp_path / "out.parquet"), 1, f"{source}: {message}")


def test_balance_refuses_hand_edited_prune_options(tmp_path: Path) -> None:
    """A recorded prune seed numpy cannot take is a lineage error, not a numpy traceback."""
    source, kept = scored_manifest(tmp_path), tmp_path / "kept.parquet"
    assert cli(*prune_args(source, kept, "--quiet")).exit_code == 0
    table = pq.read_table(kept)
    meta = json.loads(table.schema.metadata[b"datadiet"])
    meta["lineage"][-1]["options"]["seed"] = -1
    pq.write_table(table.replace_schema_metadata({b"datadiet": json.dumps(meta).encode()}), kept)
    options = meta["lineage"][-1]["options"]
    expect_error(
        tmp_path,
        ["balance", kept, "-o", tmp_path / "balanced.parquet"],
        1,
        f"{kept}: its `prune` lineage entry has unreadable options {options}; pass a manifest written by "
        "`datadiet prune`",
    )


# -- 2. seeds ---------------------------------------------------------------------------------------------

SEEDED = {
    "ingest": ["ingest", "builtin:digits", "-o", "{out}.parquet"],
    "score": ["score", "{src}", "-o", "{out}.parquet", "--metric", "random"],
    "cluster": ["cluster", "{src}", "-o", "{out}.parquet", "--encoder", "pixels"],
    "prune": ["prune", "{src}", "-o", "{out}.parquet", "--keep", "random", "--fraction", "0.5"],
    "train": ["train", "{src}", "-o", "{out}", "--recipe", "fast"],
    "report": ["report", "{out}", "-o", "{out}"],
    "theory simulate": ["theory", "simulate", "--alpha-tot", "2"],
    "theory plot": ["theory", "plot", "-o", "{out}"],
}


def seeded_commands(group: object = None, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(command path, click parameter) for every option of every command whose name mentions a seed."""
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            yield from seeded_commands(command, f"{path} ")
        for parameter in command.params:
            if "seed" in parameter.name:
                yield path, parameter


def test_every_seeded_command_takes_the_shared_seed_option() -> None:
    found = dict(seeded_commands())
    assert sorted(found) == sorted(SEEDED)
    for parameter in found.values():
        assert parameter.opts == ["--seed"] and parameter.help.startswith("Random seed, 0..4294967295;")


@pytest.mark.parametrize("seed", ["-1", "4294967296", "18446744073709551616"])
@pytest.mark.parametrize("command", sorted(SEEDED))
def test_seeds_outside_the_range_are_a_usage_error(tmp_path: Path, command: str, seed: str) -> None:
    source = scored_manifest(tmp_path)
    args = [arg.format(src=source, out=tmp_path / "out") for arg in SEEDED[command]]
    expect_error(
        tmp_path,
        [*args, f"--seed={seed}"],
        2,
        f"Invalid value for '--seed': {seed} {SEED_RANGE} (see 'datadiet {command} --help')",
    )


def test_the_largest_seed_works_and_every_stream_derived_from_it_is_valid(tmp_path: Path) -> None:
    import torch

    source, out = scored_manifest(tmp_path), tmp_path / "out.parquet"
    assert cli(*prune_args(source, out, "--seed", seeds.SEED_MAX, "--quiet")).exit_code == 0
    for seed in (0, seeds.SEED_MAX):
        for probe in (0, 1, 99):
            derived = seeds.probe_seed(seed, probe)  # a probe's train --seed: all of train's streams come from it
            assert 0 <= derived <= seeds.SEED_MAX
            np.random.RandomState(derived)  # what scikit-learn's check_random_state makes of a random_state
            torch.Generator().manual_seed(seeds.torch_seed(derived, 200, seeds.AUGMENT_STREAM))
            torch.Generator().manual_seed(derived)
        np.random.RandomState(seed)  # cluster's scikit-learn engine takes the seed itself
        seeds.rng(seed, seeds.KMEANS_INIT).random()
    assert seeds.probe_seed(seeds.SEED_MAX, 1) == 0 and seeds.probe_seed(7, 3) == 10  # small seeds: as before


# -- 3. a misspelt column ---------------------------------------------------------------------------------


def test_misspelt_score_on_a_plain_parquet_file_suggests_its_numeric_column(tmp_path: Path) -> None:
    table = pa.table({"id": IDS, "label": [0, 1, 0], "el2n": [0.3, 0.1, 0.2], "forgetting": [1, 0, 2], "note": IDS})
    source = plain_parquet(tmp_path, "plain.parquet", table)
    out = tmp_path / "out.parquet"
    known = "(numeric columns here: el2n, forgetting)"
    expect_error(tmp_path, ["prune", source, "-o", out, "--keep", "hard", "--score", "el2m", "--fraction", "0.5"],
                 1, f"{source}: no score column 'el2m' {known}; did you mean 'el2n'?")  # fmt: skip
    expect_error(tmp_path, ["prune", source, "-o", out, "--keep", "hard", "--score", "Forgetting", "--fraction", "0.5"],
                 1, f"{source}: no score column 'Forgetting' {known}; did you mean 'forgetting'?")  # fmt: skip
    expect_error(tmp_path, ["prune", source, "-o", out, "--keep", "hard", "--score", "margin", "--fraction", "0.5"],
                 1, f"{source}: no score column 'margin' {known}; add it with `datadiet score` or `datadiet cluster`")  # fmt: skip


def test_misspelt_score_on_a_datadiet_manifest_suggests_its_score_column(tmp_path: Path) -> None:
    source = scored_manifest(tmp_path)
    expect_error(
        tmp_path,
        ["prune", source, "-o", tmp_path / "out.parquet", "--keep", "easy", "--score", "el2", "--fraction", "0.5"],
        1,
        f"{source}: no score column 'el2' (score columns here: el2n); did you mean 'el2n'?",
    )


def test_balance_by_names_one_of_two_groupings(tmp_path: Path) -> None:
    source = scored_manifest(tmp_path)
    expect_error(
        tmp_path,
        ["balance", source, "-o", tmp_path / "out.parquet", "--by", "lable"],
        2,
        "Invalid value for '--by': Value error, 'lable' is not one of 'label', 'cluster'. "
        "(see 'datadiet balance --help')",
    )


# -- 4. outputs -------------------------------------------------------------------------------------------

MANIFEST_WRITERS = {
    "ingest": ["ingest", "builtin:digits"],
    "score": ["score", "{src}", "--metric", "random"],
    "cluster": ["cluster", "{src}", "--encoder", "pixels"],
    "prune": ["prune", "{src}", "--keep", "random", "--fraction", "0.5"],
    "balance": ["balance", "{src}"],
}


@pytest.mark.parametrize("command", sorted(MANIFEST_WRITERS))
def test_every_manifest_writer_refuses_a_suffix_other_than_parquet(tmp_path: Path, command: str) -> None:
    args = [arg.format(src=scored_manifest(tmp_path)) for arg in MANIFEST_WRITERS[command]]
    expect_error(
        tmp_path,
        [*args, "-o", tmp_path / "kept.csv"],
        2,
        f"-o {tmp_path / 'kept.csv'}: the output must end in .parquet (datadiet writes Parquet); "
        f"e.g. -o {tmp_path / 'kept.parquet'}",
    )


def test_output_to_standard_output_is_refused(tmp_path: Path) -> None:
    source = scored_manifest(tmp_path)
    expect_error(
        tmp_path, prune_args(source, "-"), 2, "-o -: datadiet writes files, not standard output; give a .parquet path"
    )


def test_output_that_is_a_folder_or_under_a_file_is_refused(tmp_path: Path) -> None:
    source = scored_manifest(tmp_path)
    (tmp_path / "kept.parquet").mkdir()
    expect_error(tmp_path, prune_args(source, tmp_path / "kept.parquet"), 2,
                 f"{tmp_path / 'kept.parquet'}: is a directory; -o takes a .parquet file path")  # fmt: skip
    out = source / "kept.parquet"
    expect_error(tmp_path, prune_args(source, out), 2,
                 f"-o {out}: {source} is a file, not a folder; choose another -o path")  # fmt: skip


def test_output_that_is_the_input_through_a_link_is_refused(tmp_path: Path) -> None:
    source = scored_manifest(tmp_path)
    os.link(source, tmp_path / "hardlink.parquet")
    (tmp_path / "symlink.parquet").symlink_to(source)
    for link in ("hardlink.parquet", "symlink.parquet"):
        expect_error(tmp_path, prune_args(source, tmp_path / link), 2,
                     f"{tmp_path / link}: the output would overwrite the input; choose another -o path")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "{src}", "-o", "{file}", "--recipe", "fast"], "{file}: is a file; -o takes a run folder"),
        (["report", "{run}", "-o", "{file}"], "{file}: is a file; -o takes a folder for the report"),
        (["theory", "plot", "-o", "{file}"], "{file}: is a file; -o takes a folder for the PNGs"),
        (["evaluate", "{run}", "{src}", "-o", "{src}.txt"],
         "-o {src}.txt: the output must end in .json (datadiet writes JSON); e.g. -o {src}.json"),
        (["evaluate", "{run}", "{src}", "--predictions", "{src}"],
         "{src}: the output would overwrite the input; choose another --predictions path"),
        (["score", "{src}", "-o", "{out}", "--metric", "random", "--probes-dir", "{file}"],
         "{file}: is a file; --probes-dir takes a folder"),
    ],
    ids=["train", "report", "theory-plot", "evaluate-json", "evaluate-predictions", "score-probes-dir"],
)  # fmt: skip
def test_folder_and_json_outputs_are_checked_too(tmp_path: Path, args: list[str], message: str) -> None:
    paths = {"src": scored_manifest(tmp_path), "file": tmp_path / "taken", "run": tmp_path / "run",
             "out": tmp_path / "out.parquet"}  # fmt: skip
    paths["file"].write_text("not a folder")
    expect_error(tmp_path, [arg.format(**paths) for arg in args], 2, message.format(**paths))


def without_root_powers(read_only: Path) -> list[str]:
    """The command prefix under which a read-only folder cannot be written (root ignores permission bits)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root: needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE for a read-only folder")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, sys.executable, "-c", f"import os; print(os.access({str(read_only)!r}, os.W_OK))"],
                           capture_output=True, text=True)  # fmt: skip
    if probe.returncode != 0 or probe.stdout.strip() != "False":
        pytest.skip(
            f"setpriv could not drop root's permission override here ({probe.stderr.strip() or probe.stdout.strip()})"
        )
    return prefix


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/readonly (r-x: may be listed, not written) and tmp_path/locked/inner (locked: no permissions)."""
    folder, locked = tmp_path / "readonly", tmp_path / "locked"
    folder.mkdir()
    (locked / "inner").mkdir(parents=True)
    folder.chmod(0o555)
    locked.chmod(0o000)
    yield folder
    folder.chmod(0o755)
    locked.chmod(0o755)


# Runs several command lines in one process (one interpreter start, not one per case): exit code, stdout, stderr.
RUN_MANY = """
import json, sys
from typer.testing import CliRunner
from datadiet_cli.cli import app

results = [CliRunner().invoke(app, args, env={"COLUMNS": "300"}) for args in json.loads(sys.argv[1])]
print(json.dumps([[r.exit_code, r.stdout, r.stderr] for r in results]))
"""


def test_folders_that_may_not_be_written_or_entered_are_named(tmp_path: Path, read_only_folder: Path) -> None:
    prefix = without_root_powers(read_only_folder)
    source, locked = scored_manifest(tmp_path), tmp_path / "locked"
    before = tree(tmp_path)

    def not_writable(out: Path) -> str:
        return (
            f"error: -o {out}: the folder {read_only_folder} is not writable (permission denied); "
            "choose another -o path or make the folder writable\n"
        )

    cases = [
        (prune_args(source, read_only_folder / "out.parquet"), not_writable(read_only_folder / "out.parquet")),
        (prune_args(source, read_only_folder / "new" / "out.parquet"), not_writable(read_only_folder / "new" / "out.parquet")),
        (["train", source, "-o", read_only_folder / "run", "--recipe", "fast"], not_writable(read_only_folder / "run")),
        (["report", tmp_path, "-o", read_only_folder / "report"], not_writable(read_only_folder / "report")),
        (["theory", "plot", "-o", read_only_folder / "figures"], not_writable(read_only_folder / "figures")),
        (prune_args(source, locked / "inner" / "out.parquet"),
         f"error: -o {locked / 'inner' / 'out.parquet'}: the folder {locked} may not be looked into (permission "
         "denied); choose another -o path or fix its permissions\n"),
        (prune_args(locked / "inner" / "in.parquet", tmp_path / "out.parquet"),
         f"error: {locked / 'inner' / 'in.parquet'}: the folder {locked} may not be looked into (permission denied); "
         "fix its permissions\n"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    argv = json.dumps([[str(arg) for arg in args] for args, _ in cases])
    completed = subprocess.run([*prefix, sys.executable, "-c", RUN_MANY, argv], capture_output=True, text=True, env=env)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == [[1, "", line] for _, line in cases]
    locked.chmod(0o755)
    assert tree(tmp_path) == before


def test_a_failed_write_is_one_line_and_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = scored_manifest(tmp_path)

    def disk_full(table: object, where: object, **options: object) -> None:
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    out = tmp_path / "out.parquet"
    expect_error(
        tmp_path, prune_args(source, out), 1, f"{out}: could not be written (no space left on device); {WRITE_FIX}"
    )


# -- 5. interrupted writes and Ctrl-C ---------------------------------------------------------------------


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path: Path) -> None:
    source, out = scored_manifest(tmp_path), tmp_path / "out.parquet"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(finished.stdout), os.getppid()  # a process that has exited; one that is running
    (tmp_path / f".out.parquet.tmp-{dead}").write_bytes(b"PAR1 cut off by kill -9")
    (tmp_path / f".out.parquet.tmp-{alive}").write_bytes(b"PAR1 still being written")
    (tmp_path / f".other.parquet.tmp-{dead}").write_bytes(b"PAR1 another output's")
    assert cli(*prune_args(source, out, "--quiet")).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [
        f".other.parquet.tmp-{dead}",
        f".out.parquet.tmp-{alive}",
    ]
    assert read_manifest(out).num_rows == 4


def test_ctrl_c_during_a_command_is_one_line_and_exit_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("datadiet_cli.commands.prune.prune_manifest", interrupted)
    source = scored_manifest(tmp_path)
    expect_error(tmp_path, prune_args(source, tmp_path / "out.parquet"), 130, "interrupted; no output was written")


def test_ctrl_c_names_the_outputs_already_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datadiet_cli.io.files import atomic_path

    def first_figure_then_ctrl_c(directory: Path, **options: object) -> None:
        with atomic_path(directory / "fig1a_learning_curves.png") as temporary:
            temporary.write_bytes(b"png")
        raise KeyboardInterrupt

    monkeypatch.setattr("datadiet_cli.theory.figures.write_figures", first_figure_then_ctrl_c)
    figures = tmp_path / "figures"
    result = cli("theory", "plot", "-o", figures, "--quiet")
    assert (result.exit_code, result.stdout) == (130, "")
    assert result.stderr == (
        f"error: interrupted after writing {figures / 'fig1a_learning_curves.png'}; its other outputs were not written\n"
    )


@pytest.mark.parametrize("epochs_finished", [0, 1])
def test_ctrl_c_during_train_says_the_run_folder_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epochs_finished: int
) -> None:
    from datadiet_cli.io.rundir import RunDir

    def train_run(manifest: object, config: object, run_dir: Path, **options: object) -> None:
        run = RunDir(run_dir)
        run.open({"settings": "recorded"}, resume=False)
        if epochs_finished:
            run.checkpoint_path.write_bytes(b"epoch 1")
        raise KeyboardInterrupt

    # The command imports train.loop (and torch) when it runs; this stand-in needs neither.
    monkeypatch.setitem(sys.modules, "datadiet_cli.train.loop", types.SimpleNamespace(train_run=train_run))
    source, run_dir = scored_manifest(tmp_path), tmp_path / "run"
    result = cli("train", source, "-o", run_dir, "--recipe", "fast", "--quiet")
    assert (result.exit_code, result.stdout) == (130, "")
    if epochs_finished:
        assert result.stderr == f"error: interrupted; {run_dir} holds the last finished epoch: continue with --resume\n"
    else:
        assert result.stderr == (
            f"error: interrupted before the first epoch ended; {run_dir} can start again with --resume\n"
        )


def test_ctrl_c_before_train_writes_its_folder_says_nothing_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def train_run(*args: object, **options: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "datadiet_cli.train.loop", types.SimpleNamespace(train_run=train_run))
    source = scored_manifest(tmp_path)
    expect_error(tmp_path, ["train", source, "-o", tmp_path / "run", "--recipe", "fast"], 130,
                 "interrupted; no output was written")  # fmt: skip


def test_ctrl_c_during_score_says_the_probes_continue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def score_manifest(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("datadiet_cli.commands.score.score_manifest", score_manifest)
    source, out = scored_manifest(tmp_path), tmp_path / "out.parquet"
    expect_error(
        tmp_path,
        ["score", source, "-o", out, "--metric", "el2n", "--quiet"],
        130,
        f"interrupted; {out} was not written; the probe runs in {tmp_path / 'out.probes'} continue from their last "
        "finished epoch when the same command runs again",
    )


SLOW_PRUNE = """
import sys, time
import datadiet_cli.commands.prune as prune_command

def slow_prune(*args):
    print("pruning", flush=True)
    time.sleep(60)

prune_command.prune_manifest = slow_prune
from datadiet_cli.cli import main
main()
"""


def test_sigint_to_a_running_process(tmp_path: Path) -> None:
    source, out = scored_manifest(tmp_path), tmp_path / "out.parquet"
    before = tree(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "300"}
    args = [sys.executable, "-c", SLOW_PRUNE, *map(str, prune_args(source, out))]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None and process.stdout.readline() == "pruning\n"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stdout, stderr) == (130, "", "error: interrupted; no output was written\n")
    assert tree(tmp_path) == before


# -- 6. overwriting an existing output ---------------------------------------------------------------------


def test_an_existing_output_is_replaced_and_kept_whole_when_the_step_fails(tmp_path: Path) -> None:
    source, out = scored_manifest(tmp_path), tmp_path / "out.parquet"
    out.write_bytes(b"an older output")
    assert cli(*prune_args(source, out, "--quiet")).exit_code == 0
    assert read_manifest(out).num_rows == 4  # replaced
    expect_error(tmp_path, prune_args(source, out, "--count", "99"), 2,
                 "give exactly one of --fraction or --count")  # fmt: skip
    assert read_manifest(out).num_rows == 4  # a failed run leaves the earlier output as it was


def test_a_probe_interrupted_before_its_first_checkpoint_is_resumed_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What score's Ctrl-C line promises: rerunning continues every probe run, even one with only config.json."""
    from datadiet_cli.io.rundir import RunDir
    from datadiet_cli.score import probes
    from datadiet_cli.score.config import ScoreConfig
    from datadiet_cli.score.registry import Metric

    calls: list[tuple[Path, bool]] = []

    def train_run(manifest: object, config: object, run_dir: Path, **options: object) -> None:
        calls.append((Path(run_dir), bool(options["resume"])))

    monkeypatch.setitem(sys.modules, "datadiet_cli.train.loop", types.SimpleNamespace(train_run=train_run))
    manifest = read_manifest(scored_manifest(tmp_path))
    config = ScoreConfig(metric=Metric.el2n, probes=2, recipe="fast", device="cpu")
    RunDir(tmp_path / "probes" / "probe-00").open({"settings": "recorded"}, resume=False)  # killed before epoch 1
    probes.train_probes(manifest, config, tmp_path / "probes", None, None)
    assert calls == [(tmp_path / "probes" / "probe-00", True), (tmp_path / "probes" / "probe-01", False)]


def test_a_name_the_file_system_cannot_hold_is_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    source = scored_manifest(tmp_path)
    too_long = tmp_path / ("x" * 300 + ".parquet")
    expect_error(tmp_path, ["prune", source, "-o", too_long, "--keep", "random", "--fraction", "0.5"], 2,
                 f"-o {too_long}: cannot be used (file name too long); choose another -o path")  # fmt: skip
    # The name fits, but its temporary's does not: refused up front too, not at the final write.
    fits = tmp_path / "new" / "deeper" / ("y" * 247 + ".parquet")
    expect_error(tmp_path, ["prune", source, "-o", fits, "--keep", "random", "--fraction", "0.5"], 2,
                 f"-o {fits}: cannot be used (file name too long); choose another -o path")  # fmt: skip


def test_a_write_that_fails_removes_the_folders_made_for_it(tmp_path: Path) -> None:
    from datadiet_cli.io.files import atomic_path

    target = tmp_path / "new" / "deeper" / "out.parquet"
    with pytest.raises(RuntimeError, match="the writer failed"), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("the writer failed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "mine.txt").write_text("a file of the user's")
    with pytest.raises(RuntimeError), atomic_path(target):
        raise RuntimeError("again")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["mine.txt"]  # only what it made goes
