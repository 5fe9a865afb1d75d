"""Dataset layer: registry, offline sets, IDX reading, missing-data errors, ZCA, class-indexed sampling,
RealDataModule. No test needs the network."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_sdc.data import (
    ClassIndexedImages,
    DatasetNotFoundError,
    ZCAWhitening,
    cache_dir,
    clear_dataset_cache,
    dataset_info,
    list_datasets,
    load_dataset,
    prepare_dataset,
    read_idx,
    write_idx,
)
from lightning_sdc.data import torchvision_sets as tvs
from lightning_sdc.data.idx import IDX_FILES, find_idx_dir
from lightning_sdc.data.offline import mnist5k_arrays
from lightning_sdc.data.tinyimagenet import _cache_file
from lightning_sdc.io import atomic_torch_save, safe_torch_load

ALL = {"digits", "mnist5k", "mnist", "fashionmnist", "svhn", "cifar10", "cifar100", "tinyimagenet"}
REFERENCE_STATS = {  # gm_reference §2 / tm_reference §2.1
    "mnist": ((1, 28, 28), 10, (0.1307,), (0.3081,)),
    "fashionmnist": ((1, 28, 28), 10, (0.2861,), (0.3530,)),
    "svhn": ((3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": ((3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((3, 32, 32), 100, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((3, 64, 64), 200, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep derived files (mnist5k .npz, TinyImageNet cache) out of the user's cache directory."""
    monkeypatch.setenv("LIGHTNING_SDC_CACHE", str(tmp_path_factory.getbasetemp() / "lsdc_cache"))


# ---------------------------------------------------------------- registry
def test_registry_lists_every_dataset_with_reference_metadata():
    assert set(list_datasets()) == ALL
    for name in ALL:
        info = dataset_info(name)
        assert info.name == name and len(info.class_names) == info.num_classes
    for name, (shape, classes, mean, std) in REFERENCE_STATS.items():
        info = dataset_info(name)
        assert (info.image_shape, info.num_classes, info.mean, info.std) == (shape, classes, mean, std)
    cifar100 = dataset_info("cifar100").class_names
    assert list(cifar100) == sorted(set(cifar100)) and cifar100[:2] == ("apple", "aquarium_fish")
    assert dataset_info("FashionMNIST").name == "fashionmnist"
    assert dataset_info("tiny-imagenet").name == "tinyimagenet"


def test_unknown_names_and_options_list_what_is_allowed():
    with pytest.raises(KeyError, match="allowed: cifar10, cifar100, digits, fashionmnist, mnist, mnist5k"):
        load_dataset("imagenet-1k")
    with pytest.raises(ValueError, match=r"unknown option\(s\) ipc .*allowed: seed, train_fraction"):
        load_dataset("digits", ipc=3)
    with pytest.raises(ValueError, match="zca_space='whitened' is not allowed; allowed: pixels, normalized"):
        load_dataset("digits", zca=True, zca_space="whitened")
    with pytest.raises(ValueError, match="train_per_class \\+ test_per_class = 501 is not allowed"):
        load_dataset("mnist5k", train_per_class=401)


# ---------------------------------------------------------------- offline sets
@pytest.mark.parametrize(
    "name,shape,n_train,n_test", [("digits", (1, 8, 8), 1438, 359), ("mnist5k", (1, 28, 28), 4000, 1000)]
)
def test_offline_datasets_load_normalised(name, shape, n_train, n_test):
    spec = load_dataset(name)
    assert spec.train_images.shape == (n_train, *shape) and spec.test_images.shape == (n_test, *shape)
    assert spec.train_images.dtype == torch.float32 and spec.train_labels.dtype == torch.int64
    assert spec.num_classes == 10 and spec.class_names == tuple("0123456789")
    assert abs(float(spec.train_images.mean())) < 0.02 and abs(float(spec.train_images.std()) - 1) < 0.02
    pixels = spec.denormalize(spec.train_images)
    assert float(pixels.min()) == pytest.approx(0, abs=1e-5) and float(pixels.max()) == pytest.approx(
        1, abs=1e-5
    )
    assert load_dataset(name) is spec  # cached in-process


