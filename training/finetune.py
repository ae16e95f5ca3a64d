"""Fine-tuning: a training run that starts from a model file (`spectro-fx-train fit --init`)
instead of a random initialisation; the codebook may grow on the way."""

from __future__ import annotations

import os

import torch

from spectro_fx.models.errors import ParameterError
from spectro_fx.models.vqvae import VQVAE


# keys of [model] that only steer training: a model file may be fine-tuned with other values
TRAINING_ONLY_KEYS = ("codebook_size", "ema_decay", "commitment_weight", "restart_threshold")


@torch.no_grad()
def init_from_model_file(model: VQVAE, path: str | os.PathLike, *, cells_per_batch: int) -> None:
    """Start ``model`` from the weights and codebook of the model file ``path`` (fine-tuning).

    The run's ``[model]`` must describe the file's network: every key but those in
    ``TRAINING_ONLY_KEYS`` equal. ``codebook_size`` may be larger than the file's: each extra code
    splits one of the most used ones (a copy nudged by 1 % of the codebook's spread), so the
    EMA updates pull the pair apart on the data. The EMA state is rebuilt from the file's code
    usage as if ``cells_per_batch`` cells had been assigned per step.
    """
    from spectro_fx.models.export import load_model

    source = load_model(path)
    have, want = source.config.to_dict(), model.cfg.to_dict()
    differ = [k for k in want if k not in TRAINING_ONLY_KEYS and have.get(k) != want[k]]
    if differ:
        detail = "; ".join(f"model.{k}: file {have.get(k)!r}, config {want[k]!r}" for k in differ)
        raise ParameterError(
            f"--init {str(path)!r}: the config's network differs from the model file's ({detail}); "
            "pass the --config it was trained with; only " + ", ".join(f"model.{k}" for k in TRAINING_ONLY_KEYS)
            + " may differ"
        )
    module = source.module
    for target, scripted in ((model.encoder, module.encoder), (model.decoder, module.decoder)):
        # a scripted module's state_dict also lists the non-persistent stream buffers
        wanted = target.state_dict().keys()
        target.load_state_dict({k: v for k, v in scripted.state_dict().items() if k in wanted})
    codebook = module.codebook.detach().float()
    usage = torch.exp(module.code_log_prior.detach().float())
    k_file, k_run = codebook.shape[0], model.cfg.codebook_size
    if k_run < k_file:
        raise ParameterError(
            f"--init {str(path)!r}: model.codebook_size={k_run} is smaller than the file's {k_file}; "
            f"fine-tuning can keep or grow the codebook, not shrink it"
        )
    counts = usage / usage.sum() * cells_per_batch
    extra = k_run - k_file
    if extra:
        split = torch.argsort(counts, descending=True)[torch.arange(extra) % k_file]
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(extra, codebook.shape[1], generator=generator) * 0.01 * codebook.std()
        codebook = torch.cat([codebook, codebook[split] + noise])
        shares = torch.bincount(split, minlength=k_file).float() + 1.0
        counts = torch.cat([counts / shares, (counts / shares)[split]])
    q = model.quantizer
    q.codebook.copy_(codebook)
    q.cluster_size.copy_(counts)
    q.embed_avg.copy_(codebook * counts[:, None])
    q.initted.fill_(True)
