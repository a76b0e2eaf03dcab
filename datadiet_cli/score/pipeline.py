"""`score_manifest`: the one library call behind `datadiet score`.

Check the options, train (or reuse) the probes the metric needs, let the metric's registry
entry turn the probes' readings into scores, and record it all in the manifest.

Under torchrun every rank trains its share of the probes (probes.py); once all are finished,
rank 0 alone reads them and scores. Ranks wait for each other in a gloo group with a long
time limit, because one rank's extra probe (or rank 0's prediction passes) can outlast the
process group's own limit (10 minutes under NCCL) while the others sit in a collective.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
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

# How long a rank waits for the others to finish their probes: longer than any probe trains.
PEER_PATIENCE = timedelta(days=7)


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
    with _patient_group(ranks) as group:
        with _phase(ranks, group):
            check_config(config, from_runs, ranks)
            # With --from-runs there is nothing to train: only rank 0, which reads the runs, decodes images.
            if spec.needs is not Need.nothing and (ranks.main or not from_runs):
                pixels = _pixels_or_none(manifest)
                runs = list(from_runs) or train_probes(manifest, config, probes_dir, pixels, progress, ranks)
        with _phase(ranks, group):
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


@contextmanager
def _patient_group(ranks: Ranks) -> Iterator[Any]:
    """A gloo group of every rank that may wait PEER_PATIENCE in a barrier; None outside torchrun."""
    if not ranks.distributed:
        yield None
        return
    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=PEER_PATIENCE)
    try:
        yield group
    finally:
        dist.destroy_process_group(group)


@contextmanager
def _phase(ranks: Ranks, group: Any) -> Iterator[None]:
    """A block that takes each rank a different time and may fail on some: every rank waits for
    the slowest in `group`, then any rank's error becomes every rank's."""
    with distributed.together(ranks):
        try:
            yield
        finally:
            if group is not None:
                import torch.distributed as dist

                dist.barrier(group=group)
