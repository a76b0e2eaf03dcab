"""`datadiet ingest`: list a dataset into a manifest, one row per image, without decoding it.

Three kinds of SOURCE:

- an **ImageFolder** tree `SOURCE/<class>/<image>`, read exactly as
  `torchvision.datasets.ImageFolder` reads it (sorted class folders, same extensions, same
  row order); a folder with `train/` and `test/` ImageFolder trees inside (the CIFAR-10-JPEG
  layout) is one dataset whose `--split` picks the subtree;
- **CIFAR-10/100 python batches** (`data_batch_1..5`, `test_batch`, `batches.meta` /
  `train`, `test`, `meta`), in the official order;
- a **built-in** dataset shipped inside an installed package: `builtin:digits`
  (scikit-learn's 1,797 8x8 handwritten digits).

Ids are stable strings: the image's path without extension for ImageFolder trees
(`train/airplane/0001`), `<split>/<index in the official order>` for CIFAR batches
(`train/00042`), and the index in scikit-learn's order for digits (`0042`).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from datadiet_cli.data import images, seeds
from datadiet_cli.data.images import ProgressCallback
from datadiet_cli.errors import DatasetError, OptionError
from datadiet_cli.io.lineage import LineageStep
from datadiet_cli.io.manifest import Manifest, new_manifest

# torchvision.datasets.folder.IMG_EXTENSIONS, copied so listing a tree does not import torchvision.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
BUILTIN_PREFIX = "builtin:"
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz")
ACCEPTED_LAYOUTS = (
    "an ImageFolder tree (SOURCE/<class>/<image>), a folder holding train/ and test/ ImageFolder trees, "
    "CIFAR-10/100 python batches (data_batch_1..5 + test_batch + batches.meta, or train + test + meta), "
    f"or builtin:NAME ({', '.join(images.BUILTIN_DATASETS)})"
)
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_PACKAGE_FOLDERS = ("cifar-10-batches-py", "cifar-100-python")


class Split(str, enum.Enum):
    train = "train"
    test = "test"


@dataclass(frozen=True)
class IngestConfig:
    source: str  # the SOURCE argument as given: a directory or builtin:NAME
    split: Split | None = None  # None = train where the source has splits, the whole tree where it has none
    shape_sample: int = 16  # image headers read (spread over the rows) to decide image_shape
    digits_test_every: int = 5  # builtin:digits: every 5th example of each class (in sklearn's order) is test
    per_class: int | None = None  # keep at most this many examples of each class (a smaller "full" dataset); None = all
    seed: int = 0  # which examples --per-class keeps: the same seed gives nested samples as per_class grows


@dataclass(frozen=True)
class Source:
    """A checked SOURCE: which kind it is and where, found without listing it (cheap, fails early)."""

    kind: str  # "imagefolder", "cifar-python" or "builtin"
    root: Path | None  # the dataset root; ids and paths are relative to it (None for builtin)
    split: Split | None  # the split to list; None for a tree without splits and no --split
    tree: Path | None = None  # imagefolder: the folder holding the class folders (root or root/<split>)
    classes: tuple[str, ...] = ()  # imagefolder: class folder names, index = label
    batches: tuple[str, ...] = ()  # cifar-python: batch files of the split, in the official order


@dataclass(frozen=True)
class Listing:
    """What a source holds for one split, before it becomes a manifest."""

    ids: list[str]
    labels: np.ndarray  # int64 class indices
    paths: list[str]  # relative to root (or `container#row`)
    dataset: dict[str, Any]  # the manifest's `dataset` metadata
    shape_sampled: int  # how many images the image_shape was read from
    extra_columns: dict[str, Any]


def ingest_source(
    config: IngestConfig, progress: ProgressCallback | None = None, source: Source | None = None
) -> Manifest:
    """The manifest of `config.source`: one row per image of the chosen split, plus its lineage.

    `source` is `locate_source(config)` when the caller has already checked it.
    """
    listing = list_source(config, source or locate_source(config), progress)
    if config.per_class is not None:
        listing = subsample_listing(
            listing, sample_per_class(listing.ids, listing.labels, config.per_class, config.seed)
        )
    columns = {
        "path": pa.array(listing.paths, type=pa.string()),
        "split": pa.array([listing.dataset["split"]] * len(listing.ids), type=pa.string()),
        **listing.extra_columns,
    }
    manifest = new_manifest(listing.ids, listing.labels, listing.dataset, columns)
    stats = {
        "rows": len(listing.ids),
        "classes": len(listing.dataset["classes"]),
        "per_class_counts": class_count_summary(listing.labels, len(listing.dataset["classes"])),
        "image_shape_sampled": listing.shape_sampled,
    }
    return manifest.with_lineage(LineageStep("ingest", config, [], stats))


def sample_per_class(ids: list[str], labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Rows to keep, ascending: in each class the `per_class` ids with the smallest seeded hash.

    Ranking by a hash of (seed, id) rather than by row position makes the sample independent of
    listing order, and nested: the 500 per class kept with seed 0 are among the 1,000 kept with seed 0.
    """
    if per_class < 1:
        raise OptionError(f"--per-class {per_class}: must be at least 1 (or leave it out to keep every example)")
    keys = np.array([seeds.id_hash(example_id, seed) for example_id in ids], dtype=np.uint64)
    order = np.lexsort((keys, labels))  # by class, then by hash within the class
    sorted_labels = labels[order]
    first_of_class = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank_in_class = np.arange(len(order)) - first_of_class
    return np.sort(order[rank_in_class < per_class])


