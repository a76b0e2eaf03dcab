"""The report's figures: each function draws one matplotlib Figure from report.stats data; `png` saves it.

matplotlib is imported inside the functions (Agg backend), so the CLI starts without it. A figure
is returned rather than saved so that what it plots can be checked (tests read its artists).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from datadiet_cli.report.runs import Selection
from datadiet_cli.report.scores import ContactSheet
from datadiet_cli.report.stats import Cell, ClassBalance, ClusterOverlap, Correlation, SizeCurve, by_panel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 150
T = TypeVar("T")


def png(draw: Callable[[T], Figure]) -> Callable[[T, Path], None]:
    """`draw` as a writer of a PNG file: the figure is saved at DPI and closed."""

    def write(data: T, path: Path) -> None:
        figure = draw(data)
        figure.savefig(path, dpi=DPI)
        _pyplot().close(figure)

    return write


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _selection_style(selection: Selection, colors: Mapping[str, Any]) -> dict[str, Any]:
    if selection.is_reference:
        return {"color": "black", "marker": "*", "linestyle": "none", "markersize": 11}
    if selection.is_random:
        return {"color": "black", "marker": "s", "linestyle": "--"}
    linestyle = {"hard": "-", "easy": ":"}.get(selection.keep, "-.")
    style = {"color": colors[selection.metric], "marker": "o", "linestyle": linestyle}
    if selection.balanced:
        style |= {"marker": "^", "markerfacecolor": "white"}
    return style


def _metric_colors(metrics: Iterable[str]) -> dict[str, Any]:
    plt = _pyplot()
    palette = plt.get_cmap("tab10").colors
    names = sorted(set(metrics))
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _panel_grid(plt: Any, count: int) -> tuple[Any, list[Any]]:
    """A figure with `count` panels, at most 3 per row; the unused ones hidden."""
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.8 * rows), squeeze=False)
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat)[:count]


def _errorbar(axis: Any, cells: Sequence[Cell], label: str, style: Mapping[str, Any], x: str = "fraction") -> None:
    xs = [cell.fraction if x == "fraction" else cell.rows for cell in cells]
    ys = [100 * cell.error for cell in cells]
    spread = [0.0 if math.isnan(cell.error_std) else 100 * cell.error_std for cell in cells]
    axis.errorbar(xs, ys, yerr=spread, label=label, capsize=3, **style)


def error_vs_fraction(cells: Sequence[Cell]) -> Figure:
    """Fig. 5B/C: test error against fraction kept; one curve per selection, unpruned runs closing every curve."""
    plt = _pyplot()
    panels = by_panel(cells)
    colors = _metric_colors(
        cell.selection.metric for cell in cells if not (cell.selection.is_random or cell.selection.is_reference)
    )
    figure, axes = _panel_grid(plt, len(panels))
    for axis, ((setting, start_size), panel) in zip(axes, panels.items(), strict=False):
        reference = [cell for cell in panel if cell.selection.is_reference]
        selections = sorted({cell.selection for cell in panel if not cell.selection.is_reference})
        for selection in selections:
            points = sorted((c for c in panel if c.selection == selection), key=lambda c: c.fraction)
            if reference and points[-1].fraction < 1.0:
                points.append(reference[0])  # pruning nothing is the same run for every metric
            _errorbar(axis, points, selection.label, _selection_style(selection, colors))
        for cell in reference:
            _errorbar(axis, [cell], "unpruned", _selection_style(cell.selection, colors))
        axis.set_xlabel("fraction of training data kept")
        axis.set_ylabel("test error (%)")
        axis.set_title(f"{setting}\nstarting from {start_size:,} examples", fontsize=10)
        axis.set_xlim(0, 1.05)
        axis.set_ylim(bottom=0)  # an error axis that starts at 0 does not exaggerate small differences
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Test error vs. fraction of data kept (mean ± std over seeds)", fontsize=11)
    figure.tight_layout()
    return figure


def error_vs_size(curves: Sequence[SizeCurve]) -> Figure:
    """Fig. 3/11: test error against pruned size on log axes, per selection; colour = fraction kept, with fits."""
    plt = _pyplot()
    panels: dict[tuple[str, Selection], list[SizeCurve]] = defaultdict(list)
    for curve in curves:
        panels[(curve.setting, curve.selection)].append(curve)
    references = {curve.setting: curve for curve in curves if curve.selection.is_reference}
    keys = [key for key in sorted(panels) if not key[1].is_reference] or sorted(panels)
    figure, axes = _panel_grid(plt, len(keys))
    fractions = sorted({curve.fraction for curve in curves if not curve.selection.is_reference})
    cmap = plt.get_cmap("viridis")
    for axis, key in zip(axes, keys, strict=True):
        shown = list(panels[key])
        if key[0] in references and not key[1].is_reference:
            shown.append(references[key[0]])
        for curve in shown:
            if curve.selection.is_reference:
                color, label = "black", "unpruned (f=1)"
            else:
                position = fractions.index(curve.fraction) / max(1, len(fractions) - 1)
                color, label = cmap(0.85 * position), f"f={curve.fraction:g}"
            if curve.power is not None and curve.exponential is not None:
                label += f": ν={curve.power.exponent:.2f}, b={curve.exponential.exponent:.2g}"
            _errorbar(axis, curve.cells, label, {"color": color, "marker": "o", "linestyle": "none"}, x="rows")
            sizes = np.geomspace(curve.cells[0].rows, curve.cells[-1].rows, 50)
            for fit, linestyle in ((curve.power, "-"), (curve.exponential, "--")):
                if fit is not None:
                    axis.plot(sizes, 100 * fit.predict(sizes), color=color, linestyle=linestyle, linewidth=1)
        axis.set_xscale("log")
        axis.set_yscale("log")
        _plain_log_ticks(axis.yaxis)
        axis.set_xlabel("pruned training set size P (examples)")
        axis.set_ylabel("test error (%)")
        axis.set_title(f"{key[1].label}\n{key[0]}", fontsize=10)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    figure.suptitle(
        "Test error vs. pruned dataset size (mean ± std over seeds), per fraction kept f: "
        "power law a·P^-ν (solid), exponential a·e^-bP (dashed)",
        fontsize=11,
    )
    figure.tight_layout()
    return figure


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis ticks at 1, 2, 5 x 10^k written as plain numbers (3, 20, 50) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def score_correlation(correlation: Correlation) -> Figure:
    """Fig. 5A: Spearman rank correlation between score columns, in clustered order."""
    plt = _pyplot()
    names, rho = correlation.names, correlation.rho
    size = max(4.5, 0.7 * len(names) + 2.5)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(rho, cmap="RdBu_r", vmin=-1, vmax=1)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            value = rho[i, j]
            text = "nan" if math.isnan(value) else f"{value:.2f}"
            axis.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if abs(value) > 0.6 else "black")
    figure.colorbar(image, ax=axis, label="Spearman ρ")
    title = f"Spearman rank correlation of scores\n({correlation.rows:,} examples, clustered order)"
    axis.set_title(title, fontsize=11)
    figure.tight_layout()
    return figure


def cluster_classes(overlaps: Sequence[ClusterOverlap]) -> Figure:
    """Fig. 6A: share of each cluster's examples in each class; clusters sorted by their majority class."""
    plt = _pyplot()
    width = max(5.0, 0.45 * max(len(o.classes) for o in overlaps) + 2.5)
    height = max(4.0, 0.3 * max(o.counts.shape[0] for o in overlaps) + 2.0)
    figure, axes = plt.subplots(1, len(overlaps), figsize=(width * len(overlaps), height), squeeze=False)
    for axis, overlap in zip(axes[0], overlaps, strict=True):
        sizes = overlap.counts.sum(axis=1, keepdims=True)
        shares = overlap.counts / np.maximum(sizes, 1)
        order = np.lexsort((-shares.max(axis=1), shares.argmax(axis=1)))
        image = axis.imshow(shares[order], cmap="viridis", vmin=0, vmax=1, aspect="auto")
        axis.set_xticks(range(len(overlap.classes)), overlap.classes, rotation=45, ha="right")
        axis.set_yticks(range(len(order)), [f"{sizes[i, 0]:,}" for i in order], fontsize=7)
        axis.set_xlabel("class")
        axis.set_ylabel("cluster (its size), sorted by majority class")
        axis.set_title(
            f"{Path(overlap.manifest).name}: purity {overlap.purity:.2f}, ARI {overlap.adjusted_rand:.2f}", fontsize=10
        )
        figure.colorbar(image, ax=axis, label="share of the cluster's examples")
    figure.tight_layout()
    return figure


