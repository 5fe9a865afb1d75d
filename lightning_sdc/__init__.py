"""lightning_sdc: dataset distillation with Sample Difficulty Correction, as PyTorch Lightning modules.

Public names are imported lazily so that ``import lightning_sdc`` stays cheap and submodules can be used
alone (``lightning_sdc.theory`` needs only numpy/scipy).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "lightning_sdc.data",
    "list_datasets": "lightning_sdc.data",
    "DatasetSpec": "lightning_sdc.data",
    "RealDataModule": "lightning_sdc.data",
    "build_network": "lightning_sdc.models",
    "list_networks": "lightning_sdc.models",
    "SyntheticSet": "lightning_sdc.synthetic",
    "evaluate_synset": "lightning_sdc.evaluation",
    "sdc_term": "lightning_sdc.matching",
    "DistillationModule": "lightning_sdc.methods",
    "build_method": "lightning_sdc.methods",
    "list_methods": "lightning_sdc.methods",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_sdc' has no attribute {name!r}")


__all__ = sorted(_LAZY)
