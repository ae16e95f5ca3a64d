"""Audio devices and the real-time callback of the live effect (PortAudio through sounddevice).

The only module that imports sounddevice, and only when a device is actually needed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from spectro_fx.models.errors import ParameterError, positive_int

from ..core.ring import Doorbell, FloatRing

INSTALL_HINT = (
    "install the PortAudio library (Debian/Ubuntu: apt-get install libportaudio2; "
    "macOS: brew install portaudio) and the Python package sounddevice"
)
DEFAULT_JACK_CLIENT = "spectro-fx"

_sd = None
_jack_client_name: Any = None  # PortAudio keeps the pointer: the buffer must outlive the library


def portaudio(*, jack_client: str | None = None, rescan: bool = False):
    """Import sounddevice lazily; returns the module.

    Parameters
    ----------
    jack_client : str, optional
        JACK client name PortAudio registers with (its ports then read ``NAME:in_0``...).
    rescan : bool
        Re-initialise PortAudio so a JACK server started after import is seen.

    Raises
    ------
    ParameterError
        When PortAudio or sounddevice is missing; the message says what to install.
    """
    global _sd, _jack_client_name
    if _sd is None:
        try:
            import sounddevice
        except OSError as exc:  # sounddevice raises OSError when libportaudio is not found
            raise ParameterError(f"PortAudio is not available ({exc}): {INSTALL_HINT}") from None
        except ImportError:
            raise ParameterError(f"the sounddevice package is not installed: {INSTALL_HINT}") from None
        _sd = sounddevice
        rescan = True  # sounddevice initialised at import, before the client name could be set
    if rescan:
        if _sd._initialized > 0:
            _sd._terminate()
        name = jack_client or DEFAULT_JACK_CLIENT
        try:
            lib = ctypes.CDLL(_sd._libname)
            _jack_client_name = ctypes.c_char_p(name.encode())
            lib.PaJack_SetClientName(_jack_client_name)
        except (OSError, AttributeError):
            pass  # a PortAudio without JACK support: the name does not matter
        _sd._initialize()
    return _sd


def release() -> None:
    """Shut PortAudio down now (it re-initialises on next use). Call it before a JACK server
    this process used goes away: PortAudio's own shutdown at exit aborts the process when
    its JACK server has already gone."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        while sd._initialized > 0:
            sd._terminate()


def _hostapi_name(sd, device: dict) -> str:
    return sd.query_hostapis(device["hostapi"])["name"]


def list_devices(*, rescan: bool = True) -> str:
    """A table of audio devices (index, name, host API, channels, default rate) for
    ``spectro-fx --list-devices``; '>' marks the default input, '<' the default output."""
    sd = portaudio(rescan=rescan)
    devices = sd.query_devices()
    lines = []
    if len(devices) == 0:
        lines.append("PortAudio found no audio devices.")
    else:
        default_in, default_out = sd.default.device
        lines.append("     #  name                             host API                     in  out  rate")
        for index, dev in enumerate(devices):
            mark = (">" if index == default_in else " ") + ("<" if index == default_out else " ")
            lines.append(
                f"  {mark}{index:2d}  {dev['name'][:32]:32s} {_hostapi_name(sd, dev)[:28]:28s} "
                f"{dev['max_input_channels']:3d}  {dev['max_output_channels']:3d}  {dev['default_samplerate']:g}"
            )
        lines.append("  > default input, < default output; --input/--output-device take a number or part of a name")
    if not any("JACK" in api["name"] for api in sd.query_hostapis()):
        lines.append("(no JACK server answers: start one, e.g. `jackd -d dummy` or `jackd -d alsa`, for --input jack)")
    return "\n".join(lines)


@dataclass(frozen=True)
class StreamPlan:
    """What to open: devices (PortAudio indices), channels, rate and block size.

    ``input_device`` is None when the input is a file (an output-only stream).
    """

    input_device: int | None
    output_device: int
    in_channels: int
    out_channels: int
    sr: int
    blocksize: int
    is_jack: bool
    description: str


def _device_names(sd, *, kind: str) -> str:
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    found = [f"{i}: {d['name']} ({_hostapi_name(sd, d)})" for i, d in enumerate(sd.query_devices()) if d[key] > 0]
    return "; ".join(found) if found else "none (PortAudio lists no device; is a sound server running?)"


