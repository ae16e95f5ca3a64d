"""The neural inpainting prior: its interface, scripting, sampling, the codemap reference and the model file."""

import warnings

import numpy as np
import pytest
import torch

from spectro_fx.models import ParameterError
from spectro_fx.models.export import export_model, load_model, rebuild_module, with_neural_prior
from spectro_fx.models.naive_bayes import sample_log_weights
from spectro_fx.models.neural_prior import NeuralPrior, neural_inpaint, sample_codes


def small(n_rows=6, k=16, **size):
    torch.manual_seed(0)
    net = NeuralPrior(n_rows=n_rows, codebook_size=k, context_columns=3, embed_dim=4, hidden=8, dilations=[1, 2], **size)
    with torch.no_grad():  # weights far from zero, so that logits differ between codes
        for p in net.parameters():
            p.normal_(0.0, 0.5)
    return net.eval()


def scripted(net):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(net)


def test_shapes_and_only_unknown_rows_get_logits(rng):
    net = small()
    context = torch.from_numpy(rng.integers(0, 16, size=(2, 6, 3)))
    column = torch.from_numpy(rng.integers(0, 16, size=(2, 6)))
    known = torch.ones(2, 6, dtype=torch.bool)
    known[0, 1:3] = False
    known[1, 5] = False
    logits = net(context, column, known)
    assert logits.shape == (2, 6, 16) and logits.dtype == torch.float32
    assert torch.all(logits[known] == 0) and torch.all(logits[~known].abs().sum(dim=1) > 0)


def test_scripted_equals_eager_and_is_deterministic(rng):
    net = small()
    context = torch.from_numpy(rng.integers(-1, 16, size=(3, 6, 3)))
    column = torch.from_numpy(rng.integers(0, 16, size=(3, 6)))
    known = torch.from_numpy(rng.random((3, 6)) < 0.5)
    script = scripted(net)
    torch.testing.assert_close(script(context, column, known), net(context, column, known), rtol=0, atol=1e-6)
    assert torch.equal(script(context, column, known), script(context, column, known))


def test_an_unknown_rows_own_code_is_never_read(rng):
    net = small()
    context = torch.from_numpy(rng.integers(0, 16, size=(1, 6, 3)))
    column = torch.from_numpy(rng.integers(0, 16, size=(1, 6)))
    known = torch.ones(1, 6, dtype=torch.bool)
    known[0, 2] = False
    other = column.clone()
    other[0, 2] = (other[0, 2] + 5) % 16
    assert torch.equal(net(context, column, known), net(context, other, known))


def test_level_input_reads_the_mean_level_of_the_unknown_rows_codes(rng):
    """With ``level_input`` the unknown rows read the mean level of the codes the column holds
    there (the input's, live) and nothing else of them; a plain network given the input keeps
    its outputs until trained; scripting and the config keep it."""
    plain = small()
    levels = rng.uniform(-90.0, -10.0, (6, 16))
    net = plain.with_level_input(levels).eval()
    context = torch.from_numpy(rng.integers(-1, 16, size=(3, 6, 3)))
    column = torch.from_numpy(rng.integers(0, 16, size=(3, 6)))
    known = torch.from_numpy(rng.random((3, 6)) < 0.5)
    known[2] = True  # no unknown row: no level
    torch.testing.assert_close(net(context, column, known), plain(context, column, known), rtol=0, atol=1e-6)
    table = (levels - levels.mean()) / 10.0
    band = net.band_level(column, known).numpy()
    for b in range(3):
        rows = np.flatnonzero(~known[b].numpy())
        expected = table[rows, column[b, rows].numpy()].mean() if rows.size else 0.0
        np.testing.assert_allclose(band[b, rows], expected, rtol=1e-6)
        assert np.all(band[b, known[b].numpy()] == 0.0)
    with torch.no_grad():
        net.row_in.weight[:, -1] = 1.0
    # a quieter code in an unknown row changes the prediction of its batch row
    b, row = np.argwhere(~known.numpy())[0]
    quieter = column.clone()
    quieter[b, row] = int(np.argmin(levels[row]))
    assert not torch.allclose(net(context, quieter, known)[b], net(context, column, known)[b])
    script = scripted(net)
    torch.testing.assert_close(script(context, quieter, known), net(context, quieter, known), rtol=0, atol=1e-6)
    again = NeuralPrior.from_config(net.config_json)
    again.load_state_dict(net.state_dict())
    torch.testing.assert_close(again.eval()(context, column, known), net(context, column, known), rtol=0, atol=0)
    assert "level_input" not in plain.config_json  # a file without it reads as before
    with pytest.raises(ParameterError, match=r"code levels of shape \(16,\) must be finite dB, \[6, 16\]"):
        net.set_code_levels_(np.full(16, np.nan))
    with pytest.raises(ParameterError, match="reads no level"):
        plain.set_code_levels_(levels)
    with pytest.raises(ParameterError, match="level_input=1 must be true or false"):
        NeuralPrior(n_rows=4, codebook_size=8, level_input=1)


