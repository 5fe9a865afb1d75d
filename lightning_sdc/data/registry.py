"""The dataset registry: static metadata, loading (normalise, optional ZCA), download and an in-process cache.

Replaces the ``if dataset == ...`` chain of DC/MTT ``utils.py:get_dataset``: every entry is a
:class:`DatasetEntry` (metadata + a loader of raw pixels + an optional ``prepare`` that downloads), registered
under a lower-case canonical name and aliases. :func:`load_dataset` turns the raw pixels into a
:class:`~lightning_sdc.data.spec.DatasetSpec` the way the references do (``ToTensor`` → ``Normalize`` →
ZCA when asked) and caches the result per process.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_sdc.checks import check_number
from lightning_sdc.data.spec import DatasetInfo, DatasetSpec
from lightning_sdc.data.zca import ZCAWhitening
from lightning_sdc.registry import Registry

ZCA_SPACES = ("pixels", "normalized")


@dataclass
class RawData:
    """What a loader returns: un-normalised images (``N×C×H×W``, values in ``[0, max_value]``) and labels."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    source: str
    max_value: float = 255.0
    split: dict[str, Any] | None = None
    class_names: tuple[str, ...] | None = None  # set by folder-defined datasets (overrides the static names)


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    ``loader(root: Path, download: bool, **options) -> RawData``; ``prepare(root: Path)`` fetches what the
    loader needs (``None`` when there is nothing to fetch); ``offline`` says that no network is ever needed.
    """

    info: DatasetInfo
    loader: Callable[..., RawData]
    prepare: Callable[[Path], None] | None = None
    offline: bool = False

    def options(self) -> dict[str, Any]:
        """Keyword options the loader accepts besides ``root`` and ``download``, with their defaults."""
        params = inspect.signature(self.loader).parameters
        return {k: p.default for k, p in params.items() if k not in ("root", "download")}

    def __call__(self, root: Path, download: bool = False, **options: Any) -> RawData:
        return self.loader(root, download, **options)


DATASETS: Registry[DatasetEntry] = Registry("dataset")
_CACHE: dict[tuple, DatasetSpec] = {}


def register_dataset(
    info: DatasetInfo, *aliases: str, prepare: Callable[[Path], None] | None = None, offline: bool = False
) -> Callable[[Callable[..., RawData]], Callable[..., RawData]]:
    """Decorator registering ``loader`` under ``info.name`` (and ``aliases``) as a :class:`DatasetEntry`."""

    def deco(loader: Callable[..., RawData]) -> Callable[..., RawData]:
        entry = DatasetEntry(info=info, loader=loader, prepare=prepare, offline=offline)
        DATASETS.register(info.name, *aliases)(entry)  # type: ignore[arg-type]
        return loader

    return deco


def list_datasets() -> list[str]:
    """Canonical names of every registered dataset."""
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """Static metadata of ``name`` without loading anything; ``KeyError`` listing the allowed names."""
    return DATASETS.get(name).info


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$LIGHTNING_SDC_DATA``, else ``./data`` (the references' ``--data_path`` default)."""
    if root is None:
        root = os.environ.get("LIGHTNING_SDC_DATA") or "data"
    return Path(root).expanduser()


