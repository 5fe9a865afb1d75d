"""``lightning-sdc evaluate`` as a user types it: every set layout,
``--archs`` as a plain list, network options, the set's own protocol as defaults, finished architectures kept
when one fails, and one-line errors for bad files."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_sdc.cli import run
from lightning_sdc.evaluation import EvalResult
from lightning_sdc.evaluation import command as cmd
from lightning_sdc.evaluation.set_files import EXPECTED, SetFileError, load_set
from lightning_sdc.synthetic import SyntheticSet, random_coreset

TINY = {"width": 4, "depth": 1}
PROTOCOL = {"method": "DSA", "arch": "ConvNet", "arch_kwargs": TINY, "num_models": 1, "epochs": 1, "lr": None,
            "batch_size": 256, "augment": "none", "dsa_strategy": None}
SIX = ["ConvNet", "ResNet18", "VGG11", "AlexNet", "LeNet", "MLP"]


@pytest.fixture
def digits_set(digits) -> SyntheticSet:
    s = random_coreset(digits, 1, seed=0)
    s.eval_protocol = dict(PROTOCOL)
    return s


class Spy:
    """Stands in for ``evaluate_table`` in the command: records one call per architecture, returns a fixed
    accuracy per model (or, for ``fail``, the failure ``keep_going`` gives)."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[dict] = []
        self.fail = fail

    def __call__(self, synset, test, archs, **kw):
        results, failures = [], []
        for arch in archs:
            self.calls.append({"archs": [arch], **kw, "arch_kwargs": kw["arch_kwargs"][arch]})
            if arch == self.fail:
                failures.append((arch, "RuntimeError: CUDA out of memory (simulated)"))
                continue
            results.append(EvalResult(arch=arch, accuracies=[0.5] * kw["num_models"], epochs=kw["epochs"],
                                      lr=kw["lr"] or 0.01))
        return results, failures


# ------------------------------------------------------------------------------------------- argument forms
def test_archs_as_a_plain_list_or_bracketed_list(tmp_path, digits_set, monkeypatch):
    """``--archs A B`` (ending at the set's path or the next option), ``--archs [A, B]`` split by the shell, and
    ``--archs [A,B]`` reach the evaluation alike (the CLI's one list syntax)."""
    path = str(digits_set.save(tmp_path / "synset.pt"))
    for argv in (["--archs", "ConvNet", "ConvNetD1", path, "--epochs", "3"],
                 ["--archs", "[ConvNet,", "ConvNetD1]", path],
                 [path, "--archs", "[ConvNet,ConvNetD1]", "--quiet"], [path, "--archs", "ConvNet", "ConvNetD1"]):
        spy = Spy()
        monkeypatch.setattr(cmd, "evaluate_table", spy)
        run(["evaluate", *argv])
        assert [c["archs"][0] for c in spy.calls] == ["ConvNet", "ConvNetD1"], argv


def test_six_archs_exactly_as_the_readme_writes_them(tmp_path, monkeypatch):
    """``--archs ConvNet ResNet18 VGG11 AlexNet LeNet MLP`` through the real CLI: every network is built and run on
    a dummy batch of the 1×28×28 set, then trained (here: a spy) with the set's own protocol."""
    s = SyntheticSet.blank(num_classes=10, ipc=1, image_shape=(1, 28, 28), dataset="mnist",
                           eval_protocol={**PROTOCOL, "epochs": 1000, "augment": "dsa"})
    s.init_noise(torch.Generator().manual_seed(0))
    path = s.save(tmp_path / "synset.pt")
    fake = SimpleNamespace(image_shape=(1, 28, 28), num_classes=10, test_images=torch.randn(4, 1, 28, 28),
                           test_labels=torch.arange(4))
    monkeypatch.setattr("lightning_sdc.data.load_dataset", lambda name, root=None, **kw: fake)
    spy = Spy()
    monkeypatch.setattr(cmd, "evaluate_table", spy)
    table = run(["evaluate", str(path), "--archs", *SIX])
    assert [c["archs"][0] for c in spy.calls] == SIX
    assert all(c["epochs"] == 1000 and c["augment"] == "dsa" for c in spy.calls)  # the set's method's protocol
    assert spy.calls[0]["arch_kwargs"] == TINY and all(c["arch_kwargs"] == {} for c in spy.calls[1:])
    assert all(f"| {a} |" in table for a in SIX)


