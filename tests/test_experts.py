"""Expert trajectories: training (SGD and GSAM), the buffer format, the trajectory DataModule, the command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdc.experts import (
    MANIFEST,
    ExpertBuffer,
    ExpertTrajectoryDataModule,
    SharpnessAwareStep,
    expert_path,
    partial_path,
    read_expert,
    save_expert,
    shard_ids,
    train_expert,
    train_experts,
)
from lightning_sdc.training import seeded_generator

ARCH_KW = {"width": 16, "depth": 2}
EPOCHS = 3


@pytest.fixture(scope="module")
def buffer_dir(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    """2 experts × 3 epochs of ConvNet-W16-D2 on digits (the MTT recipe, CPU)."""
    out = tmp_path_factory.mktemp("experts")
    train_experts(
        digits,
        arch="ConvNet",
        arch_kwargs=ARCH_KW,
        num_experts=2,
        epochs=EPOCHS,
        out=str(out),
        seed=0,
        device="cpu",
        progress=False,
    )
    return out


def _dm(buffer_dir: Path, **kw) -> ExpertTrajectoryDataModule:
    kw = {"arch_kwargs": ARCH_KW, "max_start_epoch": 2, "expert_epochs": 1, "train_if_missing": False, **kw}
    dm = ExpertTrajectoryDataModule("digits", str(buffer_dir), **kw)
    dm.setup("fit")
    return dm


# -------------------------------------------------------------------------------------------------- buffer
def test_files_and_metadata(buffer_dir: Path, digits) -> None:
    assert sorted(p.name for p in buffer_dir.iterdir()) == ["expert_0000.pt", "expert_0001.pt", MANIFEST]
    manifest = json.loads((buffer_dir / MANIFEST).read_text())
    assert manifest["complete"] and [e["file"] for e in manifest["experts"]] == [
        "expert_0000.pt",
        "expert_0001.pt",
    ]
    assert manifest["meta"]["arch_kwargs"] == ARCH_KW and "test_acc" not in manifest["meta"]
    traj, meta = read_expert(buffer_dir / "expert_0001.pt")
    for key in (
        "dataset",
        "arch",
        "arch_kwargs",
        "zca",
        "epochs",
        "lr",
        "dsa",
        "rho",
        "alpha",
        "param_names",
        "param_shapes",
        "num_params",
        "seed",
        "test_acc",
        "format_version",
    ):
        assert key in meta
    assert meta["dataset"] == digits.name and meta["arch"] == "ConvNet" and meta["zca"] is False
    assert (
        meta["epochs"] == EPOCHS and meta["lr"] == 0.01 and meta["dsa"] is True and meta["expert_index"] == 1
    )
    assert traj.dtype == torch.float32 and traj.shape == (EPOCHS + 1, meta["num_params"])
    assert meta["num_params"] == sum(int(torch.tensor(s).prod()) for s in meta["param_shapes"])
    assert manifest["experts"][1]["test_acc"] == meta["test_acc"]
    # every epoch moved the parameters; the two experts differ
    assert all(not torch.equal(traj[e], traj[e + 1]) for e in range(EPOCHS))
    assert not torch.equal(traj, read_expert(buffer_dir / "expert_0000.pt")[0])


def test_snapshot0_is_the_seeded_initialisation(buffer_dir: Path, digits) -> None:
    from lightning_sdc.models import build_network
    from lightning_sdc.models.functional import flatten_params

    buf = ExpertBuffer(buffer_dir)
    for i in (0, 1):
        c, h, w = digits.image_shape
        net = build_network(
            "ConvNet", c, digits.num_classes, (h, w), generator=seeded_generator(0, i), **ARCH_KW
        )
        assert torch.equal(buf.snapshot(i, 0), flatten_params(net).detach())
        assert [list(p.shape) for _, p in net.named_parameters()] == buf.meta["param_shapes"]


def test_mmap_snapshot_equals_in_memory_row(buffer_dir: Path, monkeypatch) -> None:
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    buf = ExpertBuffer(buffer_dir)
    buf.trajectory(1)
    monkeypatch.undo()
    assert len(calls) == 2 and all(c.get("mmap") is True and c.get("weights_only") is True for c in calls)
    assert (buf.num_experts, buf.epochs, buf.expert_ids) == (2, EPOCHS, [0, 1])
    assert buf.layout.total == buf.num_params
    full = torch.load(buffer_dir / "expert_0001.pt", weights_only=True)["trajectory"]
    for e in range(EPOCHS + 1):
        assert torch.equal(buf.snapshot(1, e), full[e])
    snap = buf.snapshot(1, 2)
    snap.add_(1.0)  # a copy: the buffer is unchanged
    assert torch.equal(buf.snapshot(1, 2), full[2])
    with pytest.raises(ValueError, match=r"epoch must be in \[0, 3\]"):
        buf.snapshot(1, EPOCHS + 1)
    with pytest.raises(KeyError, match="expert 7"):
        buf.snapshot(7, 0)


def test_atomic_write_keeps_previous_file(buffer_dir: Path, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "expert_0000.pt"
    shutil.copy(buffer_dir / "expert_0000.pt", path)
    old, meta = read_expert(path)
    old = old.clone()

    def broken_save(obj, f, *args, **kwargs):  # torch.save gets a path or an open file (lightning_sdc.io)
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 half a zip")
        else:
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_expert(path, torch.zeros_like(old), meta)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expert_0000.pt"]  # no temporary left behind
    assert torch.equal(read_expert(path)[0], old)


def test_truncated_file_error_names_the_file(buffer_dir: Path, tmp_path: Path) -> None:
    for name in ("expert_0000.pt", "expert_0001.pt", MANIFEST):
        shutil.copy(buffer_dir / name, tmp_path / name)
    bad = tmp_path / "expert_0001.pt"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    buf = ExpertBuffer(tmp_path)  # expert 0 is fine and opened eagerly
    with pytest.raises(ValueError, match="expert_0001.pt.*(corrupt|truncated)"):
        buf.snapshot(1, 0)
    first = tmp_path / "expert_0000.pt"
    first.write_bytes(first.read_bytes()[:100])
    with pytest.raises(ValueError, match="expert_0000.pt"):
        ExpertBuffer(tmp_path)
    (tmp_path / "expert_0000.pt").unlink()
    with pytest.raises(FileNotFoundError, match="expert_0000.pt"):
        ExpertBuffer(tmp_path)


def test_metadata_mismatch_names_key_and_values(buffer_dir: Path) -> None:
    buf = ExpertBuffer(buffer_dir)
    buf.check(dataset="digits", arch="convnet", zca=False, arch_kwargs=dict(ARCH_KW), min_epochs=EPOCHS)
    cases = {
        "dataset": ({"dataset": "mnist5k"}, "'mnist5k'"),
        "arch": ({"arch": "LeNet"}, "'LeNet'"),
        "zca": ({"zca": True}, "True"),
        "epochs": ({"min_epochs": EPOCHS + 1}, str(EPOCHS + 1)),
        "arch_kwargs": ({"arch_kwargs": {"width": 32, "depth": 2}}, "32"),
    }
    for key, (kw, run_value) in cases.items():
        with pytest.raises(ValueError) as err:
            buf.check(**kw)
        msg = str(err.value)
        assert f"{key}:" in msg and run_value in msg and str(buffer_dir) in msg, msg
    with pytest.raises(ValueError) as err:
        buf.check(dataset="mnist5k", zca=True)
    assert "dataset:" in str(err.value) and "zca:" in str(err.value)
    # the DataModule runs the same checks, including enough epochs for the sampling window
    with pytest.raises(ValueError, match=r"epochs: buffer has 3 epochs, run needs at least 4"):
        _dm(buffer_dir, max_start_epoch=3, expert_epochs=2)
    with pytest.raises(ValueError, match="zca: buffer has False, run uses True"):
        _dm(buffer_dir, zca=True)
    with pytest.raises(ValueError, match="arch_kwargs"):
        _dm(buffer_dir, arch_kwargs={"width": 8, "depth": 2})


def test_from_mtt_layout(buffer_dir: Path, tmp_path: Path) -> None:
    buf = ExpertBuffer(buffer_dir)
    shapes = buf.meta["param_shapes"]
    numels = [int(torch.tensor(s).prod()) for s in shapes]

    def to_lists(traj: torch.Tensor) -> list[list[torch.Tensor]]:
        return [[t.reshape(s).clone() for t, s in zip(row.split(numels), shapes)] for row in traj]

    torch.save([to_lists(buf.trajectory(i)) for i in buf.expert_ids], tmp_path / "replay_buffer_0.pt")
    mtt = ExpertBuffer.from_mtt(tmp_path, dataset="digits", arch="ConvNet", arch_kwargs=ARCH_KW)
    assert (mtt.num_experts, mtt.epochs, mtt.meta["param_names"]) == (2, EPOCHS, buf.meta["param_names"])
    assert all(torch.equal(mtt.snapshot(i, e), buf.snapshot(i, e)) for i in (0, 1) for e in range(EPOCHS + 1))
    converted = ExpertBuffer(mtt.save(tmp_path / "converted")[0].parent)
    assert torch.equal(converted.snapshot(1, 3), buf.snapshot(1, 3))
    with pytest.raises(ValueError, match="parameter shapes"):
        ExpertBuffer.from_mtt(
            tmp_path / "replay_buffer_0.pt", dataset="digits", arch_kwargs={"width": 8, "depth": 2}
        )


# ------------------------------------------------------------------------------------------------ training
def test_experts_beat_chance(buffer_dir: Path, digits) -> None:
    buf = ExpertBuffer(buffer_dir)
    accs = [buf.expert_meta(i)["test_acc"] for i in buf.expert_ids]
    assert all(a > 0.15 for a in accs), accs  # 10 classes: chance is 0.1; 3 epochs are only 18 SGD steps
    longer = train_expert(digits, arch_kwargs=ARCH_KW, epochs=10, index=0, device="cpu")  # the MTT recipe
    assert longer.test_acc > 0.5, longer.test_acc
    assert torch.equal(longer.trajectory[: EPOCHS + 1], buf.trajectory(0))  # same seed, same first epochs


def test_sam_with_zero_rho_alpha_is_plain_sgd_bitwise(digits) -> None:
    kw = {"arch_kwargs": ARCH_KW, "epochs": 2, "seed": 3, "device": "cpu"}
    sgd = train_expert(digits, sharpness_aware=False, **kw)
    sam = train_expert(digits, sharpness_aware=True, rho=0.0, alpha=0.0, **kw)
    assert torch.equal(sgd.trajectory, sam.trajectory)
    gsam = train_expert(digits, rho=0.05, alpha=0.3, **{**kw, "epochs": 1})  # rho > 0 switches GSAM on
    assert torch.equal(gsam.trajectory[0], sgd.trajectory[0])
    assert not torch.allclose(gsam.trajectory[1], sgd.trajectory[1])


def _tiny_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return net, torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(3, (8,), generator=g)


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_gsam_step_matches_reference_formula(adaptive: bool, alpha: float) -> None:
    rho, lr = 0.5, 0.1
    net, x, y = _tiny_problem()
    params = list(net.parameters())
    w = [p.detach().clone() for p in params]

    def grads_at(ws: list[torch.Tensor]) -> list[torch.Tensor]:
        ws = [v.clone().requires_grad_(True) for v in ws]
        out = torch.func.functional_call(net, dict(zip([n for n, _ in net.named_parameters()], ws)), (x,))
        return list(torch.autograd.grad(F.cross_entropy(out, y), ws))

    g = torch.cat([t.reshape(-1) for t in grads_at(w)])
    wf = torch.cat([t.reshape(-1) for t in w])
    t = wf.abs() if adaptive else torch.ones_like(wf)
    e = rho * t * t * g / ((t * g).norm() + 1e-12)  # FTD: ρ T²g / ‖Tg‖
    sizes = [v.numel() for v in w]
    gp = torch.cat(
        [t.reshape(-1) for t in grads_at([a + b.reshape(a.shape) for a, b in zip(w, e.split(sizes))])]
    )
    cos = (g @ gp) / (gp.norm() * g.norm() + 1e-12)
    d = gp - alpha * (g - cos * g.norm() * gp / (gp.norm() + 1e-12))
    expected = wf - lr * d

    opt = torch.optim.SGD(params, lr=lr)
    step = SharpnessAwareStep(params, opt, rho=rho, alpha=alpha, adaptive=adaptive, model=net)
    loss = step.step(lambda: F.cross_entropy(net(x), y))
    got = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert float(loss) == pytest.approx(
        float(
            F.cross_entropy(
                torch.func.functional_call(net, dict(zip([n for n, _ in net.named_parameters()], w)), (x,)), y
            )
        )
    )


def test_gsam_freezes_batchnorm_stats_on_perturbed_pass() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    ref = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    ref.load_state_dict(net.state_dict())
    ref(x)  # one forward at the unperturbed weights = the only statistics update GSAM may make
    step = SharpnessAwareStep(
        list(net.parameters()), torch.optim.SGD(net.parameters(), lr=0.1), rho=0.1, alpha=0.2, model=net
    )
    step.step(lambda: F.cross_entropy(net(x), y))
    assert net[1].momentum == 0.1
    torch.testing.assert_close(net[1].running_mean, ref[1].running_mean)
    with pytest.raises(ValueError, match="rho"):
        SharpnessAwareStep(list(net.parameters()), torch.optim.SGD(net.parameters(), lr=0.1), rho=-1, alpha=0)


def test_resume_and_setting_conflicts(buffer_dir: Path, tmp_path: Path, digits) -> None:
    for name in ("expert_0000.pt",):
        shutil.copy(buffer_dir / name, tmp_path / name)
    before = (tmp_path / "expert_0000.pt").stat().st_mtime_ns
    kw = {"arch_kwargs": ARCH_KW, "epochs": EPOCHS, "out": str(tmp_path), "device": "cpu", "progress": False}
    with pytest.raises(
        ValueError, match=r"expert_0000.pt exists with other settings \(lr: file 0.01, run 0.02\)"
    ):
        train_experts(digits, num_experts=1, lr=0.02, **kw)
    paths = train_experts(digits, num_experts=2, **kw)
    assert paths == [expert_path(tmp_path, 0), expert_path(tmp_path, 1)]
    assert (tmp_path / "expert_0000.pt").stat().st_mtime_ns == before  # kept, not retrained
    assert torch.equal(
        read_expert(paths[1])[0], read_expert(buffer_dir / "expert_0001.pt")[0]
    )  # reproducible
    with pytest.raises(ValueError, match="num_experts"):
        train_experts(digits, num_experts=0, **kw)
    with pytest.raises(ValueError, match="rho"):
        train_experts(digits, num_experts=1, rho=-0.1, **kw)


# ---------------------------------------------------------------------------------------------- DataModule
def test_window_plain_and_datm_expansion(buffer_dir: Path) -> None:
    dm = ExpertTrajectoryDataModule("digits", str(buffer_dir), max_start_epoch=20, min_start_epoch=3)
    assert dm.window(0) == dm.window(10**6) == (3, 20)
    datm = ExpertTrajectoryDataModule(
        "digits", str(buffer_dir), max_start_epoch=20, current_max_start_epoch=10, expansion_end_step=1000
    )
    assert datm.window(0) == (0, 10)  # start
    assert datm.window(99) == (0, 10) and datm.window(100) == (0, 11)  # floor of the linear ramp
    assert datm.window(500) == (0, 15)  # middle
    assert datm.window(1000) == datm.window(5000) == (0, 20)  # end, then flat
    for bad in (
        {"current_max_start_epoch": 0, "expansion_end_step": 10},
        {"current_max_start_epoch": 5},
        {"expansion_end_step": 10},
        {"max_start_epoch": 0},
        {"train_epochs": 5},
        {"train_kwargs": {"epochs": 3}},
        {"train_kwargs": {"momentum": 0.9}},
    ):
        with pytest.raises(ValueError):
            ExpertTrajectoryDataModule("digits", str(buffer_dir), **bad)


def test_sample_is_pure_function_of_step_and_rank(buffer_dir: Path) -> None:
    dm = _dm(buffer_dir, max_start_epoch=2, expert_epochs=1)
    other = _dm(buffer_dir, max_start_epoch=2, expert_epochs=1)
    draws = {(s, r): dm.sample(s, r) for s in range(40) for r in (0, 1)}
    for (s, r), d in draws.items():
        again = other.sample(s, r)
        assert (d["expert_id"], d["start_epoch"]) == (again["expert_id"], again["start_epoch"])
        assert torch.equal(d["start_params"], again["start_params"])
        assert d["start_epoch"] in (0, 1)
        assert torch.equal(d["start_params"], dm.buffer.snapshot(d["expert_id"], d["start_epoch"]))
        assert torch.equal(d["target_params"], dm.buffer.snapshot(d["expert_id"], d["start_epoch"] + 1))
    seq = [(draws[s, 0]["expert_id"], draws[s, 0]["start_epoch"]) for s in range(40)]
    assert set(seq) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every expert and start epoch is drawn
    assert seq != [(draws[s, 1]["expert_id"], draws[s, 1]["start_epoch"]) for s in range(40)]  # ranks differ
    reseeded = _dm(buffer_dir, max_start_epoch=2, expert_epochs=1, seed=1)
    assert seq != [(reseeded.sample(s)["expert_id"], reseeded.sample(s)["start_epoch"]) for s in range(40)]
    finals = dict(dm.expert_final_params())
    assert sorted(finals) == [0, 1] and torch.equal(finals[1], dm.buffer.snapshot(1, EPOCHS))


def test_datamodule_setup_and_loaders(buffer_dir: Path, digits) -> None:
    dm = _dm(buffer_dir, num_experts=1)
    assert dm.buffer.num_experts == 1 and dm.layout.total == dm.buffer.num_params
    assert dm.real.count(0) == int((digits.train_labels == 0).sum()) and dm.zca is False
    assert {dm.sample(s)["expert_id"] for s in range(10)} == {0}
    images, labels = next(iter(dm.val_dataloader()))
    assert torch.equal(images, digits.test_images[: len(images)]) and torch.equal(
        labels, digits.test_labels[: len(labels)]
    )
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(batch["start_params"], dm.sample(0)["start_params"])
    with pytest.raises(ValueError, match="num_experts=3"):
        _dm(buffer_dir, num_experts=3)
    with pytest.raises(FileNotFoundError, match="no expert trajectories"):
        _dm(buffer_dir / "missing")


def test_state_dict_restores_sampling_offset(buffer_dir: Path) -> None:
    from types import SimpleNamespace

    dm = _dm(buffer_dir)
    dm.trainer = SimpleNamespace(
        global_step=7, global_rank=1, strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )
    state = dm.state_dict()
    assert state["offset"] == 7
    fresh = _dm(buffer_dir)
    fresh.load_state_dict(state)
    fresh.trainer = dm.trainer
    it = iter(fresh.train_dataloader())
    for step in (7, 8, 9):
        got = next(it)
        want = dm.sample(step, rank=1)
        assert (got["expert_id"], got["start_epoch"]) == (want["expert_id"], want["start_epoch"])
        assert torch.equal(got["target_params"], want["target_params"])
    with pytest.raises(KeyError, match="offset"):
        fresh.load_state_dict({})


class _Recorder:
    """A minimal manual-optimisation module that records the draw of every step."""

    @staticmethod
    def build():
        import pytorch_lightning as pl

        class Recorder(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.automatic_optimization = False
                self.w = nn.Parameter(torch.zeros(1))
                self.seen: list[tuple[int, int, int]] = []

            def training_step(self, batch, batch_idx):
                self.seen.append((self.global_step, int(batch["expert_id"]), int(batch["start_epoch"])))
                opt = self.optimizers()
                opt.zero_grad()
                self.manual_backward((self.w * batch["start_params"].sum()).sum() * 0)
                opt.step()

            def configure_optimizers(self):
                return torch.optim.SGD([self.w], lr=0.1)

        return Recorder()


def test_lightning_resume_continues_the_sample_stream(buffer_dir: Path, tmp_path: Path) -> None:
    import pytorch_lightning as pl

    def trainer(steps: int) -> pl.Trainer:
        return pl.Trainer(
            max_steps=steps,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            max_epochs=-1,
        )

    full = _Recorder.build()
    trainer(6).fit(full, datamodule=_dm(buffer_dir))
    first = _Recorder.build()
    t = trainer(3)
    t.fit(first, datamodule=_dm(buffer_dir))
    ckpt = tmp_path / "step3.ckpt"
    t.save_checkpoint(ckpt)
    resumed = _Recorder.build()
    trainer(6).fit(resumed, datamodule=_dm(buffer_dir), ckpt_path=str(ckpt))
    assert [s for s, _, _ in full.seen] == list(range(6))
    assert first.seen + resumed.seen == full.seen


def test_setup_trains_missing_buffer_and_command(tmp_path: Path, digits) -> None:
    dm = ExpertTrajectoryDataModule(
        "digits",
        str(tmp_path / "buf"),
        arch_kwargs=ARCH_KW,
        max_start_epoch=1,
        expert_epochs=1,
        train_num_experts=1,
        train_kwargs={"device": "cpu", "progress": False},
    )
    dm.setup("fit")  # in a Trainer run prepare_data only downloads; setup trains, on every rank its share
    assert (
        dm.buffer.num_experts == 1 and dm.buffer.epochs == 2
    )  # train_epochs = max_start_epoch + expert_epochs
    mtime = (tmp_path / "buf" / "expert_0000.pt").stat().st_mtime_ns
    again = ExpertTrajectoryDataModule(
        "digits", str(tmp_path / "buf"), arch_kwargs=ARCH_KW, max_start_epoch=1, expert_epochs=1,
        train_num_experts=1, train_kwargs={"device": "cpu", "progress": False},
    )
    again.prepare_data()  # called directly it trains what is missing: nothing here
    again.setup("fit")
    assert (tmp_path / "buf" / "expert_0000.pt").stat().st_mtime_ns == mtime
    alone = ExpertTrajectoryDataModule(
        "digits", str(tmp_path / "alone"), arch_kwargs=ARCH_KW, max_start_epoch=1, expert_epochs=1,
        train_num_experts=1, train_kwargs={"device": "cpu", "progress": False},
    )
    alone.prepare_data()
    assert torch.equal(read_expert(tmp_path / "alone" / "expert_0000.pt")[0], dm.buffer.trajectory(0))

    from lightning_sdc.cli import main

    main(
        [
            "experts",
            "--dataset",
            "digits",
            "--num_experts",
            "1",
            "--epochs",
            "1",
            "--arch_kwargs",
            "{width: 16, depth: 2}",
            "--out",
            str(tmp_path / "cmd"),
            "--trainer.accelerator",
            "cpu",
            "--dsa",
            "false",
        ]
    )
    meta = ExpertBuffer(tmp_path / "cmd").expert_meta(0)
    assert (meta["epochs"], meta["arch_kwargs"], meta["dsa"]) == (1, ARCH_KW, False)


def test_missing_experts_message_is_the_exact_command(tmp_path: Path) -> None:
    """train_if_missing=False (e.g. a DDP run that must not train): setup stops at once, and the command in the
    message, run as printed, produces a buffer this DataModule accepts with the run's settings."""
    import shlex

    from lightning_sdc.cli import main

    kw = {
        "arch_kwargs": ARCH_KW, "max_start_epoch": 1, "expert_epochs": 1, "train_num_experts": 2, "seed": 4,
        "dataset_kwargs": {"seed": 1}, "train_kwargs": {"lr": 0.02, "dsa": False, "device": "cpu"},
    }
    dm = ExpertTrajectoryDataModule("digits", str(tmp_path / "buf"), train_if_missing=False, **kw)
    with pytest.raises(FileNotFoundError, match=r"train them first with:\n  lightning-sdc experts ") as err:
        dm.setup("fit")
    command = str(err.value).split("\n")[1].strip()
    assert command == (
        f"lightning-sdc experts --dataset digits --num_experts 2 --epochs 2 --out {tmp_path / 'buf'} "
        """--arch_kwargs '{"depth": 2, "width": 16}' --dataset_kwargs '{"seed": 1}' --lr 0.02 --dsa false --seed 4"""
    )
    assert not (tmp_path / "buf").exists()  # stopped before any training
    main(shlex.split(command)[1:] + ["--progress", "false"])
    dm = ExpertTrajectoryDataModule("digits", str(tmp_path / "buf"), train_if_missing=False, **kw)
    dm.setup("fit")
    meta = dm.buffer.expert_meta(1)
    assert dm.buffer.num_experts == 2 and dm.buffer.complete
    assert (meta["lr"], meta["dsa"], meta["seed"], meta["dataset_kwargs"]) == (0.02, False, 4, {"seed": 1})


