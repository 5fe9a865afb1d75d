"""``lightning-sdc evaluate``: score a saved synthetic set on the real test split, across architectures."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_sdc.evaluation.tables import evaluate_archs, results_markdown, write_results


def evaluate_command(
    path: str,
    archs: list[str] | None = None,
    num_models: int = 5,
    epochs: int = 300,
    lr: float | None = None,
    augment: str = "dsa",
    batch_size: int = 256,
    root: str | None = None,
    seed: int = 0,
    device: str = "auto",
    out: str | None = None,
    metrics: list[str] | None = None,
    full_data_epochs: int = 30,
) -> str:
    """Train fresh networks on a saved synthetic set and report test accuracy (mean ± std) per architecture.

    Args:
        path: a synthetic set written by ``SyntheticSet.save`` (or an exported ``.pt`` of this package).
        archs: architectures to train (default: ConvNet). ``ConvNet ResNet18 VGG11 AlexNet LeNet MLP`` gives
            the paper's cross-architecture table.
        num_models: fresh networks per architecture.
        epochs: training epochs per network (300 as DC; 1000 for DSA/TM protocols).
        lr: training lr (default: the set's learned lr if it has one, else 0.01).
        augment: dsa | dc | none.
        batch_size: training batch size (256; DATM uses 128).
        root: dataset root for the test split (torchvision datasets).
        seed: seed of network inits and augmentation.
        device: cpu | cuda | auto.
        out: write ``<out>.md`` and ``<out>.csv`` too.
        metrics: DD-Ranking's hlr | ior | lrs too (:mod:`lightning_sdc.evaluation.ddranking`).
        full_data_epochs: epochs of the (cached) full-data network behind HLR.

    Returns:
        The Markdown table (also printed).
    """
    from lightning_sdc.data import ZCAWhitening, load_dataset
    from lightning_sdc.synthetic import SyntheticSet

    if metrics:
        from lightning_sdc.evaluation.ddranking import check_metrics, evaluate_metrics

        metrics = check_metrics(metrics)
    synset = SyntheticSet.load(path)
    archs = list(archs or ["ConvNet"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = load_dataset(synset.dataset, root=root)
    if tuple(spec.image_shape) != tuple(synset.image_shape) or spec.num_classes != synset.num_classes:
        raise ValueError(
            f"{path}: synthetic set has {synset.num_classes} classes of shape {synset.image_shape}, but dataset "
            f"{synset.dataset!r} has {spec.num_classes} classes of shape {tuple(spec.image_shape)}"
        )
    test_images = spec.test_images
    if synset.zca_state is not None:
        test_images = ZCAWhitening.from_dict(synset.zca_state).transform(test_images)
    results = evaluate_archs(
        synset.to(device), (test_images, spec.test_labels), archs, num_models=num_models, epochs=epochs, lr=lr,
        augment=augment, batch_size=batch_size, seed=seed, device=device,
    )
    title = f"{Path(path).name}: {synset.dataset}, IPC {synset.ipc}"
    table = results_markdown(results, title)
    if metrics:
        table += "\n" + evaluate_metrics(
            synset.to(device), spec, (test_images, spec.test_labels), archs, metrics, full_epochs=full_data_epochs,
            num_models=num_models, epochs=epochs, lr=lr, augment=augment, batch_size=batch_size, seed=seed, device=device,
        )
    print(table)
    if out:
        write_results(results, out, title)
    return table
