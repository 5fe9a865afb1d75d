"""ConvNet, the default network of dataset distillation, and its named variants.

DC ``networks.py:ConvNet`` / ``_make_layers``: ``depth`` blocks of
Conv3×3(width, bias) → norm → activation → 2×2 pooling, then a linear ``classifier`` on the flattened map.
The first conv pads by 3 when the input has one channel, so a 1×28×28 image is processed as 32×32.

Difference from the reference: the reference sizes the classifier from a *pretended* input (28 replaced by
32, every other size taken as is), which is right only for 1×28×28 and C×32×32-like inputs; here the
feature-map size is computed from the real geometry (conv output ``H + 2·pad − 2``, floor-halved per pooled
block). Both agree on every shape the reference runs (28, 32, 64, 128), and ours also serves e.g. 8×8
digits (1-channel: 8 → 12 → 6 → 3 → 1 at depth 3). A net whose map would shrink to 0×0 is refused.

Module and parameter names equal the reference's (``features.<i>.weight`` …, ``classifier.weight``), so the
``named_parameters()`` order — conv.w, conv.b, norm.w, norm.b per block, then classifier.w, classifier.b —
matches the flattened expert trajectories of MTT ``buffer.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import Tensor, nn

from lightning_sdc.checks import check_int
from lightning_sdc.models.base import check_basic_args, register, shape_str
from lightning_sdc.models.layers import (
    ACTIVATIONS,
    NORMS,
    POOLINGS,
    check_choice,
    make_activation,
    make_norm,
    make_pooling,
)


class ConvNet(nn.Module):
    """DC ConvNet (see module docstring). Defaults = DC ``utils.py:get_default_convnet_setting``.

    Args:
        channels, num_classes, im_size: input channels, classes and ``(H, W)``.
        width: conv channels (128). depth: number of conv blocks (3).
        act: ``relu`` | ``sigmoid`` | ``leakyrelu`` | ``swish``.
        norm: ``instancenorm`` (GroupNorm(C, C)) | ``batchnorm`` | ``layernorm`` | ``groupnorm`` | ``none``.
        pooling: ``avgpooling`` | ``maxpooling`` | ``none``.
    """

    def __init__(self, channels: int, num_classes: int, im_size: Sequence[int] = (32, 32), *, width: int = 128,
                 depth: int = 3, act: str = "relu", norm: str = "instancenorm", pooling: str = "avgpooling") -> None:
        super().__init__()
        name = type(self).__name__
        h, w = check_basic_args(name, channels, num_classes, im_size)
        check_int(f"{name}: width", width, 1)
        check_int(f"{name}: depth", depth, 1)
        act = check_choice(name, "act", act, ACTIVATIONS)
        norm = check_choice(name, "norm", norm, NORMS)
        pooling = check_choice(name, "pooling", pooling, POOLINGS)
        if norm == "groupnorm" and width % 4:
            raise ValueError(f"{name}: norm 'groupnorm' uses 4 groups, so width must be divisible by 4, got {width}")

        layers: list[nn.Module] = []
        in_ch = channels
        for d in range(depth):
            pad = 3 if channels == 1 and d == 0 else 1
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            layers.append(nn.Conv2d(in_ch, width, kernel_size=3, padding=pad))
            norm_layer = make_norm(norm, width, (h, w))
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(make_activation(act))
            pool = make_pooling(pooling)
            if pool is not None:
                layers.append(pool)
                h, w = h // 2, w // 2
                if h < 1 or w < 1:
                    raise ValueError(
                        f"{name}: depth {depth} with {pooling} shrinks a {shape_str(channels, im_size)} input to an "
                        f"empty map after block {d + 1}; use depth <= {d} or pooling='none' for this shape"
                    )
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.feature_shape = (width, h, w)
        self.classifier = nn.Linear(width * h * w, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """Flattened feature map before the classifier (DC ``ConvNet.embed``), ``[N, width·h·w]``."""
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


def _variant(name: str, *aliases: str, **defaults: object) -> None:
    """Register ``name`` as ConvNet with other defaults (keywords given to ``build_network`` still win)."""
    factory = partial(ConvNet, **defaults)
    factory.__name__ = name  # type: ignore[attr-defined]
    factory.__doc__ = f"ConvNet with {defaults} (DC/MTT ``get_network('{name}')``)."
    register(name, *aliases)(factory)


# D3, W128, AR, IN and AP are the default configuration; they are aliases of "ConvNet".
register("ConvNet", "ConvNetD3", "ConvNetW128", "ConvNetAR", "ConvNetIN", "ConvNetAP", "ConvNet-3", "ConvNet-3-IN")(
    ConvNet
)
for _d in (1, 2, 4, 5, 6, 7, 8):
    _variant(f"ConvNetD{_d}", f"ConvNet-{_d}", f"ConvNet-{_d}-IN", depth=_d)
for _d in (1, 2, 4, 5, 6, 7, 8):  # DD-Ranking "ConvNet-<depth>-BN"
    _variant(f"ConvNetD{_d}BN", f"ConvNet-{_d}-BN", depth=_d, norm="batchnorm")
for _w in (32, 64, 256, 512, 1024):
    _variant(f"ConvNetW{_w}", width=_w)
_variant("ConvNetAS", act="sigmoid")
_variant("ConvNetAL", act="leakyrelu")
_variant("ConvNetASwish", act="swish")
_variant("ConvNetASwishBN", act="swish", norm="batchnorm")
_variant("ConvNetNN", norm="none")
_variant("ConvNetBN", "ConvNet-3-BN", norm="batchnorm")
_variant("ConvNetLN", norm="layernorm")
_variant("ConvNetGN", norm="groupnorm")
_variant("ConvNetNP", pooling="none")
_variant("ConvNetMP", pooling="maxpooling")

__all__ = ["ConvNet"]
