"""Callbacks: ASDC ramp (values, resume), cross-architecture table, GraDN tracker (values, history, resume,
plot),
synthetic image logging and export (TensorBoard-like and file loggers, non-finite sets)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger

from lightning_sdc.callbacks import (
    ASDCRamp,
    CrossArchEvaluation,
    GraDNTracker,
    SyntheticImageLogger,
    SyntheticSetExporter,
    asdc_lambda,
    ema_smooth,
    plot_gradn_curves,
    read_curve,
)
from lightning_sdc.callbacks.common import rank_share
from lightning_sdc.callbacks.gradn import _TRACK_KEY
from lightning_sdc.difficulty import per_sample_grad_norms
from lightning_sdc.evaluation import evaluate_synset, seeded_generator
from lightning_sdc.methods import DistillationModule
from lightning_sdc.models import build_network
from lightning_sdc.synthetic import SyntheticSet

SMALL = {"width": 8, "depth": 2}



class ToyMethod(DistillationModule):
    """A cheap deterministic method: each step shrinks the images and adds a step-keyed perturbation."""

    def __init__(self, **kwargs):
        kwargs.setdefault("arch_kwargs", SMALL)
        super().__init__("digits", 2, lr_img=0.5, **kwargs)
        self.seen: list[tuple[int, float]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.step_index, self.sdc_lambda))
        noise = torch.randn(self.synset.images.shape, generator=self.generator(self.step_index))
        loss = ((self.synset.images - 2.0 * noise) ** 2).mean()
        self.apply_update(loss)
        return loss.detach()


def _trainer(tmp_path, max_steps, callbacks=(), logger=False, **kw):
    return pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        logger=logger,
        callbacks=list(callbacks),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        default_root_dir=str(tmp_path),
        **{"accelerator": "cpu", "devices": 1, **kw},
    )


def _dm():
    from lightning_sdc.data import RealDataModule

    return RealDataModule("digits")


# ---------------------------------------------------------------------- ASDC ramp
@pytest.mark.parametrize(
    "shape, middle",
    [
        ("linear", 0.005),  # (λ0 + λ1) / 2
        ("geometric", 0.004),  # √(λ0 λ1)
        ("log", 0.002 + 0.006 * math.log(5001) / math.log(10001)),  # fast early rise
    ],
)
def test_ramp_values_at_start_middle_end(shape, middle):
    ramp = ASDCRamp(0.002, 0.008, steps=10000, shape=shape)
    assert ramp.value(0) == pytest.approx(0.002, rel=1e-12)
    assert ramp.value(5000) == pytest.approx(middle, rel=1e-9)
    assert ramp.value(10000) == pytest.approx(0.008, rel=1e-12)
    assert ramp.value(25000) == pytest.approx(0.008, rel=1e-12)  # holds after the ramp
    values = [ramp.value(t) for t in range(0, 10001, 500)]
    assert all(a < b for a, b in zip(values, values[1:]))  # strictly rising


def test_ramp_shapes_differ_and_bad_arguments_are_named():
    assert asdc_lambda(1000, 0.002, 0.008, 10000, "log") > asdc_lambda(1000, 0.002, 0.008, 10000, "linear")
    assert asdc_lambda(1000, 0.002, 0.008, 10000, "geometric") < asdc_lambda(
        1000, 0.002, 0.008, 10000, "linear"
    )
    with pytest.raises(ValueError, match="shape='cubic'"):
        ASDCRamp(shape="cubic")
    with pytest.raises(ValueError, match="steps"):
        ASDCRamp(steps=0)
    with pytest.raises(ValueError, match="geometric"):
        ASDCRamp(0.0, 0.1, shape="geometric")


def test_ramp_sets_lambda_each_step_and_resume_continues_it(tmp_path):
    kw = dict(lambda_start=0.01, lambda_end=0.05, steps=6, shape="linear")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    first = ToyMethod()
    _trainer(tmp_path, 3, [ASDCRamp(**kw), ckpt]).fit(first, datamodule=_dm())
    assert first.seen == [(t, pytest.approx(asdc_lambda(t, **kw))) for t in range(3)]
    path = next((tmp_path / "ckpt").glob("*step=3*.ckpt"))
    resumed = ToyMethod()  # sdc_lambda starts at 0 in a fresh module: only the ramp can set it
    _trainer(tmp_path, 8, [ASDCRamp(**kw)]).fit(resumed, datamodule=_dm(), ckpt_path=str(path))
    assert [t for t, _ in resumed.seen] == [3, 4, 5, 6, 7]
    for t, lam in resumed.seen:
        assert lam == pytest.approx(asdc_lambda(t, **kw))
    assert resumed.seen[-1][1] == pytest.approx(0.05)  # past `steps`, held at λ1


# ---------------------------------------------------------------------- one run with every callback
@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    logger = CSVLogger(str(tmp), name="run")
    cbs = {
        "cross": CrossArchEvaluation(
            archs=["ConvNet", "ConvNetD1"],
            num_models=2,
            epochs=3,
            augment="none",
            arch_kwargs={"ConvNetD1": {"width": 8}},
        ),
        "gradn": GraDNTracker(every=2, num_networks=2, ema=0.5, method="vmap"),
        "trained": GraDNTracker(
            every=4, num_networks=2, method="vmap", source="trained", train_epochs=8, name="gradn_trained"
        ),
        "images": SyntheticImageLogger(every_n_steps=2),
        "export": SyntheticSetExporter(),
    }
    model = ToyMethod(eval_num_models=1)
    trainer = _trainer(tmp, 4, cbs.values(), logger=logger, log_every_n_steps=1)
    trainer.fit(model, datamodule=_dm())
    return SimpleNamespace(trainer=trainer, model=model, cbs=cbs, log_dir=Path(logger.log_dir))


def _metrics(log_dir: Path) -> list[dict[str, str]]:
    with open(log_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_cross_arch_table_uses_the_protocol_and_reaches_logger_and_files(full_run):
    cross, model = full_run.cbs["cross"], full_run.model
    assert [r.arch for r in cross.results] == ["ConvNet", "ConvNetD1"]
    assert all(r.num_models == 2 and r.epochs == 3 for r in cross.results)
    spec = full_run.trainer.datamodule.spec
    direct = evaluate_synset(
        model.synset,
        (spec.test_images, spec.test_labels),
        arch="ConvNet",
        num_models=2,
        epochs=3,
        augment="none",
        seed=model.seed,
        arch_kwargs=SMALL,
    )
    assert cross.results[0].accuracies == direct.accuracies  # the method's protocol: same seeds, same nets
    md = (full_run.log_dir / "cross_arch.md").read_text()
    assert "| ConvNet |" in md and "| ConvNetD1 |" in md
    assert (full_run.log_dir / "cross_arch.csv").exists()
    logged = [r for r in _metrics(full_run.log_dir) if r.get("cross_arch/ConvNet/acc_mean")]
    assert float(logged[-1]["cross_arch/ConvNet/acc_mean"]) == pytest.approx(cross.results[0].mean)


def test_cross_arch_checks_architectures_before_training():
    model = ToyMethod()
    with pytest.raises(ValueError, match="LeNet"):  # LeNet cannot take 1×8×8 digits
        CrossArchEvaluation(archs=["ConvNet", "LeNet"]).supported_archs(model)
    with pytest.warns(UserWarning, match="skips LeNet"):
        assert CrossArchEvaluation(archs=["ConvNet", "LeNet"], skip_unsupported=True).supported_archs(
            model
        ) == ["ConvNet"]
    with pytest.raises(KeyError):
        CrossArchEvaluation(archs=["NoSuchNet"])


def test_rank_share_splits_jobs_disjointly():
    jobs = list(range(13))
    shares = [rank_share(jobs, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == jobs and max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError, match="rank"):
        rank_share(jobs, 3, 3)


def test_gradn_tracker_values_history_and_logs(full_run):
    tracker, model = full_run.cbs["gradn"], full_run.model
    assert tracker.steps == [0, 2, 4]
    assert tracker.ema_values == pytest.approx(ema_smooth(tracker.values, 0.5))
    # the last value is the mean per-sample gradient norm of the final set over the two seeded networks
    images, targets, _ = model.synset.detached()
    norms = [
        per_sample_grad_norms(
            build_network("ConvNet", 1, 10, (8, 8), generator=seeded_generator(0, _TRACK_KEY, k), **SMALL),
            images,
            targets,
            method="loop",
        )
        for k in range(2)
    ]
    assert tracker.values[-1] == pytest.approx(float(torch.cat(norms).mean()), rel=1e-5)
    assert len(set(tracker.values)) == 3  # the set changed, and so did its GraDN
    steps, values = read_curve(full_run.log_dir / "gradn.csv")
    assert steps == [0, 2, 4] and values == pytest.approx(tracker.values, rel=1e-6)
    steps_logged, raw_logged = read_curve(
        full_run.log_dir / "metrics.csv"
    )  # the CSVLogger's column gradn/raw
    assert steps_logged == [0, 2, 4] and raw_logged == pytest.approx(tracker.values, rel=1e-6)


def test_trained_source_tracker_runs_beside_the_default(full_run):
    """A second tracker (networks trained on the real data) logs under its own name, file and state key."""
    trained, default = full_run.cbs["trained"], full_run.cbs["gradn"]
    assert trained.steps == [0, 4] and trained.state_key != default.state_key
    assert trained.values != pytest.approx(default.values[::2])  # another ensemble, other values
    steps, values = read_curve(full_run.log_dir / "gradn_trained.csv")
    assert steps == [0, 4] and values == pytest.approx(trained.values, rel=1e-6)
    logged = [r for r in _metrics(full_run.log_dir) if r.get("gradn_trained/raw")]
    assert [float(r["gradn_trained/raw"]) for r in logged] == pytest.approx(trained.values, rel=1e-6)
    nets = [trained._networks[k] for k in range(2)]
    x, y = full_run.trainer.datamodule.spec.test_images, full_run.trainer.datamodule.spec.test_labels
    from lightning_sdc.evaluation import test_accuracy

    assert min(test_accuracy(n, x, y) for n in nets) > 0.3  # trained, not at initialisation (chance 0.1)


def test_gradn_tracker_resume_continues_history_and_ema(tmp_path):
    def tracker():
        return GraDNTracker(every=2, num_networks=2, ema=0.8, method="vmap")

    straight = tracker()
    _trainer(tmp_path / "a", 6, [straight]).fit(ToyMethod(), datamodule=_dm())
    first = tracker()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    _trainer(tmp_path / "b", 4, [first, ckpt]).fit(ToyMethod(), datamodule=_dm())
    resumed = tracker()
    path = next((tmp_path / "ckpt").glob("*step=4*.ckpt"))
    _trainer(tmp_path / "c", 6, [resumed]).fit(ToyMethod(), datamodule=_dm(), ckpt_path=str(path))
    assert resumed.steps == straight.steps == [0, 2, 4, 6]
    assert resumed.values == pytest.approx(straight.values, rel=1e-6)
    assert resumed.ema_values == pytest.approx(straight.ema_values, rel=1e-6)


def test_gradn_tracker_state_dict_and_arguments():
    t = GraDNTracker()
    t.load_state_dict({"steps": [0, 5], "values": [1.0, 2.0], "ema_values": [1.0, 1.1]})
    assert GraDNTracker().state_dict() != t.state_dict() and t.state_dict()["steps"] == [0, 5]
    with pytest.raises(KeyError, match="ema_values"):
        t.load_state_dict({"steps": [], "values": []})
    with pytest.raises(ValueError, match="source='teacher'"):
        GraDNTracker(source="teacher")
    with pytest.raises(ValueError, match="ema"):
        GraDNTracker(ema=1.0)
    with pytest.raises(ValueError, match="expert_epochs"):
        GraDNTracker(num_networks=2, expert_epochs=[1])


def test_gradn_tracker_uses_expert_snapshots_for_trajectory_matching():
    from lightning_sdc.experts import ExpertBuffer
    from lightning_sdc.models import flatten_params

    model = ToyMethod()
    nets = [
        build_network("ConvNet", 1, 10, (8, 8), generator=torch.Generator().manual_seed(i), **SMALL)
        for i in range(2)
    ]
    trajs = [torch.stack([flatten_params(n).detach() * (1 + 0.1 * e) for e in range(3)]) for n in nets]
    buffer = ExpertBuffer.from_trajectories(trajs, {"epochs": 2, "num_params": trajs[0].shape[1]})
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(buffer=buffer, min_start_epoch=0, max_start_epoch=2),
        global_rank=0,
        world_size=1,
        global_step=0,
    )
    tracker = GraDNTracker(num_networks=3)
    assert tracker.resolved_source(trainer) == "experts"
    assert tracker.snapshot_plan(trainer.datamodule) == [(0, 0), (1, 0), (0, 1)]
    net = tracker.network(2, 0, trainer, model)
    assert torch.equal(flatten_params(net).detach(), buffer.snapshot(0, 1))
    assert math.isfinite(tracker.measure(trainer, model))
    assert GraDNTracker().resolved_source(SimpleNamespace(datamodule=SimpleNamespace())) == "init"


def test_plot_gradn_curves_draws_two_runs(tmp_path, full_run):
    other = tmp_path / "sdc.csv"
    other.write_text("step,gradn,gradn_ema\n0,3.0,3.0\n2,2.5,2.9\n4,2.0,2.7\n")
    out = plot_gradn_curves(
        {"toy": full_run.log_dir / "gradn.csv", "toy + SDC": other, "mem": ([0, 1], [1.0, 2.0])},
        tmp_path / "fig.png",
        title="GraDN",
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        plot_gradn_curves({"x": tmp_path / "missing.csv"}, tmp_path / "f.png")
    (tmp_path / "bad.csv").write_text("step,loss\n0,1\n")
    with pytest.raises(ValueError, match="columns"):
        read_curve(tmp_path / "bad.csv")


# ---------------------------------------------------------------------- images and export
def test_image_logger_writes_pngs_without_an_image_logger(full_run):
    images = sorted(p.name for p in (full_run.log_dir / "images").glob("*.png"))
    assert images == ["synthetic_step000002.png", "synthetic_step000004.png"]
    synset = full_run.model.synset
    with Image.open(full_run.log_dir / "synthetic_final.png") as png:
        width, height = png.size
    # one row per class of ipc images, each upscaled to >= 64 px, the class names in a margin at the left
    tile = -(-64 // synset.image_shape[1]) * synset.image_shape[1] + 2
    assert height == synset.num_classes * tile + 2 and width > synset.ipc * tile


def test_exporter_writes_both_formats(full_run):
    out = full_run.log_dir / "synthetic"
    loaded = SyntheticSet.load(out / "synset.pt")
    assert torch.equal(loaded.images, full_run.model.synset.images.detach())
    assert (out / "synset.png").exists()
    imgs = torch.load(out / "images_best.pt", weights_only=True)
    labels = torch.load(out / "labels_best.pt", weights_only=True)
    assert torch.equal(imgs, loaded.images) and torch.equal(labels, loaded.labels)


class _FakeTensorBoard(Logger):
    """A logger whose experiment takes images (like TensorBoard's SummaryWriter)."""

    def __init__(self, save_dir):
        super().__init__()
        self._save_dir = str(save_dir)
        self.images = []
        self.metrics = []
        writer = SimpleNamespace(
            add_image=lambda tag, img, global_step, dataformats: self.images.append((tag, img, global_step, dataformats))
        )
        self._experiment = writer

    @property
    def experiment(self):
        return self._experiment

    @property
    def name(self):
        return "fake"

    @property
    def version(self):
        return 0

    @property
    def save_dir(self):
        return self._save_dir

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))


