"""Trajectory-matching methods as Lightning modules: MTT, FTD, TESLA, DATM on tiny digits experts (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_sdc.experts import ExpertTrajectoryDataModule, train_experts
from lightning_sdc.methods import DATM, FTD, MTT, TESLA, build_method
from lightning_sdc.methods.tm import FunctionalStudent, meta

AK = {"width": 8, "depth": 2}
METHODS = {"MTT": MTT, "FTD": FTD, "TESLA": TESLA, "DATM": DATM}
EXTRA = {"FTD": {"ema_decay": 0.9}, "DATM": {"threshold": None}}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def buffer_dir(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    """3 experts × 5 epochs of ConvNet-W8-D2 on digits (SGD, batch 64)."""
    out = tmp_path_factory.mktemp("tm_experts")
    train_experts(digits, arch="ConvNet", arch_kwargs=AK, num_experts=3, epochs=5, out=str(out), seed=0,
                  device="cpu", progress=False, batch_size=64, lr=0.02)
    return out


def make_dm(buffer_dir: Path, **kw) -> ExpertTrajectoryDataModule:
    kw = {"arch_kwargs": AK, "expert_epochs": 1, "max_start_epoch": 4, "train_if_missing": False, **kw}
    return ExpertTrajectoryDataModule("digits", str(buffer_dir), **kw)


def make(name: str, **kw):
    args = {"arch_kwargs": AK, "syn_steps": 3, "lr_img": 10.0, "lr_lr": 1e-4, "syn_lr": 0.01, "eval_epochs": 5,
            "eval_num_models": 1, **EXTRA.get(name, {}), **kw}
    return METHODS[name]("digits", 1, **args)


def trainer(steps: int, callbacks=(), **kw) -> pl.Trainer:
    kw = {"logger": False, "enable_checkpointing": False, **kw}
    return pl.Trainer(max_steps=steps, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, max_epochs=-1, num_sanity_val_steps=0, callbacks=list(callbacks), **kw)


class Recorder(pl.Callback):
    """Learned state before and after every training step."""

    def __init__(self) -> None:
        self.before: list[dict] = []
        self.after: list[dict] = []
        self.batches: list[dict] = []

    @staticmethod
    def state(m) -> dict:
        s = m.synset
        out = {"images": s.images.detach().clone(), "labels": s.labels.detach().clone(),
               "syn_lr": s.syn_lr.detach().clone(), "step": m.global_step}
        opt = m.optimizers().optimizer
        out["momentum"] = [opt.state[p]["momentum_buffer"].clone() for g in opt.param_groups for p in g["params"]
                           if "momentum_buffer" in opt.state.get(p, {})]
        if hasattr(m, "ema_images"):
            out["ema"] = m.ema_images.clone()
        return out

    def on_train_batch_start(self, tr, m, batch, i) -> None:
        self.before.append(self.state(m))
        self.batches.append({k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()})

    def on_train_batch_end(self, tr, m, out, batch, i) -> None:
        self.after.append(self.state(m))


def run(name: str, buffer_dir: Path, steps: int = 3, dm_kw: dict | None = None, **kw):
    model, rec = make(name, **kw), Recorder()
    trainer(steps, [rec]).fit(model, datamodule=make_dm(buffer_dir, **(dm_kw or {})))
    return model, rec


# ---------------------------------------------------------------------------------------------------- student
def test_functional_student_reproduces_the_module_exactly() -> None:
    from lightning_sdc.models import build_network, flatten_params

    net = build_network("ConvNet", 1, 10, (8, 8), generator=torch.Generator().manual_seed(3), **AK)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    student = FunctionalStudent.build("ConvNet", (1, 8, 8), 10, AK)  # a different init: only the structure is used
    theta = flatten_params(net).detach()
    assert student.num_params == theta.numel()
    assert torch.equal(student(theta, x), net(x))
    assert torch.allclose(student.logits(theta, x, batch_size=2), net(x).detach(), rtol=1e-6, atol=1e-6)  # chunked


def test_registered_and_validated() -> None:
    assert isinstance(build_method("mtt", dataset="digits", ipc=1, arch_kwargs=AK), MTT)
    with pytest.raises(ValueError, match="memory='graph'"):
        make("MTT", memory="graph")
    with pytest.raises(ValueError, match="meta_gradient"):
        make("MTT", meta_gradient="second")
    with pytest.raises(ValueError, match="syn_steps"):
        make("MTT", syn_steps=0)
    with pytest.raises(ValueError, match="label_mode='learned' is not allowed for TESLA"):
        make("TESLA", label_mode="learned")
    with pytest.raises(ValueError, match="label_mode='hard' is not allowed for DATM"):
        make("DATM", label_mode="hard")
    with pytest.raises(ValueError, match="ema_decay"):
        make("FTD", ema_decay=1.0)
    with pytest.raises(ValueError, match="threshold"):
        make("DATM", threshold=-1.0)


def test_param_groups_follow_the_references(buffer_dir: Path) -> None:
    model, _ = run("DATM", buffer_dir, steps=1, lr_y=3.0)
    groups = model.optimizers().optimizer.param_groups
    assert [(g["lr"], g["momentum"]) for g in groups] == [(10.0, 0.5), (1e-4, 0.5), (3.0, 0.9)]
    assert groups[0]["params"][0] is model.synset.images and groups[2]["params"][0] is model.synset.labels


# ---------------------------------------------------------------------------------------------------- λ = 0
@pytest.mark.parametrize("name", list(METHODS))
def test_lambda_zero_reproduces_the_sdc_free_run(name: str, buffer_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same seed: λ = 0 gives bit-identical states at every step to a run whose SDC term is removed."""
    _, with_term = run(name, buffer_dir, sdc_lambda=0.0)
    with monkeypatch.context() as mp:
        mp.setattr(meta, "sdc_term", lambda grads, power=1: torch.zeros(()))
        _, without = run(name, buffer_dir, sdc_lambda=0.0)
    for a, b in zip(with_term.after, without.after, strict=True):
        for key in ("images", "labels", "syn_lr"):
            assert torch.equal(a[key], b[key]), key
    if name == "MTT":  # the comparison has teeth: λ > 0 changes the run
        _, sdc = run(name, buffer_dir, sdc_lambda=0.5)
        assert not torch.equal(sdc.after[-1]["images"], with_term.after[-1]["images"])


