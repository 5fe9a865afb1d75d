"""Trajectory matching: the meta-objective and its gradients (unrolled, constant memory, first order, SDC).

Toy sizes in float64 so finite differences are sharp; the module-level tests live in ``test_tm_methods.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_sdc.augment import sample_dsa
from lightning_sdc.methods.tm.meta import InnerStep, chunk_schedule, trajectory_objective

D_IN, HID, C = 16, 5, 3
P = HID * D_IN + HID + C * HID + C


def mlp_loss(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """A 2-layer tanh MLP run on a flat parameter vector (the toy functional student)."""
    w1, b1, w2, b2 = torch.split(theta, [HID * D_IN, HID, C * HID, C])
    h = torch.tanh(x.flatten(1) @ w1.view(HID, D_IN).T + b1)
    return F.cross_entropy(h @ w2.view(C, HID).T + b2, y)


def toy(seed: int = 0, n: int = 6, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 4, 4, generator=g, dtype=dtype).requires_grad_(True)
    hard = torch.arange(n) % C
    start = 0.5 * torch.randn(P, generator=g, dtype=dtype)
    target = start + 0.1 * torch.randn(P, generator=g, dtype=dtype)
    return images, hard, start, target


def plan_of(steps: int, n: int = 6, batch: int | None = None, dsa: bool = False, seed: int = 1) -> list[InnerStep]:
    g = torch.Generator().manual_seed(seed)
    rows = chunk_schedule(n, batch, steps, g)
    out = []
    for r in rows:
        count = n if r is None else r.numel()
        aug = sample_dsa("color_crop_cutout_scale_rotate", count, generator=g, siamese=False, image_size=4) if dsa else None
        out.append(InnerStep(r, aug))
    return out


def hard_targets(hard: Tensor):
    return lambda idx: hard if idx is None else hard[idx]


def run(images, targets, lr, start, target, plan, **kw):
    return trajectory_objective(mlp_loss, images, targets, lr, start, target, plan, **kw)


def grads_of(result, *tensors):
    return torch.autograd.grad(result.objective, tensors, allow_unused=True)


# ------------------------------------------------------------------------------------------------ basics
def test_chunk_schedule_pops_remainder_first_and_covers_every_row() -> None:
    g = torch.Generator().manual_seed(0)
    rows = chunk_schedule(7, 3, 3, g)
    assert [r.numel() for r in rows] == [1, 3, 3]  # MTT pops from the end: the short chunk first
    assert sorted(torch.cat(rows).tolist()) == list(range(7))  # one permutation, without replacement
    assert chunk_schedule(7, None, 2, g) == [None, None] and chunk_schedule(7, 9, 1, g) == [None]


@pytest.mark.parametrize("memory", ["unrolled", "constant"])
def test_loss_is_one_without_steps_or_with_zero_lr(memory: str) -> None:
    images, hard, start, target = toy()
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    r0 = run(images, hard_targets(hard), lr, start, target, [], memory=memory)
    assert float(r0.match_loss) == 1.0 and float(r0.sdc) == 0.0
    zero = torch.tensor(0.0, dtype=torch.float64)
    rz = run(images, hard_targets(hard), zero, start, target, plan_of(3), memory=memory)
    assert float(rz.match_loss) == 1.0
    assert torch.equal(rz.final_params, start)


def test_bad_modes_are_rejected() -> None:
    images, hard, start, target = toy()
    lr = torch.tensor(0.1, dtype=torch.float64)
    with pytest.raises(ValueError, match="memory='graph'"):
        run(images, hard_targets(hard), lr, start, target, [], memory="graph")
    with pytest.raises(ValueError, match="meta_gradient"):
        run(images, hard_targets(hard), lr, start, target, [], meta_gradient="second")


# ------------------------------------------------------------------------------------------------ exactness
def _directional_fd(fn, x: Tensor, direction: Tensor, eps: float = 1e-6) -> float:
    return (float(fn(x + eps * direction).detach()) - float(fn(x - eps * direction).detach())) / (2 * eps)


@pytest.mark.parametrize("sdc_lambda,power", [(0.0, 1), (0.3, 1), (0.3, 2)])
def test_unrolled_gradient_matches_finite_differences(sdc_lambda: float, power: int) -> None:
    """MTT's image and lr gradients (and with λ > 0 the SDC term's) equal central finite differences."""
    images, hard, start, target = toy()
    lr = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    plan = plan_of(3, batch=4)
    kw = {"sdc_lambda": sdc_lambda, "sdc_power": power}
    res = run(images, hard_targets(hard), lr, start, target, plan, **kw)
    g_img, g_lr = grads_of(res, images, lr)

    def obj_img(x):
        return run(x, hard_targets(hard), lr.detach(), start, target, plan, **kw).objective

    def obj_lr(a):
        return run(images.detach(), hard_targets(hard), a, start, target, plan, **kw).objective

    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        d = torch.randn(images.shape, generator=gen, dtype=torch.float64)
        fd = _directional_fd(obj_img, images.detach(), d)
        assert abs(float((g_img * d).sum()) - fd) <= 1e-7 * max(1.0, abs(fd))
    fd_lr = _directional_fd(obj_lr, lr.detach(), torch.tensor(1.0, dtype=torch.float64))
    assert abs(float(g_lr) - fd_lr) <= 1e-7 * max(1.0, abs(fd_lr))
    if sdc_lambda > 0:  # the SDC term really contributes
        base = run(images, hard_targets(hard), lr, start, target, plan)
        assert not torch.allclose(grads_of(base, images)[0], g_img)


@pytest.mark.parametrize("meta_gradient", ["exact", "first_order"])
@pytest.mark.parametrize("sdc_lambda,power", [(0.0, 1), (0.2, 1), (0.2, 2)])
def test_constant_memory_equals_unrolled(meta_gradient: str, sdc_lambda: float, power: int) -> None:
    """Same loss, same image / learned-label / lr gradients, with DSA and minibatches, SDC included."""
    images, hard, start, target = toy()
    logits = (2.0 * F.one_hot(hard, C).double()).requires_grad_(True)

    def soft(idx):
        z = logits if idx is None else logits[idx]
        return torch.softmax(z, 1)

    lr = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    plan = plan_of(4, batch=4, dsa=True)
    kw = {"meta_gradient": meta_gradient, "sdc_lambda": sdc_lambda, "sdc_power": power}
    un = run(images, soft, lr, start, target, plan, memory="unrolled", **kw)
    co = run(images, soft, lr, start, target, plan, memory="constant", learned=[logits], **kw)
    assert torch.equal(un.match_loss, co.match_loss) and torch.equal(un.final_params, co.final_params)
    assert torch.allclose(un.objective.detach(), co.objective.detach(), rtol=0, atol=1e-14)
    for a, b in zip(grads_of(un, images, logits, lr), grads_of(co, images, logits, lr)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)


def test_constant_memory_float32_agrees_to_float_precision() -> None:
    images, hard, start, target = toy(dtype=torch.float32)
    lr = torch.tensor(0.3, requires_grad=True)
    plan = plan_of(5, dsa=True)
    un = run(images, hard_targets(hard), lr, start, target, plan, memory="unrolled", sdc_lambda=0.1)
    co = run(images, hard_targets(hard), lr, start, target, plan, memory="constant", sdc_lambda=0.1)
    for a, b in zip(grads_of(un, images, lr), grads_of(co, images, lr)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def tesla_recipe(images: Tensor, hard: Tensor, alpha: float, start: Tensor, target: Tensor, plan) -> tuple[Tensor, float]:
    """TESLA ``distill.py``'s closed form, written out independently (tm_reference §3.1).

    Pass 1: θ_{i+1} = θ_i − α g_i with detached g_i, G = Σ g_i. Pass 2: image gradient of step i =
    2·VJP of s_i = v·g_i / D with v = α(θ* − θ_0) + α² G; lr gradient = −2 Gᵀ(θ_0 − αG − θ*)/D.
    """
    thetas, gs = [start], []
    for step in plan:
        th = thetas[-1].clone().requires_grad_(True)
        x = images.detach() if step.index is None else images.detach()[step.index]
        (g,) = torch.autograd.grad(mlp_loss(th, x, hard if step.index is None else hard[step.index]), th)
        gs.append(g)
        thetas.append(thetas[-1] - alpha * g)
    big_g = torch.stack(gs).sum(0)
    d = (start - target).pow(2).sum()
    v = alpha * (target - start) + alpha**2 * big_g
    grad = torch.zeros_like(images)
    for th0, step in zip(thetas[:-1], plan):
        th = th0.clone().requires_grad_(True)
        x = images if step.index is None else images[step.index]
        (g,) = torch.autograd.grad(mlp_loss(th, x, hard if step.index is None else hard[step.index]), th, create_graph=True)
        (gx,) = torch.autograd.grad(torch.dot(v, g) / d, images)
        grad += 2 * gx
    lr_grad = float(-2 * torch.dot(big_g, start - alpha * big_g - target) / d)
    return grad, lr_grad


@pytest.mark.parametrize("memory", ["unrolled", "constant"])
def test_first_order_is_tesla_closed_form_and_exact_for_one_step(memory: str) -> None:
    images, hard, start, target = toy()
    alpha = 0.3
    lr = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
    plan = plan_of(4, batch=3)
    fo = run(images, hard_targets(hard), lr, start, target, plan, memory=memory, meta_gradient="first_order")
    g_img, g_lr = grads_of(fo, images, lr)
    ref_img, ref_lr = tesla_recipe(images, hard, alpha, start, target, plan)
    assert torch.allclose(g_img, ref_img, rtol=1e-10, atol=1e-14)
    assert abs(float(g_lr) - ref_lr) <= 1e-10 * abs(ref_lr)
    ex = run(images, hard_targets(hard), lr, start, target, plan, memory=memory)
    assert not torch.allclose(grads_of(ex, images)[0], g_img, rtol=1e-3)  # N > 1: first order is not exact
    one = plan_of(1)
    a = grads_of(run(images, hard_targets(hard), lr, start, target, one, memory=memory, meta_gradient="first_order"), images, lr)
    b = grads_of(run(images, hard_targets(hard), lr, start, target, one, memory="unrolled"), images, lr)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-15)


def plain_mtt_unroll(images, hard, lr, start, target, plan) -> Tensor:
    """MTT's loop with no SDC code at all (the λ-free baseline)."""
    theta = start.clone().requires_grad_(True)
    for step in plan:
        x = images if step.index is None else images.index_select(0, step.index)
        y = hard if step.index is None else hard.index_select(0, step.index)
        (g,) = torch.autograd.grad(mlp_loss(theta, x, y), theta, create_graph=True)
        theta = theta - lr * g
    return (theta - target).pow(2).sum() / (start - target).pow(2).sum()


