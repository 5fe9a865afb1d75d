"""``benchmarks/gpu_check.py`` — the one GPU check — run in its CPU fallback (tiny sizes), so it cannot rot
while no GPU is around; on a CUDA machine ``make test-gpu`` runs it for real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_check import main


def _rows(text: str, heading: str) -> list[list[str]]:
    block = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()
            if line.startswith("| ") and not line.startswith("| precision") and not line.startswith("| memory")]


def test_cpu_fallback_runs_dc_precisions_and_mtt_memory_modes(tmp_path: Path) -> None:
    out = tmp_path / "check.md"
    main(["--device", "cpu", "--quick", "--skip", "tests", "bench", "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# GPU check (cpu, quick)")
    dc = _rows(text, "## DC + SDC on digits")
    assert [r[0] for r in dc] == ["32-true", "bf16-mixed", "16-mixed"]
    assert [r[1] for r in dc] == ["32-true", "bf16-mixed", "bf16-mixed"]  # Lightning: no fp16 AMP on CPU
    mtt = _rows(text, "## MTT on digits")
    assert [r[0] for r in mtt] == ["unrolled", "constant"]
    for row in dc + mtt:
        assert "ok" in row and "True" in row, row  # finished, images finite
        acc = float(re.match(r"([\d.]+) ±", row[-1]).group(1))
        assert 15 < acc <= 100, row  # above chance (10 %) on digits
    diff = float(re.search(r"two modes' final images: ([\d.e+-]+)", text).group(1))
    assert diff < 1e-4  # constant-memory MTT follows the unrolled gradient
    assert "CUDA tests" not in text and "python -m benchmarks" not in text.split("\n", 3)[-1]


def test_a_section_over_the_budget_is_reported_not_hung(tmp_path: Path) -> None:
    out = tmp_path / "check.md"
    main(["--device", "cpu", "--quick", "--skip", "mtt", "tests", "bench", "--budget", "1", "--out", str(out)])
    rows = _rows(out.read_text(), "## DC + SDC on digits")
    assert len(rows) == 3 and all(r[2] == "timed out after 1 s" for r in rows)


def test_the_benchmark_command_it_runs_takes_its_flags(capsys) -> None:
    from benchmarks.__main__ import main as bench_main

    with pytest.raises(SystemExit):
        bench_main(["--help"])
    usage = capsys.readouterr().out
    assert all(flag in usage for flag in ("--device", "--quick", "--out"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_cuda_refused_without_a_gpu() -> None:
    with pytest.raises(ValueError, match="--device cuda was given but torch.cuda.is_available"):
        main(["--device", "cuda"])
