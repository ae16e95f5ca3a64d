"""The column step with its network in ONNX Runtime: the live engine's variant of one call per block.

The scripted step keeps the region, the parameters and the built-in effects (their draws and
histories); the network (encoder, code search, decoder, the neural prior's) runs as ONNX Runtime
calls one column at a time, and the spectrum's analysis and synthesis in numpy. A chain of
``inpaint`` alone (neural prior or spatial naive Bayes) also runs here, with the step's keyed draws.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from spectro_fx.models.errors import ParameterError
from spectro_fx.models.export import ModelFile, rebuild_module
from spectro_fx.models.naive_bayes import gaussian_nb_predict, sample_log_weights
from spectro_fx.models.onnx_stream import ColumnNetwork, PriorNetwork, runtime_available

from . import builtin
from .step import NEURAL

RUNTIMES = ("torchscript", "onnxruntime", "auto")
"""Where the engine runs the network: ``torchscript`` (the exported module's code; best for long
offline blocks), ``onnxruntime`` (a live column in about half the CPU), ``auto`` (ONNX Runtime where
it is installed and the network runs in float32, else TorchScript)."""


def resolve_runtime(runtime: str, *, precision: str) -> str:
    """``runtime`` (one of :data:`RUNTIMES`) as it will run here: ``auto`` resolved, and
    ``onnxruntime`` checked (float32 only; installed)."""
    if runtime not in RUNTIMES:
        raise ParameterError(f"runtime={runtime!r} must be one of {', '.join(RUNTIMES)}")
    if runtime == "torchscript":
        return runtime
    if precision != "float32":
        if runtime == "onnxruntime":
            raise ParameterError(f"runtime='onnxruntime' runs the network in float32; precision={precision!r} needs runtime='torchscript'")
        return "torchscript"
    if not runtime_available():
        if runtime == "onnxruntime":
            raise ParameterError("runtime='onnxruntime' needs the onnxruntime package (pip install onnxruntime)")
        return "torchscript"
    return "onnxruntime"


class _CellsPlan(NamedTuple):
    """What a region's cells [k, n_rows] decide for :class:`RuntimeStep`: the rows and first
    column to decode (:func:`_decode_rows`), and the neural prior's batch (one row per column and
    stream): its known cells [k * streams, n_rows], the asked cells [N, 2] (batch row, row), and
    each asked cell's column (of k) and stream."""

    cells: np.ndarray
    decode_rows: tuple[int, int, int]
    known: np.ndarray
    asked: np.ndarray
    column: np.ndarray
    stream: np.ndarray


