"""The references' torchvision datasets: MNIST, FashionMNIST, SVHN, CIFAR-10, CIFAR-100.

Constants and class order as DC/MTT ``utils.py:get_dataset``. CIFAR-100
uses the DC/MTT constants; DCC normalises CIFAR-100 with the CIFAR-10 ones.

MNIST and FashionMNIST are read straight from their IDX files (``lightning_sdc.data.idx``), so torchvision is
only imported to download them; FashionMNIST first looks in ``root``, ``root/FashionMNIST/raw``,
``$LIGHTNING_SDC_FASHIONMNIST_DIR`` and Debian's ``/usr/share/datasets/fashion-mnist``. Nothing is downloaded
unless ``download=True``; a missing dataset raises one
:class:`~lightning_sdc.data.spec.DatasetNotFoundError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_sdc.data.idx import find_idx_dir, read_idx_dir
from lightning_sdc.data.offline import DIGIT_NAMES
from lightning_sdc.data.registry import RawData, register_dataset
from lightning_sdc.data.spec import DatasetInfo, DatasetNotFoundError

DEBIAN_FASHIONMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_NAMES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
    camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
    dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
    leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange
    orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit
    raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel
    streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip
    turtle wardrobe whale willow_tree wolf woman worm""".split()
)

MNIST_INFO = DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,), DIGIT_NAMES)
FASHIONMNIST_INFO = DatasetInfo("fashionmnist", 10, (1, 28, 28), (0.2861,), (0.3530,), FASHION_NAMES)
SVHN_INFO = DatasetInfo(
    "svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), DIGIT_NAMES
)
CIFAR10_INFO = DatasetInfo(
    "cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), CIFAR10_NAMES
)
CIFAR100_INFO = DatasetInfo(
    "cifar100", 100, (3, 32, 32), (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), CIFAR100_NAMES
)


def download_hint(name: str, root: Path) -> str:
    return (
        f"To fetch it into {root}, pass download=True "
        f"(or call prepare_dataset({name!r}, root={str(root)!r})) "
        "on a machine with network access."
    )


def _torchvision_class(name: str, cls_name: str) -> Any:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise ImportError(
            f"dataset {name!r} needs torchvision to be read or downloaded: pip install torchvision"
        ) from None
    return getattr(tvd, cls_name)


def open_torchvision(
    name: str, cls_name: str, root: Path, download: bool, tried: list[str], **kwargs: Any
) -> Any:
    """``torchvision.datasets.<cls_name>(root, download=download, **kwargs)``; failures become one
    :class:`DatasetNotFoundError` naming ``name``, the ``tried`` paths and the offline alternatives."""
    cls = _torchvision_class(name, cls_name)
    try:
        return cls(str(root), download=download, **kwargs)
    except Exception as exc:  # noqa: BLE001 - network and archive errors vary; all mean "not available"
        if download:
            reason = f"download into {root} failed ({type(exc).__name__}: {exc})"
        elif isinstance(exc, (RuntimeError, OSError)):
            reason = f"not found and download=False (torchvision: {exc})"
        else:
            raise
        raise DatasetNotFoundError(name, tried, reason, download_hint(name, root)) from exc


