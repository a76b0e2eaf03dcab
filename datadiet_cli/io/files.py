"""File helpers every writer shares: atomic replacement, digests, JSON-safe config values.

Every datadiet output (manifest, run-folder file, report) is written through `atomic_path`,
so a failed or interrupted step leaves no partial file behind.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from datadiet_cli.errors import OptionError, OutputError


def describe_file(path: Path) -> dict[str, Any]:
    """Absolute path, sha256 and size of a file, so a later step can check it is unchanged."""
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": file_digest(path), "bytes": path.stat().st_size}


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_jsonable(value: Any) -> Any:
    """Config dataclasses, enums, paths and numpy scalars as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


# What this process was asked to write (`check_output`) and what `atomic_path` has finished writing,
# so an interrupted command can say which of its outputs are on disk (cli.py reads them).
_declared: list[Path] = []
_written: list[Path] = []


def reset_outputs() -> None:
    """Forget the outputs declared and written so far (the CLI calls it as each command starts)."""
    _declared.clear()
    _written.clear()


def outputs_written() -> list[Path]:
    """The declared outputs (files, or files inside declared folders) written so far, in order."""
    declared = [Path(os.path.abspath(path)) for path in _declared]
    found: list[Path] = []
    for path in _written:
        absolute = Path(os.path.abspath(path))
        if any(absolute == d or d in absolute.parents for d in declared) and path not in found:
            found.append(path)
    return found


def temporary_name(target: Path, pid: int | None = None) -> str:
    """`.NAME.tmp-PID` beside the target: whose it is, so a later writer can tell a killed writer's leftovers.
    PID is this process's unless given (under torchrun, rank 0 writes what every rank staged)."""
    return f".{target.name}.tmp-{os.getpid() if pid is None else pid}"


def stale_temporaries(target: Path) -> Iterator[Path]:
    """Temporaries (files, or report's staging folders) of `target` left by writers no longer running (killed)."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.tmp-(\d+)$")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        match = pattern.match(name)
        if match and int(match.group(1)) != os.getpid() and not _is_running(int(match.group(1))):
            yield target.parent / name


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a name we cannot judge): leave its file alone
    return True


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    An existing `target` is replaced only then, so a failed or interrupted write leaves the old file
    as it was. After a successful write, temporaries of `target` left by killed writers are removed.
    A file-system failure (folder not writable, disk full) is an OutputError naming `target`.
    """
    target = Path(target)
    temporary = target.with_name(temporary_name(target))
    made = [folder for folder in target.parents if not folder.exists()]  # removed again if the write fails
    written = False
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary.touch()  # a name or place the file system refuses fails here, with the OS's own reason
            yield temporary
            os.replace(temporary, target)
        except OSError as error:
            raise OutputError(f"{target}: could not be written ({_reason(error)}); {_OUTPUT_FIX}") from None
        written = True
        _written.append(target)
        for stale in stale_temporaries(target):
            stale.unlink(missing_ok=True)
    finally:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
        for folder in made if not written else ():  # innermost first; a folder something else filled stays
            with suppress(OSError):
                folder.rmdir()


_OUTPUT_FIX = "check the folder's permissions and free space, or choose another -o path"


def _reason(error: OSError) -> str:
    if error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def check_output(output: Path | str, *inputs: Path | str, suffix: str = ".parquet", option: str = "-o") -> Path:
    """Refuse an output file path before any work: `-`, a wrong suffix, a folder, one of the step's
    inputs, or a place that cannot be written. An existing file is replaced (atomically) by the write."""
    output = Path(output)
    with _denied_as_output_error(output, option):
        _check_output_file(output, inputs, suffix, option)
    _declared.append(output)
    return output


