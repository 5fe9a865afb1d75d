"""The gradient engine of gradient matching: how the gradients of Algorithm 1 are computed, chosen once per run.

Algorithm 1 (paper; DC ``main.py``) needs, at every image update and for every class ``c``,
``g_real,c = ∇θ CE(f(R_c; θ), c)`` (detached) and ``g_syn,c = ∇θ CE(f(S_c; θ), c)`` (with ``create_graph``, so
that the matching distance can be differentiated w.r.t. the images), and between two updates ``inner_loop``
epochs of SGD on ``CE(f(S; θ), y)``. A :class:`GradientEngine` computes exactly these; the method picks one in
``setup`` (:func:`select_engine`) and its step never asks how.

* ``eager``: PyTorch autograd, one class per call, as the reference.
* ``vmap``: every class's real gradients in one ``torch.func.vmap`` call, the synthetic ones in another
  (:func:`~lightning_sdc.methods.gm.grads.batched_class_gradients`): for accelerators; on one CPU thread it is
  slower than the class loop. BatchNorm must be frozen (it is, by DC's rule, before each matching pass).
* ``compiled``: the first-order passes — the real batches and the inner-loop training, > 95 % of a DC step's
  arithmetic at the paper's sizes — through ``torch.compile``
  (:class:`~lightning_sdc.models.compiled.CompiledNetwork`: Inductor runs the convolutions channels-last and
  fuses GroupNorm → ReLU → pooling, forward and backward); the synthetic double backward stays eager. On a CPU it
  also keeps freed heap memory in the process (:func:`keep_freed_memory`). Networks with BatchNorm, or a platform
  where compilation fails, run the eager engine (one log line says so).
* ``auto`` (default): ``compiled`` when the run is long enough to pay for compilation (:func:`pays_to_compile`),
  else ``eager``.

Every engine runs the synthetic side with autocast off, in the parameters' dtype: under ``bf16-mixed`` only
the real batches and the inner loop take the lower precision (the synthetic gradient carries the image
gradient; at ConvNet-128, ``batch_real`` 256 its cosine to fp32 is 0.9999 this way and 0.973 in bf16). In fp32
and fp64 that context changes nothing, so the eager engine computes bit for bit what plain autograd computes.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_sdc.methods.gm.grads import batched_class_gradients, stack_batches
from lightning_sdc.models.base import forward_flops
from lightning_sdc.models.compiled import CompiledNetwork, has_module_state, use_persistent_cache

EngineName = Literal["auto", "eager", "vmap", "compiled"]

#: the arithmetic rate assumed by :func:`pays_to_compile` (GFLOP/s): the reference DC loop's rate on one Zen 4
#: core (``benchmarks/RESULTS.md``, roofline row); faster hardware compiles sooner than it needs to, not later
EAGER_GFLOPS = 50.0
#: compile when the run's estimated eager arithmetic is at least this many seconds: a cold compilation of the
#: ConvNet-128 passes takes 30–60 s on a small CPU (a warm Inductor cache a few seconds)
MIN_COMPILE_SECONDS = 60.0


def _labels(x: Tensor, c: int) -> Tensor:
    return torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)


def ce_loss(net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``CE(net(x), y)``, mean over the batch (DC ``nn.CrossEntropyLoss()``)."""
    return F.cross_entropy(net(x), y)


