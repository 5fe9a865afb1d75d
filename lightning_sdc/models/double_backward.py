"""Convolution and group/instance norm with hand-written second derivatives (exact; native kernels throughout).

Trajectory matching differentiates *through* the student's gradient: every inner step builds
``g_k = ∇_θ ℓ(f(X_k; θ_k))`` with ``create_graph=True`` and the outer backward then runs the backward of that
backward (MTT ``distill.py``; the same double backward as GM's synthetic side). PyTorch's own second derivatives
of the two layers that dominate the reference ConvNet are slow on a CPU:

* ``nn.GroupNorm`` (the ConvNet's ``instancenorm`` is ``GroupNorm(C, C)``): under ``create_graph`` its first
  backward runs as a composite of ~50 element-wise ops (``infinitely_differentiable_native_group_norm_backward``)
  instead of the fused kernel, and the outer backward differentiates each of them again.
* ``nn.Conv2d``: the weight term of the double backward (``ggI ⊛ gO``) is computed as a convolution of the
  batch-transposed tensors, i.e. with a feature-map-sized kernel, 3–4× slower than oneDNN's weight-gradient
  kernel that computes the same contraction.

:func:`twice_differentiable` swaps those layers of a network for subclasses whose forward and first backward
are the native kernels (``native_group_norm``/``native_group_norm_backward``, ``conv2d``/
``convolution_backward``) and whose first backward is itself a custom function with a closed-form backward:

Convolution ``y = x ⊛ W + b``, first backward ``(gx, gW, gb) = (gO ⊛ᵀ W, x ⋆ gO, Σ gO)``. Given the upstream
``(ggx, ggW, ggb)``: ``∂/∂gO = ggx ⊛ W + x ⊛ ggW + ggb``, ``∂/∂x = gO ⊛ᵀ ggW``, ``∂/∂W = ggx ⋆ gO`` — each
one native convolution (forward, input-gradient or weight-gradient kernel).

Group norm (per sample and group of ``M`` = channels-per-group × H·W entries; ``x̂ = (x − μ)·r``,
``r = (σ² + ε)^{-1/2}``, ``y = γ x̂ + β``). The first backward is ``gx = r·P(γ g)``, ``gγ = Σ g x̂``,
``gβ = Σ g`` with the projection ``P(v) = v − mean(v) − x̂·mean(v x̂)`` (symmetric; ``∂x̂ = r·P(∂x)``). Given
``(w, A, B) = (ggx, ggγ, ggβ)`` and ``v = γ g``:

    ∂/∂g = γ r P(w) + A x̂ + B
    ∂/∂γ = Σ_{n,hw} r P(w) g
    ∂/∂x = P(r A g − (r² b / M) v − r² m_v w) − (r² / M)(a − m_v b) x̂

with the per-group scalars ``a = ⟨w, v⟩ − M w̄ v̄``, ``b = ⟨w, x̂⟩``, ``m_v = mean(v x̂)``. Everything is written
as five row reductions and two or three fused multiply-adds over the feature map (per-(sample, channel)
coefficients), against PyTorch's dozens of element-wise passes.

Numbers: forward and first backward are bit-identical to the native layers; second derivatives equal the
native ones to float rounding (``gradgradcheck`` in fp64, ``tests/test_tm.py``). A third derivative raises.
Under autocast, in half types, with mixed dtypes or non-default padding modes the native layers run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _native(x: Tensor, *params: Tensor | None) -> bool:
    """Whether the native path must run: autocast is on, a dtype other than fp32/fp64 (native kernels
    accumulate half types in fp32), or mixed dtypes."""
    return (torch.is_autocast_enabled(x.device.type) or x.dtype not in (torch.float32, torch.float64)
            or any(p is not None and p.dtype != x.dtype for p in params))


def _no_third_derivative() -> None:
    """The closed-form second derivatives are not differentiable again: refuse ``create_graph`` through them
    (``once_differentiable`` would only raise under ``.backward()``, not under ``autograd.grad``)."""
    if torch.is_grad_enabled():
        raise RuntimeError("lightning_sdc.models.double_backward: a third derivative (create_graph=True through a "
                           "second derivative) is not implemented; build the student with native_layers=True")


def _engine_runs(ctx, i: int) -> bool:
    """Whether the running backward uses input ``i``'s gradient (``autograd.grad(loss, θ)`` does not need the
    images' through the first convolution; native nodes skip it the same way). True when it cannot be told."""
    node = ctx.next_functions[i][0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):
        return True


