"""``TrajectoryMatching``: the Lightning module every TM method (MTT, FTD, TESLA, DATM) shares.

One ``training_step`` = one distillation iteration of MTT ``distill.py`` = one update of the synthetic set: the
DataModule's draw (``ExpertTrajectoryDataModule``: ``start_params`` θ*_t, ``target_params`` θ*_{t+M}),
:meth:`~TrajectoryMatching.prepare_step` (TESLA's teacher labels), the inner plan (``syn_steps`` minibatches of
``batch_syn`` rows, MTT's permutation chunks, and one per-image DSA draw per inner step unless ``inner_augment``
is off, from a generator keyed on ``(seed, step, rank)``),
:func:`~lightning_sdc.methods.tm.meta.trajectory_objective` (normalised parameter distance + ``λ·mean_k R(g_k)``,
eq. 12 / Algorithm 2), then the update or, when :meth:`~TrajectoryMatching.skip_update` says so (DATM's gate), a
counted no-op step, and :meth:`~TrajectoryMatching.after_update` (FTD's EMA).

One SGD optimiser with parameter groups: images (``lr_img``, momentum 0.5), the student lr ``syn_lr`` (``lr_lr``,
0.5; MTT's ``optimizer_lr``) and, for ``label_mode="learned"``, the label logits (``lr_y``, ``momentum_y`` 0.9;
DATM's ``optimizer_y``): SGD keeps state per parameter, so this is the references' three optimisers exactly.

Logged every step, under the names gradient matching uses: ``match/loss`` (normalised parameter distance),
``sdc/grad_norm`` (mean over inner steps of ``‖g_k‖^p``: what λ multiplies), ``sdc/term`` (λ · ``sdc/grad_norm``),
``train/objective`` (their sum), ``sdc/lambda``; and ``tm/syn_lr``, ``tm/start_epoch``, ``tm/expert_id``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lightning_sdc.checks import check_int, check_number
from lightning_sdc.methods.base import DistillationModule
from lightning_sdc.methods.tm.meta import (
    InnerStep,
    MatchResult,
    Memory,
    MetaGradient,
    chunk_schedule,
    trajectory_objective,
)
from lightning_sdc.methods.tm.student import FunctionalStudent

#: domain tags of the per-step generators (mixed into the seed so they never collide with other draws)
_PLAN_KEY = 0x544D504C  # "TMPL"


class TrajectoryMatching(DistillationModule):
    """Trajectory matching with SDC (MTT ``distill.py`` + paper eq. 12); base of MTT, FTD, TESLA and DATM.

    Args:
        dataset, ipc: as :class:`~lightning_sdc.methods.base.DistillationModule`.
        syn_steps: N, student updates per iteration (MTT ``--syn_steps``).
        batch_syn: synthetic rows per inner step (``None``: all, MTT's default).
        syn_lr: initial student lr α (MTT initialises it to ``--lr_teacher``).
        learn_lr: learn α (MTT: yes).
        lr_lr: learning rate of α (SGD, momentum ``momentum_lr``).
        momentum_lr: 0.5 as MTT.
        lr_img: learning rate of the images (MTT: 100–10⁴, momentum 0.5).
        lr_y, momentum_y: learning rate and momentum of learned label logits (``label_mode="learned"``; DATM
            2–10 and 0.9); ignored otherwise.
        memory: ``"unrolled"`` (keep the graph, MTT) or ``"constant"`` (TESLA's two passes).
        meta_gradient: ``"exact"`` or ``"first_order"`` (TESLA's code; see :mod:`~lightning_sdc.methods.tm.meta`).
        inner_augment: DSA on the student's inputs at every inner step (MTT: on unless ``--no_aug``).
        eval_epochs: 1000 as the TM references (1001 passes).
        **kwargs: every other :class:`~lightning_sdc.methods.base.DistillationModule` argument (``sdc_lambda``,
            ``sdc_power``, ``seed``, ``zca``, ``arch``, ``arch_kwargs``, ``eval_*``, ``dsa_strategy``, ``init``,
            ``label_mode``).
    """

    def __init__(
        self,
        dataset: str,
        ipc: int,
        *,
        syn_steps: int = 20,
        batch_syn: int | None = None,
        syn_lr: float = 0.01,
        learn_lr: bool = True,
        lr_lr: float = 1e-5,
        momentum_lr: float = 0.5,
        lr_img: float = 1000.0,
        lr_y: float = 2.0,
        momentum_y: float = 0.9,
        memory: Memory = "unrolled",
        meta_gradient: MetaGradient = "exact",
        inner_augment: bool = True,
        eval_epochs: int = 1000,
        **kwargs: Any,
    ) -> None:
        check_int("syn_steps", syn_steps, 1)
        if batch_syn is not None:
            check_int("batch_syn", batch_syn, 1)
        for name, value in (("lr_lr", lr_lr), ("lr_y", lr_y)):
            check_number(name, value, strict=False)
        for name, value in (("momentum_lr", momentum_lr), ("momentum_y", momentum_y)):
            check_number(name, value, strict=False, below=1)
        super().__init__(dataset, ipc, syn_lr=syn_lr, learn_lr=learn_lr, lr_img=lr_img, eval_epochs=eval_epochs, **kwargs)
        self.syn_steps = int(syn_steps)
        self.batch_syn = batch_syn
        self.memory = memory
        self.meta_gradient = meta_gradient
        self._student: FunctionalStudent | None = None
        self._dsa_strategy: str | None = None

    # ------------------------------------------------------------------ optimiser
    def param_groups(self) -> list[dict[str, Any]]:
        """Images (``lr_img``, 0.5) + ``syn_lr`` (``lr_lr``, 0.5) if learned + labels (``lr_y``, 0.9) if learned."""
        groups = super().param_groups()
        s = self.synset
        if isinstance(s.syn_lr, torch.nn.Parameter):
            groups.append({"params": [s.syn_lr], "lr": self.hparams.lr_lr, "momentum": self.hparams.momentum_lr})
        if s.label_mode == "learned":
            groups.append({"params": [s.labels], "lr": self.hparams.lr_y, "momentum": self.hparams.momentum_y})
        return groups

    # ------------------------------------------------------------------ student and inner plan
    @property
    def student(self) -> FunctionalStudent:
        """The functional student on this module's device (built on first use, never registered)."""
        if self._student is None or self._student.device != self.device:
            self._student = FunctionalStudent.build(
                self.arch, self.synset.image_shape, self.num_classes, self.arch_kwargs, device=self.device
            )
            dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            layout = getattr(dm, "layout", None)
            if layout is not None and int(layout.total) != self._student.num_params:
                raise ValueError(
                    f"the expert buffer has {int(layout.total)} parameters per snapshot but the student "
                    f"{self.arch} {self.arch_kwargs} has {self._student.num_params}"
                )
        return self._student

    @property
    def dsa_strategy(self) -> str:
        """The inner-loop DSA strategy (the evaluation's: ``dsa_strategy`` or the dataset's default)."""
        if self._dsa_strategy is None:
            from lightning_sdc.augment import default_dsa_strategy

            self._dsa_strategy = self.hparams.dsa_strategy or default_dsa_strategy(self.info.name)
        return self._dsa_strategy

    @property
    def rank(self) -> int:
        return int(self.trainer.global_rank) if self._trainer is not None else 0

    def inner_plan(self, step: int | None = None, rank: int | None = None) -> list[InnerStep]:
        """The rows and DSA draws of the ``syn_steps`` inner steps of distillation ``step`` on ``rank``.

        A pure function of ``(seed, step, rank)``: resuming and every DDP rank reproduce it.
        """
        from lightning_sdc.augment import sample_dsa

        step = self.step_index if step is None else step
        rank = self.rank if rank is None else rank
        g = self.generator(_PLAN_KEY, step, rank)
        n = self.synset.images.shape[0]
        rows = chunk_schedule(n, self.batch_syn, self.syn_steps, g)
        if not self.hparams.inner_augment:
            return [InnerStep(r) for r in rows]
        size = tuple(self.synset.image_shape[1:])
        device = self.synset.images.device
        plan = []
        for r in rows:
            count = n if r is None else int(r.numel())
            aug = sample_dsa(self.dsa_strategy, count, generator=g, siamese=False, image_size=size, device=device)
            plan.append(InnerStep(None if r is None else r.to(device), aug))
        return plan

    def batch_targets(self, index: Tensor | None) -> Tensor:
        """Targets of synthetic rows ``index``: class indices, or ``softmax(labels)`` rows (attached to learned
        logits, so DATM's label gradient flows through every inner step)."""
        s = self.synset
        if s.label_mode == "hard":
            return s.labels if index is None else s.labels.index_select(0, index)
        logits = s.labels if index is None else s.labels.index_select(0, index)
        return torch.softmax(logits, dim=1)

    # ------------------------------------------------------------------ the step
    def prepare_step(self, batch: dict[str, Any]) -> None:
        """Hook run after the draw and before the inner loop (TESLA: teacher labels)."""

    def skip_update(self, result: MatchResult) -> bool:
        """Hook: ``True`` skips this update (DATM's loss gate); the iteration is still counted."""
        return False

    def after_update(self, skipped: bool) -> None:
        """Hook run after the (possibly skipped) optimiser step (FTD: EMA of the images)."""

    def compute_objective(self, batch: dict[str, Any]) -> MatchResult:
        """The meta-objective of one draw (see :func:`~lightning_sdc.methods.tm.meta.trajectory_objective`)."""
        s = self.synset
        student = self.student
        start = batch["start_params"].to(self.device, torch.float32).reshape(-1)
        target = batch["target_params"].to(self.device, torch.float32).reshape(-1)
        if start.numel() != student.num_params or target.numel() != student.num_params:
            raise ValueError(
                f"expert parameters have {start.numel()}/{target.numel()} entries but the student "
                f"{self.arch} has {student.num_params}; the buffer was trained for another network"
            )
        learned = [s.labels] if s.label_mode == "learned" else []
        return trajectory_objective(
            student.loss, s.images, self.batch_targets, s.syn_lr, start, target, self.inner_plan(),
            memory=self.memory, meta_gradient=self.meta_gradient, sdc_lambda=self.sdc_lambda,
            sdc_power=self.sdc_power, learned=learned,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        self.prepare_step(batch)
        result = self.compute_objective(batch)
        skipped = self.skip_update(result)  # DATM's gate sees the loss first: it skips a non-finite one
        if skipped:
            self.skip_step()
        else:
            self.check_finite(result.objective.detach(), "trajectory-matching loss")
            self.apply_update(result.objective)
        self.after_update(skipped)
        lr = self.synset.syn_lr
        term = self.sdc_lambda * result.sdc
        self.log_step(**{
            "match/loss": result.match_loss,
            "sdc/grad_norm": result.sdc,
            "sdc/term": term,
            "train/objective": result.match_loss + term,
            "tm/syn_lr": lr.detach() if lr is not None else 0.0,
            "tm/start_epoch": int(batch["start_epoch"]),
            "tm/expert_id": int(batch["expert_id"]),
        })
        return result.objective.detach()

    def divergence_hint(self) -> str:
        """Blame the learned student lr (``lr_lr``) or label logits (``lr_y``) when they have run away, else the
        images (the base's hint)."""
        lr, hp = self.synset.syn_lr, self.hparams
        if hp.learn_lr and lr is not None:
            value = float(lr.detach())
            if not math.isfinite(value) or value <= 0 or value > 100 * hp.syn_lr:
                return (f"The learned student lr syn_lr is {value:g} (initial {hp.syn_lr:g}): lower "
                        f"lr_lr={hp.lr_lr:g}, or resume from it.")
        labels = self.synset.labels
        if self.synset.label_mode == "learned" and not bool(torch.isfinite(labels.detach()).all()):
            return f"The learned label logits are not finite: lower lr_y={hp.lr_y:g}, or resume from it."
        return super().divergence_hint()

    def skip_step(self) -> None:
        """A counted no-op update: ``opt.step()`` with zero gradients, lr 0 and momentum 0 in every group.

        Lightning's ``global_step`` counts ``optimizer.step()`` calls in manual optimisation, and the DataModule's resume offset, the per-step generators and
        ``val_check_interval`` are keyed on it, so a skipped iteration must still step. With zero gradients,
        ``lr = 0`` and ``momentum = 0`` SGD leaves every parameter and every momentum buffer bit-identical
        (``p + (−0)·0 = p``; momentum buffers are only touched when ``momentum ≠ 0``), and the path also works
        under a ``16-mixed`` GradScaler, which refuses a step without any gradient.
        """
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        saved = []
        for group in opt.param_groups:
            saved.append((group["lr"], group["momentum"]))
            group["lr"], group["momentum"] = 0.0, 0.0
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        try:
            opt.step()
        finally:
            for group, (lr, mom) in zip(opt.param_groups, saved):
                group["lr"], group["momentum"] = lr, mom
            opt.zero_grad(set_to_none=True)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Fail early with a clear message when the DataModule does not serve expert draws."""
        if not isinstance(batch, dict) or "start_params" not in batch or "target_params" not in batch:
            raise TypeError(
                f"{type(self).__name__} needs an ExpertTrajectoryDataModule (batches with start_params/"
                f"target_params), got a batch of type {type(batch).__name__}"
            )
