"""Sample difficulty: per-sample gradient norms (three paths), EL2N, χ, forgetting counts, Figure 3 on
digits."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdc.difficulty import (
    DifficultyScores,
    ForgettingCounter,
    KeptNetworks,
    difficulty_command,
    difficulty_fractions,
    el2n,
    forward_scores,
    gradn,
    misclassification,
    per_sample_grad_norms,
    resolve_method,
    spearman,
    train_classifier,
    train_ensemble,
)
from lightning_sdc.models import build_network

SMALL = {"width": 8, "depth": 2}



def _net(seed: int = 0, norm: str = "instancenorm") -> nn.Module:
    return build_network(
        "ConvNet", 1, 10, (8, 8), generator=torch.Generator().manual_seed(seed), norm=norm, **SMALL
    )


def _batch(n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _reference_norms(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, params=None) -> torch.Tensor:
    """Oracle: one backward() per sample on a fresh graph, gradient norm over ``params`` (default: all)."""
    model.eval()
    params = list(model.parameters()) if params is None else params
    out = []
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        logits = model(x[i : i + 1])
        t = targets[i : i + 1]
        loss = F.cross_entropy(logits, t) if t.dim() == 1 else -(t * F.log_softmax(logits, 1)).sum()
        loss.backward()
        out.append(torch.sqrt(sum((p.grad**2).sum() for p in params if p.grad is not None)))
    model.zero_grad(set_to_none=True)
    return torch.stack(out)


@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm"])
def test_vmap_equals_per_sample_loop(norm):
    net = _net(norm=norm)
    x, y = _batch()
    ref = _reference_norms(net, x, y)
    vm = per_sample_grad_norms(net, x, y, method="vmap", chunk_size=5)  # chunks of 5, 5, 2
    lp = per_sample_grad_norms(net, x, y, method="loop")
    assert torch.allclose(vm, ref, rtol=1e-5, atol=1e-5), (vm - ref).abs().max()
    assert torch.allclose(lp, ref, rtol=1e-5, atol=1e-5), (lp - ref).abs().max()
    assert ref.min() > 0 and ref.std() > 0  # a non-degenerate comparison


def test_soft_targets_and_training_mode_restored():
    net = _net()
    x, _ = _batch(6)
    soft = torch.softmax(torch.randn(6, 10, generator=torch.Generator().manual_seed(3)), dim=1)
    net.train()
    vm = per_sample_grad_norms(net, x, soft, method="vmap")
    assert net.training and all(m.training for m in net.modules())
    assert torch.allclose(vm, _reference_norms(net, x, soft), rtol=1e-5, atol=1e-5)
    onehot = F.one_hot(torch.arange(6) % 10, 10).float()  # probability targets == class targets
    assert torch.allclose(
        per_sample_grad_norms(net, x, onehot, method="loop"),
        per_sample_grad_norms(net, x, torch.arange(6) % 10, method="loop"),
        atol=1e-6,
    )


def test_linear_softmax_closed_form():
    """For logits = W x (no bias): ‖∇_W ℓ‖ = ‖p − y‖·‖x‖ (theory_reference B.1)."""
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(7, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(4, 7, generator=g))
    x, y = torch.randn(9, 7, generator=g), torch.randint(0, 4, (9,), generator=g)
    expected = (torch.softmax(lin(x), 1) - F.one_hot(y, 4)).norm(dim=1) * x.norm(dim=1)
    for method in ("vmap", "loop"):
        assert torch.allclose(per_sample_grad_norms(lin, x, y, method=method), expected.detach(), rtol=1e-5)
    assert torch.allclose(per_sample_grad_norms(lin, x, y, params="last_layer"), expected.detach(), rtol=1e-5)


def test_last_layer_equals_autograd_on_the_classifier():
    """last_layer = ‖p − y‖·√(1 + ‖e‖²) = the true gradient norm w.r.t. the final Linear's (W, b)."""
    net = _net()
    x, y = _batch()
    ref = _reference_norms(net, x, y, params=[net.classifier.weight, net.classifier.bias])
    got = per_sample_grad_norms(net, x, y, params="last_layer", chunk_size=4)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert (got < per_sample_grad_norms(net, x, y)).all()  # a part of the gradient is smaller than all of it


def test_last_layer_refuses_a_head_after_the_linear():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh())
    x, y = _batch(3)
    with pytest.raises(ValueError, match="last nn.Linear"):
        per_sample_grad_norms(model, x, y, params="last_layer")


