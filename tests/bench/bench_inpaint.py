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


EFFECT_SETTINGS = [
    ("none", "none", {}),
    ("inpaint spatial both", "inpaint", {"method": "spatial", "axis": "both"}),
    ("inpaint spatial time", "inpaint", {"method": "spatial", "axis": "time"}),
    ("inpaint spatial freq", "inpaint", {"method": "spatial", "axis": "freq"}),
    ("inpaint learned", "inpaint", {"method": "learned"}),
    ("noise", "noise", {}),
    ("dropout", "dropout", {}),
    ("cross", "cross", {"amount": 0.5}),
]


def bench_engine(quick: bool, model_path: str | None) -> None:
    """Per-column cost of each effect alone (its process_codes + embed + process_latent on the
    columns of real encoded audio, effects in rotation so machine load hits all alike), and of
    whole engines (round-robin over the same blocks)."""
    from spectro_fx.effect import CodemapContext, available_effects
    from spectro_fx.effect.core.engine import Engine

    registry = available_effects()
    with tempfile.TemporaryDirectory() as tmp:
        model = default_like_model(Path(tmp), model_path)
        module = model.module
        sr = int(module.sample_rate)
        period = int(module.time_stride) * int(module.hop_length) / sr
        seconds = 1.5 if quick else 4.0
        t = np.arange(int(sr * seconds)) / sr
        rng = np.random.default_rng(1)
        x = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
        with torch.no_grad():
            codes = module.encode(magnitude_of(module, x))
            aux_codes = module.encode(magnitude_of(module, x[::-1].copy()))
        n_rows, n_cols = codes.shape[1], codes.shape[2]
        row_hz = int(module.freq_stride) * sr / int(module.n_fft)
        print(f"\nper-column cost of each effect alone, {model.path.name}, 1 channel, {n_cols} columns "
              f"(column period {1e3 * period:.1f} ms); median and p95")
        for band, (low, high) in {"all rows": (0, n_rows), "rows 1-6 kHz": (int(1000 // row_hz), int(6000 // row_hz))}.items():
            region = torch.zeros(n_rows, 1, dtype=torch.bool)
            region[low:high] = True
            effects = [(label, registry[name](**values)) for label, name, values in EFFECT_SETTINGS]
            histories = [torch.zeros(1, n_rows, 0, dtype=torch.long) for _ in effects]
            times = [[] for _ in effects]
            effect_rng = np.random.default_rng(0)
            with torch.no_grad():
                for c in range(n_cols):
                    column = codes[:, :, c : c + 1]
                    for i, (label, effect) in enumerate(effects):
                        started = time.perf_counter()
                        ctx = CodemapContext(model=module, history=histories[i], rng=effect_rng,
                                             aux_codes=aux_codes[:, :, c : c + 1])
                        out = effect.process_codes(column, region, ctx)
                        effect.process_latent(module.embed(out), region, ctx)
                        times[i].append(time.perf_counter() - started)
                        histories[i] = torch.cat([histories[i], out], dim=2)[:, :, -64:]
            print(f"  region {band} ({int(region.sum())} cells per column)")
            for (label, _), samples in zip(effects, times):
                samples = np.array(samples[4:])
                median = float(np.median(samples))
                print(f"    {label:<22} {1e3 * median:6.3f} ms  ({100 * median / period:5.1f}% of the period, "
                      f"p95 {1e3 * np.percentile(samples, 95):.3f} ms)")

        print("\nwhole engine per column (encoder + chain + decoder), band 1-6 kHz, block 256, engines in round-robin")
        x2 = x[:, None]
        engines = []
        for label, name, values in EFFECT_SETTINGS:
            engines.append((label, Engine(model, sr=sr, channels=1, chain=name, seed=0, block_hint=256,
                                          values={"low_hz": 1000.0, "high_hz": 6000.0,
                                                  **{f"{name}.{k}": v for k, v in values.items()}},
                                          aux_channels=1 if name == "cross" else 0)))
        for i in range(0, len(x2), 256):
            for label, engine in engines:
                engine.process(x2[i : i + 256], x2[::-1][i : i + 256] if label == "cross" else None)
        for label, engine in engines:
            samples = np.array(engine.column_times)[8:]
            median = float(np.median(samples))
            print(f"  {label:<22} {1e3 * median:6.2f} ms/column = {100 * median / engine.column_period_s:5.1f}% "
                  f"of the period (p95 {1e3 * np.percentile(samples, 95):.2f} ms)")


# --- quality on held-out notes ------------------------------------------------------------------


def note_files(folder: str, count: int) -> list[Path]:
    """``count`` audio files spread evenly over a folder (NSynth layout or plain), sorted by name."""
    root = Path(folder)
    files = sorted((root / "audio").glob("*.wav")) if (root / "audio").is_dir() else sorted(root.rglob("*.wav"))
    if not files:
        raise SystemExit(f"no .wav files under {folder}")
    pick = np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int))
    return [files[i] for i in pick]


def read_mono(path: Path, sr: int) -> np.ndarray:
    import soundfile as sf
    import soxr

    audio, file_sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    return soxr.resample(audio, file_sr, sr).astype(np.float32) if file_sr != sr else audio


def magnitude_of(module, audio: np.ndarray) -> torch.Tensor:
    """Linear magnitude ``[1, n_bins, frames]`` of a clip, frames a multiple of time_stride."""
    from spectro_fx.models import STFTConfig
    from spectro_fx.models.spectral import magnitude

    cfg = STFTConfig(sr=int(module.sample_rate), n_fft=int(module.n_fft), hop_length=int(module.hop_length),
                     win_length=int(module.win_length), window=str(module.window),
                     synthesis_length=int(getattr(module, "synthesis_length", 0)))
    mag = magnitude(torch.from_numpy(audio)[None], cfg)
    ts = int(module.time_stride)
    return mag[:, :, : mag.shape[2] // ts * ts].float()


def stream_effect(effect, module, codemap: np.ndarray, mask: np.ndarray, *, seed: int) -> np.ndarray:
    """Run a codes effect over a codemap column by column, as the engine does."""
    from spectro_fx.effect import CodemapContext

    rng = np.random.default_rng(seed)
    history = torch.zeros(1, codemap.shape[0], 0, dtype=torch.long)
    for c in range(codemap.shape[1]):
        column = torch.from_numpy(codemap[None, :, c : c + 1].copy())
        region = torch.from_numpy(mask[:, c : c + 1].copy())
        ctx = CodemapContext(model=module, history=history[:, :, -16:], rng=rng)
        history = torch.cat([history, effect.process_codes(column, region, ctx)], dim=2)
    return history[0].numpy()


def bench_quality(args) -> None:
    import librosa

    from spectro_fx.effect.plugins.codemap_effects import Noise
    from spectro_fx.effect.plugins.inpaint import Inpaint
    from spectro_fx.models.export import export_model, load_model
    from spectro_fx.models.naive_bayes import fit_categorical_prior

    model = load_model(args.model)
    module = model.module
    sr, k = int(module.sample_rate), int(module.codebook_size)
    prior_note = "the model file's prior"
    if not bool(module.has_prior):
        if not args.train_data:
            raise SystemExit("the model has no learned prior: pass --train-data DIR to fit one")
        started = time.perf_counter()
        with torch.no_grad():
            maps = [module.encode(magnitude_of(module, read_mono(f, sr)))[0].numpy()
                    for f in note_files(args.train_data, args.max_train)]
        prior = fit_categorical_prior(maps, n_codes=k, alpha=1.0)
        prior_note = (f"a prior fitted here on {len(maps)} notes of {Path(args.train_data).name} "
                      f"(alpha 1, {time.perf_counter() - started:.0f} s)")
        # the model file with the prior, as `spectro-fx-train prior` + `export` would make it
        from spectro_fx.models.vqvae import VQVAE

        eager = VQVAE(model.config)
        eager.encoder.load_state_dict(module.encoder.state_dict())
        eager.decoder.load_state_dict(module.decoder.state_dict())
        with torch.no_grad():
            eager.quantizer.codebook.copy_(module.codebook)
            eager.quantizer.cluster_size.copy_(torch.exp(module.code_log_prior))  # keeps code_log_prior
        tmp = Path(tempfile.mkdtemp()) / "with_prior.pt"
        model = load_model(export_model(eager, tmp, prior=prior, data_description=str(module.data_description)))
        module = model.module
    n_rows = int(module.n_rows)
    row_hz = int(module.freq_stride) * sr / int(module.n_fft)
    low_row, high_row = int(args.low_hz // row_hz), int(np.ceil(args.high_hz / row_hz))
    methods = {
        "learned T=1": Inpaint(method="learned", temperature=1.0),
        "learned T=0": Inpaint(method="learned", temperature=0.0),
        "spatial both T=1": Inpaint(method="spatial", axis="both", radius=2, temperature=1.0),
        "spatial time T=1": Inpaint(method="spatial", axis="time", radius=2, temperature=1.0),
        "uniform random": Noise(amount=1.0),
    }
    mel = librosa.filters.mel(sr=sr, n_fft=int(module.n_fft), n_mels=64)
    centres = librosa.mel_frequencies(n_mels=66, fmax=sr / 2)[1:-1]
    bands = (centres >= low_row * row_hz) & (centres < high_row * row_hz)

    def mel_db(mag):
        return 20 * np.log10(mel @ mag + 1e-5)

    distances = {name: [] for name in methods}
    distances_input = {name: [] for name in methods}
    same = {name: [] for name in methods}
    regenerated = {name: np.zeros(k) for name in methods}
    heldout_usage, region_usage = np.zeros(k), np.zeros(k)
    files = note_files(args.heldout, args.max_heldout)
    example = None
    ts = int(module.time_stride)
    with torch.no_grad():
        for i, path in enumerate(files):
            mag = magnitude_of(module, read_mono(path, sr))
            codes = module.encode(mag)[0].numpy()
            n_cols = codes.shape[1]
            mask = np.zeros(codes.shape, dtype=bool)
            c0, c1 = n_cols // 4, 3 * n_cols // 4
            mask[low_row:high_row, c0:c1] = True
            heldout_usage += np.bincount(codes.ravel(), minlength=k)
            region_usage += np.bincount(codes[mask], minlength=k)
            reference = mel_db(module.decode(torch.from_numpy(codes)[None])[0].double().numpy())[bands][:, c0 * ts : c1 * ts]
            original = mel_db(mag[0].double().numpy())[bands][:, c0 * ts : c1 * ts]
            outputs = {}
            for name, effect in methods.items():
                out = stream_effect(effect, module, codes, mask, seed=i)
                outputs[name] = out
                decoded = mel_db(module.decode(torch.from_numpy(out)[None])[0].double().numpy())[bands][:, c0 * ts : c1 * ts]
                distances[name].append(float(np.abs(decoded - reference).mean()))
                distances_input[name].append(float(np.abs(decoded - original).mean()))
                same[name].append(float((out[mask] == codes[mask]).mean()))
                regenerated[name] += np.bincount(out[mask], minlength=k)
            if example is None and path.name.startswith(args.example_prefix):
                example = (path, mag, codes, outputs, mask)
        if example is None:
            example = (path, mag, codes, outputs, mask)

    def tv(p, q):
        return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())

    print(f"\nquality on {len(files)} held-out notes of {Path(args.heldout).name}, model {Path(args.model).name} "
          f"({prior_note}); region rows {low_row}-{high_row - 1} ({low_row * row_hz:.0f}-{high_row * row_hz:.0f} Hz) "
          f"x the middle half of each note; streamed column by column as in the engine")
    print(f"{'method':>18} {'mel dist to recon (dB)':>23} {'to input (dB)':>14} {'codes kept':>11} "
          f"{'usage TV vs held-out':>21} {'vs region codes':>16}")
    for name in methods:
        d, di = np.array(distances[name]), np.array(distances_input[name])
        print(f"{name:>18} {d.mean():>15.2f} +- {d.std() / np.sqrt(d.size):4.2f} {di.mean():>14.2f} "
              f"{np.mean(same[name]):>11.3f} {tv(regenerated[name], heldout_usage):>21.3f} "
              f"{tv(regenerated[name], region_usage):>16.3f}")
    used = int((heldout_usage > 0).sum())
    print(f"held-out notes use {used}/{k} codes; the region's original codes {int((region_usage > 0).sum())}")
    if args.figures:
        with torch.no_grad():
                save_figures(args.figures, module, example, regenerated, heldout_usage, region_usage,
                         low_row=low_row, high_row=high_row, row_hz=row_hz)
        engine_figures(args.figures, model, example[0], low_hz=low_row * row_hz, high_hz=high_row * row_hz)


def save_figures(folder, module, example, regenerated, heldout_usage, region_usage, *, low_row, high_row, row_hz):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path, mag, codes, outputs, mask = example
    sr, ts, hop = int(module.sample_rate), int(module.time_stride), int(module.hop_length)
    cols = np.flatnonzero(mask.any(axis=0))
    panels = [("input", mag[0].numpy()), ("VQ-VAE reconstruction", module.decode(torch.from_numpy(codes)[None])[0].numpy())]
    for name in ("learned T=1", "spatial both T=1", "uniform random"):
        panels.append((f"inpainted: {name}", module.decode(torch.from_numpy(outputs[name])[None])[0].numpy()))
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 * len(panels)), sharex=True, constrained_layout=True)
    top = 20 * np.log10(panels[0][1].max() + 1e-9)
    for ax, (title, m) in zip(axes, panels):
        db = 20 * np.log10(m + 1e-9)
        extent = (0, m.shape[1] * hop / sr, 0, sr / 2)
        ax.imshow(db, origin="lower", aspect="auto", extent=extent, vmin=top - 80, vmax=top, cmap="magma")
        ax.add_patch(Rectangle((cols[0] * ts * hop / sr, low_row * row_hz), len(cols) * ts * hop / sr,
                               (high_row - low_row) * row_hz, fill=False, edgecolor="cyan", lw=1.2))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("Hz")
    axes[-1].set_xlabel(f"time (s), held-out note {path.stem}")
    fig.savefig(folder / "inpaint_spectrograms.png", dpi=110)
    plt.close(fig)

    order = np.argsort(-heldout_usage)
    fig, ax = plt.subplots(figsize=(9, 3.5), constrained_layout=True)
    ax.plot(heldout_usage[order] / heldout_usage.sum(), label="held-out notes (all cells)", color="black", lw=1.5)
    ax.plot(region_usage[order] / region_usage.sum(), label="held-out notes (region cells)", color="gray", lw=1)
    for name, colour in (("learned T=1", "tab:blue"), ("spatial both T=1", "tab:orange"), ("uniform random", "tab:red")):
        ax.plot(regenerated[name][order] / regenerated[name].sum(), label=f"regenerated: {name}", color=colour, lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("code, by held-out frequency")
    ax.set_ylabel("share of cells")
    ax.legend(fontsize=8)
    fig.savefig(folder / "inpaint_usage.png", dpi=110)
    plt.close(fig)
    print(f"figures: {folder / 'inpaint_spectrograms.png'}, {folder / 'inpaint_usage.png'}")


def engine_figures(folder, model, note: Path, *, low_hz: float, high_hz: float) -> None:
    """Before/after pictures of a held-out note rendered by the engine (the product path)."""
    from spectro_fx.effect.io.render import render_file

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("learned", "spatial"):
            picture = folder / f"inpaint_engine_{method}.png"
            render_file(note, Path(tmp) / "out.wav", model=model, chain="inpaint", seed=0, plot=picture,
                        values={"low_hz": low_hz, "high_hz": high_hz, "period_s": 2.0, "duty": 0.5,
                                "inpaint.method": method})
            print(f"figure: {picture} (engine, {note.stem}, {low_hz:.0f}-{high_hz:.0f} Hz, gated 1 s of every 2 s)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=("speed", "engine", "quality", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--model", default=None, help="model file (engine: default an untrained default config; quality: required)")
    parser.add_argument("--train-data", default=None, help="quality: notes to fit a prior on when the model has none")
    parser.add_argument("--heldout", default=None, help="quality: held-out notes (NSynth layout or .wav folder)")
    parser.add_argument("--max-train", type=int, default=400)
    parser.add_argument("--max-heldout", type=int, default=60)
    parser.add_argument("--low-hz", type=float, default=1500.0, help="quality: region band")
    parser.add_argument("--high-hz", type=float, default=6000.0)
    parser.add_argument("--example-prefix", default="string", help="quality: note pictured")
    parser.add_argument("--figures", default=None, help="quality: folder for inpaint_*.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.part in ("speed", "all"):
        bench_spatial(args.quick)
    if args.part in ("engine", "all"):
        bench_engine(args.quick, args.model)
    if args.part in ("quality", "all") and args.heldout:
        bench_quality(args)


if __name__ == "__main__":
    main()
