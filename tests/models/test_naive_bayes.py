import warnings

import numpy as np
import pytest
from scipy.stats import chisquare
from sklearn.naive_bayes import CategoricalNB, GaussianNB

from spectro_fx.models import ParameterError
from spectro_fx.models.naive_bayes import (
    AXES,
    categorical_log_posterior,
    fit_categorical_prior,
    inpaint_passes,
    learned_inpaint,
    neighbour_offsets,
    neighbour_table,
    resmooth_prior,
    spatial_inpaint,
)


def documented_order(mask, *, radius, axis, order):
    """The autoregressive order as the module docstring states it, computed independently."""
    rows, cols = np.nonzero(mask)
    period = radius + 1 if axis in ("freq", "both") else 1
    if axis == "freq":  # columns never read each other: one pass per row phase over all columns
        keys = [(r % period, c, r) for r, c in zip(rows, cols)]
    elif order == "causal":
        keys = [(c, r % period, r) for r, c in zip(rows, cols)]
    else:
        col_period = radius + 1 if axis in ("time", "both") else 1
        keys = [(c % col_period, r % period, c, r) for r, c in zip(rows, cols)]
    ordered = sorted(range(len(keys)), key=lambda i: keys[i])
    return [(int(rows[i]), int(cols[i])) for i in ordered]


def sklearn_spatial(codemap, mask, *, radius, axis, order, fallback):
    """The paper's method as a per-cell scikit-learn loop (temperature 0)."""
    n_rows, n_cols = codemap.shape
    state = np.where(mask, -1, codemap)
    for r, c in documented_order(mask, radius=radius, axis=axis, order=order):
        coords, classes = [], []
        for dc in range(-radius, radius + 1):
            for dr in range(-radius, radius + 1):
                if (dc, dr) == (0, 0) or (axis == "time" and dr) or (axis == "freq" and dc):
                    continue
                rr, cc = r + dr, c + dc
                if 0 <= rr < n_rows and 0 <= cc < n_cols and state[rr, cc] >= 0:
                    coords.append((dc, dr))
                    classes.append(state[rr, cc])
        if not coords:
            state[r, c] = int(np.argmax(fallback))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one neighbour: zero variance
            model = GaussianNB().fit(np.array(coords, dtype=float), np.array(classes))
            state[r, c] = model.predict(np.zeros((1, 2)))[0]
    return state


def random_maps(rng, count=8):
    """Small random codemaps and masks: ``(codemap, mask, radius, k)``."""
    for _ in range(count):
        n_rows, n_cols = rng.integers(3, 10, size=2)
        k = int(rng.choice([2, 3, 6, 16]))
        codemap = rng.integers(0, k, size=(n_rows, n_cols))
        mask = rng.random((n_rows, n_cols)) < rng.uniform(0.1, 0.9)
        yield codemap, mask, int(rng.integers(1, 4)), k


@pytest.mark.parametrize("order", ["causal", "interleaved"])
@pytest.mark.parametrize("axis", AXES)
def test_spatial_equals_per_cell_gaussian_nb(axis, order, rng):
    checked = 0
    for codemap, mask, radius, k in random_maps(rng):
        fallback = rng.normal(size=k)
        ours = spatial_inpaint(codemap, mask, radius=radius, axis=axis, order=order,
                               fallback_log_prior=fallback, rng=np.random.default_rng(0))
        expected = sklearn_spatial(codemap, mask, radius=radius, axis=axis, order=order, fallback=fallback)
        np.testing.assert_array_equal(ours, expected)
        np.testing.assert_array_equal(ours[~mask], codemap[~mask])
        checked += int(mask.sum())
    assert checked > 50


def test_passes_hold_independent_cells(rng):
    mask = rng.random((12, 15)) < 0.7
    for axis in AXES:
        offsets = {tuple(o) for o in neighbour_offsets(radius=2, axis=axis)}
        for order in ("causal", "interleaved"):
            passes = inpaint_passes(mask, np.array(sorted(offsets)), order=order)
            flat = [(int(r), int(c)) for rows, cols in passes for r, c in zip(rows, cols)]
            assert flat == documented_order(mask, radius=2, axis=axis, order=order)
            for rows, cols in passes:
                cells = list(zip(cols.tolist(), rows.tolist()))
                for a in cells:
                    for b in cells:
                        assert (b[0] - a[0], b[1] - a[1]) not in offsets


