"""Batches for `train` and `evaluate`: example order, pixels on the device, augmentation, normalisation.

Two paths, one interface (`ImageData.batches`):

- small images (one shape, <= 64 px, e.g. CIFAR, digits): decoded once by `images.load_images`
  (cached uint8), copied to the training device as one (N, C, H, W) uint8 tensor, and
  augmented there a whole batch at a time. No DataLoader, no per-image Python: on two CPU
  cores this is what keeps the model, not the input pipeline, the bottleneck.
- large images (or sizes that vary): streamed from disk through a DataLoader with worker
  processes (`images.open_image` + torchvision transforms), normalised on the device.

The order examples are visited in is `seeds.epoch_order`: one fixed permutation of the full
dataset per (seed, epoch), filtered to the kept ids, so runs on different subsets are comparable.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datadiet_cli.data import images
from datadiet_cli.data.sources.base import channels_of_mode, pil_mode_for_channels
from datadiet_cli.distributed import SINGLE, Ranks
from datadiet_cli.errors import DatadietError, DatasetError
from datadiet_cli.io.manifest import Manifest
from datadiet_cli.train.models import SMALL_IMAGE_MAX_SIDE
from datadiet_cli.train.recipes import Augment, Recipe

# Images per streamed sample used to estimate the normalisation of large-image datasets.
NORMALISATION_SAMPLE = 256
# (B,) positions into the data, (B, C, H, W) normalised float images, (B,) int64 labels.
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# -- example order ------------------------------------------------------------------------------


def split_batches(order: np.ndarray, n_batches: int) -> list[np.ndarray]:
    """ceil(n/b) batches of near-equal size (sizes differ by at most one), never a tiny remainder.

    A remainder batch of 1 would break BatchNorm on 1x1 feature maps and be a noisy step.
    """
    return np.array_split(order, n_batches)


# -- normalisation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalisation:
    mean: tuple[float, ...]  # per channel, pixel values scaled to [0, 1]
    std: tuple[float, ...]

    @staticmethod
    def of_pixels(pixels: np.ndarray) -> Normalisation:
        """Per-channel mean and std of uint8 (N, H, W, C) pixels, in [0, 1] units."""
        flat = pixels.reshape(-1, pixels.shape[-1])
        total = flat.shape[0]
        sums = np.add.reduce(flat, axis=0, dtype=np.float64)
        squares = np.zeros(flat.shape[1])
        for start in range(0, total, 1 << 22):  # chunks: squaring all of CIFAR at once would take 1.2 GB
            chunk = flat[start : start + (1 << 22)].astype(np.float64)
            squares += (chunk * chunk).sum(axis=0)
        mean = sums / total
        std = np.sqrt(np.maximum(squares / total - mean * mean, 0.0))
        std = np.where(std > 0, std, 1.0)  # a constant channel: leave it unscaled rather than divide by 0
        return Normalisation(tuple(float(m) / 255 for m in mean), tuple(float(s) / 255 for s in std))


# -- augmentation on the device, a whole batch at once ------------------------------------------------


def pack_pixels(pixels: torch.Tensor, padding: int) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, H+2p, W+2p) "pixel words", zero-padded by p px on every side.

    One element per pixel (uint8 for grayscale; for RGB the 3 bytes plus a zero byte as one
    int32), so a random crop moves whole pixels with one `gather` and unpacking yields the
    channels-last layout the convolutions want without another copy.
    """
    channels = pixels.shape[-1]
    if channels == 3:
        words = F.pad(pixels, (0, 1)).contiguous().view(torch.int32).squeeze(-1)  # RGB0 -> int32
    elif channels == 1:
        words = pixels.squeeze(-1)
    else:
        raise DatasetError(f"images with {channels} channels are not supported; ingest them as grayscale or RGB")
    return F.pad(words, (padding, padding, padding, padding)).contiguous()


