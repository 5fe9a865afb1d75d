"""DATM (Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching";
DATM ``distill/DATM.py``).

On top of MTT's loop:

* **initial images the experts classify correctly** (``pix_init samples_predicted_correctly``, §5.2): for each
  class, its real images in a random order are scanned in batches of 256 through the first expert's final
  snapshot and the first ``ipc`` predicted correctly are kept; if a class runs out, the next expert scans the
  images not yet chosen (the reference switches expert the same way). If every expert is exhausted the
  remaining rows are filled with random images of the class, with a warning.
* **learnable soft labels** (§5.3–5.4): ``label_mode="learned"`` logits, optimised by SGD(``lr_y``, momentum
  0.9); targets ``softmax(labels)``, inner loss the soft cross-entropy; the label gradient flows through every
  inner step. Initial logits: for each (selected) image, the mean of the final-snapshot logits of every expert
  whose prediction is the image's class; with ``select_correct=False`` the first expert's logits (as the
  reference's ``pix_init real`` branch).
* **loss gating** (§5.4): when the normalised matching loss of an iteration exceeds ``threshold`` (1.0; 1.1 for
  CIFAR-10 IPC1) the whole update — images, labels and lr — is skipped. The SDC term does not enter the
  gate, so λ cannot change which iterations are skipped. The skipped iteration is still counted: the module
  makes a no-op ``opt.step()`` (:meth:`~lightning_sdc.methods.tm.base.TrajectoryMatching.skip_step`), so
  ``global_step`` advances by one exactly as for an update, and the DataModule's resume offset, the per-step
  generators, ``max_steps`` and ``val_check_interval`` keep counting iterations as in the reference (whose
  loop counter ``it`` advances whether or not the optimisers step). Under DDP the decision uses the mean loss
  over ranks, so every rank skips together and the synthetic sets stay identical. Logged as ``datm/skipped``
  (0/1 per step). A non-finite matching loss is skipped too (with a warning naming the step), as in the
  reference, which steps only when ``loss <= threshold``; with ``threshold=None`` it stops the run
  (:class:`~lightning_sdc.methods.base.DivergenceError`) as in every other method.
* **difficulty-aligned window** (§5.5): the start-epoch window ``[min_start_epoch, U(step))`` with DATM's
  Sequential Generation ramp is the DataModule's (``ExpertTrajectoryDataModule(min_start_epoch=…,
  current_max_start_epoch=…, expansion_end_step=…)``); each config sets it from paper Table 8.

DATM's configs also carry ``ema_decay``, which DATM never uses; it is not a parameter here.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from lightning_sdc.checks import check_number
from lightning_sdc.methods.registry import register_method
from lightning_sdc.methods.tm.base import TrajectoryMatching
from lightning_sdc.methods.tm.meta import MatchResult

#: images per forward when scanning real images with an expert (the reference's batch of 256)
SCAN_BATCH = 256


@register_method()
class DATM(TrajectoryMatching):
    """DATM + SDC (see module docstring).

    Args:
        threshold: skip the update when the matching loss exceeds it (``None``: never skip).
        select_correct: initialise from real images the experts classify correctly (needs ``init="real"``).
        lr_y, momentum_y: SGD of the label logits (DATM: ``lr_y`` 2–10, ``Momentum_y`` 0.9).
        eval_batch_size: 128 as DATM's ``batch_train``.
        **kwargs: every :class:`TrajectoryMatching` argument (``label_mode`` is always ``"learned"``).
    """

    def __init__(
        self,
        dataset: str,
        ipc: int,
        *,
        threshold: float | None = 1.0,
        select_correct: bool = True,
        lr_y: float = 2.0,
        momentum_y: float = 0.9,
        eval_batch_size: int = 128,
        label_mode: Literal["learned"] = "learned",
        **kwargs: Any,
    ) -> None:
        if threshold is not None:
            check_number("threshold", threshold)
        super().__init__(dataset, ipc, label_mode=label_mode, lr_y=lr_y, momentum_y=momentum_y,
                         eval_batch_size=eval_batch_size, **kwargs)
        self.skipped_updates = 0

    # ------------------------------------------------------------------ initialisation
    def init_synset(self) -> None:
        super().init_synset()
        experts = _LazyExperts(self.datamodule.expert_final_params(), self.device)
        if self.hparams.select_correct and self.hparams.init == "real":
            self.select_correct_images(experts)
        self.init_label_logits(experts)

    @torch.no_grad()
    def select_correct_images(self, experts: _LazyExperts) -> None:
        """Per class, the first ``ipc`` real images (random order) that an expert classifies correctly."""
        real, ipc = self.real, self.synset.ipc
        g = self.generator(-1)
        for c in range(self.num_classes):
            rows = real.indices(c)[torch.randperm(real.count(c), generator=g)]
            taken = torch.zeros(rows.numel(), dtype=torch.bool)
            picked: list[Tensor] = []
            e = 0
            while sum(p.numel() for p in picked) < ipc and (theta := experts.get(e)) is not None:
                picked += self._scan(theta, c, rows, taken, ipc - sum(p.numel() for p in picked))
                e += 1
            chosen = torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long)
            if chosen.numel() < ipc:
                rank_zero_warn(
                    f"DATM init: only {chosen.numel()} of class {c}'s images are classified correctly by the "
                    f"experts; filling the other {ipc - chosen.numel()} with random images of the class"
                )
                chosen = torch.cat([chosen, (~taken).nonzero().flatten()[: ipc - chosen.numel()]])
            x = real.images.index_select(0, rows[chosen].to(real.device))
            self.synset.images[self.synset.class_slice(c)] = x.to(self.synset.images)

    def _scan(self, theta: Tensor, c: int, rows: Tensor, taken: Tensor, need: int) -> list[Tensor]:
        """Positions in ``rows`` (not yet ``taken``) that ``theta`` predicts as ``c``, at most ``need``, in order."""
        out: list[Tensor] = []
        for start in range(0, rows.numel(), SCAN_BATCH):
            part = torch.arange(start, min(start + SCAN_BATCH, rows.numel()))
            part = part[~taken[part]]
            if part.numel() == 0:
                continue
            x = self.real.images.index_select(0, rows[part].to(self.real.device))
            hit = part[(self.student.logits(theta, x).argmax(1) == c).cpu()][:need]
            taken[hit] = True
            out.append(hit)
            need -= hit.numel()
            if need == 0:
                break
        return out

    @torch.no_grad()
    def init_label_logits(self, experts: _LazyExperts) -> None:
        """Mean final-snapshot logits of the experts that classify each image correctly (``select_correct``),
        else the first expert's logits (DATM ``pix_init real``)."""
        images, cls = self.synset.images.detach(), self.synset.class_labels
        student = self.student
        if not (self.hparams.select_correct and self.hparams.init == "real"):
            self.synset.labels.copy_(student.logits(experts.get(0), images).float())
            return
        total = torch.zeros_like(self.synset.labels)
        count = torch.zeros(images.shape[0], 1, device=images.device)
        first = None
        e = 0
        while (theta := experts.get(e)) is not None:
            logits = student.logits(theta, images).float()
            first = logits if first is None else first
            agree = (logits.argmax(1) == cls).unsqueeze(1).float()
            total += logits * agree
            count += agree
            experts.release(e)
            e += 1
        # an image no expert gets right (only possible after the random fill-up) keeps the first expert's logits
        self.synset.labels.copy_(torch.where(count > 0, total / count.clamp(min=1), first))

    # ------------------------------------------------------------------ gating
    def skip_update(self, result: MatchResult) -> bool:
        threshold = self.hparams.threshold
        skip = False
        if threshold is not None:
            loss = result.match_loss
            if self._trainer is not None and self.trainer.world_size > 1:
                loss = self.trainer.strategy.reduce(loss.clone(), reduce_op="mean")
            skip = not bool(loss <= threshold)  # NaN fails the comparison: skipped, as the reference
            if skip and not bool(torch.isfinite(loss)):
                rank_zero_warn(f"DATM: non-finite matching loss at step {self.step_index}; update skipped")
        self.skipped_updates += int(skip)
        self.log("datm/skipped", float(skip), on_step=True, on_epoch=False)
        return skip


class _LazyExperts:
    """Final expert snapshots read one at a time from the DataModule's iterator, cached until released."""

    def __init__(self, source: Any, device: torch.device) -> None:
        self._source = iter(source)
        self._cache: dict[int, Tensor] = {}
        self._read = 0
        self._done = False
        self.device = device

    def get(self, i: int) -> Tensor | None:
        while i >= self._read and not self._done:
            try:
                _, theta = next(self._source)
            except StopIteration:
                self._done = True
                break
            self._cache[self._read] = theta.to(self.device, torch.float32).reshape(-1)
            self._read += 1
        if i >= self._read:
            return None
        if i not in self._cache:
            raise RuntimeError(f"expert {i} was released; read experts in order")
        return self._cache[i]

    def release(self, i: int) -> None:
        if i > 0:  # keep the first expert (selection and fallback logits)
            self._cache.pop(i, None)
