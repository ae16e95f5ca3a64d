"""The streaming engine: audio blocks in, audio blocks out, through codemaps of the model.

Python around the column step (:class:`~spectro_fx.effect.core.step.ColumnStep`, the one the exported
module scripts): the dry delay, resampling and parameters; built-in chains run fused in the step,
others in Python between its analysis (samples -> codes) and synthesis (latents -> samples).
"""

from __future__ import annotations

import copy
import functools
import threading
import time
import warnings
from collections import OrderedDict, deque
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from spectro_fx.models.errors import ParameterError, non_negative_int, positive_int
from spectro_fx.models.export import ModelFile

from .effects import CodemapContext, Effect, Parameter, make_chain, order_note, stages
from .params import ParameterBank
from .runtime_step import RuntimeStep, resolve_runtime
from .step import BUILTIN_EFFECTS, INDEX, ColumnStep, is_builtin, smooth_prior_tables, step_value
from .step_cache import cached_script
from .stream import REGION_INDEX, Ramps

RESAMPLE_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
_TINY = np.float32(np.finfo(np.float32).tiny)  # smallest normal float32; below it (not 0) is subnormal
_LARGEST = np.float32(np.finfo(np.float32).max)


_STEPS: "OrderedDict[tuple[int, int, int, str], tuple[torch.nn.Module, torch.jit.ScriptModule]]" = OrderedDict()
_STEPS_LOCK = threading.Lock()


def _scripted_step(model: ModelFile, *, streams: int, aux_streams: int, precision: str, history_columns: int) -> torch.jit.ScriptModule:
    """A fresh, scripted :class:`ColumnStep` of ``model``. Scripted, a column costs ~20 % less
    CPU than run eagerly (fewer Python calls per small op, the live path's overhead); scripting
    takes about a second, so it is done once per model and stream count and copied (~10 ms) after,
    and kept on disk for the next run (:mod:`.step_cache`)."""
    key = (id(model.module), streams, aux_streams, precision, history_columns)
    with _STEPS_LOCK:
        entry = _STEPS.get(key)
        if entry is None or entry[0] is not model.module:  # an id reused by another model
            settings = dict(streams=streams, aux_streams=aux_streams, precision=precision, history_columns=history_columns)
            scripted = cached_script(lambda: ColumnStep(model, **settings), model=model, settings=settings)
            entry = (model.module, scripted)
            _STEPS[key] = entry
            if len(_STEPS) > 8:
                _STEPS.popitem(last=False)
        _STEPS.move_to_end(key)
        return copy.deepcopy(entry[1])


