"""ImageFolder trees: `SOURCE/<class>/<image>`, read exactly as `torchvision.datasets.ImageFolder` reads them.

Sorted class folders, the same extensions, the same row order. A folder holding `train/` and
`test/` trees (the CIFAR-10-JPEG layout) is one dataset whose `--split` picks the subtree. Ids
are the image's path without extension, relative to the dataset root (`train/airplane/0001`);
paths are relative to the root, so a moved dataset decodes with `--root`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from datadiet_cli.data.sources.base import (
    FileStamp,
    Listing,
    Location,
    ProgressCallback,
    RowDecoder,
    Split,
    channels_of_mode,
    pil_mode_for_channels,
)
from datadiet_cli.errors import DatasetError, OptionError

if TYPE_CHECKING:
    from datadiet_cli.data.ingest import IngestConfig

# torchvision.datasets.folder.IMG_EXTENSIONS, copied so listing a tree does not import torchvision.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageTree:
    """An ImageFolder tree found by `locate`; its class folders are known, its images not yet listed."""

    root: Path  # the dataset root; ids and paths are relative to it
    tree: Path  # the folder holding the class folders: root, or root/<split>
    split: Split | None  # None for a tree without splits listed without --split
    classes: tuple[str, ...]  # class folder names of every split, sorted; index = label

    def list(self, config: IngestConfig, progress: ProgressCallback | None) -> Listing:
        """Rows in torchvision's order; `progress` advances by one class folder at a time."""
        ids, paths, labels = self.walk(progress)
        check_unique_ids(ids, paths, self.tree)
        image_shape, sampled = sample_image_shape(self.root, paths, config.shape_sample)
        dataset = {
            "kind": ImageFolder.kind,
            "name": self.root.name,
            "root": str(self.root),
            "classes": list(self.classes),
            "split": self.split.value if self.split is not None else None,
            "image_shape": image_shape,
            "source": config.source,
        }
        return Listing(ids, np.asarray(labels, dtype=np.int64), paths, dataset, sampled, {})

    def walk(self, progress: ProgressCallback | None) -> tuple[list[str], list[str], list[int]]:
        """Ids, root-relative paths and labels of every image, refusing class folders without any."""
        prefix_length = len(str(self.root)) + 1
        ids: list[str] = []
        paths: list[str] = []
        labels: list[int] = []
        empty_classes: list[str] = []
        for class_index, class_name in enumerate(self.classes):
            class_directory = os.path.join(str(self.tree), class_name)
            found = 0
            # sorted(os.walk(...)) then sorted names: torchvision's make_dataset order, so row i is ImageFolder's sample i.
            for directory, _, names in sorted(os.walk(class_directory, followlinks=True)):
                for name in sorted(names):
                    if not name.lower().endswith(IMG_EXTENSIONS):
                        continue
                    relative = os.path.join(directory, name)[prefix_length:]
                    if os.sep != "/":
                        relative = relative.replace(os.sep, "/")
                    paths.append(relative)
                    ids.append(os.path.splitext(relative)[0])
                    found += 1
            labels.extend([class_index] * found)
            if found == 0 and os.path.isdir(class_directory):
                empty_classes.append(class_name)  # a class missing from this split altogether is fine
            if progress is not None:
                progress(1, len(self.classes))
        if not paths:
            raise DatasetError(
                f"{self.tree}: no images in its {len(self.classes)} class folders "
                f"(looked for {', '.join(IMG_EXTENSIONS)})"
            )
        if empty_classes:
            raise DatasetError(
                f"{self.tree}: class folder(s) {', '.join(empty_classes[:5])} hold no images "
                f"(looked for {', '.join(IMG_EXTENSIONS)}); remove them or add images"
            )
        return ids, paths, labels


