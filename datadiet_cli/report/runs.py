"""Run folders read into RunRecords: what each run trained on, from its lineage, and how well it did.

What a run was trained on is read from its config.json (the training manifest's whole lineage,
which `train` copies there) and how well it did from the eval.json that `evaluate` leaves beside
it. This is the one module that knows a run folder's file names.

How a run's subset is read from its lineage (docs/report.md):
- the *selection* is the last `prune` step, unless a `score` or `cluster` step follows it: then
  the scores were computed on the pruned set, which is the run's starting set, and the run
  is unpruned (fraction 1.0, the reference for every metric);
- the starting set is the input of that prune; its size is the "starting size";
- a `balance` step after that prune marks the run as balanced;
- a keep=random run is also the fraction-1.0 reference of the runs that were pruned further
  from exactly its subset (the same prune step appears earlier in their lineage).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datadiet_cli.errors import RunDirError
from datadiet_cli.io.lineage import SCORING_COMMANDS, Lineage, RecordedFile
from datadiet_cli.io.manifest import read_manifest
from datadiet_cli.io.rundir import RunDir

UNPRUNED = "none"  # metric and keep of a run trained on its whole starting set


@dataclass(frozen=True, order=True)
class Selection:
    """How a run's training subset was chosen from its starting set; runs of one Selection are compared."""

    metric: str  # score column the prune ranked by; "random" for keep=random; "none" when unpruned
    keep: str  # hard | easy | random | window@START | none
    balanced: bool  # a `balance` step followed the prune

    @property
    def is_reference(self) -> bool:
        return self.keep == UNPRUNED

    @property
    def is_random(self) -> bool:
        return self.keep == "random"

    @property
    def label(self) -> str:
        if self.is_reference:
            return "unpruned"
        name = "random" if self.is_random else f"{self.metric}, keep {self.keep}"
        return name + (" + balance" if self.balanced else "")


@dataclass(frozen=True)
class RunRecord:
    """One finished run, as read from its config.json and eval.json."""

    run_dir: str  # the folder as given
    metric: str  # score column the prune ranked by; "random" for keep=random; "none" when unpruned
    keep: str  # hard | easy | random | window@START | none
    fraction: float  # fraction of the starting set kept (the prune's --fraction, else rows kept / rows in)
    balanced: bool  # a `balance` step followed the prune
    start_size: int  # examples in the set the prune ranked
    full_size: int  # examples of the dataset before any pruning
    rows: int  # examples trained on
    seed: int  # train --seed
    prune_seed: int | None  # prune --seed (ties and keep=random draws); None when unpruned
    top1: float  # test top-1 accuracy from eval.json
    top5: float  # test top-5 accuracy; NaN when eval.json has none
    loss: float  # test loss; NaN when eval.json has none
    test_n: int  # test examples evaluated
    setting: str  # recipe/arch/epochs: runs of different settings are never averaged together
    test_set: str  # sha256 of the test manifest (first 12 hex digits), "" when unknown
    start_key: str  # identity of the starting set (which prune made it), to match reference runs
    subset_key: str  # identity of the trained subset's prune

    @property
    def error(self) -> float:
        return 1.0 - self.top1

    @property
    def selection(self) -> Selection:
        return Selection(self.metric, self.keep, self.balanced)


def describe_subset(lineage: Lineage, rows: int) -> dict[str, Any]:
    """metric, keep, fraction, balanced, start_size, prune_seed, start_key, subset_key from a lineage.

    `rows` is the size of the trained set (the fraction and starting size of an unpruned run).
    """
    last_prune = lineage.index_of_last("prune")
    scored_after = last_prune is not None and any(
        step.command in SCORING_COMMANDS for step in lineage[last_prune + 1 :]
    )
    if last_prune is None or scored_after:
        made_by = lineage[last_prune].key() if last_prune is not None else "dataset"
        return {
            "metric": UNPRUNED,
            "keep": UNPRUNED,
            "fraction": 1.0,
            "balanced": False,
            "start_size": rows,
            "prune_seed": None,
            "start_key": made_by,
            "subset_key": made_by,
        }
    step = lineage[last_prune]
    options, stats = step.options, step.stats
    keep = str(options.get("keep"))
    rows_in = int(stats.get("rows_in") or rows)
    requested = options.get("fraction")
    fraction = float(requested) if requested is not None else int(stats.get("rows_kept") or rows) / rows_in
    if keep == "window":
        keep = f"window@{float(options.get('window_start') or 0.0):g}"
    earlier = [i for i, s in enumerate(lineage[:last_prune]) if s.command == "prune"]
    return {
        "metric": "random" if keep == "random" else str(options.get("score")),
        "keep": keep,
        "fraction": fraction,
        "balanced": any(s.command == "balance" for s in lineage[last_prune + 1 :]),
        "start_size": rows_in,
        "prune_seed": int(options.get("seed") or 0),
        "start_key": lineage[earlier[-1]].key() if earlier else "dataset",
        "subset_key": step.key(),
    }


