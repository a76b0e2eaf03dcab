"""Options shared by several subcommands, defined once (typed, with help that names defaults)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer


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
        help="Output manifest (.parquet). Written atomically: a failed run leaves no file.",
        show_default=False,
    ),
]
Seed = Annotated[
    int,
    typer.Option("--seed", help="Random seed; the same seed and input give the same output."),
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
