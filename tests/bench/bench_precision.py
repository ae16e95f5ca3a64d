"""The network in float32 against bfloat16 (`--precision`): engine speed offline (16,384-frame
blocks, TorchScript's optimiser off, as a file render) and live (128-frame blocks), one core,
whole band, in one run.

Run: .venv/bin/python tests/bench/bench_precision.py [--model FILE|NAME ...] [--seconds 6] [--rounds 2]
Each model's engines in both precisions take turns (``--rounds`` times each; the best of each
is kept, this VM's speed drifts within minutes) on the demo clip; prints x real time (CPU time
of this thread) and the ratio bfloat16 / float32, and how far apart the two renders are.
Figures, not asserts; bfloat16 pays only where the CPU multiplies it (AMX, AVX512-BF16).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from _engine_speed import FILE_BLOCK, SR, demo_signal, machine_line, x_real_time

BLOCKS = (FILE_BLOCK, 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model file or bundled name (repeatable; default: default and classic)")
    parser.add_argument("--seconds", type=float, default=6.0, help="audio per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="turns per engine; the best is kept")
    parser.add_argument("--chain", default="none", help="effect chain (default none)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from spectro_fx.effect.core.engine import Engine
    from spectro_fx.effect.io.render import resolve_model
    from spectro_fx.models.runtime import fast_precision

    print(machine_line(f"fastest precision here: {fast_precision()}"))
    signal_ = demo_signal(args.seconds)
    for name in args.model or ["default", "classic"]:
        model = resolve_model(name)
        engines = {}
        for precision in ("float32", "bfloat16"):
            for block in BLOCKS:  # as a file render and as the live engine
                engine = Engine(model, sr=SR, channels=1, chain=args.chain, precision=precision, jit_optimize=block <= 1024)
                engine.set("low_hz", 20.0)
                engine.set("high_hz", 24000.0)
                engine.process(signal_[:SR])  # warm up
                engines[(precision, block)] = engine
        best = {}
        for _ in range(args.rounds):
            for key, engine in engines.items():
                best[key] = max(best.get(key, 0.0), x_real_time(engine, signal_, key[1]))
        renders = {}
        for precision in ("float32", "bfloat16"):
            engine = engines[(precision, BLOCKS[0])]
            engine.reset()
            renders[precision] = np.concatenate([engine.process(signal_[i : i + FILE_BLOCK]) for i in range(0, len(signal_), FILE_BLOCK)])
        latency = engines[("float32", BLOCKS[0])].latency_samples
        change = renders["float32"] - np.concatenate([np.zeros((latency, 1)), signal_])[: len(signal_)]
        apart = np.sqrt(np.mean((renders["bfloat16"] - renders["float32"]) ** 2)) / max(np.sqrt(np.mean(change**2)), 1e-12)
        print(f"\nmodel {model.path.name}, chain {args.chain}, whole band, {args.seconds:g} s of the demo clip, "
              f"best of {args.rounds}:")
        for block in BLOCKS:
            f32, b16 = best[("float32", block)], best[("bfloat16", block)]
            kind = "offline" if block > 1024 else "live"
            print(f"  {kind} ({block}-frame blocks): float32 {f32:.1f}x, bfloat16 {b16:.1f}x real time "
                  f"(bfloat16 / float32 = {b16 / f32:.2f})")
        print(f"  the two renders differ by {100 * apart:.1f} % of the wet change's RMS")


if __name__ == "__main__":
    main()
