"""Log lines as journald reads them under systemd (JOURNAL_STREAM = stderr), the human format elsewhere."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

from damage_rig.rig.service import logs


def emit_through_cli(tmp_path, journal: bool) -> str:
    """A real `rig` process whose stderr is a file; JOURNAL_STREAM names that file when ``journal``."""
    err = tmp_path / "stderr.log"
    code = ("import logging, sys; from damage_rig.rig.service.logs import configure; configure(logging.ERROR); "
            "log = logging.getLogger('damage_rig.rig.pipeline'); log.info('chatter'); "
            "log.warning('item 7: no frame from side; fail-safe'); log.error('event not recorded: disk full')\n"
            "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('stage infer crashed')")
    with err.open("w") as fh:
        st = os.fstat(fh.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}" if journal else "")
        env.pop("RIG_LOG_FORMAT", None)
        subprocess.run([sys.executable, "-c", code], stderr=fh, env=env, check=True, timeout=60)
    return err.read_text()


def test_under_systemd_every_line_carries_its_priority_and_no_timestamp(tmp_path):
    out = emit_through_cli(tmp_path, journal=True)
    lines = out.splitlines()
    assert all(re.match(r"^<[0-7]>", ln) for ln in lines), lines
    assert not re.search(r"\d\d:\d\d:\d\d", out)  # the journal stamps lines itself
    assert "<4>damage_rig.rig.pipeline: item 7: no frame from side; fail-safe" in lines  # journalctl -p warning
    assert "<3>damage_rig.rig.pipeline: event not recorded: disk full" in lines
    tb = [ln for ln in lines if "ZeroDivisionError" in ln or "Traceback" in ln]
    assert tb and all(ln.startswith("<3>") for ln in tb)  # a traceback stays at error priority, line by line
    assert "chatter" not in out  # info stays out unless -v


def test_on_a_terminal_or_a_file_the_human_format_stays(tmp_path):
    out = emit_through_cli(tmp_path, journal=False)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ERROR damage_rig.rig.pipeline: event not recorded", out)
    assert "<3>" not in out and "WARNING" not in out  # default level: errors only, as before


def test_journal_stream_must_name_stderr_itself(tmp_path, monkeypatch):
    with (tmp_path / "a").open("w") as a, (tmp_path / "b").open("w") as b:
        st = os.fstat(a.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.stderr_is_journal(a) and not logs.stderr_is_journal(b)  # e.g. stderr redirected by hand
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not logs.stderr_is_journal(a)
        assert logs.choose_format(a) == "human"
        monkeypatch.setenv("RIG_LOG_FORMAT", "journal")
        assert logs.choose_format(b) == "journal"
    assert [logs.priority(level) for level in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]
    assert logs.configure(logging.INFO) is None  # pytest's capture owns the root logger here: left alone
