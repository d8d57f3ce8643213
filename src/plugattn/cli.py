"""The ``plugattn`` command: one subcommand per job, each implemented in its own module.

A subcommand module provides ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand → module implementing it
COMMANDS = {
    "list": "plugattn.analysis.cost",
    "bench": "plugattn.analysis.bench",
    "export": "plugattn.export",
    "compare": "plugattn.experiments.compare",
    "viz": "plugattn.experiments.viz",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="plugattn", description="Plug-and-play attention for CNNs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, path in COMMANDS.items():
        try:
            mod = importlib.import_module(path)
        except ModuleNotFoundError as e:
            if e.name and (path == e.name or path.startswith(e.name + ".")):  # not part of this build
                continue
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``plugattn`` console script."""
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
