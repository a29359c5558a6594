"""Log lines for journald under systemd, the human format on a terminal.

Under systemd (stderr is the journal stream: ``JOURNAL_STREAM`` names its device
and inode, sd_journal_stream_fd(3)), each line starts with its syslog priority
``<N>`` (sd-daemon(3): ``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>``
debug) and carries no timestamp, since the journal stamps every line itself. So
``journalctl -p warning -u damage-rig`` shows the rig's warnings and errors. A
traceback's lines each carry the record's priority too (journald reads every
line as its own entry). Warnings are always logged there (`-v` adds info).
Elsewhere the format is the human one, with time.
``RIG_LOG_FORMAT=journal|human`` overrides the detection.
"""

from __future__ import annotations

import logging
import os
import sys

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: logging level -> syslog priority (sd-daemon(3))
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def priority(levelno: int) -> int:
    for level, prio in PRIORITIES:
        if levelno >= level:
            return prio
    return 7


def stderr_is_journal(stream=None) -> bool:
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``, every line of a multi-line record prefixed."""

    def __init__(self):
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def choose_format(stream=None) -> str:
    """'journal' or 'human' for ``stream`` (stderr by default): RIG_LOG_FORMAT, else JOURNAL_STREAM."""
    choice = os.environ.get("RIG_LOG_FORMAT", "").lower()
    if choice in ("journal", "human"):
        return choice
    return "journal" if stderr_is_journal(stream or sys.stderr) else "human"


def configure(level: int, stream=None) -> str | None:
    """Set up the root logger for the `rig` command; returns the format chosen ('journal'|'human').

    Like ``logging.basicConfig``, it leaves a root logger that someone else already set up alone
    (a test runner's capture, an embedding program) and returns None.
    """
    root = logging.getLogger()
    if any(not getattr(h, "_rig", False) for h in root.handlers):
        return None
    stream = stream or sys.stderr
    choice = choose_format(stream)
    if choice == "journal":
        level = min(level, logging.WARNING)  # journald filters by priority: warnings always reach it
    handler = logging.StreamHandler(stream)
    handler._rig = True
    handler.setFormatter(JournalFormatter() if choice == "journal" else logging.Formatter(HUMAN_FORMAT))
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    return choice
