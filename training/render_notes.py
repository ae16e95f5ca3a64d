"""`spectro-fx-train render-notes`: NSynth-like notes rendered from a General MIDI SoundFont.

Each note is held 3 s and released for 1 s (FluidSynth, reverb and chorus off), written in the
NSynth on-disk layout (``examples.json`` + ``audio/<note_str>.wav``) that :mod:`.data` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spectro_fx.models.errors import ParameterError

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
HELD_S = 3.0
RELEASE_S = 1.0
# A note whose peak stays below this is silence (FluidSynth's dither floor is about -97 dBFS RMS).
SILENCE_PEAK = 10 ** (-70 / 20)

# General MIDI program groups of 8 -> (NSynth-like family, source).
_GM_GROUPS = (
    ("keyboard", "acoustic"),  # 0-7 pianos
    ("mallet", "acoustic"),  # 8-15 chromatic percussion
    ("organ", "electronic"),  # 16-23
    ("guitar", "acoustic"),  # 24-31
    ("bass", "acoustic"),  # 32-39
    ("string", "acoustic"),  # 40-47
    ("string", "acoustic"),  # 48-55 ensembles (choirs are "vocal", below)
    ("brass", "acoustic"),  # 56-63
    ("reed", "acoustic"),  # 64-71
    ("flute", "acoustic"),  # 72-79
    ("synth_lead", "synthetic"),  # 80-87
    ("synth_pad", "synthetic"),  # 88-95
    ("synth_effect", "synthetic"),  # 96-103
    ("ethnic", "acoustic"),  # 104-111
    ("percussive", "acoustic"),  # 112-119
    ("sound_effect", "synthetic"),  # 120-127
)
FAMILIES = tuple(dict.fromkeys(f for f, _ in _GM_GROUPS)) + ("vocal",)
SOURCES = ("acoustic", "electronic", "synthetic")
_ELECTRONIC = {4, 5, 16, 17, 18, 26, 27, 28, 29, 30, 31, 33, 34, 36, 37, 38, 39, 62, 63}
_VOCAL = {52, 53, 54, 85, 91}


def gm_family(program: int) -> tuple[str, str]:
    """NSynth-like ``(instrument_family_str, instrument_source_str)`` of a GM program 0..127."""
    family, source = _GM_GROUPS[program // 8]
    if program in _VOCAL:
        family = "vocal"
    if program in _ELECTRONIC:
        source = "electronic"
    return family, source


@dataclass(frozen=True)
class NoteSpec:
    """One note to render: GM program 0..127, MIDI pitch 0..127, velocity 1..127."""

    program: int
    pitch: int
    velocity: int

    @property
    def instrument_str(self) -> str:
        family, source = gm_family(self.program)
        return f"{family}_{source}_{self.program:03d}"

    @property
    def note_str(self) -> str:
        return f"{self.instrument_str}-{self.pitch:03d}-{self.velocity:03d}"


def parse_int_list(text: str, *, name: str, low: int, high: int) -> list[int]:
    """Parse ``"0,24,40"``, ``"36:84:4"`` (start:stop:step, stop inclusive) or mixtures of both."""
    values: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if ":" in part:
                fields = [int(p) for p in part.split(":")]
                if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] <= 0):
                    raise ValueError
                start, stop = fields[0], fields[1]
                step = fields[2] if len(fields) == 3 else 1
                values.extend(range(start, stop + 1, step))
            else:
                values.append(int(part))
        except ValueError:
            raise ParameterError(
                f"{name}={text!r} must be integers or start:stop[:step] ranges separated by commas"
            ) from None
    if not values:
        raise ParameterError(f"{name}={text!r} is empty; give at least one value in {low}..{high}")
    bad = [v for v in values if not low <= v <= high]
    if bad:
        raise ParameterError(f"{name}={text!r} has values {bad} outside {low}..{high}")
    return sorted(set(values))


class NoteRenderer:
    """FluidSynth with one SoundFont loaded, rendering single notes to mono float32.

    Parameters
    ----------
    soundfont : path to a .sf2 General MIDI SoundFont
    sr : int
        Output sample rate in Hz.
    gain : float
        FluidSynth master gain (its renders are quiet: peaks around -25 dBFS at 0.5).
    """

    def __init__(self, soundfont: str | os.PathLike, *, sr: int = 48000, gain: float = 0.5):
        if not isinstance(sr, int) or not 8000 <= sr <= 192000:
            raise ParameterError(f"sr={sr!r} must be an integer sample rate in 8000..192000 Hz")
        path = Path(soundfont)
        if not path.is_file():
            raise ParameterError(f"soundfont={str(path)!r} does not exist; give a .sf2 file")
        import fluidsynth  # lazy: needs libfluidsynth

        self.sr = sr
        self.synth = fluidsynth.Synth(
            samplerate=float(sr), gain=gain, **{"synth.reverb.active": 0, "synth.chorus.active": 0}
        )
        self.sfid = self.synth.sfload(str(path))
        if self.sfid == -1:
            raise ParameterError(f"soundfont={str(path)!r} could not be loaded by FluidSynth")
        self._program = -1

    def render(self, note: NoteSpec, *, held_s: float = HELD_S, release_s: float = RELEASE_S) -> np.ndarray:
        """Render one note: ``held_s`` seconds held then ``release_s`` released.

        Returns
        -------
        np.ndarray [round((held_s + release_s) * sr)], float32 in [-1, 1]
        """
        if note.program != self._program:
            self.synth.program_select(0, self.sfid, 0, note.program)
            self._program = note.program
        held, release = int(round(held_s * self.sr)), int(round(release_s * self.sr))
        self.synth.noteon(0, note.pitch, note.velocity)
        a = self.synth.get_samples(held)
        self.synth.noteoff(0, note.pitch)
        b = self.synth.get_samples(release)
        self.synth.all_sounds_off(0)
        # flush what the voices left so the next note starts clean
        self.synth.get_samples(self.sr // 10)
        stereo = np.concatenate([a, b]).astype(np.float32).reshape(-1, 2) / 32768.0
        return stereo.mean(axis=1)

    def close(self) -> None:
        self.synth.delete()


# The demo clip: (start s, duration s, GM program, pitches, velocity); about 12 s of piano,
# strings with a flute line, bass with brass stabs, a guitar arpeggio and a pad.
DEMO_SCORE = (
    (0.0, 1.8, 0, (60, 64, 67), 100),
    (0.0, 1.8, 0, (48,), 90),
    (2.0, 3.8, 48, (55, 60, 64), 85),
    (2.0, 1.0, 73, (72,), 100),
    (3.0, 1.0, 73, (74,), 100),
    (4.0, 1.8, 73, (76,), 100),
    (6.0, 0.45, 33, (36,), 110),
    (6.5, 0.45, 33, (36,), 110),
    (7.0, 0.45, 33, (43,), 110),
    (7.5, 0.45, 33, (41,), 110),
    (6.0, 0.3, 61, (60, 64, 67), 105),
    (7.0, 0.3, 61, (62, 67, 71), 105),
    (8.2, 0.3, 24, (52,), 100),
    (8.5, 0.3, 24, (55,), 100),
    (8.8, 0.3, 24, (59,), 100),
    (9.1, 0.9, 24, (64,), 100),
    (10.0, 1.6, 89, (57, 60, 64, 69), 100),
)


def render_score(
    score=DEMO_SCORE,
    *,
    soundfont: str | os.PathLike = DEFAULT_SOUNDFONT,
    sr: int = 48000,
    tail_s: float = 0.8,
    peak_dbfs: float = -6.0,
) -> np.ndarray:
    """Render a small score of (start s, duration s, program, pitches, velocity) events to mono
    float32, normalised to ``peak_dbfs`` (one MIDI channel per program; reverb and chorus off)."""
    renderer = NoteRenderer(soundfont, sr=sr)
    synth = renderer.synth
    programs = sorted({event[2] for event in score})
    if len(programs) > 15:
        raise ParameterError(f"a score may use at most 15 programs, got {len(programs)}")
    channel_of = {}
    for channel, program in zip([c for c in range(16) if c != 9], programs):
        synth.program_select(channel, renderer.sfid, 0, program)
        channel_of[program] = channel
    events = []
    for start, duration, program, pitches, velocity in score:
        for pitch in pitches:
            events.append((start, 1, channel_of[program], pitch, velocity))
            events.append((start + duration, 0, channel_of[program], pitch, 0))
    events.sort()
    chunks, now = [], 0
    for time_s, is_on, channel, pitch, velocity in events:
        target = int(round(time_s * sr))
        if target > now:
            chunks.append(synth.get_samples(target - now))
            now = target
        if is_on:
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    chunks.append(synth.get_samples(int(round(tail_s * sr))))
    renderer.close()
    audio = np.concatenate(chunks).astype(np.float32).reshape(-1, 2).mean(axis=1) / 32768.0
    return (audio * (10 ** (peak_dbfs / 20) / max(float(np.abs(audio).max()), 1e-9))).astype(np.float32)


def render_notes(
    out: str | os.PathLike,
    *,
    soundfont: str | os.PathLike = DEFAULT_SOUNDFONT,
    programs: list[int],
    pitches: list[int],
    velocities: list[int],
    sr: int = 48000,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Render every (program, pitch, velocity) note into an NSynth-layout folder ``out``.

    The folder is built next to ``out`` and moved into place at the end, so an interrupted
    render leaves nothing half-written. Silent notes (outside the instrument's range) are skipped.

    Returns
    -------
    dict with ``rendered``, ``skipped_silent`` counts and the ``path``.
    """
    import soundfile as sf
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ParameterError(f"output folder {str(out)!r} exists and is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
        (tmp / "audio").mkdir()
        renderer = NoteRenderer(soundfont, sr=sr)
        specs = [NoteSpec(p, n, v) for p in programs for n in pitches for v in velocities]
        examples: dict[str, dict] = {}
        skipped = 0
        for index, spec in enumerate(tqdm(specs, desc="render-notes", unit="note", disable=not progress)):
            audio = renderer.render(spec)
            if float(np.abs(audio).max()) < SILENCE_PEAK:
                skipped += 1
                continue
            family, source = gm_family(spec.program)
            sf.write(tmp / "audio" / f"{spec.note_str}.wav", audio, sr, subtype="PCM_16")
            examples[spec.note_str] = {
                "note": index,
                "note_str": spec.note_str,
                "instrument": spec.program,
                "instrument_str": spec.instrument_str,
                "pitch": spec.pitch,
                "velocity": spec.velocity,
                "sample_rate": sr,
                "qualities": [0] * 10,
                "qualities_str": [],
                "instrument_family": FAMILIES.index(family),
                "instrument_family_str": family,
                "instrument_source": SOURCES.index(source),
                "instrument_source_str": source,
                "soundfont": Path(soundfont).name,
            }
        renderer.close()
        if not examples:
            raise ParameterError(
                f"every note from {str(soundfont)!r} was silent (programs={programs}, pitches={pitches}); "
                "choose pitches inside the instruments' ranges"
            )
        (tmp / "examples.json").write_text(json.dumps(examples, indent=1))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if skipped:
        warnings.warn(f"render-notes: skipped {skipped} silent note(s) of {len(specs)}", stacklevel=2)
    return {"path": str(out), "rendered": len(examples), "skipped_silent": skipped}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "render-notes",
        help="render NSynth-like notes from a General MIDI SoundFont with FluidSynth",
        description=(
            "Render 4 s notes (3 s held, 1 s release; reverb and chorus off) for every combination "
            "of programs, pitches and velocities, into an NSynth-layout folder "
            "(examples.json + audio/<note>.wav). Lists take '0,24,40' or 'start:stop:step'."
        ),
    )
    p.add_argument("out", help="output folder (created; must be empty unless --overwrite)")
    p.add_argument("--soundfont", default=DEFAULT_SOUNDFONT, help=f"General MIDI .sf2 (default {DEFAULT_SOUNDFONT})")
    p.add_argument("--programs", default="0,24,32,40,56,64,73,80", help="GM programs 0..127")
    p.add_argument("--pitches", default="36:84:4", help="MIDI pitches 0..127")
    p.add_argument("--velocities", default="64,100", help="MIDI velocities 1..127")
    p.add_argument("--sr", type=int, default=48000, help="sample rate in Hz (default 48000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument(
        "--demo",
        action="store_true",
        help="instead of notes, write the built-in 12 s demo score as one mono 16-bit WAV file OUT (how assets/demo.wav was made)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.demo:
        import soundfile as sf

        audio = render_score(soundfont=args.soundfont, sr=args.sr)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        sf.write(tmp, audio, args.sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, out)
        print(f"wrote {out} ({len(audio) / args.sr:.1f} s at {args.sr} Hz)")
        return 0
    result = render_notes(
        args.out,
        soundfont=args.soundfont,
        programs=parse_int_list(args.programs, name="programs", low=0, high=127),
        pitches=parse_int_list(args.pitches, name="pitches", low=0, high=127),
        velocities=parse_int_list(args.velocities, name="velocities", low=1, high=127),
        sr=args.sr,
        overwrite=args.overwrite,
    )
    print(f"wrote {result['rendered']} notes to {result['path']} ({result['skipped_silent']} silent skipped)")
    return 0
