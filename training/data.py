"""Training and evaluation audio: an NSynth-layout folder (real NSynth or rendered notes) or any
folder of audio files, decoded to mono at the model's rate, plus random-crop training batches.

Unreadable, corrupt, silent or too-short files are skipped, counted and reported in one warning.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from spectro_fx.models.errors import ParameterError, positive_int

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
# A file (or segment) whose peak stays below this is silence: -80 dBFS, under FluidSynth's
# quietest renders (-45 dBFS peaks) but above its dither floor (about -97 dBFS RMS).
SILENCE_PEAK = 1e-4


@dataclass(frozen=True)
class NoteFilter:
    """Which NSynth notes to keep (``None`` keeps all).

    Parameters
    ----------
    families, sources, instruments : sequence of str, optional
        Allowed ``instrument_family_str`` (e.g. "keyboard"), ``instrument_source_str``
        ("acoustic", "electronic", "synthetic") and ``instrument_str`` values.
    pitch_range, velocity_range : (int, int), optional
        Inclusive MIDI ranges.
    """

    families: Optional[tuple[str, ...]] = None
    sources: Optional[tuple[str, ...]] = None
    instruments: Optional[tuple[str, ...]] = None
    pitch_range: Optional[tuple[int, int]] = None
    velocity_range: Optional[tuple[int, int]] = None

    def __post_init__(self) -> None:
        for name in ("families", "sources", "instruments"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(str(v) for v in value))
        for name in ("pitch_range", "velocity_range"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                low, high = (int(v) for v in value)
            except (TypeError, ValueError):
                raise ParameterError(f"{name}={value!r} must be two integers (low, high)") from None
            if not 0 <= low <= high <= 127:
                raise ParameterError(f"{name}={value!r} must satisfy 0 <= low <= high <= 127")
            object.__setattr__(self, name, (low, high))

    def keep(self, example: dict) -> bool:
        if self.families is not None and example.get("instrument_family_str") not in self.families:
            return False
        if self.sources is not None and example.get("instrument_source_str") not in self.sources:
            return False
        if self.instruments is not None and example.get("instrument_str") not in self.instruments:
            return False
        for key, bounds in (("pitch", self.pitch_range), ("velocity", self.velocity_range)):
            if bounds is not None and not bounds[0] <= int(example.get(key, -1)) <= bounds[1]:
                return False
        return True

    def describe(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)}" for f in self.__dataclass_fields__.values() if getattr(self, f.name) is not None]
        return ", ".join(parts)


@dataclass
class Clips:
    """Mono clips at one sample rate.

    Attributes
    ----------
    audio : list of np.ndarray [n_samples], float32
    names : list of str, one per clip (note_str, or ``file#segment``)
    sr : int
        Sample rate in Hz.
    skipped : Counter
        Skipped files by reason ("unreadable", "silent", "too short").
    description : str
        What the clips are, for the model file's ``data_description``.
    """

    audio: list[np.ndarray]
    names: list[str]
    sr: int
    skipped: Counter = field(default_factory=Counter)
    description: str = ""

    def __len__(self) -> int:
        return len(self.audio)

    @property
    def seconds(self) -> float:
        return sum(len(a) for a in self.audio) / self.sr


def is_nsynth(path: str | os.PathLike) -> bool:
    """True when ``path`` is an NSynth-layout folder (has ``examples.json``)."""
    return (Path(path) / "examples.json").is_file()


def read_examples(root: str | os.PathLike, note_filter: NoteFilter = NoteFilter()) -> dict[str, dict]:
    """The ``examples.json`` entries of an NSynth-layout folder that pass ``note_filter``."""
    root = Path(root)
    index = root / "examples.json"
    try:
        examples = json.loads(index.read_text())
    except FileNotFoundError:
        raise ParameterError(f"{str(root)!r} is not an NSynth folder: no examples.json") from None
    except (OSError, ValueError) as exc:
        raise ParameterError(f"{str(index)!r} is not readable JSON: {exc}") from None
    if not isinstance(examples, dict):
        raise ParameterError(f"{str(index)!r} must hold an object keyed by note_str")
    return {key: ex for key, ex in examples.items() if isinstance(ex, dict) and note_filter.keep(ex)}


def read_audio(path: str | os.PathLike, *, sr: int) -> np.ndarray:
    """Decode an audio file to mono float32 at ``sr`` Hz (soxr resampling when rates differ).

    Raises
    ------
    OSError, RuntimeError, ValueError
        When the file cannot be decoded (callers count and skip it).
    """
    import soundfile as sf
    import soxr

    path = Path(path)
    try:
        audio, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        if path.suffix.lower() != ".mp3":
            raise RuntimeError(f"cannot decode {path}: {exc}") from None
        import librosa

        # older libsndfile builds have no MP3 decoder; librosa falls back to audioread
        mono, file_sr = librosa.load(str(path), sr=None, mono=True)
        audio = mono[:, None].astype(np.float32)
    mono = audio.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise ValueError(f"{path} holds non-finite samples")
    if int(file_sr) != sr:
        mono = soxr.resample(mono, int(file_sr), sr, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _decode_all(paths: Iterable[tuple[str, Path]], *, sr: int, min_samples: int, skipped: Counter, progress: bool):
    import soundfile as sf
    from tqdm import tqdm

    paths = list(paths)
    for name, path in tqdm(paths, desc="loading audio", unit="file", disable=not progress or len(paths) < 200):
        try:
            audio = read_audio(path, sr=sr)
        except (OSError, RuntimeError, ValueError, EOFError, sf.LibsndfileError):
            skipped["unreadable"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - audioread and friends raise their own types
            if type(exc).__module__.split(".")[0] not in ("audioread", "librosa"):
                raise
            skipped["unreadable"] += 1
            continue
        if len(audio) < min_samples:
            skipped["too short"] += 1
            continue
        if float(np.abs(audio).max(initial=0.0)) < SILENCE_PEAK:
            skipped["silent"] += 1
            continue
        yield name, audio


def load_clips(
    path: str | os.PathLike,
    *,
    sr: int,
    min_samples: int = 1,
    note_filter: NoteFilter = NoteFilter(),
    segment_s: Optional[float] = 4.0,
    progress: bool = False,
) -> Clips:
    """Load training or evaluation audio from an NSynth folder or any folder of audio files.

    Parameters
    ----------
    path : folder
        NSynth layout (``examples.json`` + ``audio/<note_str>.wav``), else every audio file
        below it (wav, flac, ogg, mp3, aiff; recursively), sorted by path.
    sr : int
        Target sample rate in Hz.
    min_samples : int
        Shorter files (and folder segments) are skipped as too short.
    note_filter : NoteFilter
        NSynth note selection; ignored for plain folders.
    segment_s : float or None
        Plain folders only: files are cut into segments of this many seconds (a last shorter
        piece is kept when at least ``min_samples`` long; silent segments dropped); None keeps
        whole files.

    Raises
    ------
    ParameterError
        When no usable file is found; the message names ``path`` and the skip counts.
    """
    root = Path(path)
    if not root.is_dir():
        raise ParameterError(f"data path {str(root)!r} is not a folder")
    skipped: Counter = Counter()
    audio: list[np.ndarray] = []
    names: list[str] = []
    if is_nsynth(root):
        examples = read_examples(root, note_filter)
        items = [(key, root / "audio" / f"{key}.wav") for key in sorted(examples)]
        for name, clip in _decode_all(items, sr=sr, min_samples=min_samples, skipped=skipped, progress=progress):
            names.append(name)
            audio.append(clip)
        filters = note_filter.describe()
        description = f"NSynth-layout notes from {root.name}" + (f" ({filters})" if filters else "")
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        items = [(str(p.relative_to(root)), p) for p in files]
        for name, clip in _decode_all(items, sr=sr, min_samples=min_samples, skipped=skipped, progress=progress):
            if segment_s is None:
                pieces = [clip]
            else:
                size = max(int(round(segment_s * sr)), 1)
                pieces = [clip[i : i + size] for i in range(0, len(clip), size)]
                pieces = [p for p in pieces if len(p) >= min_samples]
            for i, piece in enumerate(pieces):
                if float(np.abs(piece).max(initial=0.0)) < SILENCE_PEAK:
                    continue
                names.append(f"{name}#{i}")
                audio.append(piece)
        description = f"audio files from {root.name}"
    if skipped:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        warnings.warn(f"{root}: skipped {sum(skipped.values())} file(s): {detail}", stacklevel=2)
    if not audio:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "no audio files found"
        raise ParameterError(
            f"no usable audio in {str(root)!r} ({detail}); expected an NSynth folder or audio files "
            f"({', '.join(AUDIO_SUFFIXES)}) of at least {min_samples} samples at {sr} Hz"
        )
    seconds = sum(len(a) for a in audio) / sr
    description += f"; {len(audio)} clips, {seconds / 60:.1f} min at {sr} Hz"
    return Clips(audio=audio, names=names, sr=sr, skipped=skipped, description=description)


class CropDataset(torch.utils.data.Dataset):
    """Random fixed-length crops of clips, one per clip and epoch (repeatable: the crop of
    clip ``i`` in epoch ``e`` depends only on ``seed``, ``e`` and ``i``).

    Clips are stored as float16 to halve memory (about 1e-3 relative precision, far finer
    than the log-magnitude loss can see); crops come back as float32 ``[n_samples]``.
    """

    def __init__(self, clips: Clips, *, n_samples: int, seed: int = 0, repeats: int = 1):
        positive_int("n_samples", n_samples)
        short = [n for n, a in zip(clips.names, clips.audio) if len(a) < n_samples]
        if short:
            raise ParameterError(
                f"{len(short)} clip(s) are shorter than the crop of {n_samples} samples (e.g. {short[0]!r})"
            )
        self.audio = [torch.from_numpy(a.astype(np.float16)) for a in clips.audio]
        self.n_samples = n_samples
        self.seed = seed
        self.repeats = max(int(repeats), 1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.audio) * self.repeats

    def __getitem__(self, index: int) -> torch.Tensor:
        clip = self.audio[index % len(self.audio)]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        start = int(rng.integers(0, len(clip) - self.n_samples + 1))
        return clip[start : start + self.n_samples].float()


def parse_range(text: Optional[str], *, name: str) -> Optional[tuple[int, int]]:
    """``"36-84"`` or ``"60"`` -> inclusive (low, high); None stays None."""
    if text is None or text == "":
        return None
    parts = str(text).replace(":", "-").split("-")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ParameterError(f"{name}={text!r} must be 'low-high' or one integer") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise ParameterError(f"{name}={text!r} must be 'low-high' or one integer")
    return values[0], values[1]


def note_filter_from_args(
    *,
    families: Optional[Sequence[str]] = None,
    sources: Optional[Sequence[str]] = None,
    pitches: Optional[str] = None,
    velocities: Optional[str] = None,
) -> NoteFilter:
    """A :class:`NoteFilter` from command-line style values (comma lists, 'low-high' ranges)."""

    def split(v):
        if v is None or v == "" or v == []:
            return None
        if isinstance(v, str):
            v = v.split(",")
        return tuple(s.strip() for s in v if s.strip())

    return NoteFilter(
        families=split(families),
        sources=split(sources),
        pitch_range=parse_range(pitches, name="pitches"),
        velocity_range=parse_range(velocities, name="velocities"),
    )
