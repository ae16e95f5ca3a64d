"""Cost per block of the scripted effect module (what `spectro-fx export` writes) against the
Python engine on the same model, chain and signal, one core, blocks of 128, 256 and 2048.

Run: .venv/bin/python tests/bench/bench_scripted.py [--model FILE] [--seconds 6]
Prints figures; asserts nothing (target: the module no slower than the engine, goal 1.5x faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch


def _cpu_per_block(process, x: np.ndarray, block: int) -> float:
    process(x[:block])  # first call outside the timing
    started = time.thread_time()
    calls = 0
    for i in range(0, len(x), block):
        process(x[i : i + block])
        calls += 1
    return (time.thread_time() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the bundled default model)")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from spectro_fx.assets import DEFAULT_MODEL, DEMO_CLIP, asset_path
    from spectro_fx.effect.core.engine import Engine
    from spectro_fx.effect.io.render import read_audio
    from spectro_fx.effect.export.scripted import ScriptedEffect
    from spectro_fx.models.export import load_model

    model = load_model(args.model or asset_path(DEFAULT_MODEL))
    clip, sr = read_audio(asset_path(DEMO_CLIP))
    if sr != model.sr:
        raise SystemExit(f"the demo clip is at {sr} Hz, the model at {model.sr} Hz; pass a model at {sr} Hz")
    reps = int(np.ceil(args.seconds * sr / len(clip)))
    x = np.tile(clip[:, :1], (reps, 1))[: int(args.seconds * sr)]
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, torch {torch.__version__}, 1 thread")
    print(f"model: {model.path}; {args.seconds:g} s of the demo clip, mono, 48 kHz; CPU time of this thread per block")
    cases = [
        ("none", {"low_hz": 0.0, "high_hz": 24000.0}),
        ("none", {"low_hz": 300.0, "high_hz": 6000.0}),
        ("inpaint", {"low_hz": 300.0, "high_hz": 6000.0}),
        ("inpaint", {"low_hz": 300.0, "high_hz": 6000.0, "inpaint.method": "learned"}),
    ]
    for chain, values in cases:
        label = f"chain {chain}, " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        print(label)
        for block in (128, 256, 2048):
            engine = Engine(model, sr=sr, channels=1, chain=chain, values=values)
            module = torch.jit.script(ScriptedEffect(model, chain=chain.split(","), values=values))

            def scripted(b: np.ndarray) -> None:
                with torch.no_grad():
                    module(torch.from_numpy(np.ascontiguousarray(b.T))[None])

            # alternate the two so that a drift of the shared machine hits both
            times = {"engine": [], "module": []}
            for _ in range(2):
                times["engine"].append(_cpu_per_block(engine.process, x, block))
                times["module"].append(_cpu_per_block(scripted, x, block))
            e, m = min(times["engine"]), min(times["module"])
            period = block / sr
            print(f"  block {block:5d}: engine {1e6 * e:7.0f} us, module {1e6 * m:7.0f} us per block "
                  f"({period / m:5.1f}x real time); module/engine speed {e / m:.2f}x")


if __name__ == "__main__":
    main()
