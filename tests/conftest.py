"""Shared fixtures and hardware gates."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)  # 2-core CI: one intra-op thread avoids oversubscription stalls


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA not available")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits():
    """The scikit-learn digits DatasetSpec (real, offline, 1x8x8)."""
    from lightning_sdc.data import load_dataset

    return load_dataset("digits")