# ------------------------------------------------------------------------------------------------ convolution
class _ConvBackward(torch.autograd.Function):
    """``(gx, gW, gb)`` of a convolution (native ``convolution_backward``) with the closed-form backward."""

    @staticmethod
    def forward(ctx, g_out: Tensor, x: Tensor, weight: Tensor, conf: tuple, mask: tuple[bool, bool, bool]):
        stride, padding, dilation, groups = conf
        bias_sizes = [weight.shape[0]] if mask[2] else None
        gx, gw, gb = torch.ops.aten.convolution_backward(g_out, x, weight, bias_sizes, stride, padding, dilation,
                                                         False, [0] * len(stride), groups, list(mask))
        ctx.save_for_backward(g_out, x, weight)
        ctx.conf = conf
        ctx.set_materialize_grads(False)
        return gx, gw, gb

    @staticmethod
    def backward(ctx, ggx: Tensor | None, ggw: Tensor | None, ggb: Tensor | None):
        _no_third_derivative()
        g_out, x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        zeros = [0] * len(stride)
        need_g, need_x, need_w = ctx.needs_input_grad[:3]
        d_g = d_x = d_w = None
        if need_g:
            if ggx is not None:
                d_g = F.conv2d(ggx, weight, None, stride, padding, dilation, groups)
            if ggw is not None:
                t = F.conv2d(x, ggw, None, stride, padding, dilation, groups)
                d_g = t if d_g is None else d_g.add_(t)
            if ggb is not None:
                t = ggb.view(1, -1, *([1] * (g_out.dim() - 2)))
                d_g = t.expand_as(g_out).clone() if d_g is None else d_g.add_(t)
        if need_x and ggw is not None:  # ∂⟨ggW, x ⋆ gO⟩/∂x = gO ⊛ᵀ ggW: the input gradient with ggW as the weight
            d_x = torch.ops.aten.convolution_backward(g_out, x, ggw, None, stride, padding, dilation, False, zeros,
                                                      groups, [True, False, False])[0]
        if need_w and ggx is not None:  # ∂⟨ggx, gO ⊛ᵀ W⟩/∂W = ggx ⋆ gO: the weight gradient with ggx as the input
            d_w = torch.ops.aten.convolution_backward(g_out, ggx, weight, None, stride, padding, dilation, False,
                                                      zeros, groups, [False, True, False])[1]
        return d_g, d_x, d_w, None, None


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, conf: tuple):
        stride, padding, dilation, groups = conf
        ctx.save_for_backward(x, weight)
        ctx.conf = conf
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g_out: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = (needed and _engine_runs(ctx, i) for i, needed in enumerate(ctx.needs_input_grad[:3]))
        mask = (need_x, need_w, need_b and ctx.has_bias)
        gx, gw, gb = _ConvBackward.apply(g_out.contiguous(), x, weight, ctx.conf, mask)
        return gx, gw, gb if ctx.has_bias else None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with the closed-form double backward (module docstring); same parameters and values."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or _native(input, weight, bias):
            return super()._conv_forward(input, weight, bias)
        return _Conv.apply(input, weight, bias, (list(self.stride), list(self.padding), list(self.dilation),
                                                 self.groups))


