"""Speed of naive Bayes inpainting: vectorised `spatial` against a per-cell scikit-learn loop,
and the per-column cost of each codemap effect in the engine against the column period.

Run: `.venv/bin/python tests/bench/bench_inpaint.py [--quick] [--model FILE]`. Prints figures;
asserts only that the vectorised codes equal scikit-learn's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def sklearn_loop(codemap, mask, *, radius, axis, order, fallback):
    """The paper's method, one GaussianNB fit per cell, in the vectorised code's order."""
    from sklearn.naive_bayes import GaussianNB

    from spectro_fx.models.naive_bayes import inpaint_passes, neighbour_offsets

    offsets = neighbour_offsets(radius=radius, axis=axis)
    n_rows, n_cols = codemap.shape
    state = np.where(mask, -1, codemap)
    for rows, cols in inpaint_passes(mask, offsets, order=order):
        for r, c in zip(rows, cols):
            coords, classes = [], []
            for dc, dr in offsets:
                rr, cc = r + dr, c + dc
                if 0 <= rr < n_rows and 0 <= cc < n_cols and state[rr, cc] >= 0:
                    coords.append((dc, dr))
                    classes.append(state[rr, cc])
            if not coords:
                state[r, c] = int(np.argmax(fallback))
                continue
            state[r, c] = GaussianNB().fit(np.array(coords, dtype=float), np.array(classes)).predict(np.zeros((1, 2)))[0]
    return state


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_spatial(quick: bool) -> None:
    from spectro_fx.models.naive_bayes import spatial_inpaint

    rng = np.random.default_rng(0)
    k, n_rows, n_cols = 256, 33, 48
    codemap = rng.integers(0, k, size=(n_rows, n_cols))
    fallback = np.zeros(k)
    regions = {
        "8x8": (slice(12, 20), slice(20, 28)),
        "16x32": (slice(8, 24), slice(8, 40)),
        "full column": (slice(0, n_rows), slice(n_cols - 1, n_cols)),
    }
    print("spatial GNB inpainting, random codemap 33x48, K=256, radius 2, temperature 0 (best of runs)")
    print(f"{'region':>12} {'axis':>5} {'order':>11} {'cells':>5} {'sklearn ms':>11} {'ours ms':>8} {'ratio':>7}")
    warnings.simplefilter("ignore")
    for name, (rows, cols) in regions.items():
        mask = np.zeros(codemap.shape, dtype=bool)
        mask[rows, cols] = True
        for axis in ("time", "freq", "both"):
            for order in ("causal", "interleaved"):
                if name == "full column" and order == "interleaved":
                    continue  # one column: the same passes
                kwargs = dict(radius=2, axis=axis, order=order)
                ours = spatial_inpaint(codemap, mask, fallback_log_prior=fallback, **kwargs)
                reference = sklearn_loop(codemap, mask, fallback=fallback, **kwargs)
                assert np.array_equal(ours, reference), (name, axis, order)
                t_ref = best_of(lambda: sklearn_loop(codemap, mask, fallback=fallback, **kwargs), 1 if quick else 2)
                t_ours = best_of(lambda: spatial_inpaint(codemap, mask, fallback_log_prior=fallback, **kwargs), 5 if quick else 30)
                print(f"{name:>12} {axis:>5} {order:>11} {int(mask.sum()):>5} {1e3 * t_ref:>11.1f} "
                      f"{1e3 * t_ours:>8.3f} {t_ref / t_ours:>6.0f}x")


def default_like_model(folder: Path, model_path: str | None):
    """The given model file, else an untrained model at the default config with a prior fitted
    on its own codes (costs do not depend on the weights)."""
    from spectro_fx.models import VQVAEConfig
    from spectro_fx.models.export import export_model, load_model
    from spectro_fx.models.naive_bayes import fit_categorical_prior
    from spectro_fx.models.vqvae import VQVAE

    if model_path:
        return load_model(model_path)
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig()).eval()
    rng = np.random.default_rng(0)
    maps = [rng.integers(0, model.cfg.codebook_size, size=(model.cfg.n_rows, 200)) for _ in range(4)]
    prior = fit_categorical_prior(maps, n_codes=model.cfg.codebook_size)
    return load_model(export_model(model, folder / "default_like.pt", prior=prior))


def bench_engine(quick: bool, model_path: str | None) -> None:
    from spectro_fx.effect.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        model = default_like_model(Path(tmp), model_path)
        sr = int(model.module.sample_rate)
        seconds = 1.0 if quick else 3.0
        t = np.arange(int(sr * seconds)) / sr
        rng = np.random.default_rng(1)
        x = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)[:, None]
        chains = [
            ("none", {}),
            ("inpaint spatial both", {"inpaint.method": "spatial", "inpaint.axis": "both"}),
            ("inpaint spatial time", {"inpaint.method": "spatial", "inpaint.axis": "time"}),
            ("inpaint spatial freq", {"inpaint.method": "spatial", "inpaint.axis": "freq"}),
            ("inpaint learned", {"inpaint.method": "learned"}),
            ("noise", {}),
            ("dropout", {}),
            ("mix", {"mix.amount": 0.5}),
        ]
        for band, (low, high) in {"full band (all rows)": (0.0, sr / 2), "band 1-5 kHz": (1000.0, 5000.0)}.items():
            print(f"\nengine per-column cost, {model.path.name}, {band}, 1 channel, block 256 "
                  f"(column period {1e3 * int(model.module.time_stride) * int(model.module.hop_length) / sr:.1f} ms; "
                  "median of columns)")
            base = None
            for label, values in chains:
                name = label.split()[0]
                aux = x[::-1].copy() if name == "mix" else None
                engine = Engine(model, sr=sr, channels=1, chain=name, seed=0, block_hint=256,
                                values={"low_hz": low, "high_hz": high, **values},
                                aux_channels=0 if aux is None else 1)
                for i in range(0, len(x), 256):
                    engine.process(x[i : i + 256], None if aux is None else aux[i : i + 256])
                times = np.array(engine.column_times)[8:]
                median = float(np.median(times))
                if base is None:
                    base = median
                print(f"  {label:<22} {1e3 * median:6.2f} ms/column  effect {1e3 * (median - base):+6.2f} ms  "
                      f"= {100 * median / engine.column_period_s:5.1f}% of the period (p95 {1e3 * np.percentile(times, 95):.2f} ms)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--model", default=None, help="model file for the engine figures (default: untrained default config)")
    parser.add_argument("--skip-sklearn", action="store_true", help="engine figures only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if not args.skip_sklearn:
        bench_spatial(args.quick)
    bench_engine(args.quick, args.model)


if __name__ == "__main__":
    main()
