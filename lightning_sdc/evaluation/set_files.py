"""One loader for every synthetic-set layout that ``lightning-sdc evaluate`` scores, and the checks every loaded
set gets.

Layouts (:data:`EXPECTED` is the one-line description every error repeats):

* **this library's set file** (``synset.pt``, :meth:`SyntheticSet.save`): a dict of tensors and primitives with
  the dataset name, normalisation, ZCA state and — since it is recorded — the making method's evaluation
  protocol (``eval_protocol``);
* **the TM pair** ``images_<s>.pt`` + ``labels_<s>.pt`` (+ ``lr_<s>.pt``), as MTT/FTD/DATM save their sets and
  as this library's exporter writes them (:meth:`SyntheticSet.export_tm`): ``images`` ``(N, C, H, W)`` float in
  the dataset's normalised (ZCA-whitened with ``--zca``) space; ``labels`` ``(N,)`` integer classes (MTT) or
  ``(N, K)`` float logits whose softmax are the targets (DATM's learned labels; tm_reference §5.4/5.6); ``lr``
  a scalar, the learned student lr used as evaluation lr (MTT/DATM ``syn_lr``). The pair records no dataset:
  it is taken from ``--dataset``, or from a ``synset.pt`` beside the pair (this library's exports).

A path may be the set file, the images (or labels) file of a pair, or a directory holding either (``synset.pt``
first, then ``images_best.pt``, then a single ``images_*.pt``).

Every set is checked before any network is trained (:func:`lightning_sdc.synthetic.check_set`): finite images/labels/lr, ``num_classes
× ipc`` images (class-major), as many labels as images, hard labels within ``[0, num_classes)``; each failure is
one line naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_sdc.synthetic import SetFileError, SyntheticSet, check_set, label_range_problem

#: what a scoreable set looks like (repeated in every error about a file)
EXPECTED = (
    "expected a lightning_sdc set file (synset.pt, SyntheticSet.save) or an images_<s>.pt + labels_<s>.pt "
    "(+ lr_<s>.pt) pair (MTT/DATM layout; images (N, C, H, W) float, labels (N,) int classes or (N, K) logits), "
    "given as a file or as their directory"
)

#: protocol of a set that records none: the TM references' (and DSA's) 1000 epochs with DSA, batch 256
DEFAULT_PROTOCOL: dict[str, Any] = {
    "method": None, "arch": "ConvNet", "arch_kwargs": {}, "num_models": 5, "epochs": 1000, "lr": None,
    "batch_size": 256, "augment": "dsa", "dsa_strategy": None,
}


@dataclass
class LoadedSet:
    """A synthetic set read from disk, with the evaluation protocol it defaults to.

    Attributes:
        synset: the set (with ``dataset``, ``zca_state`` and, when known, ``eval_protocol``).
        protocol: :data:`DEFAULT_PROTOCOL` updated with what the file records (see :func:`set_protocol`).
        layout: ``"synset"`` or ``"tm-pair"``.
        files: the files read.
    """

    synset: Any
    protocol: dict[str, Any]
    layout: str
    files: list[Path]

    @property
    def name(self) -> str:
        return self.files[0].name


def _fail(path: str | os.PathLike, problem: str, expected: bool = True) -> SetFileError:
    return SetFileError(f"{path}: {problem}" + (f"; {EXPECTED}" if expected else ""))


def set_protocol(synset: Any) -> dict[str, Any]:
    """The evaluation defaults of ``synset``: its recorded ``eval_protocol`` when it has one; else the TM/DSA
    protocol (:data:`DEFAULT_PROTOCOL`) with DATM's batch 128 for learned labels (tm_reference §5.6)."""
    protocol = dict(DEFAULT_PROTOCOL)
    recorded = getattr(synset, "eval_protocol", None)
    if recorded:
        protocol.update({k: v for k, v in recorded.items() if k in protocol and v is not None})
        protocol["arch_kwargs"] = dict(recorded.get("arch_kwargs") or {})
    elif getattr(synset, "label_mode", "hard") != "hard":
        protocol["batch_size"] = 128
    return protocol


