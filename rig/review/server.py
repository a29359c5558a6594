"""The review terminal's web server: stdlib http.server on loopback, a JSON API and one page.

API (all JSON; errors are ``{"error": message}`` with the status below)::

    GET  /                              the page (static/index.html)
    GET  /api/items?unreviewed=1&limit=N   diverted items, newest first, + damage types + drift flags
    GET  /api/items/ID                  one item                              404 unknown id
    POST /api/items/ID/label            {"verdict": damaged|not_damaged|packaging_changed,
                                         "type": DAMAGE_TYPE (damaged only, optional),
                                         "rev": label revision the page showed, "reviewer": name (required)}
                                        400 bad body / no reviewer, 404 unknown id, 409 never diverted / stale page
    POST /api/items/ID/mask             {"view": V, "shapes": [...], "reviewer": name} where the damage is
                                        (rig/review/masks.py); no shapes clears it
    GET  /api/items/ID/mask/VIEW        {"shapes": [...], "reviewer": name} of the view's stored mask
    GET  /img/ID/VIEW.jpg               the view's crop; VIEW.overlay.jpg with the heatmap blended in;
                                        VIEW.mask.png the reviewer's damage mask
    GET  /ref/SKU/VIEW.jpg              the product's reference image for that view (rig/review/references.py)
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
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np

from ..dataset import DAMAGE_TYPES
from ..events import EventLogError, UnknownItemError
from ..foundation.errors import ModelError, RigError
from . import enroll
from . import guard as g
from .masks import MaskStore, parse_shapes
from .references import References
from .store import BadLabelError, NotDivertedError, ReviewError, ReviewStore

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = g.MAX_BODY
MAX_LIMIT = 1000
#: seconds a connection may sit idle or trickle a request before it is closed
IDLE_TIMEOUT_S = 10.0


def public_item(row: dict, masks: MaskStore | None = None) -> dict:
    """What the page sees: no filesystem paths, image URLs instead."""
    views = {}
    masked = set(masks.views(row["id"])) if masks is not None else set()
    for v in row["views"]:
        c = row["crops"].get(v, {})
        have = bool(c.get("rgb")) and not row["crops_deleted"]
        views[v] = {"image": f"/img/{row['id']}/{v}.jpg" if have else None,
                    "overlay": f"/img/{row['id']}/{v}.overlay.jpg" if have and c.get("heatmap") else None,
                    "mask": f"/img/{row['id']}/{v}.mask.png?n={_mask_stamp(masks, row['id'], v)}"
                            if v in masked else None,
                    "reference": f"/ref/{quote(row['sku_pred'])}/{quote(v)}.jpg"}
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


class LocalServer:
    """A stdlib HTTP server on ``host:port`` with its request guard (guard.py), served from a
    thread (:meth:`start`) or the foreground (:meth:`serve_forever`)."""

    thread_name = "http"

    def _bind(self, host: str, port: int, token: str | None, handler) -> None:
        self.httpd = server_class(host)((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self.guard = g.Guard(host, self.port, token)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{g.host_port(self.host, self.port)}/"

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,), name=self.thread_name,
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def serve_until_interrupted(self) -> None:
        """Serve in the foreground until Ctrl-C, then stop (the CLI's servers)."""
        try:
            self.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def token_redirect(self, h, query: dict) -> bool:
        """``/?token=TOKEN`` (the guard has checked it): set the cookie and send the browser on to ``/``,
        so the token leaves the station's address bar and history. False when there is nothing to do."""
        if "token" not in query or not self.guard.token:
            return False
        h.send_response(303)
        h.send_header("Location", "/")
        h.send_header("Set-Cookie", self.guard.cookie_header())
        h.send_header("Cache-Control", "no-store")
        h.send_header("Content-Length", "0")
        h.end_headers()
        return True

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class ReviewServer(LocalServer):
    thread_name = "review"

    def __init__(self, state_dir: str | Path, port: int = 8080, host: str = "127.0.0.1",
                 model_dir: str | Path | None = None, token: str | None = None,
                 references: str | Path | None = None, catalogue: str | None = None):
        host = host.strip("[]")
        g.Guard(host, 1, token)  # refuse a bind beyond loopback without a token before opening anything
        self.store = ReviewStore(state_dir)
        self.model_dir = Path(model_dir) if model_dir else None
        self.catalogue = catalogue  # the site's reference store URL (config gallery.store): enrollments go there too
        self.masks = MaskStore(self.store.state_dir)
        self.references = References(self.store, self.model_dir, Path(references) if references else None)
        self._bind(host, port, token, self._handler())

    def stop(self) -> None:
        super().stop()
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
                if self.token_redirect(h, query):
                    return None
                page = self.guard.page((STATIC / "index.html").read_bytes())
                return self._send(h, 200, page, "text/html; charset=utf-8", cookie=self.guard.cookie_header())
            if method == "GET" and len(parts) == 3 and parts[0] == "img":
                return self._image(h, parts[1], parts[2])
            if method == "GET" and len(parts) == 3 and parts[0] == "ref":
                return self._reference(h, parts[1], parts[2])
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
            return {"items": [public_item(r, self.masks) for r in rows], "damage_types": list(DAMAGE_TYPES),
                    "drift": st.drift()}
        if method == "GET" and len(parts) == 2 and parts[0] == "items":
            return public_item(st.item(parts[1]), self.masks)
        if method == "POST" and len(parts) == 3 and parts[0] == "items" and parts[2] == "label":
            verdict = g.field(body, "verdict", str, required=True)
            rev = g.field(body, "rev", int)
            row = st.label(parts[1], verdict, g.field(body, "type", str), rev, _reviewer(body))
            return public_item(row, self.masks)
        if method == "POST" and len(parts) == 3 and parts[0] == "items" and parts[2] == "mask":
            return self._save_mask(parts[1], body)
        if method == "GET" and len(parts) == 4 and parts[0] == "items" and parts[2] == "mask":
            st.item(parts[1])  # 404 for an unknown item
            info = self.masks.info(parts[1], parts[3]) or {}
            return {"view": parts[3], "shapes": info.get("shapes", []), "reviewer": info.get("reviewer")}
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

    def _save_mask(self, item_id: str, body: dict) -> dict:
        reviewer = _reviewer(body)
        view = g.field(body, "view", str, required=True, max_len=64)
        shapes = parse_shapes(body.get("shapes"))
        row = self.store.item(item_id)
        if row["decision"] != "divert":
            raise NotDivertedError(f"item {item_id!r} was never diverted: only diverted items are reviewed")
        c = row["crops"].get(view)
        if c is None or not c.get("rgb") or row["crops_deleted"]:
            raise _NotFound(f"item {item_id!r} has no stored crop for view {view!r}")
        import cv2

        img = cv2.imread(c["rgb"], cv2.IMREAD_UNCHANGED)
        if img is None:
            raise _NotFound(f"crop of item {item_id!r} view {view!r} is gone from disk")
        mask = self.masks.save(item_id, view, shapes, (img.shape[1], img.shape[0]), reviewer)
        share = 0.0 if mask is None else float((mask > 0).mean())
        log.info("mask of %s/%s by %s: %.1f %% of the crop", item_id, view, reviewer, 100 * share)
        return {"item": public_item(self.store.item(item_id), self.masks), "view": view, "share": share}

    def _reference(self, h, sku: str, name: str) -> None:
        view = name.removesuffix(".jpg")
        path = self.references.find(sku, view)
        if path is None:
            raise _NotFound(f"no reference image of SKU {sku!r} for view {view!r} (no --references folder "
                            "entry, gallery source on disk, or crop reviewed as fine)")
        try:
            data = path.read_bytes()
        except OSError:
            raise _NotFound(f"reference image of {sku!r} is gone from disk") from None
        ctype = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        self._send(h, 200, data, ctype)

    def _model_dir(self) -> Path:
        if self.model_dir is None:
            raise ModelError("the review server was started without a model directory (--config or --model), "
                             "so the gallery cannot be changed from here")
        return self.model_dir

    def _image(self, h, item_id: str, name: str) -> None:
        row = self.store.item(item_id)
        if name.endswith(".mask.png"):
            path = self.masks.path(item_id, name.removesuffix(".mask.png"))
            if path is None:
                raise _NotFound(f"item {item_id!r} has no mask for view {name.removesuffix('.mask.png')!r}")
            return self._send(h, 200, path.read_bytes(), "image/png")
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


def server_class(host: str):
    """ThreadingHTTPServer for the address family of ``host`` (IPv6 loopback included)."""
    if ":" not in host:
        return ThreadingHTTPServer

    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    return V6


def _reviewer(body: dict) -> str:
    name = g.field(body, "reviewer", str, max_len=80)
    if name is None or not name.strip():
        raise BadLabelError("'reviewer' is required: every label carries the reviewer's name (the page asks "
                            "for it once)")
    return name.strip()


def _mask_stamp(masks: MaskStore, item_id: str, view: str) -> int:
    p = masks.path(item_id, view)
    return int(p.stat().st_mtime_ns // 1_000_000) if p is not None else 0


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadLabelError(f"{name} must be an integer, got {value!r}") from None