# ------------------------------------------------------------------------------------------- real evaluations
def test_set_file_scored_with_its_own_network_options_and_a_progress_bar(tmp_path, digits_set, monkeypatch):
    path = digits_set.save(tmp_path / "synset.pt")
    built = []
    import lightning_sdc.models as models

    real_build = models.build_network
    monkeypatch.setattr(models, "build_network", lambda *a, **kw: built.append((a[0], kw)) or real_build(*a, **kw))

    class TTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = TTY()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.delenv("LIGHTNING_SDC_QUIET", raising=False)
    table = run(["evaluate", str(path), "--archs", "ConvNet", "ConvNetD1", "--arch_kwargs", "{ConvNet: {width: 4, "
                 "depth: 1}, ConvNetD1: {width: 2}}", "--out", str(tmp_path / "lambda0.01")])
    assert "| ConvNet |" in table and "| ConvNetD1 |" in table and "epochs 1," in table
    assert any(name == "ConvNet" and kw.get("width") == 4 and kw.get("depth") == 1 for name, kw in built)
    assert any(name == "ConvNetD1" and kw.get("width") == 2 for name, kw in built)
    assert "evaluate ConvNet" in tty.getvalue() and "epoch" in tty.getvalue()
    # a dot in the stem is part of the name: lambda0.01.csv, not lambda0.csv
    assert sorted(p.name for p in tmp_path.glob("lambda0*")) == ["lambda0.01.csv", "lambda0.01.md"]
    csv = (tmp_path / "lambda0.01.csv").read_text()
    assert csv.count("\n") == 3
    # the recorded options are the default: a width-4 set is scored on width-4 networks
    built.clear()
    run(["evaluate", str(path), "--quiet"])  # a bare flag, as users type it
    assert any(name == "ConvNet" and kw.get("width") == 4 and kw.get("depth") == 1 for name, kw in built)


def test_tm_pairs_mtt_datm_and_this_librarys_export(tmp_path, digits, digits_set, monkeypatch):
    spy = Spy()
    monkeypatch.setattr(cmd, "evaluate_table", spy)
    # this library's export: synset.pt beside the pair gives the metadata and protocol
    export = tmp_path / "export"
    digits_set.save(export / "synset.pt")
    digits_set.export_tm(export)
    run(["evaluate", str(export / "images_best.pt")])
    assert spy.calls[-1]["epochs"] == PROTOCOL["epochs"] and spy.calls[-1]["arch_kwargs"] == TINY
    # MTT: hard labels, no lr file -> TM defaults (1000 epochs, DSA, batch 256, lr 0.01)
    mtt = tmp_path / "mtt"
    mtt.mkdir()
    torch.save(digits_set.images.detach(), mtt / "images_best.pt")
    torch.save(digits_set.labels.clone(), mtt / "labels_best.pt")
    loaded = load_set(mtt, dataset="digits")
    assert loaded.layout == "tm-pair" and loaded.synset.label_mode == "hard" and loaded.synset.syn_lr is None
    assert loaded.synset.zca_state is None and load_set(mtt, dataset="digits", zca=True).synset.zca_state is not None
    with pytest.raises(ValueError, match="--dataset 'mnist' but the set was distilled from 'digits'"):
        load_set(export / "images_best.pt", dataset="mnist")
    run(["evaluate", str(mtt), "--dataset", "digits"])
    c = spy.calls[-1]
    assert (c["epochs"], c["augment"], c["batch_size"], c["lr"]) == (1000, "dsa", 256, 0.01)
    # DATM: (N, K) logits and a learned lr -> soft targets, lr from lr_best.pt, batch 128
    datm = tmp_path / "datm"
    datm.mkdir()
    torch.save(digits_set.images.detach(), datm / "images_best.pt")
    logits = torch.randn(10, 10)
    torch.save(logits, datm / "labels_best.pt")
    torch.save(torch.tensor(0.03, requires_grad=True), datm / "lr_best.pt")
    loaded = load_set(datm / "images_best.pt", dataset="digits")
    assert loaded.synset.label_mode == "soft" and torch.allclose(loaded.synset.targets(), logits.softmax(1))
    assert float(loaded.synset.syn_lr) == pytest.approx(0.03) and loaded.protocol["batch_size"] == 128
    run(["evaluate", str(datm / "labels_best.pt"), "--dataset", "digits"])
    assert spy.calls[-1]["batch_size"] == 128
    # a real (tiny) training of the DATM pair: soft targets and the learned lr reach the protocol
    monkeypatch.undo()
    table = run(["evaluate", str(datm), "--dataset", "digits", "--epochs", "0", "--num_models", "1",
                 "--arch_kwargs", "{width: 4, depth: 1}"])
    assert "| ConvNet |" in table and "batch 128" in table


