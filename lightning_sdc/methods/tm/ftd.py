"""FTD (Du et al., "Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation";
FTD ``distill/distill_FTD.py``).

The distillation loop is MTT's; FTD differs in two places:

* its experts are trained with a sharpness-aware optimiser (GSAM, "balance coefficient" α, radius ρ) — that is
  the expert buffer (``ExpertTrajectoryDataModule(train_kwargs={"rho": …, "alpha": …})``), not this module;
* an exponential moving average of the synthetic images, ``ema ← d·ema + (1 − d)·images`` after every update
  (``ModelEmaV2``: shadow initialised to the initial images, no bias correction, never fed back into
  distillation). The EMA set is what :meth:`eval_synset` returns, so the validation loop trains **fresh**
  networks on it (the reference continues training the network it just trained on the raw images — a quirk,
  not reproduced). The EMA is a registered buffer: it is saved in and restored from checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_sdc.checks import check_number
from lightning_sdc.methods.registry import register_method
from lightning_sdc.methods.tm.base import TrajectoryMatching
from lightning_sdc.synthetic import SyntheticSet


@register_method()
class FTD(TrajectoryMatching):
    """FTD + SDC (see module docstring).

    Args:
        ema_decay: d in ``[0, 1)`` (FTD default 0.999; per setting in paper Table 7).
        eval_ema: evaluate the EMA images (default) or the raw ones.
        **kwargs: every :class:`TrajectoryMatching` argument.
    """

    def __init__(self, dataset: str, ipc: int, *, ema_decay: float = 0.999, eval_ema: bool = True, **kwargs: Any) -> None:
        check_number("ema_decay", ema_decay, strict=False, below=1)
        super().__init__(dataset, ipc, **kwargs)
        self.ema_decay = float(ema_decay)
        self.register_buffer("ema_images", torch.zeros_like(self.synset.images.detach()))

    def init_synset(self) -> None:
        super().init_synset()
        self.ema_images.copy_(self.synset.images.detach())

    @torch.no_grad()
    def after_update(self, skipped: bool) -> None:
        """``ema ← d·ema + (1 − d)·images`` after every optimiser step (``ModelEmaV2.update``)."""
        if not skipped:
            d = self.ema_decay
            self.ema_images.copy_(self.ema_images * d + (1.0 - d) * self.synset.images.detach())

    def ema_synset(self) -> SyntheticSet:
        """A synthetic set with the EMA images and the current labels and lr."""
        s = self.synset
        return SyntheticSet(
            self.ema_images, s.labels.detach(), num_classes=s.num_classes, dataset=s.dataset, mean=s.mean,
            std=s.std, label_mode=s.label_mode, syn_lr=None if s.syn_lr is None else s.syn_lr.detach(),
            class_names=s.class_names, zca_state=s.zca_state, eval_protocol=s.eval_protocol,
        )

    def eval_synset(self) -> SyntheticSet:
        return self.ema_synset() if self.hparams.eval_ema else self.synset
