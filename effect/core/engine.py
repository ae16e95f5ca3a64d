"""The streaming engine: audio blocks in, audio blocks out, through codemaps of the model.

Causal STFT -> encoder per completed column -> effect chain -> decoder -> region mask -> iSTFT.
"""

from __future__ import annotations

import copy
import functools
import threading
import time
import warnings
from collections import deque
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from spectro_fx.models.errors import ParameterError, non_negative_int, positive_int
from spectro_fx.models.export import ModelFile
from spectro_fx.models.spectral import analysis_window

from .effects import CodemapContext, Effect, Parameter, make_chain, order_note, stages
from .params import REGION_PARAMETERS, ParameterBank, Smoother
from .region import band_mask, gate_targets, region_cells, slew_gate
from .stft import StreamingISTFT, StreamingSTFT

RESAMPLE_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
_TINY = np.float32(np.finfo(np.float32).tiny)  # smallest normal float32; below it (not 0) is subnormal
_LARGEST = np.float32(np.finfo(np.float32).max)
GUARD_RATIO = 2.0
"""Most a frame of output may have over its input frame, in magnitude (+6 dB): the overlapping
frames of a transient (win / hop of them) then stay within the +12 dBFS `spectro-fx validate` allows."""


def stft_latency(*, span: int, hop: int, time_stride: int) -> int:
    """Model-rate samples between a sample's arrival and its final output: the iSTFT waits for
    every frame whose synthesis window covers it (``span - hop`` after its own hop, ``span`` the
    synthesis window's length: the analysis window for the classic pair, ``synthesis_length``
    for the low-delay pair), and frames are only decoded once their column of ``time_stride``
    frames is complete (up to ``time_stride * hop - 1``)."""
    return (span - hop) + time_stride * hop - 1


@functools.lru_cache(maxsize=32)
def _resampled_latency(
    sr: int, model_sr: int, *, quality: str, span: int, hop: int, time_stride: int, chunk: int
) -> int:
    """Worst lag, in I/O samples, of the wet path through both soxr streams.

    soxr's streams are delay-compensated (their output is time-aligned with their input) but
    withhold output in internal blocks, so the lag depends on how input arrives. This replays
    the engine's sample counting on silence fed ``chunk`` samples at a time (1 is the worst
    case) for a second and returns the largest shortfall seen.
    """
    import soxr

    rs_in = soxr.ResampleStream(sr, model_sr, 1, dtype="float64", quality=quality)
    rs_out = soxr.ResampleStream(model_sr, sr, 1, dtype="float64", quality=quality)
    pre_roll = span - hop
    total_in = model_count = released_done = io_available = worst = 0
    zeros = np.zeros(chunk)
    while total_in < sr:
        model_count += len(rs_in.resample_chunk(zeros))
        total_in += chunk
        columns = model_count // hop // time_stride
        released = max(columns * time_stride * hop - pre_roll, 0)
        if released > released_done:
            io_available += len(rs_out.resample_chunk(np.zeros(released - released_done)))
            released_done = released
        worst = max(worst, total_in - io_available)
    return worst