def subsample_listing(listing: Listing, rows: np.ndarray) -> Listing:
    extra = {name: column.take(pa.array(rows)) for name, column in listing.extra_columns.items()}
    return dataclasses.replace(
        listing,
        ids=[listing.ids[row] for row in rows],
        labels=listing.labels[rows],
        paths=[listing.paths[row] for row in rows],
        extra_columns=extra,
    )


def class_count_summary(labels: np.ndarray, n_classes: int) -> dict[str, float | int]:
    counts = np.bincount(labels, minlength=n_classes) if len(labels) else np.zeros(n_classes, dtype=np.int64)
    return {"min": int(counts.min()), "max": int(counts.max()), "mean": float(counts.mean())}


def list_source(config: IngestConfig, source: Source, progress: ProgressCallback | None = None) -> Listing:
    if source.kind == "imagefolder":
        return list_imagefolder(config, source, progress)
    listing = list_cifar(config, source) if source.kind == "cifar-python" else list_builtin(config, source)
    if progress is not None:
        classes = len(listing.dataset["classes"])
        progress(classes, classes)  # listed in one go
    return listing


# -- recognising the source -------------------------------------------------------------------------------


def locate_source(config: IngestConfig) -> Source:
    """Recognise SOURCE and check the split exists; every error about SOURCE itself is raised here."""
    text = config.source
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX) :]
        if name not in images.BUILTIN_DATASETS:
            raise OptionError(f"unknown built-in dataset '{name}'; known: {', '.join(images.BUILTIN_DATASETS)}")
        return Source("builtin", None, config.split or Split.train)
    directory = Path(text).expanduser()
    if not directory.exists():
        raise DatasetError(f"{text}: no such directory; give an image folder, CIFAR batches, or builtin:digits")
    if not directory.is_dir():
        if text.lower().endswith(ARCHIVE_SUFFIXES):
            raise DatasetError(f"{text}: is an archive; unpack it first (e.g. tar -xzf {text}) and give the folder")
        raise DatasetError(f"{text}: is a file, not a dataset folder; ingest accepts {ACCEPTED_LAYOUTS}")
    directory = directory.resolve()
    cifar_directory = find_cifar_batches(directory)
    if cifar_directory is not None:
        return locate_cifar(cifar_directory, config)
    split_folders = [split for split in Split if has_subfolders(directory / split.value)]
    if split_folders:
        split = config.split or Split.train
        if split not in split_folders:
            found = ", ".join(f"{folder.value}/" for folder in split_folders)
            raise OptionError(
                f"{text}: has no {split.value}/ class folders (found {found}); use --split {split_folders[0].value}"
            )
        # Classes from every split, so a label means the same class in the train and the test manifest
        # (torchvision, reading each subtree alone, would shift indices if a split lacked a class).
        classes = sorted({name for folder in split_folders for name in find_classes(directory / folder.value)})
        return Source("imagefolder", directory, split, directory / split.value, tuple(classes))
    if config.split is Split.test:
        raise OptionError(
            f"{text}: has no test split (no train/ and test/ folders); ingest it without --split, "
            "or point SOURCE at a folder holding train/ and test/"
        )
    classes = find_classes(directory)
    if not classes:
        if any(name.lower().endswith(IMG_EXTENSIONS) for name in os.listdir(directory)):
            raise DatasetError(
                f"{text}: holds images but no class folders; ImageFolder needs SOURCE/<class>/<image> "
                "(move the images into one folder per class)"
            )
        raise DatasetError(f"{text}: not a recognisable dataset; ingest accepts {ACCEPTED_LAYOUTS}")
    return Source("imagefolder", directory, config.split, directory, tuple(classes))