# ------------------------------------------------------------------------------------------- failures
def test_failing_architecture_keeps_the_finished_ones(tmp_path, digits_set, monkeypatch, capsys):
    """Issue 17 point 5: ConvNetD1 fails mid-run (simulated OOM); ConvNet and ConvNetD2 are printed and written,
    and the command raises naming the failure."""
    path = digits_set.save(tmp_path / "synset.pt")
    monkeypatch.setattr(cmd, "evaluate_table", Spy(fail="ConvNetD1"))
    with pytest.raises(cmd.EvaluationError, match=r"ConvNetD1: RuntimeError: CUDA out of memory.*finished: "
                                                   r"ConvNet, ConvNetD2"):
        run(["evaluate", str(path), "--archs", "[ConvNet,", "ConvNetD1,", "ConvNetD2]", "--out", str(tmp_path / "t")])
    printed = capsys.readouterr().out
    assert "| ConvNet |" in printed and "| ConvNetD2 |" in printed and "| ConvNetD1 |" not in printed
    assert "ConvNetD2" in (tmp_path / "t.csv").read_text()


def test_every_arch_is_validated_before_any_training(tmp_path, digits_set, monkeypatch):
    path = digits_set.save(tmp_path / "synset.pt")
    spy = Spy()
    monkeypatch.setattr(cmd, "evaluate_table", spy)
    with pytest.raises(KeyError, match="X.*allowed"):
        run(["evaluate", str(path), "--archs", "[ConvNet,", "X,", "LeNet]"])
    with pytest.raises(ValueError, match=r"architecture LeNet cannot score this set of 1×8×8 images"):
        run(["evaluate", str(path), "--archs", "ConvNet", "LeNet"])  # LeNet needs 28×28 or 32×32
    with pytest.raises(ValueError, match=r"ConvNetD1 with \{'widht': 3\}.*widht"):
        run(["evaluate", str(path), "--archs", "ConvNetD1", "--arch_kwargs", "{widht: 3}"])
    assert spy.calls == []


# ------------------------------------------------------------------------------------------- bad files
def _err(path, match, **kw):
    with pytest.raises((SetFileError, FileNotFoundError, ValueError)) as info:
        load_set(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path if Path(path).is_dir() else Path(path).parent)), msg
    assert match in msg, msg
    return msg


def test_bad_files_get_one_line_naming_the_file_and_the_layout(tmp_path, digits_set):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert EXPECTED in _err(tmp_path / "other.pt", "without the 'format' marker")
    torch.save(torch.zeros(10, 1, 8, 8), tmp_path / "bare.pt")
    assert EXPECTED in _err(tmp_path / "bare.pt", "a bare tensor")
    (tmp_path / "empty").mkdir()
    assert EXPECTED in _err(tmp_path / "empty", "no .pt set files")
    pair = tmp_path / "pair"
    pair.mkdir()
    torch.save(digits_set.images.detach(), pair / "images_best.pt")
    _err(pair / "images_best.pt", "missing labels file")
    torch.save(torch.arange(9), pair / "labels_best.pt")
    _err(pair, "labels_best.pt: labels of shape (9,) and dtype torch.int64 for 10 images; allowed: (10,) integer "
               "classes or (10, 10) float logits", dataset="digits")
    torch.save(digits_set.labels.clone(), pair / "labels_best.pt")
    _err(pair, "pass --dataset NAME")  # a pair records no dataset
    torch.save(digits_set.images.detach(), pair / "images_zca_best.pt")
    _err(pair / "images_zca_best.pt", "evaluate the images_best.pt beside it with --zca")
    torch.save(torch.tensor(-1.0), pair / "lr_best.pt")
    _err(pair, "lr -1.0 is not a finite number > 0", dataset="digits")