def test_neighbourhood_shapes():
    assert len(neighbour_offsets(radius=2, axis="both")) == 24  # square, not Manhattan
    assert {tuple(o) for o in neighbour_offsets(radius=1, axis="time")} == {(-1, 0), (1, 0)}
    assert {tuple(o) for o in neighbour_offsets(radius=1, axis="freq")} == {(0, -1), (0, 1)}


def test_bad_arguments_are_refused():
    codemap = np.zeros((4, 4), dtype=int)
    mask = np.zeros((4, 4), dtype=bool)
    with pytest.raises(ParameterError, match="radius=0"):
        spatial_inpaint(codemap, mask, radius=0)
    with pytest.raises(ParameterError, match="axis='diagonal'"):
        spatial_inpaint(codemap, mask, axis="diagonal")
    with pytest.raises(ParameterError, match="temperature=-1"):
        spatial_inpaint(codemap, mask, temperature=-1)
    with pytest.raises(ParameterError, match="mask of shape"):
        spatial_inpaint(codemap, mask[:2])
    with pytest.raises(ParameterError, match="no fallback_log_prior"):
        spatial_inpaint(codemap, np.ones((4, 4), dtype=bool))


def spread_codemap(n_cols):
    """Rows 0..6 hold codes 2, 0, 1, _, 1, 0, 2: with axis=freq, radius=3 the middle cell's
    posterior is non-degenerate (class variances 9, 4, 1)."""
    column = np.array([2, 0, 1, 0, 1, 0, 2])
    codemap = np.repeat(column[:, None], n_cols, axis=1)
    mask = np.zeros(codemap.shape, dtype=bool)
    mask[3] = True
    return codemap, mask


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_spatial_sampling_follows_the_posterior(temperature):
    codemap, mask = spread_codemap(3000)
    coords = np.array([[0, d] for d in (-3, -2, -1, 1, 2, 3)], dtype=float)
    posterior = GaussianNB().fit(coords, codemap[[0, 1, 2, 4, 5, 6], 0]).predict_proba(np.zeros((1, 2)))[0]
    expected = posterior ** (1 / temperature)
    expected /= expected.sum()
    out = spatial_inpaint(codemap, mask, radius=3, axis="freq", temperature=temperature, rng=np.random.default_rng(7))
    counts = np.bincount(out[3], minlength=3)
    assert chisquare(counts, expected * counts.sum()).pvalue > 1e-3


def test_seeds_repeat_and_differ():
    codemap, mask = spread_codemap(200)
    run = lambda seed: spatial_inpaint(codemap, mask, radius=3, axis="freq", temperature=1.0, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_full_region_falls_back(rng):
    k = 8
    codemap = rng.integers(0, k, size=(6, 5))
    mask = np.ones_like(codemap, dtype=bool)
    fallback = np.log(np.arange(1, k + 1) / np.arange(1, k + 1).sum())
    out = spatial_inpaint(codemap, mask, radius=1, axis="both", fallback_log_prior=fallback)
    # no known cell anywhere: the first pass takes the fallback's mode, the rest copy it
    assert np.all(out == k - 1)
    np.testing.assert_array_equal(out, sklearn_spatial(codemap, mask, radius=1, axis="both", order="causal", fallback=fallback))


@pytest.mark.parametrize("cell", [(0, 0), (5, 6), (0, 6), (2, 3)])
def test_single_cell_and_border(cell, rng):
    codemap = rng.integers(0, 4, size=(6, 7))
    mask = np.zeros_like(codemap, dtype=bool)
    mask[cell] = True
    out = spatial_inpaint(codemap, mask, radius=2, axis="both")
    np.testing.assert_array_equal(out, sklearn_spatial(codemap, mask, radius=2, axis="both", order="causal", fallback=None))
    np.testing.assert_array_equal(out[~mask], codemap[~mask])


def test_empty_region_is_a_no_op(rng):
    codemap = rng.integers(0, 16, size=(5, 9))
    mask = np.zeros_like(codemap, dtype=bool)
    generator = np.random.default_rng(1)
    state = generator.bit_generator.state
    for out in (
        spatial_inpaint(codemap, mask, temperature=1.0, rng=generator),
        learned_inpaint(codemap, mask, fit_categorical_prior([codemap], n_codes=16), rng=generator),
    ):
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, codemap)
    assert generator.bit_generator.state == state  # nothing drawn


