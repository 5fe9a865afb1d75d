"""Distances between two lists of per-parameter gradients (DC/DCC ``utils.py:match_loss`` / ``distance_wb``).

* ``"ours"`` (the references' default): layer-wise, **row-wise** cosine distance. Each gradient tensor is
  viewed as a matrix with one row per output unit — 4-D conv weight ``(out, in·kh·kw)``, 3-D LayerNorm weight
  ``(C, h·w)``, 2-D linear weight unchanged (any other rank ≥ 2: ``(shape[0], rest)``) — and contributes
  ``Σ_rows [1 − ⟨a, b⟩ / (‖a‖·‖b‖ + 1e-6)]``, the epsilon added to the *product* of the norms; **every 1-D
  tensor (biases, norm affine parameters) contributes 0**, as in ``distance_wb``. Summed over rows and
  tensors, never averaged. One vectorised reduction per tensor; no loop over rows.
* ``"mse"``: ``Σ (g_syn − g_real)²`` over all tensors concatenated (biases included).
* ``"cos"``: ``1 − ⟨g_real, g_syn⟩ / (‖g_real‖·‖g_syn‖ + 1e-6)`` over all tensors concatenated (one global
  cosine, biases included).

:func:`gradient_distance` takes one gradient per parameter; :func:`batched_gradient_distance` takes tensors
with a leading batch axis (e.g. one row per class, from ``torch.func.vmap``) and returns one distance per batch
entry — equal to calling :func:`gradient_distance` on each entry.

All three are computed in fp32 (fp64 stays fp64), whatever precision the gradients came from.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

DisMetric = Literal["ours", "mse", "cos"]
DIS_METRICS: tuple[str, ...] = typing.get_args(DisMetric)
_EPS = 1e-6
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _hi(t: Tensor) -> Tensor:
    return t.float() if t.dtype in _LOW_PRECISION else t


def _check(g_syn: Sequence[Tensor], g_real: Sequence[Tensor], metric: DisMetric) -> None:
    if metric not in DIS_METRICS:
        raise ValueError(f"dis_metric={metric!r} is not allowed; allowed: {', '.join(DIS_METRICS)}")
    if len(g_syn) != len(g_real):
        raise ValueError(f"gradient lists differ in length: {len(g_syn)} synthetic vs {len(g_real)} real")
    for i, (s, r) in enumerate(zip(g_syn, g_real)):
        if s.shape != r.shape:
            raise ValueError(f"gradient {i}: synthetic shape {tuple(s.shape)} != real shape {tuple(r.shape)}")


def _rowwise_cosine_distance(gs: Tensor, gr: Tensor, lead: int) -> Tensor:
    """Σ over rows of ``1 − cos`` for tensors whose first ``lead`` axes are batch axes; 0 for 1-D parameters.

    Returns a tensor of shape ``gs.shape[:lead]``.
    """
    batch = gs.shape[:lead]
    if gs.dim() - lead <= 1:  # biases / norm affine parameters (and scalars): ignored, as distance_wb
        return _hi(gs).new_zeros(batch)
    rows = gs.shape[lead]
    a = _hi(gr).reshape(*batch, rows, -1)
    b = _hi(gs).reshape(*batch, rows, -1)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + _EPS)
    return (1.0 - cos).sum(-1)


def layerwise_distance(gs: Tensor, gr: Tensor) -> Tensor:
    """``distance_wb`` for one parameter tensor: 0 for 1-D tensors, else the sum of row-wise cosine distances."""
    return _rowwise_cosine_distance(gs, gr, 0)


def _distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor], metric: DisMetric, lead: int) -> Tensor:
    if metric == "ours":
        return torch.stack([_rowwise_cosine_distance(s, r, lead) for s, r in zip(g_syn, g_real)]).sum(0)
    batch = g_syn[0].shape[:lead]
    vs = torch.cat([_hi(s).reshape(*batch, -1) for s in g_syn], dim=-1)
    vr = torch.cat([_hi(r).reshape(*batch, -1) for r in g_real], dim=-1)
    if metric == "mse":
        return (vs - vr).pow(2).sum(-1)
    return 1.0 - (vr * vs).sum(-1) / (vr.norm(dim=-1) * vs.norm(dim=-1) + _EPS)


def gradient_distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor], metric: DisMetric = "ours") -> Tensor:
    """``D(∇θL_syn, ∇θL_real)`` of the paper's eq. 1 with the references' metrics (module docstring).

    Args:
        g_syn, g_real: one gradient tensor per network parameter, in the same order and shapes.
        metric: ``"ours"`` | ``"mse"`` | ``"cos"``.

    Returns:
        A scalar, differentiable w.r.t. both lists.
    """
    _check(g_syn, g_real, metric)
    if not g_syn:
        raise ValueError("gradient lists are empty")
    return _distance(g_syn, g_real, metric, 0)


def batched_gradient_distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor], metric: DisMetric = "ours") -> Tensor:
    """One :func:`gradient_distance` per entry of a leading batch axis (e.g. one per class).

    Args:
        g_syn, g_real: one tensor per network parameter, each ``[k, *parameter_shape]``.
        metric: ``"ours"`` | ``"mse"`` | ``"cos"``.

    Returns:
        ``[k]`` distances; entry ``i`` equals ``gradient_distance([g[i] for g in g_syn], [g[i] for g in g_real])``.
    """
    _check(g_syn, g_real, metric)
    if not g_syn:
        raise ValueError("gradient lists are empty")
    k = g_syn[0].shape[0] if g_syn[0].dim() else None
    if k is None or any(g.dim() == 0 or g.shape[0] != k for g in g_syn):
        raise ValueError(f"batched gradients need one common leading axis; got shapes {[tuple(g.shape) for g in g_syn]}")
    return _distance(g_syn, g_real, metric, 1)


def batched_grad_norm(grads: Sequence[Tensor], power: int = 1) -> Tensor:
    """Per-entry ``‖g_i‖₂`` (``power=1``) or ``‖g_i‖₂²`` (``power=2``) of ``[k, …]`` gradient tensors, in fp32.

    The batched form of :func:`lightning_sdc.matching.sdc.sdc_term` (the SDC term of eq. 11, one per class).
    """
    if power not in (1, 2):
        raise ValueError(f"sdc_power must be 1 or 2, got {power!r}")
    sq = torch.stack([_hi(g).reshape(g.shape[0], -1).pow(2).sum(-1) for g in grads]).sum(0)
    return sq.sqrt() if power == 1 else sq
