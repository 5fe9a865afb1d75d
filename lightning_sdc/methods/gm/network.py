"""The network of a gradient-matching iteration between two image updates (DC ``main.py`` / ``utils.py``).

* :func:`freeze_batchnorm`: DC's BatchNorm handling before each outer step — one train-mode forward of 16 real
  images per class (so the running statistics move by BatchNorm's momentum toward real-data statistics), then
  every BatchNorm layer in eval mode for the matching passes. Nets without BatchNorm
  (the default instance-norm ConvNet) are untouched.
* :func:`train_on_synset`: ``inner_loop`` epochs of plain SGD (lr ``lr_net``, no momentum, no weight decay,
  cross-entropy) over the detached synthetic set in shuffled batches of ``batch_train``; DSA/DSAC augment each
  batch with non-Siamese DSA (DC ``utils.py:epoch('train', …, aug=True)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_sdc.augment import diff_augment


def has_batchnorm(net: nn.Module) -> bool:
    """Whether any module is a BatchNorm layer (DC tests ``'BatchNorm' in module class name``)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def freeze_batchnorm(net: nn.Module, real: Tensor) -> None:
    """One train-mode forward of ``real`` (no gradient), then every BatchNorm layer to eval mode."""
    net.train()
    with torch.no_grad():
        net(real)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def train_on_synset(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    dsa_strategy: str | None = None,
    loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
) -> None:
    """Train ``net`` in place for ``epochs`` shuffled passes over ``(images, labels)`` (both detached here).

    ``loss_fn(net, x, y)``: the batch loss, ``CE(net(x), y)`` by default (a gradient engine's
    :meth:`~lightning_sdc.methods.gm.engine.GradientEngine.loss`).
    """
    images, labels = images.detach(), labels.detach()
    params = list(net.parameters())
    opt = torch.optim.SGD(params, lr=lr)
    n = images.shape[0]
    net.train()
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator, device=generator.device).to(images.device)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                x = images[idx]
                if dsa_strategy is not None:
                    x = diff_augment(x, dsa_strategy, generator=generator, siamese=False)
                y = labels[idx]
                loss = F.cross_entropy(net(x), y) if loss_fn is None else loss_fn(net, x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
