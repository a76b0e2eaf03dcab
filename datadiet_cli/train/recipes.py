"""What `train` trains: recipes with the paper's settings, the run's config, and the step schedule.

Pure Python (no torch), so the CLI can build and validate a config before importing torch.

The paper's App. B settings are the `cifar` and `imagenet` recipes. The learning-rate
schedule is stated in fractions of the run (epoch 60 of 200 is 0.3), so a shorter run
(`--epochs 20`) or a longer one (`--matched-iterations 1`) keeps the schedule's shape.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datadiet_cli.errors import OptionError


class Augment(str, enum.Enum):
    crop_flip = "crop-flip"  # random crop of the image zero-padded by crop_padding px + horizontal flip (CIFAR)
    resized_crop_flip = "resized-crop-flip"  # random-resized-crop (8-100% area, 3/4-4/3 aspect) + flip (ImageNet)
    none = "none"


class Precision(str, enum.Enum):
    auto = "auto"  # bf16 autocast on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX); fp32 elsewhere
    bf16 = "bf16"
    fp32 = "fp32"


@dataclass(frozen=True)
class Recipe:
    name: str  # cifar, imagenet or fast
    arch: str  # default network (see models.ARCHITECTURES)
    epochs: int  # passes over the kept data (before --matched-iterations stretches the run)
    batch_size: int  # images per SGD step
    lr: float  # peak learning rate; per 256 images when lr_per_256
    lr_per_256: bool  # lr scales linearly with the batch: lr * batch_size / 256 (the paper's ImageNet rule)
    momentum: float  # SGD momentum
    nesterov: bool  # Nesterov momentum (the paper uses it for both datasets)
    weight_decay: float  # L2 penalty on every parameter
    milestones: tuple[float, ...]  # fractions of the run after which lr *= gamma
    gamma: float  # lr decay factor at each milestone
    warmup: float  # fraction of the run with lr rising linearly from ~0 (the paper: none)
    label_smoothing: float  # cross-entropy label smoothing (the paper: none)
    augment: Augment  # training augmentation; evaluation never augments
    crop_padding: int = 4  # crop-flip: zero padding on each side before the random crop
    image_size: int = 224  # large (streamed) images: training crop side and evaluation center-crop side
    eval_resize: int = 256  # large images at evaluation: shorter side resized to this, then center-cropped


RECIPES: dict[str, Recipe] = {
    # App. B, CIFAR-10: ResNet-18, SGD lr 0.1, Nesterov 0.9, wd 5e-4, batch 128, 200 epochs,
    # lr x0.2 after epochs 60, 120 and 160; random crop (pad 4) + flip.
    "cifar": Recipe(
        name="cifar",
        arch="resnet18",
        epochs=200,
        batch_size=128,
        lr=0.1,
        lr_per_256=False,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        milestones=(60 / 200, 120 / 200, 160 / 200),
        gamma=0.2,
        warmup=0.0,
        label_smoothing=0.0,
        augment=Augment.crop_flip,
    ),
    # App. B, ImageNet: ResNet-50, lr 0.1 per 256 images, Nesterov 0.9, wd 1e-3, 105 epochs,
    # lr x0.1 after epochs 30, 60, 90 and 100; random-resized-crop 224 + flip, eval resize 256 / crop 224.
    "imagenet": Recipe(
        name="imagenet",
        arch="resnet50",
        epochs=105,
        batch_size=256,
        lr=0.1,
        lr_per_256=True,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-3,
        milestones=(30 / 105, 60 / 105, 90 / 105, 100 / 105),
        gamma=0.1,
        warmup=0.0,
        label_smoothing=0.0,
        augment=Augment.resized_crop_flip,
    ),
    # Not from the paper: a short schedule for CPU-sized experiments (tests, the README demo,
    # quick pruning sweeps). Larger batches and lr with a short warmup converge in few epochs.
    "fast": Recipe(
        name="fast",
        arch="smallcnn",
        epochs=16,
        batch_size=256,
        lr=0.2,
        lr_per_256=False,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        milestones=(0.5, 0.75),
        gamma=0.2,
        warmup=0.1,
        label_smoothing=0.0,
        augment=Augment.crop_flip,
    ),
}


class RecipeName(str, enum.Enum):
    """The names `--recipe` takes: one per entry of RECIPES."""

    cifar = "cifar"
    imagenet = "imagenet"
    fast = "fast"


assert [name.value for name in RecipeName] == list(RECIPES), "RecipeName must list RECIPES in order"


def recipe_with(name: str | RecipeName, **overrides: Any) -> Recipe:
    """A named recipe with the given fields replaced; None values keep the recipe's default."""
    if name not in RECIPES:  # a RecipeName equals its value, so both spellings look up alike
        raise OptionError(f"--recipe {name}: unknown recipe; use one of {', '.join(RECIPES)}")
    changes = {key: value for key, value in overrides.items() if value is not None}
    recipe = dataclasses.replace(RECIPES[name], **changes)
    check_recipe(recipe)
    return recipe


