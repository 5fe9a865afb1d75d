"""Training classifiers on the real training set: the ensembles Θ_t of Definitions 1–2, coreset selectors.

One routine serves the difficulty ensembles, Herding's feature network and Forgetting's bookkeeping:
minibatch SGD over a fresh seeded shuffle each epoch (last, smaller batch kept), cross-entropy, optional
training augmentation of the evaluation protocol (``make_train_augment``), momentum 0.9 and weight decay
5e-4 with the learning rate × 0.1 from epoch ``epochs // 2`` on — close to, not exactly, the schedule of DC
``utils.py:evaluate_synset`` (which runs ``epochs + 1`` passes and drops the lr after pass ``epochs // 2 + 1``; the
evaluation protocol, :mod:`lightning_sdc.evaluation`, follows DC exactly). ``on_batch`` sees the logits of each training
forward pass *before* that batch's optimiser step — what Toneva et al. record to count forgetting events.

Model ``i`` of an ensemble is initialised from ``seeded_generator(seed, _ENSEMBLE_KEY, i)`` and the same
generator drives its shuffles, subsets and augmentation, so an ensemble is reproducible and its members differ
in both initialisation and data order (data_diet trains its runs with different model and data-order seeds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_sdc.evaluation.protocol import make_train_augment, seeded_generator
from lightning_sdc.progress import advance

#: domain tag mixed into ensemble generators (never coincides with the evaluation's ``(seed, i)`` keys)
_ENSEMBLE_KEY = 0x44494646  # "DIFF"

BatchHook = Callable[[Tensor, Tensor, Tensor], None]


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_lr(lr: Any) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0 < lr < float("inf")):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return float(lr)


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
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
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
    _check_int("epochs", epochs, 0)
    _check_int("batch_size", batch_size, 1)
    lr = _check_lr(lr)
    if images.shape[0] != labels.shape[0] or labels.dim() != 1:
        raise ValueError(
            f"need images [N, ...] and labels [N], got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    generator = generator or torch.Generator().manual_seed(0)
    n = images.shape[0]
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    net.train()
    with torch.inference_mode(False), torch.enable_grad():
        for epoch in range(epochs):
            if decay and epoch == epochs // 2 and epochs > 1:
                for group in opt.param_groups:
                    group["lr"] = lr * 0.1
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                dev_rows = rows.to(images.device)
                x, y = images.index_select(0, dev_rows), labels.index_select(0, dev_rows)
                if augment is not None:
                    x = augment(x, generator)
                logits = net(x)
                if on_batch is not None:
                    on_batch(rows, logits.detach(), y)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            advance()  # the command's progress bar, if one is open (lightning_sdc.progress.phase)
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
    augment: str = "none",
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

    _check_int("num_models", num_models, 1)
    _check_int("epochs", epochs, 0)
    if (
        isinstance(train_fraction, bool)
        or not isinstance(train_fraction, (int, float))
        or not 0 < train_fraction <= 1
    ):
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
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
