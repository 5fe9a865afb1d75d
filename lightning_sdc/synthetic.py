"""The synthetic set: the one piece of state a distillation method learns, checkpoints and exports.

``SyntheticSet`` owns

* ``images`` — an ``nn.Parameter`` of shape ``(num_classes * ipc, C, H, W)`` in the dataset's *normalised*
  (and, if ``zca``, whitened) space, class-major (rows ``c*ipc … (c+1)*ipc-1`` belong to class ``c``), as the
  DC/MTT references lay it out;
* ``labels`` — hard labels (``int64`` buffer, never learned, as DC/DSA/MTT), fixed soft-label logits
  (``label_mode="soft"``, TESLA's teacher labels: a float buffer that the method may overwrite) or learnable
  soft-label logits (``label_mode="learned"``, DATM: an ``nn.Parameter``). Soft targets are
  ``softmax(labels)`` (DATM's ``SoftCrossEntropy``, temperature 1);
* ``syn_lr`` — the student learning rate of trajectory matching (MTT's learnable ``syn_lr``), an
  ``nn.Parameter`` when ``learn_lr`` else a buffer; absent (``None``) for gradient matching;
* metadata to use it later: dataset name, class names, normalisation ``mean``/``std`` and the ZCA state (so a
  whitened set can be shown and re-evaluated; the references' users lost accuracy by saving without it), and
  ``eval_protocol``, the evaluation protocol of the method that made it (``arch``, ``arch_kwargs``,
  ``num_models``, ``epochs``, ``lr``, ``batch_size``, ``augment``, ``dsa_strategy``, ``method``), which
  ``lightning-sdc evaluate`` takes as its defaults.

Files written by :meth:`save` are plain dicts of tensors and primitives, written atomically and read back with
``torch.load(weights_only=True)``; every loaded set is checked (:func:`check_set`) before anything trains on it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_sdc.checks import check_int
from lightning_sdc.data import ClassIndexedImages
from lightning_sdc.io import atomic_torch_save, safe_torch_load

LABEL_MODES = ("hard", "soft", "learned")
FORMAT_VERSION = 1


class SetFileError(ValueError):
    """A file that is not a scoreable synthetic set (one line: the file, what is wrong, what is expected)."""


def label_range_problem(labels: Tensor, num_classes: int) -> str | None:
    """Why hard ``labels`` cannot index ``num_classes`` classes (the value and the allowed range), or ``None``."""
    if labels.numel() == 0:
        return None
    low, high = int(labels.min()), int(labels.max())
    if low >= 0 and high < num_classes:
        return None
    return f"label {low if low < 0 else high} is out of range; allowed: 0 … {num_classes - 1} ({num_classes} classes)"


#: the image dtypes a set file may hold
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: largest |pixel| a set may hold, in the dataset's normalised (or ZCA-whitened) space: real images lie within
#: about ±10 there; values beyond are pixels saved in 0…255 or a diverged set
IMAGE_BOUND = 1e3


def _kind(t: Any) -> str:
    return f"shape {tuple(t.shape)} and dtype {t.dtype}" if isinstance(t, Tensor) else f"type {type(t).__name__}"


def check_set(images: Any, labels: Any, num_classes: int, source: str, *, ipc: Any = None, lr: Any = None) -> None:
    """Refuse, with a one-line :class:`SetFileError` naming ``source``, a set (its raw tensors, before any cast)
    no evaluation should train on.

    Images: a ``(N, C, H, W)`` tensor of a floating dtype (:data:`FLOAT_DTYPES`; not integer, not complex), finite,
    ``|x| <=`` :data:`IMAGE_BOUND`; ``N = num_classes × ipc`` (``ipc`` as recorded, else ``N // num_classes``).
    Labels: ``(N,)`` integer classes in class-major order (``ipc`` rows of class 0, then of class 1, …: the layout
    :meth:`SyntheticSet.blank`, DC and MTT write) or ``(N, num_classes)`` float logits, finite. ``lr``: finite.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.dtype not in FLOAT_DTYPES:
        raise SetFileError(f"{source}: images of {_kind(images)}; allowed: an (N, C, H, W) tensor of float16, "
                           "bfloat16, float32 or float64")
    n, k = int(images.shape[0]), int(num_classes)
    hard = isinstance(labels, Tensor) and labels.shape == (n,) and not (labels.is_floating_point() or
                                                                       labels.is_complex() or labels.dtype == torch.bool)
    if not hard and not (isinstance(labels, Tensor) and labels.shape == (n, k) and labels.dtype in FLOAT_DTYPES):
        raise SetFileError(f"{source}: labels of {_kind(labels)} for {n} images; allowed: ({n},) integer classes or "
                           f"({n}, {k}) float logits")
    for what, t in (("images", images), ("labels", labels), ("lr", lr)):
        if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
            bad = int((~torch.isfinite(t.detach())).sum())
            raise SetFileError(f"{source}: {bad} non-finite (NaN/inf) value(s) in the {what}; refusing to evaluate it")
    top = float(images.detach().abs().max()) if n else 0.0
    if top > IMAGE_BOUND:
        raise SetFileError(f"{source}: image values reach |x| = {top:.3g}; allowed: |x| <= {IMAGE_BOUND:g} in the "
                           "dataset's normalised space (pixels saved in 0…255, or a diverged set)")
    recorded = ipc if ipc is not None else max(1, n // k)
    if isinstance(recorded, bool) or not isinstance(recorded, int) or recorded < 1 or n != k * recorded:
        raise SetFileError(f"{source}: {n} images for {k} classes with ipc={recorded!r}: a set holds num_classes × "
                           f"ipc images (class-major), i.e. a multiple of {k}")
    problem = label_range_problem(labels, k) if hard else None
    if problem:
        raise SetFileError(f"{source}: {problem}")
    expected = torch.arange(k).repeat_interleave(recorded)
    if hard and not torch.equal(labels.detach().cpu().long(), expected):
        row = int((labels.detach().cpu().long() != expected).nonzero()[0])
        counts = torch.bincount(labels.detach().cpu().long(), minlength=k).tolist()
        raise SetFileError(f"{source}: labels are not class-major (row {row} has label {int(labels[row])}, expected "
                           f"{int(expected[row])}; rows per class {counts}); allowed: class 0's {recorded} row(s), "
                           "then class 1's, …")


class SyntheticSet(nn.Module):
    """Synthetic images (+ labels, + learned student lr) with the metadata needed to use them later.

    Args:
        images: ``(N, C, H, W)`` float tensor, class-major, in normalised space.
        labels: ``(N,)`` int64 class indices (``label_mode="hard"``) or ``(N, num_classes)`` logits.
        num_classes: number of classes.
        dataset: registry name of the dataset the set was distilled from (``"custom"`` for user data).
        mean, std: per-channel normalisation of ``images`` (to show them as pixels).
        label_mode: ``"hard"`` | ``"soft"`` | ``"learned"`` (see module docstring).
        syn_lr: initial student learning rate (trajectory matching); ``None`` for none.
        learn_lr: make ``syn_lr`` a parameter.
        class_names: optional names, one per class.
        zca_state: ``ZCAWhitening.to_dict()`` of the transform the images live in, or ``None``.
        eval_protocol: the making method's evaluation protocol (see module docstring), or ``None``.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, num_classes: int, dataset: str = "custom",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, label_mode: str = "hard",
                 syn_lr: float | Tensor | None = None, learn_lr: bool = False, class_names: Sequence[str] | None = None,
                 zca_state: dict[str, Any] | None = None, eval_protocol: dict[str, Any] | None = None) -> None:
        super().__init__()
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode={label_mode!r} is not allowed; allowed: {', '.join(LABEL_MODES)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        n = images.shape[0]
        if label_mode == "hard":
            if labels.shape != (n,):
                raise ValueError(f"hard labels must have shape ({n},), got {tuple(labels.shape)}")
            labels = labels.long()
        elif labels.shape != (n, num_classes):
            raise ValueError(f"{label_mode} labels must be logits of shape ({n}, {num_classes}), got {tuple(labels.shape)}")
        channels = images.shape[1]
        self.num_classes = int(num_classes)
        self.dataset = dataset
        self.label_mode = label_mode
        self.mean = tuple(float(m) for m in (mean if mean is not None else [0.0] * channels))
        self.std = tuple(float(s) for s in (std if std is not None else [1.0] * channels))
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean/std need {channels} entries (one per channel), got {self.mean} / {self.std}")
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(c) for c in range(num_classes))
        self.zca_state = zca_state
        self.eval_protocol = dict(eval_protocol) if eval_protocol is not None else None
        self.images = nn.Parameter(images.detach().clone().float())
        if label_mode == "learned":
            self.labels = nn.Parameter(labels.detach().clone().float())
        else:
            self.register_buffer("labels", labels.detach().clone())
        if syn_lr is None:
            self.syn_lr = None
        else:
            lr = torch.as_tensor(syn_lr, dtype=torch.float32).detach().clone().reshape(())
            if learn_lr:
                self.syn_lr = nn.Parameter(lr)
            else:
                self.register_buffer("syn_lr", lr)

    # ------------------------------------------------------------------ construction
    @classmethod
    def blank(
        cls,
        *,
        num_classes: int,
        ipc: int,
        image_shape: Sequence[int],
        label_mode: str = "hard",
        **kwargs: Any,
    ) -> SyntheticSet:
        """A zero-image set of ``num_classes * ipc`` images with class-major hard labels ``[0]*ipc, [1]*ipc, …``.

        Soft/learned label modes start from one-hot-like logits (0 with 1 at the class); methods overwrite
        them (TESLA/DATM initialise from expert logits).
        """
        check_int("ipc", ipc, 1)
        c, h, w = (int(s) for s in image_shape)
        hard = torch.arange(num_classes).repeat_interleave(ipc)
        labels = hard if label_mode == "hard" else F.one_hot(hard, num_classes).float()
        images = torch.zeros(num_classes * ipc, c, h, w)
        return cls(images, labels, num_classes=num_classes, label_mode=label_mode, **kwargs)

    @torch.no_grad()
    def init_from_real(self, real: Any, generator: torch.Generator) -> SyntheticSet:
        """Fill class block ``c`` with ``ipc`` distinct random real images of class ``c`` (DC ``--init real``).

        ``real`` is a ``ClassIndexedImages`` (anything with ``first_k(c, k, generator)``).
        """
        ipc = self.ipc
        for c in range(self.num_classes):
            self.images[c * ipc : (c + 1) * ipc] = real.first_k(c, ipc, generator).to(self.images)
        return self

    @torch.no_grad()
    def init_noise(self, generator: torch.Generator) -> SyntheticSet:
        """N(0, 1) noise in normalised space (DC's default ``--init noise``)."""
        noise = torch.randn(self.images.shape, generator=generator, device=generator.device)
        self.images.copy_(noise.to(self.images))
        return self

    # ------------------------------------------------------------------ views
    @property
    def ipc(self) -> int:
        """Images per class."""
        return self.images.shape[0] // self.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def hard_labels(self) -> Tensor:
        """Class indices: the labels themselves, or the argmax of soft/learned logits."""
        return self.labels if self.label_mode == "hard" else self.labels.argmax(dim=1)

    @property
    def class_labels(self) -> Tensor:
        """The class each row was created for (class-major layout), whatever the label mode."""
        return torch.arange(self.num_classes, device=self.images.device).repeat_interleave(self.ipc)

    def targets(self) -> Tensor:
        """Training targets: class indices (hard) or probabilities ``softmax(labels)`` (soft/learned)."""
        return self.labels if self.label_mode == "hard" else torch.softmax(self.labels, dim=1)

    def class_slice(self, c: int) -> slice:
        """Rows of class ``c``."""
        return slice(c * self.ipc, (c + 1) * self.ipc)

    def detached(self) -> tuple[Tensor, Tensor, float | None]:
        """A detached copy ``(images, targets, lr)`` for evaluation (training fresh networks)."""
        lr = None if self.syn_lr is None else float(self.syn_lr.detach())
        return self.images.detach().clone(), self.targets().detach().clone(), lr

    def pixels(self) -> Tensor:
        """Images mapped back to [0, 1] pixel space: inverse ZCA (if any), then un-normalise, then clamp."""
        x = self.images.detach().float().cpu()
        if self.zca_state is not None:
            from lightning_sdc.data import ZCAWhitening

            x = ZCAWhitening.from_dict(self.zca_state).inverse(x)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def is_finite(self) -> bool:
        """True when images, labels and lr hold no NaN/inf."""
        parts = [self.images, self.labels.float()] + ([self.syn_lr] if self.syn_lr is not None else [])
        return all(bool(torch.isfinite(p).all()) for p in parts)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """A plain, self-describing dict of tensors and primitives (the on-disk format)."""
        return {
            "format": "lightning_sdc.SyntheticSet",
            "version": FORMAT_VERSION,
            "images": self.images.detach().cpu().clone(),
            "labels": self.labels.detach().cpu().clone(),
            "label_mode": self.label_mode,
            "syn_lr": None if self.syn_lr is None else self.syn_lr.detach().cpu().clone(),
            "learn_lr": isinstance(self.syn_lr, nn.Parameter),
            "num_classes": self.num_classes,
            "ipc": self.ipc,
            "dataset": self.dataset,
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "zca_state": self.zca_state,
            "eval_protocol": None if self.eval_protocol is None else dict(self.eval_protocol),
        }

    def save(self, path: str | os.PathLike, *, png: bool = False) -> Path:
        """Write the set atomically (and, if ``png``, a grid next to it with suffix ``.png``)."""
        if not self.is_finite():
            raise ValueError(f"refusing to save a synthetic set with non-finite values to {path}")
        out = atomic_torch_save(self.to_dict(), path)
        if png:
            self.save_grid(Path(path).with_suffix(".png"))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> SyntheticSet:
        """Rebuild from :meth:`to_dict` output, checked first (:func:`check_set`); a problem names ``source``."""
        if not isinstance(d, dict) or d.get("format") != "lightning_sdc.SyntheticSet":
            raise SetFileError(f"{source}: not a lightning_sdc synthetic set (no 'format' marker)")
        missing = [key for key in ("images", "labels", "num_classes", "dataset", "mean", "std", "label_mode",
                                   "syn_lr", "learn_lr", "class_names", "zca_state") if key not in d]
        if missing:
            raise SetFileError(f"{source}: missing key {missing[0]!r} of a synthetic set")
        check_set(d["images"], d["labels"], d["num_classes"], source, ipc=d.get("ipc"), lr=d["syn_lr"])
        try:
            return cls(d["images"], d["labels"], num_classes=d["num_classes"], dataset=d["dataset"], mean=d["mean"],
                       std=d["std"], label_mode=d["label_mode"], syn_lr=d["syn_lr"], learn_lr=d["learn_lr"],
                       class_names=d["class_names"], zca_state=d["zca_state"],
                       eval_protocol=d.get("eval_protocol"))  # absent in files written before it was recorded
        except ValueError as exc:
            raise SetFileError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> SyntheticSet:
        """Load a set written by :meth:`save` (``weights_only=True``; corrupt files name themselves), checked as
        every loaded set is (:func:`check_set`): a failure names the file."""
        return cls.from_dict(safe_torch_load(path, what="synthetic set"), source=str(path))

    def export_tm(self, directory: str | os.PathLike, suffix: str = "best") -> list[Path]:
        """Write ``images_<suffix>.pt``, ``labels_<suffix>.pt`` and (if any) ``lr_<suffix>.pt``.

        This is the layout MTT/DATM save and that DD-Ranking-style evaluation tools read.
        """
        directory = Path(directory)
        out = [
            atomic_torch_save(self.images.detach().cpu(), directory / f"images_{suffix}.pt"),
            atomic_torch_save(self.labels.detach().cpu(), directory / f"labels_{suffix}.pt"),
        ]
        if self.syn_lr is not None:
            out.append(atomic_torch_save(self.syn_lr.detach().cpu(), directory / f"lr_{suffix}.pt"))
        return out

    def save_grid(self, path: str | os.PathLike) -> Path:
        """PNG of the pixels: one row per class, class names, upscaled (:func:`lightning_sdc.figures.save_grid`)."""
        from lightning_sdc.figures import save_grid

        return save_grid(path, [("", self.pixels())], self.class_names)

    def extra_repr(self) -> str:
        lr = "" if self.syn_lr is None else f", syn_lr={float(self.syn_lr):.4g}"
        return (
            f"dataset={self.dataset!r}, num_classes={self.num_classes}, ipc={self.ipc}, "
            f"image_shape={self.image_shape}, label_mode={self.label_mode!r}{lr}"
        )


def real_set(spec: Any, images: Tensor) -> SyntheticSet:
    """A :class:`SyntheticSet` of real training images of ``spec`` (a DatasetSpec), class-major with as many per
    class, keeping the dataset's normalisation and ZCA state: scored exactly like a distilled set (the Random,
    Herding and Forgetting baselines)."""
    k, zca = spec.num_classes, getattr(spec, "zca", None)
    return SyntheticSet(images, torch.arange(k).repeat_interleave(images.shape[0] // k), num_classes=k,
                        dataset=spec.name, mean=spec.mean, std=spec.std, class_names=spec.class_names,
                        zca_state=None if zca is None else zca.to_dict())


def random_coreset(spec: Any, ipc: int, seed: int = 0) -> SyntheticSet:
    """The Random baseline (rows "Random" of the paper's Tables 1 and 2): a :class:`SyntheticSet` of ``ipc``
    distinct real training images of each class of ``spec`` (a DatasetSpec), drawn with a generator seeded by
    ``seed``; evaluated with the same protocol as any set."""
    real = ClassIndexedImages(spec.train_images, spec.train_labels, spec.num_classes)
    most = min(real.count(c) for c in range(spec.num_classes))  # images in the smallest class
    if not isinstance(ipc, int) or not 1 <= ipc <= most:
        raise ValueError(f"ipc={ipc!r} is not allowed; allowed: an integer in [1, {most}] (smallest class of {spec.name!r})")
    g = torch.Generator().manual_seed(int(seed))
    return real_set(spec, torch.cat([real.first_k(c, ipc, g) for c in range(spec.num_classes)]))
