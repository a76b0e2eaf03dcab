"""What the metrics read from finished probe runs: the only place score/ looks inside a run folder.

Each reading stacks one array per run (K runs, N manifest rows, C classes, T presentations);
a metric asks only for the readings its registry entry needs, so nothing else is computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datadiet_cli.errors import RunDirError
from datadiet_cli.io.manifest import Manifest, read_manifest
from datadiet_cli.io.rundir import RunDir
from datadiet_cli.score.config import ScoreConfig


@dataclass(frozen=True)
class ProbeReadings:
    """The K probe runs of one scoring, read against the manifest being scored."""

    manifest: Manifest  # the manifest being scored (N rows)
    runs: Sequence[Path]  # the K finished probe runs
    config: ScoreConfig  # where to predict, which GraNd mode
    pixels: np.ndarray | None  # decoded images shared by every prediction pass; None = stream them

    @property
    def num_rows(self) -> int:
        return self.manifest.num_rows

    def labels(self) -> np.ndarray:
        """(N,) int64, raising for unlabeled rows (only the metrics that compare to labels ask)."""
        return self.manifest.labels()

    def probabilities(self) -> np.ndarray:
        """(K, N, C) float64 class probabilities from each probe's final weights."""
        return np.stack([probabilities(self.manifest, run, self.config, self.pixels) for run in self.runs])

    def training_correctness(self) -> np.ndarray:
        """(K, T, N) bool: each example classified correctly at each training presentation."""
        return np.stack([training_correctness(self.manifest, run) for run in self.runs])

    def training_membership(self) -> np.ndarray:
        """(K, N) bool: each example was in the probe's training set."""
        return np.stack([training_membership(self.manifest, run) for run in self.runs])

    def gradient_norms(self) -> np.ndarray:
        """(K, N) per-example loss-gradient norms under each probe's final weights."""
        return np.stack([gradient_norms(self.manifest, run, self.config, self.pixels) for run in self.runs])


def probabilities(manifest: Manifest, run: Path, config: ScoreConfig, pixels: np.ndarray | None) -> np.ndarray:
    """(N, C) float64 softmax outputs of the run's model on every row."""
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
        raise RunDirError(
            f"{run}: the probe never trained on {int(unseen.sum())} examples of {manifest.name} "
            f"(e.g. '{first}'); forgetting needs probes trained on the whole manifest"
        )
    return np.nan_to_num(correct, nan=0.0).astype(bool)


def training_membership(manifest: Manifest, run: Path) -> np.ndarray:
    """(N,) bool: which examples were in the probe's training set (from its recorded manifest)."""
    recorded = RunDir(run).finished_config()["manifest"]
    path = recorded.get("path")
    if not path or not Path(path).is_file():
        raise RunDirError(
            f"{run}: its training manifest {path} is gone; memorization needs it to know which examples were held out"
        )
    trained_ids = read_manifest(path).ids()
    return np.isin(manifest.ids(), trained_ids)


def gradient_norms(manifest: Manifest, run: Path, config: ScoreConfig, pixels: np.ndarray | None) -> np.ndarray:
    """(N,) per-example ||d loss / d parameters||_2 under the probe's weights (GraNd)."""
    from datadiet_cli.score.grand import per_example_gradient_norms

    return per_example_gradient_norms(run, manifest, config.grand_mode.value, config.device, pixels)


def checkpoint_digest(run: Path) -> str | None:
    """sha256 of the run's checkpoint, recorded so a score names the exact weights it came from."""
    return RunDir(run).checkpoint_digest()
