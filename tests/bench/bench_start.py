"""Start of `spectro-fx --input FILE` to its first audio, first start (nothing kept from an earlier
run) and second start (the scripted column step loaded from the cache folder), on a JACK dummy server.

"First audio" is when the live command says which scheduling its engine worker got: the stream
has started and its callback has run. Also prints where a second start's time goes, measured in
one process (imports, model file, engine, warm-up). Prints figures; asserts nothing. Target: a
second start <= 2 s.

Run: .venv/bin/python tests/bench/bench_start.py [--runs 3] [--chain inpaint]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _engine_speed import machine_line  # noqa: E402
from tests.jack import JackServer  # noqa: E402

STAGES = """
import sys, time
started = time.perf_counter()
import torch
from spectro_fx.effect.io.cli import ENGINE_THREADS, build_parser
from spectro_fx.effect.io.live import _warm_up, default_engine_factory
from spectro_fx.effect.io.render import resolve_model
imported = time.perf_counter()
torch.set_num_threads(ENGINE_THREADS)  # as the live command runs
args = build_parser().parse_args(["--input", "mic", "--chain", sys.argv[1]])
resolve_model(args.model)
loaded = time.perf_counter()
engine = default_engine_factory(args)(sr=48000, channels=1, block_hint=256)
built = time.perf_counter()
_warm_up(engine, 256, 1, 48000)
warm = time.perf_counter()
print(imported - started, loaded - imported, built - loaded, warm - built)
"""


def first_audio_s(env: dict, chain: str) -> float:
    """Seconds from starting the live command to its worker's scheduling line."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/spectro-fx"), "--input", str(ROOT / "assets/demo.wav"), "--loop", "--chain", chain,
         "--no-status"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in proc.stderr:
            if line.startswith("engine worker"):
                return time.monotonic() - started
        raise RuntimeError(f"spectro-fx ended before its first audio (exit status {proc.wait()})")
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chain", default="inpaint")
    args = parser.parse_args()
    print(machine_line(f"default model, --chain {args.chain}, JACK dummy 48 kHz / 128 frames, medians of {args.runs}"))
    with tempfile.TemporaryDirectory() as cache, JackServer("spectro-fx-start", period=128) as jack:
        first, second = [], []
        for run in range(args.runs):
            env = {**jack.env, "SPECTRO_FX_CACHE": os.path.join(cache, str(run))}
            first.append(first_audio_s(env, args.chain))
            second.append(first_audio_s(env, args.chain))
        print(f"first start to first audio  {np.median(first):.2f} s  ({', '.join(f'{s:.2f}' for s in first)})")
        print(f"second start to first audio {np.median(second):.2f} s  ({', '.join(f'{s:.2f}' for s in second)})")
        env = {**jack.env, "SPECTRO_FX_CACHE": os.path.join(cache, "0")}
        stages = np.median([
            [float(v) for v in subprocess.run([sys.executable, "-c", STAGES, args.chain], env=env, capture_output=True,
                                              text=True, check=True).stdout.split()]
            for _ in range(args.runs)
        ], axis=0)
        names = ("imports (torch, spectro_fx)", "model file", "engine (step from the cache, ONNX graphs)", "warm-up")
        print("a second start in one process: " + ", ".join(f"{n} {s:.2f} s" for n, s in zip(names, stages)))


if __name__ == "__main__":
    main()
