"""Expert trajectories for trajectory matching: training (SGD; FTD's GSAM), buffer format, DataModule."""

from lightning_sdc.experts.buffer import (
    FORMAT_VERSION,
    MANIFEST,
    ExpertBuffer,
    expert_path,
    read_expert,
    save_expert,
    write_manifest,
)
from lightning_sdc.experts.datamodule import ExpertTrajectoryDataModule
from lightning_sdc.experts.sam import SharpnessAwareStep
from lightning_sdc.experts.training import ExpertRun, train_expert, train_experts

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "ExpertBuffer",
    "ExpertRun",
    "ExpertTrajectoryDataModule",
    "SharpnessAwareStep",
    "expert_path",
    "read_expert",
    "save_expert",
    "train_expert",
    "train_experts",
    "write_manifest",
]
