"""Renders the extra training audio of the default model's neural inpainting prior (a recipe, not a package).

Run from the checkout, after the Debian packages below are installed:
    .venv/bin/python docs/recipes/neural_prior_data.py data/prior

Writes 48 kHz mono 16-bit WAV files under OUT (each at a random level, -12 to 0 dB below 0.7 peak):
  drum-patterns/  sequenced 16-step patterns (70-170 BPM, 10 s; one in four sparse single hits with
                  silence between) of every kit of hydrogen-drumkits;
  poly-music/     24 pieces of about 25 s in FluidR3_GM (fluid-soundfont-gm): bass, chords, a second chord
                  voice and a melody on random General MIDI programs, a drum kit in two of three pieces;
  speech/         espeak-ng (60 passages, English and four other languages, several voice variants,
                  pitches and speeds) and festival (40 passages, festvox-kallpc16k and festvox-us-slt-hts),
                  reading sentences of the licence texts in /usr/share/common-licenses;
  game-music/     the first 80 s of the music of extremetuxracer-data and frozen-bubble-data;
  *-8k/           about a third of speech, poly-music and game-music again through an 8 kHz sample rate
                  (a telephone-like band limit, as on old or streamed recordings).
None of it is the gap-filling benchmark's held-out material (TimGM6mb notes, the alsa-utils voice,
the asterisk music on hold, the Red Zeppelin kit of avldrums.lv2-soundfont). The notes and the single
drum hits of the prior's data come from the commands in docs/training.md.
Debian packages: espeak-ng festival festvox-kallpc16k festvox-us-slt-hts hydrogen-drumkits
extremetuxracer-data frozen-bubble-data fluid-soundfont-gm libfluidsynth3.
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 48000
OUT = Path("data/prior")
rng = np.random.default_rng(7)


def load(path, sr=SR):
    """A file as mono float32 at ``sr``."""
    a, fsr = sf.read(str(path), dtype="float32", always_2d=True)
    a = a.mean(axis=1)
    return soxr.resample(a, fsr, sr).astype(np.float32) if fsr != sr else a


def write(path, audio):
    """16-bit WAV at a random level (peak 0.7, then -12 to 0 dB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.abs(audio).max()) or 1.0
    sf.write(str(path), (audio / peak * 0.7 * 10 ** (rng.uniform(-12, 0) / 20)).astype(np.float32), SR, subtype="PCM_16")


