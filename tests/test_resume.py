"""Resume: ``fit --ckpt_path last`` with the run's own command line
continues the run bit for bit; a checkpoint made with other settings, or naming a foreign class, is refused before
anything is imported or computed; one live run per run directory.

In-process command lines (``lightning_sdc.cli.run``) over the demo configs with tiny overrides, the default logger
on, each run in its own temporary ``default_root_dir``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_sdc.cli import UsageError, run
from lightning_sdc.runs import (
    ResumeError,
    check_class_paths,
    check_resume_config,
    lock_run_dir,
    unlock_run_dir,
)
from lightning_sdc.synthetic import SyntheticSet

from .reliability_helpers import REPO, TM_ARCH, train_tiny_experts

DEMO = REPO / "configs" / "demo"
CPU = REPO / "configs" / "trainer" / "cpu.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def gm_args(root: Path, steps: int, *extra: str, config: str = "digits_dc_ipc1") -> list[str]:
    """``fit`` on the DC demo config, CPU-sized further: width 8, batch 16, one 1-epoch evaluation net."""
    return ["fit", "--config", str(CPU), "--config", str(DEMO / f"{config}.yaml"),
            f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}", "--trainer.val_check_interval=2",
            "--model.init_args.arch_kwargs={width: 8, depth: 2}", "--model.init_args.batch_real=16",
            "--model.init_args.eval_num_models=1", "--model.init_args.eval_epochs=1", *QUIET, *extra]


def tm_args(root: Path, steps: int, buffer: Path, *extra: str) -> list[str]:
    """``fit`` on the MTT demo config with a tiny expert buffer (width 8, 4 epochs) and 3 inner steps."""
    return ["fit", "--config", str(CPU), "--config", str(DEMO / "digits_mtt_ipc1.yaml"),
            f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}", "--trainer.val_check_interval=2",
            f"--model.init_args.arch_kwargs={{width: {TM_ARCH['width']}, depth: {TM_ARCH['depth']}}}",
            "--model.init_args.syn_steps=3", "--model.init_args.eval_num_models=1", "--model.init_args.eval_epochs=1",
            f"--data.init_args.buffer_dir={buffer}", "--data.init_args.expert_epochs=1",
            "--data.init_args.max_start_epoch=3", "--data.init_args.train_if_missing=false", *QUIET, *extra]


def final_set(root: Path) -> SyntheticSet:
    """The set exported by the newest version of the run that exported one (``version_N/synthetic/synset.pt``)."""
    versions = sorted(root.glob("lightning_logs/version_*/synthetic/synset.pt"),
                      key=lambda p: int(p.parent.parent.name.split("_")[1]))
    return SyntheticSet.load(versions[-1])


def last_ckpt(root: Path, version: int) -> dict:
    return torch.load(root / "lightning_logs" / f"version_{version}" / "checkpoints" / "last.ckpt",
                      map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_experts(tmp_path_factory.mktemp("resume_experts"))


@pytest.fixture(scope="module")
def gm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-update DC run (its ``last.ckpt`` holds update 3)."""
    root = tmp_path_factory.mktemp("gm_run")
    run(gm_args(root, 3, "--ckpt_path=last"))
    return root


# ------------------------------------------------------------------------------------------ 13.2: same command
def test_fit_then_same_command_with_ckpt_path_last_continues_bit_exactly_gm(tmp_path: Path, gm_run: Path) -> None:
    straight = tmp_path / "straight"
    run(gm_args(straight, 5))
    run(gm_args(gm_run, 5, "--ckpt_path=last"))  # the same command line, a larger budget
    assert last_ckpt(gm_run, 0)["global_step"] == 3 and last_ckpt(gm_run, 1)["global_step"] == 5
    a, b = final_set(straight), final_set(gm_run)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(SyntheticSet.load(gm_run / "lightning_logs" / "version_0" / "synthetic" / "synset.pt").images,
                           b.images)
    sa, sb = last_ckpt(straight, 0), last_ckpt(gm_run, 1)
    for key, value in sa["state_dict"].items():
        assert torch.equal(value, sb["state_dict"][key]), key
    for x, y in zip(sa["optimizer_states"][0]["state"].values(), sb["optimizer_states"][0]["state"].values(),
                    strict=True):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])
    # a third start with the same command: the newest last.ckpt (version 1, step 5) is resumed and nothing is
    # left to do (Lightning skips the training loop): no new checkpoint, no new set
    run(gm_args(gm_run, 5, "--ckpt_path=last"))
    assert not (gm_run / "lightning_logs" / "version_2" / "checkpoints" / "last.ckpt").exists()
    assert torch.equal(final_set(gm_run).images, a.images)


