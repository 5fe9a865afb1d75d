"""``lightning-sdc compare``: paired statistics (against scipy and hand numbers), pairing of the evaluation
networks, the report, and a tiny resumable end-to-end comparison on digits."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats as st

from lightning_sdc.cli import UsageError
from lightning_sdc.compare import runner
from lightning_sdc.compare.command import compare_command, plan
from lightning_sdc.compare.report import write_summary
from lightning_sdc.compare.runner import RunSpec, parse_vary
from lightning_sdc.compare.stats import (
    bootstrap_interval,
    paired_differences,
    paired_t_test,
    summarise_pairs,
    t_interval,
)

A = [80.1, 79.5, 81.2, 80.0, 80.7]
B = [80.6, 79.4, 81.9, 80.5, 80.9]


# ----------------------------------------------------------------------------------------------- statistics
def test_t_test_and_interval_hand_numbers():
    """d = 1..5: mean 3, s = √2.5, t = 3/(√2.5/√5) = 4.2426, t_0.975,4 = 2.7764 -> [1.0368, 4.9632], p = 0.01324."""
    t, p = paired_t_test([0.0] * 5, [1.0, 2, 3, 4, 5])
    assert t == pytest.approx(3 / math.sqrt(0.5), rel=1e-12)
    assert p == pytest.approx(0.01323559956368269, rel=1e-9)
    lo, hi = t_interval([1.0, 2, 3, 4, 5], 0.95)
    assert (lo, hi) == pytest.approx((1.0367568385224428, 4.963243161477557), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stats_match_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(80, 1, size=7)
    b = a + rng.normal(0.3, 0.5, size=7)
    ref = st.ttest_rel(b, a)
    t, p = paired_t_test(a, b)
    assert t == pytest.approx(ref.statistic, rel=1e-10) and p == pytest.approx(ref.pvalue, rel=1e-10)
    for conf in (0.9, 0.95, 0.99):
        ci = ref.confidence_interval(conf)
        assert t_interval(b - a, conf) == pytest.approx((ci.low, ci.high), rel=1e-10)
    # the percentile bootstrap agrees with scipy's up to resampling noise
    d = b - a
    sb = st.bootstrap((d,), np.mean, method="percentile", n_resamples=20000, random_state=seed).confidence_interval
    lo, hi = bootstrap_interval(d, 0.95, 20000, seed=seed)
    tol = 0.05 * d.std(ddof=1)
    assert lo == pytest.approx(sb.low, abs=tol) and hi == pytest.approx(sb.high, abs=tol)


def test_bootstrap_contains_the_mean_and_is_reproducible():
    d = paired_differences(A, B)
    lo, hi = bootstrap_interval(d, 0.95, 5000, seed=3)
    tlo, thi = t_interval(d, 0.95)
    assert lo <= d.mean() <= hi and lo <= (tlo + thi) / 2 <= hi
    assert bootstrap_interval(d, 0.95, 5000, seed=3) == (lo, hi)
    assert bootstrap_interval(d, 0.5, 5000, seed=3)[1] - bootstrap_interval(d, 0.5, 5000, seed=3)[0] < hi - lo


def test_summary_fields():
    s = summarise_pairs(A, B, 0.95, 2000)
    assert s.n == 5 and s.wins == 4
    assert s.mean_diff == pytest.approx(np.mean(B) - np.mean(A))
    assert s.sd_diff == pytest.approx(np.std(np.subtract(B, A), ddof=1))
    assert s.p == pytest.approx(0.06188524934890255, rel=1e-9) and not s.significant
    assert summarise_pairs(A, [b + 1 for b in B]).significant


def test_degenerate_differences():
    assert paired_t_test(A, A) == (0.0, 1.0)  # scipy: NaN
    t, p = paired_t_test(A, [a + 0.5 for a in A])
    assert t == math.inf and p == 0.0
    s = summarise_pairs(A, A)
    assert s.mean_diff == 0 and s.t_ci == (0.0, 0.0) and s.bootstrap_ci == (0.0, 0.0)


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [([1.0], [2.0], ">= 2 pairs"), ([1.0, 2], [1.0], "one length"), ([1.0, float("nan")], [1.0, 2], "finite")],
)
def test_bad_samples(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_differences(a, b)


def test_bad_confidence():
    with pytest.raises(ValueError, match=r"confidence must be a number in \(0, 1\), got 1\.5"):
        t_interval([1.0, 2.0], 1.5)


# ----------------------------------------------------------------------------------------------- options
def test_parse_vary():
    assert parse_vary("model.init_args.sdc_lambda=0,0.01") == ("model.init_args.sdc_lambda", ["0", "0.01"])
    assert parse_vary("--trainer.max_steps=5, 10") == ("trainer.max_steps", ["5", "10"])
    for bad, match in [("sdc_lambda", "KEY=V1,V2"), ("a..b=1,2", "dotted"), ("k=1", "at least 2"),
                       ("k=1,,2", "empty"), ("k=1,1", "repeated")]:
        with pytest.raises(ValueError, match=match):
            parse_vary(bad)


def test_plan_is_seed_major_and_validated():
    specs = plan("configs/demo/digits_dsa_ipc1.yaml", "model.init_args.sdc_lambda=0,0.01", seeds=3, first_seed=4,
                 overrides=["trainer.max_steps=2"])
    assert [(s.seed, s.value) for s in specs] == [(4, "0"), (4, "0.01"), (5, "0"), (5, "0.01"), (6, "0"), (6, "0.01")]
    assert specs[0].overrides == ("--trainer.max_steps=2",)
    assert len({s.slug for s in specs}) == 6 and specs[0].fingerprint() == plan(
        "configs/demo/digits_dsa_ipc1.yaml", "model.init_args.sdc_lambda=0,0.01", seeds=3, first_seed=4,
        overrides=["trainer.max_steps=2"])[0].fingerprint()
    cell, vary = "configs/demo/digits_dsa_ipc1.yaml", "model.init_args.sdc_lambda=0,0.01"
    for kwargs, match in [({"seeds": 1}, "seeds must be an integer >= 2, got 1"),
                          ({"num_models": 0}, r"num_models must be an integer >= 1 \(> 0\), got 0"),
                          ({"overrides": ["model.init_args.sdc_lambda=1"]}, "varied key"),
                          ({"overrides": ["max_steps"]}, "KEY=VALUE"), ({"gradn_networks": -1}, "gradn_networks must be an integer >= 0, got -1")]:
        with pytest.raises(ValueError, match=match):
            plan(cell, vary, **kwargs)
    with pytest.raises(UsageError, match="nope.yaml: no such file and no packaged config"):
        plan("configs/demo/nope.yaml", vary)


def test_stratified_test_subset():
    labels = torch.tensor([2, 2, 0, 1, 0, 1, 2])
    assert runner.stratified_head(labels, 3).tolist() == [0, 2, 3]
    assert runner.stratified_head(labels, 7).tolist() == [0, 1, 2, 3, 4, 5]  # 7 // 3 = 2 per class
    with pytest.raises(ValueError, match="at least one image per class"):
        runner.stratified_head(labels, 2)
    with pytest.raises(ValueError, match="class 0 has fewer than 3"):
        runner.stratified_head(labels, 9)
    with pytest.raises(ValueError, match=r"test_size must be an integer >= 1 \(> 0\), got 0"):
        plan("configs/demo/digits_dsa_ipc1.yaml", "model.init_args.sdc_lambda=0,0.01", test_size=0)


def test_fingerprint_separates_settings():
    base = RunSpec(("a.yaml",), "k", "1", 0)
    others = [RunSpec(("b.yaml",), "k", "1", 0), RunSpec(("a.yaml",), "k", "2", 0), RunSpec(("a.yaml",), "k", "1", 1),
              RunSpec(("a.yaml",), "k", "1", 0, ("--x=1",)), RunSpec(("a.yaml",), "k", "1", 0, eval_epochs=3),
              RunSpec(("a.yaml",), "k", "1", 0, eval_test_size=100)]
    assert len({base.fingerprint(), *(o.fingerprint() for o in others)}) == 7


# ----------------------------------------------------------------------------------------------- pairing
def test_one_seed_gives_the_same_evaluation_networks(digits, monkeypatch):
    """Two different sets evaluated with one seed: network i starts from the same weights and the same generator
    state (batch order and augmentation draws); another seed changes them."""
    import lightning_sdc.models as models
    from lightning_sdc.evaluation import evaluate_synset, protocol
    from lightning_sdc.synthetic import random_coreset

    inits, states = [], []
    build, train = models.build_network, protocol.train_network

    def record_build(*args, **kwargs):
        net = build(*args, **kwargs)
        inits.append(torch.cat([p.detach().flatten().clone() for p in net.parameters()]))
        return net

    def record_train(net, images, targets, **kwargs):
        states.append(kwargs["generator"].get_state().clone())
        return train(net, images, targets, **kwargs)

    monkeypatch.setattr(models, "build_network", record_build)
    monkeypatch.setattr(protocol, "train_network", record_train)
    kw = dict(num_models=2, epochs=1, augment="none", arch_kwargs={"width": 8, "depth": 1})
    evaluate_synset(random_coreset(digits, 1, seed=0), digits, seed=5, **kw)
    evaluate_synset(random_coreset(digits, 1, seed=1), digits, seed=5, **kw)
    evaluate_synset(random_coreset(digits, 1, seed=1), digits, seed=6, **kw)
    assert torch.equal(inits[0], inits[2]) and torch.equal(inits[1], inits[3])
    assert torch.equal(states[0], states[2]) and torch.equal(states[1], states[3])
    assert not torch.equal(inits[0], inits[1]) and not torch.equal(inits[0], inits[4])
    assert not torch.equal(states[0], states[4])


# ----------------------------------------------------------------------------------------------- end to end
def test_compare_end_to_end_digits(tmp_path, monkeypatch, capsys):
    """2 seeds × 3 values on digits (2 updates, 1 network × 2 epochs): the two spellings of λ = 0 give exactly
    the same accuracies (difference 0), reports are written, a rerun computes nothing, a deleted run is redone."""
    out = tmp_path / "cmp"
    args = dict(cell="configs/demo/digits_dsa_ipc1.yaml", vary="model.init_args.sdc_lambda=0,0.0,0.5", seeds=2,
                overrides=["trainer.max_steps=2"], num_models=1, epochs=2, gradn_networks=1, test_size=200, out=str(out),
                name="t", bootstrap=200, ddranking=True, full_data_epochs=1)
    md = compare_command(**args)
    rec = json.loads((out / "t.json").read_text())
    assert rec["accuracy"]["0"] == rec["accuracy"]["0.0"]
    assert rec["gradn"]["0"] == rec["gradn"]["0.0"]
    assert rec["paired"]["0.0"]["mean_diff"] == 0.0 and rec["paired"]["0.0"]["p"] == 1.0
    assert rec["accuracy"]["0.5"] != rec["accuracy"]["0"] or rec["gradn"]["0.5"] != rec["gradn"]["0"]
    assert "| 0.0 |" in md and "+0.00" in md
    # DD-Ranking: one random subset per seed on the seed's networks, one cached full-data network
    assert "DD-Ranking hard-label metrics" in md and rec["ddranking"]["0"] == rec["ddranking"]["0.0"]
    assert len(list((out / "runs").glob("random_seed*.json"))) == 2
    assert len(list((out / "full_data").glob("digits_ConvNet_e1_*.pt"))) == 1
    printed = capsys.readouterr().out.splitlines()
    for suffix in (".md", ".csv", "_runs.csv", ".png", ".json", "_sets.png"):
        assert (out / f"t{suffix}").stat().st_size > 0 and f"wrote {out / f't{suffix}'}" in printed
    # the final sets side by side: 2 seeds × 3 values of one image per class, one row per class (8×8 digits
    # upscaled 8× to 64 px, 2 px apart) under a two-line title of seed and value
    with Image.open(out / "t_sets.png") as sets:
        width, height = sets.size
    assert 20 <= height - (10 * 66 + 2) <= 80 and width >= 6 * 66
    assert len((out / "t_runs.csv").read_text().splitlines()) == 1 + 6
    runs = sorted((out / "runs").glob("sdc_lambda=*.json"))
    assert len(runs) == 6 and len(list((out / "runs").glob("*.pt"))) == 6
    one = json.loads(runs[0].read_text())
    assert one["steps"] == 2 and len(one["accuracies"]) == 1 and one["eval"]["epochs"] == 2
    assert one["eval"]["test_images"] == 200  # 20 of each of the 10 digits

    calls = []
    real_execute = runner.execute
    monkeypatch.setattr(runner, "execute", lambda spec, d: calls.append(spec) or real_execute(spec, d))
    assert compare_command(**args) == md and calls == []
    runs[0].unlink()
    compare_command(**args)
    assert len(calls) == 1 and runs[0].exists()
    whole = json.loads(runs[1].read_text())
    runs[1].write_text(runs[1].read_text()[:40])  # a run file cut short: computed again, to the same numbers
    baseline = sorted((out / "runs").glob("random_seed*.json"))[0]
    random_accs = json.loads(baseline.read_text())
    baseline.write_text(baseline.read_text()[:30])  # the same for the Random baseline's cache
    assert compare_command(**args) == md and len(calls) == 2
    assert json.loads(runs[1].read_text())["accuracies"] == whole["accuracies"]
    assert json.loads(baseline.read_text()) == random_accs

    summary = write_summary([out / "t.json"], tmp_path / "all.md", "# Title\n")
    text = summary.read_text()
    assert text.startswith("# Title") and "| t | sdc_lambda 0 → 0.0 | 2 | 1 | 2 |" in text
    assert len((tmp_path / "all.csv").read_text().splitlines()) == 1 + 2


def test_cli_subcommand_is_registered():
    from lightning_sdc import cli

    assert "compare" in str(cli.SUBCOMMANDS)


def _compare_args(out):
    return ["--cell", "demo/digits_dc_ipc1", "--vary", "model.init_args.sdc_lambda=0,0.5", "--seeds", "2",
            "--overrides", "[trainer.max_steps=24, trainer.val_check_interval=4]", "--num_models", "2",
            "--epochs", "2", "--gradn_networks", "0", "--test_size", "100", "--bootstrap", "100", "--out", str(out)]


def test_run_resumes_from_its_checkpoint_after_a_signal(tmp_path, monkeypatch):
    """A SIGTERM at update 5 of 12 stops the run with a ``last.ckpt`` (exit status 143); executing the run again
    resumes from it and gives the set, the evaluation points and the accuracies of an uninterrupted run, with the
    two pieces recorded."""
    spec = RunSpec(("configs/trainer/cpu.yaml", "configs/demo/digits_dc_ipc1.yaml"), "model.init_args.sdc_lambda",
                   "0.5", 0, ("--trainer.max_steps=12", "--trainer.val_check_interval=4",
                              "--model.init_args.batch_real=16"), 2, 2, 0, 100)
    whole = runner.execute(spec, tmp_path / "whole")
    write = runner.SetSnapshots.on_train_batch_end

    def stop_at_5(self, trainer, pl_module, *args):
        write(self, trainer, pl_module, *args)
        if trainer.global_step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runner.SetSnapshots, "on_train_batch_end", stop_at_5)
    with pytest.raises(SystemExit) as stop:
        runner.execute(spec, tmp_path / "stopped")
    assert stop.value.code == 143
    assert torch.load(tmp_path / "stopped" / spec.slug / "checkpoints" / "last.ckpt", weights_only=False)[
        "global_step"] == 5
    monkeypatch.setattr(runner.SetSnapshots, "on_train_batch_end", write)
    again = runner.execute(spec, tmp_path / "stopped")
    assert again.accuracies == whole.accuracies and again.points == whole.points
    assert sorted(whole.points, key=int) == ["4", "8"] and len(whole.points["4"]) == 2
    assert [(s["from_step"], s["to_step"]) for s in again.segments] == [(0, 5), (5, 12)]
    assert torch.equal(torch.load(tmp_path / "stopped" / f"{spec.slug}.pt", weights_only=True)["images"],
                       torch.load(tmp_path / "whole" / f"{spec.slug}.pt", weights_only=True)["images"])


@pytest.mark.slow
def test_compare_resumes_a_run_stopped_mid_distillation(tmp_path):
    """SIGTERM in the middle of the first run's distillation: exit 143 with a ``last.ckpt``; the same command then
    resumes from it and ends with the sets and accuracies of an uninterrupted comparison (the first run's record
    has two pieces), and the evaluation points (every ``val_check_interval`` updates) are scored on the final
    set's networks."""
    cmd = [sys.executable, "-m", "lightning_sdc", "compare"]
    env = {**os.environ, "LIGHTNING_SDC_QUIET": "1"}
    out = tmp_path / "stopped"
    proc = subprocess.Popen([*cmd, *_compare_args(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not list(out.glob("runs/*/step4.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 143, text[-3000:]
    (run_dir,) = list((out / "runs").glob("sdc_lambda=0_seed0_*/"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert 4 <= ckpt["global_step"] < 24
    assert not list((out / "runs").glob("*.json"))  # nothing finished

    done = subprocess.run([*cmd, *_compare_args(out)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    whole = tmp_path / "whole"
    done = subprocess.run([*cmd, *_compare_args(whole)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for path in sorted((whole / "runs").glob("sdc_lambda=*.json")):
        a, b = json.loads(path.read_text()), json.loads((out / "runs" / path.name).read_text())
        assert a["accuracies"] == b["accuracies"] and a["points"] == b["points"]
        assert sorted(a["points"], key=int) == [str(k) for k in range(4, 24, 4)] and len(a["points"]["4"]) == 2
        assert torch.equal(torch.load(path.with_suffix(".pt"), weights_only=True)["images"],
                           torch.load(out / "runs" / path.with_suffix(".pt").name, weights_only=True)["images"])
        pieces = [(s["from_step"], s["to_step"]) for s in b["segments"]]
        if path.name.startswith("sdc_lambda=0_seed0"):
            assert len(pieces) == 2 and pieces[0][0] == 0 and pieces[0][1] == pieces[1][0] and pieces[1][1] == 24
        else:
            assert pieces == [(0, 24)]


def test_report_lists_each_runs_evaluation_points():
    """The per-run table gives mean ± std over the networks at each evaluation point and at the end, the wall
    time and the commits; the runs CSV gives the points."""
    from lightning_sdc.compare.report import Study, markdown, runs_csv
    from lightning_sdc.compare.runner import RunResult

    runs = [RunResult("model.init_args.sdc_lambda", v, s, [0.70, 0.72, 0.74], 1000, {"arch": "ConvNet", "lr": 0.01},
                      7200.0, 60.0, points={"500": [0.60, 0.61, 0.65]},
                      segments=[{"commit": "aaa", "seconds": 3600.0}, {"commit": "bbb", "seconds": 3600.0}])
            for s in (0, 1) for v in ("0", "0.0002")]
    md = markdown(Study("t", "dc/fashionmnist_ipc1", "model.init_args.sdc_lambda", ["0", "0.0002"], runs))
    row = f"| 0 | 0 | 62.00 ± {100 * np.std([0.60, 0.61, 0.65], ddof=1):.2f} (3) | 72.00 ± 2.00 (3) | 2.00 | 1.0 | aaa, bbb |"
    assert "| seed | sdc_lambda | update 500 | final (1000) |" in md and row in md
    csv = runs_csv(Study("t", "c", "model.init_args.sdc_lambda", ["0", "0.0002"], runs))
    assert csv.splitlines()[1].endswith(",500=62.00")
