import pytest
import torch

from spectro_fx.models import ParameterError, VQVAEConfig
from spectro_fx.models.vqvae import VQVAE, decoder_receptive_field_columns, receptive_field_frames


@pytest.fixture(params=["tiny", "default"])
def model(request, tiny_config):
    cfg = tiny_config if request.param == "tiny" else VQVAEConfig()
    return VQVAE(cfg).eval()


def test_shapes(model):
    cfg = model.cfg
    out = model(torch.rand(2, cfg.stft.n_bins, 8 * cfg.time_stride))
    assert out.reconstruction.shape == (2, cfg.stft.n_bins, 8 * cfg.time_stride)
    assert out.codes.shape == (2, cfg.n_rows, 8)


def test_encoder_is_causal_and_receptive_field_is_right(model):
    cfg = model.cfg
    frames = 12 * cfg.time_stride
    x = torch.rand(1, cfg.stft.n_bins, frames) + 0.01
    base = model.encode_latent(x)
    column = 8
    last = (column + 1) * cfg.time_stride - 1
    depends = []
    for f in range(frames):
        y = x.clone()
        y[:, :, f] *= 7.0
        if not torch.equal(model.encode_latent(y)[..., column], base[..., column]):
            depends.append(f)
    assert depends[-1] == last  # never a later frame
    assert depends[0] == last - receptive_field_frames(cfg) + 1


def test_decoder_is_causal_and_receptive_field_is_right(model):
    cfg = model.cfg
    latent = torch.randn(1, cfg.code_dim, cfg.n_rows, 12)
    base = model.decode_latent(latent)
    column = 8
    depends = set()
    for c in range(12):
        lat = latent.clone()
        lat[..., c] += 1.0
        diff = (model.decode_latent(lat) - base).abs().amax(dim=(0, 1))
        frames = torch.nonzero(diff[column * cfg.time_stride : (column + 1) * cfg.time_stride]).numel()
        if frames:
            depends.add(c)
    assert max(depends) == column
    assert column - min(depends) + 1 == decoder_receptive_field_columns(cfg)


def test_later_frames_do_not_change_earlier_output(model):
    cfg = model.cfg
    x = torch.rand(1, cfg.stft.n_bins, 8 * cfg.time_stride)
    y = x.clone()
    y[..., 4 * cfg.time_stride :] = torch.rand_like(y[..., 4 * cfg.time_stride :]) * 10
    a, b = model(x), model(y)
    torch.testing.assert_close(a.reconstruction[..., : 4 * cfg.time_stride], b.reconstruction[..., : 4 * cfg.time_stride])
    assert torch.equal(a.codes[..., :4], b.codes[..., :4])


def test_bad_input_shape_names_expected(model):
    with pytest.raises(ParameterError, match=f"{model.cfg.stft.n_bins}"):
        model(torch.rand(1, 3, 8))


def test_gelu_any_layout_keeps_the_layout_and_the_values():
    from spectro_fx.models.vqvae import gelu_any_layout

    x = torch.randn(2, 24, 66, 34)  # over the size where the view is taken
    last = x.contiguous(memory_format=torch.channels_last)
    y = gelu_any_layout(last)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    torch.testing.assert_close(y, torch.nn.functional.gelu(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gelu_any_layout(x), torch.nn.functional.gelu(x), atol=0, rtol=0)