TINY = {"arch_kwargs": {"width": 8, "depth": 1}, "dsa": False, "device": "cpu", "progress": False}


def test_interrupted_expert_resumes_bitwise_from_its_checkpoint(buffer_dir: Path, tmp_path: Path, digits) -> None:
    kw = {"arch_kwargs": ARCH_KW, "epochs": EPOCHS, "out": str(tmp_path), "device": "cpu", "progress": False}

    class Interrupt(Exception):
        pass

    def stop_after_epoch_2(i: int, epoch: int, loss: float) -> None:
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_experts(digits, num_experts=1, on_epoch=stop_after_epoch_2, **kw)
    assert not expert_path(tmp_path, 0).exists() and partial_path(tmp_path, 0).exists()
    seen: list[int] = []
    train_experts(digits, num_experts=1, on_epoch=lambda i, e, loss: seen.append(e), **kw)
    assert seen == [3]  # only the epoch after the checkpoint was trained
    assert not partial_path(tmp_path, 0).exists()
    assert torch.equal(read_expert(expert_path(tmp_path, 0))[0], read_expert(buffer_dir / "expert_0000.pt")[0])
    # a checkpoint left by other settings is refused, naming the key
    with pytest.raises(Interrupt):
        train_experts(digits, num_experts=2, on_epoch=stop_after_epoch_2, **kw)
    with pytest.raises(ValueError, match=r"expert_0001.pt.partial was written with other settings \(lr: "):
        train_experts(digits, num_experts=2, shard=1, num_shards=2, lr=0.05, **kw)


