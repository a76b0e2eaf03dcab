"""summary.md: the document's frame, and one function per section turning a part's data into Markdown lines.

A section that describes a figure is given the figure's file name, so the name lives only in the
report's registry (report.registry).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from datadiet_cli import __version__
from datadiet_cli.io.clock import recorded_time
from datadiet_cli.report.runs import RunRecord, Selection
from datadiet_cli.report.scores import ContactSheet
from datadiet_cli.report.stats import (
    Cell,
    ClassBalance,
    ClusterOverlap,
    Correlation,
    SizeCurve,
    by_panel,
    random_baseline,
)

SUMMARY_FILE = "summary.md"


def summary_markdown(files: Sequence[str], sections: Sequence[str], notes: Sequence[str]) -> str:
    """The whole document: title, when and what was written, the sections' lines, then the notes."""
    now = recorded_time()
    lines = ["# datadiet report", "", f"Written {now} by datadiet {__version__}. Files: {', '.join(files)}.", ""]
    lines += sections
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


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


def _heading(title: str, intro: str) -> list[str]:
    """A summary.md section's title and the paragraph that says how to read it."""
    return [f"## {title}", "", intro, ""]


def runs_section(runs: Sequence[RunRecord], file: str) -> list[str]:
    """Every run and how its lineage was read; `file` holds the same rows as CSV."""
    lines = _heading(
        f"Runs read ({len(runs)})",
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
        for run in runs
    ]
    header = ("run", "metric", "keep", "fraction", "balanced", "start size", "rows", "seed", "prune seed")
    return lines + _table((*header, "top-1", "top-5", "setting"), rows)


