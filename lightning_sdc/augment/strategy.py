"""DSA strategy strings and hyper-parameters (DC/DSA ``utils.py:ParamDiffAug``, ``AUGMENT_FNS``).

A strategy is a ``'_'``-joined list of tokens from :data:`DSA_TOKENS`; ``'none'``, ``'None'`` and ``''``
mean "no augmentation". The README of the DC/DSA repository uses :data:`DSA_STRATEGY` for FashionMNIST and
CIFAR-10/100 and :data:`DSA_STRATEGY_DIGITS` (no horizontal flip) for MNIST and SVHN.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from lightning_sdc.checks import check_choices, check_number

#: Every token the reference ``AUGMENT_FNS`` knows; ``color`` = brightness → saturation → contrast.
DSA_TOKENS = ("color", "crop", "cutout", "flip", "scale", "rotate")
#: Strategy of the DSA README for FashionMNIST, CIFAR-10 and CIFAR-100 (and DCC's default).
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"
#: Strategy of the DSA README for digit data (MNIST, SVHN): flipping a digit changes its meaning.
DSA_STRATEGY_DIGITS = "color_crop_cutout_scale_rotate"
#: Spellings of "no augmentation" (DC's ``--dsa_strategy`` default is ``'None'``).
NO_STRATEGY = ("", "none", "None")
AUG_MODES = ("S", "M")

_DIGIT_DATASETS = ("svhn", "digits", "usps")


@dataclass(frozen=True)
class DSAParams:
    """Magnitudes of the DSA transforms, defaults of DC/DSA ``utils.py:ParamDiffAug``.

    Attributes:
        aug_mode: ``'S'`` — one token drawn uniformly per call (all of its functions applied, the reference
            default); ``'M'`` — every token of the strategy applied in the order written.
        prob_flip: probability of a horizontal flip.
        ratio_scale: scale factors ``sx, sy ~ U(1/r, r)`` independently.
        ratio_rotate: rotation angle ``~ U(-r, r)`` degrees.
        ratio_crop_pad: maximal integer translation ``int(side·r + 0.5)`` pixels per axis.
        ratio_cutout: side of the zeroed square ``int(side·r + 0.5)`` pixels.
        brightness: additive shift ``(u - 0.5)·brightness``.
        saturation: saturation factor ``u·saturation``.
        contrast: contrast factor ``u + contrast``.
    """

    aug_mode: Literal["S", "M"] = "S"
    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        check_choices(DSAParams, {"aug_mode": self.aug_mode})
        check_number("DSAParams.prob_flip", self.prob_flip, strict=False, at_most=1)
        check_number("DSAParams.ratio_scale", self.ratio_scale, 1, strict=False)
        for name in ("ratio_rotate", "ratio_crop_pad", "ratio_cutout", "brightness", "saturation", "contrast"):
            check_number(f"DSAParams.{name}", getattr(self, name), strict=False)


@lru_cache(maxsize=256)
def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a DSA strategy into its tokens (DC/DSA ``utils.py:DiffAugment``); ``()`` for no augmentation.

    Raises:
        ValueError: a token outside :data:`DSA_TOKENS` (or an empty token, e.g. ``'crop__flip'``), or a
            repeated token (the reference would only re-weight the ``'S'`` draw or repeat a transform in
            ``'M'`` mode; one sampled parameter set per family keeps the Siamese sample unambiguous).
    """
    if not isinstance(strategy, str):
        raise ValueError(f"DSA strategy must be a string, got {type(strategy).__name__}: {strategy!r}")
    if strategy in NO_STRATEGY:
        return ()
    tokens = tuple(strategy.split("_"))
    bad = [t for t in tokens if t not in DSA_TOKENS]
    if bad:
        raise ValueError(
            f"unknown DSA token(s) {bad} in strategy {strategy!r}; allowed tokens: {', '.join(DSA_TOKENS)} "
            f"(joined by '_'), or one of {NO_STRATEGY} for no augmentation"
        )
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"DSA strategy {strategy!r} repeats a token; use each of {', '.join(DSA_TOKENS)} at most once")
    return tokens


def is_digit_dataset(dataset_name: str) -> bool:
    """Whether ``dataset_name`` holds digits (MNIST and its subsets, SVHN, scikit-learn digits, USPS)."""
    name = dataset_name.lower()
    return (name.startswith("mnist") and "fashion" not in name) or name in _DIGIT_DATASETS


def default_dsa_strategy(dataset_name: str) -> str:
    """The README strategy of a dataset: no flip for digit data, the full strategy otherwise."""
    if not isinstance(dataset_name, str):
        raise ValueError(f"dataset_name must be a string, got {type(dataset_name).__name__}")
    return DSA_STRATEGY_DIGITS if is_digit_dataset(dataset_name) else DSA_STRATEGY
