"""ZCA whitening as MTT/FTD/DATM apply it (MTT ``utils.py:get_dataset``, ``kornia.enhance.ZCAWhitening``).

The references fit ``kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)`` on **all training images** and
replace train and test sets by their whitened versions. With μ the feature mean and
Σ = U S Uᵀ the unbiased feature covariance, whitening is ``x ↦ (x − μ) W`` with ``W = U (S + eps)^(-1/2) Uᵀ``
and the inverse is ``z ↦ z U (S + eps)^(1/2) Uᵀ + μ``. The fit is delegated to kornia; the three resulting
tensors are kept so the transform can be saved with a synthetic set and re-applied later.

Input space. This package keeps real images per-channel normalised; the references fit ZCA on the
*un-normalised* [0, 1] pixels (MTT loads with ``ToTensor()`` only when ``--zca``), and eps = 0.1 is a
regulariser whose strength depends on that scale. ``fit(x, pixel_mean=..., pixel_std=...)`` therefore first
maps the normalised ``x`` back to pixels (``x·std + mean``) and whitens those, exactly as the references do;
:meth:`transform` takes normalised images and :meth:`inverse` returns normalised images, so callers never see
the difference. Without ``pixel_mean``/``pixel_std`` the fit is done on the normalised values directly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_sdc.checks import check_number

FORMAT = "lightning_sdc.ZCAWhitening"
_CHUNK = 8192  # rows per matmul when transforming large sets (bounds the temporary memory)


class ZCAWhitening:
    """A fitted ZCA transform over flattened ``C×H×W`` images (see the module docstring)."""

    def __init__(self, mean_vector: Tensor, transform_matrix: Tensor, inverse_matrix: Tensor,
                 image_shape: tuple[int, int, int], eps: float, pixel_mean: tuple[float, ...] | None = None,
                 pixel_std: tuple[float, ...] | None = None) -> None:
        dim = int(torch.Size(image_shape).numel())
        if (
            mean_vector.shape != (dim,)
            or transform_matrix.shape != (dim, dim)
            or inverse_matrix.shape != (dim, dim)
        ):
            raise ValueError(
                f"ZCA tensors do not match image_shape {tuple(image_shape)} (D={dim}): "
                f"mean {tuple(mean_vector.shape)}"
                f", W {tuple(transform_matrix.shape)}, W^-1 {tuple(inverse_matrix.shape)}"
            )
        if (pixel_mean is None) != (pixel_std is None):
            raise ValueError("give both pixel_mean and pixel_std, or neither")
        self.mean_vector = mean_vector.detach().float().cpu()
        self.transform_matrix = transform_matrix.detach().float().cpu()
        self.inverse_matrix = inverse_matrix.detach().float().cpu()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.eps = float(eps)
        self.pixel_mean = None if pixel_mean is None else tuple(float(m) for m in pixel_mean)
        self.pixel_std = None if pixel_std is None else tuple(float(s) for s in pixel_std)
        self._on: dict[tuple[torch.device, torch.dtype], tuple[Tensor, ...]] = {}

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, images: Tensor, eps: float = 0.1, *, pixel_mean: tuple[float, ...] | None = None,
            pixel_std: tuple[float, ...] | None = None) -> ZCAWhitening:
        """Fit on ``images`` (``N×C×H×W``, normalised) with kornia's ``ZCAWhitening(eps, compute_inv=True)``.

        ``pixel_mean``/``pixel_std`` (the normalisation constants) make the fit happen in [0, 1] pixel space,
        as MTT does; ``eps`` = 0.1 as in MTT/FTD/DATM.
        """
        from kornia.enhance import ZCAWhitening as KorniaZCA

        if images.dim() != 4 or images.shape[0] < 2:
            raise ValueError(f"ZCA needs at least two N×C×H×W images, got shape {tuple(images.shape)}")
        check_number("ZCA eps", eps)
        x = images.detach().float()
        if pixel_mean is not None and pixel_std is not None:
            x = _affine(x, pixel_std, pixel_mean)
        zca = KorniaZCA(eps=eps, compute_inv=True).fit(x)
        return cls(
            zca.mean_vector.reshape(-1),
            zca.transform_matrix,
            zca.transform_inv,
            tuple(images.shape[1:]),
            eps,
            pixel_mean,
            pixel_std,
        )

    # ------------------------------------------------------------------ applying
    def _tensors(self, like: Tensor) -> tuple[Tensor, ...]:
        key = (like.device, like.dtype)
        if key not in self._on:
            self._on[key] = tuple(
                t.to(device=like.device, dtype=like.dtype)
                for t in (self.mean_vector, self.transform_matrix, self.inverse_matrix)
            )
        return self._on[key]

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[-3:]) != self.image_shape:
            raise ValueError(f"ZCA was fitted on images of shape {self.image_shape}, got {tuple(x.shape)}")

    def transform(self, x: Tensor) -> Tensor:
        """Whiten ``x`` (``…×C×H×W``, normalised); differentiable, on ``x``'s device and dtype."""
        self._check(x)
        if self.pixel_mean is not None:
            x = _affine(x, self.pixel_std, self.pixel_mean)
        mu, w, _ = self._tensors(x)
        return _apply_rows(x, lambda rows: (rows - mu) @ w)

    def inverse(self, x: Tensor) -> Tensor:
        """Undo :meth:`transform`: back to normalised images (``…×C×H×W``)."""
        self._check(x)
        mu, _, w_inv = self._tensors(x)
        out = _apply_rows(x, lambda rows: rows @ w_inv + mu)
        if self.pixel_mean is not None:
            inv_std = tuple(1.0 / s for s in self.pixel_std)
            out = _affine(out, inv_std, tuple(-m * r for m, r in zip(self.pixel_mean, inv_std)))
        return out

    __call__ = transform

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain tensors and primitives (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "format": FORMAT,
            "mean_vector": self.mean_vector.clone(),
            "transform_matrix": self.transform_matrix.clone(),
            "inverse_matrix": self.inverse_matrix.clone(),
            "image_shape": list(self.image_shape),
            "eps": self.eps,
            "pixel_mean": None if self.pixel_mean is None else list(self.pixel_mean),
            "pixel_std": None if self.pixel_std is None else list(self.pixel_std),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ZCAWhitening:
        """Rebuild from :meth:`to_dict` output; ``ValueError`` naming missing keys."""
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"not a ZCAWhitening state (expected format {FORMAT!r}): {type(state).__name__}")
        required = ("mean_vector", "transform_matrix", "inverse_matrix", "image_shape", "eps")
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"ZCAWhitening state lacks {', '.join(missing)}")
        pm, ps = state.get("pixel_mean"), state.get("pixel_std")
        return cls(
            state["mean_vector"],
            state["transform_matrix"],
            state["inverse_matrix"],
            tuple(state["image_shape"]),
            state["eps"],
            None if pm is None else tuple(pm),
            None if ps is None else tuple(ps),
        )

    def __repr__(self) -> str:
        space = "pixels" if self.pixel_mean is not None else "normalized"
        return f"ZCAWhitening(image_shape={self.image_shape}, eps={self.eps}, fitted_on={space})"


def _affine(x: Tensor, scale: tuple[float, ...] | None, shift: tuple[float, ...] | None) -> Tensor:
    """Per-channel ``x·scale + shift`` on ``…×C×H×W``."""
    s = torch.tensor(scale, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    b = torch.tensor(shift, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x * s + b


def _apply_rows(x: Tensor, fn: Any) -> Tensor:
    """Apply a row-wise linear map to flattened images, in chunks when no gradient is needed."""
    shape = x.shape
    rows = x.reshape(-1, shape[-3] * shape[-2] * shape[-1])
    if rows.requires_grad or rows.shape[0] <= _CHUNK:
        return fn(rows).reshape(shape)
    return torch.cat([fn(part) for part in rows.split(_CHUNK)]).reshape(shape)
