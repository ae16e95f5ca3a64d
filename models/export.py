"""The model file: a TorchScript module that training writes and the engine loads.

``export_model`` writes it; ``load_model`` checks it and refuses anything else with a clear sentence.
"""

import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn
import torch.nn.functional as F

from .atomic import atomic_path
from .config import VQVAEConfig
from .errors import ModelFileError, ParameterError
from .vqvae import Decoder, Encoder, Normalizer, VQVAE, decoder_receptive_field_columns, receptive_field_frames

FORMAT_VERSION = 1

REQUIRED_ATTRIBUTES = (
    "format_version",
    "sample_rate",
    "n_fft",
    "hop_length",
    "win_length",
    "window",
    "time_stride",
    "freq_stride",
    "n_rows",
    "n_bins",
    "code_dim",
    "codebook_size",
    "receptive_field_frames",
    "decoder_receptive_field_columns",
    "data_description",
    "has_prior",
)
REQUIRED_METHODS = ("encode", "decode", "embed", "quantize", "decode_latent", "encode_latent")


@dataclass(frozen=True)
class Prior:
    """Categorical naive Bayes tables P(code | neighbour codes at fixed offsets).

    Attributes
    ----------
    offsets : torch.Tensor [P, 2] int64
        ``(d_column, d_row)`` of each neighbour relative to the predicted cell.
    class_log_prior : torch.Tensor [K] float32
        log P(code).
    feature_log_prob : torch.Tensor [P, K, K + 1] float32
        log P(neighbour p has value v | code k); value K means "outside the codemap / unknown".
    alpha : float
        Laplace smoothing used when counting.
    """

    offsets: torch.Tensor
    class_log_prior: torch.Tensor
    feature_log_prob: torch.Tensor
    alpha: float


class ExportedVQVAE(nn.Module):
    """Inference-only VQ-VAE; scripted with ``torch.jit.script`` into the model file.

    Magnitudes are linear ``[batch, n_bins, frames]`` (frames a multiple of ``time_stride``);
    codes are int64 ``[batch, n_rows, columns]``; latents ``[batch, code_dim, n_rows, columns]``.
    """

    format_version: int
    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    window: str
    synthesis_length: int
    time_stride: int
    freq_stride: int
    n_rows: int
    n_bins: int
    padded_bins: int
    code_dim: int
    codebook_size: int
    receptive_field_frames: int
    decoder_receptive_field_columns: int
    data_description: str
    has_prior: bool
    prior_alpha: float

    def __init__(self, model: VQVAE, *, data_description: str = "", prior: Optional[Prior] = None):
        super().__init__()
        cfg = model.cfg
        self.format_version = FORMAT_VERSION
        self.sample_rate = cfg.stft.sr
        self.n_fft = cfg.stft.n_fft
        self.hop_length = cfg.stft.hop_length
        self.win_length = cfg.stft.win_length
        self.window = cfg.stft.window
        self.synthesis_length = cfg.stft.synthesis_length  # 0: classic pair; not required, older files lack it
        self.time_stride = cfg.time_stride
        self.freq_stride = cfg.freq_stride
        self.n_rows = cfg.n_rows
        self.n_bins = cfg.stft.n_bins
        self.padded_bins = cfg.padded_bins
        self.code_dim = cfg.code_dim
        self.codebook_size = cfg.codebook_size
        self.receptive_field_frames = receptive_field_frames(cfg)
        self.decoder_receptive_field_columns = decoder_receptive_field_columns(cfg)
        self.data_description = data_description
        self.normalizer = Normalizer(floor=cfg.log_floor, offset=cfg.log_offset, scale=cfg.log_scale)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.encoder.load_state_dict(model.encoder.state_dict())
        self.decoder.load_state_dict(model.decoder.state_dict())
        self.register_buffer("codebook", model.quantizer.codebook.detach().clone())
        usage = model.quantizer.cluster_size.detach().clamp_min(1e-6)
        self.register_buffer("code_log_prior", torch.log(usage / usage.sum()))
        self.has_prior = prior is not None
        if prior is None:
            k = cfg.codebook_size
            prior = Prior(
                offsets=torch.zeros(0, 2, dtype=torch.long),
                class_log_prior=torch.zeros(k),
                feature_log_prob=torch.zeros(0, k, k + 1),
                alpha=0.0,
            )
        self.prior_alpha = float(prior.alpha)
        self.register_buffer("prior_offsets", prior.offsets.to(torch.long).clone())
        self.register_buffer("prior_class_log_prior", prior.class_log_prior.float().clone())
        self.register_buffer("prior_feature_log_prob", prior.feature_log_prob.float().clone())
        self.eval()

    def _check_mag(self, mag: torch.Tensor) -> None:
        if mag.dim() != 3 or mag.shape[1] != self.n_bins:
            raise ValueError(f"mag must be [batch, {self.n_bins}, frames], got {mag.shape}")
        if mag.shape[2] % self.time_stride != 0:
            raise ValueError(f"frames={mag.shape[2]} must be a multiple of time_stride={self.time_stride}")

    @torch.jit.export
    def encode_latent(self, mag: torch.Tensor) -> torch.Tensor:
        """Unquantized latent of a linear magnitude."""
        self._check_mag(mag)
        z = self.normalizer(mag.float())
        extra = self.padded_bins - self.n_bins
        if extra > 0:
            z = torch.cat([z, z[:, -1:, :].expand(-1, extra, -1)], dim=1)
        return self.encoder(z.unsqueeze(1))

    @torch.jit.export
    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """Nearest-codeword indices ``[batch, n_rows, columns]`` of a latent."""
        b, d, r, c = latent.shape
        flat = latent.permute(0, 2, 3, 1).reshape(-1, d)
        dist_sq = (
            flat.pow(2).sum(1, keepdim=True)
            - 2.0 * flat @ self.codebook.t()
            + self.codebook.pow(2).sum(1).unsqueeze(0)
        )
        return dist_sq.argmin(dim=1).reshape(b, r, c)

    @torch.jit.export
    def encode(self, mag: torch.Tensor) -> torch.Tensor:
        """Codes ``[batch, n_rows, frames // time_stride]`` of a linear magnitude."""
        return self.quantize(self.encode_latent(mag))

    @torch.jit.export
    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent ``[batch, code_dim, n_rows, columns]`` of codes."""
        return F.embedding(codes, self.codebook).permute(0, 3, 1, 2)

    @torch.jit.export
    def decode_latent(self, latent: torch.Tensor, last_columns: int = 0) -> torch.Tensor:
        """Linear magnitude ``[batch, n_bins, columns * time_stride]`` of a latent; with
        ``last_columns > 0`` only the frames of the last ``last_columns`` columns (a stream
        passes ``decoder_receptive_field_columns - 1`` earlier columns as context)."""
        z = self.decoder(latent, last_columns)[:, 0, : self.n_bins]
        return self.normalizer.inverse(z)

    @torch.jit.export
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Linear magnitude ``[batch, n_bins, columns * time_stride]`` of codes."""
        return self.decode_latent(self.embed(codes), 0)

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(mag))


