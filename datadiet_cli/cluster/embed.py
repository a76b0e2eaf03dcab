"""Embedding images: every row of a manifest, in batches, through one loaded encoder.

Same-size images are decoded once (and cached) and shared by every encoder; images of varying
sizes are decoded in threads while the encoder runs, resized and centre-cropped to S x S.
torch is imported inside functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datadiet_cli.cluster.encoders import IMAGENET_SIZE, Encoder, load_encoder
from datadiet_cli.data import images
from datadiet_cli.errors import DatasetError, ModelFileError, OptionError
from datadiet_cli.io.manifest import Manifest

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[int, int], None]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EmbedConfig:
    image_size: int | None = None  # side S of the square encoder input; None = the encoder's default
    batch_size: int = 128  # images per forward pass
    device: str = "auto"  # auto: CUDA, then MPS, else CPU


@dataclass(frozen=True)
class Embeddings:
    """One embedding per manifest row (row order), and where they came from."""

    matrix: np.ndarray  # (N, D) float32
    identity: Mapping[str, Any] = field(default_factory=dict)  # encoder name, file digest, image size, ...


def choose_image_size(encoder: Encoder, native_side: int, requested: int | None) -> int:
    """--image-size, or the encoder's default: 224 for ImageNet models, else the images' own side
    rounded up to the smallest size the program accepts (never below the encoder's min_size when free)."""
    sizes = encoder.sizes
    if requested is not None:
        if requested < 1:
            raise OptionError(f"--image-size {requested} must be positive")
        if sizes is not None and requested not in sizes:
            raise OptionError(f"--image-size {requested}: {encoder.identity['name']} takes {describe_sizes(sizes)}")
        return requested
    if encoder.default_size is not None:
        return encoder.default_size
    if sizes is None:
        return max(native_side, encoder.min_size)
    return next((s for s in sizes if s >= native_side), sizes[-1])


def fit_batch_size(requested: int, encoder: Encoder) -> int:
    """--batch-size within what the encoder takes per call (exactly its size for a static batch)."""
    least, most = encoder.batch
    return min(max(requested, least), most) if most is not None else max(requested, least)


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
    """Run uint8 (N, H, W, C) images through the encoder in batches -> float32 (N, D).

    `batch_size` is fitted to what the encoder takes per call (see `fit_batch_size`)."""
    batches = _array_batches(pixels, fit_batch_size(batch_size, encoder))
    return _embed_batches(batches, len(pixels), encoder, image_size, device, progress)


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
        raise DatasetError("no images to embed")
    least = encoder.batch[0]
    outputs: list[np.ndarray] = []
    with torch.inference_mode():
        for batch in batches:
            rows = len(batch)
            if rows < least:  # a program with a static (or least) batch: pad with the last image, drop its outputs
                batch = np.concatenate([batch, np.repeat(batch[-1:], least - rows, axis=0)])
            tensor = torch.from_numpy(batch).to(device, non_blocking=True)
            inputs = to_input(tensor, image_size, encoder.imagenet_normalise)
            try:
                features = encoder.module(inputs)
            except Exception as error:  # the encoder's own error, e.g. an input it was not exported for
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                name = encoder.identity.get("name", "the encoder")
                raise ModelFileError(
                    f"--encoder {name}: failed on a batch of shape {tuple(inputs.shape)} ({reason})"
                ) from None
            if isinstance(features, (tuple, list)):
                features = features[0]
            outputs.append(features[:rows].reshape(rows, -1).float().cpu().numpy())
            if progress is not None:
                progress(rows, total)
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
    encoder_spec: str,
    weights: Path | None,
    config: EmbedConfig,
    root: Path | None = None,
    pixels: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> Embeddings:
    """Embed every image of the manifest (row order) with the encoder `--encoder encoder_spec` names.

    `pixels` from `load_pixels` saves decoding again; without it, same-size images are
    loaded here and images of varying sizes are streamed.
    """
    from datadiet_cli.device import select_device

    device = select_device(config.device)
    if config.batch_size < 1:
        raise OptionError(f"--batch-size {config.batch_size} must be at least 1")
    encoder = load_encoder(encoder_spec, weights, device)
    side = native_side(manifest)
    size = choose_image_size(encoder, side if side is not None else IMAGENET_SIZE, config.image_size)
    if pixels is None and side is not None:
        pixels = images.load_images(manifest, root)
    if pixels is not None:
        if len(pixels) != manifest.num_rows:
            raise ValueError(f"pixels has {len(pixels)} images for {manifest.num_rows} rows")
        matrix = embed_pixels(pixels, encoder, size, config.batch_size, device, progress)
    else:
        batches = stream_batches(manifest, root, size, fit_batch_size(config.batch_size, encoder))
        matrix = _embed_batches(batches, manifest.num_rows, encoder, size, device, progress)
    identity = {**encoder.identity, "image_size": size, "dim": int(matrix.shape[1])}
    return Embeddings(matrix=matrix, identity=identity)
