"""Built-in codemap effects besides inpainting: `none`, and the paper's `noise`, `dropout` (Fig. 7) and `cross` (Fig. 8).

`noise` replaces codes at random, `dropout` silences latent channels inside the region, `cross` (cross-synthesis) takes codes or latents from a second source.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..core import builtin
from ..core.effects import CodemapContext, Effect, Parameter


def _per_column(value: float, codes: torch.Tensor) -> torch.Tensor:
    """A parameter's value for each column of ``codes`` (the engine sets it column by column)."""
    return torch.full([codes.shape[-1]], float(value), dtype=torch.float64)


class Passthrough(Effect):
    name = "none"
    description = "plain VQ-VAE resynthesis inside the region"


class Noise(Effect):
    name = "noise"
    description = "replace each code in the region by a random code with probability `amount`"
    parameters = (
        Parameter("amount", 0.0, 1.0, 0.3, unit="probability", help="chance that a code is replaced"),
    )

    def process_codes(self, codes: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        amount = float(self.values["amount"])
        if amount <= 0.0 or not bool(region.any()):
            return codes
        return builtin.noise_codes(codes, region, _per_column(amount, codes), first_column=ctx.first_column,
                                   seed=ctx.seed, codebook_size=int(ctx.model.codebook_size))


class Dropout(Effect):
    """Keep only the first ``channels`` of the latent's ``code_dim`` channels inside the region
    and zero the others (the paper's Figure 7 keeps one). ``channels >= code_dim`` is a no-op."""

    name = "dropout"
    description = "keep only the first `channels` latent channels inside the region (paper Fig. 7)"
    parameters = (
        Parameter("channels", 0, 64, 1, unit="channels", kind="int",
                  help="latent channels kept inside the region (the model has code_dim of them)"),
    )

    def process_latent(self, latent: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        keep = int(self.values["channels"])
        if keep >= latent.shape[1] or not bool(region.any()):
            return latent
        return builtin.dropout_latent(latent, region, _per_column(keep, latent))


class Cross(Effect):
    """Cross-synthesis: a second source's codes inside the region (the paper's Figure 8).

    ``mode=codes``: each code inside the region is replaced by the second source's code at the
    same cell with probability ``amount``. ``mode=latent``: latents inside the region are
    interpolated, ``(1 - amount) * latent + amount * aux_latent`` (the embedding of ``aux_codes``).

    The engine provides the second source in ``CodemapContext.aux_codes`` (a looped file with
    ``--cross-with``, or the second input channel live); without one the effect warns once and
    passes the codes through. When channel counts differ, the source's first channel serves all.
    (Formerly ``mix``; that name is accepted with a warning until the next release.)
    """

    name = "cross"
    description = "cross-synthesis: take the region's codes from a second source with probability `amount`, or blend latents (paper Fig. 8)"
    needs_aux = True
    parameters = (
        Parameter("amount", 0.0, 1.0, 0.5, unit="probability", smoothing_s=0.05,
                  help="codes: chance that a code comes from the second source; latent: blend weight"),
        Parameter("mode", 0, 1, "codes", kind="choice", choices=("codes", "latent"),
                  help="codes: swap codes at random; latent: interpolate the latents"),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._warned = False

    def _source(self, mode: str, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor | None:
        """The second source's codes when this mode has something to do, else None (warned once
        when the source is missing)."""
        if self.values["mode"] != mode or float(self.values["amount"]) <= 0.0 or not bool(region.any()):
            return None
        if ctx.aux_codes is None:
            if not self._warned:
                warnings.warn("cross: no second source (aux codes) was given; passing the codes through", stacklevel=3)
                self._warned = True
            return None
        return ctx.aux_codes

    @staticmethod
    def _like(aux: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # channel counts differ: the source's first channel serves all
        return (aux if aux.shape[0] == target.shape[0] else aux[:1]).expand_as(target)

    def process_codes(self, codes: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        aux = self._source("codes", region, ctx)
        if aux is None:
            return codes
        return builtin.cross_codes(codes, self._like(aux, codes), region, _per_column(self.values["amount"], codes),
                                   first_column=ctx.first_column, seed=ctx.seed)

    def process_latent(self, latent: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        aux = self._source("latent", region, ctx)
        if aux is None:
            return latent
        aux = self._like(ctx.model.embed(aux).to(latent.dtype), latent)
        return builtin.cross_latent(latent, aux, region, _per_column(self.values["amount"], latent))
