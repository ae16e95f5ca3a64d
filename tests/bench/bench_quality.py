"""Held-out quality of a model file: TimGM6mb notes (a SoundFont the default model never saw),
as rendered and at +-20 dB, against weak anchors; plus CPU training throughput.

Run: .venv/bin/python tests/bench/bench_quality.py [--model FILE] [--selection a|b] [--train-data DIR] [--stride N]
Prints tables; writes JSON with --json. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.signal
import torch

from spectro_fx.assets import model_path
from spectro_fx.models.export import load_model
from spectro_fx.models.spectral import istft, stft
from spectro_fx.training.data import load_clips
from spectro_fx.training.evaluate import Evaluation, ModelResynthesis, evaluate_clips, format_table
from spectro_fx.training.render_notes import render_notes

HELDOUT_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
TRAIN_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
# 16 GM programs across families: piano, vibraphone, church organ, nylon guitar, fingered bass,
# violin, string ensemble, choir, trumpet, brass section, alto sax, clarinet, flute, saw lead,
# warm pad, banjo.
HELDOUT_PROGRAMS = [0, 11, 19, 24, 33, 40, 48, 52, 56, 61, 65, 71, 73, 81, 89, 105]
HELDOUT_PITCHES = list(range(36, 85, 4))
HELDOUT_VELOCITIES = [64, 100]
# held-out selections: one set of notes can flatter a model; "b" shares no program, pitch or
# velocity with "a": electric piano, celesta, drawbar organ, clean guitar, fretless bass, cello,
# pizzicato strings, trombone, French horn, tenor sax, oboe, bassoon, pan flute, square lead,
# choir pad, kalimba
SELECTIONS = {
    "a": (HELDOUT_PROGRAMS, HELDOUT_PITCHES, HELDOUT_VELOCITIES),
    "b": ([4, 8, 16, 27, 35, 42, 45, 57, 60, 66, 68, 70, 75, 80, 91, 108], list(range(38, 87, 4)), [48, 120]),
}


def band_share(clips, sr: int, cutoff_hz: float = 8000.0) -> str:
    """Median and maximum share of energy above ``cutoff_hz`` (what a 16 kHz model cannot carry)."""
    shares = []
    for audio in clips:
        power = np.abs(np.fft.rfft(audio)) ** 2
        shares.append(power[int(len(audio) * cutoff_hz / sr) :].sum() / max(power.sum(), 1e-20))
    return f"energy above {cutoff_hz / 1000:g} kHz: median {100 * np.median(shares):.3f} %, max {100 * np.max(shares):.2f} %"


def mean_spectrum(clips, cfg) -> np.ndarray:
    """Mean linear magnitude spectrum [n_bins] over every frame of ``clips``."""
    total, count = 0.0, 0
    for audio in clips.audio:
        mag = np.abs(stft(audio, cfg))
        total = total + mag.sum(axis=1)
        count += mag.shape[1]
    return total / count


def spectrum_anchor(spectrum: np.ndarray, cfg):
    def reconstruct(audio):
        spec = stft(audio, cfg)
        out = istft(spectrum[:, None] * np.exp(1j * np.angle(spec)), cfg)
        return np.pad(out, (0, len(audio) - len(out)))[: len(audio)], None

    return reconstruct


def lowpass_anchor(sr: int, cutoff_hz: float = 8000.0):
    sos = scipy.signal.butter(12, cutoff_hz, fs=sr, output="sos")

    def reconstruct(audio):
        return scipy.signal.sosfiltfilt(sos, audio), None

    return reconstruct


def training_throughput(model_cfg, data: Path, *, steps: int, threads: int) -> float:
    """Examples/s of `fit` with the model's config on ``data`` (CPU, ``threads`` torch threads)."""
    from spectro_fx.training.fit import DataConfig, RunConfig, TrainConfig, train

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(
            model=model_cfg,
            train=TrainConfig(steps=steps, warmup_steps=1, checkpoint_every=steps, log_every=steps, media_every=10**6),
            data=DataConfig(path=str(data)),
        )
        # a short warm-up run first so one-off costs (imports, allocator) are not counted
        train(RunConfig(model=model_cfg, train=TrainConfig(steps=2, warmup_steps=1, checkpoint_every=2, log_every=2, media_every=10**6), data=DataConfig(path=str(data))), Path(tmp) / "warm", device="cpu", progress=False)
        result = train(config, Path(tmp) / "run", device="cpu", progress=False)
    return result["examples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="a model file, or a bundled model's name")
    parser.add_argument("--workdir", default=None, help="keep rendered notes here (default: a temporary folder)")
    parser.add_argument("--train-data", default=None, help="training notes for the mean-spectrum anchor (default: rendered here)")
    parser.add_argument("--selection", choices=sorted(SELECTIONS), default="a",
                        help="which held-out notes: a (the usual 416) or b (416 with no program, pitch or velocity of a)")
    parser.add_argument("--stride", type=int, default=1, help="evaluate every N-th held-out note (1 = all 416)")
    parser.add_argument("--throughput-steps", type=int, default=20, help="training steps timed (0: no throughput)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for inference and throughput")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    args.model = str(model_path(args.model))
    model_file = load_model(args.model)
    resynthesis = ModelResynthesis(model_file)
    cfg = model_file.config.stft
    sr = cfg.sr
    tmp = tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)

    heldout_dir = work / (f"timgm6mb-heldout-{sr}" if args.selection == "a" else f"timgm6mb-heldout-{args.selection}-{sr}")
    if not (heldout_dir / "examples.json").is_file():
        programs, pitches, velocities = SELECTIONS[args.selection]
        render_notes(heldout_dir, soundfont=HELDOUT_SOUNDFONT, programs=programs, pitches=pitches,
                     velocities=velocities, sr=sr, progress=False)
    heldout = load_clips(heldout_dir, sr=sr)
    heldout.audio, heldout.names = heldout.audio[:: args.stride], heldout.names[:: args.stride]
    peaks = 20 * np.log10([np.abs(a).max() for a in heldout.audio])
    print(f"held-out ({args.selection}): {len(heldout)} TimGM6mb notes at {sr} Hz, peaks {peaks.min():.0f}..{peaks.max():.0f} dBFS "
          f"(median {np.median(peaks):.0f}); {band_share(heldout.audio, sr)}")

    if args.train_data:
        train_dir = Path(args.train_data)
    else:
        train_dir = work / f"fluidr3-train-{sr}"
        if not (train_dir / "examples.json").is_file():
            render_notes(train_dir, soundfont=TRAIN_SOUNDFONT, programs=HELDOUT_PROGRAMS, pitches=list(range(26, 95, 6)),
                         velocities=[60, 110], sr=sr, progress=False)
    train_clips = load_clips(train_dir, sr=sr)
    print(f"training notes ({train_dir.name}, {len(train_clips)}): {band_share(train_clips.audio, sr)}")
    spectrum = mean_spectrum(train_clips, cfg)

    k = resynthesis.codebook_size
    rows: dict[str, Evaluation] = {}
    timings = {}
    for gain_db in (0.0, 20.0, -20.0):
        start = time.perf_counter()
        rows[f"model @ {gain_db:+g} dB"] = evaluate_clips(heldout, resynthesis, gain_db=gain_db, codebook_size=k)
        timings[gain_db] = time.perf_counter() - start
    rows["anchor: mean spectrum"] = evaluate_clips(heldout, spectrum_anchor(spectrum, cfg))
    rows["anchor: silence"] = evaluate_clips(heldout, lambda a: (np.zeros_like(a), None))
    rows["input low-passed at 8 kHz"] = evaluate_clips(heldout, lowpass_anchor(sr))
    print(f"\nmodel {args.model} ({Path(args.model).stat().st_size / 1e6:.2f} MB), K={k}; "
          f"mel distance: audio at 16 kHz, 2048/150 + 512/80 mels (lower is better)")
    print(format_table(rows))
    print("\n'input low-passed at 8 kHz' is the best any 16 kHz model could score on the full-band "
          "metrics (MR-STFT, LSD, spectral convergence at the model rate); its mel distance is ~0 by construction.")
    print("anchor 'original paper configuration for the same wall time': not run in this benchmark.")

    throughput = None
    if args.throughput_steps > 0:
        throughput = training_throughput(model_file.config, heldout_dir, steps=args.throughput_steps, threads=args.threads)
        print(f"\ntraining throughput (fit, default config, batch 16 x 64 frames, CPU, {args.threads} thread(s)): "
              f"{throughput:.1f} examples/s", end="; ")
    print(f"evaluation took {timings[0.0]:.0f} s for {len(heldout)} notes at 0 dB")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model,
            "selection": args.selection,
            "n_notes": len(heldout),
            "results": {name: {"metrics": ev.metrics, "codebook": ev.codebook} for name, ev in rows.items()},
            "train_examples_per_s_cpu": throughput,
        }, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
