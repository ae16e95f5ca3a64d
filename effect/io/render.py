"""Offline rendering: a file through the engine as fast as it runs, aligned sample for sample.

Reads audio and CC automation (standard MIDI files), writes float audio atomically, draws spectrograms.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from spectro_fx.models.atomic import atomic_path
from spectro_fx.models.errors import ModelFileError, ParameterError, positive_int
from spectro_fx.models.export import ModelFile, load_model

from .ccmap import CCMap
from .sources import LoopedSource, read_audio

if TYPE_CHECKING:
    from ..core.engine import Engine

PLOT_SCALES = ("log", "linear")
OUTPUT_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24"), ".aif": ("AIFF", "FLOAT"), ".aiff": ("AIFF", "FLOAT")}


@dataclass(frozen=True)
class AutomationEvent:
    """A parameter change at an input sample index (from a CC message through a CC map)."""

    sample: int
    parameter: str
    value: float


@dataclass
class RenderResult:
    output: Path
    sr: int
    frames: int
    channels: int
    latency_samples: int
    nonfinite_samples: int
    seconds: float
    automation_events: int = 0
    clipped_samples: int = 0
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def realtime_factor(self) -> float:
        return self.frames / self.sr / max(self.seconds, 1e-9)


def resolve_model(model: ModelFile | str | os.PathLike | None) -> ModelFile:
    """A loaded model: given, loaded from a path, a bundled model by name, or the default model (None)."""
    if isinstance(model, ModelFile):
        return model
    from spectro_fx.assets import model_path

    try:
        path = model_path(model)
    except FileNotFoundError as exc:
        raise ModelFileError(str(exc)) from None
    return load_model(path)


def read_automation(path: str | os.PathLike, ccmap: CCMap, *, sr: int) -> list[AutomationEvent]:
    """CC messages of a standard MIDI file mapped to parameter changes, sorted by time.

    Times follow the file's tempo map (mido's playback timing); ``sr`` converts them to samples.
    """
    import mido

    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"automation file {path} does not exist")
    try:
        midi = mido.MidiFile(str(path))
        messages = list(midi)
    except (OSError, EOFError, ValueError, KeyError, IndexError) as exc:
        raise ParameterError(f"{path} is not a readable standard MIDI file: {exc}") from None
    events: list[AutomationEvent] = []
    now = 0.0
    for message in messages:
        now += message.time
        if message.type == "control_change":
            for name, value in ccmap.handle(message.channel, message.control, message.value):
                events.append(AutomationEvent(int(round(now * sr)), name, value))
    return events


def _output_format(path: Path) -> tuple[str, str]:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ParameterError(f"output {path}: extension {path.suffix!r} must be one of {', '.join(OUTPUT_FORMATS)}")
    return fmt


def write_audio(path: str | os.PathLike, data: np.ndarray, sr: int) -> int:
    """Write atomically (temp file in the same folder, then rename): 32-bit float for WAV/AIFF;
    FLAC holds integers only (24 bit), so samples beyond +-1 are clipped there and counted.
    Returns the number of clipped samples."""
    import soundfile as sf

    path = Path(path)
    container, subtype = _output_format(path)
    clipped = 0
    if subtype != "FLOAT":
        clipped = int(np.count_nonzero(np.abs(data) > 1.0))
        data = np.clip(data, -1.0, 1.0)
    try:
        with atomic_path(path) as tmp:
            sf.write(tmp, data, sr, format=container, subtype=subtype)
    except (OSError, sf.LibsndfileError, RuntimeError) as exc:
        raise ParameterError(f"cannot write {path}: {exc}") from None
    return clipped


def render(
    audio: np.ndarray,
    engine: "Engine",
    *,
    events: Sequence[AutomationEvent] = (),
    block_size: int = 16384,
    progress: bool = False,
    on_change: Callable[[int, dict[str, Any]], None] | None = None,
    aux: np.ndarray | None = None,
) -> np.ndarray:
    """Run ``audio`` ``[frames, channels]`` float32 through ``engine`` (from its current state),
    output aligned with the input: the latency is trimmed and the tail flushed with zeros.

    ``aux`` ``[frames, aux_channels]``: the engine's second source (for ``cross``; engines
    built with ``aux_channels``), fed in step with ``audio``.

    ``events`` are applied at their sample index (blocks are split there). ``on_change(sample,
    values)`` is called at the start and after each group of events, for drawing the region.
    """
    positive_int("block_size", block_size, unit="frames")
    frames, channels = audio.shape
    latency = engine.latency_samples
    padded = np.concatenate([audio, np.zeros((latency, channels), dtype=np.float32)], axis=0)
    if aux is not None:
        aux = np.concatenate([aux[:frames], np.zeros((latency + max(frames - len(aux), 0), aux.shape[1]), dtype=np.float32)])
    total = padded.shape[0]
    pending = sorted((e for e in events if e.sample < frames), key=lambda e: e.sample)
    out = np.empty_like(padded)
    if on_change:
        on_change(0, engine.values())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=frames, unit="sample", unit_scale=True, desc="rendering", leave=False)
    pos, i = 0, 0
    try:
        while pos < total:
            applied = False
            while i < len(pending) and pending[i].sample <= pos:
                engine.set(pending[i].parameter, pending[i].value)
                i += 1
                applied = True
            if applied and on_change:
                on_change(pos, engine.values())
            stop = min(pos + block_size, total)
            if i < len(pending):
                stop = min(stop, pending[i].sample)
            out[pos:stop] = engine.process(padded[pos:stop], None if aux is None else aux[pos:stop])
            if bar is not None:
                bar.update(max(0, min(stop, frames) - min(pos, frames)))
            pos = stop
    finally:
        if bar is not None:
            bar.close()
    return out[latency : latency + frames]


def render_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: ModelFile | str | os.PathLike | None = None,
    chain: str | Sequence[str] = "none",
    values: Mapping[str, Any] | None = None,
    seed: int = 0,
    automation: str | os.PathLike | None = None,
    ccmap: CCMap | None = None,
    plot: str | os.PathLike | None = None,
    block_size: int = 16384,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
    cross_with: str | os.PathLike | None = None,
    plot_scale: str = "log",
    precision: str = "float32",
) -> RenderResult:
    """Render ``input`` to ``output`` (may be the same path) through the effect.

    Everything is checked before any output exists; the output appears only complete
    (temp file + rename). Non-finite input samples are replaced by 0, counted and warned about.
    ``cross_with``: audio file of the second source (for ``cross``), resampled to the input's
    rate and looped to its length. ``plot_scale``: frequency axis of the picture, ``"log"``
    (a band at the bottom of a 24 kHz axis stays visible) or ``"linear"``. ``precision``: the
    network's, as ``Engine(precision=)``.
    """
    from ..core.engine import Engine

    input, output = Path(input), Path(output)
    _output_format(output)
    if plot is not None and Path(plot).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ParameterError(f"--plot {plot}: extension must be .png, .pdf or .svg")
    if plot_scale not in PLOT_SCALES:
        raise ParameterError(f"--plot-scale {plot_scale!r} must be one of {', '.join(PLOT_SCALES)}")
    model = resolve_model(model)
    audio, sr = read_audio(input)
    finite = np.isfinite(audio)
    nonfinite = int(audio.size - finite.sum())
    if nonfinite:
        warnings.warn(f"{input}: replaced {nonfinite} non-finite samples (NaN/inf) with 0", stacklevel=2)
        audio = np.where(finite, audio, np.float32(0.0))
    # validate names and values before rendering (an engine is cheap to build)
    aux = None
    if cross_with is not None:  # the second source, looped to the input's length
        aux = LoopedSource.from_file(cross_with, sr=sr).next(audio.shape[0])
    engine = Engine(model, sr=sr, channels=audio.shape[1], chain=chain, seed=seed, block_hint=block_size, values=values,
                    aux_channels=0 if aux is None else aux.shape[1], precision=precision,
                    jit_optimize=False)
    events: list[AutomationEvent] = []
    if automation is not None:
        if ccmap is None:
            raise ParameterError("--automation needs a CC map (--map FILE.toml)")
        active, inactive = ccmap.restricted_to(engine.parameters())
        for b in inactive:
            warnings.warn(f"CC map binding of {b.parameter!r} (cc {b.cc}) is inactive: not in this chain", stacklevel=2)
        events = read_automation(automation, active, sr=sr)
    log(
        f"latency {engine.latency_samples} samples ({1000 * engine.latency_s:.2f} ms at {sr} Hz); "
        f"model {model.path.name} at {engine.model_sr} Hz ({precision}); chain {','.join(e.name for e in engine.chain)}"
    )
    trajectory: list[tuple[int, dict[str, Any]]] = []
    started = time.perf_counter()
    out = render(
        audio, engine, events=events, block_size=block_size, progress=progress,
        on_change=lambda s, v: trajectory.append((s, v)), aux=aux,
    )
    seconds = time.perf_counter() - started
    _warn_if_region_stays_empty(trajectory, sr=sr, model_sr=engine.model_sr)
    if not np.isfinite(out).all():  # the engine sanitises its input; this guards the model's output
        bad = int(np.count_nonzero(~np.isfinite(out)))
        warnings.warn(f"the effect produced {bad} non-finite samples; replaced with 0", stacklevel=2)
        out = np.where(np.isfinite(out), out, np.float32(0.0))
    if plot is not None:
        plot_render(audio, out, sr=sr, engine=engine, trajectory=trajectory, path=plot, scale=plot_scale)
    clipped = write_audio(output, out, sr)
    if clipped:
        warnings.warn(
            f"{output}: FLAC stores integers, {clipped} samples beyond +-1 were clipped; write .wav for 32-bit float",
            stacklevel=2,
        )
    return RenderResult(
        output=output, sr=sr, frames=audio.shape[0], channels=audio.shape[1],
        latency_samples=engine.latency_samples, nonfinite_samples=nonfinite, seconds=seconds,
        automation_events=len(events), clipped_samples=clipped, values=engine.values(),
    )


def _warn_if_region_stays_empty(trajectory: Sequence[tuple[int, dict[str, Any]]], *, sr: int, model_sr: int) -> None:
    """One warning when no band was regenerated at any time of a render, naming the values
    that made it empty: the output is then the input, which otherwise looks like a silent failure."""
    nyquist = min(sr, model_sr) / 2
    if not trajectory or any(min(v["high_hz"], nyquist) > v["low_hz"] for _, v in trajectory):
        return
    low, high = trajectory[0][1]["low_hz"], trajectory[0][1]["high_hz"]
    if high <= low:
        why = (f"low_hz={low:g} is not below high_hz={high:g} (to regenerate {high:g}-{low:g} Hz, "
               f"--set low_hz={high:g} --set high_hz={low:g})")
    else:
        why = f"low_hz={low:g} is at or above the Nyquist frequency, {nyquist:g} Hz at {min(sr, model_sr)} Hz"
    warnings.warn(f"the region is empty, so the output is the input: {why}", stacklevel=3)


def _region_shapes(trajectory, *, frames: int, sr: int):
    """Per-sample-range region values: list of (start_s, stop_s, low_hz, high_hz, period_s, duty, wet)."""
    spans = []
    for k, (sample, values) in enumerate(trajectory):
        stop = trajectory[k + 1][0] if k + 1 < len(trajectory) else frames
        if stop > sample:
            spans.append((sample / sr, stop / sr, values["low_hz"], values["high_hz"],
                          values["period_s"], values["duty"], values["wet"]))
    return spans


def plot_render(
    before: np.ndarray,
    after: np.ndarray,
    *,
    sr: int,
    engine,
    trajectory: Sequence[tuple[int, dict[str, Any]]],
    path: str | os.PathLike,
    scale: str = "log",
) -> Path:
    """Save a before/after spectrogram picture (first channel) with the region outlined and
    the codemap grid (rows of the model; columns too on short clips) drawn over both panels.
    ``scale="log"`` draws frequency on a log axis from the first FFT bin above 0 Hz (47 Hz at
    48 kHz) to Nyquist, ``"linear"`` from 0 Hz."""
    if scale not in PLOT_SCALES:
        raise ParameterError(f"scale={scale!r} must be one of {', '.join(PLOT_SCALES)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    import scipy.signal

    path = Path(path)
    n_fft = 1024 if sr > 24000 else 512
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True, sharey=True, constrained_layout=True)
    vmax = None
    for ax, signal, title in ((axes[0], before, "input"), (axes[1], after, "output")):
        f, t, s = scipy.signal.spectrogram(signal[:, 0], fs=sr, nperseg=n_fft, noverlap=n_fft * 3 // 4)
        if scale == "log":  # 0 Hz has no place on a log axis
            f, s = f[1:], s[1:]
        db = 10 * np.log10(s + 1e-12)
        vmax = db.max() if vmax is None else vmax
        mesh = ax.pcolormesh(t, f, db, vmin=vmax - 90, vmax=vmax, shading="auto", cmap="magma")
        if scale == "log":
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel("frequency (Hz)")
    fig.colorbar(mesh, ax=axes, label="power (dB)")
    axes[1].set_xlabel("time (s)")
    duration = before.shape[0] / sr
    nyquist = min(sr, engine.model_sr) / 2
    bottom = sr / n_fft if scale == "log" else 0.0
    # codemap grid, the same on both panels so neither looks brighter: a row is freq_stride
    # bins, a column time_stride hops (columns drawn only where they stay apart on the page)
    row_hz = engine.freq_stride * engine.model_sr / engine.stft_config.n_fft
    n_columns = int(duration / engine.column_period_s)
    for ax in axes:
        for r in range(1, engine.n_rows):
            if r * row_hz < nyquist:
                ax.axhline(r * row_hz, color="white", lw=0.3, alpha=0.25)
        if n_columns <= 120:
            for c in range(1, n_columns):
                ax.axvline(c * engine.column_period_s, color="white", lw=0.3, alpha=0.25)
    for ax in axes:
        for start, stop, low, high, period, duty, wet in _region_shapes(trajectory, frames=before.shape[0], sr=sr):
            if high <= low or wet <= 0:
                continue
            if period <= 0 or duty >= 1:
                on = [(start, stop)]
            else:
                first = np.floor(start / period) * period
                on = [(max(a, start), min(a + duty * period, stop)) for a in np.arange(first, stop, period)]
            for a, b in on:
                if b > a:
                    ax.add_patch(Rectangle((a, max(low, bottom)), b - a, min(high, nyquist) - max(low, bottom), fill=False,
                                           edgecolor="cyan", lw=1.0, alpha=0.5 + 0.5 * wet))
        ax.set_ylim(bottom, nyquist)
        ax.set_xlim(0, duration)
    fig.suptitle(
        f"spectro-fx: chain {','.join(e.name for e in engine.chain)}; region in cyan; "
        f"codemap grid {row_hz:.0f} Hz x {1000 * engine.column_period_s:.1f} ms"
    )
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
