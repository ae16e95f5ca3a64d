"""The shared argument checks: one message shape for every positive or non-negative integer."""

import numpy as np
import pytest

from spectro_fx.models.errors import ParameterError, non_negative_int, positive_int


@pytest.mark.parametrize("value", [1, 48000, np.int64(7), np.uint16(3)])
def test_positive_int_takes_integers_and_gives_plain_ints(value):
    out = positive_int("sr", value)
    assert out == value and type(out) is int


@pytest.mark.parametrize("value", [0, -1, True, 2.0, "4", None, np.float32(4)])
def test_positive_int_names_the_value_and_the_unit(value):
    with pytest.raises(ParameterError) as caught:
        positive_int("sr", value, unit="Hz")
    assert str(caught.value) == f"sr={value!r} must be a positive integer (Hz)"


def test_non_negative_int_takes_zero_and_refuses_negatives():
    assert non_negative_int("seed", 0) == 0 and type(non_negative_int("seed", np.int32(5))) is int
    for value in (-1, False, 1.5):
        with pytest.raises(ParameterError, match=r"^seed=.* must be an integer >= 0$"):
            non_negative_int("seed", value)
