"""`datadiet score`: add a supervised difficulty column, computed from probe models datadiet trains.

Each probe is an ordinary `train` run (probe-00, probe-01, ... under the probes folder), so
an interrupted scoring run picks up where it stopped and `--from-runs` can score runs that
were trained elsewhere (as parallel jobs, on other machines). The formulas live in
metrics.py; this module trains or reads the probes and gathers what each metric needs:

| metric        | needs from each probe                                   |
|---------------|---------------------------------------------------------|
| el2n          | class probabilities of every example at the end         |
| grand         | per-example loss gradients at the end (torch.func)      |
| forgetting    | correct / incorrect at every training presentation      |
| uncertainty   | class probabilities (labels unused)                     |
| ddd           | class probabilities                                     |
| memorization  | probabilities + which examples the probe trained on     |
| random        | nothing                                                 |
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datadiet_cli.data import seeds
from datadiet_cli.errors import DatadietError, OptionError
from datadiet_cli.io.lineage import LineageStep
from datadiet_cli.io.manifest import Manifest, read_manifest, write_manifest
from datadiet_cli.io.rundir import RunDir
from datadiet_cli.score import metrics
from datadiet_cli.train.recipes import Augment

ProgressCallback = Callable[[int, int], None]


class Metric(str, enum.Enum):
    el2n = "el2n"
    grand = "grand"
    forgetting = "forgetting"
    uncertainty = "uncertainty"
    ddd = "ddd"
    memorization = "memorization"
    random = "random"


class GrandMode(str, enum.Enum):
    exact = "exact"  # gradient of the loss w.r.t. every parameter, per example (torch.func vmap)
    last_layer = "last-layer"  # only the final linear layer: ||p - y|| * sqrt(||h||^2 + 1), closed form


# Metrics with a spread across probes, written as <column>_std.
WITH_STD = (Metric.el2n, Metric.grand, Metric.forgetting)
CITATIONS = {
    Metric.el2n: "Paul et al. 2021, Deep learning on a data diet",
    Metric.grand: "Paul et al. 2021, Deep learning on a data diet",
    Metric.forgetting: "Toneva et al. 2019, An empirical study of example forgetting",
    Metric.uncertainty: "Beluch et al. 2018, The power of ensembles for active learning",
    Metric.ddd: "Meding et al. 2022, Trivial or impossible: dichotomous data difficulty",
    Metric.memorization: "Feldman & Zhang 2020, What neural networks memorize and why",
    Metric.random: "baseline",
}


class ProbeSchedule(str, enum.Enum):
    compressed = "compressed"  # the recipe's whole schedule squeezed into the probe epochs (lr anneals to the end)
    truncated = "truncated"  # the recipe's full-length schedule, stopped after the probe epochs (Paul et al.)


@dataclass(frozen=True)
class ScoreConfig:
    metric: Metric  # which difficulty metric (higher = harder)
    probes: int = 10  # K independent probe models (the paper: 10 for EL2N on CIFAR-10)
    probe_epochs: int = 20  # epochs each probe trains before it is measured (Paul et al.: 20 on CIFAR-10)
    probe_schedule: ProbeSchedule = ProbeSchedule.compressed  # truncated = Paul et al.'s early stop in a full run
    recipe: str = "cifar"  # train recipe of the probes (the paper's App. B settings)
    arch: str | None = None  # probe network; None = the recipe's (resnet18 for cifar)
    augment: Augment | None = None  # probe training augmentation; None = the recipe's (digits want none)
    seed: int = 0  # probe k trains with seed + k; random uses it directly
    variant: str = "max"  # uncertainty: max (1 - max mean probability) or entropy
    subset: float = 0.7  # memorization: fraction of the data each probe trains on (Feldman & Zhang: 0.7)
    grand_mode: GrandMode = GrandMode.exact  # exact per-example gradients or the cheaper last layer
    device: str = "auto"  # where the probes train and predict
    jobs: int = 1  # probes trained in parallel processes (one per GPU where several exist)
    column: str | None = None  # output column; None = the metric's name


def score_manifest(
    manifest: Manifest,
    config: ScoreConfig,
    probes_dir: Path | None,
    from_runs: Sequence[Path] = (),
    progress: ProgressCallback | None = None,
) -> Manifest:
    """The manifest with the metric's column (and <column>_std where defined) added."""
    check_config(config, from_runs)
    column = config.column or config.metric.value
    if config.metric is Metric.random:
        values, spread, extra = metrics.random_scores(manifest.num_rows, config.seed), None, {}
        runs: list[Path] = []
    else:
        pixels = _pixels_or_none(manifest)
        runs = list(from_runs) or train_probes(manifest, config, probes_dir, pixels, progress)
        values, spread, extra = measure(manifest, config, runs, pixels)
    params: dict[str, Any] = {
        "citation": CITATIONS[config.metric],
        "config": config,
        "probe_runs": [{"path": str(run.resolve()), "checkpoint_sha256": _checkpoint_digest(run)} for run in runs],
        **extra,
    }
    scored = manifest.with_score(column, values, config.metric.value, params)
    if spread is not None:
        scored = scored.with_score(f"{column}_std", spread, f"{config.metric.value}_std", {"of": column})
    stats = {"column": column, "mean": float(np.mean(values)), "std": float(np.std(values)), "probes": len(runs)}
    inputs = [manifest.source] if manifest.source is not None else []
    return scored.with_lineage(LineageStep("score", config, inputs, stats))


