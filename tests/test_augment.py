"""DSA (differentiable Siamese augmentation) and DC evaluation augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_sdc.augment import (
    DSA_STRATEGY,
    DSA_STRATEGY_DIGITS,
    DSA_TOKENS,
    DCAugParams,
    DSAParams,
    apply_dsa,
    dc_augment,
    dc_augment_strategy,
    default_dsa_strategy,
    diff_augment,
    parse_strategy,
    sample_dsa,
)
from lightning_sdc.augment.dc import crop_with_fill, resize_nearest_centred, rotate_with_fill

M_MODE = DSAParams(aug_mode="M")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(token: str, x: torch.Tensor, *, seed: int = 0, siamese: bool = False, params: DSAParams = M_MODE):
    return sample_dsa(token, x.shape[0], generator=gen(seed), siamese=siamese, params=params,
                      image_size=tuple(x.shape[-2:]))


def bilinear_align_corners(img: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Independent loop implementation of affine_grid + grid_sample(bilinear, zeros, align_corners=True)."""
    c, h, w = img.shape
    out = np.zeros_like(img)
    for i in range(h):
        for j in range(w):
            xn, yn = -1 + 2 * j / (w - 1), -1 + 2 * i / (h - 1)
            xs, ys = theta @ np.array([xn, yn, 1.0])
            px, py = (xs + 1) * (w - 1) / 2, (ys + 1) * (h - 1) / 2
            x0, y0 = math.floor(px), math.floor(py)
            for dy in (0, 1):
                for dx in (0, 1):
                    yy, xx = y0 + dy, x0 + dx
                    wgt = (1 - abs(px - xx)) * (1 - abs(py - yy))
                    if 0 <= yy < h and 0 <= xx < w and wgt > 0:
                        out[:, i, j] += wgt * img[:, yy, xx]
    return out


# ------------------------------------------------------------------------------------------------ strategy


def test_strategy_parsing_and_defaults():
    assert parse_strategy(DSA_STRATEGY) == DSA_TOKENS
    for none in ("none", "None", ""):
        assert parse_strategy(none) == ()
    assert "flip" not in parse_strategy(DSA_STRATEGY_DIGITS)
    for name in ("MNIST", "mnist5k", "svhn", "digits"):
        assert default_dsa_strategy(name) == DSA_STRATEGY_DIGITS, name
    for name in ("fashionmnist", "FashionMNIST", "cifar10", "CIFAR100"):
        assert default_dsa_strategy(name) == DSA_STRATEGY, name


def test_bad_token_error_lists_allowed_tokens():
    with pytest.raises(ValueError, match=r"'blur'.*allowed tokens: color, crop, cutout, flip, scale, rotate"):
        parse_strategy("color_blur")
    with pytest.raises(ValueError, match="allowed tokens"):
        diff_augment(torch.zeros(1, 1, 4, 4), "crop__flip", generator=gen())
    with pytest.raises(ValueError, match="repeats"):
        parse_strategy("crop_crop")
    with pytest.raises(ValueError, match=r"aug_mode='X' is not allowed for DSAParams; allowed: S, M"):
        DSAParams(aug_mode="X")
    with pytest.raises(ValueError, match=r"DSAParams.prob_flip must be a number in \[0, 1\], got 1.5"):
        DSAParams(prob_flip=1.5)
    with pytest.raises(ValueError, match=r"DSAParams.ratio_scale must be a finite number >= 1, got 0.5"):
        DSAParams(ratio_scale=0.5)
    with pytest.raises(ValueError, match=r"DSAParams.brightness must be a finite number >= 0, got nan"):
        DSAParams(brightness=float("nan"))
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1 \(> 0\), got 0"):
        sample_dsa("crop", 0, generator=gen(), siamese=True, image_size=4)
    with pytest.raises(ValueError, match=r"image_size width must be an integer >= 1 \(> 0\), got 0"):
        sample_dsa("crop", 2, generator=gen(), siamese=False, image_size=(4, 0))


def test_none_is_identity():
    x = torch.randn(3, 2, 5, 5)
    for none in ("none", "None", ""):
        assert diff_augment(x, none, generator=gen()) is x
        s = sample_dsa(none, 3, generator=gen(), siamese=True, image_size=5)
        assert apply_dsa(x, s) is x


# ------------------------------------------------------------------------------------- randomness / Siamese


def test_same_seed_same_output_and_different_seed_differs():
    x = torch.randn(6, 3, 8, 8)
    for siamese in (True, False):
        for params in (DSAParams(), M_MODE):
            a = diff_augment(x, DSA_STRATEGY, generator=gen(3), siamese=siamese, params=params)
            b = diff_augment(x, DSA_STRATEGY, generator=gen(3), siamese=siamese, params=params)
            assert torch.equal(a, b)
    a = diff_augment(x, DSA_STRATEGY, generator=gen(3), params=M_MODE)
    b = diff_augment(x, DSA_STRATEGY, generator=gen(4), params=M_MODE)
    assert not torch.allclose(a, b)


