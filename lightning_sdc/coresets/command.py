"""``lightning-sdc coreset``: build a Random / Herding / Forgetting baseline set and score it like a distilled
one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lightning_sdc.coresets.forgetting import KEEP, forgetting_coreset
from lightning_sdc.coresets.herding import RULES, herding_coreset
from lightning_sdc.difficulty.forgetting import NEVER_LEARNED
from lightning_sdc.difficulty.training import KeptNetworks
from lightning_sdc.io import atomic_write_text, prepare_output_dir
from lightning_sdc.progress import phase, progress, quiet_mode
from lightning_sdc.synthetic import SyntheticSet, random_coreset

CORESET_METHODS = ("random", "herding", "forgetting")


def build_coreset(
    method: str, spec: Any, ipc: int, *, seed: int = 0, device: str | torch.device = "cpu", **options: Any
) -> SyntheticSet:
    """Dispatch to :func:`random_coreset`, :func:`herding_coreset` or :func:`forgetting_coreset`.

    ``options`` are the selector's keywords (Random takes none; Herding: ``rule`` + training keywords;
    Forgetting: ``keep``, ``never_learned``, ``runs`` + training keywords).
    """
    if method not in CORESET_METHODS:
        raise ValueError(f"method={method!r} is not allowed; allowed: {', '.join(CORESET_METHODS)}")
    if method == "random":
        return random_coreset(spec, ipc, seed=seed)
    if method == "herding":
        return herding_coreset(spec, ipc, seed=seed, device=device, **options)
    return forgetting_coreset(spec, ipc, seed=seed, device=device, **options)


def coreset_command(
    method: str,
    dataset: str,
    ipc: int,
    out: str,
    seed: int = 0,
    arch: str = "ConvNet",
    arch_kwargs: dict[str, Any] | None = None,
    epochs: int = 20,
    lr: float = 0.01,
    batch_size: int = 256,
    augment: str = "none",
    rule: str = "argmin",
    keep: str = "most",
    never_learned: str = "max",
    runs: int = 1,
    evaluate: bool = True,
    eval_arch: str = "ConvNet",
    eval_arch_kwargs: dict[str, Any] | None = None,
    eval_num_models: int = 5,
    eval_epochs: int = 300,
    eval_augment: str = "dc",
    device: str = "auto",
    root: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Select ``ipc`` real images per class with a coreset baseline, save them, and evaluate them.

    The baseline rows of the paper's Tables 1 and 2 (numbers of DC, Zhao et al. ICLR 2021, Table 1). The
    selected set is a :class:`~lightning_sdc.synthetic.SyntheticSet` scored with the same protocol as any
    distilled set (fresh networks, SGD, DC's evaluation augmentation by default).

    Args:
        method: ``random`` | ``herding`` | ``forgetting``.
        dataset: registered dataset name.
        ipc: images per class.
        out: output directory; writes ``<dataset>_<method>_ipc<ipc>.pt`` (+ ``.png``) and, with ``evaluate``,
            ``….md``/``….csv`` tables and a ``….json`` summary; the selector's finished networks in ``networks/``
            (the same command reuses them).
        seed: seeds selection (Random draw, selector network, Forgetting's tie-breaking) and evaluation.
        arch: selector network (Herding's feature network, Forgetting's counting run).
        arch_kwargs: selector network options, e.g. ``{"width": 64}``.
        epochs: selector training epochs.
        lr: selector SGD learning rate (momentum 0.9, weight decay 5e-4, × 0.1 at half).
        batch_size: selector training batch size.
        augment: selector training augmentation: ``none`` | ``dsa`` | ``dc``.
        rule: Herding rule: ``argmin`` (DC) | ``deepcore_argmax``.
        keep: Forgetting keeps the ``most`` (DC/DeepCore) or ``least`` forgotten examples.
        never_learned: Forgetting count of never-learned examples: ``max`` (Toneva) | ``zero`` (DeepCore) |
            ``inf``.
        runs: Forgetting: training runs whose counts are summed.
        evaluate: train ``eval_num_models`` fresh networks on the set and report test accuracy.
        eval_arch: evaluation architecture.
        eval_arch_kwargs: evaluation network options.
        eval_num_models: fresh evaluation networks.
        eval_epochs: their training epochs (DC: 300).
        eval_augment: ``dc`` (DC's protocol) | ``dsa`` | ``none``.
        device: ``cpu`` | ``cuda`` | ``auto``.
        root: dataset root (torchvision datasets).
        quiet: no progress bars (there are none either when stderr is not a terminal).

    Returns:
        ``{"path", "method", "dataset", "ipc", "accuracy_mean", "accuracy_std", "accuracies"}`` (accuracies
        only with ``evaluate``).
    """
    from lightning_sdc.data import load_dataset
    from lightning_sdc.evaluation import evaluate_synset, write_results

    for name, value, allowed in (("method", method, CORESET_METHODS), ("rule", rule, RULES), ("keep", keep, KEEP),
                                 ("never_learned", never_learned, NEVER_LEARNED)):
        if value not in allowed:
            raise ValueError(f"{name}={value!r} is not allowed; allowed: {', '.join(allowed)}")
    kept = KeptNetworks(prepare_output_dir(out, "--out") / "networks")  # before the selection and evaluation
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    spec = load_dataset(dataset, root=root)
    train = {"arch": arch, "arch_kwargs": arch_kwargs, "epochs": epochs, "lr": lr, "batch_size": batch_size,
             "augment": augment, "kept": kept}
    options: dict[str, Any] = {}
    if method == "herding":
        options = {"rule": rule, **train}
    elif method == "forgetting":
        options = {"keep": keep, "never_learned": never_learned, "runs": runs, **train}
    # progress: the selector's training epochs (train_classifier advances the phase), then the evaluation's
    selection = {"herding": epochs, "forgetting": runs * epochs}.get(method, 0)
    with quiet_mode(quiet), phase(total=selection or None, desc=f"{method} selection", quiet=not selection):
        synset = build_coreset(method, spec, ipc, seed=seed, device=dev, **options)
    kept.report("coreset")
    stem = Path(out) / f"{spec.name}_{method}_ipc{ipc}"
    path = synset.save(stem.with_suffix(".pt"), png=True)
    summary: dict[str, Any] = {"path": str(path), "method": method, "dataset": spec.name, "ipc": ipc}
    if evaluate:
        with quiet_mode(quiet), progress(total=eval_num_models * (eval_epochs + 1), desc=f"evaluate {eval_arch}",
                                         unit="epoch") as bar:
            res = evaluate_synset(synset.to(dev), spec, arch=eval_arch, num_models=eval_num_models, epochs=eval_epochs,
                                  augment=eval_augment, seed=seed, device=dev, arch_kwargs=eval_arch_kwargs,
                                  on_epoch=bar.update)
        title = f"{method} coreset: {spec.name}, IPC {ipc}"
        write_results([res], stem.parent / (stem.name + "_eval"), title)
        summary.update(accuracy_mean=res.mean, accuracy_std=res.std, accuracies=res.accuracies)
        print(f"{title}: {res}")
    atomic_write_text(json.dumps(summary, indent=2) + "\n", stem.parent / (stem.name + ".json"))
    return summary