def has_subfolders(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    with os.scandir(directory) as entries:
        return any(entry.is_dir() for entry in entries)


def find_classes(directory: Path) -> list[str]:
    """Class folder names, sorted, exactly as torchvision's find_classes (symlinked folders count)."""
    with os.scandir(directory) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir())


# -- ImageFolder trees ----------------------------------------------------------------------------------


def list_imagefolder(config: IngestConfig, source: Source, progress: ProgressCallback | None) -> Listing:
    """Rows of the ImageFolder tree, in torchvision's order, with ids and paths relative to the root."""
    assert source.root is not None and source.tree is not None
    root, tree, classes = source.root, source.tree, list(source.classes)
    prefix_length = len(str(root)) + 1
    ids: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    empty_classes: list[str] = []
    for class_index, class_name in enumerate(classes):
        class_directory = os.path.join(str(tree), class_name)
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
            progress(1, len(classes))
    if not paths:
        raise DatasetError(
            f"{tree}: no images in its {len(classes)} class folders (looked for {', '.join(IMG_EXTENSIONS)})"
        )
    if empty_classes:
        raise DatasetError(
            f"{tree}: class folder(s) {', '.join(empty_classes[:5])} hold no images "
            f"(looked for {', '.join(IMG_EXTENSIONS)}); remove them or add images"
        )
    check_unique_ids(ids, paths, tree)
    image_shape, sampled = sample_image_shape(root, paths, config.shape_sample)
    dataset = {
        "kind": "imagefolder",
        "name": root.name,
        "root": str(root),
        "classes": classes,
        "split": source.split.value if source.split is not None else None,
        "image_shape": image_shape,
        "source": config.source,
    }
    return Listing(ids, np.asarray(labels, dtype=np.int64), paths, dataset, sampled, {})


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
                channels = max(channels, images.channels_of_mode(image.mode))
        except (UnidentifiedImageError, OSError) as error:
            raise DatasetError(f"{file}: cannot read the image ({error}); remove or replace the file") from None
    if len(sizes) != 1:
        return None, len(picks)
    width, height = sizes.pop()
    return [height, width, channels], len(picks)


# -- CIFAR python batches -----------------------------------------------------------------------------------


def find_cifar_batches(directory: Path) -> Path | None:
    """The folder holding CIFAR python batches: SOURCE itself or its cifar-10-batches-py/cifar-100-python."""
    for candidate in (directory, *(directory / name for name in CIFAR_PACKAGE_FOLDERS)):
        if (candidate / "batches.meta").is_file() or (
            (candidate / "meta").is_file() and ((candidate / "train").is_file() or (candidate / "test").is_file())
        ):
            return candidate
    return None


def locate_cifar(directory: Path, config: IngestConfig) -> Source:
    split = config.split or Split.train
    if (directory / "batches.meta").is_file():
        batches = list(CIFAR10_TRAIN_BATCHES) if split is Split.train else ["test_batch"]
    else:
        batches = [split.value]
    missing = [name for name in batches if not (directory / name).is_file()]
    if missing and split is Split.test:
        raise OptionError(f"{config.source}: has no test split ({missing[0]} is missing); use --split train")
    if missing:
        raise DatasetError(
            f"{directory}: {', '.join(missing)} missing; the CIFAR train split needs every batch file "
            "(re-extract the archive)"
        )
    return Source("cifar-python", directory, split, batches=tuple(batches))


