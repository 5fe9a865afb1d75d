"""Per-class gradients of a network's mean cross-entropy: one class per call, or every class in one call.

Gradient matching needs, for each class ``c``, ``∇θ CE(net(x_c), c)`` — detached for the real batch, with
``create_graph=True`` for the synthetic block so the matching loss can be differentiated w.r.t. the images
(DC ``main.py``: ``torch.autograd.grad(l_syn, net_parameters, create_graph=True)``).

* :func:`class_gradient` is the reference's per-class call (``torch.autograd.grad`` on the module).
* :func:`batched_class_gradients`: the same gradients for ``k`` classes in one
  ``torch.func.vmap(torch.func.grad(...))`` call (the ``vmap`` engine), differentiable w.r.t. the images.
  BatchNorm layers must be in eval mode (a train-mode BatchNorm would mix the classes' statistics); classes
  with fewer real images are padded and masked out of the mean with zero weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def class_gradient(net: nn.Module, params: Sequence[Tensor], x: Tensor, c: int, *, create_graph: bool) -> list[Tensor]:
    """``∇θ CE(net(x), c)`` (mean over the batch), one tensor per entry of ``params`` (``net.parameters()``)."""
    y = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
    return list(torch.autograd.grad(F.cross_entropy(net(x), y), list(params), create_graph=create_graph))


def _check_frozen_batchnorm(net: nn.Module) -> None:
    for name, m in net.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise ValueError(f"vectorised class gradients need BatchNorm layers in eval mode; {name!r} is training")


def stack_batches(batches: Sequence[Tensor]) -> tuple[Tensor, Tensor | None]:
    """``[k, n_max, …]`` from ``k`` batches and, when their sizes differ, ``[k, n_max]`` 0/1 weights (else ``None``).

    Padding rows are zeros with weight 0, so they add nothing to a weighted mean (every layer the references
    use is per-sample once BatchNorm is frozen).
    """
    sizes = [b.shape[0] for b in batches]
    n = max(sizes)
    if min(sizes) == n:
        return torch.stack(list(batches)), None
    first = batches[0]
    out = first.new_zeros((len(batches), n, *first.shape[1:]))
    weights = first.new_zeros((len(batches), n))
    for i, b in enumerate(batches):
        out[i, : b.shape[0]] = b
        weights[i, : b.shape[0]] = 1.0
    return out, weights


def batched_class_gradients(
    net: nn.Module, xs: Tensor, classes: Tensor, weights: Tensor | None = None, *, create_graph: bool
) -> list[Tensor]:
    """Per-class ``∇θ CE(net(xs[i]), classes[i])`` for all ``i`` in one vmapped call.

    Args:
        net: the network (its parameters are read, never written; BatchNorm must be in eval mode).
        xs: ``[k, n, C, H, W]`` one batch per class.
        classes: ``[k]`` int64 class of each batch.
        weights: optional ``[k, n]`` per-image weights of the mean (0 for padding rows).
        create_graph: keep the result differentiable w.r.t. ``xs`` (the synthetic side); ``False`` detaches it.

    Returns:
        One ``[k, *param.shape]`` tensor per parameter, in ``net.named_parameters()`` order; entry ``i`` equals
        :func:`class_gradient` on ``xs[i]`` (to float rounding).
    """
    if xs.dim() < 3 or classes.shape != xs.shape[:1]:
        raise ValueError(f"need xs [k, n, …] and classes [k]; got {tuple(xs.shape)} and {tuple(classes.shape)}")
    _check_frozen_batchnorm(net)
    names = [n for n, _ in net.named_parameters()]
    params = {n: (p if create_graph else p.detach()) for n, p in net.named_parameters()}
    if not create_graph:
        xs = xs.detach()

    def mean_ce(p: dict[str, Tensor], x: Tensor, c: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(net, p, (x,)), c.expand(x.shape[0]))

    def weighted_ce(p: dict[str, Tensor], x: Tensor, c: Tensor, w: Tensor) -> Tensor:
        ce = F.cross_entropy(functional_call(net, p, (x,)), c.expand(x.shape[0]), reduction="none")
        return (ce * w).sum() / w.sum()

    if weights is None:
        grads = vmap(grad(mean_ce), in_dims=(None, 0, 0))(params, xs, classes)
    else:
        grads = vmap(grad(weighted_ce), in_dims=(None, 0, 0, 0))(params, xs, classes, weights.to(xs.dtype))
    return [grads[n] for n in names]