def test_digits_split_is_stratified_80_20_and_recorded():
    spec = load_dataset("digits")
    counts = torch.tensor([178, 182, 177, 183, 181, 182, 181, 179, 174, 180])  # load_digits' class sizes
    assert torch.equal(spec.train_counts(), torch.round(0.8 * counts).long())
    assert torch.equal(
        torch.bincount(spec.test_labels, minlength=10), counts - torch.round(0.8 * counts).long()
    )
    split = spec.split
    assert split["method"] == "stratified" and split["seed"] == 0 and split["train_fraction"] == 0.8
    assert len(set(split["train_indices"].tolist()) | set(split["test_indices"].tolist())) == 1797


def test_mnist5k_split_is_stratified_seeded_disjoint_and_shuffled():
    _, y, _ = mnist5k_arrays()
    a, b, c = (load_dataset("mnist5k", seed=s) for s in (0, 0, 1))
    assert a is b
    tr, te = a.split["train_indices"], a.split["test_indices"]
    assert len(set(tr.tolist()) & set(te.tolist())) == 0 and len(set(tr.tolist()) | set(te.tolist())) == 5000
    assert torch.equal(
        torch.from_numpy(y.astype(np.int64))[tr], a.train_labels
    )  # indices point into the file
    assert torch.equal(a.train_counts(), torch.full((10,), 400))
    assert torch.equal(torch.bincount(a.test_labels, minlength=10), torch.full((10,), 100))
    assert len(set(a.train_labels[:40].tolist())) > 5  # the file is label-sorted; the split order is not
    assert not torch.equal(c.split["train_indices"], tr) and torch.equal(c.train_counts(), a.train_counts())
    clear_dataset_cache()
    again = load_dataset("mnist5k", seed=0)
    assert again is not a and torch.equal(again.split["train_indices"], tr)
    assert torch.equal(again.train_images, a.train_images)


def test_mnist5k_uint8_cache_is_written_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_SDC_CACHE", str(tmp_path))
    x, y, source = mnist5k_arrays()
    cached = tmp_path / "mnist5k_uint8.npz"
    assert source.endswith("mnist_5k.csv.gz") and cached.is_file()
    assert x.shape == (5000, 784) and x.dtype == np.uint8 and np.bincount(y).tolist() == [500] * 10
    x2, y2, source2 = mnist5k_arrays()
    assert source2 == str(cached) and np.array_equal(x, x2) and np.array_equal(y, y2)
    cached.write_bytes(cached.read_bytes()[:100])
    x3, _, source3 = mnist5k_arrays()
    assert source3.endswith("mnist_5k.csv.gz") and np.array_equal(x, x3)


# ---------------------------------------------------------------- IDX / FashionMNIST
def _write_fake_mnist_dir(directory: Path, gz: bool = True, n_train: int = 20, n_test: int = 10) -> dict:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    for key, (stem, _) in IDX_FILES.items():
        write_idx(directory / (stem + (".gz" if gz else "")), arrays[key])
    return arrays


def test_idx_reader_round_trip_and_corrupt_files_are_named(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte.gz", "a-idx3-ubyte"):
        assert np.array_equal(read_idx(write_idx(tmp_path / name, arr), 3), arr)
    assert read_idx(write_idx(tmp_path / "l.gz", np.array([3, 1, 4], np.uint8)), 1).tolist() == [3, 1, 4]
    full = gzip.decompress((tmp_path / "a-idx3-ubyte.gz").read_bytes())
    (tmp_path / "short.gz").write_bytes(gzip.compress(full[:-5]))
    with pytest.raises(ValueError, match=r"corrupt IDX file .*short\.gz.*truncated"):
        read_idx(tmp_path / "short.gz", 3)
    (tmp_path / "cut.gz").write_bytes((tmp_path / "a-idx3-ubyte.gz").read_bytes()[:30])
    with pytest.raises(ValueError, match=r"corrupt IDX file .*cut\.gz: cannot decompress"):
        read_idx(tmp_path / "cut.gz", 3)
    with pytest.raises(ValueError, match=r"a-idx3-ubyte: magic number 0x803, expected 0x801"):
        read_idx(tmp_path / "a-idx3-ubyte", 1)


def test_fashionmnist_reads_idx_dirs_in_order(tmp_path, monkeypatch):
    monkeypatch.delenv("LIGHTNING_SDC_FASHIONMNIST_DIR", raising=False)
    arrays = _write_fake_mnist_dir(tmp_path / "plain")
    spec = load_dataset("fashionmnist", root=tmp_path / "plain")
    assert spec.source == str(tmp_path / "plain") and spec.train_images.shape == (20, 1, 28, 28)
    expected = (torch.from_numpy(arrays["train_images"]).float() / 255 - 0.2861) / 0.3530
    assert torch.allclose(spec.train_images[:, 0], expected, atol=1e-6)
    assert spec.test_labels.tolist() == arrays["test_labels"].tolist()
    # torchvision's raw layout, uncompressed
    _write_fake_mnist_dir(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False, n_train=30)
    assert load_dataset("fashionmnist", root=tmp_path / "tv").train_images.shape[0] == 30
    # the environment variable comes before Debian's directory
    _write_fake_mnist_dir(tmp_path / "env", n_train=40)
    monkeypatch.setenv("LIGHTNING_SDC_FASHIONMNIST_DIR", str(tmp_path / "env"))
    assert load_dataset("fashionmnist", root=tmp_path / "empty").train_images.shape[0] == 40
    # a truncated file is named, not silently skipped
    bad = tmp_path / "bad"
    _write_fake_mnist_dir(bad)
    path = bad / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3]))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("fashionmnist", root=bad)


