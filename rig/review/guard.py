"""What a request must show before the review server acts on it.

A review station's browser also opens other web pages; any of them can send
requests to ``http://127.0.0.1:8080``. So every request is checked:

* ``Host`` must name the address the server is bound to (a DNS-rebinding page
  sends its own name) -> 403;
* ``Origin``, when the browser sends one, must be this server -> 403;
* a state-changing request (POST) must carry the page's CSRF token in an
  ``X-CSRF-Token`` header (the page has it in ``<meta name="csrf-token">``),
  a JSON content type (415 otherwise: a form or ``text/plain`` post is what a
  foreign page can send without asking) and a valid ``Content-Length`` (no
  negative, no chunked, at most ``MAX_BODY`` bytes) -> 400/411/413;
* bound beyond loopback, every request needs the access token
  (``Authorization: Bearer TOKEN``, or the cookie set by opening
  ``/?token=TOKEN`` once, which answers 303 to ``/`` so the token leaves the
  address bar) -> 401.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets

from ..foundation.errors import RigError

MAX_BODY = 64 * 1024
TOKEN_ENV = "RIG_REVIEW_TOKEN"
COOKIE = "rig_review_token"


class RequestRefused(RigError):
    """A request the server will not act on; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("", "0.0.0.0", "::")


def host_port(host: str, port: int) -> str:
    """How a browser writes the address in Host/Origin (IPv6 in brackets)."""
    h = host.strip("[]")
    return f"[{h}]:{port}" if ":" in h else f"{h}:{port}"


class Guard:
    """The checks for one bound server (address, port, optional access token)."""

    def __init__(self, host: str, port: int, token: str | None = None):
        if not is_loopback(host) and not token:
            raise RigError(
                f"refusing to serve the review page on {host!r} (beyond loopback) without an access token: "
                f"set one in the environment ({TOKEN_ENV}=$(openssl rand -hex 16)) or with --token-file FILE, "
                "then open http://HOST:PORT/?token=TOKEN once in the station's browser")
        self.token = token or None
        self.csrf = secrets.token_urlsafe(32)
        self.any_host = is_wildcard(host)
        names = {host_port(host, port)}
        if is_loopback(host):
            names.add(host_port("localhost", port))
        self.hosts = {n.lower() for n in names}

    # -- every request ------------------------------------------------------------------------------

    def check(self, method: str, headers, path_query: dict) -> None:
        host = (headers.get("Host") or "").strip().lower()
        if not self.any_host and host not in self.hosts:
            raise RequestRefused(403, f"Host {host!r} is not this server ({', '.join(sorted(self.hosts))})")
        origin = headers.get("Origin")
        if origin is not None and origin.strip().lower() != f"http://{host}":
            raise RequestRefused(403, f"cross-origin request from {origin!r} refused")
        if (headers.get("Sec-Fetch-Site") or "").lower() == "cross-site":
            raise RequestRefused(403, "cross-site request refused")
        if self.token and not self._has_token(headers, path_query):
            raise RequestRefused(401, "this review server needs its access token: open /?token=TOKEN once, "
                                      "or send 'Authorization: Bearer TOKEN'")
        if method == "POST":
            sent = headers.get("X-CSRF-Token") or ""
            if not hmac.compare_digest(sent.encode(), self.csrf.encode()):
                raise RequestRefused(403, "missing or wrong X-CSRF-Token (reload the page; tools read the "
                                          "token from the page's <meta name=\"csrf-token\">)")

    def _has_token(self, headers, path_query: dict) -> bool:
        offered = []
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            offered.append(auth[7:].strip())
        for part in (headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == COOKIE:
                offered.append(v)
        if "token" in path_query:
            offered.append(path_query["token"])
        return any(hmac.compare_digest(t.encode(), self.token.encode()) for t in offered)

    def cookie_header(self) -> str | None:
        """Set-Cookie for the page, so its own API calls carry the access token."""
        if not self.token:
            return None
        return f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"

    def page(self, html: bytes) -> bytes:
        """The page with this server's CSRF token in a meta tag."""
        meta = f'<meta name="csrf-token" content="{self.csrf}">'.encode()
        return html.replace(b'<meta charset="utf-8">', b'<meta charset="utf-8">\n' + meta, 1)


def read_json_body(headers, rfile) -> dict:
    """The request's JSON object, after checking its type and length."""
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise RequestRefused(415, f"Content-Type must be application/json, got {ctype or 'none'!r}")
    if headers.get("Transfer-Encoding"):
        raise RequestRefused(411, "chunked bodies are not accepted: send Content-Length")
    raw = headers.get("Content-Length")
    if raw is None:
        raise RequestRefused(411, "Content-Length is required")
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 12:
        raise RequestRefused(400, f"Content-Length must be a non-negative integer, got {raw!r}")
    n = int(raw)
    if n > MAX_BODY:
        raise RequestRefused(413, f"request body of {n} bytes is larger than {MAX_BODY}")
    try:
        data = rfile.read(n) if n else b""
    except TimeoutError:
        raise RequestRefused(408, f"request body of {n} bytes did not arrive in time") from None
    if len(data) != n:
        raise RequestRefused(400, f"request body ended after {len(data)} of {n} bytes")
    try:
        body = json.loads(data or b"{}")
    except (ValueError, RecursionError) as exc:
        raise RequestRefused(400, f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestRefused(400, "request body must be a JSON object")
    return body


def field(body: dict, key: str, kind: type, required: bool = False, max_len: int = 200):
    """A typed field of a JSON body (``None`` when absent and optional); 400 on a wrong type."""
    v = body.get(key)
    if v is None:
        if required:
            raise RequestRefused(400, f"missing {key!r}")
        return None
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise RequestRefused(400, f"{key!r} must be an integer, got {type(v).__name__}")
    if kind is str and not isinstance(v, str):
        raise RequestRefused(400, f"{key!r} must be a string, got {type(v).__name__}")
    if kind is str and (len(v) > max_len or (required and not v)):
        raise RequestRefused(400, f"{key!r} must be 1..{max_len} characters")
    if kind is int and not -2**62 < v < 2**62:
        raise RequestRefused(400, f"{key!r} out of range")
    return v
