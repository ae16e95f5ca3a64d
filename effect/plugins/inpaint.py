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

from ..core.effects import CodemapContext, Effect, Parameter

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
    :mod:`spectro_fx.models.naive_bayes`). The band then follows what is played. Since no
    column reads another's output then, the engine hands long blocks over whole
    (:meth:`process_columns`: one naive Bayes call for all their columns and channels, the
    same codes and random draws as column by column; offline rendering gains about 1.4x).

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

    def _method(self, ctx: CodemapContext) -> tuple[str, Optional[PriorTables]]:
        """The method in force and its prior; warns (once) of a missing prior or a runaway."""
        method = self.values["method"]
        prior = self._prior(ctx.model) if method == "learned" else None
        if method == "learned" and prior is None:
            if not self._warned:
                warnings.warn("inpaint: the model file has no learned prior; using method=spatial", stacklevel=3)
                self._warned = True
            method = "spatial"
        if method == "learned" and self.values["context"] == "output" and not self._warned_runaway:
            warnings.warn(
                "inpaint: method=learned with context=output feeds its own samples back into the prior; on a "
                "region left open it runs away to loud codes (+27 dB on the demo clip); context=input is safe",
                stacklevel=3,
            )
            self._warned_runaway = True
        return method, prior

    def _reach(self, method: str, prior: Optional[PriorTables]) -> tuple[int, int]:
        """Earlier columns and rows either side that a cell reads."""
        if method == "learned":
            return int(max(0, -int(prior.offsets[:, 0].min()))), int(np.abs(prior.offsets[:, 1]).max())
        radius = int(self.values["radius"])
        axis = self.values["axis"]
        return (radius if axis != "freq" else 0), (radius if axis != "time" else 0)

    def _with_history(self, codes: torch.Tensor, region: torch.Tensor, earlier: torch.Tensor, reach: int):
        """``[channels, n_rows, n_hist + n_new]`` codes (the last ``reach`` earlier columns first)
        as numpy, the mask of the new region cells, and ``n_hist``."""
        history = earlier[..., earlier.shape[-1] - min(reach, earlier.shape[-1]) :]
        n_hist = history.shape[-1]
        full = torch.cat([history.to(codes.dtype), codes], dim=-1).cpu().numpy()
        mask = np.zeros(full.shape[1:], dtype=bool)
        mask[:, n_hist:] = region.cpu().numpy()
        return full, mask, n_hist

    def _fill(self, codemap: np.ndarray, mask: np.ndarray, method: str, prior, ctx, *, redraw: bool) -> np.ndarray:
        temperature = float(self.values["temperature"])
        if method == "learned":
            return learned_inpaint(codemap, mask, prior, temperature=temperature, rng=ctx.rng, redraw=redraw)
        return spatial_inpaint(
            codemap, mask, radius=int(self.values["radius"]), axis=self.values["axis"], temperature=temperature,
            rng=ctx.rng, fallback_log_prior=self._fallback(ctx.model), redraw=redraw, later_columns=not redraw,
        )

    def _redraws(self, ctx: CodemapContext) -> bool:
        return self.values["context"] == "input" and ctx.input_history is not None

    def process_codes(self, codes: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        if not bool(region.any()):
            return codes
        method, prior = self._method(ctx)
        if self._redraws(ctx):
            return self._redraw(codes, region, ctx, method, prior)
        full, mask, n_hist = self._with_history(codes, region, ctx.history, self._reach(method, prior)[0])
        out = np.empty((codes.shape[0],) + codes.shape[1:], dtype=np.int64)
        for ch in range(full.shape[0]):
            out[ch] = self._fill(full[ch], mask, method, prior, ctx, redraw=False)[:, n_hist:]
        result = torch.from_numpy(out).to(codes.device)
        # cells outside the region are copied bit-exactly from the input
        return torch.where(region[None], result, codes)

    def process_columns(self, codes: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> Optional[torch.Tensor]:
        # context=input reads only the input's codes, so columns need not wait for each other;
        # the paper's recursion (context=output) reads its own output and cannot
        method, prior = self._method(ctx)
        if not self._redraws(ctx) or (method == "learned" and bool((prior.offsets[:, 0] > 0).any())):
            return None
        if not bool(region.any()):
            return codes
        return self._redraw(codes, region, ctx, method, prior)

    def _redraw(self, codes: torch.Tensor, region: torch.Tensor, ctx: CodemapContext, method: str, prior) -> torch.Tensor:
        """context=input: every region cell redrawn from the input's codes around it, all columns
        and channels in one call. Channels are stacked along the rows with ``row reach`` rows of
        unknown codes between them, so no cell reads another channel, and the redraw order
        (column, then row) is that of one column at a time, channel by channel: the same
        random draws whatever the blocking."""
        column_reach, row_reach = self._reach(method, prior)
        full, mask, n_hist = self._with_history(codes, region, ctx.input_history, column_reach)
        channels, n_rows, width = full.shape
        pitch = n_rows + row_reach
        stacked = np.full((channels * pitch - row_reach, width), -1, dtype=np.int64)
        stacked_mask = np.zeros(stacked.shape, dtype=bool)
        for ch in range(channels):
            stacked[ch * pitch : ch * pitch + n_rows] = full[ch]
            stacked_mask[ch * pitch : ch * pitch + n_rows] = mask
        filled = self._fill(stacked, stacked_mask, method, prior, ctx, redraw=True)
        out = np.stack([filled[ch * pitch : ch * pitch + n_rows, n_hist:] for ch in range(channels)])
        result = torch.from_numpy(out).to(codes.device)
        return torch.where(region[None], result, codes)
