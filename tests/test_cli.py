"""The command line: top-level help, unknown/refused subcommands, short names, links, seeds, step budget,
packaged config names, the unified-``lightning`` guard. Every README/docs command and every config run in
tests/test_commands.py."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

from lightning_sdc.cli import (
    COMMANDS,
    LIGHTNING_SUBCOMMANDS,
    SUBCOMMANDS,
    UsageError,
    build_cli,
    build_in_memory_cli,
    main,
    packaged_configs,
    resolve_config,
    run,
    usage,
)

ROOT = Path(__file__).resolve().parents[1]
#: a tiny DC run on digits (no training happens unless a test fits it)
TINY = ["--config", "trainer/cpu", "--config", "demo/digits_dc_ipc1", "--model.init_args.arch_kwargs={width: 8, depth: 1}",
        "--model.init_args.batch_real=8"]


def test_help_lists_every_subcommand_with_a_description(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    for name in [*LIGHTNING_SUBCOMMANDS, *SUBCOMMANDS]:
        assert name in lines, name
        assert len(lines[name].split()) >= 4, f"{name} has no description: {lines[name]!r}"
    assert "predict" not in lines
    assert usage() in out


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"lightning-sdc {name}" in out and "usage" in out.lower()


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_top_level_help_line_is_the_commands_own_first_line(name):
    """``lightning-sdc --help`` prints COMMANDS (no imports); it must say what the function's docstring says."""
    import inspect

    from lightning_sdc.cli import command

    assert COMMANDS[name] == inspect.getdoc(command(name)).splitlines()[0].replace("``", "")


def test_unknown_subcommand_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evalute", "x.pt"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'evaluate'" in err
    for name in [*LIGHTNING_SUBCOMMANDS, *SUBCOMMANDS]:
        assert name in err


def test_predict_is_refused_with_the_reason():
    with pytest.raises(UsageError, match="predict: not available: .*lightning-sdc evaluate"):
        run(["predict", "--config", "demo/digits_dc_ipc1"])


def test_console_call_emits_no_lightningcli_args_warning(monkeypatch, capsys):
    """The console script passes sys.argv through: LightningCLI's "args and sys.argv" warning never fires."""
    monkeypatch.setattr(sys, "argv", ["lightning-sdc", "fit", *TINY, "--print_config"])
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as exc:
        warnings.simplefilter("always")
        main()
    assert exc.value.code == 0
    assert not [w for w in caught if "args parameter" in str(w.message)]
    assert "args parameter" not in capsys.readouterr().err


# ---------------------------------------------------------------------- packaged configs
def test_packaged_config_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = ROOT / "lightning_sdc" / "configs" / "dsa" / "fashionmnist_ipc1.yaml"
    for name in ("dsa/fashionmnist_ipc1", "dsa/fashionmnist_ipc1.yaml", "configs/dsa/fashionmnist_ipc1.yaml"):
        assert resolve_config(name).resolve() == target.resolve()
    local = tmp_path / "mine.yaml"
    local.write_text("trainer: {max_steps: 3}\n")
    assert resolve_config("mine.yaml") == Path("mine.yaml")  # a file wins over a packaged name
    with pytest.raises(UsageError, match=r"--config dsa/fashionmnist_ipc2: no such file .*dsa/fashionmnist_ipc1"):
        resolve_config("dsa/fashionmnist_ipc2")


def test_configs_subcommand_lists_the_packaged_configs(capsys):
    names = run(["configs"])
    assert names == packaged_configs() and "dsa/fashionmnist_ipc1" in names and "trainer/cpu" in names
    assert len(names) == len(list((ROOT / "configs").rglob("*.yaml")))
    assert run(["configs", "--group", "trainer"]) == ["trainer/cpu", "trainer/ddp", "trainer/ddp_cpu", "trainer/gpu"]
    with pytest.raises(UsageError, match="no group 'nope'; allowed: datm, dc"):
        run(["configs", "--group", "nope"])


