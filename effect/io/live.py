"""Live performance: the session that ties sound card or JACK, the engine's worker thread, MIDI
knobs, the recorder, the status line and the browser page together, from start to clean stop.

``spectro-fx --input mic|jack|DEVICE|FILE`` (without ``--output``) lands here through effect/io/cli.py;
the options are in live_options.py, the worker in worker.py, the recorder in recorder.py and the
file sources in sources.py.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import threading
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spectro_fx.models.errors import ParameterError

from .live_options import LIVE_DEVICES, check_live_args
from ..core.params import parse_settings
from .recorder import Recorder
from .sources import AUDIO_SUFFIXES, AuxEngine, LoopedSource, at_rate, chain_needs_aux, fit_channels, read_audio
from .worker import Worker, policy_name

def _input_kind(spec: str) -> str:
    if spec in LIVE_DEVICES:
        return "device"
    path = Path(spec)
    if path.is_file():
        return "file"
    if path.suffix.lower() in AUDIO_SUFFIXES or os.sep in spec:
        raise ParameterError(f"--input {spec}: no such file (live inputs: mic, jack, a device name or index)")
    return "device"


def default_engine_factory(args: argparse.Namespace) -> Callable[..., Any]:
    """Engine builder from the command line's model/chain/parameter options (where present)."""

    def build(*, sr: int, channels: int, block_hint: int, aux_channels: int = 0):
        from spectro_fx.models.runtime import resolve_precision

        from ..core.engine import Engine
        from .render import resolve_model

        model = resolve_model(getattr(args, "model", None))
        values = parse_settings(getattr(args, "settings", None) or [])
        return Engine(
            model, sr=sr, channels=channels, chain=getattr(args, "chain", None) or "none",
            seed=int(getattr(args, "seed", 0) or 0), block_hint=block_hint, values=values,
            aux_channels=aux_channels, precision=resolve_precision(getattr(args, "precision", "auto"), offline=False),
            runtime=getattr(args, "runtime", "auto"),  # auto: ONNX Runtime where installed (live columns cost less)
        )

    return build


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
    check_live_args(args)
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
        source, file_sr = read_audio(args.input, option="--input")
        source = fit_channels(source, args.channels)
        plan = audio_io.plan_stream(
            None, output_spec=args.output_device, sr=args.samplerate, blocksize=args.blocksize,
            channels=source.shape[1], jack_client=args.jack_name,
        )
        source = at_rate(source, file_sr, plan.sr)
    else:
        plan = audio_io.plan_stream(
            args.input, output_spec=args.output_device, sr=args.samplerate, blocksize=args.blocksize,
            channels=args.channels, jack_client=args.jack_name,
        )
    sr = plan.sr
    dry_channels = None
    cross_with = getattr(args, "cross_with", None)
    if cross_with is not None:  # a looped file is the second source
        looped = LoopedSource.from_file(cross_with, sr=sr)
        engine = AuxEngine(make_engine(sr=sr, channels=plan.in_channels, block_hint=plan.blocksize,
                                       aux_channels=looped.channels), looped=looped)
    elif chain_needs_aux(getattr(args, "chain", None)):  # the second input channel is the second source
        if plan.in_channels != 2:
            raise ParameterError(
                f"--chain {args.chain}: live, cross takes its second source from input channel 2, so it needs "
                f"exactly 2 input channels (this input gives {plan.in_channels}; use --channels 2, or --cross-with FILE)"
            )
        engine = AuxEngine(make_engine(sr=sr, channels=1, block_hint=plan.blocksize, aux_channels=1), split=True)
        dry_channels = (0, 0)
    else:
        engine = make_engine(sr=sr, channels=plan.in_channels, block_hint=plan.blocksize)
    call_s, wake_s = _warm_up(engine, plan.blocksize, plan.in_channels, sr)
    speed = speed_note(call_s, blocksize=plan.blocksize, sr=sr, model=getattr(args, "model", None),
                       lighter=lambda name: _lighter_load(args, name, plan, sr))
    if speed is not None:
        print(speed, file=sys.stderr, flush=True)
    if args.safety_ms is not None:
        safety_s = args.safety_ms / 1000
    else:
        safety_s = auto_safety_s(call_s, wake_s)

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


