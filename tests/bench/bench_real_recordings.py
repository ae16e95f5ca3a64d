"""Reconstruction of real recordings (not SoundFont notes alone) by one or more model files, in the
same run: voice, music and drum hits from freely licensed Debian packages, none in the training data.

Run: .venv/bin/python tests/bench/bench_real_recordings.py [--model A.pt --model B.pt ...] [--json OUT]
Needs the Debian packages alsa-utils (9 spoken channel names, 48 kHz, GPL-2), asterisk-moh-opsound-wav
(five music-on-hold tracks, CC-BY-SA 3.0, 8 kHz originals: the first 40 s of each, upsampled) and
avldrums.lv2-soundfont (the Red Zeppelin acoustic kit, GPL-2+, its hits rendered through FluidSynth); `make
bench-system` installs them. Prints the mel distance of `tests/bench/bench_quality.py` (lower is better)
per kind and model; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from spectro_fx.assets import DEFAULT_MODEL, asset_path
from spectro_fx.models.export import load_model
from spectro_fx.training.data import load_clips
from spectro_fx.training.evaluate import ModelResynthesis, evaluate_clips

SR = 48000
VOICE = Path("/usr/share/sounds/alsa")
MUSIC = Path("/usr/share/asterisk/moh")
# AVL's other kit, Black Pearl, is also in hydrogen-drumkits (training data of the default model): left out
DRUM_KITS = (Path("/usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2"),)
KINDS = ("voice", "music", "drums")


def missing_packages() -> list[str]:
    """Debian packages this benchmark reads that are not installed here."""
    wanted = {"alsa-utils": VOICE / "Front_Center.wav", "asterisk-moh-opsound-wav": MUSIC,
              "avldrums.lv2-soundfont": DRUM_KITS[0]}
    return [package for package, path in wanted.items() if not path.exists()]


def render_drum_hits(kit: Path, out: Path) -> None:
    """General MIDI drum notes 35..59 of one kit at velocity 100: 1 s held, 0.5 s release, mono."""
    import fluidsynth

    synth = fluidsynth.Synth(samplerate=float(SR))
    synth.setting("synth.reverb.active", 0)
    synth.setting("synth.chorus.active", 0)
    synth.program_select(9, synth.sfload(str(kit)), 0, 0)
    for note in range(35, 60):
        synth.noteon(9, note, 100)
        held = np.asarray(synth.get_samples(SR), dtype=np.float32)[0::2]
        synth.noteoff(9, note)
        tail = np.asarray(synth.get_samples(SR // 2), dtype=np.float32)[0::2]
        hit = np.concatenate([held, tail]) / 32768.0
        if np.abs(hit).max() > 1e-3:  # a note the kit does not map is silent
            sf.write(out / f"drums_{kit.stem}_{note}.wav", hit, SR, subtype="PCM_16")
    synth.delete()


def build_set(out: Path) -> None:
    """The recordings as 48 kHz mono 16-bit files named ``<kind>_...wav`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(VOICE.glob("*.wav")):
        if path.stem != "Noise":  # a test noise, not a voice
            audio, sr = sf.read(path, dtype="float32")
            sf.write(out / f"voice_{path.name}", soxr.resample(audio, sr, SR), SR, subtype="PCM_16")
    for path in sorted(MUSIC.glob("*.wav")):
        audio, sr = sf.read(path, dtype="float32", frames=40 * 8000)
        sf.write(out / f"music_{path.name}", soxr.resample(audio, sr, SR), SR, subtype="PCM_16")
    for kit in DRUM_KITS:
        render_drum_hits(kit, out)


def evaluate(model_path: str, folder: Path) -> dict[str, dict]:
    """Mel distance and the other metrics of ``evaluate`` per kind of recording (4 s segments)."""
    model = load_model(model_path)
    clips = load_clips(folder, sr=model.config.stft.sr, segment_s=4.0)
    names, audio = list(clips.names), list(clips.audio)
    results = {}
    for kind in KINDS:
        keep = [i for i, name in enumerate(names) if Path(str(name)).name.startswith(f"{kind}_")]
        clips.names, clips.audio = [names[i] for i in keep], [audio[i] for i in keep]
        ev = evaluate_clips(clips, ModelResynthesis(model), codebook_size=int(model.module.codebook_size))
        results[kind] = {"segments": ev.n_clips, **ev.metrics}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="model file (repeat to compare; default: the bundled one)")
    parser.add_argument("--workdir", default=None, help="keep the recordings here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    missing = missing_packages()
    if missing:
        raise SystemExit(f"needs the Debian packages {', '.join(missing)} (make bench-system installs them)")
    torch.set_num_threads(1)
    models = args.model or [str(asset_path(DEFAULT_MODEL))]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.workdir or tmp) / "real-recordings"
        if not any(folder.glob("*.wav")):
            build_set(folder)
        results = {model: evaluate(model, folder) for model in models}
    print(f"machine: {platform.machine()}, torch {torch.__version__}, 1 thread; mel distance (lower is better), "
          "segments of 4 s")
    print(f"{'model':40s} " + " ".join(f"{kind:>14s}" for kind in KINDS))
    for model, by_kind in results.items():
        cells = " ".join(f"{by_kind[k]['mel_distance']:8.3f} ({by_kind[k]['segments']:3d})" for k in KINDS)
        print(f"{Path(model).name:40s} {cells}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
