"""Differentiable Siamese Augmentation (DSA; DC/DSA ``utils.py:DiffAugment`` and its ``rand_*`` functions).

Two phases, so that one drawn parameter set can be applied to several batches:

* :func:`sample_dsa` draws the token(s) and the transform parameters from an explicit ``torch.Generator``
  and precomputes everything that does not depend on the pixels (crop indices, cutout mask, affine grids).
* :func:`apply_dsa` applies them to a batch; it is differentiable w.r.t. the batch and has no host sync.

``siamese=True`` draws **one** parameter set, stored with a leading dimension of 1, that broadcasts over a
batch of any size — the same transform for the 256 real images and the ``ipc`` synthetic images of a class.
The reference reaches the same effect by reseeding the *global* RNG with a wall-clock seed before every
draw and overwriting each per-image parameter with the first one (``set_seed_DiffAug``, ``param.Siamese``);
here nothing touches the global RNG. ``siamese=False`` draws one parameter set per image (evaluation and
network-update epochs). In ``'S'`` mode the token is drawn once per call, shared by the whole batch, as the
reference does.

Transform maths (``x`` is the normalised ``N×C×H×W`` batch, ``u ~ U(0, 1)``), as ``rand_*``:

* ``color``: brightness ``x + (u − ½)·b``; saturation ``(x − m_c)·(u·s) + m_c`` with ``m_c`` the per-pixel
  mean over channels (skipped for one channel, where it is the identity); contrast ``(x − m)·(u + c) + m``
  with ``m`` the per-image mean over C, H, W. Applied in that order.
* ``crop``: integer translation ``tx, ty ∈ [−k, k]``, ``k = int(side·ratio_crop_pad + ½)``;
  ``out[i, j] = x[i + tx, j + ty]`` inside the image, 0 outside (``tx`` along H, ``ty`` along W).
* ``cutout``: a square of side ``int(side·ratio_cutout + ½)`` centred at ``(ox, oy)``,
  ``ox ∈ {0, …, H − (size mod 2)}``, set to 0 in every channel and truncated at the borders.
* ``flip``: reverse the width axis with probability ``prob_flip``.
* ``scale``: ``sx, sy ~ U(1/r, r)``, ``affine_grid([[sx, 0, 0], [0, sy, 0]])`` + bilinear ``grid_sample``
  with zero padding; the matrix maps output to input coordinates (``s > 1`` shrinks the content).
* ``rotate``: ``φ ~ U(−r°, r°)``, matrix ``[[cos φ, −sin φ, 0], [sin φ, cos φ, 0]]``, same sampler.

Both samplers use ``align_corners=True``: the reference pins torch 1.2, whose ``affine_grid``/``grid_sample``
behave that way (modern torch defaults to ``False``).

Integer draws are derived from float64 uniforms (``floor(u·n)``) so that one ``torch.rand`` call and one
host-to-device copy serve a whole sample; the random *streams* therefore differ from the reference's
``torch.randint`` calls while the distributions are the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_sdc.augment.geometry import (
    affine_sample,
    gather_rows_cols,
    rotation_theta,
    scale_theta,
    theta_grid,
)
from lightning_sdc.augment.strategy import DSAParams, parse_strategy
from lightning_sdc.checks import check_int

DEFAULT_DSA_PARAMS = DSAParams()
#: ``affine_grid``/``grid_sample`` corner convention of DSA's scale and rotate (torch 1.2 behaviour).
DSA_ALIGN_CORNERS = True

# Number of uniform draws each token consumes per parameter set.
_DRAWS = {"color": 3, "crop": 2, "cutout": 2, "flip": 1, "scale": 2, "rotate": 1}


@dataclass(frozen=True)
class DSASample:
    """One draw of DSA parameters, ready to apply (see :func:`sample_dsa`).

    Every tensor has a leading dimension ``batch_size`` (1 when ``siamese``, broadcast over any batch).
    Fields of tokens that were not drawn are ``None``.

    Attributes:
        tokens: the token(s) to apply, in order (one in ``'S'`` mode, the whole strategy in ``'M'`` mode).
        siamese: one parameter set for every image of every batch it is applied to.
        image_size: ``(H, W)`` the indices and grids were built for.
        batch_size: number of parameter sets (1 when ``siamese``).
        brightness, saturation, contrast: additive shift and the two factors, ``(n, 1, 1, 1)`` each.
        crop_shift: integer translation ``(tx, ty)`` along (H, W), ``(n, 2)`` int64.
        crop_rows, crop_cols: source indices into the image zero-padded by one pixel, ``(n, H)``/``(n, W)``.
        cutout_center: square centre ``(ox, oy)``, ``(n, 2)`` int64.
        cutout_mask: ``True`` where pixels are zeroed, ``(n, 1, H, W)`` bool.
        flip: ``True`` where the width axis is reversed, ``(n, 1, 1, 1)`` bool.
        scale_factors: ``(sx, sy)``, ``(n, 2)``; scale_grid: its ``affine_grid``, ``(n, H, W, 2)``.
        rotate_angle: radians, ``(n,)``; rotate_grid: its ``affine_grid``, ``(n, H, W, 2)``.
    """

    tokens: tuple[str, ...]
    siamese: bool
    image_size: tuple[int, int]
    batch_size: int
    brightness: Tensor | None = None
    saturation: Tensor | None = None
    contrast: Tensor | None = None
    crop_shift: Tensor | None = None
    crop_rows: Tensor | None = None
    crop_cols: Tensor | None = None
    cutout_center: Tensor | None = None
    cutout_mask: Tensor | None = None
    flip: Tensor | None = None
    scale_factors: Tensor | None = None
    scale_grid: Tensor | None = None
    rotate_angle: Tensor | None = None
    rotate_grid: Tensor | None = None

    def to(self, device: str | torch.device) -> DSASample:
        """A copy with every tensor moved to ``device``."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}
        return replace(self, **moved)


