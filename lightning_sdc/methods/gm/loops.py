"""How many image updates share one network, and how long that network trains in between.

DC/DSA ``utils.py:get_loops(ipc)`` returns ``(outer_loop, inner_loop)``: ``outer_loop`` image updates per
freshly initialised network, ``inner_loop`` network epochs on the synthetic set between two updates. DCC's
``utils.py:get_loops`` returns the same pair under other names (``inner_loop``, ``T``) and differs only at
ipc 1: (10, 5) instead of (1, 1).
"""

from __future__ import annotations

from collections.abc import Mapping

#: DC ``utils.py:get_loops``: ipc -> (outer_loop, inner_loop)
DC_LOOPS: Mapping[int, tuple[int, int]] = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15),
                                           50: (50, 10)}
#: DCC ``utils.py:get_loops`` (DC's table except ipc 1)
DCC_LOOPS: Mapping[int, tuple[int, int]] = {**DC_LOOPS, 1: (10, 5)}


def get_loops(ipc: int, table: Mapping[int, tuple[int, int]] = DC_LOOPS, *, outer_loop: int | None = None,
              inner_loop: int | None = None) -> tuple[int, int]:
    """``(outer_loop, inner_loop)`` for ``ipc`` from ``table``; explicit values override the table.

    Raises:
        ValueError: ``ipc`` is not in the table and the loops were not both given.
    """
    default = table.get(ipc)
    if default is None and (outer_loop is None or inner_loop is None):
        raise ValueError(
            f"ipc={ipc!r} has no reference (outer_loop, inner_loop); allowed ipc without explicit loops: "
            f"{', '.join(map(str, sorted(table)))} — or pass both outer_loop and inner_loop"
        )
    return (default[0] if outer_loop is None else outer_loop, default[1] if inner_loop is None else inner_loop)
