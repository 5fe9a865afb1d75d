"""Side-by-side speed measurements of issue 14: this library against the reference loops of
:mod:`benchmarks.reference`, both sides alternating within one run (so a load change on a shared machine hits
both alike); every function returns ``(ratio, numerator seconds, denominator seconds, notes)``."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch

from benchmarks import reference
from benchmarks.measure import StepTimer
from benchmarks.setups import make_trainer


class _UpdateRecorder(StepTimer):
    """Step times and the image change of the first update."""

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self.start = pl_module.synset.images.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if batch_idx == 0:
            self.first_update = (pl_module.synset.images.detach() - self.start).flatten().clone()


def _dc(ipc: int, batch_real: int, **kw: Any) -> pl.LightningModule:
    from lightning_sdc.methods.gradient import DC

    return DC("mnist5k", ipc, batch_real=batch_real, seed=11, **kw)


def _library_dc(ipc: int, batch_real: int, precision: str = "32-true", **kw: Any) -> _UpdateRecorder:
    """Two DC updates of this library (the first warms up / compiles); the second is the timed one."""
    from lightning_sdc.data import RealDataModule

    rec = _UpdateRecorder()
    make_trainer(2, callbacks=[rec], precision=precision).fit(_dc(ipc, batch_real, **kw), RealDataModule("mnist5k"))
    return rec


def _reference_dc(ipc: int, batch_real: int, spec: Any) -> float:
    """Two updates of the re-written DC ``main.py`` loop at the library's defaults; returns the second's time.

    IPC 1 (``get_loops``: 1 update per network): two iterations, each a fresh network and one update. IPC 10:
    the first two updates of one iteration, each followed by its ``inner_loop`` 50 network epochs."""
    from lightning_sdc.methods.gm import get_loops
    from lightning_sdc.models import build_network

    outer_loop, inner_loop = get_loops(ipc)
    images_all, labels_all = spec.train_images, spec.train_labels
    indices_class = [torch.nonzero(labels_all == c).flatten() for c in range(spec.num_classes)]
    g = torch.Generator().manual_seed(0)
    image_syn = torch.cat([images_all[i[torch.randperm(len(i), generator=g)[:ipc]]] for i in indices_class])
    image_syn = image_syn.detach().clone().requires_grad_(True)
    label_syn = torch.arange(spec.num_classes).repeat_interleave(ipc)
    img_opt = torch.optim.SGD([image_syn], lr=0.1, momentum=0.5)
    times = []
    net = None
    for update in range(2):
        t0 = time.perf_counter()
        outer = update % outer_loop
        if outer == 0:
            net = build_network("ConvNet", 1, spec.num_classes, (28, 28))
            net.train()
            net_opt = torch.optim.SGD(net.parameters(), lr=0.01)
        reference.dc_update(net, net_opt, image_syn, label_syn, img_opt, images_all, indices_class, ipc=ipc,
                            batch_real=batch_real, inner_loop=inner_loop, batch_train=256, last=outer == outer_loop - 1)
        times.append(time.perf_counter() - t0)
    return times[1]


def gm_vs_reference(ipc: int, rounds: int, batch_real: int = 256) -> tuple[float, float, float, str]:
    """Reference DC loop / this library (``compiled: true``), one update at ``batch_real`` on mnist5k
    (1×28×28, ConvNet-128), IPC 1 or 10 with its loops; medians over ``rounds`` alternating pairs."""
    from lightning_sdc.data import load_dataset

    spec = load_dataset("mnist5k")
    ref, lib = [], []
    for _ in range(rounds):
        ref.append(_reference_dc(ipc, batch_real, spec))
        lib.append(_library_dc(ipc, batch_real, compiled=True).times[1])
    r, m = statistics.median(ref), statistics.median(lib)
    return r / m, r, m, f"{rounds} alternating pairs"


def gm_compiled_equal(ipc: int = 1, batch_real: int = 256) -> float:
    """Relative difference ‖u_compiled − u_eager‖ / ‖u_eager‖ of the first λ = 0 image update (fp32)."""
    a = _library_dc(ipc, batch_real, compiled=True).first_update
    b = _library_dc(ipc, batch_real).first_update
    return float((a - b).norm() / b.norm())


def gm_bf16(ipc: int, rounds: int, batch_real: int = 256, **kw: Any) -> tuple[float, float, float, float]:
    """fp32 / bf16-mixed time of one DC update at ``batch_real`` on mnist5k, alternating; plus the cosine
    between the two first image updates (same seed, so same batches)."""
    t32, t16, cos = [], [], float("nan")
    for _ in range(rounds):
        a = _library_dc(ipc, batch_real, "32-true", **kw)
        b = _library_dc(ipc, batch_real, "bf16-mixed", **kw)
        t32.append(a.times[1])
        t16.append(b.times[1])
        cos = float(torch.nn.functional.cosine_similarity(a.first_update, b.first_update, dim=0))
    r, m = statistics.median(t32), statistics.median(t16)
    return r / m, r, m, cos


def _ipc1_set(spec: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The first image of every class: an IPC-1 set."""
    idx = torch.stack([torch.nonzero(spec.train_labels == c).flatten()[0] for c in range(spec.num_classes)])
    return spec.train_images[idx].clone(), spec.train_labels[idx].clone()


