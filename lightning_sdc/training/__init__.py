"""Network training below evaluation, experts and difficulty: seeded generators, training augmentation, the
one SGD loop with its schedules, FTD's sharpness-aware step."""

from lightning_sdc.training.augment import TRAIN_AUGMENTS, Augment, TrainAugment, make_train_augment
from lightning_sdc.training.loop import (
    BatchHook,
    BatchLoss,
    PlainStep,
    Schedule,
    Step,
    StepFactory,
    TrainingLoop,
    sharpness_aware,
)
from lightning_sdc.training.sam import SharpnessAwareStep, check_sam_settings, frozen_running_stats
from lightning_sdc.training.seeds import seeded_generator

__all__ = ["TRAIN_AUGMENTS", "Augment", "BatchHook", "BatchLoss", "PlainStep", "Schedule",
           "SharpnessAwareStep", "Step", "StepFactory", "TrainAugment", "TrainingLoop",
           "check_sam_settings", "frozen_running_stats", "make_train_augment", "seeded_generator",
           "sharpness_aware"]