def test_logged_names_are_those_of_gradient_matching_and_the_term_is_what_the_objective_adds(
        buffer_dir: Path, tmp_path: Path) -> None:
    rows = []

    class Grab(pl.Callback):
        def on_train_batch_end(self, tr, m, out, batch, i) -> None:
            rows.append({k: float(v) for k, v in tr.callback_metrics.items()})

    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="tb")
    model = make("MTT", sdc_lambda=0.5)
    trainer(2, [Grab()], logger=logger).fit(model, datamodule=make_dm(buffer_dir))
    assert len(rows) == 2 and not {"train/loss", "tm/match_loss"} & set(rows[0])
    for r in rows:
        assert r["sdc/term"] == pytest.approx(0.5 * r["sdc/grad_norm"], rel=1e-6) and r["sdc/grad_norm"] > 0
        assert r["train/objective"] == pytest.approx(r["match/loss"] + r["sdc/term"], rel=1e-6)
    events = [p.read_bytes() for p in Path(logger.log_dir).glob("events.*")]
    assert events and not any(b"hp_metric" in e for e in events)  # no -1 placeholder beside the hyper-parameters


def test_a_runaway_learned_lr_is_blamed_on_lr_lr(buffer_dir: Path) -> None:
    from lightning_sdc.methods import DivergenceError

    with pytest.raises(DivergenceError, match=r"syn_lr is .*lower lr_lr=1e\+30") as err:
        trainer(4).fit(make("MTT", lr_lr=1e30), datamodule=make_dm(buffer_dir))
    assert "lr_img" not in str(err.value)