def test_unchecked_inputs_are_refused_on_load(tmp_path, digits_set):
    """Issue 17 point 7: NaN pixel, 11 images for 10 classes, out-of-range labels — refused on load, naming the file
    (set files through ``SyntheticSet.load`` and ``evaluate`` alike)."""
    d = digits_set.to_dict()
    d["images"][3, 0, 2, 2] = float("nan")
    torch.save(d, tmp_path / "nan.pt")
    _err(tmp_path / "nan.pt", "1 non-finite (NaN/inf) value(s) in the images")
    with pytest.raises(ValueError, match=r"nan\.pt: 1 non-finite"):
        SyntheticSet.load(tmp_path / "nan.pt")
    d = digits_set.to_dict()
    d["images"] = torch.cat([d["images"], d["images"][:1]])
    d["labels"] = torch.cat([d["labels"], d["labels"][:1]])
    torch.save(d, tmp_path / "eleven.pt")
    _err(tmp_path / "eleven.pt", "11 images for 10 classes with ipc=1")
    with pytest.raises(ValueError, match=r"eleven\.pt: 11 images"):
        SyntheticSet.load(tmp_path / "eleven.pt")
    d = digits_set.to_dict()
    d["labels"][4] = 12
    torch.save(d, tmp_path / "range.pt")
    _err(tmp_path / "range.pt", "label 12 is out of range; allowed: 0 … 9 (10 classes)")
    with pytest.raises(ValueError, match="label 12 is out of range"):
        run(["evaluate", str(tmp_path / "range.pt")])
    pair = tmp_path / "pair"
    pair.mkdir()
    torch.save(digits_set.images.detach()[:10], pair / "images_best.pt")
    bad = digits_set.labels.clone()
    bad[0] = -3
    torch.save(bad, pair / "labels_best.pt")
    _err(pair, "label -3 is out of range; allowed: 0 … 9", dataset="digits")
    nan_images = digits_set.images.detach().clone()
    nan_images[0, 0, 0, 0] = float("inf")
    torch.save(nan_images, pair / "images_best.pt")
    torch.save(digits_set.labels.clone(), pair / "labels_best.pt")
    _err(pair, "non-finite", dataset="digits")


def test_methods_record_their_protocol_in_the_saved_set(tmp_path, digits):
    """The set a run saves carries its method's evaluation protocol (``evaluate`` defaults to it)."""
    import pytorch_lightning as pl

    from lightning_sdc.callbacks import SyntheticSetExporter
    from lightning_sdc.data import RealDataModule
    from lightning_sdc.methods import DC, DSA

    assert DSA("digits", 1).eval_protocol()["epochs"] == 1000 and DSA("digits", 1).eval_protocol()["augment"] == "dsa"
    assert DC("mnist", 1).eval_protocol()["epochs"] == 1000 and DC("fashionmnist", 1).eval_protocol()["epochs"] == 300
    model = DC("digits", 1, arch_kwargs=TINY, batch_real=16)
    trainer = pl.Trainer(max_steps=1, max_epochs=-1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[SyntheticSetExporter(dirpath=str(tmp_path), formats=["lightning_sdc"], png=False)])
    trainer.fit(model, datamodule=RealDataModule("digits"))
    loaded = load_set(tmp_path / "synset.pt")
    assert loaded.protocol["method"] == "DC" and loaded.protocol["arch_kwargs"] == TINY
    assert loaded.protocol["epochs"] == model.eval_protocol()["epochs"]
    assert Path(tmp_path / "synset.pt").exists()


