"""Naive Bayes inpainting of codemaps: the paper's spatial Gaussian NB and a learned categorical NB.

Pure array code (numpy in, numpy out) shared by the effect plugins, `spectro-fx-train prior` and experiments.

Conventions
-----------
A codemap is an int array ``[n_rows, n_columns]`` (row = frequency band, low first; column = time,
oldest first). ``mask`` is a bool array of the same shape, True where codes are regenerated; masked
codes are unknown until filled. Offsets are ``(d_column, d_row)`` pairs relative to a cell.

Order (both methods)
--------------------
Cells are regenerated autoregressively, so filled codes are neighbours of later ones. The order
is a sort by ``(pass, column, row)``:

* ``order="causal"`` (the engine's; streaming needs it): oldest column first; inside a column,
  rows in interleaved passes, rows ``r % period == 0`` first, then ``== 1``, ... with
  ``period = 1 + max |d_row|`` over the same-column offsets (``radius + 1`` for the spatial
  method with axis freq or both, 1 when no offset stays in the column), low row first in a pass.
  Regenerating one column at a time (as the engine does, with no future columns) gives the
  same codes as the whole map wherever later columns hold no known code (in a stream they
  do not exist yet).
* ``order="interleaved"`` (offline regions): passes interleave columns as well, with
  ``period = 1 + max |d_column|``; far fewer sequential steps on wide regions.
* When no offset leaves the column (spatial ``axis="freq"``) columns never read each other:
  either order becomes one pass per row phase over all columns, sorted ``(phase, column, row)``
  (the same codes as column by column).

Cells of one pass are never neighbours of each other, so each pass is computed as one vectorised
batch and the result equals a per-cell loop in that order (checked against scikit-learn in tests).

``redraw=True`` (the live effect's ``context=input``) is not inpainting proper: masked codes are
known, every masked cell is redrawn from the codes around it as given (never its own), all in one
pass; uniforms are drawn by column, then row.

Fallback: a cell with no known neighbour (spatial method) is drawn from ``fallback_log_prior``:
the learned prior's class log prior when the model has one, else the codebook usage prior
(``code_log_prior`` of the model file). The learned method needs no fallback: with every
neighbour unknown its prediction is the learned class prior times the "unknown" likelihoods.
"""

from __future__ import annotations

from functools import lru_cache
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import torch

from .errors import ParameterError, non_negative_number, positive_int, positive_number
from .export import Prior

AXES = ("time", "freq", "both")
ORDERS = ("causal", "interleaved")

#: scikit-learn GaussianNB's default: epsilon = var_smoothing * max feature variance
VAR_SMOOTHING = 1e-9

#: Default neighbours of the learned prior, ``(d_column, d_row)``: causal ones (the engine never
#: sees future columns): the three previous columns in the same band, two bands either side in
#: the previous column, one either side two columns back, and the bands just below and above in
#: the same column. (Against six of these, the eleven sharpen the posterior: on held-out notes
#: at temperature 1 the mel distance inside the region fell from 3.9 to 2.7 dB with the default
#: model at 250 steps, from 7.5 to 6.0 dB at 2200 steps; tests/bench/bench_inpaint.py.)
DEFAULT_PRIOR_OFFSETS = (
    (-1, 0), (-2, 0), (-3, 0), (-1, -1), (-1, 1), (-1, -2), (-1, 2), (-2, -1), (-2, 1), (0, -1), (0, 1),
)

_LOG_2PI_FACTOR = 2.0 * np.pi


def neighbour_offsets(*, radius: int, axis: str) -> np.ndarray:
    """Offsets of the spatial neighbourhood, sorted by ``(d_column, d_row)``.

    Parameters
    ----------
    radius : int >= 1
        Cells on each side (1 column = ``time_stride`` frames; 1 row = ``freq_stride`` bins).
    axis : {"time", "freq", "both"}
        ``time``: same row, ``|d_column| <= radius``; ``freq``: same column, ``|d_row| <= radius``;
        ``both``: the square (Chebyshev) neighbourhood ``max(|d_column|, |d_row|) <= radius``.

    Returns
    -------
    offsets : np.ndarray [M, 2] int64, read-only (cached)
        ``(d_column, d_row)``, the cell itself excluded.
    """
    positive_int("radius", radius, unit="cells")
    if axis not in AXES:
        raise ParameterError(f"axis={axis!r} must be one of {', '.join(AXES)}")
    return _offsets_of(int(radius), axis)