def eval_speedup(models: int, epochs: int, **speed: Any) -> tuple[float, float, float, str]:
    """Reference ``evaluate_synset`` (one network at a time, :func:`benchmarks.reference.evaluate_one`) /
    :func:`~lightning_sdc.evaluation.evaluate_synset` with the ``speed`` options, per network: an mnist5k IPC-1
    set, ConvNet-128, ``epochs`` epochs without augmentation, then 10,000 test images (mnist5k's 1,000 ×10, the
    size of the Fashion-MNIST test split). Alternating one reference network and one of ours, ``models``
    each; ours warmed up first (compilation)."""
    from lightning_sdc.data import load_dataset
    from lightning_sdc.evaluation import evaluate_synset
    from lightning_sdc.models import build_network

    spec = load_dataset("mnist5k")
    images, labels = _ipc1_set(spec)
    test = (spec.test_images.repeat(10, 1, 1, 1), spec.test_labels.repeat(10))
    kw = {"num_models": 1, "epochs": epochs, "lr": 0.01, "augment": "none", **speed}
    evaluate_synset((images, labels), test, epochs=1, **{k: v for k, v in kw.items() if k != "epochs"})
    ref, lib, acc_ref, acc_lib = [], [], [], []
    for i in range(models):
        t0 = time.perf_counter()
        net = build_network("ConvNet", 1, 10, (28, 28))
        acc_ref.append(reference.evaluate_one(net, images, labels, *test, epochs=epochs, lr=0.01))
        ref.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        acc_lib += evaluate_synset((images, labels), test, seed=i, **kw).accuracies
        lib.append(time.perf_counter() - t0)
    r, m = statistics.median(ref), statistics.median(lib)
    note = (f"acc ref {100 * statistics.mean(acc_ref):.1f} % / ours {100 * statistics.mean(acc_lib):.1f} % over "
            f"{models} networks each")
    return r / m, r, m, note


def eval_accuracy_gap(models: int = 10, epochs: int = 300, **speed: Any) -> tuple[float, str]:
    """|mean(ours) − mean(reference)| / std(reference) of ``models`` networks each on a digits IPC-1 set
    (ConvNet-128, ``epochs`` epochs, no augmentation): < 1 means the means agree within one std."""
    from lightning_sdc.data import load_dataset
    from lightning_sdc.evaluation import evaluate_synset
    from lightning_sdc.models import build_network

    spec = load_dataset("digits")
    images, labels = _ipc1_set(spec)
    test = (spec.test_images, spec.test_labels)
    torch.manual_seed(0)
    ref = [reference.evaluate_one(build_network("ConvNet", 1, 10, (8, 8)), images, labels, *test, epochs=epochs,
                                  lr=0.01) for _ in range(models)]
    ours = evaluate_synset((images, labels), test, num_models=models, epochs=epochs, lr=0.01, augment="none",
                           **speed).accuracies
    gap = abs(statistics.mean(ours) - statistics.mean(ref)) / max(statistics.pstdev(ref), 1e-12)
    return gap, (f"digits IPC 1, {models} ConvNets each: reference {100 * statistics.mean(ref):.1f} ± "
                 f"{100 * statistics.pstdev(ref):.1f} %, ours {100 * statistics.mean(ours):.1f} ± "
                 f"{100 * statistics.pstdev(ours):.1f} %")


