"""Class-indexed real images: DC's ``images_all`` + ``indices_class`` + ``get_images`` (DC ``main.py:72-87``).

DC materialises the whole normalised train set on the device, keeps one index list per class, and draws a
class batch as the first ``n`` entries of a fresh permutation of that class's indices (without replacement
within a batch). Here the permutation comes from an explicit ``torch.Generator`` (CPU or on the device), so a
step's real batch is a pure function of the generator's seed — what makes resume exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_sdc.checks import check_int


class ClassIndexedImages:
    """Images and labels on one device plus per-class index tensors.

    Args:
        images: ``N×C×H×W`` (kept on its device; move it first to sample on an accelerator).
        labels: ``N`` int class indices, on any device.
        num_classes: number of classes (default ``labels.max() + 1``); classes may be empty.
    """

    def __init__(self, images: Tensor, labels: Tensor, num_classes: int | None = None) -> None:
        if images.dim() < 2 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"need images N×… and labels N, got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        labels_cpu = labels.detach().to("cpu", torch.int64)
        if num_classes is None:
            num_classes = int(labels_cpu.max()) + 1 if len(labels_cpu) else 0
        if len(labels_cpu) and (int(labels_cpu.min()) < 0 or int(labels_cpu.max()) >= num_classes):
            raise ValueError(
                f"labels span [{int(labels_cpu.min())}, {int(labels_cpu.max())}], outside [0, {num_classes})"
            )
        self.images = images
        self.labels = labels.to(images.device)
        self.num_classes = int(num_classes)
        order = torch.argsort(labels_cpu, stable=True)
        counts = torch.bincount(labels_cpu, minlength=self.num_classes)
        self._cpu_index: list[Tensor] = list(torch.split(order, counts.tolist()))
        self._dev_index: list[Tensor] | None = None  # built on first use by a device-side generator
        self._counts = counts.tolist()

    # ------------------------------------------------------------------ views
    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def count(self, c: int) -> int:
        """Images of class ``c``."""
        self._check_class(c)
        return self._counts[c]

    def counts(self) -> list[int]:
        """Images per class."""
        return list(self._counts)

    def indices(self, c: int) -> Tensor:
        """Row indices (CPU, int64, ascending) of class ``c``."""
        self._check_class(c)
        return self._cpu_index[c]

    def to(self, device: str | torch.device) -> ClassIndexedImages:
        """A copy on ``device`` (``self`` if already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return ClassIndexedImages(self.images.to(device), self.labels, self.num_classes)

    # ------------------------------------------------------------------ sampling
    def _check_class(self, c: int) -> None:
        if (
            not (isinstance(c, int) or (isinstance(c, Tensor) and c.dim() == 0))
            or not 0 <= int(c) < self.num_classes
        ):
            raise ValueError(f"class {c!r} is not allowed; allowed: 0 … {self.num_classes - 1}")

    def _check_n(self, c: int, n: int) -> None:
        if check_int("n", n, 1) > self._counts[c]:
            raise ValueError(
                f"cannot draw n={n} distinct images of class {c}: it has {self._counts[c]} "
                f"(allowed: 1 ≤ n ≤ {self._counts[c]})"
            )

    def _rows(self, c: int, n: int, generator: torch.Generator) -> Tensor:
        """Indices of ``n`` distinct random rows of class ``c`` (first ``n`` of a permutation, as DC)."""
        perm = torch.randperm(self._counts[c], generator=generator, device=generator.device)[:n]
        if perm.device.type == "cpu":
            return self._cpu_index[c][perm]
        if self._dev_index is None or self._dev_index[0].device != perm.device:
            self._dev_index = [i.to(perm.device) for i in self._cpu_index]
        return self._dev_index[c][perm]

    def sample_indices(self, classes: Sequence[int], n: int, generator: torch.Generator) -> Tensor:
        """``[k·n]`` row indices: ``n`` distinct rows of each class in ``classes``, class after class."""
        for c in classes:
            self._check_class(c)
            self._check_n(int(c), n)
        return torch.cat([self._rows(int(c), n, generator) for c in classes])

    def sample(self, c: int, n: int, generator: torch.Generator) -> Tensor:
        """``n`` distinct random images of class ``c`` (DC ``get_images(c, n)``), ``[n, C, H, W]``."""
        return self.sample_many([c], n, generator)[0]

    def sample_many(self, classes: Sequence[int], n: int, generator: torch.Generator) -> Tensor:
        """``[k, n, C, H, W]``: ``n`` distinct images of each of the ``k`` classes, one gather on the device.

        Draws exactly what ``k`` successive :meth:`sample` calls with the same generator would.
        """
        classes = list(classes)
        if not classes:
            raise ValueError("classes must not be empty")
        idx = self.sample_indices(classes, n, generator).to(self.device, non_blocking=True)
        return self.images.index_select(0, idx).view(len(classes), n, *self.image_shape)

    def first_k(self, c: int, k: int, generator: torch.Generator) -> Tensor:
        """``k`` distinct random images of class ``c`` to initialise a synthetic set (DC ``--init real``)."""
        return self.sample(c, k, generator)

    def __repr__(self) -> str:
        shape, classes = self.image_shape, self.num_classes
        return f"ClassIndexedImages({len(self)} images {shape}, {classes} classes, {self.device})"
