"""Training dynamics: per-example measurements taken as a run trains (the input of EL2N, forgetting, ...).

Each pass writes one (5, N) buffer on the device and copies it to the host once, at the
pass's end; the run folder (io/rundir.py) stores the passes as dynamics.parquet.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datadiet_cli.distributed import SINGLE, Ranks
from datadiet_cli.train.parallel import merged_measurements

# What dynamics.parquet holds per example, epoch and source, in this order.
DYNAMICS_COLUMNS = ("loss", "correct", "p_label", "el2n", "margin")


def example_measurements(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, C) logits, (B,) labels -> (5, B) float32 rows in DYNAMICS_COLUMNS order.

    loss = -log p_label; correct = argmax == label (1.0/0.0); el2n = ||softmax - onehot||_2
    (Paul et al. 2021); margin = p_label - the largest other probability (negative when wrong).
    """
    log_probs = F.log_softmax(logits.float(), dim=1)  # (B, C)
    probs = log_probs.exp()
    label_log_prob = log_probs.gather(1, labels[:, None]).squeeze(1)  # (B,)
    p_label = label_log_prob.exp()
    largest_other = probs.scatter(1, labels[:, None], -1.0).max(dim=1).values  # (B,)
    el2n = (probs - F.one_hot(labels, probs.shape[1]).float()).norm(dim=1)
    correct = (logits.argmax(dim=1) == labels).float()
    return torch.stack([-label_log_prob, correct, p_label, el2n, p_label - largest_other])


class DynamicsBuffer:
    """Measurements of one pass over the examples, kept on the device until the pass ends.

    Each step writes its (5, B) measurements into a (5, N) tensor without leaving the device;
    the one copy to the host happens in `columns`, once per pass.
    """

    def __init__(self, count: int, device: torch.device) -> None:
        self.values = torch.full((len(DYNAMICS_COLUMNS), count), float("nan"), device=device)  # (5, N)

    def record(self, positions: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.values[:, positions] = example_measurements(logits, labels)

    def columns(self, ids: np.ndarray, epoch: int, source: str, ranks: Ranks = SINGLE) -> dict[str, np.ndarray]:
        """The pass's rows of dynamics.parquet; under torchrun, every rank's measurements merged."""
        values = merged_measurements(self.values, ranks).cpu().numpy()  # (5, N)
        seen = ~np.isnan(values[0])  # the last epoch of a --matched-iterations run may be partial
        count = int(seen.sum())
        columns: dict[str, np.ndarray] = {
            "id": np.asarray(ids, dtype=object)[seen],
            "epoch": np.full(count, epoch, dtype=np.int32),
            "source": np.full(count, source, dtype=object),
        }
        for row, name in enumerate(DYNAMICS_COLUMNS):
            columns[name] = values[row, seen].astype(bool) if name == "correct" else values[row, seen]
        return columns


def dynamics_metadata(settings: dict[str, Any]) -> dict[str, Any]:
    """The schema metadata of dynamics.parquet: what its columns and sources mean, and what was trained."""
    return {
        "columns": list(DYNAMICS_COLUMNS),
        "sources": {"train": "measured on the training batch as the example was seen", "eval": "eval pass"},
        "classes": settings["classes"],
        "manifest": settings["manifest"],
        "epochs": settings["plan"]["epochs"],
    }


def dynamics_matrix(
    dynamics: dict[str, np.ndarray], ids: np.ndarray, column: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """One measurement as (epochs (T,), values (T, N)) aligned to `ids`; NaN where an example was not measured."""
    chosen = dynamics["source"] == source
    epochs = np.unique(dynamics["epoch"][chosen])
    position = {example_id: i for i, example_id in enumerate(ids)}
    rows = np.searchsorted(epochs, dynamics["epoch"][chosen])
    cols = np.array([position.get(example_id, -1) for example_id in dynamics["id"][chosen]], dtype=np.int64)
    known = cols >= 0
    values = np.full((len(epochs), len(ids)), np.nan)
    values[rows[known], cols[known]] = dynamics[column][chosen][known]
    return epochs, values
