"""Optional Prometheus metrics on loopback: GET /metrics, built fresh from the state directory.

Loopback only, by rule: the rig's network is the warehouse's, and nothing here
is meant to be reachable from it; a scraper on the same host (or an SSH
tunnel) reads it.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..foundation.errors import ConfigError
from .report import gather, prometheus_text

log = logging.getLogger(__name__)


def require_loopback(host: str) -> None:
    """Raise ConfigError unless ``host`` is an IPv4 loopback address (127.0.0.0/8) or 'localhost'."""
    try:
        ok = host == "localhost" or (ipaddress.ip_address(host).version == 4
                                     and ipaddress.ip_address(host).is_loopback)
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"refusing to listen on {host!r}: this endpoint is loopback only "
                          "(use 127.0.0.1)")


class MetricsServer:
    def __init__(self, state_dir: str | Path, port: int = 9108, host: str = "127.0.0.1"):
        require_loopback(host)
        state_dir = Path(state_dir)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = prometheus_text(gather(state_dir, recent=0)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                log.debug("metrics %s: " + fmt, self.client_address[0], *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://127.0.0.1:%d/metrics", self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