def export_model(
    model: VQVAE,
    path: Union[str, os.PathLike],
    *,
    data_description: str = "",
    prior: Optional[Prior] = None,
    metadata: Optional[dict[str, Any]] = None,
) -> Path:
    """Script ``model`` and write it atomically to ``path`` with its config in ``config.json``."""
    path = Path(path)
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript in favour of torch.export; the file format stays loadable
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(ExportedVQVAE(model, data_description=data_description, prior=prior))
    extra = {
        "config.json": model.cfg.to_json(),
        "metadata.json": json.dumps({"format_version": FORMAT_VERSION, **(metadata or {})}, indent=2),
    }
    with atomic_path(path, suffix=".tmp") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, str(tmp), _extra_files=extra)
    return path


@dataclass
class ModelFile:
    """A loaded, checked model file."""

    path: Path
    module: torch.jit.ScriptModule
    config: VQVAEConfig
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def sr(self) -> int:
        return self.config.stft.sr

    def prior(self) -> Optional[Prior]:
        if not bool(self.module.has_prior):
            return None
        return Prior(
            offsets=self.module.prior_offsets,
            class_log_prior=self.module.prior_class_log_prior,
            feature_log_prob=self.module.prior_feature_log_prob,
            alpha=float(self.module.prior_alpha),
        )


def load_model(path: Union[str, os.PathLike]) -> ModelFile:
    """Load and check a model file written by :func:`export_model`.

    Raises
    ------
    ModelFileError
        The file is missing, not TorchScript (e.g. a ``torch.save`` checkpoint or state dict),
        of another ``format_version``, or lacks a required attribute or method.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a spectro-fx model file: not a TorchScript archive (not even a zip file)")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if not any(n.endswith("/code/__torch__.py") or "/code/" in n for n in names):
        raise ModelFileError(
            f"{path} is not a spectro-fx model file: it looks like a torch.save checkpoint or state dict, "
            "not TorchScript; turn a training run into a model file with `spectro-fx-train export RUN`"
        )
    extra = {"config.json": "", "metadata.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError and others for damaged archives
        raise ModelFileError(f"{path} is not a loadable TorchScript file: {str(exc).splitlines()[0]}") from None
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(module, a)]
    missing += [f"{m}()" for m in REQUIRED_METHODS if not hasattr(module, m)]
    if "format_version" not in missing and int(module.format_version) != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format_version={int(module.format_version)}; this spectro-fx reads "
            f"format_version={FORMAT_VERSION}; re-export it with this version's `spectro-fx-train export`"
        )
    if missing:
        raise ModelFileError(f"{path} is not a spectro-fx model file: missing {', '.join(missing)}")
    if not extra["config.json"]:
        raise ModelFileError(f"{path} is not a spectro-fx model file: missing config.json")
    try:
        config = VQVAEConfig.from_dict(json.loads(extra["config.json"]))
        metadata = json.loads(extra["metadata.json"] or "{}")
    except (ValueError, TypeError, ParameterError) as exc:
        raise ModelFileError(f"{path} has an unreadable config.json: {exc}") from None
    module.eval()
    return ModelFile(path=path, module=module, config=config, metadata=metadata)