# ------------------------------------------------------------------------------------------------- group norm
class _GroupNormBackward(torch.autograd.Function):
    """``(gx, gγ, gβ)`` of a group norm (native ``native_group_norm_backward``) with the closed-form backward."""

    @staticmethod
    def forward(ctx, g: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, groups: int):
        n, c = x.shape[:2]
        hw = x.numel() // (n * c)
        g = g.contiguous()
        out = torch.ops.aten.native_group_norm_backward(g, x, mean, rstd, weight, n, c, hw, groups, [True, True, True])
        ctx.save_for_backward(g, x, weight, mean, rstd)
        ctx.groups = groups
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    def backward(ctx, ggx: Tensor | None, gg_gamma: Tensor | None, gg_beta: Tensor | None):
        _no_third_derivative()
        g, x, weight, mean, rstd = ctx.saved_tensors
        n, c = x.shape[:2]
        hw = x.numel() // (n * c)
        groups = ctx.groups
        per = c // groups
        m = per * hw  # entries per (sample, group)

        def per_channel(t: Tensor) -> Tensor:  # [n, groups] → [n, c]
            return t.view(n, groups, 1).expand(n, groups, per).reshape(n, c)

        def group_sum(t: Tensor) -> Tensor:  # [n, c] → its group's sum, per channel
            return per_channel(t.view(n, groups, per).sum(-1))

        def col(t: Tensor) -> Tensor:  # [n, c] → [n·c, 1] for row-wise fused multiply-adds
            return t.expand(n, c).reshape(n * c, 1)

        xs, gs = x.view(n * c, hw), g.view(n * c, hw)
        mu, r = per_channel(mean), per_channel(rstd)
        gamma = weight.view(1, c)
        r2 = r * r
        s_g = gs.sum(-1).view(n, c)
        t_g = torch.linalg.vecdot(gs, xs).view(n, c) - mu * s_g  # Σ g (x − μ)
        a_coef = gg_gamma.view(1, c) if gg_gamma is not None else torch.zeros_like(gamma)
        m_v = r * group_sum(gamma * t_g) / m  # mean(v x̂), v = γ g
        d_gamma = None
        if ggx is not None:
            ws = ggx.contiguous().view(n * c, hw)
            s_w = ws.sum(-1).view(n, c)
            t_w = torch.linalg.vecdot(ws, xs).view(n, c) - mu * s_w  # Σ w (x − μ)
            s_wg = torch.linalg.vecdot(ws, gs).view(n, c)
            w_bar, v_bar = group_sum(s_w) / m, group_sum(gamma * s_g) / m
            a = group_sum(gamma * s_wg) - m * w_bar * v_bar
            b = r * group_sum(t_w)  # ⟨w, x̂⟩
            c_w = b / m  # mean(w x̂)
            # ∂/∂g = γ r P(w) + A x̂ + B = (γ r) w + k_x x + k_0
            k_x = r * (a_coef - gamma * r * c_w)
            k_0 = -gamma * r * w_bar - mu * k_x
            if gg_beta is not None:
                k_0 = k_0 + gg_beta.view(1, c)
            d_g = torch.addcmul(col(k_0), ws, col(gamma * r)).addcmul_(xs, col(k_x))
            d_gamma = (r * (s_wg - w_bar * s_g - c_w * r * t_g)).sum(0)
            # ∂/∂x = P(q) + s x̂ with q = c_g g + c_w2 w
            s = -(r2 / m) * (a - m_v * b)
            c_g = r * a_coef - (r2 * b / m) * gamma
            c_w2 = -r2 * m_v
            q_bar = group_sum(c_g * s_g + c_w2 * s_w) / m
            q_xh = r * group_sum(c_g * t_g + c_w2 * t_w) / m  # mean(q x̂)
            k_x = r * (s - q_xh)
            d_x = torch.addcmul(col(-q_bar - mu * k_x), gs, col(c_g)).addcmul_(ws, col(c_w2)).addcmul_(xs, col(k_x))
        else:
            k_x = (r * a_coef).expand(n, c)
            k_0 = -mu * k_x
            if gg_beta is not None:
                k_0 = k_0 + gg_beta.view(1, c)
            d_g = torch.addcmul(col(k_0), xs, col(k_x))
            c_g = k_x  # q = r A g
            q_bar = group_sum(c_g * s_g) / m
            k_x = -r2 * group_sum(c_g * t_g) / m
            d_x = torch.addcmul(col(-q_bar - mu * k_x), gs, col(c_g)).addcmul_(xs, col(k_x))
        return d_g.view(g.shape), d_x.view(x.shape), d_gamma, None, None, None


class _GroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float):
        n, c = x.shape[:2]
        y, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, x.numel() // (n * c), groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        gx, g_gamma, g_beta = _GroupNormBackward.apply(g, x, weight, mean, rstd, ctx.groups)
        return gx, g_gamma, g_beta, None, None


class GroupNorm(nn.GroupNorm):
    """Affine ``nn.GroupNorm`` with the closed-form double backward (module docstring); same parameters."""

    def forward(self, input: Tensor) -> Tensor:
        if not self.affine or input.dim() < 3 or _native(input, self.weight, self.bias):
            return super().forward(input)
        return _GroupNorm.apply(input.contiguous(), self.weight, self.bias, self.num_groups, self.eps)


