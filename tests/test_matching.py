import math

import pytest
import torch

from lightning_sdc.matching import gradient_distance, layerwise_distance


def cosdist(a, b):
    return 1 - sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) + 1e-6)


def test_ours_is_rowwise_and_ignores_1d():
    # a 2x1x1x2 "conv" weight: rows are output channels, each flattened to 2 numbers
    gs = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    gr = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 2.0]]]])
    expected = cosdist([0, 1], [1, 0]) + cosdist([2, 2], [1, 1])
    assert layerwise_distance(gs, gr).item() == pytest.approx(expected, abs=1e-6)
    bias_s, bias_r = torch.tensor([1.0, -1.0]), torch.tensor([5.0, 3.0])
    assert layerwise_distance(bias_s, bias_r).item() == 0.0
    total = gradient_distance([gs, bias_s], [gr, bias_r], "ours")
    assert total.item() == pytest.approx(expected, abs=1e-6)


def test_ours_reshapes_layernorm_weight_per_channel():
    gs = torch.tensor([[[1.0, 0.0]], [[0.0, 3.0]]])  # C=2, h=1, w=2
    gr = torch.tensor([[[1.0, 1.0]], [[0.0, -1.0]]])
    expected = cosdist([1, 1], [1, 0]) + cosdist([0, -1], [0, 3])
    assert layerwise_distance(gs, gr).item() == pytest.approx(expected, abs=1e-6)


def test_mse_and_cos_use_every_tensor():
    gs = [torch.tensor([[1.0, 2.0]]), torch.tensor([3.0])]
    gr = [torch.tensor([[0.0, 2.0]]), torch.tensor([1.0])]
    assert gradient_distance(gs, gr, "mse").item() == pytest.approx(1 + 0 + 4)
    assert gradient_distance(gs, gr, "cos").item() == pytest.approx(cosdist([0, 2, 1], [1, 2, 3]), abs=1e-6)


def test_bad_metric():
    with pytest.raises(ValueError, match="dis_metric='l1'.*ours, mse, cos"):
        gradient_distance([torch.ones(2, 2)], [torch.ones(2, 2)], "l1")