# ---------------------------------------------------------------------- short names and links
@pytest.mark.parametrize("model", ["dsa", "DSA", "lightning_sdc.methods.DSA"])
@pytest.mark.parametrize("data", ["RealDataModule", "realdatamodule"])
def test_short_model_and_data_names(model, data):
    from lightning_sdc.data import RealDataModule
    from lightning_sdc.methods import DSA

    cli = build_cli(["--model", model, "--data", data, "--data.init_args.dataset", "digits",
                     "--model.init_args.ipc", "1", "--trainer.logger=false"], run=False)
    assert type(cli.model) is DSA and type(cli.datamodule) is RealDataModule
    assert cli.model.hparams.dataset == "digits" == cli.datamodule.dataset  # given once, on the DataModule


def test_expert_datamodule_short_name_and_network_given_once(tmp_path):
    from lightning_sdc.experts import ExpertTrajectoryDataModule
    from lightning_sdc.methods import MTT

    cli = build_cli(["--model", "mtt", "--data", "ExpertTrajectoryDataModule", "--data.init_args.dataset", "digits",
                     f"--data.init_args.buffer_dir={tmp_path}", "--data.init_args.zca=true",
                     "--model.init_args.ipc=1", "--model.init_args.arch_kwargs={width: 8, depth: 1}",
                     "--seed_everything=7", "--trainer.logger=false"], run=False)
    model, dm = cli.model, cli.datamodule
    assert type(model) is MTT and type(dm) is ExpertTrajectoryDataModule
    assert dm.arch_kwargs == {"width": 8, "depth": 1} == model.arch_kwargs and dm.arch == model.arch == "ConvNet"
    assert model.hparams.zca is True and dm.zca is True
    assert model.seed == 7 == dm.seed
    # Lightning merges method and DataModule hparams for the logger and refuses any key (but LightningCLI's
    # _class_path) whose values differ in type or value (pytorch_lightning.loggers.utilities._log_hyperparams)
    shared = (model.hparams_initial.keys() & dm.hparams_initial.keys()) - {"_class_path"}
    assert {"dataset", "zca", "arch", "arch_kwargs", "seed"} <= shared
    clashes = [k for k in shared if type(model.hparams_initial[k]) is not type(dm.hparams_initial[k])
               or model.hparams_initial[k] != dm.hparams_initial[k]]
    assert not clashes


@pytest.mark.parametrize("arg, source", [(["--model.init_args.dataset=mnist"], "--data.init_args.dataset"),
                                         (["--model.init_args.seed", "3"], "--seed_everything")])
def test_linked_values_are_given_once(arg, source, tmp_path):
    """jsonargparse would silently overwrite a different value given for a link's target: it is refused, naming the
    source; an equal (redundant) value is accepted."""
    key = arg[0][2:].split("=")[0]
    with pytest.raises(UsageError, match=f"sets {key}=.*, but it follows {source}"):
        run(["fit", *TINY, *arg])
    config = tmp_path / "seed.yaml"
    config.write_text("model:\n  init_args:\n    seed: 4\n    dataset: digits\n")
    with pytest.raises(UsageError, match="seed.yaml sets model.init_args.seed=4, but it follows --seed_everything"):
        build_cli([*TINY, "--config", str(config), "--trainer.logger=false"], run=False)
    cli = build_cli([*TINY, "--config", str(config), "--seed_everything=4", "--trainer.logger=false"], run=False)
    assert cli.model.seed == 4 and cli.model.hparams.dataset == "digits"


def test_seed_everything_seeds_the_method_and_two_seeds_give_different_sets():
    def images(seed: int) -> torch.Tensor:
        cli = build_in_memory_cli(["trainer/cpu", "demo/digits_dc_ipc1"], seed,
                                  ["--trainer.max_steps=1", *TINY[4:]])
        assert cli.model.seed == seed
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        return cli.model.synset.images.detach().clone()

    a, b, a2 = images(1), images(2), images(1)
    assert torch.equal(a, a2)
    assert not torch.allclose(a, b)


def test_seed_everything_true_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", *TINY, "--seed_everything=true", "--trainer.logger=false"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lightning-sdc: error: --seed_everything true draws a random seed")
    assert "give an integer" in err[-1]


