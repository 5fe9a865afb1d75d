"""MTT (Cazenavette et al., "Dataset Distillation by Matching Training Trajectories"; MTT ``distill.py``)."""

from __future__ import annotations

from lightning_sdc.methods.registry import register_method
from lightning_sdc.methods.tm.base import TrajectoryMatching


@register_method()
class MTT(TrajectoryMatching):
    """MTT + SDC: the :class:`TrajectoryMatching` loop as the reference runs it — hard class-major labels,
    learned student lr, unrolled exact meta-gradient (``memory="constant"`` gives the same gradient in
    constant memory). Per-setting hyper-parameters: paper Table 5, ``configs/mtt/``."""