def _warm_up(engine: Any, blocksize: int, channels: int, sr: int, *, seconds: float = 0.32) -> tuple[np.ndarray, np.ndarray]:
    """Run the engine on noise first: TorchScript optimises on its first calls, which would
    otherwise make the first blocks late. It runs with the whole band regenerated, the most
    work a knob can ask for (the engine skips work for silence and empty regions), then the
    parameters are put back. Between calls it sleeps a quarter block, as the worker waits for
    the next one, and notes how late the sleep returns. The first sixth of the calls is not
    measured: they fill the analysis window and carry TorchScript's first, profiling runs (as
    many calls are measured as when it ran 0.4 s and dropped the first third).

    Returns
    -------
    call_s : np.ndarray
        Seconds per engine call after the first sixth (the calls that complete a column dominate).
    wake_s : np.ndarray
        How much later than asked each sleep returned, seconds (the machine's scheduling jitter:
        how long a thread that can run waits for a core, as the worker does when a block lands).
    """
    saved = engine.values()
    changed = []
    for name, value in WARM_UP_VALUES:
        if name in saved:
            engine.set(name, value)
            changed.append(name)
    noise = (0.1 * np.random.default_rng(0).standard_normal((blocksize, channels))).astype(np.float32)
    pause = blocksize / sr / 4
    times, late = [], []
    for _ in range(max(int(seconds * sr) // blocksize, 16)):
        started = time.perf_counter()
        engine.process(noise)
        slept = time.perf_counter()
        times.append(slept - started)
        time.sleep(pause)
        late.append(max(time.perf_counter() - slept - pause, 0.0))
    for name in changed:
        engine.set(name, saved[name])
    engine.reset()
    return np.array(times[len(times) // 6 :]), np.array(late[len(late) // 6 :])


KEEPS_UP = 0.9
"""Largest engine load (CPU time per block over the block's duration, measured at start) said to keep up."""


def engine_load(call_s: np.ndarray, *, blocksize: int, sr: int) -> float:
    """The engine's mean time per call over the block's duration: above 1 it cannot keep up."""
    return float(np.mean(call_s)) * sr / blocksize


def speed_note(
    call_s: np.ndarray, *, blocksize: int, sr: int, model: str | None, lighter: Callable[[str], float | None]
) -> str | None:
    """One line for a machine that cannot keep up (None when it can): the engine's measured load
    against the block period, and what would keep up here, measured (``lighter(name)`` gives a
    lighter bundled model's load, or None). A larger block does not help: the work is per column
    of the codemap, whatever the blocking."""
    load = engine_load(call_s, blocksize=blocksize, sr=sr)
    if load <= KEEPS_UP:
        return None
    text = (f"spectro-fx: this machine cannot keep up: the engine needs {load:.0%} of each {blocksize}-frame "
            f"block's {1000.0 * blocksize / sr:.2f} ms (measured at start, whole band), so blocks will play dry")
    current = model or "default"
    for name in ("low-delay", "classic"):
        if name == current:
            continue
        other = lighter(name)
        if other is not None and other <= KEEPS_UP:
            return text + f"; --model {name} keeps up here ({other:.0%} of a block)"
    return text + "; no bundled model keeps up here (a larger block does not help: the work is per codemap column)"


def _lighter_load(args: argparse.Namespace, name: str, plan: Any, sr: int) -> float | None:
    """A bundled model's engine load at this block size, measured as the warm-up measures."""
    from copy import copy

    other = copy(args)
    other.model = name
    try:
        engine = default_engine_factory(other)(sr=sr, channels=plan.in_channels, block_hint=plan.blocksize)
    except ParameterError:  # its settings do not apply to that model
        return None
    call_s, _ = _warm_up(engine, plan.blocksize, plan.in_channels, sr)
    return engine_load(call_s, blocksize=plan.blocksize, sr=sr)


def auto_safety_s(call_s: np.ndarray, wake_s: np.ndarray) -> float:
    """Default safety margin, measured at start: the 99th percentile of the engine's call times
    plus the worker's wake-up (the 99th percentile of how late sleeps returned: the callback's
    doorbell wakes the worker as a block lands, but a woken thread may still wait for a core),
    within [1, 100] ms. A block's output is ready once the call that receives it
    (and computes the column it completes) returns, so the margin covers that call and the
    worker noticing the block; the block itself and the dry fade come on top."""
    need = float(np.percentile(call_s, 99)) + float(np.percentile(wake_s, 99))
    return float(min(max(need, 0.001), 0.1))


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
            "audio_callback_scheduling": policy_name(b.callback_scheduling),
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
            "dropped_messages": self.ui.dropped_messages,
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
            self.engine, put_many=self.params.put_many, clock=b.stream_time_now, info=info, learn=learn, midi_state=midi_state,
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
        ccmap = self.router.ccmap  # replaced, never changed in place, when a knob is learned
        if getattr(self, "_ui_bindings", (None, None))[0] is not ccmap:
            bindings = []
            for b in ccmap.bindings:
                with warnings.catch_warnings():  # an old spelling in the map warned at start already
                    warnings.simplefilter("ignore")
                    try:
                        name = self.engine.resolve(b.parameter)
                    except ParameterError:
                        name = b.parameter
                bindings.append({"parameter": name, "cc": b.cc, "channel": b.channel})
            self._ui_bindings = (ccmap, bindings)
        return {"learning": self.router.learn, "bindings": self._ui_bindings[1]}

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
            # two decimals, as --list and a file render print the engine's (9.98 ms, not 10.0)
            f"latency {self.latency_ms:.2f} ms = engine {engine_ms:.2f} + safety margin {margin_ms:.2f} "
            f"(block + fade + {'measured engine time' if self.args.safety_ms is None else '--safety-ms'}) "
            f"+ device {1000.0 * self.device_latency_s:.2f} ms"
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
        self._stop_threads()
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

    def _stop_threads(self) -> None:
        """The worker, the MIDI input and the page's server, whichever were started."""
        if self.worker is not None and self.worker.is_alive():
            self.worker.stop()
        if self.midi is not None:
            self.midi.close()
        if self.ui is not None:
            self.ui.stop()

    def _abandon(self) -> None:
        """Set-up failed: release what was opened, leave no partial recording behind."""
        if self.stream is not None:
            try:
                self.stream.abort()
                self.stream.close()
            except Exception:
                pass
        self._stop_threads()
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
