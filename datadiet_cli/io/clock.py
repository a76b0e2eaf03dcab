"""The time datadiet records in its outputs (lineage steps, config.json, summary.md).

Reproducible builds' convention: when SOURCE_DATE_EPOCH is set, it replaces the clock, so the
same inputs and seed give byte-identical files (https://reproducible-builds.org/specs/source-date-epoch/).
"""

from __future__ import annotations

import datetime as dt
import os

from datadiet_cli.errors import OptionError


def recorded_time() -> str:
    """UTC time in ISO 8601 to the second: $SOURCE_DATE_EPOCH when set, else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        moment = dt.datetime.now(dt.timezone.utc)
    else:
        try:
            moment = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise OptionError(
                f"SOURCE_DATE_EPOCH={epoch}: not a count of seconds since 1970-01-01 UTC; "
                "set it to e.g. $(git log -1 --format=%ct), or unset it to record the current time"
            ) from None
    return moment.isoformat(timespec="seconds")
