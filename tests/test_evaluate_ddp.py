"""Evaluation sharded over processes: 2 CPU processes (gloo), results equal to one process.

Model ``i`` draws everything from ``seeded_generator(seed, i)`` (periodic evaluation before the final set:
``(seed, 7919, step, i)``),
so whichever rank trains it, it is the same network; each rank trains and tests its share of the evaluation
engine's jobs and the accuracies are gathered. Results come back through files written by the ranks.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_sdc.cli import main, run
from lightning_sdc.evaluation import evaluate_synset, evaluate_table, seeded_generator, train_network
from lightning_sdc.evaluation import protocol as protocol_module
from lightning_sdc.evaluation import test_accuracy as accuracy_of  # (not collected as a test)
from lightning_sdc.evaluation.protocol import eval_jobs, gather_results, rank_share
from lightning_sdc.synthetic import random_coreset

#: evaluate_synset settings of the sharded-protocol test: 3 models on 2 ranks (uneven shares: 0, 2 | 1)
KW = {"arch": "ConvNet", "num_models": 3, "epochs": 3, "augment": "none", "batch_size": 256, "seed": 5,
      "arch_kwargs": {"width": 16, "depth": 2}}


# ------------------------------------------------------------------------------------------- the job lists
def test_jobs_shares_and_gather_on_one_process(digits):
    jobs = eval_jobs(["ConvNet", "MLP"], 3)
    assert jobs == [("ConvNet", 0), ("ConvNet", 1), ("ConvNet", 2), ("MLP", 0), ("MLP", 1), ("MLP", 2)]
    shares = [rank_share(range(len(jobs)), r, 4) for r in range(4)]
    assert sorted(j for s in shares for j in s) == list(range(6)) and [len(s) for s in shares] == [2, 2, 1, 1]
    # one process: the gather is the merge of its own results; a missing job or a failure is an error
    assert gather_results({1: "b", 0: "a"}, 2) == ["a", "b"]
    with pytest.raises(RuntimeError, match=r"jobs \[1\] were done by no rank"):
        gather_results({0: "a"}, 2)
    with pytest.raises(KeyError, match="boom"):  # on one process the original error, unchanged
        gather_results({}, 2, KeyError("boom"))
    assert eval_jobs(["MLP"], [2, 0]) == [("MLP", 2), ("MLP", 0)]
    # a failing architecture: with keep_going its jobs carry the message and the others finish
    s = random_coreset(digits, 1, seed=0)
    kw = {"num_models": 2, "epochs": 1, "augment": "none"}
    results, failures = evaluate_table(s, digits, ["ConvNet", "ConvNetD1"], keep_going=True, **kw,
                                       arch_kwargs={"ConvNet": {"width": 4, "depth": 1}, "ConvNetD1": {"bogus": 1}})
    assert [(r.arch, r.num_models, r.epochs) for r in results] == [("ConvNet", 2, 1)] and results[0].seconds > 0
    assert failures[0][0] == "ConvNetD1" and failures[0][1].startswith("ValueError") and "bogus" in failures[0][1]
    with pytest.raises(ValueError, match="bogus"):  # without keep_going: the error itself, on one process
        evaluate_table(s, digits, ["ConvNetD1"], **kw, arch_kwargs={"ConvNetD1": {"bogus": 1}})


# ------------------------------------------------------------------------------------------- evaluate_synset
def _protocol_worker(rank: int, world: int, init: str, out: str, data: tuple, threads: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        images, labels, test_x, test_y = data
        res = evaluate_synset((images, labels), (test_x, test_y), distributed=True, **KW)
        picked = evaluate_synset((images, labels), (test_x, test_y), distributed=True, **{**KW, "models": [2, 0]})
        if rank == 1:  # a failure on one rank only: every rank raises, none waits for ever
            def boom(*args, **kwargs):
                raise RuntimeError("boom on rank 1")

            protocol_module.train_network = boom
        try:
            evaluate_synset((images, labels), (test_x, test_y), distributed=True, **KW)
            error = None
        except RuntimeError as exc:
            error = str(exc)
        Path(out, f"rank{rank}.json").write_text(json.dumps(
            {"acc": res.accuracies, "picked": picked.accuracies, "seconds": res.seconds, "error": error}))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_evaluate_synset_sharded_over_two_ranks_equals_one_process(tmp_path, digits):
    s = random_coreset(digits, 2, seed=0)
    images, labels = s.images.detach().clone(), s.labels.clone()
    data = (images, labels, digits.test_images, digits.test_labels)
    torch.multiprocessing.spawn(_protocol_worker, args=(2, str(tmp_path / "init"), str(tmp_path), data,
                                                        torch.get_num_threads()), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    one = evaluate_synset((images, labels), (digits.test_images, digits.test_labels), **KW)
    assert len(set(one.accuracies)) > 1  # distinct networks: the order below is checked
    for r in ranks:  # every rank returns the whole gathered result, in model order, bit for bit
        assert r["acc"] == one.accuracies
        assert r["picked"] == [one.accuracies[2], one.accuracies[0]]  # models= keeps its order
        assert r["seconds"] > 0
        assert r["error"] == "rank 1: RuntimeError: boom on rank 1"
    # without a process group, distributed=True is the plain one-process evaluation
    assert evaluate_synset((images, labels), (digits.test_images, digits.test_labels), distributed=True,
                           **KW).accuracies == one.accuracies


# ------------------------------------------------------------------------------------------- the command
def _accuracies(csv_path: Path) -> list[tuple[str, str, str, str]]:
    """arch, mean, std and the per-model accuracies of a written table (not the seconds)."""
    with csv_path.open() as f:
        return [(r["arch"], r["mean"], r["std"], r["accuracies"]) for r in csv.DictReader(f)]


def _console_script() -> str:
    script = Path(sys.executable).parent / "lightning-sdc"
    return str(script) if script.exists() else shutil.which("lightning-sdc") or "lightning-sdc"


@pytest.mark.ddp
@pytest.mark.slow
def test_evaluate_command_on_two_processes_prints_the_one_process_table(tmp_path, digits, capsys):
    s = random_coreset(digits, 2, seed=0)
    s.eval_protocol = {"method": "DSA", "arch": "ConvNet", "arch_kwargs": {"width": 16, "depth": 2},
                       "num_models": 2, "epochs": 3, "lr": None, "batch_size": 256, "augment": "none",
                       "dsa_strategy": None}
    path = s.save(tmp_path / "synset.pt")
    args = [str(path), "--archs", "ConvNet", "ConvNetD1", "--arch_kwargs", "{width: 16}", "--quiet"]
    table = run(["evaluate", *args, "--out", str(tmp_path / "one")])
    capsys.readouterr()
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([_console_script(), "evaluate", *args, "--out", str(tmp_path / "two"),
                           "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn", "--trainer.accelerator", "cpu"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _accuracies(tmp_path / "one.csv"), _accuracies(tmp_path / "two.csv")
    assert [r[0] for r in one] == ["ConvNet", "ConvNetD1"] and all(len(r[3].split()) == 2 for r in one)
    assert two == one
    # rank 0 alone prints the table, with the same accuracy column as the one-process command
    assert proc.stdout.count("| ConvNet |") == 1 and proc.stdout.count("| ConvNetD1 |") == 1
    column = [line.split("|")[2] for line in table.splitlines() if line.startswith("| ConvNet")]
    assert [line.split("|")[2] for line in proc.stdout.splitlines() if line.startswith("| ConvNet")] == column


def test_bad_process_layouts_fail_in_one_line_before_anything_runs(tmp_path, capsys):
    """The layout is checked before the set is read (``missing.pt`` is never opened) and before any launch."""
    for flags, message in (
        (["--trainer.devices", "0"], "trainer.devices=0 is not allowed; allowed: a count >= 1, -1 or 'auto'"),
        (["--trainer.strategy", "fsdp"], "trainer.strategy='fsdp' is not allowed; allowed: auto, ddp, ddp_spawn"),
        (["--trainer.num_nodes", "0"], "trainer.num_nodes must be an integer >= 1 (> 0), got 0"),
        (["--device", "cpu", "--trainer.accelerator", "cuda"], "device='cpu' and trainer.accelerator='cuda' disagree"),
        (["--device", "cuda:1", "--trainer.devices", "2"], "device='cuda:1' names one GPU but trainer.devices=2"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["evaluate", str(tmp_path / "missing.pt"), *flags])
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, (flags, err)
    from lightning_sdc.experts import run_experts

    with pytest.raises(ValueError, match="trainer.devices=0 is not allowed"):  # experts share the layout check
        run_experts("digits", trainer={"devices": 0}, num_experts=1, out=str(tmp_path / "buf"))


# ------------------------------------------------------------------------------------------- periodic evaluation
class RecordEvaluation(pl.Callback):
    """Writes ``rank{r}.pt``: the set the periodic evaluation trained on, the step, how many networks this rank
    trained and the accuracies it logged."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train, self.trained = protocol_module.train_network, 0  # this process's engine: count its trainings

        def counting(*args, **kwargs):
            self.trained += 1
            return train(*args, **kwargs)

        protocol_module.train_network = counting

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        images, targets, _ = pl_module.eval_synset().detached()
        self.seen = {"images": images.cpu().clone(), "targets": targets.cpu().clone(), "step": pl_module.step_index}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save({**self.seen, "acc": pl_module.last_eval_accuracies, "trained": self.trained},
                   Path(self.out) / f"rank{trainer.global_rank}.pt")


