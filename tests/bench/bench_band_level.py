"""Level of an inpainted band against the input, over time: does the band stay alive?

Renders the demo clip (or ``--input FILE``) through ``--chain none`` (the codec's own level) and
``--chain inpaint`` with an always-on region (``period_s=0``) and with a 1 s / 50 % gate, for each
method (the neural prior at temperatures 0, 0.5 and 1), axis and ``inpaint.context``, and
prints the band's energy (inside ``--low``..``--high`` Hz) relative to the input's: the whole
clip, its last third (a strip that freezes or darkens shows there), and the first 0.3 s (a start
burst shows there). 0 dB = same level as the input. Prints figures; asserts nothing.

Run: ``.venv/bin/python tests/bench/bench_band_level.py [--input FILE] [--low 400 --high 3000]
[--methods none,neural]``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def band_energy(audio: np.ndarray, sr: int, low: float, high: float, *, n_fft: int = 2048) -> np.ndarray:
    """Energy inside [low, high] Hz per frame of a mono signal (hop n_fft / 4)."""
    hop = n_fft // 4
    window = np.hanning(n_fft)
    n = 1 + max(0, len(audio) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop][:n] * window
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    return power[:, (freqs >= low) & (freqs <= high)].sum(axis=1)


def db(ratio: float) -> float:
    return 10.0 * np.log10(max(ratio, 1e-30))


def band_cases(model) -> list[tuple[str, str, float, str]]:
    """(method, axis, temperature, context) of each render: plain resynthesis (``none``, the
    codec's own level), the neural prior where the model file has one (temperatures 0, 0.5 and 1), the
    spatial naive Bayes on each axis and the learned one, each context."""
    cases = [("none", "", 0.0, "")]
    if bool(getattr(model.module, "has_neural_prior", False)):
        cases += [("neural", "both", t, context) for context in ("input", "output") for t in (0.0, 0.5, 1.0)]
    cases += [("spatial", axis, 1.0, context) for context in ("input", "output") for axis in ("both", "time", "freq")]
    return cases + [("learned", "both", 1.0, context) for context in ("input", "output")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=REPO / "assets" / "demo.wav")
    parser.add_argument("--model", default=None, help="model file (default: the bundled one)")
    parser.add_argument("--low", type=float, default=400.0)
    parser.add_argument("--high", type=float, default=3000.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="none,neural,spatial,learned",
                        help="comma list of none, neural, spatial, learned (default all)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - {"none", "neural", "spatial", "learned"})
    if unknown or not methods:
        parser.error(f"--methods {args.methods!r}: unknown {', '.join(unknown) or '(none given)'}; "
                     "known: none, neural, spatial, learned")

    from spectro_fx.effect.core.engine import Engine
    from spectro_fx.effect.io.render import read_audio, render, resolve_model

    model = resolve_model(args.model)
    audio, sr = read_audio(args.input)
    mono_in = audio.mean(axis=1).astype(np.float64)
    e_in = band_energy(mono_in, sr, args.low, args.high)
    hop_s = 512 / sr
    head = max(1, int(0.3 / hop_s))
    last = len(e_in) * 2 // 3
    print(f"input {args.input.name}: {len(audio) / sr:.1f} s at {sr} Hz; band {args.low:g}-{args.high:g} Hz; "
          f"model {model.path if hasattr(model, 'path') else args.model or 'default'}")
    print(f"{'gate':<9}{'method':<9}{'axis':<6}{'T':<5}{'context':<8}{'whole dB':>9}{'last 1/3':>9}{'first 0.3 s':>12}"
          f"{'x RT':>7}")
    for gate in ("always", "1s/50%"):
        for method, axis, temperature, context in [case for case in band_cases(model) if case[0] in methods]:
            values = {"low_hz": args.low, "high_hz": args.high, "period_s": 0.0 if gate == "always" else 1.0, "duty": 0.5}
            if method != "none":
                values.update({"inpaint.method": method, "inpaint.axis": axis, "inpaint.context": context,
                               "inpaint.temperature": temperature})
            engine = Engine(model, sr=sr, channels=audio.shape[1], chain="none" if method == "none" else "inpaint",
                            seed=args.seed, values=values)
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = render(audio, engine)
            speed = len(audio) / sr / (time.perf_counter() - started)
            e_out = band_energy(out.mean(axis=1).astype(np.float64), sr, args.low, args.high)
            whole = db(e_out.sum() / e_in.sum())
            tail = db(e_out[last:].sum() / e_in[last:].sum())
            first = db(e_out[:head].sum() / max(e_in[:head].sum(), 1e-30))
            print(f"{gate:<9}{method:<9}{axis if method == 'spatial' else '':<6}{'' if method == 'none' else f'{temperature:g}':<5}"
                  f"{'' if method == 'none' else context:<8}{whole:9.1f}{tail:9.1f}{first:12.1f}{speed:7.1f}")


if __name__ == "__main__":
    main()
