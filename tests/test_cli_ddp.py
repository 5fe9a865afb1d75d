"""``lightning-sdc fit`` under DDP through the console script, the default logger and progress bar on.

The unit DDP tests (``test_ddp.py``) build Trainers with ``logger=False``; this one runs what a cluster job
types. It caught a hang: a callback read ``trainer.log_dir`` (a collective broadcast) on rank 0 only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_sdc.synthetic import SyntheticSet

SCRIPT = Path(sys.executable).parent / "lightning-sdc"


@pytest.mark.ddp
def test_ddp_fit_with_the_default_logger_finishes_and_exports(tmp_path: Path) -> None:
    cmd = [str(SCRIPT), "fit", "--config", "configs/trainer/ddp_cpu.yaml", "--config", "demo/digits_dc_ipc1",
           "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
           "--model.init_args.eval_num_models", "1", "--model.init_args.eval_epochs", "2",
           "--trainer.default_root_dir", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = tmp_path / "run" / "lightning_logs" / "version_0"
    assert (version / "checkpoints" / "last.ckpt").is_file()
    synset = SyntheticSet.load(version / "synthetic" / "synset.pt")
    assert synset.images.shape[0] == 10 and bool(synset.images.isfinite().all())
    out = proc.stdout.splitlines()  # rank 0 alone reports: the accuracy, then the set it wrote
    assert len([line for line in out if line.startswith("accuracy ")]) == 1
    assert [line for line in out if line.startswith("wrote ")] == [f"wrote {version / 'synthetic' / 'synset.pt'}"]
    assert not list((tmp_path / "run").rglob("*.lock"))