def test_fit_then_same_command_with_ckpt_path_last_continues_bit_exactly_tm(tmp_path: Path, experts: Path) -> None:
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    run(tm_args(straight, 4, experts))
    run(tm_args(cut, 2, experts, "--ckpt_path=last"))  # the first start already carries --ckpt_path last
    run(tm_args(cut, 4, experts, "--ckpt_path=last"))
    a, b = final_set(straight), final_set(cut)
    assert torch.equal(a.images, b.images) and torch.equal(a.syn_lr, b.syn_lr)
    assert last_ckpt(cut, 1)["global_step"] == 4


def test_ckpt_path_last_without_a_checkpoint_starts_a_new_run(tmp_path: Path, capsys) -> None:
    run(gm_args(tmp_path, 1, "--ckpt_path=last"))
    assert last_ckpt(tmp_path, 0)["global_step"] == 1


# ------------------------------------------------------------------------------------------ 17.2: same settings
def test_resume_with_other_settings_names_each_key_and_both_values(gm_run: Path) -> None:
    with pytest.raises(UsageError) as err:
        run(gm_args(gm_run, 6, "--ckpt_path=last", "--model.init_args.sdc_lambda=0.02",
                    "--model.init_args.eval_num_models=2"))
    msg = str(err.value)
    assert "model.sdc_lambda: checkpoint 0.01, this run 0.02" in msg
    assert "model.eval_num_models: checkpoint 1, this run 2" in msg
    assert "--resume_override" in msg and "\n" not in msg
    assert len(list(gm_run.glob("lightning_logs/version_*"))) >= 1  # refused before a new version was written
    with pytest.raises(UsageError, match=r"checkpoint .*last\.ckpt is a lightning_sdc\.methods\.DC run but this "
                                         r"command builds lightning_sdc\.methods\.[\w.]*DSA;"):
        run(gm_args(gm_run, 6, "--ckpt_path=last", config="digits_dsa_ipc1"))


def test_resume_override_lets_the_listed_keys_change_but_never_the_set_shape(tmp_path: Path, gm_run: Path) -> None:
    with pytest.raises(UsageError, match=r"--resume_override model\.ipc: these shape the checkpointed"):
        run(gm_args(gm_run, 4, "--ckpt_path=last", "--model.init_args.ipc=10", "--resume_override=[ipc]"))
    run(gm_args(tmp_path, 1, "--ckpt_path=last"))
    run(gm_args(tmp_path, 2, "--ckpt_path=last", "--model.init_args.eval_epochs=2", "--resume_override=[eval_epochs]"))
    resumed = last_ckpt(tmp_path, 1)
    assert resumed["global_step"] == 2 and resumed["hyper_parameters"]["eval_epochs"] == 2


def test_validate_and_test_refuse_to_score_the_blank_set_without_a_checkpoint(tmp_path: Path, gm_run: Path) -> None:
    for sub in ("validate", "test"):
        args = gm_args(tmp_path, 1)
        args[0] = sub
        with pytest.raises(UsageError, match=f"{sub} needs --ckpt_path"):
            run([a for a in args if not a.startswith(("--trainer.max_steps", "--trainer.val_check"))])
    # with a checkpoint: evaluation settings may differ from the run's (they do not touch the set)
    args = [a for a in gm_args(tmp_path, 1, "--model.init_args.eval_epochs=2")
            if not a.startswith(("--trainer.max_steps", "--trainer.val_check"))]
    args[0] = "validate"
    ckpt = gm_run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    cli = run([*args, f"--ckpt_path={ckpt}"])
    assert 0.0 <= cli.trainer.callback_metrics["eval/acc_mean"] <= 1.0


# ------------------------------------------------------------------------------------------ 17.3: class paths
MARKER_MODULE = """
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("the checkpoint's module ran")
class Foo:
    pass
"""