def _builtin_index(effect: Effect) -> int | None:
    """The column step's index of a built-in effect (0 for ``none``), None for any other."""
    return BUILTIN_EFFECTS.index(effect.name) if is_builtin(effect) else None


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
    precision : {"float32", "bfloat16"}
        The network's number format (:data:`~spectro_fx.effect.core.stream.PRECISIONS`);
        :func:`~spectro_fx.models.runtime.fast_precision` names the faster one on this CPU.
    jit_optimize : bool
        Let TorchScript's profiling executor optimise the scripted signal path (``True``: live
        blocks, whose many small calls it makes cheaper once warm). A file render passes
        ``False``: on its large blocks the optimised graph is no faster, and its profiling runs on
        a process's first calls render the first 6-12 s of audio at a third to half the speed
        (``tests/bench/bench_file_render.py``).
    fuse : bool
        Run a chain of built-in effects fused in the column step (:attr:`fused`), one scripted
        call per block. ``False`` runs them through their Python plugins between the step's
        halves, as a chain with a third-party effect runs (the same output; slower).
    runtime : {"torchscript", "onnxruntime", "auto"}
        Where a fused step runs its network (encoder, code search, decoder, the neural prior's):
        in the scripted step (the exported module's code; the faster one for long offline
        blocks), or one column at a time in ONNX Runtime with the spectrum's analysis and
        synthesis in numpy (live blocks: about half the CPU with ``none`` on one core; the
        live command's choice); ``auto`` takes ONNX Runtime where it is installed and the
        network runs in float32. The same output either way (1e-5); the split path always runs
        the scripted network (the stream state moves across at a switch).

    Notes
    -----
    The engine leaves torch's process-wide thread count alone: its many small calls per column
    run fastest on one thread, which the ``spectro-fx`` command sets (``models.runtime``).
    The signal path is a :class:`~spectro_fx.effect.core.step.ColumnStep` (the exported
    module's): the model runs through the model file's own streaming methods on a private copy
    of its module, each column costs only its new frames, and the decoder's head runs only on
    the region's cells. A chain of built-in effects runs inside it, one scripted call per block
    (:attr:`fused`); any other chain runs in Python between its analysis and synthesis, and
    the built-in plugins there draw the same keyed random numbers.

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
        precision: str = "float32",
        jit_optimize: bool = True,
        fuse: bool = True,
        runtime: str = "torchscript",
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
        self.stft_config = model.config.stft
        self.precision = precision  # checked by the StreamCore
        # the signal path with the built-in effects fused: one scripted call per block
        self._step = _scripted_step(model, streams=self.channels, aux_streams=int(aux_channels), precision=precision,
                                    history_columns=self.HISTORY_COLUMNS)
        self._step.set_seed(self.seed)
        # the network of a fused step in ONNX Runtime (None: in the scripted step)
        self.runtime = resolve_runtime(runtime, precision=precision)
        self._runtime_step = (
            RuntimeStep(model, self._step, streams=self.channels) if self.runtime == "onnxruntime" else None
        )
        self._jit_optimize = bool(jit_optimize)
        core = self._core = self._step.core
        # the effects' context: the file's module (the step's copy leaves the prior tables to the step)
        self._model_module = model.module
        self._codebook = core.codebook
        self.model_sr = core.sr
        self.hop = core.hop
        self.time_stride = core.time_stride
        self.freq_stride = core.freq_stride
        self.n_rows = core.n_rows
        self.n_bins = core.n_bins
        if isinstance(chain, str) or (chain and isinstance(next(iter(chain)), str)):
            self.chain: list[Effect] = make_chain(chain)
        else:
            self.chain = list(chain)
        note = order_note(self.chain)
        if note is not None:
            warnings.warn(note, stacklevel=2)
        self._bank = ParameterBank(self.chain)
        self._apply_lock = threading.Lock()
        self._hop_s = self.hop / self.model_sr
        parameters = self._bank.parameters()
        # a chain of built-in effects runs fused in the step; with any other effect in it, the
        # engine splits the step around the chain (:meth:`fused` says which)
        self._builtin = bool(fuse) and all(_builtin_index(e) is not None for e in self.chain)
        codes_effects, latent_effects = stages(self.chain)
        if self._builtin:
            self._step.set_chain([_builtin_index(e) for e in codes_effects], [_builtin_index(e) for e in latent_effects])
        self._inpaint = next((e for e in self.chain if _builtin_index(e) == BUILTIN_EFFECTS.index("inpaint")), None)
        prior = model.prior()
        self._prior_reads_later = prior is not None and bool((prior.offsets[:, 0] > 0).any())
        self._prior_alpha = None if prior is None else float(prior.alpha)
        self._has_neural_prior = bool(getattr(model.module, "has_neural_prior", False))
        self._said_once: set[str] = set()
        # parameters the step holds (the region's and the built-in effects'), by full name
        self._in_step = {
            key: INDEX[key] for key in parameters
            if key in INDEX and (self._bank.owner(key) is None or _builtin_index(self._bank.owner(key)) is not None)
        }
        # the step's smoothed effect parameters, which a split step hands its effects column by column
        self._step_ramped = [
            (key, INDEX[key] - len(REGION_INDEX)) for key in self._in_step
            if self._bank.owner(key) is not None and parameters[key].kind == "float" and parameters[key].smoothing_s > 0
        ]
        # other effects' float parameters declared with a smoothing time ramp per hop here
        self._plugin_ramped = [
            key for key, p in parameters.items()
            if key not in self._in_step and self._bank.owner(key) is not None and p.kind == "float" and p.smoothing_s > 0
        ]
        self._ramps = Ramps(
            [parameters[key] for key in self._plugin_ramped], hop_s=self._hop_s,
            values=[float(self._bank.values()[key]) for key in self._plugin_ramped],
        )
        for key, value in self._bank.values().items():
            if key in self._in_step:
                self._step.set_parameter(self._in_step[key], step_value(parameters[key], value), True)
        if any(e.needs_aux for e in self.chain) and not aux_channels and self._builtin:
            warnings.warn("cross: no second source (aux codes) was given; passing the codes through", stacklevel=2)
        self.column_period_s = self.time_stride * self._hop_s
        self.resampling = self.sr != self.model_sr
        # nothing above the I/O rate's Nyquist is heard: regenerating it only feeds the resampler
        self._core.band_top_hz = 0.5 * min(self.sr, self.model_sr)
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
            self.latency_samples = self._core.latency_samples
        self.column_times: deque[float] = deque(maxlen=2048)
        self.aux_channels = int(aux_channels)
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
        if self._core.analysis.frames_done == 0:
            # nothing played yet: start at the value instead of ramping to it
            self._apply_pending(immediate=True)
        return coerced

    def set_many(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Set several parameters as one change (thread-safe): a block sees all of them or
        none, never half a pair such as ``low_hz``/``high_hz``. All are validated first; a bad
        one raises ParameterError and sets nothing. Returns the values after clamping by
        full name."""
        applied = self._bank.set_many(values)
        if self._core.analysis.frames_done == 0:
            self._apply_pending(immediate=True)
        return applied

    def _apply_pending(self, *, immediate: bool = False) -> None:
        # set() before the first block applies from the caller's thread: serialise with process()
        with self._apply_lock:
            for key, value in self._bank.take_pending().items():
                owner = self._bank.owner(key)
                name = key.split(".", 1)[1] if owner is not None else key
                if key in self._in_step:
                    self._step.set_parameter(self._in_step[key], step_value(self._bank.parameters()[key], value), immediate)
                    if self._runtime_step is not None:
                        if self._in_step[key] < len(REGION_INDEX):
                            self._runtime_step.region_changed()
                        else:
                            self._runtime_step.parameters_changed()
                    if owner is not None and (immediate or not any(k == key for k, _ in self._step_ramped)):
                        owner.set(name, value)
                elif key in self._plugin_ramped:
                    self._ramps.set_value(self._plugin_ramped.index(key), float(value), immediate)
                    if immediate:
                        owner.set(name, value)
                else:
                    owner.set(name, value)
                if key == "inpaint.alpha" and owner is self._inpaint:
                    smooth_prior_tables(self._step, self.model, float(value))

    @property
    def fused(self) -> bool:
        """Whether the chain runs fused in the column step now: every effect built in, and
        ``inpaint`` (if any) with ``context=input``, or with ``context=output`` where the network
        runs in ONNX Runtime and ``inpaint`` alone draws from the neural prior (its column loop
        there); else ``output`` reads its own earlier output through the inpaint plugin, column by
        column."""
        if not self._builtin:
            return False
        inpaint = self._inpaint
        if inpaint is None:
            return True
        if inpaint.values["method"] == "neural" and not self._has_neural_prior and getattr(inpaint, "_neural_asked", False):
            self._say_once("no neural prior", "inpaint: the model file has no neural prior; using method=spatial")
        if inpaint.values["method"] == "learned":
            if self._prior_alpha is None:
                self._say_once(
                    "no prior", "inpaint: the model file has no learned prior; using method=spatial"
                )
            elif self._prior_reads_later:
                return False
        if inpaint.values["context"] == "output":
            # the neural prior reading its own earlier output runs in the network runtime's column
            # loop (inpaint alone); the scripted step and the other methods: the plugin's
            return (self._runtime_step is not None and inpaint.values["method"] == "neural" and self._has_neural_prior
                    and len(self.chain) == 1)
        return True

    def _say_once(self, what: str, message: str) -> None:
        if what not in self._said_once:
            self._said_once.add(what)
            warnings.warn(message, stacklevel=4)

    # ------------------------------------------------------------------ stream state
    def reset(self) -> None:
        """Clear all stream state (keeps parameters, lands smoothed ones on their targets)."""
        import soxr

        c = self.channels
        self._apply_pending(immediate=True)
        self._ramps.snap()
        for key, value in zip(self._plugin_ramped, self._ramps.value):
            self._bank.owner(key).values[key.split(".", 1)[1]] = value
        values = self._bank.values()
        for key, _ in self._step_ramped:
            self._bank.owner(key).values[key.split(".", 1)[1]] = values[key]
        self._runtime_holds_state = self._runtime_step is not None  # of the network (else the step's layers)
        if self._runtime_step is not None:
            self._runtime_step.start(c, self.aux_channels)
        else:
            self._step.start(c, self.aux_channels)
        if self.resampling:
            self._rs_in = soxr.ResampleStream(self.sr, self.model_sr, c, dtype="float64", quality=self.resample_quality)
            self._rs_out = soxr.ResampleStream(self.model_sr, self.sr, c, dtype="float64", quality=self.resample_quality)
            if self.aux_channels:
                self._rs_aux = soxr.ResampleStream(
                    self.sr, self.model_sr, self.aux_channels, dtype="float64", quality=self.resample_quality
                )
        self._dry = np.zeros((self.latency_samples, c), dtype=np.float32)
        self._delta = np.zeros((0, c))
        self._delta_start = 0
        self._samples_in = 0
        self._rng = np.random.default_rng(self.seed)
        self.nonfinite_samples = 0
        self.subnormal_samples = 0
        self.model_nonfinite_values = 0
        self.late_samples = 0
        self._said: set[str] = set()  # counters whose warning was given in this stream
        self.column_times.clear()
        self._model_nonfinite_seen = 0
        for effect in self.chain:
            effect.reset()

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
        delta = self._analyse(xm.T, self._aux_block(aux, n))
        if delta.shape[1]:
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

    def _aux_block(self, aux: np.ndarray | None, n: int) -> np.ndarray:
        """The second source's samples for a block of ``n`` frames at the model rate,
        ``[model-rate frames, aux_channels]`` (silence when ``aux`` is None; non-finite samples as 0)."""
        if not self.aux_channels:
            return np.zeros((0, 0))
        if aux is None:
            aux = np.zeros((n, self.aux_channels))
        aux = np.asarray(aux, dtype=np.float64)
        if aux.ndim != 2 or aux.shape[1] != self.aux_channels:
            raise ParameterError(f"second source block has shape {aux.shape}; expected [frames, {self.aux_channels}]")
        if aux.shape[0] != n:
            raise ParameterError(f"aux has {aux.shape[0]} frames; expected {n}, as the block")
        aux = np.where(np.isfinite(aux), aux, 0.0)
        return self._rs_aux.resample_chunk(aux) if self.resampling else aux

    def _analyse(self, xm: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """Model-rate samples ``[channels, n]`` (and the second source's ``[n, aux_channels]``)
        -> released change samples ``[channels, m]``, aligned with the input."""
        core = self._core
        started = time.perf_counter()
        fused, runtime = self.fused, self._runtime_step
        with torch.no_grad(), torch.jit.optimized_execution(self._jit_optimize):
            if runtime is not None and fused != self._runtime_holds_state:
                # the split path runs the step's scripted network: the stream state moves across
                runtime.take_over() if fused else runtime.hand_over()
                self._runtime_holds_state = fused
            if fused and runtime is not None:
                runtime.output_context = self._inpaint is not None and self._inpaint.values["context"] == "output"
                out = runtime.process(xm, aux.T)
                n_new = runtime.last_columns
                nonfinite = runtime.nonfinite_values
            else:
                x, aux_t = torch.from_numpy(xm), torch.from_numpy(np.ascontiguousarray(aux.T))
                if fused:
                    out = self._step.process(x, aux_t).numpy()
                    n_new = self._step.last_columns
                else:
                    out, n_new = self._split(x, aux_t)
                nonfinite = core.nonfinite_values
        if n_new:
            per_column = (time.perf_counter() - started) / n_new
            self.column_times.extend([per_column] * n_new)
        if nonfinite > self._model_nonfinite_seen:
            count = nonfinite - self._model_nonfinite_seen
            self._model_nonfinite_seen = nonfinite
            self._count(
                "model_nonfinite_values", count,
                f"the model decoded non-finite magnitudes ({count} values); the input's magnitude is used "
                "there (counted in model_nonfinite_values; said once; `spectro-fx validate` tells which input)",
                stacklevel=4,
            )
        return out

    def _split(self, x: torch.Tensor, aux: torch.Tensor) -> tuple[np.ndarray, int]:
        """The step split around a chain in Python: the core's analysis, the chain, its synthesis."""
        core = self._core
        codes, cells, aux_codes = core.analyse(x, aux)
        n_new = codes.shape[2]
        if n_new == 0:
            return np.zeros((self.channels, 0)), 0
        ts = self.time_stride
        # an effect acts on whole columns: each takes the value of its column's last hop
        ramps = {
            key: self._ramps.advance(i, n_new * ts).numpy()[ts - 1 :: ts] for i, key in enumerate(self._plugin_ramped)
        }
        step_values = self._step.effect_values(n_new)
        for key, index in self._step_ramped:
            ramps[key] = step_values[index].numpy()
        latent = self._chain(codes, cells.numpy(), ramps, aux_codes if self.aux_channels else None)
        return core.synthesise(latent).numpy(), n_new

    def _ramp_effects(self, ramps: dict[str, np.ndarray], j: int) -> None:
        """Smoothed effect parameters take their value of column ``j``."""
        for key, ramp in ramps.items():
            self._bank.owner(key).values[key.split(".", 1)[1]] = float(ramp[j])

    def _context(self, first_column: int, aux_codes: torch.Tensor | None = None) -> CodemapContext:
        step = self._step
        return CodemapContext(model=self._model_module, history=step.history, rng=self._rng, aux_codes=aux_codes,
                              input_history=step.input_history, first_column=first_column, seed=self.seed)

    def _chain(
        self, codes: torch.Tensor, wanted: np.ndarray, ramps: dict[str, np.ndarray], aux_codes: torch.Tensor | None
    ) -> torch.Tensor:
        """The effect chain, one column at a time (so any blocking gives the same result; a lone
        codes effect may take all columns at once when it gives the same, see
        :meth:`Effect.process_columns`), on
        ``codes`` [channels, n_rows, n_new] with region cells ``wanted`` [n_new, n_rows], the
        smoothed effect parameters' values per column ``ramps`` {name: [n_new]} and the second
        source's codes ``aux_codes`` [aux_channels, n_rows, n_new] (None without one); returns
        the latents [channels, D, n_rows, n_new] for the decoder. The histories live in the step."""
        codes_effects, latent_effects = stages(self.chain)
        step = self._step
        first = int(self._core.first_column)
        columns, latents = [], []
        steady = all(ramp[0] == ramp[-1] for ramp in ramps.values())  # ramps are monotonic
        self._ramp_effects(ramps, 0)
        if not codes_effects and not latent_effects:  # no effect changes anything: skip the loop
            step.push_history(codes, codes)
            return self._embed(codes)
        if len(codes_effects) == 1 and not latent_effects and aux_codes is None and codes.shape[2] > 1 and steady:
            region = torch.from_numpy(np.ascontiguousarray(wanted.T))
            out = codes_effects[0].process_columns(codes, region, self._context(first))
            if out is not None:
                step.push_history(out, codes)
                return self._embed(out)
        for j in range(codes.shape[2]):
            self._ramp_effects(ramps, j)
            region = torch.from_numpy(wanted[j][:, None].copy())
            column = codes[:, :, j : j + 1]
            aux_column = None if aux_codes is None else aux_codes[:, :, j : j + 1]
            ctx = self._context(first + j, aux_column)
            for effect in codes_effects:
                column = effect.process_codes(column, region, ctx)
            if latent_effects:
                latent = self._embed(column)
                for effect in latent_effects:
                    latent = effect.process_latent(latent, region, ctx)
                latents.append(latent)
            step.push_history(column, codes[:, :, j : j + 1])
            columns.append(column)
        return torch.cat(latents, dim=3) if latent_effects else self._embed(torch.cat(columns, dim=2))

    def _embed(self, codes: torch.Tensor) -> torch.Tensor:
        # the core's embed() is this lookup; calling it costs a TorchScript dispatch per call
        return torch.nn.functional.embedding(codes, self._codebook).permute(0, 3, 1, 2)