# --- learned categorical NB -------------------------------------------------------------------


def structured_codemaps(rng, *, k, count):
    """Codemaps with structure along time and frequency, so the prior has something to learn."""
    maps = []
    for _ in range(count):
        n_cols = int(rng.integers(6, 14))
        base = rng.integers(0, k, size=(7, 1))
        codemap = np.repeat(base, n_cols, axis=1)
        flip = rng.random(codemap.shape) < 0.3
        codemap[flip] = (codemap[flip] + rng.integers(1, 3, size=int(flip.sum()))) % k
        maps.append(codemap)
    return maps


@pytest.mark.parametrize("alpha", [1.0, 0.1])
def test_learned_equals_categorical_nb(alpha, rng):
    k = 6
    maps = structured_codemaps(rng, k=k, count=12)
    prior = fit_categorical_prior(maps, n_codes=k, alpha=alpha)
    offsets = prior.offsets.numpy()
    table = np.concatenate([neighbour_table(m, offsets, n_codes=k) for m in maps])
    y = np.concatenate([m.ravel() for m in maps])
    reference = CategoricalNB(alpha=alpha, min_categories=k + 1).fit(table, y)
    # queries with unknown neighbours (value K) as inpainting produces them
    query_map = structured_codemaps(rng, k=k, count=1)[0]
    known = rng.random(query_map.shape) < 0.6
    query = neighbour_table(query_map, offsets, n_codes=k, known=known)
    ours = np.exp(categorical_log_posterior(query, prior))
    expected = np.zeros_like(ours)
    expected[:, reference.classes_] = reference.predict_proba(query)
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_learned_inpaint_follows_categorical_nb_per_cell(rng):
    k = 5
    maps = structured_codemaps(rng, k=k, count=10)
    prior = fit_categorical_prior(maps, n_codes=k, alpha=0.5)
    offsets = prior.offsets.numpy()
    table = np.concatenate([neighbour_table(m, offsets, n_codes=k) for m in maps])
    reference = CategoricalNB(alpha=0.5, min_categories=k + 1).fit(table, np.concatenate([m.ravel() for m in maps]))
    codemap = structured_codemaps(rng, k=k, count=1)[0]
    mask = rng.random(codemap.shape) < 0.5
    out = learned_inpaint(codemap, mask, prior, temperature=0.0)
    # the same order with per-cell sklearn predictions: offsets reach one row in the same column
    state = np.where(mask, -1, codemap)
    for r, c in documented_order(mask, radius=1, axis="both", order="causal"):
        row = neighbour_table(np.maximum(state, 0), offsets, n_codes=k, known=state >= 0)[r * codemap.shape[1] + c]
        state[r, c] = reference.predict(row[None])[0]
    np.testing.assert_array_equal(out, state)


def test_learned_sampling_follows_the_posterior(rng):
    k = 4
    prior = fit_categorical_prior(structured_codemaps(rng, k=k, count=6), n_codes=k, alpha=1.0)
    codemap = np.zeros((3, 200), dtype=int)
    codemap[1, ::2] = 1
    mask = np.zeros(codemap.shape, dtype=bool)
    mask[1, 100] = True
    temperature = 1.5
    table = neighbour_table(codemap, prior.offsets.numpy(), n_codes=k, known=~mask)
    p = np.exp(categorical_log_posterior(table[1 * 200 + 100][None], prior)[0] / temperature)
    p /= p.sum()
    generator = np.random.default_rng(11)
    draws = [learned_inpaint(codemap, mask, prior, temperature=temperature, rng=generator)[1, 100] for _ in range(3000)]
    counts = np.bincount(draws, minlength=k)
    keep = p > 0
    assert counts[~keep].sum() == 0
    assert chisquare(counts[keep], p[keep] * counts.sum()).pvalue > 1e-3