def test_checkpoint_naming_a_foreign_class_is_refused_before_any_import(tmp_path: Path, gm_run: Path,
                                                                         monkeypatch) -> None:
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "sdc_evil_marker.py").write_text(MARKER_MODULE)
    ckpt = last_ckpt(gm_run, 0)
    ckpt["hyper_parameters"]["_class_path"] = "sdc_evil_marker.Foo"
    torch.save(ckpt, evil / "crafted.ckpt")
    monkeypatch.syspath_prepend(str(evil))  # importable, as a module beside the checkpoint in the working dir is
    monkeypatch.chdir(evil)
    with pytest.raises(UsageError) as err:
        run(gm_args(tmp_path / "run", 4, f"--ckpt_path={evil / 'crafted.ckpt'}"))
    assert "hyper_parameters._class_path='sdc_evil_marker.Foo' names a class outside lightning_sdc" in str(err.value)
    assert str(evil / "crafted.ckpt") in str(err.value)
    assert not (evil / "IMPORTED").exists()
    assert "sdc_evil_marker" not in sys.modules
    import sdc_evil_marker  # noqa: F401 - the module does run when imported: the refusal above is what kept it out

    assert (evil / "IMPORTED").exists()
    sys.modules.pop("sdc_evil_marker", None)


def test_class_path_check_allows_this_package_and_classes_the_user_named() -> None:
    ckpt = {"hyper_parameters": {"_class_path": "lightning_sdc.methods.DC", "_instantiator": "pytorch_lightning.cli."
                                 "instantiate_module", "nested": [{"class_path": "mypkg.MyAugment"}]}}
    with pytest.raises(ResumeError, match=r"hyper_parameters\.nested\[0\]\.class_path='mypkg\.MyAugment'"):
        check_class_paths(ckpt, "x.ckpt")
    check_class_paths(ckpt, "x.ckpt", allowed={"mypkg.MyAugment"})
    with pytest.raises(ResumeError, match="_instantiator='os.system'"):
        check_class_paths({"hyper_parameters": {"_instantiator": "os.system"}}, "x.ckpt")


def test_same_settings_check_treats_lists_as_tuples_but_not_bools_as_ints() -> None:
    class M:
        hparams = {"ipc": 1, "arch_kwargs": {"width": 8}, "learn_lr": True, "eval_epochs": 3}

    saved = {"hyper_parameters": {"ipc": 1.0, "arch_kwargs": {"width": 8}, "learn_lr": 1, "eval_epochs": 3}}
    with pytest.raises(ResumeError, match=r"model\.learn_lr: checkpoint 1, this run True"):
        check_resume_config(saved, "x.ckpt", M())
    saved["hyper_parameters"]["learn_lr"] = True
    assert check_resume_config(saved, "x.ckpt", M()) == []


# ------------------------------------------------------------------------------------------ 17.8: one live run
HOLD = "import sys, time; from lightning_sdc.runs import lock_run_dir; lock_run_dir(sys.argv[1]); " \
       "print('held', flush=True); time.sleep(300)"


