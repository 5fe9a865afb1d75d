"""The speed paths compute what the plain paths compute (float rounding apart)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from lightning_sdc.methods import DC
from lightning_sdc.methods.gm import class_gradient, train_on_synset
from lightning_sdc.methods.gm.engine import CompiledEngine, GradientEngine
from lightning_sdc.models import build_network
from lightning_sdc.models.compiled import CompiledNetwork, _GroupNorm

from .gm_helpers import SMALL, fit


class _Start(pl.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.images = pl_module.synset.images.detach().clone()


def _first_update(**kw) -> torch.Tensor:
    """The image change of one DC update (SGD's first step: −lr_img · ∂L/∂S)."""
    rec = _Start()
    model = fit(DC("digits", 2, arch_kwargs=SMALL, batch_real=32, seed=5, outer_loop=2, inner_loop=0, **kw), 1,
                callbacks=[rec])
    return (model.synset.images.detach() - rec.images).flatten()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_compiled_dc_step_equals_eager():
    """``engine="compiled"`` (torch.compile'd real-batch passes): λ = 0 image gradient equal to the eager path
    (1e-5)."""
    eager, fast = _first_update(engine="eager"), _first_update(engine="compiled")
    assert float(eager.norm()) > 0
    assert _rel(fast, eager) <= 1e-5


def test_compiled_group_norm_as_accurate_as_eager():
    """The compiled loss's group norm (``_GroupNorm``) on a channels-last map, as Inductor lays out the
    ConvNet's activations: within 2× of eager's distance to fp64 (measured 1.2–1.4×). Inductor's own lowering
    of ``nn.GroupNorm`` is 6–7× there."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(8, 32, 32, 32, generator=g) + 2.0).contiguous(memory_format=torch.channels_last)
    gn = torch.nn.GroupNorm(32, 32)
    torch.nn.init.normal_(gn.weight, generator=g)
    torch.nn.init.normal_(gn.bias, generator=g)
    want = gn.double()(x.double())
    eager = _rel(gn.float()(x.contiguous()).double(), want)
    gn.__class__ = _GroupNorm
    assert _rel(torch.compile(gn, dynamic=False)(x).detach().double(), want) <= 2 * eager


@pytest.mark.slow  # three compilations (~40 s of CPU with a cold Inductor cache)
def test_compiled_gradient_and_inner_training_equal_eager():
    """The compiled class gradient and the compiled inner-loop training equal the eager ones; a BatchNorm net
    (module state) falls back to the eager pass; another structure is refused."""
    g = torch.Generator().manual_seed(0)
    net = build_network("ConvNet", 1, 4, (8, 8), generator=g, **SMALL)
    x, params, engine = torch.randn(12, 1, 8, 8, generator=g), list(net.parameters()), CompiledEngine()
    want = class_gradient(net, params, x, 2, create_graph=False)
    (got,) = engine.real_gradients(net, [x], [2])
    for a, b in zip(got, want):
        if b.dim() > 1:  # conv biases before instance norm have a zero gradient: only rounding noise there
            assert _rel(a, b) <= 1e-5
    nets = [build_network("ConvNet", 1, 4, (8, 8), generator=torch.Generator().manual_seed(1), **SMALL) for _ in "ab"]
    y = torch.arange(12) % 4
    for n, loss_fn in zip(nets, (None, engine.loss)):
        train_on_synset(n, x, y, epochs=3, lr=0.01, batch_size=16, generator=torch.Generator().manual_seed(2),
                        loss_fn=loss_fn)
    for a, b in zip(nets[1].parameters(), nets[0].parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    compiled = CompiledNetwork()
    assert not compiled.supports(build_network("ConvNet", 1, 4, (8, 8), norm="batchnorm", **SMALL))
    assert compiled.supports(net)
    with pytest.raises(ValueError, match="compiled passes"):
        compiled.loss(build_network("ConvNet", 1, 4, (8, 8), width=8, depth=1), [], x, y)


# ---------------------------------------------------------------------------------------------- evaluation
def _eval_set(digits):
    g = torch.Generator().manual_seed(3)
    idx = torch.cat([torch.nonzero(digits.train_labels == c).flatten()[:2] for c in range(10)])
    return digits.train_images[idx] + 0.1 * torch.randn(20, 1, 8, 8, generator=g), digits.train_labels[idx]


def test_stacked_training_equals_one_at_a_time(digits):
    """Three networks trained stacked (vmap, one optimiser) end where three one-at-a-time runs end: shuffled
    batches and per-network DSA draws from each network's generator, lr decay, momentum and weight decay."""
    from lightning_sdc.evaluation.protocol import (
        make_train_augment,
        seeded_generator,
        train_network,
        train_networks,
    )

    images, labels = _eval_set(digits)
    aug = make_train_augment("dsa", dataset="digits")
    kw = {"epochs": 4, "lr": 0.01, "batch_size": 8, "augment": aug}

    def fresh():
        gens = [seeded_generator(0, i) for i in range(3)]
        return [build_network("ConvNet", 1, 10, (8, 8), generator=g, **SMALL) for g in gens], gens

    want, gens = fresh()
    for net, g in zip(want, gens):
        train_network(net, images, labels, generator=g, **kw)
    got, gens = fresh()
    train_networks(got, gens, images, labels, **kw)
    start, _ = fresh()
    for a, b, s in zip(got, want, start):
        for (name, p), q, r in zip(a.named_parameters(), b.parameters(), s.parameters()):
            assert float((q - r).detach().abs().max()) > 0, name  # trained at all
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name


def test_evaluate_synset_speed_paths_equal_default(digits):
    """``stacked`` and ``compiled`` give the default loop's accuracies (same seeds, same batch order)."""
    from lightning_sdc.evaluation import evaluate_synset

    images, labels = _eval_set(digits)
    kw = {"arch_kwargs": SMALL, "num_models": 3, "epochs": 3, "batch_size": 10, "augment": "none", "seed": 4}
    want = evaluate_synset((images, labels), digits, **kw).accuracies
    assert evaluate_synset((images, labels), digits, stacked=2, **kw).accuracies == want
    # the compiled test pass counts correct/total in Python, torchmetrics in float32
    assert evaluate_synset((images, labels), digits, compiled=True, **kw).accuracies == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="stacked must be an integer >= 1"):
        evaluate_synset((images, labels), digits, stacked=0, **kw)


