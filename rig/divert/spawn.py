"""Start the controller emulator as its own process and hand back its pty path.

The runtime (``divert.url: emulator``), ``rig demo`` and the tests use this, so
the host always talks to a separate process through a real pty, as it would to
a controller on a USB serial adapter.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..foundation.errors import DeviceError
from .emulator import Faults

log = logging.getLogger(__name__)


class EmulatorProcess:
    """Handle on a running ``rig divert emulate`` process."""

    def __init__(self, proc: subprocess.Popen, port: str, log_path: Path, workdir: Path,
                 stderr_path: Path):
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self._workdir = workdir
        self._stderr_path = stderr_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def gate_log(self) -> list[dict]:
        """Every event the emulator logged so far (start, fired, late, failsafe, ..., stop)."""
        if not self.log_path.exists():
            return []
        events = []
        for line in self.log_path.read_text().splitlines():
            if line.strip():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line being written right now; the next read gets it
        return events

    def toggle_silence(self) -> None:
        """Make the controller stop (or resume) reading and answering (SIGUSR1)."""
        self.proc.send_signal(signal.SIGUSR1)

    def kill(self) -> None:
        """Vanish abruptly, as a controller losing power or a cable being pulled."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM, wait, and SIGKILL if it does not exit; return its exit code."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("emulator pid %d ignored SIGTERM; killing it", self.proc.pid)
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the rig that spawned it dies, even by SIGKILL
    (Linux PR_SET_PDEATHSIG), so no orphaned controller emulator holds the pty."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: only a clean stop() ends the emulator


def spawn_emulator(*, speed_mps: float = 0.5, counts_per_m: float = 1000.0,
                   failsafe: str = "divert_all", heartbeat_timeout_s: float = 1.0,
                   heartbeat_ms: float = 50.0, gates: tuple[int, ...] = (1,),
                   faults: dict | None = None, log_path: str | Path | None = None,
                   start_timeout_s: float = 15.0) -> EmulatorProcess:
    """Start ``rig divert emulate`` in a subprocess; return once its pty exists.

    ``faults`` keys: drop, corrupt (probabilities per frame), delay_ms,
    silence_after_s, silence_for_s, seed.
    """
    f = Faults.from_dict(faults)  # validate here, before a subprocess hides the message
    workdir = Path(tempfile.mkdtemp(prefix="rig-divert-"))
    log_path = Path(log_path) if log_path else workdir / "gate.jsonl"
    port_file = workdir / "port"
    cmd = [sys.executable, "-m", "damage_rig.rig.cli", "divert", "emulate",
           "--port-file", str(port_file), "--log", str(log_path),
           "--speed", repr(speed_mps), "--counts-per-m", repr(counts_per_m),
           "--failsafe", failsafe, "--heartbeat-timeout", repr(heartbeat_timeout_s),
           "--heartbeat-ms", repr(heartbeat_ms), "--gates", ",".join(map(str, gates)),
           "--drop", repr(f.drop), "--corrupt", repr(f.corrupt), "--delay-ms", repr(f.delay_ms)]
    if f.silence_after_s is not None:
        cmd += ["--silence-after", repr(f.silence_after_s)]
    if f.silence_for_s is not None:
        cmd += ["--silence-for", repr(f.silence_for_s)]
    if f.seed is not None:
        cmd += ["--seed", str(f.seed)]
    stderr_path = workdir / "stderr.txt"
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl before exec
    deadline = time.monotonic() + start_timeout_s
    while time.monotonic() < deadline:
        if port_file.exists():
            port = port_file.read_text().strip()
            log.info("controller emulator pid %d on %s (log %s)", proc.pid, port, log_path)
            return EmulatorProcess(proc, port, log_path, workdir, stderr_path)
        if proc.poll() is not None:
            raise DeviceError(f"controller emulator exited with code {proc.returncode} before "
                              f"publishing its port: {stderr_path.read_text().strip()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise DeviceError(f"controller emulator did not publish its pty within {start_timeout_s} s "
                      f"(command: {' '.join(cmd)})")