# --------------------------------------------------------------------------------------- ReLU, 2×2 avg-pool
class _ReluBackward(torch.autograd.Function):
    """``g · [y > 0]``: linear in ``g``, so its backward is itself (the derivative w.r.t. ``y`` is zero a.e. and
    left out, where PyTorch materialises zeros)."""

    @staticmethod
    def forward(ctx, g: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(y)
        return torch.ops.aten.threshold_backward(g, y, 0)

    @staticmethod
    def backward(ctx, gg: Tensor):
        (y,) = ctx.saved_tensors
        return _ReluBackward.apply(gg, y), None


class _Relu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, inplace: bool) -> Tensor:
        if inplace:
            y = x.relu_()
            ctx.mark_dirty(y)
        else:
            y = x.relu()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        (y,) = ctx.saved_tensors
        return _ReluBackward.apply(g, y), None


class ReLU(nn.ReLU):
    """``nn.ReLU`` whose backward is linear in the incoming gradient and differentiable again (no zero tensors)."""

    def forward(self, input: Tensor) -> Tensor:
        return _Relu.apply(input, self.inplace)


def _pool2(x: Tensor) -> Tensor:
    """2×2 stride-2 average of an even-sized ``[N, C, H, W]`` map, summed in ``avg_pool2d``'s order
    (bit-identical to it; ≈ 3× faster than its NCHW CPU kernel)."""
    n, c, h, w = x.shape
    v = x.view(n, c * (h // 2), 2, w // 2, 2)
    s = v[:, :, 0, :, 0] + v[:, :, 0, :, 1]
    s += v[:, :, 1, :, 0]
    s += v[:, :, 1, :, 1]
    return s.div_(4).view(n, c, h // 2, w // 2)


def _unpool2(g: Tensor) -> Tensor:
    """The adjoint of :func:`_pool2`: every entry of ``g`` / 4 copied into its 2×2 block."""
    n, c, h, w = g.shape
    q = (g * 0.25).view(n, c * h, 1, w)
    rows = torch.cat((q, q), 2)
    return rows.view(n, c * h * 2, w, 1).expand(n, c * h * 2, w, 2).reshape(n, c, 2 * h, 2 * w)


class _Pool2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return _pool2(x.contiguous())

    @staticmethod
    def backward(ctx, g: Tensor):
        return _Unpool2.apply(g)


class _Unpool2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g: Tensor) -> Tensor:
        return _unpool2(g.contiguous())

    @staticmethod
    def backward(ctx, gg: Tensor):
        return _Pool2.apply(gg)


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d(2, 2)`` through :func:`_pool2` / :func:`_unpool2` (each the other's backward, so
    differentiable any number of times); other settings, odd sizes and autocast run the native pooling."""

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() != 4 or input.shape[-1] % 2 or input.shape[-2] % 2 or _native(input):
            return super().forward(input)
        return _Pool2.apply(input)


def _is_pool2(m: nn.Module) -> bool:
    def pair(v: object) -> tuple:
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (type(m) is nn.AvgPool2d and pair(m.kernel_size) == (2, 2) and pair(m.stride) == (2, 2)
            and pair(m.padding) == (0, 0) and not m.ceil_mode and m.divisor_override is None)


# ----------------------------------------------------------------------------------------------------- swap
def twice_differentiable(module: nn.Module) -> nn.Module:
    """Replace, in place, every plain ``nn.Conv2d``, affine ``nn.GroupNorm``, ``nn.ReLU`` and 2×2 stride-2
    ``nn.AvgPool2d`` of ``module`` by :class:`Conv2d` / :class:`GroupNorm` / :class:`ReLU` / :class:`AvgPool2d`
    holding the same parameter objects (names, order and values unchanged); returns ``module``."""
    before = [(n, p) for n, p in module.named_parameters()]
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                new: nn.Module = Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                        child.padding, child.dilation, child.groups, child.bias is not None,
                                        child.padding_mode, device="meta")
            elif type(child) is nn.GroupNorm and child.affine:
                new = GroupNorm(child.num_groups, child.num_channels, child.eps, affine=True, device="meta")
            elif type(child) is nn.ReLU:
                new = ReLU(child.inplace)
            elif _is_pool2(child):
                new = AvgPool2d(2, 2)
            else:
                continue
            new._parameters = child._parameters  # the same Parameter objects, same names
            new.train(child.training)
            setattr(parent, name, new)
    after = [(n, p) for n, p in module.named_parameters()]
    if [n for n, _ in before] != [n for n, _ in after] or any(p is not q for (_, p), (_, q) in zip(before, after)):
        raise RuntimeError("twice_differentiable changed the parameter layout")  # cannot happen; guards the swap
    return module


__all__ = ["AvgPool2d", "Conv2d", "GroupNorm", "ReLU", "twice_differentiable"]