def test_image_logger_sends_grids_to_tensorboard_like_loggers(tmp_path):
    logger = _FakeTensorBoard(tmp_path)
    model = ToyMethod()
    _trainer(tmp_path, 3, [SyntheticImageLogger(every_n_steps=1, final=False), SyntheticSetExporter()],
             logger=logger).fit(model, datamodule=_dm())
    # every update from the logger, the final set once more from the exporter (what `fit` always adds)
    assert [s for _, _, s, _ in logger.images] == [1, 2, 3, 3]
    tag, grid, _, layout = logger.images[-1]
    synset = model.synset
    h = synset.image_shape[1]
    scale = -(-64 // h)  # each image upscaled to >= 64 px
    assert tag == "synthetic/images" and layout == "HWC" and grid.dtype == np.uint8 and grid.shape[2] == 3
    assert grid.shape[0] == synset.num_classes * (h * scale + 2) + 2  # one row per class
    assert not list(tmp_path.rglob("synthetic_step*.png"))


def test_non_finite_sets_are_never_written(tmp_path, full_run):
    trainer, model = full_run.trainer, ToyMethod()
    with torch.no_grad():
        model.synset.images.fill_(float("nan"))
    exporter = SyntheticSetExporter(dirpath=str(tmp_path / "export"))
    with pytest.warns(UserWarning, match="not finite"):
        assert exporter.export(trainer, model) == []
    images = SyntheticImageLogger(dirpath=str(tmp_path / "images"))
    with pytest.warns(UserWarning, match="not finite"):
        images.on_train_end(trainer, model)
    assert not (tmp_path / "export").exists() and not (tmp_path / "images").exists()
    with pytest.raises(ValueError, match="formats"):
        SyntheticSetExporter(formats=("npz",))


@pytest.mark.slow
@pytest.mark.ddp
def test_cross_arch_and_gradn_under_ddp_match_one_process(tmp_path):
    """2 CPU ranks (gloo): the jobs are split and gathered; the table and the curve equal one process's."""

    def run(out: Path, **kw):
        cbs = [
            CrossArchEvaluation(
                archs=["ConvNet", "ConvNetD1"],
                num_models=3,
                epochs=2,
                augment="none",
                arch_kwargs={"ConvNetD1": {"width": 8}},
                dirpath=str(out),
            ),
            GraDNTracker(every=1, num_networks=3, dirpath=str(out), method="loop"),
        ]
        _trainer(out, 2, cbs, **kw).fit(ToyMethod(), datamodule=_dm())
        return (out / "cross_arch.csv").read_text(), read_curve(out / "gradn.csv")

    one_table, one_curve = run(tmp_path / "one")
    two_table, two_curve = run(tmp_path / "two", strategy="ddp_spawn", devices=2)
    # arch, mean, std, models, epochs, lr (not the seconds)
    assert [r.split(",")[:6] for r in two_table.splitlines()] == [
        r.split(",")[:6] for r in one_table.splitlines()
    ]
    assert two_curve[0] == one_curve[0] and two_curve[1] == pytest.approx(one_curve[1], rel=1e-5)


def test_grid_has_one_row_per_class_upscaled_with_every_image_in_place():
    """figures.grid_image: class c's ipc images fill row c left to right, each 8 px image drawn 8x (>= 64 px);
    a second set beside it under a title; sets that do not fill the class rows are refused."""
    from lightning_sdc.figures import grid_image

    classes, ipc, h = 3, 2, 8
    pixels = torch.arange(classes * ipc, dtype=torch.float32).div(10).view(-1, 1, 1, 1).expand(-1, 1, h, h)
    grid = np.asarray(grid_image([("", pixels)], ["a", "b", "c"]))
    tile = 8 * h + 2
    assert grid.shape[0] == classes * tile + 2
    for c in range(classes):
        for j in range(ipc):
            x, y = grid.shape[1] - (ipc - j) * tile + tile // 2, 2 + c * tile + tile // 2
            assert np.abs(grid[y, x].astype(int) - 255 * (c * ipc + j) / 10).max() <= 1
    pair = np.asarray(grid_image([("λ = 0", pixels), ("λ = 0.01", pixels)], ["a", "b", "c"]))
    assert pair.shape[0] > grid.shape[0] and pair.shape[1] >= grid.shape[1] + ipc * tile  # a title row, 2 sets
    with pytest.raises(ValueError, match="do not fill 3 class rows"):
        grid_image([("x", pixels[:5])], ["a", "b", "c"])


def test_final_grid_reaches_a_real_tensorboard_log(tmp_path):
    """With TensorBoard as the logger, the exporter `fit` always adds writes the final set's grid into the event
    file: one row per class of 8×8 digits drawn 8× (64 px) under tag synthetic/images at the last step."""
    pytest.importorskip("tensorboard")
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    model = ToyMethod()
    _trainer(tmp_path, 2, [SyntheticSetExporter()], logger=logger).fit(model, datamodule=_dm())
    events = EventAccumulator(str(Path(logger.log_dir)))
    events.Reload()
    (image,) = events.Images("synthetic/images")
    assert image.step == 2 and image.height == model.synset.num_classes * (8 * 8 + 2) + 2
