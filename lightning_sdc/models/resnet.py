"""CIFAR-style ResNets as in DC ``networks.py`` (kuangliu lineage).

``ResNet`` (``ResNet18``, ``ResNet18BN``, ``ResNet34``, …): stem Conv3×3(64, stride 1, no bias) + norm + ReLU,
four stages of BasicBlocks (64/128/256/512 planes, first strides 1/2/2/2), ``avg_pool2d(4)``, then
``classifier = Linear(512, classes)``. Accepts C×28×28 and C×32×32 (both end in a 4×4 map → 1×1 → 512).

``ResNet_AP`` (``ResNet18BN_AP``, ``ResNet18_AP``, …): every strided conv becomes a stride-1 conv followed by
a 2×2 average pool, the projection shortcut is Conv1×1 → AvgPool2d(2) → norm, there is no final pooling, and
the classifier takes 512·3·3 features for 1-channel inputs (28 → 14 → 7 → 3) else 512·4·4 — so it accepts
1×28×28 or C×32×32 with C ≠ 1, as the reference.

Norm: ``"instancenorm"`` = GroupNorm(C, C, affine) (the default of ``ResNet18``), ``"batchnorm"`` = BatchNorm2d.
Attribute names equal the reference's (``conv1``, ``bn1``, ``layer<k>.<i>.conv1`` …, ``shortcut.<j>``,
``classifier``). The residual sum is written out of place (the reference adds in place; same values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_sdc.checks import check_choices
from lightning_sdc.models.base import MNIST_OR_CIFAR, InputRule, check_basic_args, check_input, register
from lightning_sdc.models.layers import instance_or_batch_norm

RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
STAGE_PLANES = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """Conv3×3(stride) → norm → ReLU → Conv3×3 → norm, plus the shortcut, then ReLU (DC ``BasicBlock``).

    With ``avg_pool=True`` it is DC ``BasicBlock_AP``: the strided conv is replaced by a stride-1 conv and a
    2×2 average pool after its ReLU, and the projection shortcut pools between its conv and norm."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, avg_pool: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.avg_pool = avg_pool
        conv_stride = 1 if avg_pool else stride
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = instance_or_batch_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = instance_or_batch_norm(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            proj: list[nn.Module] = [nn.Conv2d(in_planes, planes, kernel_size=1, stride=conv_stride, bias=False)]
            if avg_pool:
                proj.append(nn.AvgPool2d(kernel_size=2, stride=2))
            proj.append(instance_or_batch_norm(norm, planes))
            self.shortcut = nn.Sequential(*proj)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.avg_pool and self.stride != 1:
            out = F.avg_pool2d(out, kernel_size=2, stride=2)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """DC ``networks.py:ResNet`` (``avg_pool=False``) or ``ResNet_AP`` (``avg_pool=True``) with BasicBlocks."""

    def __init__(self, channels: int, num_classes: int, im_size: Sequence[int] = (32, 32), *,
                 depth: Literal[18, 34] = 18, norm: str = "instancenorm", avg_pool: bool = False) -> None:
        super().__init__()
        check_choices(ResNet, {"depth": depth})
        if norm not in ("instancenorm", "batchnorm"):
            raise ValueError(f"ResNet{depth}: unknown norm {norm!r}; allowed: instancenorm, batchnorm")
        name = f"ResNet{depth}{'BN' if norm == 'batchnorm' else ''}{'_AP' if avg_pool else ''}"
        hw = check_basic_args(name, channels, num_classes, im_size)
        if avg_pool:
            check_input(name, channels, hw, MNIST_OR_CIFAR,
                        "ResNet_AP's classifier takes 512·3·3 features for 1 channel, else 512·4·4.")
        else:
            check_input(name, channels, hw, (InputRule((28, 28)), InputRule((32, 32))),
                        "The reference ResNet pools a 4×4 map to 1×1 before its 512-input classifier.")
        self.avg_pool = avg_pool
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = instance_or_batch_norm(norm, 64)
        in_planes = 64
        for k, (planes, blocks) in enumerate(zip(STAGE_PLANES, RESNET_BLOCKS[depth], strict=True)):
            stage = []
            for i in range(blocks):
                stride = 2 if k > 0 and i == 0 else 1
                stage.append(BasicBlock(in_planes, planes, stride, norm, avg_pool=avg_pool))
                in_planes = planes
            self.add_module(f"layer{k + 1}", nn.Sequential(*stage))
        side = (3 if channels == 1 else 4) if avg_pool else 1
        self.classifier = nn.Linear(512 * side * side, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """Features before the classifier (DC ``ResNet.embed``): 512, or 512·3·3 / 512·4·4 for ``_AP``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if not self.avg_pool:
            out = F.avg_pool2d(out, 4)
        return out.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


def _register_resnet(depth: int, norm: str, avg_pool: bool) -> None:
    bn = "BN" if norm == "batchnorm" else ""
    name = f"ResNet{depth}{bn}{'_AP' if avg_pool else ''}"
    aliases = () if avg_pool else (f"ResNet-{depth}" + ("-BN" if bn else ""),)

    def factory(channels: int, num_classes: int, im_size: Sequence[int] = (32, 32)) -> ResNet:
        return ResNet(channels, num_classes, im_size, depth=depth, norm=norm, avg_pool=avg_pool)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"DC/DCC ``networks.py:{name}``."
    register(name, *aliases)(factory)


for _depth in RESNET_BLOCKS:
    for _norm in ("instancenorm", "batchnorm"):
        for _ap in (False, True):
            _register_resnet(_depth, _norm, _ap)

__all__ = ["BasicBlock", "ResNet", "RESNET_BLOCKS"]
