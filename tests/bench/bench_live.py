"""Live soak and knob-to-sound latency of `spectro-fx` on a JACK dummy server (48 kHz, 256 frames).

Prints figures; asserts nothing. Usage: python tests/bench/bench_live.py [--minutes 10] [--model FILE]
[--period 128] [--chain inpaint] [--runtime torchscript] (the soak of the live engine with its network
scripted, beside the default ONNX Runtime one)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.jack import NOISE_PLAYER, JackServer  # noqa: E402
from tests.bench._engine_speed import cold_cache_line  # noqa: E402

SR = 48000
BLOCK = 256  # the knob-latency run's JACK period


def stats_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate, *, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"spectro-fx ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def spectro_fx(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spectro_fx.effect.io.cli", *args, "--no-status"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )


def soak(server: JackServer, *, model: str, minutes: float, work: Path, extra: list[str] = ()) -> dict:
    import rtmidi

    tag = f"sfxbench{os.getpid()}"
    stats = work / "soak.jsonl"
    source = subprocess.Popen(
        [sys.executable, "-c", NOISE_PLAYER, f"{tag}-src", str(minutes * 60 + 600)], stdout=subprocess.PIPE, text=True, env=server.env
    )
    midi_out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"{tag}-cc")
    midi_out.open_virtual_port("cc_out")
    proc = spectro_fx(
        ["--input", "jack", "--jack-name", tag, "--model", model, "--midi-in", f"{tag}-cc:cc_out",
         "--stats-json", str(stats), "--set", "high_hz=8000", "--duration", str(60 * minutes + 3), *extra],
        server.env,
    )
    sent = 0
    try:
        source.stdout.readline()
        wait_for(lambda: f"{tag}:in_1" in subprocess.run(["jack_lsp"], capture_output=True, text=True, env=server.env).stdout,
                 timeout=60, what="the effect's ports", proc=proc)
        for k in range(2):
            subprocess.run(["jack_connect", f"{tag}-src:out_{k}", f"{tag}:in_{k}"], env=server.env, check=True)
        wait_for(lambda: stats_lines(stats), timeout=30, what="the first stats line", proc=proc)
        # a CC every 10 ms: knob 1 (low_hz) sweeps up and down, 1.27 s per sweep
        value, step = 0, 1
        next_send = time.monotonic()
        while proc.poll() is None:
            midi_out.send_message([0xB0, 70, value])
            sent += 1
            value += step
            if value in (0, 127):
                step = -step
            next_send += 0.01
            time.sleep(max(next_send - time.monotonic(), 0))
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        source.send_signal(signal.SIGINT)
        source.wait(timeout=10)
        midi_out.close_port()
        del midi_out
    lines = stats_lines(stats)
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the soak run failed (rc {proc.returncode}): {err}")
    # RSS from the first line after a minute (warmed up) to the last line written while the
    # stream ran (the very last one follows the worker thread's exit, which frees its arena)
    running = lines[:-1]
    steady = [line for line in running if line["stream_s"] >= 60.0] or running[len(running) // 4 :]
    p99 = [line["engine_load_p99"] for line in lines if line["engine_load_p99"] is not None]
    p50 = [line["engine_load_p50"] for line in lines if line["engine_load_p50"] is not None]
    cpu = [line["cpu_s_per_audio_s"] for line in lines if line["cpu_s_per_audio_s"] is not None]
    last = lines[-1]
    events = sum(len(line["param_events"]) for line in lines)
    # per second: do the blocks played dry come with JACK xruns (the server or the VM late) or alone?
    new_underruns = np.diff([0] + [line["underruns"] for line in lines])
    new_xruns = np.diff([0] + [line["xruns"] for line in lines])
    dry_seconds = new_underruns > 0
    return {
        "audio_s": last["stream_s"],
        "ccs_sent": sent,
        "param_changes_applied": events,
        "underruns": last["underruns"],
        "underruns_per_minute": round(60.0 * last["underruns"] / max(last["stream_s"], 1e-9), 1),
        "underrun_ms": round(1000 * last["underrun_frames"] / SR, 1),
        "xruns": last["xruns"],
        "resyncs": last["resyncs"],
        "input_dropped": last["input_dropped"],
        "rss_mb_from": f"{steady[0]['rss_mb']} at {steady[0]['stream_s']:.0f} s",
        "rss_mb_to": f"{running[-1]['rss_mb']} at {running[-1]['stream_s']:.0f} s",
        "rss_growth_mb": round(running[-1]["rss_mb"] - steady[0]["rss_mb"], 2),
        "rss_mb_max": max(line["rss_mb"] for line in running),
        "rss_mb_each_minute": [
            next(line["rss_mb"] for line in running if line["stream_s"] >= 60 * m)
            for m in range(int(running[-1]["stream_s"] // 60) + 1)
        ],
        "load_p50_median": round(float(np.median(p50)), 3),
        "load_p99_median": round(float(np.median(p99)), 3),
        "load_p99_worst_second": round(float(np.max(p99)), 3),
        "cpu_s_per_audio_s_mean": round(float(np.mean(cpu)), 3),
        "latency_ms": last["latency_ms"],
        "worker_scheduling": last.get("worker_scheduling"),
        "seconds_with_underruns": int(dry_seconds.sum()),
        "of_them_with_an_xrun": int((dry_seconds & (new_xruns > 0)).sum()),
        "underruns_in_seconds_with_an_xrun": int(new_underruns[new_xruns > 0].sum()),
        "worst_second_load_at_s": lines[int(np.argmax([line["engine_load_p99"] or 0 for line in lines]))]["stream_s"],
    }


def knob_latency(server: JackServer, *, model: str, work: Path, toggles: int = 8) -> dict:
    """A known file through the effect with wet=0 (the output is then exactly the delayed
    input); each CC turns wet to 1 and the first sample that departs from the delayed input
    marks when the knob was heard. Times are stream times: the CC's send time is mapped
    through the stats lines' (wall, stream) pairs."""
    import rtmidi
    import soundfile as sf

    tag = f"sfxknob{os.getpid()}"
    rng = np.random.default_rng(3)
    src = (0.1 * rng.standard_normal((SR * 2, 1))).astype(np.float32)
    sf.write(work / "noise.wav", src, SR, subtype="FLOAT")
    stats, record = work / "knob.jsonl", work / "knob.wav"
    midi_out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"{tag}-cc")
    midi_out.open_virtual_port("cc_out")
    duration = 3 + 1.5 * toggles
    proc = spectro_fx(
        ["--input", str(work / "noise.wav"), "--loop", "--jack-name", tag, "--model", model,
         "--midi-in", f"{tag}-cc:cc_out", "--stats-json", str(stats), "--record", str(record),
         "--set", "wet=0", "--set", "low_hz=1000", "--set", "high_hz=8000", "--duration", str(duration)],
        server.env,
    )
    sends = []
    try:
        wait_for(lambda: len(stats_lines(stats)) >= 2, timeout=60, what="the knob run's stats", proc=proc)
        for _ in range(toggles):
            time.sleep(0.7)
            sends.append(time.monotonic())
            midi_out.send_message([0xB0, 72, 127])  # knob 3: wet -> 1
            time.sleep(0.7)
            midi_out.send_message([0xB0, 72, 0])
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        midi_out.close_port()
        del midi_out
    lines = stats_lines(stats)
    # CLOCK_MONOTONIC is shared by all processes: map this process's send times to stream time
    # (the dummy driver's clock may run slow on a busy machine: interpolate between lines)
    monos = np.array([line["monotonic"] for line in lines[1:]])
    stream_nows = np.array([line["stream_now_s"] for line in lines[1:]])
    offsets = stream_nows - monos
    heard, _ = sf.read(record, dtype="float32", always_2d=True)
    delay = lines[-1]["latency"]["engine_frames"] + lines[-1]["latency"]["margin_frames"]
    looped = np.tile(src, (-(-len(heard) // len(src)), 1))[: len(heard) - delay]
    departs = np.abs(heard[delay:, 0] - looped[:, 0]) > 1e-4
    events = {round(e["received_s"], 4): e for line in lines for e in line["param_events"] if e.get("value") == 1.0}
    from_sent, from_received, applied, computed = [], [], [], []
    for mono in sends:
        sent_s = float(np.interp(mono, monos, stream_nows))
        near = [e for r, e in events.items() if abs(r - sent_s) < 0.2]
        if not near:
            continue  # the CC was lost (a JACK xrun drops that cycle's MIDI)
        received_s = near[0]["received_s"]
        start = int(received_s * SR) - delay - BLOCK
        hits = np.flatnonzero(departs[max(start, 0) : start + SR // 2])
        if len(hits):
            heard_s = (max(start, 0) + hits[0] + delay) / SR
            from_received.append(1000 * (heard_s - received_s))
            from_sent.append(1000 * (heard_s - sent_s))
        applied.append(1000 * (near[0]["applied_s"] - received_s))
        computed.append(1000 * (near[0]["heard_s"] - received_s))
    figure = lambda values, f: round(float(f(values)), 1) if values else None
    return {
        "toggles": toggles,
        "measured": len(from_received),
        # received_s and the recording share one clock (stream frames): the precise figure
        "received_to_heard_ms_median": figure(from_received, np.median),
        "received_to_heard_ms_max": figure(from_received, np.max),
        # from the send (CLOCK_MONOTONIC interpolated to stream time between stats lines)
        "sent_to_heard_ms_median": figure(from_sent, np.median),
        # plus PortAudio's output latency: until the sound leaves the output port
        "sent_to_output_port_ms_median": (
            round(figure(from_sent, np.median) + lines[-1]["latency"]["device_ms"], 1) if from_sent else None
        ),
        "received_to_applied_ms_median": figure(applied, np.median),
        "received_to_first_computed_frame_ms_median": figure(computed, np.median),
        # how much the stream clock wandered against CLOCK_MONOTONIC over the run
        "stream_clock_spread_ms": round(1000 * float(offsets.max() - offsets.min()), 1),
        "underruns": lines[-1]["underruns"],
        "latency_ms_reported": lines[-1]["latency_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    parser.add_argument("--model", help="model file (default: the bundled default model)")
    parser.add_argument("--skip-soak", action="store_true")
    parser.add_argument("--safety-ms", type=float, help="passed to spectro-fx (default: its own measured margin)")
    parser.add_argument("--rt-priority", type=int, help="passed to spectro-fx (default: its own, 1)")
    parser.add_argument("--realtime", action="store_true",
                        help="run jackd with SCHED_FIFO threads, as a musician's setup does (needs root or an rtprio limit)")
    parser.add_argument("--keep", type=Path, help="copy the soak's per-second stats (JSON lines) to this file")
    parser.add_argument("--period", type=int, default=256, help="the JACK server's frames per period (default 256)")
    parser.add_argument("--chain", default="none", help="passed to spectro-fx (default none)")
    parser.add_argument("--runtime", default="auto", help="passed to spectro-fx (default auto)")
    parser.add_argument("--skip-knob", action="store_true", help="no knob-to-sound run")
    args = parser.parse_args()
    from spectro_fx.assets import DEFAULT_MODEL, asset_path

    model = args.model or str(asset_path(DEFAULT_MODEL))
    if not Path(model).exists():
        raise SystemExit(f"model file {model} does not exist; pass --model")
    server = JackServer("spectro-fx-bench", period=args.period, realtime=args.realtime)  # a fixed name: see test_live's dying server
    os.environ["JACK_DEFAULT_SERVER"] = server.name  # for the rtmidi clients of this process
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            print(f"bench_live: model {model}, JACK dummy 48 kHz / {args.period} frames ({'realtime' if args.realtime else 'no realtime'}), "
                  f"chain {args.chain}, runtime {args.runtime}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
            print(cold_cache_line(args.period / 48000) + "; at start")
            if not args.skip_soak:
                extra = ["--chain", args.chain, "--runtime", args.runtime]
                extra += [] if args.safety_ms is None else ["--safety-ms", str(args.safety_ms)]
                extra += [] if args.rt_priority is None else ["--rt-priority", str(args.rt_priority)]
                figures = soak(server, model=model, minutes=args.minutes, work=work, extra=extra)
                if args.keep:
                    shutil.copy(work / "soak.jsonl", args.keep)
                print(f"soak ({args.minutes:g} min, CC every 10 ms):")
                for key, value in figures.items():
                    print(f"  {key:28s} {value}")
            if not args.skip_knob:
                figures = knob_latency(server, model=model, work=work)
                print("knob-to-sound (wet 0 -> 1 by CC, heard = first output sample departing from the dry input):")
                for key, value in figures.items():
                    print(f"  {key:28s} {value}")
            print(f"load average {os.getloadavg()[0]:.1f} at end")
            print(cold_cache_line(args.period / 48000) + "; at end")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
