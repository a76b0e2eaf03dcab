"""One rank of a tests/ranks.py job: run each command of argv[1] (JSON) through the CLI in one process group.

Stops at the first command that fails, with its exit code, as a shell `&&` chain would.
"""

from __future__ import annotations

import json
import sys

from datadiet_cli import distributed
from datadiet_cli.cli import app


def main() -> int:
    commands = json.loads(sys.argv[1])
    with distributed.launched("cpu"):  # the commands reuse this process group
        for arguments in commands:
            try:
                app(arguments, prog_name="datadiet")
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
                if code:
                    return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
