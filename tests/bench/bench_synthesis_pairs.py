"""How each analysis-synthesis pair turns the same magnitude error into a mel distance: the
part of a model's held-out score that the resynthesis, not the network, decides.

Run: .venv/bin/python tests/bench/bench_synthesis_pairs.py [--notes DIR] [--stride 16] [--error 0.1]
Notes: any folder of audio (default: held-out TimGM6mb notes rendered into a temporary folder).
Each note's magnitude is multiplied by exp(N(0, error)) per bin and frame (error in nepers),
resynthesized with the note's own phase, and scored with `evaluate`'s mel distance. Figures only.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import warnings

import numpy as np

PAIRS = {
    "classic 512/512, hop 128 (the default model's)": dict(n_fft=512, win_length=512, hop_length=128),
    "classic 1024/1024, hop 128": dict(n_fft=1024, win_length=1024, hop_length=128),
    "low delay 1024/256, hop 128": dict(n_fft=1024, win_length=1024, hop_length=128, synthesis_length=256),
    "low delay 2048/256, hop 128": dict(n_fft=2048, win_length=2048, hop_length=128, synthesis_length=256),
    "low delay 1024/256, hop 64": dict(n_fft=1024, win_length=1024, hop_length=64, synthesis_length=256),
    "low delay 1024/384, hop 96": dict(n_fft=1024, win_length=1024, hop_length=96, synthesis_length=384),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", help="folder of notes (default: render held-out TimGM6mb notes)")
    parser.add_argument("--stride", type=int, default=16, help="use every N-th note")
    parser.add_argument("--error", type=float, default=0.1, help="magnitude error, nepers RMS")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from spectro_fx.models import STFTConfig
    from spectro_fx.models.spectral import stft
    from spectro_fx.training.data import load_clips
    from spectro_fx.training.evaluate import mel_distance, resynthesize

    sr = 48000
    with tempfile.TemporaryDirectory() as tmp:
        notes = args.notes
        if notes is None:
            from bench_quality import HELDOUT_PITCHES, HELDOUT_PROGRAMS, HELDOUT_SOUNDFONT, HELDOUT_VELOCITIES
            from spectro_fx.training.render_notes import render_notes

            notes = os.path.join(tmp, "heldout")
            render_notes(notes, soundfont=HELDOUT_SOUNDFONT, programs=HELDOUT_PROGRAMS,
                         pitches=HELDOUT_PITCHES, velocities=HELDOUT_VELOCITIES, sr=sr)
        audio = load_clips(notes, sr=sr).audio[:: args.stride]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {len(audio)} notes, magnitude error {args.error} Np")
    for name, kwargs in PAIRS.items():
        cfg = STFTConfig(sr=sr, **kwargs)
        rng = np.random.default_rng(0)
        scores = []
        for clip in audio:
            n = len(clip) // 768 * 768
            spec = stft(clip[:n].astype(np.float64), cfg)
            noisy = np.abs(spec) * np.exp(args.error * rng.standard_normal(spec.shape))
            scores.append(mel_distance(clip[:n], resynthesize(noisy, spec, cfg)[:n], sr=sr))
        overlap = cfg.synthesis_span / cfg.hop_length
        print(f"  {name}: mel {np.mean(scores):.3f} (frames overlapping each sample: {overlap:g})")


if __name__ == "__main__":
    main()