def test_checkpoint_of_another_layout_restarts_the_expert(tmp_path: Path, digits) -> None:
    """A per-epoch checkpoint without the training loop's state (an older layout) is warned about and the
    expert is retrained from its initialisation, ending equal to an uninterrupted run."""
    kw = {"num_experts": 1, "epochs": 2, **TINY}

    class Interrupt(Exception):
        pass

    def stop(i: int, epoch: int, loss: float) -> None:
        raise Interrupt

    train_experts(digits, out=str(tmp_path / "whole"), **kw)
    with pytest.raises(Interrupt):
        train_experts(digits, out=str(tmp_path / "cut"), on_epoch=stop, **kw)
    ckpt = partial_path(tmp_path / "cut", 0)
    state = torch.load(ckpt, weights_only=True)
    loop = state.pop("loop")
    torch.save({**state, "net": loop["params"], "generator": loop["generators"][0]}, ckpt)
    seen: list[int] = []
    with pytest.warns(UserWarning, match=r"lacks \['loop'\].*expert 0 restarts from its initialisation"):
        train_experts(digits, out=str(tmp_path / "cut"), on_epoch=lambda i, e, loss: seen.append(e), **kw)
    assert seen == [1, 2]
    assert torch.equal(read_expert(expert_path(tmp_path / "cut", 0))[0],
                       read_expert(expert_path(tmp_path / "whole", 0))[0])


