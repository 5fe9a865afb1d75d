"""``GraDNTracker``: the mean GraDN of the synthetic set during distillation (paper Figure 1a/1c).

Every ``every`` updates: the gradient norm of each synthetic sample's loss w.r.t. each network of a fixed ensemble
(:func:`lightning_sdc.difficulty.per_sample_grad_norms`, the ``difficulty`` scores' computation), averaged and
logged raw (``<name>/raw``) and EMA-smoothed (``<name>/ema``). The ensemble (``source``): ``init`` fresh networks
(keyed ``(seed, _TRACK_KEY, k)``; ``resample`` redraws per step), ``experts`` snapshots of the DataModule's
buffer, ``trained`` networks trained on the real split (Definition 2's Θ_t), ``auto`` experts when there is a
buffer. Under DDP the networks are split across ranks and the sums reduced. The history is in
:meth:`state_dict` (a resumed run continues the curve) and in ``<name>.csv`` at the end;
:func:`plot_gradn_curves` draws curves with and without SDC in one figure.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_sdc.callbacks.common import log_metrics, output_dir, rank_share
from lightning_sdc.checks import check_int, check_number
from lightning_sdc.difficulty.grad_norms import GRAD_METHODS, PARAM_SETS, per_sample_grad_norms
from lightning_sdc.figures import save_figure
from lightning_sdc.io import atomic_write_text

SOURCES = ("auto", "init", "experts", "trained")
#: domain tag of the tracker's network generators
_TRACK_KEY = 0x4752444E  # "GRDN"
#: column names of ``gradn.csv``
CSV_COLUMNS = ("step", "gradn", "gradn_ema")


def ema_smooth(values: Sequence[float], beta: float) -> list[float]:
    """``s_0 = v_0``, ``s_t = β s_{t−1} + (1 − β) v_t`` (the smoothing of the paper's Figure 1)."""
    check_number("EMA coefficient", beta, 0, strict=False, below=1)
    out: list[float] = []
    for v in values:
        out.append(float(v) if not out else beta * out[-1] + (1 - beta) * float(v))
    return out


class GraDNTracker(pl.Callback):
    """Log the synthetic set's mean GraDN every ``every`` steps (see the module docstring).

    Args:
        every: measure after every ``every``-th synthetic-set update (and once at the start and at the end of
            ``fit``).
        num_networks: ensemble size.
        ema: EMA coefficient β of the smoothed curve.
        source: ``"auto"`` | ``"init"`` | ``"experts"`` | ``"trained"``.
        params: ``"all"`` (Definition 2) or ``"last_layer"``.
        method: per-sample gradients by ``"auto"`` | ``"vmap"`` | ``"loop"``.
        chunk_size: samples per vmapped call.
        arch, arch_kwargs: the ensemble's architecture (default: the method's ``arch`` and
            ``arch_kwargs``).
        expert_epochs: snapshot epoch of each expert network (``source="experts"``).
        resample: fresh initialisations at every measurement (``source="init"``).
        train_epochs: training epochs of each network (``source="trained"``).
        seed: seeds the fresh initialisations and the trained ensemble.
        dirpath: where ``<name>.csv`` goes (default: the log directory).
        name: metric prefix, CSV file stem and checkpoint state key (``"gradn"``).
    """

    def __init__(self, every: int = 10, num_networks: int = 4, ema: float = 0.9, source: str = "auto",
                 params: str = "all", method: str = "auto", chunk_size: int = 64, arch: str | None = None,
                 arch_kwargs: Mapping[str, Any] | None = None, expert_epochs: Sequence[int] | None = None,
                 resample: bool = False, train_epochs: int = 5, seed: int = 0, dirpath: str | None = None,
                 name: str = "gradn") -> None:
        for what, value in (("every", every), ("num_networks", num_networks), ("chunk_size", chunk_size),
                            ("train_epochs", train_epochs)):
            check_int(what, value, 1)
        check_number("ema", ema, 0, strict=False, below=1)
        for what, value, allowed in (("source", source, SOURCES), ("params", params, PARAM_SETS),
                                     ("method", method, GRAD_METHODS)):
            if value not in allowed:
                raise ValueError(f"{what}={value!r} is not allowed; allowed: {', '.join(allowed)}")
        if expert_epochs is not None and (len(expert_epochs) != num_networks or any(
                isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in expert_epochs)):
            raise ValueError(f"expert_epochs must be {num_networks} integers >= 0 (one per network), got "
                             f"{expert_epochs!r}")
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"name must be a non-empty string without '/', got {name!r}")
        if arch is not None:
            from lightning_sdc.models import NETWORKS

            arch = NETWORKS.canonical(arch)
        self.every, self.num_networks, self.ema = every, num_networks, float(ema)
        self.source, self.params, self.method, self.chunk_size = source, params, method, chunk_size
        self.arch, self.arch_kwargs = arch, dict(arch_kwargs) if arch_kwargs is not None else None
        self.expert_epochs = list(expert_epochs) if expert_epochs is not None else None
        self.resample, self.seed, self.dirpath = bool(resample), int(seed), dirpath
        self.train_epochs, self.name = int(train_epochs), name
        self.steps: list[int] = []
        self.values: list[float] = []
        self.ema_values: list[float] = []
        self._networks: dict[int, nn.Module] = {}
        self._network_key: tuple[Any, ...] | None = None

    @property
    def state_key(self) -> str:
        return f"GraDNTracker[{self.name}]"

    # ------------------------------------------------------------------ the ensemble
    def resolved_source(self, trainer: pl.Trainer) -> str:
        if self.source != "auto":
            return self.source
        return "experts" if getattr(getattr(trainer, "datamodule", None), "buffer", None) is not None else "init"

    def _arch(self, pl_module: pl.LightningModule) -> tuple[str, dict[str, Any]]:
        arch = self.arch or getattr(pl_module, "arch", None)
        if arch is None:
            raise ValueError("GraDNTracker needs arch= when the module has no 'arch' attribute")
        if self.arch_kwargs is not None:
            return arch, self.arch_kwargs
        return arch, dict(getattr(pl_module, "arch_kwargs", {}) or {}) if arch == getattr(pl_module, "arch", None) else {}

    def snapshot_plan(self, datamodule: Any) -> list[tuple[int, int]]:
        """``(expert_id, epoch)`` of each network for ``source="experts"``."""
        buffer, epochs = datamodule.buffer, self.expert_epochs
        if epochs is None:
            lo = int(getattr(datamodule, "min_start_epoch", 0))
            hi = max(lo + 1, min(int(getattr(datamodule, "max_start_epoch", buffer.epochs + 1)), buffer.epochs + 1))
            epochs = [lo + (k * (hi - lo)) // self.num_networks for k in range(self.num_networks)]
        if bad := [e for e in epochs if e > buffer.epochs]:
            raise ValueError(f"expert_epochs {bad} exceed the buffer's {buffer.epochs} epochs")
        ids = buffer.expert_ids
        return [(ids[k % len(ids)], int(epochs[k])) for k in range(self.num_networks)]

    def network(self, k: int, step: int, trainer: pl.Trainer, pl_module: pl.LightningModule) -> nn.Module:
        """Network ``k`` of the ensemble at ``step`` (built once and cached unless ``resample``)."""
        from lightning_sdc.models import build_network
        from lightning_sdc.training import seeded_generator

        source = self.resolved_source(trainer)
        key = (source, str(pl_module.device), self.resample and step)
        if key != self._network_key:
            self._networks, self._network_key = {}, key
        if k in self._networks:
            return self._networks[k]
        (arch, kwargs), synset, device = self._arch(pl_module), pl_module.synset, pl_module.device
        c, h, w = synset.image_shape
        if source == "init":
            keys = (self.seed, _TRACK_KEY, k) + ((step,) if self.resample else ())
            net = build_network(arch, c, synset.num_classes, (h, w), generator=seeded_generator(*keys), **kwargs)
        elif source == "trained":
            from lightning_sdc.difficulty import train_ensemble

            spec = getattr(trainer.datamodule, "spec", None)
            if spec is None:
                raise ValueError("GraDNTracker(source='trained') needs a DataModule with a loaded dataset 'spec'")
            nets = train_ensemble(spec, self.num_networks, epochs=self.train_epochs, arch=arch, arch_kwargs=kwargs,
                                  seed=self.seed, device=device)
            self._networks.update({i: n.eval() for i, n in enumerate(nets)})
            return nets[k]
        else:
            dm = trainer.datamodule
            if getattr(dm, "buffer", None) is None:
                raise ValueError("GraDNTracker(source='experts') needs a DataModule with an expert buffer")
            net = build_network(arch, c, synset.num_classes, (h, w), **kwargs)
            flat, n_params = dm.buffer.snapshot(*self.snapshot_plan(dm)[k]), sum(p.numel() for p in net.parameters())
            if flat.numel() != n_params:
                raise ValueError(f"expert snapshots have {flat.numel()} parameters but {arch} {kwargs} has "
                                 f"{n_params}; pass the buffer's arch/arch_kwargs to GraDNTracker")
            torch.nn.utils.vector_to_parameters(flat.to(torch.float32), net.parameters())
        net = net.to(device).eval()
        self._networks[k] = net
        return net

    # ------------------------------------------------------------------ measuring
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int | None = None) -> float:
        """Mean per-sample gradient norm of the synthetic set over the ensemble (this rank's networks, reduced)."""
        step = trainer.global_step if step is None else step
        images, targets, _ = pl_module.synset.detached()
        if not (torch.isfinite(images).all() and torch.isfinite(targets.float()).all()):
            return float("nan")
        total = torch.zeros(2, dtype=torch.float64, device=pl_module.device)
        for k in rank_share(list(range(self.num_networks)), trainer.global_rank, trainer.world_size):
            net = self.network(k, step, trainer, pl_module)
            norms = per_sample_grad_norms(net, images, targets, params=self.params, method=self.method,
                                          chunk_size=self.chunk_size)
            total[0] += norms.double().sum()
            total[1] += norms.numel()
        if trainer.world_size > 1:
            total = trainer.strategy.reduce(total, reduce_op="sum")
        return float(total[0] / total[1].clamp(min=1))

    def record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure at the current step, append to the history and log raw and EMA values."""
        step = int(trainer.global_step)
        if self.steps and self.steps[-1] == step:
            return
        value = self.measure(trainer, pl_module, step)
        smoothed = value if not self.ema_values else self.ema * self.ema_values[-1] + (1 - self.ema) * value
        self.steps.append(step)
        self.values.append(value)
        self.ema_values.append(smoothed)
        log_metrics(trainer, {f"{self.name}/raw": value, f"{self.name}/ema": smoothed}, step)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        if trainer.global_step % self.every == 0:
            self.record(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, pl_module)  # the curve always ends at the last step (a no-op if measured there)
        out = output_dir(trainer, self.dirpath)  # collective under DDP
        if trainer.is_global_zero and self.steps:
            self.csv_path = self.write_csv(out / f"{self.name}.csv")

    # ------------------------------------------------------------------ history
    def history(self) -> dict[str, list[float]]:
        """``{"step": […], "gradn": […], "gradn_ema": […]}``."""
        return {"step": list(self.steps), "gradn": list(self.values), "gradn_ema": list(self.ema_values)}

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write the history as ``step,gradn,gradn_ema`` rows (atomically)."""
        lines = [",".join(CSV_COLUMNS)]
        lines += [f"{s},{v:.8g},{e:.8g}" for s, v, e in zip(self.steps, self.values, self.ema_values)]
        return atomic_write_text("\n".join(lines) + "\n", path)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "values": list(self.values), "ema_values": list(self.ema_values)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        try:
            steps, values, emas = state_dict["steps"], state_dict["values"], state_dict["ema_values"]
        except KeyError as exc:
            raise KeyError(f"GraDNTracker state is missing {exc}; has {sorted(state_dict)}") from None
        if not len(steps) == len(values) == len(emas):
            raise ValueError(f"GraDNTracker state has {len(steps)} steps, {len(values)} values, {len(emas)} EMA values")
        self.steps, self.values, self.ema_values = [int(s) for s in steps], list(map(float, values)), list(map(float, emas))


