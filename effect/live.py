"""Live performance: sound card or JACK in, the engine on a worker thread, MIDI knobs, status.

``spectro-fx --input mic|jack|DEVICE|FILE`` (without ``--output``) lands here through effect/cli.py.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spectro_fx.models.errors import ParameterError

from .params import parse_settings
from .ring import FloatRing

LIVE_DEVICES = ("mic", "jack")
RECORD_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24"), ".ogg": ("OGG", "VORBIS")}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".au")

LIVE_HELP = """\
With --input mic, jack, a device name/index, or a file without --output, spectro-fx plays
live; the latency (engine + safety margin + device) is printed at start.
  spectro-fx --input mic                           default input -> default output
  spectro-fx --input jack --midi-in "nanoKONTROL"  JACK ports, MIDI knobs from a controller
  spectro-fx --input jack --midi-virtual           open a MIDI port a DAW can connect to
  spectro-fx --input in.wav --loop                 play a file through the effect
  spectro-fx --input jack --chain cross            cross: input 2 is the second source (or --cross-with FILE)
  spectro-fx --input jack --midi-in 0 --learn low_hz --midi-map knobs.toml   bind the next knob
  spectro-fx --input jack --ui 8765                see and move the region in a browser page
  spectro-fx --list-devices | --list-midi
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the live-mode options to the ``spectro-fx`` parser."""
    group = parser.add_argument_group("live performance", LIVE_HELP)
    group.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    group.add_argument("--list-midi", action="store_true", help="list MIDI input ports and exit")
    group.add_argument("--output-device", metavar="DEVICE", help="output device: name substring, index or 'jack' (default: the input's system)")
    group.add_argument("--samplerate", type=int, metavar="HZ", help="stream rate (default: the device's; JACK's is fixed by the server)")
    group.add_argument("--blocksize", type=int, default=256, metavar="FRAMES", help="frames per audio callback (default 256 = 5.3 ms at 48 kHz)")
    group.add_argument("--channels", type=int, metavar="N", help="channels to process (default: up to 2)")
    group.add_argument("--loop", action="store_true", help="with a file --input: loop it")
    group.add_argument("--record", metavar="FILE", help="record what is heard to FILE (.wav, .flac or .ogg), written when you stop")
    group.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this much audio (default: until Ctrl-C)")
    group.add_argument("--safety-ms", type=float, metavar="MS", help="time the engine may take for a block before it plays dry (default: measured at start, 1.5 x the engine's slowest calls; raise it if you see underruns)")
    group.add_argument("--rt-priority", type=int, default=1, metavar="N", help="when the audio callback runs realtime (JACK started with -R), run the engine's worker under SCHED_FIFO priority N, always below the callback's (default 1; 0 = never). Needs root or an rtprio limit; the start message says what the worker got")
    group.add_argument("--jack-name", default="spectro-fx", metavar="NAME", help="JACK client name (ports NAME:in_0, NAME:out_0 ...)")
    group.add_argument("--no-auto-connect", action="store_true", help="JACK: do not stay connected to system capture/playback")
    group.add_argument("--midi-in", metavar="PORT", help="MIDI input port: name substring or index (see --list-midi)")
    group.add_argument("--midi-virtual", nargs="?", const="midi_in", metavar="NAME", help="open a virtual MIDI input port others connect to (default name midi_in)")
    group.add_argument("--midi-map", metavar="FILE", help="TOML CC map (default: the bundled 8-knob map, CC 70-77 and 21-28 on channel 1)")
    group.add_argument("--midi-api", choices=("auto", "jack", "alsa"), default="auto", help="MIDI system (default: JACK with --input jack or without ALSA, else ALSA)")
    group.add_argument("--learn", metavar="PARAM", help="bind the next moved knob to PARAM and write --midi-map (default spectro-fx-midi.toml)")
    group.add_argument("--stats-json", metavar="FILE", help="append one JSON line of live figures per second to FILE")
    group.add_argument("--no-status", action="store_true", help="no live status line on the terminal")
    group.add_argument(
        "--ui", metavar="[HOST:]PORT",
        help="serve a page that shows the spectrograms and the region and moves every parameter "
        "(open the URL printed at start; it carries a secret token). HOST defaults to 127.0.0.1, "
        "this machine only; 0.0.0.0 opens it to the network; PORT 0 picks a free port",
    )
    # test-only: force the worker late to exercise the dry fallback
    group.add_argument("--debug-worker-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    group.add_argument("--debug-worker-delay-every-s", type=float, default=0.5, help=argparse.SUPPRESS)


def wants_live(args: argparse.Namespace) -> bool:
    """True when the command line asks for live mode (or a live listing)."""
    if getattr(args, "list_devices", False) or getattr(args, "list_midi", False):
        return True
    return args.input is not None and getattr(args, "output", None) is None


# ----------------------------------------------------------------------------- worker


class Worker(threading.Thread):
    """Runs the engine on blocks from ``bridge.to_worker`` and fills ``bridge.from_worker``.

    Parameter changes queued by the MIDI thread are applied here, between engine calls. When
    the backlog exceeds ``resync_s`` (a stall far beyond the safety margin) the worker skips
    to near the live position and resets the engine; what it skips was played dry already.
    """

    def __init__(
        self,
        engine: Any,
        bridge: Any,
        *,
        params: Any,
        delay_ms: float = 0.0,
        delay_every_s: float = 0.5,
        resync_s: float = 0.3,
        rt_priority: int = 0,
    ) -> None:
        super().__init__(name="spectro-fx-worker", daemon=True)
        self.rt_priority = int(rt_priority)
        self.scheduling = "not started"
        self.scheduled = threading.Event()  # set once the thread has chosen its scheduling
        self.engine = engine
        self.bridge = bridge
        self.params = params
        self.sr = bridge.sr
        self.delay_s = max(float(delay_ms), 0.0) / 1000.0
        self.delay_every = max(int(delay_every_s * self.sr), 1)
        self.resync_frames = max(int(resync_s * self.sr), 4 * (bridge.margin + bridge.blocksize))
        self.warm_frames = 2 * int(engine.latency_samples) + self.sr // 20
        period = float(getattr(engine, "column_period_s", 0.0) or 0.0)
        self.column_frames = max(int(round(period * self.sr)), bridge.blocksize)
        self.max_chunk = 4096
        self.stop_event = threading.Event()
        self.pos = 0  # input frames consumed (= worker output frames produced)
        self.resyncs = 0
        self.error: BaseException | None = None
        self.tap: Any = None  # a ui.ViewTap while --ui runs: the page's copy of each block
        self.loads: deque = deque(maxlen=100_000)
        self.events: deque = deque(maxlen=10_000)
        self._busy = 0.0
        self._busy_frames = 0
        self._since_stall = 0

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the main thread; audio goes on dry
            self.error = exc

    def _loop(self) -> None:
        ring_in = self.bridge.to_worker
        buf = np.zeros((self.max_chunk, ring_in.channels), np.float32)
        poll = min(0.001, self.bridge.blocksize / self.sr / 4)
        while not self.stop_event.is_set():
            if not self.scheduled.is_set() and self.bridge.callback_scheduling is not None:
                self._choose_scheduling(*self.bridge.callback_scheduling)
            self._apply_params()
            n = ring_in.readable()
            if n == 0:
                time.sleep(poll)
                continue
            if n > self.resync_frames and self._resync():
                continue
            n = min(n, self.max_chunk)
            if self.delay_s:
                n = min(n, self.bridge.blocksize)
            ring_in.read(buf[:n])
            started = time.perf_counter()
            out = self.engine.process(buf[:n])
            if self.delay_s:
                self._since_stall += n
                if self._since_stall >= self.delay_every:
                    self._since_stall = 0
                    time.sleep(self.delay_s)
            self._account(n, time.perf_counter() - started)
            self._write(out)
            if self.tap is not None:  # after the output is handed over; never waits
                self.tap.push(buf[:n], out)
            self.pos += n

    def _choose_scheduling(self, policy: int, priority: int) -> None:
        """Once the audio callback has run: go realtime just below it, or stay normal."""
        wanted, why = worker_priority(self.rt_priority, policy, priority)
        self.scheduling = _realtime_thread(wanted) if wanted else f"normal priority ({why})"
        if wanted and why:
            self.scheduling += f" ({why})"
        self.scheduled.set()

    def _write(self, out: np.ndarray) -> None:
        ring = self.bridge.from_worker
        done = 0
        while done < out.shape[0] and not self.stop_event.is_set():
            done += ring.write(out[done:])
            if done < out.shape[0]:
                time.sleep(0.001)

    def _account(self, frames: int, busy: float) -> None:
        """Worker time over audio time, one figure per column of audio."""
        self._busy += busy
        self._busy_frames += frames
        if self._busy_frames >= self.column_frames:
            self.loads.append(self._busy / (self._busy_frames / self.sr))
            self._busy = 0.0
            self._busy_frames = 0

    def _apply_params(self) -> None:
        for name, value, received_s, source in self.params.drain():
            try:
                applied = self.engine.set(name, value)
            except ParameterError as exc:
                self.events.append(
                    {"name": name, "error": str(exc), "received_s": round(received_s, 4), "source": source}
                )
                continue
            now = self.bridge.stream_time_now()
            self.events.append(
                {
                    "name": name,
                    "value": applied,
                    "source": source,  # "midi" (a knob) or "ui" (the browser page)
                    "received_s": round(received_s, 4),  # stream time the change arrived
                    "applied_s": round(now, 4),  # stream time the engine took the value
                    # the frames processed from now on are played `margin` frames after they
                    # were captured, or, if the worker is late (those play dry), from now on
                    "heard_s": round(max((self.pos + self.bridge.margin) / self.sr, now), 4),
                }
            )

    def _resync(self) -> bool:
        """Skip the backlog; returns False when there is nothing worth skipping."""
        ring_in = self.bridge.to_worker
        ring_out = self.bridge.from_worker
        # land `warm_frames` before the callback's read position, so the engine's restart
        # transient falls on frames the callback has already played dry and will skip
        live = ring_in.write_pos
        target = live - self.bridge.margin - self.bridge.blocksize - self.warm_frames
        if target <= self.pos:
            return False
        skip = ring_in.skip(target - self.pos)
        left = skip
        while left > 0 and not self.stop_event.is_set():
            left -= ring_out.advance_write(left)
            if left > 0:
                time.sleep(0.001)
        self.pos += skip
        self.engine.reset()
        self.resyncs += 1
        return True

    def take_loads(self) -> list[float]:
        out = []
        while True:
            try:
                out.append(round(self.loads.popleft(), 4))
            except IndexError:
                return out

    def take_events(self) -> list[dict]:
        out = []
        while True:
            try:
                out.append(self.events.popleft())
            except IndexError:
                return out

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


def worker_priority(requested: int, callback_policy: int, callback_priority: int) -> tuple[int, str]:
    """The ``SCHED_FIFO`` priority for the engine worker (0: stay at normal priority) and why.

    A realtime audio server (JACK started with ``-R``, as on a musician's machine) runs its
    clients' audio callbacks under FIFO priority; a worker left at normal priority then
    competes with every other process for the few milliseconds it needs, and blocks play dry.
    A worker above the callback, or realtime while the callback is not, starves the callback
    instead (measured: a FIFO worker beside a non-realtime JACK tripled the underruns). So
    the worker goes realtime only when the callback is, and strictly below it.
    """
    if requested <= 0:
        return 0, "--rt-priority 0"
    if callback_policy not in (getattr(os, "SCHED_FIFO", -1), getattr(os, "SCHED_RR", -1)):
        return 0, "the audio callback runs at normal priority, so the worker does too; a JACK server started with -R makes both realtime"
    if callback_priority <= 1:
        return 0, f"the audio callback's realtime priority {callback_priority} leaves none below it"
    if requested >= callback_priority:
        return callback_priority - 1, f"--rt-priority {requested} lowered below the audio callback's {callback_priority}"
    return requested, ""


def _policy_name(scheduling: tuple[int, int] | None) -> str:
    if scheduling is None:
        return "no callback yet"
    policy, priority = scheduling
    for name in ("SCHED_FIFO", "SCHED_RR"):
        if policy == getattr(os, name, None):
            return f"{name} priority {priority}"
    names = {getattr(os, n): n for n in ("SCHED_OTHER", "SCHED_BATCH", "SCHED_IDLE") if hasattr(os, n)}
    return names.get(policy, f"policy {policy}")


def _realtime_thread(priority: int) -> str:
    """Put the calling thread under ``SCHED_FIFO`` at ``priority`` >= 1; returns a description
    for the start message. The worker sleeps whenever it has nothing to do, and the kernel's
    realtime throttling keeps 5 % of each second for other tasks anyway. Needs root or an
    ``rtprio`` limit (the ``audio`` group of most Linux audio setups); otherwise the thread
    keeps normal priority and the description says why."""
    if not hasattr(os, "sched_setscheduler"):
        return "normal priority (no realtime scheduling on this system)"
    try:
        # pid 0 is the calling thread on Linux: scheduling policy is per thread
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        return f"normal priority (realtime priority {priority} not permitted: {exc.strerror}; see --rt-priority)"
    return f"realtime (SCHED_FIFO priority {priority})"


# ----------------------------------------------------------------------------- recorder


class Recorder(threading.Thread):
    """Writes what is heard (``bridge.record_ring``) to a temporary file next to ``path``;
    :meth:`finish` drains the ring, closes the file and renames it into place."""

    def __init__(self, path: str | os.PathLike, ring: FloatRing, *, sr: int) -> None:
        super().__init__(name="spectro-fx-recorder", daemon=True)
        import soundfile as sf

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in RECORD_FORMATS:
            raise ParameterError(f"--record {path}: the name must end in {', '.join(RECORD_FORMATS)}")
        fmt, subtype = RECORD_FORMATS[suffix]
        if not self.path.parent.is_dir():
            raise ParameterError(f"--record {path}: folder {self.path.parent} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.file = sf.SoundFile(tmp, "w", samplerate=sr, channels=ring.channels, format=fmt, subtype=subtype)
        self.ring = ring
        self.buf = np.zeros((16384, ring.channels), np.float32)
        self.frames = 0
        self.stop_event = threading.Event()
        self.finished = False

    def _drain(self) -> None:
        while True:
            n = self.ring.read(self.buf)
            if n == 0:
                return
            self.file.write(self.buf[:n])
            self.frames += n

    def run(self) -> None:
        last_flush = time.monotonic()
        while not self.stop_event.wait(0.05):
            self._drain()
            if time.monotonic() - last_flush > 1.0:
                self.file.flush()
                last_flush = time.monotonic()

    def finish(self) -> Path:
        """Stop, write the rest, and move the file into place (atomic rename)."""
        if self.finished:
            return self.path
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout=5)
        self._drain()
        self.file.close()
        os.replace(self.tmp, self.path)
        self.finished = True
        return self.path


# ----------------------------------------------------------------------------- sources


def _load_source(path: Path, *, channels: int | None, option: str = "--input") -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile.LibsndfileError and friends
        raise ParameterError(f"{option} {path}: cannot read it as audio ({exc})") from None
    want = channels or min(data.shape[1], 2)
    if data.shape[1] > want:
        data = data.mean(axis=1, keepdims=True) if want == 1 else data[:, :want]
    elif data.shape[1] < want:
        data = np.tile(data, (1, -(-want // data.shape[1])))[:, :want]
    return np.ascontiguousarray(data), int(sr)


def _input_kind(spec: str) -> str:
    if spec in LIVE_DEVICES:
        return "device"
    path = Path(spec)
    if path.is_file():
        return "file"
    if path.suffix.lower() in AUDIO_SUFFIXES or os.sep in spec:
        raise ParameterError(f"--input {spec}: no such file (live inputs: mic, jack, a device name or index)")
    return "device"


# ----------------------------------------------------------------------------- the session


def default_engine_factory(args: argparse.Namespace) -> Callable[..., Any]:
    """Engine builder from the command line's model/chain/parameter options (where present)."""

    def build(*, sr: int, channels: int, block_hint: int, aux_channels: int = 0):
        from spectro_fx.assets import DEFAULT_MODEL, asset_path
        from spectro_fx.models.export import load_model

        from .engine import Engine

        model_path = getattr(args, "model", None) or asset_path(DEFAULT_MODEL)
        if not Path(model_path).exists():
            raise ParameterError(f"model file {model_path} does not exist (train one with spectro-fx-train, or pass --model)")
        values = parse_settings(getattr(args, "settings", None) or [])
        return Engine(
            load_model(model_path), sr=sr, channels=channels, chain=getattr(args, "chain", None) or "none",
            seed=int(getattr(args, "seed", 0) or 0), block_hint=block_hint, values=values,
            aux_channels=aux_channels,
        )

    return build


def _chain_needs_aux(chain: str | None) -> bool:
    """True when an effect of ``--chain`` takes a second source (``cross``)."""
    from .effects import RENAMED_EFFECTS, available_effects

    registry = available_effects()
    names = [RENAMED_EFFECTS.get(n.strip(), n.strip()) for n in (chain or "none").split(",") if n.strip()]
    return any(getattr(registry.get(name), "needs_aux", False) for name in names)


class AuxEngine:
    """The engine as the worker sees it when ``cross`` takes a second source live.

    ``split`` (the second source on input channel 2): the worker hands over
    ``[frames, 2]``; channel 1 is processed with channel 2 as ``aux`` and the result is
    played on both. ``aux_file`` (``--cross-with FILE``, looped at the stream rate): every
    captured channel is processed, the file's next frames are the ``aux``. Anything else
    (``set``, ``reset``, ``latency_samples`` ...) is the engine's.
    """

    def __init__(self, engine: Any, *, split: bool = False, aux_file: np.ndarray | None = None) -> None:
        self.engine = engine
        self.split = split
        self.aux_file = aux_file
        self.aux_pos = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def _next_aux(self, n: int) -> np.ndarray:
        total = self.aux_file.shape[0]
        index = (self.aux_pos + np.arange(n)) % total
        self.aux_pos = (self.aux_pos + n) % total
        return self.aux_file[index]

    def process(self, block: np.ndarray) -> np.ndarray:
        if self.split:
            out = self.engine.process(block[:, :1], block[:, 1:2])
            return np.repeat(out, block.shape[1], axis=1)
        return self.engine.process(block, self._next_aux(block.shape[0]))


class _ServerGone(Exception):
    pass


def run_live(args: argparse.Namespace, *, make_engine: Callable[..., Any] | None = None) -> int:
    """Run the live effect until Ctrl-C/SIGTERM, ``--duration`` or the end of a file.

    Returns the exit status (0 after a clean stop). When the audio server vanishes, the
    recording and stats are completed, a one-line error is printed and the process exits
    with status 1 at once (PortAudio cannot be shut down cleanly without its server).
    """
    from . import audio_io

    if args.list_devices:
        print(audio_io.list_devices())
        return 0
    if args.list_midi:
        from .midi import list_midi_ports

        print(list_midi_ports(api=args.midi_api, jack_audio=args.input == "jack"))
        return 0
    if args.input is None:
        raise ParameterError("live mode needs --input mic, jack, a device or a file")
    for option in ("automation", "plot"):
        if getattr(args, option, None):
            raise ParameterError(f"--{option} is for rendering a file (give --output); live, use MIDI knobs")
    if args.learn and not (args.midi_in or args.midi_virtual):
        raise ParameterError("--learn needs a MIDI input: --midi-in PORT or --midi-virtual")
    if not 0 <= args.rt_priority <= 99:
        raise ParameterError(f"--rt-priority={args.rt_priority} must be 0 (normal priority) or a SCHED_FIFO priority 1-99")
    if args.safety_ms is not None and args.safety_ms < 0:
        raise ParameterError(f"--safety-ms={args.safety_ms} must be >= 0")
    if args.ui is not None:
        from .ui import parse_ui_address

        parse_ui_address(args.ui)  # a bad address fails before any audio opens
    make_engine = make_engine or default_engine_factory(args)
    ccmap = None
    if args.midi_in or args.midi_virtual:
        from .midi import load_full_map

        # --map (the offline automation's CC map option) is accepted as well
        map_path = args.midi_map or getattr(args, "map", None)
        if args.learn and map_path is None:
            map_path = "spectro-fx-midi.toml"
        ccmap = load_full_map(map_path, learn=args.learn)

    source = None
    kind = _input_kind(args.input)
    if kind == "file":
        source, file_sr = _load_source(Path(args.input), channels=args.channels)
        plan = audio_io.plan_stream(
            None, output_spec=args.output_device, sr=args.samplerate, blocksize=args.blocksize,
            channels=source.shape[1], jack_client=args.jack_name,
        )
        if file_sr != plan.sr:
            import soxr

            source = soxr.resample(source, file_sr, plan.sr).astype(np.float32)
    else:
        plan = audio_io.plan_stream(
            args.input, output_spec=args.output_device, sr=args.samplerate, blocksize=args.blocksize,
            channels=args.channels, jack_client=args.jack_name,
        )
    sr = plan.sr
    dry_channels = None
    cross_with = getattr(args, "cross_with", None)
    if cross_with is not None:  # a looped file is the second source
        aux_file, aux_sr = _load_source(Path(cross_with), channels=None, option="--cross-with")
        if aux_file.shape[0] == 0:
            raise ParameterError(f"--cross-with {cross_with}: the file holds no samples")
        aux_file = np.where(np.isfinite(aux_file), aux_file, np.float32(0.0))
        if aux_sr != sr:
            import soxr

            aux_file = soxr.resample(aux_file, aux_sr, sr).astype(np.float32)
        engine = AuxEngine(make_engine(sr=sr, channels=plan.in_channels, block_hint=plan.blocksize,
                                       aux_channels=aux_file.shape[1]), aux_file=aux_file)
    elif _chain_needs_aux(getattr(args, "chain", None)):  # the second input channel is the second source
        if plan.in_channels != 2:
            raise ParameterError(
                f"--chain {args.chain}: live, cross takes its second source from input channel 2, so it needs "
                f"exactly 2 input channels (this input gives {plan.in_channels}; use --channels 2, or --cross-with FILE)"
            )
        engine = AuxEngine(make_engine(sr=sr, channels=1, block_hint=plan.blocksize, aux_channels=1), split=True)
        dry_channels = (0, 0)
    else:
        engine = make_engine(sr=sr, channels=plan.in_channels, block_hint=plan.blocksize)
    slowest_s = _warm_up(engine, plan.blocksize, plan.in_channels, sr)
    safety_s = args.safety_ms / 1000 if args.safety_ms is not None else auto_safety_s(slowest_s)

    fade = min(plan.blocksize, max(int(round(0.002 * sr)), 8))
    margin = plan.blocksize + fade + int(round(safety_s * sr))
    bridge = audio_io.StreamBridge(
        sr=sr, channels=plan.in_channels, out_channels=plan.out_channels, blocksize=plan.blocksize,
        engine_latency=int(engine.latency_samples), margin=margin, fade=fade, source=source,
        loop=args.loop, record_s=20.0 if args.record else 0.0, dry_channels=dry_channels,
    )
    session = _Session(args, plan, engine, bridge, ccmap)
    return session.run()


WARM_UP_VALUES = (("wet", 1.0), ("low_hz", 20.0), ("high_hz", 24000.0), ("period_s", 0.0))


def _warm_up(engine: Any, blocksize: int, channels: int, sr: int) -> float:
    """Run the engine on noise first: TorchScript optimises on its first calls, which would
    otherwise make the first blocks late. It runs with the whole band regenerated, the most
    work a knob can ask for (the engine skips work for silence and empty regions), then the
    parameters are put back. Returns the 95th percentile of the call times after the first
    ones, in seconds (the calls that complete a column dominate)."""
    saved = engine.values()
    changed = []
    for name, value in WARM_UP_VALUES:
        if name in saved:
            engine.set(name, value)
            changed.append(name)
    noise = (0.1 * np.random.default_rng(0).standard_normal((blocksize, channels))).astype(np.float32)
    times = []
    for _ in range(max(int(0.6 * sr) // blocksize, 16)):
        started = time.perf_counter()
        engine.process(noise)
        times.append(time.perf_counter() - started)
    for name in changed:
        engine.set(name, saved[name])
    engine.reset()
    return float(np.percentile(times[len(times) // 3 :], 95))


def auto_safety_s(slowest_call_s: float) -> float:
    """Default safety margin: 1.5 x the slow engine calls seen at start plus 2 ms for waking
    the worker, within [3, 100] ms. A block's output can only be ready once the column it
    completes has been computed, so the margin must cover that computation."""
    return float(min(max(1.5 * slowest_call_s + 0.002, 0.003), 0.1))


class _Session:
    def __init__(self, args, plan, engine, bridge, ccmap) -> None:
        from .midi import ParameterQueue

        self.args = args
        self.plan = plan
        self.engine = engine
        self.bridge = bridge
        self.ccmap = ccmap
        self.params = ParameterQueue()
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.recorder: Recorder | None = None
        self.midi = None
        self.router = None
        self.report = None
        self.worker: Worker | None = None
        self.stream = None
        self.device_latency_s = 0.0
        self.messages: deque = deque()
        self.ui = None  # ui.UIServer with --ui

    # -- helpers ------------------------------------------------------------------------------

    @property
    def latency_ms(self) -> float:
        b = self.bridge
        return 1000.0 * ((b.engine_latency + b.margin) / b.sr + self.device_latency_s)

    def _say(self, text: str) -> None:
        prefix = "\r\x1b[2K" if self.report is not None and self.report.terminal is not None else ""
        try:
            sys.stderr.write(prefix + text + "\n")
            sys.stderr.flush()
        except OSError:  # the terminal went away (SIGHUP): nothing to tell
            pass

    def _snapshot(self) -> dict:
        b = self.bridge
        midi = {}
        if self.midi is not None:
            midi = {
                "port": self.midi.description,
                "connected": self._midi_connected,
                "messages": self.router.messages,
                "ignored": self.router.parser.ignored,
            }
        return {
            "stream_s": round(b.frames / b.sr, 4),
            "frames": b.frames,
            # the same instant on CLOCK_MONOTONIC and in stream time: other processes on this
            # machine map their own time.monotonic() to stream time with it
            "monotonic": round(time.monotonic(), 4),
            "stream_now_s": round(b.stream_time_now(), 4),
            "callbacks": b.callbacks,
            "underruns": b.underruns,
            "underrun_frames": b.underrun_frames,
            "xruns": b.xruns,
            "xrun_flags": dict(b.xrun_flags),
            "input_dropped": b.input_dropped,
            "record_dropped": b.record_dropped,
            "resyncs": self.worker.resyncs if self.worker else 0,
            "audio_callback_scheduling": _policy_name(b.callback_scheduling),
            "worker_scheduling": self.worker.scheduling if self.worker else "not started",
            "latency_ms": round(self.latency_ms, 2),
            "latency": {
                "engine_frames": b.engine_latency,
                "margin_frames": b.margin,
                "device_ms": round(1000.0 * self.device_latency_s, 2),
            },
            "in_peak_dbfs": _dbfs(b.in_peak),
            "out_peak_dbfs": _dbfs(b.out_peak),
            "params": self.engine.values(),
            "midi": midi,
            "ui": self._ui_snapshot(),
            "loads": self.worker.take_loads() if self.worker else [],
            "events": self.worker.take_events() if self.worker else [],
        }

    def _ui_snapshot(self) -> dict:
        if self.ui is None:
            return {}
        return {
            "url": self.ui.url.split("?", 1)[0],
            "pages": len(self.ui.clients),
            "dropped_messages": sum(c.dropped for c in list(self.ui.clients)),
            "changes": self.ui.surface.changes,
        }

    # -- set-up ---------------------------------------------------------------------------------

    def _start_ui(self) -> None:
        """``--ui``: the page's server on its own thread. Its changes enter the same queue as
        MIDI knobs; the worker copies its blocks to the page's tap without waiting."""
        if self.args.ui is None:
            return
        from .ui import ControlSurface, UIServer, ViewTap, parse_ui_address

        host, port = parse_ui_address(self.args.ui)
        b = self.bridge
        info = {
            "chain": [e.name for e in getattr(self.engine, "chain", [])],
            "sr": b.sr,
            "input": self.plan.description,
            "latency_ms": round(self.latency_ms, 2),
        }
        learn = midi_state = None
        if self.router is not None:
            learn, midi_state = self._ui_learn, self._ui_midi_state
        surface = ControlSurface(
            self.engine, put=self.params.put, clock=b.stream_time_now, info=info, learn=learn, midi_state=midi_state,
        )
        self.ui = UIServer(surface, ViewTap(sr=b.sr), host=host, port=port)
        self.ui.start()
        self.worker.tap = self.ui.tap

    def _ui_learn(self, name: str | None) -> str:
        """MIDI learn from the page: the next moved knob binds to ``name`` (written to
        --midi-map when given; the bundled map is never overwritten)."""
        self.router.learn_path = Path(self.args.midi_map) if self.args.midi_map else None
        self.router.learn = name
        if name is None:
            return "MIDI learn cancelled"
        return f"move a knob to bind it to {name}"

    def _ui_midi_state(self) -> dict:
        bindings = []
        for b in self.router.ccmap.bindings:
            try:
                name = self.engine.resolve(b.parameter)
            except ParameterError:
                name = b.parameter
            bindings.append({"parameter": name, "cc": b.cc, "channel": b.channel})
        return {"learning": self.router.learn, "bindings": bindings}


    def _open_midi(self) -> None:
        args = self.args
        if not (args.midi_in or args.midi_virtual):
            return
        from .midi import CCRouter, MidiInput

        parameters = self.engine.parameters()
        full = self.ccmap
        active, inactive = full.restricted_to(parameters)
        learn_path = Path(full.source) if args.learn else None
        self.router = CCRouter(
            active, parameters=parameters, emit=self.params.put, clock=self.bridge.stream_time_now,
            learn=args.learn, learn_path=learn_path, full_map=full, on_learned=self.messages.append,
        )
        self.midi = MidiInput(
            self.router.on_message, port=args.midi_in, virtual=args.midi_virtual, api=args.midi_api,
            jack_audio=self.plan.is_jack, client_name=f"{args.jack_name}-midi",
        )
        self.midi.open()
        self._midi_connected = self.midi.connected()
        self._inactive_bindings = inactive

    def _print_start(self) -> None:
        b = self.bridge
        engine_ms = 1000.0 * b.engine_latency / b.sr
        margin_ms = 1000.0 * b.margin / b.sr
        self._say(
            f"spectro-fx live: {self.plan.description}\n"
            f"latency {self.latency_ms:.1f} ms = engine {engine_ms:.1f} + safety margin {margin_ms:.1f} "
            f"(block + fade + {'measured engine time' if self.args.safety_ms is None else '--safety-ms'}) "
            f"+ device {1000.0 * self.device_latency_s:.1f} ms"
        )
        if self.midi is not None:
            text = f"MIDI: {self.midi.description}, {len(self.router.ccmap.bindings)} CC bindings active"
            if self._inactive_bindings:
                text += f" ({len(self._inactive_bindings)} for effects not in the chain ignored)"
            if self.args.learn:
                text += f"; move a knob to bind it to {self.args.learn}"
            self._say(text)
        if self.ui is not None:
            self._say(f"browser UI: {self.ui.url}")
        if self.args.record:
            self._say(f"recording to {self.args.record}")
        if self.report is not None and self.report.terminal is not None:
            self._say("Ctrl-C stops.")

    def _on_signal(self, signum, frame) -> None:
        self.stop_reason = signal.Signals(signum).name
        self.stop_event.set()

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> int:
        from . import audio_io
        from .status import LiveReport, terminal_for_status

        args = self.args
        previous = {}
        old_switch = sys.getswitchinterval()
        in_main = threading.current_thread() is threading.main_thread()
        try:
            if args.record:
                self.recorder = Recorder(args.record, self.bridge.record_ring, sr=self.bridge.sr)
            self._open_midi()
            if in_main:
                # SIGHUP too: a closed terminal also ends the show with the recording intact
                for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)):
                    previous[sig] = signal.signal(sig, self._on_signal)
            # the audio callback needs the GIL promptly; the default 5 ms switch interval is
            # about one whole 256-frame block
            sys.setswitchinterval(0.0005)
            # a full garbage collection walks every object torch and the model made (200,000+,
            # about 80 ms here) while holding the GIL: the callback would miss its deadline.
            # Frozen, they are never walked again; what the show allocates is still collected.
            gc.collect()
            gc.freeze()
            self.worker = Worker(
                self.engine, self.bridge, params=self.params, delay_ms=args.debug_worker_delay_ms,
                delay_every_s=args.debug_worker_delay_every_s, rt_priority=args.rt_priority,
            )
            self.stream = audio_io.open_stream(self.plan, self.bridge)
            self.device_latency_s = audio_io.stream_latency_s(self.stream)
            self.report = LiveReport(
                self._snapshot, stats_path=args.stats_json, terminal=terminal_for_status(not args.no_status)
            )
            self._start_ui()
            self._print_start()
            if self.recorder is not None:
                self.recorder.start()
            self.worker.start()
            self.stream.start()
            if self.worker.scheduled.wait(2.0):
                self._say(f"engine worker: {self.worker.scheduling}")
            if self.plan.is_jack and args.no_auto_connect:
                audio_io.jack_disconnect_system(client=args.jack_name)
            self._loop()
        except _ServerGone as gone:
            self._die(str(gone))
        except BaseException:
            self._abandon()
            raise
        finally:
            gc.unfreeze()
            sys.setswitchinterval(old_switch)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._shutdown()

    def _loop(self) -> None:
        b = self.bridge
        started = time.monotonic()
        stall_s = max(1.0, 40 * b.blocksize / b.sr)
        next_midi_check = 0.0
        while not self.stop_event.wait(0.05):
            now = time.monotonic()
            while self.messages:
                self._say(self.messages.popleft())
            if b.callback_error:
                raise _ServerGone(f"the audio callback failed: {b.callback_error}")
            if self.worker.error is not None:
                self.stop_reason = "error"
                self._say(f"spectro-fx: error: the engine failed: {self.worker.error!r}")
                self.exit_status = 1
                return
            if not self.stream.active or (b.last_callback and now - b.last_callback > stall_s) or (
                not b.last_callback and now - started > 5.0
            ):
                what = "the JACK server went away" if self.plan.is_jack else "the audio device stopped"
                raise _ServerGone(what)
            if self.midi is not None and now >= next_midi_check:
                next_midi_check = now + 1.0
                connected = self.midi.connected()
                if connected is False and self._midi_connected:
                    self._say(f"MIDI port {self.midi.port_name} went away; keeping the last values")
                elif connected and self._midi_connected is False and self.midi.reconnect():
                    self._say(f"MIDI port {self.midi.port_name} is back")
                self._midi_connected = connected
            record = self.report.tick()
            if self.ui is not None:
                self.ui.surface.publish_stats(record)
            if b.source_done:
                self.stop_reason = "end of file"
                return
            if self.args.duration is not None and b.frames >= self.args.duration * b.sr:
                self.stop_reason = "duration"
                return

    def _shutdown(self) -> int:
        status = getattr(self, "exit_status", 0)
        if self.stream is not None:
            try:
                self.stream.stop()
                self.stream.close()
            except Exception as exc:  # reported, the rest still has to be written
                self._say(f"spectro-fx: warning: closing the audio stream: {exc}")
        if self.worker is not None and self.worker.is_alive():
            self.worker.stop()
        if self.midi is not None:
            self.midi.close()
        if self.ui is not None:
            self.ui.stop()
        # the recording first: after a hangup the terminal writes below may fail
        path = self.recorder.finish() if self.recorder is not None else None
        if self.report is not None:
            try:
                self.report.close()
            except OSError:
                pass
        if path is not None:
            self._say(f"recorded {self.recorder.frames / self.bridge.sr:.1f} s to {path}")
        b = self.bridge
        if b.underruns or b.xruns:
            self._say(f"{b.underruns} underruns (blocks played dry), {b.xruns} xruns")
        return status

    def _abandon(self) -> None:
        """Set-up failed: release what was opened, leave no partial recording behind."""
        if self.stream is not None:
            try:
                self.stream.abort()
                self.stream.close()
            except Exception:
                pass
        if self.worker is not None and self.worker.is_alive():
            self.worker.stop()
        if self.midi is not None:
            self.midi.close()
        if self.ui is not None:
            self.ui.stop()
        if self.report is not None:
            self.report.close()
        if self.recorder is not None:
            self.recorder.file.close()
            self.recorder.tmp.unlink(missing_ok=True)

    def _die(self, what: str) -> None:
        """The audio server is gone: finish the files, say so in one line, exit at once
        (closing a PortAudio stream whose JACK server died blocks forever)."""
        if self.worker is not None:
            self.worker.stop_event.set()
        saved = ""
        try:
            if self.report is not None:
                self.report.close()
            if self.recorder is not None:
                path = self.recorder.finish()
                saved = f"; recording saved to {path} ({self.recorder.frames / self.bridge.sr:.1f} s)"
        finally:
            sys.stdout.flush()
            sys.stderr.write(f"\nspectro-fx: error: {what}{saved}\n")
            sys.stderr.flush()
            os._exit(1)


def _dbfs(peak: float) -> float:
    from .status import dbfs

    return dbfs(peak)