def check_config(config: ScoreConfig, from_runs: Sequence[Path]) -> None:
    if config.probes < 1:
        raise OptionError(f"--probes {config.probes} must be at least 1")
    if config.probe_epochs < 1:
        raise OptionError(f"--probe-epochs {config.probe_epochs} must be at least 1")
    if not 0 < config.subset < 1:
        raise OptionError(f"--subset {config.subset} is outside (0, 1); Feldman & Zhang use 0.7")
    if config.variant not in ("max", "entropy"):
        raise OptionError(f"--variant {config.variant}: use max or entropy")
    if config.jobs < 1:
        raise OptionError(f"--jobs {config.jobs} must be at least 1")
    if config.probe_schedule is ProbeSchedule.truncated and config.metric is not Metric.random:
        from datadiet_cli.train.recipes import recipe_with

        planned = recipe_with(config.recipe).epochs
        if config.probe_epochs > planned:
            raise OptionError(
                f"--probe-epochs {config.probe_epochs} is longer than the {config.recipe} recipe's {planned} epochs; "
                "a truncated schedule stops inside the recipe (or use --probe-schedule compressed)"
            )
    for run in from_runs:
        if not RunDir(run).has_checkpoint():
            raise OptionError(f"--from-runs {run}: not a finished `datadiet train` run (no checkpoint.pt)")


def _pixels_or_none(manifest: Manifest) -> np.ndarray | None:
    """Decode small images once for all probes (large images stream in every probe instead)."""
    from datadiet_cli.data import batches, images

    return images.load_images(manifest) if batches.is_small(manifest) else None


def _checkpoint_digest(run: Path) -> str | None:
    return RunDir(run).checkpoint_digest()


# -- training the probes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeJob:
    index: int
    rows: np.ndarray | None  # the probe's training rows (memorization); None = every row
    run_dir: Path
    device: str
    threads: int


def probe_jobs(n_rows: int, config: ScoreConfig, probes_dir: Path) -> list[ProbeJob]:
    devices = _probe_devices(config)
    threads = max(1, (os.cpu_count() or 1) // config.jobs)
    jobs = []
    for k in range(config.probes):
        rows = None
        if config.metric is Metric.memorization:
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
) -> list[Path]:
    """Train (or finish) the K probe runs; a probe already complete in probes_dir is reused."""
    if probes_dir is None:
        raise OptionError("training probes needs a folder for them (--probes-dir)")
    jobs = probe_jobs(manifest.num_rows, config, probes_dir)
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
    return [job.run_dir for job in jobs]


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
        record_dynamics=config.metric is Metric.forgetting,
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
    resume = RunDir(job.run_dir).has_checkpoint()
    train_run(subset, train_config, job.run_dir, resume=resume, pixels=subset_pixels)
    return job.run_dir


