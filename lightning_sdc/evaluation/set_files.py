"""One loader for every synthetic-set layout that ``lightning-sdc evaluate`` scores, and the checks every loaded
set gets.

Layouts (:data:`EXPECTED` is the one-line description every error repeats); a file's *content* decides which it
is, its name only pairs it:

* **this library's set file** (``synset.pt``, :meth:`SyntheticSet.save`): a dict with a ``format`` marker, the
  dataset name, normalisation, ZCA state and the making method's evaluation protocol (``eval_protocol``);
* **the TM pair** ``images_<s>.pt`` + ``labels_<s>.pt`` (+ ``lr_<s>.pt``), as MTT/FTD/DATM save their sets and
  as this library's exporter writes them (:meth:`SyntheticSet.export_tm`): bare tensors, ``images`` ``(N, C, H,
  W)`` in the dataset's normalised (ZCA-whitened with ``--zca``) space; ``labels`` ``(N,)`` integer classes (MTT)
  or ``(N, K)`` logits whose softmax are the targets (DATM's learned labels; tm_reference §5.4/5.6); ``lr`` a
  scalar, the learned student lr used as evaluation lr (MTT/DATM ``syn_lr``);
* **DC's result file** ``res_<method>_<dataset>_<model>_<ipc>ipc.pt`` (DC/DSA ``main.py``): ``{'data':
  [[image_syn, label_syn], …], 'accs_all_exps': …}``, one normalised set per experiment (gm_reference §3.6);
  the first experiment's set is scored;
* **a folder of images**, one sub-folder per class (DD-Ranking, torchvision ``ImageFolder``; class order =
  sorted folder names, numerically when all are numbers): pixels of the dataset's size, normalised with its
  mean/std (and ZCA-whitened with ``--zca``).

Only the set file records its dataset; for the others it is ``--dataset``, a ``synset.pt`` beside a pair (this
library's exports), or a dataset named in a DC file's name. A path may be a file or a directory holding one
(``synset.pt`` first, then ``images_best.pt``, a single ``images_*.pt``, a single ``res_*.pt``, class folders).

Every set is checked before any network is trained (:func:`lightning_sdc.synthetic.check_set`: floating, finite
images within ``|x| <= 1e3``, class-major labels in range) and so is its recorded protocol
(:func:`check_settings`, as the command line's options); a foreign set whose labels hold ``ipc`` rows of every
class in another order is reordered class-major, saying so. Each failure is one line naming the file.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_sdc.io import safe_torch_load
from lightning_sdc.models import NETWORKS
from lightning_sdc.synthetic import SetFileError, SyntheticSet, check_set
from lightning_sdc.training import TRAIN_AUGMENTS

#: what a scoreable set looks like (repeated in every error about a file)
EXPECTED = (
    "expected a lightning_sdc set file (synset.pt, SyntheticSet.save), an images_<s>.pt + labels_<s>.pt "
    "(+ lr_<s>.pt) pair (MTT/DATM layout; images (N, C, H, W) float, labels (N,) int classes or (N, K) logits), "
    "DC's res_*_<ipc>ipc.pt or a folder with one sub-folder of images per class, given as a file or as their directory"
)

#: protocol of a set that records none: the TM references' (and DSA's) 1000 epochs with DSA, batch 256
DEFAULT_PROTOCOL: dict[str, Any] = {
    "method": None, "arch": "ConvNet", "arch_kwargs": {}, "num_models": 5, "epochs": 1000, "lr": None,
    "batch_size": 256, "augment": "dsa", "dsa_strategy": None,
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: the evaluation settings a command line or a set file's ``eval_protocol`` gives: (test, what is allowed)
SETTINGS = {
    "num_models": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "lr": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                   and v > 0), "a finite number > 0"),
    "augment": (lambda v: v in TRAIN_AUGMENTS, ", ".join(TRAIN_AUGMENTS)),
    "arch": (lambda v: v in NETWORKS, "a registered network (" + ", ".join(NETWORKS.names()) + ")"),
    "arch_kwargs": (lambda v: isinstance(v, dict), "a mapping of network options"),
}


def check_settings(values: dict[str, Any], source: str | None = None) -> None:
    """``ValueError`` naming the first of ``values`` that :data:`SETTINGS` does not allow (``source``: the set
    file whose recorded protocol gave them, else a command line's options)."""
    for key, (ok, allowed) in SETTINGS.items():
        if key in values and not ok(values[key]):
            where = f"{source}: recorded eval_protocol {key}" if source else key
            raise ValueError(f"{where}={values[key]!r} is not allowed; allowed: {allowed}")


@dataclass
class LoadedSet:
    """A synthetic set read from disk, with the evaluation protocol it defaults to.

    Attributes:
        synset: the set (with ``dataset``, ``zca_state`` and, when known, ``eval_protocol``).
        protocol: :data:`DEFAULT_PROTOCOL` updated with what the file records (see :func:`set_protocol`).
        layout: ``"synset"``, ``"tm-pair"``, ``"dc-res"`` or ``"image-folder"``.
        files: the files (or folder) read.
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


def set_protocol(synset: Any, source: str = "<set>") -> dict[str, Any]:
    """The evaluation defaults of ``synset``: its recorded ``eval_protocol`` (checked by :func:`check_settings`,
    naming ``source``) when it has one; else the TM/DSA protocol (:data:`DEFAULT_PROTOCOL`) with DATM's batch 128
    for learned labels (tm_reference §5.6)."""
    protocol = dict(DEFAULT_PROTOCOL)
    recorded = getattr(synset, "eval_protocol", None)
    if recorded:
        given = {k: v for k, v in recorded.items() if k in protocol and v is not None}
        check_settings(given, source)
        protocol.update(given)
        protocol["arch_kwargs"] = dict(recorded.get("arch_kwargs") or {})
    elif getattr(synset, "label_mode", "hard") != "hard":
        protocol["batch_size"] = 128
    return protocol


# ---------------------------------------------------------------------------------------------- locating files
def _class_dirs(folder: Path) -> list[Path]:
    dirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    numeric = all(d.name.isdigit() for d in dirs)
    return sorted(dirs, key=lambda d: (int(d.name) if numeric else 0, d.name))


def locate(path: str | os.PathLike) -> tuple[str, Path]:
    """``("file", file)`` or ``("image-folder", folder)`` for ``path`` (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory; {EXPECTED}")
    if p.name.startswith("images_zca_"):
        raise _fail(p, "MTT's un-whitened copy of a ZCA set, saved for viewing (tm_reference §2.1); evaluate the "
                       f"{p.name.replace('images_zca_', 'images_')} beside it with --zca", False)
    if not p.is_dir():
        return "file", p
    if (p / "synset.pt").is_file():
        return "file", p / "synset.pt"
    if (p / "images_best.pt").is_file():
        return "file", p / "images_best.pt"
    for pattern in ("images_*.pt", "res_*.pt"):
        candidates = sorted(c for c in p.glob(pattern) if not c.name.startswith("images_zca_"))
        if len(candidates) > 1:
            raise _fail(p, f"directory holds {', '.join(c.name for c in candidates)} (several {pattern}: name one)")
        if candidates:
            return "file", candidates[0]
    dirs = _class_dirs(p)  # a class folder each, every one holding images (a run directory's do not)
    if dirs and all(any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir()) for d in dirs):
        return "image-folder", p
    raise _fail(p, "directory holds no .pt set files and no class folders of images")


# ---------------------------------------------------------------------------------------------- loading
def load_set(path: str | os.PathLike, *, dataset: str | None = None, zca: bool | None = None,
             root: str | os.PathLike | None = None) -> LoadedSet:
    """Read and check the set at ``path`` (any layout of the module docstring).

    Args:
        dataset: the dataset of a layout that records none (checked against a set file's own).
        zca: a foreign set's images are ZCA-whitened (a folder: whiten them; the ZCA is fitted on ``dataset``'s
            training images, as MTT's ``--zca``); ``None`` = as the set records, else no.
        root: dataset root (only needed to fit a ZCA).

    Raises:
        SetFileError: a file of the wrong layout, shape, dtype, or with non-finite / out-of-range values.
        FileNotFoundError: ``path`` (or a pair's labels file) does not exist.
    """
    layout, file = locate(path)
    if layout == "image-folder":
        return _load_folder(file, dataset=dataset, zca=zca, root=root)
    d = safe_torch_load(file, what="synthetic set")
    if isinstance(d, dict) and d.get("format") == "lightning_sdc.SyntheticSet":
        synset = SyntheticSet.from_dict(d, source=str(file))
        if dataset is not None:
            _check_dataset(synset.dataset, dataset, file)
        if zca is not None and bool(zca) != (synset.zca_state is not None):
            raise _fail(file, f"--zca {zca} but the set was distilled with zca={synset.zca_state is not None} "
                              "(a set file records its ZCA; leave --zca out)", False)
        return LoadedSet(synset, set_protocol(synset, str(file)), "synset", [file])
    if isinstance(d, dict) and "data" in d:
        return _load_dc(file, d, dataset=dataset, zca=zca, root=root)
    if isinstance(d, Tensor) and file.name.startswith(("images_", "labels_")) and file.suffix == ".pt":
        return _load_pair(file, d, dataset=dataset, zca=zca, root=root)
    if isinstance(d, Tensor):
        raise _fail(file, f"a bare tensor of shape {tuple(d.shape)}, not a set file (for a TM pair name its "
                          "images_<s>.pt with labels_<s>.pt beside it)")
    raise _fail(file, f"a {type(d).__name__} without the 'format' marker of a lightning_sdc set file")


def _check_dataset(recorded: str, given: str, file: Path) -> None:
    from lightning_sdc.data import DATASETS

    if DATASETS.canonical(given) != DATASETS.canonical(recorded):
        raise _fail(file, f"--dataset {given!r} but the set was distilled from {recorded!r}", False)


def _foreign_set(source: Path, images: Tensor, labels: Tensor, dataset: str | None, zca: Any, root: Any, *,
                 lr: Tensor | None = None, meta: SyntheticSet | None = None) -> SyntheticSet:
    """A checked :class:`SyntheticSet` of a layout without metadata: the dataset's shape, normalisation and ZCA
    state (``meta``'s, ``zca`` itself when a state dict, else fitted when ``zca``); ``meta`` (a set file beside
    it) gives dataset and protocol."""
    from lightning_sdc.data import dataset_info, load_dataset

    if meta is None and dataset is None:
        raise _fail(source, "this layout records no dataset: pass --dataset NAME (and --zca if the images are "
                            "ZCA-whitened)", False)
    info = dataset_info(dataset if meta is None else meta.dataset)
    if isinstance(images, Tensor) and tuple(images.shape[1:]) != tuple(info.image_shape):
        raise _fail(source, f"images of shape {tuple(images.shape[1:])} but dataset {info.name!r} has "
                            f"{tuple(info.image_shape)}", False)
    n, k = images.shape[0] if isinstance(images, Tensor) else 0, info.num_classes
    if isinstance(labels, Tensor) and labels.shape == (n,) and not labels.is_floating_point() and n % k == 0:
        counts = torch.bincount(labels.detach().cpu().long().clamp(0, k), minlength=k + 1)
        order = torch.argsort(labels.detach().cpu(), stable=True)
        if bool((counts[:k] == n // k).all()) and not torch.equal(order, torch.arange(n)):
            images, labels = images[order], labels[order]
            print(f"{source}: labels were not class-major; rows reordered by class", file=sys.stderr)
    check_set(images, labels, k, str(source), lr=lr)
    zca_state = meta.zca_state if meta is not None else zca if isinstance(zca, dict) else (
        load_dataset(info.name, root=root, zca=True).zca.to_dict() if zca else None)
    hard = labels.dim() == 1
    return SyntheticSet(images.float(), labels.long() if hard else labels.float(), num_classes=k, dataset=info.name,
                        mean=info.mean, std=info.std, label_mode="hard" if hard else "soft",
                        syn_lr=None if lr is None else lr.float().reshape(()), class_names=info.class_names,
                        zca_state=zca_state, eval_protocol=None if meta is None else meta.eval_protocol)


def _load_pair(file: Path, first: Tensor, *, dataset: str | None, zca: bool | None, root: Any) -> LoadedSet:
    suffix = file.name.split("_", 1)[1]
    images_file, labels_file, lr_file = (file.with_name(f"{part}_{suffix}") for part in ("images", "labels", "lr"))
    tensors = {}
    for what, f in (("images", images_file), ("labels", labels_file), ("lr", lr_file)):
        if f == file:
            tensors[what] = first
        elif f.is_file():
            tensors[what] = safe_torch_load(f, what=what)
        elif what != "lr":
            raise FileNotFoundError(f"{f}: missing {what} file of the pair; {EXPECTED}")
    lr = tensors.get("lr")
    if isinstance(lr, (int, float)):
        lr = torch.tensor(float(lr))
    if lr is not None and (not isinstance(lr, Tensor) or lr.numel() != 1):
        raise _fail(lr_file, f"lr of {getattr(lr, 'shape', type(lr).__name__)}, not a scalar")
    if lr is not None and not (bool(torch.isfinite(lr.detach()).all()) and float(lr) > 0):
        raise _fail(lr_file, f"lr {float(lr)} is not a finite number > 0", False)
    beside = images_file.with_name("synset.pt")  # this library's export: the set file carries the metadata
    meta = SyntheticSet.load(beside) if beside.is_file() else None
    if meta is not None and dataset is not None:
        _check_dataset(meta.dataset, dataset, beside)
    synset = _foreign_set(Path(f"{images_file} + {labels_file.name}"), tensors["images"], tensors["labels"], dataset,
                          zca, root, lr=None if lr is None else lr.detach(), meta=meta)
    files = [images_file, labels_file] + ([lr_file] if lr is not None else [])
    return LoadedSet(synset, set_protocol(synset, str(beside)), "tm-pair", files)


def _load_dc(file: Path, d: dict, *, dataset: str | None, zca: bool | None, root: Any) -> LoadedSet:
    from lightning_sdc.data import DATASETS

    data = d["data"]
    if not isinstance(data, (list, tuple)) or not data or not all(
            isinstance(e, (list, tuple)) and len(e) == 2 for e in data):
        raise _fail(file, "a dict whose 'data' is not DC's list of [image_syn, label_syn] pairs")
    if dataset is None:  # DC names its file res_<method>_<dataset>_<model>_<ipc>ipc.pt
        dataset = next((DATASETS.canonical(t) for t in file.stem.split("_")[1:] if t in DATASETS), None)
    images, labels = data[0]
    synset = _foreign_set(file, images, labels, dataset, zca, root)
    if len(data) > 1:
        print(f"{file}: holds {len(data)} experiments' sets; scoring the first", file=sys.stderr)
    return LoadedSet(synset, set_protocol(synset), "dc-res", [file])


def _load_folder(folder: Path, *, dataset: str | None, zca: bool | None, root: Any) -> LoadedSet:
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    from lightning_sdc.data import dataset_info, load_dataset
    from lightning_sdc.data.registry import _normalise

    if dataset is None:
        raise _fail(folder, "a folder of images records no dataset: pass --dataset NAME", False)
    info = dataset_info(dataset)
    (c, h, w), dirs = info.image_shape, _class_dirs(folder)
    if len(dirs) != info.num_classes:
        raise _fail(folder, f"{len(dirs)} class folders but dataset {info.name!r} has {info.num_classes} classes",
                    False)
    pixels, labels = [], []
    for label, sub in enumerate(dirs):
        for f in sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(f) as im:
                    x = pil_to_tensor(im.convert("L" if c == 1 else "RGB"))
            except OSError as exc:
                raise _fail(f, f"not a readable image ({exc})", False) from None
            if tuple(x.shape[1:]) != (h, w):
                raise _fail(f, f"an image of {x.shape[2]}×{x.shape[1]} pixels; allowed: {w}×{h}, the size of "
                               f"dataset {info.name!r} (resize the set to it)", False)
            pixels.append(x)
            labels.append(label)
    images, whitening = _normalise(torch.stack(pixels), 255.0, info), None
    if zca:
        whitening = load_dataset(info.name, root=root, zca=True).zca
        images = whitening.transform(images)
    synset = _foreign_set(folder, images, torch.tensor(labels), info.name, whitening and whitening.to_dict(), root)
    return LoadedSet(synset, set_protocol(synset), "image-folder", [folder])


__all__ = ["DEFAULT_PROTOCOL", "EXPECTED", "SETTINGS", "LoadedSet", "SetFileError", "check_settings", "load_set",
           "locate", "set_protocol"]