def recipe_from_json(values: dict[str, Any]) -> Recipe:
    """A Recipe from its config.json form (lists back to tuples, strings back to enums)."""
    return Recipe(**{**values, "milestones": tuple(values["milestones"]), "augment": Augment(values["augment"])})


def check_recipe(recipe: Recipe) -> None:
    """Refuse settings no run can use (NaN, infinities, values outside their range), naming the option."""
    at_least("--epochs", recipe.epochs, 1)
    at_least("--batch-size", recipe.batch_size, 1)
    if not (math.isfinite(recipe.lr) and recipe.lr > 0):
        raise OptionError(f"--lr {recipe.lr}: must be a finite number > 0 (the paper: 0.1)")
    in_range("--momentum", recipe.momentum, "[0, 1)", "the paper: 0.9")
    if recipe.nesterov and recipe.momentum == 0:
        raise OptionError(
            "--momentum 0.0: Nesterov momentum needs a momentum in (0, 1); pass --no-nesterov to train without it"
        )
    if not (math.isfinite(recipe.weight_decay) and recipe.weight_decay >= 0):
        raise OptionError(
            f"--weight-decay {recipe.weight_decay}: must be a finite number >= 0 "
            "(the paper: 5e-4 on CIFAR-10, 1e-3 on ImageNet)"
        )
    in_range("--gamma", recipe.gamma, "(0, 1]", "the factor lr is multiplied by at each milestone")
    in_range("--warmup", recipe.warmup, "[0, 1)", "a fraction of the run")
    in_range("--label-smoothing", recipe.label_smoothing, "[0, 1)", "0 is none")
    for milestone in recipe.milestones:
        if not 0 < milestone < 1:
            raise OptionError(
                f"--milestones {milestone} is outside (0, 1); milestones are fractions of the run, "
                "e.g. 0.3,0.6,0.8 for epochs 60,120,160 of 200"
            )
    at_least("--crop-padding", recipe.crop_padding, 0)
    at_least("--image-size", recipe.image_size, 1)
    if not (isinstance(recipe.eval_resize, int) and recipe.eval_resize >= recipe.image_size):
        raise OptionError(
            f"--eval-resize {recipe.eval_resize}: must be a whole number >= --image-size {recipe.image_size} "
            "(evaluation crops the image size out of the resized image)"
        )