def unpack_pixels(words: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, H, W) pixel words -> (B, C, H, W) uint8 laid out channels-last in memory."""
    words = words.contiguous()
    if channels == 1:
        return words.unsqueeze(1)
    count, height, width = words.shape
    rgb = words.view(torch.uint8).view(count, height, width, 4)[..., :3].contiguous()  # (B, H, W, 3)
    return rgb.permute(0, 3, 1, 2)


def draw_crop_flip(count: int, padding: int, generator: torch.Generator) -> torch.Tensor:
    """(3, count) int64: each image's crop offsets (top, left) in [0, 2p] and flip (1 = flip, p=0.5).

    Drawn for the whole global batch even where a rank augments only its part of it, so each
    example gets the same crop at any world size.
    """
    device = generator.device
    top = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=device)
    flip = torch.rand(count, generator=generator, device=device) < 0.5
    return torch.stack([top, left, flip.long()])


def crop_flip(words: torch.Tensor, padding: int, drawn: torch.Tensor) -> torch.Tensor:
    """Random crop of each zero-padded image + horizontal flip, as one gather.

    (B, H+2p, W+2p) pixel words and (3, B) `draw_crop_flip` values -> (B, H, W); the same
    result as torchvision's RandomCrop(size, padding=p) + RandomHorizontalFlip on every image.
    """
    count, padded_height, padded_width = words.shape
    height, width = padded_height - 2 * padding, padded_width - 2 * padding
    top, left, flip = drawn[0], drawn[1], drawn[2].bool()
    columns = torch.arange(width, device=words.device)
    # Index into the flattened padded image: row * padded_width + column; a flipped crop reads right to left.
    columns = torch.where(flip[:, None, None], columns.flip(0), columns)  # (B, 1, W)
    rows = torch.arange(height, device=words.device)[:, None] * padded_width  # (H, 1)
    index = rows + columns + (top * padded_width + left)[:, None, None]  # (B, H, W)
    return words.view(count, -1).gather(1, index.view(count, -1)).view(count, height, width)


def resized_crop_flip(batch: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Random-resized-crop (8-100% of the area, aspect 3/4-4/3) + flip, as one affine resampling.

    (B, C, H, W) float and (B, 5) uniform [0, 1) draws -> same shape. Crops that would not fit
    are clamped to the image (torchvision retries instead); bilinear, like torchvision's default.
    """
    count = batch.shape[0]
    device = batch.device
    area = 0.08 + 0.92 * uniform[:, 0]
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * uniform[:, 1]
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)  # fraction of the image width
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    centre_x = (2 * uniform[:, 2] - 1) * (1 - width)  # normalised [-1, 1] coordinates keep the crop inside
    centre_y = (2 * uniform[:, 3] - 1) * (1 - height)
    sign = torch.where(uniform[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(count, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = width * sign, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


# -- the data ---------------------------------------------------------------------------------------


class ImageData(abc.ABC):
    """The examples of one manifest, ready to be batched for a model on `device`."""

    count: int
    labels: torch.Tensor  # (N,) int64 on the device; -1 where the manifest has no label
    in_channels: int
    image_size: int  # longer side of the images the model sees
    in_memory: bool
    normalisation: Normalisation

    @abc.abstractmethod
    def batches(
        self, batches: list[np.ndarray], augment: Augment, epoch_seed: int, ranks: Ranks = SINGLE
    ) -> Iterator[Batch]:
        """Yield (positions (B,), images (B, C, H, W) float normalised, labels (B,)) on the device.

        `batches` are the global batches; under torchrun each rank gets its `ranks.shard` of each.
        """


def label_array(manifest: Manifest) -> np.ndarray:
    """Labels as int64 with -1 for null (prediction on unlabeled data needs no labels)."""
    if not manifest.has_column("label"):
        return np.full(manifest.num_rows, -1, dtype=np.int64)
    column = manifest.table.column("label")
    return column.fill_null(-1).to_numpy().astype(np.int64)


class InMemoryData(ImageData):
    """Small images as one tensor of pixel words on the device; batches are gathered and augmented there."""

    in_memory = True

    def __init__(
        self,
        pixels: np.ndarray,
        labels: np.ndarray,
        device: torch.device,
        normalisation: Normalisation | None,
        channels_last: bool,
        crop_padding: int = 0,
    ) -> None:
        self.count, self.height, self.width, self.in_channels = pixels.shape
        self.image_size = max(self.height, self.width)
        self.normalisation = normalisation or Normalisation.of_pixels(pixels)
        self.device, self.channels_last, self.padding = device, channels_last, crop_padding
        # np.array copies: the cached pixels are a read-only memory map, and the copy is made once.
        # (N, H+2p, W+2p) words: 4 bytes per RGB pixel instead of 12 as float, padded once for all epochs.
        self.words = pack_pixels(torch.from_numpy(np.array(pixels)).to(device), crop_padding)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        mean = torch.tensor(self.normalisation.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.normalisation.std, device=device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as one multiply-add per pixel.
        self.scale, self.shift = 1 / (255 * std), -mean / std

    def batches(
        self, batches: list[np.ndarray], augment: Augment, epoch_seed: int, ranks: Ranks = SINGLE
    ) -> Iterator[Batch]:
        generator = torch.Generator(device=self.device).manual_seed(epoch_seed)
        order = torch.from_numpy(np.concatenate(batches) if batches else np.empty(0, np.int64)).to(self.device)
        pad, start = self.padding, 0
        for batch in batches:
            mine = ranks.shard(len(batch))  # this rank's rows of the global batch
            positions = order[start + mine.start : start + mine.stop]  # (B,)
            start += len(batch)
            words = self.words.index_select(0, positions)  # (B, H+2p, W+2p)
            if augment is Augment.crop_flip:
                words = crop_flip(words, pad, draw_crop_flip(len(batch), pad, generator)[:, mine])  # (B, H, W)
            else:
                words = words[:, pad : pad + self.height, pad : pad + self.width]
            pixels = unpack_pixels(words, self.in_channels)  # (B, C, H, W) uint8, channels-last in memory
            floats = torch.addcmul(self.shift, pixels.float(), self.scale)  # (B, C, H, W) normalised
            if augment is Augment.resized_crop_flip:
                floats = resized_crop_flip(
                    floats, torch.rand(len(batch), 5, generator=generator, device=self.device)[mine]
                )
            memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
            yield positions, floats.contiguous(memory_format=memory_format), self.labels.index_select(0, positions)


class StreamedImages(torch.utils.data.Dataset):
    """Decodes one image per item in a DataLoader worker: (uint8 (C, S, S), position)."""

    def __init__(self, manifest: Manifest, root: Path | None, transform: object) -> None:
        self.manifest, self.root, self.transform = manifest, root, transform

    def __len__(self) -> int:
        return self.manifest.num_rows

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        return self.transform(images.open_image(self.manifest, position, self.root)), position


def streamed_transform(recipe: Recipe, augment: Augment, channels: int) -> object:
    from torchvision.transforms import v2

    size = recipe.image_size
    mode = pil_mode_for_channels(channels)
    steps: list[object] = [v2.Lambda(lambda image: image.convert(mode))]
    if augment is Augment.resized_crop_flip:
        steps += [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    elif augment is Augment.crop_flip:
        steps += [v2.Resize(size), v2.CenterCrop(size), v2.RandomCrop(size, padding=recipe.crop_padding)]
        steps += [v2.RandomHorizontalFlip()]
    else:  # evaluation: the ImageNet protocol, shorter side to eval_resize then the central crop
        steps += [v2.Resize(recipe.eval_resize), v2.CenterCrop(size)]
    return v2.Compose([*steps, v2.PILToTensor()])


class StreamedData(ImageData):
    """Large images decoded by DataLoader workers each epoch, normalised on the device."""

    in_memory = False

    def __init__(
        self,
        manifest: Manifest,
        recipe: Recipe,
        device: torch.device,
        normalisation: Normalisation | None,
        channels_last: bool,
        workers: int,
        root: Path | None,
        in_channels: int | None = None,
    ) -> None:
        self.manifest, self.recipe, self.device, self.root = manifest, recipe, device, root
        self.count = manifest.num_rows
        self.image_size = recipe.image_size
        self.in_channels = in_channels or channels_of_mode(images.open_image(manifest, 0, root).mode)
        self.workers, self.channels_last = workers, channels_last
        self.labels = torch.from_numpy(label_array(manifest)).to(device)
        self.normalisation = normalisation or self.estimate_normalisation()
        mean = torch.tensor(self.normalisation.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.normalisation.std, device=device).view(1, -1, 1, 1)
        self.scale, self.shift = 1 / (255 * std), -mean / std

    def estimate_normalisation(self) -> Normalisation:
        sample = np.random.default_rng(0).permutation(self.count)[:NORMALISATION_SAMPLE]
        dataset = StreamedImages(
            self.manifest, self.root, streamed_transform(self.recipe, Augment.none, self.in_channels)
        )
        crops = np.stack([dataset[int(i)][0].permute(1, 2, 0).numpy() for i in sample])  # (S, H, W, C)
        return Normalisation.of_pixels(crops)

    def batches(
        self, batches: list[np.ndarray], augment: Augment, epoch_seed: int, ranks: Ranks = SINGLE
    ) -> Iterator[Batch]:
        # Filter on read: this rank's workers decode only its rows of each global batch. (Augmentation
        # is drawn in the workers, per batch, so it depends on the world size, as on --workers.)
        transform = streamed_transform(self.recipe, augment, self.in_channels)
        loader = torch.utils.data.DataLoader(
            StreamedImages(self.manifest, self.root, transform),
            batch_sampler=[batch[ranks.shard(len(batch))].tolist() for batch in batches],
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            # Seeds every worker's RNG from (seed, epoch): the augmentation of an epoch is reproducible.
            generator=torch.Generator().manual_seed(epoch_seed),
            prefetch_factor=4 if self.workers else None,
        )
        for pixels, positions in one_line_errors(loader):  # (B, C, S, S) uint8, (B,)
            pixels = pixels.to(self.device, non_blocking=True)
            positions = positions.to(self.device, non_blocking=True)
            floats = torch.addcmul(self.shift, pixels.float(), self.scale)
            if self.channels_last:
                floats = floats.contiguous(memory_format=torch.channels_last)
            yield positions, floats, self.labels.index_select(0, positions)


def one_line_errors(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """The loader's batches; a worker's DatadietError (an image deleted since ingest) comes back from
    DataLoader with the worker's traceback in its message: raise it again as its own one line."""
    try:
        yield from loader
    except DatadietError as error:
        text = str(error)
        if "\n" not in text:
            raise
        last = text.rstrip().splitlines()[-1]  # "datadiet_cli.errors.DatasetError: <the message>"
        prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
        raise type(error)(last.removeprefix(prefix)) from None


def is_small(manifest: Manifest) -> bool:
    shape = (manifest.meta.get("dataset") or {}).get("image_shape")
    return bool(shape) and max(int(shape[0]), int(shape[1])) <= SMALL_IMAGE_MAX_SIDE


def load_data(
    manifest: Manifest,
    recipe: Recipe,
    device: torch.device,
    *,
    normalisation: Normalisation | None = None,
    channels_last: bool = False,
    workers: int = 4,
    root: Path | None = None,
    pixels: np.ndarray | None = None,
    in_channels: int | None = None,
    in_memory: bool | None = None,
    training: bool = True,
    progress: images.ProgressCallback | None = None,
) -> ImageData:
    """The manifest's examples on `device`; normalisation computed from them unless given.

    `pixels` (uint8 (N, H, W, C) in row order) skips decoding: callers that train many models
    on subsets of one dataset load it once and slice. `in_memory` forces the path (evaluate
    uses the one the model was trained with); None picks it by image size. `training=False`
    skips what only augmentation needs (the crop padding).
    """
    if in_memory is None:
        in_memory = pixels is not None or is_small(manifest)
    if in_memory:
        if pixels is None:
            pixels = images.load_images(manifest, root=root, progress=progress)
        if pixels.shape[0] != manifest.num_rows:
            raise DatasetError(f"{manifest.name}: {pixels.shape[0]} images given for {manifest.num_rows} rows")
        padding = recipe.crop_padding if training and recipe.augment is Augment.crop_flip else 0
        return InMemoryData(pixels, label_array(manifest), device, normalisation, channels_last, padding)
    return StreamedData(manifest, recipe, device, normalisation, channels_last, workers, root, in_channels)
