"""The `spectro-fx` command: render a file offline or play live through the effect.

Heavy imports happen inside the commands so `--help` is instant.
"""

from __future__ import annotations

import argparse
import sys

from spectro_fx import __version__

DESCRIPTION = """\
spectro-fx regenerates a time/frequency region of the sound: a VQ-VAE compresses the
spectrogram into a grid of codes, codes inside the region (a frequency band, optionally
gated in time) are regenerated, decoded and resynthesized with the input's own phase.
"""

EPILOG = """\
examples:
  spectro-fx --input in.wav --output out.wav                render a file offline
  spectro-fx --input in.wav --output out.wav --set low_hz=200 --set high_hz=2000
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectro-fx",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--input", help="audio file to process")
    parser.add_argument("--output", help="audio file to write (WAV or FLAC, 32-bit float)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input is None:
        parser.print_help()
        return 0
    parser.error("the engine is not built yet")
    return 2


if __name__ == "__main__":
    sys.exit(main())