# ------------------------------------------------------------------------------------ set layouts, --out, --metrics
def _lightning_sdc(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """``lightning-sdc ARGS`` as a user runs it: the console script, in a child process."""
    import subprocess

    exe = Path(sys.executable).with_name("lightning-sdc")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    return proc.returncode, proc.stdout, proc.stderr


def _saved(tmp_path, digits_set, name, **changes):
    d = {**digits_set.to_dict(), **changes}
    torch.save(d, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize(("change", "names"), [
    ({"images": "int8"}, ("dtype torch.int8", "allowed: an (N, C, H, W) tensor of float16, bfloat16, float32")),
    ({"images": "complex"}, ("dtype torch.complex64", "float16, bfloat16, float32 or float64")),
    ({"images": "x1e30"}, ("|x| = 1e+30", "allowed: |x| <= 1000 in the dataset's normalised space")),
    ({"labels": "zeros"}, ("not class-major", "row 1 has label 0, expected 1", "rows per class [10, 0,")),
    ({"eval_protocol": {"num_models": 0}}, ("recorded eval_protocol num_models=0", "allowed: an integer >= 1")),
    ({"eval_protocol": {"epochs": -5}}, ("recorded eval_protocol epochs=-5", "allowed: an integer >= 0")),
])
def test_bad_set_files_are_refused_in_one_line_before_compute(tmp_path, digits_set, change, names):
    """Issue #25 items 1-2: through the console script, exit status 1, one error line naming the file."""
    d = digits_set.to_dict()
    value = next(iter(change.values()))
    conv = {"int8": lambda: d["images"].to(torch.int8), "complex": lambda: d["images"].to(torch.complex64),
            "x1e30": lambda: torch.full((10, 1, 8, 8), 1e30), "zeros": lambda: torch.zeros(10, dtype=torch.long)}
    key = next(iter(change))
    path = _saved(tmp_path, digits_set, "bad.pt", **{key: conv[value]() if isinstance(value, str) else value})
    code, out, err = _lightning_sdc("evaluate", str(path))
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert code == 1 and out == "" and len(lines) == 1 and f"{path}:" in lines[0], err
    assert all(n in lines[0] for n in names), lines[0]


def test_duplicate_archs_and_unwritable_out_are_refused_before_training(tmp_path, digits_set, monkeypatch):
    path = digits_set.save(tmp_path / "synset.pt")
    spy = Spy()
    monkeypatch.setattr(cmd, "evaluate_table", spy)
    with pytest.raises(ValueError, match=r"names ConvNet more than once; allowed: each architecture once"):
        run(["evaluate", str(path), "--archs", "ConvNet", "convnet"])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"--out='.*afile/res\.md' lies under the file '.*afile'"):
        run(["evaluate", str(path), "--out", str(tmp_path / "afile" / "res")])
    (tmp_path / "table.md").mkdir()
    with pytest.raises(ValueError, match=r"--out='.*table\.md' is a directory"):
        run(["evaluate", str(path), "--out", str(tmp_path / "table")])
    with pytest.raises(ValueError, match=r"--out='.*afile/sets' cannot be created"):
        run(["coreset", "--method", "random", "--dataset", "digits", "--ipc", "1", "--out", str(tmp_path / "afile" /
                                                                                            "sets")])
    assert spy.calls == []


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_keeps_the_finished_architectures_rows(tmp_path, digits_set, signame):
    """Issue #25 item 0/6: SIGTERM (or Ctrl-C) while the second architecture trains: exit 143 (130), the first
    one's row on disk."""
    import os
    import signal
    import subprocess
    import time

    path = digits_set.save(tmp_path / "synset.pt")
    exe = Path(sys.executable).with_name("lightning-sdc")
    proc = subprocess.Popen([str(exe), "evaluate", str(path), "--archs", "ConvNet", "ConvNetD1", "--epochs", "3000",
                             "--num_models", "1", "--arch_kwargs", "{width: 4, depth: 1}", "--out",
                             str(tmp_path / "res")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while not (tmp_path / "res.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    signum = getattr(signal, signame)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    rows = (tmp_path / "res.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("ConvNet,") and signame in err


def test_metrics_and_table_report_one_accuracy_and_the_csv_holds_both(tmp_path, digits_set, monkeypatch):
    """#24 item 7: the metrics' set accuracy is the table's (the same networks; DD-Ranking's random subset gets the
    set's dataset augmentation too), the CSV holds the DD-Ranking columns and the settings that ran."""
    import csv

    monkeypatch.setenv("LIGHTNING_SDC_CACHE", str(tmp_path / "cache"))
    path = digits_set.save(tmp_path / "synset.pt")
    table = run(["evaluate", str(path), "--epochs", "2", "--num_models", "2", "--augment", "dsa", "--metrics", "hlr",
                 "ior", "lrs", "--full_data_epochs", "1", "--out", str(tmp_path / "res")])
    row = next(csv.DictReader((tmp_path / "res.csv").open()))
    acc = table.split("| ConvNet | ")[1].split(" ±")[0]
    assert f"| ConvNet | {acc} |" in table.split("DD-Ranking metrics")[1]  # syn (%) = the table's accuracy
    assert {"hlr_mean", "ior_std", "lrs_mean", "random_mean", "full_data"} <= set(row)
    assert (row["num_models"], row["epochs"], row["augment"], row["test_images"], row["seed"]) == ("2", "2", "dsa",
                                                                                                   "359", "0")
    assert "num_models 2, epochs 2, lr 0.01, augment dsa" in (tmp_path / "res.md").read_text()


def test_per_network_accuracies_equal_one_evaluate_table_call(tmp_path, digits, digits_set, monkeypatch):
    """The command trains each architecture in turn (to keep finished rows): the same networks as one call."""
    from lightning_sdc.evaluation import evaluate_table

    path = digits_set.save(tmp_path / "synset.pt")
    got = []
    monkeypatch.setattr(cmd, "evaluate_table", lambda *a, **k: got.append(evaluate_table(*a, **k)) or got[-1])
    run(["evaluate", str(path), "--archs", "ConvNet", "ConvNetD1", "--epochs", "2", "--num_models", "2",
         "--augment", "dsa"])
    want, _ = evaluate_table(digits_set, digits, ["ConvNet", "ConvNetD1"], num_models=2, epochs=2, augment="dsa",
                             lr=0.01, batch_size=256, arch_kwargs={"ConvNet": TINY, "ConvNetD1": {}})
    assert [torch.equal(torch.tensor(r.accuracies), torch.tensor(w.accuracies)) for (r,), _ in got for w in want
            if w.arch == r.arch] == [True, True]


def test_content_decides_the_layout_and_foreign_sets_are_reordered(tmp_path, digits_set, capsys):
    """#25 item 4: a complete set file named labels_x.pt is a set file; a pair with shuffled labels is reordered."""
    path = digits_set.save(tmp_path / "labels_x.pt")
    assert load_set(path).layout == "synset"
    pair = tmp_path / "pair"
    pair.mkdir()
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    torch.save(digits_set.images.detach()[order], pair / "images_s.pt")
    torch.save(digits_set.labels[order], pair / "labels_s.pt")
    loaded = load_set(pair / "labels_s.pt", dataset="digits")
    assert torch.equal(loaded.synset.images, digits_set.images) and "rows reordered by class" in capsys.readouterr().err


def test_dc_result_files_and_image_folders_are_scored(tmp_path, digits_set):
    """#24 item 9: DC's res_*.pt (dataset from its name) and a folder of PNGs, one sub-folder per class."""
    from torchvision.utils import save_image

    res = tmp_path / "res_DC_digits_ConvNet_1ipc.pt"
    torch.save({"data": [[digits_set.images.detach(), digits_set.labels.clone()]] * 2,
                "accs_all_exps": {"ConvNet": [0.5, 0.6]}}, res)
    loaded = load_set(res)
    assert loaded.layout == "dc-res" and loaded.synset.dataset == "digits"
    assert torch.equal(loaded.synset.images, digits_set.images)
    code, out, err = _lightning_sdc("evaluate", str(res), "--epochs", "0", "--num_models", "1")
    assert code == 0 and "| ConvNet |" in out and "holds 2 experiments' sets; scoring the first" in err
    res.write_bytes(res.read_bytes()[:100])
    code, out, err = _lightning_sdc("evaluate", str(res))
    assert code == 1 and f"cannot read synthetic set {res}: corrupt or truncated" in err
    folder = tmp_path / "folder"
    for c in range(10):
        (folder / str(c)).mkdir(parents=True)
        save_image(digits_set.pixels()[c], folder / str(c) / "0.png")
    loaded = load_set(folder, dataset="digits")
    assert loaded.layout == "image-folder" and torch.equal(loaded.synset.labels, digits_set.labels)
    assert torch.allclose(loaded.synset.pixels(), digits_set.pixels(), atol=1 / 255 + 1e-6)
    code, out, err = _lightning_sdc("evaluate", str(folder), "--dataset", "digits", "--epochs", "0", "--num_models",
                                    "1")
    assert code == 0 and "| ConvNet |" in out, err
    save_image(torch.zeros(1, 9, 9), folder / "3" / "0.png")
    code, out, err = _lightning_sdc("evaluate", str(folder), "--dataset", "digits")
    assert code == 1 and "3/0.png: an image of 9×9 pixels; allowed: 8×8, the size of dataset 'digits'" in err


def test_out_on_a_read_only_filesystem_is_refused_before_training(tmp_path, digits_set, monkeypatch):
    """#25 item 6: a read-only ``--out`` directory (a read-only tmpfs: needs root) fails before any network."""
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        path = digits_set.save(tmp_path / "synset.pt")
        spy = Spy()
        monkeypatch.setattr(cmd, "evaluate_table", spy)
        with pytest.raises(ValueError, match=r"--out='.*ro/res\.md' is not writable"):
            run(["evaluate", str(path), "--out", str(ro / "res")])
        assert spy.calls == []
    finally:
        subprocess.run(["umount", str(ro)], check=False)
