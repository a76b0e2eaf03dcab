"""Named errors, one class per condition. The library raises these; only the CLI turns them into a
red line and an exit code (1 for bad input, 2 for usage). Messages name the file/column/value and the fix."""


class DatadietError(Exception):
    """Base class: a problem the user can fix."""

    exit_code = 1


class ManifestError(DatadietError):
    """A manifest file is unreadable or breaks the manifest contract (docs/manifest.md)."""


class ColumnError(ManifestError):
    """A column is missing, has the wrong type, or holds values the step cannot use."""


class LineageError(ManifestError):
    """A manifest's lineage lacks a step this command needs, or a file it records is gone or changed."""


class TableError(DatadietError):
    """A Parquet file that is not a manifest (embeddings, dynamics, predictions) is missing or unreadable."""


class DatasetError(DatadietError):
    """The pixels behind a manifest (or an ingest source) cannot be found or read."""


class RunDirError(DatadietError):
    """A run folder is missing, unfinished, or holds a file (config, checkpoint, eval) that cannot be read."""


class ModelFileError(DatadietError):
    """An encoder or weights file the user named cannot be loaded or does not fit the network."""


class EmbeddingError(DatadietError):
    """Embeddings do not match the manifest (shape, ids) or hold values k-means cannot use."""


class SolverError(DatadietError):
    """A theory solve failed its own check (a max-margin solution that breaks the KKT conditions)."""


class OutputError(DatadietError, OSError):
    """An output cannot be written: its folder is not writable, the disk is full. Also an OSError, so code
    that tolerates a failed write (the pixel cache) still does."""


class OptionError(DatadietError):
    """An option value is invalid for this input (e.g. --count larger than the manifest)."""

    exit_code = 2


class Interrupted(DatadietError):
    """Ctrl-C (SIGINT) during a command; the message says what is on disk (console.interrupted_line)."""

    exit_code = 130


class LaunchError(DatadietError):
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) does not describe a job this machine can run."""


class RankLost(DatadietError):
    """Under torchrun, another rank of the job stopped (its own error line says why) and this one cannot go on."""
