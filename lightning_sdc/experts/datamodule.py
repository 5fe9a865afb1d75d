"""``ExpertTrajectoryDataModule``: serves (start, target) expert parameters to trajectory-matching methods.

Each training "batch" is one distillation iteration's draw (MTT ``distill.py``):
an expert, a start epoch ``t ~ U{lo, …, hi − 1}`` and the flattened snapshots ``θ*_t`` and ``θ*_{t+M}``
(``M = expert_epochs``). The window is ``[min_start_epoch, max_start_epoch)`` or, with
``current_max_start_epoch``, DATM's Sequential Generation: the upper bound grows linearly from
``current_max_start_epoch`` at step 0 to ``max_start_epoch`` at ``expansion_end_step`` and stays there
(DATM ``distill/DATM.py``).

Differences from the references, on purpose: every draw comes from a generator keyed on
``(seed, rank, step)``, so a draw is a pure function of the step and the DDP rank: resuming from a checkpoint
(the step offset is saved by :meth:`state_dict`) and every rank reproduce an uninterrupted run exactly. The
expert is drawn uniformly with replacement (MTT's ``--load_all`` behaviour); MTT's default instead walks
through shuffled files of 10 experts without replacement, which needs the whole chunk in memory — here each
draw memory-maps one file and reads two rows.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lightning_sdc.checks import check_int
from lightning_sdc.experts.buffer import ExpertBuffer
from lightning_sdc.experts.training import train_experts
from lightning_sdc.training import seeded_generator

#: domain tag mixed into the sampling generator's key, so it never coincides with another ``seeded_generator``
_SAMPLE_KEY = 0x45585054  # "EXPT"


#: train_experts arguments that the DataModule sets itself (from its own arguments)
_OWN_TRAIN_ARGS = ("dataset", "arch", "arch_kwargs", "num_experts", "epochs", "out", "zca", "root", "download",
                   "dataset_kwargs", "shard", "num_shards", "rank", "world_size", "barrier")


def _check_train_kwargs(train_kwargs: Mapping[str, Any]) -> None:
    allowed = [n for n in inspect.signature(train_experts).parameters if n not in _OWN_TRAIN_ARGS]
    own = sorted(set(train_kwargs) & set(_OWN_TRAIN_ARGS))
    if own:
        raise ValueError(f"train_kwargs must not set {own}: they come from the DataModule's own arguments")
    unknown = sorted(set(train_kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"train_kwargs has unknown key(s) {unknown}; allowed: {', '.join(allowed)}")


class _ExpertStream(IterableDataset):
    """Endless ``sample(offset), sample(offset + 1), …`` of the owning DataModule (rank read at start)."""

    def __init__(self, datamodule: ExpertTrajectoryDataModule) -> None:
        self.datamodule = datamodule

    def __iter__(self) -> Iterator[dict[str, Any]]:
        dm = self.datamodule
        step, rank = dm._offset, dm._rank()
        while True:
            yield dm.sample(step, rank)
            step += 1


class ExpertTrajectoryDataModule(LightningDataModule):
    """Expert trajectories (trained on demand) + the real data a TM method needs (see module docstring).

    Args:
        dataset: dataset registry name.
        buffer_dir: directory of expert files (:func:`~lightning_sdc.experts.train_experts`).
        arch, arch_kwargs: the student/expert network; must match the buffer.
        zca: the run uses ZCA-whitened data; must match the buffer.
        root: dataset root for torchvision datasets.
        expert_epochs: M, epochs between start and target snapshot (MTT default 2).
        max_start_epoch: exclusive upper bound of the start epoch (MTT default 20).
        min_start_epoch: inclusive lower bound (DATM's ``min_start_epoch``).
        current_max_start_epoch: DATM Sequential Generation: initial upper bound (``None`` = off).
        expansion_end_step: distillation step at which the upper bound reaches ``max_start_epoch``
            (DATM's ``expansion_end_epoch``, which counts iterations).
        num_experts: use the first ``num_experts`` experts of the buffer (default all).
        train_if_missing: :meth:`setup` trains the experts missing from ``buffer_dir`` (or resumes an
            incomplete buffer), dealt over all DDP ranks; ``False``: setup stops at once with the exact
            ``lightning-sdc experts`` command to run first.
        train_epochs: epochs per trained expert (default ``max_start_epoch + expert_epochs``).
        train_num_experts: how many experts to train when missing.
        train_kwargs: extra :func:`train_experts` keywords (``lr``, ``rho``, ``alpha``, ``device`` …).
        seed: seed of the sampling generators and of the trained experts.
        test_batch_size: batch size of the validation/test loaders (the name ``RealDataModule`` uses).
        download: allow :meth:`prepare_data` to fetch a missing torchvision dataset.
        dataset_kwargs: loader options (e.g. ``{"seed": 1}`` for the seeded split of ``digits``); must match
            the buffer's.
    """

    def __init__(
        self,
        dataset: str,
        buffer_dir: str,
        *,
        arch: str = "ConvNet",
        arch_kwargs: dict[str, Any] | None = None,
        zca: bool = False,
        root: str | None = None,
        expert_epochs: int = 2,
        max_start_epoch: int = 20,
        min_start_epoch: int = 0,
        current_max_start_epoch: int | None = None,
        expansion_end_step: int | None = None,
        num_experts: int | None = None,
        train_if_missing: bool = True,
        train_epochs: int | None = None,
        train_num_experts: int = 5,
        train_kwargs: dict[str, Any] | None = None,
        seed: int = 0,
        test_batch_size: int = 1024,
        download: bool = True,
        dataset_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from lightning_sdc.data import dataset_info

        self._info = dataset_info(dataset)  # KeyError listing the allowed names, before anything else
        check_int("expert_epochs", expert_epochs, 1)
        check_int("min_start_epoch", min_start_epoch, 0)
        check_int("max_start_epoch", max_start_epoch, min_start_epoch + 1)
        if current_max_start_epoch is not None:
            if check_int("current_max_start_epoch", current_max_start_epoch, min_start_epoch + 1) > max_start_epoch:
                raise ValueError(f"current_max_start_epoch must be an integer in ({min_start_epoch}, {max_start_epoch}] "
                                 f"(min_start_epoch, max_start_epoch], got {current_max_start_epoch!r}")
            if expansion_end_step is None:
                raise ValueError("current_max_start_epoch (DATM Sequential Generation) needs expansion_end_step")
            check_int("expansion_end_step", expansion_end_step, 1)
        elif expansion_end_step is not None:
            raise ValueError("expansion_end_step only applies with current_max_start_epoch (Sequential Generation)")
        if num_experts is not None:
            check_int("num_experts", num_experts, 1)
        check_int("train_num_experts", train_num_experts, 1)
        needed = max_start_epoch - 1 + expert_epochs
        if train_epochs is None:
            train_epochs = max_start_epoch + expert_epochs
        elif check_int("train_epochs", train_epochs, 1) < needed:
            raise ValueError(
                f"train_epochs={train_epochs} is too short: the largest target snapshot is "
                f"max_start_epoch - 1 + expert_epochs = {needed}"
            )
        check_int("test_batch_size", test_batch_size, 1)
        _check_train_kwargs(train_kwargs or {})
        if file := next((p for p in (Path(buffer_dir), *Path(buffer_dir).parents) if p.is_file()), None):
            raise ValueError(f"buffer_dir={str(buffer_dir)!r}: {str(file)!r} is a file; allowed: a directory of "
                             "expert trajectories (expert_*.pt + manifest.json), new or existing")
        self.save_hyperparameters()
        self.dataset = self._info.name
        self.buffer_dir = Path(buffer_dir)
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs or {})
        self.zca = bool(zca)
        self.root = root
        self.expert_epochs = expert_epochs
        self.max_start_epoch = max_start_epoch
        self.min_start_epoch = min_start_epoch
        self.current_max_start_epoch = current_max_start_epoch
        self.expansion_end_step = expansion_end_step
        self.num_experts = num_experts
        self.train_if_missing = train_if_missing
        self.train_epochs = train_epochs
        self.train_num_experts = train_num_experts
        self.train_kwargs = dict(train_kwargs or {})
        self.seed = int(seed)
        self.test_batch_size = test_batch_size
        self.download = bool(download)
        self.dataset_kwargs = dict(dataset_kwargs or {})
        self.spec: Any = None
        self.real: Any = None
        self.buffer: ExpertBuffer | None = None
        self.layout: Any = None
        self._expert_ids: list[int] = []
        self._offset = 0

    @property
    def info(self) -> Any:
        """The dataset's ``DatasetInfo`` (of the loaded data after :meth:`setup`)."""
        return self.spec.info if self.spec is not None else self._info

    # ------------------------------------------------------------------ Lightning hooks
    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _rank(self) -> int:
        return int(self.trainer.global_rank) if self.trainer is not None else 0

    def _world_size(self) -> int:
        return int(self.trainer.world_size) if self.trainer is not None else 1

    def prepare_data(self) -> None:
        """Download the dataset if needed (Lightning calls this on one process per node).

        Inside a Trainer run, experts are not trained here — that would leave the other ranks waiting at
        Lightning's barrier for hours — but in :meth:`setup`, where every rank trains its share. Called directly
        (no trainer attached), it also trains the missing experts, in this process.
        """
        if self.download:
            from lightning_sdc.data import prepare_dataset

            prepare_dataset(self.dataset, self.root)
        if self.trainer is None and self.train_if_missing:
            self.train_missing_experts()

    def experts_command(self) -> str:
        """The exact ``lightning-sdc experts …`` command that trains the buffer this DataModule expects."""
        from lightning_sdc.experts.run import experts_command_line

        settings = {"seed": self.seed, **self.train_kwargs}
        return experts_command_line(self.dataset, num_experts=self.train_num_experts, epochs=self.train_epochs,
                                    out=str(self.buffer_dir), arch=self.arch, arch_kwargs=self.arch_kwargs,
                                    dataset_kwargs=self.dataset_kwargs, zca=self.zca, root=self.root, **settings)

    def _missing_experts(self) -> bool:
        try:
            buffer = ExpertBuffer(self.buffer_dir)
        except FileNotFoundError:  # nothing finished yet: no files, or a manifest and a .partial of a cut run
            return True
        return not (buffer.complete or buffer.num_experts >= self.train_num_experts)

    def train_missing_experts(self) -> None:
        """Train the missing experts of ``buffer_dir`` (``train_if_missing``), dealt over all ranks.

        Every rank of a DDP run trains its share (:func:`~lightning_sdc.experts.train_experts` with the
        trainer's rank, world size and barrier), so no rank idles at a barrier; an interrupted buffer resumes.
        The ranks decide together whether anything is missing. With several nodes ``buffer_dir`` must be on a
        shared filesystem; if a rank still lacks experts afterwards, the error gives the command to run first.
        """
        trainer = self.trainer
        world = self._world_size()
        missing = self._missing_experts()
        if world > 1:
            missing = bool(trainer.strategy.reduce_boolean_decision(missing, all=False))
        if not missing:
            return
        kwargs = dict(self.train_kwargs)
        if "device" not in kwargs and trainer is not None:
            kwargs["device"] = str(self._device())
        kwargs.setdefault("seed", self.seed)
        train_experts(self.dataset, arch=self.arch, arch_kwargs=self.arch_kwargs, num_experts=self.train_num_experts,
                      epochs=self.train_epochs, out=str(self.buffer_dir), zca=self.zca, root=self.root,
                      download=self.download, dataset_kwargs=self.dataset_kwargs, rank=self._rank(), world_size=world,
                      barrier=trainer.strategy.barrier if world > 1 else None, **kwargs)
        if self._missing_experts():
            raise RuntimeError(
                f"rank {self._rank()} sees only part of the experts in {self.buffer_dir} after training them "
                "over all ranks: with several nodes buffer_dir must be on a filesystem they share. "
                f"Otherwise train them first with:\n  {self.experts_command()}"
            )

    def setup(self, stage: str | None = None) -> None:
        """Load the dataset (``.spec``, ``.info``, ``.real`` on the root device) and the buffer, and check
        that the buffer matches the run (dataset, arch, arch_kwargs, zca, parameter shapes, enough epochs)."""
        from lightning_sdc.data import ClassIndexedImages, load_dataset

        if self.spec is None:
            self.spec = load_dataset(
                self.dataset, self.root, download=self.download, zca=self.zca, **self.dataset_kwargs
            )
        device = self._device()
        if self.real is None or self.real.device != device:
            self.real = ClassIndexedImages(
                self.spec.train_images.to(device), self.spec.train_labels, self.spec.num_classes
            )
        if self.buffer is None:
            if self.train_if_missing:
                self.train_missing_experts()
            self.buffer = self._open_buffer()
            self.layout = self.buffer.layout
            self._expert_ids = self.buffer.expert_ids

    def _open_buffer(self) -> ExpertBuffer:
        if not ExpertBuffer.exists(self.buffer_dir):
            hint = "" if self.train_if_missing else " (train_if_missing=False)"
            raise FileNotFoundError(
                f"no expert trajectories in {self.buffer_dir}{hint}; train them first with:\n  "
                f"{self.experts_command()}\n(--trainer.devices N or --shard K --num_shards N spread them over "
                "GPUs or the jobs of an array; or set train_if_missing=True to train them in this run on all ranks)"
            )
        buffer = ExpertBuffer(self.buffer_dir, num_experts=self.num_experts)
        buffer.check(
            dataset=self.dataset,
            arch=self.arch,
            zca=self.zca,
            arch_kwargs=self.arch_kwargs,
            dataset_kwargs=self.dataset_kwargs,
        )
        needed = self.max_start_epoch - 1 + self.expert_epochs
        if buffer.epochs < needed:
            raise ValueError(
                f"expert buffer {buffer.source} does not match the run:\n  epochs: buffer has {buffer.epochs} "
                f"epochs, run needs at least {needed} = max_start_epoch={self.max_start_epoch} - 1 + "
                f"expert_epochs={self.expert_epochs}; allowed: max_start_epoch + expert_epochs <= "
                f"{buffer.epochs + 1}"
            )
        self._check_layout(buffer)
        buffer.verify()  # every expert file now, not when a later update first samples it
        if not buffer.complete:
            rank_zero_warn(
                f"{buffer!r} is incomplete: {buffer.num_experts} of {buffer.requested} experts present"
            )
        return buffer

    def _check_layout(self, buffer: ExpertBuffer) -> None:
        """The run's network must have the buffer's parameter names and shapes, in the same order."""
        from lightning_sdc.models import build_network
        from lightning_sdc.models.functional import ParamLayout

        channels, *im_size = self.spec.image_shape
        net = build_network(self.arch, channels, self.spec.num_classes, tuple(im_size), **self.arch_kwargs)
        mine = ParamLayout.from_module(net)
        run_shapes = [[int(d) for d in s] for s in mine.shapes]
        buf_shapes = [[int(d) for d in s] for s in buffer.meta["param_shapes"]]
        if list(mine.names) != list(buffer.meta["param_names"]) or run_shapes != buf_shapes:
            raise ValueError(
                f"expert buffer {buffer.source} does not match the run's network: param_shapes: buffer has "
                f"{buf_shapes}, run's {self.arch} {self.arch_kwargs} has {run_shapes}"
            )

    def state_dict(self) -> dict[str, Any]:
        """The sampling offset to resume from: the trainer's ``global_step`` at checkpoint time.

        This equals the number of draws consumed as long as ``global_step`` counts distillation iterations
        (one per batch); a method that skips updates (DATM's loss gate) must still count the iteration.
        """
        offset = int(self.trainer.global_step) if self.trainer is not None else self._offset
        return {"offset": offset, "seed": self.seed}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if "offset" not in state_dict:
            raise KeyError(f"ExpertTrajectoryDataModule state lacks 'offset'; got keys {sorted(state_dict)}")
        if int(state_dict.get("seed", self.seed)) != self.seed:
            rank_zero_warn(
                f"checkpoint was sampled with seed {state_dict['seed']}, "
                f"this DataModule uses seed {self.seed}"
            )
        self._offset = check_int("offset", int(state_dict["offset"]), 0)

    # ------------------------------------------------------------------ sampling
    def window(self, step: int) -> tuple[int, int]:
        """``(lo, hi)``: start epochs are drawn from ``{lo, …, hi − 1}`` at distillation ``step``."""
        check_int("step", step, 0)
        hi = self.max_start_epoch
        if self.current_max_start_epoch is not None:
            assert self.expansion_end_step is not None
            grow = (self.max_start_epoch - self.current_max_start_epoch) * step // self.expansion_end_step
            hi = min(self.max_start_epoch, self.current_max_start_epoch + grow)
        return self.min_start_epoch, hi

    def sample(self, step: int, rank: int = 0) -> dict[str, Any]:
        """The draw of distillation ``step`` on ``rank``: a pure function of ``(seed, rank, step)``.

        Returns ``{"start_params": Tensor[P], "target_params": Tensor[P], "start_epoch": int,
        "expert_id": int}``
        (CPU float32; Lightning moves them to the device).
        """
        if self.buffer is None:
            raise RuntimeError("call setup() before sample()")
        check_int("rank", rank, 0)
        lo, hi = self.window(step)
        g = seeded_generator(self.seed, _SAMPLE_KEY, rank, step)
        expert_id = self._expert_ids[int(torch.randint(len(self._expert_ids), (1,), generator=g))]
        start = int(torch.randint(lo, hi, (1,), generator=g))
        return {
            "start_params": self.buffer.snapshot(expert_id, start),
            "target_params": self.buffer.snapshot(expert_id, start + self.expert_epochs),
            "start_epoch": start,
            "expert_id": expert_id,
        }

    def expert_final_params(self) -> Iterator[tuple[int, Tensor]]:
        """``(expert_id, parameters after the last stored epoch)`` per expert (DATM's initialisation)."""
        if self.buffer is None:
            raise RuntimeError("call setup() before expert_final_params()")
        for expert_id in self._expert_ids:
            yield expert_id, self.buffer.snapshot(expert_id, self.buffer.epochs)

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        """Infinite stream of :meth:`sample` draws from the restored offset (``batch_size=None``)."""
        if self.buffer is None:
            raise RuntimeError("call setup() before train_dataloader()")
        return DataLoader(_ExpertStream(self), batch_size=None)

    def _test_loader(self) -> DataLoader:
        if self.spec is None:
            raise RuntimeError("call setup() before requesting the test split")
        data = TensorDataset(self.spec.test_images, self.spec.test_labels)
        return DataLoader(data, batch_size=self.test_batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        """The real test split (ZCA-whitened when ``zca``), as the references validate on it."""
        return self._test_loader()

    def test_dataloader(self) -> DataLoader:
        return self._test_loader()

    def __repr__(self) -> str:
        return (
            f"ExpertTrajectoryDataModule({self.dataset!r}, {os.fspath(self.buffer_dir)!r}, "
            f"arch={self.arch!r}, "
            f"window=[{self.min_start_epoch}, {self.max_start_epoch}), expert_epochs={self.expert_epochs})"
        )
