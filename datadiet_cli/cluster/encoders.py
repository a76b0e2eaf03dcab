"""The encoders `--encoder` can name, one registry entry each, and how each loads safely.

- `swav-resnet50`: the paper's self-supervised SwAV ResNet-50 (Caron et al., 2020), read from
  the official checkpoint format (`--weights FILE`, or where torch.hub would have cached it);
  features are the 2048-d global-average-pooled output of the last residual stage.
- `torchvision:NAME` with `--weights FILE`: any torchvision classifier; features are the
  input of its last linear layer (the penultimate representation).
- a path to a `torch.export.save`d program: RGB floats in [0, 1], (N, 3, S, S) -> (N, D);
  its own normalisation is inside the program.
- `pixels`: the raw RGB pixels in [0, 1] at the images' own size, flattened. Only sensible
  for tiny images (the built-in 8x8 digits), where it is the classic k-means baseline.

An entry knows how to recognise its spec, check it and its weights before any image is
decoded, load itself, and which input convention it expects. Weights are never downloaded;
checkpoints load with `weights_only=True`, and programs through `programs.load_program`, which
refuses pickles, native code and code strings before torch reads the rest, so no file runs code
(docs/security.md). torch and torchvision are imported inside functions.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datadiet_cli.cluster.programs import check_program_file, load_program, silenced
from datadiet_cli.errors import ModelFileError, OptionError
from datadiet_cli.io.files import file_digest

if TYPE_CHECKING:
    import torch

SWAV_ENCODER = "swav-resnet50"
PIXELS_ENCODER = "pixels"
TORCHVISION_PREFIX = "torchvision:"
SWAV_CHECKPOINT = "swav_800ep_pretrain.pth.tar"
SWAV_URL = "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar"
# Keys of the SwAV training head (and of a linear classifier, in linear-evaluation checkpoints):
# not part of the encoder whose avgpool features the paper uses.
SWAV_HEAD_PREFIXES = ("projection_head.", "prototypes.", "fc.")
# ImageNet encoders (SwAV, torchvision) see 224 px images at evaluation.
IMAGENET_SIZE = 224
# Exported programs with a free input size get at least this (the shared EfficientNet's smallest).
MIN_PROGRAM_SIZE = 64
NOT_AN_ENCODER = "not swav-resnet50, torchvision:NAME, or an existing torch.export file (.pt2)"
WEIGHTS_FOR = "--weights is for swav-resnet50 and torchvision:NAME"

Module = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Encoder:
    """A ready-to-call feature extractor and what defines it."""

    module: Module  # float (B, 3, S, S) -> (B, D), on the embedding device, in inference mode
    imagenet_normalise: bool  # apply ImageNet mean/std before the forward (exported programs do their own)
    sizes: list[int] | None  # input sides the encoder accepts; None = any
    default_size: int | None  # None = the images' own side (rounded up to an accepted size)
    identity: Mapping[str, Any] = field(default_factory=dict)  # name, kind, file, sha256
    min_size: int = MIN_PROGRAM_SIZE  # with any size accepted and no default: the least side chosen
    batch: tuple[int, int | None] = (1, None)  # least and most images per call (a static batch: equal)


@dataclass(frozen=True)
class Loaded:
    """What loading an encoder's files gives, before the registry adds its input convention."""

    module: Module  # float (B, 3, S, S) -> (B, D), on the device
    name: str  # how the lineage names the encoder
    file: Path | None = None  # the weights or program file it came from (digested into the lineage)
    sizes: list[int] | None = None  # input sides it accepts; None = any
    batch: tuple[int, int | None] = (1, None)  # least and most images per call


@dataclass(frozen=True)
class EncoderKind:
    kind: str  # the encoder's "kind" in the lineage
    matches: Callable[[str], bool]  # whether an --encoder value names this kind (entries are tried in order)
    takes_weights: bool  # whether a --weights FILE belongs to it (paired with such encoders in order)
    check: Callable[[str, Path | None], None]  # cheap checks (names, files present), before images are decoded
    load: Callable[[str, Path | None, torch.device], Loaded]  # the module on the device, in inference mode
    imagenet_normalise: bool  # inputs get ImageNet's mean/std (else plain [0, 1] RGB)
    default_size: int | None  # input side unless --image-size; None = from the images' own side
    min_size: int = MIN_PROGRAM_SIZE  # with default_size None and any side accepted: the least side chosen