def fashionmnist_dirs(root: Path) -> list[Path]:
    """Where FashionMNIST IDX files are looked for, in order (duplicates removed)."""
    dirs = [root, root / "FashionMNIST" / "raw"]
    env = os.environ.get("LIGHTNING_SDC_FASHIONMNIST_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(DEBIAN_FASHIONMNIST_DIR)
    return list(dict.fromkeys(dirs))


def _idx_dirs(name: str, root: Path) -> list[Path]:
    return fashionmnist_dirs(root) if name == "fashionmnist" else [root / "MNIST" / "raw"]


def _idx_dataset(name: str, tv_class: str, root: Path, download: bool) -> RawData:
    """Read an MNIST-format dataset from the first directory holding its IDX files; download if allowed."""
    dirs = _idx_dirs(name, root)
    found = find_idx_dir(dirs)
    tried = [f"{d}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]" for d in dirs]
    if found is None and download:
        open_torchvision(name, tv_class, root, True, tried, train=True)
        found = find_idx_dir([root / tv_class / "raw"])
    if found is None:
        raise DatasetNotFoundError(
            name, tried, "no directory holds the four IDX files and download=False", download_hint(name, root)
        )
    arrays = read_idx_dir(found)

    def images(key: str) -> torch.Tensor:
        return torch.from_numpy(arrays[key].copy()).unsqueeze(1)

    def labels(key: str) -> torch.Tensor:
        return torch.from_numpy(arrays[key].astype(np.int64))

    return RawData(
        images("train_images"),
        labels("train_labels"),
        images("test_images"),
        labels("test_labels"),
        str(found),
    )


def _prepare_idx(name: str, tv_class: str):
    def prepare(root: Path) -> None:
        if find_idx_dir(_idx_dirs(name, root)) is None:
            open_torchvision(name, tv_class, root, True, [str(d) for d in _idx_dirs(name, root)], train=True)

    return prepare


@register_dataset(MNIST_INFO, prepare=_prepare_idx("mnist", "MNIST"))
def mnist(root: Path, download: bool = False) -> RawData:
    """MNIST (60000/10000, 1×28×28) from ``root/MNIST/raw`` (torchvision's layout)."""
    return _idx_dataset("mnist", "MNIST", root, download)


@register_dataset(
    FASHIONMNIST_INFO,
    "fashion_mnist",
    "fashion-mnist",
    "fashionmnist_idx",
    prepare=_prepare_idx("fashionmnist", "FashionMNIST"),
)
def fashionmnist(root: Path, download: bool = False) -> RawData:
    """Fashion-MNIST (60000/10000, 1×28×28) from the first IDX directory found (see the module docstring)."""
    return _idx_dataset("fashionmnist", "FashionMNIST", root, download)


# ---------------------------------------------------------------------------------------------- SVHN / CIFAR
_ARRAY_SETS = {
    # name: (torchvision class, on-disk paths relative to root, split keyword for (train, test))
    "svhn": ("SVHN", ("train_32x32.mat", "test_32x32.mat"), ({"split": "train"}, {"split": "test"})),
    "cifar10": ("CIFAR10", ("cifar-10-batches-py",), ({"train": True}, {"train": False})),
    "cifar100": ("CIFAR100", ("cifar-100-python",), ({"train": True}, {"train": False})),
}


def _array_splits(name: str, root: Path, download: bool) -> tuple[Any, Any]:
    cls_name, rel, (train_kw, test_kw) = _ARRAY_SETS[name]
    tried = [str(root / r) for r in rel]
    return (
        open_torchvision(name, cls_name, root, download, tried, **train_kw),
        open_torchvision(name, cls_name, root, download, tried, **test_kw),
    )


def _to_raw(name: str, root: Path, train: Any, test: Any) -> RawData:
    def arrays(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "svhn":  # data N×3×32×32, labels already mapped 10 → 0 by torchvision
            return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(
                np.asarray(ds.labels, np.int64)
            )
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # N×H×W×C → N×C×H×W
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    (xtr, ytr), (xte, yte) = arrays(train), arrays(test)
    return RawData(xtr, ytr, xte, yte, str(root / _ARRAY_SETS[name][1][0]))


def _prepare_array(name: str):
    def prepare(root: Path) -> None:
        _array_splits(name, root, True)

    return prepare


@register_dataset(SVHN_INFO, prepare=_prepare_array("svhn"))
def svhn(root: Path, download: bool = False) -> RawData:
    """SVHN cropped digits (73257/26032, 3×32×32), torchvision ``SVHN`` splits train/test."""
    return _to_raw("svhn", root, *_array_splits("svhn", root, download))


@register_dataset(CIFAR10_INFO, "cifar-10", "cifar_10", prepare=_prepare_array("cifar10"))
def cifar10(root: Path, download: bool = False) -> RawData:
    """CIFAR-10 (50000/10000, 3×32×32), torchvision ``CIFAR10``."""
    return _to_raw("cifar10", root, *_array_splits("cifar10", root, download))


@register_dataset(CIFAR100_INFO, "cifar-100", "cifar_100", prepare=_prepare_array("cifar100"))
def cifar100(root: Path, download: bool = False) -> RawData:
    """CIFAR-100 fine labels (50000/10000, 3×32×32), torchvision ``CIFAR100``."""
    return _to_raw("cifar100", root, *_array_splits("cifar100", root, download))
