"""``RealDataModule``: the real dataset a distillation method matches against.

Distillation is not epoch-shaped: ``train_dataloader`` serves an endless stream of integer ticks
(``0, 1, 2, …``, ``batch_size=None``) that only drives ``training_step``; each method draws its real batches
itself from ``trainer.datamodule.real`` (a :class:`ClassIndexedImages` on the trainer's root device) with
generators keyed on ``(seed, rank, step)``, so a resumed run draws exactly what the uninterrupted one would.
Validation and test loaders serve the real test split (map-style, so Lightning shards it under DDP).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lightning_sdc.checks import check_int
from lightning_sdc.data.registry import dataset_info, load_dataset, prepare_dataset
from lightning_sdc.data.sampling import ClassIndexedImages
from lightning_sdc.data.spec import DatasetInfo, DatasetSpec


class StepTicks(IterableDataset):
    """Yields ``0, 1, 2, …`` forever (plain ints, so nothing is copied to the device)."""

    def __iter__(self) -> Iterator[int]:
        return itertools.count()


class RealDataModule(pl.LightningDataModule):
    """Real training images, class-indexed on the device, plus the real test split.

    Args:
        dataset: a registered dataset name (``lightning_sdc.data.list_datasets()``).
        root: data directory (default ``$LIGHTNING_SDC_DATA`` or ``./data``).
        zca: ZCA-whiten train and test (MTT ``--zca``).
        download: let ``prepare_data`` fetch a missing torchvision/TinyImageNet dataset.
        test_batch_size: batch size of the validation/test loaders.
        device: where ``real`` lives: ``"auto"`` (the trainer's root device, CPU without a trainer) or a
            device string such as ``"cpu"``/``"cuda:0"``.
        dataset_kwargs: loader options, e.g. ``{"seed": 1}`` for the seeded split of ``digits``/``mnist5k``.
    """

    def __init__(
        self,
        dataset: str,
        root: str | None = None,
        zca: bool = False,
        download: bool = True,
        test_batch_size: int = 2048,
        device: str = "auto",
        dataset_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._info = dataset_info(dataset)  # KeyError listing the allowed names, before anything else
        check_int("test_batch_size", test_batch_size, 1)
        if device != "auto":
            try:
                torch.device(device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(
                    f"device={device!r} is not allowed; use 'auto' or a torch device string"
                ) from exc
        self.save_hyperparameters()
        self.dataset = self._info.name
        self.root = root
        self.zca = bool(zca)
        self.download = bool(download)
        self.test_batch_size = test_batch_size
        self.device_option = device
        self.dataset_kwargs = dict(dataset_kwargs or {})
        self.spec: DatasetSpec | None = None
        self.real: ClassIndexedImages | None = None

    # ------------------------------------------------------------------ metadata (available before setup)
    @property
    def info(self) -> DatasetInfo:
        """The loaded data's metadata after ``setup``, the static metadata before."""
        return self.spec.info if self.spec is not None else self._info

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.info.image_shape

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Download the dataset if missing and ``download`` is set (offline datasets: local cache only)."""
        if self.download:
            prepare_dataset(self.dataset, self.root)

    def _target_device(self) -> torch.device:
        if self.device_option != "auto":
            return torch.device(self.device_option)
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        """Load the spec once and (re)build ``real`` on the target device."""
        if self.spec is None:
            self.spec = load_dataset(
                self.dataset, self.root, download=self.download, zca=self.zca, **self.dataset_kwargs
            )
        device = self._target_device()
        if self.real is None or self.real.device != device:
            spec = self.spec
            self.real = ClassIndexedImages(spec.train_images.to(device), spec.train_labels, spec.num_classes)

    def _require_setup(self) -> DatasetSpec:
        if self.spec is None:
            raise RuntimeError(
                f"{type(self).__name__}({self.dataset!r}): call setup() before asking for loaders"
            )
        return self.spec

    def train_dataloader(self) -> DataLoader:
        """Endless integer ticks; methods sample real images from :attr:`real` themselves."""
        return DataLoader(StepTicks(), batch_size=None)

    def _test_loader(self) -> DataLoader:
        spec = self._require_setup()
        return DataLoader(
            TensorDataset(spec.test_images, spec.test_labels), batch_size=self.test_batch_size, shuffle=False
        )

    def val_dataloader(self) -> DataLoader:
        """The real test split (as the references validate on it)."""
        return self._test_loader()

    def test_dataloader(self) -> DataLoader:
        """The real test split."""
        return self._test_loader()

    def __repr__(self) -> str:
        return f"RealDataModule({self.dataset!r}, zca={self.zca}, loaded={self.spec is not None})"
