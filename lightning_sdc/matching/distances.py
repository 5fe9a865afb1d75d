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


def _rowwise_cosine_distance(gs: Tensor, gr: Tensor) -> Tensor:
    """``distance_wb`` of one parameter tensor: Σ over rows of ``1 − cos``; 0 for 1-D parameters."""
    if gs.dim() <= 1:  # biases / norm affine parameters (and scalars): ignored, as distance_wb
        return _hi(gs).new_zeros(())
    a, b = _hi(gr).reshape(gs.shape[0], -1), _hi(gs).reshape(gs.shape[0], -1)
    return (1.0 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + _EPS)).sum()


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
    if metric == "ours":
        return torch.stack([_rowwise_cosine_distance(s, r) for s, r in zip(g_syn, g_real)]).sum()
    vs = torch.cat([_hi(s).reshape(-1) for s in g_syn])
    vr = torch.cat([_hi(r).reshape(-1) for r in g_real])
    if metric == "mse":
        return (vs - vr).pow(2).sum()
    return 1.0 - (vr * vs).sum() / (vr.norm() * vs.norm() + _EPS)