def cache_dir() -> Path:
    """Per-user cache for derived files: ``$LIGHTNING_SDC_CACHE``, else ``$XDG_CACHE_HOME``
    (default ``~/.cache``) ``/lightning_sdc``."""
    env = os.environ.get("LIGHTNING_SDC_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lightning_sdc"


def prepare_dataset(name: str, root: str | os.PathLike | None = None) -> None:
    """Fetch ``name`` into ``root`` if it is not there yet (what ``RealDataModule.prepare_data`` calls).

    Offline datasets build their local cache (if any) and never touch the network.
    """
    entry = DATASETS.get(name)
    if entry.prepare is not None:
        entry.prepare(data_root(root))


def clear_dataset_cache() -> None:
    """Forget every spec cached by :func:`load_dataset` in this process."""
    _CACHE.clear()


def load_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool = False, zca: bool = False,
                 zca_eps: float = 0.1, zca_space: str = "pixels", **options: Any) -> DatasetSpec:
    """Load a registered dataset as a :class:`DatasetSpec` (DC/MTT ``utils.py:get_dataset``).

    Args:
        name: a registered name or alias (case-insensitive); see :func:`list_datasets`.
        root: data directory for datasets read from disk (default :func:`data_root`).
        download: allow fetching a missing dataset (torchvision sets, TinyImageNet).
        zca: whiten train and test with a ZCA fitted on the train images (MTT ``--zca``).
        zca_eps: ZCA regulariser (0.1 in MTT/FTD/DATM).
        zca_space: ``"pixels"`` fits/whitens the [0, 1] pixels as MTT does (its ``--zca`` skips
            ``Normalize``); ``"normalized"`` fits on the normalised images. Either way the spec's tensors and
            the ``ZCAWhitening`` take and give normalised-space inputs (see ``lightning_sdc.data.zca``).
        **options: loader options (e.g. ``seed`` of a seeded split); unknown ones raise ``ValueError``.

    Results are cached per process under ``(name, root, zca, zca_eps, zca_space, options)``; the returned spec
    is shared, so do not modify its tensors in place.
    """
    entry = DATASETS.get(name)
    canonical = entry.info.name
    allowed = entry.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for dataset {canonical!r}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    if zca_space not in ZCA_SPACES:
        raise ValueError(f"zca_space={zca_space!r} is not allowed; allowed: {', '.join(ZCA_SPACES)}")
    check_number("zca_eps", zca_eps)
    path = data_root(root)
    resolved = {**allowed, **options}  # explicit defaults and omitted options share a cache entry
    root_key = None if entry.offline else str(path.resolve())  # offline sets ignore root
    base_key = (canonical, root_key, tuple(sorted((k, repr(v)) for k, v in resolved.items())))
    key = base_key + ((float(zca_eps), zca_space) if zca else (None, None))
    if key in _CACHE:
        return _CACHE[key]
    base = _CACHE.get(base_key + (None, None))
    if base is None:
        base = _build_spec(entry, entry(path, bool(download), **options))
        _CACHE[base_key + (None, None)] = base
    spec = base
    if zca:
        pixel = zca_space == "pixels"
        whitening = ZCAWhitening.fit(
            base.train_images,
            zca_eps,
            pixel_mean=base.mean if pixel else None,
            pixel_std=base.std if pixel else None,
        )
        spec = base.with_images(
            whitening.transform(base.train_images), whitening.transform(base.test_images), whitening
        )
        _CACHE[key] = spec
    return spec


def _build_spec(entry: DatasetEntry, raw: RawData) -> DatasetSpec:
    """Check a loader's output against the metadata and normalise it (``ToTensor`` + ``Normalize``)."""
    info = entry.info
    if raw.class_names is not None and tuple(raw.class_names) != info.class_names:
        names = tuple(raw.class_names)
        info = dataclasses.replace(info, num_classes=len(names), class_names=names)
    tensors = {}
    for split, x, y in (("train", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
        if x.dim() != 4 or tuple(x.shape[1:]) != info.image_shape:
            raise ValueError(
                f"{raw.source}: {split} images have shape {tuple(x.shape)}, expected N×{info.image_shape}"
            )
        if y.shape != (x.shape[0],):
            raise ValueError(f"{raw.source}: {len(y)} {split} labels for {x.shape[0]} images")
        y = y.to(torch.int64)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
            raise ValueError(
                f"{raw.source}: {split} labels span [{int(y.min())}, {int(y.max())}], "
                f"outside [0, {info.num_classes})"
            )
        tensors[split] = (_normalise(x, raw.max_value, info), y)
    return DatasetSpec(
        info=info,
        train_images=tensors["train"][0],
        train_labels=tensors["train"][1],
        test_images=tensors["test"][0],
        test_labels=tensors["test"][1],
        source=raw.source,
        split=raw.split,
    )


def _normalise(x: Tensor, max_value: float, info: DatasetInfo) -> Tensor:
    """``(x / max_value - mean) / std`` per channel, as float32 (one pass, in place on the new float copy)."""
    out = x.to(torch.float32, copy=True).div_(float(max_value))
    out.sub_(torch.tensor(info.mean).view(1, -1, 1, 1)).div_(torch.tensor(info.std).view(1, -1, 1, 1))
    return out.contiguous()
