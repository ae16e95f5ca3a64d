"""The whole effect path as one TorchScript module: audio blocks in, audio blocks out, state in buffers.

What `spectro-fx export` writes for other hosts (nn~ in Max/Pd); a file that `torch.jit.load` alone runs.
"""

from typing import Dict, List

import torch
from torch import nn

from spectro_fx.models.errors import ParameterError
from spectro_fx.models.export import ModelFile

from ..core.step import BUILTIN_EFFECTS, INDEX, ColumnStep, parameter_table, smooth_prior_tables, step_value
from ..plugins.inpaint import Inpaint

CHAIN_EFFECTS = BUILTIN_EFFECTS
"""Effects the scripted module carries (the column step's); ``inpaint`` with ``context=input`` only;
with ``cross`` the last input channel is the second source."""

PARAMETER_TABLE = parameter_table()
"""The column step's parameters (:func:`~spectro_fx.effect.core.step.parameter_table`)."""
ATTRIBUTES = [name for name, _, _ in PARAMETER_TABLE]
"""Attribute names of the module's parameters (``low_hz``, ..., ``cross_mode``)."""


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
    clamped into range and smoothed as in the engine. It runs the engine's column step
    (:class:`~spectro_fx.effect.core.step.ColumnStep`), keyed random draws included: seeded
    alike, the module and the engine give the same output.

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
        inpaint_alpha = 0.0
        checked: Dict[str, float] = {}
        by_name = {engine_name: p for _, engine_name, p in PARAMETER_TABLE}
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
            p = by_name[key]
            checked[key] = step_value(p, p.coerce(value, owner=key.rsplit(".", 1)[0] if "." in key else "")[0])
        prior = model.prior()
        if prior is not None and bool((prior.offsets[:, 0] > 0).any()):
            raise ParameterError("the model's learned prior reads later columns; a stream cannot export it")
        reach = int(-prior.offsets[:, 0].min()) if prior is not None and len(prior.offsets) else 0
        # the signal path and the effects, as the engine's; one second source per batch row
        self.step = ColumnStep(model, streams=channels, aux_streams=self.aux_channels, history_columns=8 + reach)
        step = self.step
        smooth_prior_tables(step, model, inpaint_alpha)
        step.set_chain(
            [BUILTIN_EFFECTS.index(name) for name in chain if name in ("noise", "inpaint", "cross")],
            [BUILTIN_EFFECTS.index(name) for name in chain if name in ("dropout", "cross")],
        )
        step.set_seed(seed)
        for key, value in checked.items():
            step.set_parameter(INDEX[key], value, True)
        core = step.core
        self.sr = core.sr
        self.n_fft = core.n_fft
        self.hop = core.hop
        self.time_stride = core.time_stride
        self.n_rows = core.n_rows
        self.codebook_size = step.codebook_size
        self.latency_samples = core.latency_samples
        self.channels = channels
        self.seed = seed
        self.register_buffer("forward_params", torch.tensor([channels + self.aux_channels, 1, channels, 1]))
        self.param_names = list(ATTRIBUTES)

        # stream state (sized at the first block)
        self.streams = 0
        self.batch = 0
        self.register_buffer("dry", torch.zeros(0, 0))
        self.register_buffer("delta", torch.zeros(0, 0, dtype=torch.float64))
        self.delta_start = 0
        self.samples_in = 0
        if self.n_rows > 0 and channels > 0:
            self._start(1, channels)

    # ------------------------------------------------------------------ stream state
    def _start(self, batch: int, channels: int) -> None:
        streams = batch * channels
        self.streams = streams
        self.batch = batch
        self.step.start(streams, batch * self.aux_channels)
        self.step.aux_group = channels
        self.dry = torch.zeros(streams, self.latency_samples)
        self.delta = torch.zeros(streams, 0, dtype=torch.float64)
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
        return self.step.set_parameter(index, value, False)

    def _target(self, index: int) -> float:
        return self.step.target(index)

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
        of the columns they complete, through the column step."""
        with torch.no_grad():
            out = self.step.process(x, aux)
        return out
