"""`datadiet ingest`: list a dataset into a manifest, one row per image, without decoding it.

The formats (ImageFolder trees, CIFAR python batches, builtin:digits) live in `sources/`,
one module each; this module holds what is the same for all of them: the options, the
seeded per-class subsample, the manifest's columns and the lineage step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from datadiet_cli.data import seeds, sources
from datadiet_cli.data.sources.base import Listing, ProgressCallback, Split
from datadiet_cli.errors import OptionError
from datadiet_cli.io.lineage import LineageStep
from datadiet_cli.io.manifest import Manifest, new_manifest


@dataclass(frozen=True)
class IngestConfig:
    source: str  # the SOURCE argument as given: a directory or builtin:NAME
    split: Split | None = None  # None = train where the source has splits, the whole tree where it has none
    shape_sample: int = 16  # image headers read (spread over the rows) to decide image_shape
    digits_test_every: int = 5  # builtin:digits: every 5th example of each class (in sklearn's order) is test
    per_class: int | None = None  # keep at most this many examples of each class (a smaller "full" dataset); None = all
    seed: int = 0  # which examples --per-class keeps: the same seed gives nested samples as per_class grows


def ingest_source(config: IngestConfig, progress: ProgressCallback | None = None) -> Manifest:
    """The manifest of `config.source`: one row per image of the chosen split, plus its lineage.

    Every error about SOURCE itself comes before `progress` hears of any work.
    """
    listing = sources.locate(config).list(config, progress)
    if config.per_class is not None:
        listing = subsample_listing(
            listing, sample_per_class(listing.ids, listing.labels, config.per_class, config.seed)
        )
    columns = {
        "path": pa.array(listing.paths, type=pa.string()),
        "split": pa.array([listing.dataset["split"]] * len(listing.ids), type=pa.string()),
        **listing.extra_columns,
    }
    manifest = new_manifest(listing.ids, listing.labels, listing.dataset, columns)
    stats = {
        "rows": len(listing.ids),
        "classes": len(listing.dataset["classes"]),
        "per_class_counts": class_count_summary(listing.labels, len(listing.dataset["classes"])),
        "image_shape_sampled": listing.shape_sampled,
    }
    return manifest.with_lineage(LineageStep("ingest", config, [], stats))


def sample_per_class(ids: list[str], labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Rows to keep, ascending: in each class the `per_class` ids with the smallest seeded hash.

    Ranking by a hash of (seed, id) rather than by row position makes the sample independent of
    listing order, and nested: the 500 per class kept with seed 0 are among the 1,000 kept with seed 0.
    """
    if per_class < 1:
        raise OptionError(f"--per-class {per_class}: must be at least 1 (or leave it out to keep every example)")
    keys = np.array([seeds.id_hash(example_id, seed) for example_id in ids], dtype=np.uint64)
    order = np.lexsort((keys, labels))  # by class, then by hash within the class
    sorted_labels = labels[order]
    first_of_class = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank_in_class = np.arange(len(order)) - first_of_class
    return np.sort(order[rank_in_class < per_class])


def subsample_listing(listing: Listing, rows: np.ndarray) -> Listing:
    extra = {name: column.take(pa.array(rows)) for name, column in listing.extra_columns.items()}
    return dataclasses.replace(
        listing,
        ids=[listing.ids[row] for row in rows],
        labels=listing.labels[rows],
        paths=[listing.paths[row] for row in rows],
        extra_columns=extra,
    )


def class_count_summary(labels: np.ndarray, n_classes: int) -> dict[str, float | int]:
    counts = np.bincount(labels, minlength=n_classes) if len(labels) else np.zeros(n_classes, dtype=np.int64)
    return {"min": int(counts.min()), "max": int(counts.max()), "mean": float(counts.mean())}
