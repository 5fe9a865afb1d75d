"""The one family of option checks: integer and number bounds, and the ``Literal`` choices of a signature.

Each raises a one-line ``ValueError`` naming the key, the value and what is allowed. Choices are typed
``typing.Literal[...]`` in the signatures LightningCLI reads (so ``--help`` lists them and the parser refuses a
bad value); :func:`check_choices` applies the same types when a class is built from Python.
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` an integer (``int`` or NumPy's, not a bool) ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        bound = ">= 1 (> 0)" if low == 1 else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, low: float = 0.0, *, strict: bool = True, below: float | None = None,
                 at_most: float | None = None) -> float:
    """``value`` a finite real number ``> low`` (``>= low`` unless ``strict``) and, if given, ``< below`` and
    ``<= at_most``."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or (number <= low if strict else number < low):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}")
    if (below is not None and number >= below) or (at_most is not None and number > at_most):
        high = f"{below:g})" if below is not None else f"{at_most:g}]"
        raise ValueError(f"{name} must be a number in {'(' if strict else '['}{low:g}, {high}, got {value!r}")
    return number


@cache
def _choices(owner: Any) -> dict[str, tuple[Any, ...]]:
    """``{argument: allowed values}`` of the ``Literal`` (or ``Literal | None``) arguments of ``owner`` (a
    function, or a class: the ``__init__`` of every class of its MRO, the nearest first)."""
    functions = [c.__init__ for c in owner.__mro__ if "__init__" in vars(c)] if isinstance(owner, type) else [owner]
    out: dict[str, tuple[Any, ...]] = {}
    for function in functions:
        try:
            hints = typing.get_type_hints(function)
        except (NameError, TypeError):  # annotations this process cannot resolve: left to the parser
            continue
        for name, hint in hints.items():
            parts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
            allowed = [v for a in parts if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
            if allowed and name not in out:
                out[name] = (*allowed, *([None] if type(None) in parts else []))
    return out


def check_choices(owner: Callable[..., Any] | type, values: Mapping[str, Any]) -> None:
    """Every ``Literal``-typed argument of ``owner`` found in ``values`` holds one of its allowed values."""
    for name, allowed in _choices(owner).items():
        if name in values and not any(values[name] == a and type(values[name]) is type(a) for a in allowed):
            where = f" for {owner.__name__}" if isinstance(owner, type) else ""
            shown = ", ".join("null" if a is None else str(a) for a in allowed)
            raise ValueError(f"{name}={values[name]!r} is not allowed{where}; allowed: {shown}")
