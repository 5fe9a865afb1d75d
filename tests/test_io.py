import pytest
import torch

from lightning_sdc.io import atomic_torch_save, atomic_write_text, safe_torch_load


def test_atomic_save_roundtrip(tmp_path):
    p = tmp_path / "a.pt"
    atomic_torch_save({"x": torch.arange(5)}, p)
    assert torch.equal(safe_torch_load(p)["x"], torch.arange(5))
    assert [f.name for f in tmp_path.iterdir()] == ["a.pt"]  # no temporary left behind


def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "a.pt"
    atomic_torch_save({"x": torch.ones(3)}, p)

    def boom(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
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


def test_atomic_text(tmp_path):
    p = atomic_write_text("hello\n", tmp_path / "sub" / "t.md")
    assert p.read_text() == "hello\n"
