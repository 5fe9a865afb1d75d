"""The shared progress bars: an ETA on a terminal, silent under --quiet or without a TTY."""

from __future__ import annotations

import io
import re
import sys

from lightning_sdc import progress as P


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def fake_tty(monkeypatch) -> FakeTTY:
    """Replace stderr by a terminal-like buffer (inside the test body: pytest re-installs its own capture
    between the setup and call phases)."""
    stream = FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv(P.ENV_QUIET, raising=False)
    return stream


def test_bar_on_a_terminal_shows_total_and_eta(monkeypatch):
    tty = fake_tty(monkeypatch)
    assert P.progress_enabled()
    with P.progress(total=4, desc="nets", unit="epoch", mininterval=0, miniters=1) as bar:
        for _ in range(4):
            bar.update()
    text = tty.getvalue()
    assert "nets" in text and "4/4" in text
    assert "00:00<00:00" in text  # elapsed<remaining: the ETA field, filled in once the rate is known


def test_quiet_flag_env_and_non_tty_silence_every_bar(monkeypatch):
    tty = fake_tty(monkeypatch)
    assert list(P.progress(range(3), quiet=True)) == [0, 1, 2]
    with P.quiet_mode(True):
        assert not P.progress_enabled()
        assert list(P.progress(range(3), desc="x")) == [0, 1, 2]
    assert P.progress_enabled()  # restored after the block
    monkeypatch.setenv(P.ENV_QUIET, "1")
    assert not P.progress_enabled()
    list(P.progress(range(3), desc="x"))
    monkeypatch.setenv(P.ENV_QUIET, "0")
    assert P.progress_enabled()
    assert tty.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file / pipe: no bar
    assert not P.progress_enabled()


def test_trainer_without_progress_bar_is_silent(monkeypatch):
    fake_tty(monkeypatch)
    class NoBar:
        progress_bar_callback = None

    class WithBar:
        progress_bar_callback = object()

    assert not P.trainer_progress_enabled(NoBar())
    assert not P.trainer_progress_enabled(None)
    assert P.trainer_progress_enabled(WithBar())

    class OtherRank(WithBar):
        is_global_zero = False

    assert not P.trainer_progress_enabled(OtherRank())


def test_evaluation_networks_in_fit_show_an_inner_bar(monkeypatch, tmp_path, digits):
    """While the evaluation networks train (Lightning's validation bar would sit at "0/?") an inner bar counts
    their epochs with an ETA."""
    import pytorch_lightning as pl

    from lightning_sdc.callbacks import CrossArchEvaluation
    from lightning_sdc.data import RealDataModule
    from lightning_sdc.methods import DC

    def fit(enable: bool) -> str:  # noqa: FBT001
        tty = fake_tty(monkeypatch)
        model = DC("digits", 1, arch_kwargs={"width": 4, "depth": 1}, batch_real=16, eval_epochs=0)
        cross = CrossArchEvaluation(archs=["ConvNetD1"], arch_kwargs={"ConvNetD1": {"width": 4}}, epochs=0,
                                    num_models=1, dirpath=str(tmp_path))
        trainer = pl.Trainer(max_steps=1, max_epochs=-1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=enable, enable_model_summary=False, val_check_interval=1,
                             limit_val_batches=1, num_sanity_val_steps=0, check_val_every_n_epoch=None,
                             callbacks=[cross])
        trainer.fit(model, datamodule=RealDataModule("digits"))
        return tty.getvalue()

    shown = fit(True)
    assert "evaluation networks" in shown and "epoch" in shown
    assert "cross-architecture evaluation" in shown  # CrossArchEvaluation at the end of fit
    # enable_progress_bar=False: test_trainer_without_progress_bar_is_silent (the same switch, without a fit)


def test_phase_and_advance(monkeypatch):
    tty = fake_tty(monkeypatch)
    P.advance()  # no phase open: nothing happens
    with P.phase(total=3, desc="outer") as outer:
        with P.phase(total=2, desc="inner") as inner:
            P.advance()
            P.advance()
        P.advance()
        assert (outer.n, inner.n) == (1, 2)
    assert "outer" in tty.getvalue() and "inner" in tty.getvalue()


def test_coreset_and_difficulty_commands_show_their_phases(monkeypatch, tmp_path, digits):
    from lightning_sdc.coresets.command import coreset_command
    from lightning_sdc.difficulty.command import difficulty_command

    tiny = {"width": 4, "depth": 1}
    tty = fake_tty(monkeypatch)
    coreset_command("forgetting", "digits", 1, str(tmp_path / "c"), epochs=2, arch_kwargs=tiny, eval_epochs=0,
                    eval_arch_kwargs=tiny, eval_augment="none")
    text = tty.getvalue()
    assert "forgetting selection" in text and "evaluate ConvNet" in text and "epoch" in text
    tty = fake_tty(monkeypatch)
    difficulty_command("digits", models=2, epochs=1, arch_kwargs=tiny, out=str(tmp_path / "d"), per_class=2)
    assert "difficulty: 2 × ConvNet" in tty.getvalue() and "difficulty: scoring 20 samples" in tty.getvalue()
    quiet = fake_tty(monkeypatch)
    difficulty_command("digits", models=2, epochs=1, arch_kwargs=tiny, out=str(tmp_path / "q"), per_class=2,
                       quiet=True)
    assert "difficulty:" not in quiet.getvalue()


def test_demo_shows_a_bar_with_eta_for_every_phase(monkeypatch, tmp_path):
    """`lightning-sdc demo` on a terminal: the five phases (two distillations counted in updates, three evaluations
    counted in network epochs) each draw a bar with elapsed<remaining time, in order; Lightning's tips stay off."""
    from lightning_sdc.cli import run

    monkeypatch.chdir(tmp_path)
    tty = fake_tty(monkeypatch)
    written = run(["demo", "--steps", "2", "--num_models", "1", "--epochs", "1"])
    text = tty.getvalue()
    phases = ["[1/5] distil DSA (λ = 0)", "[2/5] evaluate Random", "[3/5] evaluate DSA (λ = 0)",
              "[4/5] distil DSA + SDC", "[5/5] evaluate DSA + SDC"]
    assert [text.index(p) for p in phases] == sorted(text.index(p) for p in phases), text[-2000:]
    for unit in ("update", "epoch"):  # totals: 2 updates; 1 network × (1 + 1) epochs; a rate per unit
        assert re.search(rf"\d/2 \[[^]]*({unit}/s|s/{unit})", text), unit
    assert "<00:00" in text and "Tip" not in text
    assert [p.split("/")[-1] for p in written] == ["dsa.pt", "dsa_sdc.pt", "sets.png"]


def test_update_callback_moves_the_bar_once_per_training_batch():
    moved = []
    callback = P.update_callback(type("Bar", (), {"update": lambda self: moved.append(1)})())
    for i in range(3):
        callback.on_train_batch_end(None, None, None, None, i)
    assert len(moved) == 3
