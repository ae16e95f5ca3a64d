"""Where the engine's offline speed comes from: the bundled models against networks of decreasing
size on the same STFT and codemap, down to one channel a layer, in one run.

Run: .venv/bin/python tests/bench/bench_network_size.py [--precision bfloat16] [--seconds 6] [--rounds 3]
The smaller networks have random weights (speed does not depend on them; what they sound like is
not the point). Every engine renders the demo clip as a file render does (16,384-frame blocks,
TorchScript's optimiser off), whole band, chain ``none``, one core; the engines take turns
``--rounds`` times and the best of each is kept (this VM's speed drifts within minutes). What the
smallest network leaves is the cost of everything else a frame needs (STFT, region, loudness
guard, phase, overlap-add, the per-column calls), which no network can go below.
Figures, not asserts.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import warnings
from pathlib import Path

import torch
from _engine_speed import SR, demo_signal, machine_line, x_real_time

# (label, changes to the default's model config); the bundled models come first
SIZES = (
    ("24/48/96 channels, 1,024 codes (the default's size)", {}),
    ("12/24/48 channels, 256 codes (low-delay's size)", dict(channels=(12, 24, 48), codebook_size=256)),
    ("8/16/32 channels, 256 codes", dict(channels=(8, 16, 32), codebook_size=256)),
    ("4/8/8 channels, 64 codes", dict(channels=(4, 8, 8), codebook_size=64)),
    ("1/1/1 channels, no residual blocks, 2 codes of 1 value", dict(channels=(1, 1, 1), n_res_blocks=0, code_dim=1, codebook_size=2)),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bfloat16", choices=("float32", "bfloat16"), help="the network's (default bfloat16, a file render's on this VM)")
    parser.add_argument("--seconds", type=float, default=6.0, help="audio per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="turns per engine; the best is kept")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from spectro_fx.effect.core.engine import Engine
    from spectro_fx.effect.io.render import resolve_model
    from spectro_fx.models.export import export_model, load_model
    from spectro_fx.models.vqvae import VQVAE

    print(machine_line(f"network in {args.precision}"))
    signal_ = demo_signal(args.seconds)

    models = {f"bundled {name}": resolve_model(name) for name in ("default", "low-delay", "classic")}
    base = models["bundled default"].config
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, changes) in enumerate(SIZES):
            torch.manual_seed(0)
            path = Path(tmp) / f"size{i}.pt"
            export_model(VQVAE(dataclasses.replace(base, **changes)).eval(), path)
            models[f"random {label}"] = load_model(path)
        engines = {}
        for name, model in models.items():
            engine = Engine(model, sr=SR, channels=1, chain="none", precision=args.precision, jit_optimize=False)
            engine.set("low_hz", 20.0)
            engine.set("high_hz", 24000.0)
            engine.process(signal_[:SR])  # warm up
            engines[name] = engine
        best = dict.fromkeys(engines, 0.0)
        for _ in range(args.rounds):
            for name, engine in engines.items():
                best[name] = max(best[name], x_real_time(engine, signal_))
    stft = base.stft
    print(f"\nx real time offline, whole band, chain none, {args.seconds:g} s of the demo clip, best of {args.rounds}; "
          f"the random networks on the default's STFT ({stft.n_fft}/{stft.synthesis_length} at hop {stft.hop_length}, "
          f"{SR // stft.hop_length} frames a second, {base.time_stride} frames a column):")
    for name, speed in best.items():
        print(f"  {speed:5.1f}x  {name}")


if __name__ == "__main__":
    main()