def test_bad_arguments_are_named():
    net = _net()
    x, y = _batch(3)
    with pytest.raises(ValueError, match="params='some'"):
        per_sample_grad_norms(net, x, y, params="some")
    with pytest.raises(ValueError, match="method='jit'"):
        per_sample_grad_norms(net, x, y, method="jit")
    with pytest.raises(ValueError, match="targets"):
        per_sample_grad_norms(net, x, y[:2])
    with pytest.raises(ValueError, match="chunk_size"):
        per_sample_grad_norms(net, x, y, chunk_size=0)
    assert resolve_method("auto", "cpu") == "loop" and resolve_method("auto", "cuda") == "vmap"


class _FixedLogits(nn.Module):
    """A 'model' that returns the given logits row per sample index (input = index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()]


def test_el2n_misclassification_and_chi_on_hand_made_logits():
    idx = torch.arange(3).float().unsqueeze(1)
    y = torch.tensor([0, 1, 2])
    big = 50.0
    # model A: right, right, wrong; model B: right, wrong, wrong; model C: right, right, wrong
    a = torch.tensor([[big, 0, 0], [0, big, 0], [big, 0, 0]])
    b = torch.tensor([[big, 0, 0], [big, 0, 0], [0, big, 0]])
    models = [_FixedLogits(a), _FixedLogits(b), _FixedLogits(a)]
    chi = misclassification(models, idx, y).mean(0)
    assert torch.allclose(chi, torch.tensor([0.0, 1 / 3, 1.0]))
    assert difficulty_fractions(chi) == pytest.approx(
        {"trivial": 1 / 3, "impossible": 1 / 3, "in_between": 1 / 3}
    )
    e = el2n(models, idx, y)
    assert e.shape == (3, 3)
    assert torch.allclose(e[0], torch.tensor([0.0, 0.0, 2**0.5]), atol=1e-6)  # confident: ‖p − y‖ ∈ {0, √2}
    uniform = [_FixedLogits(torch.zeros(3, 3))]
    assert torch.allclose(el2n(uniform, idx, y)[0], torch.full((3,), (2 / 3) ** 0.5))  # √((2/3)² + 2·(1/3)²)
    loss = forward_scores(uniform, idx, y)["loss"][0]
    assert torch.allclose(loss, torch.full((3,), torch.log(torch.tensor(3.0)).item()))


def test_gradn_is_the_ensemble_mean_of_per_model_norms():
    models = [_net(0), _net(1), _net(2)]
    x, y = _batch(5)
    g = gradn(models, x, y, method="vmap")
    assert g.shape == (3, 5)
    assert torch.allclose(g[1], per_sample_grad_norms(models[1], x, y, method="loop"), rtol=1e-5)


def test_spearman_matches_scipy_and_handles_constant():
    a = torch.tensor([1.0, 2, 3, 4, 5])
    assert spearman(a, a * 2)[0] == pytest.approx(1.0)
    assert spearman(a, -a)[0] == pytest.approx(-1.0)
    rho, p = spearman(a, torch.ones(5))
    assert rho != rho and p != p  # nan: no rank correlation with a constant


def test_forgetting_counter_counts_a_known_sequence():
    """Presentations (rows 0..4) over 4 epochs; forgetting = 1→0 transitions between consecutive
    presentations."""
    seq = torch.tensor(
        [
            [1, 0, 1, 0],  # learned, forgotten twice -> 2
            [0, 0, 0, 0],  # never learned -> max (presentations) / zero / inf
            [1, 1, 1, 1],  # never forgotten -> 0
            [0, 1, 1, 0],  # one event -> 1
            [1, 0, 0, 1],  # one event -> 1
        ],
        dtype=torch.bool,
    )
    counter = ForgettingCounter(5)
    for epoch in range(4):
        order = (
            torch.tensor([3, 0, 4, 1, 2]) if epoch % 2 else torch.arange(5)
        )  # order within an epoch is irrelevant
        counter.update(order[:3], seq[order[:3], epoch])
        counter.update(order[3:], seq[order[3:], epoch])
    assert counter.counts("max").tolist() == [2, 4, 0, 1, 1]
    assert counter.counts("zero").tolist() == [2, 0, 0, 1, 1]
    inf = counter.counts("inf")
    assert inf[1] == float("inf") and inf[[0, 2, 3, 4]].tolist() == [2, 0, 1, 1]
    with pytest.raises(ValueError, match="distinct"):
        counter.update(torch.tensor([0, 0]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="never_learned='sometimes'"):
        counter.counts("sometimes")


def test_train_classifier_hook_sees_every_row_once_per_epoch(digits):
    x, y = digits.train_images[:70], digits.train_labels[:70]
    counter = ForgettingCounter(70)
    seen = []
    hook = counter.hook()

    def record(rows, logits, labels):
        seen.append(rows.clone())
        assert logits.shape == (rows.numel(), 10) and not logits.requires_grad
        hook(rows, logits, labels)

    train_classifier(
        _net(), x, y, epochs=3, batch_size=32, on_batch=record, generator=torch.Generator().manual_seed(0)
    )
    assert len(seen) == 9 and torch.equal(counter.presentations, torch.full((70,), 3))
    assert torch.equal(torch.cat(seen[:3]).sort().values, torch.arange(70))


@pytest.fixture(scope="module")
def digits_scores(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("difficulty")
    summary = difficulty_command(
        "digits",
        models=5,
        epochs=2,
        out=str(out),
        arch_kwargs={"width": 16, "depth": 2},
        lr=0.01,
        batch_size=128,
        method="vmap",
        seed=0,
    )
    return out, summary


def test_figure3_claim_chi_and_gradn_correlate_on_digits(digits_scores):
    """Figure 3: over ≥ 5 trained networks χ and GraDN have a clearly positive Spearman correlation.

    Threshold 0.3: random scores on the same χ (359 test samples) give |ρ| < 0.15 (checked below, 20 draws).
    """
    out, summary = digits_scores
    scores = DifficultyScores.load(out / "scores.pt")
    assert scores.num_models == 5 and scores.labels.numel() == summary["samples"] > 300
    rho, p = spearman(scores.chi, scores.gradn.mean(0))
    assert rho > 0.3 and p < 1e-6, rho
    assert summary["spearman"]["chi~gradn"]["rho"] == pytest.approx(rho)
    assert summary["spearman"]["gradn~loss"]["rho"] > 0.3
    g = torch.Generator().manual_seed(0)
    chance = [abs(spearman(scores.chi, torch.rand(scores.chi.numel(), generator=g))[0]) for _ in range(20)]
    assert max(chance) < 0.15 < rho
    fr = summary["fractions"]
    assert fr["in_between"] > 0.2  # χ is not degenerate: the ensemble disagrees on many samples


def test_difficulty_command_writes_its_files(digits_scores):
    out, summary = digits_scores
    for name in ("scores.pt", "scores.csv", "figure3.png", "summary.md", "summary.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["meta"]["models"] == 5
    header = (out / "scores.csv").read_text().splitlines()[0]
    assert header == "index,label,chi,gradn,gradn_std,el2n,loss"
    with pytest.raises(ValueError, match="split='val'"):
        difficulty_command("digits", split="val", out=str(out))


def _same_network(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_kept_networks_are_reused_only_with_their_own_settings(tmp_path, digits):
    """A kept network is loaded bit for bit instead of trained; another seed or dataset size has its own file; a
    torn file is named in a warning and trained again."""
    kw = {"epochs": 1, "arch_kwargs": SMALL, "batch_size": 128}
    first = KeptNetworks(tmp_path)
    (a,) = train_ensemble(digits, 1, kept=first, **kw)
    (path,) = tmp_path.glob("ensemble_000_*.pt")
    assert (first.reused, first.trained) == (0, 1)
    assert torch.load(path, weights_only=True)["settings"]["arch_kwargs"] == SMALL
    again = KeptNetworks(tmp_path)
    (b,) = train_ensemble(digits, 1, kept=again, **kw)
    assert (again.reused, again.trained) == (1, 0) and _same_network(a, b) and not b.training
    other = KeptNetworks(tmp_path)
    train_ensemble(digits, 1, kept=other, seed=1, **kw)
    train_ensemble(digits, 1, kept=other, train_fraction=0.5, **kw)
    assert other.reused == 0 and len(list(tmp_path.glob("ensemble_000_*.pt"))) == 3
    path.write_bytes(path.read_bytes()[:100])
    torn = KeptNetworks(tmp_path)
    with pytest.warns(UserWarning, match=re.escape(f"kept network {path} is not reused")):
        (c,) = train_ensemble(digits, 1, kept=torn, **kw)
    assert (torn.reused, torn.trained) == (0, 1) and _same_network(a, c)
    assert torch.load(path, weights_only=True)["settings"]["key"][-1] == 0  # written whole again