@pytest.mark.skipif(
    find_idx_dir([tvs.DEBIAN_FASHIONMNIST_DIR]) is None,
    reason="Debian Fashion-MNIST IDX files absent (apt-get install dataset-fashion-mnist)",
)
def test_fashionmnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.delenv("LIGHTNING_SDC_FASHIONMNIST_DIR", raising=False)
    spec = load_dataset("fashionmnist", root=tmp_path)
    assert spec.source == str(tvs.DEBIAN_FASHIONMNIST_DIR)
    assert spec.train_images.shape == (60000, 1, 28, 28) and spec.test_images.shape == (10000, 1, 28, 28)
    assert torch.equal(spec.train_counts(), torch.full((10,), 6000))
    assert spec.train_labels[:5].tolist() == [9, 0, 0, 3, 0] and spec.test_labels[:3].tolist() == [9, 2, 1]
    pixels = spec.denormalize(spec.train_images)
    assert float(pixels.mean()) == pytest.approx(0.2861, abs=1e-3)
    assert float(pixels.std()) == pytest.approx(0.3530, abs=1e-3)


# ---------------------------------------------------------------- missing data
@pytest.mark.parametrize("name", ["mnist", "fashionmnist", "svhn", "cifar10", "cifar100", "tinyimagenet"])
def test_missing_dataset_error_names_dataset_paths_and_alternatives(name, tmp_path, monkeypatch):
    monkeypatch.delenv("LIGHTNING_SDC_FASHIONMNIST_DIR", raising=False)
    monkeypatch.setattr(tvs, "DEBIAN_FASHIONMNIST_DIR", tmp_path / "no-debian")
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, root=tmp_path / "data")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert f"dataset {name!r} is not available" in msg and "download=True" in msg
    assert str(tmp_path / "data") in msg and all(p in msg for p in err.value.tried)
    assert "'digits'" in msg and "'mnist5k'" in msg and "dataset-fashion-mnist" in msg
    if name == "fashionmnist":
        assert str(tmp_path / "no-debian") in msg


