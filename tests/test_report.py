"""`datadiet report`: exact numbers on hand-made toys, the real pipeline's run directories, one-line errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.errors import OptionError
from datadiet_cli.io.lineage import Lineage, Step
from datadiet_cli.io.manifest import new_manifest, read_manifest, write_manifest
from datadiet_cli.report import build, figures, registry
from datadiet_cli.report.build import build_report
from datadiet_cli.report.publish import publish
from datadiet_cli.report.registry import PARTS, Part, ReportConfig, ReportInputs, owned
from datadiet_cli.report.runs import UNPRUNED, RunRecord, Selection, describe_subset, with_references
from datadiet_cli.report.scores import score_sources
from datadiet_cli.report.stats import (
    aggregate,
    balance_curve,
    class_extremes,
    cluster_class_counts,
    cluster_order,
    easy_hard_pairs,
    fit_exponential,
    fit_power_law,
    mean_std,
    purity,
    size_curves,
    spearman_matrix,
)

runner = CliRunner()


# -- reading lineages ---------------------------------------------------------------------------------


def prune_step(keep: str, rows_in: int, rows_kept: int, **options: Any) -> dict[str, Any]:
    return {
        "command": "prune",
        "options": {"keep": keep, "score": None, "fraction": None, "count": None, "window_start": 0.0, "seed": 0}
        | options,
        "inputs": [{"sha256": f"input-of-{keep}-{rows_in}"}],
        "stats": {"rows_in": rows_in, "rows_kept": rows_kept, "fraction_kept": rows_kept / rows_in},
    }


INGEST = {"command": "ingest", "options": {"source": "builtin:digits"}, "inputs": [], "stats": {"rows": 100}}
SCORE = {"command": "score", "options": {"metric": "el2n"}, "inputs": [], "stats": {}}
BALANCE = {"command": "balance", "options": {"min_ratio": 0.5, "by": "label"}, "inputs": [], "stats": {}}


def test_a_run_without_prune_is_the_unpruned_reference() -> None:
    subset = describe_subset(Lineage.of([INGEST, SCORE]), rows=100)
    assert (subset["metric"], subset["keep"], subset["fraction"], subset["start_size"]) == (
        UNPRUNED,
        UNPRUNED,
        1.0,
        100,
    )
    assert subset["prune_seed"] is None and subset["balanced"] is False


def test_the_last_prune_is_the_policy_and_its_input_the_start() -> None:
    hard = prune_step("hard", 100, 30, score="el2n", fraction=0.3, seed=5)
    subset = describe_subset(Lineage.of([INGEST, SCORE, hard]), rows=30)
    assert subset["metric"] == "el2n" and subset["keep"] == "hard"
    assert subset["fraction"] == 0.3 and subset["start_size"] == 100 and subset["prune_seed"] == 5
    assert (
        subset["balanced"] is False and subset["start_key"] == "dataset" and subset["subset_key"] == Step.of(hard).key()
    )


def test_balance_after_the_prune_marks_the_run_balanced() -> None:
    easy = prune_step("easy", 100, 30, score="forgetting", fraction=0.3)
    assert describe_subset(Lineage.of([INGEST, SCORE, easy, BALANCE]), rows=30)["balanced"] is True


def test_an_earlier_prune_sets_the_starting_size() -> None:
    start = prune_step("random", 100, 40, count=40, seed=7)
    hard = prune_step("hard", 40, 10, score="el2n", fraction=0.25)
    subset = describe_subset(Lineage.of([INGEST, SCORE, start, hard]), rows=10)
    assert (subset["start_size"], subset["fraction"], subset["start_key"]) == (40, 0.25, Step.of(start).key())


def test_scores_computed_after_a_prune_make_it_the_starting_set() -> None:
    start = prune_step("random", 100, 40, count=40)
    subset = describe_subset(Lineage.of([INGEST, start, SCORE]), rows=40)
    assert (subset["keep"], subset["fraction"], subset["start_size"]) == (UNPRUNED, 1.0, 40)


def test_a_prune_by_count_and_a_window_are_read_as_kept_fraction_and_band() -> None:
    by_count = describe_subset(Lineage.of([INGEST, prune_step("random", 80, 20, count=20)]), rows=20)
    assert (by_count["metric"], by_count["keep"], by_count["fraction"]) == ("random", "random", 0.25)
    window = describe_subset(
        Lineage.of([INGEST, prune_step("window", 80, 20, score="el2n", count=20, window_start=0.2)]), rows=20
    )
    assert window["keep"] == "window@0.2"


# -- aggregation and fits ----------------------------------------------------------------------------------


def record(metric: str, keep: str, fraction: float, top1: float, **changes: Any) -> RunRecord:
    values: dict[str, Any] = dict(
        run_dir=f"runs/{metric}-{keep}-{fraction}-{top1}",
        metric=metric,
        keep=keep,
        fraction=fraction,
        balanced=False,
        start_size=100,
        full_size=100,
        rows=round(100 * fraction),
        seed=0,
        prune_seed=0,
        top1=top1,
        top5=1.0,
        loss=0.5,
        test_n=50,
        setting="fast/smallcnn/1 epochs",
        test_set="abc",
        start_key="dataset",
        subset_key=f"{metric}-{keep}-{fraction}",
    )
    return RunRecord(**(values | changes))


def test_mean_and_sample_std() -> None:
    mean, std = mean_std([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2) and std == pytest.approx(0.1)
    assert mean_std([0.7])[0] == 0.7 and math.isnan(mean_std([0.7])[1])


def test_aggregate_averages_seeds_per_policy_fraction_and_setting() -> None:
    runs = [
        record("el2n", "hard", 0.5, 0.80, seed=0),
        record("el2n", "hard", 0.5, 0.90, seed=1),
        record("el2n", "hard", 0.5, 0.70, setting="cifar/resnet18/200 epochs"),
        record("random", "random", 0.5, 0.60),
        record("el2n", "hard", 0.3, 0.50),
    ]
    cells = {(c.setting, c.selection.metric, c.fraction): c for c in aggregate(runs)}
    pooled = cells[("fast/smallcnn/1 epochs", "el2n", 0.5)]
    assert pooled.n == 2 and pooled.error == pytest.approx(0.15) and pooled.error_std == pytest.approx(math.sqrt(0.005))
    assert pooled.top1 == pytest.approx(0.85) and pooled.rows == 50
    assert cells[("cifar/resnet18/200 epochs", "el2n", 0.5)].n == 1
    assert len(cells) == 4


def test_easy_and_hard_are_paired_per_metric_fraction_and_start_size() -> None:
    runs = [
        record("el2n", "easy", 0.5, 0.70, seed=0),
        record("el2n", "easy", 0.5, 0.80, seed=1),
        record("el2n", "hard", 0.5, 0.60),
        record("el2n", "hard", 0.5, 0.90, start_size=1000),  # another starting size: no easy partner
        record("el2n", "hard", 0.3, 0.50),  # no easy run at 0.3
        record("forgetting", "easy", 0.5, 0.40),
        record("random", "random", 0.5, 0.65),
    ]
    ((easy, hard),) = easy_hard_pairs(aggregate(runs))
    assert (easy.selection.keep, hard.selection.keep, easy.selection.metric, hard.start_size) == (
        "easy",
        "hard",
        "el2n",
        100,
    )
    assert easy.top1 == pytest.approx(0.75) and hard.top1 == pytest.approx(0.60)


def test_a_random_subset_pruned_further_is_also_their_unpruned_reference() -> None:
    start = record("random", "random", 0.4, 0.6, rows=40, subset_key="subset-40")
    pruned = record("el2n", "easy", 0.5, 0.5, start_size=40, rows=20, start_key="subset-40")
    lonely = record("random", "random", 0.3, 0.5, subset_key="nobody-starts-here")
    readings = with_references([start, pruned, lonely])
    extra = readings[3:]
    assert len(extra) == 1
    assert extra[0].selection == Selection(UNPRUNED, UNPRUNED, False)
    assert (extra[0].start_size, extra[0].fraction, extra[0].start_key) == (40, 1.0, "subset-40")


def test_power_law_fit_recovers_an_exact_power_law() -> None:
    sizes = np.array([100.0, 300.0, 1000.0, 3000.0])
    fit = fit_power_law(sizes, 3.0 * sizes**-0.5)
    assert fit is not None
    assert (fit.a, fit.exponent, fit.points) == (pytest.approx(3.0), pytest.approx(0.5), 4)
    assert fit.rms_log == pytest.approx(0.0, abs=1e-9)
    exponential = fit_exponential(sizes, 3.0 * sizes**-0.5)
    assert exponential is not None and exponential.rms_log > 0.1  # the wrong law fits visibly worse


def test_exponential_fit_recovers_an_exact_exponential() -> None:
    sizes = np.array([100.0, 200.0, 400.0])
    fit = fit_exponential(sizes, 0.8 * np.exp(-0.002 * sizes))
    assert fit is not None and fit.a == pytest.approx(0.8) and fit.exponent == pytest.approx(0.002)
    assert fit.predict(np.array([300.0]))[0] == pytest.approx(0.8 * math.exp(-0.6))


def test_fits_need_two_sizes_and_skip_perfect_runs() -> None:
    assert fit_power_law([100, 100], [0.2, 0.3]) is None
    assert fit_power_law([100, 200, 400], [0.2, 0.1, 0.0]).points == 2  # type: ignore[union-attr]


# -- figures: the values they plot --------------------------------------------------------------------------


def closed(figure: Any) -> list[Any]:
    """The figure's panels, the figure closed (what it drew stays readable)."""
    import matplotlib.pyplot as plt

    plt.close(figure)
    return list(figure.axes)


