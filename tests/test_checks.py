"""The one family of option checks (``lightning_sdc/checks.py``): bounds, the values refused, and the message."""

from typing import Literal

import numpy as np
import pytest

from lightning_sdc.checks import check_choices, check_int, check_number


def test_numbers_of_numpy_pass_as_python_numbers_and_bounds_hold():
    assert check_int("n", np.int64(3), 1) == 3 and type(check_int("n", np.int64(3), 1)) is int
    assert check_number("lr", np.float32(0.5)) == 0.5 and check_number("w", 1, strict=False, at_most=1) == 1.0
    assert check_number("c", 0.95, 0, below=1) == 0.95 and check_number("m", 0, strict=False) == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda: check_int("steps", 0, 1), "steps must be an integer >= 1 (> 0), got 0"),
    (lambda: check_int("steps", True, 1), "steps must be an integer >= 1 (> 0), got True"),
    (lambda: check_int("steps", 2.0, 1), "steps must be an integer >= 1 (> 0), got 2.0"),
    (lambda: check_number("lr", float("nan")), "lr must be a finite number > 0, got nan"),
    (lambda: check_number("lr", "0.1"), "lr must be a finite number > 0, got '0.1'"),
    (lambda: check_number("lr", 0), "lr must be a finite number > 0, got 0"),
    (lambda: check_number("c", 1.0, 0, below=1), "c must be a number in (0, 1), got 1.0"),
    (lambda: check_number("w", 1.5, strict=False, at_most=1), "w must be a number in [0, 1], got 1.5"),
])
def test_a_bad_value_is_named_with_what_is_allowed(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_choices_come_from_the_literal_types_of_a_signature():
    def f(mode: Literal["a", "b"] = "a", size: Literal[1, 2] | None = None): ...

    check_choices(f, {"mode": "b", "size": None})
    with pytest.raises(ValueError, match=r"mode='c' is not allowed; allowed: a, b"):
        check_choices(f, {"mode": "c"})
    with pytest.raises(ValueError, match=r"size=1.0 is not allowed; allowed: 1, 2, null"):
        check_choices(f, {"size": 1.0})
