"""The effect's signal path at the model's rate, in one place for the engine and the exported module.

Samples in -> analysis STFT -> region (smoothed band x gate x wet) -> encoder -> codes; a codemap
chain (the caller's) turns them into latents; latents -> decoder on the region's cells -> loudness
guard -> the input's phase -> overlap-add -> change samples out. torch only and scriptable: the
engine runs it eagerly between its Python effects, the exported module scripted around its own.
"""

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from spectro_fx.models.errors import ParameterError
from spectro_fx.models.export import ModelFile, rebuild_module
from spectro_fx.models.quantizer import quantize_latent
from spectro_fx.models.spectral import analysis_window

from .effects import Parameter
from .params import REGION_PARAMETERS
from .region import EDGE_BINS, GATE_RAMP_FRAMES, band_mask, gate_targets, region_cells, slew_gate
from .stft import AnalysisRing, OverlapAdd

GUARD_RATIO = 2.0
"""Most a frame of output may have over its input frame, in magnitude (+6 dB): the overlapping
frames of a transient (win / hop of them) then stay within the +12 dBFS `spectro-fx validate` allows."""

REGION_INDEX = {p.name: i for i, p in enumerate(REGION_PARAMETERS)}
"""Index of each region parameter in a :class:`StreamCore`'s ``region`` (0 ``low_hz``, 1 ``high_hz``,
2 ``period_s``, 3 ``duty``, 4 ``wet``: the order of :data:`~spectro_fx.effect.core.params.REGION_PARAMETERS`)."""


def stft_latency(*, span: int, hop: int, time_stride: int) -> int:
    """Model-rate samples between a sample's arrival and its final output: the iSTFT waits for
    every frame whose synthesis window covers it (``span - hop`` after its own hop, ``span`` the
    synthesis window's length: the analysis window for the classic pair, ``synthesis_length``
    for the low-delay pair), and frames are only decoded once their column of ``time_stride``
    frames is complete (up to ``time_stride * hop - 1``)."""
    return (span - hop) + time_stride * hop - 1


class Ramps(nn.Module):
    """Parameter values that ramp linearly (in log space for log-scale parameters) to their
    target over each one's ``smoothing_s``, one hop at a time, landing exactly on the target.
    Values are clamped into range (integer kinds rounded); NaN is refused."""

    names: List[str]
    minimum: List[float]
    maximum: List[float]
    integer: List[bool]
    log: List[bool]
    steps: List[int]
    target: List[float]
    value: List[float]
    left: List[int]
    increment: List[float]

    def __init__(self, parameters: Sequence[Parameter], *, hop_s: float, values: Sequence[float]):
        super().__init__()
        self.names = [p.name for p in parameters]
        self.minimum = [float(p.minimum) for p in parameters]
        self.maximum = [float(p.maximum) for p in parameters]
        self.integer = [p.kind in ("int", "choice") for p in parameters]
        self.log = [p.scale == "log" and p.minimum > 0 for p in parameters]
        self.steps = [max(int(round(p.smoothing_s / hop_s)), 0) for p in parameters]
        self.target = [float(v) for v in values]
        self.value = list(self.target)
        self.left = [0 for _ in parameters]
        self.increment = [0.0 for _ in parameters]

    @torch.jit.export
    def set_value(self, index: int, value: float, immediate: bool) -> int:
        """Ramp parameter ``index`` to ``value`` (or jump, ``immediate``); 1 (nothing set) for NaN."""
        if math.isnan(value):
            return 1
        v = min(max(value, self.minimum[index]), self.maximum[index])
        if self.integer[index]:
            v = float(round(v))
        self.target[index] = v
        steps = self.steps[index]
        if immediate or steps == 0 or self.value[index] == v:
            self.value[index] = v
            self.left[index] = 0
        else:
            self.left[index] = steps
            if self.log[index]:
                self.increment[index] = (math.log(v) - math.log(self.value[index])) / steps
            else:
                self.increment[index] = (v - self.value[index]) / steps
        return 0

    @torch.jit.export
    def snap(self) -> None:
        """Every value on its target."""
        for i in range(len(self.value)):
            self.value[i] = self.target[i]
            self.left[i] = 0

    @torch.jit.export
    def settled(self, index: int) -> bool:
        """Whether parameter ``index`` is on its target (every hop keeps that value until it is set)."""
        return self.left[index] == 0

    @torch.jit.export
    def advance(self, index: int, n: int) -> torch.Tensor:
        """Values of parameter ``index`` for the next ``n`` hops, float64 ``[n]``."""
        if self.left[index] == 0:  # settled: no per-hop loop
            return torch.full([n], self.value[index], dtype=torch.float64)
        out = torch.empty(n, dtype=torch.float64)
        for i in range(n):
            if self.left[index] > 0:
                self.left[index] -= 1
                if self.left[index] == 0:
                    self.value[index] = self.target[index]
                elif self.log[index]:
                    self.value[index] = math.exp(math.log(self.value[index]) + self.increment[index])
                else:
                    self.value[index] = self.value[index] + self.increment[index]
            out[i].fill_(self.value[index])  # scripted, `out[i] = value` would round through float32
        return out