def fraction_section(cells: Sequence[Cell], file: str) -> list[str]:
    """Per panel of the figure: its cells against keep=random, then the same top-1 at a glance."""
    lines = _heading(
        f"Test error against fraction kept (`{file}`)",
        "Mean ± sample std over the runs of each cell (n runs: seeds). Δ random: this cell's mean error minus "
        "keep=random's at the same fraction, in points (negative = better than random).",
    )
    for (setting, start_size), panel in by_panel(cells).items():
        lines += [f"### {setting}, starting from {start_size:,} examples", ""]
        rows = []
        for cell in panel:
            baseline = random_baseline(cells, cell)
            delta = (
                "-"
                if baseline is None or baseline is cell or baseline.selection == cell.selection
                else f"{100 * (cell.error - baseline.error):+.2f}"
            )
            rows.append(
                (
                    cell.selection.label,
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
        lines += ["Top-1 % (mean ± std over seeds) by fraction kept:", "", *_accuracy_grid(panel)]
    return lines


def _grid_value(cell: Cell) -> str:
    return _percent(cell.top1, cell.top1_std if cell.n > 1 else None)


def _accuracy_grid(cells: Sequence[Cell]) -> list[str]:
    """One row per selection, one column per fraction kept (largest first): the results table at a glance."""
    fractions = sorted({cell.fraction for cell in cells}, reverse=True)
    by_selection: dict[Selection, dict[float, Cell]] = defaultdict(dict)
    for cell in cells:
        by_selection[cell.selection][cell.fraction] = cell
    order = sorted(by_selection, key=lambda selection: (not selection.is_reference, not selection.is_random, selection))
    rows = [
        (
            selection.label,
            *(_grid_value(by_selection[selection][f]) if f in by_selection[selection] else "" for f in fractions),
        )
        for selection in order
    ]
    return _table(("policy", *(f"{f:g}" for f in fractions)), rows)


def easy_hard_section(pairs: Sequence[tuple[Cell, Cell]], file: str) -> list[str]:
    """The paper's first prediction: keep easy when data is scarce, keep hard when it is abundant."""
    lines = _heading(
        "Keep easy or keep hard?",
        "The paper predicts keep easy wins from small starting sets and keep hard from large ones. "
        "Top-1 % (mean ± std over seeds); the difference is easy minus hard, in points.",
    )
    rows = [
        (
            easy.setting,
            easy.selection.metric + (" + balance" if easy.selection.balanced else ""),
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


def _size_title(file: str) -> list[str]:
    return [f"## Test error against pruned dataset size (`{file}`)", ""]


def size_section(curves: Sequence[SizeCurve], file: str) -> list[str]:
    """Both fits of every size curve, and which one fits better."""
    lines = [
        *_size_title(file),
        "Fits by least squares on log error: power law error = a·P^(−ν), exponential error = a·exp(−b·P). "
        "rms = root-mean-square residual of ln(error); the smaller one fits better. With 2 sizes both fits are exact.",
        "",
    ]
    rows = []
    for curve in curves:
        power, exponential = curve.power, curve.exponential
        better = "-"
        if power and exponential and power.points > 2:
            better = "power" if power.rms_log < exponential.rms_log else "exponential"
        rows.append(
            (
                curve.setting,
                curve.selection.label,
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


def size_not_drawn(start_sizes: Sequence[int], file: str) -> list[str]:
    """Why there is no size figure: every run started from the same size(s) per selection and fraction."""
    return [
        *_size_title(file),
        f"Not drawn: every policy and fraction starts from one size ({', '.join(f'{s:,}' for s in start_sizes)} "
        "examples). Sweep several starting sizes (`datadiet ingest --per-class N`, or `datadiet prune --keep random --count N` first) to see "
        "how test error scales with data.",
        "",
    ]


def manifests_section(paths: Sequence[str], file: str) -> list[str]:
    """The scored manifests as given (the figures below name what they took from each)."""
    return ["## Scored manifests read", ""] + [f"- `{path}`" for path in paths] + [""]


def correlation_section(correlation: Correlation, file: str) -> list[str]:
    names, rho = correlation.names, correlation.rho
    lines = _heading(
        f"Spearman rank correlation between scores (`{file}`)",
        f"On the {correlation.rows:,} examples every manifest holds; order from average-linkage clustering on 1 − ρ.",
    )
    table_rows = [(name, *(f"{value:.3f}" for value in rho[i])) for i, name in enumerate(names)]
    return lines + _table(("", *names), table_rows)


def cluster_section(overlaps: Sequence[ClusterOverlap], file: str) -> list[str]:
    lines = _heading(
        f"k-means clusters against classes (`{file}`)",
        "Purity: share of examples in their cluster's majority class. Adjusted Rand index: 0 = chance, 1 = the classes.",
    )
    rows = [
        (f"`{overlap.manifest}`", overlap.counts.shape[0], f"{overlap.purity:.3f}", f"{overlap.adjusted_rand:.3f}")
        for overlap in overlaps
    ]
    return lines + _table(("manifest", "clusters", "purity", "adjusted Rand"), rows) + [""]


def balance_section(balance: ClassBalance, file: str) -> list[str]:
    lines = _heading(
        f"Class balance against fraction kept (`{file}`)",
        "b = expected min/max size ratio of two random classes (1 = balanced). 'balanced' = after `datadiet balance "
        f"--min-ratio {balance.min_ratio:g}`.",
    )
    fractions = balance.curves[0].fractions
    rows = []
    for curve in balance.curves:
        label = curve.score if curve.keep == "random" else f"{curve.score}, keep {curve.keep}"
        rows.append((label, "pruned", *(f"{b:.3f}" for b in curve.pruned)))
        rows.append((label, "balanced", *(f"{b:.3f}" for b in curve.balanced)))
    return lines + _table(("score", "", *(f"f={f:g}" for f in fractions)), rows)


def extremes_section(sheets: Sequence[ContactSheet], file: str) -> list[str]:
    """The ids on every contact sheet (each sheet names its own file)."""
    lines = ["## Easiest and hardest examples per class", ""]
    for sheet in sheets:
        lines += [f"### {sheet.score} (`{sheet.file}`)", ""]
        rows = [
            (name, ", ".join(easy), ", ".join(hard))
            for name, easy, hard in zip(sheet.classes, sheet.easiest, sheet.hardest, strict=True)
        ]
        lines += _table(("class", "easiest ids (easiest first)", "hardest ids (hardest first)"), rows)
    return lines
