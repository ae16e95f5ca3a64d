"""The `spectro-fx-train` command: prepare data, train, fit priors, export and evaluate models.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from spectro_fx import __version__
from spectro_fx.models.errors import ParameterError
from spectro_fx.models.runtime import torch_threads

# Subcommand modules, in the order `--help` lists them; each registers itself.
SUBCOMMANDS: list[str] = ["render_notes", "fit", "prior", "distill", "evaluate", "export_cmd", "experiments"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectro-fx-train",
        description="Train the VQ-VAE models that spectro-fx plays, and evaluate them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"spectro_fx.training.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        # --threads (fit, evaluate) is applied here, at the edge, for the whole command
        with torch_threads(getattr(args, "threads", None)):
            return int(args.run(args) or 0)
    except ParameterError as exc:
        print(f"spectro-fx-train {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
