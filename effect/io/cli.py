"""The `spectro-fx` command: render a file offline or play live through the effect.

Heavy imports happen inside the commands so `--help` is instant.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from spectro_fx import __version__
from spectro_fx.assets import MODEL_HELP
from spectro_fx.models.runtime import PRECISION_CHOICES

DESCRIPTION = """\
spectro-fx regenerates a time/frequency region of the sound: a VQ-VAE compresses the
spectrogram into a grid of codes, codes inside the region (a frequency band, optionally
gated in time) are regenerated, decoded and resynthesized with the input's own phase.
Outside the region the sound passes untouched.
"""

EPILOG = """\
region parameters (--set NAME=VALUE):
  low_hz, high_hz   the frequency band, in Hz (default 500 .. 4000)
  period_s, duty    time gate: on for duty x period of every period (period_s=0: always on)
  wet               0 = dry, 1 = fully regenerated inside the region (formerly `mix`)
  effect parameters are named effect.param (e.g. noise.amount); see --list

commands (spectro-fx COMMAND --help):
{commands}

examples:
  spectro-fx --input in.wav --output out.wav                render a file offline
  spectro-fx --input in.wav --output out.wav --set low_hz=200 --set high_hz=2000
  spectro-fx --input in.wav --output out.wav --chain noise --set noise.amount=0.5 --plot out.png
  spectro-fx --input in.wav --output out.wav --automation knobs.mid --map map.toml
  spectro-fx export --format nn --output fx.ts --chain inpaint     the effect for nn~ (Max/Pd)
  spectro-fx export --format neutone --output fx.nm --chain inpaint  ... for Neutone FX (VST3/AU)
