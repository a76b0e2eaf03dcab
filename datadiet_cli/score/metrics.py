"""The paper's supervised difficulty metrics, as pure functions of probe-model outputs.

Every function takes arrays recorded from K probe models and returns per-example scores
oriented higher = harder, plus the spread across probes where one is defined.
Shapes: K probes, N examples, C classes, T presentations (epochs).
"""

from __future__ import annotations

import numpy as np

from datadiet_cli.data import seeds
from datadiet_cli.errors import RunDirError


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float64)[labels]


def el2n(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Error L2-norm (Paul et al., 2021): mean over probes of ||softmax(f(x)) - onehot(y)||_2.

    probs (K, N, C), labels (N,) -> mean (N,), std over probes (N,).
    """
    per_probe = np.linalg.norm(probs - _one_hot(labels, probs.shape[-1])[None], axis=-1)  # (K, N)
    return per_probe.mean(axis=0), per_probe.std(axis=0)


def forgetting(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forgetting events (Toneva et al., 2019): correct -> incorrect transitions across presentations.

    correct (K, T, N) bool, in presentation order -> mean (N,), std (N,) over probes.
    An example a probe never classified correctly gets T, more than any possible count of
    events (at most T // 2), so never-learned examples rank hardest, as in the paper.
    """
    correct = correct.astype(bool)
    events = (correct[:, :-1] & ~correct[:, 1:]).sum(axis=1).astype(np.float64)  # (K, N)
    never_learned = ~correct.any(axis=1)
    events[never_learned] = correct.shape[1]
    return events.mean(axis=0), events.std(axis=0)


def uncertainty(probs: np.ndarray, variant: str = "max") -> np.ndarray:
    """Ensemble uncertainty (Beluch et al., 2018): 1 - max_c mean_k p_kc, or the predictive entropy.

    probs (K, N, C) -> (N,). Uses no labels.
    """
    mean = probs.mean(axis=0)  # (N, C)
    if variant == "max":
        return 1.0 - mean.max(axis=1)
    if variant == "entropy":
        return -(mean * np.log(np.clip(mean, 1e-12, None))).sum(axis=1)
    raise ValueError(f"unknown uncertainty variant {variant!r}")


def ddd(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Diverse-ensemble disagreement (Meding et al., 2022): how many of the K probes misclassify.

    probs (K, N, C), labels (N,) -> (N,) counts in 0..K.
    """
    return (probs.argmax(axis=-1) != labels[None]).sum(axis=0).astype(np.float64)


def memorization(correct: np.ndarray, in_train: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Feldman & Zhang (2020): P(correct | x in training set) - P(correct | x held out).

    correct (K, N) bool: probe k classifies example n correctly; in_train (K, N) bool: n was in
    probe k's random training subset. Where an example was never held out (or never in)
    the missing probability is the population's mean held-out (in-train) accuracy, so the
    score stays defined; how many examples needed that is returned for the metadata.
    """
    correct = correct.astype(np.float64)
    in_train = in_train.astype(bool)
    held_out = ~in_train
    n_in, n_out = in_train.sum(axis=0), held_out.sum(axis=0)  # (N,)
    if not n_in.any() or not n_out.any():
        raise RunDirError("memorization needs probes that hold examples out; use --subset below 1")
    mean_in = (correct * in_train).sum() / in_train.sum()
    mean_out = (correct * held_out).sum() / held_out.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        p_in = np.where(n_in > 0, (correct * in_train).sum(axis=0) / n_in, mean_in)
        p_out = np.where(n_out > 0, (correct * held_out).sum(axis=0) / n_out, mean_out)
    gaps = {"never_held_out": int((n_out == 0).sum()), "never_trained_on": int((n_in == 0).sum())}
    return p_in - p_out, gaps


def random_scores(n: int, seed: int) -> np.ndarray:
    """The baseline every metric must beat: seeded uniform scores in [0, 1)."""
    return seeds.rng(seed).random(n)
