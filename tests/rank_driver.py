"""One rank of a tests/ranks.py job: run each command of argv[1] (JSON) through the CLI in one process group.

A command is an argument list, or {"args": [...], "interrupt_epoch": N}: Ctrl-C as torchrun
delivers it (to every rank at once), here as epoch N's end is reached, before anything of
epoch N is written. The job stops at the first command that fails otherwise, as `&&` would.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from datadiet_cli import distributed
from datadiet_cli.cli import app

INTERRUPTED = 130


@contextmanager
def interrupted_at(epoch: int | None) -> Iterator[None]:
    if epoch is None:
        yield
        return
    from datadiet_cli.train import loop

    finish = loop.EpochMeter.finish

    def finish_or_interrupt(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.epoch == epoch:
            raise KeyboardInterrupt
        return finish(self, *args, **kwargs)

    loop.EpochMeter.finish = finish_or_interrupt  # type: ignore[method-assign]
    try:
        yield
    finally:
        loop.EpochMeter.finish = finish  # type: ignore[method-assign]


def main() -> int:
    with distributed.launched("cpu"):  # the commands reuse this process group
        for command in json.loads(sys.argv[1]):
            arguments, epoch = (
                (command["args"], command["interrupt_epoch"]) if isinstance(command, dict) else (command, None)
            )
            try:
                with interrupted_at(epoch):
                    app(arguments, prog_name="datadiet")
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
                if code and not (epoch is not None and code == INTERRUPTED):
                    return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
