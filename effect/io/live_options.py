"""The live mode's command-line options: the `live performance` group of `spectro-fx --help`,
when a command line asks for live mode, and the checks made before anything opens.
"""

from __future__ import annotations

import argparse

from spectro_fx.models.errors import ParameterError, non_negative_number

LIVE_DEVICES = ("mic", "jack")

LIVE_HELP = """\
With --input mic, jack, a device name/index, or a file without --output, spectro-fx plays
live; the latency (engine + safety margin + device) is printed at start.
  spectro-fx --input mic                           default input -> default output
  spectro-fx --input jack --midi-in "nanoKONTROL"  JACK ports, MIDI knobs from a controller
  spectro-fx --input jack --midi-virtual           open a MIDI port a DAW can connect to
  spectro-fx --input in.wav --loop                 play a file through the effect
  spectro-fx --input jack --chain cross            cross: input 2 is the second source (or --cross-with FILE)
  spectro-fx --input jack --midi-in 0 --learn low_hz --midi-map knobs.toml   bind the next knob
  spectro-fx --input jack --ui 8765                see and move the region in a browser page
  spectro-fx --list-devices | --list-midi
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the live-mode options to the ``spectro-fx`` parser."""
    group = parser.add_argument_group("live performance", LIVE_HELP)
    group.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    group.add_argument("--list-midi", action="store_true", help="list MIDI input ports and exit")
    group.add_argument("--output-device", metavar="DEVICE", help="output device: name substring, index or 'jack' (default: the input's system)")
    group.add_argument("--samplerate", type=int, metavar="HZ", help="stream rate (default: the device's; JACK's is fixed by the server)")
    group.add_argument("--blocksize", type=int, default=256, metavar="FRAMES", help="frames per audio callback (default 256 = 5.3 ms at 48 kHz)")
    group.add_argument("--channels", type=int, metavar="N", help="channels to process (default: up to 2)")
    group.add_argument("--loop", action="store_true", help="with a file --input: loop it")
    group.add_argument("--record", metavar="FILE", help="record what is heard to FILE (.wav, .flac or .ogg), written when you stop")
    group.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this much audio (default: until Ctrl-C)")
    group.add_argument("--safety-ms", type=float, metavar="MS", help="time the engine may take for a block before it plays dry (default: measured at start, the engine's 99th-percentile call time plus the worker's wake-up; raise it if you see underruns)")
    group.add_argument("--rt-priority", type=int, default=1, metavar="N", help="when the audio callback runs realtime (JACK started with -R), run the engine's worker under SCHED_FIFO priority N, always below the callback's (default 1; 0 = never). Needs root or an rtprio limit; the start message says what the worker got")
    group.add_argument("--jack-name", default="spectro-fx", metavar="NAME", help="JACK client name (ports NAME:in_0, NAME:out_0 ...)")
    group.add_argument("--no-auto-connect", action="store_true", help="JACK: do not stay connected to system capture/playback")
    group.add_argument("--midi-in", metavar="PORT", help="MIDI input port: name substring or index (see --list-midi)")
    group.add_argument("--midi-virtual", nargs="?", const="midi_in", metavar="NAME", help="open a virtual MIDI input port others connect to (default name midi_in)")
    group.add_argument("--midi-map", metavar="FILE", help="TOML CC map (default: the bundled 8-knob map, CC 70-77 and 21-28 on channel 1)")
    group.add_argument("--midi-api", choices=("auto", "jack", "alsa"), default="auto", help="MIDI system (default: JACK with --input jack or without ALSA, else ALSA)")
    group.add_argument("--learn", metavar="PARAM", help="bind the next moved knob to PARAM and write --midi-map (default spectro-fx-midi.toml)")
    group.add_argument(
        "--runtime", choices=("auto", "onnxruntime", "torchscript"), default="auto",
        help="where the live engine runs the network: auto (default) is ONNX Runtime (about half the CPU of a "
             "live column), torchscript the exported module's code (the same sound)",
    )
    group.add_argument("--stats-json", metavar="FILE", help="append one JSON line of live figures per second to FILE")
    group.add_argument("--no-status", action="store_true", help="no live status line on the terminal")
    group.add_argument(
        "--ui", metavar="[HOST:]PORT",
        help="serve a page that shows the spectrograms and the region and moves every parameter "
        "(open the URL printed at start; it carries a secret token). HOST defaults to 127.0.0.1, "
        "this machine only; 0.0.0.0 opens it to the network; PORT 0 picks a free port",
    )
    # test-only: force the worker late to exercise the dry fallback
    group.add_argument("--debug-worker-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    group.add_argument("--debug-worker-delay-every-s", type=float, default=0.5, help=argparse.SUPPRESS)


def wants_live(args: argparse.Namespace) -> bool:
    """True when the command line asks for live mode (or a live listing)."""
    if getattr(args, "list_devices", False) or getattr(args, "list_midi", False):
        return True
    return args.input is not None and getattr(args, "output", None) is None


def check_live_args(args: argparse.Namespace) -> None:
    """Refuse a live command line that cannot work, before any device, port or file opens."""
    if args.input is None:
        raise ParameterError("live mode needs --input mic, jack, a device or a file")
    for option in ("automation", "plot"):
        if getattr(args, option, None):
            raise ParameterError(f"--{option} is for rendering a file (give --output); live, use MIDI knobs")
    if getattr(args, "threads", None) is not None:
        raise ParameterError(f"--threads {args.threads} is for rendering a file (give --output); live, the engine "
                             "runs on one thread (a second would take the core the audio callback needs)")
    if args.learn and not (args.midi_in or args.midi_virtual):
        raise ParameterError("--learn needs a MIDI input: --midi-in PORT or --midi-virtual")
    if not 0 <= args.rt_priority <= 99:
        raise ParameterError(f"--rt-priority={args.rt_priority} must be 0 (normal priority) or a SCHED_FIFO priority 1-99")
    if args.safety_ms is not None:
        non_negative_number("--safety-ms", args.safety_ms, unit="ms")
    if args.ui is not None:
        from .ui import parse_ui_address

        parse_ui_address(args.ui)  # a bad address fails before any audio opens
