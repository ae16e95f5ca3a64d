"""`spectro-fx export`: write the effect as one TorchScript file for another host (nn~ in Max/Pd, Neutone FX).

The file holds the model, the chain and the settings; it runs with `torch.jit.load` alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from spectro_fx.assets import MODEL_HELP

DESCRIPTION = """\
Write the effect (model, chain, settings) as one TorchScript file that other hosts load.

--format nn: for nn~ in Max/MSP or Pure Data (IRCAM's external). The file follows nn~'s
conventions: one method, forward, with [in_channels, 1, out_channels, 1] in forward_params,
and every parameter as an attribute (get_low_hz / set_low_hz ...) for nn~'s messages.
It runs at the model's sample rate (48 kHz for the bundled model): set Max/Pd to it.

--format neutone: a .nm model for Neutone FX (a free VST3/AU plugin), made and checked by
neutone-sdk (pip install 'spectro-fx[neutone]'; a minute or two of its checks). Four knobs:
Band centre (20 Hz - 24 kHz, log), Band width (0 - 10 octaves), Gate (time gate period:
0 = always on, up to 2 s) and Wet. --set gives their starting positions and fixes every
other parameter. Stereo unless --channels 1 (mono: half the CPU). The plugin resamples
other rates to the model's and reports the effect's latency to the DAW, which compensates it.
"""

EPILOG = """\
examples:
  spectro-fx export --format nn --output spectro.ts
  spectro-fx export --format nn --output band.ts --chain inpaint --set low_hz=300 --set high_hz=3000
then, in Max:  [nn~ spectro.ts forward]  and messages such as  [low_hz 200(  [wet 0.5(

  spectro-fx export --format neutone --output spectro.nm --chain inpaint --set low_hz=300 --set high_hz=3000
then, in Neutone FX: "load your own" model and pick spectro.nm

exported chains: none, noise, inpaint (context=input), dropout, cross (nn only: the file then
takes one more input channel, the last, as the second source).
"""

FORMATS = ("nn", "neutone")
NEUTONE_INSTALL = (
    "--format neutone needs neutone-sdk, which this environment lacks ({missing}): "
    "pip install 'spectro-fx[neutone]' (in a checkout: make venv-neutone, then .venv-neutone/bin/spectro-fx export ...)"
)
NEUTONE_TORCHAUDIO = (
    "--format neutone: torchaudio (needed by neutone-sdk) cannot load its compiled libraries beside this torch "
    "({error}); the export needs only its Python part: delete {lib}/*.so, or in a checkout use "
    "make venv-neutone and .venv-neutone/bin/spectro-fx export ..."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectro-fx export", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--format", required=True, choices=FORMATS, help="the host's file format (nn: nn~ for Max/Pd; neutone: Neutone FX)",
    )
    parser.add_argument("--output", required=True, metavar="FILE", help="file to write (nn~ expects .ts, Neutone FX .nm)")
    parser.add_argument("--model", metavar="FILE|NAME", help=MODEL_HELP)
    parser.add_argument("--chain", default="none", metavar="A,B", help="effects in order (default: none)")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
        help="initial parameter value, e.g. --set low_hz=300 (repeatable; the host can change it later)",
    )
    parser.add_argument(
        "--channels", type=int, metavar="N", help="audio channels in and out (default: 1 for nn, 2 for neutone)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws (default 0)")
    parser.add_argument(
        "--benchmark", action="store_true",
        help="neutone: also run neutone-sdk's speed benchmark (buffers of 128 to 2048 frames; a minute or more)",
    )
    return parser


def build_effect(*, model=None, chain: str = "none", values: dict | None = None, channels: int = 1, seed: int = 0):
    """``(ScriptedEffect, chain names, ModelFile)`` for the export's options.

    Raises ParameterError (one line) for an effect or parameter the module cannot carry.
    """
    from ..core.effects import RENAMED_EFFECTS
    from ..core.params import resolve_name
    from ..io.render import resolve_model
    from .scripted import PARAMETER_TABLE, ScriptedEffect

    names = [n.strip() for n in chain.split(",") if n.strip()] or ["none"]
    names = [RENAMED_EFFECTS.get(n, n) for n in names]
    loaded = resolve_model(model)
    known = [engine_name for _, engine_name, _ in PARAMETER_TABLE if "." not in engine_name or engine_name.split(".")[0] in names]
    if "inpaint" in names:
        known += ["inpaint.alpha", "inpaint.context"]
    resolved = {resolve_name(key, known): value for key, value in (values or {}).items()}
    effect = ScriptedEffect(loaded, chain=names, values=resolved, channels=channels, seed=seed)
    return effect, names, loaded


def _check_output(output: Path) -> None:
    from spectro_fx.models.errors import ParameterError

    if output.parent and not output.parent.is_dir():
        raise ParameterError(f"--output {output}: folder {output.parent} does not exist")


def export_effect(
    output: str | Path, *, model=None, chain: str = "none", values: dict | None = None, channels: int = 1, seed: int = 0,
) -> Path:
    """Write the scripted effect for nn~ to ``output`` atomically; returns its path.

    Raises ParameterError (one line) for an effect or parameter the format cannot carry.
    """
    import torch

    from spectro_fx.models.atomic import atomic_path

    effect, names, loaded = build_effect(model=model, chain=chain, values=values, channels=channels, seed=seed)
    output = Path(output)
    _check_output(output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(effect)
    description = {
        "format": "nn",
        "sample_rate": effect.sr,
        "channels": channels,
        "in_channels": int(effect.forward_params[0]),
        "latency_samples": effect.latency_samples,
        "chain": names,
        "attributes": {name: module.get_parameter(name) for name in module.get_attributes()},
        "model": str(loaded.path.name),
    }
    with atomic_path(output, suffix=".tmp") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, str(tmp), _extra_files={"spectro_fx.json": json.dumps(description, indent=2)})
    return output


def _import_neutone():
    """The :mod:`.neutone` module; ParameterError (one line, what to do) when neutone-sdk or
    torchaudio cannot be imported here."""
    from spectro_fx.models.errors import ParameterError

    try:
        from . import neutone
    except ModuleNotFoundError as exc:
        raise ParameterError(NEUTONE_INSTALL.format(missing=f"no module {exc.name!r}")) from None
    except OSError as exc:
        import importlib.util

        spec = importlib.util.find_spec("torchaudio")
        lib = Path(spec.origin).parent / "lib" if spec and spec.origin else "torchaudio/lib"
        cause = exc.__cause__ or exc  # torch wraps the loader's own message (the missing libc10_cuda.so)
        raise ParameterError(NEUTONE_TORCHAUDIO.format(error=str(cause).splitlines()[0], lib=lib)) from None
    return neutone


def export_neutone(
    output: str | Path, *, model=None, chain: str = "none", values: dict | None = None, channels: int = 2,
    seed: int = 0, benchmark: bool = False,
) -> Path:
    """Write the effect as a Neutone FX model (``.nm``) to ``output``, made and checked by
    neutone-sdk's ``save_neutone_model``; returns its path.

    The knobs start where ``values`` put the band, the gate period and wet; every other
    parameter is fixed. Raises ParameterError (one line) for an effect, parameter, value or
    channel count the format cannot carry, or when neutone-sdk cannot be imported.
    """
    from spectro_fx import __version__
    from spectro_fx.models.errors import ParameterError

    from .neutone_knobs import knob_positions

    if channels not in (1, 2):
        raise ParameterError(f"--channels {channels}: a Neutone FX model is mono (1) or stereo (2)")
    effect, names, loaded = build_effect(model=model, chain=chain, values=values, channels=channels, seed=seed)
    if "cross" in names:  # after build_effect: the old name `mix` is cross too
        raise ParameterError(
            "--chain cross cannot be exported for Neutone FX: it needs a second input, which the plugin does not "
            "give; --format nn carries it (its last input channel is the second source)"
        )
    value = {name: effect.get_parameter(name) for name in effect.param_names}
    knobs = knob_positions(value["low_hz"], value["high_hz"], value["period_s"], value["wet"])
    output = Path(output)
    _check_output(output)
    neutone = _import_neutone()
    sr = effect.sr
    # what the knobs leave as exported: duty and the chain's own parameters
    fixed = ", ".join(
        f"{name}={v:g}" for name, v in value.items() if name == "duty" or name.split("_")[0] in names
    )
    trained_on = str(loaded.module.data_description)[:120]
    wrapper = neutone.NeutoneEffect(
        effect,
        knobs=knobs,
        name=f"spectro-fx {'+'.join(names)}"[:30],
        description=(
            f"Regenerates a frequency band of the sound from a VQ-VAE's codes ({', '.join(names)}), "
            "resynthesized with the input's phase."
        )[:150],
        long_description=(
            "Band centre and Band width pick the regenerated band, Gate pulses it in time (0 = always on), "
            f"Wet blends it. Fixed at export: {fixed or 'nothing else'}. Latency {effect.latency_samples} samples "
            f"at {sr} Hz, reported to the DAW."
        )[:500],
        technical=(
            f"spectro-fx: STFT ({effect.n_fft}-point, hop {effect.hop}) -> VQ-VAE encoder ({effect.codebook_size} codes) "
            f"-> codemap effects ({', '.join(names)}) -> decoder -> band mask with the input's phase -> overlap-add. "
            f"Model file {loaded.path.name}, trained on: {trained_on or 'not described'}."
        )[:500],
        version=__version__,
    )
    neutone.save(wrapper, output, benchmark=benchmark)
    return output


def main(argv: list[str]) -> int:
    from spectro_fx.models.errors import ParameterError

    from ..core.params import parse_settings

    args = build_parser().parse_args(argv)
    channels = args.channels if args.channels is not None else (2 if args.format == "neutone" else 1)
    options = dict(model=args.model, chain=args.chain, channels=channels, seed=args.seed)
    try:
        values = parse_settings(args.settings)
        if args.format == "neutone":
            path = export_neutone(args.output, values=values, benchmark=args.benchmark, **options)
        else:
            path = export_effect(args.output, values=values, **options)
    except ParameterError as exc:
        print(f"spectro-fx export: error: {exc}", file=sys.stderr)
        return 2
    except AssertionError as exc:  # neutone-sdk's checks are asserts
        print(f"spectro-fx export: error: neutone-sdk's check failed, nothing written: {exc}", file=sys.stderr)
        return 1
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path))
    if args.format == "neutone":
        effect = module.w2w_base.model
        latency, sr = int(module.calc_model_delay_samples()), int(effect.sr)
        host = f"Neutone FX ({'mono' if module.is_input_mono() else 'stereo'} at {sr} Hz"
        knobs = "knobs: " + ", ".join(
            f"{p['name']} {float(p['default_value']):.2f}" for p in module.to_metadata()["neutone_parameters"].values()
        )
    else:
        effect = module
        latency, sr = int(module.latency_samples), int(module.sr)
        inputs, outputs = int(module.forward_params[0]), int(module.forward_params[2])
        channels = f"{outputs} ch" if inputs == outputs else f"{inputs} ch in (the last: cross's second source), {outputs} out"
        host = f"nn~ ({channels} at {sr} Hz"
        knobs = f"attributes: {', '.join(module.get_attributes())}"
    print(
        f"spectro-fx export: wrote {path} for {host}; "
        f"latency {latency} samples = {1000 * latency / sr:.1f} ms: compensate it in the host); {knobs}"
    )
    return 0
