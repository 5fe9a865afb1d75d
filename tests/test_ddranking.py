"""DD-Ranking's hard-label metrics: the formulas on known numbers, the cached full-data accuracy, IOR pairing."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_sdc.evaluation import ddranking as ddr


def test_formulas_known_numbers():
    assert ddr.hard_label_recovery(0.9, 0.7) == pytest.approx(0.2)
    assert ddr.improvement_over_random(0.7, 0.5) == pytest.approx(0.2)
    # α = 0.5·0.2 − 0.5·0.2 = 0 -> 100 (1 − e⁻¹)/(e − e⁻¹) = 26.894 %
    assert ddr.label_robust_score(0.2, 0.2) == pytest.approx(26.894142136999516, rel=1e-12)
    # α = 0.5·0.3 − 0.5·0.1 = 0.1 -> 100 (e^0.1 − e⁻¹)/(e − e⁻¹) = 31.369 %
    assert ddr.label_robust_score(0.1, 0.3) == pytest.approx(31.368734174706574, rel=1e-12)
    # the normalisation's ends: α = 1 (w = 1, IOR = 1) -> 100 %, α = −1 (w = 0, HLR = 1) -> 0 %
    assert ddr.label_robust_score(0.5, 1.0, weight=1.0) == pytest.approx(100.0)
    assert ddr.label_robust_score(1.0, 0.7, weight=0.0) == pytest.approx(0.0, abs=1e-12)
    # w weighs IOR against −HLR
    assert ddr.label_robust_score(0.3, 0.1, weight=0.25) == pytest.approx(
        100 * (math.exp(0.25 * 0.1 - 0.75 * 0.3) - math.exp(-1)) / (math.e - math.exp(-1)))


@pytest.mark.parametrize(
    ("call", "match"),
    [(lambda: ddr.hard_label_recovery(90.0, 0.7), r"full_accuracy must be a number in \[0, 1\], got 90\.0"),
     (lambda: ddr.improvement_over_random(0.7, -0.1), r"random_accuracy must be a finite number >= 0, got -0\.1"),
     (lambda: ddr.label_robust_score(0.1, 0.1, weight=1.5), r"weight must be a number in \[0, 1\], got 1\.5"),
     (lambda: ddr.label_robust_score(20.0, 0.1), r"hlr must be a number in \[-1, 1\], got 20\.0"),
     (lambda: ddr.check_metrics(["lrs", "acc"]), "metric 'acc' is not allowed; allowed: hlr, ior, lrs")],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_result_aggregates_per_round():
    r = ddr.LabelRobustResult("ConvNet", syn=[0.7, 0.8], random=[0.5, 0.6], full=0.9)
    assert r.metric("hlr") == pytest.approx((15.0, 5.0))
    assert r.metric("ior") == pytest.approx((20.0, 0.0))
    lrs = [ddr.label_robust_score(0.2, 0.2), ddr.label_robust_score(0.1, 0.2)]
    assert r.metric("lrs")[0] == pytest.approx(sum(lrs) / 2)  # mean of per-round LRS
    md = ddr.metrics_markdown([r], ["LRS", "hlr"])
    assert "| ConvNet | 75.00 | 55.00 | 90.00 |" in md and "LRS (%)" in md and "IOR" not in md


def _tiny():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 8, 8, generator=g)
    y = torch.arange(40) % 4
    x += y.view(-1, 1, 1, 1).float()  # learnable
    return (x[:32], y[:32]), (x[32:], y[32:])


def test_full_data_accuracy_is_cached(tmp_path, monkeypatch):
    train, test = _tiny()
    kw = dict(dataset="tiny", arch_kwargs={"width": 4, "depth": 1}, epochs=2, cache_dir=tmp_path)
    acc = ddr.full_data_accuracy(train, test, **kw)
    files = list(tmp_path.glob("tiny_ConvNet_e2_*.pt"))
    assert len(files) == 1 and 0.0 <= acc <= 1.0
    blob = torch.load(files[0], weights_only=True)
    assert blob["accuracy"] == acc and "state_dict" in blob

    def no_training(*a, **k):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr(ddr, "train_network", no_training)
    assert ddr.full_data_accuracy(train, test, **kw) == acc
    with pytest.raises(AssertionError, match="trained again"):
        ddr.full_data_accuracy(train, test, **{**kw, "epochs": 3})  # another setting: another file
    files[0].write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        ddr.full_data_accuracy(train, test, **kw)


def test_label_robust_metrics_random_set_has_zero_ior(digits, tmp_path):
    """The random subset drawn with the seed the set was drawn with *is* the set: same networks, IOR exactly 0."""
    from lightning_sdc.synthetic import random_coreset

    synset = random_coreset(digits, 1, seed=7)
    res = ddr.label_robust_metrics(
        synset, (digits.train_images, digits.train_labels), (digits.test_images, digits.test_labels),
        dataset="digits", ipc=1, num_models=2, epochs=2, arch_kwargs={"width": 8, "depth": 1}, full_epochs=1,
        random_seed=7, cache_dir=tmp_path)
    assert res.ior == [0.0, 0.0]
    assert res.hlr == pytest.approx([res.full - s for s in res.syn])
    assert res.lrs == pytest.approx([ddr.label_robust_score(h, 0.0) for h in res.hlr])


def test_evaluate_command_metrics(digits, tmp_path, monkeypatch):
    from lightning_sdc.evaluation.command import evaluate_command
    from lightning_sdc.synthetic import random_coreset

    with pytest.raises(ValueError, match="metric 'acc' is not allowed"):  # before the set is read
        evaluate_command(str(tmp_path / "missing.pt"), metrics=["acc"])
    monkeypatch.setenv("LIGHTNING_SDC_CACHE", str(tmp_path / "cache"))
    path = random_coreset(digits, 1, seed=0).save(tmp_path / "set.pt")
    table = evaluate_command(str(path), num_models=1, epochs=1, augment="none", device="cpu",
                             metrics=["hlr", "ior", "lrs"], full_data_epochs=1)
    assert "HLR (pp)" in table and "IOR (pp)" in table and "LRS (%)" in table
    assert len(list((tmp_path / "cache" / "full_data").glob("digits_ConvNet_e1_*.pt"))) == 1
