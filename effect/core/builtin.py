"""The built-in codemap effects in torch, written once: noise, cross, dropout and naive Bayes redraws.

The column step (:mod:`.step`) runs them fused; the engine's effect plugins call the same functions
when a chain holds a third-party effect. Scriptable; random draws are keyed, never a generator's.
"""

import math
from typing import List, Tuple

import torch

from spectro_fx.models.naive_bayes import VAR_SMOOTHING
from spectro_fx.models.neural_prior import draw_codes

# What a keyed draw is for (its ``purpose``), so that two draws of one cell never share a key:
# 0 noise's hit, 1 noise's code, 2 inpainting, 3 cross's hit (literals below: TorchScript reads
# no global ints).

def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def uniforms(keys: torch.Tensor, seed: int) -> torch.Tensor:
    """One float64 uniform in [0, 1) per int64 key: a splitmix64 hash of ``seed`` and the key.

    Keys name what a draw is for (column, stream, row, purpose), so the draws do not depend on
    how the stream was cut into blocks, and no generator object is kept (TorchScript has none).
    """
    golden = -7046029254386353131  # splitmix64's constants as signed 64-bit integers
    z = keys + torch.tensor(seed + 1, dtype=torch.long) * golden
    z = (z ^ _shr(z, 30)) * -4658895280553007687
    z = (z ^ _shr(z, 27)) * -7723592293110705685
    z = z ^ _shr(z, 31)
    return _shr(z, 11).double() * (1.0 / 9007199254740992.0)  # 53 bits -> [0, 1)


def cell_keys(
    streams: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, *, n_streams: int, n_rows: int, purpose: int
) -> torch.Tensor:
    """The key of each cell (stream, row, absolute column) for one ``purpose``."""
    return ((columns * n_streams + streams) * n_rows + rows) * 4 + purpose


def cell_draws(shape: List[int], first_column: int, seed: int, purpose: int) -> torch.Tensor:
    """One uniform per cell of a ``[streams, rows, columns]`` block whose first column is the
    stream's column ``first_column``."""
    s, r, n = shape[0], shape[1], shape[2]
    streams = torch.arange(s)[:, None, None].expand(s, r, n)
    rows = torch.arange(r)[None, :, None].expand(s, r, n)
    columns = first_column + torch.arange(n)[None, None, :].expand(s, r, n)
    return uniforms(cell_keys(streams, rows, columns, n_streams=s, n_rows=r, purpose=purpose), seed)


