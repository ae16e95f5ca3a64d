"""The effect's column step, defined once: samples in, change samples out, built-in effects fused.

One scriptable call per block (:meth:`ColumnStep.process`): analysis, encoder, the built-in codemap
effects with their parameters from one table, decoder, synthesis. The engine and the exported module run it.
"""

import functools
from typing import Any, Dict, Final, List, Optional, Tuple

import torch
from torch import nn

from spectro_fx.models.errors import ParameterError
from spectro_fx.models.export import ModelFile, Prior

from . import builtin
from .effects import Parameter, available_effects
from .params import REGION_PARAMETERS
from .stream import Ramps, StreamCore

BUILTIN_EFFECTS = ("none", "noise", "inpaint", "dropout", "cross")
"""Effects the step runs fused, by index (``ColumnStep.chain_codes`` and ``chain_latents`` hold these)."""
NOISE, INPAINT, DROPOUT, CROSS = 1, 2, 3, 4

STEP_FIXED = ("inpaint.alpha", "inpaint.context")
"""Built-in parameters that are not per-column values of the step: ``alpha`` re-smooths the prior
tables (:func:`prior_buffers`), ``context=input`` is what the step runs (``output`` runs the plugin)."""


STEP_PARAMETERS = (
    "noise.amount", "inpaint.method", "inpaint.temperature", "inpaint.radius", "inpaint.axis",
    "dropout.channels", "cross.amount", "cross.mode",
)
"""The built-in effects' parameters the step holds, in its order (after the region's); the nn~
accessors and Neutone knobs index them so."""
N_REGION = len(REGION_PARAMETERS)
INDEX = {**{p.name: i for i, p in enumerate(REGION_PARAMETERS)}, **{n: N_REGION + i for i, n in enumerate(STEP_PARAMETERS)}}
"""Index of each parameter of the step by engine name (``low_hz`` 0 ... ``cross.mode``)."""
# the effects' values, as indices into the step's effect ramps
NOISE_AMOUNT = INDEX["noise.amount"] - N_REGION
INPAINT_METHOD = INDEX["inpaint.method"] - N_REGION
INPAINT_TEMPERATURE = INDEX["inpaint.temperature"] - N_REGION
INPAINT_RADIUS = INDEX["inpaint.radius"] - N_REGION
INPAINT_AXIS = INDEX["inpaint.axis"] - N_REGION
DROPOUT_CHANNELS = INDEX["dropout.channels"] - N_REGION
CROSS_AMOUNT = INDEX["cross.amount"] - N_REGION
CROSS_MODE = INDEX["cross.mode"] - N_REGION
LEARNED, NEURAL = 1, 2
"""``inpaint.method`` indices (its choices: spatial, learned, neural)."""


def builtin_effects() -> dict[str, type]:
    """The built-in effect classes by name, from the effect registry (the core imports no
    plugin; built-ins register as third-party effects do)."""
    registry = available_effects()
    found = {}
    for name in BUILTIN_EFFECTS:
        cls = registry.get(name)
        if cls is None or not cls.__module__.startswith("spectro_fx.effect.plugins."):
            raise ParameterError(f"the built-in effect {name!r} is not registered (entry point group spectro_fx.effects); "
                                 "reinstall spectro-fx")
        found[name] = cls
    return found


@functools.lru_cache(maxsize=1)
def parameter_table() -> tuple[tuple[str, str, Parameter], ...]:
    """``(attribute name, engine name, declaration)`` of every parameter of the step: the region's
    (``low_hz`` ...), then the built-in effects' (``noise_amount`` / ``noise.amount`` ...), as the
    effects declare them. The engine's ``set``, MIDI maps, the page, the nn~ accessors and the
    Neutone knobs all name parameters from it."""
    effects = builtin_effects()
    declared = {f"{name}.{p.name}": p for name, cls in effects.items() for p in cls.parameters}
    missing = sorted(set(declared) - set(STEP_PARAMETERS) - set(STEP_FIXED))
    if missing:
        raise ParameterError(f"built-in parameters {missing} have no place in the column step's STEP_PARAMETERS")
    table = [(p.name, p.name, p) for p in REGION_PARAMETERS]
    table += [(name.replace(".", "_"), name, declared[name]) for name in STEP_PARAMETERS]
    return tuple(table)


