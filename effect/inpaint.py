"""The `inpaint` effect: regenerate the region's codes with naive Bayes, column by column.

`spatial` is the paper's per-cell Gaussian NB on neighbour coordinates; `learned` samples the categorical NB prior stored in the model file.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import torch

from spectro_fx.models.export import Prior
from spectro_fx.models.naive_bayes import AXES, PriorTables, learned_inpaint, prior_tables, resmooth_prior, spatial_inpaint

from .effects import CodemapContext, Effect, Parameter

METHODS = ("spatial", "learned")
CONTEXTS = ("input", "output")


def model_prior(model: Any) -> Optional[Prior]:
    """The learned prior of a loaded model module (``ModelFile.module``), or None."""
    if not bool(getattr(model, "has_prior", False)):
        return None
    return Prior(
        offsets=model.prior_offsets,
        class_log_prior=model.prior_class_log_prior,
        feature_log_prob=model.prior_feature_log_prob,
        alpha=float(model.prior_alpha),
    )


def fallback_log_prior(model: Any) -> np.ndarray:
    """Log prior for cells with no known neighbour: the learned class prior when the model has
    one, else the codebook usage prior ``code_log_prior``. ``[K]`` float64."""
    table = model.prior_class_log_prior if bool(getattr(model, "has_prior", False)) else model.code_log_prior
    return table.detach().cpu().double().numpy()


class Inpaint(Effect):
    """Regenerate the codes inside the region with naive Bayes inpainting.

    The known neighbours are the earlier columns, the cells of the new column outside the
    region, and the region cells already regenerated (the causal order of
    :mod:`spectro_fx.models.naive_bayes`: oldest column first, then rows in interleaved passes,
    ``radius + 1`` of them when the neighbourhood spans frequency, low row first). Future
    columns do not exist yet, so in a stream the time neighbourhood is one-sided. Channels are regenerated one after the other
    with the same parameters; one uniform is drawn from ``ctx.rng`` per regenerated cell.

    That is ``context=output``, the paper's recursion: the earlier columns are the chain's
    output (``ctx.history``, regenerated codes included). It fills a gap from its surroundings
    but, on a region that stays open, copies its own first guesses forward and freezes or goes
    dark. ``context=input`` (default) redraws every region cell from the input's codes around
    it instead: earlier columns from ``ctx.input_history`` and the same column as it came in,
    its own code never read, all cells at once (``redraw=True`` of
    :mod:`spectro_fx.models.naive_bayes`). The band then follows what is played.

    ``method=learned`` on a model file without a prior warns once and uses ``spatial``.
    """

    name = "inpaint"
    description = "regenerate the region's codes with naive Bayes (the paper's spatial method or the learned prior)"
    parameters = (
        Parameter("method", 0, 1, "spatial", kind="choice", choices=METHODS,
                  help="spatial: Gaussian NB on neighbour coordinates (the paper); learned: the model file's prior"),
        Parameter("temperature", 0.0, 10.0, 1.0, unit="", smoothing_s=0.05,
                  help="0 takes the most probable code; 1 samples the posterior; higher is wilder"),
        Parameter("radius", 1, 8, 2, unit="cells", kind="int",
                  help="spatial: neighbours on each side (1 cell = 1 column in time or 1 row in frequency)"),
        Parameter("axis", 0, 2, "both", kind="choice", choices=AXES,
                  help="spatial: neighbours along time (same band), freq (same column) or both (square)"),
        Parameter("alpha", 0.0, 100.0, 0.0, unit="counts", scale="linear",
                  help="learned: Laplace smoothing of the prior's counts; 0 keeps the value it was fitted with"),
        Parameter("context", 0, 1, "input", kind="choice", choices=CONTEXTS,
                  help="neighbours each code is drawn from: input (the input's codes around it: the band follows "
                       "what is played) or output (the regenerated codes, the paper's recursion: an open band freezes)"),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        # (model, alpha, tables) and (model, log prior): converted once per model, not per column
        self._prior_cache: tuple[Any, float, Optional[PriorTables]] = (None, 0.0, None)
        self._fallback_cache: tuple[Any, Optional[np.ndarray]] = (None, None)
        self._warned = False
        self._warned_runaway = False

    def _prior(self, model: Any) -> Optional[PriorTables]:
        alpha = float(self.values["alpha"])
        cached_model, cached_alpha, tables = self._prior_cache
        if cached_model is not model or cached_alpha != alpha:
            prior = model_prior(model)
            if prior is not None and alpha > 0.0 and alpha != prior.alpha:
                prior = resmooth_prior(prior, alpha=alpha)
            tables = None if prior is None else prior_tables(prior)
            self._prior_cache = (model, alpha, tables)
        return tables

    def _fallback(self, model: Any) -> np.ndarray:
        cached_model, table = self._fallback_cache
        if cached_model is not model or table is None:
            table = fallback_log_prior(model)
            self._fallback_cache = (model, table)
        return table

    def process_codes(self, codes: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        if not bool(region.any()):
            return codes
        method = self.values["method"]
        prior = self._prior(ctx.model) if method == "learned" else None
        if method == "learned" and prior is None:
            if not self._warned:
                warnings.warn("inpaint: the model file has no learned prior; using method=spatial", stacklevel=2)
                self._warned = True
            method = "spatial"
        redraw = self.values["context"] == "input" and ctx.input_history is not None
        if method == "learned" and self.values["context"] == "output" and not self._warned_runaway:
            warnings.warn(
                "inpaint: method=learned with context=output feeds its own samples back into the prior; on a "
                "region left open it runs away to loud codes (+27 dB on the demo clip); context=input is safe",
                stacklevel=2,
            )
            self._warned_runaway = True
        radius = int(self.values["radius"])
        if method == "learned":
            reach = int(max(0, -int(prior.offsets[:, 0].min())))
        else:
            reach = radius if self.values["axis"] != "freq" else 0
        earlier = ctx.input_history if redraw else ctx.history
        history = earlier[..., earlier.shape[-1] - min(reach, earlier.shape[-1]) :]
        n_hist = history.shape[-1]
        full = torch.cat([history.to(codes.dtype), codes], dim=-1).cpu().numpy()
        mask = np.zeros(full.shape[1:], dtype=bool)
        mask[:, n_hist:] = region.cpu().numpy()
        temperature = float(self.values["temperature"])
        out = np.empty((codes.shape[0],) + codes.shape[1:], dtype=np.int64)
        for ch in range(full.shape[0]):
            if method == "learned":
                filled = learned_inpaint(full[ch], mask, prior, temperature=temperature, rng=ctx.rng, redraw=redraw)
            else:
                filled = spatial_inpaint(
                    full[ch], mask, radius=radius, axis=self.values["axis"], temperature=temperature,
                    rng=ctx.rng, fallback_log_prior=self._fallback(ctx.model), redraw=redraw,
                )
            out[ch] = filled[:, n_hist:]
        result = torch.from_numpy(out).to(codes.device)
        # cells outside the region are copied bit-exactly from the input
        return torch.where(region[None], result, codes)
