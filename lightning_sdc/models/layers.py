"""Building blocks named as in the references' ConvNet options (DC ``networks.py:ConvNet._get_*``).

"instancenorm" is ``GroupNorm(C, C, affine=True)`` — one group per channel — not ``InstanceNorm2d``; "groupnorm" is ``GroupNorm(4, C)``; "layernorm" normalises over ``[C, H, W]`` with a
3-D affine weight, so its parameter count depends on the feature-map size.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS = ("relu", "sigmoid", "leakyrelu", "swish")
NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
POOLINGS = ("avgpooling", "maxpooling", "none")


def check_choice(arch: str, what: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{arch}: unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return value.lower()


def make_activation(kind: str) -> nn.Module:
    """ReLU | Sigmoid | LeakyReLU(0.01) | Swish (x·σ(x) = ``nn.SiLU``; DC's ``Swish`` module)."""
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    if kind == "swish":
        return nn.SiLU()
    raise ValueError(f"unknown activation {kind!r}; allowed: {', '.join(ACTIVATIONS)}")


def make_norm(kind: str, channels: int, spatial: tuple[int, int]) -> nn.Module | None:
    """The norm layer for a ``channels × spatial`` feature map, or ``None`` for ``'none'``."""
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels, affine=True)
    if kind == "layernorm":
        return nn.LayerNorm([channels, *spatial], elementwise_affine=True)
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm {kind!r}; allowed: {', '.join(NORMS)}")


def make_pooling(kind: str) -> nn.Module | None:
    """2×2 stride-2 average or max pooling, or ``None`` for ``'none'``."""
    if kind == "avgpooling":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if kind == "maxpooling":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if kind == "none":
        return None
    raise ValueError(f"unknown pooling {kind!r}; allowed: {', '.join(POOLINGS)}")


def instance_or_batch_norm(norm: str, channels: int) -> nn.Module:
    """The VGG/ResNet norm switch of the references: GroupNorm(C, C) for "instancenorm", else BatchNorm2d."""
    return nn.GroupNorm(channels, channels, affine=True) if norm == "instancenorm" else nn.BatchNorm2d(channels)
