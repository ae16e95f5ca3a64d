"""Gap filling: how well each inpainter regenerates a masked region of held-out sound, against
what was there, with naive Bayes and trivial baselines in the same run.

Run: .venv/bin/python tests/bench/bench_gap_filling.py [--full] [--model FILE] [--neural-prior FILE]
     [--compare-prior FILE ...] [--temperatures 0,0.5,1] [--workdir DIR] [--json OUT]

Material the default model never trained on: TimGM6mb notes (FluidSynth) and, when `make
bench-system` installed them, the voice, music and drum recordings of bench_real_recordings.py,
cut into 4 s clips. Regions are masked as a performer sets them: bands 1, 2 and 4 kHz wide at
several heights, 0.25-2 s long from 1 s into the clip, and a band left open for the whole clip.

Work is at the codemap level, as the engine does it: each clip is encoded once, the region's codes
are regenerated column by column (causally: no cell reads a later column) with
``context=output`` (the region unknown; earlier columns hold the regenerated codes) and with
``context=input`` (every region cell redrawn from the input's codes around it), and only the
region is decoded (its rows and columns, with the decoder's causal context). Measured inside the
region only (its STFT bins and frames; mel bands whose centre lies in the band):

* mel distance (dB): mean |mel dB of the decoded region - mel dB of the original codes decoded|
  (the resynthesis: what the codec itself gives there), 64 mels;
* codes recovered: fraction of region cells whose regenerated code is the original one;
* level (dB): energy of the decoded region over that of the resynthesis; |level| is averaged
  over clips as well, and for open bands the level against the input itself.

Temperature 0 (the most probable code) for every inpainter; the sampling ones (the neural prior,
two naive Bayes variants, the usage draw) also at 1, or at each of ``--temperatures``, with the
spread over seeds above 0. Once per run, the codemap-level figures are checked against a file
render through the engine (the CLI's path). Figures, not asserts.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spectro_fx.assets import DEFAULT_MODEL, asset_path
from spectro_fx.models.export import load_model
from spectro_fx.models.naive_bayes import learned_inpaint, sample_log_weights, spatial_inpaint

HERE = Path(__file__).resolve().parent
HELDOUT_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
# the held-out programs of bench_quality.py: piano, vibraphone, church organ, nylon guitar, fingered
# bass, violin, strings, choir, trumpet, brass, alto sax, clarinet, flute, saw lead, pad, banjo
HELDOUT_PROGRAMS = [0, 11, 19, 24, 33, 40, 48, 52, 56, 61, 65, 71, 73, 81, 89, 105]
CLIP_S = 4.0
START_S = 1.0


@dataclass(frozen=True)
class Region:
    """A band ``low_hz``-``high_hz`` held ``seconds`` from ``START_S`` (None: the whole clip)."""

    low_hz: float
    high_hz: float
    seconds: float | None

    @property
    def label(self) -> str:
        span = "open" if self.seconds is None else f"{self.seconds:g} s"
        return f"{self.low_hz / 1000:g}-{self.high_hz / 1000:g} kHz {span}"


def regions(full: bool) -> list[Region]:
    if not full:
        return [Region(500, 1500, 0.25), Region(1500, 3500, 1.0), Region(1500, 3500, None)]
    bands = ((500, 1500), (1500, 3500), (4000, 8000))
    return ([Region(lo, hi, s) for lo, hi in bands for s in (0.25, 1.0, 2.0)]
            + [Region(lo, hi, None) for lo, hi in ((500, 1500), (1500, 3500))])


# at each measured temperature (several seeds above 0) for these; the other baselines at temperature 0 only
SAMPLED_METHODS = ("spatial r2 both", "learned NB", "usage draw", "neural")
TEMPERATURES = (0.0, 1.0)


def temperature_list(text: str) -> tuple[float, ...]:
    """``--temperatures``: a comma list such as ``0,0.5,1`` -> (0.0, 0.5, 1.0), sorted, each once."""
    temperatures = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"temperature {item.strip()!r} in {text!r} must be a number >= 0 "
                                             "(a comma list such as 0,0.5,1)")
        temperatures.append(value)
    return tuple(sorted(set(temperatures)))


def settings(name: str, temperatures: tuple[float, ...], seeds: tuple[int, ...]) -> list[tuple[float, tuple[int, ...]]]:
    """(temperature, seeds) pairs method ``name`` is measured at: a sampling method at each of
    ``temperatures`` (one seed at 0, where the draw is the most probable code), the others at 0."""
    if name not in SAMPLED_METHODS:
        return [(0.0, seeds[:1])]
    return [(t, seeds if t > 0 else seeds[:1]) for t in temperatures]


# --- material ---------------------------------------------------------------------------------


def heldout_notes(work: Path, sr: int, full: bool) -> list[np.ndarray]:
    from spectro_fx.training.data import load_clips
    from spectro_fx.training.render_notes import render_notes

    programs = HELDOUT_PROGRAMS[::2] if full else HELDOUT_PROGRAMS[::6]
    pitches = [60]
    folder = work / f"timgm6mb-gaps-{'full' if full else 'quick'}-{sr}"
    if not (folder / "examples.json").is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            render_notes(folder, soundfont=HELDOUT_SOUNDFONT, programs=programs, pitches=pitches,
                         velocities=[100], sr=sr, progress=False)
    return list(load_clips(folder, sr=sr).audio)


def real_recordings(work: Path, sr: int, per_kind: int) -> dict[str, list[np.ndarray]]:
    """Voice, music and drums of bench_real_recordings.py, each kind joined and cut into 4 s clips
    (its files are 1-40 s long); empty when the Debian packages are missing."""
    import importlib.util

    import soundfile as sf
    import soxr

    spec = importlib.util.spec_from_file_location("bench_real_recordings", HERE / "bench_real_recordings.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    missing = bench.missing_packages()
    if missing:
        print(f"real recordings skipped: the Debian packages {', '.join(missing)} are not installed "
              "(make bench-system installs them)")
        return {}
    folder = work / "real-recordings"
    if not any(folder.glob("*.wav")):
        bench.build_set(folder)
    size = int(CLIP_S * sr)
    kinds = {}
    for kind in bench.KINDS:
        parts = []
        for path in sorted(folder.glob(f"{kind}_*.wav")):
            audio, file_sr = sf.read(path, dtype="float32", always_2d=True)
            audio = audio.mean(axis=1)
            parts.append(soxr.resample(audio, file_sr, sr).astype(np.float32) if file_sr != sr else audio)
        joined = np.concatenate(parts)
        clips = [joined[i : i + size] for i in range(0, len(joined) - size + 1, size)]
        # spread the picks over the whole kind (music: all five tracks)
        pick = np.unique(np.linspace(0, len(clips) - 1, min(per_kind, len(clips))).round().astype(int))
        kinds[kind] = [clips[i] for i in pick]
    return kinds


# --- inpainters at the codemap level ----------------------------------------------------------


def usage_fill(codemap, mask, *, log_prior, temperature, rng):
    """Codes drawn from the codebook's usage (0: the most used code everywhere)."""
    out = codemap.copy()
    cells = int(mask.sum())
    weights = np.broadcast_to(log_prior, (cells, log_prior.size))
    out[mask] = sample_log_weights(weights, rng.random(cells), temperature=temperature)
    return out


