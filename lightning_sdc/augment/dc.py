"""DC's evaluation-time augmentation (DC ``utils.py:get_daparam`` and ``utils.py:augment``).

Not differentiable and not Siamese: it only augments the batches that train the *evaluation* networks. Each
image gets exactly one operation, drawn uniformly from the strategy's tokens:

* ``crop``: pad by ``crop`` pixels filled with the *batch's* per-channel mean, take the H×W window at offsets
  ``r, c ∈ {0, …, 2·crop − 1}`` (shifts −crop … crop − 1, asymmetric, as the reference).
* ``scale``: ``h = int(U(1 − s, 1 + s)·H)``, ``w = int(U(1 − s, 1 + s)·H)`` — both from the *height*, a
  reference quirk kept on purpose — nearest-neighbour resize (``F.interpolate``'s default ``nearest``
  index rule, reproduced exactly), pasted centred on a zero canvas of side ``max(h, w, H, W)``, centre
  H×W window.
* ``rotate``: an integer angle in ``[−rotate, rotate)`` degrees, counter-clockwise for positive angles (as
  ``scipy.ndimage.rotate``), outside filled with the mean of the per-channel batch means.
  **Difference from the reference:** the reference calls ``scipy.ndimage.rotate`` on the CPU (cubic spline,
  ``reshape=True``, then a centre crop whose integer offset can shift the result by half a pixel); here a
  bilinear ``grid_sample`` rotates about the exact image centre, on the batch's device, without NumPy.
* ``noise``: add ``noise·N(0, 1)``.

Vectorised over the images that drew each operation; the reference loops over images in Python. Every draw
comes from the given generator (the reference uses NumPy's global RNG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_sdc.augment.geometry import affine_sample, gather_rows_cols, rotation_theta, theta_grid
from lightning_sdc.checks import check_int, check_number

DC_AUG_TOKENS = ("crop", "scale", "rotate", "noise")


@dataclass(frozen=True)
class DCAugParams:
    """Magnitudes of DC ``get_daparam``: crop 4 px, scale 0.2, rotate 45°, noise 0.001."""

    crop: int = 4
    scale: float = 0.2
    rotate: int = 45
    noise: float = 0.001

    def __post_init__(self) -> None:
        check_int("DCAugParams.crop", self.crop, 1)
        check_int("DCAugParams.rotate", self.rotate, 1)
        check_number("DCAugParams.scale", self.scale, strict=False, below=1)
        check_number("DCAugParams.noise", self.noise, strict=False)


def dc_augment_strategy(dataset: str, arch: str) -> str:
    """DC ``get_daparam``'s strategy: ``'crop_noise'`` for a ConvNetBN evaluation model (this wins),
    ``'crop_scale_rotate'`` for MNIST (also its subsets, e.g. ``mnist5k``), ``'none'`` otherwise.

    The 8×8 scikit-learn ``digits`` stand-in is not MNIST here: a 4-pixel crop would move half the image.
    """
    if arch.lower() == "convnetbn":
        return "crop_noise"
    name = str(dataset).lower()  # a non-string name is refused by the dataset registry, with its type
    if name.startswith("mnist"):
        return "crop_scale_rotate"
    return "none"


def parse_dc_strategy(strategy: str) -> tuple[str, ...]:
    """Tokens of a DC augmentation strategy; ``()`` for ``'none'``/``'None'``/``''``."""
    if not isinstance(strategy, str):
        raise ValueError(f"DC augmentation strategy must be a string, got {type(strategy).__name__}")
    if strategy in ("", "none", "None"):
        return ()
    tokens = tuple(strategy.split("_"))
    bad = [t for t in tokens if t not in DC_AUG_TOKENS]
    if bad:
        raise ValueError(
            f"unknown DC augmentation token(s) {bad} in {strategy!r}; allowed: {', '.join(DC_AUG_TOKENS)} "
            "joined by '_', or 'none'"
        )
    return tokens


def crop_with_fill(x: Tensor, offsets: Tensor, channel_mean: Tensor, pad: int) -> Tensor:
    """Pad ``x`` by ``pad`` pixels of value ``channel_mean[c]`` and take the H×W window at ``offsets``
    (``(m, 2)`` int64 row/column offsets into the padded image, each in ``{0, …, 2·pad}``)."""
    m, c, h, w = x.shape
    canvas = channel_mean.view(1, c, 1, 1).expand(m, c, h + 2 * pad, w + 2 * pad).clone()
    canvas[:, :, pad : pad + h, pad : pad + w] = x
    rows = torch.arange(h, device=x.device) + offsets[:, :1]
    cols = torch.arange(w, device=x.device) + offsets[:, 1:]
    return gather_rows_cols(canvas, rows, cols)


def _nearest_index(pos: Tensor, resized: Tensor, orig: int) -> Tensor:
    """``F.interpolate(mode='nearest')``'s source index ``min(floor(t·(orig/resized)), orig − 1)``, in fp32
    as torch computes it, for positions ``pos`` (``(m, L)``) in resized sides ``resized`` (``(m,)``)."""
    ratio = torch.tensor(float(orig), dtype=torch.float32, device=resized.device) / resized.float()
    return (pos.float() * ratio[:, None]).floor().long().clamp_(max=orig - 1)


def resize_nearest_centred(x: Tensor, new_h: Tensor, new_w: Tensor) -> Tensor:
    """Per image: nearest resize to ``new_h[i] × new_w[i]``, paste centred on a zero canvas of side
    ``max(new_h, new_w, H, W)``, take the centre H×W window (DC ``augment``'s ``scalefun``)."""
    _, _, h, w = x.shape
    side = torch.stack([new_h, new_w, torch.full_like(new_h, max(h, w))], 1).amax(1)
    index = []
    for size, orig in ((new_h, h), (new_w, w)):
        # output pixel k sits at canvas position k + (side − orig)//2, i.e. at t = k + (side − orig)//2 −
        # (side − size)//2 in the pasted resize (valid when 0 ≤ t < size), whose pixel t came from source
        # pixel nearest(t) of the original side.
        t = torch.arange(orig, device=x.device) + ((side - orig) // 2 - (side - size) // 2)[:, None]
        valid = (t >= 0) & (t < size[:, None])
        src = _nearest_index(t.clamp(min=0), size, orig)
        index.append(torch.where(valid, src + 1, torch.zeros_like(src)))  # 0 → the zero border below
    return gather_rows_cols(F.pad(x, (1, 0, 1, 0)), index[0], index[1])


def rotate_with_fill(x: Tensor, degrees: Tensor, fill: Tensor | float) -> Tensor:
    """Rotate each image counter-clockwise by ``degrees[i]`` about its centre (bilinear), ``fill`` outside."""
    _, _, h, w = x.shape
    theta = rotation_theta(degrees.double() * (math.pi / 180.0), aspect=h / w)
    grid = theta_grid(theta, (h, w), align_corners=False)
    return affine_sample(x - fill, grid, align_corners=False) + fill


def _draw(shape: tuple[int, ...], generator: torch.Generator, device: torch.device, *, normal: bool = False) -> Tensor:
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=generator, device=generator.device, dtype=torch.float64).to(device)


def _draw_int(shape: tuple[int, ...], low: int, high: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform integers in ``[low, high)``."""
    return (_draw(shape, generator, device) * (high - low)).floor().long().clamp_(max=high - low - 1) + low


def _augment_part(x: Tensor, token: str, channel_mean: Tensor, g: torch.Generator, p: DCAugParams) -> Tensor:
    m, _, h, _ = x.shape
    if token == "crop":
        return crop_with_fill(x, _draw_int((m, 2), 0, 2 * p.crop, g, x.device), channel_mean, p.crop)
    if token == "scale":
        # both sides from the height, as the reference
        sides = (_draw((m, 2), g, x.device) * (2 * p.scale) + (1 - p.scale)).mul(h).floor().long().clamp_(min=1)
        return resize_nearest_centred(x, sides[:, 0], sides[:, 1])
    if token == "rotate":
        return rotate_with_fill(x, _draw_int((m,), -p.rotate, p.rotate, g, x.device), channel_mean.mean())
    return x + p.noise * _draw(tuple(x.shape), g, x.device, normal=True).to(x.dtype)


def dc_augment(
    images: Tensor, strategy: str, generator: torch.Generator, *, params: DCAugParams | None = None
) -> Tensor:
    """DC ``utils.py:augment``: one operation per image drawn uniformly from ``strategy``'s tokens.

    Returns a new tensor (the input is not modified, unlike the reference's in-place update) without
    gradient history. The per-image choice is drawn on the generator's device and read on the CPU (a sync
    only when the generator is a CUDA one).
    """
    tokens = parse_dc_strategy(strategy)
    if not tokens:
        return images
    if images.dim() != 4:
        raise ValueError(f"dc_augment expects an N×C×H×W batch, got shape {tuple(images.shape)}")
    p = params or DCAugParams()
    with torch.no_grad():
        x = images.detach()
        choice = torch.randint(len(tokens), (x.shape[0],), generator=generator, device=generator.device).cpu()
        channel_mean = x.mean(dim=(0, 2, 3))
        out = x.clone()
        for k, token in enumerate(tokens):
            idx = (choice == k).nonzero().flatten()
            if idx.numel() == 0:
                continue
            idx = idx.to(x.device)
            out.index_copy_(0, idx, _augment_part(x.index_select(0, idx), token, channel_mean, generator, p))
    return out
