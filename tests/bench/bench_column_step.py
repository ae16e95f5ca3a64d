"""The column step, fused against split, in one run: live CPU per audio second at small blocks,
ops per column, offline speed, and the exported module as nn~ runs it.

Split is the path every chain took before the step fused the built-in effects (the core's analysis,
the Python effect plugins, the core's synthesis), and the one a chain with a third-party effect takes.
ONNX is the fused step with its network in ONNX Runtime and the synthesis in numpy (the live
command's engine, ``runtime="auto"``), fused the same step with its network scripted.
Prints figures; asserts nothing. Targets (live, default model, 128 frames, band 200-8000 Hz, one AVX2
core): <= 0.25 CPU s per audio s mono with `none` and `inpaint`, <= 0.45 stereo.

Run: .venv/bin/python tests/bench/bench_column_step.py [--seconds 6] [--rounds 3] [--model default]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _engine_speed import FILE_BLOCK, SR, cold_cache_line, demo_signal, machine_line  # noqa: E402

BAND = {"low_hz": 200.0, "high_hz": 8000.0}


def cpu_per_audio_s(engine, signal_: np.ndarray, block: int, *, paced: bool = False) -> float:
    """This thread's CPU seconds per second of ``signal_`` streamed from a reset engine in ``block``
    frames: back to back, or ``paced`` as live (each call waits for its block's time to come, so
    the thread sleeps between calls and other work runs on the machine meanwhile)."""
    engine.reset()
    started, wall = time.thread_time(), time.perf_counter()
    for i in range(0, len(signal_), block):
        if paced:
            time.sleep(max(wall + i / SR - time.perf_counter(), 0.0))
        engine.process(signal_[i : i + block])
    return (time.thread_time() - started) / (len(signal_) / SR)


def module_cpu_per_audio_s(module, signal_: np.ndarray, block: int) -> float:
    """As nn~ runs an exported module: one forward per host buffer, [1, channels, block]."""
    x = torch.from_numpy(np.ascontiguousarray(signal_.T))[None]
    module.reset()
    started = time.thread_time()
    with torch.no_grad():
        for i in range(0, x.shape[2], block):
            module(x[:, :, i : i + block])
    return (time.thread_time() - started) / (len(signal_) / SR)


def ops_per_column(engine, signal_: np.ndarray, block: int) -> float:
    """Top-level aten ops per codemap column (what the per-op overhead multiplies)."""
    engine.reset()
    for i in range(0, SR // 2, block):
        engine.process(signal_[i : i + block])
    before = int(engine._core.columns_done)
    with torch.autograd.profiler.profile() as prof:
        for i in range(SR // 2, SR, block):
            engine.process(signal_[i : i + block])
    top = sum(1 for e in prof.function_events
              if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))
    return top / max(int(engine._core.columns_done) - before, 1)


def alternate(measures: dict, rounds: int) -> dict:
    """Each measure run ``rounds`` times, interleaved; the median of each."""
    results = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            results[name].append(measure())
    return {name: float(np.median(values)) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="default")
    parser.add_argument("--no-ops", action="store_true", help="skip the op counts (the profiler's pass)")
    parser.add_argument("--chains", default="none,spatial,neural,noise",
                        help="comma list of none, spatial, neural, noise (default all)")
    parser.add_argument("--mono", action="store_true", help="live rows for one channel only")
    parser.add_argument("--live-only", action="store_true", help="no offline and no exported-module rows")
    parser.add_argument("--paced", action="store_true",
                        help="also the ONNX path paced as live, one block per block period (takes real time)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from spectro_fx.effect.core.engine import Engine
    from spectro_fx.effect.core.runtime_step import resolve_runtime
    from spectro_fx.effect.export.scripted import ScriptedEffect
    from spectro_fx.effect.io.render import resolve_model

    model = resolve_model(args.model)
    has_neural = bool(getattr(model.module, "has_neural_prior", False))
    known = {"none": ("none", {}), "spatial": ("inpaint", {"inpaint.method": "spatial"}),
             "neural": ("inpaint", {"inpaint.method": "neural"}), "noise": ("noise", {})}
    asked = [name.strip() for name in args.chains.split(",") if name.strip()]
    unknown = [name for name in asked if name not in known]
    if unknown:
        raise SystemExit(f"--chains: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    chains = [known[name] for name in asked if name != "neural" or has_neural]
    print(machine_line(f"model {args.model}, float32, {args.rounds} rounds interleaved, medians"))
    if args.paced:
        print(cold_cache_line())
    mono = demo_signal(args.seconds)
    stereo = np.concatenate([mono, np.roll(mono, SR // 3, axis=0)], axis=1)

    onnx = resolve_runtime("auto", precision="float32") == "onnxruntime"
    paths = {"onnx": dict(runtime="onnxruntime")} if onnx else {}
    paths.update({"fused": dict(fuse=True), "split": dict(fuse=False)})
    paced = {"paced": dict(runtime="onnxruntime")} if onnx and args.paced else {}
    if not onnx:
        print("(onnxruntime is not installed here: no ONNX column)")

    print("\nlive, 128-frame blocks, band 200-8000 Hz: CPU s per audio s; ratios to the scripted fused step")
    if paced:
        print("(paced: the ONNX path with one block per block period, the thread sleeping between calls as live)")
    print(f"{'chain':<24} {'ch':>2} " + " ".join(f"{p:>7}" for p in {**paths, **paced}) + f" {'onnx/f':>7} {'split/f':>7}"
          f" {'ops fused':>10} {'ops split':>10}")
    for chain, values in chains:
        label = chain + (f" {values['inpaint.method']}" if values else "")
        for signal_ in (mono,) if args.mono else (mono, stereo):
            ch = signal_.shape[1]
            engines = {p: Engine(model, sr=SR, channels=ch, chain=chain, values={**BAND, **values}, **kw)
                       for p, kw in {**paths, **paced}.items()}
            got = alternate({p: (lambda e=e, p=p: cpu_per_audio_s(e, signal_, 128, paced=p == "paced"))
                             for p, e in engines.items()}, args.rounds)
            ops = ("", "")
            if not args.no_ops and ch == 1:
                ops = tuple(f"{ops_per_column(engines[p], signal_, 128):.0f}" for p in ("fused", "split"))
            onnx_ratio = f"{got['onnx'] / got['fused']:>7.2f}" if onnx else f"{'':>7}"
            print(f"{label:<24} {ch:>2} " + " ".join(f"{got[p]:>7.3f}" for p in {**paths, **paced})
                  + f" {onnx_ratio} {got['split'] / got['fused']:>7.2f} {ops[0]:>10} {ops[1]:>10}")

    if args.live_only:
        return
    print(f"\noffline, {FILE_BLOCK}-frame blocks, whole band: x real time (" + " / ".join(paths) + ")")
    for chain, values in chains:
        label = chain + (f" {values['inpaint.method']}" if values else "")
        engines = {p: Engine(model, sr=SR, channels=1, chain=chain, jit_optimize=False,
                             values={"low_hz": 20.0, "high_hz": 24000.0, **values}, **kw) for p, kw in paths.items()}
        got = alternate({p: (lambda e=e: 1.0 / cpu_per_audio_s(e, mono, FILE_BLOCK)) for p, e in engines.items()},
                        args.rounds)
        print(f"{label:<24} " + " ".join(f"{got[p]:>7.1f}x" for p in paths))

    print("\nexported module as nn~ runs it (one thread, forward per host buffer), mono: CPU s per audio s")
    for chain, values in chains[:2]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.script(ScriptedEffect(model, chain=[chain], values={**BAND, **values}))
        got = alternate({block: (lambda b=block: module_cpu_per_audio_s(module, mono, b)) for block in (128, 512)},
                        args.rounds)
        label = chain + (f" {values['inpaint.method']}" if values else "")
        print(f"{label:<24} 128 frames {got[128]:.3f}, 512 frames {got[512]:.3f}")


if __name__ == "__main__":
    main()
