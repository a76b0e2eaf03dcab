"""Scored manifests read for the report: which score columns to show, and what each manifest figure needs.

Everything here reads Manifests (columns, labels, a few images) and hands plain arrays to
report.stats; what cannot be shown is said in a note, not raised, so the rest of the report stands.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datadiet_cli.errors import ColumnError, DatadietError, OptionError
from datadiet_cli.io.manifest import Manifest
from datadiet_cli.report.stats import (
    BalanceCurve,
    ClassBalance,
    ClusterOverlap,
    Correlation,
    balance_curve,
    class_extremes,
    cluster_class_counts,
    correlation,
    purity,
)

RANDOM_CURVE = "keep random"  # the balance figure's reference curve (a score column may be called "random")
SHEET_FILE = "extremes_{}.png"  # one contact sheet per score, named by it
THUMBNAIL_SIDE = 64  # larger images are shrunk to this square on a contact sheet

Thumbnails = tuple[list[np.ndarray], list[np.ndarray]]  # one class's easiest and hardest images, RGB uint8


@dataclass(frozen=True)
class ScoreSource:
    """One score column of one manifest, under the name the report shows."""

    name: str  # the column, or MANIFEST_STEM:COLUMN when several manifests hold it
    column: str  # the column in the manifest
    manifest: Manifest  # where it is read from


@dataclass(frozen=True)
class ContactSheet:
    """Fig. 6B/C for one score: the easiest and hardest examples of each chosen class, ids and images."""

    score: str  # the score's name as shown
    file: str  # SHEET_FILE named by the score, unique within the report
    classes: tuple[str, ...]  # class names, one row each
    easiest: tuple[tuple[str, ...], ...]  # ids per class, easiest first
    hardest: tuple[tuple[str, ...], ...]  # ids per class, hardest first
    thumbnails: tuple[Thumbnails, ...]  # the images of those ids, per class, all of one size
    per_side: int  # columns on each side of a row (a class may have fewer images)


def described_score_columns(manifest: Manifest) -> list[str]:
    """Difficulty columns the metadata describes and the table holds (spreads such as el2n_std left out)."""
    columns = []
    for column, description in (manifest.meta.get("scores") or {}).items():
        spread = str((description or {}).get("metric", "")).endswith("_std") or "of" in (
            (description or {}).get("params") or {}
        )
        if manifest.has_column(column) and not spread:
            columns.append(column)
    return columns


def score_sources(manifests: Sequence[Manifest], wanted: Sequence[str] = ()) -> list[ScoreSource]:
    """The score columns to show: `wanted` (each must exist in some manifest), else every described one.

    A column found in several manifests is shown as MANIFEST_STEM:COLUMN for each.
    """
    found: list[tuple[str, Manifest]] = []
    for manifest in manifests:
        columns = [c for c in wanted if manifest.has_column(c)] if wanted else described_score_columns(manifest)
        found.extend((column, manifest) for column in columns)
    for column in wanted:
        if not any(found_column == column for found_column, _ in found):
            _missing_column(manifests, column)
    counts: dict[str, int] = defaultdict(int)
    for column, _ in found:
        counts[column] += 1
    sources = []
    for column, manifest in found:
        manifest.score(column)  # validated: numeric, no nulls, no NaN
        stem = Path(manifest.name).stem
        sources.append(ScoreSource(f"{stem}:{column}" if counts[column] > 1 else column, column, manifest))
    if manifests and not sources:
        names = ", ".join(m.name for m in manifests)
        raise ColumnError(f"{names}: no score columns; add them with `datadiet score` or `datadiet cluster`")
    return sources


def _missing_column(manifests: Sequence[Manifest], column: str) -> None:
    known = sorted({c for m in manifests for c in described_score_columns(m)})
    raise ColumnError(
        f"--score {column}: no score column '{column}' in {', '.join(m.name for m in manifests)} "
        f"(score columns there: {', '.join(known) or 'none'}); add it with `datadiet score` or `datadiet cluster`"
    )


def chosen_classes(manifest: Manifest, wanted: Sequence[str]) -> list[int]:
    """Label numbers of the contact-sheet classes: names or numbers as given, else the first 10."""
    names = manifest.classes
    if not wanted:
        return list(range(min(10, len(names))))
    labels = []
    for item in wanted:
        if item in names:
            labels.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            labels.append(int(item))
        else:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise OptionError(f"--classes {item}: no such class in {manifest.name} (classes: {shown})")
    return labels


def labels_or_none(manifest: Manifest) -> np.ndarray | None:
    try:
        return manifest.labels()
    except ColumnError:
        return None


# -- Fig. 5A: rank correlation ----------------------------------------------------------------------


def aligned_scores(sources: Sequence[ScoreSource]) -> tuple[dict[str, np.ndarray], int]:
    """Each source's scores on the ids that every source's manifest holds (in the first one's order)."""
    common: set[str] | None = None
    for source in sources:
        ids = set(source.manifest.ids().tolist())
        common = ids if common is None else common & ids
    assert common is not None
    first_ids = sources[0].manifest.ids()
    order = [example_id for example_id in first_ids.tolist() if example_id in common]
    aligned = {}
    for source in sources:
        position = {example_id: i for i, example_id in enumerate(source.manifest.ids().tolist())}
        rows = np.fromiter((position[example_id] for example_id in order), dtype=np.int64, count=len(order))
        aligned[source.name] = source.manifest.score(source.column)[rows]
    return aligned, len(order)


def score_correlation(sources: Sequence[ScoreSource], notes: list[str]) -> Correlation | None:
    """The correlation of every shown score on the shared examples; None (and a note) when it means nothing."""
    if not sources:
        return None
    if len(sources) < 2:
        notes.append("score correlation not drawn: it needs at least two score columns")
        return None
    aligned, rows = aligned_scores(sources)
    if rows < 3:
        notes.append(f"score correlation not drawn: the manifests share only {rows} example ids")
        return None
    return correlation(aligned, rows)


# -- Fig. 6A: clusters against classes --------------------------------------------------------------


def cluster_overlap(manifest: Manifest, name: str) -> ClusterOverlap:
    from sklearn.metrics import adjusted_rand_score

    labels, clusters = manifest.labels(), manifest.groups("cluster")
    counts = cluster_class_counts(clusters, labels, len(manifest.classes))
    ari = float(adjusted_rand_score(labels, clusters))
    return ClusterOverlap(name, counts, tuple(manifest.classes), purity(counts), ari)


def cluster_overlaps(manifests: Sequence[Manifest], names: Sequence[str]) -> list[ClusterOverlap]:
    """The overlap of every labeled manifest with a `cluster` column, under the name it was given by."""
    return [
        cluster_overlap(manifest, name)
        for manifest, name in zip(manifests, names, strict=True)
        if "cluster" in manifest.table.column_names and labels_or_none(manifest) is not None
    ]


# -- Fig. 20: class balance -------------------------------------------------------------------------


def class_balance(
    sources: Sequence[ScoreSource], fractions: Sequence[float], min_ratio: float, seed: int, notes: list[str]
) -> ClassBalance | None:
    """Keep hard and keep easy curves of every labeled source, then keep random's; None with no labels."""
    if not sources:
        return None
    # A fraction that keeps no row of the smallest manifest cannot be pruned to.
    smallest = min(source.manifest.num_rows for source in sources)
    usable = tuple(f for f in fractions if round(f * smallest) >= 1)
    curves: list[BalanceCurve] = []
    reference_labels = None
    for source in sources:
        labels = labels_or_none(source.manifest)
        if labels is None:
            notes.append(f"class balance of {source.name}: skipped, {source.manifest.name} has unlabeled rows")
            continue
        reference_labels = labels if reference_labels is None else reference_labels
        scores = source.manifest.score(source.column)
        for keep in ("hard", "easy"):
            pruned, balanced = balance_curve(scores, labels, keep, usable, min_ratio, seed)
            curves.append(BalanceCurve(source.name, keep, usable, tuple(pruned), tuple(balanced)))
    if reference_labels is None:
        return None
    # keep random on the first labeled manifest: the reference curve
    zeros = np.zeros(len(reference_labels))
    pruned, balanced = balance_curve(zeros, reference_labels, "random", usable, min_ratio, seed)
    curves.append(BalanceCurve(RANDOM_CURVE, "random", usable, tuple(pruned), tuple(balanced)))
    return ClassBalance(tuple(curves), min_ratio)


# -- Fig. 6B/C: contact sheets ----------------------------------------------------------------------


def contact_sheets(
    sources: Sequence[ScoreSource], classes: Sequence[str], per_side: int, seed: int, notes: list[str]
) -> list[ContactSheet]:
    """One sheet per source whose images can be shown, each with its own file name; a note for the others."""
    used: set[str] = set()
    sheets = []
    for source in sources:
        sheet = _contact_sheet(source, classes, per_side, seed, used, notes)
        if sheet is not None:
            sheets.append(sheet)
    return sheets


def _contact_sheet(
    source: ScoreSource, wanted: Sequence[str], per_side: int, seed: int, used: set[str], notes: list[str]
) -> ContactSheet | None:
    manifest = source.manifest
    labels = labels_or_none(manifest)
    if labels is None:
        notes.append(f"easiest/hardest images of {source.name}: skipped, {manifest.name} has unlabeled rows")
        return None
    scores = manifest.score(source.column)
    classes = chosen_classes(manifest, wanted)
    easiest, hardest = [], []
    for label in classes:
        easy_rows, hard_rows = class_extremes(scores, labels, label, per_side, seed)
        easiest.append(easy_rows)
        hardest.append(hard_rows)
    try:
        thumbnails = thumbnail_rows(manifest, easiest, hardest)
    except DatadietError as error:
        notes.append(f"easiest/hardest images of {source.name}: skipped, {error}")
        return None
    ids = manifest.ids()
    return ContactSheet(
        score=source.name,
        file=SHEET_FILE.format(_safe_name(source.name, used)),
        classes=tuple(manifest.classes[label] if label < len(manifest.classes) else str(label) for label in classes),
        easiest=tuple(tuple(ids[rows].tolist()) for rows in easiest),
        hardest=tuple(tuple(ids[rows].tolist()) for rows in hardest),
        thumbnails=tuple(thumbnails),
        per_side=per_side,
    )


def thumbnail_rows(
    manifest: Manifest, easiest: Sequence[np.ndarray], hardest: Sequence[np.ndarray]
) -> list[Thumbnails]:
    """The chosen images as RGB uint8 arrays of one size (larger than 64 px: resized to 64 x 64).

    Only these few images are decoded (open_image), not the whole dataset.
    """
    from PIL import Image

    from datadiet_cli.data.images import open_image

    def rgb(row: int) -> np.ndarray:
        image = open_image(manifest, int(row)).convert("RGB")
        if max(image.size) > THUMBNAIL_SIDE:
            image = image.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.BILINEAR)
        return np.asarray(image)

    rows = [([rgb(r) for r in easy], [rgb(r) for r in hard]) for easy, hard in zip(easiest, hardest, strict=True)]
    shapes = {image.shape for easy, hard in rows for image in (*easy, *hard)}
    if len(shapes) > 1:  # small images of several sizes: bring them to one
        side = max(max(shape[:2]) for shape in shapes)
        rows = [
            (
                [np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR)) for image in easy],
                [np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR)) for image in hard],
            )
            for easy, hard in rows
        ]
    return rows


def _safe_name(name: str, used: set[str]) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "score"
    candidate, number = safe, 2
    while candidate in used:
        candidate, number = f"{safe}_{number}", number + 1
    used.add(candidate)
    return candidate
