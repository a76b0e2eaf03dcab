"""Embeddings for `datadiet cluster`: load an encoder, run every image through it, or read saved vectors.

Encoders (the `--encoder` value):
- `swav-resnet50`: the paper's self-supervised SwAV ResNet-50 (Caron et al., 2020), read from
  the official checkpoint format (`--weights FILE`, or where torch.hub would have cached it);
  features are the 2048-d global-average-pooled output of the last residual stage.
- `torchvision:NAME` with `--weights FILE`: any torchvision classifier; features are the
  input of its last linear layer (the penultimate representation).
- a path to a `torch.export.save`d program: RGB floats in [0, 1], (N, 3, S, S) -> (N, D);
  its own normalisation is inside the program.
- `pixels`: the raw RGB pixels in [0, 1] at the images' own size, flattened. Only sensible
  for tiny images (the built-in 8x8 digits), where it is the classic k-means baseline.
Weights are never downloaded. torch and torchvision are imported inside functions.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datadiet_cli.cluster.kmeans import Embeddings
from datadiet_cli.data import images
from datadiet_cli.errors import DatadietError, OptionError
from datadiet_cli.io.files import file_digest
from datadiet_cli.io.manifest import Manifest, read_manifest
from datadiet_cli.io.tables import read_embeddings

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[int, int], None]
# (description, unit) -> a context yielding the callback of one phase (decoding, one encoder's pass)
PhaseProgress = Callable[[str, str], AbstractContextManager[ProgressCallback | None]]

SWAV_ENCODER = "swav-resnet50"
PIXELS_ENCODER = "pixels"
SWAV_CHECKPOINT = "swav_800ep_pretrain.pth.tar"
SWAV_URL = "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar"
TORCHVISION_PREFIX = "torchvision:"
# Keys of the SwAV training head (and of a linear classifier, in linear-evaluation checkpoints):
# not part of the encoder whose avgpool features the paper uses.
SWAV_HEAD_PREFIXES = ("projection_head.", "prototypes.", "fc.")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ImageNet encoders (SwAV, torchvision) see 224 px images at evaluation.
IMAGENET_SIZE = 224
# Exported programs with a free input size get at least this (the shared EfficientNet's smallest).
MIN_PROGRAM_SIZE = 64


@dataclass(frozen=True)
class EmbedConfig:
    encoder: str = SWAV_ENCODER  # swav-resnet50 (the paper's), torchvision:NAME, or an exported program's path
    weights: Path | None = None  # checkpoint for swav-resnet50 / torchvision:NAME; swav falls back to the hub cache
    image_size: int | None = None  # side S of the square encoder input; None = the encoder's default
    batch_size: int = 128  # images per forward pass
    device: str = "auto"  # auto: CUDA, then MPS, else CPU


@dataclass
class Encoder:
    """A ready-to-call feature extractor and what defines it."""

    module: Callable[[torch.Tensor], torch.Tensor]
    imagenet_normalise: bool  # apply ImageNet mean/std before the forward (exported programs do their own)
    sizes: list[int] | None  # input sides the encoder accepts; None = any
    default_size: int | None  # None = the images' own side (rounded up to an accepted size)
    identity: dict[str, Any] = field(default_factory=dict)  # name, kind, file, sha256


# -- loading encoders ----------------------------------------------------------------------------


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


def read_checkpoint(path: Path) -> Mapping[str, Any]:
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DatadietError(f"--weights {path}: no such file") from None
    except Exception as error:  # torch raises many types for a bad file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatadietError(f"--weights {path}: not a torch checkpoint ({reason})") from None
    if not isinstance(checkpoint, Mapping):
        raise DatadietError(f"--weights {path}: holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


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
        raise DatadietError(f"--weights {path}: does not fit the encoder: {'; '.join(problems)}")
    model.load_state_dict(dict(state), strict=False)


def swav_weights_path(weights: Path | None) -> Path:
    """--weights, else the torch hub cache; a missing file is an error that says where to put it."""
    path = weights if weights is not None else swav_hub_path()
    if not path.is_file():
        where = f"--weights {path}: no such file" if weights is not None else f"no SwAV weights at {path}"
        raise DatadietError(
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


def torchvision_encoder(name: str, weights: Path | None) -> torch.nn.Module:
    """A torchvision classifier with its weights and its last linear layer replaced by Identity."""
    import torch
    import torchvision

    if weights is None:
        raise OptionError(f"--encoder {TORCHVISION_PREFIX}{name} needs --weights FILE (a state dict for that model)")
    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError:
        known = ", ".join(torchvision.models.list_models(module=torchvision.models)[:8])
        raise OptionError(
            f"--encoder {TORCHVISION_PREFIX}{name}: torchvision has no model '{name}' (e.g. {known}, ...)"
        ) from None
    head = last_linear(model)
    checkpoint = read_checkpoint(weights)
    state = {key.removeprefix("module."): value for key, value in checkpoint.get("state_dict", checkpoint).items()}
    # A checkpoint saved without its classifier is fine: that layer is dropped anyway.
    load_strict(model, state, weights, allowed_missing=(f"{head}.",))
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


def exported_program(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[int] | None]:
    """`torch.export.load(path).module()` and the input sides its shape constraints allow."""
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as error:  # torch raises many types for a bad file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatadietError(f"--encoder {path}: not a torch.export program ({reason})") from None
    return program.module(), accepted_sizes(program)


def accepted_sizes(program: Any, limit: int = 4096) -> list[int] | None:
    """Input sides S that the program's first input accepts, read from its shape constraints.

    A static side gives [S]; a symbolic one like 32*s with s in [2, 16] gives 64, 96, ..., 512;
    None when the side is free (or too complicated to enumerate).
    """
    from torch.export.graph_signature import InputKind

    user_inputs = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    if not user_inputs:
        return None
    node = next((n for n in program.graph.nodes if n.op == "placeholder" and n.name == user_inputs[0]), None)
    value = node.meta.get("val") if node is not None else None
    if value is None or len(value.shape) != 4:
        return None
    side = value.shape[2]
    if isinstance(side, int):
        return [side]
    expression = side.node.expr
    symbols = list(expression.free_symbols)
    if len(symbols) != 1 or symbols[0] not in program.range_constraints:
        return None
    bounds = program.range_constraints[symbols[0]]
    try:
        lower, upper = int(bounds.lower), int(bounds.upper)
    except (TypeError, ValueError, OverflowError):
        return None
    sizes = sorted({int(expression.subs(symbols[0], v)) for v in range(lower, min(upper, lower + limit) + 1)})
    return [s for s in sizes if s <= limit] if upper - lower <= limit else None


def check_encoder(spec: str, weights: Path | None) -> None:
    """The cheap checks of `load_encoder` (names, files present), so a bad option fails before decoding images."""
    if spec == PIXELS_ENCODER:
        if weights is not None:
            raise OptionError("--weights is for swav-resnet50 and torchvision:NAME; the pixels encoder has none")
    elif spec == SWAV_ENCODER:
        swav_weights_path(weights)
    elif spec.startswith(TORCHVISION_PREFIX):
        if weights is None:
            raise OptionError(f"--encoder {spec} needs --weights FILE (a state dict for that model)")
        if not weights.is_file():
            raise DatadietError(f"--weights {weights}: no such file")
    elif not Path(spec).expanduser().is_file():
        raise OptionError(
            f"--encoder {spec}: not swav-resnet50, torchvision:NAME, or an existing torch.export file (.pt2)"
        )
    elif weights is not None:
        raise OptionError(f"--weights is for swav-resnet50 and torchvision:NAME; the program {spec} holds its own")


def load_encoder(spec: str, weights: Path | None, device: torch.device) -> Encoder:
    """Parse `--encoder` and load it onto `device` in inference mode."""
    if spec == PIXELS_ENCODER:
        check_encoder(spec, weights)
        return Encoder(flatten_pixels, False, None, None, {"name": PIXELS_ENCODER, "kind": "pixels"})
    if spec == SWAV_ENCODER:
        model, path = swav_resnet50(weights)
        identity = {"name": SWAV_ENCODER, "kind": "swav", "file": str(path.resolve()), "sha256": file_digest(path)}
        return Encoder(_eval_on(model, device), True, None, IMAGENET_SIZE, identity)
    if spec.startswith(TORCHVISION_PREFIX):
        name = spec.removeprefix(TORCHVISION_PREFIX)
        model = torchvision_encoder(name, weights)
        assert weights is not None
        identity = {"name": spec, "kind": "torchvision", "file": str(weights.resolve()), "sha256": file_digest(weights)}
        return Encoder(_eval_on(model, device), True, None, IMAGENET_SIZE, identity)
    path = Path(spec).expanduser()
    if path.is_file():
        if weights is not None:
            raise OptionError(f"--weights is for swav-resnet50 and torchvision:NAME; the program {path} holds its own")
        module, sizes = exported_program(path)
        identity = {"name": path.name, "kind": "exported", "file": str(path.resolve()), "sha256": file_digest(path)}
        moved = module.to(device) if device.type != "cpu" else module
        return Encoder(moved, False, sizes, None, identity)
    raise OptionError(f"--encoder {spec}: not swav-resnet50, torchvision:NAME, or an existing torch.export file (.pt2)")


def flatten_pixels(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)


def _eval_on(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return model.eval().to(device)


def choose_image_size(encoder: Encoder, native_side: int, requested: int | None) -> int:
    """--image-size, or the encoder's default: 224 for ImageNet models, else the images' own side
    rounded up to the smallest size the program accepts (never below MIN_PROGRAM_SIZE when free)."""
    sizes = encoder.sizes
    if requested is not None:
        if requested < 1:
            raise OptionError(f"--image-size {requested} must be positive")
        if sizes is not None and requested not in sizes:
            raise OptionError(f"--image-size {requested}: {encoder.identity['name']} takes {describe_sizes(sizes)}")
        return requested
    if encoder.identity.get("kind") == "pixels":
        return native_side  # upsampling would only add correlated dimensions
    if encoder.default_size is not None:
        return encoder.default_size
    if sizes is None:
        return max(native_side, MIN_PROGRAM_SIZE)
    return next((s for s in sizes if s >= native_side), sizes[-1])


def describe_sizes(sizes: list[int]) -> str:
    if len(sizes) <= 4:
        return ", ".join(map(str, sizes))
    return f"{sizes[0]}, {sizes[1]}, ..., {sizes[-1]}"


# -- running encoders ---------------------------------------------------------------------------


def to_input(batch: torch.Tensor, size: int, imagenet_normalise: bool) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float (B, 3, S, S) in [0, 1] (ImageNet-normalised when asked)."""
    import torch
    import torch.nn.functional as F

    pixels = batch.permute(0, 3, 1, 2).float().div_(255.0)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    if pixels.shape[2:] != (size, size):
        shrinking = pixels.shape[2] > size or pixels.shape[3] > size
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
        pixels = pixels.clamp_(0.0, 1.0)
    if imagenet_normalise:
        mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)
        pixels = (pixels - mean) / std
    return pixels.contiguous()