class RuntimeStep:
    """A scripted :class:`~spectro_fx.effect.core.step.ColumnStep` whose network runs in ONNX
    Runtime: :meth:`process` as the step's, the same output up to float32 rounding of the network.

    The step keeps the region (asked only while it moves), the parameters and the chain; the
    network runs here one column at a time, and the analysis (ring, transform, encoder input)
    and synthesis (loudness guard, the input's phase, overlap-add on the step's buffer) in numpy:
    the arithmetic of the core's ``analyse_input`` and ``synthesise_decoded``, held equal to them
    by the tests (1e-5). The stream state moves between here and the step's own layers and
    buffers with :meth:`hand_over` / :meth:`take_over` (a caller that runs the scripted path for
    a while in between: the engine's split path). A second source (``cross``) is analysed by
    the step.

    Parameters
    ----------
    model : ModelFile
    step : torch.jit.ScriptModule
        The scripted step (its parameters, chain and histories are used as they are).
    streams : int > 0
    """

    def __init__(self, model: ModelFile, step: Any, *, streams: int):
        self.step = step
        core = step.core
        module = rebuild_module(model.module, model.config, learned_prior=False)  # the network's weights
        self.network = ColumnNetwork(module, streams=streams)
        self.prior = PriorNetwork(module.neural_prior) if bool(module.has_neural_prior) else None
        self.context_columns = int(module.neural_prior.context_columns) if self.prior is not None else 0
        self.last_columns = 0
        self.aux_streams = 0
        cfg = model.config.stft
        self.n_fft, self.hop, self.span = int(cfg.n_fft), int(cfg.hop_length), int(cfg.synthesis_span)
        self.n_bins = int(core.n_bins)
        self.n_rows = int(core.n_rows)
        self.analysis_window = core.analysis.window.numpy().copy()
        self.window = core.synthesis.window.numpy().copy()
        self.norm = core.synthesis.norm.numpy().copy()
        self._norms: dict[int, np.ndarray] = {}  # the norm tiled over count frames
        self._frame_index: dict[int, np.ndarray] = {}  # ring positions of count frames
        self.energy_ceiling = float(core.energy_ceiling)
        self.guard_ratio = float(core.guard_ratio)
        self.codebook = core.codebook.numpy().copy()
        # set by the engine: inpainting reads its own earlier output (``inpaint.context=output``;
        # run here for the neural prior alone), not the input's codes
        self.output_context = False

    def start(self, streams: int, aux_streams: int) -> None:
        """Clear the stream state (as the step's ``start``)."""
        if streams != self.network.streams:
            raise ParameterError(f"streams={streams}; this step was built for {self.network.streams}")
        self.step.start(streams, aux_streams)
        self.network.reset()
        self.aux_streams = aux_streams
        self.last_columns = 0
        self._ring = np.zeros((streams, self.n_fft - self.hop))
        self._pending = np.zeros((streams, 0, self.n_bins), np.complex128)  # frames first
        self._region_valid = False  # whether _region is the next columns' (the region stands still)
        self._region: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
        self._plan: _CellsPlan | None = None  # what the region's cells decide (kept while it stands still)
        self._ahead: tuple | None = None  # (plan, seed, first column, uniforms [columns, cells]) of _draws
        self._no_samples = np.zeros((streams, 0))
        self._no_codes = torch.zeros(0, self.n_rows, 0, dtype=torch.long)
        self._take_counters()
        self._take_chain()

    def region_changed(self) -> None:
        """A region parameter was set on the step (the next columns ask it for their region)."""
        self._region_valid = False

    def parameters_changed(self) -> None:
        """An effect parameter was set on the step (the next column asks it what the chain is)."""
        self._inpaint = None
        self._temperature = None
        self._tail = None

    def _take_counters(self) -> None:
        """The core's stream counters and overlap-add buffer, kept here between calls (reading a
        scripted module's attributes costs several microseconds each)."""
        core = self.step.core
        self._frames_done = int(core.analysis.frames_done)
        self._columns_done = int(core.columns_done)
        self._pre_roll_left = int(core.pre_roll_left)
        self.nonfinite_values = int(core.nonfinite_values)
        self._overlap = core.synthesis.overlap.numpy()  # the buffer's memory: updated in place

    def _take_chain(self) -> None:
        """What the chain is, from the step (whose histories are current)."""
        self._effects = bool(self.step.chain_codes or self.step.chain_latents)
        # a chain of inpaint alone run here: ("neural",) or ("spatial", offsets, reach, fallback log
        # prior), False when the step runs the chain, None: ask the step at the next column
        self._inpaint: tuple | bool | None = None
        # its temperature while the ramp stands still (None: ask the step), the last codes it
        # reads [streams, n_rows, columns] (None: from the step's histories), the input's or, with
        # output context, its own (_tail_output), and the (outputs, inputs) columns not yet pushed
        # to the step's histories
        self._temperature: float | None = None
        self._tail: np.ndarray | None = None
        self._tail_output = False
        self._unpushed: list[tuple[np.ndarray, np.ndarray]] = []
        self._seed = int(self.step.seed)

    def _give_counters(self) -> None:
        core = self.step.core
        core.analysis.frames_done = self._frames_done
        core.columns_done = self._columns_done
        core.first_column = self._columns_done
        core.pre_roll_left = self._pre_roll_left
        core.nonfinite_values = self.nonfinite_values

    def hand_over(self) -> None:
        """The stream state into the step's own layers and buffers (the scripted path goes on from here)."""
        self._push_histories()
        core = self.step.core
        self.network.store_state(core.model)
        if not self.aux_streams:  # (with a second source the step analyses: its ring is current)
            core.analysis.ring = torch.from_numpy(self._ring.copy())
            core.pending = torch.from_numpy(self._pending.transpose(0, 2, 1).copy())
        self._give_counters()

    def take_over(self) -> None:
        """The stream state from the step's own layers and buffers (this path goes on from there)."""
        core = self.step.core
        self.network.load_state(core.model)
        if not self.aux_streams:
            self._ring = core.analysis.ring.numpy().copy()
            self._pending = core.pending.numpy().transpose(0, 2, 1).copy()
        self._region_valid = False
        self._take_counters()
        self._take_chain()

    def process(self, x: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """The next samples ``x`` [streams, n] and ``aux`` [aux_streams, n] (float64) -> the change
        samples ``[streams, m]`` float64 of the ``last_columns`` columns they complete."""
        step = self.step
        core = step.core
        if self.aux_streams:  # a second source is analysed and encoded in the step
            self._give_counters()
            features, cells, aux_codes = core.analyse_input(torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(aux)))
            self._take_counters()
            features = features.numpy()
            held = (core.held_spec.numpy().transpose(0, 2, 1), core.held_magnitude.numpy().transpose(0, 2, 1),
                    core.held_mask.numpy())
            cells = cells.numpy()
        else:
            found = self._analyse(core, x)
            if found is None:
                self.last_columns = 0
                return self._no_samples
            features, cells, held = found
            aux_codes = self._no_codes
        k = cells.shape[0]
        self.last_columns = k
        if k == 0:
            return self._no_samples
        ts = self.network.time_stride
        if k == 1:  # live: one column (the encoder's input buffer takes the frames as they are)
            codes = self.network.encode(features)[:, :, None]
        else:
            codes = np.stack([self.network.encode(features[:, :, j * ts : (j + 1) * ts]) for j in range(k)], axis=2)
        if self._inpaint is None:
            self._inpaint = self._ask_inpaint()
        if self._inpaint and cells.any():
            latent = self._inpaint_here(codes, cells)
        elif self._effects:
            self._push_histories()  # the step's chain reads and advances them
            self._tail = None
            core.first_column = self._columns_done - k  # the chain keys its draws by absolute column
            inputs = torch.from_numpy(codes)
            neural, first, columns, known, unknown, temperature = step.chain_begin(inputs, torch.from_numpy(cells), aux_codes)
            if neural:  # the prior's network here (first: its context), its draws in the step
                logits = self.prior.logits(first.numpy(), columns.numpy(), known.numpy(), unknown.numpy())
                first = step.chain_finish(inputs, torch.from_numpy(logits), unknown, columns, temperature)
            latent = first.numpy()
        else:  # nothing to change: the codes' vectors (no history is read without an effect)
            latent = self.codebook[codes].transpose(0, 3, 1, 2)
        low, high, first = self._cells_plan(cells).decode_rows
        columns = [self.network.decode(latent[:, :, :, j], *((low, high) if j >= first else (0, 0)))
                   for j in range(k)]
        if k == 1 and columns[0] is not None:
            return self._synthesise(columns[0], *held)
        decoded = np.zeros(features.shape, np.float32)
        for j, column in enumerate(columns):
            if column is not None:
                decoded[:, :, j * ts : (j + 1) * ts] = column
        return self._synthesise(decoded, *held)

    def _ask_inpaint(self) -> tuple | bool:
        """How a chain of ``inpaint`` alone draws, from the step, when this class can run it."""
        method, radius, axis = self.step.inpaint_alone() if self._effects else (-1, 0, 0)
        if method == NEURAL and self.prior is not None:
            return ("neural",)
        if method == 0:
            offsets = builtin.spatial_offsets(radius, axis).numpy()
            return ("spatial", offsets, radius if axis != 1 else 0, self.step.fallback_log_prior.numpy().copy())
        return False

    def _inpaint_here(self, codes: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """The step's chain when it is ``inpaint`` alone with the neural prior or the spatial naive
        Bayes, run here with no call into the step while the temperature stands still: the codes
        ``[streams, n_rows, k]`` of ``k`` columns whose region is ``cells`` [k, n_rows] -> their
        latents ``[streams, D, n_rows, k]``. Each region cell is drawn given the encoder's codes
        around it (earlier columns, the other rows of its own); the draws are the step's keyed
        uniforms, the histories reach the step in batches."""
        streams, rows, k = codes.shape
        if self._temperature is None:
            values, settled = self.step.inpaint_temperatures(k)
            temperature = values.numpy()
            self._temperature = float(temperature[-1]) if settled else None
        else:
            temperature = np.full(k, self._temperature)
        width = self.context_columns if self._inpaint[0] == "neural" else self._inpaint[2]
        output = self.output_context and self._inpaint[0] == "neural"
        if self._tail is None or self._tail_output != output:
            self._push_histories()
            history = (self.step.history if output else self.step.input_history).numpy()
            tail = history[:, :, max(history.shape[2] - width, 0) :]
            if tail.shape[2] < width:  # before the stream: unknown
                tail = np.concatenate([np.full((streams, rows, width - tail.shape[2]), -1, np.int64), tail], axis=2)
            self._tail, self._tail_output = tail, output
        if output:  # the paper's recursion: each column reads the columns drawn before it
            drawn = self._neural_output(codes, cells, temperature)
        else:
            full = np.concatenate([self._tail, codes], axis=2)  # [streams, rows, width + k]
            self._tail = full[:, :, k:]
            if self._inpaint[0] == "neural":
                drawn = self._neural(full, codes, cells, temperature)
            else:
                drawn = self._spatial(full, codes, cells, temperature)
        self._unpushed.append((drawn, codes))
        if len(self._unpushed) >= 16:
            self._push_histories()
        return self.codebook[drawn].transpose(0, 3, 1, 2)

    def _neural_output(self, codes: np.ndarray, cells: np.ndarray, temperature: np.ndarray) -> np.ndarray:
        """The neural prior with ``context=output`` (the inpaint plugin's column loop): codes
        ``[streams, n_rows, k]`` with the region's drawn, one column after the other, each reading
        the ``context_columns`` columns drawn before it (the tail kept here)."""
        k = codes.shape[2]
        if k == 1:  # live: one column (its cells array is the region's own, so its plan is kept)
            columns = [(codes, cells, temperature)]
        else:
            columns = [(codes[:, :, j : j + 1], cells[j : j + 1], temperature[j : j + 1]) for j in range(k)]
        drawn = []
        for j, (column, column_cells, column_temperature) in enumerate(columns):
            if column_cells.any():
                full = np.concatenate([self._tail, column], axis=2)
                column = self._neural(full, column, column_cells, column_temperature, first=self._columns_done - k + j)
            self._tail = np.concatenate([self._tail[:, :, 1:], column], axis=2)
            drawn.append(column)
        return drawn[0] if k == 1 else np.concatenate(drawn, axis=2)

    def _neural(self, full: np.ndarray, codes: np.ndarray, cells: np.ndarray, temperature: np.ndarray,
                first: int | None = None) -> np.ndarray:
        """``builtin.neural_batch`` + the prior + ``builtin.neural_pick``: codes ``[streams,
        n_rows, k]`` with the region's drawn, the earlier columns in ``full``; ``first``: the
        stream's column of the first of them (default: the last ``k`` columns analysed)."""
        streams, rows, k = codes.shape
        c = self.context_columns
        # one batch row per (column, stream), as builtin.neural_batch orders them
        if k == 1:
            context, columns = np.ascontiguousarray(full[:, :, :c]), codes[:, :, 0].copy()
        else:
            context = np.stack([full[:, :, j : j + c] for j in range(k)]).reshape(k * streams, rows, c)
            columns = codes.transpose(2, 0, 1).reshape(k * streams, rows).copy()  # (a view of codes for one column)
        plan = self._cells_plan(cells)
        asked, column = plan.asked, plan.column
        uniforms = self._draws(plan, k, streams, rows, first)
        cell_temperature = temperature[column]
        picked, unsure, logits = self.prior.draw(context, columns, plan.known, asked, uniforms, cell_temperature)
        if logits.shape[0]:  # draws float32 cannot decide (and temperature 0): float64 decides
            picked[unsure] = _sample_finite(logits, uniforms[unsure], cell_temperature[unsure])
        columns[asked[:, 0], asked[:, 1]] = picked
        return np.ascontiguousarray(columns.reshape(k, streams, rows).transpose(1, 2, 0))

    def _cells_plan(self, cells: np.ndarray) -> _CellsPlan:
        """What a region's ``cells`` [k, n_rows] decide, worked out once while the region stands
        still (the step hands back the same array then): :class:`_CellsPlan`."""
        if self._plan is None or self._plan.cells is not cells:
            streams = self.network.streams
            unknown = np.repeat(cells, streams, axis=0)  # batch row b is stream b % S of column b // S
            asked = np.argwhere(unknown)
            self._plan = _CellsPlan(cells, _decode_rows(cells), ~unknown, asked, asked[:, 0] // streams,
                                    asked[:, 0] % streams)
        return self._plan

    def _draws(self, plan: _CellsPlan, k: int, streams: int, rows: int, first: int | None = None) -> np.ndarray:
        """The keyed uniforms of ``plan``'s asked cells in ``k`` columns from column ``first``
        (default: the last ``k`` analysed). One column at a time (live) with the region standing
        still, those of the next :data:`_DRAWS_AHEAD` columns are mixed in one numpy pass instead
        of one a column."""
        first = self._columns_done - k if first is None else first
        ahead = self._ahead
        if k == 1 and ahead is not None and ahead[1] == self._seed and (
                ahead[0] is plan or np.array_equal(ahead[0].asked, plan.asked)):
            if ahead[3] is None or not 0 <= first - ahead[2] < _DRAWS_AHEAD:  # the same cells again: the next columns at once
                columns = first + np.arange(_DRAWS_AHEAD)[:, None]
                keys = _cell_keys(plan.stream[None, :], plan.asked[None, :, 1], columns, streams, rows)
                ahead = self._ahead = (plan, self._seed, first, _uniforms(keys, self._seed))
            return ahead[3][first - ahead[2]]
        if k == 1:  # a region just set (a knob moving): this column alone
            self._ahead = (plan, self._seed, first, None)
        return _uniforms(_cell_keys(plan.stream, plan.asked[:, 1], first + plan.column, streams, rows), self._seed)

    def _spatial(self, full: np.ndarray, codes: np.ndarray, cells: np.ndarray, temperature: np.ndarray) -> np.ndarray:
        """``builtin.inpaint_redraw`` of the spatial method through the numpy naive Bayes (the
        reference): codes ``[streams, n_rows, k]`` with the region's drawn, the earlier input
        columns in ``full``."""
        _, offsets, reach, fallback = self._inpaint
        streams, rows, k = codes.shape
        stream, row, column = np.nonzero(np.broadcast_to(cells.T[None], (streams, rows, k)))
        at_row = row[:, None] + offsets[None, :, 1]
        at_column = reach + column[:, None] + offsets[None, :, 0]
        inside = (at_row >= 0) & (at_row < rows) & (at_column >= 0)
        values = np.where(inside, full[stream[:, None], at_row.clip(0, rows - 1), at_column.clip(0, None)], -1)
        uniforms = _uniforms(_cell_keys(stream, row, self._columns_done - k + column, streams, rows), self._seed)
        picked = np.empty(stream.size, np.int64)
        cell_temperature = temperature[column]
        for t in np.unique(cell_temperature):
            at = cell_temperature == t
            with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 for cells of one neighbour
                chosen, has_neighbour = gaussian_nb_predict(values[at], offsets, uniforms[at], float(t))
            lonely = ~has_neighbour
            if lonely.any():  # no known neighbour: the fallback prior
                chosen[lonely] = sample_log_weights(np.broadcast_to(fallback, (int(lonely.sum()), fallback.size)),
                                                    uniforms[at][lonely], temperature=float(t))
            picked[at] = chosen
        drawn = codes.copy()
        drawn[stream, row, column] = picked
        return drawn

    def _push_histories(self) -> None:
        """The columns drawn here into the step's histories (one call for many columns)."""
        if self._unpushed:
            outputs, inputs = zip(*self._unpushed)
            self._unpushed = []
            self.step.push_history(torch.from_numpy(np.concatenate(outputs, axis=2)),
                                   torch.from_numpy(np.concatenate(inputs, axis=2)))

    def _analyse(self, core: Any, x: np.ndarray) -> tuple | None:
        """The step core's ``analyse_input`` in numpy, frames first (its ring and pending frames
        kept here, its counters and region in the core): ``(features [streams, n_bins, frames]
        float64, cells [k, n_rows] bool, (spec, magnitude, mask))`` of the ``k`` columns ``x``
        completes, or None."""
        n_fft, hop, ts = self.n_fft, self.hop, self.network.time_stride
        ring = np.concatenate([self._ring, x], axis=1)
        count = (ring.shape[1] - (n_fft - hop)) // hop
        if count <= 0:
            self._ring = ring
            return None
        if count not in self._frame_index:
            self._frame_index[count] = hop * np.arange(count)[:, None] + np.arange(n_fft)[None]
        frames = ring[:, self._frame_index[count]]  # [streams, count, n_fft]
        self._ring = ring[:, count * hop :]
        if self._frames_done == 0:  # the step's "before the first frame" (parameters jump, not ramp) ends
            core.analysis.frames_done = count
        self._frames_done += count
        pending = np.concatenate([self._pending, np.fft.rfft(frames * self.analysis_window, axis=-1)], axis=1)
        n_frames = pending.shape[1] // ts * ts
        self._pending = pending[:, n_frames:]
        if n_frames == 0:
            return None
        spec = pending[:, :n_frames]
        mask, cells = self._region_frames(core, n_frames)
        self._columns_done += n_frames // ts
        magnitude = np.abs(spec)
        # the encoder's input: a frame louder than samples within +-1 can be is scaled down to that
        energy = np.add.reduce(magnitude * magnitude, axis=-1, keepdims=True)
        if energy.max() > self.energy_ceiling:
            magnitude_in = magnitude * np.sqrt(self.energy_ceiling / np.maximum(energy, self.energy_ceiling))
        else:  # (the scale would be 1.0 exactly)
            magnitude_in = magnitude
        features = magnitude_in.transpose(0, 2, 1)  # (float32 in the encoder's input buffer)
        return features, cells, (spec, magnitude, mask, energy)

    def _region_frames(self, core: Any, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """The core's ``region_frames``; while the region stands still, its last mask and cells
        again (no scripted call)."""
        if self._region_valid and self._region[0].shape[0] == n_frames:
            return self._region
        core.columns_done = self._columns_done  # the gate's phase
        mask, cells, still = core.region_frames(n_frames)
        self._region = (mask.numpy(), cells.numpy())
        self._region_valid = still
        return self._region

    def _synthesise(self, decoded: np.ndarray, spec: np.ndarray, magnitude: np.ndarray, mask: np.ndarray,
                    energy: np.ndarray | None = None) -> np.ndarray:
        """The step core's ``synthesise_decoded`` in numpy (one to three microseconds an op where
        the scripted ops cost several), frames first so every sum runs along memory: the change
        samples ``[streams, m]`` float64 of the columns of ``spec`` / ``magnitude`` [streams,
        frames, n_bins] and ``mask`` [frames, n_bins]; ``energy`` [streams, frames, 1], the frames'
        energy (from ``magnitude`` when not given). The common case takes no more operations than
        it needs (no loud frame, no bin of zero magnitude); every case gives the same numbers."""
        core = self.step.core
        decoded = decoded.transpose(0, 2, 1).astype(np.float64)
        if not np.isfinite(np.add.reduce(decoded, axis=None)):  # (a sum of floats is finite when each is)
            finite = np.isfinite(decoded)
            self.nonfinite_values += int((~finite).sum())
            decoded = np.where(finite, decoded, magnitude)
        if energy is None:
            energy = np.add.reduce(magnitude * magnitude, axis=-1, keepdims=True)
        region = mask * (energy <= self.energy_ceiling)
        inside, outside = region * decoded, (1.0 - region) * magnitude
        limit = self.guard_ratio * np.sqrt(energy)
        rest = np.sqrt(np.add.reduce(outside * outside, axis=-1, keepdims=True))
        regenerated = np.sqrt(np.add.reduce(inside * inside, axis=-1, keepdims=True))
        loud = rest + regenerated > limit
        if loud.any():
            gain = np.minimum(np.maximum((limit - rest) / np.maximum(regenerated, 1e-30), 0.0), 1.0)
            decoded = decoded * np.where(loud, gain, 1.0)
        if magnitude.min() > 0.0:
            phase = spec / magnitude
        else:  # a bin of zero magnitude (digital silence) has no phase: 1
            positive = magnitude > 0.0
            phase = np.where(positive, spec / np.where(positive, magnitude, 1.0), 1.0)
        out = self._overlap_add(core, region * (decoded - magnitude) * phase)
        drop = min(self._pre_roll_left, out.shape[1])
        if drop > 0:
            out = out[:, drop:]
            self._pre_roll_left -= drop
        return out

    def _overlap_add(self, core: Any, spec: np.ndarray) -> np.ndarray:
        """Frames ``[streams, count, n_bins]`` -> ``[streams, count * hop]`` samples, the step's
        overlap-add buffer carried on (the core's ``synthesis``)."""
        hop, span = self.hop, self.span
        overlap = self._overlap
        streams, count = spec.shape[0], spec.shape[1]
        out = np.empty((streams, count * hop))
        if spec.any():
            frames = np.fft.irfft(spec, n=self.n_fft, axis=-1)[:, :, self.n_fft - span :] * self.window
        else:
            frames = np.zeros((streams, count, span))
        for t in range(count):
            overlap += frames[:, t]
            out[:, t * hop : (t + 1) * hop] = overlap[:, :hop]
            overlap[:, : span - hop] = overlap[:, hop:].copy()
            overlap[:, span - hop :] = 0.0
        if count not in self._norms:
            self._norms[count] = np.tile(self.norm, count)[None]
        return out / self._norms[count]


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


_DRAWS_AHEAD = 64
"""Columns whose inpainting uniforms :meth:`RuntimeStep._draws` mixes at once (256 ms of the default model)."""


def _cell_keys(streams: np.ndarray, rows: np.ndarray, columns: np.ndarray, n_streams: int, n_rows: int) -> np.ndarray:
    """:func:`~spectro_fx.effect.core.builtin.cell_keys` of inpainting's draws (purpose 2) in numpy."""
    return ((columns * n_streams + streams) * n_rows + rows) * 4 + 2


def _uniforms(keys: np.ndarray, seed: int) -> np.ndarray:
    """:func:`~spectro_fx.effect.core.builtin.uniforms` in numpy (the same splitmix64 bits, in
    unsigned arithmetic): one float64 in [0, 1) per int64 key."""
    offset = np.uint64((seed + 1) * int(_GOLDEN) % (1 << 64))
    z = keys.astype(np.uint64) + offset
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _sample_finite(logits: np.ndarray, draws: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """:func:`~spectro_fx.effect.core.builtin.sample_finite` in numpy, float64: one index per row
    of ``logits`` [N, K] from ``softmax(logits / temperature)`` by inverse CDF with ``draws`` [N]
    (temperature 0: the first maximum). The engine draws in the prior's graph, in float32, and
    here only where float32 cannot decide (a few rows)."""
    greedy = np.argmax(logits, axis=1)
    if not (temperature > 0.0).any():  # (every draw at temperature 0 comes here: no weights needed)
        return greedy
    weights = logits.astype(np.float64) - logits[np.arange(len(greedy)), greedy][:, None]
    weights /= np.maximum(temperature, 1e-12)[:, None]
    cumulative = np.cumsum(np.exp(weights, out=weights), axis=1)  # unnormalised: the draw scales to the sum
    sampled = np.count_nonzero(cumulative <= (draws * cumulative[:, -1])[:, None], axis=1)
    return np.where(temperature > 0.0, np.minimum(sampled, logits.shape[1] - 1), greedy)


def _decode_rows(cells: np.ndarray) -> tuple[int, int, int]:
    """The core's ``decode_rows`` of ``cells`` [k, n_rows] bool."""
    rows = np.flatnonzero(cells.any(axis=0))
    if rows.size == 0:
        return 0, 0, cells.shape[0]
    return int(rows[0]), int(rows[-1]) + 1, int(np.flatnonzero(cells.any(axis=1))[0])

