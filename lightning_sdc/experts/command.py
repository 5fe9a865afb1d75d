"""``lightning-sdc experts``: train expert trajectories for trajectory matching (MTT/FTD buffers)."""

from __future__ import annotations

from typing import Any


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
    zca: bool = False,
    rho: float = 0.0,
    alpha: float = 0.0,
    seed: int = 0,
    root: str | None = None,
    width: int | None = None,
    depth: int | None = None,
    device: str = "auto",
) -> list[str]:
    """Train expert trajectories (MTT ``buffer.py``; FTD's sharpness-aware experts with ``--rho``).

    Writes ``<out>/expert_<i:04d>.pt`` (one ``[epochs + 1, num_params]`` float32 trajectory + metadata per
    expert) and ``<out>/manifest.json``. Rerunning with the same settings resumes an interrupted run.
    Keyword-only, so that the command line spells every option ``--name`` (``--dataset digits``).

    Args:
        dataset: dataset registry name (e.g. digits, mnist5k, cifar10).
        arch: network registry name (MTT: ConvNet; ConvNetD4 for 64x64 data).
        num_experts: number of experts (MTT README: 100).
        epochs: training epochs per expert (MTT: 50; DATM: 100); must cover max_start_epoch + expert_epochs.
        out: output directory.
        lr: SGD learning rate (momentum and weight decay are 0, lr is constant).
        batch_size: minibatch size.
        dsa: differentiable Siamese augmentation on every batch (dataset's default strategy).
        zca: train on ZCA-whitened data (MTT's CIFAR commands).
        rho: FTD sharpness-aware radius; > 0 switches to GSAM with ASAM perturbation (FTD/DATM: 0.01).
        alpha: GSAM balance coefficient (FTD/DATM: 0.3; 0 = ASAM).
        seed: expert i uses seeded_generator(seed, i) for init, shuffling and augmentation.
        root: dataset root for torchvision datasets.
        width: ConvNet width (network default if omitted).
        depth: ConvNet depth (network default if omitted).
        device: auto | cpu | cuda | cuda:N.

    Returns:
        The written expert file paths.
    """
    from lightning_sdc.experts.training import train_experts

    arch_kwargs: dict[str, Any] = {}
    if width is not None:
        arch_kwargs["width"] = width
    if depth is not None:
        arch_kwargs["depth"] = depth
    paths = train_experts(
        dataset,
        arch=arch,
        arch_kwargs=arch_kwargs,
        num_experts=num_experts,
        epochs=epochs,
        out=out,
        lr=lr,
        batch_size=batch_size,
        dsa=dsa,
        zca=zca,
        rho=rho,
        alpha=alpha,
        seed=seed,
        root=root,
        device=device,
    )
    return [str(p) for p in paths]