# ---------------------------------------------------------------------------------------------- locating files
def _pair_paths(images: Path) -> tuple[Path, Path, Path]:
    suffix = images.name[len("images_"):]
    return images, images.with_name("labels_" + suffix), images.with_name("lr_" + suffix)


def locate(path: str | os.PathLike) -> tuple[str, Path]:
    """``("synset", file)`` or ``("tm-pair", images file)`` for ``path`` (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory; {EXPECTED}")
    if p.is_dir():
        if (p / "synset.pt").is_file():
            return "synset", p / "synset.pt"
        if (p / "images_best.pt").is_file():
            return "tm-pair", p / "images_best.pt"
        candidates = sorted(c for c in p.glob("images_*.pt") if not c.name.startswith("images_zca_"))
        if len(candidates) == 1:
            return "tm-pair", candidates[0]
        found = ", ".join(c.name for c in candidates) or "no .pt set files"
        hint = " (several images_*.pt: name one)" if candidates else ""
        raise _fail(p, f"directory holds {found}{hint}")
    if p.name.startswith("images_zca_"):
        raise _fail(p, "MTT's un-whitened copy of a ZCA set, saved for viewing (tm_reference §2.1); evaluate the "
                       f"{p.name.replace('images_zca_', 'images_')} beside it with --zca", False)
    if p.name.startswith("images_") and p.suffix == ".pt":
        return "tm-pair", p
    if p.name.startswith("labels_") and p.suffix == ".pt":
        return "tm-pair", p.with_name("images_" + p.name[len("labels_"):])
    return "synset", p


# ---------------------------------------------------------------------------------------------- loading
def load_set(
    path: str | os.PathLike,
    *,
    dataset: str | None = None,
    zca: bool | None = None,
    root: str | os.PathLike | None = None,
) -> LoadedSet:
    """Read and check the set at ``path`` (any layout of the module docstring).

    Args:
        dataset: the dataset of a TM pair (ignored, but checked against, for a set file that records its own).
        zca: a TM pair's images are ZCA-whitened (the ZCA is fitted on ``dataset``'s training images, as MTT's
            ``--zca``); ``None`` = as the set records, else no.
        root: dataset root (only needed to fit a ZCA for a pair).

    Raises:
        SetFileError: a file of the wrong layout, shape, dtype, or with non-finite / out-of-range values.
        FileNotFoundError: ``path`` (or a pair's labels file) does not exist.
    """
    from lightning_sdc.io import safe_torch_load

    layout, file = locate(path)
    if layout == "synset":
        d = safe_torch_load(file, what="synthetic set")
        if isinstance(d, Tensor):
            raise _fail(file, f"a bare tensor of shape {tuple(d.shape)}, not a set file (for a TM pair name its "
                              "images_<s>.pt with labels_<s>.pt beside it)")
        if not isinstance(d, dict) or d.get("format") != "lightning_sdc.SyntheticSet":
            raise _fail(file, f"a {type(d).__name__} without the 'format' marker of a lightning_sdc set file")
        try:
            synset = SyntheticSet.from_dict(d, source=str(file))
        except ValueError as exc:
            msg = str(exc)
            raise _fail(file, msg.removeprefix(f"{file} "), False) from None
        check_set(synset, str(file), ipc=d.get("ipc"))
        if dataset is not None:
            _check_dataset(synset.dataset, dataset, file)
        if zca is not None and bool(zca) != (synset.zca_state is not None):
            raise _fail(file, f"--zca {zca} but the set was distilled with zca={synset.zca_state is not None} "
                              "(a set file records its ZCA; leave --zca out)", False)
        return LoadedSet(synset, set_protocol(synset), "synset", [file])
    return _load_pair(file, dataset=dataset, zca=zca, root=root)


def _check_dataset(recorded: str, given: str, file: Path) -> None:
    from lightning_sdc.data import DATASETS

    if DATASETS.canonical(given) != DATASETS.canonical(recorded):
        raise _fail(file, f"--dataset {given!r} but the set was distilled from {recorded!r}", False)


def _load_tensor(path: Path, what: str) -> Tensor:
    from lightning_sdc.io import safe_torch_load

    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing {what} file of the pair; {EXPECTED}")
    t = safe_torch_load(path, what=what)
    if isinstance(t, (int, float)) and what == "lr":
        return torch.tensor(float(t))
    if not isinstance(t, Tensor):
        raise _fail(path, f"holds a {type(t).__name__}, not a tensor of {what}")
    return t.detach()


def _load_pair(images_file: Path, *, dataset: str | None, zca: bool | None, root: Any) -> LoadedSet:
    from lightning_sdc.data import dataset_info, load_dataset

    images_file, labels_file, lr_file = _pair_paths(images_file)
    images = _load_tensor(images_file, "images")
    labels = _load_tensor(labels_file, "labels")
    lr = _load_tensor(lr_file, "lr") if lr_file.is_file() else None
    if images.dim() != 4 or not images.is_floating_point():
        raise _fail(images_file, f"images of shape {tuple(images.shape)} and dtype {images.dtype}")
    n = images.shape[0]
    if labels.shape[:1] != (n,) or labels.dim() not in (1, 2) or (labels.dim() == 1) == labels.is_floating_point():
        raise _fail(labels_file, f"labels of shape {tuple(labels.shape)} and dtype {labels.dtype} for {n} images "
                                 f"in {images_file.name}")
    if lr is not None and lr.numel() != 1:
        raise _fail(lr_file, f"lr of shape {tuple(lr.shape)}, not a scalar")
    if lr is not None and not (bool(torch.isfinite(lr).all()) and float(lr) > 0):
        raise _fail(lr_file, f"lr {float(lr)} is not a finite number > 0", False)

    beside = images_file.with_name("synset.pt")  # this library's export: the set file carries the metadata
    meta = SyntheticSet.load(beside) if beside.is_file() else None
    if meta is not None and dataset is not None:
        _check_dataset(meta.dataset, dataset, beside)
    if meta is None and dataset is None:
        raise _fail(images_file, "an images/labels pair records no dataset: pass --dataset NAME (and --zca if the "
                                 "images are ZCA-whitened)", False)
    info = dataset_info(dataset if meta is None else meta.dataset)
    if tuple(images.shape[1:]) != tuple(info.image_shape):
        raise _fail(images_file, f"images of shape {tuple(images.shape[1:])} but dataset {info.name!r} has "
                                 f"{tuple(info.image_shape)}", False)
    k = info.num_classes
    if labels.dim() == 2 and labels.shape[1] != k:
        raise _fail(labels_file, f"{labels.shape[1]} label logits per image but dataset {info.name!r} has {k} classes",
                    False)
    label_mode = "hard" if labels.dim() == 1 else "soft"
    problem = label_range_problem(labels, k) if label_mode == "hard" else None
    if problem:
        raise _fail(labels_file, problem, False)
    if meta is not None:
        zca_state = meta.zca_state
    elif zca:
        zca_state = load_dataset(info.name, root=root, zca=True).zca.to_dict()
    else:
        zca_state = None
    labels = labels.long() if label_mode == "hard" else labels.float()
    synset = SyntheticSet(
        images.float(), labels, num_classes=k, dataset=info.name, mean=info.mean, std=info.std,
        label_mode=label_mode, syn_lr=None if lr is None else lr.float().reshape(()), class_names=info.class_names,
        zca_state=zca_state, eval_protocol=None if meta is None else meta.eval_protocol,
    )
    check_set(synset, str(images_file))
    files = [images_file, labels_file] + ([lr_file] if lr is not None else [])
    return LoadedSet(synset, set_protocol(synset), "tm-pair", files)


__all__ = ["DEFAULT_PROTOCOL", "EXPECTED", "LoadedSet", "SetFileError", "check_set", "load_set", "locate",
           "set_protocol"]
