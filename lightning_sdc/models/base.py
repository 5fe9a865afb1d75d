"""The network registry and what every architecture shares: input-shape rules, parameter and FLOP counting.

Architectures register themselves here (``convnet.py``, ``classic.py``, ``resnet.py``); ``build_network`` in
``lightning_sdc.models`` looks them up. Names follow the references' ``get_network`` (DC ``utils.py:124``,
MTT ``utils.py:get_network``); aliases add the DD-Ranking spellings (``ConvNet-3``, ``ResNet-18``, …).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_sdc.checks import check_int
from lightning_sdc.registry import Registry

NETWORKS: Registry[nn.Module] = Registry("network")

# canonical name -> the aliases registered with it (the Registry itself only resolves them)
ALIASES: dict[str, tuple[str, ...]] = {}


def register(name: str, *aliases: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """``NETWORKS.register`` that also records the aliases, so ``list_networks`` can show them."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        NETWORKS.register(name, *aliases)(factory)
        ALIASES[name] = ALIASES.get(name, ()) + tuple(aliases)
        return factory

    return deco


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (shared parameters counted once, as ``named_parameters``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def forward_flops(net: nn.Module, image_shape: Sequence[int]) -> int:
    """FLOPs of one image's forward through ``net`` (``torch.utils.flop_counter``: 2 per multiply-add of its
    convolutions and matrix products), counted on a ``meta`` copy: nothing is computed."""
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        copy.deepcopy(net).to("meta").eval()(torch.zeros(1, *image_shape))
    return counter.get_total_flops()


def shape_str(channels: int, im_size: Sequence[int]) -> str:
    return f"{channels}×{im_size[0]}×{im_size[1]}"


@dataclass(frozen=True)
class InputRule:
    """One accepted input shape: ``height × width`` and a channel condition (exact, excluded, or any)."""

    size: tuple[int, int]
    channels: int | None = None  # exact channel count; None = any
    not_channels: int | None = None  # a channel count that is excluded

    def matches(self, channels: int, im_size: Sequence[int]) -> bool:
        if tuple(im_size) != self.size:
            return False
        if self.channels is not None and channels != self.channels:
            return False
        return self.not_channels is None or channels != self.not_channels

    def __str__(self) -> str:
        c = "C" if self.channels is None else str(self.channels)
        text = f"{c}×{self.size[0]}×{self.size[1]}"
        return text if self.not_channels is None else f"{text} (C ≠ {self.not_channels})"


# The fixed-classifier references (LeNet, AlexNet, VGG, ResNet_AP) hard-code their flatten size; with the
# 1-channel padding trick this fits 1×28×28 (MNIST-like) and, without it, C×32×32 with C ≠ 1.
MNIST_OR_CIFAR = (InputRule((28, 28), channels=1), InputRule((32, 32), not_channels=1))


def check_input(arch: str, channels: int, im_size: Sequence[int], rules: Sequence[InputRule], why: str) -> None:
    """``ValueError`` naming ``arch``, the shape and the allowed shapes unless one of ``rules`` matches."""
    if not any(r.matches(channels, im_size) for r in rules):
        allowed = ", ".join(str(r) for r in rules)
        raise ValueError(
            f"{arch} does not support input {shape_str(channels, im_size)} (channels×height×width); "
            f"supported: {allowed}. {why} Use ConvNet (any size) for other shapes."
        )


def check_basic_args(arch: str, channels: int, num_classes: int, im_size: Sequence[int]) -> tuple[int, int]:
    """Validate the arguments every factory shares; returns ``im_size`` as an ``(H, W)`` tuple of ints."""
    check_int(f"{arch}: channels", channels, 1)
    check_int(f"{arch}: num_classes", num_classes, 1)
    try:
        h, w = (int(s) for s in im_size)
    except (TypeError, ValueError):
        raise ValueError(f"{arch}: im_size must be (height, width), got {im_size!r}") from None
    if h < 1 or w < 1 or (h, w) != tuple(im_size):
        raise ValueError(f"{arch}: im_size must be two positive ints (height, width), got {im_size!r}")
    return h, w