def at_least(option: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise OptionError(f"{option} {value}: must be a whole number of at least {low}")


def in_range(option: str, value: float, interval: str, hint: str) -> None:
    """`interval` like "[0, 1)": brackets are closed ends, parentheses open ones; NaN and inf never fit."""
    low, high = (float(end) for end in interval[1:-1].split(","))
    fits = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if fits:
        fits = (low <= value if interval[0] == "[" else low < value) and (
            value <= high if interval[-1] == "]" else value < high
        )
    if not fits:
        raise OptionError(f"{option} {value}: must be a finite number in {interval} ({hint})")


def parse_milestones(text: str | None) -> tuple[float, ...] | None:
    """`0.3,0.6,0.8` -> (0.3, 0.6, 0.8); `none` -> (); None -> None (keep the recipe's)."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(sorted(float(part) for part in text.split(",")))
    except ValueError:
        raise OptionError(
            f"--milestones {text}: expected comma-separated fractions of the run, e.g. 0.5,0.75"
        ) from None


@dataclass(frozen=True)
class TrainConfig:
    recipe: Recipe  # the optimisation and augmentation settings
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    seed: int = 0  # initialisation, example order and augmentation; same seed on the CPU = same weights
    matched_iterations: float = (
        0.0  # App. J: 0 = the recipe's epochs over the kept data, 1 = as many steps as the full data
    )
    precision: Precision = Precision.auto  # autocast dtype of forward passes
    channels_last: bool | None = None  # NHWC memory layout; None = on CUDA and CPU (faster convolutions there)
    record_dynamics: bool = (
        False  # write dynamics.parquet (per example and epoch: loss, correct, p_label, el2n, margin)
    )
    dynamics_epochs: tuple[int, ...] | None = (
        None  # epochs ending with an eval pass over the kept data; None = the last
    )
    stop_after: int | None = (
        None  # end after this many epochs of the planned schedule (early-training probes); None = all
    )
    workers: int = 4  # DataLoader workers for large (streamed) images; small images need none
    sync_bn: bool = False  # under torchrun: BatchNorm statistics of the global batch, not of each rank's part
    root: Path | None = None  # dataset root overriding the one in the manifest


def check_config(config: TrainConfig) -> None:
    """check_recipe, and the run's own settings: refused before any pixel is decoded or file written."""
    check_recipe(config.recipe)
    in_range(
        "--matched-iterations",
        config.matched_iterations,
        "[0, 1]",
        "0: the recipe's epochs over the kept data, 1: the full data's steps",
    )
    if config.stop_after is not None:
        at_least("--stop-after", config.stop_after, 1)
    at_least("--workers", config.workers, 0)


def parse_dynamics_epochs(text: str | None) -> tuple[int, ...] | None:
    """`5,10` -> (5, 10); `none` -> () (only training-time dynamics); `last`/None -> None (the final epoch)."""
    if text is None or text.strip().lower() == "last":
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        epochs = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise OptionError(f"--dynamics-epochs {text}: expected epochs like 5,10 (or 'last' or 'none')") from None
    if any(epoch < 1 for epoch in epochs):
        raise OptionError(f"--dynamics-epochs {text}: epochs count from 1")
    return epochs


# -- the step schedule ------------------------------------------------------------------------


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return math.ceil(n_examples / batch_size)


def total_steps(n_kept: int, n_full: int, batch_size: int, epochs: int, matched_iterations: float) -> int:
    """SGD steps of the run (the paper's App. J).

    M=0: `epochs` passes over the kept data, epochs*ceil(n/b) steps; M=1: as many steps as
    `epochs` passes over the full data, epochs*ceil(N/b); linear in between, rounded.
    """
    if not 0.0 <= matched_iterations <= 1.0:
        raise OptionError(f"--matched-iterations {matched_iterations} is outside [0, 1]")
    if n_full < n_kept:
        raise OptionError(f"the full dataset size {n_full} is smaller than the kept {n_kept} rows")
    kept_steps = epochs * steps_per_epoch(n_kept, batch_size)
    full_steps = epochs * steps_per_epoch(n_full, batch_size)
    return kept_steps + math.floor(matched_iterations * (full_steps - kept_steps) + 0.5)


def base_learning_rate(recipe: Recipe) -> float:
    return recipe.lr * recipe.batch_size / 256 if recipe.lr_per_256 else recipe.lr


def milestone_steps(recipe: Recipe, steps: int) -> list[int]:
    """The first step (0-based) with each decayed lr: round(fraction * steps)."""
    return [math.floor(fraction * steps + 0.5) for fraction in recipe.milestones]


def learning_rate(recipe: Recipe, step: int, steps: int) -> float:
    """lr of 0-based `step` of a `steps`-long run: linear warmup, then x gamma at every milestone passed.

    cifar over 50,000 images (391 steps/epoch, 78,200 steps): 0.1 until step 23,459, 0.02 from
    23,460 (the first step of epoch 61), 0.004 from 46,920, 0.0008 from 62,560.
    """
    lr = base_learning_rate(recipe)
    warmup_steps = math.floor(recipe.warmup * steps + 0.5)
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    passed = sum(step >= boundary for boundary in milestone_steps(recipe, steps))
    return lr * recipe.gamma**passed
