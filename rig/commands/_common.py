"""What every subcommand shares: the `--json` convention, output paths checked before the
work starts, and progress bars only where a person watches.

The convention (README "Conventions"):

* ``--json [FILE]``: the machine form of what the command prints goes to FILE; ``--json``
  alone or ``--json -`` writes it to stdout, and the human text then goes to stderr.
* ``-v/--verbose`` before or after the subcommand; ``--no-progress`` on every subcommand
  (bars are drawn only when stderr is a terminal anyway).
* Exit codes: 0 ok, 1 failed or a FAIL verdict, 2 usage error (argparse); `rig status`
  keeps a monitor's codes (0 healthy, 1 degraded, 2 down).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from ..foundation.errors import RigError

STDOUT = "-"


def add_json(p, what: str) -> None:
    """``--json [FILE]``: ``what`` as JSON to FILE, or to stdout with no FILE or ``-``."""
    p.add_argument("--json", nargs="?", const=STDOUT, default=None, metavar="FILE",
                   help=f"write {what} as JSON to FILE (no FILE or '-': to stdout, the text to stderr)")


_json_stdout: list = []  # the real stdout while `text_to_stderr` sends the text elsewhere


def human(args):
    """Where the human text goes: stderr when the JSON goes to stdout, else stdout."""
    return sys.stderr if getattr(args, "json", None) == STDOUT else sys.stdout


@contextlib.contextmanager
def text_to_stderr(args):
    """Within: ``print`` goes to stderr when ``--json -`` takes stdout (emit_json still writes to stdout)."""
    if getattr(args, "json", None) != STDOUT:
        yield
        return
    _json_stdout.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_stdout.pop()


def _default(o):
    item = getattr(o, "item", None)  # numpy scalars
    if callable(item):
        return item()
    tolist = getattr(o, "tolist", None)  # numpy arrays
    if callable(tolist):
        return tolist()
    return str(o)


def emit_json(obj, dest: str | None) -> None:
    """Write ``obj`` to ``dest`` (a file, or stdout for ``-``); nothing when ``dest`` is None."""
    if dest is None:
        return
    text = json.dumps(obj, indent=2, default=_default) + "\n"
    if dest == STDOUT:
        out = _json_stdout[-1] if _json_stdout else sys.stdout
        out.write(text)
        out.flush()
        return
    try:
        Path(dest).expanduser().write_text(text)
    except OSError as exc:
        raise RigError(f"--json {dest}: cannot write ({exc.strerror or exc})") from None


def check_output_file(path: str | None, option: str) -> None:
    """Fail now, not after the work, when ``path`` cannot be written: its folder must exist and
    be writable, and it must not be a folder itself. ``None`` and ``-`` (stdout) pass."""
    if path is None or path == STDOUT:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise RigError(f"{option} {path}: is a folder, expected a file name")
    parent = p.resolve().parent
    if not parent.is_dir():
        raise RigError(f"{option} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise RigError(f"{option} {path}: not writable (permission denied on {p if p.exists() else parent})")


def check_output_dir(path: str | None, option: str) -> None:
    """Fail now when the folder ``path`` cannot be created or written (it is created later)."""
    if path is None:
        return
    p = Path(path).expanduser().resolve()
    if p.exists() and not p.is_dir():
        raise RigError(f"{option} {path}: exists and is not a folder")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise RigError(f"{option} {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RigError(f"{option} {path}: not writable (permission denied on {probe})")


def progress(args) -> bool:
    """Draw progress bars? Only on a terminal, and never with --no-progress."""
    if getattr(args, "no_progress", False):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