def drum_patterns():
    """Four 10 s patterns per Hydrogen kit: kick, snare and hat picked by file name, a few other hits."""
    kits = Path("/usr/share/hydrogen/data/drumkits")
    for kit in sorted(p for p in kits.iterdir() if p.is_dir()):
        files = [p for p in kit.rglob("*") if p.suffix.lower() in (".wav", ".flac")]
        if not files:
            continue
        def pick(pattern):
            m = [p for p in files if re.search(pattern, p.name, re.I)]
            return m or files
        roles = {"kick": pick(r"kick|bd|bass ?drum"), "snare": pick(r"snare|sn|clap"), "hat": pick(r"hat|hh|ride|cym")}
        cache = {}
        def hit(p):
            if p not in cache:
                cache[p] = load(p)[: 2 * SR]
            return cache[p]
        name = re.sub(r"[^A-Za-z0-9_]", "_", kit.name)
        for n in range(4):
            bpm = rng.uniform(70, 170)
            step = int(SR * 60 / bpm / 4)
            sparse = n == 3  # isolated hits with silence between
            seconds = 10
            out = np.zeros(seconds * SR + 2 * SR, np.float32)
            k, s, h = (rng.choice(roles[r]) for r in ("kick", "snare", "hat"))
            others = [rng.choice(files) for _ in range(3)]
            kp = rng.random(16) < 0.3; kp[0] = True
            sp = np.zeros(16, bool); sp[[4, 12]] = True; sp |= rng.random(16) < 0.08
            hp = (np.arange(16) % rng.choice([1, 2, 4]) == 0) | (rng.random(16) < 0.1)
            for i in range(seconds * SR // step):
                t = i * step
                j = i % 16
                if sparse:
                    if i % 8 == 0:
                        smp = hit(rng.choice(files))
                        out[t : t + len(smp)] += smp[: len(out) - t] * rng.uniform(0.3, 1.0)
                    continue
                for on, p in ((kp[j], k), (sp[j], s), (hp[j], h)):
                    if on:
                        smp = hit(p)
                        out[t : t + len(smp)] += smp[: len(out) - t] * rng.uniform(0.6, 1.0)
                if rng.random() < 0.04:
                    smp = hit(rng.choice(others))
                    out[t : t + len(smp)] += smp[: len(out) - t] * rng.uniform(0.4, 1.0)
            write(OUT / "drum-patterns" / f"{name}_{n}.wav", out[: seconds * SR])


def poly_music(count=24, seconds=24):
    """Random pieces in one key: chord bars with bass, a melody in eighths, drums in two of three."""
    import fluidsynth

    synth = fluidsynth.Synth(samplerate=float(SR))
    synth.setting("synth.reverb.active", 1)
    synth.setting("synth.chorus.active", 0)
    sfid = synth.sfload("/usr/share/sounds/sf2/FluidR3_GM.sf2")
    bass_progs = [32, 33, 34, 35, 38, 39, 43]
    chord_progs = [0, 1, 2, 4, 5, 6, 11, 16, 17, 19, 24, 25, 26, 27, 29, 46, 48, 49, 50, 88, 89, 90, 95]
    lead_progs = [0, 8, 11, 22, 40, 41, 56, 57, 60, 64, 65, 66, 68, 71, 73, 74, 80, 81, 104, 105]
    majors = [[0, 4, 7], [5, 9, 12], [7, 11, 14], [9, 12, 16], [2, 5, 9], [4, 7, 11]]
    for n in range(count):
        for ch, progs in ((0, bass_progs), (1, chord_progs), (2, lead_progs), (3, chord_progs)):
            synth.program_select(ch, sfid, 0, int(rng.choice(progs)))
        synth.program_select(9, sfid, 128, 0)
        drums = n % 3 != 2
        key = int(rng.integers(36, 48))
        bpm = rng.uniform(70, 150)
        beat = 60 / bpm
        chunks = []
        total = 0.0
        bar = 0
        while total < seconds:
            chord = majors[int(rng.integers(len(majors)))]
            notes_on = []
            for c in chord:
                pitch = key + 12 + c
                synth.noteon(1, pitch, int(rng.integers(50, 90)))
                notes_on.append((1, pitch))
            if rng.random() < 0.5:
                synth.noteon(3, key + 24 + chord[0], 60)
                notes_on.append((3, key + 24 + chord[0]))
            for b in range(4):
                synth.noteon(0, key + chord[0] - 12 + (7 if b == 2 else 0), 100)
                if drums:
                    synth.noteon(9, 36 if b % 2 == 0 else 38, 100)
                    synth.noteon(9, 42, 70)
                for half in range(2):
                    if rng.random() < 0.6:
                        p = key + 24 + int(rng.choice([0, 2, 4, 5, 7, 9, 11, 12])) + chord[0]
                        synth.noteon(2, p, int(rng.integers(70, 115)))
                    else:
                        p = None
                    samples = int(SR * beat / 2)
                    chunks.append(np.asarray(synth.get_samples(samples), dtype=np.float32)[0::2] / 32768.0)
                    if p is not None:
                        synth.noteoff(2, p)
                synth.noteoff(0, key + chord[0] - 12 + (7 if b == 2 else 0))
                total += beat
            for ch, p in notes_on:
                synth.noteoff(ch, p)
            bar += 1
        chunks.append(np.asarray(synth.get_samples(SR), dtype=np.float32)[0::2] / 32768.0)
        write(OUT / "poly-music" / f"piece_{n:02d}.wav", np.concatenate(chunks))
    synth.delete()


def sentences():
    """Sentences of 40-240 characters from licence texts every Debian system has."""
    text = " ".join(Path("/usr/share/common-licenses", n).read_text() for n in ("GPL-3", "GPL-2", "Apache-2.0", "MPL-2.0", "GFDL-1.3", "Artistic"))
    text = re.sub(r"\s+", " ", text)
    parts = [s.strip() for s in re.split(r"(?<=[.;:])\s", text) if 40 < len(s.strip()) < 240]
    return parts


def speech():
    """espeak-ng and festival reading three sentences at a time."""
    parts = sentences()
    rng.shuffle(parts)
    out = OUT / "speech"
    out.mkdir(parents=True, exist_ok=True)
    i = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # espeak-ng: several English voices, variants, pitches, speeds
        variants = ["", "+f1", "+f2", "+f3", "+f4", "+m1", "+m3", "+m5", "+klatt", "+croak", "+whisper"]
        voices = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "de", "fr", "es", "it"]
        for n in range(60):
            txt = " ".join(parts[i : i + 3]); i += 3
            voice = str(rng.choice(voices)) + str(rng.choice(variants))
            wav = tmp / "e.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-p", str(int(rng.integers(20, 80))), "-s", str(int(rng.integers(130, 200))),
                            "-w", str(wav), txt], check=True, capture_output=True)
            write(out / f"espeak_{n:02d}.wav", load(wav))
        # festival: the diphone and the HTS voice
        i = 180
        for n in range(40):
            txt = " ".join(parts[(i + k) % len(parts)] for k in range(3)); i += 3
            voice = "voice_kal_diphone" if n % 2 == 0 else "voice_cmu_us_slt_arctic_hts"
            (tmp / "t.txt").write_text(txt)
            wav = tmp / "f.wav"
            (tmp / "t.txt").write_text(re.sub(r"[^A-Za-z0-9 ,.;:]", " ", txt))
            subprocess.run(["text2wave", "-eval", f"({voice})", "-o", str(wav), str(tmp / "t.txt")], capture_output=True)
            try:
                write(out / f"festival_{n:02d}.wav", load(wav))
            except RuntimeError as exc:  # festival wrote no audio for this passage
                print("skipped", n, exc, flush=True)


def game_music():
    """The first 80 s of each music track of two Debian game data packages."""
    files = sorted(Path("/usr/share/games/etr/music").glob("*.ogg")) + [
        Path("/usr/share/games/frozen-bubble/snd/frozen-mainzik-1p.ogg"),
        Path("/usr/share/games/frozen-bubble/snd/frozen-mainzik-2p.ogg"),
        Path("/usr/share/games/frozen-bubble/snd/introzik.ogg")]
    for p in files:
        a = load(p)[: 80 * SR]
        write(OUT / "game-music" / f"{p.stem}.wav", a)


def band_limited(folders=("speech", "game-music", "poly-music"), fraction=0.35):
    """A share of the files again through an 8 kHz (telephone, old recording) band limit."""
    for folder in folders:
        files = sorted((OUT / folder).glob("*.wav"))
        for p in files:
            if rng.random() < fraction:
                a = load(p)
                low = soxr.resample(soxr.resample(a, SR, 8000), 8000, SR).astype(np.float32)
                write(OUT / f"{folder}-8k" / p.name, low)


if __name__ == "__main__":
    OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    for step in (drum_patterns, game_music, speech, poly_music, band_limited):
        step()
        print("done", step.__name__, flush=True)