@pytest.mark.ddp
def test_periodic_evaluation_under_ddp_fit_equals_one_process(tmp_path, digits):
    """A 2-rank DDP fit evaluates after its step: each rank trains and tests its share of the 3 networks on the
    whole test split (digits' 359 images, none padded nor twice) and the gathered accuracies are exactly those one
    process gets from the same set."""
    from lightning_sdc.data import RealDataModule
    from lightning_sdc.methods.gm.gradient import DC
    from lightning_sdc.models import build_network
    from tests.gm_helpers import SMALL, trainer

    model = DC("digits", 1, arch_kwargs=SMALL, batch_real=16, seed=3, eval_num_models=3, eval_epochs=2,
               eval_augment="none")
    tr = trainer(1, strategy="ddp_spawn", devices=2, limit_val_batches=1.0, val_check_interval=1,
                 callbacks=[RecordEvaluation(str(tmp_path))])
    tr.fit(model, RealDataModule("digits", test_batch_size=64))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["trained"] for r in ranks] == [2, 1]  # the training was shared (jobs 0, 2 | 1), not repeated
    assert ranks[0]["acc"] == ranks[1]["acc"] and ranks[0]["step"] == 1
    assert torch.equal(ranks[0]["images"], ranks[1]["images"])
    # one process, the reference protocol on the whole test split: the final set's networks (seed, i)
    expected = []
    for i in range(3):
        g = seeded_generator(3, i)
        net = build_network("ConvNet", 1, 10, (8, 8), generator=g, **SMALL)
        train_network(net, ranks[0]["images"], ranks[0]["targets"], epochs=2, lr=model.hparams.eval_lr or 0.01,
                      batch_size=model.hparams.eval_batch_size, generator=g)
        expected.append(accuracy_of(net, digits.test_images, digits.test_labels))
    assert len(set(expected)) > 1
    n = digits.test_labels.numel()  # 359: every test image counted once, none twice (the padding)
    assert [round(a * n) for a in ranks[0]["acc"]] == [round(e * n) for e in expected]
    assert ranks[0]["acc"] == expected
