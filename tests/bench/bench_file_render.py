"""A file render's engine (`Engine(jit_optimize=False)`: TorchScript's profiling executor off)
against the live engine's (optimised), at a file render's blocks (16,384 frames), one core, whole
band, the fastest precision here, in one run.

Run: .venv/bin/python tests/bench/bench_file_render.py [--model FILE|NAME ...] [--chain A,B ...]
[--set NAME=VALUE ...] [--seconds 6] [--rounds 3] (``--set inpaint.method=learned``: an inpainting method)
Each round, in turns for the two kinds: "first", a fresh process builds an engine and renders the
clip once (what `spectro-fx --input` costs: the optimised core pays TorchScript's profiling runs
on its first calls in a process); "then", an engine of this process renders it again after a
warm-up. Prints x real time (CPU time of the rendering thread, best of the rounds) and plain /
optimised.
Figures, not asserts; this VM's speed drifts within minutes, so only ratios of one run mean much.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings

import torch
from _engine_speed import SR, demo_signal, machine_line, x_real_time

KINDS = ("optimised", "plain")


def _engine(model, chain: str, precision: str, kind: str, settings: list[str]):
    from spectro_fx.effect.core.engine import Engine

    engine = Engine(model, sr=SR, channels=1, chain=chain, seed=0, precision=precision, jit_optimize=kind == "optimised")
    engine.set("low_hz", 20.0)
    engine.set("high_hz", 24000.0)
    for setting in settings:
        name, _, value = setting.partition("=")
        engine.set(name, value)
    return engine


def _first_render(model: str, chain: str, precision: str, kind: str, seconds: float, settings: list[str]) -> float:
    """x real time of the first render of a fresh process (this script run with --first)."""
    command = [sys.executable, __file__, "--first", kind, "--model", model, "--chain", chain,
               "--precision", precision, "--seconds", str(seconds), *(f"--set={s}" for s in settings)]
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model file or bundled name (repeatable; default: default and classic)")
    parser.add_argument("--chain", action="append", help="effect chain (repeatable; default: none and inpaint)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an effect parameter for every render (repeatable), e.g. inpaint.method=learned")
    parser.add_argument("--seconds", type=float, default=6.0, help="audio per render")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each kind; the best is kept")
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--first", choices=KINDS, help=argparse.SUPPRESS)  # one fresh-process render
    args = parser.parse_args()
    for setting in args.set:
        if "=" not in setting:
            parser.error(f"--set {setting!r}: expected NAME=VALUE, e.g. inpaint.method=learned")
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from spectro_fx.effect.io.render import resolve_model
    from spectro_fx.models.runtime import fast_precision

    precision = args.precision or fast_precision()
    signal_ = demo_signal(args.seconds)
    if args.first:
        engine = _engine(resolve_model(args.model[0]), args.chain[0], precision, args.first, args.set)
        print(x_real_time(engine, signal_))
        return
    print(machine_line(f"precision {precision}" + "".join(f", {s}" for s in args.set)))
    for name in args.model or ["default", "classic"]:
        model = resolve_model(name)
        for chain in args.chain or ["none", "inpaint"]:
            engines = {kind: _engine(model, chain, precision, kind, args.set) for kind in KINDS}
            for engine in engines.values():
                engine.process(signal_[:SR])  # warm up
            best: dict[tuple[str, str], float] = {}
            for _ in range(args.rounds):
                for kind, engine in engines.items():
                    first = _first_render(name, chain, precision, kind, args.seconds, args.set)
                    best[(kind, "first")] = max(best.get((kind, "first"), 0.0), first)
                    best[(kind, "then")] = max(best.get((kind, "then"), 0.0), x_real_time(engine, signal_))
            print(f"\nmodel {model.path.name}, chain {chain}, whole band, {args.seconds:g} s, best of {args.rounds}:")
            for when in ("first", "then"):
                optimised, plain = best[("optimised", when)], best[("plain", when)]
                print(f"  {when:5s} render: optimised {optimised:5.1f}x, plain {plain:5.1f}x real time "
                      f"(plain / optimised = {plain / optimised:.2f})")


if __name__ == "__main__":
    main()
