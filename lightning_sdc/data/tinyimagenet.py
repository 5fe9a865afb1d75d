"""TinyImageNet (200 classes, 3×64×64) from a ``tiny-imagenet-200/`` folder or DC's ``tinyimagenet.pt``.

Folder layout (as distributed): ``wnids.txt``, optional ``words.txt``, ``train/<wnid>/images/*.JPEG`` and
``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``; the val split is the test split (as in DC and
MTT). Classes are numbered in sorted-wnid order, which is the ``ImageFolder`` order MTT
(``utils.py:get_dataset``) uses. DC instead loads ``<root>/tinyimagenet.pt``, a dict with ``classes``,
``images_train``/``labels_train``/``images_val``/``labels_val`` (uint8 ``N×3×64×64``) — accepted too.

Decoding 110k JPEGs takes a while, so the decoded folder is cached in DC's ``.pt`` format in
:func:`~lightning_sdc.data.registry.cache_dir` (``cache=False`` disables it). Normalisation: ImageNet
mean/std. The static class names are placeholders (``class_000`` …); a loaded spec carries
the folder's names (``words.txt``, else the wnids).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_sdc.data.registry import RawData, cache_dir, register_dataset
from lightning_sdc.data.spec import DatasetInfo, DatasetNotFoundError
from lightning_sdc.data.torchvision_sets import download_hint
from lightning_sdc.io import atomic_torch_save, safe_torch_load

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_DIR = "tiny-imagenet-200"
TINY_PT = "tinyimagenet.pt"
TINYIMAGENET_INFO = DatasetInfo(
    "tinyimagenet",
    200,
    (3, 64, 64),
    (0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225),
    tuple(f"class_{i:03d}" for i in range(200)),
)


def _folder_candidates(root: Path) -> list[Path]:
    return [root / TINY_DIR, root]


def find_tinyimagenet(root: Path) -> Path | None:
    """First of ``root/tiny-imagenet-200``, ``root`` holding ``wnids.txt``, else ``root/tinyimagenet.pt``."""
    for d in _folder_candidates(root):
        if (d / "wnids.txt").is_file():
            return d
    return root / TINY_PT if (root / TINY_PT).is_file() else None


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:  # some TinyImageNet JPEGs are greyscale
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if arr.shape != (64, 64, 3):
        raise ValueError(f"{path}: TinyImageNet images are 64×64, got {arr.shape[:2]}")
    return arr


def _stack(paths: list[Path]) -> torch.Tensor:
    out = np.empty((len(paths), 64, 64, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = _read_rgb(p)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _class_names(folder: Path, wnids: list[str]) -> list[str]:
    words = folder / "words.txt"
    if not words.is_file():
        return wnids
    table = {}
    for line in words.read_text(encoding="utf-8").splitlines():
        wnid, _, names = line.partition("\t")
        table[wnid.strip()] = names.split(",")[0].strip()
    return [table.get(w) or w for w in wnids]


def read_tinyimagenet_folder(folder: Path) -> dict[str, Any]:
    """Decode a ``tiny-imagenet-200`` folder into DC's ``tinyimagenet.pt`` dict (uint8 ``N×3×64×64``)."""
    wnids = sorted(
        {w.strip() for w in (folder / "wnids.txt").read_text(encoding="utf-8").split() if w.strip()}
    )
    if not wnids:
        raise ValueError(f"{folder / 'wnids.txt'} lists no classes")
    index = {w: i for i, w in enumerate(wnids)}
    train_paths, train_labels = [], []
    for w in wnids:
        files = sorted((folder / "train" / w / "images").glob("*.JPEG"))
        if not files:
            raise ValueError(f"TinyImageNet class {w} has no images in {folder / 'train' / w / 'images'}")
        train_paths += files
        train_labels += [index[w]] * len(files)
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise FileNotFoundError(f"TinyImageNet val labels {annotations} not found")
    val_paths, val_labels = [], []
    for line in annotations.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in index:
            raise ValueError(f"{annotations}: {fields[0]} has wnid {fields[1]!r}, not in wnids.txt")
        val_paths.append(folder / "val" / "images" / fields[0])
        val_labels.append(index[fields[1]])
    return {
        "classes": _class_names(folder, wnids),
        "images_train": _stack(train_paths),
        "labels_train": torch.tensor(train_labels, dtype=torch.int64),
        "images_val": _stack(val_paths),
        "labels_val": torch.tensor(val_labels, dtype=torch.int64),
    }


def _cache_file(folder: Path) -> Path:
    marker = folder / "wnids.txt"
    annotations = folder / "val" / "val_annotations.txt"
    stamp = f"{folder.resolve()}|{marker.stat().st_mtime_ns}|{annotations.stat().st_size}"
    return cache_dir() / f"tinyimagenet_{hashlib.sha1(stamp.encode()).hexdigest()[:16]}.pt"


def _check_pt(data: Any, source: Path) -> dict[str, Any]:
    keys = ("classes", "images_train", "labels_train", "images_val", "labels_val")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise ValueError(
            f"{source}: expected a dict with keys {', '.join(keys)} (DC's tinyimagenet.pt format)"
        )
    return data


def _download(root: Path) -> None:
    try:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TINY_URL, download_root=str(root))
    except Exception as exc:  # noqa: BLE001 - any network/archive failure means "not available"
        raise DatasetNotFoundError(
            "tinyimagenet",
            [str(p) for p in _folder_candidates(root)] + [str(root / TINY_PT)],
            f"download of {TINY_URL} failed ({type(exc).__name__}: {exc})",
        ) from exc


def _prepare(root: Path) -> None:
    if find_tinyimagenet(root) is None:
        _download(root)


@register_dataset(
    TINYIMAGENET_INFO, "tiny", "tiny-imagenet", "tiny_imagenet", "tiny-imagenet-200", prepare=_prepare
)
def tinyimagenet(root: Path, download: bool = False, cache: bool = True) -> RawData:
    """TinyImageNet train (100000) / val (10000) at 3×64×64 (see the module docstring)."""
    found = find_tinyimagenet(root)
    if found is None and download:
        _download(root)
        found = find_tinyimagenet(root)
    if found is None:
        tried = [f"{p}/wnids.txt" for p in _folder_candidates(root)] + [str(root / TINY_PT)]
        raise DatasetNotFoundError(
            "tinyimagenet",
            tried,
            "no tiny-imagenet-200 folder or tinyimagenet.pt and download=False",
            download_hint("tinyimagenet", root),
        )
    if found.suffix == ".pt":
        data = _check_pt(safe_torch_load(found, what="TinyImageNet file"), found)
    else:
        cached = _cache_file(found) if cache else None
        if cached is not None and cached.is_file():
            data = _check_pt(safe_torch_load(cached, what="TinyImageNet cache"), cached)
        else:
            data = read_tinyimagenet_folder(found)
            if cached is not None:
                try:
                    atomic_torch_save(data, cached)
                except OSError:
                    pass  # read-only cache: decode again next time
    return RawData(
        data["images_train"],
        torch.as_tensor(data["labels_train"]),
        data["images_val"],
        torch.as_tensor(data["labels_val"]),
        str(found),
        255.0,
        None,
        tuple(str(c) for c in data["classes"]),
    )
