"""The networks `train` can build, all trained from scratch (no downloaded weights, ever).

- `resnet18`, `resnet50`: torchvision's ResNets. For images of at most 64 px they get the
  CIFAR stem (3x3 stride-1 first conv, no max-pool), as in the paper's CIFAR-10 runs: the
  ImageNet stem would shrink a 32x32 image to 8x8 before the first residual block.
- `smallcnn`: four conv-BN-ReLU blocks, for CPU-sized experiments (the `fast` recipe).
- `torchvision:NAME`: any classification model of torchvision.models, e.g. `torchvision:mobilenet_v3_small`.

Imports torch at module level: only `train`/`evaluate` import this module, inside their commands.
The number of input channels comes from the data (1 for grayscale digits) and the number
of classes from the manifest (`dataset.classes`).
"""

from __future__ import annotations

import torch
from torch import nn

from datadiet_cli.errors import OptionError

ARCHITECTURES = ("smallcnn", "resnet18", "resnet50", "torchvision:NAME")
TORCHVISION_PREFIX = "torchvision:"
# Images up to this side length count as "small": CIFAR stem, decoded once and kept in memory.
SMALL_IMAGE_MAX_SIDE = 64


def build_model(arch: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """A freshly initialised classifier: (B, in_channels, H, W) float -> (B, num_classes) logits.

    `image_size` is the longer side of the training images; it picks the ResNet stem and
    how often smallcnn halves its feature maps.
    """
    if num_classes < 2:
        raise OptionError(f"the manifest lists {num_classes} class(es); a classifier needs at least 2")
    check_architecture(arch)
    if arch == "smallcnn":
        return small_cnn(in_channels, num_classes, image_size)
    if arch in ("resnet18", "resnet50"):
        return resnet(arch, num_classes, in_channels, cifar_stem=image_size <= SMALL_IMAGE_MAX_SIDE)
    return torchvision_model(arch.removeprefix(TORCHVISION_PREFIX), num_classes, in_channels)


def check_architecture(arch: str) -> None:
    """Refuse an --arch build_model cannot build, before any pixel is decoded."""
    if arch in ("smallcnn", "resnet18", "resnet50"):
        return
    import torchvision  # on demand: ~1 s of start-up that smallcnn runs do not need

    if not arch.startswith(TORCHVISION_PREFIX):
        raise OptionError(f"--arch {arch}: unknown architecture; use one of {', '.join(ARCHITECTURES)}")
    name = arch.removeprefix(TORCHVISION_PREFIX)
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise OptionError(
            f"--arch torchvision:{name}: not a torchvision classification model "
            f"(e.g. {', '.join(sorted(known)[:6])}, ...; see torchvision.models.list_models())"
        )


def small_cnn(
    in_channels: int, num_classes: int, image_size: int, widths: tuple[int, ...] = (32, 64, 128, 256)
) -> nn.Module:
    """conv3x3-BN-ReLU blocks that double the width and halve the map, until a block has run at 4x4.

    32x32 CIFAR gets all four blocks (32@32, 64@16, 128@8, 256@4 px), ~15 M multiply-adds
    per image (ResNet-18 with the CIFAR stem: ~560 M), enough for ~80% on CIFAR-10 after
    minutes on two CPU cores. 8x8 digits get two (32@8, 64@4), ~0.3 M: more width at 4x4
    would cost 20x the compute for no accuracy on 1,442 training images.
    """
    layers: list[nn.Module] = []
    channels, size = in_channels, image_size
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
        if size <= 4:
            break
        layers.append(nn.MaxPool2d(2))
        size //= 2
    # Global average pool then one linear layer. (A max-pool head diverged at lr 0.2 in the fast recipe.)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def resnet(arch: str, num_classes: int, in_channels: int, cifar_stem: bool) -> nn.Module:
    import torchvision  # on demand: ~1 s of start-up that smallcnn runs do not need

    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def torchvision_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision  # on demand: ~1 s of start-up that smallcnn runs do not need

    options: dict[str, object] = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        options["aux_logits"] = False  # their auxiliary heads return tuples; train uses the main head only
        options["init_weights"] = True
    return TorchvisionClassifier(torchvision.models.get_model(name, **options), in_channels)


class TorchvisionClassifier(nn.Module):
    """A torchvision model that also takes grayscale input (repeated to RGB) and always returns logits."""

    def __init__(self, model: nn.Module, in_channels: int) -> None:
        super().__init__()
        self.model = model
        self.repeat_channels = 3 if in_channels == 1 else 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.repeat_channels != 1:
            images = images.expand(-1, self.repeat_channels, -1, -1)  # (B, 1, H, W) -> (B, 3, H, W), no copy
        output = self.model(images)
        return output.logits if hasattr(output, "logits") else output