def test_lambda_zero_is_bit_identical_to_the_sdc_free_loop() -> None:
    images, hard, start, target = toy(dtype=torch.float32)
    lr = torch.tensor(0.2, requires_grad=True)
    plan = plan_of(3, batch=4)
    res = run(images, hard_targets(hard), lr, start, target, plan, sdc_lambda=0.0)
    ref = plain_mtt_unroll(images, hard, lr, start, target, plan)
    assert torch.equal(res.objective.detach(), ref.detach())
    for a, b in zip(grads_of(res, images, lr), torch.autograd.grad(ref, (images, lr))):
        assert torch.equal(a, b)
    assert float(res.sdc) > 0  # the term is still reported


@pytest.mark.parametrize("power", [1, 2])
def test_sdc_term_value_is_mean_inner_gradient_norm(power: int) -> None:
    images, hard, start, target = toy()
    lr = torch.tensor(0.2, dtype=torch.float64)
    plan = plan_of(3)
    res = run(images, hard_targets(hard), lr, start, target, plan, sdc_lambda=0.5, sdc_power=power)
    theta, norms = start.clone(), []
    for _ in plan:
        th = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(mlp_loss(th, images.detach(), hard), th)
        norms.append(g.norm() ** power)
        theta = theta - 0.2 * g
    expected = torch.stack(norms).mean()
    assert torch.allclose(res.sdc, expected, rtol=1e-12)
    assert torch.allclose(res.objective.detach(), res.match_loss + 0.5 * expected, rtol=1e-12)


