"""What the report shows: one Part per figure or table, in summary.md order.

A Part names the file it writes, computes its data from the report's inputs, writes the file and
renders its summary.md section. `build_report` loops over PARTS, and the files a report owns
(removed from OUT_DIR when a later report no longer writes them) are the PARTS' files plus
summary.md. Adding a figure is one Part here (listed in PARTS), with its compute, drawing and section.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cached_property
from pathlib import Path
from typing import Generic, TypeVar

from datadiet_cli.io.manifest import Manifest
from datadiet_cli.report import figures, markdown
from datadiet_cli.report.runs import RunRecord, with_references, write_results_csv
from datadiet_cli.report.scores import (
    SHEET_FILE,
    ContactSheet,
    ScoreSource,
    class_balance,
    cluster_overlaps,
    contact_sheets,
    score_correlation,
)
from datadiet_cli.report.stats import (
    Cell,
    ClassBalance,
    ClusterOverlap,
    Correlation,
    SizeCurve,
    aggregate,
    easy_hard_pairs,
    size_curves,
)

T = TypeVar("T")


@dataclass(frozen=True)
class ReportConfig:
    """The options of `datadiet report` that change what is shown (inputs and OUT_DIR are build_report's)."""

    scores: tuple[str, ...] = ()  # score columns for the manifest figures; () = every described score column
    classes: tuple[str, ...] = ()  # classes of the contact sheets (names or label numbers); () = the first 10
    per_side: int = 8  # easiest and hardest images shown per class (the paper's Fig. 6 shows a handful)
    balance_fractions: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # Fig. 20's x
    min_ratio: float = 0.5  # balance's guarantee in the class-balance figure (the paper's 50% of the fair share)
    seed: int = 0  # tie-breaking in the balance figure and the contact sheets, as prune's --seed


@dataclass(frozen=True)
class ReportInputs:
    """Everything the parts compute from: the runs and manifests read, checked, and the options."""

    config: ReportConfig  # the report's options
    runs: tuple[RunRecord, ...]  # run folders read, in the order given
    manifests: tuple[Manifest, ...]  # scored manifests read, in the order given
    manifest_paths: tuple[str, ...]  # those manifests as given, the names the summary shows
    sources: tuple[ScoreSource, ...]  # the score columns to show

    @cached_property
    def cells(self) -> list[Cell]:
        """The runs (and the references they imply) averaged over seeds; shared by the run parts."""
        return aggregate(with_references(self.runs))


def _no_lines(inputs: ReportInputs, file: str) -> list[str]:
    """Most parts say nothing in summary.md without data; what they could not show is in the notes."""
    return []


@dataclass(frozen=True, eq=False)
class Part(Generic[T]):
    """One figure or table of the report."""

    file: str  # what it writes into OUT_DIR; a pattern with * when it names one file per item itself; "" for none
    compute: Callable[[ReportInputs, list[str]], T | None]  # its data, noting what it cannot show; None = nothing
    write: Callable[[T, Path], None] | None  # writes OUT_DIR/file (given OUT_DIR itself when `file` has a *)
    section: Callable[[T, str], list[str]]  # its summary.md lines, from its data and `file`
    absent: Callable[[ReportInputs, str], list[str]] = _no_lines  # summary.md lines when compute gave None

    def target(self, folder: Path) -> Path:
        return folder if "*" in self.file else folder / self.file

    def owns(self, name: str) -> bool:
        """Whether a file of this name in OUT_DIR is this part's (an earlier report's, when not rewritten)."""
        return bool(self.file) and fnmatchcase(name, self.file)


# -- computing each part's data from the inputs --------------------------------------------------------


def _runs(inputs: ReportInputs, notes: list[str]) -> tuple[RunRecord, ...] | None:
    if len({run.test_set for run in inputs.runs}) > 1:
        notes.append("the runs were evaluated on different test manifests (see results.csv)")
    return inputs.runs or None


def _cells(inputs: ReportInputs, notes: list[str]) -> list[Cell] | None:
    return inputs.cells or None


def _easy_hard(inputs: ReportInputs, notes: list[str]) -> list[tuple[Cell, Cell]] | None:
    return easy_hard_pairs(inputs.cells) or None


def _size_curves(inputs: ReportInputs, notes: list[str]) -> list[SizeCurve] | None:
    return size_curves(inputs.cells) or None


def _one_start_size(inputs: ReportInputs, file: str) -> list[str]:
    if not inputs.runs:
        return []
    return markdown.size_not_drawn(sorted({run.start_size for run in inputs.runs}), file)


def _manifest_paths(inputs: ReportInputs, notes: list[str]) -> tuple[str, ...] | None:
    return inputs.manifest_paths or None


def _correlation(inputs: ReportInputs, notes: list[str]) -> Correlation | None:
    return score_correlation(inputs.sources, notes)


def _cluster_overlaps(inputs: ReportInputs, notes: list[str]) -> list[ClusterOverlap] | None:
    return cluster_overlaps(inputs.manifests, inputs.manifest_paths) or None


def _class_balance(inputs: ReportInputs, notes: list[str]) -> ClassBalance | None:
    config = inputs.config
    return class_balance(inputs.sources, config.balance_fractions, config.min_ratio, config.seed, notes)


def _contact_sheets(inputs: ReportInputs, notes: list[str]) -> list[ContactSheet] | None:
    config = inputs.config
    return contact_sheets(inputs.sources, config.classes, config.per_side, config.seed, notes) or None


# -- the registry ---------------------------------------------------------------------------------------

RUNS: Part[tuple[RunRecord, ...]] = Part("results.csv", _runs, write_results_csv, markdown.runs_section)
FRACTION: Part[list[Cell]] = Part(
    "error_vs_fraction.png", _cells, figures.png(figures.error_vs_fraction), markdown.fraction_section
)
EASY_HARD: Part[list[tuple[Cell, Cell]]] = Part("", _easy_hard, None, markdown.easy_hard_section)
SIZE: Part[list[SizeCurve]] = Part(
    "error_vs_size.png", _size_curves, figures.png(figures.error_vs_size), markdown.size_section, _one_start_size
)
MANIFESTS: Part[tuple[str, ...]] = Part("", _manifest_paths, None, markdown.manifests_section)
CORRELATION: Part[Correlation] = Part(
    "score_correlation.png", _correlation, figures.png(figures.score_correlation), markdown.correlation_section
)
CLUSTERS: Part[list[ClusterOverlap]] = Part(
    "cluster_classes.png", _cluster_overlaps, figures.png(figures.cluster_classes), markdown.cluster_section
)
BALANCE: Part[ClassBalance] = Part(
    "class_balance.png", _class_balance, figures.png(figures.class_balance), markdown.balance_section
)
EXTREMES: Part[list[ContactSheet]] = Part(
    SHEET_FILE.format("*"), _contact_sheets, figures.write_contact_sheets, markdown.extremes_section
)
# summary.md shows the parts in this order, and they compute (and note what they cannot show) in it too.
PARTS: tuple[Part, ...] = (RUNS, FRACTION, EASY_HARD, SIZE, MANIFESTS, CORRELATION, CLUSTERS, BALANCE, EXTREMES)


def owned(name: str, parts: Sequence[Part]) -> bool:
    """Whether a file of this name in OUT_DIR belongs to a report made of `parts`."""
    return name == markdown.SUMMARY_FILE or any(part.owns(name) for part in parts)
