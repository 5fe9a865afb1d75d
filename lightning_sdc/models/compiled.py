"""``torch.compile`` for first-order network passes (opt-in speed path; same numbers to float rounding).

Gradient matching and the evaluation protocol spend most of their time in first-order passes of freshly
initialised networks: per class the forward/backward of ``batch_real`` real images and the ``inner_loop``
epochs of SGD (DC ``main.py``), the training of every evaluation network and its pass over the test split
(DC ``utils.py:evaluate_synset``). Profiled on one CPU thread (ConvNet-128, 256 images of 1×28×28),
convolutions are ≈ 55 % of such a pass and the memory-bound GroupNorm → ReLU → average-pooling chain, forward
and backward, ≈ 40 %; Inductor fuses that chain into a few loops, which makes the pass ≈ 1.5× faster on a CPU
(the convolutions stay oneDNN's).

:class:`CompiledNetwork` compiles ``CE(f(x; θ), y)`` and ``f(x; θ)`` once per network *structure*: the
parameters are inputs (``torch.func.functional_call`` on a private copy of the first network seen), so every
fresh network of a run reuses the compiled code; each new input shape compiles once (static shapes; e.g.
``batch_real`` above the class sizes of a small data set such as ``digits`` gives one shape per class).
Passes that need a second derivative (the synthetic side of GM, the unrolled TM student) stay eager: compiled
graphs have no double backward.

The eval forward (:meth:`CompiledNetwork.logits`, the test-split pass of the evaluation protocol) runs
single-input-channel convolutions as one GEMM over the unfolded input (:class:`_MatmulConv2d`): Inductor already
runs the other convolutions in channels-last, and on grayscale data the first one was a third of the pass.

Cost: a one-off compile (tens of seconds per input shape on a small CPU), reused within the process — every
:class:`CompiledNetwork` of one network structure shares one template and one set of compiled functions — and
across processes from Inductor's on-disk cache, which :func:`use_persistent_cache` places under
``~/.cache/lightning_sdc/inductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` is set. Each input shape and train/eval
mode is one dynamo cache entry; past ``recompile_limit`` entries dynamo would run the pass eagerly without a
word, so the limit is raised to :data:`RECOMPILE_LIMIT`. Networks with BatchNorm (their running statistics are
module state written by the forward) are not supported; callers fall back to eager.
"""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


class _MatmulConv2d(nn.Conv2d):
    """A one-input-channel convolution as ``W · unfold(x)`` (one GEMM): oneDNN's direct kernel is ≈ 1.5× slower
    for ``C_in = 1`` (K = k·k is tiny) — on one CPU thread a 2048-image 1×28×28 → 128×32×32 pass takes 1.0 s
    through ``conv2d`` and 0.65 s this way, ≈ a third of the compiled eval forward of ConvNet-128 on
    grayscale data; the same values to float rounding (bit-identical logits in that measurement)."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        n, _, h, w = input.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        cols = F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)  # [N, k·k, oh·ow]
        out = torch.matmul(weight.reshape(weight.shape[0], -1), cols)
        if bias is not None:
            out = out + bias.view(1, -1, 1)
        return out.view(n, weight.shape[0], oh, ow)


def _with_matmul_convs(template: nn.Module) -> nn.Module:
    """A copy of ``template`` whose single-input-channel ``Conv2d`` layers run as :class:`_MatmulConv2d`."""
    out = copy.deepcopy(template)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is nn.Conv2d and child.in_channels == 1 and child.groups == 1
                    and child.padding_mode == "zeros" and not isinstance(child.padding, str)):
                new = _MatmulConv2d(1, child.out_channels, child.kernel_size, child.stride, child.padding,
                                    child.dilation, 1, child.bias is not None, device="meta")
                new._parameters = child._parameters
                setattr(parent, name, new)
    return out


class _GroupNorm(nn.GroupNorm):
    """The compiled loss's affine group norm (``torch.nn.GroupNorm``'s formula): statistics summed over W, then H,
    and a backward that reduces ``Σ g·x̂`` on the centred ``x̂``. Inductor's own lowering sums a channels-last
    channel in one chain, 6–7× further from fp64; more pre-activations then flip sign at the ReLU, and the GM image
    gradient moves ≈ 2.7× further from an fp64 run than eager's (≈ 1.2× with this layer; benchmarks/RESULTS.md)."""

    def forward(self, input: Tensor) -> Tensor:
        return _GroupNormFn.apply(input, self.weight, self.bias, self.num_groups, self.eps)


