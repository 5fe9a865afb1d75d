"""The reference implementations' loops, re-written here from their published algorithms, timed side by side
with this library (``gm_vs_reference``, ``tm_vs_reference``, ``eval_vs_reference``). No reference code is copied;
each function follows the steps of the named upstream function in plain PyTorch, Python loops included, since
the loops' overhead is part of what is compared.

* :func:`dc_update`: one image update of VICO-UoE/DatasetCondensation ``main.py`` (DC, no DSA): per class a
  fresh real batch (a random permutation of the class's indices, first ``batch_real``), the detached real
  gradient, the synthetic gradient with ``create_graph``, ``match_loss`` (``distance_wb`` per parameter
  tensor, Python loop) summed over classes, one backward and SGD step on the images; then, unless it is the
  iteration's last update, ``inner_loop`` epochs of the network on a copy of the set through a
  ``DataLoader`` (``utils.py:epoch``: loss, accuracy via NumPy, SGD step per batch).
* :func:`mtt_update`: one update of GeorgeCazenavette/mtt-distillation ``distill.py`` with its
  ``ReparamModule`` (the module's parameters replaced by views of one flat vector for each forward):
  ``syn_steps`` unrolled student steps with ``create_graph``, the normalised ``mse_loss`` sum, backward, SGD
  steps on the images and the lr.
* :func:`evaluate_one`: ``utils.py:evaluate_synset``: SGD (momentum 0.9, weight decay 5e-4), ``epochs + 1``
  passes in ``DataLoader`` batches of 256, lr × 0.1 and a new optimiser after pass ``epochs // 2 + 1``, then one
  ``utils.py:epoch('test', …)`` pass: batches of 256 from a ``DataLoader`` over the test split, the loss and the
  NumPy accuracy per batch, autograd recording (the reference tests without ``torch.no_grad``). DC's
  ``get_dataset`` hands the torchvision dataset to that loader, so each test image is converted on every pass
  (PIL image → ``ToTensor`` → ``Normalize``): :class:`PerImageTestSet` does the same for a uint8 split.
  Not reproduced: the wall-clock reseeding of ``get_network`` (the benchmark gives both sides the same
  initialisation, so their accuracies pair up) and DC's ``augment`` call, which returns the batch unchanged for
  Fashion-MNIST (``get_daparam``: strategy ``none``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import transforms


# ---------------------------------------------------------------------------------------------- DC main.py
def _layer_distance(gr: Tensor, gs: Tensor) -> Tensor:
    """``distance_wb``: 0 for 1-D tensors, else Σ over rows of ``1 − cos`` (rows: output units)."""
    if gr.dim() == 1:
        return torch.tensor(0.0, device=gr.device)
    gr, gs = gr.reshape(gr.shape[0], -1), gs.reshape(gs.shape[0], -1)
    return torch.sum(1 - torch.sum(gr * gs, dim=-1) / (torch.norm(gr, dim=-1) * torch.norm(gs, dim=-1) + 1e-6))


def _match_loss(gw_syn: Sequence[Tensor], gw_real: Sequence[Tensor]) -> Tensor:
    dis = torch.tensor(0.0, device=gw_real[0].device)
    for gs, gr in zip(gw_syn, gw_real):
        dis = dis + _layer_distance(gr, gs)
    return dis


def _train_epoch(loader: DataLoader, net: nn.Module, opt: torch.optim.Optimizer | None) -> float:
    """``utils.py:epoch``: ``'train'`` with an optimiser (``aug=False``), ``'test'`` without one (eval mode, autograd
    still recording as in the reference); returns the accuracy."""
    net.train(opt is not None)
    loss_sum, correct, seen = 0.0, 0, 0
    for img, lab in loader:
        img, lab = img.float(), lab.long()
        out = net(img)
        loss = F.cross_entropy(out, lab)
        correct += int(np.sum(np.equal(np.argmax(out.detach().cpu().numpy(), axis=-1), lab.cpu().numpy())))
        loss_sum += loss.item() * lab.shape[0]
        seen += lab.shape[0]
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return correct / seen


def dc_update(net: nn.Module, net_opt: torch.optim.Optimizer, image_syn: Tensor, label_syn: Tensor,
              img_opt: torch.optim.Optimizer, images_all: Tensor, indices_class: Sequence[Tensor], *, ipc: int,
              batch_real: int, inner_loop: int, batch_train: int, last: bool) -> float:
    """One DC image update (and the network's inner loop unless ``last``); returns the matching loss."""
    params = list(net.parameters())
    loss = torch.tensor(0.0)
    for c, idx in enumerate(indices_class):
        img_real = images_all[idx[torch.randperm(len(idx))[:batch_real]]]
        lab_real = torch.ones((img_real.shape[0],), dtype=torch.long) * c
        img_syn = image_syn[c * ipc:(c + 1) * ipc]
        lab_syn = torch.ones((ipc,), dtype=torch.long) * c
        gw_real = [g.detach().clone() for g in torch.autograd.grad(F.cross_entropy(net(img_real), lab_real), params)]
        gw_syn = torch.autograd.grad(F.cross_entropy(net(img_syn), lab_syn), params, create_graph=True)
        loss = loss + _match_loss(gw_syn, gw_real)
    img_opt.zero_grad()
    loss.backward()
    img_opt.step()
    if not last:
        data = TensorDataset(image_syn.detach().clone(), label_syn.detach().clone())
        loader = DataLoader(data, batch_size=batch_train, shuffle=True, num_workers=0)
        for _ in range(inner_loop):
            _train_epoch(loader, net, net_opt)
    return float(loss.item())


# ---------------------------------------------------------------------------------------------- MTT distill.py
class FlatParamModule(nn.Module):
    """A ``ReparamModule``-style wrapper: the wrapped module's parameters are deleted and, for each forward,
    replaced by views of a given flat vector (set as plain attributes), then restored."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._infos: list[tuple[nn.Module, str]] = []
        shapes, numels, flat = [], [], []
        for mod in module.modules():
            for name, p in list(mod.named_parameters(recurse=False)):
                self._infos.append((mod, name))
                shapes.append(p.shape)
                numels.append(p.numel())
                flat.append(p.detach().reshape(-1))
                delattr(mod, name)
                setattr(mod, name, p.detach())
        self._shapes, self._numels = shapes, numels
        self.flat_param = nn.Parameter(torch.cat(flat))

    @contextlib.contextmanager
    def _views(self, flat: Tensor):
        saved = [getattr(m, n) for m, n in self._infos]
        for (m, n), t, s in zip(self._infos, flat.split(self._numels), self._shapes):
            setattr(m, n, t.view(s))
        try:
            yield
        finally:
            for (m, n), p in zip(self._infos, saved):
                setattr(m, n, p)

    def forward(self, x: Tensor, flat_param: Tensor) -> Tensor:
        with self._views(flat_param):
            return self.module(x)


def mtt_update(student: FlatParamModule, image_syn: Tensor, label_syn: Tensor, syn_lr: Tensor,
               img_opt: torch.optim.Optimizer, lr_opt: torch.optim.Optimizer, starting: Tensor, target: Tensor, *,
               syn_steps: int, batch_syn: int) -> float:
    """One MTT update (no DSA, no texture): ``syn_steps`` unrolled steps, normalised distance, backward."""
    student_params = [starting.detach().clone().requires_grad_(True)]
    chunks: list[Tensor] = []
    for _ in range(syn_steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(len(image_syn)), batch_syn))
        idx = chunks.pop()
        out = student(image_syn[idx], flat_param=student_params[-1])
        grad = torch.autograd.grad(F.cross_entropy(out, label_syn[idx]), student_params[-1], create_graph=True)[0]
        student_params.append(student_params[-1] - syn_lr * grad)
    num_params = starting.numel()
    param_loss = F.mse_loss(student_params[-1], target, reduction="sum") / num_params
    param_dist = F.mse_loss(starting, target, reduction="sum") / num_params
    loss = param_loss / param_dist
    img_opt.zero_grad()
    lr_opt.zero_grad()
    loss.backward()
    img_opt.step()
    lr_opt.step()
    return float(loss.item())


# ---------------------------------------------------------------------------------------------- evaluate_synset
class PerImageTestSet(Dataset):
    """A uint8 test split served as torchvision's ``FashionMNIST`` serves it to DC: item ``i`` is a PIL image
    turned into a tensor by ``ToTensor`` and ``Normalize(mean, std)`` when it is read, and an ``int`` label."""

    def __init__(self, images: Tensor, labels: Tensor, mean: Sequence[float], std: Sequence[float]) -> None:
        self.images, self.labels = images.numpy(), labels.tolist()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=mean, std=std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(Image.fromarray(self.images[i], mode="L")), self.labels[i]


def evaluate_one(net: nn.Module, images: Tensor, labels: Tensor, test_images: Tensor | None = None,
                 test_labels: Tensor | None = None, *, epochs: int, lr: float, batch_size: int = 256,
                 test_set: Dataset | None = None) -> float:
    """``utils.py:evaluate_synset`` without augmentation: train ``net``, return its test accuracy on ``test_set``
    (e.g. a :class:`PerImageTestSet`) or on the tensors ``test_images``, ``test_labels``."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    loader = DataLoader(TensorDataset(images.detach().clone(), labels.detach().clone()), batch_size=batch_size,
                        shuffle=True, num_workers=0)
    for ep in range(epochs + 1):
        _train_epoch(loader, net, opt)
        if ep == epochs // 2 + 1:
            lr *= 0.1
            opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    test = test_set if test_set is not None else TensorDataset(test_images, test_labels)
    return _train_epoch(DataLoader(test, batch_size=256, shuffle=False, num_workers=0), net, None)