def test_prepare_is_a_no_op_for_offline_datasets(tmp_path):
    prepare_dataset("digits", tmp_path)
    prepare_dataset("mnist5k", tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- TinyImageNet
def _fake_tiny(root: Path) -> None:
    from PIL import Image

    base = root / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # unsorted on purpose: labels follow sorted order (ImageFolder)
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsalamander\nn03\tbullfrog\n")
    lines = []
    for k, w in enumerate(sorted(wnids)):
        (base / "train" / w / "images").mkdir(parents=True)
        for j in range(2):
            colour = (40 * k + 20, 100 + 50 * j, 30)
            Image.new("RGB", (64, 64), colour).save(base / "train" / w / "images" / f"{w}_{j}.JPEG")
        Image.new("L", (64, 64), 60 * k).save(base / "val" / "images" / f"val_{k}.JPEG")  # greyscale
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tinyimagenet_folder_layout_and_dc_pt(tmp_path):
    _fake_tiny(tmp_path)
    spec = load_dataset("tinyimagenet", root=tmp_path)
    assert spec.train_images.shape == (6, 3, 64, 64) and spec.test_images.shape == (3, 3, 64, 64)
    assert spec.num_classes == 3 and spec.class_names == ("goldfish", "salamander", "bullfrog")
    assert spec.train_labels.tolist() == [0, 0, 1, 1, 2, 2] and spec.test_labels.tolist() == [0, 1, 2]
    pixels = spec.denormalize(spec.train_images) * 255
    assert torch.allclose(pixels[2, :, 10, 10], torch.tensor([60.0, 100.0, 30.0]), atol=4)
    grey = spec.denormalize(spec.test_images[2]) * 255
    assert torch.allclose(grey[:, 5, 5], torch.full((3,), 120.0), atol=4)
    # the decoded folder is cached in DC's tinyimagenet.pt format, which loads as a dataset too
    cached = _cache_file(tmp_path / "tiny-imagenet-200")
    assert cached.is_file() and str(cached).startswith(str(cache_dir()))
    clear_dataset_cache()
    assert load_dataset("tinyimagenet", root=tmp_path, cache=False).train_labels.tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    atomic_torch_save(safe_torch_load(cached), tmp_path / "dc" / "tinyimagenet.pt")
    dc = load_dataset("tinyimagenet", root=tmp_path / "dc")
    assert torch.equal(dc.train_images, spec.train_images) and dc.class_names == spec.class_names
    assert dc.source == str(tmp_path / "dc" / "tinyimagenet.pt")


# ---------------------------------------------------------------- ZCA
def test_zca_matches_kornia_in_pixel_space_and_round_trips(tmp_path):
    from kornia.enhance import ZCAWhitening as KorniaZCA

    base, spec = load_dataset("digits"), load_dataset("digits", zca=True)
    assert spec.train_labels is base.train_labels and isinstance(spec.zca, ZCAWhitening)
    pixels = base.denormalize(base.train_images)
    reference = KorniaZCA(eps=0.1, compute_inv=True).fit(pixels)  # MTT: ToTensor only, then ZCA
    assert torch.allclose(spec.train_images, reference(pixels), atol=1e-4)
    assert torch.allclose(spec.test_images, reference(base.denormalize(base.test_images)), atol=1e-4)
    assert torch.allclose(spec.zca.inverse(spec.zca.transform(base.test_images)), base.test_images, atol=1e-4)
    assert torch.allclose(spec.denormalize(spec.train_images), pixels, atol=1e-4)
    assert torch.allclose(spec.normalize(pixels[:8]), spec.train_images[:8], atol=1e-4)
    normalized = load_dataset("digits", zca=True, zca_space="normalized")
    ref_n = KorniaZCA(eps=0.1, compute_inv=True).fit(base.train_images)
    assert torch.allclose(normalized.train_images, ref_n(base.train_images), atol=1e-4)
    atomic_torch_save(spec.zca.to_dict(), tmp_path / "zca.pt")
    restored = ZCAWhitening.from_dict(safe_torch_load(tmp_path / "zca.pt"))
    x = base.test_images[:16]
    assert torch.equal(restored.transform(x), spec.zca.transform(x))
    assert torch.equal(restored.inverse(spec.train_images[:4]), spec.zca.inverse(spec.train_images[:4]))
    with pytest.raises(ValueError, match="fitted on images of shape"):
        restored.transform(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="not a ZCAWhitening state"):
        ZCAWhitening.from_dict({"images": x})


def test_zca_transform_is_differentiable():
    zca = load_dataset("digits", zca=True).zca
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    zca.transform(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------- sampling
def test_class_indexed_sampling_is_seeded_distinct_and_class_pure(digits):
    real = ClassIndexedImages(digits.train_images, digits.train_labels, digits.num_classes)
    assert real.counts() == digits.train_counts().tolist() and real.count(3) == int(
        (digits.train_labels == 3).sum()
    )

    def gen(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    a, b, c = real.sample(4, 16, gen(7)), real.sample(4, 16, gen(7)), real.sample(4, 16, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    rows = real.sample_indices([4], 16, gen(7))
    assert len(set(rows.tolist())) == 16 and (digits.train_labels[rows] == 4).all()
    assert torch.equal(digits.train_images[rows], a)
    g1, g2 = gen(3), gen(3)
    many = real.sample_many([0, 5, 9], 8, g1)
    assert many.shape == (3, 8, 1, 8, 8)
    assert torch.equal(many, torch.stack([real.sample(c, 8, g2) for c in (0, 5, 9)]))
    everything = real.sample_indices([2], real.count(2), gen(0))  # n == count: a permutation of the class
    assert sorted(everything.tolist()) == real.indices(2).tolist()
    assert real.first_k(1, 5, gen(0)).shape == (5, 1, 8, 8)


def test_class_indexed_sampling_rejects_impossible_requests(digits):
    real = ClassIndexedImages(digits.train_images, digits.train_labels, 10)
    n = real.count(0)
    with pytest.raises(
        ValueError, match=rf"n={n + 1} distinct images of class 0: it has {n} \(allowed: 1 ≤ n ≤ {n}\)"
    ):
        real.sample(0, n + 1, torch.Generator())
    with pytest.raises(ValueError, match=r"class 10 is not allowed; allowed: 0 … 9"):
        real.sample(10, 1, torch.Generator())
    with pytest.raises(ValueError, match=r"n must be an integer >= 1 \(> 0\), got 0"):
        real.sample(0, 0, torch.Generator())


@pytest.mark.cuda
def test_class_indexed_sampling_on_cuda_matches_cpu_with_cpu_generator(digits):
    cpu = ClassIndexedImages(digits.train_images, digits.train_labels, 10)
    gpu = cpu.to("cuda")
    a = cpu.sample_many([1, 2], 4, torch.Generator().manual_seed(0))
    b = gpu.sample_many([1, 2], 4, torch.Generator().manual_seed(0))
    assert b.device.type == "cuda" and torch.equal(a, b.cpu())
    d = gpu.sample(3, 4, torch.Generator("cuda").manual_seed(0))
    assert (
        d.device.type == "cuda"
        and (gpu.labels[gpu.sample_indices([3], 4, torch.Generator("cuda"))] == 3).all()
    )


# ---------------------------------------------------------------- RealDataModule
def test_real_datamodule_on_digits_without_trainer():
    from lightning_sdc.data import RealDataModule

    dm = RealDataModule("Digits", test_batch_size=100, dataset_kwargs={"seed": 0})
    assert (dm.num_classes, dm.image_shape, dm.info.name) == (10, (1, 8, 8), "digits") and dm.spec is None
    with pytest.raises(RuntimeError, match="call setup"):
        dm.val_dataloader()
    dm.prepare_data()
    dm.setup("fit")
    assert dm.spec is load_dataset("digits") and dm.real.device.type == "cpu" and len(dm.real) == 1438
    ticks = iter(dm.train_dataloader())
    assert [next(ticks) for _ in range(4)] == [0, 1, 2, 3]
    batches = list(dm.val_dataloader())
    assert [len(b[1]) for b in batches] == [100, 100, 100, 59]
    assert torch.equal(torch.cat([b[0] for b in batches]), dm.spec.test_images)
    assert len(list(dm.test_dataloader())) == 4
    with pytest.raises(KeyError, match="allowed: cifar10"):
        RealDataModule("imagenet")
    with pytest.raises(ValueError, match=r"test_batch_size must be an integer >= 1 \(> 0\), got 0"):
        RealDataModule("digits", test_batch_size=0)


def test_real_datamodule_drives_a_trainer_with_ticks(tmp_path):
    import pytorch_lightning as pl

    from lightning_sdc.data import RealDataModule

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.ticks: list[int] = []
            self.val_rows = 0

        def training_step(self, batch, batch_idx):
            real = self.trainer.datamodule.real
            assert real.device == self.device
            self.ticks.append(batch)
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(self.w * real.sample(0, 2, torch.Generator().manual_seed(batch)).mean())
            opt.step()

        def validation_step(self, batch, batch_idx):
            self.val_rows += len(batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD([self.w], lr=0.1)

    dm = RealDataModule("digits", test_batch_size=128)
    probe = Probe()
    trainer = pl.Trainer(
        max_steps=3,
        val_check_interval=3,
        check_val_every_n_epoch=None,
        logger=False,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(probe, datamodule=dm)
    assert probe.ticks == [0, 1, 2] and probe.val_rows == 359 and trainer.global_step == 3
