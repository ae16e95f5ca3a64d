"""Offline rendering: alignment, formats, automation from a MIDI file, bad input, atomic output."""


import mido
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from spectro_fx.effect.io.ccmap import parse_ccmap
from spectro_fx.effect.io.render import read_automation, render_file
from spectro_fx.models.errors import ModelFileError, ParameterError


def _write(path, x, sr, subtype="FLOAT"):
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def _noise(rng, frames, channels, scale=0.1):
    return (scale * rng.standard_normal((frames, channels))).astype(np.float32)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_null_render_is_bit_exact_44k_stereo(tiny_model, rng, tmp_path):
    x = _noise(rng, 44100 // 3, 2, scale=0.8)
    src = _write(tmp_path / "in.wav", x, 44100)
    result = render_file(src, tmp_path / "out.wav", model=tiny_model, values={"wet": 0}, chain="noise")
    y, sr = sf.read(str(tmp_path / "out.wav"), dtype="float32", always_2d=True)
    assert sr == 44100 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    assert result.latency_samples > 0 and result.nonfinite_samples == 0
    assert sf.info(str(tmp_path / "out.wav")).subtype == "FLOAT"


def test_in_place_render_and_flac(tiny_model, rng, tmp_path):
    x = _noise(rng, 12000, 1)
    path = _write(tmp_path / "song.wav", x, 48000)
    render_file(path, path, model=tiny_model, values={"low_hz": 1000, "high_hz": 3000})
    y, _ = sf.read(str(path), dtype="float32", always_2d=True)
    assert y.shape == x.shape and np.max(np.abs(y - x)) > 1e-3
    assert _leftovers(tmp_path) == []
    loud = _write(tmp_path / "loud.wav", np.full((6000, 1), 1.5, np.float32), 48000)
    with pytest.warns(UserWarning, match=r"FLAC stores integers, 6000 samples beyond \+-1 were clipped"):
        result = render_file(loud, tmp_path / "loud.flac", model=tiny_model, values={"wet": 0})
    assert result.clipped_samples == 6000
    assert sf.info(str(tmp_path / "loud.flac")).format == "FLAC"


def _automation(path):
    """CC 20 -> low_hz and CC 21 -> high_hz (100 Hz per step): 1-2 kHz from the start,
    6-8 kHz from 0.5 s (480 ticks at 120 bpm)."""
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.Message("control_change", channel=0, control=20, value=10, time=0))
    track.append(mido.Message("control_change", channel=0, control=21, value=20, time=0))
    track.append(mido.Message("control_change", channel=0, control=21, value=80, time=480))
    track.append(mido.Message("control_change", channel=0, control=20, value=60, time=0))
    midi.save(str(path))
    return path


MAP = """
[[binding]]
parameter = "low_hz"
cc = 20
curve = "linear"
min = 0.0
max = 12700.0
[[binding]]
parameter = "high_hz"
cc = 21
curve = "linear"
min = 0.0
max = 12700.0
"""


def test_automation_moves_the_region_at_the_right_time(tiny_model, rng, tmp_path):
    sr = 48000
    x = _noise(rng, sr, 1)
    src = _write(tmp_path / "in.wav", x, sr)
    ccmap = parse_ccmap(MAP)
    events = read_automation(_automation(tmp_path / "knobs.mid"), ccmap, sr=sr)
    assert [(e.sample, e.parameter, round(e.value)) for e in events] == [
        (0, "low_hz", 1000), (0, "high_hz", 2000), (24000, "high_hz", 8000), (24000, "low_hz", 6000),
    ]
    result = render_file(src, tmp_path / "out.wav", model=tiny_model, automation=tmp_path / "knobs.mid", ccmap=ccmap)
    assert result.automation_events == 4
    assert result.values["low_hz"] == pytest.approx(6000) and result.values["high_hz"] == pytest.approx(8000)
    y, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32", always_2d=True)
    change = (y - x)[:, 0].astype(np.float64)

    def band_db(signal, lo, hi):
        f, p = scipy.signal.welch(signal, fs=sr, nperseg=2048, detrend=False)
        return 10 * np.log10(p[(f >= lo) & (f <= hi)].mean() + 1e-30)

    # smoothing (50 ms) and one column of timing slack around the change at 0.5 s
    early, late = change[2400:22800], change[27600:]
    early_x, late_x = x[2400:22800, 0], x[27600:, 0]
    assert band_db(early, 1100, 1900) > band_db(early_x, 1100, 1900) - 20
    assert band_db(early, 6100, 7900) < band_db(early_x, 6100, 7900) - 60
    assert band_db(late, 6100, 7900) > band_db(late_x, 6100, 7900) - 20
    assert band_db(late, 1100, 1900) < band_db(late_x, 1100, 1900) - 60


def test_plot_is_written(tiny_model, rng, tmp_path):
    src = _write(tmp_path / "in.wav", _noise(rng, 24000, 1), 48000)
    render_file(src, tmp_path / "out.wav", model=tiny_model, plot=tmp_path / "fig.png",
                values={"period_s": 0.2, "duty": 0.5})
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_non_finite_samples_are_replaced_counted_and_warned(tiny_model, rng, tmp_path):
    x = _noise(rng, 9000, 2)
    x[10, 0], x[20, 1], x[30, 1] = np.nan, np.inf, -np.inf
    src = _write(tmp_path / "in.wav", x, 48000)
    with pytest.warns(UserWarning, match="replaced 3 non-finite samples"):
        result = render_file(src, tmp_path / "out.wav", model=tiny_model)
    y, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32", always_2d=True)
    assert result.nonfinite_samples == 3 and np.isfinite(y).all()


