"""Gradient distances of DC/DCC ``utils.py:match_loss`` against hand-computed values."""

import math

import pytest
import torch

from lightning_sdc.matching import gradient_distance


def cosdist(a, b):
    """1 − ⟨a, b⟩ / (‖a‖·‖b‖ + 1e-6), by hand."""
    dot = sum(x * y for x, y in zip(a, b))
    return 1 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) + 1e-6)


def test_ours_conv_weight_is_rowwise_per_output_channel():
    # a 2×2×1×2 conv weight: rows are output channels, each flattened to in·kh·kw = 4 numbers
    gs = torch.tensor([[[[1.0, 0.0]], [[2.0, 0.0]]], [[[1.0, 1.0]], [[0.0, 1.0]]]])
    gr = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]], [[[2.0, 2.0]], [[0.0, -1.0]]]])
    expected = cosdist([0, 1, 1, 0], [1, 0, 2, 0]) + cosdist([2, 2, 0, -1], [1, 1, 0, 1])
    assert gradient_distance([gs], [gr]).item() == pytest.approx(expected, abs=1e-6)
    # one cosine per layer would differ: the row-wise sum is what distance_wb computes
    whole = cosdist(gr.flatten().tolist(), gs.flatten().tolist())
    assert abs(expected - whole) > 0.1


def test_ours_linear_weight_rows_and_epsilon_on_the_norm_product():
    gs = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # second row all zero: cos = 0/(0 + 1e-6) = 0 → distance 1
    gr = torch.tensor([[6.0, 8.0], [1.0, 0.0]])
    assert gradient_distance([gs], [gr]).item() == pytest.approx((1 - 50 / (50 + 1e-6)) + 1.0, abs=1e-7)
    tiny = torch.tensor([[1e-4, 0.0]])  # ‖a‖·‖b‖ = 1e-8 ≪ eps: cos ≈ 1e-8 / (1e-8 + 1e-6)
    assert gradient_distance([tiny], [tiny]).item() == pytest.approx(1 - 1e-8 / (1e-8 + 1e-6), rel=1e-4)


def test_ours_ignores_every_1d_parameter():
    bias_s, bias_r = torch.tensor([1.0, -1.0]), torch.tensor([5.0, 3.0])
    assert gradient_distance([bias_s], [bias_r]).item() == 0.0
    w_s, w_r = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    total = gradient_distance([w_s, bias_s, torch.ones(3)], [w_r, bias_r, -torch.ones(3)], "ours")
    assert total.item() == pytest.approx(cosdist([0, 1], [1, 0]), abs=1e-6)


def test_ours_reshapes_layernorm_weight_per_channel():
    gs = torch.tensor([[[1.0, 0.0], [2.0, 0.0]], [[0.0, 3.0], [1.0, 1.0]]])  # C=2, h=2, w=2
    gr = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, -1.0], [1.0, 0.0]]])
    expected = cosdist([1, 1, 0, 0], [1, 0, 2, 0]) + cosdist([0, -1, 1, 0], [0, 3, 1, 1])
    assert gradient_distance([gs], [gr]).item() == pytest.approx(expected, abs=1e-6)


def test_mse_and_cos_use_every_tensor():
    gs = [torch.tensor([[1.0, 2.0]]), torch.tensor([3.0])]
    gr = [torch.tensor([[0.0, 2.0]]), torch.tensor([1.0])]
    assert gradient_distance(gs, gr, "mse").item() == pytest.approx(1 + 0 + 4)
    assert gradient_distance(gs, gr, "cos").item() == pytest.approx(cosdist([0, 2, 1], [1, 2, 3]), abs=1e-6)


def test_low_precision_gradients_are_compared_in_fp32():
    gs = [torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16)]
    gr = [torch.tensor([[2.0, 1.0]], dtype=torch.bfloat16)]
    assert gradient_distance(gs, gr).dtype == torch.float32


def test_bad_input():
    with pytest.raises(ValueError, match="dis_metric='l1'.*ours, mse, cos"):
        gradient_distance([torch.ones(2, 2)], [torch.ones(2, 2)], "l1")
    with pytest.raises(ValueError, match="differ in length"):
        gradient_distance([torch.ones(2, 2)], [], "ours")
    with pytest.raises(ValueError, match="shape"):
        gradient_distance([torch.ones(2, 2)], [torch.ones(2, 3)], "ours")