def errorbars(axis: Any) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Each errorbar series of a panel by its label: x, y and the half-length of its error bars."""
    series = {}
    for container in axis.containers:
        line, _, (bars,) = container.lines
        spread = [(segment[1][1] - segment[0][1]) / 2 for segment in bars.get_segments()]
        series[container.get_label()] = (list(line.get_xdata()), list(line.get_ydata()), spread)
    return series


def test_error_vs_fraction_plots_one_minus_mean_top1_per_cell_closed_by_the_unpruned_runs() -> None:
    runs = [
        record("el2n", "hard", 0.3, 0.50, seed=0),
        record("el2n", "hard", 0.3, 0.60, seed=1),
        record("el2n", "hard", 0.5, 0.70),
        record("random", "random", 0.5, 0.65),
        record(UNPRUNED, UNPRUNED, 1.0, 0.90, seed=0, prune_seed=None),
        record(UNPRUNED, UNPRUNED, 1.0, 0.94, seed=1, prune_seed=None),
    ]
    (axis,) = closed(figures.error_vs_fraction(aggregate(runs)))
    series = errorbars(axis)
    assert sorted(series) == ["el2n, keep hard", "random", "unpruned"]
    x, y, spread = series["el2n, keep hard"]
    assert x == [0.3, 0.5, 1.0]  # the unpruned cell closes the curve at fraction 1
    np.testing.assert_allclose(y, [100 * (1 - 0.55), 100 * (1 - 0.70), 100 * (1 - 0.92)])
    np.testing.assert_allclose(spread, [100 * np.std([0.5, 0.6], ddof=1), 0.0, 100 * np.std([0.9, 0.94], ddof=1)])
    assert series["random"][:2] == ([0.5, 1.0], [pytest.approx(35.0), pytest.approx(8.0)])
    assert series["unpruned"][:2] == ([1.0], [pytest.approx(8.0)])


def test_error_vs_size_plots_the_cells_at_their_sizes_and_the_fitted_laws() -> None:
    """error = 2 P^-0.5 exactly, at three starting sizes: points and power-law lines lie on it."""
    runs = []
    for start in (1000, 2000, 4000):
        half = start // 2
        runs.append(record("el2n", "hard", 0.5, 1 - 2 * half**-0.5, start_size=start, rows=half))
        runs.append(record(UNPRUNED, UNPRUNED, 1.0, 1 - 2 * start**-0.5, start_size=start, rows=start))
    curves = size_curves(aggregate(runs))
    (axis,) = closed(figures.error_vs_size(curves))  # the unpruned curve is drawn in the el2n panel
    series = errorbars(axis)
    fitted = [(line.get_linestyle(), line.get_xdata(), line.get_ydata()) for line in axis.lines]
    (pruned,) = [label for label in series if label.startswith("f=0.5")]
    assert pruned.startswith("f=0.5: ν=0.50, b=")
    assert series[pruned][0] == [500.0, 1000.0, 2000.0]
    np.testing.assert_allclose(series[pruned][1], 200 * np.array([500.0, 1000.0, 2000.0]) ** -0.5)
    (reference,) = [label for label in series if label.startswith("unpruned (f=1): ν=0.50, b=")]
    assert series[reference][0] == [1000.0, 2000.0, 4000.0]
    np.testing.assert_allclose(series[reference][1], 200 * np.array([1000.0, 2000.0, 4000.0]) ** -0.5)
    solid = [(x, y) for style, x, y in fitted if style == "-"]
    dashed = [(x, y) for style, x, y in fitted if style == "--"]
    assert len(solid) == 2 and len(dashed) == 2  # one power law and one exponential per curve
    for x, y in solid:
        np.testing.assert_allclose(y, 200 * x**-0.5)
    for (x, y), curve in zip(dashed, curves, strict=True):
        fit = curve.exponential
        assert fit is not None
        np.testing.assert_allclose(y, 100 * fit.a * np.exp(-fit.exponent * x))


# -- scores of manifests ---------------------------------------------------------------------------------


def test_spearman_on_a_hand_computed_toy() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0])
    rho = spearman_matrix({"a": a, "b": np.array([1.0, 3.0, 2.0, 4.0]), "cube": a**3, "reversed": -a})
    # rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60 for a vs b
    assert rho[0, 1] == pytest.approx(0.8)
    assert rho[0, 2] == pytest.approx(1.0) and rho[0, 3] == pytest.approx(-1.0)
    np.testing.assert_allclose(rho, rho.T)


def test_clustering_puts_correlated_scores_side_by_side() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=500), rng.normal(size=500)
    columns = {"x": x, "y": y, "x2": x + 0.1 * rng.normal(size=500), "y2": y + 0.1 * rng.normal(size=500)}
    order = [list(columns)[i] for i in cluster_order(spearman_matrix(columns))]
    assert abs(order.index("x") - order.index("x2")) == 1 and abs(order.index("y") - order.index("y2")) == 1


def test_class_balance_of_a_prune_that_drops_a_class_and_after_balance() -> None:
    labels = np.array([0] * 5 + [1] * 5)
    scores = np.arange(10, dtype=np.float64)  # class 0 all easier than class 1
    pruned, balanced = balance_curve(scores, labels, "hard", [0.5, 1.0], min_ratio=0.5, seed=0)
    # keep hard 0.5 keeps class 1 only: sizes (0, 5), b = 0. balance floors: ceil(0.5 * 0.5 * 5) = 2 each,
    # so class 0 gets 2 rows and class 1 gives 2 up: sizes (2, 3), b = 2/3.
    assert pruned == [0.0, 1.0] and balanced == pytest.approx([2 / 3, 1.0])


def test_class_extremes_are_the_lowest_and_highest_scores_of_the_class() -> None:
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 0])
    scores = np.array([0.5, 0.0, 0.1, 9.0, 0.9, 5.0, 0.3, 0.7])
    easiest, hardest = class_extremes(scores, labels, 0, per_side=2, seed=0)
    assert easiest.tolist() == [2, 6] and hardest.tolist() == [4, 7]
    few_easy, few_hard = class_extremes(scores, labels, 1, per_side=5, seed=0)
    assert few_easy.tolist() == [1] and few_hard.tolist() == [3]  # 3 images: no image on both sides


def toy_manifest(columns: dict[str, np.ndarray]) -> Any:
    n = len(next(iter(columns.values())))
    manifest = new_manifest([f"r{i}" for i in range(n)], [i % 2 for i in range(n)], {"classes": ["a", "b"]})
    for name, values in columns.items():
        manifest = manifest.with_score(name, values, metric=name, params={})
    return manifest.with_score("el2n_std", np.ones(n), metric="el2n_std", params={"of": "el2n"})


def test_score_sources_skip_spreads_and_refuse_unknown_columns() -> None:
    manifest = toy_manifest({"el2n": np.arange(4.0), "forgetting": np.arange(4.0)})
    assert [s.name for s in score_sources([manifest])] == ["el2n", "forgetting"]
    assert [s.name for s in score_sources([manifest], ["forgetting"])] == ["forgetting"]
    with pytest.raises(
        Exception, match=r"--score memo: no score column 'memo' in <manifest> \(score columns there: el2n, forgetting\)"
    ):
        score_sources([manifest], ["memo"])


def test_cluster_class_counts_and_purity_on_a_hand_made_toy() -> None:
    clusters = np.array([7, 7, 7, 3, 3, 9])
    labels = np.array([0, 0, 1, 1, 1, 0])
    counts = cluster_class_counts(clusters, labels, 2)
    assert counts.tolist() == [[0, 2], [2, 1], [1, 0]]  # clusters 3, 7, 9 in id order
    assert purity(counts) == 5 / 6


def test_report_draws_the_cluster_class_overlap_of_a_clustered_manifest(tmp_path: Path) -> None:
    manifest = toy_manifest({"proto_dist": np.arange(6.0)}).with_column("cluster", np.array([0, 1, 0, 1, 0, 1]))
    path = tmp_path / "clustered.parquet"
    write_manifest(manifest, path)
    report = build_report([], [path], tmp_path / "out")
    (overlap,) = report.of(registry.CLUSTERS) or ()
    assert overlap.counts.tolist() == [[3, 0], [0, 3]] and overlap.purity == 1.0 and overlap.adjusted_rand == 1.0
    assert (tmp_path / "out" / "cluster_classes.png").is_file()
    assert "| `" + str(path) + "` | 2 | 1.000 | 1.000 |" in (tmp_path / "out" / "summary.md").read_text()


def test_publish_replaces_an_earlier_report_but_keeps_other_files(tmp_path: Path) -> None:
    out = tmp_path / "report"
    out.mkdir()
    for name in ("summary.md", "extremes_old.png", "error_vs_size.png", "cluster_classes.png", "my-notes.txt"):
        (out / name).write_text("old")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "summary.md").write_text("new")
    publish(staging, out, lambda name: owned(name, PARTS))
    assert sorted(p.name for p in out.iterdir()) == ["my-notes.txt", "summary.md"]
    assert (out / "summary.md").read_text() == "new"


def test_a_new_report_folder_has_ordinary_permissions(tmp_path: Path) -> None:
    import os
    import tempfile

    staging = Path(tempfile.mkdtemp(dir=tmp_path))  # 0700, as build_report makes it
    umask = os.umask(0o022)
    try:
        publish(staging, tmp_path / "report", lambda name: owned(name, PARTS))
    finally:
        os.umask(umask)
    assert (tmp_path / "report").stat().st_mode & 0o777 == 0o755


def stale_report(out: Path) -> set[str]:
    """An earlier report in OUT: one file for every file pattern of the registry, and a file of the user's."""
    out.mkdir()
    names = {part.file.replace("*", "stale") for part in PARTS if part.file} | {"summary.md"}
    for name in names | {"my-notes.txt"}:
        (out / name).write_text("old")
    return names


