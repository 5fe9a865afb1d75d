"""MLP, LeNet, AlexNet(BN) and VGG as in DC ``networks.py``.

These references hard-code the size of their classifier input, so each accepts only the input shapes the
reference runs (checked at build time; see ``InputRule``): MLP 1×28×28 or 3×32×32; LeNet, AlexNet and VGG
1×28×28 (1-channel inputs get extra padding in the first conv) or C×32×32 with C ≠ 1.
Attribute names equal the reference's, so ``named_parameters()`` / ``state_dict()`` keys match.
``embed(x)`` returns the input of the last linear layer (the reference defines ``embed`` for AlexNet and VGG
as the flattened features; for MLP and LeNet, which have none there, it is the last hidden layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_sdc.models.base import MNIST_OR_CIFAR, InputRule, check_basic_args, check_input, register
from lightning_sdc.models.layers import instance_or_batch_norm


@register("MLP")
class MLP(nn.Module):
    """Flatten → Linear(784 | 3072, 128) → ReLU → Linear(128, 128) → ReLU → Linear(128, classes)."""

    RULES = (InputRule((28, 28), channels=1), InputRule((32, 32), channels=3))

    def __init__(self, channels: int, num_classes: int, im_size: Sequence[int] = (32, 32)) -> None:
        super().__init__()
        h, w = check_basic_args("MLP", channels, num_classes, im_size)
        check_input("MLP", channels, (h, w), self.RULES, "The reference MLP's first layer takes 784 or 3072 inputs.")
        self.fc_1 = nn.Linear(channels * h * w, 128)
        self.fc_2 = nn.Linear(128, 128)
        self.fc_3 = nn.Linear(128, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return F.relu(self.fc_2(F.relu(self.fc_1(x.flatten(1)))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_3(self.embed(x))


@register("LeNet")
class LeNet(nn.Module):
    """Conv5(6, pad 2 if 1 channel) → ReLU → MaxPool2 → Conv5(16) → ReLU → MaxPool2 → 400 → 120 → 84 → classes."""

    def __init__(self, channels: int, num_classes: int, im_size: Sequence[int] = (32, 32)) -> None:
        super().__init__()
        check_input("LeNet", channels, check_basic_args("LeNet", channels, num_classes, im_size), MNIST_OR_CIFAR,
                    "The reference LeNet's first linear layer takes 16·5·5 features.")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=2 if channels == 1 else 0),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.fc_1 = nn.Linear(16 * 5 * 5, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return F.relu(self.fc_2(F.relu(self.fc_1(self.features(x).flatten(1)))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_3(self.embed(x))


class AlexNet(nn.Module):
    """Five convs (128, 192, 256, 192, 192; the first pads 4 for 1-channel inputs, else 2) with ReLU and three
    2×2 max-pools, then ``fc`` on 192·4·4 features. ``batchnorm=True`` is DC's AlexNetBN (BN after each conv)."""

    def __init__(
        self, channels: int, num_classes: int, im_size: Sequence[int] = (32, 32), *, batchnorm: bool = False
    ) -> None:
        super().__init__()
        name = "AlexNetBN" if batchnorm else "AlexNet"
        check_input(name, channels, check_basic_args(name, channels, num_classes, im_size), MNIST_OR_CIFAR,
                    "The reference AlexNet's classifier takes 192·4·4 features.")
        # (out channels, kernel, padding, pool after)
        plan = [(128, 5, 4 if channels == 1 else 2, True), (192, 5, 2, True), (256, 3, 1, False),
                (192, 3, 1, False), (192, 3, 1, True)]
        layers: list[nn.Module] = []
        in_ch = channels
        for out_ch, k, pad, pool in plan:
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=k, stride=1, padding=pad))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=True))
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(192 * 4 * 4, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.embed(x))


register("AlexNet")(AlexNet)


@register("AlexNetBN")
def alexnet_bn(channels: int, num_classes: int, im_size: Sequence[int] = (32, 32)) -> AlexNet:
    """DC ``networks.py:AlexNetBN``."""
    return AlexNet(channels, num_classes, im_size, batchnorm=True)


VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "VGG11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "VGG13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "VGG16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "VGG19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """DC ``networks.py:VGG``: each number is Conv3×3 (padding 3 for the first conv of a 1-channel input, else 1)
    → norm → ReLU, each ``M`` a 2×2 max-pool, then ``classifier = Linear(512, classes)``. Norm is
    GroupNorm(C, C) for ``"instancenorm"`` (the default) and BatchNorm2d otherwise. The reference's trailing
    ``AvgPool2d(kernel_size=1, stride=1)`` is the identity and is left out (it holds no parameters)."""

    def __init__(
        self, config: str, channels: int, num_classes: int, im_size: Sequence[int] = (32, 32), *,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        if config not in VGG_CONFIGS:
            raise ValueError(f"unknown VGG config {config!r}; allowed: {', '.join(VGG_CONFIGS)}")
        if norm not in ("instancenorm", "batchnorm"):
            raise ValueError(f"{config}: unknown norm {norm!r}; allowed: instancenorm, batchnorm")
        name = config + ("BN" if norm == "batchnorm" else "")
        check_input(name, channels, check_basic_args(name, channels, num_classes, im_size), MNIST_OR_CIFAR,
                    "The reference VGG's classifier takes 512 features (a 1×1 map after five 2×2 pools).")
        layers: list[nn.Module] = []
        in_ch = channels
        for i, v in enumerate(VGG_CONFIGS[config]):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out_ch = int(v)
            pad = 3 if channels == 1 and i == 0 else 1
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=pad), instance_or_batch_norm(norm, out_ch),
                       nn.ReLU(inplace=True)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


def _register_vgg(config: str, norm: str, *aliases: str) -> None:
    name = config + ("BN" if norm == "batchnorm" else "")

    def factory(channels: int, num_classes: int, im_size: Sequence[int] = (32, 32)) -> VGG:
        return VGG(config, channels, num_classes, im_size, norm=norm)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"DC ``networks.py:{name}`` (VGG {config!r}, {norm})."
    register(name, *aliases)(factory)


for _cfg in VGG_CONFIGS:
    _dash = f"VGG-{_cfg[3:]}"
    _register_vgg(_cfg, "instancenorm", _dash)
    _register_vgg(_cfg, "batchnorm", f"{_dash}-BN")

__all__ = ["MLP", "LeNet", "AlexNet", "VGG", "VGG_CONFIGS"]
