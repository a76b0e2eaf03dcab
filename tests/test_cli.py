"""The CLI skin: help that teaches, one-line errors, exit codes, no torch import for --help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datadiet_cli import __version__
from datadiet_cli.cli import app
from datadiet_cli.io.manifest import read_manifest

runner = CliRunner()
# Written out by hand, so that a command lost from (or added to) the app, or listed out of order, fails a test.
PIPELINE = ["ingest", "score", "cluster", "prune", "balance", "train", "evaluate", "report", "theory"]
THEORY = ["error", "pareto", "crossover", "fmin", "simulate", "plot"]


def help_text(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result.output


def listed_commands(text: str) -> list[str]:
    """The command names in the Commands panel of a --help, top to bottom (wrapped rows start with spaces)."""
    panel = text.split("─ Commands ─", 1)[1]
    return re.findall(r"^│ (\w+) ", panel, flags=re.MULTILINE)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"datadiet {__version__}"


def test_help_lists_the_pipeline_in_pipeline_order() -> None:
    assert listed_commands(help_text()) == PIPELINE
    assert listed_commands(help_text("theory")) == THEORY


@pytest.mark.parametrize("command", PIPELINE + [f"theory {name}" for name in THEORY])
def test_every_command_help_ends_with_an_example(command: str) -> None:
    description = help_text(*command.split()).split("╭─", 1)[0]  # the text above the first options panel
    assert description.strip().splitlines()[-1].strip().startswith(f"Example: datadiet {command} ")


@pytest.mark.parametrize("command", PIPELINE + [f"theory {name}" for name in THEORY])
def test_no_help_text_loses_words_to_markup(command: str) -> None:
    # Markdown help swallows <words> as HTML tags, leaving a double space where they stood.
    description = help_text(*command.split()).split("╭─", 1)[0]
    assert [line.strip() for line in description.splitlines() if "  " in line.strip()] == []


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from datadiet_cli.cli import app\n"
        "CliRunner().invoke(app, ['--help'])\n"
        "print('torch' in sys.modules)\n"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"


def test_unknown_option_is_one_line_with_exit_2() -> None:
    result = runner.invoke(app, ["prune", "x.parquet", "-o", "y.parquet", "--keep", "hardest"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: Invalid value for '--keep'")
    assert lines[0].endswith("(see 'datadiet prune --help')")


def test_missing_file_is_one_line_with_exit_1(tmp_path) -> None:
    result = runner.invoke(app, ["prune", str(tmp_path / "no.parquet"), "-o", str(tmp_path / "o.parquet"),
                                 "--keep", "random", "--fraction", "0.5"])  # fmt: skip
    assert result.exit_code == 1
    assert result.output == f"error: {tmp_path / 'no.parquet'}: no such file\n"
    assert not (tmp_path / "o.parquet").exists()


def test_python_dash_m_entry_point() -> None:
    completed = subprocess.run([sys.executable, "-m", "datadiet_cli", "--version"], capture_output=True, text=True)
    assert completed.returncode == 0 and completed.stdout.strip() == f"datadiet {__version__}"


SAMPLES = Path(__file__).resolve().parents[1] / "sample_manifests"


def test_sample_manifests_chain_through_prune_and_balance(tmp_path: Path) -> None:
    kept, balanced = tmp_path / "kept.parquet", tmp_path / "balanced.parquet"
    scored = SAMPLES / "digits_scored.parquet"
    result = runner.invoke(app, ["prune", str(scored), "-o", str(kept), "--score", "random", "--keep", "easy",
                                 "--fraction", "0.2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith("kept 288 of 1,442 rows (20.0%, keep easy by random)")
    result = runner.invoke(app, ["balance", str(kept), "-o", str(balanced), "--quiet"])
    assert result.exit_code == 0, result.output
    assert read_manifest(balanced).num_rows == 288
    assert read_manifest(SAMPLES / "digits_kept.parquet").lineage().last("prune").stats["rows_kept"] == 433
