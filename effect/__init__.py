"""The spectro-fx effect: a DSP core, the built-in effect plugins, the export and the I/O edges.

Folders show the layers: ``core/`` (engine, STFT, region, parameters, the effect API) imports no
I/O and no plugin; ``plugins/`` are the built-in effects, written against the API re-exported
here as third-party plugins are; ``export/`` writes the effect as one TorchScript module;
``io/`` holds the edges (CLI, live audio, MIDI, files, browser UI), which import the core, never
the other way. Needs only an exported model file; never imports training code.

A third-party effect plugin imports the API from here::

    from spectro_fx.effect import CodemapContext, Effect, Parameter
"""

from .core.effects import (
    ENTRY_POINT_GROUP,
    RENAMED_EFFECTS,
    CodemapContext,
    Effect,
    Parameter,
    available_effects,
    make_chain,
    stages,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "RENAMED_EFFECTS",
    "CodemapContext",
    "Effect",
    "Parameter",
    "available_effects",
    "make_chain",
    "stages",
]
