"""The ``plugattn`` command: one subcommand per job, each implemented in its own module.

A subcommand module provides ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand → module implementing it
COMMANDS = {
    "list": "plugattn.analysis.cost",
    "bench": "plugattn.analysis.bench",
    "export": "plugattn.export",
    "compare": "plugattn.experiments.compare",
    "search": "plugattn.experiments.search",
    "viz": "plugattn.experiments.viz",
    "convert": "plugattn.models.convert",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="plugattn", description="Plug-and-play attention for CNNs.")
    parser.add_argument("--version", action="version", version=f"plugattn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, path in COMMANDS.items():
        try:
            mod = importlib.import_module(path)
        except ModuleNotFoundError as e:
            if e.name and (path == e.name or path.startswith(e.name + ".")):  # not part of this build
                continue
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``plugattn`` console script.

    A user error (``ValueError``, ``TypeError``, ``KeyError``, a missing file) prints one line naming the command
    and exits with status 2; ``PLUGATTN_DEBUG=1`` shows the traceback instead.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
        if os.environ.get("PLUGATTN_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"plugattn {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
