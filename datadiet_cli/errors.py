"""Named errors. The library raises these; only the CLI turns them into a red line and an exit code."""


class DatadietError(Exception):
    """Base class: a problem the user can fix. The message names the file/column/value and the fix."""

    exit_code = 1


class ManifestError(DatadietError):
    """A manifest file is unreadable or breaks the manifest contract (docs/manifest.md)."""


class ColumnError(ManifestError):
    """A column is missing, has the wrong type, or holds values the step cannot use."""


class DatasetError(DatadietError):
    """The pixels behind a manifest (or an ingest source) cannot be found or read."""


class OptionError(DatadietError):
    """An option value is invalid for this input (e.g. --count larger than the manifest)."""

    exit_code = 2
