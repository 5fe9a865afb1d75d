"""Batched resampling helpers shared by DSA and DC augmentation (no Python loop over images).

* :func:`gather_rows_cols` — ``out[b, c, i, j] = x[b, c, rows[b, i], cols[b, j]]`` with either one index set
  for the whole batch (``rows.shape[0] == 1``: two ``index_select``) or one per image (two ``gather``).
  Differentiable w.r.t. ``x``. Integer translations, crops and nearest-neighbour resizes are all of this form.
* :func:`affine_sample` — ``grid_sample`` (bilinear, zero padding) with a precomputed sampling grid that
  broadcasts over the batch; low-precision inputs are resampled in fp32 and cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def gather_rows_cols(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Pick rows then columns of an ``N×C×H×W`` batch with index tensors of shape ``(n, H')`` and ``(n, W')``.

    ``n`` is 1 (the same indices for every image, any ``N``) or ``N`` (indices per image).
    """
    if rows.shape[0] == 1:
        return x.index_select(2, rows[0]).index_select(3, cols[0])
    n, c, _, w = x.shape
    h_out, w_out = rows.shape[1], cols.shape[1]
    x = x.gather(2, rows.view(n, 1, h_out, 1).expand(n, c, h_out, w))
    return x.gather(3, cols.view(n, 1, 1, w_out).expand(n, c, h_out, w_out))


def affine_sample(x: Tensor, grid: Tensor, *, align_corners: bool) -> Tensor:
    """Bilinear ``grid_sample`` of ``x`` at ``grid`` (``(1|N)×H×W×2``), zero outside the image."""
    n = x.shape[0]
    if grid.shape[0] != n:
        grid = grid.expand(n, -1, -1, -1)
    if x.dtype in _LOW_PRECISION:
        out = F.grid_sample(x.float(), grid.float(), mode="bilinear", padding_mode="zeros", align_corners=align_corners)
        return out.to(x.dtype)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=align_corners)


def scale_theta(sx: Tensor, sy: Tensor) -> Tensor:
    """Affine matrices ``[[sx, 0, 0], [0, sy, 0]]`` (``n×2×3``), mapping output to input coordinates."""
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, zero], -1), torch.stack([zero, sy, zero], -1)], 1)


def rotation_theta(angle: Tensor, aspect: float = 1.0) -> Tensor:
    """Affine matrices ``[[cos, -sin·a, 0], [sin/a, cos, 0]]`` (``n×2×3``), ``angle`` in radians.

    ``aspect = H / W`` makes the rotation a rigid one in pixel space for non-square images; ``1`` gives the
    DSA reference matrix (``utils.py:rand_rotate``), which is exact for the square images it is used on.
    """
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(angle)
    return torch.stack([torch.stack([cos, -sin * aspect, zero], -1), torch.stack([sin / aspect, cos, zero], -1)], 1)


def theta_grid(theta: Tensor, image_size: tuple[int, int], *, align_corners: bool) -> Tensor:
    """``affine_grid`` of ``theta`` (``n×2×3``, cast to fp32) for ``n`` images of ``image_size``."""
    theta = theta.float()
    return F.affine_grid(theta, [theta.shape[0], 1, *image_size], align_corners=align_corners)
