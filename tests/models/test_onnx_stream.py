"""The network's stream in ONNX Runtime against its TorchScript stream: same codes, same decoded
magnitudes (float32 rounding), region rows moving, and the stream state handed over both ways."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from spectro_fx.models import STFTConfig, VQVAEConfig  # noqa: E402
from spectro_fx.models.export import ExportedVQVAE  # noqa: E402
from spectro_fx.models.onnx_stream import ColumnNetwork  # noqa: E402
from spectro_fx.models.vqvae import VQVAE  # noqa: E402

CONFIGS = {
    # two frames a column, as the default model (low-delay pair, 1024-point analysis)
    "low-delay": dict(stft=STFTConfig(sr=48000, n_fft=1024, hop_length=128, win_length=1024, synthesis_length=256),
                      channels=(4, 8), freq_strides=(8, 2), time_strides=(2, 1), freq_kernels=(16, 4)),
    # four frames a column
    "stride 4": dict(stft=STFTConfig(sr=48000, n_fft=512, hop_length=128, win_length=512),
                     channels=(4, 8), freq_strides=(4, 2), time_strides=(2, 2), freq_kernels=(8, 4)),
    # one frame a column: the decoder's tail reaches two columns back
    "stride 1": dict(stft=STFTConfig(sr=16000, n_fft=256, hop_length=64, win_length=256),
                     channels=(4, 6), freq_strides=(2, 2), time_strides=(1, 1), freq_kernels=(4, 3)),
    # asymmetric frequency padding, time kernel 2, no residual block
    "odd": dict(stft=STFTConfig(sr=16000, n_fft=128, hop_length=48, win_length=100),
                channels=(4, 6), freq_strides=(2, 2), time_strides=(1, 2), freq_kernels=(5, 3), time_kernel=2,
                n_res_blocks=0),
}


def _module(name: str) -> ExportedVQVAE:
    settings = {"time_kernel": 3, "n_res_blocks": 1, "code_dim": 8, "codebook_size": 32, **CONFIGS[name]}
    torch.manual_seed(1)
    net = VQVAE(VQVAEConfig(**settings))
    with torch.no_grad():
        net.quantizer.codebook.copy_(torch.randn_like(net.quantizer.codebook) * 0.3)
    module = ExportedVQVAE(net.eval())
    module.reset_stream()
    return module


def _columns(module, rng, count, streams):
    """Encoder inputs of ``count`` columns [streams, n_bins, time_stride] with a spectral tilt."""
    tilt = np.linspace(2.0, 0.01, module.n_bins)[None, :, None]
    return [(np.abs(rng.standard_normal((streams, module.n_bins, module.time_stride))) * tilt).astype(np.float32)
            for _ in range(count)]


def _rows(module, c):
    """Region rows of column ``c``: a band, none, another band, the whole map, the first again."""
    r = module.n_rows
    schedule = [(1, max(r // 2, 2)), (0, 0), (r // 3, r), (0, r), (1, max(r // 2, 2))]
    return schedule[(c // 3) % len(schedule)]


def _torch_column(module, magnitude, rows):
    with torch.no_grad():
        codes = module.stream_encode(torch.from_numpy(magnitude))
        latent = torch.nn.functional.embedding(codes, module.codebook).permute(0, 3, 1, 2)
        decoded = module.stream_decode_latent(latent, rows[0], rows[1], 0)
    return codes[:, :, 0].numpy(), latent[..., 0].numpy(), decoded.numpy()


def _onnx_column(network, latent, magnitude, rows):
    codes = network.encode(magnitude)
    decoded = network.decode(np.ascontiguousarray(latent), *rows)
    return codes, decoded


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("streams", [1, 2])
def test_the_onnx_stream_equals_the_torchscript_stream(name, streams, rng):
    module = _module(name)
    network = ColumnNetwork(module, streams=streams)
    heard = 0.0
    for c, magnitude in enumerate(_columns(module, rng, 30, streams)):
        rows = _rows(module, c)
        codes, latent, expected = _torch_column(module, magnitude, rows)
        got_codes, got = _onnx_column(network, latent, magnitude, rows)
        np.testing.assert_array_equal(got_codes, codes)
        if rows[0] >= rows[1]:
            assert got is None
            continue
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(got, expected, atol=1e-5 * scale, rtol=0)
        heard = max(heard, scale)
    assert heard > 0.0


@pytest.mark.parametrize("name", ["low-delay", "stride 1"])
def test_the_stream_state_moves_between_the_runtimes_without_a_seam(name, rng):
    """Half a stream in ONNX Runtime, the rest in TorchScript (and back): as one stream in either."""
    module, reference = _module(name), _module(name)
    network = ColumnNetwork(module, streams=1)
    columns = _columns(module, rng, 24, 1)
    expected = [_torch_column(reference, m, _rows(reference, c)) for c, m in enumerate(columns)]
    for c, magnitude in enumerate(columns):
        rows = _rows(module, c)
        if c in (6, 18):
            network.store_state(module)
        if c == 12:
            network.load_state(module)
        if 6 <= c < 12 or c >= 18:
            codes, _, decoded = _torch_column(module, magnitude, rows)
        else:
            codes, decoded = _onnx_column(network, expected[c][1], magnitude, rows)
            decoded = np.zeros_like(expected[c][2]) if decoded is None else decoded
        np.testing.assert_array_equal(codes, expected[c][0])
        np.testing.assert_allclose(decoded, expected[c][2], atol=1e-5 * max(float(np.abs(expected[c][2]).max()), 1e-9))


def test_streams_must_be_positive():
    from spectro_fx.models.errors import ParameterError

    with pytest.raises(ParameterError, match="streams=0"):
        ColumnNetwork(_module("odd"), streams=0)


@pytest.mark.parametrize("level_input", [False, True])
def test_the_neural_prior_in_onnx_runtime_gives_its_logits(level_input, rng):
    from spectro_fx.models.neural_prior import NeuralPrior
    from spectro_fx.models.onnx_stream import PriorNetwork

    torch.manual_seed(4)
    prior = NeuralPrior(n_rows=9, codebook_size=16, context_columns=3, embed_dim=4, hidden=8, dilations=[1, 3],
                        level_input=level_input).eval()
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.5 * torch.randn_like(p))
    if level_input:  # a strong weight on the band's level: a wrong level would show in the logits
        prior.set_code_levels_(rng.uniform(-90.0, -10.0, (9, 16)))
        with torch.no_grad():
            prior.row_in.weight[:, -1] = 3.0
    b = 5
    context = torch.from_numpy(rng.integers(-1, 17, (b, 9, 3)))  # -1 and K: unknown
    column = torch.from_numpy(rng.integers(0, 16, (b, 9)))
    known = torch.from_numpy(rng.random((b, 9)) < 0.6)
    cells = torch.nonzero(~known)
    with torch.no_grad():
        h, earlier = prior.features(context, column, known)
        expected = prior.cell_logits(h[cells[:, 0], cells[:, 1]], earlier[cells[:, 0], cells[:, 1]]).numpy()
    got = PriorNetwork(prior).logits(context.numpy(), column.numpy(), known.numpy(), cells.numpy())
    assert expected.shape == (int(cells.shape[0]), 16) and np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("codebook_size", [16, 64])
def test_the_neural_priors_draw_in_its_graph_is_sample_finites_or_says_it_is_unsure(codebook_size, rng):
    """The float32 draw in the prior's graph picks the code the float64 reference
    (``builtin.sample_finite``) picks wherever it does not flag the draw as unsure, and hands the
    unsure rows' logits back; a draw that lands on an end of a code's interval is unsure, and so
    is every draw at temperature 0 (the caller takes the first maximum)."""
    from spectro_fx.effect.core.builtin import sample_finite
    from spectro_fx.models.neural_prior import NeuralPrior
    from spectro_fx.models.onnx_stream import PriorNetwork

    torch.manual_seed(5)
    k = codebook_size
    prior = NeuralPrior(n_rows=9, codebook_size=k, context_columns=3, embed_dim=4, hidden=8, dilations=[1, 3]).eval()
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.5 * torch.randn_like(p))
    network = PriorNetwork(prior)
    unsure_seen = 0
    for temperature in (0.0, 0.3, 1.0, 3.0):
        context = rng.integers(-1, k + 1, (40, 9, 3))
        column = rng.integers(0, k, (40, 9))
        known = rng.random((40, 9)) < 0.5
        cells = np.argwhere(~known)
        draws = rng.random(len(cells))
        draws[:4] = [0.0, 0.5, 1.0 - 2.0**-53, 0.25]
        t = np.full(len(cells), temperature)
        logits = network.logits(context, known=known, column=column, cells=cells)
        expected = sample_finite(torch.from_numpy(logits), torch.from_numpy(draws), torch.from_numpy(t)).numpy()
        codes, unsure, unsure_logits = network.draw(context, column, known, cells, draws, t)
        np.testing.assert_array_equal(codes[~unsure], expected[~unsure])
        np.testing.assert_array_equal(unsure_logits, logits[unsure])
        if temperature == 0.0:
            assert unsure.all()
        else:
            unsure_seen += int(unsure.sum())
    assert unsure_seen < 0.2 * 3 * len(cells)
    # every code equally likely, draws on the ends of the codes' intervals: float32 cannot decide
    cells = np.argwhere(np.ones((1, 9), bool))
    flat = {"context": np.full((1, 9, 3), -1), "column": np.zeros((1, 9), np.int64), "known": np.zeros((1, 9), bool)}
    with torch.no_grad():
        prior.head.weight.zero_(), prior.head.bias.zero_(), prior.copy.weight.zero_(), prior.copy.bias.zero_()
    network = PriorNetwork(prior)
    logits = network.logits(**flat, cells=cells)
    assert np.ptp(logits) == 0.0
    draws = np.arange(1, 10) / k
    codes, unsure, unsure_logits = network.draw(**flat, cells=cells, draws=draws, temperature=np.ones(9))
    assert unsure.all() and unsure_logits.shape == (9, k)
