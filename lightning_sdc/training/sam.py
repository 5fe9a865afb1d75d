"""FTD's sharpness-aware step (its experts' optimiser): GSAM with ASAM-style adaptive perturbation.

Implements one step of FTD ``buffer/gsam/gsam.py::GSAM.step`` (driven by ``utils/utils_gsam.py::epoch``),
around any base optimiser (FTD: plain SGD):

1. ``g = ∇L(w)`` on the (already augmented) minibatch.
2. Perturbation ``e = ρ · T²g / (‖T g‖₂ + ε)`` with ``T = |w|`` (ASAM, ``adaptive=True``) or ``T = 1`` (SAM);
   the norm is taken over all parameters together; ``w ← w + e``.
3. ``g_p = ∇L(w + e)`` on the *same* minibatch, with BatchNorm running statistics frozen (momentum 0).
4. GSAM decomposition: ``cos = ⟨g, g_p⟩ / (‖g_p‖‖g‖ + ε)``,
   ``v = g − cos · ‖g‖ · g_p / (‖g_p‖ + ε)`` (the part of ``g`` orthogonal to ``g_p``) and the update
   direction ``d = g_p − α v``.
5. ``w ← w − e`` (restore), then the base optimiser steps with ``d``.

``α = 0`` gives (A)SAM. ``ρ = 0`` makes the perturbed point equal ``w``, so ``g_p = g`` by definition: the
second pass is skipped and ``g`` reused, which makes ``ρ = α = 0`` the plain base-optimiser step bit for bit
(the reference recomputes the same gradient: identical on CPU, possibly different in the last bit on GPU).
ρ is constant, as FTD's ``ProportionScheduler`` with ``rho_max == rho_min``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from lightning_sdc.checks import check_number

#: GSAM's ``perturb_eps``.
SAM_EPS = 1e-12


@contextmanager
def frozen_running_stats(model: nn.Module | None) -> Iterator[None]:
    """Set BatchNorm momentum to 0 inside the block (GSAM ``disable_running_stats``) and restore it after."""
    norms = (
        []
        if model is None
        else [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    )
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom


def check_sam_settings(rho: float, alpha: float) -> None:
    """``rho`` and ``alpha`` finite and ``>= 0``."""
    check_number("rho", rho, strict=False)
    check_number("alpha", alpha, strict=False)


def _global_norm(tensors: Sequence[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors))))


class SharpnessAwareStep:
    """One GSAM/ASAM step per call (see module docstring), wrapping ``base_optimizer``.

    Args:
        params: the parameters the base optimiser updates (all must receive gradients).
        base_optimizer: the optimiser that applies the final direction (FTD: SGD, momentum 0, wd 0).
        rho: perturbation radius ρ ≥ 0 (FTD ``--rho_max`` = ``--rho_min``; FTD/DATM buffers use 0.01).
        alpha: GSAM surrogate-gap weight α ≥ 0 (FTD's balance coefficient; DATM uses 0.3); 0 gives (A)SAM.
        adaptive: ASAM's parameter-scaled perturbation (FTD default True).
        model: the module whose BatchNorm statistics are frozen during the perturbed pass (optional).
    """

    def __init__(
        self,
        params: Sequence[nn.Parameter],
        base_optimizer: torch.optim.Optimizer,
        *,
        rho: float,
        alpha: float,
        adaptive: bool = True,
        model: nn.Module | None = None,
    ) -> None:
        check_sam_settings(rho, alpha)
        self.params = list(params)
        if not self.params:
            raise ValueError("SharpnessAwareStep needs at least one parameter")
        self.base_optimizer = base_optimizer
        self.rho = float(rho)
        self.alpha = float(alpha)
        self.adaptive = adaptive
        self.model = model

    def _backward(self, closure: Callable[[], Tensor]) -> tuple[Tensor, list[Tensor]]:
        self.base_optimizer.zero_grad(set_to_none=True)
        loss = closure()
        loss.backward()
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            missing = [i for i, g in enumerate(grads) if g is None]
            raise ValueError(f"parameters at positions {missing} received no gradient from the loss")
        return loss, grads  # type: ignore[return-value]

    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        """Run the step; ``closure()`` returns the loss on the fixed minibatch (no backward inside).

        Returns the loss at the unperturbed weights (what FTD logs).
        """
        loss, grads = self._backward(closure)
        if self.rho == 0.0:  # g_p = g exactly (w + 0 = w); the orthogonal part is then ~0
            if self.alpha != 0.0:
                self._decompose(grads, [g.clone() for g in grads])
            self.base_optimizer.step()
            return loss.detach()
        with torch.no_grad():
            old_g = [g.clone() for g in grads]
            weights = [p.detach() for p in self.params]
            if self.adaptive:
                scaled = torch._foreach_mul(torch._foreach_abs(weights), old_g)
                scale = self.rho / (_global_norm(scaled) + SAM_EPS)
                e = torch._foreach_mul(torch._foreach_mul(weights, weights), old_g)
            else:
                scale = self.rho / (_global_norm(old_g) + SAM_EPS)
                e = [g.clone() for g in old_g]
            torch._foreach_mul_(e, scale)
            torch._foreach_add_(weights, e)
        with frozen_running_stats(self.model):
            _, direction = self._backward(closure)
        if self.alpha != 0.0:
            self._decompose(direction, old_g)
        with torch.no_grad():
            torch._foreach_sub_([p.detach() for p in self.params], e)
        self.base_optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def _decompose(self, grad_p: list[Tensor], old_g: list[Tensor]) -> None:
        """In place ``grad_p ← grad_p − α (g − cos ‖g‖ grad_p / (‖grad_p‖ + ε))`` (``gradient_decompose``)."""
        inner = torch.stack([torch.sum(a * b) for a, b in zip(old_g, grad_p)]).sum()
        norm_p = _global_norm(grad_p)
        norm_g = _global_norm(old_g)
        cosine = inner / (norm_p * norm_g + SAM_EPS)
        coeff = cosine * norm_g / (norm_p + SAM_EPS)
        vertical = torch._foreach_sub(old_g, torch._foreach_mul(grad_p, coeff))
        torch._foreach_add_(grad_p, torch._foreach_mul(vertical, -self.alpha))