class ImageFolder:
    """Image files under a dataset root, one folder per class (the fallback: any folder of folders)."""

    kind: str = "imagefolder"
    prefix: str | None = None
    claims_any_folder: bool = True
    has_root: bool = True
    short_name: str = "an image folder"
    layout: str = "an ImageFolder tree (SOURCE/<class>/<image>), a folder holding train/ and test/ ImageFolder trees"

    def locate(self, config: IngestConfig, folder: Path | None) -> ImageTree | None:
        if folder is None:
            return None
        split_folders = [split for split in Split if has_subfolders(folder / split.value)]
        if split_folders:
            split = config.split or Split.train
            if split not in split_folders:
                found = ", ".join(f"{name.value}/" for name in split_folders)
                raise OptionError(
                    f"{config.source}: has no {split.value}/ class folders (found {found}); "
                    f"use --split {split_folders[0].value}"
                )
            # Classes from every split, so a label means the same class in the train and the test manifest
            # (torchvision, reading each subtree alone, would shift indices if a split lacked a class).
            classes = sorted(
                {name for split_folder in split_folders for name in find_classes(folder / split_folder.value)}
            )
            return ImageTree(folder, folder / split.value, split, tuple(classes))
        if config.split is Split.test:
            raise OptionError(
                f"{config.source}: has no test split (no train/ and test/ folders); ingest it without --split, "
                "or point SOURCE at a folder holding train/ and test/"
            )
        classes = find_classes(folder)
        if classes:
            return ImageTree(folder, folder, config.split, tuple(classes))
        if any(name.lower().endswith(IMG_EXTENSIONS) for name in os.listdir(folder)):
            raise DatasetError(
                f"{config.source}: holds images but no class folders; ImageFolder needs SOURCE/<class>/<image> "
                "(move the images into one folder per class)"
            )
        return None

    def decoder(self, location: Location, shape: tuple[int, int, int]) -> RowDecoder:
        height, width, channels = shape
        mode = pil_mode_for_channels(channels)
        root = location.root
        assert root is not None  # images.dataset_root gives every source with has_root a root
        root_text = str(root)

        def decode(path: str) -> np.ndarray:
            file = os.path.join(root_text, path)
            image = read_image_file(file, mode, root, location.manifest)
            if image.size != (width, height):
                raise DatasetError(
                    f"{file}: image is {image.size[1]}x{image.size[0]} but {location.manifest} says all are "
                    f"{height}x{width}; resize the dataset to one size and re-run `datadiet ingest`"
                )
            return np.asarray(image).reshape(height, width, channels)

        return decode

    def file_stamps(self, location: Location, paths: Sequence[str]) -> list[FileStamp]:
        """One stat() per image file, in row order."""
        root = location.root
        assert root is not None
        root_text = str(root)
        stamps: list[FileStamp] = []
        for path in paths:
            file = os.path.join(root_text, path)
            try:
                info = os.stat(file)
            except FileNotFoundError:
                raise missing_image(file, root, location.manifest) from None
            except OSError as error:
                raise DatasetError(
                    f"{file}: cannot read the image ({error.strerror}); remove or replace the file"
                ) from None
            stamps.append((path, info.st_size, info.st_mtime_ns))
        return stamps

    def open_image(self, location: Location, path: str) -> Image.Image:
        shape = location.dataset.get("image_shape")
        mode = pil_mode_for_channels(int(shape[2])) if shape else None
        root = location.root
        assert root is not None
        return read_image_file(os.path.join(str(root), path), mode, root, location.manifest)


def has_subfolders(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    with os.scandir(directory) as entries:
        return any(entry.is_dir() for entry in entries)


def find_classes(directory: Path) -> list[str]:
    """Class folder names, sorted, exactly as torchvision's find_classes (symlinked folders count)."""
    with os.scandir(directory) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir())


def check_unique_ids(ids: list[str], paths: list[str], tree: Path) -> None:
    if len(set(ids)) == len(ids):
        return
    seen: dict[str, str] = {}
    for example_id, path in zip(ids, paths, strict=True):
        if example_id in seen:
            raise DatasetError(
                f"{tree}: {seen[example_id]} and {path} would share the id '{example_id}' "
                "(ids are paths without extension); rename one of them"
            )
        seen[example_id] = path


def sample_image_shape(root: Path, paths: list[str], sample_size: int) -> tuple[list[int] | None, int]:
    """[H, W, C] from the headers of up to `sample_size` images spread over the rows; None if sizes differ.

    Only headers are read (PIL opens lazily). C is 3 if any sampled image is colour: load_images
    converts every image to the sampled mode, so a stray grayscale JPEG joins an RGB dataset.
    """
    picks = np.unique(np.linspace(0, len(paths) - 1, num=min(sample_size, len(paths))).round().astype(int))
    sizes: set[tuple[int, int]] = set()
    channels = 1
    for index in picks:
        file = root / paths[index]
        try:
            with Image.open(file) as image:
                sizes.add(image.size)
                channels = max(channels, channels_of_mode(image.mode))
        except (UnidentifiedImageError, OSError) as error:
            raise DatasetError(f"{file}: cannot read the image ({error}); remove or replace the file") from None
    if len(sizes) != 1:
        return None, len(picks)
    width, height = sizes.pop()
    return [height, width, channels], len(picks)


def read_image_file(file: str, mode: str | None, root: Path, manifest: str) -> Image.Image:
    """Decode one file into `mode` (or L/RGB by its own mode when None), with one-line errors."""
    try:
        with Image.open(file) as image:
            target = mode or pil_mode_for_channels(channels_of_mode(image.mode))
            if image.mode.startswith("I;16") and target == "L":
                # convert("L") would clip 16-bit values at 255; scale 0..65535 to 0..255 instead.
                return Image.fromarray(sixteen_bit_to_uint8(np.asarray(image)))
            # convert() on an image already in `target` still copies, which loads it before the file closes.
            return image.convert(target)
    except FileNotFoundError:
        raise missing_image(file, root, manifest) from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DatasetError(f"{file}: cannot decode the image ({error}); remove or replace the file") from None


def missing_image(file: str, root: Path, manifest: str) -> DatasetError:
    return DatasetError(
        f"{file}: no such image (dataset root {root} from {manifest}); "
        "if the dataset has moved, pass --root with its new location"
    )


def sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, round half up (65535 / 257 = 255 exactly)."""
    return np.floor(values.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