def embed_pixels(
    pixels: np.ndarray,
    encoder: Encoder,
    image_size: int,
    batch_size: int,
    device: torch.device,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Run uint8 (N, H, W, C) images through the encoder in batches -> float32 (N, D)."""
    return _embed_batches(_array_batches(pixels, batch_size), len(pixels), encoder, image_size, device, progress)


def _array_batches(pixels: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(pixels), batch_size):
        # A copy: cached pixels are a read-only memory map, which torch.from_numpy warns about.
        yield np.array(pixels[start : start + batch_size], copy=True)


def _embed_batches(
    batches: Iterator[np.ndarray],
    total: int,
    encoder: Encoder,
    image_size: int,
    device: torch.device,
    progress: ProgressCallback | None,
) -> np.ndarray:
    import torch

    if total == 0:
        raise DatadietError("no images to embed")
    outputs: list[np.ndarray] = []
    with torch.inference_mode():
        for batch in batches:
            tensor = torch.from_numpy(batch).to(device, non_blocking=True)
            features = encoder.module(to_input(tensor, image_size, encoder.imagenet_normalise))
            if isinstance(features, (tuple, list)):
                features = features[0]
            outputs.append(features.reshape(len(batch), -1).float().cpu().numpy())
            if progress is not None:
                progress(len(batch), total)
    return np.concatenate(outputs)


def stream_batches(manifest: Manifest, root: Path | None, size: int, batch_size: int) -> Iterator[np.ndarray]:
    """Images of varying sizes, decoded in threads and resized (shorter side to S, centre crop S x S)."""

    def load(row: int) -> np.ndarray:
        image = images.open_image(manifest, row, root).convert("RGB")
        scale = size / min(image.size)
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((width, height), resample=3)  # bicubic
        left, top = (width - size) // 2, (height - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)))

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datadiet-embed") as pool:
        # One batch decodes in the background while the encoder runs on the previous one.
        starts = range(0, manifest.num_rows, batch_size)
        pending = None
        for start in starts:
            rows = range(start, min(start + batch_size, manifest.num_rows))
            future = pool.submit(lambda rows=rows: np.stack(list(map(load, rows))))
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def native_side(manifest: Manifest) -> int | None:
    shape = (manifest.meta.get("dataset") or {}).get("image_shape")
    return max(int(shape[0]), int(shape[1])) if shape else None


def load_pixels(
    manifest: Manifest, root: Path | None = None, progress: ProgressCallback | None = None
) -> np.ndarray | None:
    """All images as one uint8 array (decoded once, then cached), or None when sizes vary (then they stream)."""
    if native_side(manifest) is None:
        images.dataset_root(manifest, root)  # a missing dataset fails now, not after the encoder loads
        return None
    return images.load_images(manifest, root, progress=progress)


def embed_manifest(
    manifest: Manifest,
    config: EmbedConfig,
    root: Path | None = None,
    pixels: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> Embeddings:
    """Embed every image of the manifest (row order) with the configured encoder.

    `pixels` from `load_pixels` saves decoding again; without it, same-size images are
    loaded here and images of varying sizes are streamed.
    """
    from datadiet_cli.device import select_device

    device = select_device(config.device)
    if config.batch_size < 1:
        raise OptionError(f"--batch-size {config.batch_size} must be at least 1")
    encoder = load_encoder(config.encoder, config.weights, device)
    side = native_side(manifest)
    size = choose_image_size(encoder, side if side is not None else IMAGENET_SIZE, config.image_size)
    if pixels is None and side is not None:
        pixels = images.load_images(manifest, root)
    if pixels is not None:
        if len(pixels) != manifest.num_rows:
            raise ValueError(f"pixels has {len(pixels)} images for {manifest.num_rows} rows")
        matrix = embed_pixels(pixels, encoder, size, config.batch_size, device, progress)
    else:
        batches = stream_batches(manifest, root, size, config.batch_size)
        matrix = _embed_batches(batches, manifest.num_rows, encoder, size, device, progress)
    identity = {**encoder.identity, "image_size": size, "dim": int(matrix.shape[1])}
    return Embeddings(matrix=matrix, identity=identity)


def embedding_sources(
    manifest: Manifest,
    encoders: list[str],
    weights: list[Path],
    files: list[Path],
    ids_file: Path | None,
    config: EmbedConfig,
    root: Path | None = None,
    phase: PhaseProgress | None = None,
) -> list[Embeddings]:
    """Every requested source of embeddings, in order: encoders (swav-resnet50 when none is named
    and no file is given), then files. Every option is checked before any image is decoded, and the
    images are decoded once for all encoders. `config.encoder` and `config.weights` are ignored."""
    phase = phase or (lambda description, unit: nullcontext(None))
    if not encoders and not files:
        encoders = [SWAV_ENCODER]
    paired = pair_weights(encoders, weights)
    for name, weight in zip(encoders, paired, strict=True):
        check_encoder(name, weight)
    pixels = None
    if encoders:
        with phase("decoding", "images") as progress:
            pixels = load_pixels(manifest, root, progress)
    sources = []
    for name, weight in zip(encoders, paired, strict=True):
        encoder_config = dataclasses.replace(config, encoder=name, weights=weight)
        with phase(f"embedding ({Path(name).name})", "images") as progress:
            sources.append(embed_manifest(manifest, encoder_config, root, pixels, progress))
    sources.extend(embeddings_from_file(manifest, path, ids_file) for path in files)
    return sources


# -- saved embeddings ------------------------------------------------------------------------------


def read_ids_file(path: Path) -> np.ndarray:
    """Ids for a .npy matrix: a Parquet file with an `id` column, or text with one id per line."""
    if not path.is_file():
        raise DatadietError(f"--embedding-ids {path}: no such file")
    if path.suffix == ".parquet":
        return read_manifest(path).ids()
    lines = path.read_text(encoding="utf-8").splitlines()
    return np.asarray([line for line in lines if line != ""], dtype=object)


def read_embeddings_file(path: Path, ids_path: Path | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(ids, float32 matrix, metadata) from a Parquet embeddings file or a .npy matrix + ids file."""
    if path.suffix == ".npy":
        if ids_path is None:
            raise OptionError(f"--embeddings {path}: a .npy matrix needs --embedding-ids FILE (one id per row)")
        if not path.is_file():
            raise DatadietError(f"--embeddings {path}: no such file")
        try:
            matrix = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DatadietError(f"--embeddings {path}: not a .npy array ({error})") from None
        if matrix.ndim != 2 or not (
            np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)
        ):
            raise DatadietError(
                f"--embeddings {path}: holds a {matrix.dtype} array of shape {matrix.shape}, not (N, D) numbers"
            )
        ids = read_ids_file(ids_path)
        if len(ids) != len(matrix):
            raise DatadietError(f"--embedding-ids {ids_path}: {len(ids)} ids for {len(matrix)} rows of {path}")
        return ids, matrix.astype(np.float32, copy=False), {}
    if ids_path is not None:
        raise OptionError("--embedding-ids goes with a .npy --embeddings file; Parquet embeddings carry their ids")
    return read_embeddings(path)


