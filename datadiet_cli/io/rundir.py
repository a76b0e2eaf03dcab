"""The run folder of `datadiet train` (and `evaluate`): the one module that knows its files.

    RUN_DIR/config.json       every setting, the input manifest's digest and lineage, classes, model
    RUN_DIR/metrics.jsonl     one line per finished epoch
    RUN_DIR/checkpoint.pt     model, optimizer, step and RNG states after the last finished epoch
    RUN_DIR/dynamics.parquet  per example, epoch and source: loss, correct, p_label, el2n, margin
    RUN_DIR/eval.json         what `datadiet evaluate` measured (default output)

Every write is atomic, so the folder always describes the last finished epoch; a checkpoint is
written last, so its presence means everything of its epoch is on disk. torch is imported only
by the checkpoint methods: `report` reads run folders without it.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from datadiet_cli.errors import OptionError, RunDirError
from datadiet_cli.io.files import atomic_path, check_output_folder, file_digest
from datadiet_cli.io.tables import read_table, write_table

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
DYNAMICS_FILE = "dynamics.parquet"
EVAL_FILE = "eval.json"
# Per-epoch dynamics shards, merged into dynamics.parquet when the run ends (and kept across --resume).
DYNAMICS_PARTS = ".dynamics-parts"
# Settings that may change on --resume without changing what is trained.
RESUMABLE_CHANGES = ("device", "workers", "root")
# The fix named by every error about a checkpoint that cannot be used.
CHECKPOINT_FIX = "delete it, then `datadiet train ... --resume` trains the run again from epoch 0"
# The fix named by every error about a damaged config.json or metrics.jsonl.
DAMAGED_RUN_FIX = "the run folder is damaged or was edited: restore the file or train the run again into a new -o"


class RunDir:
    """A run folder; reads config.json once and owns every file in the folder."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._config: dict[str, Any] | None = None
        self._made: list[Path] | None = None  # set by open() of a fresh run: the folders it created, deepest first

    @staticmethod
    def of(run_dir: Path | str | RunDir) -> RunDir:
        """The same RunDir when given one (so config.json is read once across calls), else a new one."""
        return run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def eval_path(self) -> Path:
        return self.path / EVAL_FILE

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    # -- config.json -------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """config.json, read once; one-line errors for a missing folder or an unreadable file."""
        if self._config is None:
            self._check_is_run()
            self._config = _read_json(self.config_path, DAMAGED_RUN_FIX)
        return self._config

    def _check_is_run(self) -> None:
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: no such run directory; create it with `datadiet train ... -o {self.path}`")
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path}: not a training run (no {CONFIG_FILE}); create it with `datadiet train`")

    def finished_config(self) -> dict[str, Any]:
        """config.json of a run that has finished at least one epoch (it has a checkpoint)."""
        if self.path.is_dir() and not ((self.path / CONFIG_FILE).is_file() and self.has_checkpoint()):
            raise RunDirError(
                f"{self.path}: not a finished training run (no {CONFIG_FILE} or {CHECKPOINT_FILE}); "
                "run `datadiet train` first"
            )
        config = self.config()
        _check_model_config(self.config_path, config)
        return config

    def check_can_open(self, resume: bool) -> None:
        """Before any work: -o can be a run folder, and holds a run exactly when `resume` says it does."""
        check_output_folder(self.path, what="run folder")
        config_exists = self.config_path.exists()
        if not resume and (config_exists or self.checkpoint_path.exists()):
            raise OptionError(
                f"{self.path}: already holds a training run; pass --resume to continue it or choose another -o"
            )
        if resume and not config_exists:
            raise OptionError(
                f"--resume: {self.path} holds no training run (no {CONFIG_FILE}); drop --resume to start one"
            )

    def open(self, settings: Mapping[str, Any], resume: bool) -> int:
        """Check the folder and write config.json; the epoch to continue after (0 = start fresh).

        With `resume`, the recorded settings must match `settings` except RESUMABLE_CHANGES.
        """
        self.check_can_open(resume)
        if resume:
            _check_resumable(self.path, self.config(), settings)
            if self.has_checkpoint():
                epoch = self.load_checkpoint("cpu")["epoch"]
                self._discard_dynamics_after(epoch)
                return epoch
        self._discard_dynamics_after(0)
        if not resume:
            self._made = [folder for folder in (self.path, *self.path.parents) if not folder.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path / CONFIG_FILE) as temporary:
                temporary.write_text(json.dumps(settings, indent=2) + "\n")
        except OSError as error:  # discarded_unless_checkpointed removes the folders made so far
            raise RunDirError(
                f"{self.path}: cannot write the run folder ({error.strerror or type(error).__name__}); choose another -o"
            ) from None
        self._config = json.loads(json.dumps(settings))
        return 0

    @contextmanager
    def discarded_unless_checkpointed(self) -> Iterator[None]:
        """Around the training of a run: if it fails or is interrupted before a fresh run's first
        checkpoint, remove what open() and the epoch wrote (and the folders open() made), so no
        half-made run folder is left. A resumed run, or one with a checkpoint, is left resumable."""
        try:
            yield
        except BaseException:
            if self._made is not None:
                self._remove_unstarted(self._made)
            raise

    def _remove_unstarted(self, made: list[Path]) -> None:
        """Cleaning up must not hide the error being raised: every step may fail on its own."""
        with contextlib.suppress(OSError):
            if self.has_checkpoint():
                return
        for name in (CONFIG_FILE, METRICS_FILE):
            with contextlib.suppress(OSError):
                (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / DYNAMICS_PARTS, ignore_errors=True)
        for folder in made:  # deepest first; rmdir removes only empty folders, never what the user put there
            with contextlib.suppress(OSError):
                folder.rmdir()

    # -- metrics.jsonl -----------------------------------------------------------------------------

    def read_metrics(self) -> list[dict[str, Any]]:
        """One dict per finished epoch ([] before the first)."""
        path = self.path / METRICS_FILE
        if not path.is_file():
            return []
        lines: list[dict[str, Any]] = []
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = None
            if not isinstance(entry, dict):
                raise RunDirError(f"{path}: line {number} is not a JSON object; {DAMAGED_RUN_FIX}")
            lines.append(entry)
        return lines

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        with atomic_path(self.path / METRICS_FILE) as temporary:
            temporary.write_text("".join(json.dumps(line) + "\n" for line in history))

    # -- checkpoint.pt -----------------------------------------------------------------------------

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Tensors and plain values only: it is loaded back with weights_only=True."""
        import torch

        with atomic_path(self.checkpoint_path) as temporary:
            torch.save(dict(state), temporary)

    def load_checkpoint(self, map_location: Any) -> dict[str, Any]:
        """The checkpoint's state dict, loaded without running code from the file (weights_only).

        One-line errors for a damaged file, one whose unpickling would call code (refused, never
        run), and one without the "model" and "epoch" entries every datadiet checkpoint has.
        """
        import torch

        path = self.checkpoint_path
        if not self.has_checkpoint():
            raise RunDirError(f"{path}: no such checkpoint; train the run first")
        try:
            with warnings.catch_warnings():  # torch warns about old pickle protocols: the error line says it all
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # torch raises many kinds for a damaged file
            code = re.search(r"GLOBAL (\S+)", str(error))
            if code:
                raise RunDirError(
                    f"{path}: refused: loading it would call {code.group(1)}, and a datadiet checkpoint holds only "
                    f"tensors and numbers (it was not written by datadiet train); {CHECKPOINT_FIX}"
                ) from None
            raise RunDirError(
                f"{path}: unreadable checkpoint, truncated or not written by datadiet train "
                f"({type(error).__name__}); {CHECKPOINT_FIX}"
            ) from None
        if not isinstance(state, dict):
            raise RunDirError(f"{path}: holds a {type(state).__name__}, not a datadiet checkpoint; {CHECKPOINT_FIX}")
        missing = [key for key in ("model", "epoch") if key not in state]
        if missing:
            raise RunDirError(
                f"{path}: not a datadiet checkpoint (no {' or '.join(map(repr, missing))} entry); {CHECKPOINT_FIX}"
            )
        epoch = state["epoch"]
        if not isinstance(state["model"], dict) or isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise RunDirError(
                f"{path}: not a datadiet checkpoint ('model' must be a state dict and 'epoch' at least 1); "
                f"{CHECKPOINT_FIX}"
            )
        return state

    def checkpoint_digest(self) -> str | None:
        """sha256 of the checkpoint (None before the first epoch ends): identifies the weights scored."""
        return file_digest(self.checkpoint_path) if self.has_checkpoint() else None

    # -- dynamics ----------------------------------------------------------------------------------

    def write_dynamics_part(self, columns: Mapping[str, np.ndarray], epoch: int, source: str) -> None:
        write_table(columns, self.path / DYNAMICS_PARTS / f"epoch-{epoch:05d}-{source}.parquet", {})

    def merge_dynamics(self, metadata: Mapping[str, Any]) -> None:
        """Concatenate the per-epoch parts into dynamics.parquet (by epoch, then train before eval)."""
        parts_dir = self.path / DYNAMICS_PARTS
        parts = sorted(parts_dir.glob("epoch-*.parquet"), key=lambda p: (p.stem.split("-")[1], p.stem.endswith("eval")))
        if not parts:
            return  # merged already (a --resume of a finished run)
        tables = [read_table(part) for part in parts]
        merged = {name: np.concatenate([table[name] for table in tables]) for name in tables[0]}
        write_table(merged, self.path / DYNAMICS_FILE, metadata)
        shutil.rmtree(parts_dir, ignore_errors=True)

    def read_dynamics(self) -> dict[str, np.ndarray]:
        """dynamics.parquet as columns: id, epoch, source, loss, correct, p_label, el2n, margin."""
        path = self.path / DYNAMICS_FILE
        if not path.is_file():
            raise RunDirError(f"{path}: no such file; train with --record-dynamics to write it")
        return read_table(path)

    def _discard_dynamics_after(self, epoch: int) -> None:
        """Parts written after the last checkpoint belong to an epoch that will run again."""
        for part in (self.path / DYNAMICS_PARTS).glob("epoch-*.parquet"):
            if int(part.stem.split("-")[1]) > epoch:
                part.unlink()

    # -- eval.json ---------------------------------------------------------------------------------

    def write_eval(self, report: Mapping[str, Any], output: Path | None = None) -> Path:
        """Write evaluate's metrics to `output` (default RUN_DIR/eval.json), atomically."""
        target = Path(output) if output is not None else self.eval_path
        with atomic_path(target) as temporary:
            temporary.write_text(json.dumps(report, indent=2) + "\n")
        return target

    def read_eval(self) -> dict[str, Any]:
        self._check_is_run()  # a missing folder or config.json is named before a missing eval.json
        if not self.eval_path.is_file():
            raise RunDirError(
                f"{self.path}: has no {EVAL_FILE}; run `datadiet evaluate {self.path} TEST.parquet` first"
            )
        return _read_json(self.eval_path)