# ---------------------------------------------------------------------- the step budget
@pytest.mark.parametrize("args, match", [
    (["--trainer.max_epochs=1", "--trainer.max_steps=-1"], r"--trainer.max_epochs 1: distillation has no epochs"),
    (["--trainer.max_epochs=1"], r"--trainer.max_epochs 1: .*--trainer.max_steps N"),
    (["--trainer.max_steps=-1"], r"would never end"),
])
def test_epoch_budgets_and_endless_runs_are_refused(args, match):
    with pytest.raises(UsageError, match=match):
        run(["fit", *TINY, *args])


def test_max_time_alone_is_a_budget():
    cli = build_cli([*TINY, "--trainer.max_steps=-1", "--trainer.max_time=00:00:00:05", "--trainer.logger=false"],
                    run=False)
    assert cli.trainer.max_steps == -1


# ---------------------------------------------------------------------- the unified `lightning` package
def test_unified_lightning_class_paths_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", *TINY, "--trainer.callbacks=lightning.pytorch.callbacks.ModelCheckpoint"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unified `lightning` package" in err and "pytorch-lightning" in err
    assert "pytorch_lightning.callbacks.ModelCheckpoint" in err
    config = tmp_path / "cb.yaml"
    config.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.EarlyStopping\n")
    with pytest.raises(UsageError, match=r"--config .*cb.yaml names 'lightning.pytorch.callbacks.EarlyStopping'"):
        run(["fit", *TINY, "--config", str(config)])


def test_unified_lightning_callback_in_the_api_is_one_clear_error():
    import pytorch_lightning as pl

    from lightning_sdc.data import RealDataModule
    from lightning_sdc.methods import DC

    class ModelCheckpoint(pl.Callback):  # stands for lightning.pytorch.callbacks.ModelCheckpoint
        pass

    ModelCheckpoint.__module__ = "lightning.pytorch.callbacks.model_checkpoint"
    model = DC("digits", 1, arch_kwargs={"width": 8, "depth": 1}, batch_real=8)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, limit_val_batches=0, callbacks=[ModelCheckpoint()])
    with pytest.raises(TypeError, match=r"unified `lightning` package; lightning_sdc uses `pytorch-lightning`: use "
                                        r"pytorch_lightning\.callbacks\.model_checkpoint\.ModelCheckpoint"):
        trainer.fit(model, RealDataModule("digits"))
    assert trainer.global_step == 0