def hold_lock(path: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_live_run_in_one_directory_is_refused_and_a_dead_one_holds_nothing(tmp_path: Path) -> None:
    lock = tmp_path / ".lightning_sdc.lock"
    child = hold_lock(lock)
    try:
        with pytest.raises(UsageError) as err:
            run(gm_args(tmp_path, 2, "--trainer.logger=false"))
        assert f"pid {child.pid}" in str(err.value) and str(tmp_path) in str(err.value)
        assert not (tmp_path / "synthetic").exists() and not (tmp_path / "checkpoints").exists()
    finally:
        child.kill()  # SIGKILL: no clean-up runs in the child
        child.wait(30)
    assert lock.exists()  # the file stays; the lock went with the process
    run(gm_args(tmp_path, 2, "--trainer.logger=false"))
    assert (tmp_path / "synthetic" / "synset.pt").exists() and (tmp_path / "checkpoints" / "last.ckpt").exists()
    lock_run_dir(lock)  # released when that fit ended
    unlock_run_dir(lock)


def test_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    assert lock_run_dir(lock) == lock_run_dir(lock)
    probe = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(300)", "pass"), str(lock)], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and f"pid {os.getpid()}" in probe.stderr
    unlock_run_dir(lock)
    t0 = time.monotonic()
    child = hold_lock(lock)
    child.kill()
    child.wait(30)
    assert lock_run_dir(lock) and time.monotonic() - t0 < 60
    unlock_run_dir(lock)


def test_ckpt_path_last_passes_over_another_runs_newer_checkpoint(tmp_path: Path) -> None:
    """Two experiments in one root: the newest last.ckpt is the other one's; `--ckpt_path last` with the first
    command resumes the first run (its own checkpoint), not refuse or start over."""
    run(gm_args(tmp_path, 3))
    run(gm_args(tmp_path, 2, "--model.init_args.sdc_lambda=0.5"))  # newer: another λ, its own version_1
    cli = run(gm_args(tmp_path, 4, "--ckpt_path=last"))
    resumed = Path(cli.config_init["fit"]["ckpt_path"])
    assert resumed.parent.parent.name == "version_0", resumed  # gm_run's first run, not the newer one
    assert cli.trainer.global_step == 4


# ------------------------------------------------------------------------------------------ 25: one run per dir
NO_LOGGER = "--trainer.logger=false"


def test_a_second_run_with_other_settings_into_the_same_directory_is_refused(tmp_path: Path) -> None:
    run(gm_args(tmp_path, 1, NO_LOGGER))
    first = {p: p.read_bytes() for p in (tmp_path / "synthetic" / "synset.pt", tmp_path / "config.yaml",
                                         tmp_path / "checkpoints" / "last.ckpt")}
    with pytest.raises(UsageError, match=r"already holds another run \(config.yaml: model.init_args.sdc_lambda: "
                                         r"that run 0.01, this run 0.5\).*own --trainer.default_root_dir"):
        run(gm_args(tmp_path, 1, NO_LOGGER, "--model.init_args.sdc_lambda=0.5"))
    assert {p: p.read_bytes() for p in first} == first  # nothing replaced
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]
    run(gm_args(tmp_path, 2, NO_LOGGER, "--ckpt_path=last"))  # the same run continues in its directory
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_the_users_own_config_yaml_is_never_replaced(tmp_path: Path) -> None:
    own = tmp_path / "config.yaml"
    own.write_text("# my notes\nlr: 0.1\n")
    with pytest.raises(UsageError, match=r"config.yaml is not a run config written by lightning-sdc fit"):
        run(gm_args(tmp_path, 1, NO_LOGGER))
    assert own.read_text() == "# my notes\nlr: 0.1\n"


# ------------------------------------------------------------------------------------------ 25: what resumes
def test_ckpt_path_last_takes_the_newest_checkpoint_whatever_its_name(tmp_path: Path, gm_run: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    source = gm_run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    named = tmp_path / "checkpoints" / "epoch=0-step=3.ckpt"
    named.write_bytes(source.read_bytes())
    cli = run(gm_args(tmp_path, 4, NO_LOGGER, "--ckpt_path=last"))
    assert Path(cli.config_init["fit"]["ckpt_path"]) == named
    assert cli.trainer.global_step == 4


@pytest.mark.parametrize("damage, match", [
    ("weights_only", r"holds no optimizer state \(saved with save_weights_only\)"),
    ("no_hparams", r"holds no hyper-parameters"),
    ("nan_pixel", r"synset.images holds NaN or infinite values"),
])
def test_a_checkpoint_that_cannot_continue_the_run_is_refused_naming_itself(tmp_path: Path, gm_run: Path,
                                                                            damage: str, match: str) -> None:
    ckpt = torch.load(gm_run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    if damage == "weights_only":
        ckpt.pop("optimizer_states")
    elif damage == "no_hparams":
        ckpt.pop("hyper_parameters")
    else:
        key = next(k for k in ckpt["state_dict"] if k.endswith("images"))
        ckpt["state_dict"][key].view(-1)[0] = float("nan")
    path = tmp_path / "damaged.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(UsageError, match=f"checkpoint {path}.*{match}"):
        run(gm_args(tmp_path / "run", 4, f"--ckpt_path={path}"))


def test_a_failed_export_leaves_a_resumable_last_ckpt(tmp_path: Path, monkeypatch) -> None:
    from lightning_sdc.callbacks import SyntheticSetExporter

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "synthetic" / "synset.pt"))

    monkeypatch.setattr(SyntheticSetExporter, "on_train_end", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run(gm_args(tmp_path, 2, NO_LOGGER))
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    monkeypatch.undo()
    cli = run(gm_args(tmp_path, 2, NO_LOGGER, "--ckpt_path=last"))
    assert cli.trainer.global_step == 2 and (tmp_path / "synthetic" / "synset.pt").is_file()