def test_library_leaves_global_rng_alone():
    x3, x1 = torch.randn(2, 3, 8, 8), torch.randn(4, 1, 8, 8)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    diff_augment(x3, DSA_STRATEGY, generator=gen(), siamese=True, params=M_MODE)
    diff_augment(x3, DSA_STRATEGY, generator=gen(), siamese=False)
    dc_augment(x1, "crop_scale_rotate_noise", gen())
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("strategy", [*DSA_TOKENS, DSA_STRATEGY])
def test_siamese_sample_is_one_transform_for_any_batch(strategy):
    a, b = torch.randn(3, 3, 8, 8), torch.randn(5, 3, 8, 8)
    s = sample_dsa(strategy, 999, generator=gen(7), siamese=True, params=M_MODE, image_size=8)
    assert s.batch_size == 1
    out_a, out_ab = apply_dsa(a, s), apply_dsa(torch.cat([a, b]), s)
    assert torch.allclose(out_ab[:3], out_a, atol=1e-6)
    # the same parameters for every image: duplicated images stay duplicated
    twice = apply_dsa(torch.cat([a, a]), s)
    assert torch.allclose(twice[:3], twice[3:], atol=1e-6)


def test_per_image_parameters_differ_and_batch_size_is_checked():
    x = torch.zeros(16, 1, 6, 6)
    s = draw("color", x)
    assert s.brightness.shape == (16, 1, 1, 1) and s.brightness.unique().numel() == 16
    with pytest.raises(ValueError, match="16 parameter sets but the batch has 4"):
        apply_dsa(x[:4], s)
    with pytest.raises(ValueError, match="drawn for"):
        apply_dsa(torch.zeros(16, 1, 7, 7), s)


def test_single_mode_draws_one_token_multi_mode_all():
    seen = set()
    g = gen(11)
    for _ in range(80):
        s = sample_dsa(DSA_STRATEGY, 4, generator=g, siamese=True, image_size=8)
        assert len(s.tokens) == 1
        seen.add(s.tokens[0])
    assert seen == set(DSA_TOKENS)
    s = sample_dsa("rotate_crop", 4, generator=gen(), siamese=False, params=M_MODE, image_size=8)
    assert s.tokens == ("rotate", "crop") and s.rotate_grid is not None and s.crop_rows is not None
    assert s.cutout_mask is None and s.brightness is None


# ----------------------------------------------------------------------------- each transform by hand


def test_flip_reverses_width_where_drawn():
    x = torch.randn(12, 2, 4, 5)
    assert torch.equal(apply_dsa(x, draw("flip", x, params=DSAParams(prob_flip=1.0))), x.flip(3))
    assert torch.equal(apply_dsa(x, draw("flip", x, params=DSAParams(prob_flip=0.0))), x)
    s = draw("flip", x)
    out = apply_dsa(x, s)
    flags = s.flip.flatten().tolist()
    assert 0 < sum(flags) < 12
    for b, f in enumerate(flags):
        assert torch.equal(out[b], x[b].flip(2) if f else x[b])


def test_crop_shifts_by_the_drawn_amounts_with_zero_fill():
    x = torch.arange(40 * 2 * 6 * 6, dtype=torch.float32).view(40, 2, 6, 6) + 1
    params = DSAParams(ratio_crop_pad=0.34)  # int(6 * 0.34 + 0.5) = 2
    s = draw("crop", x, params=params)
    out = apply_dsa(x, s)
    assert set(s.crop_shift.flatten().tolist()) == {-2, -1, 0, 1, 2}
    for b in range(40):
        tx, ty = s.crop_shift[b].tolist()
        for i in range(6):
            for j in range(6):
                inside = 0 <= i + tx < 6 and 0 <= j + ty < 6
                expected = x[b, :, i + tx, j + ty] if inside else torch.zeros(2)
                assert torch.equal(out[b, :, i, j], expected)


def test_cutout_zeroes_the_drawn_square_truncated_at_borders():
    x = torch.randn(40, 3, 8, 8) + 10  # no natural zeros
    s = draw("cutout", x)  # side int(8 * 0.5 + 0.5) = 4, centres 0..8
    out = apply_dsa(x, s)
    assert s.cutout_center.min() >= 0 and s.cutout_center.max() <= 8
    assert len(set(s.cutout_center.flatten().tolist())) >= 6
    for b in range(40):
        ox, oy = s.cutout_center[b].tolist()
        expected = x[b].clone()
        expected[:, max(ox - 2, 0) : max(ox + 2, 0), max(oy - 2, 0) : max(oy + 2, 0)] = 0
        assert torch.equal(out[b], expected)
    # odd side: int(7 * 0.5 + 0.5) = 4 → centres in 0..7; int(5 * 0.5 + 0.5) = 3 → centres 0..4
    s5 = draw("cutout", torch.zeros(200, 1, 5, 5))
    assert s5.cutout_mask.sum(dim=(1, 2, 3)).max() == 9 and s5.cutout_center.max() == 4