def test_unreadable_expert_file_is_retrained(tmp_path: Path, digits) -> None:
    kw = {"num_experts": 1, "epochs": 1, "out": str(tmp_path), **TINY}
    train_experts(digits, **kw)
    good = read_expert(expert_path(tmp_path, 0))[0].clone()
    expert_path(tmp_path, 0).write_bytes(expert_path(tmp_path, 0).read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="expert_0000.pt.*expert 0 will be retrained"):
        train_experts(digits, **kw)
    assert torch.equal(read_expert(expert_path(tmp_path, 0))[0], good)


def test_job_array_shards_cover_the_buffer(tmp_path: Path, digits) -> None:
    kw = {"num_experts": 4, "epochs": 1, "out": str(tmp_path), **TINY}
    assert shard_ids(4, 1, 2) == [1, 3] and shard_ids(5, 0, 2) == [0, 2, 4]
    for bad in ({"shard": 2, "num_shards": 2}, {"shard": -1}, {"num_shards": 0}):
        with pytest.raises(ValueError, match="shard"):
            train_experts(digits, **{**kw, **bad})
    assert train_experts(digits, shard=1, num_shards=2, **kw) == [expert_path(tmp_path, 1), expert_path(tmp_path, 3)]
    half = ExpertBuffer(tmp_path)
    assert half.expert_ids == [1, 3] and half.requested == 4 and not half.complete
    train_experts(digits, shard=0, num_shards=2, **kw)
    full = ExpertBuffer(tmp_path)
    assert full.expert_ids == [0, 1, 2, 3] and full.complete
    assert [full.expert_meta(i)["trained_by"]["shard"] for i in range(4)] == [0, 1, 0, 1]
    # a manifest written by a job that finished before the others' last files still yields every file
    doc = json.loads((tmp_path / MANIFEST).read_text())
    doc["experts"] = doc["experts"][:1]
    (tmp_path / MANIFEST).write_text(json.dumps(doc))
    assert ExpertBuffer(tmp_path).expert_ids == [0, 1, 2, 3]