def _find_device(sd, spec: str, *, kind: str) -> int:
    """Device index for ``spec``: 'default', an index, or a case-insensitive name substring."""
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    devices = sd.query_devices()
    if spec == "default":
        index = sd.default.device[0 if kind == "input" else 1]
        if index is None or index < 0:
            raise ParameterError(f"there is no default {kind} device; {kind} devices: {_device_names(sd, kind=kind)}")
        return int(index)
    if spec == "jack":
        for api_index, api in enumerate(sd.query_hostapis()):
            if "JACK" in api["name"]:
                index = api["default_input_device" if kind == "input" else "default_output_device"]
                if index is not None and index >= 0:
                    return int(index)
                for i, d in enumerate(devices):
                    if d["hostapi"] == api_index and d[key] > 0:
                        return i
        raise ParameterError(
            f"--{'input' if kind == 'input' else 'output-device'} jack: no JACK server answers "
            "(start one: `jackd -d alsa` or `jackd -d dummy`; Debian package jackd2)"
        )
    if spec.isdigit():
        index = int(spec)
        if index >= len(devices) or devices[index][key] <= 0:
            raise ParameterError(f"{kind} device {spec} does not exist; {kind} devices: {_device_names(sd, kind=kind)}")
        return index
    matches = [i for i, d in enumerate(devices) if spec.lower() in d["name"].lower() and d[key] > 0]
    if not matches:
        raise ParameterError(f"no {kind} device matches {spec!r}; {kind} devices: {_device_names(sd, kind=kind)}")
    if len(matches) > 1:
        names = "; ".join(f"{i}: {devices[i]['name']}" for i in matches)
        raise ParameterError(f"{kind} device {spec!r} is ambiguous ({names}); give the index")
    return matches[0]


def plan_stream(
    input_spec: str | None,
    *,
    output_spec: str | None = None,
    sr: int | None = None,
    blocksize: int = 256,
    channels: int | None = None,
    jack_client: str | None = None,
) -> StreamPlan:
    """Resolve ``--input`` / ``--output-device`` / ``--samplerate`` / ``--channels``.

    Parameters
    ----------
    input_spec : str or None
        'mic' (the system default input), 'jack' (the JACK server's ports), a device index or
        a name substring; None for an output-only stream (file input).
    output_spec : str, optional
        Output device; by default the JACK device for 'jack', else the default output.
    sr : int, optional
        Stream rate in Hz; by default the output device's (a JACK server's rate is fixed).
    blocksize : int > 0
        Frames per callback (256 frames = 5.3 ms at sr=48000).
    channels : int, optional
        Channels processed (and captured); default min(2, what the input offers).
    """
    positive_int("--blocksize", blocksize, unit="frames; 256 = 5.3 ms at 48 kHz")
    sd = portaudio(jack_client=jack_client, rescan=True)
    is_jack = input_spec == "jack" or output_spec == "jack"
    in_index = None
    if input_spec is not None:
        in_index = _find_device(sd, "default" if input_spec == "mic" else input_spec, kind="input")
    if output_spec is None:
        out_spec = "jack" if input_spec == "jack" else "default"
    else:
        out_spec = output_spec
    out_index = _find_device(sd, out_spec, kind="output")
    out_dev = sd.query_devices(out_index)
    in_dev = sd.query_devices(in_index) if in_index is not None else None
    is_jack = is_jack or "JACK" in _hostapi_name(sd, out_dev)
    if channels is not None and (int(channels) != channels or not 1 <= channels <= 32):
        raise ParameterError(f"--channels={channels!r} must be an integer in [1, 32]")
    if in_dev is not None:
        max_in = int(in_dev["max_input_channels"])
        if channels is not None and channels > max_in:
            raise ParameterError(f"--channels={channels} but input device {in_dev['name']!r} has {max_in}")
        in_channels = int(channels or min(2, max_in))
    else:
        in_channels = int(channels or 2)
    out_channels = int(min(max(in_channels, 2), out_dev["max_output_channels"]))
    rate = positive_int("--samplerate", int(sr or out_dev["default_samplerate"]), unit="Hz")
    try:
        if in_index is not None:
            sd.check_input_settings(device=in_index, channels=in_channels, samplerate=rate, dtype="float32")
        sd.check_output_settings(device=out_index, channels=out_channels, samplerate=rate, dtype="float32")
    except Exception as exc:  # PortAudioError/ValueError from sounddevice: report in our terms
        raise ParameterError(
            f"the devices refuse {rate} Hz / {in_channels} in / {out_channels} out channels ({exc}); "
            f"default rate of {out_dev['name']!r} is {out_dev['default_samplerate']:g} Hz"
        ) from None
    source = f"{in_dev['name']} ({_hostapi_name(sd, in_dev)})" if in_dev is not None else "file"
    description = f"{source} -> {out_dev['name']} ({_hostapi_name(sd, out_dev)}), {rate} Hz, block {blocksize}"
    return StreamPlan(in_index, out_index, in_channels, out_channels, rate, int(blocksize), is_jack, description)