def class_balance(balance: ClassBalance) -> Figure:
    """Fig. 20: class balance b against fraction kept for each score, pruned (solid) and balanced (dashed)."""
    plt = _pyplot()
    curves = balance.curves
    keeps = [keep for keep in ("hard", "easy") if any(curve.keep == keep for curve in curves)]
    colors = _metric_colors(curve.score for curve in curves if curve.keep != "random")
    figure, axes = plt.subplots(1, len(keeps), figsize=(6.4 * len(keeps), 4.8), squeeze=False)
    for axis, keep in zip(axes[0], keeps, strict=True):
        for curve in curves:
            if curve.keep not in (keep, "random"):
                continue
            color = "black" if curve.keep == "random" else colors[curve.score]
            name = curve.score
            axis.plot(curve.fractions, curve.pruned, color=color, marker="o", markersize=3, label=f"{name}, pruned")
            axis.plot(curve.fractions, curve.balanced, color=color, linestyle="--", marker="^", markersize=3,
                      markerfacecolor="white", label=f"{name}, + balance")  # fmt: skip
        axis.set_xlabel("fraction of training data kept")
        axis.set_ylabel("class balance b (E[min/max class size])")
        axis.set_title(f"keep {keep}", fontsize=10)
        axis.set_xlim(0, 1.02)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    title = f"Class balance of pruned sets, without and with balance --min-ratio {balance.min_ratio:g}"
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def contact_sheet(sheet: ContactSheet) -> Figure:
    """Fig. 6B/C: one row per class running from easy to hard: its easiest images, a gap, its hardest."""
    plt = _pyplot()
    thumbnails, per_side = sheet.thumbnails, sheet.per_side
    height, width = next(images[0].shape[:2] for side in thumbnails for images in side if images)
    border = max(1, width // 16)
    gap = max(2, width // 2)
    cell_w, cell_h = width + border, height + border
    mosaic_w = 2 * per_side * cell_w + gap + border
    mosaic_h = len(thumbnails) * cell_h + border
    mosaic = np.full((mosaic_h, mosaic_w, 3), 255, dtype=np.uint8)
    for row, (easy, hard) in enumerate(thumbnails):
        top = row * cell_h + border
        # Hardest last, so each row reads from the easiest (far left) to the hardest (far right).
        hard_left = per_side * cell_w + gap + (per_side - len(hard)) * cell_w
        placed = [(column * cell_w, image) for column, image in enumerate(easy)]
        placed += [(hard_left + column * cell_w, image) for column, image in enumerate(reversed(hard))]
        for left, image in placed:
            mosaic[top : top + height, left + border : left + border + width] = image
    width_in = float(np.clip(mosaic_w / 50, 7.0, 14.0))
    figure, axis = plt.subplots(figsize=(width_in + 1.0, width_in * mosaic_h / mosaic_w + 1.2))
    axis.imshow(mosaic, interpolation="nearest")
    axis.set_yticks([row * cell_h + border + height / 2 for row in range(len(thumbnails))], sheet.classes)
    axis.set_xticks(
        [per_side * cell_w / 2, per_side * cell_w + gap + per_side * cell_w / 2],
        [f"{per_side} easiest (easiest at far left)", f"{per_side} hardest (hardest at far right)"],
    )
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    axis.set_title(f"{sheet.score}: easiest and hardest examples per class (lowest and highest score)", fontsize=11)
    figure.tight_layout()
    return figure


def write_contact_sheets(sheets: Sequence[ContactSheet], folder: Path) -> None:
    """Every sheet into FOLDER under its own file name."""
    write = png(contact_sheet)
    for sheet in sheets:
        write(sheet, folder / sheet.file)
