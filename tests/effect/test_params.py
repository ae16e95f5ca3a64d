"""Parameter names (one resolution for the engine, --set and CC maps), old spellings, choices from knobs."""

import numpy as np
import pytest
import soundfile as sf

from spectro_fx.effect.io.ccmap import parse_ccmap
from spectro_fx.effect import Parameter
from spectro_fx.effect.core.params import REGION_PARAMETERS, resolve_name
from spectro_fx.models.errors import ParameterError

NAMES = [p.name for p in REGION_PARAMETERS] + ["noise.amount", "cross.amount", "cross.mode", "inpaint.method"]


def test_resolve_name_full_bare_ambiguous_unknown():
    assert resolve_name("low_hz", NAMES) == "low_hz"
    assert resolve_name("method", NAMES) == "inpaint.method"
    with pytest.raises(ParameterError, match=r"'amount' is ambiguous; say which: noise.amount, cross.amount"):
        resolve_name("amount", NAMES)
    with pytest.raises(ParameterError, match=r"unknown parameter 'gain'; valid: low_hz, high_hz"):
        resolve_name("gain", NAMES)


@pytest.mark.parametrize("old,new", [("mix", "wet"), ("mix.amount", "cross.amount"), ("mix.mode", "cross.mode")])
def test_old_names_resolve_with_a_warning_naming_the_new_one(old, new):
    with pytest.warns(FutureWarning, match=f"parameter '{old}' is now called '{new}'"):
        assert resolve_name(old, NAMES) == new


def test_engine_set_and_cc_map_accept_the_old_wet_name(tiny_model):
    from spectro_fx.effect.core.engine import Engine

    engine = Engine(tiny_model, sr=48000, channels=1)
    with pytest.warns(FutureWarning, match="'mix' is now called 'wet'"):
        assert engine.set("mix", 0.25) == 0.25
    assert engine.values()["wet"] == 0.25 and "mix" not in engine.values()
    with pytest.warns(FutureWarning, match="'mix' is now called 'wet'"):
        ccmap = parse_ccmap('[[binding]]\nparameter = "mix"\ncc = 3\n')
    # stored under the new name: a map saved again (learn mode) is upgraded
    assert ccmap.handle(0, 3, 127) == [("wet", 1.0)]
    assert "wet" in ccmap.to_toml() and "mix" not in ccmap.to_toml().split("\n", 2)[2]


def test_old_chain_name_and_option_still_render(tiny_model_path, tmp_path, capsys):
    from spectro_fx.effect.io.cli import main

    x = (0.1 * np.random.default_rng(0).standard_normal((9600, 1))).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, 48000, subtype="FLOAT")
    sf.write(tmp_path / "other.wav", x[::-1], 48000, subtype="FLOAT")
    common = ["--input", str(tmp_path / "in.wav"), "--model", str(tiny_model_path), "--quiet", "--seed", "1",
              "--set", "low_hz=300", "--set", "high_hz=8000"]
    assert main(common + ["--output", str(tmp_path / "new.wav"), "--chain", "cross", "--set", "cross.amount=1",
                          "--set", "wet=0.5", "--cross-with", str(tmp_path / "other.wav")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(common + ["--output", str(tmp_path / "old.wav"), "--chain", "mix", "--set", "mix.amount=1",
                          "--set", "mix=0.5", "--mix-with", str(tmp_path / "other.wav")]) == 0
    err = capsys.readouterr().err
    for said in ("effect 'mix' is now called 'cross'", "parameter 'mix.amount' is now called 'cross.amount'",
                 "parameter 'mix' is now called 'wet'", "--mix-with is now --cross-with"):
        assert said in err, err
    new, _ = sf.read(tmp_path / "new.wav")
    old, _ = sf.read(tmp_path / "old.wav")
    np.testing.assert_array_equal(old, new)
    assert main(common + ["--output", str(tmp_path / "both.wav"), "--chain", "cross",
                          "--mix-with", "a.wav", "--cross-with", "b.wav"]) == 2
    assert "--mix-with is the old name of --cross-with" in capsys.readouterr().err


def test_a_knob_reaches_a_choice_parameter(tiny_model):
    """CC value -> index, in one place (Parameter.coerce): a knob sweeps the choices in order."""
    from spectro_fx.effect.core.engine import Engine

    engine = Engine(tiny_model, sr=48000, channels=1, chain="inpaint")
    ccmap = parse_ccmap('[[binding]]\nparameter = "inpaint.axis"\ncc = 9\n', parameters=engine.parameters())
    seen = []
    for cc_value in (0, 40, 64, 100, 127):
        (name, value), = ccmap.handle(0, 9, cc_value)
        seen.append(engine.set(name, value))
    assert seen == ["time", "freq", "freq", "both", "both"]
    engine.process(np.zeros((512, 1), np.float32))  # applied at the next block
    assert engine.chain[0].values["axis"] == "both"
    axis = engine.parameters()["inpaint.axis"]
    assert axis.coerce(1) == ("freq", False) and axis.coerce(7.0) == ("both", True)
    with pytest.raises(ParameterError, match=r"inpaint.axis='up' must be one of time, freq, both \(or an index 0..2\)"):
        axis.coerce("up", owner="inpaint")
    with pytest.raises(ParameterError, match=r"axis=nan must be one of"):
        axis.coerce(float("nan"))


def test_a_choice_parameter_must_declare_its_index_range():
    with pytest.raises(ParameterError, match=r"choice parameter 'mode' must declare minimum=0, maximum=2"):
        Parameter("mode", 0, 1, "a", kind="choice", choices=("a", "b", "c"))
