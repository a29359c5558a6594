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


def _command_modules(parent: str | None = None):
    """Command modules; a module with ``PARENT`` is a nested command (`rig PARENT NAME`)."""
    mods = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(mod, "NAME") and getattr(mod, "PARENT", None) == parent:
            mods.append(mod)
    return sorted(mods, key=lambda m: m.NAME)


def _nested_parser(argv: list[str]) -> argparse.ArgumentParser | None:
    """`rig bench gallery ...`: the parser of a nested command when argv names one."""
    if len(argv) < 2:
        return None
    for mod in _command_modules(argv[0]):
        if mod.NAME == argv[1]:
            p = argparse.ArgumentParser(prog=f"rig {argv[0]} {mod.NAME}", description=mod.HELP)
            p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
            p.add_argument("--no-progress", action="store_true", help="no progress bars (drawn only on a terminal)")
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run, command=f"{argv[0]} {mod.NAME}")
            return p
    return None


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
    argv = sys.argv[1:] if argv is None else list(argv)
    nested = _nested_parser(argv)
    args = nested.parse_args(argv[2:]) if nested is not None else build_parser().parse_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)
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