"""

EXIT_USAGE = 2
ENGINE_THREADS = 1
"""torch threads of every spectro-fx command, set here at the edge (the engine leaves the count
alone): its many small calls per column run fastest on one thread, and live a second,
spin-waiting one would take the core the audio callback needs. A file render (larger calls: 85
columns a block) runs on every core instead, or on ``--threads N``."""

SUBCOMMANDS = {
    # name: (module under spectro_fx.effect, one line for --help); each module has main(argv) -> int
    "validate": ("io.validate", "check a model and chain before a gig (pluginval-style); see `spectro-fx validate --help`"),
    "export": ("export.export_cmd", "write the effect as one TorchScript file for nn~ (Max/Pd) or Neutone FX (DAW); see `spectro-fx export --help`"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectro-fx",
        description=DESCRIPTION,
        epilog=EPILOG.format(commands="\n".join(f"  {name:<10} {line}" for name, (_, line) in SUBCOMMANDS.items())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--input", metavar="IN", help="audio file to process")
    parser.add_argument("--output", metavar="OUT", help="audio file to write (.wav: 32-bit float; .flac: 24-bit)")
    parser.add_argument("--model", metavar="FILE|NAME", help=MODEL_HELP)
    parser.add_argument(
        "--chain", default="none", metavar="A,B",
        help="effects in order, e.g. inpaint,noise (default: none = plain resynthesis); effects on the "
             "codemap run before effects on its latents, as --list marks them, else re-quantising would "
             "undo the latent change",
    )
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
        help="set a parameter, e.g. --set low_hz=300 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the effects (default 0)")
    parser.add_argument("--automation", metavar="FILE.mid", help="standard MIDI file of CC automation")
    parser.add_argument("--map", metavar="FILE.toml", help="CC map for --automation (default: the bundled map)")
    parser.add_argument("--plot", metavar="FILE.png", help="save a before/after spectrogram picture")
    parser.add_argument(
        "--plot-scale", choices=("log", "linear"), default="log",
        help="frequency axis of --plot: log (default; a low band stays visible) or linear",
    )
    parser.add_argument("--cross-with", metavar="FILE", help="second source of the `cross` effect (cross-synthesis), looped (live without it, cross takes input channel 2)")
    parser.add_argument("--mix-with", dest="old_mix_with", metavar="FILE", help=argparse.SUPPRESS)  # old name of --cross-with
    parser.add_argument(
        "--precision", choices=PRECISION_CHOICES, default="auto",
        help="the network's number format: auto (default) is bfloat16 when rendering a file on a CPU that "
             "multiplies it natively (AMX or AVX512-BF16: 1.7-2x faster; held-out mel distance 0.340 -> "
             "0.343), float32 otherwise and live (a live block is no faster in bfloat16)",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N",
        help="CPU threads of a file render (default: every core this process may use; a render's blocks "
             "of 85 columns spread over them: 1.7x faster on two cores); live always runs on one",
    )
    parser.add_argument("--block-size", type=int, default=16384, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.add_argument("--list", action="store_true", help="list effects and parameters, then exit")
    from .live_options import add_arguments as add_live_arguments

    add_live_arguments(parser)
    return parser


def bundled_model_summary(path) -> str:
    """One line on a model file: rate, STFT and the latency the engine adds at that rate."""
    import math

    from spectro_fx.models.export import load_model

    from ..core.stream import stft_latency

    config = load_model(path).config
    stft, time_stride = config.stft, math.prod(config.time_strides)
    latency = stft_latency(span=stft.synthesis_span, hop=stft.hop_length, time_stride=time_stride)
    pair = f"{stft.win_length}/{stft.synthesis_span}" if stft.synthesis_length else f"{stft.win_length}"
    return (f"{path.name}: {stft.sr} Hz, window {pair}, hop {stft.hop_length} x {time_stride} per column, "
            f"latency {latency} samples ({1000 * latency / stft.sr:.2f} ms)")


def list_parameters() -> int:
    from spectro_fx.assets import BUNDLED_MODELS, model_path

    from ..core.effects import Effect, available_effects
    from ..core.params import REGION_PARAMETERS
    from ..core.step import builtin_effects

    def line(key, p):
        unit = f" {p.unit}" if p.unit else ""
        values = "|".join(p.choices) if p.kind == "choice" else f"{p.minimum:g} .. {p.maximum:g}{unit}"
        return f"  {key:<22} {values}, default {p.default}  {p.help}".rstrip()

    print("bundled models (--model NAME):")
    for name in BUNDLED_MODELS:
        print(f"  {name:<22} {bundled_model_summary(model_path(name))}")
    print("region parameters:")
    for p in REGION_PARAMETERS:
        print(line(p.name, p))
    builtin = builtin_effects()
    for name, cls in sorted(available_effects().items()):
        acts = [stage for stage, method in (("codes", "process_codes"), ("latents", "process_latent"))
                if getattr(cls, method) is not getattr(Effect, method)]
        runs = "fused in the column step" if name in builtin else "in Python, splitting the column step (slower)"
        print(f"effect {name} (on {' and '.join(acts) or 'nothing'}; {runs}): {cls.description}")
        for p in cls.parameters:
            print(line(f"{name}.{p.name}", p))
    return 0


def render_command(args: argparse.Namespace) -> int:
    from spectro_fx.models.errors import ParameterError
    from spectro_fx.models.runtime import available_cores, keep_freed_memory, resolve_precision, torch_threads

    from ..core.params import parse_settings
    from .render import render_file

    if args.output is None:
        raise ParameterError("--output is required when --input is a file")
    if getattr(args, "ui", None) is not None:
        raise ParameterError("--ui is for playing live (leave out --output); a render has no page to show")
    ccmap = None
    if args.automation is not None:
        from .ccmap import load_ccmap

        if args.map is None:
            from spectro_fx.assets import DEFAULT_MIDI_MAP, asset_path

            args.map = asset_path(DEFAULT_MIDI_MAP)
        ccmap = load_ccmap(args.map)
    elif args.map is not None:
        raise ParameterError("--map is used with --automation FILE.mid")
    log = (lambda line: None) if args.quiet else (lambda line: print(f"spectro-fx: {line}", file=sys.stderr))
    keep_freed_memory()  # this process renders and ends: its blocks' arrays are reused, not mapped afresh
    threads = available_cores() if args.threads is None else args.threads
    with torch_threads(threads):
        result = render_file(
            args.input, args.output, model=args.model, chain=args.chain, values=parse_settings(args.settings),
            seed=args.seed, automation=args.automation, ccmap=ccmap, plot=args.plot,
            block_size=args.block_size, progress=not args.quiet, log=log, cross_with=args.cross_with,
            plot_scale=args.plot_scale, precision=resolve_precision(args.precision, offline=True),
        )
    log(
        f"wrote {result.output} ({result.frames / result.sr:.2f} s, {result.channels} ch, {result.sr} Hz) "
        f"in {result.seconds:.2f} s ({result.realtime_factor:.0f}x real time, {threads} thread{'s' if threads > 1 else ''})"
    )
    return 0


def _upgrade_old_options(args: argparse.Namespace) -> None:
    """Options renamed in this release: accepted for one more, with a warning naming the new one."""
    if args.old_mix_with is not None:
        if args.cross_with is not None:
            from spectro_fx.models.errors import ParameterError

            raise ParameterError("--mix-with is the old name of --cross-with; give one of them")
        warnings.warn("--mix-with is now --cross-with; the old name is accepted until the next release", FutureWarning)
        args.cross_with = args.old_mix_with


def _warning_line(message, category, filename, lineno, file=None, line=None):
    print(f"spectro-fx: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        from importlib import import_module

        from spectro_fx.models.runtime import torch_threads

        module = import_module(f"spectro_fx.effect.{SUBCOMMANDS[argv[0]][0]}")
        with torch_threads(ENGINE_THREADS):
            return module.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        return list_parameters()
    if args.input is None and not (args.list_devices or args.list_midi):
        parser.print_help()
        return 0
    from spectro_fx.models.errors import ParameterError

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _warning_line
        try:
            _upgrade_old_options(args)
            # the live mode dispatches here on live inputs (mic, jack, a device) before files
            from spectro_fx.models.runtime import torch_threads

            from .live import run_live
            from .live_options import wants_live

            with torch_threads(ENGINE_THREADS):
                if wants_live(args):
                    return run_live(args)
                return render_command(args)
        except ParameterError as exc:  # ModelFileError included: user input, one line, no traceback
            print(f"spectro-fx: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("spectro-fx: interrupted; nothing written", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
