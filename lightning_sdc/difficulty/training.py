"""Training classifiers on the real training set: the ensembles Θ_t of Definitions 1–2, coreset selectors.

One routine serves the difficulty ensembles, Herding's feature network and Forgetting's bookkeeping: the one
training loop (:class:`~lightning_sdc.training.TrainingLoop`) with the classifier schedule
(:meth:`~lightning_sdc.training.Schedule.classifier`): minibatch SGD over a fresh seeded shuffle each epoch
(last, smaller batch kept), cross-entropy, optional training augmentation of the evaluation protocol
(``make_train_augment``), momentum 0.9 and weight decay 5e-4 with the learning rate × 0.1 in place from epoch
``epochs // 2`` on — close to, not exactly, the schedule of DC ``utils.py:evaluate_synset`` (which runs
``epochs + 1`` passes, drops the lr after pass ``epochs // 2 + 1`` and rebuilds the optimiser; the evaluation
protocol, :mod:`lightning_sdc.evaluation`, follows DC exactly). ``on_batch`` sees the logits of each training
forward pass *before* that batch's optimiser step — what Toneva et al. record to count forgetting events.

Model ``i`` of an ensemble is initialised from ``seeded_generator(seed, _ENSEMBLE_KEY, i)`` and the same
generator drives its shuffles, subsets and augmentation, so an ensemble is reproducible and its members differ
in both initialisation and data order (data_diet trains its runs with different model and data-order seeds).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_sdc.progress import advance
from lightning_sdc.training import (
    Augment,
    BatchHook,
    Schedule,
    TrainAugment,
    TrainingLoop,
    make_train_augment,
    seeded_generator,
)
from lightning_sdc.training.checks import check_int, check_number

#: domain tag mixed into ensemble generators (never coincides with the evaluation's ``(seed, i)`` keys)
_ENSEMBLE_KEY = 0x44494646  # "DIFF"


def train_classifier(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
    decay: bool = True,
    on_batch: BatchHook | None = None,
) -> nn.Module:
    """Train ``net`` in place on ``(images, labels)`` for ``epochs`` passes (see the module docstring).

    Args:
        net: the network (moved nowhere: put it on the images' device first).
        images, labels: ``[N, …]`` inputs and ``[N]`` class indices.
        epochs: passes over the data (0 leaves the network at its initialisation).
        decay: multiply the lr by 0.1 after ``epochs // 2`` passes (DC's evaluation schedule).
        on_batch: ``on_batch(rows, logits, labels)`` after each forward, before the step; ``rows`` are the
            batch's row indices into ``images`` (CPU int64), ``logits`` are detached.
        generator: shuffles and augmentation (default: seeded with 0).
    """
    if images.shape[0] != labels.shape[0] or labels.dim() != 1:
        raise ValueError(
            f"need images [N, ...] and labels [N], got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    schedule = Schedule.classifier(epochs, lr, batch_size=batch_size, momentum=momentum,
                                   weight_decay=weight_decay, decay=decay)
    TrainingLoop([net], [generator or torch.Generator().manual_seed(0)], images, labels, schedule=schedule,
                 augment=augment, on_batch=on_batch,
                 on_epoch=advance,  # the command's progress bar, if one is open (lightning_sdc.progress.phase)
                 ).run()
    net.eval()
    return net


def train_ensemble(
    spec: Any,
    num_models: int = 5,
    *,
    epochs: int = 10,
    arch: str = "ConvNet",
    arch_kwargs: dict[str, Any] | None = None,
    lr: float = 0.01,
    batch_size: int = 256,
    augment: TrainAugment = "none",
    train_fraction: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> list[nn.Module]:
    """``num_models`` independently seeded ``arch`` networks trained on the training split of ``spec``.

    Args:
        spec: a ``DatasetSpec`` (``train_images``/``train_labels``, ``num_classes``, ``image_shape``,
            ``name``).
        num_models: ensemble size M (the paper's Figure 3 uses 20; data_diet recommends ≥ 10).
        epochs: training epochs t of Θ_t (0: networks at initialisation, GraNd-at-init; Kirsch 2023 could not
            reproduce its pruning benefit, while scores of trained networks do reproduce).
        arch, arch_kwargs: network registry name and options (e.g. ``{"width": 32, "depth": 2}``).
        augment: ``"none"`` | ``"dsa"`` | ``"dc"`` training augmentation.
        train_fraction: each model trains on its own random fraction of the training split (1.0: all).

    Returns:
        The trained networks in eval mode, on ``device``.
    """
    from lightning_sdc.models import build_network

    check_int("num_models", num_models, 1)
    check_int("epochs", epochs, 0)
    if check_number("train_fraction", train_fraction) > 1:
        raise ValueError(f"train_fraction must be a number in (0, 1], got {train_fraction!r}")
    aug = make_train_augment(augment, dataset=spec.name, arch=arch)
    device = torch.device(device)
    images, labels = spec.train_images.to(device), spec.train_labels.to(device)
    c, h, w = spec.image_shape
    models = []
    for i in range(num_models):
        g = seeded_generator(seed, _ENSEMBLE_KEY, i)
        net = build_network(arch, c, spec.num_classes, (h, w), generator=g, **dict(arch_kwargs or {})).to(
            device
        )
        x, y = images, labels
        if train_fraction < 1:
            keep = torch.randperm(images.shape[0], generator=g)[
                : max(1, round(train_fraction * images.shape[0]))
            ]
            keep = keep.to(device)
            x, y = images.index_select(0, keep), labels.index_select(0, keep)
        train_classifier(net, x, y, epochs=epochs, lr=lr, batch_size=batch_size, augment=aug, generator=g)
        models.append(net)
    return models