# ---------------------------------------------------------------------- loggers
def test_tensorboard_logger_works(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard", reason="the `tensorboard` extra (installed by the dev extras)")
    monkeypatch.chdir(tmp_path)
    cli = run(["fit", *TINY, "--trainer.logger=TensorBoardLogger", "--trainer.logger.save_dir=tb",
               "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--model.init_args.eval_num_models=1",
               "--model.init_args.eval_epochs=1", "--trainer.enable_progress_bar=false"])
    assert cli.trainer.global_step == 2
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    synset = events[0].parent / "synthetic" / "synset.pt"
    assert synset.is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert "eval/acc_mean" in tags and "hp_metric" not in tags
    out = capsys.readouterr().out.splitlines()
    from lightning_sdc.data import load_dataset

    test_images = len(load_dataset("digits").test_labels)  # the whole test split, not the set's 10 images
    assert re.fullmatch(rf"accuracy \d+\.\d\d ± \d+\.\d\d % over 1 networks \(digits test, {test_images} images\)",
                        out[-2])
    assert out[-1] == f"wrote {synset.relative_to(tmp_path)}"
    assert not list((tmp_path / "tb").rglob("*.lock"))  # the run's lock leaves with the run


def test_theory_prints_what_it_wrote(tmp_path, capsys):
    main(["theory", "--figure", "4c", "--quick", "true", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'fig4c.png'}" in out


def test_api_fit_without_a_step_budget_is_refused_and_limited_epochs_end():
    """The Python API: Trainer(max_epochs=1) alone would never end (an epoch of an endless stream) -> one clear
    error before any step; with limit_train_batches an epoch has an end and the run stops."""
    import pytorch_lightning as pl

    from lightning_sdc.data import RealDataModule
    from lightning_sdc.methods import DC

    def fit(**kw):
        model = DC("digits", 1, arch_kwargs={"width": 8, "depth": 1}, batch_real=8)
        trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, limit_val_batches=0, **kw)
        trainer.fit(model, RealDataModule("digits"))
        return trainer

    with pytest.raises(ValueError, match=r"max_steps=-1, max_epochs=1\) would never end: .*give max_steps"):
        fit(max_epochs=1)
    assert fit(max_epochs=1, limit_train_batches=2).global_step == 2


def test_console_errors_are_one_line_with_the_users_message(capsys, monkeypatch, tmp_path) -> None:
    """main(): a bad value or file is one line on stderr (type + message, jsonargparse's union wrapping removed),
    exit status 1; LIGHTNING_SDC_TRACEBACK=1 gives the traceback instead."""
    from lightning_sdc.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_SDC_TRACEBACK", raising=False)
    bad_fit = ["fit", "--model", "dsa", "--model.init_args.ipc", "1", "--model.init_args.momentum_img", "1.5",
               "--data", "RealDataModule", "--data.init_args.dataset", "digits", "--trainer.max_steps", "2"]
    for args, expected in ((["evaluate", "missing.pt"], "FileNotFoundError: missing.pt: no such file"),
                           (bad_fit, "ValueError: momentum_img must be a number in [0, 1), got 1.5")):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 1
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning-sdc: error:")]
        assert len(err) == 1 and expected in err[0] and "Union subtypes" not in err[0], err
    monkeypatch.setenv("LIGHTNING_SDC_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        main(["evaluate", "missing.pt"])


# ----------------------------------------------------------------------------------- bad values, one line
def test_a_bare_logger_name_gets_the_default_save_dir() -> None:
    from lightning_sdc.cli import rewrite_args

    args = rewrite_args(["fit", "--trainer.logger", "TensorBoardLogger", "--trainer.default_root_dir", "runs/a"])
    assert args[-1] == "--trainer.logger.save_dir=runs/a"
    given = ["fit", "--trainer.logger=CSVLogger", "--trainer.logger.save_dir=elsewhere"]
    assert rewrite_args(given) == given  # a save_dir the user gave is kept
    assert rewrite_args(["fit", "--trainer.logger=CSVLogger"])[-1] == "--trainer.logger.save_dir=."


def test_jsonargparse_union_errors_become_one_line_with_the_full_key() -> None:
    from lightning_sdc.cli import _one_line

    text = ('Parser key "model":\n  Does not validate against any of the Union subtypes\n  Subtypes: [A, None]\n'
            "  Errors:\n    - Problem with given class_path 'lightning_sdc.methods.DC':\n"
            '        Parser key "ipc":\n          Expected a <class \'int\'>. Got value: abc\n'
            "    - Expected a <class 'NoneType'>\n  Given value type: <class 'NestedArg'>\n"
            "  Given value: NestedArg(key='ipc', val='abc')")
    assert _one_line(ValueError(text)) == "model.init_args.ipc: expected an integer. Got value: abc"


def test_a_missing_logger_package_names_the_extra(monkeypatch, capsys) -> None:
    import lightning_sdc.cli as cli_module

    def no_tensorboard(args=None):
        raise ModuleNotFoundError("Neither `tensorboard` nor `tensorboardX` is available.")

    monkeypatch.setattr(cli_module, "run", no_tensorboard)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--trainer.logger", "TensorBoardLogger"])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'lightning-sdc[tensorboard]' adds it" in err


# ---------------------------------------------------------------------- one table, one list syntax, quiet runs
def test_every_subcommand_imports_its_function() -> None:
    from lightning_sdc.cli import COMMANDS, command

    assert list(COMMANDS) == [*LIGHTNING_SUBCOMMANDS, *SUBCOMMANDS]
    for name in SUBCOMMANDS:
        function = command(name)
        assert callable(function) and function.__doc__, name
    assert all(command(name) is build_cli for name in LIGHTNING_SUBCOMMANDS)


def _list_options() -> list[tuple[str, str]]:
    from lightning_sdc.cli import command, list_options

    return [(name, option) for name in SUBCOMMANDS for option in list_options(command(name))]


def test_the_list_options_are_found() -> None:
    found = set(_list_options())
    assert {("evaluate", "--archs"), ("evaluate", "--metrics"), ("reproduce", "--seeds"), ("reproduce", "--only"),
            ("compare", "--overrides")} <= found


@pytest.mark.parametrize("name, option", _list_options())
def test_every_list_option_takes_both_forms(name, option) -> None:
    """``--x A B`` and ``--x '[A, B]'`` parse to the same list, with the option's own type."""
    import typing

    from jsonargparse import ArgumentParser

    from lightning_sdc.cli import POSITIONAL, command, list_options, plain_args

    function = command(name)
    hint = typing.get_type_hints(function)[option[2:]]
    values = ["1", "2"] if "int" in str(hint) else ["a=1", "model.init_args.arch_kwargs={width: 8, depth: 2}"]
    expected = [int(v) for v in values] if "int" in str(hint) else values
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument(option, type=hint)
    lists, positional = list_options(function), name in POSITIONAL
    for argv in ([option, *values], [option, "[" + ", ".join(map(repr, values)) + "]"],
                 [option, "[" + values[0] + ",", repr(values[1]) + "]"]):  # the last: split by the shell
        parsed = parser.parse_args(plain_args(argv, lists, positional=positional))
        assert getattr(parsed, option[2:]) == expected, (argv, plain_args(argv, lists))


def test_flags_alone_are_true_and_lists_end_at_the_next_option() -> None:
    from lightning_sdc.cli import plain_args

    assert plain_args(["--quiet", "--seeds", "0", "1", "--dry_run"], ["--seeds"], ["--quiet", "--dry_run"]) == [
        "--quiet=true", "--seeds", "[0, 1]", "--dry_run=true"]
    assert plain_args(["--quiet", "false", "--seeds=[0,1]"], ["--seeds"], ["--quiet"]) == ["--quiet", "false",
                                                                                           "--seeds=[0,1]"]


@pytest.mark.parametrize("args, expected", [
    (["fit", *TINY, "--model.init_args.ipc", "abc"], "model.init_args.ipc: expected an integer. Got value: abc"),
    (["evaluate", "x.pt", "--lr", "nan"], "lr: expected a number such as 0.01 (nan and inf are not numbers here) "
                                          "(given: nan)"),
    (["fit", *TINY, "--model.init_args.arch_kwargs", "{width:", "8,", "depth:", "2}"],
     "the shell split the value at its spaces; quote it"),
    (["fit", "--model", "lightning.pytorch.LightningModule"], "write 'pytorch_lightning.LightningModule'"),
])
def test_parser_rejections_are_one_line(args, expected, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


@pytest.mark.parametrize("name", [*sorted(SUBCOMMANDS), "fit"])
def test_help_is_plain_text(name, capsys) -> None:
    with pytest.raises(SystemExit):
        main([name, "--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":class:" not in out and ":func:" not in out


def test_print_config_shows_the_callbacks_fit_adds(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", *TINY, "--print_config"])
    out = capsys.readouterr().out
    for name in ("PreemptionCheckpoint", "SyntheticSetExporter", "UpdateProgressBar"):
        assert f"class_path: lightning_sdc.callbacks.{name}" in out


def test_lightning_tips_and_repeated_banners_are_dropped() -> None:
    import logging

    from lightning_sdc.cli import quiet_lightning_noise

    quiet_lightning_noise()
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")

    def shown(message: str) -> bool:
        return logger.filter(logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, (), None))

    assert not shown("💡 Tip: For seamless cloud logging ... litlogger")
    assert shown("GPU available: False (1f3a)") and not shown("GPU available: False (1f3a)")
    # this library's own lines (the GM engine of each run) are never dropped
    assert shown("GM gradient engine: eager (1f3a)") and shown("GM gradient engine: eager (1f3a)")
