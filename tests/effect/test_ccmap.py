"""CC maps: parsing, validation with useful errors, curves, channels, round trip."""

import math

import pytest

from spectro_fx.effect.io.ccmap import CCMap, binding, load_ccmap, parse_ccmap, save_ccmap
from spectro_fx.models.errors import ParameterError

GOOD = """
# knobs of a small controller
[[binding]]
parameter = "low_hz"
cc = 74
channel = 1
min = 100.0
max = 8000.0

[[binding]]
parameter = "wet"
cc = 1

[[binding]]
parameter = "noise.amount"
cc = 7
channel = 2
curve = "toggle"
min = 0.0
max = 0.8

[midi]                   # the live mode's own settings are left alone
port = "x"
"""


def test_parse_defaults_curves_and_channels():
    ccmap = parse_ccmap(GOOD, source="good.toml")
    low, wet, amount = ccmap.bindings
    assert (low.curve, low.channel, low.minimum, low.maximum) == ("log", 1, 100.0, 8000.0)
    assert (wet.curve, wet.channel, wet.minimum, wet.maximum) == ("linear", None, 0.0, 1.0)
    assert low.value(0) == pytest.approx(100.0) and low.value(127) == pytest.approx(8000.0)
    assert low.value(64) == pytest.approx(math.exp(math.log(100) + 64 / 127 * math.log(80)))
    assert wet.value(127) == 1.0 and wet.value(0) == 0.0
    assert amount.value(63) == 0.0 and amount.value(64) == 0.8
    # channels in messages are 0-based; the map says 1..16
    assert ccmap.handle(0, 74, 127) == [("low_hz", pytest.approx(8000.0))]
    assert ccmap.handle(1, 74, 127) == []
    assert ccmap.handle(5, 1, 0) == [("wet", 0.0)]
    assert ccmap.handle(1, 7, 100) == [("noise.amount", 0.8)]


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(ParameterError, match=r"m.toml: binding 1: unknown parameter 'lowhz'; valid: low_hz, high_hz"):
        parse_ccmap('[[binding]]\nparameter = "lowhz"\ncc = 3\n', source="m.toml")


def test_bare_effect_parameter_names():
    from spectro_fx.effect import Parameter

    only_noise = {"wet": Parameter("wet", 0, 1, 1), "noise.amount": Parameter("amount", 0, 1, 0.3)}
    ccmap = parse_ccmap('[[binding]]\nparameter = "amount"\ncc = 3\n', parameters=only_noise)
    assert ccmap.handle(0, 3, 127) == [("amount", 1.0)]
    two = {**only_noise, "other.amount": Parameter("amount", 0, 1, 0.3)}
    with pytest.raises(ParameterError, match=r"'amount' is ambiguous; say which: noise.amount, other.amount"):
        parse_ccmap('[[binding]]\nparameter = "amount"\ncc = 3\n', parameters=two)


def test_malformed_toml_names_the_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[[binding]]\nparameter = "wet"\ncc = = 3\n')
    with pytest.raises(ParameterError, match=r"broken.toml: not valid TOML: .*line 3"):
        load_ccmap(path)


@pytest.mark.parametrize(
    "body,match",
    [
        ('parameter = "wet"\ncc = 128', r"cc=128 must be an integer in \[0, 127\]"),
        ('parameter = "wet"\ncc = 1\nchannel = 0', r"channel=0 must be an integer in \[1, 16\]"),
        ('parameter = "wet"\ncc = 1\ncurve = "expo"', r"curve='expo' must be one of linear, log, toggle"),
        ('parameter = "wet"\ncc = 1\ncurve = "log"', r"curve='log' needs min and max > 0"),
        ('parameter = "wet"\ncc = 1\nknob = 3', r"unknown keys \['knob'\]"),
        ('parameter = "wet"', r"needs 'parameter' and 'cc'"),
        ('parameter = "wet"\ncc = 1\nmin = "low"', r"min='low' must be a finite number"),
    ],
)
def test_bad_bindings(body, match):
    with pytest.raises(ParameterError, match=match):
        parse_ccmap("[[binding]]\n" + body + "\n")


def test_missing_file(tmp_path):
    with pytest.raises(ParameterError, match="does not exist"):
        load_ccmap(tmp_path / "none.toml")


def test_round_trip_and_learn_replacement(tmp_path):
    ccmap = parse_ccmap(GOOD)
    path = save_ccmap(ccmap, tmp_path / "sub" / "map.toml")
    assert load_ccmap(path).bindings == ccmap.bindings
    learned = ccmap.with_binding(binding("wet", 20, channel=3))
    assert [b.parameter for b in learned.bindings] == ["low_hz", "noise.amount", "wet"]
    assert learned.handle(2, 20, 127) == [("wet", 1.0)]
    assert learned.handle(0, 1, 127) == []


def test_restricted_to_a_chain():
    from spectro_fx.effect.core.params import REGION_PARAMETERS

    ccmap = parse_ccmap(GOOD)
    active, inactive = ccmap.restricted_to({p.name: p for p in REGION_PARAMETERS})
    assert [b.parameter for b in active.bindings] == ["low_hz", "wet"]
    assert [b.parameter for b in inactive] == ["noise.amount"]
    assert isinstance(active, CCMap)