def open_stream(plan: StreamPlan, bridge: "StreamBridge"):
    """Open (not start) the PortAudio stream that runs ``bridge`` as its callback."""
    sd = portaudio()
    try:
        if plan.input_device is None:
            return sd.OutputStream(
                device=plan.output_device, samplerate=plan.sr, blocksize=plan.blocksize,
                channels=plan.out_channels, dtype="float32", latency="low", callback=bridge.output_callback,
            )
        return sd.Stream(
            device=(plan.input_device, plan.output_device), samplerate=plan.sr, blocksize=plan.blocksize,
            channels=(plan.in_channels, plan.out_channels), dtype="float32", latency="low",
            callback=bridge.duplex_callback,
        )
    except sd.PortAudioError as exc:
        raise ParameterError(f"cannot open the audio stream {plan.description}: {exc}") from None


def stream_latency_s(stream) -> float:
    """Device latency (input + output) in seconds as PortAudio reports it."""
    latency = stream.latency
    if isinstance(latency, (tuple, list)):
        return float(sum(latency))
    return float(latency)


def jack_ports(*, client: str) -> list[str]:
    """Ports of a JACK client (through the ``jack_lsp`` tool); empty if it is missing."""
    if shutil.which("jack_lsp") is None:
        return []
    out = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=5).stdout
    return [p for p in out.splitlines() if p.startswith(client + ":")]


def jack_disconnect_system(*, client: str) -> None:
    """Undo PortAudio's automatic connections of ``client`` to the system capture/playback
    ports (``--no-auto-connect``), so that only the connections you make remain."""
    if shutil.which("jack_lsp") is None:
        raise ParameterError("--no-auto-connect needs the JACK tools (apt-get install jackd2)")
    out = subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True, timeout=5).stdout
    port = None
    for line in out.splitlines():
        if not line.startswith(" "):
            port = line.strip()
        elif port and port.startswith(client + ":") and line.strip().startswith("system:"):
            subprocess.run(["jack_disconnect", port, line.strip()], capture_output=True, timeout=5)


XRUN_FLAGS = ("input_underflow", "input_overflow", "output_underflow", "output_overflow")


