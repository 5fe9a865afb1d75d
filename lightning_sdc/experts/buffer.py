"""Expert-trajectory buffers: one memory-mappable file per expert plus a JSON manifest.

Format (``format_version`` 1), in a directory ``out``:

* ``out/expert_<i:04d>.pt`` = ``{"trajectory": Tensor[epochs + 1, P] (float32), "meta": dict}``. Row 0 is the
  initialisation, row ``e`` the parameters after epoch ``e``; each row is the concatenation of
  ``p.reshape(-1)`` over ``named_parameters()`` — the flattening MTT does at distill time, done once at write time. MTT stores per-parameter tensor lists per epoch in
  ``replay_buffer_<n>.pt`` files of 10 experts; one contiguous matrix per expert lets a reader map the file
  and read only the two rows a distillation step needs (:meth:`ExpertBuffer.snapshot`).
* ``out/manifest.json``: the shared metadata, the experts written so far and how many were requested.
  Experts are trained independently (sharded over ranks and jobs, :func:`~lightning_sdc.experts.train_experts`),
  so a reader takes the manifest's experts plus any expert file it does not list yet.
* ``out/expert_<i:04d>.pt.partial``: the per-epoch checkpoint of an expert still in training (removed when its
  file is written); readers ignore it.

Every file is written atomically (``lightning_sdc.io``) and read with ``torch.load(weights_only=True,
mmap=True)``; unreadable files raise errors naming the file. :meth:`ExpertBuffer.from_mtt` reads MTT's
original layout.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_sdc.io import atomic_torch_save, atomic_write_text, safe_torch_load

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_EXPERT_RE = re.compile(r"^expert_(\d{4,})\.pt$")

#: metadata keys every expert file carries
META_KEYS = ("dataset", "arch", "arch_kwargs", "zca", "epochs", "lr", "dsa", "rho", "alpha", "param_names",
             "param_shapes", "num_params", "seed", "test_acc", "format_version")
#: keys that differ between the experts of one buffer (everything else must agree)
PER_EXPERT_KEYS = ("expert_index", "test_acc", "train_seconds", "trained_by")


def expert_path(out: str | os.PathLike, index: int) -> Path:
    """``<out>/expert_<index:04d>.pt``."""
    if index < 0:
        raise ValueError(f"expert index must be >= 0, got {index}")
    return Path(out) / f"expert_{index:04d}.pt"


def shared_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` without the per-expert keys."""
    return {k: v for k, v in meta.items() if k not in PER_EXPERT_KEYS}


