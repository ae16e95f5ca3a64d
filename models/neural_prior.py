"""A small causal network that predicts a region's codes from the known codes around it.

One call per codemap column: earlier columns and the current column's rows outside the region in, logits for every row out; TorchScript-scriptable, no state.
"""


import json
from typing import Any, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from .errors import ParameterError, positive_int

NEURAL_PRIOR_DEFAULTS: dict[str, Any] = {
    "context_columns": 4,
    "embed_dim": 16,
    "hidden": 64,
    "dilations": [1, 2, 4],
}
"""Constructor arguments of the shipped size (127,636 weights for the default model's 33 rows
of 1,024 codes; 0.54 ms a column for a 3-row band on one AVX2 core of a busy shared VM, see
``tests/bench/bench_gap_filling.py``); ``n_rows`` and ``codebook_size`` come from the model."""


class NeuralPrior(nn.Module):
    """Predicts the codes of one codemap column's unknown rows from the known codes around them.

    Causal in time, so it streams column by column: a column's prediction reads the
    ``context_columns`` earlier columns (whatever the caller keeps there: the input's codes,
    or the chain's output with regenerated codes) and the known rows of the column itself.
    All unknown rows of a column are predicted at once (no order inside a column). Pure torch,
    deterministic given its inputs, and without Python-side state: a fused column step can call
    it. Sampling is separate (:func:`sample_codes`).

    Network: a shared code embedding (``codebook_size + 1`` entries; the last is "unknown"),
    the context's and the column's embeddings stacked per row as features, a linear map with
    a learned bias per row (its frequency), residual convolutions along the rows (kernel 3,
    dilations ``dilations``, ReLU), and a linear map to ``codebook_size`` logits per row, to
    which a copy path adds a learned weight (per cell and earlier column) on the logit of each
    earlier code of the same row.

    With ``level_input``, the unknown rows also read the band's level: the mean, over the
    column's unknown rows, of the level of the code the column holds there (``column`` as
    given: the input's codes in every caller), each code's level in its row taken from
    :attr:`code_level` (set by :meth:`set_code_levels_`). The band's codes stay unknown; how
    loud it is does not (live, the input is there: the regenerated band follows its level).

    Parameters
    ----------
    n_rows : int > 0
        R, the codemap's rows (frequency bands), fixed by the VQ-VAE.
    codebook_size : int > 0
        K.
    context_columns : int > 0
        C, earlier columns read (1 column = ``time_stride * hop_length`` samples; 4 = 16 ms
        for the default model).
    embed_dim, hidden : int > 0
        Width of the code embedding and of the convolutions.
    dilations : list of int > 0
        One residual convolution per entry (the reach along the rows grows with their sum).
    level_input : bool
        Whether the unknown rows read the band's level (above); the table :attr:`code_level`
        ``[n_rows, codebook_size]`` is then a buffer of the network (zeros until set).
    """

    n_rows: int
    codebook_size: int
    context_columns: int
    dilations: list[int]
    level_input: bool
    config_json: str

    def __init__(
        self,
        *,
        n_rows: int,
        codebook_size: int,
        context_columns: int = NEURAL_PRIOR_DEFAULTS["context_columns"],
        embed_dim: int = NEURAL_PRIOR_DEFAULTS["embed_dim"],
        hidden: int = NEURAL_PRIOR_DEFAULTS["hidden"],
        dilations: "list[int] | tuple[int, ...]" = tuple(NEURAL_PRIOR_DEFAULTS["dilations"]),
        level_input: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("n_rows", n_rows), ("codebook_size", codebook_size), ("context_columns", context_columns),
                            ("embed_dim", embed_dim), ("hidden", hidden)):
            positive_int(name, value)
        self.n_rows = int(n_rows)
        self.codebook_size = int(codebook_size)
        self.context_columns = int(context_columns)
        self.dilations = [positive_int("dilations", int(d)) for d in dilations]
        if not isinstance(level_input, bool):
            raise ParameterError(f"level_input={level_input!r} must be true or false")
        self.level_input = level_input
        config = {"n_rows": self.n_rows, "codebook_size": self.codebook_size, "context_columns": self.context_columns,
                  "embed_dim": int(embed_dim), "hidden": int(hidden), "dilations": self.dilations}
        if level_input:  # only then: a file without it stays readable by versions that know no such key
            config["level_input"] = True
        self.config_json = json.dumps(config, sort_keys=True)
        self.embed = nn.Embedding(self.codebook_size + 1, embed_dim)
        self.row_in = nn.Linear((self.context_columns + 1) * embed_dim + 1 + int(level_input), hidden)
        # each code's level in each row, in units of 10 dB about the table's mean (empty without level_input)
        shape = (self.n_rows, self.codebook_size) if level_input else (0, 0)
        self.register_buffer("code_level", torch.zeros(shape), persistent=level_input)  # older files have none
        self.row_bias = nn.Parameter(torch.zeros(self.n_rows, hidden))
        # a convolution along the rows as one matmul over three shifted copies: at batch 1 on a
        # CPU, torch's dilated Conv1d takes a slow path costing several times this
        self.blocks = nn.ModuleList([nn.Linear(3 * hidden, hidden) for _ in self.dilations])
        self.head = nn.Linear(hidden, self.codebook_size)
        # how much each earlier column's code in the same row adds to its own logit: codes of a
        # held sound repeat, and a copy path learns that far faster than the head alone
        self.copy = nn.Linear(hidden, self.context_columns)

    @classmethod
    def from_config(cls, config: "dict[str, Any] | str") -> "NeuralPrior":
        """A fresh network of the size ``config`` (its :attr:`config_json`, or that parsed)."""
        if isinstance(config, str):
            config = json.loads(config)
        unknown = sorted(set(config) - {"n_rows", "codebook_size", "context_columns", "embed_dim", "hidden", "dilations",
                                        "level_input"})
        if unknown:
            raise ParameterError(f"neural prior config has unknown keys {', '.join(unknown)}")
        return cls(**config)

    @torch.jit.ignore
    def set_code_levels_(self, level_db) -> None:
        """Set :attr:`code_level` from each code's mean level (dB) in each row, ``level_db``
        ``[n_rows, codebook_size]`` (``training.prior.code_levels``), or ``[codebook_size]``
        for every row alike."""
        if not self.level_input:
            raise ParameterError("this neural prior reads no level (level_input is false)")
        table = torch.as_tensor(level_db, dtype=torch.float64)
        given = tuple(table.shape)
        if table.dim() == 1:
            table = table[None].expand(self.n_rows, -1)
        if tuple(table.shape) != (self.n_rows, self.codebook_size) or not bool(torch.isfinite(table).all()):
            raise ParameterError(f"code levels of shape {given} must be finite dB, "
                                 f"[{self.n_rows}, {self.codebook_size}] (rows, codes)")
        with torch.no_grad():
            self.code_level.copy_(((table - table.mean()) / 10.0).float())

    @torch.jit.ignore
    def with_level_input(self, level_db) -> "NeuralPrior":
        """A copy of this network that also reads the band's level, its outputs unchanged until
        trained (the new input's weights are zero), with the codes' levels ``level_db`` (as
        :meth:`set_code_levels_`)."""
        config = json.loads(self.config_json)
        config["level_input"] = True
        net = NeuralPrior.from_config(config)
        state = {key: value.detach().clone() for key, value in self.state_dict().items() if key != "code_level"}
        if not self.level_input:
            weight = state["row_in.weight"]
            state["row_in.weight"] = torch.cat([weight, weight.new_zeros(weight.shape[0], 1)], dim=1)
        net.load_state_dict({**state, "code_level": net.code_level})
        net.set_code_levels_(level_db)
        return net.train(self.training)

    def features(self, context: torch.Tensor, column: torch.Tensor, known: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Hidden state ``[B, R, hidden]`` of every row, before the head, and the context with
        every unknown code as K (arguments as :meth:`forward`)."""
        k = self.codebook_size
        b, r = column.shape[0], column.shape[1]
        # one embedding lookup for the context and the column; unknown (< 0, or not known) is K
        codes = torch.cat([context, torch.where(known, column, -1)[:, :, None]], dim=2)
        codes = torch.where(codes < 0, k, codes)
        x = torch.cat([self.embed(codes).reshape(b, r, -1), known.to(torch.float32)[:, :, None]], dim=2)
        if self.level_input:
            x = torch.cat([x, self.band_level(column, known)[:, :, None]], dim=2)
        h = self.row_in(x) + self.row_bias
        i = 0
        for block in self.blocks:
            d = self.dilations[i]
            i += 1
            g = F.pad(F.relu(h), (0, 0, d, d))
            h = h + block(torch.cat([g[:, : r], g[:, d : d + r], g[:, 2 * d : 2 * d + r]], dim=2))
        return F.relu(h), codes[:, :, : self.context_columns]

    def band_level(self, column: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """``[B, R]``: on each unknown row, the mean :attr:`code_level` of ``column``'s codes
        over the unknown rows of its batch row; 0 on the known rows."""
        rows = torch.arange(self.n_rows, device=column.device)[None, :] * self.codebook_size
        level = torch.take(self.code_level, column.clamp(min=0) + rows)
        unknown = known.logical_not().to(level.dtype)
        band = (level * unknown).sum(dim=1, keepdim=True) / unknown.sum(dim=1, keepdim=True).clamp(min=1.0)
        return band * unknown

    def forward(self, context: torch.Tensor, column: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Logits of the unknown rows' codes.

        Parameters
        ----------
        context : torch.Tensor [B, R, C] int64
            Codes of the ``C = context_columns`` previous columns, oldest first; a negative
            value (e.g. -1 before a stream's start) or K means unknown.
        column : torch.Tensor [B, R] int64
            This column's codes; read only where ``known`` (and, with ``level_input``, for
            the band's level on the unknown rows: the input's codes there).
        known : torch.Tensor [B, R] bool
            False on the rows to predict (the region).

        Returns
        -------
        logits : torch.Tensor [B, R, K] float32
            Unnormalised log probabilities on the unknown rows; 0 on known rows (the head runs
            on the unknown rows only: a 4-row band costs an eighth of a whole column).
        """
        h, context = self.features(context, column, known)
        cells = torch.nonzero(known.logical_not())
        logits = h.new_zeros(h.shape[0], h.shape[1], self.codebook_size)
        if cells.shape[0] > 0:
            b, r = cells[:, 0], cells[:, 1]
            logits[b, r] = self.cell_logits(h[b, r], context[b, r])
        return logits

    def cell_logits(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, K]`` of cells with hidden state ``h`` [N, hidden] and earlier codes in
        their row ``context`` [N, C] (K: unknown, as :meth:`features` gives them): the head,
        plus each earlier code's learned copy weight (an unknown one adds nothing)."""
        k = self.codebook_size
        # an unknown earlier code adds 0 to logit 0 (in place: a large batch's logits are not copied)
        return self.head(h).scatter_add_(1, context.clamp_max(k - 1), self.copy(h) * (context < k).to(h.dtype))


DRAW_BLOCK = 32
"""Codes whose weights a float32 draw sums together before its cumulative sums (:func:`draw_codes`,
the neural prior's ONNX graph): the draw looks for its block first, then within it."""

DRAW_TOLERANCE = 2e-5
"""A float32 draw's margin below which it is drawn again in float64. float32 moves each end of a
code's interval, and the draw itself, by less than about 7e-6 of the total weight: each weight by
``(1.5 |x| + 2) * 2**-23`` relative (the exponent ``x = (logit - max) / temperature`` and the
temperature rounded, exp's own error; ``|x|`` averages at most log K under the weights), the
cumulative sums by up to 94 roundings of ``2**-24``."""


def sample_codes(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float) -> torch.Tensor:
    """One code per cell from ``softmax(logits / temperature)`` by inverse CDF.

    Parameters
    ----------
    logits : torch.Tensor [..., K] float
    uniforms : torch.Tensor [...] float in [0, 1)
        One per cell, from the caller's seeded generator (drawn even at temperature 0, so a
        seeded stream's draws do not depend on the temperature).
    temperature : float >= 0
        0 takes the most probable code (the first maximum); 1 samples the prediction.

    Returns
    -------
    codes : torch.Tensor [...] int64
        :func:`draw_codes_float64`'s (drawn as :func:`draw_codes` draws).
    """
    if temperature <= 0.0:
        return torch.argmax(logits, dim=-1)
    k = logits.shape[-1]
    flat = logits.reshape(-1, k)
    n = flat.shape[0]
    codes = draw_codes(flat, uniforms.reshape(n).double(), torch.full([n], temperature, dtype=torch.float64))
    return codes.reshape(logits.shape[:-1])


def draw_codes(logits: torch.Tensor, draws: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """One index per row of finite ``logits`` [N, K] from ``softmax(logits / temperature)`` by
    inverse CDF with ``draws`` [N] float64, per-row ``temperature`` [N] (0: the first maximum):
    :func:`draw_codes_float64`'s indices, for a quarter of its memory traffic on a large batch
    (a small one, up to 24 rows of 1,024 codes, is drawn by it: fewer ops). Each row is drawn
    in float32 as the prior's ONNX graph draws (the weights summed :data:`DRAW_BLOCK` codes at a
    time, then within the block where the draw falls); a draw within :data:`DRAW_TOLERANCE` of
    the total weight from an end of its code's interval is drawn again in float64 (about 3 % of
    the draws at temperature 1), and temperature 0 reads the argmax alone. Scriptable (the two
    constants are literals here: TorchScript reads no global numbers)."""
    n, k = logits.shape[0], logits.shape[1]
    if n * k <= 24 * 1024:  # a live column's few cells: fewer ops in float64 (TorchScript's cost is per op)
        return draw_codes_float64(logits, draws, temperature)
    sampling = temperature > 0.0
    rows = torch.nonzero(sampling).squeeze(1)
    out = torch.zeros(n, dtype=torch.long)
    if rows.shape[0] < n:  # temperature 0: the first maximum (an index-giving reduction: slow, so only here)
        greedy = torch.nonzero(sampling.logical_not()).squeeze(1)
        out[greedy] = torch.argmax(logits[greedy], dim=1)
        if rows.shape[0] == 0:
            return out
    whole = rows.shape[0] == n  # (no copy of the rows then)
    x = (logits if whole else logits[rows]).float()
    t = temperature if whole else temperature[rows]
    u = draws if whole else draws[rows]
    block = 32 if k % 32 == 0 else k
    blocks = k // block
    exponent = (x - x.amax(dim=1, keepdim=True)).div_(t.float().clamp_min(1e-12)[:, None])
    weights = exponent.exp_().reshape(x.shape[0], blocks, block)  # (in place: one buffer of N x K)
    ends = torch.cumsum(weights.sum(dim=2), dim=1)  # [n, blocks]
    total = ends[:, blocks - 1 :]
    target = u.float()[:, None] * total
    at = (ends <= target).sum(dim=1).clamp_max(blocks - 1)  # the block the draw falls in
    before = torch.where(at[:, None] > 0, ends.gather(1, (at - 1).clamp_min(0)[:, None]), torch.zeros_like(total))
    inner = before + torch.cumsum(weights[torch.arange(x.shape[0]), at], dim=1)  # the block's ends
    sampled = (at * block + (inner <= target).sum(dim=1)).clamp_max(k - 1)
    margin = torch.minimum((before - target).abs(), (inner - target).abs().amin(dim=1, keepdim=True))
    unsure = torch.nonzero(margin[:, 0] <= 2e-5 * total[:, 0]).squeeze(1)
    if unsure.shape[0] > 0:
        again = unsure if whole else rows[unsure]
        sampled[unsure] = draw_codes_float64(logits[again], draws[again], t[unsure])
    if whole:
        return sampled
    out[rows] = sampled
    return out


def draw_codes_float64(logits: torch.Tensor, draws: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """The reference of :func:`draw_codes` (its arguments), in float64 over every code: the
    cumulative sum of ``softmax(logits / temperature)``, the index of the first end above
    ``draws`` times the total (the naive Bayes sampler's arithmetic)."""
    greedy = torch.argmax(logits, dim=1)
    weights = torch.softmax(logits.double() / temperature.clamp_min(1e-12)[:, None], dim=1)
    cumulative = torch.cumsum(weights, dim=1)
    target = draws[:, None] * cumulative[:, -1:]
    sampled = (cumulative <= target).sum(dim=1).clamp_max(logits.shape[1] - 1)
    return torch.where(temperature > 0.0, sampled, greedy)


def neural_inpaint(
    prior: nn.Module,
    codemap,
    mask,
    *,
    temperature: float = 0.0,
    context: str = "output",
    rng=None,
    uniforms=None,
):
    """Regenerate the masked codes of a codemap with a neural prior, column by column.

    The reference the ``inpaint`` effect and the benchmark share (numpy in, numpy out, as
    :func:`spectro_fx.models.naive_bayes.learned_inpaint`).

    Parameters
    ----------
    prior : NeuralPrior (or its scripted module)
    codemap : np.ndarray [n_rows, n_columns] int
    mask : np.ndarray [n_rows, n_columns] bool
        True where codes are regenerated.
    temperature : float >= 0
    context : {"output", "input"}
        ``output``: a column's context holds the earlier columns as regenerated (the paper's
        recursion; columns one after the other). ``input``: every masked cell is redrawn from
        the codes as given around it, never its own (all columns at once).
    rng : np.random.Generator, optional
        Source of one uniform per masked cell, drawn by column, then row.
    uniforms : np.ndarray [n_masked] float, optional
        The uniforms themselves, in that order (instead of ``rng``).

    Returns
    -------
    codemap : np.ndarray [n_rows, n_columns] int64
        A copy with the masked cells regenerated.
    """
    import numpy as np

    if context not in ("output", "input"):
        raise ParameterError(f"context={context!r} must be one of output, input")
    codemap = np.asarray(codemap, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    if codemap.ndim != 2 or mask.shape != codemap.shape:
        raise ParameterError(f"codemap {codemap.shape} and mask {mask.shape} must be the same 2-D shape")
    if temperature < 0:
        raise ParameterError(f"temperature={temperature!r} must be >= 0")
    columns = np.flatnonzero(mask.any(axis=0))
    out = codemap.copy()
    if columns.size == 0:
        return out
    n_cells = int(mask.sum())
    if uniforms is None:
        uniforms = (rng if rng is not None else np.random.default_rng()).random(n_cells)
    uniforms = np.asarray(uniforms, dtype=np.float64)
    if uniforms.shape != (n_cells,):
        raise ParameterError(f"uniforms of shape {uniforms.shape} must hold one per masked cell ({n_cells})")
    c = int(prior.context_columns)
    n_rows = codemap.shape[0]
    # -1 (unknown) before the map's first column
    padded = np.concatenate([np.full((n_rows, c), -1, dtype=np.int64), out], axis=1)
    # uniforms by column, then row: mask.T's nonzero order
    per_column = mask[:, columns].sum(axis=0)
    offsets = np.concatenate([[0], np.cumsum(per_column)])
    with torch.no_grad():
        if context == "input":
            source = torch.from_numpy(padded)
            for start in range(0, columns.size, 256):
                chunk = columns[start : start + 256]
                ctx = torch.stack([source[:, col : col + c] for col in chunk])
                column = torch.from_numpy(codemap[:, chunk].T.copy())
                known = torch.from_numpy(~mask[:, chunk].T)
                cells = torch.from_numpy(mask[:, chunk].T.copy())
                u = torch.zeros(cells.shape, dtype=torch.float64)
                u[cells] = torch.from_numpy(uniforms[offsets[start] : offsets[start + chunk.size]])
                codes = sample_codes(prior(ctx, column, known), u, float(temperature))
                block = out[:, chunk].T.copy()
                block[cells.numpy()] = codes[cells].numpy()
                out[:, chunk] = block.T
            return out
        state = torch.from_numpy(padded)
        for i, col in enumerate(columns):
            rows = torch.from_numpy(mask[:, col].copy())
            u = torch.zeros(n_rows, dtype=torch.float64)
            u[rows] = torch.from_numpy(uniforms[offsets[i] : offsets[i + 1]])
            logits = prior(state[None, :, col : col + c], state[None, :, col + c], ~rows[None])
            codes = sample_codes(logits[0], u, float(temperature))
            state[:, col + c] = torch.where(rows, codes, state[:, col + c])
    return state[:, c:].numpy().copy()
