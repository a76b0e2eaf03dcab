"""The layout is the architecture (docs/architecture.md): these tests keep it from eroding."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "datadiet_cli"
# What each stage package may import from datadiet_cli, besides itself. Nothing imports upwards:
# io and data know nothing of the stages, and report reads runs without training anything.
ALLOWED = {
    "io": {"errors"},
    "data": {"errors", "io"},
    "select": {"errors", "io", "data"},
    "train": {"errors", "io", "data", "device", "distributed"},
    "cluster": {"errors", "io", "data", "device", "distributed"},
    "score": {"errors", "io", "data", "train", "device", "distributed"},
    "report": {"errors", "io", "data", "select"},
    "theory": {"errors", "io", "data"},
}
RUN_FOLDER_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "dynamics.parquet", "eval.json")


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@functools.cache
def nodes(path: Path) -> list[ast.AST]:
    """Every node of a module's syntax tree, parsed once for all the tests here."""
    return list(ast.walk(ast.parse(path.read_text())))


def imported_packages(path: Path) -> set[str]:
    """The top-level datadiet_cli packages a module imports (at any depth in the file)."""
    found = set()
    for node in nodes(path):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("datadiet_cli."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "datadiet_cli":
            found.update(alias.name for alias in node.names if not alias.name.startswith("__"))
    return found


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_no_stage_imports_upwards(stage: str) -> None:
    wrong = {
        str(path.relative_to(PACKAGE)): sorted(imported_packages(path) - ALLOWED[stage] - {stage})
        for path in modules(PACKAGE / stage)
    }
    assert {name: packages for name, packages in wrong.items() if packages} == {}


def test_run_folder_file_names_are_declared_only_by_rundir() -> None:
    naming = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in modules(PACKAGE)
        if path != PACKAGE / "io" / "rundir.py"
        for name in RUN_FOLDER_FILES
        for node in nodes(path)
        if isinstance(node, ast.Constant) and node.value == name
    ]
    assert naming == []


def test_every_command_body_is_at_most_40_lines() -> None:
    lengths = {}
    for path in modules(PACKAGE / "commands"):
        for node in nodes(path):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                body = node.body[1:] if ast.get_docstring(node) is not None else node.body
                lengths[f"{path.stem}.{node.name}"] = body[-1].end_lineno - body[0].lineno + 1
    assert lengths and {name: n for name, n in lengths.items() if n > 40} == {}


def test_no_library_module_exceeds_500_lines() -> None:
    lengths = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in modules(PACKAGE)}
    assert {name: n for name, n in lengths.items() if n > 500} == {}


def test_error_classes_are_declared_only_in_errors_py() -> None:
    elsewhere = [
        f"{path.relative_to(PACKAGE)}: {node.name}"
        for path in modules(PACKAGE)
        if path != PACKAGE / "errors.py"
        for node in nodes(path)
        if isinstance(node, ast.ClassDef)
        and any(isinstance(base, ast.Name) and base.id.endswith("Error") for base in node.bases)
    ]
    assert elsewhere == []
