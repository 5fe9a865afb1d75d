"""Explicit, reproducible random streams: one ``torch.Generator`` per network (or sampler) from integer keys.

The references reseed the global RNG from the wall clock (DC ``utils.py:get_network``); here every network's
initialisation, batch order and augmentation draw from a generator seeded by a mix of integer keys such as
``(seed, model_index)`` or ``(seed, DOMAIN_TAG, index)``, so a run is a pure function of its keys, whichever
process or job computes it.
"""

from __future__ import annotations

import torch


def seeded_generator(*keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator whose seed is a deterministic mix of integer ``keys`` (e.g. ``(seed, model_index)``)."""
    h = 0x9E3779B97F4A7C15
    for k in keys:
        h = (h ^ (int(k) & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    g = torch.Generator(device=device)
    g.manual_seed(h & 0x7FFFFFFFFFFFFFFF)
    return g