PRECISIONS = ("float32", "bfloat16")
"""Number formats the network can run in (``StreamCore(precision=...)``, see the model's
``use_precision``); the signal path around it stays float64. ``bfloat16`` is fast only where
the CPU multiplies it itself (AMX, AVX512-BF16)."""


class StreamCore(nn.Module):
    """The signal path of ``streams`` audio streams at the model's rate, around a codemap chain.

    :meth:`analyse` takes the next samples of every stream (any count) and returns the codes of
    the codemap columns they complete with the region's cells; the caller runs its chain on
    them and hands the latents to :meth:`synthesise`, which returns the change (resynthesis
    minus input, inside the region) of those columns' samples, aligned with the input: sample
    ``k`` of the concatenated outputs belongs to input sample ``k``, final ``latency_samples``
    after it arrived. ``aux_streams`` second sources (for ``cross``) are analysed in lockstep
    and encoded over the encoder's whole receptive field (the model's stateless ``encode``).

    Region parameters (``region``, indexed as :data:`REGION_INDEX`) are smoothed per hop; the
    band stops at ``band_top_hz`` (what the caller's output rate can carry). Call it under
    ``torch.no_grad()`` (the exported module's forward does), scripted (the engine does: many
    small ops per column cost ~20 % less CPU scripted than eagerly).

    Parameters
    ----------
    model : ModelFile
        A loaded model file; its weights are loaded into this version's network (which keeps
        the stream's state).
    streams, aux_streams : int
    """

    def __init__(self, model: ModelFile, *, streams: int, aux_streams: int = 0, precision: str = "float32"):
        super().__init__()
        if precision not in PRECISIONS:
            raise ParameterError(f"precision={precision!r} must be one of {', '.join(PRECISIONS)}")
        # this version's network with the file's weights: the streaming code a file holds is the
        # code it was exported with, and later versions stream faster (channels-last layouts)
        module = rebuild_module(model.module, model.config)
        module.reset_stream()
        self.model = module
        self.precision = precision
        cfg = model.config.stft
        self.sr = int(cfg.sr)
        self.n_fft = int(cfg.n_fft)
        self.hop = int(cfg.hop_length)
        self.time_stride = int(module.time_stride)
        self.freq_stride = int(module.freq_stride)
        self.n_rows = int(module.n_rows)
        self.n_bins = int(module.n_bins)
        self.span = int(cfg.synthesis_span)  # the synthesis window's length: the lag of the overlap-add
        self.latency_samples = stft_latency(span=self.span, hop=self.hop, time_stride=self.time_stride)
        self.band_top_hz = 0.5 * self.sr
        self.edge_bins = float(EDGE_BINS)
        self.gate_ramp_frames = int(GATE_RAMP_FRAMES)
        self.hop_s = self.hop / self.sr
        self.region = Ramps(REGION_PARAMETERS, hop_s=self.hop_s, values=[float(p.default) for p in REGION_PARAMETERS])
        self.analysis = AnalysisRing(cfg, streams)
        self.aux_analysis = AnalysisRing(cfg, aux_streams)
        self.synthesis = OverlapAdd(cfg, streams)
        # a frame of samples within +-1 has at most n_fft * sum(window^2) energy (Parseval)
        self.energy_ceiling = float(self.n_fft * float((analysis_window(cfg) ** 2).sum()))
        self.guard_ratio = GUARD_RATIO
        self.register_buffer("codebook", module.codebook.detach().clone())
        self.register_buffer("codebook_sq", self.codebook.pow(2).sum(1))
        rf = int(module.receptive_field_frames)
        # the second source is encoded over the encoder's whole receptive field
        self.aux_window_frames = -(-rf // self.time_stride) * self.time_stride
        with torch.no_grad():  # the code of each row for a silent input: what came before the stream
            silence = torch.zeros(1, self.n_bins, self.aux_window_frames)
            self.register_buffer("silence_column", module.encode(silence)[:, :, -1:].to(torch.long).clone())
        module.use_precision(torch.bfloat16 if precision == "bfloat16" else torch.float32)

        self.streams = streams
        self.aux_streams = aux_streams
        self.register_buffer("pending", torch.zeros(0, self.n_bins, 0, dtype=torch.complex128))
        self.register_buffer("aux_mag", torch.zeros(0, self.n_bins, 0))
        self.aux_mag_start = 0
        # what analyse() leaves for synthesise(): the columns' spectrum, mask and cells
        self.register_buffer("held_spec", torch.zeros(0, self.n_bins, 0, dtype=torch.complex128))
        self.register_buffer("held_magnitude", torch.zeros(0, self.n_bins, 0, dtype=torch.float64))
        self.register_buffer("held_mask", torch.zeros(0, self.n_bins, dtype=torch.float64))
        self.register_buffer("held_cells", torch.zeros(0, self.n_rows, dtype=torch.bool))
        # the last band's mask row and its edges (the band mostly stands still)
        self.register_buffer("mask_row", torch.zeros(0, self.n_bins, dtype=torch.float64))
        self.mask_low = -1.0
        self.mask_high = -1.0
        self.pre_roll_left = 0
        self.columns_done = 0
        self.first_column = 0
        self.gate = 1.0
        self.nonfinite_values = 0
        self.start(streams, aux_streams)

    @torch.jit.export
    def start(self, streams: int, aux_streams: int) -> None:
        """Clear the stream state for ``streams`` (+ ``aux_streams``) streams; region parameters
        land on their targets."""
        self.streams = streams
        self.aux_streams = aux_streams
        self.analysis.reset(streams)
        self.aux_analysis.reset(aux_streams)
        self.synthesis.reset(streams)
        self.pending = torch.zeros(streams, self.n_bins, 0, dtype=torch.complex128)
        self.aux_mag = torch.zeros(aux_streams, self.n_bins, 0)
        self.aux_mag_start = 0
        self.held_spec = torch.zeros(streams, self.n_bins, 0, dtype=torch.complex128)
        self.held_magnitude = torch.zeros(streams, self.n_bins, 0, dtype=torch.float64)
        self.pre_roll_left = self.span - self.hop
        self.columns_done = 0
        self.first_column = 0
        self.nonfinite_values = 0
        self.region.snap()
        period, duty = self.region.value[2], self.region.value[3]
        self.gate = float(gate_targets(torch.zeros(1, dtype=torch.long), period, duty, self.hop_s)[0])
        self.model.reset_stream()

    @torch.jit.export
    def set_region(self, index: int, value: float) -> int:
        """Region parameter ``index`` ramps to ``value`` (set at once before the first frame)."""
        return self.region.set_value(index, value, self.analysis.frames_done == 0)

    @torch.jit.export
    def analyse(self, x: torch.Tensor, aux: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next samples ``x`` [streams, n] and ``aux`` [aux_streams, n] (float64, any ``n``)
        -> ``(codes [streams, n_rows, k], cells [k, n_rows] bool, aux_codes [aux_streams, n_rows, k])``
        of the ``k`` columns they complete (``k`` may be 0); column ``first_column + j`` is the
        ``j``-th. Each call with ``k > 0`` must be followed by :meth:`synthesise`."""
        features, cells, aux_codes = self.analyse_input(x, aux)
        if cells.shape[0] == 0:
            return torch.zeros(self.streams, self.n_rows, 0, dtype=torch.long), cells, aux_codes
        # the module's search with the codebook's norms kept (its `quantize` computes them anew)
        codes = quantize_latent(self.model.stream_encode_latent(features), self.codebook, self.codebook_sq)
        return codes, cells, aux_codes

    @torch.jit.export
    def analyse_input(self, x: torch.Tensor, aux: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`analyse` up to the encoder: ``(features [streams, n_bins, k * time_stride] float32,
        cells, aux_codes)``, the encoder's input (:meth:`encoder_input`) of the ``k`` columns, for a
        caller that runs the network elsewhere (and then :meth:`synthesise_decoded`)."""
        aux_codes = self._aux_columns(aux)
        self.pending = torch.cat([self.pending, self.analysis(x)], dim=2)
        ts = self.time_stride
        n_new = self.pending.shape[2] // ts
        self.first_column = self.columns_done
        if n_new == 0:
            return torch.zeros(self.streams, self.n_bins, 0), torch.zeros(0, self.n_rows, dtype=torch.bool), aux_codes
        n_frames = n_new * ts
        spec = self.pending[:, :, :n_frames]
        self.pending = self.pending[:, :, n_frames:]
        mask, cells, _ = self.region_frames(n_frames)
        magnitude = spec.abs()
        self.held_spec = spec
        self.held_magnitude = magnitude
        self.held_mask = mask
        self.held_cells = cells
        self.columns_done += n_new
        return self.encoder_input(magnitude), cells, aux_codes

    @torch.jit.export
    def region_frames(self, n_frames: int) -> Tuple[torch.Tensor, torch.Tensor, bool]:
        """The region of the next ``n_frames`` frames (whole columns, from column ``columns_done``),
        frame by frame with smoothed parameters: ``(mask [n_frames, n_bins] float64, cells
        [n_frames // time_stride, n_rows] bool, still)``; its ramps and gate advance. ``still``:
        nothing ramps and the gate stays open, so the next frames have this mask until a region
        parameter is set."""
        ts = self.time_stride
        period, duty = self.region.value[2], self.region.value[3]  # not smoothed: no ramps
        if self.gate == 1.0 and (period <= 0.0 or duty >= 1.0):  # open and staying open: no slew loop
            gate = torch.ones(n_frames, dtype=torch.float64)
        else:
            c0 = self.columns_done
            frames = torch.arange(c0 * ts, c0 * ts + n_frames)
            gate = slew_gate(gate_targets(frames, period, duty, self.hop_s), self.gate, self.gate_ramp_frames)
        self.gate = float(gate[-1])
        if self.region.left[4] == 0:  # wet standing still: one number
            level = gate * self.region.value[4]
        else:
            level = gate * self.region.advance(4, n_frames)
        mask = self._band_mask(n_frames) * level[:, None]
        left = self.region.left
        still = left[0] == 0 and left[1] == 0 and left[4] == 0 and self.gate == 1.0 and (period <= 0.0 or duty >= 1.0)
        return mask, region_cells(mask, ts, self.freq_stride, self.n_rows), still

    def _band_mask(self, n: int) -> torch.Tensor:
        """The band's mask for the next ``n`` frames ``[n, n_bins]``, its edges smoothed; the
        band mostly stands still, and then the last mask is reused."""
        if self.region.left[0] > 0 or self.region.left[1] > 0:
            low = self.region.advance(0, n)
            high = torch.clamp_max(self.region.advance(1, n), self.band_top_hz)
            return band_mask(low, high, self.sr, self.n_fft, self.edge_bins)
        low_hz, high_hz = self.region.value[0], min(self.region.value[1], self.band_top_hz)
        if low_hz != self.mask_low or high_hz != self.mask_high or self.mask_row.shape[0] == 0:
            # torch.full, not torch.tensor([...]): scripted, that would round through float32
            low = torch.full([1], low_hz, dtype=torch.float64)
            high = torch.full([1], high_hz, dtype=torch.float64)
            self.mask_row = band_mask(low, high, self.sr, self.n_fft, self.edge_bins)
            self.mask_low, self.mask_high = low_hz, high_hz
        return self.mask_row.expand(n, -1)

    @torch.jit.export
    def encoder_input(self, magnitude: torch.Tensor) -> torch.Tensor:
        """The magnitude ``[streams, n_bins, frames]`` the encoder sees, float32: a frame with
        more energy than samples within +-1 can give (Parseval) is scaled down to that, so a
        burst (1e6) leaves the codes of a loud sound in the model's memory, not codes it never
        learned, which it would keep decoding, loud, for columns after the burst. Frames of
        legal input are untouched."""
        energy = (magnitude * magnitude).sum(dim=1, keepdim=True)
        scale = torch.sqrt(self.energy_ceiling / torch.clamp_min(energy, self.energy_ceiling))
        return (magnitude * scale).float()

    def _aux_columns(self, aux: torch.Tensor) -> torch.Tensor:
        """Codes ``[aux_streams, n_rows, k]`` of the second sources' columns that ``aux``
        completes: the same ``k`` columns as the input's in the same call (same samples, same STFT)."""
        if self.aux_streams == 0:
            return torch.zeros(0, self.n_rows, 0, dtype=torch.long)
        spec = self.aux_analysis(aux)
        ts = self.time_stride
        c0 = self.columns_done
        frames = self.aux_mag_start + self.aux_mag.shape[2] + spec.shape[2]
        n_new = frames // ts - c0
        self.aux_mag = torch.cat([self.aux_mag, spec.abs().float()], dim=2)
        if n_new <= 0:
            return torch.zeros(self.aux_streams, self.n_rows, 0, dtype=torch.long)
        start = max(0, (c0 + 1) * ts - self.aux_window_frames)
        end = (c0 + n_new) * ts
        window = self.aux_mag[:, :, start - self.aux_mag_start : end - self.aux_mag_start]
        codes = self.model.encode(window)[:, :, window.shape[2] // ts - n_new :]
        keep_from = max(0, (c0 + n_new + 1) * ts - self.aux_window_frames)
        self.aux_mag = self.aux_mag[:, :, keep_from - self.aux_mag_start :]
        self.aux_mag_start = keep_from
        return codes

    @torch.jit.export
    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[streams, n_rows, k]`` -> latents ``[streams, D, n_rows, k]``."""
        return F.embedding(codes, self.codebook).permute(0, 3, 1, 2)

    @torch.jit.export
    def synthesise(self, latent: torch.Tensor) -> torch.Tensor:
        """Latents ``[streams, D, n_rows, k]`` of the columns :meth:`analyse` returned -> their
        change samples ``[streams, m]`` float64, aligned with the input (the overlap-add's
        pre-roll dropped, so the first ``span - hop`` samples of the stream come later)."""
        rows = self.decode_rows()
        return self.synthesise_decoded(self.model.stream_decode_latent(latent, rows[0], rows[1], rows[2]))

    @torch.jit.export
    def decode_rows(self) -> List[int]:
        """``[low_row, high_row, first_column]`` of the cells the held columns need decoded: only
        cells inside the region are heard, so the decoder's head runs on those alone (rows
        ``low_row <= row < high_row`` of the columns from ``first_column`` on; ``[0, 0, k]``: none)."""
        cells = self.held_cells
        rows = torch.nonzero(cells.any(dim=0)).flatten()
        if rows.numel() == 0:
            return [0, 0, cells.shape[0]]
        columns = torch.nonzero(cells.any(dim=1)).flatten()
        return [int(rows[0]), int(rows[-1]) + 1, int(columns[0])]

    @torch.jit.export
    def synthesise_decoded(self, decoded: torch.Tensor) -> torch.Tensor:
        """:meth:`synthesise` from the decoder's output: linear magnitude ``[streams, n_bins,
        k * time_stride]`` float32 of the cells :meth:`decode_rows` names (0 elsewhere)."""
        spec, magnitude = self.held_spec, self.held_magnitude
        self.held_spec, self.held_magnitude = spec[:, :, :0], magnitude[:, :, :0]
        decoded = decoded.double()
        # a model that overflows (exp of a large log-magnitude) must not reach the output: the
        # input's magnitude is used there
        finite = torch.isfinite(decoded)
        if not bool(finite.all()):
            self.nonfinite_values += int((~finite).sum())
            decoded = torch.where(finite, decoded, magnitude)
        energy = (magnitude * magnitude).sum(dim=1)  # [streams, frames]
        # a frame louder than any input within +-1 can be plays dry: its change, spread by the
        # band's edges over the whole analysis window, would outlast the burst
        region = self.held_mask.t()[None] * (energy <= self.energy_ceiling).to(torch.float64)[:, None, :]
        decoded = decoded * self._loudness_guard(magnitude, energy, region * decoded, (1.0 - region) * magnitude)[:, None, :]
        positive = magnitude > 0.0
        phase = torch.where(positive, spec / torch.where(positive, magnitude, 1.0), 1.0)
        out = self.synthesis(region * (decoded - magnitude) * phase)
        if self.pre_roll_left > 0:
            drop = min(self.pre_roll_left, out.shape[1])
            out = out[:, drop:]
            self.pre_roll_left -= drop
        return out

    def _loudness_guard(self, magnitude: torch.Tensor, energy: torch.Tensor, inside: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
        """Gain ``[streams, frames]`` in [0, 1] on the regenerated magnitude so that no frame of
        the output spectrum (``outside`` + ``inside``) has more than :data:`GUARD_RATIO` (+6 dB)
        over the input frame's (``energy``, its sum of squared magnitudes): codes regenerated from
        a loud neighbour (inpainting a band next to a full-scale tone) can otherwise decode
        several times louder than anything played (Minkowski: |outside + g inside| <= |outside| + g |inside|)."""
        limit = self.guard_ratio * torch.sqrt(energy)
        rest = torch.sqrt((outside * outside).sum(dim=1))
        regenerated = torch.sqrt((inside * inside).sum(dim=1))
        gain = torch.clamp((limit - rest) / torch.clamp_min(regenerated, 1e-30), 0.0, 1.0)
        return torch.where(rest + regenerated > limit, gain, 1.0)
