"""``lightning-sdc evaluate``: score a saved synthetic set on the real test split, across architectures.

A Lightning Fabric job (:mod:`lightning_sdc.fabric_jobs`): ``--trainer.devices/num_nodes/strategy`` deal the
``(architecture, model)`` jobs of the evaluation engine over processes and gather the table
(:func:`~lightning_sdc.evaluation.protocol.evaluate_table`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lightning_sdc import signals
from lightning_sdc.evaluation.protocol import EvalResult, evaluate_table, rank_share, unique_archs
from lightning_sdc.evaluation.tables import results_markdown, write_results
from lightning_sdc.fabric_jobs import FabricTrainerOptions, launch, trainer_options


class EvaluationError(RuntimeError):
    """Some architectures failed while others finished (their results were printed and written)."""


def evaluate_command(
    path: str,
    archs: list[str] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    num_models: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    augment: str | None = None,
    batch_size: int | None = None,
    dataset: str | None = None,
    zca: bool | None = None,
    root: str | None = None,
    seed: int = 0,
    device: str = "auto",
    out: str | None = None,
    quiet: bool = False,
    metrics: list[str] | None = None,
    full_data_epochs: int = 30,
    compiled: bool | None = None,
    trainer: FabricTrainerOptions | None = None,
) -> str:
    """Score a saved synthetic set: train fresh networks on it, report test accuracy per architecture.

    Every option left out takes the value the set's own method evaluates with (recorded in ``synset.pt``);
    a set that records none (an MTT/DATM pair, an older file) gets the TM/DSA protocol: ConvNet, 5 models, 1000
    epochs, DSA augmentation, batch 256 (128 for soft labels), lr = the set's learned lr or 0.01.

    Args:
        path: ``synset.pt`` (``SyntheticSet.save``), a file of an ``images_<s>.pt`` + ``labels_<s>.pt`` (+
            ``lr_<s>.pt``) pair (this library's export, MTT, DATM), DC's ``res_*_<ipc>ipc.pt``, a folder with one
            sub-folder of images per class (DD-Ranking, ``ImageFolder``), or a directory holding a set file
            (:mod:`lightning_sdc.evaluation.set_files`).
        archs: architectures, as a plain list (``--archs ConvNet ResNet18 VGG11 AlexNet LeNet MLP``, the
            paper's cross-architecture table) or ``--archs [ConvNet,LeNet]``. Default: the set's evaluation
            network.
        arch_kwargs: network options, e.g. ``--arch_kwargs '{width: 32}'`` (given to every architecture) or
            per architecture ``'{ConvNet: {width: 32}, LeNet: {}}'``. Default: the set's own options for its
            evaluation network, none for the others.
        num_models: fresh networks per architecture.
        epochs: training epochs per network (``epochs + 1`` passes, lr ×0.1 halfway, as the references).
        lr: training lr (default: the set's protocol, else its learned lr, else 0.01).
        augment: dsa | dc | none.
        batch_size: training batch size.
        dataset: the dataset of a pair, DC file (default: the one its name gives) or image folder (a set file
            records its own).
        zca: a pair's or DC file's images are ZCA-whitened (MTT ``--zca``), a folder's are to be whitened (the
            ZCA is fitted on the dataset's training images).
        root: dataset root for the test split.
        seed: seed of network inits and augmentation.
        device: cpu | cuda | auto.
        out: also write ``<out>.md`` and ``<out>.csv`` (checked writable before anything trains; rewritten after
            each architecture, so a stop signal keeps the finished rows): the settings that ran (title; CSV
            columns ``augment``, ``batch_size``, ``seed``, ``test_images``) and, with ``metrics``, DD-Ranking's.
        quiet: no progress bar (there is none either when stderr is not a terminal).
        metrics: DD-Ranking's hlr | ior | lrs too (:mod:`lightning_sdc.evaluation.ddranking`), for every
            architecture that finished, with the same protocol and network options; the set's accuracy behind
            them is the table's (the same networks).
        full_data_epochs: epochs of the (cached) full-data network behind HLR.
        compiled: ``torch.compile``'d training and test passes (same numbers to float rounding); default: when the
            evaluation is big enough to pay for the compilation (:data:`~lightning_sdc.evaluation.protocol.COMPILE_MIN_FLOP`).
        trainer: process layout, as for ``fit`` and ``experts``: ``--trainer.accelerator``, ``--trainer.devices``,
            ``--trainer.num_nodes``, ``--trainer.strategy`` (auto | ddp | ddp_spawn | ddp_fork). With several
            processes the ``len(archs) × num_models`` trainings are dealt round-robin over them (model ``i`` is
            the same network whichever process trains it) and gathered: the same table as one process. Rank 0
            draws the progress bar, prints and writes the table (``--metrics`` then run on rank 0 alone).
            ``--device`` is the one-process shorthand (``--device cuda:1`` = ``--trainer.accelerator cuda
            --trainer.devices [1]``).

    Returns:
        The Markdown table (also printed). If an architecture fails while training, the others still run, the
        finished ones are printed and written, and an :class:`EvaluationError` naming the failure is raised.
    """
    from lightning_sdc.data import ZCAWhitening, load_dataset
    from lightning_sdc.evaluation.set_files import check_settings, load_set
    from lightning_sdc.io import beside, prepare_output_file

    if metrics:
        from lightning_sdc.evaluation.ddranking import check_metrics, evaluate_metrics, metrics_markdown

        metrics = check_metrics(metrics)
    given = {"num_models": num_models, "epochs": epochs, "lr": lr, "batch_size": batch_size, "augment": augment}
    check_settings({k: v for k, v in given.items() if v is not None})
    opts = job_options(device, trainer)  # a bad process layout fails here, before any load or launch
    if out:  # before any training: a table nobody can write is lost work
        for suffix in (".md", ".csv"):
            prepare_output_file(beside(out, suffix), "--out")

    loaded = load_set(path, dataset=dataset, zca=zca, root=root)
    synset, protocol = loaded.synset, loaded.protocol
    archs = list(archs) if archs else [protocol["arch"]]
    per_arch = resolve_arch_kwargs(archs, arch_kwargs, protocol)
    validate_archs(synset, per_arch)  # every architecture runs one dummy batch before any is trained

    spec = load_dataset(synset.dataset, root=root)
    if tuple(spec.image_shape) != tuple(synset.image_shape) or spec.num_classes != synset.num_classes:
        raise ValueError(
            f"{path}: synthetic set has {synset.num_classes} classes of shape {synset.image_shape}, but dataset "
            f"{synset.dataset!r} has {spec.num_classes} classes of shape {tuple(spec.image_shape)}"
        )
    if spec.test_images.shape[0] == 0:
        raise ValueError(f"dataset {synset.dataset!r} has an empty test split: nothing to score {path} on")
    test_images = spec.test_images
    if synset.zca_state is not None:
        test_images = ZCAWhitening.from_dict(synset.zca_state).transform(test_images)

    set_lr = None if synset.syn_lr is None else float(synset.syn_lr.detach())
    kw = {k: v if v is not None else protocol[k] for k, v in given.items()}
    kw.update(lr=kw["lr"] if kw["lr"] is not None else (set_lr if set_lr is not None else 0.01),
              dsa_strategy=protocol.get("dsa_strategy"), seed=seed, compiled=compiled)
    ran = {"test_images": int(test_images.shape[0]), "augment": kw["augment"], "batch_size": kw["batch_size"],
           "seed": seed}  # the settings every row ran with, beside its models, epochs and lr
    title = (f"{loaded.name}: {synset.dataset}, IPC {synset.ipc}; archs {', '.join(archs)}; num_models "
             f"{kw['num_models']}, epochs {kw['epochs']}, lr {kw['lr']:g}, augment {kw['augment']}, batch "
             f"{kw['batch_size']}, seed {seed}, {ran['test_images']} test images"
             + (f"; method {protocol['method']}" if protocol.get("method") else ""))
    outcome = launch(opts, _evaluate_job, synset, (test_images, spec.test_labels), archs, per_arch, kw, quiet,
                     out, title, ran)
    if outcome is None:  # a process other than rank 0 of a `--trainer.strategy ddp` job: rank 0 reports
        return ""
    results, failures = outcome
    kw["device"] = _device_of(opts)
    table = results_markdown(results, title)
    if metrics and results:  # the metrics' set accuracy is the table's: the same networks
        scores = evaluate_metrics(synset.to(kw["device"]), spec, (test_images, spec.test_labels), results, per_arch,
                                  full_epochs=full_data_epochs, **kw)
        table += "\n" + metrics_markdown(scores, metrics, "DD-Ranking metrics")
        for r, m in zip(results, scores):
            r.extra.update(m.columns(metrics))
    if results:
        print(table)
        if out:
            with signals.hold():
                print(f"wrote {', '.join(str(p) for p in write_results(results, out, title))}")
    if failures:
        names = "; ".join(f"{a}: {e}" for a, e in failures)
        done = ", ".join(r.arch for r in results) or "none"
        raise EvaluationError(f"evaluate {path}: {len(failures)} architecture(s) failed ({names}); finished: {done}"
                              + (f" (written to {beside(out, '.md')}, {beside(out, '.csv')})" if out and results else ""))
    return table


def job_options(device: str, trainer: FabricTrainerOptions | Mapping[str, Any] | None) -> FabricTrainerOptions:
    """The process layout of an evaluation: ``trainer`` (checked), with ``device`` as its one-process shorthand
    (``cpu``, ``cuda``, ``cuda:N`` set the accelerator, and ``cuda:N`` the device; ``auto`` leaves both)."""
    opts = trainer_options(trainer)
    if device not in ("auto", "cpu", "cuda") and not (str(device).startswith("cuda:") and device[5:].isdigit()):
        raise ValueError(f"device={device!r} is not allowed; allowed: auto, cpu, cuda, cuda:N")
    if device == "auto":
        return opts
    kind = "cpu" if device == "cpu" else "cuda"
    if opts.accelerator not in ("auto", kind) and not (kind == "cuda" and opts.accelerator == "gpu"):
        raise ValueError(f"device={device!r} and trainer.accelerator={opts.accelerator!r} disagree; give one of them")
    devices = opts.devices
    if device.startswith("cuda:"):
        if devices not in (1, "1", [int(device[5:])]):
            raise ValueError(f"device={device!r} names one GPU but trainer.devices={devices!r}; give "
                             "--trainer.devices [N] (or a count) without --device")
        devices = [int(device[5:])]
    return FabricTrainerOptions(kind, devices, opts.num_nodes, opts.strategy).check()


def _device_of(opts: FabricTrainerOptions) -> str:
    """The device rank 0's follow-up work (DD-Ranking metrics) runs on in the launching process."""
    if opts.accelerator == "cpu":
        return "cpu"
    if opts.accelerator == "mps":
        return "mps"
    if opts.accelerator in ("cuda", "gpu") or torch.cuda.is_available():
        return f"cuda:{opts.devices[0]}" if isinstance(opts.devices, list) else "cuda"
    return "cpu"


def _evaluate_job(
    fabric: Any,
    synset: Any,
    test: tuple[Any, Any],
    archs: Sequence[str],
    per_arch: Mapping[str, Mapping[str, Any]],
    kw: Mapping[str, Any],
    quiet: bool,
    out: str | None,
    title: str,
    ran: dict[str, Any],
) -> tuple[list[EvalResult], list[tuple[str, str]]] | None:
    """One process of an evaluation: its share of each architecture's ``(arch, model)`` jobs in turn
    (:func:`~lightning_sdc.evaluation.protocol.evaluate_table`; network ``i`` is the same whichever process trains
    it), gathered; rank 0 writes the finished rows to ``out`` after each architecture (under
    :func:`~lightning_sdc.signals.hold`, so a stop signal keeps them) and returns ``(results, failures)``."""
    from lightning_sdc.progress import progress, quiet_mode

    rank, world = fabric.global_rank, fabric.world_size
    total = len(archs) * len(rank_share(range(kw["num_models"]), rank, world)) * (kw["epochs"] + 1)
    results: list[EvalResult] = []
    failures: list[tuple[str, str]] = []
    synset = synset.to(fabric.device)
    with quiet_mode(quiet or rank != 0), progress(total=total, desc=f"evaluate {', '.join(archs)}", unit="epoch") as bar:
        for arch in archs:
            done, failed = evaluate_table(synset, test, [arch], **kw, device=fabric.device, arch_kwargs=per_arch,
                                          on_epoch=bar.update, distributed=True, keep_going=True)
            results += [dataclasses.replace(r, extra={**ran, **r.extra}) for r in done]
            failures += failed
            if rank == 0 and out and done:
                with signals.hold():
                    write_results(results, out, title)
    return (results, failures) if rank == 0 else None


def resolve_arch_kwargs(
    archs: Sequence[str], arch_kwargs: Mapping[str, Any] | None, protocol: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Network options per architecture.

    ``arch_kwargs`` keyed by architecture names (``{ConvNet: {width: 32}}``) gives each its own (others none);
    flat options (``{width: 32}``) go to every architecture; ``None`` gives the set's evaluation network the
    set's recorded options and the others none. Unknown names raise ``KeyError`` listing the allowed ones, a
    repeated one ``ValueError``.
    """
    from lightning_sdc.models import NETWORKS

    canon = unique_archs(archs)  # KeyError naming the allowed architectures, ValueError for one named twice
    if arch_kwargs is not None and not isinstance(arch_kwargs, Mapping):
        raise ValueError(f"arch_kwargs={arch_kwargs!r} is not allowed; allowed: a mapping of network options, e.g. "
                         "'{width: 32}' or '{ConvNet: {width: 32}}'")
    if arch_kwargs is None:
        own = NETWORKS.canonical(protocol["arch"]) if protocol.get("arch") else None
        return {a: dict(protocol.get("arch_kwargs") or {}) if c == own else {} for a, c in zip(archs, canon)}
    keys = list(arch_kwargs)
    if keys and all(isinstance(v, Mapping) for v in arch_kwargs.values()) and all(_is_network(k) for k in keys):
        by_name = {NETWORKS.canonical(k): dict(v) for k, v in arch_kwargs.items()}
        unused = sorted(set(by_name) - set(canon))
        if unused:
            raise ValueError(f"arch_kwargs names {', '.join(unused)}, which --archs does not evaluate "
                             f"({', '.join(archs)})")
        return {a: dict(by_name.get(c, {})) for a, c in zip(archs, canon)}
    return {a: dict(arch_kwargs) for a in archs}


def _is_network(name: str) -> bool:
    from lightning_sdc.models import NETWORKS

    try:
        NETWORKS.canonical(name)
    except (KeyError, TypeError):
        return False
    return True


def validate_archs(synset: Any, per_arch: Mapping[str, Mapping[str, Any]]) -> None:
    """Build every architecture and run it on a two-image batch of the set (CPU) before anything is trained, so
    a network that cannot take the images (or an option it lacks) fails in a second, not after hours."""
    from lightning_sdc.models import build_network

    c, h, w = synset.image_shape
    x = synset.images.detach()[:2].float().cpu()
    for arch, kwargs in per_arch.items():
        try:
            net = build_network(arch, c, synset.num_classes, (h, w), generator=torch.Generator().manual_seed(0),
                                **kwargs)
            with torch.no_grad():
                out = net.eval()(x)
        except (ValueError, RuntimeError, TypeError) as exc:
            opts = f" with {dict(kwargs)}" if kwargs else ""
            raise ValueError(f"architecture {arch}{opts} cannot score this set of {c}×{h}×{w} images: {exc}") from None
        if tuple(out.shape) != (x.shape[0], synset.num_classes):
            raise ValueError(f"architecture {arch} gives outputs of shape {tuple(out.shape)} for {x.shape[0]} "
                             f"images; expected ({x.shape[0]}, {synset.num_classes})")
