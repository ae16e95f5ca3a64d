"""The four knobs of the Neutone FX export: knob positions (0..1) <-> band, gate period and wet.

Apart from the wrapper (effect/neutone.py), so the export checks settings without neutone-sdk.
"""

import math
from typing import List

from spectro_fx.models.errors import ParameterError

from ..core.params import REGION_PARAMETERS

_BY_NAME = {p.name: p for p in REGION_PARAMETERS}
CENTRE_MIN_HZ = float(_BY_NAME["low_hz"].minimum)
"""Lowest band centre, Hz: the band edges' own range, so every band ``--set`` can give has a knob position."""
CENTRE_MAX_HZ = float(_BY_NAME["high_hz"].maximum)
WIDTH_MAX_OCTAVES = math.log2(CENTRE_MAX_HZ / CENTRE_MIN_HZ)
"""Widest band, octaves (10.2: the whole 20 Hz - 24 kHz range)."""
GATE_MAX_S = 2.0
"""Longest gate period of the gate knob, s (the range of the default MIDI map's period_s knob)."""
RANGES = [CENTRE_MIN_HZ, CENTRE_MAX_HZ, WIDTH_MAX_OCTAVES, GATE_MAX_S]
"""``[centre_min_hz, centre_max_hz, width_max_octaves, gate_max_s]``, as the wrapper carries them."""

KNOBS = [
    # (name on the plugin's knob, what it does)
    ("Band centre", "centre of the regenerated band: 20 Hz to 24 kHz, log"),
    ("Band width", "width of the band: 0 (none) to 10 octaves, linear"),
    ("Gate", "time gate period: 0 = region always on, up to 2 s (on for duty x period)"),
    ("Wet", "regenerated sound inside the band: 0 = dry, 1 = fully regenerated"),
]
"""The four knobs of Neutone FX, in order (0..1 each)."""


def knob_values(knobs: List[float], ranges: List[float]) -> List[float]:
    """Knob positions ``[centre, width, gate, wet]`` (0..1) -> ``[low_hz, high_hz, period_s, wet]``.

    The band is centred (geometric mean) on a log centre knob; the width knob spreads it
    linearly in octaves, half each side, as the browser UI's band box keeps its width in
    octaves. Scripted: the `.nm` runs this on every block.
    """
    centre_min, centre_max, width_max, gate_max = ranges[0], ranges[1], ranges[2], ranges[3]
    k = [min(max(v, 0.0), 1.0) for v in knobs]
    centre = centre_min * math.exp(k[0] * math.log(centre_max / centre_min))
    half = 0.5 * k[1] * width_max
    return [centre * 2.0 ** (-half), centre * 2.0 ** half, k[2] * gate_max, k[3]]


def knob_positions(low_hz: float, high_hz: float, period_s: float, wet: float) -> List[float]:
    """The inverse of :func:`knob_values`: knob positions (0..1) for parameter values.

    Raises ParameterError when a value is beyond what its knob reaches (``period_s`` over
    :data:`GATE_MAX_S`). A band at or below ``low_hz`` (no band) becomes width 0.
    """
    if period_s > GATE_MAX_S:
        raise ParameterError(
            f"period_s={period_s:g} is beyond the Gate knob of Neutone FX (0 to {GATE_MAX_S:g} s); "
            f"export with period_s <= {GATE_MAX_S:g}"
        )
    width = max(math.log2(high_hz / low_hz), 0.0)
    centre = math.sqrt(low_hz * high_hz)
    return [
        math.log(centre / CENTRE_MIN_HZ) / math.log(CENTRE_MAX_HZ / CENTRE_MIN_HZ),
        width / WIDTH_MAX_OCTAVES,
        period_s / GATE_MAX_S,
        wet,
    ]
