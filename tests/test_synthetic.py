import pytest
import torch

from lightning_sdc.synthetic import SyntheticSet


def make_set(label_mode="hard", syn_lr=None, learn_lr=False):
    s = SyntheticSet.blank(num_classes=3, ipc=2, image_shape=(1, 4, 4), label_mode=label_mode, dataset="digits",
                           mean=(0.5,), std=(0.25,), syn_lr=syn_lr, learn_lr=learn_lr)
    s.init_noise(torch.Generator().manual_seed(0))
    return s


def test_blank_layout_is_class_major():
    s = make_set()
    assert s.ipc == 2 and s.images.shape == (6, 1, 4, 4)
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert s.class_slice(1) == slice(2, 4)
    assert isinstance(s.images, torch.nn.Parameter)
    assert "labels" in dict(s.named_buffers())


@pytest.mark.parametrize("mode,lr,learn", [("hard", None, False), ("soft", 0.01, False), ("learned", 0.02, True)])
def test_save_load_bit_identical(tmp_path, mode, lr, learn):
    s = make_set(mode, lr, learn)
    s.save(tmp_path / "s.pt", png=True)
    t = SyntheticSet.load(tmp_path / "s.pt")
    assert torch.equal(s.images, t.images) and torch.equal(s.labels, t.labels)
    assert t.label_mode == mode and t.dataset == "digits" and t.mean == (0.5,) and t.ipc == 2
    if lr is not None:
        assert torch.equal(s.syn_lr, t.syn_lr) and isinstance(t.syn_lr, torch.nn.Parameter) == learn
    assert (tmp_path / "s.png").stat().st_size > 0
    if mode == "learned":
        assert isinstance(t.labels, torch.nn.Parameter)
        torch.testing.assert_close(t.targets().sum(1), torch.ones(6))


def test_refuses_to_save_nan(tmp_path):
    s = make_set()
    with torch.no_grad():
        s.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        s.save(tmp_path / "s.pt")
    assert not (tmp_path / "s.pt").exists()


def test_corrupt_and_foreign_files_name_themselves(tmp_path):
    s = make_set()
    p = tmp_path / "s.pt"
    s.save(p)
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match="s.pt"):
        SyntheticSet.load(p)
    torch.save({"images": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        SyntheticSet.load(tmp_path / "other.pt")


def test_pixels_undo_normalisation():
    s = make_set()
    with torch.no_grad():
        s.images.fill_(0.0)  # normalised 0 == the mean pixel value 0.5
    torch.testing.assert_close(s.pixels(), torch.full((6, 1, 4, 4), 0.5))


def test_export_tm_layout(tmp_path):
    s = make_set("soft", 0.01)
    paths = s.export_tm(tmp_path, "best")
    assert sorted(p.name for p in paths) == ["images_best.pt", "labels_best.pt", "lr_best.pt"]
    assert torch.equal(torch.load(tmp_path / "images_best.pt", weights_only=True), s.images.detach())


@pytest.mark.parametrize("kw,msg", [({"ipc": 0}, "ipc"), ({"ipc": 2, "label_mode": "fuzzy"}, "label_mode")])
def test_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SyntheticSet.blank(num_classes=3, image_shape=(1, 4, 4), **kw)


def test_init_from_real_uses_each_class(digits):
    from lightning_sdc.data import ClassIndexedImages

    real = ClassIndexedImages(digits.train_images, digits.train_labels, digits.num_classes)
    s = SyntheticSet.blank(num_classes=10, ipc=3, image_shape=digits.image_shape)
    s.init_from_real(real, torch.Generator().manual_seed(1))
    # every synthetic image is a real training image of its own class
    for i, c in enumerate(s.labels.tolist()):
        same = (digits.train_images == s.images[i].detach()).flatten(1).all(1)
        assert same.any() and set(digits.train_labels[same].tolist()) == {c}
