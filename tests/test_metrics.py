"""Difficulty metrics against values computed by hand on 3-5 example toys."""

from __future__ import annotations

import math

import numpy as np
import pytest

from datadiet_cli.errors import RunDirError
from datadiet_cli.score.metrics import ddd, el2n, forgetting, memorization, random_scores, uncertainty

# Two probes, three examples, two classes.
PROBS = np.array(
    [
        [[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]],
        [[0.8, 0.2], [0.5, 0.5], [0.4, 0.6]],
    ]
)
LABELS = np.array([0, 1, 0])


def test_el2n_by_hand() -> None:
    mean, std = el2n(PROBS, LABELS)
    # probe 1: [0, sqrt(.5), sqrt(.64+.64)]; probe 2: [sqrt(.08), sqrt(.5), sqrt(.72)]
    p1 = np.array([0.0, math.sqrt(0.5), math.sqrt(1.28)])
    p2 = np.array([math.sqrt(0.08), math.sqrt(0.5), math.sqrt(0.72)])
    np.testing.assert_allclose(mean, (p1 + p2) / 2)
    np.testing.assert_allclose(std, np.abs(p1 - p2) / 2)


def test_forgetting_counts_transitions_and_never_learned_is_hardest() -> None:
    # One probe, five presentations, four examples.
    correct = np.array(
        [
            [
                [1, 1, 0, 0],
                [0, 1, 0, 1],
                [1, 1, 0, 0],
                [0, 1, 0, 1],
                [1, 1, 0, 1],
            ]
        ],
        dtype=bool,
    )
    mean, std = forgetting(correct)
    assert mean.tolist() == [2.0, 0.0, 5.0, 1.0]
    assert std.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_forgetting_averages_over_probes() -> None:
    correct = np.array([[[1], [0]], [[1], [1]]], dtype=bool)  # probe 1 forgets once, probe 2 never
    mean, std = forgetting(correct)
    assert mean.tolist() == [0.5] and std.tolist() == [0.5]


def test_uncertainty_max_and_entropy() -> None:
    # mean probs: [0.9, 0.1], [0.5, 0.5], [0.3, 0.7]
    np.testing.assert_allclose(uncertainty(PROBS), [0.1, 0.5, 0.3])
    expected = [-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)), math.log(2), -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))]
    np.testing.assert_allclose(uncertainty(PROBS, "entropy"), expected)


def test_ddd_counts_misclassifying_probes() -> None:
    # argmax per probe: [0, 0, 1] and [0, 0, 1] (ties go to class 0); labels [0, 1, 0]
    assert ddd(PROBS, LABELS).tolist() == [0.0, 2.0, 2.0]


def test_memorization_by_hand() -> None:
    correct = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=bool)
    in_train = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=bool)
    scores, gaps = memorization(correct, in_train)
    # ex0: in {0,2}: 1,1 -> 1; out {1,3}: 0,1 -> .5 => .5
    # ex1: in {0,1,3}: 1,1,1 -> 1; out {2}: 0 -> 0 => 1
    # ex2: in {1,2,3}: 1,1,1 -> 1; out {0}: 0 => 1
    np.testing.assert_allclose(scores, [0.5, 1.0, 1.0])
    assert gaps == {"never_held_out": 0, "never_trained_on": 0}


def test_memorization_fills_missing_side_with_population_mean() -> None:
    correct = np.array([[1, 0], [1, 1]], dtype=bool)
    in_train = np.array([[1, 1], [1, 0]], dtype=bool)  # example 0 is never held out
    scores, gaps = memorization(correct, in_train)
    # population held-out accuracy: only (k=1, n=1): 1.0 ; ex0: p_in 1 - 1.0 = 0 ; ex1: p_in 0 - p_out 1 = -1
    np.testing.assert_allclose(scores, [0.0, -1.0])
    assert gaps == {"never_held_out": 1, "never_trained_on": 0}
    with pytest.raises(RunDirError, match="use --subset below 1"):
        memorization(correct, np.ones_like(in_train))


def test_random_is_seeded() -> None:
    assert random_scores(5, 1).tolist() == random_scores(5, 1).tolist()
    assert random_scores(5, 1).tolist() != random_scores(5, 2).tolist()
