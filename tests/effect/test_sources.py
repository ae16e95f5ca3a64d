"""Audio files as streams: one reader, channel fitting, resampling, and the looped second source."""

import numpy as np
import pytest
import soundfile as sf

from spectro_fx.effect.io.sources import AuxEngine, LoopedSource, fit_channels, read_audio
from spectro_fx.models.errors import ParameterError


def test_a_looped_source_wraps_the_same_whatever_the_blocks(rng):
    data = rng.standard_normal((7, 2)).astype(np.float32)
    whole = LoopedSource(data).next(40)
    np.testing.assert_array_equal(whole, np.resize(data, (40, 2)))
    looped = LoopedSource(data)
    pieces = np.concatenate([looped.next(n) for n in (1, 6, 0, 13, 20)])
    np.testing.assert_array_equal(pieces, whole)
    with pytest.raises(ParameterError, match=r"needs \[frames > 0, channels\] samples, got shape \(0, 2\)"):
        LoopedSource(np.zeros((0, 2), np.float32))


def test_fit_channels_mixes_keeps_or_repeats():
    stereo = np.array([[1.0, 3.0], [2.0, 4.0]], np.float32)
    np.testing.assert_array_equal(fit_channels(stereo, 1), [[2.0], [3.0]])
    np.testing.assert_array_equal(fit_channels(stereo[:, :1], 2), [[1.0, 1.0], [2.0, 2.0]])
    assert fit_channels(np.zeros((3, 6), np.float32), None).shape == (3, 2)  # the file's, at most 2


def test_from_file_resamples_and_cleans(tmp_path):
    t = np.arange(22050) / 22050
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    tone[100] = np.nan
    sf.write(tmp_path / "tone.wav", tone, 22050, subtype="FLOAT")
    looped = LoopedSource.from_file(tmp_path / "tone.wav", sr=48000)
    assert looped.channels == 1 and looped.data.shape[0] == 48000 and np.isfinite(looped.data).all()
    with pytest.raises(ParameterError, match="--cross-with .*none.wav does not exist"):
        LoopedSource.from_file(tmp_path / "none.wav", sr=48000)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(ParameterError, match="--input .*bad.wav is not a readable audio file"):
        read_audio(tmp_path / "bad.wav", option="--input")


def test_aux_engine_takes_its_second_source_from_one_place():
    with pytest.raises(ParameterError, match="from one place"):
        AuxEngine(object())
    with pytest.raises(ParameterError, match="from one place"):
        AuxEngine(object(), split=True, looped=LoopedSource(np.ones((2, 1), np.float32)))


@pytest.mark.parametrize("subtype, block_align", [("FLOAT", 4), ("PCM_16", 2)])
def test_a_wav_cut_short_is_read_with_a_warning_that_says_how_much(tmp_path, subtype, block_align):
    sf.write(tmp_path / "whole.wav", np.zeros((48000, 1), np.float32), 48000, subtype=subtype)
    whole = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[:10000])  # a copy interrupted after 10 kB
    with pytest.warns(UserWarning) as caught:
        data, sr = read_audio(tmp_path / "cut.wav", option="--input")
    assert sr == 48000 and 0 < data.shape[0] < 48000
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "cut.wav is cut short: its header promises 48000 frames (1.00 s)" in message
    assert f"the file holds {data.shape[0]} (" in message
    # a whole file says nothing
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_audio(tmp_path / "whole.wav")[0].shape == (48000, 1)
