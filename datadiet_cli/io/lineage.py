"""Lineage: what each step that produced a manifest ran, with which options, on which inputs.

Writing: a step appends one `LineageStep`. Reading: `Lineage.of(manifest.meta)` gives typed
`Step`s, so no stage parses the JSON by hand; `RecordedFile.verified` is the one check that a
recorded input still exists and has the digest it had.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datadiet_cli import __version__
from datadiet_cli.errors import LineageError
from datadiet_cli.io.clock import recorded_time
from datadiet_cli.io.files import describe_file, file_digest, to_jsonable

# Commands whose step adds a score column (a run trained after one of these is an unpruned start).
SCORING_COMMANDS = ("score", "cluster")


@dataclass(frozen=True)
class LineageStep:
    """One entry to append to a manifest's lineage: what ran, with what, on which inputs."""

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
            "time": recorded_time(),
            "inputs": [describe_file(p) for p in self.inputs],
            "stats": to_jsonable(self.stats),
        }


def _invoked_as_cli() -> bool:
    return Path(sys.argv[0]).name in {"datadiet", "__main__.py"}


@dataclass(frozen=True)
class RecordedFile:
    """A file a step read, as recorded: absolute path, sha256 and size at the time."""

    path: Path
    sha256: str | None
    size: int | None

    @staticmethod
    def of(entry: Mapping[str, Any]) -> RecordedFile:
        return RecordedFile(Path(str(entry.get("path") or "")), entry.get("sha256"), entry.get("bytes"))

    def unchanged(self) -> bool:
        """Whether the file is still there with the recorded digest."""
        return bool(self.sha256) and self.path.is_file() and file_digest(self.path) == self.sha256

    def verified(self, what: str, fix: str) -> Path:
        """The path, after checking it exists and is unchanged; `what` says what it was, `fix` what to do."""
        if not self.path.is_file():
            raise LineageError(f"{self.path}: {what} is gone (moved or deleted); {fix}")
        if file_digest(self.path) != self.sha256:
            raise LineageError(f"{self.path}: {what} has changed since (sha256 differs); {fix}")
        return self.path


@dataclass(frozen=True)
class Step:
    """One lineage entry as read back."""

    command: str
    options: Mapping[str, Any]
    inputs: tuple[RecordedFile, ...]
    stats: Mapping[str, Any]
    version: str | None = None
    time: str | None = None
    argv: str | None = None

    @staticmethod
    def of(entry: Mapping[str, Any]) -> Step:
        return Step(
            command=str(entry.get("command")),
            options=dict(entry.get("options") or {}),
            inputs=tuple(RecordedFile.of(item) for item in entry.get("inputs") or []),
            stats=dict(entry.get("stats") or {}),
            version=entry.get("version"),
            time=entry.get("time"),
            argv=entry.get("argv"),
        )

    def key(self) -> str:
        """Identity of the step: command, options, inputs' digests and stats (not its time or argv)."""
        essence = {
            "command": self.command,
            "options": self.options,
            "inputs": [item.sha256 for item in self.inputs],
            "stats": self.stats,
        }
        return hashlib.sha256(json.dumps(essence, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Lineage(Sequence[Step]):
    """The steps that made a manifest, oldest first."""

    steps: tuple[Step, ...] = ()

    @staticmethod
    def of(entries: Sequence[Mapping[str, Any]] | None, source: str = "<manifest>") -> Lineage:
        """From the JSON list stored in a manifest's metadata (or a run's config.json)."""
        if entries is None:
            return Lineage()
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise LineageError(f"{source}: its lineage is not a list of steps; write it again with datadiet")
        return Lineage(tuple(Step.of(entry) for entry in entries))

    def __getitem__(self, index: Any) -> Any:
        return self.steps[index]

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def of_command(self, command: str) -> list[Step]:
        return [step for step in self.steps if step.command == command]

    def last(self, command: str) -> Step | None:
        found = self.of_command(command)
        return found[-1] if found else None

    def index_of_last(self, command: str) -> int | None:
        return max((i for i, step in enumerate(self.steps) if step.command == command), default=None)

    def full_size(self, rows: int) -> int:
        """Rows of the full dataset before any pruning: the input of the first prune (else `rows`)."""
        prunes = self.of_command("prune")
        return int(prunes[0].stats["rows_in"]) if prunes else rows
