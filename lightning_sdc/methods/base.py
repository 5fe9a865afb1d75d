"""``DistillationModule``: the Lightning skeleton every distillation method shares.

One ``training_step`` is **one update of the synthetic set** (one ``optimizer.step()``), so ``global_step``,
``max_steps``, ``val_check_interval``, checkpoint names and the ASDC λ ramp all count the same unit. The module
holds the :class:`~lightning_sdc.synthetic.SyntheticSet` (shaped in ``__init__`` from the dataset's metadata, so
a checkpoint loads into a fresh module; initialised in ``setup("fit")``), one SGD optimiser over the learned
tensors (:meth:`~DistillationModule.param_groups`), ``sdc_lambda`` as a plain attribute (the ASDC callback moves
it), generators keyed on ``(seed, step, …)`` so that resuming and DDP ranks reproduce the same draws, and the
validation/test loop, which is the evaluation engine (:mod:`lightning_sdc.evaluation.protocol`; ``eval/acc_mean``,
``eval/acc_std``). A non-finite loss or gradient stops the run before the update (:class:`DivergenceError`,
naming the setting to change); checkpoints are written atomically (:class:`AtomicCheckpointIO`: Lightning's own
writer stages the file in the system temp directory, whose final ``move`` across filesystems a pre-emption can
cut short).
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from torch import Tensor
from torch.utils.data import TensorDataset

from lightning_sdc.checks import check_choices, check_int, check_number
from lightning_sdc.evaluation.protocol import evaluate_table
from lightning_sdc.io import atomic_torch_save, safe_torch_load
from lightning_sdc.progress import progress, trainer_progress_enabled
from lightning_sdc.synthetic import SyntheticSet
from lightning_sdc.training import TrainAugment, seeded_generator


class DivergenceError(RuntimeError):
    """A non-finite loss or synthetic set: the run stops instead of writing NaN images."""


def _network_name(key: str, name: Any, networks: Any) -> str:
    """``networks.canonical(name)``, its ``KeyError`` prefixed with the config key (``arch=...``)."""
    try:
        return networks.canonical(name)
    except (KeyError, TypeError) as exc:
        raise type(exc)(f"{key}={name!r}: {exc.args[0]}") from None


def _is_local(path: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(get_filesystem(path), LocalFileSystem)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints through :mod:`lightning_sdc.io` (local paths; remote ones go to Lightning's writer).

    ``save_checkpoint`` = :func:`~lightning_sdc.io.atomic_torch_save` (a SIGKILL mid-write leaves the previous
    file); ``load_checkpoint`` = :func:`~lightning_sdc.io.safe_torch_load` with ``weights_only=True`` always (this
    package's checkpoints hold only tensors and primitives), so a truncated file raises a ``ValueError`` naming it.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return safe_torch_load(path, what="checkpoint", map_location=map_location)


def use_atomic_checkpoint_io(trainer: pl.Trainer) -> None:
    """Give ``trainer``'s strategy an :class:`AtomicCheckpointIO` unless the user chose another checkpoint IO."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def check_pytorch_lightning(objects: Any) -> None:
    """Raise a one-line ``TypeError`` for any object of the unified ``lightning`` package (``lightning.pytorch``):
    this library is built on ``pytorch-lightning`` (``import pytorch_lightning``), and the two packages' classes
    do not mix."""
    for obj in objects:
        module = type(obj).__module__
        if module == "lightning" or module.startswith("lightning."):
            name = f"{module}.{type(obj).__name__}"
            fix = name.replace("lightning.pytorch", "pytorch_lightning").replace("lightning.fabric", "lightning_fabric")
            raise TypeError(f"{name} is from the unified `lightning` package; lightning_sdc uses `pytorch-lightning`: "
                            f"use {fix} (and pytorch_lightning.Trainer)")


