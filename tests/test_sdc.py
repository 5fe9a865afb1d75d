import pytest
import torch

from lightning_sdc.matching import sdc_term
from lightning_sdc.methods import DC


def test_sdc_term_is_the_global_norm():
    g = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    assert sdc_term(g, 1).item() == pytest.approx(5.0)
    assert sdc_term(g, 2).item() == pytest.approx(25.0)
    assert sdc_term(torch.tensor([3.0, 4.0])).item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match=r"power=3 is not allowed; allowed: 1, 2"):
        sdc_term(g, 3)


def test_sdc_term_gradient_matches_finite_differences():
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    for power in (1, 2):
        loss = (x @ w).square().sum()
        (gw,) = torch.autograd.grad(loss, [w], create_graph=True)
        term = sdc_term([gw], power).double()
        (gx,) = torch.autograd.grad(term, [x])

        def f(xv, power=power):
            return sdc_term([2 * torch.outer(xv, xv @ w.detach())], power).double()

        eps = 1e-6
        fd = torch.stack([(f(x.detach() + eps * e) - f(x.detach() - eps * e)) / (2 * eps) for e in torch.eye(6, dtype=torch.float64)])
        torch.testing.assert_close(gx, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lam,power,msg", [
    (-0.1, 1, "sdc_lambda must be a finite number >= 0, got -0.1"), (float("nan"), 1, "sdc_lambda"),
    (float("inf"), 1, "sdc_lambda"), ("a", 1, "sdc_lambda"), (0.1, 3, "sdc_power=3 is not allowed for DC; allowed: 1, 2"),
    (0.1, 1.0, "sdc_power=1.0 is not allowed")])
def test_bad_sdc_args(lam, power, msg):
    with pytest.raises(ValueError, match=msg):
        DC("digits", 1, sdc_lambda=lam, sdc_power=power)