# ---------------------------------------------------------------------- curves and the Figure 1a plot
def read_curve(path: str | os.PathLike, column: str | None = None) -> tuple[list[int], list[float]]:
    """``(steps, values)`` from a ``gradn.csv`` of :class:`GraDNTracker` or a Lightning ``metrics.csv``.

    ``column`` defaults to ``gradn`` (tracker file) or ``gradn/raw`` (CSVLogger file); rows without a value in
    that column are skipped.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"GraDN curve file not found: {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if column is None:
            column = next((c for c in ("gradn", "gradn/raw") if c in fields), None)
        if column is None or column not in fields or "step" not in fields:
            raise ValueError(f"{path} has columns {fields}; need 'step' and {column or 'gradn or gradn/raw'}")
        pairs = [(int(float(r["step"])), float(r[column])) for r in reader if r.get(column) not in (None, "")]
    if not pairs:
        raise ValueError(f"{path} has no values in column {column!r}")
    pairs.sort()
    return [s for s, _ in pairs], [v for _, v in pairs]


CurveSource = str | os.PathLike | tuple[Sequence[int], Sequence[float]]


def _curve(source: CurveSource, column: str | None) -> tuple[list[int], list[float]]:
    if isinstance(source, tuple):
        steps, values = source
        if len(steps) != len(values) or not len(steps):
            raise ValueError(f"a curve needs as many steps as values (and at least one), got {len(steps)}/{len(values)}")
        return [int(s) for s in steps], [float(v) for v in values]
    return read_curve(source, column)


def plot_gradn_curves(curves: Mapping[str, CurveSource], path: str | os.PathLike, *, ema: float = 0.9,
                      column: str | None = None, title: str | None = None, shade: bool = True) -> Path:
    """Draw GraDN curves (e.g. ``{"DSA": "…/gradn.csv", "DSA + SDC": "…/gradn.csv"}``) into a PNG (Figure 1a).

    Each curve is drawn raw (thin) and EMA-smoothed with ``ema`` (bold; the paper's curves are smoothed);
    with exactly two curves and ``shade``, the gap between the smoothed curves is shaded over their common
    steps ("the shade represents the gap before and after adding our SDC").

    Args:
        curves: label → ``gradn.csv`` / ``metrics.csv`` path or ``(steps, values)``.
        path: output PNG.
        ema: smoothing coefficient β in [0, 1).
        column: CSV column to read (default: ``gradn`` or ``gradn/raw``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not curves:
        raise ValueError("curves must hold at least one labelled curve")
    loaded = {label: _curve(src, column) for label, src in curves.items()}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    smoothed: dict[str, tuple[list[int], list[float]]] = {}
    for i, (label, (steps, values)) in enumerate(loaded.items()):
        color = f"C{i}"
        ax.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
        sm = ema_smooth(values, ema)
        ax.plot(steps, sm, color=color, linewidth=2.0, label=label)
        smoothed[label] = (steps, sm)
    if shade and len(smoothed) == 2:
        (s1, v1), (s2, v2) = smoothed.values()
        m2 = dict(zip(s2, v2))
        common = [(s, v, m2[s]) for s, v in zip(s1, v1) if s in m2]
        if common:
            ax.fill_between(*zip(*common), color="grey", alpha=0.25)
    ax.set_xlabel("distillation step")
    ax.set_ylabel("mean GraDN of the synthetic set")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] + [
        Line2D([], [], color="grey", alpha=0.3, lw=0.8, label="faint: measured"),
        Line2D([], [], color="grey", lw=2.0, label=f"bold: EMA (β = {ema:g})")]
    if shade and len(smoothed) == 2:
        handles.append(Patch(color="grey", alpha=0.25, label="band: gap between the EMAs"))
    ax.legend(handles=handles, fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def curve_summary(steps: Sequence[int], values: Sequence[float], ema: float = 0.9) -> dict[str, float]:
    """Start and end of a curve, raw and smoothed (for reports)."""
    sm = ema_smooth(values, ema)
    finite = [v for v in values if math.isfinite(v)]
    return {"first_step": float(steps[0]), "last_step": float(steps[-1]), "start": float(values[0]),
            "end": float(values[-1]), "start_ema": float(sm[0]), "end_ema": float(sm[-1]),
            "max": max(finite) if finite else float("nan")}
