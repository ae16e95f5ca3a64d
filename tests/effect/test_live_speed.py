"""The live start's speed verdict: a machine that cannot keep up is told so, with what would."""

import numpy as np

from spectro_fx.effect.io.live import KEEPS_UP, _warm_up, engine_load, speed_note

SR = 48000


def test_a_machine_that_keeps_up_hears_nothing():
    call_s = np.full(20, 0.5 * 128 / SR)
    assert speed_note(call_s, blocksize=128, sr=SR, model=None, lighter=lambda name: 0.1) is None


def test_a_slow_machine_is_told_the_load_and_the_lighter_model_that_keeps_up():
    call_s = np.full(20, 1.3 * 128 / SR)
    asked = []

    def lighter(name):
        asked.append(name)
        return {"low-delay": 1.05, "classic": 0.6}[name]

    line = speed_note(call_s, blocksize=128, sr=SR, model=None, lighter=lighter)
    assert "cannot keep up" in line and "130% of each 128-frame block's 2.67 ms" in line
    assert line.endswith("--model classic keeps up here (60% of a block)")
    assert asked == ["low-delay", "classic"]


def test_when_no_bundled_model_keeps_up_it_says_so_and_skips_the_model_in_use():
    call_s = np.full(20, 2.0 * 64 / SR)
    asked = []
    line = speed_note(call_s, blocksize=64, sr=SR, model="classic", lighter=lambda name: asked.append(name) or 1.5)
    assert asked == ["low-delay"]
    assert "no bundled model keeps up here" in line


def test_the_load_is_measured_on_the_engine(tiny_model):
    from spectro_fx.effect.core.engine import Engine

    engine = Engine(tiny_model, sr=SR, channels=1, chain="inpaint")
    call_s, wake_s = _warm_up(engine, 256, 1, SR, seconds=0.1)
    load = engine_load(call_s, blocksize=256, sr=SR)
    assert len(call_s) >= 10 and np.all(call_s > 0)
    assert load == np.mean(call_s) * SR / 256 and 0.0 < load < 50.0
    assert 0.0 < KEEPS_UP < 1.0
