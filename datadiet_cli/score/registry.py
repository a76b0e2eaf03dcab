"""Every supervised difficulty metric `datadiet score` offers, one entry each.

An entry says what the metric needs from the probe runs, which formula turns that into
scores, whether a spread across probes is written as `<column>_std`, and what to cite.
`Metric` (the `--metric` choices) is built from the entries, so adding a metric is one
`MetricSpec` in `METRICS` below. The formulas themselves live in metrics.py and grand.py.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from datadiet_cli.score import metrics

if TYPE_CHECKING:
    from datadiet_cli.score.config import ScoreConfig
    from datadiet_cli.score.readings import ProbeReadings


class Need(str, enum.Enum):
    """What a metric reads from the probes; it also decides how the probes are trained."""

    probabilities = "probabilities"  # class probabilities of every example from each probe's final weights
    dynamics = "dynamics"  # correct / incorrect at every training presentation (probes record dynamics)
    membership = "membership"  # probabilities + which examples each probe trained on (probes train on subsets)
    gradient_norms = "gradient norms"  # per-example loss-gradient norms under each probe's final weights
    nothing = "nothing"  # no probes are trained or read


@dataclass(frozen=True)
class Measured:
    """A metric's result for the N rows of a manifest."""

    values: np.ndarray  # (N,) scores, higher = harder
    spread: np.ndarray | None = None  # (N,) standard deviation across probes; None where the metric has none
    extra: Mapping[str, Any] = field(default_factory=dict)  # added to the score column's recorded params


@dataclass(frozen=True)
class MetricSpec:
    name: str  # the --metric value and the default column name
    needs: Need  # what is read from (and so how to train) the probes
    compute: Callable[[ProbeReadings, ScoreConfig], Measured]  # readings of the K probes -> scores
    writes_std: bool  # whether <column>_std (spread across probes) is written beside the scores
    citation: str  # recorded in the score column's params


def _el2n(readings: ProbeReadings, config: ScoreConfig) -> Measured:
    mean, std = metrics.el2n(readings.probabilities(), readings.labels())
    return Measured(mean, std)


def _grand(readings: ProbeReadings, config: ScoreConfig) -> Measured:
    per_probe = readings.gradient_norms()  # (K, N)
    return Measured(per_probe.mean(axis=0), per_probe.std(axis=0), {"grand_mode": config.grand_mode.value})


def _forgetting(readings: ProbeReadings, config: ScoreConfig) -> Measured:
    mean, std = metrics.forgetting(readings.training_correctness())
    return Measured(mean, std)


def _uncertainty(readings: ProbeReadings, config: ScoreConfig) -> Measured:
    return Measured(metrics.uncertainty(readings.probabilities(), config.variant), extra={"variant": config.variant})


def _ddd(readings: ProbeReadings, config: ScoreConfig) -> Measured:
    return Measured(metrics.ddd(readings.probabilities(), readings.labels()))


def _memorization(readings: ProbeReadings, config: ScoreConfig) -> Measured:
    correct = readings.probabilities().argmax(axis=-1) == readings.labels()[None]  # (K, N)
    scores, gaps = metrics.memorization(correct, readings.training_membership())
    return Measured(scores, extra={"subset": config.subset, **gaps})


def _random(readings: ProbeReadings, config: ScoreConfig) -> Measured:
    return Measured(metrics.random_scores(readings.num_rows, config.seed))


PAUL = "Paul et al. 2021, Deep learning on a data diet"
METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("el2n", needs=Need.probabilities, compute=_el2n, writes_std=True, citation=PAUL),
        MetricSpec("grand", needs=Need.gradient_norms, compute=_grand, writes_std=True, citation=PAUL),
        MetricSpec("forgetting", needs=Need.dynamics, compute=_forgetting, writes_std=True,
                   citation="Toneva et al. 2019, An empirical study of example forgetting"),
        MetricSpec("uncertainty", needs=Need.probabilities, compute=_uncertainty, writes_std=False,
                   citation="Beluch et al. 2018, The power of ensembles for active learning"),
        MetricSpec("ddd", needs=Need.probabilities, compute=_ddd, writes_std=False,
                   citation="Meding et al. 2022, Trivial or impossible: dichotomous data difficulty"),
        MetricSpec("memorization", needs=Need.membership, compute=_memorization, writes_std=False,
                   citation="Feldman & Zhang 2020, What neural networks memorize and why"),
        MetricSpec("random", needs=Need.nothing, compute=_random, writes_std=False, citation="baseline"),
    )
}  # fmt: skip

# The --metric choices in registry order; a str enum, so typer lists its values, lineage records the name,
# and a ScoreConfig pickles into the probe processes of --jobs.
Metric = enum.Enum("Metric", [(name, name) for name in METRICS], module=__name__, type=str)


def metric_spec(metric: Metric) -> MetricSpec:
    return METRICS[metric.value]