def test_republishing_removes_every_registered_file_the_new_report_does_not_write(tmp_path: Path) -> None:
    out = tmp_path / "report"
    stale = stale_report(out)
    assert len(stale) == 8 and "extremes_stale.png" in stale
    labeled = write_manifest(toy_manifest({"el2n": np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.4])}), tmp_path / "l.parquet")
    report = build_report([], [labeled], out)  # one score column, no runs, no pixels: the balance figure alone
    assert report.files == ("class_balance.png", "summary.md")
    assert sorted(p.name for p in out.iterdir()) == ["class_balance.png", "my-notes.txt", "summary.md"]
    assert (out / "summary.md").read_text() != "old" and (out / "my-notes.txt").read_text() == "old"


def test_a_staging_folder_a_killed_report_left_is_removed_by_the_next(tmp_path: Path) -> None:
    labeled = write_manifest(toy_manifest({"el2n": np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.4])}), tmp_path / "l.parquet")
    killed = tmp_path / ".report.tmp-999999999"  # no process has this PID
    (killed / "half-drawn").mkdir(parents=True)
    other = tmp_path / ".other.tmp-999999999"  # another output's: not this report's to remove
    other.mkdir()
    for _ in range(2):  # into a new folder (a rename), then into an existing one (file by file)
        build_report([], [labeled], tmp_path / "report")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-999999999", "l.parquet", "report"]
        killed.mkdir()


