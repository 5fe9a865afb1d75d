"""``lightning-sdc evaluate`` as a user types it (issue 13 point 5, issue 17 points 5 and 7): every set layout,
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
def test_archs_as_a_plain_list_or_bracketed_list(tmp_path):
    path = tmp_path / "synset.pt"
    path.write_bytes(b"")
    assert cmd.prepare_args([str(path), "--archs", *SIX]) == [str(path), "--archs", "[" + ",".join(SIX) + "]"]
    assert cmd.prepare_args(["--archs", "[ConvNet,", "X,", "LeNet]", str(path)]) == [
        "--archs", "[ConvNet, X, LeNet]", str(path)]
    assert cmd.prepare_args(["--archs", "ConvNet", "LeNet", str(path), "--epochs", "3"]) == [
        "--archs", "[ConvNet,LeNet]", str(path), "--epochs", "3"]
    assert cmd.prepare_args(["--archs", "[ConvNet,LeNet]", "--epochs", "3"]) == ["--archs", "[ConvNet,LeNet]",
                                                                                 "--epochs", "3"]


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
                 "depth: 1}, ConvNetD1: {width: 2}}", "--out", str(tmp_path / "res")])
    assert "| ConvNet |" in table and "| ConvNetD1 |" in table and "1 epochs" in table
    assert any(name == "ConvNet" and kw.get("width") == 4 and kw.get("depth") == 1 for name, kw in built)
    assert any(name == "ConvNetD1" and kw.get("width") == 2 for name, kw in built)
    assert "evaluate ConvNet" in tty.getvalue() and "epoch" in tty.getvalue()
    csv = (tmp_path / "res.csv").read_text()
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
    assert (c["epochs"], c["augment"], c["batch_size"], c["lr"]) == (1000, "dsa", 256, None)
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
    assert "| ConvNet |" in printed and "| ConvNetD2 |" in printed and "ConvNetD1" not in printed
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
    assert EXPECTED in _err(pair, "for 10 images", dataset="digits")
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
