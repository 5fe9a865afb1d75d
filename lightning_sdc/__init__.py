"""lightning_sdc: dataset distillation with Sample Difficulty Correction, as PyTorch Lightning modules.

The public names below are imported on first use, so ``import lightning_sdc`` stays cheap and submodules can be
used alone (``lightning_sdc.theory`` needs only numpy/scipy).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["DatasetSpec", "DistillationModule", "RealDataModule", "SyntheticSet", "build_method", "build_network",
           "evaluate_synset", "list_datasets", "list_methods", "list_networks", "load_dataset", "sdc_term"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'lightning_sdc' has no attribute {name!r}")
    from lightning_sdc import data, evaluation, matching, methods, models, synthetic

    return next(getattr(m, name) for m in (data, models, synthetic, evaluation, matching, methods) if hasattr(m, name))