def normalise_arch_kwargs(arch: str, arch_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``arch_kwargs`` without entries equal to the network factory's defaults.

    So ``{}`` equals ``{"width": 128}`` for a ConvNet whose default width is 128. Keys are sorted and tuples
    become lists (as after a JSON round trip).
    """
    from lightning_sdc.models import network_options

    kwargs = dict(arch_kwargs or {})
    try:
        defaults = network_options(arch)
    except KeyError:  # an architecture this installation does not know: compare as given
        defaults = {}

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    return {
        k: plain(v)
        for k, v in sorted(kwargs.items())
        if not (k in defaults and plain(defaults[k]) == plain(v))
    }


def save_expert(path: str | os.PathLike, trajectory: Tensor, meta: Mapping[str, Any]) -> Path:
    """Write one expert file atomically after checking ``trajectory`` against ``meta``."""
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise KeyError(f"expert metadata lacks {missing}; required: {', '.join(META_KEYS)}")
    expected = (int(meta["epochs"]) + 1, int(meta["num_params"]))
    if trajectory.dtype != torch.float32 or tuple(trajectory.shape) != expected:
        raise ValueError(
            f"trajectory must be float32 of shape {expected} (epochs + 1, num_params), "
            f"got {trajectory.dtype} {tuple(trajectory.shape)}"
        )
    payload = {"trajectory": trajectory.detach().cpu().contiguous(), "meta": dict(meta)}
    return atomic_torch_save(payload, path)


def write_manifest(
    out: str | os.PathLike, meta: Mapping[str, Any], experts: Sequence[Mapping[str, Any]], requested: int
) -> Path:
    """Write ``<out>/manifest.json`` atomically: shared metadata and the experts present so far."""
    doc = {
        "format_version": FORMAT_VERSION,
        "meta": shared_meta(meta),
        "num_experts_requested": int(requested),
        "complete": len(experts) >= requested,
        "experts": [dict(e) for e in experts],
    }
    return atomic_write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", Path(out) / MANIFEST)


def read_expert(path: Path) -> tuple[Tensor, dict[str, Any]]:
    """Memory-map one expert file and check its structure; errors name the file."""
    obj = safe_torch_load(path, mmap=True, what="expert trajectory file")
    if not isinstance(obj, dict) or "trajectory" not in obj or "meta" not in obj:
        raise ValueError(
            f"{path} is not an expert trajectory file (expected a dict with 'trajectory' and 'meta')"
        )
    traj, meta = obj["trajectory"], obj["meta"]
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path}: metadata lacks {missing}")
    if int(meta["format_version"]) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {meta['format_version']} is newer than this reader ({FORMAT_VERSION})"
        )
    expected = (int(meta["epochs"]) + 1, int(meta["num_params"]))
    if not isinstance(traj, Tensor) or traj.dtype != torch.float32 or tuple(traj.shape) != expected:
        got = f"{traj.dtype} {tuple(traj.shape)}" if isinstance(traj, Tensor) else type(traj).__name__
        raise ValueError(f"{path}: trajectory should be float32 {expected} per its metadata, got {got}")
    return traj, dict(meta)


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k)]


class ExpertBuffer:
    """A directory of expert trajectories (see module docstring), opened lazily with ``mmap``.

    Args:
        directory: the ``out`` directory of :func:`~lightning_sdc.experts.train_experts`.
        num_experts: use only the first ``num_experts`` experts (default: all).

    Raises:
        FileNotFoundError: no manifest and no expert files in ``directory``, or a listed file is missing.
        ValueError: an unreadable/truncated file (the message names it) or inconsistent metadata.
    """

    def __init__(self, directory: str | os.PathLike, *, num_experts: int | None = None) -> None:
        self.directory = Path(directory)
        files = self._discover()
        if num_experts is not None:
            if num_experts < 1:
                raise ValueError(f"num_experts must be >= 1 or None, got {num_experts}")
            if num_experts > len(files):
                raise ValueError(
                    f"num_experts={num_experts} but the buffer {self.directory} holds only "
                    f"{len(files)} experts"
                )
            files = dict(list(files.items())[:num_experts])
        self._files: dict[int, Path] = files
        self._trajectories: dict[int, Tensor] = {}
        self._metas: dict[int, dict[str, Any]] = {}
        first = next(iter(files))
        self._trajectory(first)  # validates the first file and fixes the shared metadata
        self.meta: dict[str, Any] = shared_meta(self._metas[first])
        self.source = str(self.directory)

    # ------------------------------------------------------------------ construction
    def _discover(self) -> dict[int, Path]:
        """The manifest's experts plus any ``expert_<i>.pt`` it does not list yet.

        Files are written atomically and independently (by several ranks or jobs of an array), so a file on disk
        is a finished expert even when a concurrent writer's manifest predates it.
        """
        manifest = self.directory / MANIFEST
        files: dict[int, Path] = {}
        if manifest.exists():
            try:
                doc = json.loads(manifest.read_text(encoding="utf-8"))
                files = {int(e["index"]): self.directory / e["file"] for e in doc["experts"]}
                requested = int(doc.get("num_experts_requested", len(files)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"cannot read expert manifest {manifest}: {exc}") from exc
            for path in files.values():
                if not path.exists():
                    raise FileNotFoundError(f"expert file {path} listed in {manifest} is missing")
        found = [(m, p) for p in self.directory.glob("expert_*.pt") if (m := _EXPERT_RE.match(p.name))]
        for m, p in found:
            files.setdefault(int(m.group(1)), p)
        files = dict(sorted(files.items()))
        self.requested = requested if manifest.exists() else len(files)
        if not files:
            raise FileNotFoundError(
                f"no expert trajectories in {self.directory} (no {MANIFEST}, no expert_*.pt)"
            )
        return files

    @classmethod
    def exists(cls, directory: str | os.PathLike) -> bool:
        """Whether ``directory`` holds a manifest or at least one expert file."""
        d = Path(directory)
        return (d / MANIFEST).exists() or any(_EXPERT_RE.match(p.name) for p in d.glob("expert_*.pt"))

    @classmethod
    def from_trajectories(
        cls, trajectories: Sequence[Tensor], meta: Mapping[str, Any], *, source: str = "<memory>"
    ) -> ExpertBuffer:
        """An in-memory buffer over ``[epochs + 1, P]`` trajectories sharing ``meta`` (no files)."""
        self = cls.__new__(cls)
        self.directory = Path(source)
        self.source = source
        self.requested = len(trajectories)
        self._files = {}
        self._trajectories = {}
        self._metas = {}
        expected = (int(meta["epochs"]) + 1, int(meta["num_params"]))
        for i, traj in enumerate(trajectories):
            if tuple(traj.shape) != expected:
                raise ValueError(f"{source}: expert {i} has shape {tuple(traj.shape)}, expected {expected}")
            self._trajectories[i] = traj.detach().to(torch.float32).contiguous()
            self._metas[i] = {**meta, "expert_index": i}
        self.meta = shared_meta(meta)
        return self

    @classmethod
    def from_mtt(
        cls,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        *,
        dataset: str,
        arch: str = "ConvNet",
        arch_kwargs: Mapping[str, Any] | None = None,
        zca: bool = False,
        lr: float = 0.01,
        dsa: bool = True,
    ) -> ExpertBuffer:
        """Read MTT/FTD/DATM ``replay_buffer_<n>.pt`` files (a list of experts, each a list of per-epoch lists
        of per-parameter tensors in ``parameters()`` order — MTT ``buffer.py``).

        ``paths``: one file, a directory (all ``replay_buffer_*.pt`` in numeric order) or a list of files.
        The stored tensor shapes are checked against ``build_network(arch, …, **arch_kwargs)`` for
        ``dataset``, which also supplies the parameter names. The trajectories are held in memory; call
        :meth:`save` to convert them into the memory-mappable format.
        """
        from lightning_sdc.data import dataset_info
        from lightning_sdc.models import build_network
        from lightning_sdc.models.functional import ParamLayout

        if isinstance(paths, (str, os.PathLike)):
            p = Path(paths)
            if p.is_dir():
                found = [q for q in p.glob("replay_buffer_*.pt") if q.stem.split("_")[-1].isdigit()]
                paths = sorted(found, key=lambda q: int(q.stem.split("_")[-1]))
            else:
                paths = [p]
        files = [Path(p) for p in paths]
        if not files:
            raise FileNotFoundError("no replay_buffer_*.pt files given")
        info = dataset_info(dataset)
        channels, *im_size = info.image_shape
        net = build_network(arch, channels, info.num_classes, tuple(im_size), **dict(arch_kwargs or {}))
        layout = ParamLayout.from_module(net)
        shapes = [list(s) for s in layout.shapes]
        trajectories: list[Tensor] = []
        for f in files:
            experts = safe_torch_load(f, what="MTT replay buffer")
            if not isinstance(experts, list) or not experts:
                raise ValueError(f"{f}: expected a non-empty list of experts, got {type(experts).__name__}")
            for k, expert in enumerate(experts):
                rows = []
                for e, snap in enumerate(expert):
                    got = [list(t.shape) for t in snap]
                    if got != shapes:
                        raise ValueError(
                            f"{f}: expert {k} epoch {e} has parameter shapes {got}, but {arch} "
                            f"{dict(arch_kwargs or {})} on {dataset} has {shapes}"
                        )
                    rows.append(torch.cat([t.detach().reshape(-1).to(torch.float32) for t in snap]))
                traj = torch.stack(rows)
                if trajectories and traj.shape != trajectories[0].shape:
                    raise ValueError(
                        f"{f}: expert {k} has {traj.shape[0]} snapshots, "
                        f"earlier experts {trajectories[0].shape[0]}"
                    )
                trajectories.append(traj)
        meta = {
            "dataset": info.name,
            "arch": arch,
            "arch_kwargs": normalise_arch_kwargs(arch, arch_kwargs),
            "zca": bool(zca),
            "epochs": int(trajectories[0].shape[0] - 1),
            "lr": float(lr),
            "dsa": bool(dsa),
            "rho": 0.0,
            "alpha": 0.0,
            "param_names": list(layout.names),
            "param_shapes": shapes,
            "num_params": int(layout.total),
            "seed": -1,
            "test_acc": float("nan"),
            "format_version": FORMAT_VERSION,
            "source": "mtt:" + ",".join(str(f) for f in files),
        }
        return cls.from_trajectories(trajectories, meta, source=str(files[0]))

    def save(self, out: str | os.PathLike) -> list[Path]:
        """Write this buffer in the expert-file format to ``out`` (e.g. to convert an MTT buffer)."""
        written, entries = [], []
        for i in self.expert_ids:
            meta = dict(self._metas.get(i) or self.expert_meta(i))
            meta.setdefault("expert_index", i)
            path = save_expert(expert_path(out, i), self._trajectory(i), meta)
            written.append(path)
            entries.append({"index": i, "file": path.name, "test_acc": meta["test_acc"]})
        write_manifest(out, self.meta, entries, requested=len(entries))
        return written

    # ------------------------------------------------------------------ access
    def _trajectory(self, expert_id: int) -> Tensor:
        traj = self._trajectories.get(expert_id)
        if traj is not None:
            return traj
        if expert_id not in self._files:
            raise KeyError(f"expert {expert_id} is not in {self.source}; available: {self.expert_ids}")
        path = self._files[expert_id]
        traj, meta = read_expert(path)
        if self._metas:
            self._check_shared_meta(path, meta)
        self._trajectories[expert_id] = traj
        self._metas[expert_id] = meta
        return traj

    def _check_shared_meta(self, path: Path, meta: dict[str, Any]) -> None:
        """``ValueError`` naming ``path`` and each key whose shared metadata differ from the first loaded expert's."""
        ref_id = next(iter(self._metas))
        bad = _differences(shared_meta(meta), shared_meta(self._metas[ref_id]))
        if bad:
            raise ValueError(
                f"{path}: metadata {bad} differ from the buffer's first expert "
                f"({self._files.get(ref_id, self.source)}): "
                + "; ".join(f"{k}={meta.get(k)!r} vs {self._metas[ref_id].get(k)!r}" for k in bad)
            )

    @property
    def expert_ids(self) -> list[int]:
        """Indices of the experts in this buffer, ascending."""
        return sorted(self._files) if self._files else sorted(self._trajectories)

    @property
    def num_experts(self) -> int:
        return len(self.expert_ids)

    @property
    def complete(self) -> bool:
        """All experts the writing run asked for are present."""
        return self.num_experts >= self.requested

    @property
    def epochs(self) -> int:
        """Stored training epochs (snapshots are ``0 … epochs``)."""
        return int(self.meta["epochs"])

    @property
    def num_params(self) -> int:
        return int(self.meta["num_params"])

    @property
    def layout(self) -> Any:
        """The :class:`~lightning_sdc.models.functional.ParamLayout` of one flattened snapshot."""
        from lightning_sdc.models.functional import ParamLayout

        shapes = [tuple(int(d) for d in s) for s in self.meta["param_shapes"]]
        return ParamLayout.from_shapes(list(self.meta["param_names"]), shapes)

    def expert_meta(self, expert_id: int) -> dict[str, Any]:
        """The full metadata of one expert (including its ``test_acc``)."""
        self._trajectory(expert_id)
        return dict(self._metas[expert_id])

    def trajectory(self, expert_id: int) -> Tensor:
        """The whole ``[epochs + 1, P]`` trajectory (memory-mapped; rows are read when touched)."""
        return self._trajectory(expert_id)

    def snapshot(self, expert_id: int, epoch: int) -> Tensor:
        """Parameters of ``expert_id`` after ``epoch`` epochs (0 = initialisation) as a fresh ``Tensor[P]``.

        Only that row of the memory-mapped file is read.
        """
        if not 0 <= epoch <= self.epochs:
            raise ValueError(f"epoch must be in [0, {self.epochs}] for this buffer, got {epoch}")
        return self._trajectory(expert_id)[epoch].clone()

    def verify(self, rows_per_read: int = 8) -> None:
        """Open every expert file of the buffer and check it now: readable, ``float32 [epochs + 1, P]`` per its
        metadata, the same shared metadata as the first expert, and finite (no NaN/inf).

        Cheap in memory: each file is memory-mapped and scanned ``rows_per_read`` rows at a time, then dropped,
        so a buffer of many GB is checked without holding it. Raises ``ValueError`` naming the file (and the
        first bad epoch) before a run samples it.
        """
        for expert_id, path in self._files.items():
            traj, meta = read_expert(path)
            self._check_shared_meta(path, meta)
            for start in range(0, traj.shape[0], rows_per_read):
                block = traj[start:start + rows_per_read]
                finite = torch.isfinite(block).all(dim=1)
                if not bool(finite.all()):
                    epoch = start + int((~finite).nonzero()[0, 0])
                    raise ValueError(
                        f"expert trajectory file {path} holds NaN or infinite parameters at epoch {epoch}; "
                        "allowed: finite values. Delete it and rerun the experts command (or "
                        "train_if_missing) to train it again"
                    )
            self._metas.setdefault(expert_id, meta)
            del traj

    def check(
        self,
        *,
        dataset: str | None = None,
        arch: str | None = None,
        zca: bool | None = None,
        arch_kwargs: Mapping[str, Any] | None = None,
        min_epochs: int | None = None,
        dataset_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """Raise one ``ValueError`` listing every buffer/run mismatch (arguments left ``None`` are unchecked).

        Each line names the key, the buffer's value and the run's value. Dataset and architecture names
        compare case-insensitively, aliases resolved through the registries; ``arch_kwargs`` compare
        after dropping values equal to the network's defaults; ``min_epochs`` needs ``epochs >= min_epochs``;
        ``dataset_kwargs`` (loader options such as the split seed) compare as dicts.
        """
        problems = []
        if dataset is not None and _canonical_dataset(dataset) != _canonical_dataset(
            str(self.meta["dataset"])
        ):
            problems.append(f"dataset: buffer has {self.meta['dataset']!r}, run uses {dataset!r}")
        if arch is not None and _canonical_arch(arch) != _canonical_arch(str(self.meta["arch"])):
            problems.append(f"arch: buffer has {self.meta['arch']!r}, run uses {arch!r}")
        if zca is not None and bool(zca) != bool(self.meta["zca"]):
            problems.append(f"zca: buffer has {bool(self.meta['zca'])}, run uses {bool(zca)}")
        if arch_kwargs is not None:
            a = str(self.meta["arch"])
            mine = normalise_arch_kwargs(a, self.meta.get("arch_kwargs"))
            theirs = normalise_arch_kwargs(a, arch_kwargs)
            if mine != theirs:
                problems.append(f"arch_kwargs: buffer has {mine}, run uses {theirs}")
        if dataset_kwargs is not None and dict(self.meta.get("dataset_kwargs") or {}) != dict(dataset_kwargs):
            problems.append(
                f"dataset_kwargs: buffer has {dict(self.meta.get('dataset_kwargs') or {})}, "
                f"run uses {dict(dataset_kwargs)}"
            )
        if min_epochs is not None and self.epochs < min_epochs:
            problems.append(
                f"epochs: buffer has {self.epochs} epochs, run needs at least {min_epochs} "
                "(largest start epoch + expert_epochs)"
            )
        if problems:
            raise ValueError(
                f"expert buffer {self.source} does not match the run:\n  " + "\n  ".join(problems)
            )

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"ExpertBuffer({self.source!r}: {self.num_experts} experts × {self.epochs} epochs, "
            f"{m['arch']} on "
            f"{m['dataset']}{' (ZCA)' if m['zca'] else ''}, P={m['num_params']})"
        )


def _canonical_arch(name: str) -> str:
    from lightning_sdc.models import NETWORKS

    try:
        return NETWORKS.canonical(name).lower()
    except KeyError:
        return name.lower()


def _canonical_dataset(name: str) -> str:
    from lightning_sdc.data import dataset_info

    try:
        return str(dataset_info(name).name).lower()
    except KeyError:
        return name.lower()
