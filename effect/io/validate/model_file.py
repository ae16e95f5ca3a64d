"""The model-file check: the file loads as the engine loads it, the model gives finite, normal
magnitudes, and damaged copies of the file are refused with one clear line."""

from __future__ import annotations

import math
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spectro_fx.models.errors import ModelFileError
from spectro_fx.models.export import load_model

from .report import CheckResult
from .signals import FLOAT32_TINY


class ModelFileChecks:
    """Check 6 of :class:`~.validator.Validator` (its ``model``, ``model_sr`` and ``strictness``), run first."""

    # -- 6. the model file (run first: the others need a model that loads) -----------------------

    def check_model_file(self) -> CheckResult:
        findings: list[str] = []
        module = self.model.module
        figures: dict[str, Any] = {
            "format_version": int(module.format_version),
            "sample_rate": self.model_sr,
            "codebook_size": int(module.codebook_size),
            "has_prior": bool(module.has_prior),
            "bytes": Path(self.model.path).stat().st_size if Path(self.model.path).is_file() else None,
        }
        # the model itself at every level, and every code it can emit
        levels = self._model_levels(findings)
        figures["decoded_peak_by_level"] = levels
        self._model_codes(findings, figures)
        # damaged and foreign copies must be refused with one clear line
        refused, total = self._damaged_copies(findings)
        figures["damaged_copies"] = total
        figures["damaged_refused"] = refused
        summary = (
            f"format {figures['format_version']}, {self.model_sr} Hz, {figures['codebook_size']} codes; "
            f"finite at {len(levels)} input levels and for every code; {refused}/{total} damaged or foreign copies "
            "refused with one line"
        )
        return CheckResult("model-file", not findings, summary, findings, figures)

    def _model_levels(self, findings: list[str]) -> dict[str, float]:
        from spectro_fx.models.spectral import stft

        module = self.model.module
        cfg = self.model.config.stft
        rng = np.random.default_rng(self.seed)
        ts = int(module.time_stride)
        n = self.model_sr // 4
        peaks: dict[str, float] = {}
        signals = {"silence": np.zeros(n)}
        for db in (-100, -60, -30, -12, 0, 12, 40):
            level = 10.0 ** (db / 20.0)
            signals[f"noise {db:+d} dBFS"] = level * np.clip(rng.standard_normal(n) / 3.0, -1, 1)
            signals[f"sine {db:+d} dBFS"] = level * np.sin(2 * math.pi * 1000.0 * np.arange(n) / self.model_sr)
        for label, y in signals.items():
            spec = stft(y, cfg)
            frames = spec.shape[1] // ts * ts
            mag = torch.from_numpy(np.abs(spec[:, :frames])).float()[None]
            with torch.no_grad():
                latent = module.encode_latent(mag)
                decoded = module.decode(module.quantize(latent))
            if not bool(torch.isfinite(latent).all()):
                findings.append(f"the encoder gives non-finite latents for {label} input")
            if not bool(torch.isfinite(decoded).all()):
                findings.append(f"the decoder gives non-finite magnitudes for {label} input")
                continue
            tiny = int(((decoded > 0) & (decoded < FLOAT32_TINY)).sum())
            if tiny:
                findings.append(f"the decoder gives {tiny} subnormal magnitudes for {label} input (CPU stalls, subnormal output)")
            peaks[label] = round(float(decoded.max()), 4)
        return peaks

    def _model_codes(self, findings: list[str], figures: dict[str, Any]) -> None:
        module = self.model.module
        k = int(module.codebook_size)
        columns = max(int(module.decoder_receptive_field_columns), 1) + 1
        codes = torch.arange(k)[:, None, None].expand(k, int(module.n_rows), columns).contiguous()
        with torch.no_grad():
            decoded = module.decode(codes)
        bad = (~torch.isfinite(decoded)).flatten(1).any(1)
        tiny = ((decoded > 0) & (decoded < FLOAT32_TINY)).flatten(1).any(1)
        if bool(bad.any()):
            findings.append(f"{int(bad.sum())} of {k} codes decode to non-finite magnitudes (e.g. code {int(bad.nonzero()[0])})")
        if bool(tiny.any()):
            findings.append(f"{int(tiny.sum())} of {k} codes decode to subnormal magnitudes (e.g. code {int(tiny.nonzero()[0])})")
        finite = decoded[torch.isfinite(decoded)]
        figures["decoded_peak_any_code"] = round(float(finite.max()), 4) if finite.numel() else None

    def _damaged_copies(self, findings: list[str]) -> tuple[int, int]:
        path = Path(self.model.path)
        if not path.is_file():
            return 0, 0
        data = path.read_bytes()
        rng = np.random.default_rng(self.seed)
        copies: dict[str, bytes] = {}
        fractions = [0.0, 0.02, 0.5, 0.98, 1 - 1 / max(len(data), 1)]
        fractions += list(rng.uniform(0, 1, self.strictness - 1))
        for f in fractions:
            cut = int(f * len(data))
            copies[f"truncated to {cut} of {len(data)} bytes"] = data[:cut]
        with zipfile.ZipFile(path) as archive:
            members = [i for i in archive.infolist() if i.file_size > 0]
        for _ in range(2 + self.strictness):
            info = members[int(rng.integers(len(members)))]
            offset = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[offset + 26 : offset + 30])
            start = offset + 30 + name_len + extra_len
            pos = start + int(rng.integers(max(info.compress_size, 1)))
            bit = int(rng.integers(8))
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            copies[f"bit {bit} of byte {pos} flipped (in {info.filename.split('/', 1)[-1]})"] = bytes(flipped)
        copies["empty file"] = b""
        copies["random bytes"] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        copies["a text file"] = b"this is not a model\n" * 20
        with tempfile.TemporaryDirectory(prefix="spectro-fx-validate-") as tmp:
            zipped = Path(tmp) / "foreign-zip.pt"
            with zipfile.ZipFile(zipped, "w") as archive:
                archive.writestr("readme.txt", "a zip archive that is not TorchScript")
            copies["a zip that is not TorchScript"] = zipped.read_bytes()
            state = Path(tmp) / "state-dict.pt"
            torch.save({"weight": torch.zeros(3)}, state)
            copies["a torch.save state dict"] = state.read_bytes()
            refused = 0
            for i, (label, content) in enumerate(copies.items()):
                target = Path(tmp) / f"copy{i}.pt"
                target.write_bytes(content)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        load_model(target)
                except ModelFileError as exc:
                    message = str(exc)
                    if "\n" in message.strip() or str(target) not in message:
                        findings.append(f"{label}: the error is not one line naming the file: {message!r}")
                    else:
                        refused += 1
                except Exception as exc:  # anything else is a traceback in front of the audience
                    findings.append(f"{label}: {type(exc).__name__} instead of a clear error: {str(exc).splitlines()[0] if str(exc) else ''}")
                else:
                    findings.append(f"{label}: loaded without complaint")
        return refused, len(copies)
