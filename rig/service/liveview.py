"""What the rig sees, live: each camera with the belt ROI and the tracked items, the trigger's
height map, and the latest decisions — a page for commissioning (`rig view`).

:class:`LiveView` opens the configured cameras through the same capture
backends as the rig, shows each camera's newest frame (rig/capture/stills.py; unsynchronised: for looking),
and feeds the trigger camera's depth to the rig's own :class:`Trigger` with the
calibrated geometry, so the boxes drawn are the items the rig would capture.
Decisions come from the event log in the state directory (a rig running on
the same state, or an earlier run). :class:`ViewServer` serves it::

    GET /                 the page (static/view.html): snapshots refreshed by fetch()
    GET /snap/CAMERA.jpg  the camera's latest colour frame: belt ROI (blue), tunnel centre,
                          tracked items' boxes (yellow; green once captured), their heights
    GET /snap/height.jpg  the trigger's height above the belt (0..HEIGHT_MAX_MM, JET), items boxed
    GET /api/state        cameras, frame age, tracked items, latest decisions (JSON)

Loopback by default; beyond loopback the review server's guard applies
(rig/review/guard.py: Host/Origin checks, the access token).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import cv2
import numpy as np

from .. import events
from ..capture.stills import StillTaker
from ..foundation.errors import DeviceError, RigError
from ..review import guard as g
from ..review.server import LocalServer
from ..trigger import SUBSAMPLE, Trigger

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parents[1] / "review" / "static"
HEIGHT_MAX_MM = 300.0
BELT_VIEW_M = 1.0  # the belt drawn from -1 m to +1 m around the tunnel centre


class LiveView:
    def __init__(self, cfg, calib, sources, state_dir: Path | None = None, period_s: float = 0.1):
        self.cfg, self.calib, self.sources = cfg, calib, sources
        self.state_dir = state_dir
        self.period_s = period_s
        self.names = [c.name for c in cfg.cameras]
        self.trig_name = cfg.trigger.camera or next((c.name for c in cfg.cameras if c.role == "top"), self.names[0])
        cam = calib.camera(self.trig_name)
        self.depth_cam = cam.depth_imager()
        self.trigger = Trigger(self.depth_cam, cam.depth.depth_units_mm if cam.depth else 1.0,
                               cfg.belt.speed_mps or 0.5, cfg.trigger.min_height_mm, cfg.trigger.min_area_px,
                               thin_height_mm=cfg.trigger.thin_height_mm)
        self.taker = StillTaker(dict(zip(self.names, sources.cameras)), cfg.capture.sync_tolerance_ms)
        self._lock = threading.Lock()
        self._frames: dict = {}
        self._height: np.ndarray | None = None
        self._tracks: list[dict] = []
        self._at = 0.0
        self._sets = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="liveview", daemon=True)

    def start(self) -> LiveView:
        self.sources.begin()
        self.taker.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.taker.stop()
        self.sources.close()

    def _loop(self) -> None:
        last = -1.0
        while not self._stop.is_set():
            try:
                frames = self.taker.latest(self.trig_name, 5.0, after_ms=last)
            except DeviceError as exc:
                self.error = str(exc)
                log.warning("live view: %s", exc)
                if self._stop.wait(1.0):
                    return
                continue
            self.error = None
            ref = frames[self.trig_name]
            last = ref.timestamp_ms
            self.trigger.update({}, ref.depth, ref.host_time, ref.timestamp_ms)
            height, valid, _ = self.trigger.mapper(ref.depth)
            tracks = [{"no": tr.no, "x_m": tr.blob.x, "y_m": tr.blob.y, "height_mm": tr.blob.height * 1000.0,
                       "length_mm": (tr.blob.x_max - tr.blob.x_min) * 1000.0,
                       "width_mm": (tr.blob.y_max - tr.blob.y_min) * 1000.0, "frames": tr.seen,
                       "captured": tr.captured, "corners": tr.blob.corners()} for tr in self.trigger.tracks]
            with self._lock:
                self._frames = frames
                self._height = np.where(valid, height * 1000.0, np.nan)
                self._tracks = tracks
                self._at = time.time()
                self._sets += 1
            self._stop.wait(self.period_s)

    # -- what the page shows ------------------------------------------------------------------------

    def state(self) -> dict:
        with self._lock:
            tracks = [{k: v for k, v in t.items() if k != "corners"} for t in self._tracks]
            at, sets = self._at, self._sets
        return {"cameras": self.names, "trigger_camera": self.trig_name, "trigger_frames": sets,
                "frame_age_s": (time.time() - at) if at else None, "error": self.error,
                "tracks": tracks, "decisions": self.decisions()}

    def decisions(self, n: int = 10) -> list[dict]:
        if self.state_dir is None or not events.db_path(self.state_dir).is_file():
            return []
        try:
            conn = events.connect(self.state_dir, readonly=True)
        except (events.EventLogError, OSError) as exc:
            return [{"error": str(exc)}]
        try:
            rows = conn.execute("SELECT id, captured_at, sku_pred, score, type, decision, reason, latency_ms "
                                "FROM items ORDER BY captured_at DESC, rowid DESC LIMIT ?", (n,)).fetchall()
        finally:
            conn.close()
        return [dict(r) for r in rows]

    def snapshot(self, name: str) -> bytes:
        with self._lock:
            frames, tracks, height = self._frames, self._tracks, self._height
        if name == "height":
            if height is None:
                raise KeyError("no depth frame yet")
            img = self._height_image(height, tracks)
        else:
            if name not in self.names:
                raise KeyError(f"no camera {name!r} (cameras: {', '.join(self.names)})")
            if name not in frames:
                raise KeyError(f"no frame from camera {name!r} yet")
            img = self._camera_image(name, frames[name].color, tracks)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            raise RigError(f"cannot encode the snapshot of {name}")
        return buf.tobytes()

    def _camera_image(self, name: str, rgb: np.ndarray, tracks: list[dict]) -> np.ndarray:
        img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        cam = self.calib.camera(name)
        half = self.cfg.belt.width_m / 2
        xs = np.linspace(-BELT_VIEW_M, BELT_VIEW_M, 41)
        for y in (-half, half):  # the belt's edges
            _polyline(img, cam, np.stack([xs, np.full_like(xs, y), np.zeros_like(xs)], 1), (255, 140, 30), 2)
        ys = np.linspace(-half, half, 11)
        _polyline(img, cam, np.stack([np.zeros_like(ys), ys, np.zeros_like(ys)], 1), (255, 140, 30), 1)
        for t in tracks:
            colour = (60, 200, 60) if t["captured"] else (0, 220, 255)
            uv, z = cam.project(t["corners"])
            if np.any(z <= 0) or not np.all(np.isfinite(uv)):
                continue
            p = np.round(uv).astype(np.int32)
            for a, b in _BOX_EDGES:
                cv2.line(img, tuple(p[a]), tuple(p[b]), colour, 2, cv2.LINE_AA)
            top = tuple(p[np.argmin(p[:, 1])])
            cv2.putText(img, f"#{t['no']} {t['height_mm']:.0f} mm", (top[0], max(14, top[1] - 6)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
        cv2.putText(img, name, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        return img

    def _height_image(self, height_mm: np.ndarray, tracks: list[dict]) -> np.ndarray:
        scaled = np.clip(np.nan_to_num(height_mm, nan=0.0) / HEIGHT_MAX_MM * 255.0, 0, 255).astype(np.uint8)
        img = cv2.applyColorMap(scaled, cv2.COLORMAP_JET)
        img[np.isnan(height_mm)] = 0  # no depth
        img[(~np.isnan(height_mm)) & (height_mm < self.cfg.trigger.min_height_mm)] //= 3  # belt level: dimmed
        img = cv2.resize(img, None, fx=SUBSAMPLE, fy=SUBSAMPLE, interpolation=cv2.INTER_NEAREST)
        for t in tracks:
            uv, z = self.depth_cam.project(t["corners"][::2])  # the footprint
            if np.any(z <= 0) or not np.all(np.isfinite(uv)):
                continue
            x0, y0 = np.floor(uv.min(0)).astype(int)
            x1, y1 = np.ceil(uv.max(0)).astype(int)
            cv2.rectangle(img, (x0, y0), (x1, y1), (255, 255, 255), 2)
            cv2.putText(img, f"#{t['no']}", (x0, max(14, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(img, f"height above the belt, 0..{HEIGHT_MAX_MM:.0f} mm ({self.trig_name})", (8, 22),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        return img


_BOX_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]


def _polyline(img, cam, pts: np.ndarray, colour, thickness: int) -> None:
    uv, z = cam.project(pts)
    keep = (z > 0) & np.all(np.isfinite(uv), axis=1) & np.all(np.abs(uv) < 1e5, axis=1)
    if keep.sum() >= 2:
        cv2.polylines(img, [np.round(uv[keep]).astype(np.int32)], False, colour, thickness, cv2.LINE_AA)


class ViewServer(LocalServer):
    """The live view over HTTP (stdlib), guarded like the review server."""

    thread_name = "view"

    def __init__(self, view: LiveView, port: int = 8090, host: str = "127.0.0.1", token: str | None = None):
        host = host.strip("[]")
        g.Guard(host, 1, token)  # beyond loopback only with a token, checked before binding
        self.view = view
        self._bind(host, port, token, self._handler())

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10.0

            def do_GET(self):
                server._get(self)

            def do_POST(self):
                server._reply(self, 405, json.dumps({"error": "the live view is read-only"}).encode(),
                              "application/json")

            def log_message(self, fmt, *args):
                log.debug("view %s: " + fmt, self.client_address[0], *args)

        return Handler

    def _get(self, h) -> None:
        url = urlsplit(h.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self.guard.check("GET", h.headers, query)
            if not parts:
                if self.token_redirect(h, query):
                    return None
                page = self.guard.page((STATIC / "view.html").read_bytes())
                return self._reply(h, 200, page, "text/html; charset=utf-8", self.guard.cookie_header())
            if len(parts) == 2 and parts[0] == "snap" and parts[1].endswith(".jpg"):
                try:
                    data = self.view.snapshot(parts[1][:-4])
                except KeyError as exc:
                    return self._reply(h, 404, json.dumps({"error": exc.args[0]}).encode(), "application/json")
                return self._reply(h, 200, data, "image/jpeg")
            if parts == ["api", "state"]:
                return self._reply(h, 200, json.dumps(self.view.state()).encode(), "application/json")
            return self._reply(h, 404, json.dumps({"error": f"no page {url.path!r}"}).encode(), "application/json")
        except g.RequestRefused as exc:
            h.close_connection = True
            return self._reply(h, exc.status, json.dumps({"error": str(exc)}).encode(), "application/json")
        except Exception as exc:
            log.exception("view request %s failed", url.path)
            return self._reply(h, 500, json.dumps({"error": f"internal error: {type(exc).__name__}"}).encode(),
                               "application/json")

    @staticmethod
    def _reply(h, status: int, data: bytes, ctype: str, cookie: str | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("X-Content-Type-Options", "nosniff")
        h.send_header("Cache-Control", "no-store")
        if cookie:
            h.send_header("Set-Cookie", cookie)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        try:
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionError, TimeoutError):
            h.close_connection = True