def test_learned_full_region_and_seeds(rng):
    k = 6
    prior = fit_categorical_prior(structured_codemaps(rng, k=k, count=6), n_codes=k)
    codemap = rng.integers(0, k, size=(7, 10))
    mask = np.ones(codemap.shape, dtype=bool)
    a = learned_inpaint(codemap, mask, prior, temperature=1.0, rng=np.random.default_rng(5))
    b = learned_inpaint(codemap, mask, prior, temperature=1.0, rng=np.random.default_rng(5))
    c = learned_inpaint(codemap, mask, prior, temperature=1.0, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() < k


def test_resmoothing_recovers_counts(rng):
    k = 6
    maps = structured_codemaps(rng, k=k, count=8)
    fitted = fit_categorical_prior(maps, n_codes=k, alpha=1.0)
    direct = fit_categorical_prior(maps, n_codes=k, alpha=0.25)
    again = resmooth_prior(fitted, alpha=0.25)
    assert again.alpha == 0.25
    np.testing.assert_allclose(again.feature_log_prob.numpy(), direct.feature_log_prob.numpy(), atol=1e-5)
    with pytest.raises(ParameterError, match="alpha=0"):
        resmooth_prior(fitted, alpha=0)


def test_prior_fit_refuses_bad_input():
    with pytest.raises(ParameterError, match="alpha=0"):
        fit_categorical_prior([np.zeros((2, 2), dtype=int)], n_codes=4, alpha=0.0)
    with pytest.raises(ParameterError, match=r"must lie in \[0, 4\)"):
        fit_categorical_prior([np.full((2, 2), 7)], n_codes=4)
    with pytest.raises(ParameterError, match="empty"):
        fit_categorical_prior([], n_codes=4)
    with pytest.raises(ParameterError, match="offsets="):
        fit_categorical_prior([np.zeros((2, 2), dtype=int)], n_codes=4, offsets=[(0, 0)])


@pytest.mark.parametrize("axis", AXES)
def test_spatial_redraw_equals_per_cell_gaussian_nb_on_the_given_codes(axis, rng):
    """redraw=True: each masked cell is predicted from all its neighbours as given (masked
    ones included, never itself), as a per-cell scikit-learn fit on the original map."""
    checked = 0
    for codemap, mask, radius, k in random_maps(rng):
        ours = spatial_inpaint(codemap, mask, radius=radius, axis=axis, redraw=True,
                               fallback_log_prior=np.zeros(k), rng=np.random.default_rng(0))
        # every cell's neighbours known: the sklearn loop on a one-cell mask at a time
        expected = codemap.copy()
        for r, c in zip(*np.nonzero(mask)):
            one = np.zeros_like(mask)
            one[r, c] = True
            expected[r, c] = sklearn_spatial(codemap, one, radius=radius, axis=axis, order="causal",
                                             fallback=np.zeros(k))[r, c]
        np.testing.assert_array_equal(ours, expected)
        checked += int(mask.sum())
    assert checked > 50


def test_learned_redraw_streams_column_by_column_like_the_whole_map(rng):
    """The learned offsets never look ahead, so redrawing a stream column by column (one
    uniform per cell, by column then row) equals redrawing the whole map at once."""
    k = 6
    maps = structured_codemaps(rng, k=k, count=4)
    prior = fit_categorical_prior(maps, n_codes=k, alpha=0.5)
    codemap = maps[0]
    mask = np.zeros(codemap.shape, dtype=bool)
    mask[1:-1, 2:] = True
    whole = learned_inpaint(codemap, mask, prior, temperature=1.0, rng=np.random.default_rng(4), redraw=True)
    gen = np.random.default_rng(4)
    columns = []
    for c in range(codemap.shape[1]):  # as the engine does: earlier columns given, the new one masked
        newest = np.zeros((codemap.shape[0], c + 1), dtype=bool)
        newest[:, c] = mask[:, c]
        columns.append(learned_inpaint(codemap[:, : c + 1], newest, prior, temperature=1.0, rng=gen, redraw=True)[:, c])
    streamed = np.column_stack(columns)
    np.testing.assert_array_equal(streamed, whole)
    np.testing.assert_array_equal(whole[~mask], codemap[~mask])
    assert (whole[mask] != codemap[mask]).any()
    # the paper's order reads regenerated codes instead: another map
    assert not np.array_equal(whole, learned_inpaint(codemap, mask, prior, temperature=1.0, rng=np.random.default_rng(4)))
