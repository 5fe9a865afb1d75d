"""The GM gradient engine: chosen once per run, by a stated rule, with a fallback and one log line."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from lightning_sdc.methods import DC
from lightning_sdc.methods.gm.engine import (
    CompiledEngine,
    GradientEngine,
    VmapEngine,
    pays_to_compile,
    select_engine,
)
from lightning_sdc.models import build_network
from lightning_sdc.models.base import forward_flops
from lightning_sdc.models.compiled import use_persistent_cache

from .gm_helpers import SMALL, fit

CPU = torch.device("cpu")


def test_forward_flops_of_convnet128_on_28x28():
    """2 × multiply-adds of DC's ConvNet-128 on 1×28×28 (padded to 32×32): conv1, conv2 (16×16), conv3 (8×8),
    classifier."""
    net = build_network("ConvNet", 1, 10, (28, 28))
    want = 2 * (128 * 9 * 32 * 32 + 128 * 128 * 9 * 16 * 16 + 128 * 128 * 9 * 8 * 8 + 128 * 4 * 4 * 10)
    assert forward_flops(net, (1, 28, 28)) == want


def test_auto_compiles_long_runs_only():
    net = build_network("ConvNet", 1, 10, (28, 28))
    flops = forward_flops(net, (1, 28, 28))
    # a paper cell: DC IPC 1, 2,560 real images per update, 1,000 updates
    assert pays_to_compile(2560, flops, 1000)[0]
    assert not pays_to_compile(2560, flops, 2)[0]  # a two-update run is far too short
    assert pays_to_compile(2560, flops, None) == (True, float("inf"))
    assert pays_to_compile(10, flops, -1)[0]  # unbounded
    big = select_engine("auto", net, image_shape=(1, 28, 28), step_images=2560, max_steps=1000, device=CPU)
    assert type(big) is CompiledEngine
    small = select_engine("auto", net, image_shape=(1, 28, 28), step_images=2560, max_steps=2, device=CPU)
    assert type(small) is GradientEngine
    bn = build_network("ConvNetBN", 1, 10, (28, 28))
    assert type(select_engine("compiled", bn, image_shape=(1, 28, 28), step_images=2560, max_steps=None,
                              device=CPU)) is GradientEngine
    assert type(select_engine("vmap", net, image_shape=(1, 28, 28), step_images=1, max_steps=1,
                              device=CPU)) is VmapEngine


def test_a_tiny_fit_runs_eager_and_says_so(caplog):
    from pytorch_lightning.utilities.rank_zero import rank_zero_module

    # the logger rank_zero_info writes to (other tests may have raised Lightning's loggers to ERROR)
    with caplog.at_level(logging.INFO, logger=rank_zero_module.log.name):
        model = fit(DC("digits", 1, arch_kwargs=SMALL, batch_real=16, seed=1), 2)
    assert model.engine.name == "eager"
    lines = [r.getMessage() for r in caplog.records if "GM gradient engine" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("GM gradient engine: eager") and "too short" in lines[0]


def test_compilation_failure_falls_back_to_eager(monkeypatch):
    engine = CompiledEngine()

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nmore")

    monkeypatch.setattr(engine._compiled, "loss", broken)
    net = build_network("ConvNet", 1, 3, (8, 8), **SMALL)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    with pytest.warns(UserWarning, match="torch.compile failed \\(RuntimeError: no C\\+\\+ compiler\\)"):
        got = engine.loss(net, x, y)
    assert torch.equal(got, torch.nn.functional.cross_entropy(net(x), y))
    assert torch.equal(engine.loss(net, x, y), got)  # no second warning: pytest.warns would not see one anyway


def test_inductor_cache_directory(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert use_persistent_cache() == str(tmp_path / "lightning_sdc" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what importing Lightning sets
    assert use_persistent_cache() == str(tmp_path / "lightning_sdc" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    assert use_persistent_cache() == "/somewhere/else"  # the user's setting wins


_FAULTS = """
import resource, sys, torch
from lightning_sdc.methods.gm.engine import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(64 * 2**20)  # 256 MB, written (touched) by the fill
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, faults[-1])
"""


@pytest.mark.slow  # two fresh interpreters importing torch and Lightning
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults():
    """With the compiled engine's allocator policy a freed 256 MB block is reused without touching new pages;
    glibc's default unmaps it and the next allocation faults in every page again."""
    def run(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        kept, faults = out.stdout.split()
        return kept == "True", int(faults)

    kept, faults = run("keep")
    _, default_faults = run("default")
    assert kept and faults < 1000 < default_faults  # 256 MB is 65,536 pages of 4 KiB
