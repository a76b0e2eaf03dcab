"""Lineage: what each step that produced a manifest ran, with which options, on which inputs."""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datadiet_cli import __version__
from datadiet_cli.io.files import describe_file, to_jsonable


@dataclass(frozen=True)
class LineageStep:
    """One entry of a manifest's lineage list: what ran, with what, on which inputs."""

    command: str  # the subcommand, e.g. "prune"
    options: Mapping[str, Any]  # the step's config dataclass, as JSON
    inputs: Sequence[Path] = ()  # files the step read; each is recorded with its digest
    stats: Mapping[str, Any] = field(default_factory=dict)  # what the step measured (sizes, b, ...)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "argv": shlex.join(["datadiet", *sys.argv[1:]]) if _invoked_as_cli() else None,
            "options": to_jsonable(self.options),
            "version": __version__,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "inputs": [describe_file(p) for p in self.inputs],
            "stats": to_jsonable(self.stats),
        }


def _invoked_as_cli() -> bool:
    return Path(sys.argv[0]).name in {"datadiet", "__main__.py"}
