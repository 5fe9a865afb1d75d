"""The per-batch training augmentation of a network-training run, drawn from the network's own generator.

Shared by the evaluation protocol (DC ``utils.py:evaluate_synset`` with ``dsa`` / DC's ``augment``), expert
training (MTT ``buffer.py``: DSA on every batch) and the difficulty / coreset classifiers.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from lightning_sdc.checks import check_choices

#: an augmentation ``augment(x, generator) -> x'`` applied to each training batch
Augment = Callable[[Tensor, torch.Generator], Tensor]

#: names :func:`make_train_augment` accepts
TrainAugment = Literal["dsa", "dc", "none"]
TRAIN_AUGMENTS: tuple[str, ...] = typing.get_args(TrainAugment)


def make_train_augment(
    augment: TrainAugment, *, dataset: str = "", arch: str = "ConvNet", dsa_strategy: str | None = None
) -> Augment | None:
    """The per-batch training augmentation named ``augment``.

    ``"dsa"``: DSA with per-image parameters (``siamese=False``, DC/DSA ``utils.py:DiffAugment``), strategy
    ``dsa_strategy`` or the dataset's default (no flip for digits); ``"dc"``: DC's ``get_daparam``
    augmentation (only MNIST-like data and ConvNetBN get one); ``"none"``: nothing (``None``).
    """
    check_choices(make_train_augment, {"augment": augment})
    if augment == "none":
        return None
    from lightning_sdc import augment as aug

    if augment == "dsa":
        strategy = dsa_strategy or aug.default_dsa_strategy(dataset)

        def dsa(x: Tensor, g: torch.Generator) -> Tensor:
            return aug.diff_augment(x, strategy, generator=g, siamese=False)

        return dsa
    strategy = aug.dc_augment_strategy(dataset, arch)
    if strategy == "none":
        return None

    def dc(x: Tensor, g: torch.Generator) -> Tensor:
        return aug.dc_augment(x, strategy, g)

    return dc