def _check_output_file(output: Path, inputs: tuple[Path | str, ...], suffix: str, option: str) -> None:
    if str(output) == "-":
        raise OptionError(f"{option} -: datadiet writes files, not standard output; give a {suffix} path")
    if output.is_dir():
        raise OptionError(f"{output}: is a directory; {option} takes a {suffix} file path")
    if output.suffix.lower() != suffix:
        raise OptionError(
            f"{option} {output}: the output must end in {suffix} (datadiet writes {_FORMATS.get(suffix, suffix)}); "
            f"e.g. {option} {output.with_suffix(suffix) if output.suffix else output.with_name(output.name + suffix)}"
        )
    for source in inputs:
        if _same_file(Path(source), output):
            raise OptionError(f"{output}: the output would overwrite the input; choose another {option} path")
    _check_writable_folder(output.parent, output, option)
    _check_name_lengths(output, option, temporary=True)


def check_output_folder(output: Path | str, *, option: str = "-o", what: str = "folder") -> Path:
    """Refuse an output folder path before any work: `-`, an existing file, or a place that cannot be written."""
    output = Path(output)
    if str(output) == "-":
        raise OptionError(f"{option} -: datadiet writes a {what}, not standard output; give a folder path")
    with _denied_as_output_error(output, option):
        if output.exists() and not output.is_dir():
            raise OptionError(f"{output}: is a file; {option} takes a {what}")
        _check_writable_folder(output if output.is_dir() else output.parent, output, option)
    _check_name_lengths(output, option, temporary=False)
    _declared.append(output)
    return output


@contextmanager
def _denied_as_output_error(output: Path, option: str) -> Iterator[None]:
    """A path that cannot even be looked at (a folder without permission, a name too long) is one line too."""
    try:
        yield
    except PermissionError:
        raise OutputError(
            f"{option} {output}: the folder {unsearchable_folder(output)} may not be looked into (permission "
            f"denied); choose another {option} path or fix its permissions"
        ) from None
    except OutputError:
        raise  # already one line (OutputError is an OSError too)
    except OSError as error:  # a name too long for the file system, a loop of symbolic links
        raise OptionError(
            f"{option} {output}: cannot be used ({_reason(error)}); choose another {option} path"
        ) from None


def unsearchable_folder(path: Path | str) -> Path:
    """The outermost folder on the way to `path` that this process may not look into (no execute permission)."""
    absolute = Path(os.path.abspath(path))
    for folder in reversed(absolute.parents):
        if not os.access(folder, os.X_OK):
            return folder
    return absolute.parent


_FORMATS = {".parquet": "Parquet", ".json": "JSON"}


def _same_file(source: Path, output: Path) -> bool:
    if source.resolve() == output.resolve():
        return True
    try:
        return os.path.samefile(source, output)  # a hard link, or a path through a bind mount
    except OSError:
        return False


def _check_name_lengths(output: Path, option: str, *, temporary: bool) -> None:
    """Names the file system refuses (each at most NAME_MAX bytes, usually 255), found before any work rather
    than at the final write; for a file, its temporary (.NAME.tmp-PID) must fit too."""
    absolute = Path(os.path.abspath(output))
    existing = next(folder for folder in (absolute, *absolute.parents) if os.path.exists(folder))
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    names = [*absolute.relative_to(existing).parts, *([temporary_name(absolute)] if temporary else [])]
    if any(len(os.fsencode(name)) > limit for name in names):
        raise OptionError(f"{option} {output}: cannot be used (file name too long); choose another {option} path")


def _check_writable_folder(folder: Path, output: Path, option: str) -> None:
    """The folder that will hold `output` (or its nearest existing ancestor, created on write) must be writable."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists():
        if existing.is_symlink():
            raise OptionError(f"{option} {output}: {existing} is a broken symbolic link; choose another {option} path")
        existing = existing.parent
    if not existing.is_dir():
        raise OptionError(f"{option} {output}: {existing} is a file, not a folder; choose another {option} path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"{option} {output}: the folder {existing} is not writable (permission denied); "
            f"choose another {option} path or make the folder writable"
        )
