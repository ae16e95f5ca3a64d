"""The whole effect path as one TorchScript module: audio blocks in, audio blocks out, state in buffers.

What `spectro-fx export` writes for other hosts (nn~ in Max/Pd); a file that `torch.jit.load` alone runs.
"""

import math
from typing import Dict, List

import torch
from torch import nn

from spectro_fx.models.errors import ParameterError
from spectro_fx.models.export import ModelFile
from spectro_fx.models.naive_bayes import VAR_SMOOTHING, resmooth_prior

from ..core.effects import Parameter
from ..core.params import REGION_PARAMETERS
from ..core.stream import Ramps, StreamCore
from ..plugins.inpaint import Inpaint

CHAIN_EFFECTS = ("none", "noise", "inpaint", "dropout", "cross")
"""Effects the scripted module carries; ``inpaint`` with ``context=input`` only; with ``cross``
the last input channel is the second source."""


def _parameter_table() -> list[tuple[str, str, Parameter]]:
    """``(attribute name, engine name, declaration)`` of every parameter of the module."""
    from ..plugins.codemap_effects import Cross, Dropout, Noise

    table = [(p.name, p.name, p) for p in REGION_PARAMETERS]
    for effect in (Noise, Inpaint, Dropout, Cross):
        for p in effect.parameters:
            if effect is Inpaint and p.name in ("alpha", "context"):
                continue  # fixed at export: alpha re-smooths the prior tables, context=input only
            table.append((f"{effect.name}_{p.name}", f"{effect.name}.{p.name}", p))
    return table


PARAMETER_TABLE = _parameter_table()
ATTRIBUTES = [name for name, _, _ in PARAMETER_TABLE]
"""Attribute names of the module's parameters (``low_hz``, ..., ``inpaint_temperature``)."""


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _uniforms(keys: torch.Tensor, seed: int) -> torch.Tensor:
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