def _read_json(path: Path, fix: str = "write it again with datadiet") -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path}: is not valid JSON ({error}); {fix}") from None
    if not isinstance(document, dict):
        raise RunDirError(f"{path}: is not a JSON object; {fix}")
    return document


def _check_model_config(path: Path, config: Mapping[str, Any]) -> None:
    """The entries of config.json that rebuild the trained model and its input, with their types."""

    def refuse(problem: str) -> None:
        raise RunDirError(f"{path}: {problem}; {DAMAGED_RUN_FIX}")

    classes = config.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(name, str) for name in classes):
        refuse("'classes' is not a list of at least 2 class names")
    model = config.get("model")
    if not isinstance(model, Mapping):
        refuse("has no 'model' object (arch, num_classes, in_channels, image_size, in_memory)")
    for key, kind, wanted in (
        ("arch", str, "a name"),
        ("num_classes", int, "a whole number"),
        ("in_channels", int, "a whole number"),
        ("image_size", int, "a whole number"),
        ("in_memory", bool, "true or false"),
    ):
        value = model.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            refuse(f"'model.{key}' is {json.dumps(value)}, not {wanted}")
    if model["num_classes"] != len(classes):
        refuse(f"'model.num_classes' is {model['num_classes']} but 'classes' names {len(classes)}")
    if model["in_channels"] not in (1, 3) or model["image_size"] < 1:
        refuse(f"'model' has {model['in_channels']} channels and image size {model['image_size']}")
    normalisation = config.get("normalisation")
    for key in ("mean", "std"):
        values = normalisation.get(key) if isinstance(normalisation, Mapping) else None
        if (
            not isinstance(values, list)
            or len(values) != model["in_channels"]
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
            or (key == "std" and not all(v > 0 for v in values))
        ):
            refuse(
                f"'normalisation.{key}' is not {model['in_channels']} finite numbers" + (" > 0" if key == "std" else "")
            )
    run_config = config.get("config")
    if not isinstance(run_config, Mapping) or not isinstance(run_config.get("recipe"), Mapping):
        refuse("has no 'config.recipe' object")


def _check_resumable(path: Path, recorded: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    recorded_manifest = recorded.get("manifest")
    if (
        not isinstance(recorded.get("config"), Mapping)
        or not isinstance(recorded_manifest, Mapping)
        or ("content_sha256" not in recorded_manifest)
    ):
        raise RunDirError(
            f"{path / CONFIG_FILE}: has no 'config' and 'manifest.content_sha256' entries to resume by; "
            f"{DAMAGED_RUN_FIX}"
        )
    old, new = _resume_key(recorded), _resume_key(settings)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            what = "the input manifest" if key == "manifest" else key.replace("recipe.", "")
            raise OptionError(
                f"--resume: {path} was trained with {what} = {old.get(key)!r}, not {new.get(key)!r}; "
                "resume with the same input and settings, or choose another -o"
            )


def _resume_key(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that must match for --resume to continue the same run."""
    config = {k: v for k, v in settings["config"].items() if k not in RESUMABLE_CHANGES}
    return {"manifest": settings["manifest"]["content_sha256"], **_flatten(config)}


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