def test_zca_experts_and_datamodule(tmp_path: Path, digits) -> None:
    from lightning_sdc.data import load_dataset

    with pytest.raises(ValueError, match="not whitened"):
        train_experts(digits, num_experts=1, epochs=1, out=str(tmp_path), zca=True, progress=False)
    out = tmp_path / "zca"
    train_experts(
        "digits",
        arch_kwargs=ARCH_KW,
        num_experts=1,
        epochs=2,
        out=str(out),
        zca=True,
        device="cpu",
        progress=False,
    )
    assert ExpertBuffer(out).meta["zca"] is True
    dm = _dm(out, zca=True)
    white = load_dataset("digits", zca=True)
    images, _ = next(iter(dm.test_dataloader()))
    assert dm.zca and dm.spec.zca is not None
    assert torch.equal(images, white.test_images[: len(images)])
    assert not torch.allclose(images, digits.test_images[: len(images)])
    with pytest.raises(ValueError, match="zca: buffer has True, run uses False"):
        _dm(out)


def test_run_experts_refuses_bad_layout_before_launching(tmp_path: Path) -> None:
    from lightning_sdc.experts import run_experts

    kw = {"num_experts": 4, "epochs": 1, "out": str(tmp_path)}
    with pytest.raises(ValueError, match=r"shard must be an integer in \[0, num_shards=2\), got 5"):
        run_experts("digits", trainer={"accelerator": "cpu", "devices": 2, "strategy": "ddp"}, shard=5,
                    num_shards=2, **kw)
    with pytest.raises(ValueError, match=r"trainer options \['device'\] are not allowed; allowed: accelerator"):
        run_experts("digits", trainer={"device": 2}, **kw)
    with pytest.raises(ValueError, match=r"\['device'\] come from the Fabric job"):
        run_experts("digits", device="cpu", **kw)
    assert not tmp_path.joinpath("manifest.json").exists()