# -- measuring ---------------------------------------------------------------------------------------


def measure(
    manifest: Manifest, config: ScoreConfig, runs: Sequence[Path], pixels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """(scores (N,), spread across probes (N,) or None, extra metadata) from the probe runs."""
    metric = config.metric
    if metric is Metric.forgetting:
        mean, std = metrics.forgetting(np.stack([training_correctness(manifest, run) for run in runs]))
        return mean, std, {}
    if metric is Metric.grand:
        per_probe = np.stack([gradient_norms(manifest, run, config, pixels) for run in runs])  # (K, N)
        return per_probe.mean(axis=0), per_probe.std(axis=0), {"grand_mode": config.grand_mode.value}
    probs = np.stack([probabilities(manifest, run, config, pixels) for run in runs])  # (K, N, C)
    if metric is Metric.uncertainty:
        return metrics.uncertainty(probs, config.variant), None, {"variant": config.variant}
    labels = manifest.labels()
    if metric is Metric.el2n:
        mean, std = metrics.el2n(probs, labels)
        return mean, std, {}
    if metric is Metric.ddd:
        return metrics.ddd(probs, labels), None, {}
    assert metric is Metric.memorization
    correct = probs.argmax(axis=-1) == labels[None]  # (K, N)
    in_train = np.stack([training_membership(manifest, run) for run in runs])
    scores, gaps = metrics.memorization(correct, in_train)
    return scores, None, {"subset": config.subset, **gaps}


def probabilities(manifest: Manifest, run: Path, config: ScoreConfig, pixels: np.ndarray | None) -> np.ndarray:
    from datadiet_cli.train.evaluate import predict

    return predict(run, manifest, device=config.device, pixels=pixels).probs.astype(np.float64)


def training_correctness(manifest: Manifest, run: Path) -> np.ndarray:
    """(T, N) bool: was each example classified correctly when trained on, epoch by epoch."""
    from datadiet_cli.train.dynamics import dynamics_matrix

    _, correct = dynamics_matrix(
        RunDir(run).read_dynamics(), manifest.ids(), "correct", "train"
    )  # (T, N), NaN = unseen
    unseen = np.isnan(correct).all(axis=0)
    if unseen.any():
        first = manifest.ids()[np.flatnonzero(unseen)[0]]
        raise DatadietError(
            f"{run}: the probe never trained on {int(unseen.sum())} examples of {manifest.name} "
            f"(e.g. '{first}'); forgetting needs probes trained on the whole manifest"
        )
    return np.nan_to_num(correct, nan=0.0).astype(bool)


def training_membership(manifest: Manifest, run: Path) -> np.ndarray:
    """(N,) bool: which examples were in the probe's training set (from its recorded manifest)."""
    recorded = RunDir(run).finished_config()["manifest"]
    path = recorded.get("path")
    if not path or not Path(path).is_file():
        raise DatadietError(
            f"{run}: its training manifest {path} is gone; memorization needs it to know which examples were held out"
        )
    trained_ids = read_manifest(path).ids()
    return np.isin(manifest.ids(), trained_ids)


def gradient_norms(manifest: Manifest, run: Path, config: ScoreConfig, pixels: np.ndarray | None) -> np.ndarray:
    """(N,) per-example ||d loss / d parameters||_2 under the probe's weights (GraNd)."""
    from datadiet_cli.score.grand import per_example_gradient_norms

    return per_example_gradient_norms(run, manifest, config.grand_mode.value, config.device, pixels)