def align_to_manifest(manifest: Manifest, ids: np.ndarray, matrix: np.ndarray, source: str) -> np.ndarray:
    """Rows of `matrix` reordered to the manifest's ids; extra ids are ignored, missing ones are an error."""
    position = {example_id: row for row, example_id in enumerate(ids)}
    if len(position) != len(ids):
        raise DatadietError(f"{source}: ids are not unique; every embedding needs its own id")
    wanted = manifest.ids()
    missing = [example_id for example_id in wanted if example_id not in position]
    if missing:
        raise DatadietError(
            f"{source}: {len(missing)} of the {len(wanted)} ids of {manifest.name} have no embedding "
            f"(e.g. '{missing[0]}'); embed the same dataset the manifest lists"
        )
    return matrix[np.fromiter((position[i] for i in wanted), dtype=np.int64, count=len(wanted))]


def embeddings_from_file(manifest: Manifest, path: Path, ids_path: Path | None = None) -> Embeddings:
    ids, matrix, metadata = read_embeddings_file(path, ids_path)
    aligned = align_to_manifest(manifest, ids, matrix, str(path))
    identity = {
        "name": path.name,
        "kind": "embeddings",
        "file": str(path.resolve()),
        "sha256": file_digest(path),
        "dim": int(matrix.shape[1]),
        "made_by": metadata.get("encoder"),
    }
    return Embeddings(matrix=aligned, identity=identity)


def takes_weights(encoder: str) -> bool:
    return encoder == SWAV_ENCODER or encoder.startswith(TORCHVISION_PREFIX)


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