def test_brightness_adds_the_drawn_shift():
    x = torch.full((8, 1, 4, 4), 0.3)  # constant 1-channel image: saturation and contrast are no-ops
    s = draw("color", x)
    out = apply_dsa(x, s)
    assert torch.allclose(out - x, s.brightness.expand_as(x), atol=1e-6)
    assert (s.brightness.abs() <= 0.5).all()


def test_color_matches_the_reference_formulas():
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    s = draw("color", x)
    b, sat, con = (t.double().view(-1) for t in (s.brightness, s.saturation, s.contrast))
    out = apply_dsa(x, s)
    for n in range(4):
        y = x[n] + b[n]
        pixel_mean = y.mean(0, keepdim=True)
        y = (y - pixel_mean) * sat[n] + pixel_mean
        y = (y - y.mean()) * con[n] + y.mean()
        assert torch.allclose(out[n], y, atol=1e-12)
    assert ((sat >= 0) & (sat < 2)).all() and ((con >= 0.5) & (con < 1.5)).all()
    gray = torch.randn(4, 1, 5, 5, dtype=torch.float64)  # saturation is the identity for one channel
    out = apply_dsa(gray, s)
    for n in range(4):
        y = gray[n] + b[n]
        assert torch.allclose(out[n], (y - y.mean()) * con[n] + y.mean(), atol=1e-12)


@pytest.mark.parametrize("token", ["scale", "rotate"])
def test_affine_tokens_match_an_independent_align_corners_sampler(token):
    x = torch.randn(3, 2, 5, 7, dtype=torch.float64)
    s = draw(token, x, params=DSAParams(ratio_rotate=40.0, ratio_scale=1.5))
    out = apply_dsa(x, s)
    for n in range(3):
        if token == "scale":
            sx, sy = s.scale_factors[n].tolist()
            assert 1 / 1.5 <= sx <= 1.5 and 1 / 1.5 <= sy <= 1.5
            theta = np.array([[sx, 0, 0], [0, sy, 0]])
        else:
            phi = float(s.rotate_angle[n])
            assert abs(phi) <= 40 * math.pi / 180
            theta = np.array([[math.cos(phi), -math.sin(phi), 0], [math.sin(phi), math.cos(phi), 0]])
        expected = bilinear_align_corners(x[n].numpy(), theta)
        assert np.allclose(out[n].numpy(), expected, atol=1e-5)


# --------------------------------------------------------------------------------- autograd / precision


