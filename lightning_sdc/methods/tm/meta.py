"""The trajectory-matching meta-objective and its gradient, unrolled or in constant memory.

Notation (paper eq. 12 and Algorithm 2): ``θ_0 = θ*_t`` the expert's start
parameters, ``θ* = θ*_{t+M}`` its target, ``α`` the student lr (``syn_lr``), ``X_k`` the (augmented) synthetic
minibatch of inner step ``k``, ``g_k = ∇_θ ℓ(f(X_k; θ_k), y_k)`` and ``θ_{k+1} = θ_k − α g_k`` for
``k = 0 … N−1``. The objective is

    J = ‖θ_N − θ*‖² / ‖θ_0 − θ*‖²  +  λ · (1/N) Σ_k R(g_k),      R(g) = ‖g‖  (power 1)  or  ‖g‖²  (power 2)

— MTT's normalised parameter distance summed over all P entries (MTT ``distill.py``; its division of both sums
by P cancels) plus the SDC term of eq. 12, whose ``‖∇_θ L_syn‖`` is taken as the mean over the inner steps of
the norms of the gradients the unroll already computes (no extra forward or backward).

Two ways to get ``∂J/∂(images, labels, α)``:

* ``memory="unrolled"`` (MTT): every ``g_k`` is built with ``create_graph=True`` and the whole chain stays in
  memory; ``objective.backward()`` does the rest. Memory grows with ``N × batch``.
* ``memory="constant"`` (TESLA ``distill.py``, two passes): pass 1 runs the inner loop without a graph and
  keeps ``θ_0 … θ_N`` (``N + 1`` vectors of size P), the index chunks and the DSA draws; pass 2 walks the steps
  backwards, rebuilding one step's double-backward graph at a time. With ``a_N = ∂J/∂θ_N = 2(θ_N − θ*)/D``
  and, for ``k = N−1 … 0``, the scalar

      s_k = −α ⟨a_{k+1}, g_k⟩ + (λ/N) R(g_k)          (a_{k+1} and α held constant)

  the adjoint recursion is ``a_k = a_{k+1} + ∇_{θ_k} s_k``; step ``k`` contributes ``∇_X s_k`` to the image
  (and label) gradient and ``−⟨a_{k+1}, g_k⟩`` to ``∂J/∂α``. This is reverse-mode differentiation through
  the SGD steps with every ``θ_k`` checkpointed, so it equals the unrolled gradient to float precision,
  SDC term included: its gradient reaches the images directly through ``g_k(X_k)`` and indirectly through the
  adjoint (``θ_k`` depends on every earlier batch), exactly as in the unrolled graph.

``meta_gradient="first_order"`` is what TESLA's code computes: every ``g_k`` is
treated as a function of its own batch only (``θ_k`` detached), i.e. ``a_k = a_N`` for all ``k`` and
``∂J/∂α = −⟨a_N, Σ_k g_k⟩ = −2 Gᵀ(θ_0 − αG − θ*)/D``. It drops the Hessian couplings; it equals the exact
gradient for ``N = 1`` and differs for ``N > 1`` (the TESLA paper calls its procedure exact; its code is
first-order — the code is followed for the TESLA method, the exact form is this library's default
elsewhere). Both memory modes implement both variants and agree with each other.

In constant-memory mode the returned ``objective`` is a *surrogate*: its value is ``J`` and its gradient with
respect to each learned tensor ``p`` is the accumulated ``∂J/∂p`` (``Σ_p ⟨p, G_p⟩ − sg(Σ_p ⟨p, G_p⟩) + J``),
so a single ``manual_backward(objective)`` delivers the gradients — under DDP (one all-reduce) and AMP loss
scaling alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lightning_sdc.checks import check_choices, check_number
from lightning_sdc.matching.sdc import sdc_term

Memory = Literal["unrolled", "constant"]
MetaGradient = Literal["exact", "first_order"]

#: ``targets(index)``: training targets of the synthetic rows ``index`` (``None`` = all rows), attached to
#: whatever they are learned from (DATM's label logits) or constant (hard labels, TESLA's teacher labels).
TargetFn = Callable[[Tensor | None], Tensor]


@dataclass(frozen=True)
class InnerStep:
    """One inner step's draw: the synthetic rows it trains on and its DSA parameters.

    Attributes:
        index: row indices of the synthetic set (``None``: every row, in order).
        augment: a per-image :class:`~lightning_sdc.augment.DSASample` for those rows, or ``None``.
    """

    index: Tensor | None
    augment: object | None = None


@dataclass
class MatchResult:
    """What one evaluation of the meta-objective returns.

    Attributes:
        objective: scalar ``J``; its gradient w.r.t. the learned tensors is the meta-gradient (a surrogate in
            constant-memory mode, see the module docstring).
        match_loss: the normalised parameter distance (detached).
        sdc: the mean over inner steps of ``R(g_k)`` (detached; 0 when ``N = 0``).
        final_params: ``θ_N`` (detached).
    """

    objective: Tensor
    match_loss: Tensor
    sdc: Tensor
    final_params: Tensor


def chunk_schedule(num_images: int, batch_syn: int | None, steps: int, generator: torch.Generator) -> list[Tensor | None]:
    """The rows of each inner step (MTT ``distill.py``): chunks of a random permutation, taken from the end of
    the list (so the short remainder chunk comes first), refilled with a new permutation when empty — sampling
    without replacement across steps. ``batch_syn`` ``None`` or ``≥ num_images`` → the whole set every step."""
    if batch_syn is None or batch_syn >= num_images:
        return [None] * steps
    chunks: list[Tensor] = []
    out: list[Tensor | None] = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(num_images, generator=generator).split(batch_syn))
        out.append(chunks.pop())
    return out


def _batch(images: Tensor, step: InnerStep) -> Tensor:
    from lightning_sdc.augment import apply_dsa

    x = images if step.index is None else images.index_select(0, step.index)
    return x if step.augment is None else apply_dsa(x, step.augment)


def _wide(t: Tensor) -> Tensor:
    """``t`` in at least fp32 (bf16/fp16 values from an autocast region are widened; fp64 stays fp64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _distance(a: Tensor, b: Tensor) -> Tensor:
    return (_wide(a) - _wide(b)).pow(2).sum()


def trajectory_objective(
    loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    images: Tensor,
    targets: TargetFn,
    syn_lr: Tensor,
    start: Tensor,
    target: Tensor,
    plan: Sequence[InnerStep],
    *,
    memory: Memory = "unrolled",
    meta_gradient: MetaGradient = "exact",
    sdc_lambda: float = 0.0,
    sdc_power: int = 1,
    learned: Sequence[Tensor] = (),
    first_order_loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
) -> MatchResult:
    """Run the student's ``N = len(plan)`` inner steps from ``start`` and return the meta-objective.

    Args:
        loss_fn: ``loss_fn(θ, x, y)`` — the student's inner loss with flat parameters ``θ``.
        images: the synthetic images (a leaf that requires grad to learn them).
        targets: :data:`TargetFn` giving the targets of a row index.
        syn_lr: the student lr ``α`` as a 0-d tensor (learned when it requires grad).
        start, target: ``θ*_t`` and ``θ*_{t+M}``, flat ``[P]``.
        plan: the inner steps (:func:`chunk_schedule` rows and DSA draws).
        memory: ``"unrolled"`` | ``"constant"`` (see module docstring).
        meta_gradient: ``"exact"`` | ``"first_order"`` (TESLA's code).
        sdc_lambda: λ of eq. 12; 0 leaves the SDC term out of the objective (it is still reported).
        sdc_power: 1 (eq. 12) or 2 (Algorithm 2), see :func:`~lightning_sdc.matching.sdc.sdc_term`.
        learned: in constant-memory mode, the tensors other than ``images`` and ``syn_lr`` that ``targets``
            depends on and that need a gradient (DATM's label logits).
        first_order_loss_fn: the same loss as ``loss_fn`` through a faster first-order-only path (e.g.
            :meth:`~lightning_sdc.methods.tm.student.FunctionalStudent.compiled_loss`); used by the
            constant-memory pass 1, which needs no second derivative. ``None``: ``loss_fn``.
    """
    check_choices(trajectory_objective, {"memory": memory, "meta_gradient": meta_gradient})
    check_number("sdc_lambda", sdc_lambda, strict=False)
    start = start.detach()
    target = target.detach()
    denom = _distance(start, target)
    if memory == "unrolled":
        return _unrolled(loss_fn, images, targets, syn_lr, start, target, denom, plan, meta_gradient == "first_order",
                         sdc_lambda, sdc_power)
    return _constant(loss_fn, images, targets, syn_lr, start, target, denom, plan, meta_gradient == "first_order",
                     sdc_lambda, sdc_power, learned, first_order_loss_fn or loss_fn)


def _mean_sdc(terms: list[Tensor], like: Tensor) -> Tensor:
    return torch.stack(terms).mean() if terms else torch.zeros((), dtype=like.dtype, device=like.device)


def _unrolled(
    loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    images: Tensor,
    targets: TargetFn,
    syn_lr: Tensor,
    start: Tensor,
    target: Tensor,
    denom: Tensor,
    plan: Sequence[InnerStep],
    first_order: bool,
    sdc_lambda: float,
    sdc_power: int,
) -> MatchResult:
    theta = start.clone().requires_grad_(True)
    terms: list[Tensor] = []
    for step in plan:
        at = theta.detach().requires_grad_(True) if first_order else theta
        loss = loss_fn(at, _batch(images, step), targets(step.index))
        (g,) = torch.autograd.grad(loss, at, create_graph=True)
        terms.append(sdc_term(g if sdc_lambda > 0 else g.detach(), sdc_power))
        theta = theta - syn_lr * g
    match = _distance(theta, target) / denom
    sdc = _mean_sdc(terms, match)
    objective = match + sdc_lambda * sdc if sdc_lambda > 0 else match
    return MatchResult(objective, match.detach(), sdc.detach(), theta.detach())


def _constant(
    loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    images: Tensor,
    targets: TargetFn,
    syn_lr: Tensor,
    start: Tensor,
    target: Tensor,
    denom: Tensor,
    plan: Sequence[InnerStep],
    first_order: bool,
    sdc_lambda: float,
    sdc_power: int,
    learned: Sequence[Tensor],
    pass1_loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
) -> MatchResult:
    alpha = syn_lr.detach()
    images_const = images.detach()
    # pass 1: the inner loop without a graph to the synthetic set; keep every θ_k
    thetas = [start]
    terms: list[Tensor] = []
    for step in plan:
        theta = thetas[-1].detach().requires_grad_(True)
        with torch.no_grad():
            y = targets(step.index)
        loss = pass1_loss_fn(theta, _batch(images_const, step), y.detach())
        (g,) = torch.autograd.grad(loss, theta)
        terms.append(sdc_term(g, sdc_power))
        thetas.append(thetas[-1] - alpha * g)
    theta_n = thetas[-1]
    match = _distance(theta_n, target) / denom
    sdc = _mean_sdc(terms, match)
    value = match + sdc_lambda * sdc if sdc_lambda > 0 else match

    # pass 2: reverse sweep, one step's double-backward graph at a time
    leaves = [t for t in (images, *learned) if t.requires_grad]
    grads = [torch.zeros_like(t) for t in leaves]
    adj = 2.0 * (_wide(theta_n) - _wide(target)) / denom
    lr_grad = torch.zeros((), dtype=adj.dtype, device=start.device)
    scale = sdc_lambda / len(plan) if plan else 0.0
    for k in range(len(plan) - 1, -1, -1):
        step = plan[k]
        theta = thetas[k].detach().requires_grad_(True)
        loss = loss_fn(theta, _batch(images, step), targets(step.index))
        (g,) = torch.autograd.grad(loss, theta, create_graph=True)
        lr_grad = lr_grad - torch.dot(adj, _wide(g.detach()).to(adj.dtype))
        s = -alpha * torch.dot(adj.to(g.dtype), g)
        if scale > 0:
            s = s + scale * sdc_term(g, sdc_power)
        inputs = leaves if first_order or k == 0 else [*leaves, theta]  # a_0 is never used
        if not inputs or not s.requires_grad:
            continue
        out = torch.autograd.grad(s, inputs, allow_unused=True)
        for acc, d in zip(grads, out[: len(leaves)]):
            if d is not None:
                acc.add_(d)
        if not first_order and k > 0 and out[-1] is not None:
            adj = adj + out[-1].to(adj.dtype)
    linear = [(leaf * grad).sum() for leaf, grad in zip(leaves, grads)]
    if syn_lr.requires_grad:
        linear.append(syn_lr * lr_grad)
    if not linear:
        return MatchResult(value.detach(), match.detach(), sdc.detach(), theta_n.detach())
    lin = torch.stack(linear).sum()
    objective = (lin - lin.detach()) + value.detach()
    return MatchResult(objective, match.detach(), sdc.detach(), theta_n.detach())
