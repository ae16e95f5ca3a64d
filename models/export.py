"""The model file: a TorchScript module that training writes and the engine loads.

``export_model`` writes it; ``load_model`` checks it and refuses anything else with a clear sentence.
"""

import json
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn
import torch.nn.functional as F

from .atomic import atomic_path
from .config import VQVAEConfig
from .errors import ModelFileError, ParameterError
from .neural_prior import NeuralPrior
from .quantizer import quantize_latent
from .vqvae import CausalConv2d, Decoder, Encoder, Normalizer, VQVAE, decoder_receptive_field_columns, receptive_field_frames

FORMAT_VERSION = 3
"""3: a neural inpainting prior may travel in the file (``has_neural_prior``, submodule
``neural_prior``: :class:`~spectro_fx.models.neural_prior.NeuralPrior`, a placeholder of a few
hundred weights when the file has none). 2: streaming methods (``stream_encode``,
``stream_decode_latent``, ``reset_stream``). Files of version 2 load as they are (no neural
prior; inpainting keeps naive Bayes); files of version 1 (no streaming methods) are rebuilt
from their weights when loaded."""
READABLE_VERSIONS = (1, 2, FORMAT_VERSION)

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
STREAM_METHODS = ("stream_encode", "stream_encode_latent", "stream_decode_latent", "reset_stream")
REQUIRED_METHODS = ("encode", "decode", "embed", "quantize", "decode_latent", "encode_latent") + STREAM_METHODS


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

    The ``stream_*`` methods run the same layers on the continuation of a stream: each call
    takes the frames of new whole columns only, and the layers keep their causal context in
    their own buffers, so a stream fed in any column counts gives what one pass over the whole
    signal gives. ``reset_stream()`` starts a new stream (zeros before it, as the whole-signal
    padding). One stream per module: copy the module (``copy.deepcopy``) for another.
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
    has_neural_prior: bool
    network_dtype: torch.dtype

    def __init__(
        self, model: VQVAE, *, data_description: str = "", prior: Optional[Prior] = None,
        neural_prior: Optional[NeuralPrior] = None,
    ):
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
        self.network_dtype = torch.float32  # of the encoder's and decoder's weights (use_precision)
        self.encoder.load_state_dict(model.encoder.state_dict())
        self.decoder.load_state_dict(model.decoder.state_dict())
        for layer in self.modules():
            if isinstance(layer, (CausalConv2d, Decoder)):
                layer.prepare_stream()
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
        # always a submodule, so scripted code can call it; without a trained one, a placeholder
        # of one unit per layer that nothing calls (has_neural_prior is False)
        self.has_neural_prior = neural_prior is not None
        if neural_prior is None:
            neural_prior = NeuralPrior(n_rows=cfg.n_rows, codebook_size=cfg.codebook_size, context_columns=1,
                                       embed_dim=1, hidden=1, dilations=[1])
        elif (neural_prior.n_rows, neural_prior.codebook_size) != (cfg.n_rows, cfg.codebook_size):
            raise ParameterError(
                f"the neural prior predicts {neural_prior.n_rows} rows of {neural_prior.codebook_size} codes; "
                f"the model has {cfg.n_rows} rows of {cfg.codebook_size}"
            )
        self.neural_prior = neural_prior
        self.eval()

    def use_precision(self, dtype: torch.dtype) -> None:
        """Run the encoder and decoder in ``dtype`` (weights and activations; in ``torch.bfloat16``
        the default model renders 1.7-2x faster offline on a CPU with AMX): their inputs are cast
        to it, their outputs back to float32, so every method keeps its float32 contract. Call
        before scripting."""
        self.encoder.to(dtype)
        self.decoder.to(dtype)
        self.network_dtype = dtype

    def _check_mag(self, mag: torch.Tensor) -> None:
        if mag.dim() != 3 or mag.shape[1] != self.n_bins:
            raise ValueError(f"mag must be [batch, {self.n_bins}, frames], got {mag.shape}")
        if mag.shape[2] % self.time_stride != 0:
            raise ValueError(f"frames={mag.shape[2]} must be a multiple of time_stride={self.time_stride}")

    def _features(self, mag: torch.Tensor) -> torch.Tensor:
        """``[batch, 1, padded_bins, frames]`` normalised log magnitude, the top bin repeated."""
        self._check_mag(mag)
        z = self.normalizer(mag.float())
        extra = self.padded_bins - self.n_bins
        if extra > 0:
            z = torch.cat([z, z[:, -1:, :].expand(-1, extra, -1)], dim=1)
        return z.unsqueeze(1).to(self.network_dtype)

    @torch.jit.export
    def encode_latent(self, mag: torch.Tensor) -> torch.Tensor:
        """Unquantized latent of a linear magnitude."""
        return self.encoder(self._features(mag)).float()

    @torch.jit.export
    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """Nearest-codeword indices ``[batch, n_rows, columns]`` of a latent."""
        return quantize_latent(latent, self.codebook)

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
        z = self.decoder(latent.to(self.network_dtype), last_columns)[:, 0, : self.n_bins]
        return self.normalizer.inverse(z.float())

    @torch.jit.export
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Linear magnitude ``[batch, n_bins, columns * time_stride]`` of codes."""
        return self.decode_latent(self.embed(codes), 0)

    @torch.jit.export
    def reset_stream(self) -> None:
        """Start a new stream: every layer forgets its causal context."""
        self.encoder.reset_stream()
        self.decoder.reset_stream()

    @torch.jit.export
    def stream_encode_latent(self, mag: torch.Tensor) -> torch.Tensor:
        """Latent ``[batch, code_dim, n_rows, k]`` of the ``k * time_stride`` new frames ``mag``
        (linear ``[batch, n_bins, k * time_stride]``) of a stream."""
        return self.encoder.stream(self._features(mag)).float()

    @torch.jit.export
    def stream_encode(self, mag: torch.Tensor) -> torch.Tensor:
        """Codes ``[batch, n_rows, k]`` of the new frames ``mag`` of a stream."""
        return self.quantize(self.stream_encode_latent(mag))

    @torch.jit.export
    def stream_decode_latent(
        self, latent: torch.Tensor, low_row: int = 0, high_row: int = -1, first_column: int = 0
    ) -> torch.Tensor:
        """Linear magnitude ``[batch, n_bins, k * time_stride]`` of the latent of ``k`` new
        columns of a stream.

        Only the cells of rows ``low_row <= row < high_row`` (``high_row=-1``: to the top) in
        columns ``>= first_column`` are decoded; the rest is 0. The decoder's causal context
        always advances, so a stream that asks for few cells costs little and stays exact.
        """
        low = max(low_row, 0)
        high = self.n_rows if high_row < 0 else min(high_row, self.n_rows)
        k = latent.shape[3]
        out = latent.new_zeros(latent.shape[0], self.n_bins, k * self.time_stride)
        y = self.decoder.stream(latent.to(self.network_dtype), low, high, first_column)
        if y.numel() == 0:
            return out
        fs = self.freq_stride
        skip = (low - max(low - self.decoder.row_reach, 0)) * fs  # the reach below, decoded as context
        top = min(high * fs, self.n_bins)
        mag = self.normalizer.inverse(y[:, 0, skip : skip + top - low * fs].float())
        out[:, low * fs : top, first_column * self.time_stride :] = mag
        return out

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(mag))


def export_model(
    model: VQVAE,
    path: Union[str, os.PathLike],
    *,
    data_description: str = "",
    prior: Optional[Prior] = None,
    neural_prior: Optional[NeuralPrior] = None,
    metadata: Optional[dict[str, Any]] = None,
) -> Path:
    """Script ``model`` and write it atomically to ``path`` with its config in ``config.json``."""
    path = Path(path)
    exported = ExportedVQVAE(model, data_description=data_description, prior=prior, neural_prior=neural_prior)
    return save_module(exported, model.cfg, path, metadata=metadata)


def save_module(
    exported: "ExportedVQVAE", config: VQVAEConfig, path: Union[str, os.PathLike], *,
    metadata: Optional[dict[str, Any]] = None,
) -> Path:
    """Script an :class:`ExportedVQVAE` and write it atomically as a model file."""
    path = Path(path)
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript in favour of torch.export; the file format stays loadable
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(exported)
    extra = {
        "config.json": config.to_json(),
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

    def neural_prior(self) -> Optional[torch.jit.ScriptModule]:
        """The file's neural inpainting prior (scripted), or None (files before format 3 have none)."""
        if not bool(getattr(self.module, "has_neural_prior", False)):
            return None
        return self.module.neural_prior


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
        try:
            # torch.jit.load does not check the members' CRC-32: a flipped bit in the weights loads silently
            damaged = archive.testzip()
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as exc:
            raise ModelFileError(f"{path} is damaged: {exc}") from None
    if damaged is not None:
        raise ModelFileError(
            f"{path} is damaged: {damaged.split('/', 1)[-1]} fails its CRC-32 check (changed on disk or in transfer); "
            "copy or export the model file again"
        )
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
    version = FORMAT_VERSION if "format_version" in missing else int(module.format_version)
    if version not in READABLE_VERSIONS:
        raise ModelFileError(
            f"{path} has format_version={version}; this spectro-fx reads format_version "
            f"{', '.join(map(str, READABLE_VERSIONS[:-1]))} and {FORMAT_VERSION}; re-export it with this "
            "version's `spectro-fx-train export`"
        )
    wanted = REQUIRED_METHODS if version >= 2 else tuple(m for m in REQUIRED_METHODS if m not in STREAM_METHODS)
    missing += [f"{m}()" for m in wanted if not hasattr(module, m)]
    if missing:
        raise ModelFileError(f"{path} is not a spectro-fx model file: missing {', '.join(missing)}")
    if not extra["config.json"]:
        raise ModelFileError(f"{path} is not a spectro-fx model file: missing config.json")
    try:
        config = VQVAEConfig.from_dict(json.loads(extra["config.json"]))
        metadata = json.loads(extra["metadata.json"] or "{}")
    except (ValueError, TypeError, ParameterError) as exc:
        raise ModelFileError(f"{path} has an unreadable config.json: {exc}") from None
    if version == 1:
        module = _upgrade_v1(module, config)
    module.eval()
    module.reset_stream()
    return ModelFile(path=path, module=module, config=config, metadata=metadata)


