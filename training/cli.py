"""The `spectro-fx-train` command: prepare data, train, fit priors, export and evaluate models.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from typing import Iterator

from spectro_fx import __version__
from spectro_fx.models.errors import ParameterError

# Subcommand modules, in the order `--help` lists them; each registers itself.
SUBCOMMANDS: list[str] = ["render_notes", "fit", "prior", "evaluate", "export_cmd", "experiments"]


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
        with torch_threads(getattr(args, "threads", None)):
            return int(args.run(args) or 0)
    except ParameterError as exc:
        print(f"spectro-fx-train {args.command}: error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads for one command (``--threads N`` of the subcommands that take it),
    set here at the edge only, and given back afterwards (``main`` also runs in-process)."""
    if threads is None:
        yield
        return
    if threads <= 0:
        raise ParameterError(f"--threads={threads} must be a positive integer")
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    sys.exit(main())