class _GroupNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, k: int, eps: float) -> Tensor:
        xg = x.reshape(x.shape[0], k, -1, x.shape[-1])
        mean = xg.sum(3, keepdim=True).sum(2, keepdim=True) / (xg.shape[2] * xg.shape[3])
        xc = xg - mean
        rstd = ((xc * xc).sum(3, keepdim=True).sum(2, keepdim=True) / (xg.shape[2] * xg.shape[3]) + eps).rsqrt()
        ctx.save_for_backward(x, weight, mean, rstd)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (xc * rstd).reshape(x.shape) * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, weight, mean, r = ctx.saved_tensors
        n, c, k = x.shape[0], x.shape[1], mean.shape[1]
        xhat = (x.reshape(n, k, c // k, -1) - mean) * r
        g4, gamma = g.reshape(xhat.shape), weight.view(1, k, c // k, 1)
        s_gx, s_g = (g4 * xhat).sum(3, keepdim=True), g4.sum(3, keepdim=True)  # [n, k, c/k, 1]
        m = xhat.shape[2] * xhat.shape[3]
        mean_g, mean_gx = (s_g * gamma).sum(2, keepdim=True) / m, (s_gx * gamma).sum(2, keepdim=True) / m
        gx = r * (g4 * gamma - mean_g - xhat * mean_gx)  # r·P(γg): mean(γg) and its x̂ part removed
        return gx.reshape(x.shape), s_gx.sum(0).reshape(c), s_g.sum(0).reshape(c), None, None


#: dynamo's per-function entry limit while compiled passes are built: one entry per (structure, input shape,
#: train/eval mode); past the limit dynamo would run the pass eagerly without a word
RECOMPILE_LIMIT = 64


def use_persistent_cache() -> str:
    """Point Inductor's on-disk cache at ``$XDG_CACHE_HOME/lightning_sdc/inductor`` (default
    ``~/.cache/lightning_sdc/inductor``) unless ``TORCHINDUCTOR_CACHE_DIR`` names another directory than
    PyTorch's default; returns the directory in use.

    PyTorch's default lives under the system temp directory (``/tmp/torchinductor_<user>``, which importing
    Lightning already writes into the environment), and many machines clear it at boot; with a cache that
    persists, the second run of a config loads its compiled kernels instead of compiling them again.
    """
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not current or current == _torch_default_cache_dir():
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "lightning_sdc" / "inductor")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _torch_default_cache_dir() -> str | None:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:
        return None
    return default_cache_dir()


def has_module_state(net: nn.Module) -> bool:
    """Whether a forward writes module state (BatchNorm running statistics): such nets stay eager."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


class CompiledNetwork:
    """Compiled mean cross-entropy and logits of one network structure run on given parameters.

    Built lazily from the first network passed to :meth:`supports`; later networks must have the same
    parameter names and shapes (the fresh networks of one run do). The compiled functions are shared by every
    instance that sees the same structure in this process. Not pickled: a copy (DDP spawn, ``deepcopy``) looks
    them up again on first use.
    """

    def __init__(self) -> None:
        self._template: nn.Module | None = None
        self._names: tuple[str, ...] = ()
        self._shapes: tuple[torch.Size, ...] = ()
        self._eval_template: nn.Module | None = None  # the template of logits (_with_matmul_convs)
        self._loss: Any = None
        self._logits: Any = None
        self._checked: Any = None  # weak reference to the last network that passed supports()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def supports(self, net: nn.Module) -> bool:
        """Whether ``net`` can take the compiled passes: no BatchNorm, and the structure of the first net seen."""
        if self._checked is not None and self._checked() is net:
            return True  # the same network as the last check (every class of a GM step, every batch of training)
        if has_module_state(net):
            return False
        if self._template is None:
            self._build(net)
        else:
            named = list(net.named_parameters())
            if tuple(n for n, _ in named) != self._names or tuple(p.shape for _, p in named) != self._shapes:
                return False
        self._checked = weakref.ref(net)
        return True

    def _build(self, net: nn.Module) -> None:
        named = list(net.named_parameters())
        key = (str(net), tuple((n, tuple(p.shape), p.dtype) for n, p in named))
        shared = _SHARED.get(key)
        if shared is None:
            shared = _SHARED[key] = _compile_structure(net)
        self._template, self._eval_template, self._loss, self._logits = shared
        self._names, self._shapes = tuple(n for n, _ in named), tuple(p.shape for _, p in named)

    def _check(self, net: nn.Module) -> None:
        if not self.supports(net):
            raise ValueError(f"{type(net).__name__} cannot use the compiled passes (BatchNorm, or another structure "
                             "than the first network)")
        assert self._template is not None and self._eval_template is not None
        if self._template.training != net.training:
            self._template.train(net.training)
            self._eval_template.train(net.training)

    def loss(self, net: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor) -> Tensor:
        """``CE(net(x), y)`` (mean; ``y`` class indices or probabilities) with ``net``'s parameters ``params``,
        differentiable w.r.t. them."""
        self._check(net)
        return self._loss(list(params), x, y)

    def logits(self, net: nn.Module, x: Tensor) -> Tensor:
        """``net(x)`` (in ``net``'s train/eval mode) through the compiled forward, single-input-channel
        convolutions as one GEMM (:class:`_MatmulConv2d`; the same values to float rounding). Meant for
        inference (the test-split pass); :meth:`loss` keeps the network's own layers."""
        self._check(net)
        return self._logits(list(net.parameters()), x)


#: structure key → (template, eval template, compiled loss, compiled logits), shared by every CompiledNetwork
_SHARED: dict[Any, tuple[nn.Module, nn.Module, Any, Any]] = {}


def _compile_structure(net: nn.Module) -> tuple[nn.Module, nn.Module, Any, Any]:
    """A frozen copy of ``net`` (and its eval-forward variant) and the compiled loss/logits run on it."""
    use_persistent_cache()
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    template = copy.deepcopy(net)
    for p in template.parameters():
        p.requires_grad_(False)
    names = tuple(n for n, _ in net.named_parameters())

    def forward(params: list[Tensor], x: Tensor) -> Tensor:
        return functional_call(template, dict(zip(names, params)), (x,))

    def loss(params: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(forward(params, x), y)

    evaluation = _with_matmul_convs(template)
    for m in template.modules():  # the loss's group norms (the eval forward keeps the native layer)
        if type(m) is nn.GroupNorm and m.affine:
            m.__class__ = _GroupNorm

    def logits(params: list[Tensor], x: Tensor) -> Tensor:
        return functional_call(evaluation, dict(zip(names, params)), (x,))

    return template, evaluation, torch.compile(loss, dynamic=False), torch.compile(logits, dynamic=False)