@pytest.mark.parametrize("strategy", [*DSA_TOKENS, DSA_STRATEGY])
@pytest.mark.parametrize("siamese", [True, False])
def test_gradcheck_wrt_input(strategy, siamese):
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    s = draw(strategy, x, seed=1, siamese=siamese)
    assert torch.autograd.gradcheck(lambda t: apply_dsa(t, s), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("strategy", [*DSA_TOKENS, DSA_STRATEGY])
def test_runs_under_bf16_autocast(strategy):
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    s = draw(strategy, x, siamese=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_fp32_in = apply_dsa(x, s)
        h = conv(x)
        assert h.dtype == torch.bfloat16
        out = apply_dsa(h, s)
        loss = out.float().square().mean() + out_fp32_in.square().mean()
    loss.backward()
    assert out.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    assert apply_dsa(x.detach().bfloat16(), s).dtype == torch.bfloat16


@pytest.mark.cuda
def test_cuda_matches_cpu_and_runs_under_autocast():
    x = torch.randn(8, 3, 16, 16)
    s = draw(DSA_STRATEGY, x, siamese=False)
    cpu = apply_dsa(x, s)
    cuda = apply_dsa(x.cuda(), s)  # parameters move to the batch's device
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-5)
    s_dev = sample_dsa(DSA_STRATEGY, 8, generator=gen(), siamese=True, params=M_MODE, device="cuda", image_size=16)
    assert s_dev.rotate_grid.is_cuda
    xc = x.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = apply_dsa(torch.nn.functional.conv2d(xc, torch.randn(3, 3, 1, 1, device="cuda")), s_dev)
    y.float().sum().backward()
    assert torch.isfinite(xc.grad).all()
    assert dc_augment(x.cuda(), "crop_scale_rotate_noise", gen()).is_cuda


# ------------------------------------------------------------------------------------------- DC augment


def test_dc_augment_strategy_follows_get_daparam():
    assert dc_augment_strategy("MNIST", "ConvNet") == "crop_scale_rotate"
    assert dc_augment_strategy("mnist5k", "ConvNet") == "crop_scale_rotate"
    assert dc_augment_strategy("MNIST", "ConvNetBN") == "crop_noise"
    assert dc_augment_strategy("cifar10", "ConvNetBN") == "crop_noise"
    for name in ("cifar10", "fashionmnist", "svhn", "digits"):
        assert dc_augment_strategy(name, "ConvNet") == "none"


def test_dc_crop_pads_with_channel_mean():
    x = torch.randn(3, 2, 5, 5)
    mean = torch.tensor([7.0, -7.0])
    offsets = torch.tensor([[0, 0], [4, 4], [2, 3]])  # pad 2: shifts -2, +2, (0, +1)
    out = crop_with_fill(x, offsets, mean, 2)
    for b, (r, c) in enumerate(offsets.tolist()):
        for i in range(5):
            for j in range(5):
                si, sj = i + r - 2, j + c - 2
                expected = x[b, :, si, sj] if 0 <= si < 5 and 0 <= sj < 5 else mean
                assert torch.equal(out[b, :, i, j], expected)


def test_dc_scale_matches_interpolate_paste_and_centre_crop():
    h = w = 10
    x = torch.randn(1, 2, h, w)
    sizes = [(8, 8), (8, 12), (12, 9), (10, 11), (11, 10), (9, 9), (12, 12), (10, 10)]
    new_h = torch.tensor([s[0] for s in sizes])
    new_w = torch.tensor([s[1] for s in sizes])
    out = resize_nearest_centred(x.expand(len(sizes), -1, -1, -1), new_h, new_w)
    for k, (nh, nw) in enumerate(sizes):
        tmp = F.interpolate(x, [nh, nw])[0]  # the reference's per-image steps
        side = max(nh, nw, h, w)
        canvas = torch.zeros(2, side, side)
        r, c = (side - nh) // 2, (side - nw) // 2
        canvas[:, r : r + nh, c : c + nw] = tmp
        r, c = (side - h) // 2, (side - w) // 2
        assert torch.equal(out[k], canvas[:, r : r + h, c : c + w]), (nh, nw)


def test_dc_rotate_direction_and_fill_match_scipy_bilinear():
    from scipy.ndimage import rotate

    x = torch.randn(2, 1, 9, 9, dtype=torch.float64)
    degrees = torch.tensor([30, -45])
    out = rotate_with_fill(x, degrees, 0.25)
    for n, deg in enumerate(degrees.tolist()):
        ref = rotate(x[n].numpy(), deg, axes=(-2, -1), reshape=False, order=1, cval=0.25)
        assert np.allclose(out[n, 0, 2:7, 2:7].numpy(), ref[0, 2:7, 2:7], atol=1e-6)  # interior
        assert abs(out[n, 0, 0, 0].item() - 0.25) < 1e-9  # a corner rotated in from outside
    assert torch.allclose(rotate_with_fill(x, torch.zeros(2), 0.0), x, atol=1e-6)


def test_dc_augment_end_to_end():
    x = torch.randn(64, 1, 12, 12)
    before = x.clone()
    a = dc_augment(x, "crop_scale_rotate", gen(1))
    assert torch.equal(a, dc_augment(x, "crop_scale_rotate", gen(1)))
    assert torch.equal(x, before) and a.shape == x.shape and not a.requires_grad
    changed = (a != x).flatten(1).any(1)
    assert changed.float().mean() > 0.8
    noisy = dc_augment(x, "noise", gen(2))
    assert 0.0007 < (noisy - x).std() < 0.0013
    assert dc_augment(x, "none", gen()) is x
    with pytest.raises(ValueError, match="allowed: crop, scale, rotate, noise"):
        dc_augment(x, "crop_flip", gen())
    with pytest.raises(ValueError, match=r"DCAugParams.crop must be an integer >= 1 \(> 0\), got 0"):
        DCAugParams(crop=0)
    with pytest.raises(ValueError, match=r"DCAugParams.scale must be a number in \[0, 1\), got 1.0"):
        DCAugParams(scale=1.0)


def test_dc_augment_crop_fills_with_the_batch_channel_means():
    x = torch.randn(32, 2, 8, 8)
    x[:, 0] += 5.0
    x[:, 1] -= 5.0
    mean = x.mean(dim=(0, 2, 3))
    out = dc_augment(x, "crop", gen(4))
    filled = 0
    for c in range(2):
        is_fill = out[:, c] == mean[c]
        from_source = torch.isin(out[:, c], x[:, c])
        assert (is_fill | from_source).all()
        filled += int(is_fill.sum())
    assert filled > 0