class GradientEngine:
    """The eager engine; the base of the others (see the module docstring)."""

    name = "eager"

    def real_gradients(self, net: nn.Module, batches: Sequence[Tensor], classes: Sequence[int]) -> list[list[Tensor]]:
        """Per class ``∇θ CE(net(batches[i]), classes[i])``, detached; one list per class in ``parameters()``
        order."""
        params = list(net.parameters())
        return [list(torch.autograd.grad(self.loss(net, x, _labels(x, c)), params)) for x, c in zip(batches, classes)]

    def syn_gradients(self, net: nn.Module, blocks: Sequence[Tensor], classes: Sequence[int]) -> list[list[Tensor]]:
        """Per class ``∇θ CE(net(blocks[i]), classes[i])``, differentiable w.r.t. the images."""
        return [self.syn_gradient(net, x, _labels(x, c)) for x, c in zip(blocks, classes)]

    def syn_gradient(self, net: nn.Module, x: Tensor, y: Tensor) -> list[Tensor]:
        """``∇θ CE(net(x), y)`` with ``create_graph`` (autocast off, in the parameters' dtype)."""
        params = list(net.parameters())
        with torch.autocast(x.device.type, enabled=False):
            return list(torch.autograd.grad(ce_loss(net, x.to(params[0].dtype), y), params, create_graph=True))

    def loss(self, net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The first-order loss ``CE(net(x), y)`` (real batches, inner-loop training)."""
        return ce_loss(net, x, y)

    def describe(self) -> str:
        return "eager (PyTorch autograd, one class per call)"


class VmapEngine(GradientEngine):
    """All classes' real gradients in one vmapped call, all synthetic ones in another."""

    name = "vmap"

    def real_gradients(self, net: nn.Module, batches: Sequence[Tensor], classes: Sequence[int]) -> list[list[Tensor]]:
        xs, weights = stack_batches(batches)
        labels = torch.tensor(list(classes), dtype=torch.long, device=xs.device)
        return _unstack(batched_class_gradients(net, xs, labels, weights, create_graph=False))

    def syn_gradients(self, net: nn.Module, blocks: Sequence[Tensor], classes: Sequence[int]) -> list[list[Tensor]]:
        labels = torch.tensor(list(classes), dtype=torch.long, device=blocks[0].device)
        with torch.autocast(blocks[0].device.type, enabled=False):
            dtype = next(net.parameters()).dtype
            xs = torch.stack([b.to(dtype) for b in blocks])
            return _unstack(batched_class_gradients(net, xs, labels, create_graph=True))

    def describe(self) -> str:
        return "vmap (torch.func.vmap over the classes)"


def _unstack(stacked: list[Tensor]) -> list[list[Tensor]]:
    """``[k, …]`` per parameter → ``k`` per-class lists (views)."""
    return [list(g) for g in zip(*(t.unbind(0) for t in stacked))]


class CompiledEngine(GradientEngine):
    """First-order passes through ``torch.compile``; the eager passes if compilation fails on this platform."""

    name = "compiled"

    def __init__(self) -> None:
        self._compiled = CompiledNetwork()
        self._failed = False

    def loss(self, net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self._failed:
            return ce_loss(net, x, y)
        try:
            return self._compiled.loss(net, list(net.parameters()), x, y)
        except Exception as exc:  # a missing compiler toolchain, an unsupported backend …: run eagerly
            self._failed = True
            rank_zero_warn(f"GM gradient engine: torch.compile failed ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); running eager from here on")
            return ce_loss(net, x, y)

    def describe(self) -> str:
        return ("compiled (torch.compile of the real-batch and inner-loop passes; the synthetic double backward "
                f"eager; Inductor cache {use_persistent_cache()})")


ENGINE_CLASSES: dict[str, type[GradientEngine]] = {"eager": GradientEngine, "vmap": VmapEngine,
                                                   "compiled": CompiledEngine}


def pays_to_compile(step_images: float, flops_per_image: float, max_steps: int | None) -> tuple[bool, float]:
    """Whether a run of ``max_steps`` updates (``None``/negative: unbounded) is long enough to pay for
    compilation, and its estimated eager arithmetic time in seconds.

    Each update passes ``step_images`` images forward and backward (≈ 3× the forward arithmetic); at
    :data:`EAGER_GFLOPS` the run must take at least :data:`MIN_COMPILE_SECONDS`.
    """
    if max_steps is None or max_steps < 0:
        return True, float("inf")
    seconds = max_steps * step_images * 3.0 * flops_per_image / (EAGER_GFLOPS * 1e9)
    return seconds >= MIN_COMPILE_SECONDS, seconds


def select_engine(requested: str, net: nn.Module, *, image_shape: Sequence[int], step_images: float,
                  max_steps: int | None, device: torch.device) -> GradientEngine:
    """The engine for a run, with one log line saying which and why.

    Args:
        requested: an :data:`EngineName`.
        net: a network of the run's structure (read, not trained).
        image_shape: ``(C, H, W)`` of the synthetic images.
        step_images: images one update passes forward and backward (real batches + inner-loop epochs).
        max_steps: the run's updates (``None``: unknown).
        device: where the run computes (the freed-memory policy applies on CPUs).
    """
    why = "as requested"
    name = requested
    if requested == "auto":
        pays, seconds = pays_to_compile(step_images, forward_flops(net, image_shape), max_steps)
        name = "compiled" if pays else "eager"
        why = (f"auto: run of ≈ {seconds:.0f} s eager arithmetic {'≥' if pays else '<'} "
               f"{MIN_COMPILE_SECONDS:.0f} s, {'worth' if pays else 'too short for'} compiling")
    if name == "compiled" and has_module_state(net):
        name, why = "eager", f"{why}; BatchNorm (module state written by the forward) cannot be compiled"
    engine = ENGINE_CLASSES[name]()
    extra = ""
    if name == "compiled" and device.type == "cpu" and keep_freed_memory():
        extra = "; freed heap memory kept in the process (no page faults on reuse)"
    rank_zero_info(f"GM gradient engine: {engine.describe()} [{why}{extra}]")
    return engine


_KEPT = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process instead of returning it to the kernel (Linux only).

    A ConvNet-128 pass over 256 images of 32×32 allocates a dozen 134 MB activations and gradients; glibc serves
    each from a fresh ``mmap`` and unmaps it on free, so every pass touches ~1.6 GB of new pages. On the VM this
    library is benchmarked on a minor page fault costs 2.5–5 µs (≈ 0.1 s per 134 MB tensor, 30–40 % of an eager
    real-batch pass). ``mallopt(M_MMAP_MAX, 0)`` serves large blocks from the heap and
    ``mallopt(M_TRIM_THRESHOLD, …)`` keeps it, so the next pass reuses pages already mapped. The cost: the
    process's resident memory stays at its peak. Returns whether the policy is in force.
    """
    global _KEPT
    if _KEPT:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        _KEPT = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc
        return False
    return _KEPT


__all__ = ["EngineName", "GradientEngine", "VmapEngine", "CompiledEngine", "select_engine",
           "pays_to_compile", "keep_freed_memory", "ce_loss"]
