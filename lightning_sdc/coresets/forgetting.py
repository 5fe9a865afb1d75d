"""The Forgetting coreset baseline (Toneva et al., ICLR 2019, as the DC tables use it).

Forgetting events are counted while training a network on the whole training split
(:func:`lightning_sdc.difficulty.forgetting_counts`). The DD tables' baseline (DC Table 1; DeepCore
``Forgetting.select`` with ``balance=True``) keeps, per class, the ``ipc`` **most** forgotten examples — hence
Forgetting scores below Random at low IPC. ``keep="least"`` takes the unforgettable ones instead.

Ties are massive at small IPC (many examples share a count). DeepCore's reversed stable sort breaks them by
the highest index; here they are broken by a seeded random permutation (said so in the reports).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_sdc.coresets.common import check_ipc, class_rows, coreset_from_rows
from lightning_sdc.synthetic import SyntheticSet

KEEP = ("most", "least")


def forgetting_per_class(
    counts: Tensor, labels: Tensor, ipc: int, num_classes: int, *, keep: str = "most", seed: int = 0
) -> Tensor:
    """Class-major row indices of the ``ipc`` most (or least) forgotten examples of each class.

    Ties are broken by a permutation drawn from ``torch.Generator().manual_seed(seed)``.
    """
    if keep not in KEEP:
        raise ValueError(f"keep={keep!r} is not allowed; allowed: {', '.join(KEEP)}")
    if counts.shape != labels.shape or counts.dim() != 1:
        raise ValueError(
            f"counts and labels must be [N] each, got {tuple(counts.shape)} and {tuple(labels.shape)}"
        )
    g = torch.Generator().manual_seed(int(seed))
    counts = counts.detach().cpu().double()
    out = []
    for c, rows in enumerate(class_rows(labels, num_classes)):
        if rows.numel() < ipc:
            raise ValueError(f"ipc={ipc} is not allowed: class {c} has only {rows.numel()} samples")
        shuffled = rows[torch.randperm(rows.numel(), generator=g)]
        order = torch.argsort(counts[shuffled], descending=keep == "most", stable=True)
        out.append(shuffled[order[:ipc]])
    return torch.cat(out)


def forgetting_coreset(spec: Any, ipc: int, *, counts: Tensor | None = None, keep: str = "most",
                       never_learned: str = "max", seed: int = 0, device: str | torch.device = "cpu",
                       **train_kwargs: Any) -> SyntheticSet:
    """The Forgetting baseline: ``ipc`` real images per class chosen by :func:`forgetting_per_class`.

    Args:
        spec: a ``DatasetSpec``.
        counts: precomputed forgetting counts ``[N]`` (default:
            :func:`~lightning_sdc.difficulty.forgetting_counts`
            with ``never_learned``, ``seed``, ``device`` and ``train_kwargs``: ``runs``, ``epochs``, ``arch``,
            ``arch_kwargs``, ``lr``, ``batch_size``, ``augment``).
        keep: ``"most"`` (DC/DeepCore) | ``"least"``.
    """
    from lightning_sdc.difficulty.forgetting import forgetting_counts

    check_ipc(spec, ipc)
    if keep not in KEEP:
        raise ValueError(f"keep={keep!r} is not allowed; allowed: {', '.join(KEEP)}")
    if counts is None:
        counts = forgetting_counts(
            spec, never_learned=never_learned, seed=seed, device=device, **train_kwargs
        )
    if counts.shape != spec.train_labels.shape:
        raise ValueError(
            f"counts must have one entry per training image ({spec.train_labels.numel()}), "
            f"got {tuple(counts.shape)}"
        )
    rows = forgetting_per_class(counts, spec.train_labels, ipc, spec.num_classes, keep=keep, seed=seed)
    return coreset_from_rows(spec, rows, ipc)