# ------------------------------------------------------------------ the student's closed-form second derivatives
@pytest.mark.parametrize("groups,channels", [(4, 4), (2, 4), (1, 3)])
def test_group_norm_closed_form_double_backward(groups: int, channels: int) -> None:
    """First and second derivatives of the fast group norm (instance norm: groups == channels) against finite
    differences, every upstream combination (gradgradcheck perturbs g, x, γ with all three outputs used)."""
    from lightning_sdc.models.double_backward import _GroupNorm

    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=g, dtype=torch.float64).requires_grad_(True)
               for s in ((2, channels, 3, 2), (channels,), (channels,)))

    def f(x, w, b):
        return _GroupNorm.apply(x, w, b, groups, 1e-5)

    assert torch.equal(f(x, w, b), F.group_norm(x, groups, w, b, 1e-5))  # the native kernel
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))
    # only the γ and β gradients used downstream (no ggx): against the native second derivatives
    u = torch.randn(x.shape, generator=g, dtype=torch.float64).requires_grad_(True)

    def second(norm):
        gw, gb = torch.autograd.grad((norm(x, w, b) * u).sum(), (w, b), create_graph=True)
        return torch.autograd.grad((gw * torch.arange(channels)).sum() + gb.pow(2).sum(), (x, u))

    for a, ref in zip(second(f), second(lambda x, w, b: F.group_norm(x, groups, w, b, 1e-5))):
        assert torch.allclose(a, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("conf,bias", [(([1, 1], [1, 1], [1, 1], 1), True), (([2, 1], [0, 1], [1, 2], 2), False)])
def test_conv_closed_form_double_backward(conf: tuple, bias: bool) -> None:
    from lightning_sdc.models.double_backward import _Conv

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 6, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(6, 4 // conf[3], 3, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(6, generator=g, dtype=torch.float64).requires_grad_(True)
    args = (x, w, b) if bias else (x, w)

    def f(x, w, b=None):
        return _Conv.apply(x, w, b, conf)

    assert torch.equal(f(*args), F.conv2d(x, w, b if bias else None, *conf))
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


def test_relu_and_pool_are_native_values_and_twice_differentiable() -> None:
    from lightning_sdc.models.double_backward import _Pool2, _Relu

    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64).requires_grad_(True)
    big = 100 * torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(_Pool2.apply(big), F.avg_pool2d(big, 2, 2))  # bit-identical, avg_pool2d's summation order
    assert torch.autograd.gradgradcheck(_Pool2.apply, (x,))
    assert torch.equal(_Relu.apply(x * 1, True), x.relu())
    assert torch.autograd.gradgradcheck(lambda x: _Relu.apply(x, False), (x,))
    assert torch.autograd.gradgradcheck(lambda x: _Relu.apply(x * 1, True), (x,))


def test_third_derivative_of_the_fast_layers_raises() -> None:
    from lightning_sdc.models.double_backward import _GroupNorm

    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    y = _GroupNorm.apply(x, w, torch.zeros(3, dtype=torch.float64), 3, 1e-5)
    (gx,) = torch.autograd.grad(y.pow(3).sum(), x, create_graph=True)
    torch.autograd.grad(gx.pow(2).sum(), x)  # second order: fine
    with pytest.raises(RuntimeError, match="third derivative"):
        torch.autograd.grad(gx.pow(2).sum(), x, create_graph=True)


@pytest.mark.parametrize("memory", ["unrolled", "constant"])
def test_student_fast_layers_match_native(memory: str) -> None:
    """The student with the swapped layers (default) gives the MTT objective and its image / lr gradients of the
    student with PyTorch's layers, to fp64 rounding; the swap keeps the parameter layout and the module output."""
    from lightning_sdc.methods.tm.student import FunctionalStudent

    kw = {"width": 8, "depth": 2}
    fast = FunctionalStudent.build("ConvNet", (3, 8, 8), 4, kw)
    native = FunctionalStudent.build("ConvNet", (3, 8, 8), 4, kw, native_layers=True)
    assert fast.layout == native.layout
    assert {type(m).__module__ for m in fast.module.modules()} >= {"lightning_sdc.models.double_backward"}
    assert not any(type(m).__module__.endswith("double_backward") for m in native.module.modules())
    fast.module.double(), native.module.double()
    g = torch.Generator().manual_seed(5)
    base = torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.arange(6) % 4
    start = 0.3 * torch.randn(fast.num_params, generator=g, dtype=torch.float64)
    target = start + 0.05 * torch.randn(fast.num_params, generator=g, dtype=torch.float64)
    assert torch.equal(fast(start, base), native(start, base))
    out = []
    for student in (fast, native):
        images = base.clone().requires_grad_(True)
        lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        res = trajectory_objective(student.loss, images, lambda idx: labels if idx is None else labels[idx], lr,
                                   start, target, plan_of(3, batch=4), memory=memory, sdc_lambda=0.1)
        res.objective.backward()  # as manual_backward: no inputs= (the first conv's input gradient is needed)
        out.append((res.objective.detach(), images.grad, lr.grad))
    for a, b in zip(*out):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