class StreamBridge:
    """The real-time callback: copies audio into and out of rings and never waits.

    Each callback writes the captured block (or the next block of a file source) into
    ``to_worker`` and into a dry delay line, then plays the worker's output for its stream
    position from ``from_worker``, and last rings ``input_bell``, which wakes the worker. The
    worker's output frame ``j`` is the engine's response to input frame ``j`` (delayed inside
    the engine by ``engine_latency`` frames) and is played at stream position ``j + margin``;
    the dry line delays the input by ``engine_latency + margin`` so both line up sample for sample. When the worker has not delivered a block (plus
    ``fade`` frames of lookahead, kept for a fade-out), the block is played dry and counted as
    an underrun; changes between wet and dry are raised-cosine crossfades of ``fade`` frames.

    Parameters
    ----------
    sr : int
        Stream rate, Hz.
    channels : int
        Channels captured and processed.
    out_channels : int
        Channels played; output channel k plays processed channel ``k % channels``.
    blocksize : int
        Expected frames per callback (larger callbacks are handled in pieces).
    engine_latency : int >= 0
        The engine's ``latency_samples`` at ``sr``.
    margin : int > 0
        Frames the worker may lag behind the callback (the safety margin); at least
        ``blocksize + fade``.
    fade : int > 0
        Crossfade length in frames (120 = 2.5 ms at sr=48000).
    source : np.ndarray [frames, channels], optional
        A file played instead of capture (``output_callback``); looped when ``loop``.
    record_s : float
        Seconds of output kept for the recorder thread (0: no recording).
    dry_channels : sequence of int, optional
        Captured channel each dry channel comes from (default: the same one). Live ``cross``
        captures its second source on channel 2 and processes channel 1 alone: ``(0, 0)``
        keeps the second source out of the dry path.
    """

    def __init__(
        self,
        *,
        sr: int,
        channels: int,
        out_channels: int,
        blocksize: int,
        engine_latency: int,
        margin: int,
        fade: int,
        source: np.ndarray | None = None,
        loop: bool = False,
        ring_s: float = 4.0,
        record_s: float = 0.0,
        dry_channels: Sequence[int] | None = None,
    ) -> None:
        if margin < blocksize + fade:
            raise ParameterError(f"margin={margin} frames must be at least blocksize + fade = {blocksize + fade}")
        if dry_channels is not None and (
            len(dry_channels) != channels or not all(0 <= int(k) < channels for k in dry_channels)
        ):
            raise ParameterError(f"dry_channels={tuple(dry_channels)} must give {channels} indices in [0, {channels})")
        self.sr = int(sr)
        self.channels = int(channels)
        self.out_channels = int(out_channels)
        self.blocksize = int(blocksize)
        self.engine_latency = int(engine_latency)
        self.margin = int(margin)
        self.fade = int(fade)
        self.chunk = max(self.blocksize, 4096)
        ring_frames = max(int(ring_s * sr), 4 * (self.margin + self.chunk))
        self.to_worker = FloatRing(ring_frames, self.channels)
        self.input_bell = Doorbell()  # rung after each captured block: the worker wakes on it, it does not poll
        self.from_worker = FloatRing(ring_frames, self.channels)
        delay = self.engine_latency + self.margin
        self.dry_line = FloatRing(delay + self.chunk, self.channels)
        self.dry_line.write_pos = delay  # the first `delay` frames read as the zeros it holds
        self.record_ring = FloatRing(int(record_s * sr), self.out_channels) if record_s > 0 else None
        self.source = None if source is None else np.ascontiguousarray(source, dtype=np.float32)
        self.loop = bool(loop)
        self.source_pos = 0
        self.input_buf = np.zeros((self.chunk, self.channels), np.float32)
        self.dry_buf = np.zeros((self.chunk, self.channels), np.float32)
        self.dry_map = None if dry_channels is None else np.asarray(dry_channels, dtype=np.intp)
        self.dry_src = np.zeros((self.chunk, self.channels), np.float32)
        self.wet_buf = np.zeros((self.chunk, self.channels), np.float32)
        self.play_buf = np.zeros((self.chunk, self.channels), np.float32)  # heard: wet, dry or a fade between
        self.out_buf = np.zeros((self.chunk, self.out_channels), np.float32)
        t = (np.arange(self.fade, dtype=np.float64) + 0.5) / self.fade
        self.fade_in = (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)[:, None]
        self.fade_out = (1.0 - self.fade_in).astype(np.float32)
        self.fade_tmp = np.zeros((self.fade, self.channels), np.float32)
        # counters: written by the callback only, read by anyone
        self.callbacks = 0
        self.frames = 0  # stream position (frames played so far)
        self.underruns = 0  # blocks that wanted the worker's output and played dry instead
        self.underrun_frames = 0
        self.input_dropped = 0  # frames the worker ring had no room for
        self.record_dropped = 0
        self.xruns = 0
        self.xrun_flags = dict.fromkeys(XRUN_FLAGS, 0)
        self.wet = False
        self.in_peak = 0.0
        self.out_peak = 0.0
        self.last_callback = 0.0  # time.monotonic() of the last callback
        # (stream position, time.monotonic()) at the start of each block, published as one
        # tuple so a reader on another thread never pairs a new time with an old position
        self.clock = (0, 0.0)
        self.source_done = False
        self.callback_error: str | None = None
        # (policy, priority) of the thread PortAudio calls us on, noted at the first callback
        self.callback_scheduling: tuple[int, int] | None = None

    # -- the two PortAudio callbacks ---------------------------------------------------------

    def _note_scheduling(self) -> None:
        if hasattr(os, "sched_getscheduler"):
            self.callback_scheduling = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
        else:
            self.callback_scheduling = (0, 0)

    def _callback_started(self, status) -> None:
        if self.callback_scheduling is None:
            self._note_scheduling()
        if status:
            self._count_status(status)

    def duplex_callback(self, indata, outdata, frames, time_info, status) -> None:
        try:
            self._callback_started(status)
            done = 0
            while done < frames:
                n = min(self.chunk, frames - done)
                self.process(indata[done : done + n], outdata[done : done + n])
                done += n
        except Exception as exc:  # never let an exception kill the stream silently
            outdata.fill(0)
            self.callback_error = repr(exc)

    def output_callback(self, outdata, frames, time_info, status) -> None:
        try:
            self._callback_started(status)
            done = 0
            while done < frames:
                n = min(self.chunk, frames - done)
                self._read_source(n)
                self.process(self.input_buf[:n], outdata[done : done + n])
                done += n
        except Exception as exc:
            outdata.fill(0)
            self.callback_error = repr(exc)

    def _count_status(self, status) -> None:
        flagged = False
        for name in XRUN_FLAGS:
            if getattr(status, name):
                self.xrun_flags[name] += 1
                flagged = True
        if flagged:
            self.xruns += 1

    def _read_source(self, n: int) -> None:
        src = self.source
        total = src.shape[0]
        filled = 0
        while filled < n:
            if self.source_pos >= total:
                if self.loop and total > 0:
                    self.source_pos = 0
                    continue
                self.input_buf[filled:n].fill(0)
                break
            take = min(n - filled, total - self.source_pos)
            np.copyto(self.input_buf[filled : filled + take], src[self.source_pos : self.source_pos + take])
            self.source_pos += take
            filled += take

    # -- the shared per-block work -----------------------------------------------------------

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        """One block: ``inp`` [n, channels] captured, ``out`` [n, out_channels] to play."""
        n = inp.shape[0]
        self.last_callback = time.monotonic()
        self.clock = (self.frames, self.last_callback)
        self.in_peak = max(float(inp.max()), -float(inp.min()))
        written = self.to_worker.write(inp)
        if written < n:
            self.input_dropped += n - written
        dry = self.dry_buf[:n]
        if self.dry_map is None:
            self.dry_line.write(inp)
        else:  # mode="clip" writes straight into the buffer ("raise" would allocate one)
            np.take(inp, self.dry_map, axis=1, out=self.dry_src[:n], mode="clip")
            self.dry_line.write(self.dry_src[:n])
        self.dry_line.read(dry)

        ring = self.from_worker
        want = self.frames - self.margin  # the worker frame this block plays
        if want > ring.read_pos:
            ring.skip(want - ring.read_pos)  # frames that came too late were played dry
        aligned = want >= 0 and ring.read_pos == want
        available = ring.write_pos - want if aligned else 0
        f = min(self.fade, n)
        play = self.play_buf[:n]
        if available >= n + f:
            wet = self.wet_buf[:n]
            ring.read(wet)
            if self.wet:
                np.copyto(play, wet)
            else:  # dry -> wet
                self._crossfade(play[:f], dry[:f], wet[:f], f)
                np.copyto(play[f:], wet[f:])
                self.wet = True
        else:
            if want >= 0:
                self.underruns += 1
                self.underrun_frames += n
            if self.wet and available >= f:
                # the previous block left `f` frames of lookahead for exactly this fade-out
                wet = self.wet_buf[:f]
                ring.read(wet)
                self._crossfade(play[:f], wet, dry[:f], f)
                np.copyto(play[f:], dry[f:])
            else:
                np.copyto(play, dry)
            self.wet = False

        if self.out_channels == self.channels:
            np.copyto(out, play)
        else:
            for k in range(self.out_channels):
                np.copyto(out[:, k], play[:, k % self.channels])
        self.out_peak = max(float(play.max()), -float(play.min()))
        if self.record_ring is not None and self.record_ring.write(out) < n:
            self.record_dropped += n
        self.frames += n
        self.callbacks += 1
        # last: the worker, woken, needs the interpreter lock this callback holds until it returns
        self.input_bell.ring()
        if self.source is not None and not self.loop and self.source_pos >= self.source.shape[0]:
            # the file's last sample has been heard once the line delay has passed
            if self.frames >= self.source.shape[0] + self.engine_latency + self.margin:
                self.source_done = True

    def _crossfade(self, out: np.ndarray, leaving: np.ndarray, arriving: np.ndarray, f: int) -> None:
        np.multiply(leaving, self.fade_out[:f] if f == self.fade else self._ramp(f, down=True), out=out)
        tmp = self.fade_tmp[:f]
        np.multiply(arriving, self.fade_in[:f] if f == self.fade else self._ramp(f, down=False), out=tmp)
        np.add(out, tmp, out=out)

    def _ramp(self, f: int, *, down: bool) -> np.ndarray:
        # only reached for callbacks shorter than the fade (not with a fixed block size)
        t = (np.arange(f, dtype=np.float32) + 0.5) / f
        up = (0.5 - 0.5 * np.cos(np.pi * t))[:, None]
        return 1.0 - up if down else up

    @property
    def stream_s(self) -> float:
        """Stream time in seconds (frames played / sr)."""
        return self.frames / self.sr

    def stream_time_now(self) -> float:
        """Stream time of "now" for events from other threads: the last callback's position
        plus the wall time since it ran."""
        frames, at = self.clock
        if at == 0.0:
            return 0.0
        return frames / self.sr + min(time.monotonic() - at, self.blocksize / self.sr)