@lru_cache(maxsize=64)
def _offsets_of(radius: int, axis: str) -> np.ndarray:
    span = np.arange(-radius, radius + 1)
    dc, dr = np.meshgrid(span, span, indexing="ij")
    dc, dr = dc.ravel(), dr.ravel()
    keep = (dc != 0) | (dr != 0)
    if axis == "time":
        keep &= dr == 0
    elif axis == "freq":
        keep &= dc == 0
    offsets = np.stack([dc[keep], dr[keep]], axis=1).astype(np.int64)
    offsets.flags.writeable = False
    return offsets


def inpaint_passes(mask: np.ndarray, offsets: np.ndarray, *, order: str = "causal") -> list[tuple[np.ndarray, np.ndarray]]:
    """Split the masked cells into sequential passes of mutually independent cells.

    Parameters
    ----------
    mask : np.ndarray [n_rows, n_columns] bool
    offsets : np.ndarray [M, 2] int
        ``(d_column, d_row)`` of the neighbours a prediction reads.
    order : {"causal", "interleaved"}
        See the module docstring.

    Returns
    -------
    passes : list of (rows, columns) int64 arrays
        In processing order; inside a pass sorted by ``(column, row)``. Concatenated, they are
        the per-cell autoregressive order.
    """
    if order not in ORDERS:
        raise ParameterError(f"order={order!r} must be one of {', '.join(ORDERS)}")
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return []
    same_column = offsets[offsets[:, 0] == 0, 1]
    row_period = int(np.abs(same_column).max()) + 1 if same_column.size else 1
    cross = offsets[offsets[:, 0] != 0, 0]
    row_phase = rows % row_period
    if cross.size == 0:
        # columns never read each other: one pass per row phase, all columns together
        column_key = np.zeros_like(cols)
    elif order == "causal":
        column_key = cols
    else:
        column_key = cols % (int(np.abs(cross).max()) + 1)
    pass_key = column_key * row_period + row_phase
    sort = np.lexsort((rows, cols, pass_key))
    rows, cols, pass_key = rows[sort], cols[sort], pass_key[sort]
    bounds = [0, *(np.flatnonzero(np.diff(pass_key)) + 1).tolist(), rows.size]
    return [(rows[a:b], cols[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _redraw_pass(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """All masked cells as one pass, by column then row (so a stream fed column by column
    draws its uniforms in the same order as the whole map)."""
    cols, rows = np.nonzero(mask.T)
    return [(rows, cols)] if rows.size else []


def _regenerate(codemap, mask, offsets, predict, *, order: str, redraw: bool, rng) -> np.ndarray:
    """The loop both methods share: passes in order, one uniform per masked cell drawn up front,
    ``predict(neighbour_values [B, M], uniforms [B]) -> codes [B]`` per pass."""
    passes = _redraw_pass(mask) if redraw else inpaint_passes(mask, offsets, order=order)
    if not passes:
        return codemap
    rng = rng if rng is not None else np.random.default_rng()
    uniforms = rng.random(int(mask.sum()))
    state = _PaddedState(codemap, np.zeros_like(mask) if redraw else mask, offsets)
    start = 0
    for rows, cols in passes:
        u = uniforms[start : start + rows.size]
        start += rows.size
        state.fill(rows, cols, predict(state.values(rows, cols), u))
    return state.result()


def _neighbour_values(state: np.ndarray, rows: np.ndarray, cols: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Codes at ``offsets`` around each cell; -1 outside the codemap or where ``state`` is -1."""
    n_rows, n_cols = state.shape
    nr = rows[:, None] + offsets[None, :, 1]
    nc = cols[:, None] + offsets[None, :, 0]
    inside = (nr >= 0) & (nr < n_rows) & (nc >= 0) & (nc < n_cols)
    values = state[np.where(inside, nr, 0), np.where(inside, nc, 0)]
    return np.where(inside, values, -1)


class _PaddedState:
    """Codes being regenerated, padded by the offsets' reach with -1 so that a pass reads all
    its neighbour codes with one flat gather (outside the codemap reads as unknown, -1)."""

    def __init__(self, codemap: np.ndarray, mask: np.ndarray, offsets: np.ndarray):
        n_rows, n_cols = codemap.shape
        self.pad_r = int(np.abs(offsets[:, 1]).max(initial=0))
        self.pad_c = int(np.abs(offsets[:, 0]).max(initial=0))
        self.state = np.full((n_rows + 2 * self.pad_r, n_cols + 2 * self.pad_c), -1, dtype=np.int64)
        self.inner = (slice(self.pad_r, self.pad_r + n_rows), slice(self.pad_c, self.pad_c + n_cols))
        self.state[self.inner] = np.where(mask, -1, codemap)
        self.width = self.state.shape[1]
        self.delta = offsets[:, 1] * self.width + offsets[:, 0]

    def values(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Neighbour codes ``[B, M]`` of cells ``(rows, cols)``; -1 unknown or outside."""
        base = (rows + self.pad_r) * self.width + (cols + self.pad_c)
        return self.state.ravel()[base[:, None] + self.delta[None, :]]

    def fill(self, rows: np.ndarray, cols: np.ndarray, codes: np.ndarray) -> None:
        self.state[rows + self.pad_r, cols + self.pad_c] = codes

    def result(self) -> np.ndarray:
        return self.state[self.inner].copy()


def sample_log_weights(log_weights: np.ndarray, uniforms: np.ndarray, *, temperature: float) -> np.ndarray:
    """Draw one index per row from ``softmax(log_weights / temperature)`` by inverse CDF.

    Parameters
    ----------
    log_weights : np.ndarray [B, L] float
        Unnormalised log probabilities; ``-inf`` marks impossible entries.
    uniforms : np.ndarray [B] float in [0, 1)
        One uniform per row (the caller's seeded generator).
    temperature : float >= 0
        0 takes the argmax (first maximum, as scikit-learn's ``predict``); otherwise the
        distribution ``p ** (1 / temperature)``, renormalised.

    Returns
    -------
    index : np.ndarray [B] int64
    """
    log_weights = np.asarray(log_weights, dtype=np.float64)
    if temperature <= 0.0:
        return np.argmax(log_weights, axis=1)
    top = log_weights.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        weights = np.exp((log_weights - top) / temperature)
    weights[~np.isfinite(log_weights)] = 0.0
    cumulative = np.cumsum(weights, axis=1)
    target = uniforms[:, None] * cumulative[:, -1:]
    # first entry whose cumulative weight exceeds the target; zero-weight entries are never picked
    index = (cumulative <= target).sum(axis=1)
    return np.minimum(index, log_weights.shape[1] - 1)


def gaussian_nb_predict(values: np.ndarray, offsets: np.ndarray, uniforms: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Fit one Gaussian NB per cell on its known neighbours and predict at the cell (0, 0).

    ``values`` [B, M]: neighbour codes (-1 unknown) at ``offsets`` [M, 2]. Features are the
    neighbours' coordinates relative to the cell (GaussianNB is translation invariant, and
    relative coordinates keep a stream's numbers small and exact). The arithmetic follows
    scikit-learn's ``GaussianNB.fit``/``predict`` operation by operation (sums in neighbour
    order, as ``np.var(X, axis=0)`` adds rows one by one; epsilon = var_smoothing * max feature
    variance), so even exact ties break the same way: lowest code among the maxima.

    All cells of a batch are fitted at once: every known neighbour is one entry, grouped by
    (cell, code); ``np.bincount`` sums each group in entry order.

    Returns ``(codes [B], has_neighbour [B] bool)``; codes of cells without a known neighbour
    are -1 (the caller falls back).
    """
    n_cells = values.shape[0]
    cell, slot = np.nonzero(values >= 0)  # row-major: by cell, then neighbour order
    # (callers silence numpy's divide/invalid warnings: 0/0 appears for cells with one neighbour)
    codes = np.full(n_cells, -1, dtype=np.int64)
    n_known = np.bincount(cell, minlength=n_cells)
    has_neighbour = n_known > 0
    if cell.size == 0:
        return codes, has_neighbour
    code = values[cell, slot]
    x = offsets[slot, 0].astype(np.float64)
    y = offsets[slot, 1].astype(np.float64)
    total = n_known.astype(np.float64)
    # epsilon_ = var_smoothing * max(np.var(X, axis=0)) over all of the cell's neighbours
    all_mean_x = np.bincount(cell, weights=x, minlength=n_cells) / total
    all_mean_y = np.bincount(cell, weights=y, minlength=n_cells) / total
    all_var_x = np.bincount(cell, weights=(x - all_mean_x[cell]) ** 2, minlength=n_cells) / total
    all_var_y = np.bincount(cell, weights=(y - all_mean_y[cell]) ** 2, minlength=n_cells) / total
    epsilon = VAR_SMOOTHING * np.maximum(all_var_x, all_var_y)
    # groups = (cell, code) pairs sorted by cell then code; entries keep their order
    span = int(code.max()) + 1
    key = cell * span + code
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.empty(key.size, dtype=bool)
    starts[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=starts[1:])
    group = np.empty(key.size, dtype=np.int64)
    group[order] = np.cumsum(starts) - 1
    groups = sorted_key[starts]
    g_cell, g_code = np.divmod(groups, span)
    count = np.bincount(group).astype(np.float64)
    mean_x = np.bincount(group, weights=x) / count
    mean_y = np.bincount(group, weights=y) / count
    var_x = np.bincount(group, weights=(x - mean_x[group]) ** 2) / count + epsilon[g_cell]
    var_y = np.bincount(group, weights=(y - mean_y[group]) ** 2) / count + epsilon[g_cell]
    jointi = np.log(count / total[g_cell])
    n_ij = -0.5 * (np.log(_LOG_2PI_FACTOR * var_x) + np.log(_LOG_2PI_FACTOR * var_y))
    # the query point is (0, 0): (X - theta) ** 2 == theta ** 2
    n_ij = n_ij - 0.5 * ((mean_x**2) / var_x + (mean_y**2) / var_y)
    jll = jointi + n_ij
    first = np.searchsorted(g_cell, np.arange(n_cells))
    rank = np.arange(groups.size) - first[g_cell]
    n_classes = np.bincount(g_cell, minlength=n_cells)
    # one class (e.g. a single neighbour, where epsilon is 0): scikit-learn predicts it whatever
    # its (possibly nan) likelihood
    jll = np.where(n_classes[g_cell] == 1, 0.0, jll)
    dense = np.full((n_cells, int(rank.max()) + 1), -np.inf)
    dense[g_cell, rank] = jll
    dense_codes = np.zeros(dense.shape, dtype=np.int64)
    dense_codes[g_cell, rank] = g_code
    # classes are in ascending code order, so the first maximum is scikit-learn's predict
    pick = sample_log_weights(dense[has_neighbour], uniforms[has_neighbour], temperature=temperature)
    codes[has_neighbour] = dense_codes[has_neighbour][np.arange(pick.size), pick]
    return codes, has_neighbour


def _check_maps(codemap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codemap = np.asarray(codemap)
    mask = np.asarray(mask, dtype=bool)
    if codemap.ndim != 2:
        raise ParameterError(f"codemap of shape {codemap.shape} must be 2-D [n_rows, n_columns]")
    if mask.shape != codemap.shape:
        raise ParameterError(f"mask of shape {mask.shape} must match the codemap's {codemap.shape}")
    return codemap.astype(np.int64), mask


def _check_temperature(temperature: float) -> float:
    return non_negative_number("temperature", float(temperature))


def spatial_inpaint(
    codemap: np.ndarray,
    mask: np.ndarray,
    *,
    radius: int = 2,
    axis: str = "both",
    temperature: float = 0.0,
    rng: Optional[np.random.Generator] = None,
    fallback_log_prior: Optional[np.ndarray] = None,
    order: str = "causal",
    redraw: bool = False,
    later_columns: bool = True,
) -> np.ndarray:
    """Regenerate masked codes with the paper's spatial Gaussian naive Bayes, vectorised.

    For each masked cell, a Gaussian NB is fitted on its known neighbours (features: their
    ``(d_column, d_row)`` coordinates; classes: their codes; class priors, per-class mean and
    variance plus scikit-learn's variance smoothing) and predicts the cell's code at its own
    coordinates.

    Parameters
    ----------
    codemap : np.ndarray [n_rows, n_columns] int
        Codes; values under ``mask`` are ignored.
    mask : np.ndarray [n_rows, n_columns] bool
        True where codes are regenerated.
    radius, axis
        Neighbourhood, see :func:`neighbour_offsets`.
    temperature : float >= 0
        0: the most probable code (scikit-learn's ``predict``); > 0: a draw from
        ``posterior ** (1 / temperature)``. The fitted variances are tiny for classes seen once
        (epsilon ~ 1e-9), so the posterior is nearly one-hot unless classes share neighbours.
    rng : np.random.Generator, optional
        Source of the one uniform drawn per masked cell (always drawn, in processing order, so
        a seeded run is repeatable whatever the temperature). Default: a fresh unseeded one.
    fallback_log_prior : np.ndarray [K] float, optional
        Log prior for cells with no known neighbour (see the module docstring). Required when
        such a cell occurs.
    order : {"causal", "interleaved"}
        Autoregressive order, see the module docstring.
    redraw : bool
        False (the paper): masked codes are unknown until regenerated. True: every masked cell
        is redrawn from the codes around it as given, masked neighbours included (never its
        own code), all at once; ``order`` is then unused.
    later_columns : bool
        False: no cell reads a neighbour in a later column, as in a stream, where later columns
        do not exist yet (unknown neighbours are left out of the fit). With ``redraw``, several
        columns then come out exactly as when each is redrawn alone, in column order.

    Returns
    -------
    codemap : np.ndarray [n_rows, n_columns] int64
        A copy with the masked cells regenerated (the input itself when nothing is masked).
    """
    codemap, mask = _check_maps(codemap, mask)
    temperature = _check_temperature(temperature)
    offsets = neighbour_offsets(radius=radius, axis=axis)
    if not later_columns:
        offsets = offsets[offsets[:, 0] <= 0]

    def predict(values: np.ndarray, u: np.ndarray) -> np.ndarray:
        codes, has_neighbour = gaussian_nb_predict(values, offsets, u, temperature)
        if not has_neighbour.all():
            if fallback_log_prior is None:
                raise ParameterError("a masked cell has no known neighbour and no fallback_log_prior was given")
            lonely = ~has_neighbour
            prior = np.broadcast_to(np.asarray(fallback_log_prior, dtype=np.float64), (int(lonely.sum()), len(fallback_log_prior)))
            codes[lonely] = sample_log_weights(prior, u[lonely], temperature=temperature)
        return codes

    with np.errstate(divide="ignore", invalid="ignore"):
        return _regenerate(codemap, mask, offsets, predict, order=order, redraw=redraw, rng=rng)


# ---------------------------------------------------------------------------------------------
# learned categorical naive Bayes


def neighbour_table(codemap: np.ndarray, offsets: np.ndarray, *, n_codes: int, known: Optional[np.ndarray] = None) -> np.ndarray:
    """Neighbour codes of every cell: the feature table of the categorical NB.

    Parameters
    ----------
    codemap : np.ndarray [n_rows, n_columns] int
    offsets : np.ndarray [P, 2] int
        ``(d_column, d_row)``.
    n_codes : int
        K; the value K stands for "outside the codemap / unknown".
    known : np.ndarray [n_rows, n_columns] bool, optional
        False where a code is unknown (masked); default all known.

    Returns
    -------
    table : np.ndarray [n_rows * n_columns, P] int64
        Row ``r * n_columns + c`` holds the neighbour values of cell ``(r, c)``.
    """
    codemap = np.asarray(codemap, dtype=np.int64)
    state = codemap if known is None else np.where(known, codemap, -1)
    rows, cols = np.divmod(np.arange(codemap.size), codemap.shape[1])
    values = _neighbour_values(state, rows, cols, np.asarray(offsets, dtype=np.int64).reshape(-1, 2))
    return np.where(values < 0, n_codes, values)


def fit_categorical_prior(
    codemaps: Iterable[np.ndarray],
    *,
    n_codes: int,
    offsets: Iterable[tuple[int, int]] = DEFAULT_PRIOR_OFFSETS,
    alpha: float = 1.0,
) -> Prior:
    """Fit P(code | neighbour codes at ``offsets``) by counting, with Laplace smoothing.

    Every cell of every codemap is a sample; its features are the codes at ``offsets``
    (value K outside the codemap). Equal to ``sklearn.naive_bayes.CategoricalNB(alpha=alpha,
    min_categories=K + 1)`` fitted on the same table, with the class prior unsmoothed
    (log of class frequencies; codes never seen get ``-inf`` and are never generated).

    Parameters
    ----------
    codemaps : iterable of np.ndarray [n_rows, n_columns] int
        Codes in ``[0, n_codes)``; maps may differ in width.
    n_codes : int
        Codebook size K.
    offsets : iterable of (d_column, d_row)
    alpha : float > 0
        Additive (Laplace) smoothing of the neighbour counts.

    Returns
    -------
    Prior
        ``offsets [P, 2]`` int64, ``class_log_prior [K]`` and ``feature_log_prob [P, K, K + 1]``
        float32, ``alpha``.
    """
    alpha = positive_number("alpha", float(alpha), unit="Laplace smoothing of the neighbour counts")
    k = positive_int("n_codes", int(n_codes))
    offsets = np.asarray(list(offsets), dtype=np.int64).reshape(-1, 2)
    if offsets.shape[0] == 0 or np.any((offsets[:, 0] == 0) & (offsets[:, 1] == 0)):
        raise ParameterError(f"offsets={offsets.tolist()} must be non-empty (d_column, d_row) pairs other than (0, 0)")
    p = offsets.shape[0]
    class_count = np.zeros(k, dtype=np.float64)
    feature_count = np.zeros(p * k * (k + 1), dtype=np.float64)
    seen = 0
    for codemap in codemaps:
        codemap = np.asarray(codemap, dtype=np.int64)
        if codemap.ndim != 2:
            raise ParameterError(f"codemap of shape {codemap.shape} must be 2-D [n_rows, n_columns]")
        if codemap.size == 0:
            continue
        if codemap.min() < 0 or codemap.max() >= k:
            raise ParameterError(f"codes in [{codemap.min()}, {codemap.max()}] must lie in [0, {k})")
        seen += 1
        y = codemap.ravel()
        table = neighbour_table(codemap, offsets, n_codes=k)
        class_count += np.bincount(y, minlength=k)
        flat = (np.arange(p)[None, :] * k + y[:, None]) * (k + 1) + table
        feature_count += np.bincount(flat.ravel(), minlength=feature_count.size)
    if seen == 0:
        raise ParameterError("no codemap to fit the prior on (the data set is empty)")
    feature_count = feature_count.reshape(p, k, k + 1)
    smoothed = feature_count + alpha
    feature_log_prob = np.log(smoothed) - np.log(smoothed.sum(axis=2, keepdims=True))
    with np.errstate(divide="ignore"):
        class_log_prior = np.log(class_count) - np.log(class_count.sum())
    return Prior(
        offsets=torch.from_numpy(offsets),
        class_log_prior=torch.from_numpy(class_log_prior).float(),
        feature_log_prob=torch.from_numpy(feature_log_prob).float(),
        alpha=alpha,
    )


@dataclass(frozen=True)
class PriorTables:
    """A :class:`Prior` as float64 numpy tables laid out for prediction (convert once, reuse:
    the conversion of ``[P, K, K + 1]`` tables costs more than predicting a column).

    Attributes
    ----------
    offsets : np.ndarray [P, 2] int64
    class_log_prior : np.ndarray [K] float64
    value_log_prob : np.ndarray [P, K + 1, K] float64
        ``feature_log_prob`` with the value axis before the class axis.
    alpha : float
    """

    offsets: np.ndarray
    class_log_prior: np.ndarray
    value_log_prob: np.ndarray
    alpha: float


def prior_tables(prior: "Prior | PriorTables") -> PriorTables:
    """Convert a :class:`Prior` (torch tensors) to :class:`PriorTables`; tables pass through."""
    if isinstance(prior, PriorTables):
        return prior

    def arr(x):
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    feature_log_prob = arr(prior.feature_log_prob).astype(np.float64)
    return PriorTables(
        offsets=arr(prior.offsets).astype(np.int64).reshape(-1, 2),
        class_log_prior=arr(prior.class_log_prior).astype(np.float64),
        value_log_prob=np.ascontiguousarray(feature_log_prob.transpose(0, 2, 1)),
        alpha=float(prior.alpha),
    )


def categorical_log_posterior(table: np.ndarray, prior: "Prior | PriorTables") -> np.ndarray:
    """Normalised log posterior ``log P(code | neighbour values)`` of the categorical NB.

    Parameters
    ----------
    table : np.ndarray [N, P] int
        Neighbour values in ``[0, K]`` (K = outside / unknown), as :func:`neighbour_table`.
    prior : Prior

    Returns
    -------
    log_posterior : np.ndarray [N, K] float64
        ``class_log_prior + sum_p feature_log_prob[p, :, table[:, p]]``, normalised
        (as ``CategoricalNB.predict_log_proba``).
    """
    jll = _categorical_jll(np.asarray(table, dtype=np.int64), prior_tables(prior))
    top = jll.max(axis=1, keepdims=True)
    return jll - (top + np.log(np.exp(jll - top).sum(axis=1, keepdims=True)))


def _categorical_jll(table: np.ndarray, tables: PriorTables) -> np.ndarray:
    p = tables.value_log_prob.shape[0]
    # feature_log_prob[p, :, v] for each row: gather as [N, P, K], then sum over P
    per_feature = tables.value_log_prob[np.arange(p)[None, :], table]
    return tables.class_log_prior[None, :] + per_feature.sum(axis=1)


def learned_inpaint(
    codemap: np.ndarray,
    mask: np.ndarray,
    prior: "Prior | PriorTables",
    *,
    temperature: float = 1.0,
    rng: Optional[np.random.Generator] = None,
    order: str = "causal",
    redraw: bool = False,
) -> np.ndarray:
    """Regenerate masked codes with the learned categorical naive Bayes prior.

    Each masked cell's neighbours at ``prior.offsets`` give feature values (the code if known
    or already regenerated, K if outside the codemap or still masked); the code is drawn from
    ``softmax((class_log_prior + sum_p feature_log_prob[p, :, v_p]) / temperature)``.

    Parameters
    ----------
    codemap, mask
        As :func:`spatial_inpaint`.
    prior : Prior or PriorTables
        The fitted tables (``ModelFile.prior()``, :func:`fit_categorical_prior`, or
        :func:`prior_tables` of them, which saves converting them at every call).
    temperature : float >= 0
        0: the most probable code; 1: the fitted posterior; higher: flatter.
    rng, order, redraw
        As :func:`spatial_inpaint`.

    Returns
    -------
    codemap : np.ndarray [n_rows, n_columns] int64
    """
    codemap, mask = _check_maps(codemap, mask)
    temperature = _check_temperature(temperature)
    tables = prior_tables(prior)
    offsets = tables.offsets
    k = tables.class_log_prior.shape[0]

    def predict(values: np.ndarray, u: np.ndarray) -> np.ndarray:
        jll = _categorical_jll(np.where(values < 0, k, values), tables)
        return sample_log_weights(jll, u, temperature=temperature)

    return _regenerate(codemap, mask, offsets, predict, order=order, redraw=redraw, rng=rng)


def resmooth_prior(prior: "Prior | PriorTables", *, alpha: float) -> Prior:
    """The same prior with its neighbour counts re-smoothed with another ``alpha``.

    The model file keeps smoothed log probabilities, not counts; the counts are recovered
    exactly from them: for class k, ``(count + alpha) / D_k`` with ``D_k = N_k + alpha * (K + 1)``,
    and the smallest probability over all features is ``alpha / D_k`` because some neighbour
    value is never observed with k (value K alone is rare). The class prior is unchanged.

    Raises
    ------
    ParameterError
        ``alpha`` is not > 0, or the prior was fitted without smoothing.
    """
    alpha = positive_number("alpha", float(alpha), unit="Laplace smoothing of the neighbour counts")
    old = float(prior.alpha)  # both types carry it
    if not old > 0.0:
        raise ParameterError(f"the prior was fitted with alpha={old}; its counts cannot be recovered")
    tables = prior_tables(prior)
    offsets, class_log_prior = tables.offsets, tables.class_log_prior
    feature_log_prob = tables.value_log_prob.transpose(0, 2, 1)
    k1 = feature_log_prob.shape[2]
    prob = np.exp(feature_log_prob)
    denominator = old / prob.min(axis=(0, 2))  # D_k, [K]
    counts = np.maximum(np.rint(prob * denominator[None, :, None] - old), 0.0)
    n_k = counts.sum(axis=2, keepdims=True)
    new = np.log(counts + alpha) - np.log(n_k + alpha * k1)
    return Prior(
        offsets=torch.from_numpy(offsets),
        class_log_prior=torch.from_numpy(class_log_prior).float(),
        feature_log_prob=torch.from_numpy(new).float(),
        alpha=alpha,
    )