def test_a_part_added_to_the_registry_is_drawn_summarised_and_owned(tmp_path: Path, monkeypatch: Any) -> None:
    """One new Part, nothing else: its file is published, its section written, and it goes stale like the others."""
    drawn = {"data": "12 points"}

    def compute(inputs: ReportInputs, notes: list[str]) -> str | None:
        return drawn.get("data")

    def write(data: str, path: Path) -> None:
        path.write_text(data)

    extra = Part("extra_figure.txt", compute, write, lambda data, file: [f"## Extra (`{file}`): {data}", ""])
    monkeypatch.setattr(build, "PARTS", (*PARTS, extra))
    labeled = write_manifest(toy_manifest({"el2n": np.arange(6.0)}), tmp_path / "l.parquet")
    out = tmp_path / "report"
    report = build_report([], [labeled], out)
    assert report.of(extra) == "12 points" and "extra_figure.txt" in report.files
    assert (out / "extra_figure.txt").read_text() == "12 points"
    summary = (out / "summary.md").read_text()
    assert "## Extra (`extra_figure.txt`): 12 points" in summary
    assert summary.index("## Extra") > summary.index("## Class balance")  # the registry's order is the summary's
    drawn.clear()  # the next report has nothing for it to show
    report = build_report([], [labeled], out)
    assert report.of(extra) is None and not (out / "extra_figure.txt").exists()
    assert "## Extra" not in (out / "summary.md").read_text()


