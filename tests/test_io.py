import errno
import gc
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from lightning_sdc.io import atomic_torch_save, atomic_write, atomic_write_text, beside, safe_torch_load


def test_atomic_save_roundtrip(tmp_path):
    p = tmp_path / "a.pt"
    atomic_torch_save({"x": torch.arange(5)}, p)
    assert torch.equal(safe_torch_load(p)["x"], torch.arange(5))
    assert [f.name for f in tmp_path.iterdir()] == ["a.pt"]  # no temporary left behind


def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "a.pt"
    atomic_torch_save({"x": torch.ones(3)}, p)

    def boom(obj, f, *a, **k):
        f.write(b"half")  # atomic_torch_save hands torch.save a file object
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"x": torch.zeros(3)}, p)
    monkeypatch.undo()
    assert torch.equal(safe_torch_load(p)["x"], torch.ones(3))
    assert [f.name for f in tmp_path.iterdir()] == ["a.pt"]


def test_truncated_file_names_itself(tmp_path):
    p = tmp_path / "set.pt"
    atomic_torch_save({"x": torch.randn(1000)}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="set.pt"):
        safe_torch_load(p, what="synthetic set")


def test_missing_file_names_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        safe_torch_load(tmp_path / "nope.pt")


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    import argparse

    p = tmp_path / "evil.pt"
    torch.save({"obj": argparse.Namespace(a=1)}, p)  # a pickled object, not a tensor
    with pytest.raises(ValueError, match="evil.pt"):
        safe_torch_load(p)


def test_beside_keeps_dots_in_the_name_and_replaces_an_output_suffix():
    assert beside("runs/seed0_lambda0.01", ".md") == Path("runs/seed0_lambda0.01.md")
    assert beside("table.md", ".csv") == Path("table.csv") and beside("table.csv", ".md") == Path("table.md")
    assert beside("curve.v2", ".png") == Path("curve.v2.png")


def test_atomic_text(tmp_path):
    p = atomic_write_text("hello\n", tmp_path / "sub" / "t.md")
    assert p.read_text() == "hello\n"


# ------------------------------------------------------------------------------------------ a real full disk
@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A 64 KiB tmpfs mounted at ``tmp_path/small`` (needs root and mount permission; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        gc.collect()  # a failed torch writer may hold its file open until collected
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def _full(err: pytest.ExceptionInfo, path: Path) -> None:
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert f"No space left on device: '{path}'" in str(err.value)


def test_full_disk_names_the_file_and_keeps_the_previous_one(tiny_fs: Path) -> None:
    target = tiny_fs / "state.pt"
    atomic_torch_save({"x": torch.ones(4)}, target)
    with pytest.raises(OSError) as err:  # 400 KB into 64 KiB: torch's own writer would say "unexpected pos"
        atomic_torch_save({"x": torch.zeros(100_000)}, target)
    _full(err, target)
    assert torch.equal(safe_torch_load(target)["x"], torch.ones(4))
    assert [p.name for p in tiny_fs.iterdir()] == ["state.pt"]  # the torn temporary is gone
    text = tiny_fs / "notes.md"
    with pytest.raises(OSError) as err:
        atomic_write_text("x" * 200_000, text)
    _full(err, text)


def test_torch_writer_error_on_a_full_disk_becomes_enospc(tiny_fs: Path) -> None:
    """A writer that fails with torch's C++ message (a path given to torch.save) is reported as a full disk."""
    target = tiny_fs / "big.pt"
    with pytest.raises(OSError) as err:
        atomic_write(target, lambda tmp: torch.save({"x": torch.zeros(100_000)}, tmp))
    _full(err, target)
    assert isinstance(err.value.__cause__, RuntimeError)  # what torch said, kept as the cause
    assert not any(tiny_fs.iterdir())


def test_exporter_on_a_full_disk_leaves_no_set_without_its_tm_files(tiny_fs: Path) -> None:
    """The set (~24 KB) fits, set + TM copy (~48 KB) + PNG do not: nothing of the export may appear."""
    from lightning_sdc.callbacks.images import SyntheticSetExporter, write_all_or_nothing
    from lightning_sdc.synthetic import SyntheticSet

    synset = SyntheticSet.blank(num_classes=10, ipc=6, image_shape=(1, 10, 10), dataset="custom")
    with torch.no_grad():
        synset.images.normal_()
    exporter = SyntheticSetExporter(dirpath=str(tiny_fs))
    with pytest.raises(OSError) as err:
        write_all_or_nothing(tiny_fs, lambda d: exporter._write(synset, d))
    assert err.value.errno == errno.ENOSPC and Path(err.value.filename).parent == tiny_fs  # names the destination
    assert not any(tiny_fs.iterdir())  # no synset.pt without images_best.pt, no staging folder
    small = SyntheticSet.blank(num_classes=10, ipc=1, image_shape=(1, 8, 8), dataset="custom")
    written = write_all_or_nothing(tiny_fs, lambda d: exporter._write(small, d))
    assert sorted(p.name for p in written) == sorted(p.name for p in tiny_fs.iterdir()) == \
        ["images_best.pt", "labels_best.pt", "synset.png", "synset.pt"]