def is_builtin(effect: Any) -> bool:
    """Whether ``effect`` is one of the built-in effects the step runs fused."""
    cls = builtin_effects().get(getattr(effect, "name", ""))
    return cls is not None and type(effect) is cls


def step_value(parameter: Parameter, value: Any) -> float:
    """A checked value as the step holds it: choices as their index, booleans as 0/1."""
    if parameter.kind == "choice":
        return float(parameter.choices.index(value))
    return float(value)


def prior_buffers(prior: Optional[Prior], code_log_prior: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The step's inpainting tables of a model file's learned ``prior`` (None: none): its
    offsets, class log prior, per-value log probabilities ``[P, K + 1, K]`` (float32, as in the
    file: the default's are 25 MB; gathered rows are summed in float64), and the fallback log
    prior of cells without a known neighbour (the learned class prior, else the codebook usage)."""
    k = code_log_prior.shape[0]
    if prior is None:
        return {
            "prior_offsets": torch.zeros(0, 2, dtype=torch.long),
            "prior_class_log_prior": torch.zeros(k, dtype=torch.float64),
            "prior_value_log_prob": torch.zeros(0, k + 1, k),
            "fallback_log_prior": code_log_prior.double().clone(),
        }
    return {
        "prior_offsets": prior.offsets.to(torch.long).reshape(-1, 2).clone(),
        "prior_class_log_prior": prior.class_log_prior.double().clone(),
        "prior_value_log_prob": prior.feature_log_prob.float().permute(0, 2, 1).contiguous(),
        "fallback_log_prior": prior.class_log_prior.double().clone(),
    }


def smooth_prior_tables(step: Any, model: ModelFile, alpha: float) -> None:
    """Load ``step``'s (a :class:`ColumnStep`, scripted or not) inpainting tables with the model
    file's learned prior re-smoothed to ``alpha`` (0: as fitted); nothing without a prior."""
    from spectro_fx.models.naive_bayes import resmooth_prior

    prior = model.prior()
    if prior is None:
        return
    if alpha > 0.0 and alpha != prior.alpha:
        prior = resmooth_prior(prior, alpha=alpha)
    for name, table in prior_buffers(prior, model.module.code_log_prior).items():
        setattr(step, name, table)


class ColumnStep(nn.Module):
    """The signal path of ``streams`` audio streams at the model's rate with the built-in
    effects fused: :meth:`process` takes the next samples (any count) and returns the change
    samples of the columns they complete, aligned with the input (as :class:`StreamCore`).

    The chain is set with :meth:`set_chain` (indices of :data:`BUILTIN_EFFECTS`: code effects
    in order, then latent ones), its parameters with :meth:`set_parameter` (indices of
    :func:`parameter_table`, smoothed per hop as declared). Random draws (noise, sampled
    inpainting, cross) are keyed by (seed, stream, row, absolute column, purpose), so any
    blocking gives the same output. A caller that runs Python effects splits the step: the
    core's ``analyse``, its chain on ``history`` / ``input_history``, :meth:`push_history`,
    the core's ``synthesise``.

    Parameters
    ----------
    model : ModelFile
    streams, aux_streams : int
        Audio streams, and second sources (for ``cross``).
    precision : {"float32", "bfloat16"}
    history_columns : int > 0
        Earlier columns kept in ``history`` (the chain's output) and ``input_history`` (the
        encoder's codes): at least the inpainting's reach.
    """

    chain_codes: List[int]
    chain_latents: List[int]
    chain_values: List[int]
    # the step's indices, constants of the scripted code (TorchScript reads no global ints)
    noise: Final[int]
    inpaint: Final[int]
    dropout: Final[int]
    cross: Final[int]
    noise_amount: Final[int]
    inpaint_method: Final[int]
    inpaint_temperature: Final[int]
    inpaint_radius: Final[int]
    inpaint_axis: Final[int]
    dropout_channels: Final[int]
    cross_amount: Final[int]
    cross_mode: Final[int]
    learned: Final[int]
    neural: Final[int]
    n_region: Final[int]

    def __init__(
        self, model: ModelFile, *, streams: int, aux_streams: int = 0, precision: str = "float32",
        history_columns: int = 64,
    ):
        super().__init__()
        self.noise = NOISE
        self.inpaint = INPAINT
        self.dropout = DROPOUT
        self.cross = CROSS
        self.noise_amount = NOISE_AMOUNT
        self.inpaint_method = INPAINT_METHOD
        self.inpaint_temperature = INPAINT_TEMPERATURE
        self.inpaint_radius = INPAINT_RADIUS
        self.inpaint_axis = INPAINT_AXIS
        self.dropout_channels = DROPOUT_CHANNELS
        self.cross_amount = CROSS_AMOUNT
        self.cross_mode = CROSS_MODE
        self.learned = LEARNED
        self.neural = NEURAL
        self.n_region = N_REGION
        self.core = StreamCore(model, streams=streams, aux_streams=aux_streams, precision=precision)
        core = self.core
        module = core.model
        self.n_rows = core.n_rows
        self.codebook_size = int(module.codebook_size)
        self.seed = 0
        self.chain_codes = []
        self.chain_latents = []
        self.chain_values = []  # the effect ramps the chain reads, per column
        # 0: a second source per stream, or the first for all (the engine's channels); g > 0: one
        # per group of g streams (the exported module's batch rows)
        self.aux_group = 0
        declared = [p for _, _, p in parameter_table()[N_REGION:]]
        self.effect_ramps = Ramps(declared, hop_s=core.hop_s, values=[step_value(p, p.default) for p in declared])
        prior = model.prior()
        self.has_prior = prior is not None
        self.has_neural_prior = bool(module.has_neural_prior)
        for name, value in prior_buffers(prior, module.code_log_prior).items():
            self.register_buffer(name, value)
        if bool(module.has_prior):
            # the tables above serve; the core's copy of the file drops its own (25 MB for the default)
            module.prior_feature_log_prob = torch.zeros(0, self.codebook_size, self.codebook_size + 1)
        # the spatial method's neighbour offsets for (radius, axis), made when they change
        self.spatial_key = [-1, -1]
        self.spatial_reach = 0
        self.register_buffer("spatial_offsets", torch.zeros(0, 2, dtype=torch.long))
        self.prior_reach = int(-prior.offsets[:, 0].min()) if prior is not None and len(prior.offsets) else 0
        self.history_columns = max(int(history_columns), 1)
        self.last_columns = 0
        self.register_buffer("history", torch.zeros(0, self.n_rows, 0, dtype=torch.long))
        self.register_buffer("input_history", torch.zeros(0, self.n_rows, 0, dtype=torch.long))
        self.start(streams, aux_streams)

    @torch.jit.export
    def start(self, streams: int, aux_streams: int) -> None:
        """Clear the stream state (parameters land on their targets). The stream starts after
        silence (the STFT is primed with zeros): the histories hold the codes of silence."""
        self.core.start(streams, aux_streams)
        self.effect_ramps.snap()
        self.history = self.core.silence_column.expand(streams, self.n_rows, self.history_columns).clone()
        self.input_history = self.history.clone()
        self.last_columns = 0

    @torch.jit.export
    def set_chain(self, codes: List[int], latents: List[int]) -> None:
        """The fused chain: code effects, then latent effects, each in order (:data:`BUILTIN_EFFECTS` indices)."""
        self.chain_codes = codes
        self.chain_latents = latents
        per_column = {self.noise: self.noise_amount, self.inpaint: self.inpaint_temperature,
                      self.dropout: self.dropout_channels, self.cross: self.cross_amount}
        used: List[int] = []
        for effect in codes + latents:
            if effect in per_column and per_column[effect] not in used:
                used.append(per_column[effect])
        self.chain_values = used

    @torch.jit.export
    def set_seed(self, seed: int) -> None:
        self.seed = seed

    @torch.jit.export
    def set_parameter(self, index: int, value: float, immediate: bool) -> int:
        """Parameter ``index`` of :func:`parameter_table` ramps to ``value`` (clamped; jumps with
        ``immediate`` or before the first frame); 1 (nothing set) for NaN."""
        immediate = immediate or self.core.analysis.frames_done == 0
        if index < self.n_region:
            return self.core.region.set_value(index, value, immediate)
        return self.effect_ramps.set_value(index - self.n_region, value, immediate)

    @torch.jit.export
    def target(self, index: int) -> float:
        """The value parameter ``index`` is set to (where its ramp goes)."""
        if index < self.n_region:
            return self.core.region.target[index]
        return self.effect_ramps.target[index - self.n_region]

    @torch.jit.export
    def effect_values(self, n_new: int) -> List[torch.Tensor]:
        """The effects' parameters for the next ``n_new`` columns, float64 ``[n_new]`` each (in
        :func:`parameter_table` order after the region's): a column takes its last hop's value."""
        ts = self.core.time_stride
        return [self.effect_ramps.advance(i, n_new * ts)[ts - 1 :: ts] for i in range(len(self.effect_ramps.value))]

    def _column_values(self, index: int, n_new: int) -> torch.Tensor:
        """Effect parameter ``index``'s value for each of the next ``n_new`` columns (advancing
        its ramp); only the parameters of the chain's effects are advanced."""
        # (the ramp's own settled shortcut: reading its lists from here with a variable index
        # trips an internal assert of TorchScript's executor, torch 2.13)
        ts = self.core.time_stride
        return self.effect_ramps.advance(index, n_new * ts)[ts - 1 :: ts]

    @torch.jit.export
    def push_history(self, outputs: torch.Tensor, inputs: torch.Tensor) -> None:
        """Columns ``[streams, n_rows, k]`` the chain output, and the encoder's codes of them."""
        keep = self.history_columns
        self.history = torch.cat([self.history, outputs], dim=2)[:, :, -keep:]
        self.input_history = torch.cat([self.input_history, inputs], dim=2)[:, :, -keep:]

    @torch.jit.export
    def process(self, x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """The next samples ``x`` [streams, n] and ``aux`` [aux_streams, n] (float64) -> the
        change samples ``[streams, m]`` float64 of the columns they complete (``last_columns``
        of them), through the fused chain."""
        inputs, cells, aux_codes = self.core.analyse(x, aux)
        n_new = inputs.shape[2]
        self.last_columns = n_new
        if n_new == 0:
            return torch.zeros(x.shape[0], 0, dtype=torch.float64)
        return self.core.synthesise(self.chain(inputs, cells, aux_codes))

    @torch.jit.export
    def chain_begin(
        self, inputs: torch.Tensor, cells: torch.Tensor, aux_codes: torch.Tensor,
    ) -> Tuple[bool, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`chain`, or, for a chain of ``inpaint`` alone drawing from the neural prior with
        cells in the region, its first half, so that a caller runs the prior's network elsewhere:
        ``(True, context, columns, known, unknown cells [N, 2], temperature)`` (the prior's
        inputs as :func:`builtin.neural_batch` makes them, the column temperatures), then
        :meth:`chain_finish` with the logits of those cells. Otherwise ``(False, latents, ...)``."""
        region = cells.t()
        if self.inpaint_alone()[0] == self.neural and bool(region.any()):
            n_new = inputs.shape[2]
            self.last_columns = n_new
            temperature = self._column_values(self.inpaint_temperature, n_new)  # the chain's one per-column value
            prior = self.core.model.neural_prior
            context, columns, unknown = builtin.neural_batch(inputs, inputs, region, self.input_history, prior.context_columns)
            return True, context, columns, unknown.logical_not(), torch.nonzero(unknown), temperature
        empty = torch.zeros(0)
        return False, self.chain(inputs, cells, aux_codes), empty, empty, empty, empty

    @torch.jit.export
    def inpaint_alone(self) -> Tuple[int, int, int]:
        """For a chain of ``inpaint`` alone, which a caller may run elsewhere (with
        :meth:`inpaint_temperatures` and :meth:`push_history`; its draws are
        :func:`builtin.inpaint_draws`): ``(method, radius, axis)``, the method as :meth:`_inpaint`
        draws (0 spatial, :data:`LEARNED`, :data:`NEURAL`; a method whose prior the file lacks
        is spatial) and the spatial method's neighbourhood. Any other chain: ``(-1, 0, 0)``.
        :meth:`chain_begin` splits the neural one."""
        if self.chain_codes != [self.inpaint] or len(self.chain_latents) != 0:
            return -1, 0, 0
        method = int(self.effect_ramps.value[self.inpaint_method])
        if method == self.neural and not self.has_neural_prior or method == self.learned and not self.has_prior:
            method = 0
        return method, int(self.effect_ramps.value[self.inpaint_radius]), int(self.effect_ramps.value[self.inpaint_axis])

    @torch.jit.export
    def inpaint_temperatures(self, n_new: int) -> Tuple[torch.Tensor, bool]:
        """For :meth:`neural_chain`'s chain run elsewhere: the inpainting temperature of each of
        the next ``n_new`` columns ``[n_new]`` (its ramp advances, as :meth:`chain` advances it),
        and whether the ramp has settled (then every later column has the last value, and the
        ramp stays as it is, until a parameter is set)."""
        temperature = self._column_values(self.inpaint_temperature, n_new)
        return temperature, self.effect_ramps.settled(self.inpaint_temperature)

    @torch.jit.export
    def chain_finish(
        self, inputs: torch.Tensor, logits: torch.Tensor, cells: torch.Tensor, columns: torch.Tensor, temperature: torch.Tensor,
    ) -> torch.Tensor:
        """The rest of :meth:`chain_begin`'s chain from the prior's ``logits`` [N, K] of its
        ``cells``: the codes drawn (as :meth:`chain` draws them), the histories, the latents."""
        codes = builtin.neural_pick(logits, cells, columns, temperature, streams=inputs.shape[0],
                                    first_column=self.core.first_column, seed=self.seed)
        self.push_history(codes, inputs)
        return self.core.embed(codes)

    @torch.jit.export
    def chain(self, inputs: torch.Tensor, cells: torch.Tensor, aux_codes: torch.Tensor) -> torch.Tensor:
        """The fused chain on the codes ``inputs`` [streams, n_rows, k] of ``k > 0`` columns the
        core's analysis completed (with its ``cells`` and ``aux_codes``) -> their latents
        ``[streams, D, n_rows, k]``; the histories advance. :meth:`process` between the core's
        analysis and synthesis (a caller that runs the network elsewhere calls it so)."""
        n_new = inputs.shape[2]
        self.last_columns = n_new
        # the chain's parameters walk their ramps whether or not the region holds a cell
        values: Dict[int, torch.Tensor] = {}
        for index in self.chain_values:
            values[index] = self._column_values(index, n_new)
        region = cells.t()  # [n_rows, n_new]
        codes = inputs
        if bool(region.any()):
            if aux_codes.shape[2] > 0:
                aux_codes = self._aux_for_streams(aux_codes, inputs.shape[0])
            codes = self._codes_effects(inputs, region, aux_codes, values)
            self.push_history(codes, inputs)
            latent = self._latent_effects(self.core.embed(codes), region, aux_codes, values)
        else:  # every effect is a no-op outside the region
            self.push_history(codes, inputs)
            latent = self.core.embed(codes)
        return latent

    def _aux_for_streams(self, aux_codes: torch.Tensor, streams: int) -> torch.Tensor:
        if self.aux_group > 0:
            return aux_codes.repeat_interleave(self.aux_group, dim=0)[:streams]
        if aux_codes.shape[0] == streams:
            return aux_codes
        return aux_codes[:1].expand(streams, -1, -1)

    def _codes_effects(self, inputs: torch.Tensor, region: torch.Tensor, aux_codes: torch.Tensor, values: Dict[int, torch.Tensor]) -> torch.Tensor:
        codes = inputs
        first = self.core.first_column
        changed = False  # whether an effect before inpainting may have changed the codes
        for effect in self.chain_codes:
            if effect == self.noise:
                codes = builtin.noise_codes(codes, region, values[self.noise_amount], first_column=first, seed=self.seed,
                                            codebook_size=self.codebook_size)
                changed = True
            elif effect == self.inpaint:
                codes = self._inpaint(inputs, codes, region, values[self.inpaint_temperature], changed)
                changed = True
            elif effect == self.cross and aux_codes.shape[2] > 0 and int(self.effect_ramps.value[self.cross_mode]) == 0:
                codes = builtin.cross_codes(codes, aux_codes, region, values[self.cross_amount],
                                            first_column=first, seed=self.seed)
                changed = True
        return codes

    def _latent_effects(self, latent: torch.Tensor, region: torch.Tensor, aux_codes: torch.Tensor, values: Dict[int, torch.Tensor]) -> torch.Tensor:
        for effect in self.chain_latents:
            if effect == self.dropout:
                latent = builtin.dropout_latent(latent, region, values[self.dropout_channels])
            elif effect == self.cross and aux_codes.shape[2] > 0 and int(self.effect_ramps.value[self.cross_mode]) == 1:
                latent = builtin.cross_latent(latent, self.core.embed(aux_codes), region, values[self.cross_amount])
        return latent

    def _inpaint(self, inputs: torch.Tensor, codes: torch.Tensor, region: torch.Tensor, temperature: torch.Tensor, changed: bool) -> torch.Tensor:
        """``context=input``: the region's cells redrawn from the input's codes around them."""
        method = int(self.effect_ramps.value[self.inpaint_method])
        if method == self.neural and self.has_neural_prior:
            prior = self.core.model.neural_prior
            context, columns, unknown = builtin.neural_batch(inputs, codes, region, self.input_history, prior.context_columns)
            # the prior's head on the unknown cells alone (its forward scatters them into a full map)
            h, earlier = prior.features(context, columns, unknown.logical_not())
            cells = torch.nonzero(unknown)
            logits = prior.cell_logits(h[cells[:, 0], cells[:, 1]], earlier[cells[:, 0], cells[:, 1]])
            return builtin.neural_pick(logits, cells, columns, temperature, streams=codes.shape[0],
                                       first_column=self.core.first_column, seed=self.seed)
        learned = method == self.learned and self.has_prior  # the others without their prior: spatial
        if learned:
            offsets = self.prior_offsets
            reach = self.prior_reach
        else:
            radius, axis = int(self.effect_ramps.value[self.inpaint_radius]), int(self.effect_ramps.value[self.inpaint_axis])
            if self.spatial_key[0] != radius or self.spatial_key[1] != axis:
                self.spatial_offsets = builtin.spatial_offsets(radius, axis)
                self.spatial_key = [radius, axis]
                self.spatial_reach = radius if axis != 1 else 0
            offsets = self.spatial_offsets
            reach = self.spatial_reach
        history = self.input_history[:, :, self.input_history.shape[2] - min(reach, self.input_history.shape[2]) :]
        return builtin.inpaint_redraw(
            inputs, codes, region, history, offsets, temperature, learned=learned,
            first_column=self.core.first_column, seed=self.seed, class_log_prior=self.prior_class_log_prior,
            value_log_prob=self.prior_value_log_prob, fallback_log_prior=self.fallback_log_prior, changed=changed,
        )
