"""The Sample Difficulty Correction term (paper eq. 11 for GM, eq. 12 for TM).

SDC adds ``λ·‖∇θ L_syn‖`` to a matching loss: the norm of the gradient of the *synthetic* loss with respect to
the network parameters, i.e. the GraDN of the synthetic batch. Minimising it steers the synthetic samples
toward *easy* ones (small per-sample gradient norm), which the paper's perceptron theory predicts is the
better choice for small synthetic sets.

The term is computed from gradients the matching step already has (GM: the synthetic gradient built with
``create_graph=True``; TM: the student's inner-loop gradients), so it costs no extra forward or backward.

``power``: the main text (eq. 11/12) writes the Euclidean norm ``‖g‖₂``; the pseudocode (Algorithms 1 and 2)
writes its square ``‖g‖₂²``. This library defaults to ``power=1`` — the equations of the main text, whose λ
values (Tables 4–8) are the ones the configs carry — and exposes ``power=2`` for the pseudocode's form.
The norm is always accumulated in fp32 (the gradients may come from a bf16/fp16 autocast region).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lightning_sdc.checks import check_choices

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def grad_sq_norm(grads: Sequence[Tensor]) -> Tensor:
    """``Σ_ℓ ‖g_ℓ‖²`` over a list of gradient tensors, accumulated in fp32 (fp64 stays fp64)."""
    return torch.stack([(g.float() if g.dtype in _LOW_PRECISION else g).pow(2).sum() for g in grads]).sum()


def sdc_term(grads: Sequence[Tensor] | Tensor, power: Literal[1, 2] = 1) -> Tensor:
    """``‖∇θ L_syn‖₂`` (``power=1``, eq. 11/12) or ``‖∇θ L_syn‖₂²`` (``power=2``, Algorithms 1/2).

    Args:
        grads: the synthetic-loss gradient, as the list of per-parameter tensors returned by
            ``torch.autograd.grad(..., create_graph=True)`` or as one flat tensor.
        power: 1 or 2.

    Returns:
        A differentiable fp32 scalar (gradients flow to whatever ``grads`` depends on, e.g. the images).
    """
    check_choices(sdc_term, {"power": power})
    sq = grad_sq_norm([grads] if isinstance(grads, Tensor) else grads)
    return sq.sqrt() if power == 1 else sq
