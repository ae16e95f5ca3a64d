"""Latency of the wet path measured by signal, engine speed on one core with the whole band
regenerated, and the live round trip on JACK dummy servers at 64, 128 and 256 frames.

Run: .venv/bin/python tests/bench/bench_latency.py [--model NEW.pt] [--baseline OLD.pt] [--live-seconds 20]
Prints figures for each model in the same run (default: the installed default model; --baseline
adds another, e.g. the previous default); asserts nothing. Targets (issue 13): <= 480 samples
(10 ms) at 48 kHz, moonshot <= 240; full band on one core: chain none >= 30x real time, inpaint
>= 15x (float32, and bfloat16 where the CPU multiplies it: what a file render uses there); live
round trip at 48 kHz / 128 frames <= 20 ms, with the underruns per minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.jack import JackServer  # noqa: E402

SR = 48000
CLICK_EVERY = 12000  # 0.25 s


def _engine(model, *, sr: int = SR, chain: str = "none", **kwargs):
    from spectro_fx.effect.core.engine import Engine

    engine = Engine(model, sr=sr, channels=1, chain=chain, **kwargs)
    engine.set("low_hz", 20.0)
    engine.set("high_hz", engine.model_sr / 2)
    engine.set("wet" if "wet" in engine.parameters() else "mix", 1.0)
    return engine


def measured_latency(model, *, sr: int = SR, block: int = 128, **kwargs) -> tuple[int, list[int]]:
    """(reported latency_samples, lags of clicks found by signal): each click's output peak minus
    its input position, full band, wet 1, clicks at several positions within a hop."""
    engine = _engine(model, sr=sr, **kwargs)
    positions = [CLICK_EVERY * (k + 1) + 37 * k for k in range(6)]
    x = np.zeros((positions[-1] + CLICK_EVERY, 1), np.float32)
    x[positions] = 0.5
    out = np.abs(np.concatenate([engine.process(x[i : i + block]) for i in range(0, len(x), block)])[:, 0])
    lags = [int(np.argmax(out[p : p + CLICK_EVERY // 2])) for p in positions]
    return engine.latency_samples, lags


def offline_rtf(model, signal_: np.ndarray, chain: str, precision: str = "float32") -> float:
    """Offline real-time factor (CPU time of this thread, 16384-sample blocks, TorchScript's
    optimiser off, as a file render), whole band regenerated, the network in ``precision``."""
    engine = _engine(model, chain=chain, precision=precision, jit_optimize=False)
    engine.process(signal_[:SR])
    engine.reset()
    started = time.thread_time()
    for i in range(0, len(signal_), 16384):
        engine.process(signal_[i : i + 16384])
    return len(signal_) / SR / (time.thread_time() - started)


def speed(model, signal_: np.ndarray, chain: str) -> dict:
    """Offline real-time factor (float32) and per-call CPU times at live block sizes, whole
    band regenerated."""
    engine = _engine(model, chain=chain)
    result = {"rtf": offline_rtf(model, signal_, chain)}
    for block in (64, 128, 256):
        engine.reset()
        calls = []
        for i in range(0, min(len(signal_), 5 * SR), block):
            before = time.thread_time()
            engine.process(signal_[i : i + block])
            calls.append(time.thread_time() - before)
        ms = 1000 * np.array(calls[len(calls) // 5 :])
        result[block] = (float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.max()))
    return result


def live_round_trip(model_path: str, *, period: int, seconds: float, work: Path) -> dict:
    """`spectro-fx --input clicks.wav --loop --record` on a private JACK dummy server with
    ``period`` frames: the clicks' lag in the recording (callback in to callback out, found by
    signal) against the start line's engine + safety margin, and the underruns."""
    import soundfile as sf

    with JackServer(f"sfxlat{os.getpid()}p{period}", period=period) as server:
        clicks = np.zeros((SR, 1), np.float32)
        clicks[CLICK_EVERY // 2 :: CLICK_EVERY] = 0.5
        sf.write(work / "clicks.wav", clicks, SR, subtype="FLOAT")
        stats, record = work / f"stats{period}.jsonl", work / f"heard{period}.wav"
        proc = subprocess.run(
            [sys.executable, "-m", "spectro_fx.effect.io.cli", "--input", str(work / "clicks.wav"), "--loop",
             "--model", model_path, "--blocksize", str(period), "--set", "low_hz=20", "--set", "high_hz=24000",
             "--record", str(record), "--stats-json", str(stats), "--duration", str(seconds),
             "--no-status", "--jack-name", f"sfxlat{period}"],
            capture_output=True, text=True, env=server.env, timeout=seconds + 120,
        )
    if proc.returncode != 0:
        raise SystemExit(f"spectro-fx failed at {period} frames: {proc.stderr}")
    lines = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
    last = lines[-1]
    heard = np.abs(sf.read(record, dtype="float32", always_2d=True)[0][:, 0])
    lags = []
    for start in range(CLICK_EVERY // 2, len(heard) - CLICK_EVERY, CLICK_EVERY):
        lags.append(int(np.argmax(heard[start : start + CLICK_EVERY])))
    latency = last["latency"]
    return {
        "period": period,
        "lag_frames": int(np.median(lags)),
        "lags_agree": len(set(lags)) == 1,
        "engine_frames": latency["engine_frames"],
        "margin_frames": latency["margin_frames"],
        "device_ms": latency["device_ms"],
        "total_ms": last["latency_ms"],
        "underruns": last["underruns"],
        "xruns": last["xruns"],
        "audio_s": last["stream_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the installed default model)")
    parser.add_argument("--baseline", action="append", default=[], help="another model file to measure in the same run")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio for the speed figures")
    parser.add_argument("--live-seconds", type=float, default=20.0, help="audio per live run (0: no live runs)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from spectro_fx.assets import DEFAULT_MODEL, asset_path
    from spectro_fx.models.export import load_model
    from spectro_fx.models.runtime import fast_precision

    paths = [args.model or str(asset_path(DEFAULT_MODEL)), *args.baseline]
    fast = fast_precision()
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, torch {torch.__version__}, 1 thread")
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * SR)) / SR
    music = 0.2 * np.sin(2 * np.pi * 220 * t * (1 + 0.3 * np.sin(0.7 * t))) + 0.02 * rng.standard_normal(t.shape)
    music = music.astype(np.float32)[:, None]
    for path in paths:
        model = load_model(path)
        cfg = model.config.stft
        ts = int(model.module.time_stride)
        span = cfg.synthesis_span
        print(f"\nmodel {Path(path).name}: n_fft {cfg.n_fft}, analysis {cfg.win_length} ({cfg.sr / cfg.n_fft:.1f} Hz bins), "
              f"synthesis {span}{' (low delay)' if cfg.synthesis_length else ' (= analysis)'}, hop {cfg.hop_length}, "
              f"{ts} frames per column, {int(model.module.n_rows)} rows")
        reported, lags = measured_latency(model)
        print(f"  latency at 48 kHz: reported {reported} samples = {1000 * reported / SR:.2f} ms "
              f"= (synthesis {span} - hop {cfg.hop_length}) + (column {ts} x {cfg.hop_length} - 1); "
              f"clicks found by signal at {sorted(set(lags))}")
        for quality in ("HQ", "LQ"):
            rep, lag = measured_latency(model, sr=44100, resample_quality=quality)
            print(f"  latency at 44.1 kHz (soxr {quality} in and out): reported {rep} = {1000 * rep / 44100:.2f} ms, "
                  f"clicks at {sorted(set(lag))}")
        for chain in ("none", "inpaint"):
            s = speed(model, music, chain)
            calls = ", ".join(f"{b}: p50 {s[b][0]:.2f} / p99 {s[b][1]:.2f} / max {s[b][2]:.2f} ms "
                              f"(period {1000 * b / SR:.2f})" for b in (64, 128, 256))
            print(f"  chain {chain}, whole band: {s['rtf']:.1f}x real time offline (CPU, one core); per call at {calls}")
            if fast != "float32":
                print(f"  chain {chain}, whole band, {fast} network (`--precision auto` renders so here): "
                      f"{offline_rtf(model, music, chain, fast):.1f}x real time offline")
        if args.live_seconds > 0:
            with tempfile.TemporaryDirectory() as tmp:
                for period in (64, 128, 256):
                    r = live_round_trip(path, period=period, seconds=args.live_seconds, work=Path(tmp))
                    per_min = 60 * r["underruns"] / max(r["audio_s"], 1e-9)
                    print(f"  live {period} frames (JACK dummy, --no-realtime): clicks heard {r['lag_frames']} frames "
                          f"({1000 * r['lag_frames'] / SR:.1f} ms) after they were read{'' if r['lags_agree'] else ' (varied)'}; "
                          f"start line: engine {r['engine_frames']} + safety margin {r['margin_frames']} frames "
                          f"+ device {r['device_ms']} ms = {r['total_ms']} ms; underruns {r['underruns']} in "
                          f"{r['audio_s']:.0f} s ({per_min:.1f}/min), xruns {r['xruns']}")


if __name__ == "__main__":
    main()
