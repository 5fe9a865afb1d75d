"""What every coreset baseline shares: turning selected training rows into a :class:`SyntheticSet`, and
checks."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_sdc.synthetic import SyntheticSet, real_set


def check_ipc(spec: Any, ipc: Any) -> int:
    """``ValueError`` unless ``1 ≤ ipc ≤`` the size of every class of ``spec``'s training split."""
    counts = torch.bincount(spec.train_labels.cpu(), minlength=spec.num_classes).tolist()
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1 or ipc > min(counts):
        raise ValueError(
            f"ipc={ipc!r} is not allowed for {spec.name!r}: need an integer in [1, {min(counts)}] "
            f"(its smallest class has {min(counts)} training images)"
        )
    return ipc


def class_rows(labels: Tensor, num_classes: int) -> list[Tensor]:
    """Row indices (CPU int64, ascending) of each class."""
    labels = labels.detach().cpu()
    return [(labels == c).nonzero().flatten() for c in range(num_classes)]


def coreset_from_rows(spec: Any, rows: Tensor, ipc: int) -> SyntheticSet:
    """A :class:`SyntheticSet` holding ``spec.train_images[rows]``; ``rows`` is class-major (``ipc`` per
    class).

    The set keeps the dataset's normalisation and ZCA state (:func:`~lightning_sdc.synthetic.real_set`).
    """
    rows = rows.detach().cpu().long()
    if rows.shape != (spec.num_classes * ipc,):
        raise ValueError(f"need {spec.num_classes} × {ipc} rows (class-major), got shape {tuple(rows.shape)}")
    expected = torch.arange(spec.num_classes).repeat_interleave(ipc)
    got = spec.train_labels.cpu()[rows]
    if not torch.equal(got, expected):
        raise ValueError("rows must be class-major: ipc rows of class 0, then ipc rows of class 1, …")
    return real_set(spec, spec.train_images[rows])


@torch.no_grad()
def embed_features(net: nn.Module, images: Tensor, batch_size: int = 1024) -> Tensor:
    """``net.embed(x)`` (the input of the final linear layer; every registered network has ``embed``), eval
    mode."""
    if not hasattr(net, "embed"):
        raise ValueError(f"{type(net).__name__} has no embed(x) method to take features from")
    was_training = net.training
    net.eval()
    try:
        return torch.cat(
            [net.embed(images[s : s + batch_size]).flatten(1) for s in range(0, images.shape[0], batch_size)]
        )
    finally:
        net.train(was_training)