def read_run(run_dir: Path | str) -> RunRecord:
    """One run directory as a RunRecord, with one-line errors for what is missing."""
    run = RunDir(run_dir)
    evaluation = run.read_eval()
    settings = run.config()
    manifest = settings.get("manifest") or {}
    rows = int(manifest.get("rows") or 0)
    subset = describe_subset(_lineage_of(run, manifest), rows)
    config = settings.get("config") or {}
    recipe = config.get("recipe") or {}
    test = evaluation.get("test_manifest") or {}
    try:
        return RunRecord(
            run_dir=str(run.path),
            rows=rows,
            full_size=int(manifest.get("full_size") or rows),
            seed=int(config.get("seed") or 0),
            top1=float(evaluation["top1"]),
            top5=float(evaluation.get("top5", math.nan)),
            loss=float(evaluation.get("loss", math.nan)),
            test_n=int(evaluation.get("n") or 0),
            setting=f"{recipe.get('name', '?')}/{recipe.get('arch', '?')}/{recipe.get('epochs', '?')} epochs"
            + (f"/matched {config['matched_iterations']:g}" if config.get("matched_iterations") else ""),
            test_set=str(test.get("sha256") or "")[:12],
            **subset,
        )
    except (KeyError, TypeError, ValueError):
        raise RunDirError(
            f"{run.eval_path}: has no top1 accuracy; run `datadiet evaluate {run} TEST.parquet` again"
        ) from None


def _lineage_of(run: RunDir, manifest: Mapping[str, Any]) -> Lineage:
    """The training manifest's lineage: from config.json, else from the unchanged manifest file itself."""
    if "lineage" in manifest:
        return Lineage.of(manifest["lineage"], str(run.config_path))
    recorded = RecordedFile.of(manifest)
    if recorded.unchanged():
        return read_manifest(recorded.path).lineage()
    raise RunDirError(
        f"{run.config_path}: records no lineage of its training manifest (an older datadiet) and "
        f"{manifest.get('path') or 'the manifest'} is gone or changed; train the run again with this datadiet"
    )


def collect_runs(run_dirs: Sequence[Path | str]) -> list[RunRecord]:
    """Every run directory read once (duplicates by path dropped), in the order given."""
    seen: set[Path] = set()
    runs = []
    for run_dir in run_dirs:
        resolved = Path(run_dir).resolve()
        if resolved not in seen:
            seen.add(resolved)
            runs.append(read_run(run_dir))
    return runs


def with_references(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs plus, for each keep=random run whose exact subset others pruned further, its reading as
    those runs' unpruned fraction-1.0 reference."""
    starts = {(run.setting, run.start_key) for run in runs}
    extra = [
        dataclasses.replace(
            run,
            metric=UNPRUNED,
            keep=UNPRUNED,
            fraction=1.0,
            balanced=False,
            start_size=run.rows,
            start_key=run.subset_key,
        )
        for run in runs
        if run.keep == "random" and not run.balanced and (run.setting, run.subset_key) in starts
    ]
    return [*runs, *extra]


# results.csv: one row per run, these RunRecord fields (and the error) in this order.
RESULT_COLUMNS = (
    "run_dir",
    "metric",
    "keep",
    "fraction",
    "balanced",
    "start_size",
    "full_size",
    "rows",
    "seed",
    "prune_seed",
    "top1",
    "top5",
    "error",
    "loss",
    "test_n",
    "setting",
    "test_set",
)


def write_results_csv(runs: Sequence[RunRecord], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(RESULT_COLUMNS)
        for run in runs:
            writer.writerow(["" if (v := getattr(run, c)) is None else v for c in RESULT_COLUMNS])