class Engine:
    """Streaming spectro-fx effect for one stream of ``channels`` channels at rate ``sr``.

    Parameters
    ----------
    model : ModelFile
        A loaded model file (:func:`spectro_fx.models.export.load_model`).
    sr : int > 0
        Sample rate of the audio passed to :meth:`process`, in Hz; resampled to and from the
        model's rate with soxr when different.
    channels : int > 0
        Channels are processed independently with shared parameters.
    chain : str or sequence of str or Effect
        Effects in order, e.g. ``"inpaint,noise"``; ``"none"`` is plain VQ-VAE resynthesis.
    seed : int
        Seed of the random generator the effects use; a seeded render is repeatable.
    block_hint : int, optional
        Typical block size; only used to size the resampler margin.
    values : mapping, optional
        Initial parameter values (as :meth:`set`), applied without smoothing.
    resample_quality : {"QQ", "LQ", "MQ", "HQ", "VHQ"}
        soxr quality of the wet path when rates differ; lower ones have less latency.
    aux_channels : int >= 0
        Channels of a second source (for ``cross``), passed to :meth:`process` as ``aux``
        (0: none; ``ctx.aux_codes`` stays None).

    Notes
    -----
    The engine leaves torch's process-wide thread count alone: its many small calls per column
    run fastest on one thread, which the ``spectro-fx`` command sets (``models.runtime``).
    The model runs through the model file's own streaming methods (``stream_encode``,
    ``stream_decode_latent``) on a private copy of its module: each column costs only its new
    frames, and the decoder's head runs only on the region's cells.

    Output = input delayed by :attr:`latency_samples` + (resynthesis - input) inside the region:
    outside the region, with ``wet=0`` or an empty band the output is exactly the delayed input.
    """

    HISTORY_COLUMNS = 64
    """Columns kept in ``CodemapContext.history`` and ``CodemapContext.input_history``."""

    def __init__(
        self,
        model: ModelFile,
        *,
        sr: int,
        channels: int,
        chain: str | Sequence[str] | Sequence[Effect] = "none",
        seed: int = 0,
        block_hint: int | None = None,
        values: Mapping[str, Any] | None = None,
        resample_quality: str = "HQ",
        aux_channels: int = 0,
    ):
        positive_int("sr", sr, unit="Hz")
        positive_int("channels", channels)
        if block_hint is not None:
            positive_int("block_hint", block_hint, unit="frames")
        non_negative_int("seed", seed)
        if resample_quality not in RESAMPLE_QUALITIES:
            raise ParameterError(
                f"resample_quality={resample_quality!r} must be one of {', '.join(RESAMPLE_QUALITIES)}"
            )
        self.model = model
        self.sr = int(sr)
        self.channels = int(channels)
        self.seed = int(seed)
        self.resample_quality = resample_quality
        # the layers keep the stream's state: one copy of the module per engine
        module = copy.deepcopy(model.module)
        self._module = module
        self._codebook = module.codebook.detach()
        self.stft_config = model.config.stft
        # sum_k |X_k|^2 over the one-sided spectrum of a frame of samples within +-1 is at most
        # n_fft * sum(window^2) (Parseval)
        self._energy_ceiling = float(self.stft_config.n_fft * np.sum(analysis_window(self.stft_config) ** 2))
        self.model_sr = int(module.sample_rate)
        self.hop = int(module.hop_length)
        self.time_stride = int(module.time_stride)
        self.freq_stride = int(module.freq_stride)
        self.n_rows = int(module.n_rows)
        self.n_bins = int(module.n_bins)
        rf = int(module.receptive_field_frames)
        with torch.no_grad():  # the code of each row for a silent input: what came before the stream
            silence = torch.zeros(1, self.n_bins, -(-rf // self.time_stride) * self.time_stride)
            self._silence_column = module.encode(silence)[:, :, -1:].to(torch.long)
        if isinstance(chain, str) or (chain and isinstance(next(iter(chain)), str)):
            self.chain: list[Effect] = make_chain(chain)
        else:
            self.chain = list(chain)
        note = order_note(self.chain)
        if note is not None:
            warnings.warn(note, stacklevel=2)
        self._bank = ParameterBank(self.chain)
        self._mask_cache: tuple[tuple[float, float], np.ndarray] | None = None
        self._apply_lock = threading.Lock()
        self._hop_s = self.hop / self.model_sr
        # region parameters and the effects' float parameters declared with a smoothing time
        # ramp per hop; effects see one value per column
        self._smoothers = {p.name: Smoother(p, hop_s=self._hop_s) for p in REGION_PARAMETERS}
        self._effect_ramps = [
            key for key, p in self._bank.parameters().items()
            if self._bank.owner(key) is not None and p.kind == "float" and p.smoothing_s > 0
        ]
        for key in self._effect_ramps:
            self._smoothers[key] = Smoother(self._bank.parameters()[key], hop_s=self._hop_s)
            self._smoothers[key].set_target(float(self._bank.values()[key]), immediate=True)
        self.column_period_s = self.time_stride * self._hop_s
        self.resampling = self.sr != self.model_sr
        self._band_top_hz = 0.5 * min(self.sr, self.model_sr)
        span = self.stft_config.synthesis_span
        if self.resampling:
            chunks = {1} | ({int(block_hint)} if block_hint else set())
            self.latency_samples = max(
                _resampled_latency(
                    self.sr, self.model_sr, quality=resample_quality, span=span, hop=self.hop,
                    time_stride=self.time_stride, chunk=c,
                )
                for c in chunks
            )
        else:
            self.latency_samples = stft_latency(span=span, hop=self.hop, time_stride=self.time_stride)
        self.column_times: deque[float] = deque(maxlen=2048)
        # the second source, encoded in lockstep with the input
        self._aux_source = None
        if aux_channels:
            from .aux_source import AuxSource

            self._aux_source = AuxSource(module, channels=int(aux_channels), sr=self.sr, resample_quality=resample_quality)
        self.reset()
        for name, value in (values or {}).items():
            self.set(name, value)

    # ------------------------------------------------------------------ parameters
    def parameters(self) -> dict[str, Parameter]:
        """All settable parameters by full name (region ones, then ``effect.param``)."""
        return self._bank.parameters()

    def values(self) -> dict[str, Any]:
        """Current target value of every parameter by full name."""
        return self._bank.values()

    def resolve(self, name: str) -> str:
        """Full name of a parameter name (``amount`` -> ``noise.amount`` when unique)."""
        return self._bank.resolve(name)

    def set(self, name: str, value: Any) -> Any:
        """Set a parameter (thread-safe); it applies from the next :meth:`process` call,
        smoothed per hop. Out-of-range values are clamped with a warning; unknown names raise
        ParameterError listing the valid ones. Returns the value after clamping."""
        key, coerced = self._bank.set(name, value)
        if self._frames_done == 0:
            # nothing played yet: start at the value instead of ramping to it
            self._apply_pending(immediate=True)
        return coerced

    def set_many(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Set several parameters as one change (thread-safe): a block sees all of them or
        none, never half a pair such as ``low_hz``/``high_hz``. All are validated first; a bad
        one raises ParameterError and sets nothing. Returns the values after clamping by
        full name."""
        applied = self._bank.set_many(values)
        if self._frames_done == 0:
            self._apply_pending(immediate=True)
        return applied

    def _apply_pending(self, *, immediate: bool = False) -> None:
        # set() before the first block applies from the caller's thread: serialise with process()
        with self._apply_lock:
            for key, value in self._bank.take_pending().items():
                owner = self._bank.owner(key)
                if key in self._smoothers:
                    self._smoothers[key].set_target(float(value), immediate=immediate)
                if owner is not None and (immediate or key not in self._smoothers):
                    owner.set(key.split(".", 1)[1], value)

    # ------------------------------------------------------------------ stream state
    def reset(self) -> None:
        """Clear all stream state (keeps parameters, lands smoothed ones on their targets)."""
        import soxr

        c = self.channels
        self._apply_pending(immediate=True)
        for key, smoother in self._smoothers.items():
            smoother.snap()
            if key in self._effect_ramps:
                self._bank.owner(key).values[key.split(".", 1)[1]] = smoother.value
        self._stft = StreamingSTFT(self.stft_config, channels=c)
        self._istft = StreamingISTFT(self.stft_config, channels=c)
        if self.resampling:
            self._rs_in = soxr.ResampleStream(self.sr, self.model_sr, c, dtype="float64", quality=self.resample_quality)
            self._rs_out = soxr.ResampleStream(self.model_sr, self.sr, c, dtype="float64", quality=self.resample_quality)
        self._dry = np.zeros((self.latency_samples, c), dtype=np.float32)
        self._delta = np.zeros((0, c))
        self._delta_start = 0
        self._pre_roll_left = self._istft.pre_roll
        self._samples_in = 0
        self._frames_done = 0
        self._columns_done = 0
        self._spec_pending = np.zeros((c, self.n_bins, 0), dtype=np.complex128)
        self._module.reset_stream()
        # the stream starts after silence (the STFT is primed with zeros): earlier columns are its codes
        self._history = self._silence_column.expand(c, -1, self.HISTORY_COLUMNS).clone()
        self._input_history = self._history.clone()
        self._gate = 1.0 if gate_targets(np.zeros(1), **self._gate_args())[0] else 0.0
        self._rng = np.random.default_rng(self.seed)
        self.nonfinite_samples = 0
        self.subnormal_samples = 0
        self.model_nonfinite_values = 0
        self.late_samples = 0
        self._said: set[str] = set()  # counters whose warning was given in this stream
        self.column_times.clear()
        for effect in self.chain:
            effect.reset()
        if self._aux_source is not None:
            self._aux_source.reset()

    def _count(self, counter: str, count: int, message: str, *, stacklevel: int) -> None:
        """Add ``count`` to the counter attribute ``counter``; warn ``message`` the first time
        in a stream (once, not per block: a live set must not print per callback)."""
        setattr(self, counter, getattr(self, counter) + count)
        if count and counter not in self._said:
            self._said.add(counter)
            warnings.warn(message, stacklevel=stacklevel + 1)

    @property
    def latency_s(self) -> float:
        return self.latency_samples / self.sr

    def _gate_args(self) -> dict[str, float]:
        return {
            "period_s": self._smoothers["period_s"].target,
            "duty": self._smoothers["duty"].target,
            "hop_s": self._hop_s,
        }

    # ------------------------------------------------------------------ processing
    def process(self, block: np.ndarray, aux: np.ndarray | None = None) -> np.ndarray:
        """Process one block.

        Parameters
        ----------
        block : np.ndarray [frames, channels], float32
            Any number of frames (0 included); non-finite samples (NaN, +-Inf) are replaced by
            0 and counted in ``nonfinite_samples``, subnormal ones (below 1.2e-38) are flushed
            to 0 and counted in ``subnormal_samples``; each kind is warned about once per stream.

        Returns
        -------
        np.ndarray [frames, channels], float32
            The output, ``latency_samples`` behind the input.

        aux : np.ndarray [frames, aux_channels], optional
            The second source (for ``cross``) for the same frames (engines built with
            ``aux_channels``; silence when omitted).
        """
        x = np.asarray(block)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ParameterError(f"block has shape {x.shape}; expected [frames, {self.channels}]")
        x = x.astype(np.float32, copy=False)
        magnitude = np.abs(x)
        # one comparison per sample in the common case; NaN fails both bounds, 0 is fine
        if not ((magnitude >= _TINY) & (magnitude <= _LARGEST) | (x == 0.0)).all():
            x = self._sanitize(x, magnitude)
        n = x.shape[0]
        self._apply_pending()

        # dry path: an integer delay line at the I/O rate
        line = np.concatenate([self._dry, x], axis=0)
        dry = line[:n]
        self._dry = line[n:]

        # wet path at the model rate, as a difference to the input
        xm = x.astype(np.float64)
        if self.resampling:
            xm = self._rs_in.resample_chunk(xm)
        self._samples_in += n
        if self._aux_source is not None:  # before the input's analysis, same samples
            if aux is not None and np.shape(aux)[0] != n:
                raise ParameterError(f"aux has {np.shape(aux)[0]} frames; expected {n}, as the block")
            self._aux_source.push(np.zeros((n, self._aux_source.channels)) if aux is None else aux)
        delta = self._analyse(xm.T)
        if delta.shape[1]:
            if self._pre_roll_left:
                drop = min(self._pre_roll_left, delta.shape[1])
                delta = delta[:, drop:]
                self._pre_roll_left -= drop
            d_io = self._rs_out.resample_chunk(np.ascontiguousarray(delta.T)) if self.resampling else delta.T
            self._delta = np.concatenate([self._delta, d_io], axis=0)

        # output sample k is input sample k - latency plus its change
        last = self._samples_in - self.latency_samples
        first = last - n
        wet = np.zeros((n, self.channels))
        available_end = self._delta_start + self._delta.shape[0]
        lo, hi = max(first, self._delta_start), min(last, available_end)
        if hi > lo:
            wet[lo - first : hi - first] = self._delta[lo - self._delta_start : hi - self._delta_start]
        if last > max(available_end, 0):
            self._late(last - max(available_end, first, 0))
        if last > self._delta_start:
            self._delta = self._delta[last - self._delta_start :]
            self._delta_start = last
        return (dry.astype(np.float64) + wet).astype(np.float32)

    def _sanitize(self, x: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
        """``x`` with non-finite samples set to 0 and subnormal ones flushed to 0 (they would
        pass the dry path bit for bit, and subnormal arithmetic stalls the CPU downstream);
        each kind is counted and said once per stream, not per block."""
        finite = np.isfinite(x)
        subnormal = finite & (magnitude < _TINY) & (x != 0.0)
        n_nonfinite = int(x.size - finite.sum())
        n_subnormal = int(subnormal.sum())
        self._count(
            "nonfinite_samples", n_nonfinite,
            f"the input has non-finite samples (NaN or Inf: {n_nonfinite} in this block); they are played "
            "as 0 (counted in nonfinite_samples; said once)", stacklevel=3,
        )
        self._count(
            "subnormal_samples", n_subnormal,
            f"the input has subnormal samples (below 1.2e-38: {n_subnormal} in this block); they are "
            "flushed to 0 (counted in subnormal_samples; said once)", stacklevel=3,
        )
        return np.where(finite & ~subnormal, x, np.float32(0.0))

    def _late(self, count: int) -> None:
        self._count(
            "late_samples", count,
            f"the wet signal was {count} samples late for the {self.latency_samples}-sample latency "
            "(resampler buffering); those samples are dry", stacklevel=3,
        )

    def _analyse(self, xm: np.ndarray) -> np.ndarray:
        """Model-rate samples ``[channels, n]`` -> released change samples ``[channels, m]``."""
        spec = self._stft.push(xm)
        if spec.shape[2]:
            self._frames_done += spec.shape[2]
            self._spec_pending = np.concatenate([self._spec_pending, spec], axis=2)
        n_new = self._spec_pending.shape[2] // self.time_stride
        if n_new == 0:
            return np.zeros((self.channels, 0))
        started = time.perf_counter()
        delta_spec = self._columns(n_new)
        out = self._istft.push(delta_spec)
        per_column = (time.perf_counter() - started) / n_new
        self.column_times.extend([per_column] * n_new)
        return out

    def _model_input(self, magnitude: np.ndarray) -> np.ndarray:
        """The magnitude ``[channels, n_bins, frames]`` the encoder sees, float32: a frame with
        more energy than samples within +-1 can give (Parseval) is scaled down to that, so a
        burst far beyond full scale (1e6) leaves the codes of a loud sound in the model's memory,
        not codes it never learned, which it would keep decoding, loud, for columns after the
        burst. Frames of legal input are untouched."""
        energy = np.einsum("cbt,cbt->ct", magnitude, magnitude)
        if np.any(energy > self._energy_ceiling):
            scale = np.sqrt(self._energy_ceiling / np.maximum(energy, self._energy_ceiling))
            magnitude = magnitude * scale[:, None, :]
        return magnitude.astype(np.float32)

    def _band_mask(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """:func:`band_mask` per frame; the band mostly stands still, so a constant one is reused."""
        if low[0] == low[-1] and high[0] == high[-1] and np.all(low == low[0]) and np.all(high == high[0]):
            key = (float(low[0]), float(high[0]))
            if self._mask_cache is None or self._mask_cache[0] != key:
                row = band_mask(low[:1], high[:1], sr=self.model_sr, n_fft=self.stft_config.n_fft)
                self._mask_cache = (key, row)
            return np.repeat(self._mask_cache[1], len(low), axis=0)
        return band_mask(low, high, sr=self.model_sr, n_fft=self.stft_config.n_fft)

    def _ramp_effects(self, ramps: dict[str, np.ndarray], j: int) -> None:
        """Smoothed effect parameters take their value of column ``j``."""
        for key, ramp in ramps.items():
            self._bank.owner(key).values[key.split(".", 1)[1]] = float(ramp[j])

    def _chain(self, codes: torch.Tensor, wanted: np.ndarray, c0: int, ramps: dict[str, np.ndarray]) -> torch.Tensor:
        """The effect chain, one column at a time (so any blocking gives the same result; a lone
        codes effect may take all columns at once when it gives the same, see
        :meth:`Effect.process_columns`), on
        ``codes`` [channels, n_rows, n_new] with region cells ``wanted`` [n_new, n_rows] and the
        smoothed effect parameters' values per column ``ramps`` {name: [n_new]};
        returns the latents [channels, D, n_rows, n_new] for the decoder."""
        codes_effects, latent_effects = stages(self.chain)
        columns, latents = [], []
        steady = all(ramp[0] == ramp[-1] for ramp in ramps.values())  # ramps are monotonic
        self._ramp_effects(ramps, 0)
        if not codes_effects and not latent_effects:  # no effect changes anything: skip the loop
            self._history = torch.cat([self._history, codes], dim=2)[:, :, -self.HISTORY_COLUMNS :]
            self._input_history = self._history
            return self._embed(codes)
        if len(codes_effects) == 1 and not latent_effects and self._aux_source is None and codes.shape[2] > 1 and steady:
            ctx = CodemapContext(model=self._module, history=self._history, rng=self._rng,
                                 input_history=self._input_history)
            out = codes_effects[0].process_columns(codes, torch.from_numpy(np.ascontiguousarray(wanted.T)), ctx)
            if out is not None:
                self._history = torch.cat([self._history, out], dim=2)[:, :, -self.HISTORY_COLUMNS :]
                self._input_history = torch.cat([self._input_history, codes], dim=2)[:, :, -self.HISTORY_COLUMNS :]
                return self._embed(out)
        for j in range(codes.shape[2]):
            self._ramp_effects(ramps, j)
            region = torch.from_numpy(wanted[j][:, None].copy())
            column = codes[:, :, j : j + 1]
            aux_codes = None if self._aux_source is None else self._aux_source.column(c0 + j)
            ctx = CodemapContext(model=self._module, history=self._history, rng=self._rng, aux_codes=aux_codes,
                                 input_history=self._input_history)
            for effect in codes_effects:
                column = effect.process_codes(column, region, ctx)
            if latent_effects:
                latent = self._embed(column)
                for effect in latent_effects:
                    latent = effect.process_latent(latent, region, ctx)
                latents.append(latent)
            self._history = torch.cat([self._history, column], dim=2)[:, :, -self.HISTORY_COLUMNS :]
            self._input_history = torch.cat([self._input_history, codes[:, :, j : j + 1]], dim=2)[
                :, :, -self.HISTORY_COLUMNS :
            ]
            columns.append(column)
        return torch.cat(latents, dim=3) if latent_effects else self._embed(torch.cat(columns, dim=2))

    def _embed(self, codes: torch.Tensor) -> torch.Tensor:
        # the model file's embed() is this lookup; calling it costs a TorchScript dispatch per call
        return torch.nn.functional.embedding(codes, self._codebook).permute(0, 3, 1, 2)

    def _columns(self, n_new: int) -> np.ndarray:
        """Run the model and the chain on ``n_new`` completed columns; returns the change
        spectrum of their frames ``[channels, n_bins, n_new * time_stride]``."""
        ts = self.time_stride
        c0 = self._columns_done
        end = (c0 + n_new) * ts
        n_frames = n_new * ts
        spec = self._spec_pending[:, :, :n_frames]
        self._spec_pending = self._spec_pending[:, :, n_frames:]

        # the region, frame by frame, with smoothed parameters
        low = self._smoothers["low_hz"].advance(n_frames)
        # nothing above the I/O rate's Nyquist is heard: regenerating it only feeds the resampler
        high = np.minimum(self._smoothers["high_hz"].advance(n_frames), self._band_top_hz)
        wet = self._smoothers["wet"].advance(n_frames)
        for name in ("period_s", "duty"):
            self._smoothers[name].advance(n_frames)
        # an effect acts on whole columns: each takes the value of its column's last hop
        ramps = {key: self._smoothers[key].advance(n_frames)[ts - 1 :: ts] for key in self._effect_ramps}
        targets = gate_targets(np.arange(c0 * ts, end), **self._gate_args())
        gate = slew_gate(targets, self._gate)
        self._gate = float(gate[-1])
        mask = self._band_mask(low, high) * (gate * wet)[:, None]

        magnitude = np.abs(spec)
        with torch.no_grad():
            codes = self._module.stream_encode(torch.from_numpy(self._model_input(magnitude)))
            wanted = region_cells(mask, time_stride=ts, freq_stride=self.freq_stride, n_rows=self.n_rows)
            latent_new = self._chain(codes, wanted, c0, ramps)
            # only cells inside the region are heard: the decoder head runs on those alone
            rows = np.flatnonzero(wanted.any(axis=0))
            columns = np.flatnonzero(wanted.any(axis=1))
            row_lo, row_hi = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)
            first = int(columns[0]) if columns.size else n_new
            decoded = self._module.stream_decode_latent(latent_new, row_lo, row_hi, first).double().numpy()
        self._columns_done += n_new

        # a model that overflows (exp of a large log-magnitude) must not reach the output
        decoded_finite = np.isfinite(decoded)
        if not decoded_finite.all():
            count = int(decoded.size - decoded_finite.sum())
            self._count(
                "model_nonfinite_values", count,
                f"the model decoded non-finite magnitudes ({count} values); the input's magnitude is used "
                "there (counted in model_nonfinite_values; said once; `spectro-fx validate` tells which input)",
                stacklevel=3,
            )
            decoded = np.where(decoded_finite, decoded, magnitude)
        region = mask.T[None]
        beyond = np.einsum("cbt,cbt->ct", magnitude, magnitude) > self._energy_ceiling
        if beyond.any():
            # a frame louder than any input within +-1 can be plays dry: its change, spread by the
            # band's edges over the whole analysis window, would outlast the burst (the low-delay
            # pair's long window by 20 ms and more)
            region = region * ~beyond[:, None, :]
        decoded = decoded * self._loudness_guard(magnitude, region * decoded, (1.0 - region) * magnitude)[:, None, :]
        phase = np.where(magnitude > 0.0, spec / np.where(magnitude > 0.0, magnitude, 1.0), 1.0)
        return region * (decoded - magnitude) * phase

    def _loudness_guard(self, magnitude: np.ndarray, inside: np.ndarray, outside: np.ndarray) -> np.ndarray:
        """Gain ``[channels, frames]`` in [0, 1] on the regenerated magnitude so that no frame
        of the output spectrum (``outside`` + ``inside``, each ``[channels, n_bins, frames]``)
        has more than :data:`GUARD_RATIO` (+6 dB) over the input frame's: codes regenerated from a loud
        neighbour (inpainting a band next to a full-scale tone) can otherwise decode several
        times louder than anything played (Minkowski: |outside + g inside| <= |outside| + g |inside|)."""
        limit = GUARD_RATIO * np.sqrt(np.einsum("cbt,cbt->ct", magnitude, magnitude))
        rest = np.sqrt(np.einsum("cbt,cbt->ct", outside, outside))
        regenerated = np.sqrt(np.einsum("cbt,cbt->ct", inside, inside))
        loud = rest + regenerated > limit
        if not loud.any():
            return np.ones_like(limit)
        gain = np.ones_like(limit)
        gain[loud] = np.clip((limit[loud] - rest[loud]) / np.maximum(regenerated[loud], 1e-30), 0.0, 1.0)
        return gain
