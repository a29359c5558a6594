"""The `rig` command line: one entry point, one subcommand per module in rig/commands."""

from __future__ import annotations

import sys

from .foundation.threads import blas_env

# The commands that run a rig want single-threaded BLAS (rig/foundation/threads.py: one owner
# per core); OpenBLAS reads this when numpy loads, so it is set before anything imports numpy.
# Training and the other tools keep their libraries' defaults.
RIG_COMMANDS = ("run", "demo", "bench")
if any(a in RIG_COMMANDS for a in sys.argv[1:3]):
    blas_env(1)

import argparse
import importlib
import logging
import pkgutil

from . import __version__, commands
from .foundation.errors import RigError


def _command_modules():
    mods = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(mod, "NAME"):
            mods.append(mod)
    return sorted(mods, key=lambda m: m.NAME)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rig", description="damage-rig: find damaged items on a conveyor and divert them.")
    parser.add_argument("--version", action="version", version=f"damage-rig {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    common = argparse.ArgumentParser(add_help=False)  # accepted after the subcommand too (README "Conventions")
    common.add_argument("-v", "--verbose", dest="verbose_after", action="count", default=0,
                        help="more log output (-vv: debug)")
    common.add_argument("--no-progress", action="store_true", help="no progress bars (drawn only on a terminal)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP, parents=[common])
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose += args.verbose_after
    level = logging.WARNING - 10 * min(args.verbose, 2) + (0 if args.verbose else 10)
    from .service.logs import configure

    configure(level)  # journald priorities under systemd, the human format elsewhere
    try:
        return int(args._run(args) or 0)
    except RigError as exc:
        print(f"rig {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rig {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
