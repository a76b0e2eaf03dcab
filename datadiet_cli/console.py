"""Terminal output for the CLI: summaries, rich progress bars and error lines. Library code never prints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

# Library functions that do long work accept `progress(done_delta, total)` callbacks of this shape.
ProgressCallback = Callable[[int, int], None]


# What Ctrl-C leaves on disk, said by the command that knows (e.g. train: a resumable run folder).
# Called with the declared outputs written so far; None falls back to `interrupted_line`'s default.
InterruptNote = Callable[[list[Path]], "str | None"]
_interrupt_notes: list[InterruptNote] = []


def on_interrupt(note: InterruptNote) -> None:
    """Register what to say if the running command is interrupted (the last registered note wins)."""
    _interrupt_notes.append(note)


def reset_interrupt_notes() -> None:
    _interrupt_notes.clear()


def interrupted_line(written: list[Path]) -> str:
    """The line Ctrl-C prints: the command's own note, or what of its outputs is on disk."""
    for note in reversed(_interrupt_notes):
        line = note(written)
        if line:
            return line
    if not written:
        return "interrupted; no output was written"
    return f"interrupted after writing {', '.join(map(str, written))}; its other outputs were not written"


def error_line(message: str) -> None:
    """Exactly one red line on stderr (messages never contain markup to interpret)."""
    first_line = " ".join(str(message).split())
    stderr.print(Text("error: ", style="bold red") + Text(first_line, style="red"))


@contextmanager
def progress_bar(description: str, quiet: bool, unit: str = "items") -> Iterator[ProgressCallback]:
    """A rich progress bar driven by a library callback; a no-op callback when quiet."""
    if quiet:
        yield lambda advance, total: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    # Started on the first report, so an error found before any work prints its line alone.
    bar = Progress(*columns, console=stderr, transient=False)
    tasks: list[TaskID] = []

    def advance(done: int, total: int) -> None:
        if not tasks:
            bar.start()
            tasks.append(bar.add_task(description, total=None))
        bar.update(tasks[0], advance=done, total=total)

    try:
        yield advance
    except BaseException:
        bar.live.transient = True  # the error line must stand alone: erase the half-done bar
        raise
    finally:
        if tasks:
            bar.stop()


def summary(quiet: bool, *lines: str) -> None:
    if not quiet:
        for line in lines:
            stdout.print(line, highlight=False)
