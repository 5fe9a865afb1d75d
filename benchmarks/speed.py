"""Side-by-side speed measurements of issue 14: this library against the reference loops of
:mod:`benchmarks.reference`, both sides alternating within one run (so a load change on a shared machine hits
both alike); every function returns ``(ratio, numerator seconds, denominator seconds, notes)``."""

from __future__ import annotations

import statistics
import time
import timeit
from pathlib import Path
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


#: the data set of the GM speed rows: Fashion-MNIST (1×28×28, 6,000 training images per class), the paper cell
GM_DATASET = "fashionmnist"


def dc_module(ipc: int, batch_real: int, dataset: str = GM_DATASET, **kw: Any) -> pl.LightningModule:
    """DC on ``dataset`` with the reference ConvNet-128, seed 11."""
    from lightning_sdc.methods.gm.gradient import DC

    return DC(dataset, ipc, batch_real=batch_real, seed=11, **kw)


def _library_dc(ipc: int, batch_real: int, precision: str = "32-true", **kw: Any) -> _UpdateRecorder:
    """Two DC updates of this library (the first warms up / compiles); the second is the timed one."""
    from lightning_sdc.data import RealDataModule

    rec = _UpdateRecorder()
    make_trainer(2, callbacks=[rec], precision=precision).fit(dc_module(ipc, batch_real, "mnist5k", **kw),
                                                              RealDataModule("mnist5k"))
    return rec


