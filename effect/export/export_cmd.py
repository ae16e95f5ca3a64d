"""`spectro-fx export`: write the effect as one TorchScript file for another host (nn~ in Max/Pd).

The file holds the model, the chain and the settings; it runs with `torch.jit.load` alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

DESCRIPTION = """\
Write the effect (model, chain, settings) as one TorchScript file that other hosts load.

--format nn: for nn~ in Max/MSP or Pure Data (IRCAM's external). The file follows nn~'s
conventions: one method, forward, with [in_channels, 1, out_channels, 1] in forward_params,
and every parameter as an attribute (get_low_hz / set_low_hz ...) for nn~'s messages.
It runs at the model's sample rate (48 kHz for the bundled model): set Max/Pd to it.
"""

EPILOG = """\
examples:
  spectro-fx export --format nn --output spectro.ts
  spectro-fx export --format nn --output band.ts --chain inpaint --set low_hz=300 --set high_hz=3000
then, in Max:  [nn~ spectro.ts forward]  and messages such as  [low_hz 200(  [wet 0.5(

exported chains: none, noise, inpaint (context=input), dropout; cross needs a second input
and is not exported.
"""

FORMATS = ("nn",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectro-fx export", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="the host's file format (nn: nn~ for Max/Pd)")
    parser.add_argument("--output", required=True, metavar="FILE", help="file to write (nn~ expects .ts)")
    parser.add_argument("--model", metavar="FILE", help="model file (default: the bundled default model)")
    parser.add_argument("--chain", default="none", metavar="A,B", help="effects in order (default: none)")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
        help="initial parameter value, e.g. --set low_hz=300 (repeatable; the host can change it later)",
    )
    parser.add_argument("--channels", type=int, default=1, help="audio channels in and out (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws (default 0)")
    return parser


def export_effect(
    output: str | Path, *, model=None, chain: str = "none", values: dict | None = None, channels: int = 1, seed: int = 0,
) -> Path:
    """Write the scripted effect to ``output`` atomically; returns its path.

    Raises ParameterError (one line) for an effect or parameter the format cannot carry.
    """
    import torch

    from spectro_fx.models.atomic import atomic_path
    from spectro_fx.models.errors import ParameterError

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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(effect)
    description = {
        "format": "nn",
        "sample_rate": effect.sr,
        "channels": channels,
        "latency_samples": effect.latency_samples,
        "chain": names,
        "attributes": {name: module.get_parameter(name) for name in module.get_attributes()},
        "model": str(loaded.path.name),
    }
    output = Path(output)
    if output.parent and not output.parent.is_dir():
        raise ParameterError(f"--output {output}: folder {output.parent} does not exist")
    with atomic_path(output, suffix=".tmp") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, str(tmp), _extra_files={"spectro_fx.json": json.dumps(description, indent=2)})
    return output


def main(argv: list[str]) -> int:
    from spectro_fx.models.errors import ParameterError

    from ..core.params import parse_settings

    args = build_parser().parse_args(argv)
    try:
        path = export_effect(
            args.output, model=args.model, chain=args.chain, values=parse_settings(args.settings),
            channels=args.channels, seed=args.seed,
        )
    except ParameterError as exc:
        print(f"spectro-fx export: error: {exc}", file=sys.stderr)
        return 2
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path))
    latency = int(module.latency_samples)
    sr = int(module.sr)
    print(
        f"spectro-fx export: wrote {path} for nn~ ({int(module.channels)} ch at {sr} Hz; "
        f"latency {latency} samples = {1000 * latency / sr:.1f} ms: compensate it in the host); "
        f"attributes: {', '.join(module.get_attributes())}"
    )
    return 0