def _pick(log_weights: torch.Tensor, uniforms: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """One index per row of ``log_weights`` [N, K] from ``softmax(log_weights / temperature)``
    by inverse CDF (temperature 0: the first maximum); as ``naive_bayes.sample_log_weights``."""
    greedy = torch.argmax(log_weights, dim=1)
    t = temperature.clamp_min(1e-12)[:, None]
    top = log_weights.max(dim=1, keepdim=True).values
    finite = torch.isfinite(log_weights)
    weights = torch.where(finite, torch.exp((log_weights - top) / t), torch.zeros_like(log_weights))
    cumulative = torch.cumsum(weights, dim=1)
    target = uniforms[:, None] * cumulative[:, -1:]
    sampled = (cumulative <= target).sum(dim=1).clamp_max(log_weights.shape[1] - 1)
    return torch.where(temperature > 0.0, sampled, greedy)


class ScriptedEffect(nn.Module):
    """spectro-fx as one streaming TorchScript module: ``forward(x [batch, channels, frames])``.

    Analysis STFT with its input ring, the model file's streaming encoder, the codemap effects
    of ``chain`` (code effects in order, then latent ones, as the engine runs them), the
    streaming decoder on the region's cells, the region mask with the input's phase, and
    overlap-add synthesis; the dry path is an integer delay. The output is the input delayed by
    ``latency_samples`` plus its change inside the region, as :class:`~spectro_fx.effect.core.engine.Engine`
    computes at the model's rate. Blocks of any length; the state lives in buffers (one stream
    per batch x channel; a new batch or channel count restarts the stream); ``reset()`` clears it.

    Parameters are attributes with typed getters and setters (``get_low_hz()``,
    ``set_low_hz(v)``; choices as integer indices, e.g. ``set_inpaint_method(1)`` for learned),
    clamped into range and smoothed as in the engine. Random draws (noise, sampled inpainting)
    come from a counter-based generator seeded by ``seed``: a run is repeatable, but not the
    same draws as the Python engine's numpy generator.

    With ``cross`` in the chain the module takes one more input channel than it returns: the
    last one is the second source (the engine's ``aux``), shared by every channel of its batch
    row and encoded in lockstep with them (:class:`~spectro_fx.effect.core.stream.StreamCore`).

    Parameters
    ----------
    model : ModelFile
        A loaded model file; its module is copied in.
    chain : list of str
        Effects from :data:`CHAIN_EFFECTS`, in order.
    values : dict
        Parameter values by engine name (``low_hz``, ``inpaint.method`` ...), checked as the
        engine checks them.
    channels : int > 0
        Audio channels processed (``forward_params``), each on its own; with ``cross`` the host
        sends one more, the second source.
    seed : int >= 0
    """

    chain_codes: List[int]
    chain_latents: List[int]
    param_names: List[str]

    def __init__(self, model: ModelFile, *, chain: List[str], values: Dict[str, object], channels: int = 1, seed: int = 0):
        super().__init__()
        for name in chain:
            if name not in CHAIN_EFFECTS:
                raise ParameterError(
                    f"effect {name!r} cannot be exported; the exported module carries {', '.join(CHAIN_EFFECTS)}"
                )
        if not isinstance(channels, int) or channels <= 0:
            raise ParameterError(f"channels={channels!r} must be a positive integer")
        if not isinstance(seed, int) or seed < 0:
            raise ParameterError(f"seed={seed!r} must be an integer >= 0")
        self.aux_channels = 1 if "cross" in chain else 0
        # the signal path, as the engine's; one second source per batch row
        self.core = StreamCore(model, streams=channels, aux_streams=self.aux_channels)
        core = self.core
        module = core.model
        self.sr = core.sr
        self.n_fft = core.n_fft
        self.hop = core.hop
        self.time_stride = core.time_stride
        self.n_rows = core.n_rows
        self.codebook_size = int(module.codebook_size)
        self.latency_samples = core.latency_samples
        self.channels = channels
        self.seed = seed
        self.var_smoothing = float(VAR_SMOOTHING)
        # the code effects, then the latent ones, each in chain order (as the engine's stages())
        self.chain_codes = [CHAIN_EFFECTS.index(name) for name in chain if name in ("noise", "inpaint", "cross")]
        self.chain_latents = [CHAIN_EFFECTS.index(name) for name in chain if name in ("dropout", "cross")]
        self.register_buffer("forward_params", torch.tensor([channels + self.aux_channels, 1, channels, 1]))

        # parameters: declared ranges, engine names, smoothing state
        by_name = {engine_name: (attr, p) for attr, engine_name, p in PARAMETER_TABLE}
        current: Dict[str, float] = {}
        for attr, engine_name, p in PARAMETER_TABLE:
            current[engine_name] = float(p.choices.index(p.default)) if p.kind == "choice" else float(p.default)
        inpaint_alpha = 0.0
        for key, value in values.items():
            if key == "inpaint.context":
                if value != "input":
                    raise ParameterError(
                        f"inpaint.context={value!r} cannot be exported; the exported module redraws from the input "
                        "(context=input)"
                    )
                continue
            if key == "inpaint.alpha":
                inpaint_alpha = float(Inpaint.parameter("alpha").coerce(value, owner="inpaint")[0])
                continue
            if key not in by_name:
                raise ParameterError(f"parameter {key!r} cannot be exported; the module has {', '.join(sorted(by_name))}")
            _, p = by_name[key]
            coerced = p.coerce(value, owner=key.rsplit(".", 1)[0] if "." in key else "")[0]
            current[key] = float(p.choices.index(coerced)) if p.kind == "choice" else float(coerced)
        self.param_names = [attr for attr, _, _ in PARAMETER_TABLE]
        self.n_region = len(REGION_PARAMETERS)
        # the region's in the core (indices 0-4), the effects' here (5 on)
        for index, (_, name, _) in enumerate(PARAMETER_TABLE[: len(REGION_PARAMETERS)]):
            core.region.set_value(index, current[name], True)
        self.effects = Ramps(
            [p for _, _, p in PARAMETER_TABLE[len(REGION_PARAMETERS) :]], hop_s=core.hop_s,
            values=[current[name] for _, name, _ in PARAMETER_TABLE[len(REGION_PARAMETERS) :]],
        )

        # inpainting: the prior tables (re-smoothed at export), the fallback, the silence codes
        prior = model.prior()
        self.has_prior = prior is not None
        if prior is not None and inpaint_alpha > 0.0 and inpaint_alpha != prior.alpha:
            prior = resmooth_prior(prior, alpha=inpaint_alpha)
        if prior is not None:
            self.register_buffer("prior_offsets", prior.offsets.to(torch.long).reshape(-1, 2).clone())
            self.register_buffer("prior_class_log_prior", prior.class_log_prior.double().clone())
            # [P, K + 1, K]: log P(neighbour p has value v | code k), gathered by v; float32 as in the
            # model file (K=1024 tables are 25 MB so): the gathered rows are summed in float64
            self.register_buffer("prior_value_log_prob", prior.feature_log_prob.float().permute(0, 2, 1).contiguous())
            fallback = prior.class_log_prior.double()
            if bool((self.prior_offsets[:, 0] > 0).any()):
                raise ParameterError("the model's learned prior reads later columns; a stream cannot export it")
        else:
            self.register_buffer("prior_offsets", torch.zeros(0, 2, dtype=torch.long))
            self.register_buffer("prior_class_log_prior", torch.zeros(self.codebook_size, dtype=torch.float64))
            self.register_buffer("prior_value_log_prob", torch.zeros(0, self.codebook_size + 1, self.codebook_size))
            fallback = module.code_log_prior.double()
        self.register_buffer("fallback_log_prior", fallback.clone())
        if bool(module.has_prior):
            # the core's copy of the model file keeps its prior for the engine's Python effects;
            # here the tables above serve, so the exported file carries them once
            module.prior_feature_log_prob = torch.zeros(0, self.codebook_size, self.codebook_size + 1)
        self.history_columns = 8 + (int(-self.prior_offsets[:, 0].min()) if self.prior_offsets.shape[0] else 0)

        # stream state (sized at the first block)
        self.streams = 0
        self.batch = 0
        self.register_buffer("dry", torch.zeros(0, 0))
        self.register_buffer("delta", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("input_history", torch.zeros(0, self.n_rows, 0, dtype=torch.long))
        self.delta_start = 0
        self.samples_in = 0
        if self.n_rows > 0 and channels > 0:
            self._start(1, channels)

    # ------------------------------------------------------------------ stream state
    def _start(self, batch: int, channels: int) -> None:
        streams = batch * channels
        self.streams = streams
        self.batch = batch
        self.core.start(streams, batch * self.aux_channels)
        self.effects.snap()
        self.dry = torch.zeros(streams, self.latency_samples)
        self.delta = torch.zeros(streams, 0, dtype=torch.float64)
        self.input_history = self.core.silence_column.expand(streams, self.n_rows, self.history_columns).clone()
        self.delta_start = 0
        self.samples_in = 0

    @torch.jit.export
    def reset(self) -> None:
        """Clear all stream state; parameters keep their values (smoothed ones land on them)."""
        self._start(self.batch, self.streams // max(self.batch, 1))

    # ------------------------------------------------------------------ parameters
    def _index(self, name: str) -> int:
        for i, known in enumerate(self.param_names):
            if known == name:
                return i
        raise ValueError("unknown parameter " + name)

    def _set(self, index: int, value: float) -> int:
        """Parameter ``index`` of :data:`PARAMETER_TABLE` ramps to ``value`` (clamped)."""
        if index < self.n_region:
            return self.core.set_region(index, value)
        return self.effects.set_value(index - self.n_region, value, self.core.analysis.frames_done == 0)

    def _target(self, index: int) -> float:
        if index < self.n_region:
            return self.core.region.target[index]
        return self.effects.target[index - self.n_region]

    def _value(self, index: int) -> float:
        """The current (smoothed) value of effect parameter ``index``."""
        return self.effects.value[index - self.n_region]

    @torch.jit.export
    def get_methods(self) -> List[str]:
        return ["forward"]

    @torch.jit.export
    def get_attributes(self) -> List[str]:
        return self.param_names

    @torch.jit.export
    def set_parameter(self, name: str, value: float) -> int:
        """Set a parameter by attribute name (clamped into range); 0 on success."""
        return self._set(self._index(name), value)

    @torch.jit.export
    def get_parameter(self, name: str) -> float:
        return self._target(self._index(name))

    # one typed getter and setter per parameter, as nn~ calls them
    @torch.jit.export
    def get_low_hz(self) -> float:
        return self._target(0)

    @torch.jit.export
    def set_low_hz(self, value: float) -> int:
        return self._set(0, value)

    @torch.jit.export
    def get_high_hz(self) -> float:
        return self._target(1)

    @torch.jit.export
    def set_high_hz(self, value: float) -> int:
        return self._set(1, value)

    @torch.jit.export
    def get_period_s(self) -> float:
        return self._target(2)

    @torch.jit.export
    def set_period_s(self, value: float) -> int:
        return self._set(2, value)

    @torch.jit.export
    def get_duty(self) -> float:
        return self._target(3)

    @torch.jit.export
    def set_duty(self, value: float) -> int:
        return self._set(3, value)

    @torch.jit.export
    def get_wet(self) -> float:
        return self._target(4)

    @torch.jit.export
    def set_wet(self, value: float) -> int:
        return self._set(4, value)

    @torch.jit.export
    def get_noise_amount(self) -> float:
        return self._target(5)

    @torch.jit.export
    def set_noise_amount(self, value: float) -> int:
        return self._set(5, value)

    @torch.jit.export
    def get_inpaint_method(self) -> int:
        return int(self._target(6))

    @torch.jit.export
    def set_inpaint_method(self, value: int) -> int:
        return self._set(6, float(value))

    @torch.jit.export
    def get_inpaint_temperature(self) -> float:
        return self._target(7)

    @torch.jit.export
    def set_inpaint_temperature(self, value: float) -> int:
        return self._set(7, value)

    @torch.jit.export
    def get_inpaint_radius(self) -> int:
        return int(self._target(8))

    @torch.jit.export
    def set_inpaint_radius(self, value: int) -> int:
        return self._set(8, float(value))

    @torch.jit.export
    def get_inpaint_axis(self) -> int:
        return int(self._target(9))

    @torch.jit.export
    def set_inpaint_axis(self, value: int) -> int:
        return self._set(9, float(value))

    @torch.jit.export
    def get_dropout_channels(self) -> int:
        return int(self._target(10))

    @torch.jit.export
    def set_dropout_channels(self, value: int) -> int:
        return self._set(10, float(value))

    @torch.jit.export
    def get_cross_amount(self) -> float:
        return self._target(11)

    @torch.jit.export
    def set_cross_amount(self, value: float) -> int:
        return self._set(11, value)

    @torch.jit.export
    def get_cross_mode(self) -> int:
        return int(self._target(12))

    @torch.jit.export
    def set_cross_mode(self, value: int) -> int:
        return self._set(12, float(value))

    # ------------------------------------------------------------------ processing
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [batch, channels, frames] float -> the same shape, ``latency_samples`` behind
        (with ``cross``: ``[batch, channels + 1, frames]`` in, the last channel the second
        source, ``[batch, channels, frames]`` out). NaN, infinite and subnormal samples are
        treated as 0."""
        x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
        x = torch.where(x.abs() < 1.1754943508222875e-38, torch.zeros_like(x), x)  # subnormal: 0
        aux = x[:, x.shape[1] - self.aux_channels :]
        x = x[:, : x.shape[1] - self.aux_channels]
        b, c, n = x.shape[0], x.shape[1], x.shape[2]
        streams = b * c
        if streams != self.streams or b != self.batch:
            self._start(b, c)
        x = x.reshape(streams, n)
        line = torch.cat([self.dry, x], dim=1)
        dry = line[:, :n]
        self.dry = line[:, n:]

        delta = self._columns(x.double(), aux.reshape(aux.shape[0] * aux.shape[1], n).double())
        if delta.shape[1] > 0:
            self.delta = torch.cat([self.delta, delta], dim=1)
        self.samples_in += n
        last = self.samples_in - self.latency_samples
        first = last - n
        wet = torch.zeros(streams, n, dtype=torch.float64)
        available_end = self.delta_start + self.delta.shape[1]
        lo = max(first, self.delta_start)
        hi = min(last, available_end)
        if hi > lo:
            wet[:, lo - first : hi - first] = self.delta[:, lo - self.delta_start : hi - self.delta_start]
        if last > self.delta_start:
            self.delta = self.delta[:, min(last - self.delta_start, self.delta.shape[1]) :]
            self.delta_start = last
        out = (dry.double() + wet).float()
        return out.reshape(b, c, n)

    def _columns(self, x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """Samples ``[streams, n]`` (and the second sources ``[batch, n]``) -> the change samples
        of the columns they complete: the core's analysis, the chain, the core's synthesis."""
        with torch.no_grad():
            out = self._chain(x, aux)
        return out

    def _chain(self, x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        inputs, region, aux_codes = self.core.analyse(x, aux)
        n_new = inputs.shape[2]
        if n_new == 0:
            return torch.zeros(x.shape[0], 0, dtype=torch.float64)
        if self.aux_channels > 0:  # each stream gets its batch row's second source
            aux_codes = aux_codes.repeat_interleave(self.streams // self.batch, dim=0)
        ts = self.time_stride
        per_column: List[torch.Tensor] = []  # the effects' parameters, one value per column
        for index in range(len(self.effects.value)):
            per_column.append(self.effects.advance(index, n_new * ts)[ts - 1 :: ts])
        codes = inputs
        cross_codes = aux_codes.shape[2] > 0 and int(self._value(12)) == 0
        cross_latent = aux_codes.shape[2] > 0 and int(self._value(12)) == 1
        for effect in self.chain_codes:
            if effect == 1:
                codes = self._noise(codes, region, per_column[0])
            elif effect == 2:
                codes = self._inpaint(inputs, codes, region, per_column)
            elif cross_codes:
                codes = self._cross_codes(codes, aux_codes, region, per_column[6])
        self.input_history = torch.cat([self.input_history, inputs], dim=2)[:, :, -self.history_columns :]
        latent = self.core.embed(codes)
        for effect in self.chain_latents:
            if effect == 3:
                keep = per_column[5]  # [n_new]
                channel = torch.arange(latent.shape[1], dtype=torch.float64)
                drop = (channel[:, None] >= keep[None, :])[:, None, :] & region.t()[None]
                latent = latent.masked_fill(drop[None], 0.0)
            elif cross_latent:
                # (1 - amount) * latent + amount * the second source's, inside the region
                aux_latent = self.core.embed(aux_codes)
                amount = per_column[6].to(latent.dtype)[None, None, None, :]
                latent = torch.where(region.t()[None, None], latent + amount * (aux_latent - latent), latent)
        return self.core.synthesise(latent)

    # ------------------------------------------------------------------ codemap effects
    def _draw(self, streams: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, purpose: int) -> torch.Tensor:
        """Uniforms for cells (stream, row, column of this block), keyed by the absolute column."""
        absolute = self.core.first_column + columns
        keys = ((absolute * self.streams + streams) * self.n_rows + rows) * 4 + purpose
        return _uniforms(keys, self.seed)

    def _cell_draws(self, codes: torch.Tensor, purpose: int) -> torch.Tensor:
        """One uniform per cell of ``codes`` [streams, rows, columns of this block]."""
        s, r, n = codes.shape[0], codes.shape[1], codes.shape[2]
        streams = torch.arange(s)[:, None, None].expand(s, r, n)
        rows = torch.arange(r)[None, :, None].expand(s, r, n)
        columns = torch.arange(n)[None, None, :].expand(s, r, n)
        return self._draw(streams, rows, columns, purpose)

    def _noise(self, codes: torch.Tensor, region: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
        """Each region code replaced by a random one with probability ``amount`` (per column)."""
        hit = (self._cell_draws(codes, 0) < amount[None, None, :]) & region.t()[None]
        random_codes = (self._cell_draws(codes, 1) * self.codebook_size).long()
        return torch.where(hit, random_codes, codes)

    def _cross_codes(self, codes: torch.Tensor, aux_codes: torch.Tensor, region: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
        """Each region code replaced by the second source's at the same cell with probability
        ``amount`` (per column)."""
        hit = (self._cell_draws(codes, 3) < amount[None, None, :]) & region.t()[None]
        return torch.where(hit, aux_codes, codes)

    def _spatial_offsets(self, radius: int, axis: int) -> torch.Tensor:
        """``(d_column, d_row)`` of ``naive_bayes.neighbour_offsets`` that a stream can read
        (no later column), sorted by column then row."""
        span = torch.arange(-radius, radius + 1)
        dc = span.repeat_interleave(2 * radius + 1)
        dr = span.repeat(2 * radius + 1)
        keep = ((dc != 0) | (dr != 0)) & (dc <= 0)
        if axis == 0:
            keep = keep & (dr == 0)
        elif axis == 1:
            keep = keep & (dc == 0)
        return torch.stack([dc[keep], dr[keep]], dim=1)

    def _inpaint(self, inputs: torch.Tensor, codes: torch.Tensor, region: torch.Tensor, per_column: List[torch.Tensor]) -> torch.Tensor:
        """``context=input``: every region cell redrawn from the input's codes around it
        (earlier columns and its own column, never itself), all cells at once."""
        cells = torch.nonzero(region.t()[None].expand(codes.shape[0], -1, -1))  # [N, 3]: stream, row, column
        if cells.shape[0] == 0:
            return codes
        method = int(self._value(6))
        if method == 1 and not self.has_prior:
            method = 0
        offsets = self.prior_offsets if method == 1 else self._spatial_offsets(int(self._value(8)), int(self._value(9)))
        full = torch.cat([self.input_history, inputs], dim=2)
        h = self.input_history.shape[2]
        rows = cells[:, 1:2] + offsets[None, :, 1]
        cols = h + cells[:, 2:3] + offsets[None, :, 0]
        inside = (rows >= 0) & (rows < self.n_rows) & (cols >= 0) & (cols < full.shape[2])
        values = full[cells[:, 0:1], rows.clamp(0, self.n_rows - 1), cols.clamp(0, full.shape[2] - 1)]
        values = torch.where(inside, values, torch.full_like(values, -1))
        temperature = per_column[2][cells[:, 2]]
        uniforms = self._draw(cells[:, 0], cells[:, 1], cells[:, 2], 2)
        if method == 1:
            jll = self._learned_log_weights(values)
            picked = _pick(jll, uniforms, temperature)
        else:
            picked = self._spatial_pick(values, offsets, uniforms, temperature)
        out = codes.clone()
        out[cells[:, 0], cells[:, 1], cells[:, 2]] = picked
        return out

    def _learned_log_weights(self, values: torch.Tensor) -> torch.Tensor:
        """Categorical NB joint log likelihood ``[N, K]`` of neighbour values (-1: unknown)."""
        k = self.codebook_size
        table = torch.where(values < 0, torch.full_like(values, k), values)
        p = torch.arange(table.shape[1])[None, :].expand_as(table)
        per_feature = self.prior_value_log_prob[p, table].double()  # [N, P, K]
        return self.prior_class_log_prior[None, :] + per_feature.sum(dim=1)

    def _spatial_pick(self, values: torch.Tensor, offsets: torch.Tensor, uniforms: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """The paper's Gaussian NB per cell (``naive_bayes._gaussian_nb_predict``), all cells at
        once: each class (a code among the cell's known neighbours) is summed over the
        neighbours holding it, in neighbour order; classes are then taken in ascending code
        order (the first maximum wins, as scikit-learn's). Cells without a known neighbour
        draw from the fallback prior."""
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
        epsilon = self.var_smoothing * torch.maximum(all_var_x, all_var_y)
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
        earlier = torch.tril(torch.ones(m, m, dtype=torch.bool), diagonal=-1)
        first = known & ~((same > 0) & earlier[None]).any(dim=2)
        n_classes = first.sum(1)
        jll = torch.where(n_classes[:, None] == 1, torch.zeros_like(jll), jll)
        k = self.codebook_size
        key = torch.where(first, values, torch.full_like(values, k))
        key, slot = torch.sort(key, dim=1, stable=True)
        jll = jll.gather(1, slot)
        jll = torch.where(key < k, jll, torch.full_like(jll, -math.inf))
        picked = key.gather(1, _pick(jll, uniforms, temperature)[:, None])[:, 0]
        lonely = _pick(self.fallback_log_prior[None, :].expand(n, k), uniforms, temperature)
        return torch.where(has, picked, lonely)
