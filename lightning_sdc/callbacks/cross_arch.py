"""``CrossArchEvaluation``: the cross-architecture table (paper Tables 3 and 9–11) at the end of ``fit``.

Fresh networks of every architecture in ``archs`` (default: DC's six) trained on the evaluated set with the
method's protocol (:meth:`DistillationModule.eval_kwargs`) and tested on the real test split, as one job list of
the evaluation engine (:func:`~lightning_sdc.evaluation.evaluate_table`, as ``lightning-sdc evaluate``; shared
over DDP ranks); the table goes to every logger (``cross_arch/<arch>/acc_mean|acc_std``) and to
``cross_arch.md`` / ``cross_arch.csv`` in the log directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from lightning_sdc.callbacks.common import evaluated_set, log_metrics, output_dir
from lightning_sdc.checks import check_int
from lightning_sdc.evaluation import CROSS_ARCHS, EvalResult, evaluate_table, results_markdown, write_results
from lightning_sdc.evaluation.protocol import dist_rank_world, eval_jobs, rank_share, unique_archs
from lightning_sdc.progress import progress, trainer_progress_enabled


class CrossArchEvaluation(pl.Callback):
    """Train fresh networks of several architectures on the synthetic set at the end of ``fit``.

    Args:
        archs: architecture names (default: the paper's six).
        num_models: networks per architecture (default: the method's ``eval_num_models``).
        epochs, lr, batch_size, augment: override the method's evaluation protocol (``None``: the method's).
        arch_kwargs: per-architecture ``build_network`` options, e.g. ``{"ConvNet": {"width": 32}}``. By
            default the method's evaluation architecture gets the method's evaluation options and the others
            none (as ``lightning-sdc evaluate --arch_kwargs '{ConvNet: {width: 32}}'``).
        dirpath: where ``<filename>.md/.csv`` go (default: the log directory).
        filename: file stem.
        skip_unsupported: leave out architectures that cannot take the dataset's image shape (e.g. LeNet on
            8×8 digits) with a warning, instead of failing at the start of ``fit``.

    While the networks train, a progress bar (epochs, ETA) is drawn when the Trainer draws one on a terminal.
    """

    def __init__(self, archs: Sequence[str] = CROSS_ARCHS, num_models: int | None = None, epochs: int | None = None,
                 lr: float | None = None, batch_size: int | None = None, augment: str | None = None,
                 arch_kwargs: Mapping[str, Mapping[str, Any]] | None = None, dirpath: str | None = None,
                 filename: str = "cross_arch", skip_unsupported: bool = False) -> None:
        from lightning_sdc.models import NETWORKS

        self.archs = unique_archs(archs)  # KeyError listing the allowed names, ValueError for one named twice
        if not self.archs:
            raise ValueError("archs must name at least one architecture")
        for what, value, low in (("num_models", num_models, 1), ("epochs", epochs, 0)):
            if value is not None:
                check_int(what, value, low)
        if augment is not None and augment not in ("dsa", "dc", "none"):
            raise ValueError(f"augment={augment!r} is not allowed; allowed: dsa, dc, none")
        self.num_models, self.epochs, self.lr, self.batch_size, self.augment = num_models, epochs, lr, batch_size, augment
        self.per_arch_kwargs = {NETWORKS.canonical(k): dict(v) for k, v in (arch_kwargs or {}).items()}
        self.dirpath, self.filename, self.skip_unsupported = dirpath, filename, bool(skip_unsupported)
        self.results: list[EvalResult] = []
        self.paths: list[Any] = []

    # ------------------------------------------------------------------ configuration
    def protocol(self, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The method's ``eval_kwargs()`` with this callback's overrides."""
        kw = dict(pl_module.eval_kwargs())
        for key in ("num_models", "epochs", "lr", "batch_size", "augment"):
            if getattr(self, key) is not None:
                kw[key] = getattr(self, key)
        return kw

    def options_for(self, arch: str, kw: Mapping[str, Any]) -> dict[str, Any]:
        """``build_network`` options of ``arch``: this callback's, else the method's for its evaluation arch."""
        if arch in self.per_arch_kwargs:
            return dict(self.per_arch_kwargs[arch])
        own = kw.get("arch_kwargs")
        return dict(own or {}) if arch == kw.get("arch") else {}

    def supported_archs(self, pl_module: pl.LightningModule) -> list[str]:
        """The archs that can be built for the set's image shape (built on the ``meta`` device: no memory)."""
        from lightning_sdc.models import build_network

        synset = getattr(pl_module, "synset", None)  # only its shape is needed
        if synset is None:
            synset = evaluated_set(pl_module)
        c, h, w = synset.image_shape
        kw = self.protocol(pl_module)
        ok = []
        for arch in self.archs:
            try:
                with torch.device("meta"):
                    build_network(arch, c, synset.num_classes, (h, w), **self.options_for(arch, kw))
            except ValueError as exc:
                if not self.skip_unsupported:
                    raise ValueError(f"CrossArchEvaluation: {exc} (or pass skip_unsupported=True)") from exc
                rank_zero_warn(f"CrossArchEvaluation skips {arch}: {exc}")
                continue
            ok.append(arch)
        return ok

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.supported_archs(pl_module)  # fail (or warn) before hours of distillation, not after

    # ------------------------------------------------------------------ the evaluation
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run(trainer, pl_module)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[EvalResult]:
        """Train and test every (architecture, model) job of this rank, gather, log and write the table."""
        out = output_dir(trainer, self.dirpath)  # collective under DDP: every rank calls it
        synset = evaluated_set(pl_module)
        if not synset.is_finite():
            rank_zero_warn("CrossArchEvaluation: the synthetic set holds non-finite values; nothing evaluated")
            return []
        spec = getattr(getattr(trainer, "datamodule", None), "spec", None)
        if spec is None:
            raise ValueError("CrossArchEvaluation needs a DataModule with a loaded dataset 'spec' (its test split)")
        kw = self.protocol(pl_module)
        archs = self.supported_archs(pl_module)
        if trainer.world_size != dist_rank_world()[1]:
            raise RuntimeError(f"CrossArchEvaluation: the Trainer has {trainer.world_size} processes but "
                               f"torch.distributed has {dist_rank_world()[1]}; it gathers over torch.distributed")
        mine = rank_share(eval_jobs(archs, kw["num_models"]), trainer.global_rank, trainer.world_size)
        bar = progress(total=len(mine) * (kw["epochs"] + 1), desc="cross-architecture evaluation", unit="epoch",
                       enabled=trainer.is_global_zero and trainer_progress_enabled(trainer))
        kw["arch_kwargs"] = {arch: self.options_for(arch, kw) for arch in archs}
        kw.pop("arch", None)
        with bar:  # an error is raised on every rank
            self.results, _ = evaluate_table(synset, (spec.test_images, spec.test_labels), archs, **kw,
                                             device=pl_module.device, on_epoch=bar.update, distributed=True)
        self._report(trainer, out, synset)
        return self.results

    def _report(self, trainer: pl.Trainer, out: Any, synset: Any) -> None:
        if not trainer.is_global_zero or not self.results:
            return
        title = f"cross-architecture evaluation: {synset.dataset}, IPC {synset.ipc}, step {trainer.global_step}"
        metrics = {f"cross_arch/{r.arch}/acc_{k}": getattr(r, k) for r in self.results for k in ("mean", "std")}
        log_metrics(trainer, metrics, trainer.global_step)
        table = results_markdown(self.results, title)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if callable(getattr(experiment, "add_text", None)):
                experiment.add_text("cross_arch", table, trainer.global_step)
            logger.save()
        self.paths = write_results(self.results, out / self.filename, title)
