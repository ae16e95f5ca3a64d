"""Engine speed and latency on one CPU core: offline real-time factor, per-column time
against the column period (live-like blocks), and the algorithmic latency.

Run: .venv/bin/python tests/bench/bench_engine.py [--model FILE] [--seconds 10]
Prints figures; asserts nothing (targets: RTF >= 30x, per-column p99 < 25 % of the period,
latency <= 25 ms at 48 kHz).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def _model(path: str | None):
    from spectro_fx.assets import DEFAULT_MODEL, asset_path
    from spectro_fx.models.export import export_model, load_model

    if path:
        return load_model(path), path
    default = asset_path(DEFAULT_MODEL)
    if default.is_file():
        return load_model(default), f"{default} (default model)"
    from spectro_fx.models.config import VQVAEConfig
    from spectro_fx.models.vqvae import VQVAE

    tmp = Path(tempfile.mkdtemp()) / "untrained_default_config.pt"
    export_model(VQVAE(VQVAEConfig()).eval(), tmp)
    return load_model(tmp), "untrained model with the default VQVAEConfig (no default model installed)"


def _signal(sr: int, seconds: float) -> np.ndarray:
    from spectro_fx.assets import DEMO_CLIP, asset_path

    demo = asset_path(DEMO_CLIP)
    if demo.is_file():
        import soundfile as sf

        y, file_sr = sf.read(str(demo), dtype="float32", always_2d=True)
        if file_sr == sr:
            y = y[:, :1]
            reps = int(np.ceil(seconds * sr / len(y)))
            return np.tile(y, (reps, 1))[: int(seconds * sr)]
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.5 * np.sin(0.5 * t)))
    return (tone + 0.03 * rng.standard_normal(t.shape)).astype(np.float32)[:, None]


def _run(engine, x: np.ndarray, block: int, cpu_per_call: list | None = None) -> tuple[float, float]:
    """Returns (wall seconds, CPU seconds of this thread); the CPU time is what one core spends,
    the wall time also counts waiting for a core on a shared machine."""
    started, cpu_started = time.perf_counter(), time.thread_time()
    for i in range(0, len(x), block):
        before = time.thread_time()
        engine.process(x[i : i + block])
        if cpu_per_call is not None:
            cpu_per_call.append(time.thread_time() - before)
    return time.perf_counter() - started, time.thread_time() - cpu_started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chains", default="none,noise,inpaint")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from spectro_fx.effect import available_effects
    from spectro_fx.effect.core.engine import Engine

    model, label = _model(args.model)
    sr = 48000
    x = _signal(sr, args.seconds)
    m = model.module
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, torch {torch.__version__}, 1 thread")
    print(f"model: {label}")
    print(f"  sr {int(m.sample_rate)}, n_fft {int(m.n_fft)}, hop {int(m.hop_length)}, win {int(m.win_length)}, "
          f"time_stride {int(m.time_stride)}, rows {int(m.n_rows)}, receptive field {int(m.receptive_field_frames)} frames, "
          f"decoder context {int(m.decoder_receptive_field_columns)} columns")
    values = {"low_hz": 300.0, "high_hz": 6000.0}

    # the baseline in the same run: the model calls alone, batched as the offline engine does
    mag = torch.rand(1, int(m.n_bins), int(len(x) / int(m.hop_length)) // int(m.time_stride) * int(m.time_stride))
    engine = Engine(model, sr=sr, channels=1)
    started = time.thread_time()
    with torch.no_grad():
        for i in range(0, mag.shape[2], 128):
            codes = m.encode(mag[:, :, i : i + 128])
            m.decode_latent(m.embed(codes), 0)
    model_only = time.thread_time() - started
    print(f"baseline: the model file's encode+decode alone (32-column batches): {args.seconds / model_only:.1f}x real time (CPU)")

    latency = engine.latency_samples
    print(f"latency at 48 kHz: {latency} samples = {1000 * latency / sr:.2f} ms "
          f"(window {int(m.win_length)} - hop {int(m.hop_length)} + column {int(m.time_stride)} x {int(m.hop_length)} - 1)")
    for rate in (44100,):
        e = Engine(model, sr=rate, channels=1)
        print(f"latency at {rate} Hz (soxr HQ in and out): {e.latency_samples} samples = {1000 * e.latency_s:.2f} ms")
        e = Engine(model, sr=rate, channels=1, resample_quality="LQ")
        print(f"latency at {rate} Hz (soxr LQ in and out): {e.latency_samples} samples = {1000 * e.latency_s:.2f} ms")

    print(
        "  what sets it: a sample is final once every analysis frame overlapping it is decoded "
        "(window - hop), and frames are decoded a column at a time (time_stride x hop - 1). "
        "Smaller costs: time_stride 2 saves 256 samples (5.3 ms) but doubles the columns per second "
        "(about twice the model CPU); a 256-sample window saves 256 samples but halves the frequency "
        "resolution (both need a retrained model); a short asymmetric synthesis window could save "
        "up to win - 2 x hop without retraining, at some reconstruction accuracy inside the region."
    )
    registry = available_effects()
    period_ms = 1000 * engine.column_period_s
    for chain in [c for c in args.chains.split(",") if c in registry]:
        engine = Engine(model, sr=sr, channels=1, chain=chain, values=values)
        _run(engine, x[: sr // 2], 16384)  # warm up
        print(f"chain {chain} (region {values['low_hz']:g}-{values['high_hz']:g} Hz):")
        for block in (16384, 4096):  # 16384 is what `spectro-fx --output` uses
            engine.reset()
            wall, cpu = _run(engine, x, block)
            print(f"  offline RTF {args.seconds / cpu:.1f}x (CPU time), {args.seconds / wall:.1f}x (wall), "
                  f"{block}-sample blocks; {model_only / cpu:.2f}x the model-only baseline's rate")
        # live-like: one column per block, as a 512-sample callback would deliver
        live = Engine(model, sr=sr, channels=1, chain=chain, values=values)
        block = int(m.hop_length) * int(m.time_stride)
        _run(live, x[: sr // 2], block)
        live.column_times.clear()
        cpu_calls: list[float] = []
        _run(live, x[: int(min(args.seconds, 5.0) * sr)], block, cpu_calls)
        for label_, times in (("CPU", 1000 * np.array(cpu_calls)), ("wall", 1000 * np.array(live.column_times))):
            p50, p99, worst = np.percentile(times, 50), np.percentile(times, 99), times.max()
            print(
                f"  per column ({label_}, {block}-sample blocks): p50 {p50:.2f} ms ({100 * p50 / period_ms:.0f} %), "
                f"p99 {p99:.2f} ms ({100 * p99 / period_ms:.0f} %), max {worst:.2f} ms of the {period_ms:.2f} ms column period"
            )


if __name__ == "__main__":
    main()
