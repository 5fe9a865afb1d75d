"""Per-sample gradient norms ``‖∇_θ L(x_i, y_i; θ)‖₂``: the inner quantity of GraDN (Definition 2, eq. 7).

Three paths give the same numbers:

* ``method="vmap"``: ``torch.func.vmap(torch.func.grad(loss_of_one_sample))`` over chunks of the batch, the
  network run with ``torch.func.functional_call`` on detached parameters (the PyTorch form of data_diet's
  ``scores.py:get_grad_norm_fn``, which takes a ``jacrev`` of the per-example losses and a row norm).
* ``method="loop"``: one ``torch.autograd.grad`` per sample. On the 2-core CPU this project is developed on
  the vmapped path was measured no faster (theory_reference §D: 4–22 ms vs 3.5–4.4 ms per sample), so
  ``method="auto"`` takes the loop on CPU and vmap on accelerators.
* ``params="last_layer"``: the gradient w.r.t. the final ``nn.Linear`` only (DeepCore ``methods/grand.py``),
  in closed form: with ``logits = W e + b`` and ``p = softmax(logits)``,
  ``‖∇_{W,b} ℓ‖₂ = ‖p − y‖₂ · √(‖e‖₂² + 1)`` (``+ 0`` without bias). One forward pass, no backward.
  (DeepCore divides by the batch size because its loss is a batch mean; here the per-sample loss is used, so
  the values do not depend on how the data are chunked.)

The loss is per-sample cross-entropy; targets are class indices or probability rows (soft labels: the loss is
``−Σ_c t_c log p_c`` and ``∂ℓ/∂logits = p − t``). The network is evaluated in eval mode (BatchNorm with
running statistics, as data_diet scores in test mode; per-sample batch statistics are not defined), and its
mode is restored afterwards. Parameters with ``requires_grad=False`` are left out of the norm.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_sdc.checks import check_choices, check_int

ParamSet = Literal["all", "last_layer"]
GradMethod = Literal["auto", "vmap", "loop"]
PARAM_SETS: tuple[str, ...] = typing.get_args(ParamSet)
GRAD_METHODS: tuple[str, ...] = typing.get_args(GradMethod)


def sample_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample cross-entropy ``[N]`` for class-index targets ``[N]`` or probability targets ``[N, C]``."""
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets, reduction="none")
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)


def residuals(logits: Tensor, targets: Tensor) -> Tensor:
    """``softmax(logits) − y`` (``y`` one-hot or given probabilities): the gradient of the loss w.r.t. the
    logits."""
    p = torch.softmax(logits.float(), dim=1)
    if targets.dim() == 1:
        return p - F.one_hot(targets.long(), p.shape[1]).to(p)
    return p - targets.to(p)


def check_inputs(inputs: Tensor, targets: Tensor) -> None:
    """``ValueError`` unless ``inputs`` is ``[N, …]`` and ``targets`` is ``[N]`` (int) or ``[N, C]``
    (float)."""
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise ValueError(
            f"inputs and targets must be tensors, got {type(inputs).__name__}/{type(targets).__name__}"
        )
    if inputs.dim() < 2 or targets.dim() not in (1, 2) or inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"need inputs [N, ...] and targets [N] (class indices) or [N, C] (probabilities); "
            f"got {tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    if targets.dim() == 1 and targets.is_floating_point():
        raise ValueError("class-index targets must be an integer tensor; pass probabilities as [N, C]")


