"""Training the probe models: each probe is an ordinary `train` run (probe-00, probe-01, ...).

So an interrupted scoring picks up where it stopped, and `--from-runs` can score runs trained
elsewhere. What the metric needs decides how probes train: forgetting's record dynamics,
memorization's train on seeded subsets of the rows. Under torchrun rank r trains probes
r, r+W, r+2W, ... of the same list, each an ordinary one-process run on the rank's device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datadiet_cli.data import seeds
from datadiet_cli.distributed import SINGLE, Ranks
from datadiet_cli.errors import OptionError
from datadiet_cli.io.manifest import Manifest, read_manifest, write_manifest
from datadiet_cli.io.rundir import RunDir
from datadiet_cli.score.config import ProbeSchedule, ScoreConfig
from datadiet_cli.score.registry import Need, metric_spec

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ProbeJob:
    index: int  # k: the probe's number, which seeds it
    rows: np.ndarray | None  # the probe's training rows (memorization); None = every row
    run_dir: Path  # the probe's run folder
    device: str  # where it trains
    threads: int  # torch threads of its process


def probe_jobs(n_rows: int, config: ScoreConfig, probes_dir: Path, ranks: Ranks = SINGLE) -> list[ProbeJob]:
    """The K probes to train, each on its own device (round robin; under torchrun, the rank's) and training rows."""
    devices = [ranks.device] if ranks.distributed else _probe_devices(config)
    threads = max(1, (os.cpu_count() or 1) // config.jobs)
    on_subsets = metric_spec(config.metric).needs is Need.membership
    jobs = []
    for k in range(config.probes):
        rows = None
        if on_subsets:
            # Each probe's random subset is drawn from its own seed, so adding probes later keeps earlier ones valid.
            size = math.floor(config.subset * n_rows + 0.5)
            rows = np.sort(seeds.rng(config.seed, k).choice(n_rows, size, replace=False))
        jobs.append(ProbeJob(k, rows, probes_dir / f"probe-{k:02d}", devices[k % len(devices)], threads))
    return jobs


def _probe_devices(config: ScoreConfig) -> list[str]:
    if config.jobs > 1 and config.device in ("auto", "cuda"):
        import torch

        if torch.cuda.device_count() > 1:
            return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [config.device]


def train_probes(
    manifest: Manifest,
    config: ScoreConfig,
    probes_dir: Path | None,
    pixels: np.ndarray | None,
    progress: ProgressCallback | None,
    ranks: Ranks = SINGLE,
) -> list[Path]:
    """Train (or finish) this rank's share of the K probe runs and return all K run folders, in probe order.

    A probe already complete in probes_dir is reused. `progress(done, total)` counts this rank's probes.
    """
    if probes_dir is None:
        raise OptionError("training probes needs a folder for them (--probes-dir)")
    every_job = probe_jobs(manifest.num_rows, config, probes_dir, ranks)
    # Interleaved rather than contiguous: with probes added later (more --probes) the new ones still spread.
    jobs = every_job[ranks.rank :: ranks.world]
    if progress is not None:
        progress(0, len(jobs))
    if config.jobs == 1:
        for job in jobs:
            _train_probe(manifest, config, job, pixels)
            if progress is not None:
                progress(1, len(jobs))
    else:
        import multiprocessing

        # spawn: a forked child would inherit torch's thread pools and the progress bar's thread.
        with ProcessPoolExecutor(config.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_train_probe, manifest, config, job, pixels) for job in jobs]
            for future in futures:
                future.result()
                if progress is not None:
                    progress(1, len(jobs))
    return [job.run_dir for job in every_job]


def _train_probe(manifest: Manifest, config: ScoreConfig, job: ProbeJob, pixels: np.ndarray | None) -> Path:
    import torch

    from datadiet_cli.train.loop import train_run
    from datadiet_cli.train.recipes import TrainConfig, recipe_with

    if job.threads and torch.get_num_threads() > job.threads:
        torch.set_num_threads(job.threads)
    truncated = config.probe_schedule is ProbeSchedule.truncated
    epochs = None if truncated else config.probe_epochs  # truncated: the recipe's own length
    recipe = recipe_with(config.recipe, epochs=epochs, arch=config.arch, augment=config.augment)
    train_config = TrainConfig(
        recipe=recipe,
        stop_after=config.probe_epochs if truncated else None,
        device=job.device,
        seed=seeds.probe_seed(config.seed, job.index),
        record_dynamics=metric_spec(config.metric).needs is Need.dynamics,
        dynamics_epochs=(),  # forgetting needs only what is measured as examples are trained on
    )
    subset, subset_pixels = manifest, pixels
    if job.rows is not None:
        # The subset is written beside the run, so the run's config records exactly which
        # examples it trained on (memorization reads that back, also for --from-runs).
        subset_path = job.run_dir.with_suffix(".parquet")
        if not subset_path.is_file():
            write_manifest(manifest.take(job.rows), subset_path)
        subset = read_manifest(subset_path)
        subset_pixels = None if pixels is None else pixels[job.rows]
    # A probe interrupted before its first checkpoint has only config.json: resuming it starts it over.
    resume = RunDir(job.run_dir).config_path.is_file()
    train_run(subset, train_config, job.run_dir, resume=resume, pixels=subset_pixels)
    return job.run_dir
