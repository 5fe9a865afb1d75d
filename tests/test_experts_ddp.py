"""Experts sharded over processes (Fabric ``ddp_spawn``, 2 CPU processes, gloo) and over the jobs of an array.

Expert ``i`` draws everything from ``seeded_generator(seed, i)``, so whichever rank or job trains it, its file
holds the same trajectory bit for bit as a one-process run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_sdc.experts import MANIFEST, ExpertBuffer, read_expert, run_experts, train_experts

SETTINGS = {"arch_kwargs": {"width": 8, "depth": 1}, "epochs": 1, "dsa": False, "progress": False}


def _trajectories(out: Path, n: int) -> list[torch.Tensor]:
    return [read_expert(out / f"expert_{i:04d}.pt")[0] for i in range(n)]


@pytest.mark.ddp
def test_two_ranks_train_two_experts_each_equal_to_one_process(tmp_path: Path, digits) -> None:
    trained: dict[int, list[int]] = {}

    ddp = tmp_path / "ddp"
    run_experts(
        "digits", trainer={"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}, num_experts=4,
        out=str(ddp), **SETTINGS,
    )
    single = tmp_path / "single"
    train_experts(digits, num_experts=4, out=str(single), device="cpu",
                  on_epoch=lambda i, e, loss: trained.setdefault(0, []).append(i), **SETTINGS)
    assert trained[0] == [0, 1, 2, 3]
    for a, b in zip(_trajectories(ddp, 4), _trajectories(single, 4)):
        assert torch.equal(a, b)
    by = [read_expert(ddp / f"expert_{i:04d}.pt")[1]["trained_by"] for i in range(4)]
    assert [b["rank"] for b in by] == [0, 1, 0, 1] and {b["world_size"] for b in by} == {2}  # 2 per rank
    # the manifest written by rank 0 after the barrier lists all four
    manifest = json.loads((ddp / MANIFEST).read_text())
    assert manifest["complete"] and [e["index"] for e in manifest["experts"]] == [0, 1, 2, 3]


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_distillation_trains_missing_experts_on_all_ranks(tmp_path: Path, digits) -> None:
    """A DDP MTT run whose buffer is missing: both ranks train one expert each in ``setup`` (no rank waits at a
    barrier while another trains them all), then the run distils from the shared buffer."""
    from benchmarks.setups import tm_model
    from lightning_sdc.experts import ExpertTrajectoryDataModule
    from lightning_sdc.methods.tm import MTT
    from tests.gm_helpers import trainer

    net = SETTINGS["arch_kwargs"]
    dm = ExpertTrajectoryDataModule(
        "digits", str(tmp_path / "buf"), arch_kwargs=net, max_start_epoch=1, expert_epochs=1, train_num_experts=2,
        train_kwargs={"dsa": False, "progress": False},
    )
    trainer(1, strategy="ddp_spawn", devices=2).fit(tm_model(MTT, net=net, syn_steps=2), dm)
    buffer = ExpertBuffer(tmp_path / "buf")
    assert buffer.expert_ids == [0, 1] and buffer.complete
    assert [buffer.expert_meta(i)["trained_by"]["rank"] for i in (0, 1)] == [0, 1]
    single = tmp_path / "single"
    train_experts(digits, num_experts=2, out=str(single), device="cpu", **{**SETTINGS, "epochs": 2})
    for i, b in enumerate(_trajectories(single, 2)):
        assert torch.equal(buffer.trajectory(i), b)