def test_sample_codes_matches_the_naive_bayes_sampler(rng):
    logits = torch.from_numpy(rng.normal(size=(40, 16)) * 3).float()
    u = torch.from_numpy(rng.random(40))
    for temperature in (0.0, 0.5, 1.0, 3.0):
        expected = sample_log_weights(logits.double().numpy(), u.numpy(), temperature=temperature)
        np.testing.assert_array_equal(sample_codes(logits, u, temperature).numpy(), expected)


def test_bad_sizes_are_refused():
    with pytest.raises(ParameterError, match="hidden=0"):
        NeuralPrior(n_rows=4, codebook_size=8, hidden=0)
    with pytest.raises(ParameterError, match="unknown keys width"):
        NeuralPrior.from_config({"n_rows": 4, "codebook_size": 8, "width": 3})


@pytest.mark.parametrize("context", ["output", "input"])
def test_neural_inpaint_keeps_known_cells_and_streams(context, rng):
    net = small()
    codemap = rng.integers(0, 16, size=(6, 30))
    mask = np.zeros(codemap.shape, dtype=bool)
    mask[1:4, 8:] = True
    whole = neural_inpaint(net, codemap, mask, temperature=1.0, context=context, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(whole[~mask], codemap[~mask])
    assert (whole[mask] != codemap[mask]).any()
    # the first 20 columns alone give the same codes there (causal), with the same draws
    n_first = int(mask[:, :20].sum())
    uniforms = np.random.default_rng(3).random(int(mask.sum()))
    first = neural_inpaint(net, codemap[:, :20], mask[:, :20], temperature=1.0, context=context, uniforms=uniforms[:n_first])
    np.testing.assert_array_equal(first, whole[:, :20])


def test_context_output_reads_its_own_earlier_output_and_input_does_not(rng):
    net = small()
    codemap = rng.integers(0, 16, size=(6, 12))
    mask = np.zeros(codemap.shape, dtype=bool)
    mask[2:5, 4:] = True
    output = neural_inpaint(net, codemap, mask, temperature=0.0, context="output")
    redrawn = neural_inpaint(net, codemap, mask, temperature=0.0, context="input")
    # column 4 sees the same (true) earlier columns either way
    np.testing.assert_array_equal(output[:, 4], redrawn[:, 4])
    # context=input redraws each column from the input alone: column by column it is the same
    for c in range(4, 12):
        one = mask.copy()
        one[:, c + 1 :] = False
        np.testing.assert_array_equal(neural_inpaint(net, codemap, one, context="input")[:, c], redrawn[:, c])


def test_the_model_file_carries_it_and_older_files_keep_naive_bayes(tiny_config, tmp_path):
    from spectro_fx.models.vqvae import VQVAE

    torch.manual_seed(0)
    model = VQVAE(tiny_config).eval()
    n_rows, k = tiny_config.n_rows, tiny_config.codebook_size
    net = small(n_rows=n_rows, k=k)
    plain = load_model(export_model(model, tmp_path / "plain.pt"))
    assert plain.module.format_version == 3 and not bool(plain.module.has_neural_prior) and plain.neural_prior() is None
    with_net = load_model(export_model(model, tmp_path / "net.pt", neural_prior=net))
    assert bool(with_net.module.has_neural_prior)
    rng = np.random.default_rng(0)
    args = (torch.from_numpy(rng.integers(0, k, size=(1, n_rows, 3))), torch.from_numpy(rng.integers(0, k, size=(1, n_rows))),
            torch.from_numpy(rng.random((1, n_rows)) < 0.5))
    expected = net(*args)
    torch.testing.assert_close(with_net.neural_prior()(*args), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(rebuild_module(with_net.module, with_net.config).neural_prior(*args), expected, rtol=0, atol=1e-6)
    # added to an existing file: everything else bit for bit
    added = load_model(with_neural_prior(plain, net, tmp_path / "added.pt", description="test"))
    assert added.metadata["neural_prior"] == "test" and added.metadata["format_version"] == 3
    before, after = plain.module.state_dict(), added.module.state_dict()
    for key, value in before.items():
        if not key.startswith("neural_prior."):
            assert torch.equal(after[key], value), key
    torch.testing.assert_close(added.neural_prior()(*args), expected, rtol=0, atol=1e-6)
    with pytest.raises(ParameterError, match="predicts 5 rows"):
        export_model(model, tmp_path / "bad.pt", neural_prior=small(n_rows=5, k=k))
    # a prior that reads the band's level carries its table of code levels
    leveled = net.with_level_input(rng.uniform(-80.0, 0.0, (n_rows, k))).eval()
    with torch.no_grad():
        leveled.row_in.weight[:, -1] = 2.0
    expected = leveled(*args)
    assert not torch.allclose(expected, net(*args))
    loaded = load_model(with_neural_prior(plain, leveled, tmp_path / "leveled.pt", description="level"))
    torch.testing.assert_close(loaded.neural_prior()(*args), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(rebuild_module(loaded.module, loaded.config).neural_prior(*args), expected, rtol=0, atol=1e-6)


def test_a_format_2_file_loads_without_a_neural_prior():
    from spectro_fx.assets import asset_path

    model = load_model(asset_path("low_delay_model.pt"))
    if int(model.module.format_version) != 2:
        pytest.skip("the bundled low-delay model is no longer a format-2 file")
    assert model.neural_prior() is None
    assert not bool(rebuild_module(model.module, model.config).has_neural_prior)


@pytest.mark.parametrize("codebook_size", [16, 100, 1024])
def test_the_float32_draw_picks_the_float64_references_codes(codebook_size, rng):
    """``draw_codes`` (float32 where that decides, float64 where a draw lies near an end of its
    code's interval) picks what ``draw_codes_float64`` picks, scripted too: every temperature,
    mixed temperatures in one batch, flat and peaked logits, draws on 0, 1/2 and just below 1,
    and half the draws within 1e-9 of an end (which float32 alone would misplace)."""
    from spectro_fx.models.neural_prior import draw_codes, draw_codes_float64

    scripted = torch.jit.script(draw_codes)
    n = 2000
    for scale in (0.05, 3.0, 40.0):
        logits = torch.from_numpy((rng.normal(size=(n, codebook_size)) * scale).astype(np.float32))
        logits[:10] = 0.0  # every code equally likely: the draws below land on the ends
        draws = torch.from_numpy(rng.random(n))
        draws[:4] = torch.tensor([0.0, 0.5, 1.0 - 2.0**-53, 0.25])
        # half the rows drawn within 1e-9 of an end of a code's interval (at temperature 1)
        cumulative = torch.cumsum(torch.softmax(logits.double(), dim=1), dim=1)
        ends = cumulative[torch.arange(n), torch.from_numpy(rng.integers(0, codebook_size - 1, n))]
        near = torch.from_numpy(rng.random(n) < 0.5)
        draws = torch.where(near, ends / cumulative[:, -1] + torch.from_numpy(rng.choice([-1e-9, 0.0, 1e-9], n)), draws)
        for temperature in (torch.full([n], 0.0), torch.full([n], 0.3), torch.full([n], 1.0),
                            torch.from_numpy(rng.choice([0.0, 0.5, 2.0], n))):
            t = temperature.double()
            expected = draw_codes_float64(logits, draws, t)
            np.testing.assert_array_equal(draw_codes(logits, draws, t).numpy(), expected.numpy())
            np.testing.assert_array_equal(scripted(logits, draws, t).numpy(), expected.numpy())
    greedy = torch.tensor([[0.0, 2.0, 2.0, 1.0]])  # temperature 0: the first maximum
    assert int(draw_codes(greedy, torch.tensor([0.9], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))) == 1