def with_neural_prior(model: ModelFile, neural_prior: NeuralPrior, path: Union[str, os.PathLike], *,
                      description: str = "") -> Path:
    """Write ``model`` again to ``path`` with ``neural_prior`` in it: its weights, codebook, code
    usage, naive Bayes prior and config as they were (this version's code), its metadata with
    the format version and ``neural_prior`` (``description``) updated."""
    exported = rebuild_module(model.module, model.config)
    if (neural_prior.n_rows, neural_prior.codebook_size) != (exported.n_rows, exported.codebook_size):
        raise ParameterError(
            f"the neural prior predicts {neural_prior.n_rows} rows of {neural_prior.codebook_size} codes; "
            f"{model.path} has {exported.n_rows} rows of {exported.codebook_size}"
        )
    exported.neural_prior = neural_prior.eval()
    exported.has_neural_prior = True
    metadata = {k: v for k, v in model.metadata.items() if k != "format_version"}
    metadata.update({"has_neural_prior": True, "neural_prior": description})
    return save_module(exported, model.config, path, metadata=metadata)


def _upgrade_v1(module: torch.jit.ScriptModule, config: VQVAEConfig) -> torch.jit.ScriptModule:
    """A format-1 file (same weights and buffers, no streaming methods) rebuilt as this
    version's module; ``spectro-fx-train export`` or :func:`export_model` can save it anew."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(rebuild_module(module, config))


def rebuild_module(module: torch.jit.ScriptModule, config: VQVAEConfig, *, learned_prior: bool = True) -> ExportedVQVAE:
    """A model file's weights, codebook, code usage and priors in this version's module
    (unscripted): the file's config says how to build it, whatever code the file holds.
    ``learned_prior=False`` leaves out the learned naive Bayes tables (25 MB for the default
    model: a caller that runs only the network saves copying them)."""
    state = module.state_dict()
    net = VQVAE(config)
    for name in ("encoder", "decoder"):
        part = getattr(net, name)
        # the weights (a scripted module's state also lists its streams' non-persistent buffers)
        part.load_state_dict({key: state[f"{name}.{key}"] for key in part.state_dict()})
    net.quantizer.codebook.copy_(state["codebook"])
    prior = None
    if learned_prior and bool(module.has_prior):
        prior = Prior(
            offsets=state["prior_offsets"], class_log_prior=state["prior_class_log_prior"],
            feature_log_prob=state["prior_feature_log_prob"], alpha=float(module.prior_alpha),
        )
    neural_prior = None
    if bool(getattr(module, "has_neural_prior", False)):
        neural_prior = NeuralPrior.from_config(str(module.neural_prior.config_json))
        neural_prior.load_state_dict({key: state[f"neural_prior.{key}"] for key in neural_prior.state_dict()})
        neural_prior.eval()
    rebuilt = ExportedVQVAE(net, data_description=str(module.data_description), prior=prior, neural_prior=neural_prior)
    rebuilt.code_log_prior.copy_(state["code_log_prior"])
    return rebuilt
