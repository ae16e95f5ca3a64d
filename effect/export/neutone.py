"""The effect as a Neutone FX model (`.nm`): a neutone-sdk wrapper around the scripted effect.

Imported only by `spectro-fx export --format neutone`, so nothing else in spectro_fx needs neutone-sdk.
"""

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List

import torch
from neutone_sdk import ContinuousNeutoneParameter, NeutoneParameter, WaveformToWaveformBase
from neutone_sdk import benchmark as _sdk_benchmark  # noqa: F401  imported here: its import sets its log level
from neutone_sdk.utils import save_neutone_model
from torch import Tensor

from spectro_fx.models.atomic import atomic_path

from .neutone_knobs import KNOBS, RANGES, knob_values


class NeutoneEffect(WaveformToWaveformBase):
    """spectro-fx for Neutone FX: the knobs drive the band, the gate and the wet amount of a
    :class:`~spectro_fx.effect.export.scripted.ScriptedEffect`; everything else is fixed at export.

    Any buffer size (the scripted effect streams any block length); the model's sample rate
    (the SDK resamples other rates); mono or stereo as the effect was built; the declared
    delay is the effect's latency.

    Parameters
    ----------
    effect : ScriptedEffect
        With 1 (mono) or 2 (stereo) channels.
    knobs : list of 4 float
        Default knob positions (0..1), from the export's settings.
    name, description, long_description, technical : str
        Metadata shown by the plugin and the Neutone website (at most 30, 150, 500 and 500 characters).
    version : str
        The spectro-fx version that exported it.
    """

    # no class-level annotations here: TorchScript would then miss the SDK base class's ones
    # (remapped_params ...), which it reads through this class's __annotations__

    def __init__(self, effect, *, knobs: List[float], name: str, description: str, long_description: str,
                 technical: str, version: str):
        # read by get_neutone_parameters and the metadata getters during the SDK's __init__
        self.knob_defaults = [min(max(float(v), 0.0), 1.0) for v in knobs]
        self.text = {"name": name, "description": description, "long": long_description,
                     "technical": technical, "version": version}
        self.mono = int(effect.channels) == 1
        self.sr = int(effect.sr)
        self.latency_samples = int(effect.latency_samples)
        super().__init__(effect)
        self.knob_names = [name for name, _ in KNOBS]
        self.knob_ranges = list(RANGES)

    def get_model_name(self) -> str:
        return self.text["name"]

    def get_model_authors(self) -> List[str]:
        return ["spectro-fx"]

    def get_model_short_description(self) -> str:
        return self.text["description"]

    def get_model_long_description(self) -> str:
        return self.text["long"]

    def get_technical_description(self) -> str:
        return self.text["technical"]

    def get_tags(self) -> List[str]:
        return ["spectral", "inpainting", "vq-vae", "resynthesis"]

    def get_model_version(self) -> str:
        return self.text["version"]

    def is_experimental(self) -> bool:
        return True

    def get_neutone_parameters(self) -> List[NeutoneParameter]:
        return [
            ContinuousNeutoneParameter(name, description, default_value=default)
            for (name, description), default in zip(KNOBS, self.knob_defaults)
        ]

    @torch.jit.export
    def is_input_mono(self) -> bool:
        return self.mono

    @torch.jit.export
    def is_output_mono(self) -> bool:
        return self.mono

    @torch.jit.export
    def get_native_sample_rates(self) -> List[int]:
        return [self.sr]

    @torch.jit.export
    def get_native_buffer_sizes(self) -> List[int]:
        return []  # any: the effect streams blocks of any length

    @torch.jit.export
    def calc_model_delay_samples(self) -> int:
        return self.latency_samples

    def reset_model(self) -> bool:
        self.model.reset()
        return True

    def do_forward_pass(self, x: Tensor, params: Dict[str, Tensor]) -> Tensor:
        """``x`` [channels, frames] at the model's rate -> the same shape; ``params`` holds
        each knob's mean over the block (0..1)."""
        knobs = [float(params[name]) for name in self.knob_names]
        values = knob_values(knobs, self.knob_ranges)
        self.model.set_low_hz(values[0])
        self.model.set_high_hz(values[1])
        self.model.set_period_s(values[2])
        self.model.set_wet(values[3])
        return self.model(x.unsqueeze(0)).squeeze(0)


def save(wrapper: NeutoneEffect, output: Path, *, benchmark: bool = False) -> None:
    """Script ``wrapper`` with neutone-sdk's ``save_neutone_model``, run its checks (its sample
    renders, offline mode, the reloaded file against the scripted one, the delay report) and
    move the ``.nm`` to ``output``; nothing is left at ``output`` when a check fails.

    ``benchmark`` adds the SDK's speed benchmark (buffers of 128 to 2048 frames at 48 kHz).
    """
    # the SDK logs every step at INFO; its benchmark's figures are INFO lines too
    for name in ("neutone_sdk.utils", "neutone_sdk.benchmark", "neutone_sdk.audio"):
        logging.getLogger(name).setLevel(logging.INFO if benchmark else logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="spectro-fx-neutone-"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # submission=True: the SDK's full checks (it requires rendering its samples with them)
            save_neutone_model(wrapper, work, dump_samples=True, submission=True, speed_benchmark=benchmark)
        with atomic_path(output, suffix=".tmp") as tmp:
            shutil.copyfile(work / "model.nm", tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