class DistillationModule(pl.LightningModule):
    """Base class of every distillation method (see the module docstring).

    Args:
        dataset: dataset registry name (shapes the synthetic set; the DataModule must serve the same one).
        ipc: images per class.
        sdc_lambda: SDC coefficient λ (0 = the baseline method, step for step).
        sdc_power: 1 (eq. 11/12: ``λ‖∇θL_syn‖``) or 2 (Algorithms 1/2: ``λ‖∇θL_syn‖²``).
        lr_img: learning rate of the images.
        momentum_img: momentum of the image SGD (0.5 in DC/DSA/DCC and MTT/FTD/TESLA/DATM).
        init: ``"real"`` (random real images of each class) or ``"noise"`` (N(0,1) in normalised space).
        seed: seeds every generator of the run.
        label_mode: ``"hard"`` | ``"soft"`` | ``"learned"``.
        syn_lr: initial student lr (trajectory matching); ``None`` for none.
        learn_lr: learn ``syn_lr``.
        zca: the data are ZCA-whitened (must match the DataModule).
        arch: the network the method matches with (network registry name).
        arch_kwargs: extra ``build_network`` keywords (e.g. ``width``/``depth`` for CPU-sized runs).
        eval_arch: architecture of the evaluation networks (default ``arch``).
        eval_arch_kwargs: ``build_network`` options of the evaluation networks (default: ``arch_kwargs`` when
            ``eval_arch`` is ``arch``, else none). Each ``eval_*`` hyperparameter is ``eval_`` + the name of the
            same option of ``lightning-sdc evaluate``.
        eval_num_models: fresh networks per evaluation.
        eval_epochs: training epochs of each evaluation network (300 DC, 1000 DSA/TM).
        eval_lr: evaluation lr (``None``: the learned ``syn_lr`` if any, else 0.01).
        eval_augment: ``"dsa"`` | ``"dc"`` | ``"none"``.
        eval_batch_size: batch size when training evaluation networks (256; DATM 128).
        dsa_strategy: DSA strategy string (``None``: the dataset's default; no flip for digits).
        eval_compiled: ``torch.compile``'d evaluation passes; ``None``: when the evaluation pays for the compilation
            (:data:`~lightning_sdc.evaluation.protocol.COMPILE_MIN_FLOP`).
    """

    def __init__(
        self,
        dataset: str,
        ipc: int,
        *,
        sdc_lambda: float = 0.0,
        sdc_power: Literal[1, 2] = 1,
        lr_img: float = 0.1,
        momentum_img: float = 0.5,
        init: Literal["real", "noise"] = "real",
        seed: int = 0,
        label_mode: Literal["hard", "soft", "learned"] = "hard",
        syn_lr: float | None = None,
        learn_lr: bool = False,
        zca: bool = False,
        arch: str = "ConvNet",
        arch_kwargs: dict[str, Any] | None = None,
        eval_arch: str | None = None,
        eval_arch_kwargs: dict[str, Any] | None = None,
        eval_num_models: int = 5,
        eval_epochs: int = 300,
        eval_lr: float | None = None,
        eval_augment: TrainAugment = "dsa",
        eval_batch_size: int = 256,
        dsa_strategy: str | None = None,
        eval_compiled: bool | None = None,
    ) -> None:
        super().__init__()
        from lightning_sdc.data import dataset_info
        from lightning_sdc.models import NETWORKS, network_options

        self.save_hyperparameters()
        check_choices(type(self), self.hparams)
        check_int("ipc", ipc, 1)
        check_int("seed", seed, 0)
        check_number("sdc_lambda", sdc_lambda, strict=False)
        check_number("lr_img", lr_img)
        check_number("momentum_img", momentum_img, strict=False, below=1)
        check_int("eval_num_models", eval_num_models, 1)
        check_int("eval_epochs", eval_epochs, 0)
        check_int("eval_batch_size", eval_batch_size, 1)
        for name, value in (("eval_lr", eval_lr), ("syn_lr", syn_lr)):
            if value is not None:
                check_number(name, value)
        self.arch = _network_name("arch", arch, NETWORKS)
        self.eval_arch = _network_name("eval_arch", eval_arch or arch, NETWORKS)
        for key, name, kwargs in (("arch_kwargs", self.arch, arch_kwargs),
                                  ("eval_arch_kwargs", self.eval_arch, eval_arch_kwargs)):
            options = network_options(name)
            unknown = sorted(set(kwargs or {}) - set(options))
            if unknown:
                raise ValueError(
                    f"{key} has unknown option(s) {', '.join(unknown)} for {key[:-len('_kwargs')]}={name!r}; allowed: "
                    f"{', '.join(options) or 'none'}"
                )
        info = dataset_info(dataset)
        self.info = info
        self.sdc_lambda = float(sdc_lambda)
        self.sdc_power = int(sdc_power)
        self.seed = int(seed)
        self.arch_kwargs = dict(arch_kwargs or {})
        if eval_arch_kwargs is not None:
            self.eval_arch_kwargs = dict(eval_arch_kwargs)
        else:
            self.eval_arch_kwargs = dict(self.arch_kwargs) if self.eval_arch == self.arch else {}
        self.synset = SyntheticSet.blank(
            num_classes=info.num_classes,
            ipc=ipc,
            image_shape=info.image_shape,
            label_mode=label_mode,
            dataset=info.name,
            mean=info.mean,
            std=info.std,
            syn_lr=syn_lr,
            learn_lr=learn_lr,
            class_names=info.class_names,
        )
        self.automatic_optimization = False
        self._initialised = False

    # ------------------------------------------------------------------ data access
    @property
    def datamodule(self) -> Any:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            raise RuntimeError(f"{type(self).__name__} needs a DataModule passed to the Trainer (e.g. RealDataModule)")
        return dm

    @property
    def real(self) -> Any:
        """The class-indexed real training images (``ClassIndexedImages``) of the attached DataModule."""
        return self.datamodule.real

    @property
    def num_classes(self) -> int:
        return self.synset.num_classes

    def local_classes(self) -> list[int]:
        """Classes this rank is responsible for (all classes on one process; ``range(rank, C, world)`` under DDP)."""
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return list(range(rank, self.num_classes, world))

    def generator(self, *keys: int, device: torch.device | str | None = None) -> torch.Generator:
        """A generator seeded from ``(seed, *keys)`` on ``device`` (default CPU)."""
        return seeded_generator(self.seed, *keys, device=device or "cpu")

    @property
    def step_index(self) -> int:
        """Index of the synthetic-set update about to be made (== ``global_step`` for every method)."""
        return int(self.global_step)

    # ------------------------------------------------------------------ lifecycle
    def configure_callbacks(self) -> list[pl.Callback]:
        """No callbacks of its own; refuses the unified ``lightning`` package's callbacks and loggers, and for a
        ``fit`` the Trainer settings that would never end, train nothing or crash late
        (:func:`lightning_sdc.runs.check_trainer_settings`). Lightning calls this hook first in
        ``fit``/``validate``/``test``, before ``prepare_data``, ``setup`` or any callback."""
        if self._trainer is not None:
            from pytorch_lightning.trainer.states import TrainerFn

            from lightning_sdc.runs import check_trainer_settings

            check_pytorch_lightning([*self.trainer.callbacks, *self.trainer.loggers])
            if self.trainer.state.fn == TrainerFn.FITTING:
                check_trainer_settings(self.trainer)
        return []

    def setup(self, stage: str) -> None:
        """Check the DataModule matches, then initialise the synthetic set (before a checkpoint restore).

        Also installs :class:`AtomicCheckpointIO` (Lightning calls ``setup`` before it reads or writes any
        checkpoint of the run).
        """
        if self._trainer is not None:
            use_atomic_checkpoint_io(self.trainer)
            for logger in self.trainer.loggers:  # no `hp_metric = -1` placeholder beside the hyper-parameters
                if hasattr(logger, "_default_hp_metric"):
                    logger._default_hp_metric = False
        self.synset.eval_protocol = self.eval_protocol()  # saved with the set: `evaluate` defaults to it
        self.check_networks()
        if stage != "fit" or self._initialised:
            return
        dm = self.datamodule
        dm_name = getattr(getattr(dm, "info", None), "name", None)
        if dm_name is not None and dm_name != self.info.name:
            raise ValueError(f"model dataset {self.info.name!r} does not match the DataModule's dataset {dm_name!r}")
        dm_zca = getattr(dm, "zca", None)
        if dm_zca is not None and bool(dm_zca) != bool(self.hparams.zca):
            raise ValueError(f"model zca={self.hparams.zca} does not match the DataModule's zca={dm_zca}")
        if self.hparams.init == "real":
            real, ipc = self.real, self.synset.ipc
            fewest = min(range(self.num_classes), key=real.count)
            if real.count(fewest) < ipc:
                raise ValueError(
                    f"ipc={ipc} needs {ipc} real images per class for init='real', but class {fewest} of "
                    f"{self.info.name!r} has {real.count(fewest)}; allowed: ipc <= {real.count(fewest)} "
                    "(or init='noise')"
                )
        self.init_synset()
        self._initialised = True

    def check_networks(self) -> None:
        """Build the matching and the evaluation network and run each on one dummy batch of the dataset's image
        shape, so that an impossible ``arch``/``eval_arch`` fails in ``setup``, not at the first evaluation."""
        from lightning_sdc.models import build_network

        c, h, w = self.synset.image_shape
        for key, name, kwargs in (("arch", self.arch, self.arch_kwargs),
                                  ("eval_arch", self.eval_arch, self.eval_arch_kwargs)):
            try:
                net = build_network(name, c, self.num_classes, (h, w), generator=self.generator(-2), **kwargs)
                with torch.no_grad():
                    net.eval()(torch.zeros(2, c, h, w))
            except Exception as exc:  # noqa: BLE001 - re-raised naming the setting and the shape
                options = f" with {key}_kwargs={kwargs}" if kwargs else ""
                raise ValueError(
                    f"{key}={name!r}{options} cannot take {self.info.name!r} images of shape {(c, h, w)}: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ) from exc

    def init_synset(self) -> None:
        """Initialise the images (real or noise) with a generator seeded by ``(seed, -1)``; methods may extend."""
        g = self.generator(-1)
        if self.hparams.init == "real":
            self.synset.init_from_real(self.real, g)
        else:
            self.synset.init_noise(g)
        spec = getattr(self.datamodule, "spec", None)
        zca = getattr(spec, "zca", None)
        if zca is not None:
            self.synset.zca_state = zca.to_dict()

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups; the base learns only the images (SGD, ``lr_img``, ``momentum_img``)."""
        return [{"params": [self.synset.images], "lr": self.hparams.lr_img, "momentum": self.hparams.momentum_img}]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.param_groups())

    # ------------------------------------------------------------------ the update
    def apply_update(self, loss: Tensor) -> None:
        """``zero_grad → manual_backward(loss) → step``, refusing non-finite losses or gradients."""
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.check_finite(loss, "loss")
        self.manual_backward(loss)
        self.step_optimizer()

    def step_optimizer(self) -> None:
        """Check the gradients are finite, then ``opt.step()`` (one synthetic-set update)."""
        names = {id(self.synset.images): "images", id(self.synset.labels): "label logits", id(self.synset.syn_lr): "syn_lr"}
        for group in self.param_groups():
            for p in group["params"]:
                if p.grad is not None:
                    self.check_finite(p.grad, f"gradient of the {names.get(id(p), 'parameters')}")
        self.optimizers().step()

    def check_finite(self, value: Tensor, what: str) -> None:
        """Raise :class:`DivergenceError` naming the step, the last checkpoint and (:meth:`divergence_hint`)
        the setting to change if ``value`` is not finite."""
        if bool(torch.isfinite(value).all()):
            return
        ckpt = None
        if self._trainer is not None and self.trainer.checkpoint_callback is not None:
            ckpt = getattr(self.trainer.checkpoint_callback, "last_model_path", None) or None
        raise DivergenceError(
            f"non-finite {what} at step {self.step_index} of {type(self).__name__}; the synthetic set was not "
            f"updated. Last good checkpoint: {ckpt or 'none saved'}. {self.divergence_hint()}"
        )

    def divergence_hint(self) -> str:
        """What to change after a divergence; methods that learn more than the images refine it."""
        return f"Lower lr_img={self.hparams.lr_img:g} or sdc_lambda={self.sdc_lambda:g}, or resume from it."

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose synthetic set (or any other floating-point state) is not finite."""
        bad = [k for k, v in checkpoint.get("state_dict", {}).items()
               if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            path = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
            raise ValueError(f"checkpoint {path or ''} holds NaN or infinite values in {', '.join(bad)}; allowed: "
                             "finite values (a damaged checkpoint, or one saved after a divergence): resume from an "
                             "earlier checkpoint")

    def log_step(self, **values: Any) -> None:
        """Log per-step scalars (and λ as ``sdc/lambda``), one value each."""
        values.setdefault("sdc/lambda", self.sdc_lambda)
        self.log_dict({k: float(v) for k, v in values.items()}, on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ evaluation (validation loop)
    def eval_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~lightning_sdc.evaluation.evaluate_synset` for this method's protocol."""
        return {
            "arch": self.eval_arch,
            "num_models": self.hparams.eval_num_models,
            "epochs": self.hparams.eval_epochs,
            "lr": self.hparams.eval_lr,
            "batch_size": self.hparams.eval_batch_size,
            "augment": self.hparams.eval_augment,
            "dsa_strategy": self.hparams.dsa_strategy,
            "seed": self.seed,
            "arch_kwargs": self.eval_arch_kwargs,
            "compiled": self.hparams.get("eval_compiled"),
        }

    def eval_protocol(self) -> dict[str, Any]:
        """This method's evaluation protocol as saved with its set (:attr:`SyntheticSet.eval_protocol`): the
        options of ``lightning-sdc evaluate`` (``arch``, ``arch_kwargs``, ``num_models``, ``epochs``, ``lr``,
        ``batch_size``, ``augment``, ``dsa_strategy``) and the ``method`` name; plain values only."""
        kw = self.eval_kwargs()
        protocol = {k: kw[k] for k in ("arch", "num_models", "epochs", "lr", "batch_size", "augment", "dsa_strategy")}
        return {"method": type(self).__name__, **protocol, "arch_kwargs": dict(kw["arch_kwargs"])}

    def eval_synset(self) -> SyntheticSet:
        """The set the evaluation trains on (FTD overrides it with the EMA of the images)."""
        return self.synset

    def evaluation_split(self) -> tuple[Tensor, Tensor]:
        """The test images and labels of the running validation (or test) loop: the tensors of its loader's
        ``TensorDataset``, the first ``world × batches × batch_size`` rows — the rows Lightning's loop (its
        ``DistributedSampler`` deals them round-robin) passes under ``limit_val_batches`` and the sanity check."""
        trainer = self.trainer
        loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if not isinstance(getattr(loader, "dataset", None), TensorDataset):
            raise TypeError(f"{type(self).__name__} evaluates on its validation loader's TensorDataset (images, labels); "
                            f"got {type(getattr(loader, 'dataset', None)).__name__}")
        images, labels = loader.dataset.tensors[:2]
        counts = (trainer.num_sanity_val_batches if trainer.sanity_checking else
                  trainer.num_test_batches if trainer.testing else trainer.num_val_batches)
        batches = counts[0] if isinstance(counts, (list, tuple)) else counts
        rows = min(len(images), trainer.world_size * batches * (loader.batch_size or len(images)))
        return images[:rows], labels[:rows]

    def evaluate_now(self) -> list[float]:
        """Accuracies of ``eval_num_models`` fresh networks trained on :meth:`eval_synset` and tested on
        :meth:`evaluation_split`, through the evaluation engine, shared over the ranks under DDP. Network ``i`` draws
        from ``(seed, 7919, step, i)`` at the periodic evaluations (fresh networks at every step) and from
        ``(seed, i)`` for the final set and under ``validate``/``test``: the networks ``lightning-sdc evaluate`` and
        :func:`~lightning_sdc.evaluation.evaluate_synset` train, so both report the same accuracies for it."""
        if not bool(self.synset.images.detach().any()):
            raise ValueError(
                f"the synthetic set of this {type(self).__name__} is blank (all zeros: never fitted, no checkpoint "
                "loaded); validate/test need ckpt_path= a checkpoint of a fit run, or a fitted module"
            )
        kw = self.eval_kwargs()
        kw["arch_kwargs"] = {kw.pop("arch"): kw["arch_kwargs"]}
        rank, world = self.trainer.global_rank, self.trainer.world_size
        # Lightning's validation bar shows "0/?" while these train: an inner bar with their epochs and an ETA
        mine = len(range(rank, kw["num_models"], world))
        split = self.evaluation_split()
        self.last_eval_test_images = len(split[0])
        with progress(total=mine * (kw["epochs"] + 1), desc="evaluation networks", unit="epoch",
                      enabled=trainer_progress_enabled(self._trainer)) as bar:
            (result,), _ = evaluate_table(self.eval_synset(), split, list(kw["arch_kwargs"]), **kw,
                                          key=self.evaluation_key(), distributed=world > 1,
                                          on_epoch=bar.update)
        return result.accuracies

    def evaluation_key(self) -> tuple[int, ...]:
        """``(seed,)`` for the final set (and ``validate``/``test``), ``(seed, 7919, step)`` before it."""
        trainer = self.trainer
        final = trainer.state.fn != "fit" or 0 < trainer.max_steps <= self.step_index
        return (self.seed,) if final else (self.seed, 7919, self.step_index)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing per batch: :meth:`on_validation_epoch_end` evaluates on the loader's tensors at once."""

    def on_validation_epoch_end(self) -> None:
        accs = torch.tensor(self.evaluate_now(), dtype=torch.float64)
        self.last_eval_accuracies = [float(a) for a in accs]
        std = accs.std(unbiased=False) if accs.numel() > 1 else torch.zeros((), dtype=accs.dtype)
        self.log("eval/acc_mean", float(accs.mean()), prog_bar=True, sync_dist=False, rank_zero_only=False)
        self.log("eval/acc_std", float(std), sync_dist=False)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()
