"""Shared fixtures: an isolated pixel cache for every test, tiny image trees, the real CIFAR-10 JPEGs;
and the `gpu` marker's skip where torch sees no CUDA device."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
CIFAR10_TARBALL = SHARED / "data" / "cifar10-jpg.tar.gz"
# Outside the repository and outside $DATADIET_CACHE (which tests point at tmp dirs): unpacked once per machine.
CIFAR10_UNPACKED = Path.home() / ".cache" / "datadiet" / "cifar10"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every `gpu`-marked test when torch sees no CUDA device (torch is imported only if one is collected)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: torch {torch.__version__} sees none (torch.cuda.is_available())")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_pixel_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $DATADIET_CACHE at a fresh folder, so no test reads or fills the real ~/.cache/datadiet."""
    cache = tmp_path_factory.mktemp("datadiet-cache")
    monkeypatch.setenv("DATADIET_CACHE", str(cache))
    return cache


def pattern_pixels(seed: int, height: int, width: int, channels: int) -> np.ndarray:
    """Distinct, reproducible uint8 pixels for test image number `seed`."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, channels), dtype=np.uint8)


ImageTreeMaker = Callable[[Path, Mapping[str, tuple[int, int, int]]], dict[str, np.ndarray]]


@pytest.fixture
def make_image_tree() -> ImageTreeMaker:
    """Write lossless PNGs: {"cat/0001.png": (H, W, C)} under root; returns the pixels written per path."""

    def make(root: Path, files: Mapping[str, tuple[int, int, int]]) -> dict[str, np.ndarray]:
        written: dict[str, np.ndarray] = {}
        for seed, (relative, (height, width, channels)) in enumerate(files.items()):
            pixels = pattern_pixels(seed, height, width, channels)
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(target, format="PNG")
            written[relative] = pixels
        return written

    return make


LEARNABLE_CLASSES = ("ant", "bee", "cow")


def write_learnable_tree(root: Path, per_split: Mapping[str, int], size: int = 8) -> None:
    """ImageFolder trees (root/<split>/<class>/NNN.png) of RGB noise whose brightness band is the class:
    a small CNN separates the classes within a few epochs, so a run that learns nothing is a bug."""
    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for label, name in enumerate(LEARNABLE_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = rng.integers(0, 80, size=(size, size, 3)) + 80 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index:03d}.png")


@pytest.fixture(scope="session")
def learnable_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ (20 images per class) and test/ (6 per class) of `write_learnable_tree`, 8x8 pixels."""
    root = tmp_path_factory.mktemp("learnable")
    write_learnable_tree(root, {"train": 20, "test": 6})
    return root


@pytest.fixture(scope="session")
def cifar10_root() -> Iterator[Path]:
    """The real CIFAR-10 JPEG tree (cifar10/{train,test}/<class>/<NNNN>.jpg), unpacked from ../shared once."""
    if not _is_unpacked(CIFAR10_UNPACKED):
        if not CIFAR10_TARBALL.is_file():
            pytest.skip(f"needs the real CIFAR-10 JPEGs: {CIFAR10_TARBALL} is absent (../shared/data is not mounted)")
        if CIFAR10_UNPACKED.exists():
            pytest.fail(f"{CIFAR10_UNPACKED} is an incomplete CIFAR-10 copy; delete it and the tests unpack it again")
        _unpack(CIFAR10_TARBALL, CIFAR10_UNPACKED)
    yield CIFAR10_UNPACKED


def _is_unpacked(root: Path) -> bool:
    return all((root / split).is_dir() and len(os.listdir(root / split)) == 10 for split in ("train", "test"))


def _unpack(tarball: Path, target: Path) -> None:
    """Extract beside the target and rename into place, so an interrupted unpack is never mistaken for data."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cifar10-unpack-", dir=target.parent))
    try:
        with tarfile.open(tarball) as archive:
            archive.extractall(staging, filter="data")
        unpacked = staging / "cifar10"
        if not _is_unpacked(unpacked):
            pytest.fail(f"{tarball} did not contain cifar10/train and cifar10/test with 10 classes each")
        os.replace(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# The shared 2-rank job (tests/ranks.py), started once collection has ended.
_shared_job: list[Any] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the shared 2-rank job now if a selected test needs it: it then runs while the in-process
    tests before that one do (most of them use one core of two)."""
    if any("shared_ranks" in getattr(item, "fixturenames", ()) for item in session.items):
        from ranks import PendingShared

        _shared_job.append(PendingShared(Path(tempfile.mkdtemp(prefix="datadiet-ranks-"))))


def pytest_sessionfinish(session: pytest.Session) -> None:
    for pending in _shared_job:
        pending.job.stop()
        shutil.rmtree(pending.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_ranks() -> Any:
    """Every test module's shared commands (tests/ranks.py: share) run in one real 2-rank gloo job."""
    return _shared_job[0].wait()