@pytest.mark.parametrize("kw", [{"padding": 3}, {"stride": 2, "padding": (1, 0), "dilation": 2, "bias": False}])
def test_matmul_conv_of_the_eval_forward_equals_conv2d(kw):
    """The compiled eval forward's single-input-channel convolution (one GEMM over the unfolded input) equals
    ``nn.Conv2d``; only such layers are swapped, parameters (names, objects) kept."""
    from lightning_sdc.models.compiled import _MatmulConv2d, _with_matmul_convs

    conv = torch.nn.Conv2d(1, 8, 3, **kw)
    fast = _MatmulConv2d(1, 8, 3, **kw)
    fast.load_state_dict(conv.state_dict())
    x = torch.randn(5, 1, 11, 9, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(fast(x), conv(x), rtol=1e-5, atol=1e-6)
    net = build_network("ConvNet", 1, 10, (8, 8), **SMALL)
    swapped = _with_matmul_convs(net)
    kinds = [type(m) for m in swapped.features if isinstance(m, torch.nn.Conv2d)]
    assert kinds[0] is _MatmulConv2d and all(k is torch.nn.Conv2d for k in kinds[1:])
    assert [n for n, _ in swapped.named_parameters()] == [n for n, _ in net.named_parameters()]
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(swapped(x), net(x), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- trajectory matching
@pytest.mark.slow  # one compilation of the student's loss (~35 s with a cold Inductor cache)
def test_constant_memory_compiled_pass1_equals_eager():
    """The constant-memory meta-gradient with pass 1 through the compiled student loss equals the eager one."""
    from lightning_sdc.methods.tm.meta import InnerStep, trajectory_objective
    from lightning_sdc.methods.tm.student import FunctionalStudent

    student = FunctionalStudent.build("ConvNet", (1, 8, 8), 4, SMALL)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(8) % 4
    start = 0.1 * torch.randn(student.num_params, generator=g)
    target = start + 0.01 * torch.randn(student.num_params, generator=g)
    base = torch.randn(8, 1, 8, 8, generator=g)
    grads = []
    for fast in (None, student.compiled_loss):
        images, lr = base.clone().requires_grad_(True), torch.tensor(0.05, requires_grad=True)
        res = trajectory_objective(student.loss, images, lambda idx: labels, lr, start, target, [InnerStep(None)] * 3,
                                   memory="constant", sdc_lambda=0.1, first_order_loss_fn=fast)
        res.objective.backward()
        grads.append(torch.cat([images.grad.flatten(), lr.grad.flatten()]))
    assert float(grads[0].norm()) > 0
    assert _rel(grads[1], grads[0]) <= 1e-5


def test_synthetic_side_stays_fp32_under_autocast():
    """Under bf16 autocast the create_graph (synthetic) pass is fp32 — equal to the pass outside autocast — and
    the real-batch pass is bf16 (its gradient near, not equal, to fp32: cosine ≥ 0.99 per tensor)."""
    g = torch.Generator().manual_seed(0)
    net = build_network("ConvNet", 1, 4, (8, 8), generator=g, **SMALL)
    x, engine = torch.randn(16, 1, 8, 8, generator=g), GradientEngine()
    ((want_syn,), (want_real,)) = engine.syn_gradients(net, [x[:2]], [1]), engine.real_gradients(net, [x], [1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ((got_syn,), (got_real,)) = engine.syn_gradients(net, [x[:2]], [1]), engine.real_gradients(net, [x], [1])
    for a, b in zip(got_syn, want_syn):
        assert a.dtype == torch.float32 and a.requires_grad
        assert torch.equal(a, b)
    for a, b in zip(got_real, want_real):
        if b.dim() > 1:
            assert float(torch.nn.functional.cosine_similarity(a.float().flatten(), b.flatten(), dim=0)) >= 0.99
    assert any(not torch.equal(a.float(), b) for a, b in zip(got_real, want_real))  # bf16 really ran


def test_bf16_test_pass_is_opt_in_and_close(digits):
    """``test_bf16=True`` moves each accuracy by at most a few near-tied test images; bad values are refused."""
    from lightning_sdc.evaluation import evaluate_synset

    images, labels = _eval_set(digits)
    kw = {"arch_kwargs": SMALL, "num_models": 2, "epochs": 3, "batch_size": 10, "augment": "none", "seed": 4}
    want = evaluate_synset((images, labels), digits, **kw).accuracies
    got = evaluate_synset((images, labels), digits, test_bf16=True, **kw).accuracies
    assert all(abs(a - b) <= 3 / 359 for a, b in zip(got, want)), (got, want)
    with pytest.raises(ValueError, match="test_bf16 must be true or false"):
        evaluate_synset((images, labels), digits, test_bf16="yes", **kw)
