"""Augmentation: Differentiable Siamese Augmentation (DSA) and DC's evaluation augmentation.

``sample_dsa`` + ``apply_dsa`` apply one drawn parameter set to the real and the synthetic batch (Siamese);
``diff_augment`` draws and applies per image; ``dc_augment`` is DC's non-differentiable evaluation-time
augmentation. Every random draw comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

from lightning_sdc.augment.dc import (
    DC_AUG_TOKENS,
    DCAugParams,
    dc_augment,
    dc_augment_strategy,
    parse_dc_strategy,
)
from lightning_sdc.augment.dsa import (
    DEFAULT_DSA_PARAMS,
    DSA_ALIGN_CORNERS,
    DSASample,
    apply_dsa,
    diff_augment,
    sample_dsa,
)
from lightning_sdc.augment.strategy import (
    AUG_MODES,
    DSA_STRATEGY,
    DSA_STRATEGY_DIGITS,
    DSA_TOKENS,
    NO_STRATEGY,
    DSAParams,
    default_dsa_strategy,
    is_digit_dataset,
    parse_strategy,
)

__all__ = ["AUG_MODES", "DC_AUG_TOKENS", "DEFAULT_DSA_PARAMS", "DSA_ALIGN_CORNERS", "DSA_STRATEGY",
           "DSA_STRATEGY_DIGITS", "DSA_TOKENS", "NO_STRATEGY", "DCAugParams", "DSAParams", "DSASample",
           "apply_dsa", "dc_augment", "dc_augment_strategy", "default_dsa_strategy", "diff_augment",
           "is_digit_dataset", "parse_dc_strategy", "parse_strategy", "sample_dsa"]
