"""All of a report appears in OUT_DIR at once, or none of it: it is drawn in a staging folder, then moved."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from datadiet_cli.io.files import stale_temporaries, temporary_name
from datadiet_cli.report.markdown import SUMMARY_FILE


@contextmanager
def staging_folder(out_dir: Path) -> Iterator[Path]:
    """A private folder beside OUT_DIR (same file system, so moving out of it is a rename), always removed.

    Named like every datadiet temporary (`.NAME.tmp-PID`), so one a killed report left is removed by the next.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(temporary_name(out_dir))
    shutil.rmtree(staging, ignore_errors=True)  # left by a killed process that had this PID before
    staging.mkdir(mode=0o700)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, out_dir: Path, owned: Callable[[str], bool]) -> None:
    """Move the finished files into OUT_DIR: a rename of the whole folder when OUT_DIR is new; otherwise
    file by file, after removing the files an earlier report left there (those `owned` claims) that this
    one does not rewrite. Other files in OUT_DIR are left alone."""
    if not out_dir.exists():
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # the staging folder is private (0700); a report folder is an ordinary one
        os.replace(staging, out_dir)
    else:
        _replace_files(staging, out_dir, owned)
    for stale in stale_temporaries(out_dir):
        shutil.rmtree(stale, ignore_errors=True)


def _replace_files(staging: Path, out_dir: Path, owned: Callable[[str], bool]) -> None:
    produced = {path.name for path in staging.iterdir()}
    for old in out_dir.iterdir():
        if owned(old.name) and old.is_file() and old.name not in produced:
            old.unlink()
    for name in sorted(produced, key=lambda n: n == SUMMARY_FILE):  # summary.md last: it lists the others
        os.replace(staging / name, out_dir / name)