def reference_dc_times(ipc: int, batch_real: int, spec: Any, updates: int = 2) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each of ``updates`` updates of the re-written DC ``main.py`` loop at the library's defaults.

    IPC 1 (``get_loops``: 1 update per network): each update is an iteration with a fresh network. IPC 10: the
    first updates of one iteration, each followed by its ``inner_loop`` 50 network epochs."""
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
    times, cpu = [], []
    net = None
    for update in range(updates):
        t0, c0 = time.perf_counter(), time.process_time()
        outer = update % outer_loop
        if outer == 0:
            net = build_network("ConvNet", 1, spec.num_classes, (28, 28))
            net.train()
            net_opt = torch.optim.SGD(net.parameters(), lr=0.01)
        reference.dc_update(net, net_opt, image_syn, label_syn, img_opt, images_all, indices_class, ipc=ipc,
                            batch_real=batch_real, inner_loop=inner_loop, batch_train=256, last=outer == outer_loop - 1)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu


def _worker(*args: Any, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run :mod:`benchmarks.gm_worker` with ``args`` in a fresh process; its JSON answer."""
    import json
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "benchmarks.gm_worker", *map(str, args)], capture_output=True,
                         text=True, check=False, env={**os.environ, **(env or {})},
                         cwd=str(Path(__file__).resolve().parent.parent))
    if out.returncode != 0:
        raise RuntimeError(f"gm_worker {args} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def gm_vs_reference(ipc: int, rounds: int, updates: int = 3) -> dict[str, Any]:
    """Reference DC loop / this library's default path, one update at ``batch_real`` 256 on Fashion-MNIST
    (1×28×28, ConvNet-128), IPC 1 or 10 with its loops: ``rounds`` alternating pairs of fresh processes
    (:mod:`benchmarks.gm_worker`), each timing ``updates`` updates; steady time = median of the updates after the
    first of every process, compile time = the library's first update minus its steady time. The same from
    process CPU time (user + system: what the process itself spent, a steadier number on a loaded machine)."""
    ref, lib, ref_cpu, lib_cpu, compile_s, engines, graphs = [], [], [], [], [], set(), set()
    for _ in range(rounds):
        r = _worker("reference", ipc, updates)
        m = _worker("library", ipc, updates)
        ref += r["times"][1:]
        lib += m["times"][1:]
        ref_cpu += r["cpu"][1:]
        lib_cpu += m["cpu"][1:]
        compile_s.append(m["times"][0] - statistics.median(m["times"][1:]))
        engines.add(m["engine"])
        graphs.add(m["graphs"])
    r_s, m_s = statistics.median(ref), statistics.median(lib)
    r_c, m_c = statistics.median(ref_cpu), statistics.median(lib_cpu)
    return {"ratio": r_s / m_s, "reference_s": r_s, "library_s": m_s, "cpu_ratio": r_c / m_c,
            "reference_cpu_s": r_c, "library_cpu_s": m_c, "compile_s": statistics.median(compile_s),
            "engine": "/".join(sorted(engines)), "graphs": max(graphs), "rounds": rounds,
            "note": f"{rounds} alternating pairs of fresh processes, {updates - 1} steady updates each"}


def gm_compile_cache(ipc: int = 1) -> tuple[float, float]:
    """Compile seconds (first update − steady update) of the library's default path in a first run with an
    empty Inductor cache and a second run with the cache the first one left (a fresh temporary directory)."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = {"TORCHINDUCTOR_CACHE_DIR": cache}
        out = []
        for _ in range(2):
            t = _worker("library", ipc, 2, env=env)["times"]
            out.append(t[0] - t[1])
    return out[0], out[1]


def first_image_gradients(ipc: int = 1, batch_real: int = 256) -> dict[str, torch.Tensor]:
    """∂/∂S of the λ = 0 matching loss ``Σ_c D(g_syn,c, g_real,c)`` of one update at the benchmark size
    (Fashion-MNIST, ConvNet-128, ``batch_real`` real images per class, the same network and batches) with the eager
    engine in fp32 and fp64 and the compiled engine in fp32 (the default path of a paper config)."""
    import copy

    from lightning_sdc.data import load_dataset
    from lightning_sdc.matching.distances import gradient_distance
    from lightning_sdc.methods.gm.engine import CompiledEngine, GradientEngine
    from lightning_sdc.models import build_network

    spec = load_dataset(GM_DATASET)
    g = torch.Generator().manual_seed(0)
    classes = list(range(spec.num_classes))
    reals, syns = [], []
    for c in classes:
        idx = torch.nonzero(spec.train_labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        syns.append(spec.train_images[idx[:ipc]])
        reals.append(spec.train_images[idx[ipc:ipc + batch_real]])
    net = build_network("ConvNet", 1, spec.num_classes, (28, 28), generator=g)
    out = {}
    for name, engine, dtype in (("eager32", GradientEngine(), torch.float32),
                                ("compiled32", CompiledEngine(), torch.float32),
                                ("eager64", GradientEngine(), torch.float64)):
        n = copy.deepcopy(net).to(dtype)
        s = [x.to(dtype).requires_grad_(True) for x in syns]
        g_real = engine.real_gradients(n, [x.to(dtype) for x in reals], classes)
        g_syn = engine.syn_gradients(n, s, classes)
        loss = sum(gradient_distance(a, b) for a, b in zip(g_syn, g_real))
        out[name] = torch.cat([t.flatten() for t in torch.autograd.grad(loss, s)]).double()
    return out


def gm_equality(ipc: int = 1) -> dict[str, float]:
    """Relative distances between the image gradients of :func:`first_image_gradients` (fresh process, so the
    compiled engine compiles for real: ``graphs`` counts dynamo's graphs)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grads.pt"
        graphs = _worker("equality", ipc, 0, path)["graphs"]
        g = torch.load(path)

    def rel(a: str, b: str) -> float:
        return float((g[a] - g[b]).norm() / g[b].norm())

    return {"compiled_vs_eager": rel("compiled32", "eager32"), "eager_vs_fp64": rel("eager32", "eager64"),
            "compiled_vs_fp64": rel("compiled32", "eager64"), "graphs": graphs}


def gm_step_flops(ipc: int, batch_real: int = 256) -> float:
    """Arithmetic of one DC update at the benchmark size (1×28×28, ConvNet-128): per real image a forward, the
    weight-gradient and the input-gradient passes (≈ 3 forwards, less conv1's input gradient, which autograd
    skips), the same per image of the inner-loop epochs after every update but an iteration's last, and the
    synthetic side (forward, ``create_graph`` backward and its backward ≈ 6 forwards per image)."""
    from lightning_sdc.methods.gm import get_loops
    from lightning_sdc.models import build_network
    from lightning_sdc.models.base import forward_flops

    net = build_network("ConvNet", 1, 10, (28, 28))
    fwd = forward_flops(net, (1, 28, 28))
    conv1 = 2.0 * 128 * 9 * 32 * 32
    outer_loop, inner_loop = get_loops(ipc)
    per_image = 3 * fwd - conv1
    inner = inner_loop * 10 * ipc * (outer_loop - 1) / outer_loop
    return 10 * batch_real * per_image + inner * per_image + 10 * ipc * 6 * fwd


def cpu_peak(repeats: int = 5) -> dict[str, float]:
    """Single-thread fp32 GFLOP/s of a 2048² GEMM and of ConvNet-128's middle convolution (256 × 128 × 16 × 16,
    3×3, forward and both backward kernels, channels-last): the best of ``repeats``, timed in process CPU seconds
    (so time other jobs hold the core is not counted; shared caches and memory bandwidth still are)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x = torch.randn(256, 128, 16, 16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(128, 128, 3, 3).contiguous(memory_format=torch.channels_last)
    go = torch.randn(256, 128, 16, 16).contiguous(memory_format=torch.channels_last)
    conv = 2.0 * 256 * 128 * 128 * 9 * 16 * 16
    cases = {"gemm": (lambda: a @ b, 2.0 * 2048**3), "conv_fwd": (lambda: F.conv2d(x, w, padding=1), conv),
             "conv_bwd": (lambda: torch.ops.aten.convolution_backward(go, x, w, [128], [1, 1], [1, 1], [1, 1], False,
                                                                      [0, 0], 1, [True, True, False]), 2 * conv)}
    out = {}
    for name, (fn, flops) in cases.items():
        fn()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
        out[name] = flops / best / 1e9
    return out


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


def _class_heads(spec: Any, ipc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``ipc`` training images of every class (class-major): a real IPC-``ipc`` set."""
    idx = torch.cat([torch.nonzero(spec.train_labels == c).flatten()[:ipc] for c in range(spec.num_classes)])
    return spec.train_images[idx].clone(), spec.train_labels[idx].clone()


def _fashion_test() -> tuple[Any, tuple[torch.Tensor, torch.Tensor], Any]:
    """Fashion-MNIST: the spec, its 10,000 test images as the tensors this library tests on, and the same images
    as the reference reads them (:class:`benchmarks.reference.PerImageTestSet`: uint8, converted per read)."""
    from lightning_sdc.data import load_dataset

    spec = load_dataset("fashionmnist")
    mean, std = spec.mean[0], spec.std[0]
    pixels = ((spec.test_images[:, 0] * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    per_image = reference.PerImageTestSet(pixels, spec.test_labels, spec.mean, spec.std)
    tensors = torch.stack([per_image[i][0] for i in range(len(per_image))])  # the very values the reference tests
    return spec, (tensors, spec.test_labels), per_image


def eval_vs_reference(ipc: int, models: int, epochs: int = 300) -> dict[str, Any]:
    """DC ``utils.py:evaluate_synset`` (:func:`benchmarks.reference.evaluate_one`) / this library's
    :func:`~lightning_sdc.evaluation.evaluate_synset` **at its defaults** (the engine picks the compiled passes
    when they pay), per network: Fashion-MNIST, the first ``ipc`` training images per class, ConvNet-128 (width
    128, depth 3, instance norm), ``epochs`` epochs without augmentation (DC's Fashion-MNIST protocol), lr 0.01,
    the 10,000 test images. Network ``i`` of both sides starts from the same weights (``seeded_generator(0, i)``)
    and trains on the one batch of the set, so the accuracies pair up. Pairs alternate their order (reference
    first, then ours first); ours is warmed up (compiled) once before, timed apart.

    Returns ratio, medians, the warm-up seconds and the paired accuracies."""
    from lightning_sdc.evaluation import evaluate_synset
    from lightning_sdc.models import build_network
    from lightning_sdc.training import seeded_generator

    spec, test, per_image = _fashion_test()
    images, labels = _class_heads(spec, ipc)
    kw = {"num_models": 1, "epochs": epochs, "lr": 0.01, "augment": "none"}
    t0 = time.perf_counter()
    evaluate_synset((images, labels), test, **{**kw, "epochs": 0}, compiled=True)  # compile what the runs use
    warm = time.perf_counter() - t0
    ref, ours, acc_ref, acc_ours = [], [], [], []

    def run_reference(i: int) -> None:
        t0 = time.perf_counter()
        net = build_network("ConvNet", 1, 10, (28, 28), generator=seeded_generator(0, i))
        acc_ref.append(reference.evaluate_one(net, images, labels, epochs=epochs, lr=0.01, test_set=per_image))
        ref.append(time.perf_counter() - t0)

    def run_ours(i: int) -> None:
        t0 = time.perf_counter()
        acc_ours.extend(evaluate_synset((images, labels), test, models=[i], **kw).accuracies)
        ours.append(time.perf_counter() - t0)

    for i in range(models):
        for side in ((run_reference, run_ours) if i % 2 == 0 else (run_ours, run_reference)):
            side(i)
    r, m = statistics.median(ref), statistics.median(ours)
    return {"ratio": r / m, "reference_s": r, "ours_s": m, "warmup_s": warm, "acc_ref": acc_ref, "acc_ours": acc_ours}


def eval_test_pass(repeats: int = 3) -> dict[str, float]:
    """Process CPU seconds of one 10,000-image Fashion-MNIST test pass of a ConvNet-128 (best of ``repeats``) and its
    achieved GFLOP/s (forward FLOPs from ``torch.utils.flop_counter``): the reference's (per-image conversion,
    batches of 256, autograd recording, loss and NumPy accuracy), the eager engine's and the compiled engine's
    (:func:`~lightning_sdc.evaluation.protocol.test_accuracy`)."""
    from lightning_sdc.evaluation.protocol import _compiled_engine, test_accuracy
    from lightning_sdc.models import build_network
    from lightning_sdc.models.base import forward_flops

    spec, (x, y), per_image = _fashion_test()
    net = build_network("ConvNet", 1, 10, (28, 28), generator=torch.Generator().manual_seed(0))
    engine = _compiled_engine(net, (x[:10], y[:10]), x, 256)
    loader = torch.utils.data.DataLoader(per_image, batch_size=256, shuffle=False)
    passes = {"reference": lambda: reference._train_epoch(loader, net, None),
              "eager": lambda: test_accuracy(net, x, y), "compiled": lambda: test_accuracy(net, x, y, compiled=engine)}
    flop = forward_flops(net, (1, 28, 28)) * x.shape[0]
    out = {}
    for name, fn in passes.items():
        fn()
        best = min(timeit.repeat(fn, number=1, repeat=repeats, timer=time.process_time))
        out[f"{name}_s"], out[f"{name}_gflops"] = best, flop / best / 1e9
    return out


def eval_step_seconds(ipc: int, steps: int = 6, rounds: int = 3) -> dict[str, float]:
    """Process CPU seconds of one training step of an evaluation network (ConvNet-128, the first ``ipc``
    Fashion-MNIST training images per class, one batch): DC ``utils.py:epoch('train')``
    (:func:`benchmarks.reference._train_epoch`) and this library's default (compiled) step, median of ``rounds``
    alternating runs of ``steps`` steps. With :func:`eval_test_pass` they give an evaluation's CPU time by parts,
    which other jobs holding the core do not inflate as they inflate wall time."""
    from lightning_sdc.evaluation.protocol import _compiled_engine, train_network
    from lightning_sdc.models import build_network

    spec, (tx, _), _ = _fashion_test()
    x, y = _class_heads(spec, ipc)
    net = build_network("ConvNet", 1, 10, (28, 28), generator=torch.Generator().manual_seed(0))
    engine = _compiled_engine(net, (x, y), tx, 256)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=256, shuffle=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sides = {"reference": lambda: [reference._train_epoch(loader, net, opt) for _ in range(steps)],
             "ours": lambda: train_network(net, x, y, epochs=steps - 1, lr=0.01, compiled=engine)}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            times[name] += timeit.repeat(fn, number=1, repeat=1, timer=time.process_time)
    return {name: statistics.median(t) / steps for name, t in times.items()}


def eval_accuracy_gap(models: int = 10, epochs: int = 300, **speed: Any) -> tuple[float, str]:
    """|mean(ours) − mean(reference)| / std(reference) of ``models`` networks each on a digits IPC-1 set
    (ConvNet-128, ``epochs`` epochs, no augmentation; the reference initialises from the global RNG): < 1 means
    the means agree within one std."""
    from lightning_sdc.data import load_dataset
    from lightning_sdc.evaluation import evaluate_synset
    from lightning_sdc.models import build_network

    spec = load_dataset("digits")
    images, labels = _class_heads(spec, 1)
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
