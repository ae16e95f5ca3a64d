"""The shared argument checks: one message shape for every positive or non-negative integer or number."""

import math

import numpy as np
import pytest

from spectro_fx.models.errors import ParameterError, non_negative_int, non_negative_number, positive_int, positive_number


@pytest.mark.parametrize("value", [1, 48000, np.int64(7), np.uint16(3)])
def test_positive_int_takes_integers_and_gives_plain_ints(value):
    out = positive_int("sr", value)
    assert out == value and type(out) is int


@pytest.mark.parametrize(
    "value, shown",
    [(0, "0"), (-1, "-1"), (True, "True"), (2.0, "2.0"), ("4", "'4'"), (None, "None"), (np.int64(0), "0"), (np.float32(4), "4.0")],
)
def test_positive_int_names_the_value_and_the_unit(value, shown):
    with pytest.raises(ParameterError) as caught:
        positive_int("sr", value, unit="Hz")
    assert str(caught.value) == f"sr={shown} must be a positive integer (Hz)"


def test_non_negative_int_takes_zero_and_refuses_negatives():
    assert non_negative_int("seed", 0) == 0 and type(non_negative_int("seed", np.int32(5))) is int
    for value in (-1, False, 1.5):
        with pytest.raises(ParameterError, match=r"^seed=.* must be an integer >= 0$"):
            non_negative_int("seed", value)


def test_positive_number_takes_reals_and_refuses_zero_nan_and_non_numbers():
    assert positive_number("lr", 2e-3) == 2e-3 and type(positive_number("lr", np.float32(0.5))) is float
    assert positive_number("lr", 3) == 3.0
    for value, shown in ((0.0, "0.0"), (-1, "-1"), (math.nan, "nan"), (True, "True"), ("0.1", "'0.1'"), (None, "None")):
        with pytest.raises(ParameterError) as caught:
            positive_number("data.segment_s", value, unit="seconds")
        assert str(caught.value) == f"data.segment_s={shown} must be > 0 (seconds)"


def test_non_negative_number_takes_zero():
    assert non_negative_number("train.grad_clip", 0) == 0.0
    with pytest.raises(ParameterError, match=r"^--safety-ms=-0\.5 must be >= 0 \(ms\)$"):
        non_negative_number("--safety-ms", -0.5, unit="ms")
    with pytest.raises(ParameterError, match=r"^temperature=nan must be >= 0$"):
        non_negative_number("temperature", float("nan"))
