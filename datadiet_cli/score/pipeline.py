"""`score_manifest`: the one library call behind `datadiet score`.

Check the options, train (or reuse) the probes the metric needs, let the metric's registry
entry turn the probes' readings into scores, and record it all in the manifest.

Under torchrun every rank trains its share of the probes (probes.py); once all are finished,
rank 0 alone reads them and scores. (Ranks that finish first wait in `together`'s collective:
distributed.PEER_PATIENCE lets them outwait a rank with one more probe to train.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from datadiet_cli import distributed
from datadiet_cli.distributed import SINGLE, Ranks
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
    ranks: Ranks = SINGLE,
) -> Manifest | None:
    """The manifest with the metric's column (and <column>_std where the registry says so) added.

    Probes are trained under `probes_dir` unless `from_runs` names finished runs to read;
    `progress(done, total)` counts the probes this rank trains. Under torchrun (`ranks.distributed`)
    rank 0 returns the manifest and the other ranks None; a DatadietError on any rank is raised
    on every rank (distributed.together).
    """
    spec = metric_spec(config.metric)
    runs: list[Path] = []
    pixels = None
    scored = None
    with distributed.together(ranks):  # every rank waits for the last probe; any rank's error is every rank's
        check_config(config, from_runs, ranks)
        # With --from-runs there is nothing to train: only rank 0, which reads the runs, decodes images.
        if spec.needs is not Need.nothing and (ranks.main or not from_runs):
            pixels = _pixels_or_none(manifest)
            runs = list(from_runs) or train_probes(manifest, config, probes_dir, pixels, progress, ranks)
    with distributed.together(ranks):
        if ranks.main:
            scored = _scored(manifest, config, runs, pixels, ranks)
    return scored


def _scored(
    manifest: Manifest, config: ScoreConfig, runs: list[Path], pixels: np.ndarray | None, ranks: Ranks
) -> Manifest:
    spec = metric_spec(config.metric)
    column = config.column or spec.name
    # Under torchrun rank 0 predicts on its own device (cuda:LOCAL_RANK); the recorded config keeps the option.
    reading_config = replace(config, device=ranks.device) if ranks.distributed else config
    measured = spec.compute(ProbeReadings(manifest, runs, reading_config, pixels), config)
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