# ----------------------------------------------------------------------------------------------------------
# Sampling: uniforms u (n × draws, float64, on the target device) → parameters and precomputed indices/grids.


def _int_draw(u: Tensor, count: int) -> Tensor:
    """Uniform integers in ``{0, …, count − 1}`` from uniforms in [0, 1)."""
    return (u * count).floor().long().clamp_(max=count - 1)


def _derive_color(u: Tensor, size: tuple[int, int], p: DSAParams) -> dict[str, Tensor]:
    col = u.float().view(-1, 3, 1, 1, 1)
    return {
        "brightness": (col[:, 0] - 0.5) * p.brightness,
        "saturation": col[:, 1] * p.saturation,
        "contrast": col[:, 2] + p.contrast,
    }


def _derive_crop(u: Tensor, size: tuple[int, int], p: DSAParams) -> dict[str, Tensor]:
    shifts = []
    index = []
    for axis, side in enumerate(size):
        k = int(side * p.ratio_crop_pad + 0.5)
        shift = _int_draw(u[:, axis], 2 * k + 1) - k
        shifts.append(shift)
        # +1: indices into the image padded by one zero pixel on each side; out-of-image → the zero border.
        index.append((torch.arange(side, device=u.device) + shift[:, None] + 1).clamp_(0, side + 1))
    return {"crop_shift": torch.stack(shifts, 1), "crop_rows": index[0], "crop_cols": index[1]}


