"""Coreset baselines: Herding's greedy mean matching, Forgetting's selection, sets built from real rows, the
command."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_sdc.coresets import (
    coreset_command,
    coreset_from_rows,
    forgetting_coreset,
    forgetting_per_class,
    herding_coreset,
    herding_per_class,
    herding_select,
    random_coreset,
)
from lightning_sdc.synthetic import SyntheticSet

SMALL = {"width": 16, "depth": 2}



def test_herding_picks_the_point_at_the_class_mean_first():
    # points symmetric around (1, 1), which is itself one of the points (row 3)
    feats = torch.tensor([[0.0, 0.0], [2.0, 2.0], [0.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
    assert feats.mean(0).tolist() == feats[3].tolist()
    order = herding_select(feats, 5)
    assert order[0] == 3
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4]  # ipc = class size selects the whole class, no repeats
    # DeepCore's argmax variant starts from the farthest point instead (ties -> lowest index)
    assert herding_select(feats, 1, rule="deepcore_argmax").item() == 0


def test_herding_is_greedy_optimal_at_every_step():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(40, 6, generator=g, dtype=torch.float64)
    mu = feats.mean(0)
    order = herding_select(feats, 10).tolist()
    for k in range(1, 11):
        chosen = order[:k]
        prefix = feats[chosen[:-1]].sum(0)
        best = torch.linalg.vector_norm((prefix + feats[chosen[-1]]) / k - mu)
        for j in set(range(40)) - set(chosen[:-1]):  # every single swap of the last pick is no better
            assert best <= torch.linalg.vector_norm((prefix + feats[j]) / k - mu) + 1e-12
    assert herding_select(feats, 10).tolist() == order  # deterministic


def test_herding_per_class_is_class_major_rows():
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0, 1, 2])
    feats = torch.randn(9, 3, generator=g)
    rows = herding_per_class(feats, labels, 2, 3)
    assert labels[rows].tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="ipc=4"):
        herding_per_class(feats, labels, 4, 3)
    with pytest.raises(ValueError, match="rule='median'"):
        herding_select(feats, 1, rule="median")


def test_forgetting_keeps_the_most_forgotten_with_seeded_ties():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    counts = torch.tensor([1.0, 5.0, 1.0, 3.0, 0.0, 0.0, 2.0, 0.0])
    rows = forgetting_per_class(counts, labels, 2, 2, seed=0)
    assert rows[:2].tolist() == [1, 3]  # class 0: counts 5 and 3
    assert rows[2].item() == 6 and rows[3].item() in (4, 5, 7)  # class 1: 2, then one of the tied zeros
    tie_picks = {forgetting_per_class(counts, labels, 2, 2, seed=s)[3].item() for s in range(12)}
    assert len(tie_picks) > 1  # ties are broken at random, not always by index
    assert torch.equal(
        forgetting_per_class(counts, labels, 2, 2, seed=3), forgetting_per_class(counts, labels, 2, 2, seed=3)
    )
    least = forgetting_per_class(counts, labels, 1, 2, keep="least", seed=0)
    assert least[0].item() in (0, 2) and least[1].item() in (4, 5, 7)
    with pytest.raises(ValueError, match="keep='all'"):
        forgetting_per_class(counts, labels, 1, 2, keep="all")


def test_coreset_from_rows_holds_the_real_images(digits):
    rows = torch.cat([(digits.train_labels == c).nonzero().flatten()[:2] for c in range(10)])
    s = coreset_from_rows(digits, rows, 2)
    assert torch.equal(s.images.detach(), digits.train_images[rows])
    assert s.labels.tolist() == [c for c in range(10) for _ in range(2)] and s.dataset == "digits"
    with pytest.raises(ValueError, match="class-major"):
        coreset_from_rows(digits, rows.flip(0), 2)


def test_herding_and_forgetting_coresets_on_digits(digits):
    h = herding_coreset(digits, 2, arch_kwargs=SMALL, epochs=2, batch_size=128)
    counts = torch.zeros(digits.train_labels.numel())
    most = torch.cat([(digits.train_labels == c).nonzero().flatten()[-1:] for c in range(10)])
    counts[most] = 7.0  # one clearly most-forgotten example per class
    f = forgetting_coreset(digits, 1, counts=counts)
    assert torch.equal(f.images.detach(), digits.train_images[most])
    for s in (h, f):
        assert isinstance(s, SyntheticSet) and s.is_finite()
        assert s.hard_labels.tolist() == torch.arange(10).repeat_interleave(s.ipc).tolist()
        # every selected image is a real training image of its class
        for img, c in zip(s.images.detach(), s.hard_labels):
            match = (digits.train_images == img).flatten(1).all(1).nonzero().flatten()
            assert match.numel() >= 1 and int(digits.train_labels[match[0]]) == int(c)
    with pytest.raises(ValueError, match="ipc=100000"):
        herding_coreset(digits, 100000)


def test_coreset_command_writes_and_evaluates(tmp_path, digits):
    s = coreset_command(
        "forgetting",
        "digits",
        1,
        str(tmp_path),
        arch_kwargs=SMALL,
        epochs=2,
        batch_size=128,
        eval_arch_kwargs=SMALL,
        eval_num_models=2,
        eval_epochs=20,
        eval_augment="none",
        device="cpu",
    )
    loaded = SyntheticSet.load(s["path"])
    assert loaded.ipc == 1 and loaded.dataset == "digits"
    assert len(s["accuracies"]) == 2 and 0.0 <= s["accuracy_mean"] <= 1.0
    assert (tmp_path / "digits_forgetting_ipc1_eval.md").exists()
    assert json.loads((tmp_path / "digits_forgetting_ipc1.json").read_text())["ipc"] == 1
    r = coreset_command("random", "digits", 1, str(tmp_path), evaluate=False, seed=4)
    assert torch.equal(SyntheticSet.load(r["path"]).images, random_coreset(digits, 1, seed=4).images)
    with pytest.raises(ValueError, match="method='kcenter'"):
        coreset_command("kcenter", "digits", 1, str(tmp_path))


def test_kept_selector_networks_give_the_same_counts_and_features(tmp_path, digits):
    """Forgetting's kept runs restore their counts and Herding's kept feature network its weights, bit for bit."""
    from lightning_sdc.difficulty import KeptNetworks, forgetting_counts

    kw = {"epochs": 2, "arch_kwargs": SMALL, "batch_size": 128}
    fresh = forgetting_counts(digits, runs=2, kept=KeptNetworks(tmp_path), **kw)
    h = herding_coreset(digits, 2, kept=KeptNetworks(tmp_path), **kw)
    again = KeptNetworks(tmp_path)
    assert torch.equal(forgetting_counts(digits, runs=2, kept=again, **kw), fresh)
    assert torch.equal(herding_coreset(digits, 2, kept=again, **kw).images, h.images)
    assert (again.reused, again.trained) == (3, 0)
    assert sorted(p.name.split("_")[0] for p in tmp_path.glob("*.pt")) == ["forgetting", "forgetting", "herding"]