def last_column_fill(codemap, mask, *, context, log_prior, temperature, rng):
    """context=output: each region cell repeats the last code its row held before the region;
    context=input: the input's code one column earlier. The usage draw where there is none."""
    fallback = usage_fill(codemap, mask, log_prior=log_prior, temperature=temperature, rng=rng)
    out = codemap.copy()
    for c in np.flatnonzero(mask.any(axis=0)):
        rows = mask[:, c]
        if c == 0:
            out[rows, c] = fallback[rows, c]
        elif context == "input":
            out[rows, c] = codemap[rows, c - 1]
        else:
            out[rows, c] = out[rows, c - 1]
    return out


def method_table(module, neural) -> dict:
    """name -> fill(codemap, mask, context, temperature, rng)."""
    from spectro_fx.models.export import Prior

    log_prior = module.code_log_prior.double().numpy()
    fallback = module.prior_class_log_prior.double().numpy() if bool(module.has_prior) else log_prior
    methods = {}
    for radius in (1, 2):
        for axis in ("time", "freq", "both"):
            def spatial(codemap, mask, context, temperature, rng, radius=radius, axis=axis):
                return spatial_inpaint(codemap, mask, radius=radius, axis=axis, temperature=temperature, rng=rng,
                                       fallback_log_prior=fallback, redraw=context == "input", later_columns=False)

            methods[f"spatial r{radius} {axis}"] = spatial
    if bool(module.has_prior):
        prior = Prior(offsets=module.prior_offsets, class_log_prior=module.prior_class_log_prior,
                      feature_log_prob=module.prior_feature_log_prob, alpha=float(module.prior_alpha))

        def learned(codemap, mask, context, temperature, rng):
            return learned_inpaint(codemap, mask, prior, temperature=temperature, rng=rng, redraw=context == "input")

        methods["learned NB"] = learned
    methods["last column"] = lambda codemap, mask, context, temperature, rng: last_column_fill(
        codemap, mask, context=context, log_prior=log_prior, temperature=temperature, rng=rng)
    methods["usage draw"] = lambda codemap, mask, context, temperature, rng: usage_fill(
        codemap, mask, log_prior=log_prior, temperature=temperature, rng=rng)
    if neural is not None:
        from spectro_fx.models.neural_prior import neural_inpaint

        def neural_fill(codemap, mask, context, temperature, rng):
            return neural_inpaint(neural, codemap, mask, temperature=temperature, rng=rng, context=context)

        methods["neural"] = neural_fill
    return methods


