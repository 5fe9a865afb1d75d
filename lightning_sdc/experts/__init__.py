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
from lightning_sdc.experts.run import ExpertTrainerOptions, experts_command_line, run_experts
from lightning_sdc.experts.training import (
    ExpertRun,
    ExpertTraining,
    partial_path,
    scan_experts,
    shard_ids,
    train_expert,
    train_experts,
)
from lightning_sdc.training.sam import SharpnessAwareStep

__all__ = ["FORMAT_VERSION", "MANIFEST", "ExpertBuffer", "ExpertRun", "ExpertTrainerOptions",
           "ExpertTraining", "ExpertTrajectoryDataModule", "SharpnessAwareStep", "expert_path",
           "experts_command_line", "partial_path", "read_expert", "run_experts", "save_expert",
           "scan_experts", "shard_ids", "train_expert", "train_experts", "write_manifest"]
