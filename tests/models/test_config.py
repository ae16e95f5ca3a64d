import pytest

from spectro_fx.models import ParameterError, STFTConfig, VQVAEConfig


def test_defaults_are_consistent():
    cfg = VQVAEConfig()
    assert cfg.stft.n_bins == 257
    assert cfg.padded_bins >= cfg.stft.n_bins
    assert cfg.padded_bins - cfg.stft.n_bins < cfg.freq_stride
    assert cfg.time_stride == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hop_length": 0}, "hop_length=0"),
        ({"n_fft": 511}, "n_fft=511"),
        ({"win_length": 1024}, "win_length=1024"),
        ({"window": "kaiser"}, "window='kaiser'"),
        ({"sr": -1}, "sr=-1"),
        ({"synthesis_length": 128}, "synthesis_length=128"),  # below 2 x hop
        ({"synthesis_length": 257}, "synthesis_length=257"),  # odd: the halves would not meet
        ({"synthesis_length": 1024}, "synthesis_length=1024"),  # beyond the analysis window
        ({"synthesis_length": -2}, "synthesis_length=-2"),
    ],
)
def test_stft_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        STFTConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"freq_strides": (4, 2)}, "freq_strides"),
        ({"freq_kernels": (2, 4, 3)}, r"freq_kernels\[0\]=2"),
        ({"ema_decay": 1.0}, "ema_decay=1.0"),
        ({"codebook_size": 1}, "codebook_size=1"),
        ({"time_kernel": 1}, "time_kernel=1"),
    ],
)
def test_vqvae_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        VQVAEConfig(**kwargs)


def test_round_trip_through_dict():
    cfg = VQVAEConfig(stft=STFTConfig(sr=16000), codebook_size=64)
    assert VQVAEConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_is_named():
    data = VQVAEConfig().to_dict()
    data["codebok_size"] = 3
    with pytest.raises(ParameterError, match="codebok_size"):
        VQVAEConfig.from_dict(data)


def test_old_config_without_synthesis_length_loads_as_before():
    data = VQVAEConfig().to_dict()
    del data["stft"]["synthesis_length"]
    cfg = VQVAEConfig.from_dict(data)
    assert cfg == VQVAEConfig() and cfg.stft.synthesis_length == 0
    assert cfg.stft.synthesis_span == cfg.stft.win_length
    low = STFTConfig(n_fft=1024, win_length=1024, synthesis_length=256)
    assert low.synthesis_span == 256 and STFTConfig.from_dict(low.to_dict()) == low