def pick(log_weights: torch.Tensor, draws: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """One index per row of ``log_weights`` [N, K] from ``softmax(log_weights / temperature)``
    by inverse CDF with the uniforms ``draws`` [N] (temperature 0: the first maximum); as
    ``naive_bayes.sample_log_weights``. (An index-giving reduction costs several times a plain
    one here: the first maximum is looked for only where a temperature is 0.)"""
    sampling = temperature > 0.0
    if not bool(sampling.any()):
        return torch.argmax(log_weights, dim=1)
    t = temperature.clamp_min(1e-12)[:, None]
    top = log_weights.amax(dim=1, keepdim=True)
    weights = (log_weights - top).div_(t).exp_()  # (in place: a file's block has thousands of rows)
    finite = torch.isfinite(log_weights)
    if not bool(finite.all()):  # a non-finite log weight has no weight
        weights = torch.where(finite, weights, torch.zeros_like(weights))
    cumulative = torch.cumsum(weights, dim=1)
    target = draws[:, None] * cumulative[:, -1:]
    sampled = (cumulative <= target).sum(dim=1).clamp_max(log_weights.shape[1] - 1)
    if bool(sampling.all()):
        return sampled
    return torch.where(sampling, sampled, torch.argmax(log_weights, dim=1))


def noise_codes(
    codes: torch.Tensor, region: torch.Tensor, amount: torch.Tensor, *, first_column: int, seed: int, codebook_size: int
) -> torch.Tensor:
    """Each code of ``codes`` [streams, rows, n] inside ``region`` [rows, n] replaced by a random
    one with probability ``amount`` [n] (per column)."""
    shape = [codes.shape[0], codes.shape[1], codes.shape[2]]
    hit = (cell_draws(shape, first_column, seed, 0) < amount[None, None, :]) & region[None]
    random_codes = (cell_draws(shape, first_column, seed, 1) * codebook_size).long()
    return torch.where(hit, random_codes, codes)


def cross_codes(
    codes: torch.Tensor, aux_codes: torch.Tensor, region: torch.Tensor, amount: torch.Tensor, *, first_column: int, seed: int
) -> torch.Tensor:
    """Each code inside ``region`` replaced by the second source's at the same cell
    (``aux_codes``, shaped as ``codes``) with probability ``amount`` [n]."""
    shape = [codes.shape[0], codes.shape[1], codes.shape[2]]
    hit = (cell_draws(shape, first_column, seed, 3) < amount[None, None, :]) & region[None]
    return torch.where(hit, aux_codes, codes)


def dropout_latent(latent: torch.Tensor, region: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Latent channels from ``keep`` [n] on (per column) zeroed inside ``region`` [rows, n]
    of ``latent`` [streams, D, rows, n]."""
    channel = torch.arange(latent.shape[1], dtype=torch.float64)
    drop = (channel[:, None] >= keep.to(torch.float64)[None, :])[:, None, :] & region[None]
    return latent.masked_fill(drop[None], 0.0)


def cross_latent(latent: torch.Tensor, aux_latent: torch.Tensor, region: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """``(1 - amount) * latent + amount * aux_latent`` inside ``region``, ``amount`` [n] per column."""
    a = amount.to(latent.dtype)[None, None, None, :]
    return torch.where(region[None, None], latent + a * (aux_latent - latent), latent)


def spatial_offsets(radius: int, axis: int) -> torch.Tensor:
    """``(d_column, d_row)`` of ``naive_bayes.neighbour_offsets`` that a stream can read (no
    later column), sorted by column then row; ``axis`` 0 time, 1 freq, 2 both."""
    span = torch.arange(-radius, radius + 1)
    dc = span.repeat_interleave(2 * radius + 1)
    dr = span.repeat(2 * radius + 1)
    keep = ((dc != 0) | (dr != 0)) & (dc <= 0)
    if axis == 0:
        keep = keep & (dr == 0)
    elif axis == 1:
        keep = keep & (dc == 0)
    return torch.stack([dc[keep], dr[keep]], dim=1)


def neighbour_values(full: torch.Tensor, cells: torch.Tensor, offsets: torch.Tensor, n_history: int) -> torch.Tensor:
    """Codes ``[N, M]`` at ``offsets`` [M, 2] around ``cells`` [N, 3] (stream, row, column of the
    block) in ``full`` [streams, rows, n_history + n] (-1 outside the map)."""
    n_rows, width = full.shape[1], full.shape[2]
    rows = cells[:, 1:2] + offsets[None, :, 1]
    cols = n_history + cells[:, 2:3] + offsets[None, :, 0]
    inside = (rows >= 0) & (rows < n_rows) & (cols >= 0) & (cols < width)
    values = full[cells[:, 0:1], rows.clamp(0, n_rows - 1), cols.clamp(0, width - 1)]
    return torch.where(inside, values, torch.full_like(values, -1))


def learned_log_weights(values: torch.Tensor, class_log_prior: torch.Tensor, value_log_prob: torch.Tensor) -> torch.Tensor:
    """Categorical NB joint log likelihood ``[N, K]`` of neighbour values ``[N, P]`` (-1:
    unknown), from ``value_log_prob`` [P, K + 1, K] (row ``K``: the unknown value)."""
    k = class_log_prior.shape[0]
    table = torch.where(values < 0, torch.full_like(values, k), values)
    # one neighbour at a time into a float64 sum (the order torch's sum over them takes): a
    # whole block's [N, P, K] in float64 would be hundreds of megabytes
    total = torch.index_select(value_log_prob[0], 0, table[:, 0]).double()
    for p in range(1, table.shape[1]):
        total.add_(torch.index_select(value_log_prob[p], 0, table[:, p]))
    return total.add_(class_log_prior[None, :])


def spatial_pick(
    values: torch.Tensor, offsets: torch.Tensor, draws: torch.Tensor, temperature: torch.Tensor,
    fallback_log_prior: torch.Tensor, var_smoothing: float = VAR_SMOOTHING,
) -> torch.Tensor:
    """The paper's Gaussian NB per cell (``naive_bayes.gaussian_nb_predict``), all cells at
    once: each class (a code among the cell's known neighbours) is summed over the neighbours
    holding it, in neighbour order; classes are then taken in ascending code order (the first
    maximum wins, as scikit-learn's). Cells without a known neighbour draw from
    ``fallback_log_prior`` [K]."""
    n, m = values.shape[0], values.shape[1]
    known = values >= 0
    x = offsets[:, 0].double()[None, :]
    y = offsets[:, 1].double()[None, :]
    kn = known.double()
    total = kn.sum(dim=1)
    has = total > 0
    safe_total = torch.where(has, total, torch.ones_like(total))
    all_mean_x = (kn * x).sum(1) / safe_total
    all_mean_y = (kn * y).sum(1) / safe_total
    all_var_x = (kn * (x - all_mean_x[:, None]) ** 2).sum(1) / safe_total
    all_var_y = (kn * (y - all_mean_y[:, None]) ** 2).sum(1) / safe_total
    epsilon = var_smoothing * torch.maximum(all_var_x, all_var_y)
    # same[i, a, b]: neighbours a and b of cell i hold the same known code
    same = ((values[:, :, None] == values[:, None, :]) & known[:, :, None] & known[:, None, :]).double()
    count = same.sum(2)  # [N, M]: size of neighbour a's class (0 where a is unknown)
    safe_count = torch.where(count > 0, count, torch.ones_like(count))
    mean_x = (same * x[:, None, :]).sum(2) / safe_count
    mean_y = (same * y[:, None, :]).sum(2) / safe_count
    var_x = (same * (x[:, None, :] - mean_x[:, :, None]) ** 2).sum(2) / safe_count + epsilon[:, None]
    var_y = (same * (y[:, None, :] - mean_y[:, :, None]) ** 2).sum(2) / safe_count + epsilon[:, None]
    two_pi = 2.0 * math.pi
    jll = torch.log(safe_count / safe_total[:, None])
    jll = jll - 0.5 * (torch.log(two_pi * var_x) + torch.log(two_pi * var_y))
    jll = jll - 0.5 * ((mean_x ** 2) / var_x + (mean_y ** 2) / var_y)
    # one slot per class: the first neighbour holding the code; classes in ascending code order
    slots = torch.arange(m)
    earlier = slots[:, None] > slots[None, :]  # (torch.tril of a bool matrix is slow on CPU)
    first = known & ~((same > 0) & earlier[None]).any(dim=2)
    n_classes = first.sum(1)
    jll = torch.where(n_classes[:, None] == 1, torch.zeros_like(jll), jll)
    k = fallback_log_prior.shape[0]
    key = torch.where(first, values, torch.full_like(values, k))
    key, slot = torch.sort(key, dim=1, stable=True)
    jll = jll.gather(1, slot)
    jll = torch.where(key < k, jll, torch.full_like(jll, -math.inf))
    picked = key.gather(1, pick(jll, draws, temperature)[:, None])[:, 0]
    if bool(has.all()):
        return picked
    # cells without a known neighbour (rare: a whole neighbourhood inside the region)
    lonely = torch.nonzero(~has).flatten()
    table = fallback_log_prior[None, :].repeat(lonely.shape[0], 1)  # not an expanded view: max on stride 0 is slow
    picked[lonely] = pick(table, draws[lonely], temperature[lonely])
    return picked


def inpaint_redraw(
    inputs: torch.Tensor, codes: torch.Tensor, region: torch.Tensor, input_history: torch.Tensor,
    offsets: torch.Tensor, temperature: torch.Tensor, *, learned: bool, first_column: int, seed: int,
    class_log_prior: torch.Tensor, value_log_prob: torch.Tensor, fallback_log_prior: torch.Tensor, changed: bool,
) -> torch.Tensor:
    """``inpaint`` with ``context=input``: every cell of ``codes`` [streams, rows, n] inside
    ``region`` [rows, n] redrawn from the codes around it (earlier columns from ``input_history``
    [streams, rows, h] and ``inputs``, its own column from ``codes``; never the cell itself), all cells at once, with the neighbours at
    ``offsets`` [M, 2] (``d_column <= 0``): the learned categorical NB (``learned``) or the
    paper's spatial Gaussian NB, at ``temperature`` [n] per column. ``changed``: an effect before
    this one may have changed ``codes`` (else they are ``inputs``, and are read once)."""
    streams = codes.shape[0]
    cells = torch.nonzero(region[None].expand(streams, -1, -1))  # [N, 3]: stream, row, column
    if cells.shape[0] == 0:
        return codes
    # earlier columns as the encoder gave them; the cell's own column as the chain has it so far
    # (an effect before inpainting may have changed it), as a column-by-column stream sees them
    h = input_history.shape[2]
    values = neighbour_values(torch.cat([input_history, inputs], dim=2), cells, offsets, h)
    if changed:
        same_column = neighbour_values(torch.cat([input_history, codes], dim=2), cells, offsets, h)
        values = torch.where((offsets[:, 0] == 0)[None, :], same_column, values)
    keys = cell_keys(cells[:, 0], cells[:, 1], first_column + cells[:, 2], n_streams=streams,
                     n_rows=codes.shape[1], purpose=2)
    draws = uniforms(keys, seed)
    t = temperature[cells[:, 2]]
    if learned:
        picked = pick(learned_log_weights(values, class_log_prior, value_log_prob), draws, t)
    else:
        picked = spatial_pick(values, offsets, draws, t, fallback_log_prior)
    out = codes.clone()
    out[cells[:, 0], cells[:, 1], cells[:, 2]] = picked
    return out


def neural_batch(
    inputs: torch.Tensor, codes: torch.Tensor, region: torch.Tensor, input_history: torch.Tensor, context_columns: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the neural prior reads for ``inpaint`` with ``context=input``, every column of a block
    as one batch of ``n * streams`` rows: the ``context_columns`` earlier columns of the input
    (``input_history`` then ``inputs``; -1, unknown, before the stream) ``[n * streams, rows,
    C]``, each column's codes as the chain has them ``[n * streams, rows]`` (``codes`` [streams,
    rows, n]) and where ``region`` [rows, n] leaves them unknown ``[n * streams, rows]``."""
    streams, rows, n = codes.shape[0], codes.shape[1], codes.shape[2]
    c = context_columns
    earlier = input_history[:, :, input_history.shape[2] - min(c, input_history.shape[2]) :]
    if earlier.shape[2] < c:
        earlier = torch.cat([torch.full([streams, rows, c - earlier.shape[2]], -1, dtype=codes.dtype), earlier], dim=2)
    full = torch.cat([earlier, inputs], dim=2)
    context = full.unfold(2, c, 1)[:, :, :n].permute(2, 0, 1, 3).reshape(n * streams, rows, c)
    columns = codes.permute(2, 0, 1).reshape(n * streams, rows)
    unknown = region.t()[:, None, :].expand(n, streams, rows).reshape(n * streams, rows)
    return context, columns, unknown


def inpaint_draws(shape: List[int], first_column: int, seed: int) -> torch.Tensor:
    """The uniforms inpainting draws its cells' codes with, one per cell of a ``[streams, rows,
    columns]`` block (as :func:`cell_draws`)."""
    return cell_draws(shape, first_column, seed, 2)


def sample_finite(logits: torch.Tensor, draws: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """One index per row of finite ``logits`` [N, K] from ``softmax(logits / temperature)`` by
    inverse CDF with ``draws`` [N] (temperature 0: the first maximum), per-row temperatures
    [N]: ``models.neural_prior.draw_codes`` (float32 where that decides, float64 where not)."""
    return draw_codes(logits, draws, temperature)


def neural_pick(
    logits: torch.Tensor, cells: torch.Tensor, columns: torch.Tensor, temperature: torch.Tensor, *, streams: int,
    first_column: int, seed: int,
) -> torch.Tensor:
    """The unknown ``cells`` [N, 2] (batch row, row) of :func:`neural_batch`'s ``columns`` drawn
    from the prior's ``logits`` [N, K] at ``temperature`` [n] (keyed draws, as the other
    effects') -> codes ``[streams, rows, n]``."""
    n, rows = columns.shape[0] // streams, columns.shape[1]
    draws = inpaint_draws([streams, rows, n], first_column, seed).permute(2, 0, 1).reshape(n * streams, rows)
    picked = sample_finite(logits, draws[cells[:, 0], cells[:, 1]],
                           temperature[torch.div(cells[:, 0], streams, rounding_mode="floor")])
    out = columns.clone()
    out[cells[:, 0], cells[:, 1]] = picked
    return out.reshape(n, streams, rows).permute(1, 2, 0).contiguous()
