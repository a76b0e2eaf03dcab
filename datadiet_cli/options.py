"""Options shared by several subcommands, declared once: typed, with real defaults and help that teaches.

A command takes them as `device: DeviceOption = Device.auto`; the enums' `.value` is what the
library receives, so no command converts them its own way.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from datadiet_cli.data.seeds import SEED_MAX, seed_problem
from datadiet_cli.train.recipes import RecipeName


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


InputManifest = Annotated[
    Path,
    typer.Argument(help="Input manifest (.parquet) written by an earlier datadiet step.", show_default=False),
]
OutputManifest = Annotated[
    Path,
    typer.Option(
        "--output",
        "-o",
        help="Output manifest (.parquet). Written atomically: a failed run leaves no file, and an existing file "
        "is replaced only once the new one is complete.",
        show_default=False,
    ),
]


def _seed_in_range(value: int) -> int:
    problem = seed_problem(value)
    if problem is not None:
        raise typer.BadParameter(problem)
    return value


Seed = Annotated[
    int,
    typer.Option(
        "--seed",
        help=f"Random seed, 0..{SEED_MAX}; the same seed and input give the same output.",
        callback=_seed_in_range,
    ),
]
Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress bars or summary (errors still go to stderr)."),
]
DeviceOption = Annotated[
    Device,
    typer.Option(
        "--device",
        help="Where to compute: auto takes a CUDA or MPS GPU when present, else the CPU.",
    ),
]
RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Dataset root, overriding the one recorded in the manifest (for a moved dataset).",
        show_default=False,
    ),
]
RecipeOption = Annotated[
    RecipeName,
    typer.Option(
        "--recipe",
        help="Training settings to start from: cifar and imagenet are the paper's (App. B); fast trains a "
        "small CNN on a CPU in minutes. Fields can be overridden (see train --help).",
    ),
]
ArchOption = Annotated[
    str | None,
    typer.Option(
        "--arch",
        help="Network: smallcnn, resnet18, resnet50 or torchvision:NAME (default: the recipe's).",
        show_default=False,
    ),
]
InferenceBatchSize = Annotated[
    int,
    typer.Option("--batch-size", help="Images per forward pass (no gradients: larger is faster, if memory allows)."),
]
