"""`spectro-fx-train evaluate`: resynthesize audio through a model file (input phase kept) and
measure how far the result is from the input, plus codebook health.

Metrics are functions of (reference, output) audio, so benchmarks reuse them for anchors.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from spectro_fx.models.atomic import atomic_open
from spectro_fx.models.config import STFTConfig
from spectro_fx.models.errors import ParameterError, positive_int
from spectro_fx.models.spectral import istft, stft

# DAC-style multi-scale mel distance as the issue defines it: audio resampled to 16 kHz,
# (n_fft, n_mels) pairs, Hann window, hop n_fft / 4, Slaney mel filters on the magnitude,
# mean |log10 max(mel_ref, 1e-5) - log10 max(mel_out, 1e-5)|, summed over the resolutions.
MEL_SR = 16000
MEL_RESOLUTIONS = ((2048, 150), (512, 80))
MEL_FLOOR = 1e-5
# Multi-resolution STFT log-magnitude distance at the model's rate, and the single resolution
# used for log-spectral distance and spectral convergence.
MRSTFT_SIZES = (256, 512, 1024, 2048)
MAG_FLOOR = 1e-5
LSD_N_FFT = 2048
POWER_FLOOR = 1e-10

METRICS = ("mel_distance", "mrstft_distance", "lsd_db", "spectral_convergence")
METRIC_LABELS = {
    "mel_distance": "mel distance (16 kHz; 2048/150 + 512/80)",
    "mrstft_distance": "MR-STFT log10-mag L1 (256..2048)",
    "lsd_db": "log-spectral distance dB (2048)",
    "spectral_convergence": "spectral convergence (2048)",
}


def _mag(y: np.ndarray, n_fft: int) -> np.ndarray:
    import librosa

    return np.abs(librosa.stft(y.astype(np.float32), n_fft=n_fft, hop_length=n_fft // 4, window="hann", center=True))


_MEL_BANKS: dict[tuple[int, int], np.ndarray] = {}


def mel_distance(ref: np.ndarray, out: np.ndarray, *, sr: int) -> float:
    """Multi-scale mel distance (see ``MEL_RESOLUTIONS``); 0 for identical audio.

    Parameters
    ----------
    ref, out : np.ndarray [n_samples], float
        Same length, at ``sr`` Hz; both are resampled to 16 kHz before comparing.
    """
    import librosa
    import soxr

    if sr != MEL_SR:
        ref = soxr.resample(ref.astype(np.float64), sr, MEL_SR)
        out = soxr.resample(out.astype(np.float64), sr, MEL_SR)
    total = 0.0
    for n_fft, n_mels in MEL_RESOLUTIONS:
        bank = _MEL_BANKS.get((n_fft, n_mels))
        if bank is None:
            bank = librosa.filters.mel(sr=MEL_SR, n_fft=n_fft, n_mels=n_mels, htk=False, norm="slaney")
            _MEL_BANKS[(n_fft, n_mels)] = bank
        mel_ref = bank @ _mag(ref, n_fft)
        mel_out = bank @ _mag(out, n_fft)
        total += float(
            np.mean(np.abs(np.log10(np.maximum(mel_ref, MEL_FLOOR)) - np.log10(np.maximum(mel_out, MEL_FLOOR))))
        )
    return total


def audio_metrics(ref: np.ndarray, out: np.ndarray, *, sr: int) -> dict[str, float]:
    """All distances of ``out`` from ``ref`` (same length, ``sr`` Hz); each is 0 when equal.

    Returns
    -------
    dict with ``mel_distance`` (see :func:`mel_distance`), ``mrstft_distance`` (mean over
    ``MRSTFT_SIZES`` of mean |log10 max(|S_ref|, 1e-5) - log10 max(|S_out|, 1e-5)|, Hann,
    hop n_fft/4), ``lsd_db`` (mean over frames of the RMS over bins of the dB difference of
    power spectra, floor 1e-10, n_fft 2048) and ``spectral_convergence``
    (||S_ref - S_out||_F / ||S_ref||_F of magnitudes, n_fft 2048).
    """
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape or ref.ndim != 1:
        raise ParameterError(f"ref and out must be 1-D of equal length, got {ref.shape} and {out.shape}")
    result = {"mel_distance": mel_distance(ref, out, sr=sr)}
    distances = []
    for n_fft in MRSTFT_SIZES:
        a, b = _mag(ref, n_fft), _mag(out, n_fft)
        distances.append(np.mean(np.abs(np.log10(np.maximum(a, MAG_FLOOR)) - np.log10(np.maximum(b, MAG_FLOOR)))))
    result["mrstft_distance"] = float(np.mean(distances))
    a, b = _mag(ref, LSD_N_FFT), _mag(out, LSD_N_FFT)
    db = 10 * np.log10(np.maximum(a**2, POWER_FLOOR)) - 10 * np.log10(np.maximum(b**2, POWER_FLOOR))
    result["lsd_db"] = float(np.mean(np.sqrt(np.mean(db**2, axis=0))))
    result["spectral_convergence"] = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))
    return result


def codebook_health(usage: np.ndarray) -> dict[str, float]:
    """``perplexity_ratio`` (exp entropy of code usage / K) and ``dead_fraction`` (codes never used)."""
    usage = np.asarray(usage, dtype=np.float64)
    p = usage / max(usage.sum(), 1.0)
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    return {
        "perplexity": float(math.exp(entropy)),
        "perplexity_ratio": float(math.exp(entropy) / len(usage)),
        "dead_fraction": float(np.mean(usage == 0)),
    }


def resynthesize(mag: np.ndarray, spec: np.ndarray, cfg: STFTConfig) -> np.ndarray:
    """Audio of magnitude ``mag`` ``[..., n_bins, frames]`` with the phase of ``spec`` (the
    input's complex STFT; its last ``frames`` frames when it has more), as the effect does:
    ``[..., frames * hop_length]`` float64 samples aligned with those frames."""
    phase = np.angle(spec[..., -mag.shape[-1] :])
    return istft(mag * np.exp(1j * phase), cfg)


class ModelResynthesis:
    """Full resynthesis through a model file: STFT, encode, decode, input phase, ISTFT.

    Calling it on mono audio ``[n_samples]`` at the model's rate returns
    ``(audio_out [n_samples], codes [n_rows, columns])``. Frames are padded (zeros after
    the end) to a multiple of ``time_stride``; the output is trimmed to the input length.
    """

    def __init__(self, model_file):
        self.model = model_file.module
        self.cfg: STFTConfig = model_file.config.stft
        self.time_stride = int(self.model.time_stride)
        self.codebook_size = int(self.model.codebook_size)

    @property
    def sr(self) -> int:
        return self.cfg.sr

    def spectra(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``audio`` [n_samples] -> (its complex STFT, the decoded magnitude, both
        ``[n_bins, frames]``, and the codes ``[n_rows, columns]``), zero-padded to whole columns."""
        n = len(audio)
        block = self.cfg.hop_length * self.time_stride
        padded = np.pad(np.asarray(audio, dtype=np.float64), (0, -n % block))
        spec = stft(padded, self.cfg)
        with torch.inference_mode():
            mag = torch.from_numpy(np.abs(spec)).float()[None]
            codes = self.model.encode(mag)
            decoded = self.model.decode(codes)[0].double().numpy()
        return spec, decoded, codes[0].numpy()

    def __call__(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spec, decoded, codes = self.spectra(audio)
        return resynthesize(decoded, spec, self.cfg)[: len(audio)].astype(np.float32), codes


@dataclass
class Evaluation:
    """Mean metrics over clips and codebook health; ``per_clip`` keeps each clip's metrics."""

    metrics: dict[str, float]
    codebook: dict[str, float]
    n_clips: int
    per_clip: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "codebook": self.codebook, "n_clips": self.n_clips, "per_clip": self.per_clip}


def evaluate_clips(
    clips,
    reconstruct: Callable[[np.ndarray], tuple[np.ndarray, Optional[np.ndarray]]],
    *,
    gain_db: float = 0.0,
    codebook_size: Optional[int] = None,
    progress: bool = False,
) -> Evaluation:
    """Apply ``reconstruct`` to every clip (scaled by ``gain_db``) and average the metrics.

    Parameters
    ----------
    clips : training.data.Clips
        Mono clips at the rate ``reconstruct`` expects.
    reconstruct : callable
        ``audio [n] -> (audio_out [n], codes or None)``.
    gain_db : float
        Gain applied to each clip before reconstruction; the metrics compare against the
        scaled clip, so they measure level robustness, not the gain.
    """
    from tqdm import tqdm

    gain = 10 ** (gain_db / 20)
    per_clip: dict[str, dict[str, float]] = {}
    usage = np.zeros(codebook_size or 1, dtype=np.int64)
    for name, audio in tqdm(list(zip(clips.names, clips.audio)), desc="evaluate", unit="clip", disable=not progress):
        ref = audio.astype(np.float64) * gain
        out, codes = reconstruct(ref)
        per_clip[name] = audio_metrics(ref, np.asarray(out, dtype=np.float64), sr=clips.sr)
        if codes is not None and codebook_size:
            usage += np.bincount(np.asarray(codes).ravel(), minlength=codebook_size)
    metrics = {key: float(np.mean([m[key] for m in per_clip.values()])) for key in METRICS}
    codebook = codebook_health(usage) if codebook_size and usage.sum() else {}
    return Evaluation(metrics=metrics, codebook=codebook, n_clips=len(per_clip), per_clip=per_clip)


def format_table(rows: dict[str, Evaluation]) -> str:
    """Plain-text table: one row per evaluation, one column per metric and codebook figure."""
    header = ["", "mel dist", "MR-STFT", "LSD dB", "spec conv", "ppl/K", "dead"]
    lines = [header]
    for name, ev in rows.items():
        m, c = ev.metrics, ev.codebook
        lines.append(
            [
                name,
                f"{m['mel_distance']:.3f}",
                f"{m['mrstft_distance']:.3f}",
                f"{m['lsd_db']:.2f}",
                f"{m['spectral_convergence']:.3f}",
                f"{c['perplexity_ratio']:.3f}" if c else "-",
                f"{100 * c['dead_fraction']:.1f} %" if c else "-",
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in lines)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="measure how well a model file reconstructs a folder of notes or audio",
        description=(
            "Resynthesize every clip through MODEL (encode, decode, input phase kept) and report "
            "mel distance (audio at 16 kHz; Hann; n_fft 2048 / 150 mels + 512 / 80 mels, hop n_fft/4, "
            "Slaney mel; mean |log10 max(mel, 1e-5) difference|, summed), multi-resolution STFT "
            "log-magnitude distance, log-spectral distance (dB), spectral convergence, and codebook "
            "health (perplexity / K, fraction of codes never used)."
        ),
    )
    p.add_argument("model", help="model file (.pt) written by `spectro-fx-train export`")
    p.add_argument("data", help="NSynth-layout folder or folder of audio files")
    p.add_argument("--json", dest="json_out", default=None, help="also write the results as JSON here")
    p.add_argument("--gain-db", type=float, action="append", default=None, help="evaluate at this input gain (repeatable; default 0)")
    p.add_argument("--families", default=None, help="NSynth families to keep, comma-separated")
    p.add_argument("--sources", default=None, help="NSynth sources to keep, comma-separated")
    p.add_argument("--pitches", default=None, help="MIDI pitch range, e.g. 36-84")
    p.add_argument("--velocities", default=None, help="MIDI velocity range, e.g. 64-127")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N clips")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from spectro_fx.models.export import load_model

    from .data import load_clips, note_filter_from_args

    model_file = load_model(args.model)
    resynthesis = ModelResynthesis(model_file)
    clips = load_clips(
        args.data,
        sr=resynthesis.sr,
        min_samples=resynthesis.cfg.n_fft,
        note_filter=note_filter_from_args(
            families=args.families, sources=args.sources, pitches=args.pitches, velocities=args.velocities
        ),
        segment_s=None,
        progress=True,
    )
    if args.limit is not None:
        positive_int("--limit", args.limit)
        clips.audio, clips.names = clips.audio[: args.limit], clips.names[: args.limit]
    rows = {}
    for gain_db in args.gain_db or [0.0]:
        label = f"{Path(args.model).name} @ {gain_db:+g} dB"
        rows[label] = evaluate_clips(
            clips, resynthesis, gain_db=gain_db, codebook_size=resynthesis.codebook_size, progress=True
        )
    print(f"{len(clips)} clips from {args.data} at {clips.sr} Hz")
    print(format_table(rows))
    if args.json_out:
        results = {"model": str(args.model), "data": str(args.data), "results": {k: v.to_dict() for k, v in rows.items()}}
        with atomic_open(args.json_out) as out:
            out.write(json.dumps(results, indent=2))
    return 0
