"""Distances between two lists of per-parameter gradients (DC/DCC ``utils.py:match_loss`` / ``distance_wb``).

* ``"ours"`` (the references' default): layer-wise, **row-wise** cosine distance. Each gradient tensor is
  reshaped by its rank — 4-D conv weight ``(out, in·kh·kw)``, 3-D LayerNorm weight ``(C, h·w)``, 2-D linear
  weight unchanged — and contributes ``Σ_rows [1 − ⟨a, b⟩ / (‖a‖·‖b‖ + 1e-6)]``; **every 1-D tensor (biases,
  norm affine parameters) contributes 0**, as in ``distance_wb``. Summed over tensors, not averaged.
* ``"mse"``: ``Σ (g_syn − g_real)²`` over all tensors concatenated (biases included).
* ``"cos"``: ``1 − ⟨g_real, g_syn⟩ / (‖g_real‖·‖g_syn‖ + 1e-6)`` over all tensors concatenated.

All three are computed in fp32 (fp64 stays fp64), whatever precision the gradients came from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

METRICS = ("ours", "mse", "cos")
_EPS = 1e-6


def _hi(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _rows(g: Tensor) -> Tensor:
    return g.reshape(g.shape[0], -1)


def layerwise_distance(gs: Tensor, gr: Tensor) -> Tensor:
    """``distance_wb`` for one parameter tensor: 0 for 1-D tensors, else the sum of row-wise cosine distances."""
    if gs.dim() == 1:
        return gs.new_zeros((), dtype=_hi(gs).dtype)
    a, b = _rows(_hi(gr)), _rows(_hi(gs))
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + _EPS)
    return (1.0 - cos).sum()


def gradient_distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor], metric: str = "ours") -> Tensor:
    """``D(∇θL_syn, ∇θL_real)`` of the paper's eq. 1 with the references' metrics (module docstring)."""
    if metric not in METRICS:
        raise ValueError(f"dis_metric={metric!r} is not allowed; allowed: {', '.join(METRICS)}")
    if len(g_syn) != len(g_real):
        raise ValueError(f"gradient lists differ in length: {len(g_syn)} synthetic vs {len(g_real)} real")
    if metric == "ours":
        return torch.stack([layerwise_distance(s, r) for s, r in zip(g_syn, g_real)]).sum()
    vs = torch.cat([_hi(s).reshape(-1) for s in g_syn])
    vr = torch.cat([_hi(r).reshape(-1) for r in g_real])
    if metric == "mse":
        return (vs - vr).pow(2).sum()
    return 1.0 - (vr * vs).sum() / (vr.norm() * vs.norm() + _EPS)
