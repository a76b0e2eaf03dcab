"""The Make recipes in cli/: dry runs only (`make -n`), so nothing trains here."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "cli" / "Makefile"
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def dry_run(out: Path, *variables: str, target: str = "sweep") -> list[list[str]]:
    """The commands `make -n` would run, split into words, for a sweep under `out`."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-f", str(MAKEFILE), "-n", target, f"OUT={out}", *variables],
        capture_output=True,
        text=True,
        check=True,
    )
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip() and not line.startswith("make")]


def outputs(commands: list[list[str]]) -> list[str]:
    """Every file a datadiet command writes (its -o), plus the eval.json evaluate leaves in RUN_DIR."""
    written = []
    for words in commands:
        if words[:1] == ["datadiet"] and "-o" in words:
            written.append(words[words.index("-o") + 1])
        elif words[:2] == ["datadiet", "evaluate"]:
            written.append(f"{words[2]}/eval.json")
    return written


SWEEP = ("METRICS=el2n proto_dist", "FRACTIONS=0.3 0.6", "KEEPS=hard easy", "SEEDS=0 1")


def test_sweep_has_every_cell_once_and_no_two_recipes_write_one_file(tmp_path: Path) -> None:
    commands = dry_run(tmp_path, *SWEEP)
    written = Counter(outputs(commands))
    assert [path for path, count in written.items() if count > 1] == []  # safe under make -j
    trains = [words for words in commands if words[:2] == ["datadiet", "train"]]
    # per seed: the full-data reference + per fraction (random + 2 metrics x 2 policies)
    assert len(trains) == 2 * (1 + 2 * (1 + 2 * 2))
    cells = {Path(words[words.index("-o") + 1]).parent.name for words in trains}
    assert "el2n-easy-0.3-s1" in cells and "proto_dist-hard-0.6-s0" in cells and "full-s1" in cells
    assert "random-random-0.6-s0" in cells and not any(cell.startswith("random-hard") for cell in cells)
    scores = [words for words in commands if words[:2] == ["datadiet", "score"]]
    clusters = [words for words in commands if words[:2] == ["datadiet", "cluster"]]
    assert len(scores) == 1 and len(clusters) == 1  # computed once, shared by every cell


def test_random_cells_prune_without_a_score_and_every_cell_is_balanced(tmp_path: Path) -> None:
    commands = dry_run(tmp_path, *SWEEP)
    prunes = [words for words in commands if words[:2] == ["datadiet", "prune"]]
    for words in prunes:
        policy = words[words.index("--keep") + 1]
        assert ("--score" in words) == (policy != "random"), words
        assert words[2].endswith("train.parquet") == (policy == "random")
    balances = [words for words in commands if words[:2] == ["datadiet", "balance"]]
    assert len(balances) == len(prunes)
    assert all(words[words.index("--min-ratio") + 1] == "0.5" for words in balances)


def test_per_class_and_encoder_variables_reach_the_commands(tmp_path: Path) -> None:
    commands = dry_run(tmp_path, "DATASET=/data/cifar10", "PER_CLASS=200", "METRICS=sup_proto_dist", "SEEDS=0")
    ingest_train = next(words for words in commands if words[:2] == ["datadiet", "ingest"] and "train" in words)
    assert ingest_train[ingest_train.index("--per-class") + 1] == "200"
    ingest_test = next(words for words in commands if words[:2] == ["datadiet", "ingest"] and "test" in words)
    assert "--per-class" not in ingest_test  # the test set stays whole
    cluster = next(words for words in commands if words[:2] == ["datadiet", "cluster"])
    assert cluster[cluster.index("--encoder") + 1] == "swav-resnet50"
    digits = dry_run(tmp_path / "digits", "METRICS=proto_dist", "SEEDS=0")
    cluster = next(words for words in digits if words[:2] == ["datadiet", "cluster"])
    assert cluster[cluster.index("--encoder") + 1] == "pixels"


def test_full_no_drops_the_reference_runs_and_probe_epochs_per_metric(tmp_path: Path) -> None:
    commands = dry_run(tmp_path, "METRICS=el2n forgetting", "FRACTIONS=0.5", "SEEDS=0", "FULL=no",
                       "PROBE_EPOCHS=4", "PROBE_EPOCHS_forgetting=16")  # fmt: skip
    trains = [words for words in commands if words[:2] == ["datadiet", "train"]]
    assert not any("full-s0" in " ".join(words) for words in trains)
    epochs = {words[words.index("--metric") + 1]: words[words.index("--probe-epochs") + 1]
              for words in commands if words[:2] == ["datadiet", "score"]}  # fmt: skip
    assert epochs == {"el2n": "4", "forgetting": "16"}


def test_finished_steps_are_not_redone(tmp_path: Path) -> None:
    """Make every file the sweep would write, oldest first: then nothing is left to do."""
    commands = dry_run(tmp_path, *SWEEP)
    for path in outputs(commands):
        if path.endswith("/run"):  # train's RUN_DIR: a folder, not a target
            continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()
        # make compares modification times; a tick between files keeps dependents strictly newer
        subprocess.run(["sleep", "0.01"], check=True)
    assert dry_run(tmp_path, *SWEEP) == []
    Path(tmp_path / "scored-el2n.parquet").touch()  # a re-scored metric re-runs only its own cells
    redone = outputs(dry_run(tmp_path, *SWEEP))
    assert len(redone) == 2 * 2 * 2 * 4  # el2n: 2 policies x 2 fractions x 2 seeds x (kept, balanced, run, eval)
    assert all(re.search(r"/cells/el2n-", path) for path in redone)
