"""Real datasets for distillation: registry, offline sets, torchvision sets, ZCA, class-indexed sampling.

Importing this package registers every dataset: ``digits``, ``mnist5k`` (offline), ``mnist``,
``fashionmnist`` (IDX files first, then torchvision), ``svhn``, ``cifar10``, ``cifar100`` and
``tinyimagenet``.

``RealDataModule`` is imported on first access, so data loading alone does not import pytorch_lightning.
"""

from typing import Any

from lightning_sdc.data import offline, tinyimagenet, torchvision_sets  # noqa: F401  (register the datasets)
from lightning_sdc.data.idx import read_idx, read_idx_dir, write_idx
from lightning_sdc.data.offline import stratified_split
from lightning_sdc.data.registry import (
    DATASETS,
    DatasetEntry,
    RawData,
    cache_dir,
    clear_dataset_cache,
    data_root,
    dataset_info,
    list_datasets,
    load_dataset,
    prepare_dataset,
    register_dataset,
)
from lightning_sdc.data.sampling import ClassIndexedImages
from lightning_sdc.data.spec import DatasetInfo, DatasetNotFoundError, DatasetSpec
from lightning_sdc.data.zca import ZCAWhitening

__all__ = ["DATASETS", "ClassIndexedImages", "DatasetEntry", "DatasetInfo", "DatasetNotFoundError",
           "DatasetSpec", "RawData", "RealDataModule", "ZCAWhitening", "cache_dir", "clear_dataset_cache",
           "data_root", "dataset_info", "list_datasets", "load_dataset", "prepare_dataset", "read_idx",
           "read_idx_dir", "register_dataset", "stratified_split", "write_idx"]


def __getattr__(name: str) -> Any:
    if name == "RealDataModule":
        from lightning_sdc.data.real import RealDataModule

        return RealDataModule
    raise AttributeError(f"module 'lightning_sdc.data' has no attribute {name!r}")
