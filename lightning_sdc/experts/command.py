"""``lightning-sdc experts``: train expert trajectories for trajectory matching (MTT/FTD buffers)."""

from __future__ import annotations

from typing import Any

from lightning_sdc.experts.run import ExpertTrainerOptions


def experts_command(
    *,
    dataset: str,
    arch: str = "ConvNet",
    num_experts: int = 5,
    epochs: int = 50,
    out: str = "buffers",
    lr: float = 0.01,
    batch_size: int = 256,
    dsa: bool = True,
    dsa_strategy: str | None = None,
    zca: bool = False,
    rho: float = 0.0,
    alpha: float = 0.0,
    seed: int = 0,
    root: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    dataset_kwargs: dict[str, Any] | None = None,
    shard: int = 0,
    num_shards: int = 1,
    checkpoint_every: int = 1,
    trainer: ExpertTrainerOptions | None = None,
    progress: bool = True,
) -> list[str]:
    """Train expert trajectories (MTT ``buffer.py``; FTD's sharpness-aware experts with ``--rho``).

    Writes ``<out>/expert_<i:04d>.pt`` (one ``[epochs + 1, num_params]`` float32 trajectory + metadata per
    expert) and ``<out>/manifest.json``. Rerunning with the same settings resumes an interrupted run: finished
    experts are kept, an expert in training restarts from its last epoch checkpoint.

    Scaling out: ``--trainer.devices 4`` (``--trainer.num_nodes``, ``--trainer.strategy``, as for ``fit``)
    deals the experts over the processes; ``--shard K --num_shards N`` makes this job train only the ids
    ``i % N == K`` (a job array: ``--shard $SLURM_ARRAY_TASK_ID --num_shards 4``). Expert ``i`` is the same
    file whichever process trains it. Keyword-only, so that the command line spells every option ``--name``.

    Args:
        dataset: dataset registry name (e.g. digits, mnist5k, cifar10).
        arch: network registry name (MTT: ConvNet; ConvNetD4 for 64x64 data).
        num_experts: number of experts of the whole buffer (MTT README: 100).
        epochs: training epochs per expert (MTT: 50; DATM: 100); must cover max_start_epoch + expert_epochs.
        out: output directory (shared by all processes and jobs).
        lr: SGD learning rate (momentum and weight decay are 0, lr is constant).
        batch_size: minibatch size.
        dsa: differentiable Siamese augmentation on every batch.
        dsa_strategy: DSA strategy (default: the dataset's).
        zca: train on ZCA-whitened data (MTT's CIFAR commands).
        rho: FTD sharpness-aware radius; > 0 switches to GSAM with ASAM perturbation (FTD/DATM: 0.01).
        alpha: GSAM balance coefficient (FTD/DATM: 0.3; 0 = ASAM).
        seed: expert i uses seeded_generator(seed, i) for init, shuffling and augmentation.
        root: dataset root for torchvision datasets.
        arch_kwargs: network options (the name every command uses), e.g. '{width: 32, depth: 2}'.
        dataset_kwargs: dataset loader options as JSON, e.g. '{"seed": 1}' (the digits split).
        shard: this job's shard, in [0, num_shards).
        num_shards: jobs the buffer is split over.
        checkpoint_every: epochs between an expert's resume checkpoints (0: none).
        trainer: process layout: --trainer.accelerator, --trainer.devices, --trainer.num_nodes, --trainer.strategy.
        progress: progress bar and one line per finished expert.

    Returns:
        The expert file paths of this job's shard (on rank 0; the other processes of a multi-process job
        return ``[]``, so the console prints them once).
    """
    options = dict(locals())  # every option above, by the name train_experts gives it
    from lightning_sdc.experts.run import run_experts

    paths = run_experts(options.pop("dataset"), **options)
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    # every process of a `--trainer.strategy ddp` job runs this command: only rank 0 reports the files
    return [str(p) for p in paths] if getattr(rank_zero_only, "rank", 0) == 0 else []
