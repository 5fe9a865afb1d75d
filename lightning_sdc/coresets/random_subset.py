"""The Random coreset baseline: ``ipc`` real training images per class, drawn with a seeded generator."""

from __future__ import annotations

from typing import Any

import torch

from lightning_sdc.synthetic import SyntheticSet


def random_coreset(spec: Any, ipc: int, seed: int = 0) -> SyntheticSet:
    """A :class:`SyntheticSet` of ``ipc`` distinct random real images of each class of ``spec`` (a DatasetSpec).

    The baseline rows "Random" of the paper's Tables 1 and 2; evaluated with the same protocol as any set.
    """
    from lightning_sdc.data import ClassIndexedImages

    real = ClassIndexedImages(spec.train_images, spec.train_labels, spec.num_classes)
    for c in range(spec.num_classes):
        if not isinstance(ipc, int) or ipc < 1 or ipc > real.count(c):
            raise ValueError(f"ipc={ipc!r} is not allowed for class {c} of {spec.name!r}: it has {real.count(c)} images")
    synset = SyntheticSet.blank(
        num_classes=spec.num_classes, ipc=ipc, image_shape=spec.image_shape, dataset=spec.name,
        mean=spec.mean, std=spec.std, class_names=spec.class_names,
        zca_state=spec.zca.to_dict() if getattr(spec, "zca", None) is not None else None,
    )
    g = torch.Generator().manual_seed(int(seed))
    return synset.init_from_real(real, g)
