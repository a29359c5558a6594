"""The review terminal's web server: stdlib http.server on loopback, a JSON API and one page.

API (all JSON; errors are ``{"error": message}`` with the status below)::

    GET  /                              the page (static/index.html)
    GET  /api/items?unreviewed=1&limit=N   diverted items, newest first, + damage types + drift flags
    GET  /api/items/ID                  one item                              404 unknown id
    POST /api/items/ID/label            {"verdict": damaged|not_damaged|packaging_changed,
                                         "type": DAMAGE_TYPE (damaged only, optional),
                                         "rev": label revision the page showed, "reviewer": name}
                                        400 bad body, 404 unknown id, 409 never diverted / stale page
    GET  /img/ID/VIEW.jpg               the view's crop; VIEW.overlay.jpg with the heatmap blended in
    GET  /api/drift                     SKUs flagged for packaging drift
    GET  /api/gallery/versions          gallery versions, oldest first
    POST /api/gallery/enroll            {"sku": S} enroll the SKU's reviewed images as references
    POST /api/gallery/rollback          {"version": V} (no version: undo the last change)

Loopback by default: a station's browser runs on the same machine; exposing
it further is a deliberate --host choice and needs an access token. Every
request is checked first (rig/review/guard.py: Host, Origin, CSRF token, JSON
content type, body length); a refused one gets ``{"error": ...}`` with 400,
401, 403, 411, 413 or 415. ``limit`` is clamped to 1..MAX_LIMIT.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from ..dataset import DAMAGE_TYPES
from ..events import EventLogError, UnknownItemError
from ..foundation.errors import ModelError, RigError
from . import enroll
from . import guard as g
from .store import BadLabelError, ReviewError, ReviewStore

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = g.MAX_BODY
MAX_LIMIT = 1000
#: seconds a connection may sit idle or trickle a request before it is closed
IDLE_TIMEOUT_S = 10.0


def public_item(row: dict) -> dict:
    """What the page sees: no filesystem paths, image URLs instead."""
    views = {}
    for v in row["views"]:
        c = row["crops"].get(v, {})
        have = bool(c.get("rgb")) and not row["crops_deleted"]
        views[v] = {"image": f"/img/{row['id']}/{v}.jpg" if have else None,
                    "overlay": f"/img/{row['id']}/{v}.overlay.jpg" if have and c.get("heatmap") else None}
    keep = ("id", "captured_at", "sku_pred", "sku_conf", "score", "type", "decision", "reason", "acked",
            "model_version", "label", "label_type", "labelled_at", "reviewer", "label_rev", "latency_ms")
    return {**{k: row[k] for k in keep}, "views": views}


def overlay_jpeg(rgb_path: str, heat_path: str | None, heat_max: float | None = None,
                 full_scale: float = 1.0, alpha: float = 0.55) -> bytes:
    """The crop with its heatmap (JET colours) blended where the heat is, as JPEG bytes.

    The stored heatmap is scaled to its own maximum (``heat_max``); the blend
    weight puts it back on an absolute scale (``full_scale`` = fully coloured),
    so a flat, low heatmap does not paint the whole crop red.
    """
    import cv2

    img = cv2.imread(rgb_path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(rgb_path)
    if heat_path:
        heat = cv2.imread(heat_path, cv2.IMREAD_GRAYSCALE)
        if heat is not None:
            heat = cv2.resize(heat, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
            colour = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
            gain = min(1.0, (heat_max if heat_max is not None else full_scale) / full_scale)
            w = (alpha * gain * heat.astype(np.float32) / 255.0)[..., None]
            img = (img * (1 - w) + colour * w).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError(f"cannot encode the overlay of {rgb_path}")
    return buf.tobytes()


class ReviewServer:
    def __init__(self, state_dir: str | Path, port: int = 8080, host: str = "127.0.0.1",
                 model_dir: str | Path | None = None, token: str | None = None, catalogue: str | None = None):
        host = host.strip("[]")
        g.Guard(host, 1, token)  # refuse a bind beyond loopback without a token before opening anything
        self.store = ReviewStore(state_dir)
        self.model_dir = Path(model_dir) if model_dir else None
        self.catalogue = catalogue  # the site's reference store URL (config gallery.store): enrollments go there too
        self.httpd = _server_class(host)((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self.guard = g.Guard(host, self.port, token)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{g.host_port(self.host, self.port)}/"

    def start(self) -> ReviewServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,), name="review",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.close()

    # -- request handling ---------------------------------------------------------------------

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = IDLE_TIMEOUT_S  # an idle or trickling client is cut off, not waited for

            def do_GET(self):
                server._dispatch(self, "GET")

            def do_POST(self):
                server._dispatch(self, "POST")

            def log_message(self, fmt, *args):
                log.debug("review %s: " + fmt, self.client_address[0], *args)

        return Handler

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self.guard.check(method, h.headers, query)
            if method == "GET" and not parts:
                page = self.guard.page((STATIC / "index.html").read_bytes())
                return self._send(h, 200, page, "text/html; charset=utf-8", cookie=self.guard.cookie_header())
            if method == "GET" and len(parts) == 3 and parts[0] == "img":
                return self._image(h, parts[1], parts[2])
            if parts[:1] != ["api"]:
                raise _NotFound(f"no page {url.path!r}")
            body = g.read_json_body(h.headers, h.rfile) if method == "POST" else {}
            result = self._api(method, parts[1:], query, body)
            return self._send_json(h, 200, result)
        except g.RequestRefused as exc:
            h.close_connection = True  # the body may be unread: never parse it as the next request
            return self._send_json(h, exc.status, {"error": str(exc)})
        except (TimeoutError, ConnectionError):
            h.close_connection = True
        except _NotFound as exc:
            return self._send_json(h, 404, {"error": str(exc)})
        except UnknownItemError as exc:
            return self._send_json(h, 404, {"error": str(exc)})
        except ReviewError as exc:
            return self._send_json(h, exc.http_status, {"error": str(exc)})
        except ModelError as exc:
            return self._send_json(h, 503, {"error": str(exc)})
        except (EventLogError, RigError) as exc:
            log.error("review request %s %s failed: %s", method, url.path, exc)
            return self._send_json(h, 500, {"error": str(exc)})
        except Exception as exc:
            log.exception("review request %s %s failed", method, url.path)
            return self._send_json(h, 500, {"error": f"internal error: {type(exc).__name__}"})

    def _api(self, method: str, parts: list[str], query: dict, body: dict):
        st = self.store
        if method == "GET" and parts == ["items"]:
            limit = min(max(_int(query.get("limit", "200"), "limit"), 1), MAX_LIMIT)
            rows = st.diverted(limit, unreviewed_only=query.get("unreviewed") in ("1", "true"))
            return {"items": [public_item(r) for r in rows], "damage_types": list(DAMAGE_TYPES),
                    "drift": st.drift()}
        if method == "GET" and len(parts) == 2 and parts[0] == "items":
            return public_item(st.item(parts[1]))
        if method == "POST" and len(parts) == 3 and parts[0] == "items" and parts[2] == "label":
            verdict = g.field(body, "verdict", str, required=True)
            rev = g.field(body, "rev", int)
            row = st.label(parts[1], verdict, g.field(body, "type", str), rev, g.field(body, "reviewer", str))
            return public_item(row)
        if method == "GET" and parts == ["drift"]:
            return {"drift": st.drift()}
        if parts[:1] == ["gallery"]:
            if method == "GET" and parts == ["gallery", "versions"]:
                return {"versions": enroll.versions(self._model_dir())}
            if method == "POST" and parts == ["gallery", "enroll"]:
                sku = g.field(body, "sku", str, required=True)
                return enroll.enroll_reviewed(st, self._model_dir(), sku, self.catalogue)
            if method == "POST" and parts == ["gallery", "rollback"]:
                version = g.field(body, "version", str)
                return enroll.rollback(st, self._model_dir(), version)
        raise _NotFound(f"no API {method} /api/{'/'.join(parts)}")

    def _model_dir(self) -> Path:
        if self.model_dir is None:
            raise ModelError("the review server was started without a model directory (--config or --model), "
                             "so the gallery cannot be changed from here")
        return self.model_dir

    def _image(self, h, item_id: str, name: str) -> None:
        row = self.store.item(item_id)
        overlay = name.endswith(".overlay.jpg")
        view = name[: -len(".overlay.jpg")] if overlay else name.removesuffix(".jpg")
        c = row["crops"].get(view)
        if c is None or not c.get("rgb") or row["crops_deleted"]:
            raise _NotFound(f"item {item_id!r} has no stored crop for view {view!r} "
                            "(not saved, or removed by retention)")
        try:
            data = overlay_jpeg(c["rgb"], c.get("heatmap"), c.get("heat_max")) if overlay else Path(c["rgb"]).read_bytes()
        except FileNotFoundError:
            raise _NotFound(f"crop of item {item_id!r} view {view!r} is gone from disk") from None
        self._send(h, 200, data, "image/jpeg", cache=True)

    @staticmethod
    def _send(h, status: int, data: bytes, ctype: str, cache: bool = False, cookie: str | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("X-Content-Type-Options", "nosniff")
        h.send_header("X-Frame-Options", "DENY")
        if cookie:
            h.send_header("Set-Cookie", cookie)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        h.end_headers()
        try:
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionError, TimeoutError):
            h.close_connection = True  # the client went away: nothing to answer

    def _send_json(self, h, status: int, obj) -> None:
        self._send(h, status, json.dumps(obj).encode(), "application/json")


class _NotFound(RigError):
    pass


def _server_class(host: str):
    """ThreadingHTTPServer for the address family of ``host`` (IPv6 loopback included)."""
    if ":" not in host:
        return ThreadingHTTPServer

    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    return V6


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadLabelError(f"{name} must be an integer, got {value!r}") from None
