"""A throw-away PostgreSQL server for the reference-store tests (Debian's postgresql; tools/bootstrap.sh).

PostgreSQL refuses to run as root, so as root the cluster is made and run as ``nobody``
(``runuser``) in a temporary folder handed to that user; otherwise as the current user.
``postgres_skip_reason()`` says why the tests cannot run (no binaries, no psycopg, no way
to drop root), and they skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_USER = "nobody"


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).is_file():
            return str(d / name)
    return None


def postgres_skip_reason() -> str | None:
    if _bin("initdb") is None or _bin("pg_ctl") is None:
        return "PostgreSQL is not installed (Debian's postgresql; tools/bootstrap.sh test installs it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'damage-rig[catalogue]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL cannot drop root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """initdb + pg_ctl in a temporary folder on a free loopback port; ``url`` to connect."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="rig-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.user = PG_USER if self.as_root else os.environ.get("USER") or "postgres"
        if self.as_root:
            os.chmod(self.root, 0o777)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def init(self) -> Postgres:
        r = self._run(_bin("initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                      "--no-sync")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr or r.stdout}")
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                     "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 64MB\n"
                     "max_connections = 50\n")
        return self

    def start(self) -> Postgres:
        r = self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w", "-t", "60",
                      "start")
        if r.returncode != 0:
            log = (self.root / "pg.log").read_text() if (self.root / "pg.log").is_file() else ""
            raise RuntimeError(f"postgres did not start: {r.stderr or r.stdout}\n{log[-2000:]}")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", timeout=60)

    def wait_down(self, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return True
            time.sleep(0.05)
        return False

    def new_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
