"""`score_manifest`: the one library call behind `datadiet score`.

Check the options, train (or reuse) the probes the metric needs, let the metric's registry
entry turn the probes' readings into scores, and record it all in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datadiet_cli.io.lineage import LineageStep
from datadiet_cli.io.manifest import Manifest
from datadiet_cli.score.config import ScoreConfig, check_config
from datadiet_cli.score.probes import train_probes
from datadiet_cli.score.readings import ProbeReadings, checkpoint_digest
from datadiet_cli.score.registry import Need, metric_spec

ProgressCallback = Callable[[int, int], None]


def score_manifest(
    manifest: Manifest,
    config: ScoreConfig,
    probes_dir: Path | None,
    from_runs: Sequence[Path] = (),
    progress: ProgressCallback | None = None,
) -> Manifest:
    """The manifest with the metric's column (and <column>_std where the registry says so) added.

    Probes are trained under `probes_dir` unless `from_runs` names finished runs to read;
    `progress(done, total)` counts trained probes.
    """
    check_config(config, from_runs)
    spec = metric_spec(config.metric)
    column = config.column or spec.name
    runs: list[Path] = []
    pixels = None
    if spec.needs is not Need.nothing:
        pixels = _pixels_or_none(manifest)
        runs = list(from_runs) or train_probes(manifest, config, probes_dir, pixels, progress)
    measured = spec.compute(ProbeReadings(manifest, runs, config, pixels), config)
    params: dict[str, Any] = {
        "citation": spec.citation,
        "config": config,
        "probe_runs": [{"path": str(run.resolve()), "checkpoint_sha256": checkpoint_digest(run)} for run in runs],
        **measured.extra,
    }
    scored = manifest.with_score(column, measured.values, spec.name, params)
    if spec.writes_std:
        scored = scored.with_score(f"{column}_std", measured.spread, f"{spec.name}_std", {"of": column})
    values = measured.values
    stats = {"column": column, "mean": float(np.mean(values)), "std": float(np.std(values)), "probes": len(runs)}
    inputs = [manifest.source] if manifest.source is not None else []
    return scored.with_lineage(LineageStep("score", config, inputs, stats))


def _pixels_or_none(manifest: Manifest) -> np.ndarray | None:
    """Decode small images once for all probes (large images stream in every probe instead)."""
    from datadiet_cli.data import images
    from datadiet_cli.train import batches

    return images.load_images(manifest) if batches.is_small(manifest) else None