def resolve_method(method: GradMethod, device: torch.device | str) -> str:
    """``"auto"`` → ``"loop"`` on CPU, ``"vmap"`` elsewhere; other values are returned after checking."""
    check_choices(resolve_method, {"method": method})
    if method != "auto":
        return method
    return "loop" if torch.device(device).type == "cpu" else "vmap"


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every submodule's previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in ``model.modules()`` order (the classifier of every registered network)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"params='last_layer' needs a network ending in an nn.Linear; {type(model).__name__} has none"
        )
    return linears[-1]


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _grad_norms_loop(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    out = torch.empty(inputs.shape[0], dtype=torch.float32, device=inputs.device)
    for i in range(inputs.shape[0]):
        loss = sample_losses(model(inputs[i : i + 1]), targets[i : i + 1]).sum()
        grads = torch.autograd.grad(loss, params)
        out[i] = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    return out


def _grad_norms_vmap(model: nn.Module, inputs: Tensor, targets: Tensor, chunk_size: int) -> Tensor:
    from torch.func import functional_call, grad, vmap

    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def loss_one(p: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return sample_losses(logits, t.unsqueeze(0)).sum()

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    norms = []
    for sl in _chunks(inputs.shape[0], chunk_size):
        grads = per_sample(params, inputs[sl], targets[sl])
        sq = sum(g.flatten(1).pow(2).sum(dim=1) for g in grads.values())
        norms.append(torch.sqrt(sq))
    return torch.cat(norms)


def _grad_norms_last_layer(model: nn.Module, inputs: Tensor, targets: Tensor, chunk_size: int) -> Tensor:
    layer = last_linear(model)
    seen: dict[str, Tensor] = {}

    def hook(_: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        seen["e"], seen["z"] = args[0], output

    handle = layer.register_forward_hook(hook)
    norms = []
    try:
        with torch.no_grad():
            for sl in _chunks(inputs.shape[0], chunk_size):
                logits = model(inputs[sl])
                if "z" not in seen or seen["z"].shape != logits.shape or not torch.equal(seen["z"], logits):
                    raise ValueError(
                        f"params='last_layer': the output of {type(model).__name__} is not the output of its "
                        "last nn.Linear, so the closed form does not apply; use params='all'"
                    )
                e = seen["e"].flatten(1).float()
                bias = 1.0 if layer.bias is not None else 0.0
                norms.append(
                    residuals(logits, targets[sl]).norm(dim=1) * torch.sqrt(e.pow(2).sum(dim=1) + bias)
                )
                seen.clear()
    finally:
        handle.remove()
    return torch.cat(norms)


def per_sample_grad_norms(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    params: ParamSet = "all",
    method: GradMethod = "auto",
    chunk_size: int = 64,
) -> Tensor:
    """``‖∇_θ ℓ(f_θ(x_i), y_i)‖₂`` for every sample (see the module docstring).

    Args:
        model: the network (any registered architecture; evaluated in eval mode).
        inputs: ``[N, C, H, W]`` (or any ``[N, …]`` the model takes), on the model's device.
        targets: ``[N]`` class indices or ``[N, C]`` probabilities.
        params: ``"all"`` (Definition 2: every parameter) or ``"last_layer"`` (DeepCore's approximation).
        method: ``"auto"`` | ``"vmap"`` | ``"loop"`` (ignored for ``params="last_layer"``).
        chunk_size: samples per vmapped call / per forward (memory grows with ``chunk_size × #params``).

    Returns:
        ``[N]`` float32 norms, detached, on the inputs' device.
    """
    check_choices(per_sample_grad_norms, {"params": params})
    check_inputs(inputs, targets)
    check_int("chunk_size", chunk_size, 1)
    how = resolve_method(method, inputs.device)
    inputs, targets = inputs.detach(), targets.detach()
    if inputs.shape[0] == 0:
        return torch.zeros(0, device=inputs.device)
    with eval_mode(model), torch.inference_mode(False):
        if (
            inputs.is_inference() or targets.is_inference()
        ):  # made under inference_mode: copy to normal tensors
            inputs, targets = inputs.clone(), targets.clone()
        if params == "last_layer":
            return _grad_norms_last_layer(model, inputs, targets, chunk_size)
        with torch.enable_grad():
            if how == "loop":
                return _grad_norms_loop(model, inputs, targets).detach()
            return _grad_norms_vmap(model, inputs, targets, chunk_size).detach()
