"""`datadiet report`: figures and tables from finished runs and scored manifests, no retraining.

`build_report` is the one entry point: it reads and checks every input first (report.runs,
report.scores), then lets each Part of the registry (report.registry) compute, draw and describe
itself into a staging folder, writes summary.md and publishes the folder (report.publish).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar, cast

from datadiet_cli.errors import OptionError
from datadiet_cli.io.manifest import read_manifest
from datadiet_cli.report.markdown import SUMMARY_FILE, summary_markdown
from datadiet_cli.report.publish import publish, staging_folder
from datadiet_cli.report.registry import PARTS, Part, ReportConfig, ReportInputs, owned
from datadiet_cli.report.runs import RunRecord, collect_runs
from datadiet_cli.report.scores import chosen_classes, score_sources

ProgressCallback = Callable[[int, int], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Report:
    """What `build_report` read, showed and wrote."""

    runs: tuple[RunRecord, ...]  # run folders read, in the order given
    manifests: tuple[str, ...]  # scored manifests read, as given
    files: tuple[str, ...]  # files written into OUT_DIR, summary.md last
    notes: tuple[str, ...]  # what could not be shown, in summary order
    shown: dict[Part, object]  # each part's data; a part with nothing to show has no entry

    def of(self, part: Part[T]) -> T | None:
        """The data `part` showed (None when it had nothing to show)."""
        return cast("T | None", self.shown.get(part))


def build_report(
    run_dirs: Sequence[Path | str],
    manifest_paths: Sequence[Path | str],
    out_dir: Path | str,
    config: ReportConfig = ReportConfig(),
    progress: ProgressCallback | None = None,
) -> Report:
    """Read the runs and manifests, compute, draw and write OUT_DIR; all files appear together or none."""
    out_dir = Path(out_dir)
    inputs = read_inputs(run_dirs, manifest_paths, out_dir, config)
    notes: list[str] = []
    shown: dict[Part, object] = {}
    steps = len(PARTS) + 1  # each part, then summary.md and publishing
    with staging_folder(out_dir) as staging:
        for part in PARTS:
            data = part.compute(inputs, notes)
            if data is not None:
                shown[part] = data
                if part.write is not None:
                    part.write(data, part.target(staging))
            if progress is not None:
                progress(1, steps)
        files = (*sorted(path.name for path in staging.iterdir()), SUMMARY_FILE)
        sections = [
            line
            for part in PARTS
            for line in (part.section(shown[part], part.file) if part in shown else part.absent(inputs, part.file))
        ]
        (staging / SUMMARY_FILE).write_text(summary_markdown(files, sections, notes))
        publish(staging, out_dir, partial(owned, parts=PARTS))
        if progress is not None:
            progress(1, steps)
    return Report(inputs.runs, inputs.manifest_paths, files, tuple(notes), shown)


def read_inputs(
    run_dirs: Sequence[Path | str], manifest_paths: Sequence[Path | str], out_dir: Path, config: ReportConfig
) -> ReportInputs:
    """Every option checked and every input read, so that a mistake stops the report before any drawing."""
    if not run_dirs and not manifest_paths:
        raise OptionError(
            "no run directories given; pass RUN_DIR... written by `datadiet train` and `datadiet evaluate` "
            "(or --manifest SCORED.parquet for the score figures alone)"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise OptionError(f"{out_dir}: is a file; -o takes a directory for the report")
    if not 0.0 <= config.min_ratio <= 1.0:
        raise OptionError(f"--min-ratio {config.min_ratio} is outside [0, 1]; the paper uses 0.5")
    if config.per_side < 1:
        raise OptionError(f"--per-class {config.per_side} must be at least 1")
    runs = collect_runs(run_dirs)
    manifests = [read_manifest(path) for path in manifest_paths]
    sources = score_sources(manifests, config.scores) if manifests else []
    if config.classes:
        for manifest in manifests:
            chosen_classes(manifest, config.classes)  # unknown class names fail before any work
    return ReportInputs(config, tuple(runs), tuple(manifests), tuple(str(p) for p in manifest_paths), tuple(sources))