# -- synthetic run directories: a sweep over starting sizes -------------------------------------------------


def write_run(folder: Path, lineage: list[dict[str, Any]], rows: int, top1: float, seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    config = {
        "manifest": {"path": None, "sha256": None, "rows": rows, "full_size": 10_000, "lineage": lineage, "scores": {}},
        "config": {"seed": seed, "recipe": {"name": "fast", "arch": "smallcnn", "epochs": 16}},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "eval.json").write_text(json.dumps({"top1": top1, "top5": 1.0, "loss": 0.1, "n": 1000}))
    return folder


def test_error_against_size_fits_the_law_the_runs_follow(tmp_path: Path) -> None:
    """Starting sizes 1000, 2000, 4000, each pruned to f = 0.5 by el2n: error = 2 P^-0.5 exactly."""
    runs = []
    for start in (1000, 2000, 4000):
        subsample = prune_step("random", 10_000, start, count=start, seed=start)
        runs.append(write_run(tmp_path / f"unpruned-{start}", [INGEST, subsample], start, 1 - 2 * start**-0.5))
        hard = prune_step("hard", start, start // 2, score="el2n", fraction=0.5)
        pruned_error = 2 * (start // 2) ** -0.5
        runs.append(write_run(tmp_path / f"el2n-{start}", [INGEST, subsample, hard], start // 2, 1 - pruned_error))
    report = build_report(runs, [], tmp_path / "out")
    curves = {(c.selection.label, c.fraction): c for c in report.of(registry.SIZE) or ()}
    for key in (("el2n, keep hard", 0.5), ("unpruned", 1.0)):
        fit = curves[key].power
        assert fit is not None and fit.exponent == pytest.approx(0.5) and fit.a == pytest.approx(2.0)
    assert (tmp_path / "out" / "error_vs_size.png").is_file()
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| fast/smallcnn/16 epochs | el2n, keep hard | 0.5 | 500, 1,000, 2,000 |" in summary


# -- the real pipeline on built-in digits ---------------------------------------------------------------------


def invoke(*args: Any) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ingest digits -> two random score columns -> prune (random; hard + balance) -> 1-epoch runs -> evaluate."""
    folder = tmp_path_factory.mktemp("report")
    full, test = folder / "digits.parquet", folder / "test.parquet"
    invoke("ingest", "builtin:digits", "-o", full, "-q")
    invoke("ingest", "builtin:digits", "--split", "test", "-o", test, "-q")
    scored = folder / "scored.parquet"
    invoke("score", full, "-o", folder / "one.parquet", "--metric", "random", "-q")
    invoke(
        "score", folder / "one.parquet", "-o", scored, "--metric", "random", "--seed", "1", "--column", "noise", "-q"
    )
    invoke("prune", scored, "-o", folder / "random.parquet", "--keep", "random", "--fraction", "0.5", "-q")
    invoke(
        "prune", scored, "-o", folder / "hard.parquet", "--keep", "hard", "--score", "noise", "--fraction", "0.5", "-q"
    )
    invoke("balance", folder / "hard.parquet", "-o", folder / "balanced.parquet", "-q")
    runs = {}
    for name, manifest, seed in [
        ("full", scored, 0),
        ("random-s0", folder / "random.parquet", 0),
        ("random-s1", folder / "random.parquet", 1),
        ("balanced", folder / "balanced.parquet", 0),
    ]:
        run = folder / "runs" / name
        invoke("train", manifest, "-o", run, "--recipe", "fast", "--epochs", "1", "--augment", "none",
               "--device", "cpu", "--precision", "fp32", "--seed", seed, "-q")  # fmt: skip
        invoke("evaluate", run, test, "--device", "cpu", "-q")
        runs[name] = run
    return {"scored": scored, "folder": folder, **runs}


def test_report_on_real_runs_reads_policies_and_writes_every_figure(pipeline: dict[str, Path]) -> None:
    out = pipeline["folder"] / "report"
    runs = [pipeline[name] for name in ("full", "random-s0", "random-s1", "balanced")]
    result = invoke("report", *runs, "-m", pipeline["scored"], "--classes", "3,7", "--per-class", "4", "-o", out)
    expected = {
        "summary.md",
        "results.csv",
        "error_vs_fraction.png",
        "score_correlation.png",
        "class_balance.png",
        "extremes_random.png",
        "extremes_noise.png",
    }
    assert {p.name for p in out.iterdir()} == expected
    assert "-> " in result.output
    for png in expected - {"summary.md", "results.csv"}:
        with Image.open(out / png) as image:
            assert image.width > 300 and image.height > 300
    with open(out / "results.csv") as handle:
        rows = {Path(row["run_dir"]).name: row for row in csv.DictReader(handle)}
    read = {name: (r["metric"], r["keep"], float(r["fraction"]), r["balanced"], r["seed"]) for name, r in rows.items()}
    assert read == {
        "full": ("none", "none", 1.0, "False", "0"),
        "random-s0": ("random", "random", 0.5, "False", "0"),
        "random-s1": ("random", "random", 0.5, "False", "1"),
        "balanced": ("noise", "hard", 0.5, "True", "0"),
    }
    top1 = json.loads((pipeline["random-s1"] / "eval.json").read_text())["top1"]
    assert float(rows["random-s1"]["top1"]) == top1
    summary = (out / "summary.md").read_text()
    assert "Not drawn: every policy and fraction starts from one size (1,442 examples)" in summary
    assert "| random | 0.5 | 721 | 2 |" in summary  # two seeds averaged into one cell
    assert "| noise, keep hard + balance | 0.5 |" in summary
    assert "### random (`extremes_random.png`)" in summary and "| 7 |" in summary
    assert not list(out.parent.glob(".report.tmp-*"))


def test_every_part_of_the_registry_is_shown_and_written_when_its_data_exists(
    pipeline: dict[str, Path], tmp_path: Path
) -> None:
    """Runs at three starting sizes, keep easy and hard, and a clustered digits manifest: every part has data."""
    runs = []
    for start in (1000, 2000, 4000):
        subsample = prune_step("random", 10_000, start, count=start, seed=start)
        runs.append(write_run(tmp_path / f"unpruned-{start}", [INGEST, subsample], start, 1 - 2 * start**-0.5))
        for keep, top1 in (("hard", 0.8), ("easy", 0.7)):
            prune = prune_step(keep, start, start // 2, score="el2n", fraction=0.5)
            runs.append(write_run(tmp_path / f"{keep}-{start}", [INGEST, subsample, prune], start // 2, top1))
    scored = read_manifest(pipeline["scored"])
    clustered = write_manifest(scored.with_column("cluster", np.arange(scored.num_rows) % 4), tmp_path / "c.parquet")
    out = tmp_path / "report"
    report = build_report(runs, [clustered], out, ReportConfig(classes=("1", "2"), per_side=2))
    for part in PARTS:
        assert report.of(part) is not None, part.file or part.section.__name__
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(report.files)
    for part in PARTS:
        if part.file:
            assert any(fnmatchcase(name, part.file) for name in written), part.file
    for name in written:  # and nothing else: every file is one part's, or summary.md
        assert sum(part.owns(name) for part in PARTS) == (name != "summary.md"), name
    assert not report.notes


def test_a_run_without_eval_json_is_named_with_the_fix(pipeline: dict[str, Path], tmp_path: Path) -> None:
    unevaluated = tmp_path / "unevaluated"
    shutil.copytree(pipeline["full"], unevaluated)
    (unevaluated / "eval.json").unlink()
    result = runner.invoke(app, ["report", str(pipeline["random-s0"]), str(unevaluated), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert (
        f"error: {unevaluated}: has no eval.json; run `datadiet evaluate {unevaluated} TEST.parquet` first"
        in result.output
    )
    assert not (tmp_path / "out").exists()


def test_unknown_score_column_and_class_are_refused_before_writing(pipeline: dict[str, Path], tmp_path: Path) -> None:
    scored = pipeline["scored"]
    result = runner.invoke(
        app, ["report", str(pipeline["full"]), "-m", str(scored), "-s", "el2n", "-o", str(tmp_path / "a")]
    )
    assert result.exit_code == 1
    assert f"--score el2n: no score column 'el2n' in {scored} (score columns there: noise, random)" in result.output
    result = runner.invoke(app, ["report", "-m", str(scored), "--classes", "cat", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and f"--classes cat: no such class in {scored} (classes: 0, 1, 2" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_no_runs_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "error: no run directories given; pass RUN_DIR... written by `datadiet train`" in result.output
    with pytest.raises(OptionError):
        build_report([], [], tmp_path / "out", ReportConfig())


def test_manifest_figures_say_what_they_could_not_draw(tmp_path: Path) -> None:
    """Six labeled rows without image paths, and an unlabeled copy: what can be drawn is, the rest is a note."""
    from datadiet_cli.io.manifest import write_manifest

    labeled = toy_manifest({"el2n": np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.4]), "memo": np.arange(6.0)})
    unlabeled = new_manifest([f"r{i}" for i in range(6)], None, {"classes": []}).with_score(
        "forgetting", np.arange(6.0)[::-1].copy(), metric="forgetting", params={}
    )
    paths = [write_manifest(labeled, tmp_path / "labeled.parquet"), write_manifest(unlabeled, tmp_path / "u.parquet")]
    report = build_report([], paths, tmp_path / "out")
    correlation = report.of(registry.CORRELATION)
    assert correlation is not None
    names, rho, rows = list(correlation.names), correlation.rho, correlation.rows
    assert rows == 6 and sorted(names) == ["el2n", "forgetting", "memo"]
    assert rho[names.index("memo"), names.index("forgetting")] == pytest.approx(-1.0)
    balance = report.of(registry.BALANCE)
    assert balance is not None and balance.curves[0].fractions == (
        0.1,
        0.2,
        0.3,
        0.4,
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
    )  # 0.05 keeps 0 rows
    assert "class balance of forgetting: skipped, " in " ".join(report.notes)
    assert any(note.startswith("easiest/hardest images of el2n: skipped, ") for note in report.notes)  # no pixels
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "class_balance.png",
        "score_correlation.png",
        "summary.md",
    ]
