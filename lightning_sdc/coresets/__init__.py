"""Coreset baselines of the paper's Tables 1 and 2: Random, Herding and Forgetting, as
:class:`SyntheticSet`s."""

from lightning_sdc.coresets.command import CORESET_METHODS, build_coreset, coreset_command
from lightning_sdc.coresets.common import check_ipc, coreset_from_rows, embed_features
from lightning_sdc.coresets.forgetting import KEEP, forgetting_coreset, forgetting_per_class
from lightning_sdc.coresets.herding import (
    RULES,
    feature_network,
    herding_coreset,
    herding_per_class,
    herding_select,
)
from lightning_sdc.synthetic import random_coreset

__all__ = ["CORESET_METHODS", "KEEP", "RULES", "build_coreset", "check_ipc", "coreset_command",
           "coreset_from_rows", "embed_features", "feature_network", "forgetting_coreset",
           "forgetting_per_class", "herding_coreset", "herding_per_class", "herding_select",
           "random_coreset"]
