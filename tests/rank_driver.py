"""One rank of a tests/ranks.py job: run each command of argv[1] (JSON) through the CLI in one process group.

A command is an argument list, or {"args": [...], "expect": CODE, "interrupt_epoch": N}:
`interrupt_epoch` is Ctrl-C as torchrun delivers it (to every rank at once), here as epoch N's
end is reached, before anything of epoch N is written (expect 130). The job stops at the first
command whose exit code is not the one expected (default 0), as `&&` would. Marker lines
around each command (ranks.MARK) let tests/ranks.py give each test module its commands' output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from datadiet_cli import distributed
from datadiet_cli.cli import app
from tests.ranks import MARK

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
        for index, command in enumerate(json.loads(sys.argv[1])):
            spec = command if isinstance(command, dict) else {"args": command}
            epoch = spec.get("interrupt_epoch")
            for stream in (sys.stdout, sys.stderr):
                stream.write(f"{MARK} {index} start\n")
                stream.flush()
            code = 0
            try:
                with interrupted_at(epoch):
                    app(spec["args"], prog_name="datadiet")
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
            sys.stdout.write(f"{MARK} {index} exit {code}\n")
            sys.stdout.flush()
            if code != spec.get("expect", INTERRUPTED if epoch is not None else 0):
                return code or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
