"""Reading MNIST-style IDX files (``*-idx3-ubyte[.gz]`` images, ``*-idx1-ubyte[.gz]`` labels) directly.

torchvision's ``FashionMNIST(download=False)`` only accepts the decompressed files under
``<root>/FashionMNIST/raw``; reading the IDX format here (4-byte big-endian magic ``0x00000800 + ndim`` for
unsigned bytes, then ``ndim`` big-endian int32 sizes, then the data) lets the Debian
``dataset-fashion-mnist`` package or any directory of ``.gz`` files be used as is.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightning_sdc.io import atomic_write

IDX_UBYTE = 0x800
IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte", 3),
    "train_labels": ("train-labels-idx1-ubyte", 1),
    "test_images": ("t10k-images-idx3-ubyte", 3),
    "test_labels": ("t10k-labels-idx1-ubyte", 1),
}


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzip-compressed if it ends in ``.gz``) with ``ndim`` dimensions.

    Raises ``ValueError`` naming ``path`` if the file is truncated, not gzip, has the wrong magic number
    (expected ``0x{800+ndim:x}``) or a size that disagrees with its header.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (EOFError, OSError) as exc:  # truncated or not gzip (gzip.BadGzipFile is an OSError)
        raise ValueError(f"corrupt IDX file {path}: cannot decompress ({type(exc).__name__}: {exc})") from exc
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"corrupt IDX file {path}: {len(data)} bytes, shorter than the {header}-byte header")
    magic = int.from_bytes(data[:4], "big")
    if magic != IDX_UBYTE + ndim:
        raise ValueError(
            f"corrupt IDX file {path}: magic number 0x{magic:x}, expected 0x{IDX_UBYTE + ndim:x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"corrupt IDX file {path}: header says shape {shape} ({expected} bytes) but the file holds "
            f"{len(data)} bytes{' (truncated)' if len(data) < expected else ''}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def idx_file(directory: Path, stem: str) -> Path | None:
    """``<directory>/<stem>.gz`` or ``<directory>/<stem>``, whichever exists (compressed first)."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def find_idx_dir(directories: Sequence[Path]) -> Path | None:
    """The first directory holding all four IDX files (each ``.gz`` or not), else ``None``."""
    for d in directories:
        if all(idx_file(d, stem) is not None for stem, _ in IDX_FILES.values()):
            return d
    return None


def read_idx_dir(directory: Path, num_classes: int = 10) -> dict[str, np.ndarray]:
    """Read the four IDX files of ``directory`` into ``train_images`` (N×H×W), ``train_labels`` … arrays.

    Checks that images and labels agree in count and that labels are below ``num_classes``.
    """
    out: dict[str, np.ndarray] = {}
    for key, (stem, ndim) in IDX_FILES.items():
        path = idx_file(directory, stem)
        if path is None:
            raise FileNotFoundError(f"IDX file {directory / stem}[.gz] not found")
        out[key] = read_idx(path, ndim)
    for split in ("train", "test"):
        n_img, n_lab = len(out[f"{split}_images"]), len(out[f"{split}_labels"])
        if n_img != n_lab:
            raise ValueError(f"IDX files in {directory}: {n_img} {split} images but {n_lab} {split} labels")
        if n_lab and int(out[f"{split}_labels"].max()) >= num_classes:
            raise ValueError(
                f"IDX files in {directory}: {split} label {int(out[f'{split}_labels'].max())} "
                f"is not below num_classes={num_classes}"
            )
    return out


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzip-compressed when ``path`` ends in ``.gz``), atomically."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = (IDX_UBYTE + array.ndim).to_bytes(4, "big")
    payload += b"".join(int(s).to_bytes(4, "big") for s in array.shape) + array.tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(payload))