def test_a_checkpoint_holding_a_nan_pixel_is_blamed_on_the_checkpoint(buffer_dir: Path, tmp_path: Path) -> None:
    tr = trainer(1)
    tr.fit(make("MTT"), datamodule=make_dm(buffer_dir))
    path = tmp_path / "nan.ckpt"
    tr.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["synset.images"][0, 0, 0, 0] = float("nan")
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"checkpoint .*nan\.ckpt holds NaN or infinite values in synset\.images"):
        trainer(2).fit(make("MTT"), datamodule=make_dm(buffer_dir), ckpt_path=str(path))


def test_constant_memory_module_matches_unrolled(buffer_dir: Path) -> None:
    _, un = run("MTT", buffer_dir, steps=2, sdc_lambda=0.1)
    _, co = run("MTT", buffer_dir, steps=2, sdc_lambda=0.1, memory="constant")
    for a, b in zip(un.after, co.after, strict=True):
        assert torch.allclose(a["images"], b["images"], rtol=1e-4, atol=1e-5)
        assert torch.allclose(a["syn_lr"], b["syn_lr"], rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------------------------------------------- TESLA
def test_tesla_labels_are_the_target_experts_soft_predictions(buffer_dir: Path) -> None:
    model, rec = run("TESLA", buffer_dir, steps=2)
    assert model.memory == "constant" and model.meta_gradient == "first_order"
    for i, (before, after, batch) in enumerate(zip(rec.before, rec.after, rec.batches, strict=True)):
        expected = model.student.logits(batch["target_params"].float(), before["images"])
        assert torch.allclose(after["labels"], expected, rtol=1e-5, atol=1e-6)
        # step 0's labels were already assigned at initialisation (from the same draw); later ones are new
        assert torch.equal(after["labels"], before["labels"]) == (i == 0)
    assert torch.allclose(model.synset.targets().sum(1), torch.ones(model.synset.images.shape[0]))


# ---------------------------------------------------------------------------------------------------- FTD
def test_ftd_ema_follows_the_images_and_is_evaluated(buffer_dir: Path) -> None:
    model, rec = run("FTD", buffer_dir, steps=3)
    ema = rec.before[0]["images"].clone()
    assert torch.equal(rec.before[0]["ema"], ema)  # shadow starts at the initial images
    for after in rec.after:
        ema = ema * 0.9 + 0.1 * after["images"]
        assert torch.allclose(after["ema"], ema, rtol=0, atol=1e-6)
    assert not torch.allclose(model.ema_images, model.synset.images)
    assert torch.equal(model.eval_synset().images, model.ema_images)
    assert torch.equal(make("FTD", eval_ema=False).eval_synset().images, make("FTD").synset.images)


def test_ftd_resume_restores_the_ema_and_continues_identically(buffer_dir: Path, tmp_path: Path) -> None:
    straight = make("FTD")
    trainer(4).fit(straight, datamodule=make_dm(buffer_dir))
    first = make("FTD")
    tr = trainer(2)
    tr.fit(first, datamodule=make_dm(buffer_dir))
    ckpt = tmp_path / "two.ckpt"
    tr.save_checkpoint(ckpt)
    assert torch.equal(torch.load(ckpt, weights_only=True)["state_dict"]["ema_images"], first.ema_images)
    resumed = make("FTD")
    trainer(4).fit(resumed, datamodule=make_dm(buffer_dir), ckpt_path=str(ckpt))
    assert torch.equal(resumed.ema_images, straight.ema_images)
    assert torch.equal(resumed.synset.images, straight.synset.images)


# ---------------------------------------------------------------------------------------------------- DATM
class GateAfter(pl.Callback):
    """No gate for the first ``n`` steps, then a threshold every loss exceeds."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_batch_start(self, tr, m, batch, i) -> None:
        m.hparams.threshold = None if m.global_step < self.n else 1e-12


def test_datm_gate_skips_the_whole_update_but_counts_the_iteration(buffer_dir: Path) -> None:
    model, rec = make("DATM"), Recorder()
    trainer(4, [GateAfter(2), rec]).fit(model, datamodule=make_dm(buffer_dir))
    assert model.global_step == 4 and model.skipped_updates == 2
    for i, (before, after) in enumerate(zip(rec.before, rec.after, strict=True)):
        assert after["step"] == before["step"] + 1  # skipped or not, global_step advances by one
        changed = not torch.equal(before["images"], after["images"])
        assert changed == (i < 2)
        if i >= 2:  # images, label logits, lr and every momentum buffer untouched
            for key in ("images", "labels", "syn_lr"):
                assert torch.equal(before[key], after[key]), key
            assert len(before["momentum"]) == 3
            assert all(torch.equal(a, b) for a, b in zip(before["momentum"], after["momentum"], strict=True))
    # the stream kept drawing one batch per iteration: the resume offset equals global_step
    assert [b["start_epoch"] for b in rec.batches] == [make_dm_sample(buffer_dir, s) for s in range(4)]


def make_dm_sample(buffer_dir: Path, step: int) -> int:
    dm = make_dm(buffer_dir)
    dm.setup("fit")
    return dm.sample(step)["start_epoch"]


def test_datm_initialises_from_correctly_classified_images_and_expert_logits(buffer_dir: Path, digits) -> None:
    model, rec = make("DATM", threshold=1e-12), Recorder()  # every update skipped: the initial set survives
    dm = make_dm(buffer_dir)
    trainer(1, [rec]).fit(model, datamodule=dm)
    s = model.synset
    finals = [theta.float() for _, theta in dm.expert_final_params()]
    cls = s.class_labels
    assert torch.equal(s.images.detach(), rec.before[0]["images"])
    # every image is a real training image of its class that the first expert classifies correctly
    for i in range(s.images.shape[0]):
        hits = (dm.spec.train_images == s.images[i].detach()).flatten(1).all(1).nonzero().flatten()
        assert hits.numel() >= 1 and int(dm.spec.train_labels[hits[0]]) == int(cls[i])
    assert torch.equal(model.student.logits(finals[0], s.images.detach()).argmax(1), cls)
    # logits = mean over the experts that agree with the class
    all_logits = torch.stack([model.student.logits(t, s.images.detach()) for t in finals])
    agree = (all_logits.argmax(2) == cls).unsqueeze(2).float()
    expected = (all_logits * agree).sum(0) / agree.sum(0)
    assert torch.allclose(s.labels.detach(), expected, rtol=1e-5, atol=1e-6)
    assert s.label_mode == "learned" and isinstance(s.labels, torch.nn.Parameter)


def test_datm_window_grows_with_the_step(buffer_dir: Path) -> None:
    dm = make_dm(buffer_dir, max_start_epoch=4, current_max_start_epoch=1, expansion_end_step=6)
    model, rec = make("DATM"), Recorder()
    trainer(6, [rec]).fit(model, datamodule=dm)
    assert [dm.window(s)[1] for s in range(6)] == [1, 1, 2, 2, 3, 3]
    assert all(b["start_epoch"] < dm.window(i)[1] for i, b in enumerate(rec.batches))


def test_wrong_datamodule_is_rejected(digits) -> None:
    from lightning_sdc.data import RealDataModule

    with pytest.raises(TypeError, match="ExpertTrajectoryDataModule"):
        trainer(1).fit(make("MTT"), datamodule=RealDataModule("digits"))


# ---------------------------------------------------------------------------------------------------- demos
@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Working directory of the demo runs: their ``./buffers`` are trained once and shared."""
    return tmp_path_factory.mktemp("tm_demo")


def run_demo(method: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, *extra: str):
    from lightning_sdc.cli import build_cli
    from lightning_sdc.evaluation.protocol import evaluate_synset
    from lightning_sdc.synthetic import random_coreset

    monkeypatch.chdir(workdir)
    args = ["--config", str(REPO / "configs" / "trainer" / "cpu.yaml"),
            "--config", str(REPO / "configs" / "demo" / f"digits_{method}_ipc1.yaml"),
            "--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", *extra]
    cli = build_cli(args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    kw = cli.model.eval_kwargs()
    ours = evaluate_synset(cli.model.eval_synset(), cli.datamodule.spec, **kw)
    rnd = evaluate_synset(random_coreset(cli.datamodule.spec, 1, seed=0), cli.datamodule.spec, **kw)
    return cli, ours, rnd


def test_mtt_demo_config_beats_random(demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MTT demo, shortened (2 experts × 10 epochs, 60 updates, 3 evaluation nets), trains its experts and
    beats Random; the full demos are the @slow test below."""
    cli, ours, rnd = run_demo(
        "mtt", demo_dir, monkeypatch, "--data.init_args.buffer_dir=buffers/quick", "--data.init_args.train_num_experts=2",
        "--data.init_args.train_epochs=10", "--trainer.max_steps=60", "--trainer.val_check_interval=60",
        "--model.init_args.eval_num_models=3",
    )
    assert (demo_dir / "buffers" / "quick" / "manifest.json").exists()
    assert cli.trainer.global_step == 60 and "eval/acc_mean" in cli.trainer.callback_metrics
    assert ours.mean > rnd.mean + 0.05, (str(ours), str(rnd))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mtt", "tesla", "ftd", "datm"])
def test_demo_config_runs_end_to_end_and_beats_random(method: str, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli, ours, rnd = run_demo(method, demo_dir, monkeypatch)
    assert cli.trainer.global_step == cli.trainer.max_steps
    assert ours.mean > rnd.mean + 0.05, (str(ours), str(rnd))


TM_CONFIGS = [p for d in ("mtt", "tesla", "ftd", "datm") for p in sorted((REPO / "configs" / d).glob("*.yaml"))] + [
    REPO / "configs" / "demo" / f"digits_{m}_ipc1.yaml" for m in ("mtt", "tesla", "ftd", "datm")
]


def test_every_paper_cell_has_a_config() -> None:
    names = {f"{p.parent.name}/{p.stem}" for p in TM_CONFIGS}
    cells = {"mtt": ["cifar10", "cifar100", "tinyimagenet"], "tesla": ["cifar10", "cifar100"],
             "ftd": ["cifar10", "cifar100"]}
    expected = {f"{m}/{d}_ipc{i}" for m, ds in cells.items() for d in ds for i in (1, 10, 50)}
    expected |= {"datm/cifar10_ipc1", "datm/cifar10_ipc10", "datm/cifar10_ipc50", "datm/cifar100_ipc1"}
    expected |= {f"datm/tinyimagenet_ipc{i}" for i in (1, 10, 50)}
    assert expected <= names


def _config_param(path: Path):
    quick = path.parent.name == "demo" or path.stem == "cifar10_ipc1"  # the rest is @slow (large blank sets)
    return pytest.param(path, id=f"{path.parent.name}/{path.stem}", marks=() if quick else pytest.mark.slow)


@pytest.mark.parametrize("path", [_config_param(p) for p in TM_CONFIGS])
def test_tm_configs_parse(path: Path) -> None:
    """Every TM config (paper Tables 5–8 and the demos) builds its model and DataModule through the CLI parser."""
    from lightning_sdc.cli import build_cli
    from lightning_sdc.models import NETWORKS

    cli = build_cli(["--config", str(path), "--trainer.logger=false"], run=False)
    model, dm = cli.model, cli.datamodule
    assert isinstance(dm, ExpertTrajectoryDataModule) and model.sdc_lambda > 0
    assert model.arch == NETWORKS.canonical(dm.arch) and model.arch_kwargs == dm.arch_kwargs
    assert bool(model.hparams.zca) == dm.zca and model.hparams.dataset == dm.dataset