def list_cifar(config: IngestConfig, source: Source) -> Listing:
    assert source.root is not None and source.split is not None
    directory, split = source.root, source.split
    is_cifar10 = (directory / "batches.meta").is_file()
    if is_cifar10:
        meta = images.read_cifar_pickle(directory / "batches.meta")
        class_key, label_key = "label_names", "labels"
    else:
        meta = images.read_cifar_pickle(directory / "meta")
        class_key, label_key = "fine_label_names", "fine_labels"
    if class_key not in meta:
        raise DatasetError(f"{directory}: the meta file has no '{class_key}'; is this CIFAR python data?")
    classes = [name.decode() if isinstance(name, bytes) else str(name) for name in meta[class_key]]
    labels: list[np.ndarray] = []
    coarse: list[np.ndarray] = []
    paths: list[str] = []
    for name in source.batches:
        pixels, batch_labels = images.read_cifar_batch(directory / name)
        if label_key not in batch_labels:
            raise DatasetError(f"{directory / name}: no '{label_key}' entry; is this CIFAR python data?")
        labels.append(batch_labels[label_key])
        if "coarse_labels" in batch_labels:
            coarse.append(batch_labels["coarse_labels"])
        paths.extend(f"{name}{images.ROW_SEPARATOR}{row}" for row in range(len(pixels)))
    all_labels = np.concatenate(labels)
    if len(all_labels) and (all_labels.min() < 0 or all_labels.max() >= len(classes)):
        raise DatasetError(f"{directory}: labels run outside the {len(classes)} classes of the meta file")
    width = max(5, len(str(len(paths) - 1)))
    ids = [f"{split.value}/{index:0{width}d}" for index in range(len(paths))]
    dataset: dict[str, Any] = {
        "kind": "cifar-python",
        "name": "cifar10" if is_cifar10 else "cifar100",
        "root": str(directory),
        "classes": classes,
        "split": split.value,
        "image_shape": [32, 32, 3],
        "source": config.source,
    }
    extra: dict[str, Any] = {}
    if coarse and len(coarse) == len(labels):
        extra["coarse_label"] = pa.array(np.concatenate(coarse), type=pa.int64())
        if "coarse_label_names" in meta:
            dataset["coarse_classes"] = [
                name.decode() if isinstance(name, bytes) else str(name) for name in meta["coarse_label_names"]
            ]
    # The batch format fixes the shape, so no header needs sampling.
    return Listing(ids, all_labels, paths, dataset, 0, extra)


# -- built-in datasets -------------------------------------------------------------------------------------


def digits_split(labels: np.ndarray, test_every: int) -> np.ndarray:
    """True where an example is in the digits test split: every `test_every`-th example of its class.

    Stratified and fixed: within each class, in scikit-learn's order, examples number
    1, 2, 3, ...; those numbered test_every, 2*test_every, ... are test (355 of 1,797 for 5).
    """
    is_test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        is_test[members[test_every - 1 :: test_every]] = True
    return is_test


def list_builtin(config: IngestConfig, source: Source) -> Listing:
    name = config.source[len(BUILTIN_PREFIX) :]
    split = source.split or Split.train
    pixels, labels = images.load_digits_arrays()
    in_split = digits_split(labels, config.digits_test_every) == (split is Split.test)
    rows = np.flatnonzero(in_split)
    dataset = {
        "kind": "builtin",
        "name": name,
        "root": None,
        "classes": [str(digit) for digit in range(10)],
        "split": split.value,
        "image_shape": list(pixels.shape[1:]),
        "source": config.source,
    }
    ids = [f"{row:04d}" for row in rows]
    paths = [f"load_digits{images.ROW_SEPARATOR}{row}" for row in rows]
    return Listing(ids, labels[rows], paths, dataset, 0, {})