def _derive_cutout(u: Tensor, size: tuple[int, int], p: DSAParams) -> dict[str, Tensor]:
    centres = []
    inside = []
    for axis, side in enumerate(size):
        cut = int(side * p.ratio_cutout + 0.5)
        centre = _int_draw(u[:, axis], side + 1 - cut % 2)
        start = (centre - cut // 2)[:, None]
        pos = torch.arange(side, device=u.device)
        centres.append(centre)
        inside.append((pos >= start) & (pos < start + cut))
    mask = inside[0][:, None, :, None] & inside[1][:, None, None, :]
    return {"cutout_center": torch.stack(centres, 1), "cutout_mask": mask}


def _derive_flip(u: Tensor, size: tuple[int, int], p: DSAParams) -> dict[str, Tensor]:
    return {"flip": (u[:, 0] < p.prob_flip).view(-1, 1, 1, 1)}


def _derive_scale(u: Tensor, size: tuple[int, int], p: DSAParams) -> dict[str, Tensor]:
    lo = 1.0 / p.ratio_scale
    factors = (u * (p.ratio_scale - lo) + lo).float()
    grid = theta_grid(scale_theta(factors[:, 0], factors[:, 1]), size, align_corners=DSA_ALIGN_CORNERS)
    return {"scale_factors": factors, "scale_grid": grid}


def _derive_rotate(u: Tensor, size: tuple[int, int], p: DSAParams) -> dict[str, Tensor]:
    angle = ((u[:, 0] - 0.5) * (2.0 * p.ratio_rotate * math.pi / 180.0)).float()
    return {"rotate_angle": angle, "rotate_grid": theta_grid(rotation_theta(angle), size, align_corners=DSA_ALIGN_CORNERS)}


_DERIVE: dict[str, Callable[[Tensor, tuple[int, int], DSAParams], dict[str, Tensor]]] = {
    "color": _derive_color,
    "crop": _derive_crop,
    "cutout": _derive_cutout,
    "flip": _derive_flip,
    "scale": _derive_scale,
    "rotate": _derive_rotate,
}


def _check_image_size(image_size: object) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        h, w = (int(s) for s in image_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be an int or a pair (H, W), got {image_size!r}") from None
    return check_int("image_size height", h, 1), check_int("image_size width", w, 1)


def sample_dsa(
    strategy: str,
    batch_size: int,
    *,
    generator: torch.Generator,
    siamese: bool,
    params: DSAParams = DEFAULT_DSA_PARAMS,
    device: str | torch.device | None = None,
    image_size: int | tuple[int, int],
) -> DSASample:
    """Draw the token(s) and parameters of one DSA call (DC/DSA ``utils.py:DiffAugment``'s random part).

    Args:
        strategy: ``'_'``-joined tokens, or ``'none'``/``'None'``/``''`` (a sample that is the identity).
        batch_size: images per batch; the number of parameter sets when ``siamese=False``.
        generator: the only source of randomness. Draws happen on its device; a CPU generator keeps the
            token choice (the one ``.item()``) free of a device sync.
        siamese: one parameter set for every image (broadcast over any batch size) instead of one per image.
        params: magnitudes and mode (:class:`DSAParams`).
        device: where the parameters, indices and grids are placed (default: the generator's device);
            :func:`apply_dsa` moves them to the batch's device if they differ.
        image_size: ``(H, W)`` (or one int) of the batches the sample will be applied to.
    """
    tokens = parse_strategy(strategy)
    size = _check_image_size(image_size)
    check_int("batch_size", batch_size, 1)
    n = 1 if siamese else batch_size
    if not tokens:
        return DSASample(tokens=(), siamese=bool(siamese), image_size=size, batch_size=n)
    if params.aug_mode == "S" and len(tokens) > 1:
        pick = torch.randint(len(tokens), (1,), generator=generator, device=generator.device)
        tokens = (tokens[int(pick.item())],)
    target = generator.device if device is None else torch.device(device)
    width = sum(_DRAWS[t] for t in tokens)
    u = torch.rand(n, width, generator=generator, device=generator.device, dtype=torch.float64).to(target)
    derived: dict[str, Tensor] = {}
    start = 0
    for token in tokens:
        derived.update(_DERIVE[token](u[:, start : start + _DRAWS[token]], size, params))
        start += _DRAWS[token]
    return DSASample(tokens=tokens, siamese=bool(siamese), image_size=size, batch_size=n, **derived)


# ----------------------------------------------------------------------------------------------------------
# Application (differentiable w.r.t. x).


def _value(t: Tensor, x: Tensor) -> Tensor:
    return t.to(device=x.device, dtype=x.dtype)


def _apply_color(x: Tensor, s: DSASample) -> Tensor:
    x = x + _value(s.brightness, x)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * _value(s.saturation, x) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _value(s.contrast, x) + mean


def _apply_crop(x: Tensor, s: DSASample) -> Tensor:
    return gather_rows_cols(F.pad(x, (1, 1, 1, 1)), s.crop_rows.to(x.device), s.crop_cols.to(x.device))


def _apply_cutout(x: Tensor, s: DSASample) -> Tensor:
    return x.masked_fill(s.cutout_mask.to(x.device), 0.0)


def _apply_flip(x: Tensor, s: DSASample) -> Tensor:
    return torch.where(s.flip.to(x.device), x.flip(3), x)


def _apply_scale(x: Tensor, s: DSASample) -> Tensor:
    return affine_sample(x, s.scale_grid.to(x.device), align_corners=DSA_ALIGN_CORNERS)


def _apply_rotate(x: Tensor, s: DSASample) -> Tensor:
    return affine_sample(x, s.rotate_grid.to(x.device), align_corners=DSA_ALIGN_CORNERS)


_APPLY: dict[str, Callable[[Tensor, DSASample], Tensor]] = {
    "color": _apply_color,
    "crop": _apply_crop,
    "cutout": _apply_cutout,
    "flip": _apply_flip,
    "scale": _apply_scale,
    "rotate": _apply_rotate,
}


def apply_dsa(x: Tensor, sample: DSASample) -> Tensor:
    """Apply a drawn :class:`DSASample` to an ``N×C×H×W`` batch; differentiable w.r.t. ``x``.

    A Siamese sample applies to a batch of any size; a per-image sample needs ``N == sample.batch_size``.
    """
    if not sample.tokens:
        return x
    if x.dim() != 4:
        raise ValueError(f"DSA expects an N×C×H×W batch, got shape {tuple(x.shape)}")
    if tuple(x.shape[-2:]) != sample.image_size:
        raise ValueError(f"batch images are {tuple(x.shape[-2:])} but the DSA sample was drawn for {sample.image_size}")
    if not sample.siamese and x.shape[0] != sample.batch_size:
        raise ValueError(
            f"per-image DSA sample has {sample.batch_size} parameter sets but the batch has {x.shape[0]} images; "
            "draw it with that batch_size or with siamese=True"
        )
    for token in sample.tokens:
        x = _APPLY[token](x, sample)
    return x.contiguous()


def diff_augment(
    x: Tensor,
    strategy: str,
    *,
    generator: torch.Generator,
    siamese: bool = False,
    params: DSAParams = DEFAULT_DSA_PARAMS,
) -> Tensor:
    """Draw and apply in one call (DC/DSA ``utils.py:DiffAugment`` with an explicit generator)."""
    if not parse_strategy(strategy):
        return x
    sample = sample_dsa(strategy, x.shape[0], generator=generator, siamese=siamese, params=params,
                        device=x.device, image_size=tuple(x.shape[-2:]))
    return apply_dsa(x, sample)