# -------------------------------------------------------------------------------------------------- checked up front
@pytest.mark.parametrize("damage, match", [
    ("nan", r"expert trajectory file .*expert_0001.pt holds NaN or infinite parameters at epoch 2"),
    ("empty", r"cannot read expert trajectory file .*expert_0001.pt: corrupt or truncated"),
    ("shape", r"expert_0001.pt: trajectory should be float32 \(4, \d+\) per its metadata, got torch.float64"),
])
def test_setup_opens_and_checks_every_expert_file(buffer_dir: Path, tmp_path: Path, damage: str, match: str) -> None:
    buffer = tmp_path / "buffer"
    shutil.copytree(buffer_dir, buffer)
    target = buffer / "expert_0001.pt"
    if damage == "empty":
        target.write_bytes(b"")
    else:
        obj = torch.load(target, weights_only=True)
        if damage == "nan":
            obj["trajectory"][2, 7] = float("nan")
        else:
            obj["trajectory"] = obj["trajectory"].double()
        torch.save(obj, target)
    with pytest.raises(ValueError, match=match):
        _dm(buffer)


def test_an_interrupted_train_if_missing_resumes_from_the_partial_expert(buffer_dir: Path, tmp_path: Path) -> None:
    """A cut run leaves ``manifest.json`` and ``expert_0000.pt.partial``: setup resumes it, it does not fail."""
    buffer = tmp_path / "buffer"
    shutil.copytree(buffer_dir, buffer)
    (buffer / "expert_0001.pt").unlink()
    (buffer / "expert_0000.pt").unlink()
    dm = ExpertTrajectoryDataModule("digits", str(buffer), arch_kwargs=ARCH_KW, max_start_epoch=2, expert_epochs=1,
                                    train_if_missing=True, train_num_experts=1, train_epochs=EPOCHS)
    assert dm._missing_experts()  # a manifest but no finished expert: missing, not "no expert trajectories"
    dm.setup("fit")
    assert dm.buffer.num_experts == 1 and (buffer / "expert_0000.pt").is_file()