NB_METHODS = tuple(f"spatial r{r} {a}" for r in (1, 2) for a in ("time", "freq", "both")) + ("learned NB",)


# --- measuring --------------------------------------------------------------------------------


class Meter:
    """Decodes a region of codemaps and measures it against the original codes' resynthesis."""

    def __init__(self, module):
        import librosa

        self.module = module
        self.sr, self.n_fft = int(module.sample_rate), int(module.n_fft)
        self.ts, self.fs = int(module.time_stride), int(module.freq_stride)
        self.reach = int(module.decoder_receptive_field_columns)
        self.mel = librosa.filters.mel(sr=self.sr, n_fft=self.n_fft, n_mels=64)
        self.centres = librosa.mel_frequencies(n_mels=66, fmax=self.sr / 2)[1:-1]

    def mask(self, region: Region, n_cols: int) -> np.ndarray:
        """Region cells ``[n_rows, n_cols]``: the rows the engine's band touches (soft edges
        included), the columns of its time span."""
        from spectro_fx.effect.core.region import EDGE_BINS, band_mask, region_cells

        module = self.module
        band = band_mask(torch.tensor([float(region.low_hz)], dtype=torch.float64),
                         torch.tensor([float(region.high_hz)], dtype=torch.float64),
                         self.sr, self.n_fft, EDGE_BINS)
        rows = region_cells(band.expand(self.ts, -1), self.ts, self.fs, int(module.n_rows))[0].numpy()
        columns = np.zeros(n_cols, dtype=bool)
        rate = self.sr / (int(module.hop_length) * self.ts)
        if region.seconds is None:
            columns[:] = True
        else:
            c0 = int(round(START_S * rate))
            columns[c0 : c0 + int(round(region.seconds * rate))] = True
        return rows[:, None] & columns[None, :]

    def decode_region(self, codemaps: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Linear magnitude ``[M, n_bins, frames]`` of the region's columns, only its rows decoded
        (float64; other bins 0)."""
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        first = max(int(cols[0]) - self.reach, 0)
        crop = torch.from_numpy(np.ascontiguousarray(codemaps[:, :, first : int(cols[-1]) + 1]))
        module = self.module
        with torch.no_grad():
            module.reset_stream()
            mag = module.stream_decode_latent(module.embed(crop), int(rows[0]), int(rows[-1]) + 1, int(cols[0]) - first)
        return mag[:, :, (int(cols[0]) - first) * self.ts :].double().numpy()

    def bins(self, mask: np.ndarray, region: Region) -> tuple[np.ndarray, np.ndarray]:
        """STFT bins and mel bands inside the region's band."""
        hz = np.arange(self.n_fft // 2 + 1) * self.sr / self.n_fft
        return ((hz >= region.low_hz) & (hz <= region.high_hz),
                (self.centres >= region.low_hz) & (self.centres <= region.high_hz))

    def measure(self, mags: np.ndarray, reference: np.ndarray, region: Region, mask: np.ndarray) -> dict[str, np.ndarray]:
        bins, bands = self.bins(mask, region)

        def mel_db(m):
            return 20 * np.log10(np.einsum("fb,mbt->mft", self.mel, m)[:, bands] + 1e-5)

        mel = np.abs(mel_db(mags) - mel_db(reference[None])).mean(axis=(1, 2))
        energy = (mags[:, bins] ** 2).sum(axis=(1, 2))
        ref_energy = float((reference[bins] ** 2).sum())
        level = 10 * np.log10((energy + 1e-12) / (ref_energy + 1e-12))
        return {"mel": mel, "level": level}


def input_magnitude(module, audio: np.ndarray) -> np.ndarray:
    from spectro_fx.models import STFTConfig
    from spectro_fx.models.spectral import magnitude

    cfg = STFTConfig(sr=int(module.sample_rate), n_fft=int(module.n_fft), hop_length=int(module.hop_length),
                     win_length=int(module.win_length), window=str(module.window),
                     synthesis_length=int(getattr(module, "synthesis_length", 0)))
    mag = magnitude(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None], cfg)
    ts = int(module.time_stride)
    return mag[:, :, : mag.shape[2] // ts * ts].float()


def run_category(meter: Meter, methods: dict, clips: list[np.ndarray], region_list: list[Region], *,
                 seeds: tuple[int, ...], temperatures: tuple[float, ...] = TEMPERATURES) -> dict:
    """Per region and setting (method, context, temperature, seed): per-clip figures."""
    module = meter.module
    results: dict = {}
    for ci, audio in enumerate(clips):
        mag = input_magnitude(module, audio)
        with torch.no_grad():
            codes = module.encode(mag)[0].numpy()
        for region in region_list:
            mask = meter.mask(region, codes.shape[1])
            cols = np.flatnonzero(mask.any(axis=0))
            outs, keys = [codes], [("resynthesis", "-", 0.0, 0)]
            for name, fill in methods.items():
                for context in ("output", "input"):
                    for temperature, seed_list in settings(name, temperatures, seeds):
                        for seed in seed_list:
                            rng = np.random.default_rng(1000 * ci + seed)
                            outs.append(fill(codes, mask, context, temperature, rng))
                            keys.append((name, context, temperature, seed))
            stacked = np.stack(outs)
            mags = meter.decode_region(stacked, mask)
            reference = mags[0]
            figures = meter.measure(mags, reference, region, mask)
            frames = slice(int(cols[0]) * meter.ts, (int(cols[-1]) + 1) * meter.ts)
            level_in = meter.measure(mags, mag[0, :, frames].double().numpy(), region, mask)["level"]
            recovered = (stacked[:, mask] == codes[mask][None]).mean(axis=1)
            for i, key in enumerate(keys):
                cell = results.setdefault(region.label, {}).setdefault(key, {"mel": [], "recovered": [], "level": [],
                                                                              "level_input": []})
                cell["mel"].append(float(figures["mel"][i]))
                cell["recovered"].append(float(recovered[i]))
                cell["level"].append(float(figures["level"][i]))
                cell["level_input"].append(float(level_in[i]))
    return results


def summarise(results: dict, seeds: tuple[int, ...]) -> dict:
    """Per setting (method, context, temperature): means over regions and clips; at T > 0 the mean
    over seeds and the spread (max - min of the seeds' means)."""
    table: dict = {}
    for by_key in results.values():
        for (name, context, temperature, seed), cell in by_key.items():
            entry = table.setdefault((name, context, temperature), {}).setdefault(seed, {k: [] for k in cell})
            for k, v in cell.items():
                entry[k].extend(v)
    summary = {}
    for key, by_seed in table.items():
        means = {seed: {"mel": np.mean(c["mel"]), "recovered": np.mean(c["recovered"]),
                        "level": np.mean(c["level"]), "abs_level": np.mean(np.abs(c["level"])),
                        "level_input": np.mean(c["level_input"])} for seed, c in by_seed.items()}
        summary[key] = {m: float(np.mean([v[m] for v in means.values()])) for m in next(iter(means.values()))}
        summary[key]["mel_spread"] = float(np.ptp([v["mel"] for v in means.values()])) if len(means) > 1 else 0.0
    return summary


def open_band_levels(results: dict) -> dict:
    """Per setting: the mean level against the input over the open-band regions only."""
    levels: dict = {}
    for label, by_key in results.items():
        if not label.endswith("open"):
            continue
        for (name, context, temperature, seed), cell in by_key.items():
            levels.setdefault((name, context, temperature), []).extend(cell["level_input"])
    return {key: float(np.mean(v)) for key, v in levels.items()}


def print_category(kind: str, n_clips: int, summary: dict, open_levels: dict) -> None:
    print(f"\n{kind} ({n_clips} clips); inside the region: mel distance to the resynthesis (dB, lower is better), "
          "codes recovered, mean |level| and level vs resynthesis (dB), open bands' level vs the input (dB)")
    width = max([3] + [len(f"{temperature:g}") for _, _, temperature in summary])
    print(f"{'method':>18} {'context':>7} {'T':>{width}} {'mel dB':>13} {'recovered':>9} {'|level|':>8} {'level':>7} "
          f"{'open vs in':>10}")
    for (name, context, temperature), s in summary.items():
        spread = f" +-{s['mel_spread'] / 2:.2f}" if temperature > 0 else "      "
        open_level = open_levels.get((name, context, temperature))
        open_text = f"{open_level:10.1f}" if open_level is not None else f"{'':10}"
        print(f"{name:>18} {context:>7} {temperature:>{width}g} {s['mel']:7.2f}{spread} {s['recovered']:9.3f} "
              f"{s['abs_level']:8.2f} {s['level']:7.2f} {open_text}")


def target_lines(kind: str, summary: dict, open_levels: dict, name: str = "neural") -> list[str]:
    """The targets of neural prior ``name``: context=output, T=0, against the best naive Bayes variant."""
    if (name, "output", 0.0) not in summary:
        return []
    nb = {nb_name: summary[(nb_name, "output", 0.0)] for nb_name in NB_METHODS if (nb_name, "output", 0.0) in summary}
    best_mel = min(nb.items(), key=lambda kv: kv[1]["mel"])
    best_rec = max(nb.items(), key=lambda kv: kv[1]["recovered"])
    ours = summary[(name, "output", 0.0)]
    cut = 100 * (1 - ours["mel"] / best_mel[1]["mel"])
    ratio = ours["recovered"] / max(best_rec[1]["recovered"], 1e-9)
    label = kind if name == "neural" else f"{kind} ({name})"
    line = (f"{label:>8}: mel {ours['mel']:.2f} vs best NB {best_mel[1]['mel']:.2f} ({best_mel[0]}): {cut:+.0f} % lower "
            f"(target >= 25 %); codes recovered {ours['recovered']:.3f} vs {best_rec[1]['recovered']:.3f} "
            f"({best_rec[0]}): {ratio:.2f}x (target >= 2x)")
    level = open_levels.get((name, "output", 0.0))
    if level is not None:
        line += f"; open band {level:+.1f} dB vs the input (target within 3 dB)"
        codec = open_levels.get(("resynthesis", "-", 0.0))
        if codec is not None:  # the codes that were there already lose some of the band's level
            line += f", {level - codec:+.1f} dB vs their resynthesis ({codec:+.1f} dB)"
    return [line]


def engine_check(model, audio: np.ndarray, meter: Meter, methods: dict, work: Path, method: str) -> None:
    """The codemap-level figures of one open band against a render through the engine (the CLI's
    path): same clip, band and method at temperature 0, context=output."""
    import soundfile as sf

    from spectro_fx.effect.io.render import render_file

    module = meter.module
    region = Region(1500, 3500, None)
    sr = meter.sr
    source, rendered = work / "engine_check_in.wav", work / "engine_check_out.wav"
    sf.write(source, audio, sr, subtype="FLOAT")
    engine_method = "neural" if method == "neural" else ("learned" if method == "learned NB" else "spatial")
    values = {"low_hz": region.low_hz, "high_hz": region.high_hz, "period_s": 0.0, "inpaint.method": engine_method,
              "inpaint.temperature": 0.0, "inpaint.context": "output"}
    if engine_method == "spatial":
        values.update({"inpaint.radius": 2, "inpaint.axis": "both"})
    render_file(source, rendered, model=model, chain="inpaint", values=values, seed=0)
    out, _ = sf.read(rendered, dtype="float32")
    mag = input_magnitude(module, audio)
    with torch.no_grad():
        codes = module.encode(mag)[0].numpy()
    mask = meter.mask(region, codes.shape[1])
    fill = methods[method]
    inpainted = fill(codes, mask, "output", 0.0, np.random.default_rng(0))
    mags = meter.decode_region(np.stack([codes, inpainted]), mask)
    cols = np.flatnonzero(mask.any(axis=0))
    frames = slice(int(cols[0]) * meter.ts, (int(cols[-1]) + 1) * meter.ts)
    out_mag = input_magnitude(module, out)[0, :, frames].double().numpy()
    n = min(out_mag.shape[1], mags.shape[2])
    # the engine's first columns see the codes of silence before the clip: skip 0.25 s
    skip = int(0.25 * sr / int(module.hop_length))
    codemap_level = meter.measure(mags[1:2, :, skip:n], mags[0, :, skip:n], region, mask)
    engine_level = meter.measure(out_mag[None, :, skip:n], mags[0, :, skip:n], region, mask)
    between = meter.measure(out_mag[None, :, skip:n], mags[1, :, skip:n], region, mask)
    print(f"\nengine check ({method}, open band {region.label}, T=0, context=output, one held-out note): "
          f"mel distance to the resynthesis {codemap_level['mel'][0]:.2f} dB at the codemap level, "
          f"{engine_level['mel'][0]:.2f} dB rendered by the engine (input phase); between the two "
          f"{between['mel'][0]:.2f} dB; level {codemap_level['level'][0]:+.1f} / {engine_level['level'][0]:+.1f} dB")


def neural_cost(module, neural, *, rounds: int = 400) -> str:
    """CPU time of one column of the neural prior (B=1, one thread, scripted, as a column step
    calls it) per audio second, for a 2 kHz band (3 rows) and for the whole column."""
    n_rows, k = int(module.n_rows), int(module.codebook_size)
    rate = int(module.sample_rate) / (int(module.hop_length) * int(module.time_stride))
    net = neural if isinstance(neural, torch.jit.ScriptModule) else torch.jit.script(neural)
    rng = np.random.default_rng(0)
    context = torch.from_numpy(rng.integers(0, k, size=(1, n_rows, int(net.context_columns))))
    column = torch.from_numpy(rng.integers(0, k, size=(1, n_rows)))
    parts = []
    for label, rows in (("a 3-row band", slice(4, 7)), ("the whole column", slice(0, n_rows))):
        known = torch.ones(1, n_rows, dtype=torch.bool)
        known[0, rows] = False
        with torch.no_grad():
            for _ in range(50):
                net(context, column, known)
            times = []
            for _ in range(rounds):
                start = time.process_time()
                net(context, column, known)
                times.append(time.process_time() - start)
        median = float(np.median(times))
        parts.append(f"{label} {1e3 * median:.3f} ms a column = {median * rate:.3f} CPU s per audio s")
    # this VM's speed drifts with its host's load: a trivial scripted op, timed alike, says how busy it is
    trivial = torch.jit.script(_add_one)
    x = torch.zeros(4)
    times = []
    for _ in range(2000):
        start = time.process_time()
        trivial(x)
        times.append(time.process_time() - start)
    weights = sum(p.numel() for p in net.parameters())
    return (f"neural prior: {weights:,} weights, {rate:g} columns/s; {'; '.join(parts)} (median of {rounds}, 1 thread; "
            f"a trivial scripted op took {1e6 * float(np.median(times)):.1f} us meanwhile)")


def _add_one(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def machine_line() -> str:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    isa = [name for name, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AMX", "amx_tile")) if flag in flags]
    return f"{model} ({', '.join(isa) or 'no AVX2'}), torch {torch.__version__}, 1 thread"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="8 notes, 3 clips per real kind, 11 regions, 3 seeds (about half an hour; default: "
                             "3 notes, 1 clip per kind, 3 regions, 2 seeds, a few minutes)")
    parser.add_argument("--model", default=str(asset_path(DEFAULT_MODEL)))
    parser.add_argument("--neural-prior", default=None,
                        help="a neural prior file (RUN/neural_prior.pt) to measure with a model file that has none")
    parser.add_argument("--compare-prior", action="append", default=[], metavar="FILE",
                        help="another neural prior (a model file that has one, or RUN/neural_prior.pt) measured in the "
                             "same run at temperature 0, as 'neural FILE-STEM'; repeatable")
    parser.add_argument("--temperatures", type=temperature_list, default=TEMPERATURES, metavar="T,T,...",
                        help="the sampling temperatures of the neural prior and the other sampling inpainters, a "
                             "comma list of numbers >= 0 such as 0,0.5,1 (default 0,1: the most probable code, and "
                             "a draw from the prior as it is); the other baselines are measured at 0 only")
    parser.add_argument("--workdir", default=None, help="keep rendered notes and recordings here")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    model = load_model(args.model)
    module = model.module
    neural = None
    if args.neural_prior:
        from spectro_fx.training.prior import load_neural_prior

        neural = load_neural_prior(args.neural_prior)
    elif bool(getattr(module, "has_neural_prior", False)):
        neural = module.neural_prior
    sr = int(module.sample_rate)
    meter = Meter(module)
    if neural is not None:
        print(neural_cost(module, neural))
    methods = method_table(module, neural)
    compared = []
    for path in args.compare_prior:
        from spectro_fx.models.neural_prior import neural_inpaint
        from spectro_fx.training.prior import neural_prior_of

        other = neural_prior_of(path)
        name = f"neural {Path(path).stem}"
        methods[name] = (lambda net: lambda codemap, mask, context, temperature, rng: neural_inpaint(
            net, codemap, mask, temperature=temperature, rng=rng, context=context))(other)
        compared.append(name)
    seeds = (1, 2, 3) if args.full else (1, 2)
    region_list = regions(args.full)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        categories = {"notes": heldout_notes(work, sr, args.full)}
        categories.update(real_recordings(work, sr, 3 if args.full else 1))
        print(f"machine: {machine_line()}")
        sampled = ",".join(f"{t:g}" for t in args.temperatures if t > 0)
        print(f"model {Path(args.model).name}; regions: {', '.join(r.label for r in region_list)}; "
              + (f"seeds at T={sampled}: {len(seeds)}" if sampled else "temperature 0 only"))
        report = {}
        targets = []
        for kind, clips in categories.items():
            results = run_category(meter, methods, clips, region_list, seeds=seeds, temperatures=args.temperatures)
            summary = summarise(results, seeds)
            open_levels = open_band_levels(results)
            print_category(kind, len(clips), summary, open_levels)
            for name in ("neural", *compared):
                targets += target_lines(kind, summary, open_levels, name)
            report[kind] = {"clips": len(clips),
                            "summary": {" / ".join(map(str, k)): v for k, v in summary.items()},
                            "open_band_level_vs_input": {" / ".join(map(str, k)): v for k, v in open_levels.items()}}
        if targets:
            print("\nneural prior, context=output, T=0, against the best naive Bayes variant of each column:")
            print("\n".join(targets))
        check_method = "neural" if neural is not None and bool(getattr(module, "has_neural_prior", False)) else "spatial r2 both"
        engine_check(model, categories["notes"][0], meter, methods, work, check_method)
    print(f"\n{time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_line(), "model": Path(args.model).name,
                                               "regions": [r.label for r in region_list],
                                               "temperatures": list(args.temperatures), "results": report}, indent=2))


if __name__ == "__main__":
    main()