# -- checkpoints -----------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> Mapping[str, Any]:
    """A state dict (or a mapping holding one), loaded with weights_only: tensors and containers, never code."""
    import torch

    if path.is_dir():
        raise ModelFileError(f"--weights {path}: is a folder, not a checkpoint file")
    try:
        with silenced():  # torch warns about pickle protocols before it fails: one error line, nothing else
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"--weights {path}: no such file") from None
    except Exception as error:  # torch raises many types for a bad file
        raise ModelFileError(f"--weights {path}: {checkpoint_problem(path, error)}") from None
    if not isinstance(checkpoint, Mapping):
        raise ModelFileError(f"--weights {path}: holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


def checkpoint_problem(path: Path, error: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in one line that names the fix."""
    refused_global = re.search(r"GLOBAL ([\w.]+)", str(error)) if "Weights only load failed" in str(error) else None
    if refused_global is not None:
        return (
            f"holds Python objects besides tensors ({refused_global.group(1)}), which datadiet does not unpickle "
            "(they could run code); save a plain state dict with torch.save(model.state_dict(), FILE)"
        )
    try:
        if path.stat().st_size == 0:
            return "an empty file, not a torch checkpoint"
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/archive_format") for name in archive.namelist()):
                return "a torch.export program, not a checkpoint; give it as --encoder FILE"
    except (OSError, zipfile.BadZipFile):
        pass
    if "Weights only load failed" in str(error) or isinstance(error, (KeyError, UnicodeDecodeError)):
        return "not a torch checkpoint (not a pickle that torch.load reads); save one with torch.save(state_dict, FILE)"
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return f"not a torch checkpoint ({reason[:150]})"


def load_strict(
    model: torch.nn.Module, state: Mapping[str, Any], path: Path, allowed_missing: tuple[str, ...] = ()
) -> None:
    """load_state_dict, with a one-line error naming the first unmatched keys instead of a traceback."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state and not key.startswith(allowed_missing)]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in state
        if key in expected and tuple(getattr(state[key], "shape", ())) != tuple(expected[key].shape)
    ]
    problems = [
        f"{len(found)} {what} (e.g. {', '.join(found[:3])})"
        for what, found in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if found
    ]
    if problems:
        raise ModelFileError(f"--weights {path}: does not fit the encoder: {'; '.join(problems)}")
    model.load_state_dict(dict(state), strict=False)


def _in_eval_on(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return model.eval().to(device)


# -- swav-resnet50 ---------------------------------------------------------------------------------


def swav_hub_path() -> Path:
    """Where `torch.hub.load_state_dict_from_url` would have saved the official SwAV checkpoint."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / SWAV_CHECKPOINT


def swav_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The official SwAV checkpoint -> a torchvision resnet50 state dict without `fc`.

    Training checkpoints nest the weights under "state_dict"; DistributedDataParallel adds
    `module.` to every key; the projection head and prototypes are dropped.
    """
    state = checkpoint.get("state_dict", checkpoint)
    mapped: dict[str, Any] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if not key.startswith(SWAV_HEAD_PREFIXES):
            mapped[key] = value
    return mapped


def swav_weights_path(weights: Path | None) -> Path:
    """--weights, else the torch hub cache; a missing file is an error that says where to put it."""
    path = weights if weights is not None else swav_hub_path()
    if not path.is_file():
        where = f"--weights {path}: no such file" if weights is not None else f"no SwAV weights at {path}"
        raise ModelFileError(
            f"{where}; download {SWAV_CHECKPOINT} ({SWAV_URL}) on a machine with internet and put it at "
            f"{swav_hub_path()}, or pass --weights FILE (datadiet never downloads weights)"
        )
    return path


def swav_resnet50(weights: Path | None) -> tuple[torch.nn.Module, Path]:
    """torchvision's resnet50 with the SwAV weights and fc = Identity (2048-d avgpool features)."""
    import torch
    import torchvision

    path = swav_weights_path(weights)
    model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Identity()
    load_strict(model, swav_state_dict(read_checkpoint(path)), path)
    return model, path


def _check_swav(spec: str, weights: Path | None) -> None:
    swav_weights_path(weights)


def _load_swav(spec: str, weights: Path | None, device: torch.device) -> Loaded:
    model, path = swav_resnet50(weights)
    return Loaded(_in_eval_on(model, device), SWAV_ENCODER, path)


# -- torchvision:NAME ------------------------------------------------------------------------------


def torchvision_weights(name: str, weights: Path | None) -> Path:
    """The --weights a torchvision:NAME encoder needs: given, and present."""
    if weights is None:
        raise OptionError(f"--encoder {TORCHVISION_PREFIX}{name} needs --weights FILE (a state dict for that model)")
    if not weights.is_file():
        raise ModelFileError(f"--weights {weights}: no such file")
    return weights


def torchvision_encoder(name: str, weights: Path | None) -> torch.nn.Module:
    """A torchvision classifier with its weights and its last linear layer replaced by Identity."""
    import torch
    import torchvision

    path = torchvision_weights(name, weights)
    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError:
        known = ", ".join(torchvision.models.list_models(module=torchvision.models)[:8])
        raise OptionError(
            f"--encoder {TORCHVISION_PREFIX}{name}: torchvision has no model '{name}' (e.g. {known}, ...)"
        ) from None
    head = last_linear(model)
    checkpoint = read_checkpoint(path)
    state = {key.removeprefix("module."): value for key, value in checkpoint.get("state_dict", checkpoint).items()}
    # A checkpoint saved without its classifier is fine: that layer is dropped anyway.
    load_strict(model, state, path, allowed_missing=(f"{head}.",))
    set_submodule(model, head, torch.nn.Identity())
    return model


def last_linear(model: torch.nn.Module) -> str:
    import torch

    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    if not names:
        raise OptionError(f"{type(model).__name__} has no linear classifier layer to remove; export it instead")
    return names[-1]


def set_submodule(model: torch.nn.Module, dotted: str, replacement: torch.nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)


def _check_torchvision(spec: str, weights: Path | None) -> None:
    torchvision_weights(spec.removeprefix(TORCHVISION_PREFIX), weights)


def _load_torchvision(spec: str, weights: Path | None, device: torch.device) -> Loaded:
    model = torchvision_encoder(spec.removeprefix(TORCHVISION_PREFIX), weights)
    return Loaded(_in_eval_on(model, device), spec, weights)


# -- exported programs -----------------------------------------------------------------------------


def user_input(program: Any) -> Any:
    """The `val` (a fake tensor) of the program's first user input, or None."""
    from torch.export.graph_signature import InputKind

    names = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    if not names:
        return None
    node = next((n for n in program.graph.nodes if n.op == "placeholder" and n.name == names[0]), None)
    return node.meta.get("val") if node is not None else None


def accepted_sizes(program: Any, limit: int = 4096) -> list[int] | None:
    """Input sides S that the program's first input accepts, read from its shape constraints.

    A static side gives [S]; a symbolic one like 32*s with s in [2, 16] gives 64, 96, ..., 512;
    None when the side is free (or too complicated to enumerate).
    """
    value = user_input(program)
    if value is None or len(value.shape) != 4:
        return None
    side = value.shape[2]
    if isinstance(side, int):
        return [side]
    expression = side.node.expr
    bounds = symbol_bounds(program, expression)
    if bounds is None or bounds[2] is None:
        return None
    symbol, lower, upper = bounds
    sizes = sorted({int(expression.subs(symbol, v)) for v in range(lower, min(upper, lower + limit) + 1)})
    return [s for s in sizes if s <= limit] if upper - lower <= limit else None


def symbol_bounds(program: Any, expression: Any) -> tuple[Any, int, int | None] | None:
    """(symbol, lower, upper or None when unbounded) of an expression in one symbol, or None."""
    symbols = list(expression.free_symbols)
    if len(symbols) != 1 or symbols[0] not in program.range_constraints:
        return None
    bounds = program.range_constraints[symbols[0]]
    try:
        lower = int(bounds.lower)
    except (TypeError, ValueError, OverflowError):
        return None
    try:
        upper: int | None = int(bounds.upper)
    except (TypeError, ValueError, OverflowError):
        upper = None
    return symbols[0], lower, upper


def accepted_batch(program: Any, path: Path) -> tuple[int, int | None]:
    """(least, most) images per call, and a clear error now for an input datadiet cannot feed:
    it feeds one float32 tensor of shape (B, 3, S, S)."""
    import torch
    from torch.export.graph_signature import InputKind

    count = sum(spec.kind == InputKind.USER_INPUT for spec in program.graph_signature.input_specs)
    value = user_input(program)
    if count == 1 and value is None:  # no recorded shape: nothing to check or fit
        return 1, None
    shape = tuple(value.shape) if value is not None else ()
    square = len(shape) == 4 and str(shape[2]) == str(shape[3])
    channels_ok = len(shape) == 4 and (not isinstance(shape[1], int) or shape[1] == 3)
    if count != 1 or value.dtype != torch.float32 or not square or not channels_ok:
        takes = f"{count} inputs" if count != 1 else f"a {value.dtype} input of shape ({', '.join(map(str, shape))})"
        takes = takes.replace("torch.", "")
        raise ModelFileError(f"--encoder {path}: takes {takes}; datadiet feeds one float32 batch of RGB images "
                             "(N, 3, S, S); export the encoder for that input")  # fmt: skip
    batch = shape[0]
    if isinstance(batch, int):
        return batch, batch
    bounds = symbol_bounds(program, batch.node.expr) if batch.node.expr.is_Symbol else None
    if bounds is None:
        return 1, None
    _, lower, upper = bounds
    return max(lower, 1), upper


def _is_program_file(spec: str) -> bool:
    return Path(spec).expanduser().is_file()


def _check_program(spec: str, weights: Path | None) -> None:
    if weights is not None:
        raise OptionError(f"{WEIGHTS_FOR}; the program {spec} holds its own")
    check_program_file(Path(spec).expanduser())  # a refused or broken archive fails before images are decoded


def _load_program(spec: str, weights: Path | None, device: torch.device) -> Loaded:
    path = Path(spec).expanduser()
    program = load_program(path)  # refuses pickles, native code and anything else that could run code
    batch = accepted_batch(program.exported, path)  # and an input datadiet cannot feed, before any forward
    # A program's train/eval behaviour was fixed when it was exported: it only moves to the device.
    moved = program.module.to(device) if device.type != "cpu" else program.module
    return Loaded(moved, path.name, path, accepted_sizes(program.exported), batch)


# -- raw pixels ------------------------------------------------------------------------------------


def flatten_pixels(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)


def _check_pixels(spec: str, weights: Path | None) -> None:
    if weights is not None:
        raise OptionError(f"{WEIGHTS_FOR}; the pixels encoder has none")


def _load_pixels(spec: str, weights: Path | None, device: torch.device) -> Loaded:
    return Loaded(flatten_pixels, PIXELS_ENCODER)


# -- the registry ----------------------------------------------------------------------------------

ENCODERS: dict[str, EncoderKind] = {
    entry.kind: entry
    for entry in (
        EncoderKind("swav", matches=lambda spec: spec == SWAV_ENCODER, takes_weights=True, check=_check_swav,
                    load=_load_swav, imagenet_normalise=True, default_size=IMAGENET_SIZE),
        EncoderKind("torchvision", matches=lambda spec: spec.startswith(TORCHVISION_PREFIX), takes_weights=True,
                    check=_check_torchvision, load=_load_torchvision, imagenet_normalise=True,
                    default_size=IMAGENET_SIZE),
        # Upsampling raw pixels would only add correlated dimensions: the images' own side, however small.
        EncoderKind("pixels", matches=lambda spec: spec == PIXELS_ENCODER, takes_weights=False, check=_check_pixels,
                    load=_load_pixels, imagenet_normalise=False, default_size=None, min_size=1),
        # Last: any existing file is taken for a program (a file named like another kind's spec is not).
        EncoderKind("exported", matches=_is_program_file, takes_weights=False, check=_check_program,
                    load=_load_program, imagenet_normalise=False, default_size=None),
    )
}  # fmt: skip


def find_encoder_kind(spec: str) -> EncoderKind | None:
    """The first registry entry whose spec this is, or None."""
    return next((entry for entry in ENCODERS.values() if entry.matches(spec)), None)


def encoder_kind(spec: str) -> EncoderKind:
    kind = find_encoder_kind(spec)
    if kind is None:
        raise OptionError(f"--encoder {spec}: {NOT_AN_ENCODER}")
    return kind


def check_encoder(spec: str, weights: Path | None) -> None:
    """The cheap checks of `load_encoder` (names, files present), so a bad option fails before decoding images."""
    encoder_kind(spec).check(spec, weights)


def load_encoder(spec: str, weights: Path | None, device: torch.device) -> Encoder:
    """Parse `--encoder` and load it onto `device` in inference mode."""
    kind = encoder_kind(spec)
    kind.check(spec, weights)
    loaded = kind.load(spec, weights, device)
    identity: dict[str, Any] = {"name": loaded.name, "kind": kind.kind}
    if loaded.file is not None:
        identity.update(file=str(loaded.file.resolve()), sha256=file_digest(loaded.file))
    return Encoder(
        loaded.module, kind.imagenet_normalise, loaded.sizes, kind.default_size, identity, kind.min_size, loaded.batch
    )


def takes_weights(spec: str) -> bool:
    kind = find_encoder_kind(spec)
    return kind is not None and kind.takes_weights


def pair_weights(encoders: list[str], weights: list[Path]) -> list[Path | None]:
    """The i-th --weights goes to the i-th encoder that takes weights (swav-resnet50, torchvision:NAME)."""
    takers = [encoder for encoder in encoders if takes_weights(encoder)]
    if weights and len(weights) != len(takers):
        raise OptionError(
            f"{len(weights)} --weights for {len(takers)} encoders that take weights ({', '.join(takers) or 'none'}); "
            "give one --weights per swav-resnet50/torchvision:NAME encoder, in the same order"
        )
    remaining = iter(weights)
    return [next(remaining, None) if takes_weights(encoder) else None for encoder in encoders]