def test_bad_inputs_leave_no_output(tiny_model, rng, tmp_path):
    out = tmp_path / "out.wav"
    out.write_bytes(b"previous render")
    good = _write(tmp_path / "in.wav", _noise(rng, 4800, 1), 48000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    empty = _write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 48000)
    foreign = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    cases = [
        (dict(input=tmp_path / "missing.wav"), ParameterError, "missing.wav does not exist"),
        (dict(input=corrupt), ParameterError, "corrupt.wav is not a readable audio file"),
        (dict(input=empty), ParameterError, "empty.wav has no audio frames"),
        (dict(input=good, model=foreign), ModelFileError, "torch.save checkpoint"),
        (dict(input=good, values={"lowhz": 3}), ParameterError, "unknown parameter 'lowhz'; valid: low_hz"),
        (dict(input=good, chain="noise,echo"), ParameterError, "unknown effect 'echo'"),
        (dict(input=good, output=tmp_path / "out.mp4"), ParameterError, "extension '.mp4' must be one of"),
        (dict(input=good, automation=tmp_path / "knobs.mid"), ParameterError, "needs a CC map"),
    ]
    for kwargs, error, match in cases:
        kwargs = {"model": tiny_model, "output": out, **kwargs}
        with pytest.raises(error, match=match):
            render_file(kwargs.pop("input"), kwargs.pop("output"), **kwargs)
        assert out.read_bytes() == b"previous render"
        assert not (tmp_path / "out.mp4").exists()
        assert _leftovers(tmp_path) == []


def test_out_of_range_values_are_clamped_with_a_warning(tiny_model, rng, tmp_path):
    src = _write(tmp_path / "in.wav", _noise(rng, 4800, 1), 48000)
    with pytest.warns(UserWarning, match=r"duty=2 is outside \[0, 1\]"):
        result = render_file(src, tmp_path / "out.wav", model=tiny_model, values={"duty": "2"})
    assert result.values["duty"] == 1.0


def test_plot_scale_log_gives_a_low_band_its_share_of_the_axis(tiny_model, rng, tmp_path):
    from matplotlib.image import imread

    src = _write(tmp_path / "in.wav", _noise(rng, 24000, 1), 48000)

    def band_rows(scale):
        path = tmp_path / f"{scale}.png"
        render_file(src, tmp_path / "out.wav", model=tiny_model, plot=path, plot_scale=scale,
                    values={"low_hz": 500, "high_hz": 4000})
        picture = imread(path)[:, :, :3]
        picture = picture[: picture.shape[0] // 2]  # the input panel
        cyan = (picture[:, :, 0] < 0.3) & (picture[:, :, 1] > 0.7) & (picture[:, :, 2] > 0.7)
        rows = np.flatnonzero(cyan.sum(axis=1) > 50)  # the box's horizontal edges
        return rows.max() - rows.min()

    # 500 Hz - 4 kHz: 3 of the 9 octaves from 47 Hz to 24 kHz on a log axis, 15 % of a linear one
    assert band_rows("log") > 1.8 * band_rows("linear")
    with pytest.raises(ParameterError, match="--plot-scale 'mel' must be one of log, linear"):
        render_file(src, tmp_path / "out.wav", model=tiny_model, plot=tmp_path / "x.png", plot_scale="mel")


def test_an_empty_band_renders_the_input_and_says_why(tiny_model, tiny_model_path, rng, tmp_path, capsys):
    x = _noise(rng, 12000, 1)
    src = _write(tmp_path / "in.wav", x, 48000)
    with pytest.warns(UserWarning, match=r"the region is empty, so the output is the input: low_hz=5000 is not "
                                         r"below high_hz=100 \(to regenerate 100-5000 Hz, --set low_hz=100 --set high_hz=5000\)"):
        render_file(src, tmp_path / "out.wav", model=tiny_model, values={"low_hz": 5000, "high_hz": 100})
    np.testing.assert_array_equal(sf.read(str(tmp_path / "out.wav"), dtype="float32", always_2d=True)[0], x)
    # above the input's Nyquist frequency the band is empty too
    low_rate = _write(tmp_path / "in16k.wav", x, 16000)
    with pytest.warns(UserWarning, match=r"low_hz=9000 is at or above the Nyquist frequency, 8000 Hz at 16000 Hz"):
        render_file(low_rate, tmp_path / "out16k.wav", model=tiny_model, values={"low_hz": 9000, "high_hz": 12000})
    # from the command line: one line on stderr, exit 0
    from spectro_fx.effect.io.cli import main

    rc = main(["--input", str(src), "--output", str(tmp_path / "cli.wav"), "--model", str(tiny_model_path),
               "--quiet", "--set", "low_hz=5000", "--set", "high_hz=100"])
    assert rc == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "region is empty" in line]
    assert len(lines) == 1 and lines[0].startswith("spectro-fx: warning: the region is empty")


def test_a_band_opened_by_automation_says_nothing(tiny_model, rng, tmp_path):
    x = _noise(rng, 48000, 1)
    src = _write(tmp_path / "in.wav", x, 48000)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render_file(src, tmp_path / "out.wav", model=tiny_model, values={"low_hz": 5000, "high_hz": 100},
                    automation=_automation(tmp_path / "knobs.mid"), ccmap=parse_ccmap(MAP))
