"""Pictures of synthetic sets and the one atomic PNG writer of the package's matplotlib figures.

:func:`grid_image` lays out one or more sets as the DC repository's ``vis_*.png``: one row per class (its
``ipc`` images side by side), the class name at the row start, each image upscaled (nearest neighbour) to at
least ``min_size`` pixels. Several sets (``compare``: every value of every seed) stand side by side, each under
its own title, sharing the class names. :func:`save_grid` writes it as a PNG atomically; the array
(``np.asarray(image)``, HWC uint8) is what TensorBoard's ``add_image(..., dataformats="HWC")`` takes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_sdc.io import atomic_write

#: the smallest side of an image in a grid, in pixels (MNIST's 28 px are drawn 3x, digits' 8 px 8x)
MIN_SIZE = 64


def _hwc(pixels: Any) -> np.ndarray:
    """``[N, C, H, W]`` pixels in [0, 1] (a tensor or an array) as ``[N, H, W, 3]`` uint8."""
    x = pixels.detach().float().cpu().numpy() if hasattr(pixels, "detach") else np.asarray(pixels, dtype=np.float32)
    x = np.clip(x, 0.0, 1.0).transpose(0, 2, 3, 1)
    x = np.repeat(x, 3, axis=3) if x.shape[3] == 1 else x[..., :3]
    return (x * 255.0 + 0.5).astype(np.uint8)


def grid_image(panels: Sequence[tuple[str, Any]], class_names: Sequence[str], *, min_size: int = MIN_SIZE,
               pad: int = 2, gap: int = 16) -> Any:
    """A PIL image of the sets in ``panels`` (``(title, pixels)``, pixels ``[classes × ipc, C, H, W]`` in [0, 1],
    class-major), side by side: one row per class, class names at the row starts, titles (``\\n`` splits lines)
    above the panels. Panels may differ in IPC but not in image size or class count."""
    from PIL import Image, ImageDraw, ImageFont

    if not panels:
        raise ValueError("grid_image needs at least one set")
    arrays = [_hwc(p) for _, p in panels]
    classes, (h, w) = len(class_names), arrays[0].shape[1:3]
    for (title, _), a in zip(panels, arrays):
        if a.shape[1:3] != (h, w) or a.shape[0] % classes or not a.shape[0]:
            raise ValueError(f"set {title!r}: {a.shape[0]} images of {a.shape[1]}×{a.shape[2]} px do not fill "
                             f"{classes} class rows of {h}×{w} px images")
    scale = max(1, math.ceil(min_size / min(h, w)))
    th, tw = h * scale, w * scale
    from matplotlib import get_data_path  # DejaVu Sans: Greek letters (λ) in titles

    font = ImageFont.truetype(str(Path(get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), max(12, min(th // 4, 18)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max(measure.textlength(str(n), font=font) for n in class_names)) + 3 * pad
    line_h = font.size + 4
    header = line_h * max(len(t.split("\n")) if t else 0 for t, _ in panels)
    widths = [max(a.shape[0] // classes * (tw + pad), *(int(measure.textlength(line, font=font)) + pad
                                                         for line in (title.split("\n") if title else [""])))
              for (title, _), a in zip(panels, arrays)]  # a panel is as wide as its images or its title
    canvas = Image.new("RGB", (label_w + sum(widths) + gap * (len(arrays) - 1) + pad, header + classes * (th + pad) + pad),
                       "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(class_names):
        draw.text((pad, header + pad + c * (th + pad) + th // 2), str(name), fill="black", font=font, anchor="lm")
    x0 = label_w
    for (title, _), a, width in zip(panels, arrays, widths):
        ipc = a.shape[0] // classes
        for k, line in enumerate(title.split("\n") if title else []):
            draw.text((x0 + width // 2, k * line_h + 2), line, fill="black", font=font, anchor="mt")
        tiles, left = a.repeat(scale, axis=1).repeat(scale, axis=2), x0 + pad + (width - ipc * (tw + pad)) // 2
        for i, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (left + i % ipc * (tw + pad), header + pad + i // ipc * (th + pad)))
        x0 += width + gap
    return canvas


def save_grid(path: str | os.PathLike, panels: Sequence[tuple[str, Any]], class_names: Sequence[str], **kw: Any
              ) -> Path:
    """Write :func:`grid_image` of ``panels`` as a PNG at ``path`` atomically."""
    image = grid_image(panels, class_names, **kw)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a matplotlib figure as a PNG at ``path`` atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)
