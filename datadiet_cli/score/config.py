"""What `datadiet score` is asked to do, and the checks that need no probes."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datadiet_cli.distributed import SINGLE, Ranks
from datadiet_cli.errors import OptionError
from datadiet_cli.io.rundir import RunDir
from datadiet_cli.score.registry import Metric, Need, metric_spec
from datadiet_cli.train.recipes import Augment, recipe_with


class GrandMode(str, enum.Enum):
    exact = "exact"  # gradient of the loss w.r.t. every parameter, per example (torch.func vmap)
    last_layer = "last-layer"  # only the final linear layer: ||p - y|| * sqrt(||h||^2 + 1), closed form


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


def check_config(config: ScoreConfig, from_runs: Sequence[Path], ranks: Ranks = SINGLE) -> None:
    """Every option check, before any probe trains."""
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
    if config.jobs > 1 and ranks.distributed:
        # Pools inside ranks would put several probes on one rank's device and oversubscribe its cores.
        raise OptionError(
            f"--jobs {config.jobs}: under torchrun each of the {ranks.world} ranks already trains its own probes; "
            "drop --jobs and set the number of workers with torchrun --nproc-per-node"
        )
    if config.probe_schedule is ProbeSchedule.truncated and metric_spec(config.metric).needs is not Need.nothing:
        planned = recipe_with(config.recipe).epochs
        if config.probe_epochs > planned:
            raise OptionError(
                f"--probe-epochs {config.probe_epochs} is longer than the {config.recipe} recipe's {planned} epochs; "
                "a truncated schedule stops inside the recipe (or use --probe-schedule compressed)"
            )
    for run in from_runs:
        if not RunDir(run).has_checkpoint():
            raise OptionError(f"--from-runs {run}: not a finished `datadiet train` run (no checkpoint.pt)")