def tm_vs_reference(rounds: int, *, ipc: int = 10, syn_steps: int = 20,
                    compiled: bool = True) -> dict[str, tuple[float, float, float, str]]:
    """MTT ``ReparamModule`` update (:func:`benchmarks.reference.mtt_update`) / this library's MTT update core
    (:func:`~lightning_sdc.methods.tm.meta.trajectory_objective` + backward + SGD on images and lr; the default
    :class:`~lightning_sdc.methods.tm.student.FunctionalStudent`, i.e. with the closed-form second derivatives of
    :mod:`lightning_sdc.models.double_backward`) in each memory mode: ConvNet-128, 3×32×32 random data, 10 classes × ``ipc``, ``syn_steps`` inner steps on the whole
    set, no augmentation on either side; ``compiled``: the constant-memory pass 1 through ``torch.compile``
    (warmed up with a one-step update). Rounds alternate the order reference → unrolled → constant and its
    reverse; medians over ``rounds``. Returns ``{mode: (ratio, reference s, ours s, note)}``."""
    from lightning_sdc.methods.tm.meta import InnerStep, trajectory_objective
    from lightning_sdc.methods.tm.student import FunctionalStudent
    from lightning_sdc.models import build_network

    g = torch.Generator().manual_seed(0)
    n = 10 * ipc
    base = torch.randn(n, 3, 32, 32, generator=g)
    labels = torch.arange(10).repeat_interleave(ipc)
    ref_student = reference.FlatParamModule(build_network("ConvNet", 3, 10, (32, 32), generator=g))
    start = ref_student.flat_param.detach().clone()
    target = start + 0.01 * torch.randn(start.shape, generator=g)
    ours = FunctionalStudent.build("ConvNet", (3, 32, 32), 10)

    def state():
        images = base.clone().requires_grad_(True)
        lr = torch.tensor(0.01, requires_grad=True)
        opts = (torch.optim.SGD([images], lr=100.0, momentum=0.5), torch.optim.SGD([lr], lr=1e-5, momentum=0.5))
        return images, lr, opts

    def ref_update(images, lr, opts) -> None:
        reference.mtt_update(ref_student, images, labels, lr, *opts, start, target, syn_steps=syn_steps, batch_syn=n)

    def lib_update(memory: str, steps: int, images, lr, opts) -> None:
        fast = ours.compiled_loss if compiled and memory == "constant" else None
        res = trajectory_objective(ours.loss, images, lambda idx: labels if idx is None else labels[idx], lr, start,
                                   target, [InnerStep(None)] * steps, memory=memory, first_order_loss_fn=fast)
        for o in opts:
            o.zero_grad(set_to_none=True)
        res.objective.backward()
        for o in opts:
            o.step()

    states = {"reference": state(), "unrolled": state(), "constant": state()}
    if compiled:
        lib_update("constant", 1, *state())  # compiles the student's first-order loss for this shape
    times: dict[str, list[float]] = {k: [] for k in states}
    for i in range(rounds):
        for k, st in (states.items() if i % 2 == 0 else reversed(states.items())):
            t0 = time.perf_counter()
            ref_update(*st) if k == "reference" else lib_update(k, syn_steps, *st)
            times[k].append(time.perf_counter() - t0)
    r = statistics.median(times["reference"])
    return {m: (r / statistics.median(times[m]), r, statistics.median(times[m]), f"{rounds} round(s), order "
                "reference → unrolled → constant, then reversed") for m in ("unrolled", "constant")}


def bf16_kernels(repeats: int = 5) -> dict[str, float]:
    """The hardware side of ``gm_bf16_speedup``: fp32 time / bf16 time of the kernels a GM step is made of, on one
    thread (median of ``repeats``, alternating): a 1024² matmul and the ConvNet-128 middle convolution forward
    (256 × 128 × 28 × 28, 3×3), in NCHW and channels-last. Below 1 the CPU's bf16 kernels are slower than its
    fp32 ones, and no bf16-mixed step can be faster than fp32 there."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    a, w = torch.randn(1024, 1024), torch.randn(128, 128, 3, 3)
    x = torch.randn(256, 128, 28, 28)
    xc = x.contiguous(memory_format=torch.channels_last)
    cases = {
        "matmul": (lambda: a @ a, lambda: ab @ ab),
        "conv_nchw": (lambda: F.conv2d(x, w, padding=1), lambda: F.conv2d(xb, wb, padding=1)),
        "conv_channels_last": (lambda: F.conv2d(xc, w, padding=1), lambda: F.conv2d(xcb, wb, padding=1)),
    }
    ab, wb, xb, xcb = a.bfloat16(), w.bfloat16(), x.bfloat16(), xc.bfloat16()
    out = {}
    for name, (f32, f16) in cases.items():
        f32(), f16()  # warm-up (oneDNN primitive creation)
        t32, t16 = [], []
        for _ in range(repeats):
            for fn, times in ((f32, t32), (f16, t16)):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        out[name] = statistics.median(t32) / statistics.median(t16)
    return out
