"""Trigger and tracking: an item is whatever rises above the belt plane.

The trigger camera's depth image (its depth imager, unaligned) is turned into
height above the belt with the calibrated geometry: for a depth pixel with ray
r = K^-1 [u, v, 1] and depth z, the belt-frame point is R (z r) + t, so its
height is z * (R[2] . r) + t_z — one multiply-add per pixel with the per-pixel
factor precomputed. Pixels higher than ``min_height_mm``, or whose 5x5 average
is higher than ``thin_height_mm`` (items from 2 mm), form blobs; each blob
becomes a belt-frame box (extent along x and y, height). Blobs are tracked from
frame to frame by their predicted position (belt speed x elapsed time). A track
is *captured* once, at its best frame: the frame where its centre is nearest
the tunnel centre (x = 0). Release is predictive: a frame is known to be the
best as soon as the next one, predicted from the track's motion and the frame
interval, would be farther from the centre — the item goes on at once instead
of one frame later. A track whose prediction was wrong (or that has no motion
yet) is still released once a frame shows it past the centre, or when it
leaves view.

With ``height_backend`` "cuda" (the rig's preprocessing on the GPU) the height
map is kernels/height.cu on the GPU; the numpy path computes the same formula.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from ..calibration.model import CameraModel
from ..kernels.height import height_map

SUBSAMPLE = 2  # the trigger works on every 2nd pixel: items are large, this is 4x cheaper
MIN_FRAMES = 3  # a track seen in fewer frames is a fragment, not an item
BEST_WITHIN_M = 0.25  # a lost track counts as an item only if it was seen this near the tunnel centre
# pixels whose 5x5-averaged height exceeds this join the item too (thin items, the flat card around
# a blister's domes): at 1 mm sensor noise the average is 7 sigma above a flat belt
THIN_HEIGHT_MM = 1.5
# ... with each pixel's height capped at this many thin levels first (a thin item's own height is
# below it; a tall item's edge can then raise a belt pixel's 5x5 mean by at most 2/5 x 3 mm)
THIN_CAP = 2.0


@dataclass
class Blob:
    x: float  # centre along the belt (m, belt frame)
    y: float
    x_min: float
    x_max: float
    y_min: float
    y_max: float
    height: float  # m
    area_px: int
    touches_edge: bool

    def corners(self) -> np.ndarray:
        pts = [[x, y, z] for x in (self.x_min, self.x_max) for y in (self.y_min, self.y_max)
               for z in (0.0, self.height)]
        return np.array(pts)


@dataclass
class Capture:
    """One item ready for scoring: its frames (held ring slots) and where it was."""

    item_no: int
    frames: dict  # camera -> FrameRef (held: release when done)
    blob: Blob
    host_time: float  # exposure time of the frames (monotonic)
    timestamp_ms: float
    triggered_at: float  # monotonic time the trigger released it


@dataclass
class _Track:
    no: int
    blob: Blob
    t: float
    best: Blob | None = None
    best_frames: dict | None = None
    best_t: float = 0.0
    best_ts: float = 0.0
    seen: int = 1
    captured: bool = False  # its best frame went out; the track stays to absorb its blob


class HeightMapper:
    """Depth (uint16, the camera's units) -> height above the belt and belt-frame x, y (metres)."""

    def __init__(self, depth_cam: CameraModel, depth_units_mm: float, subsample: int = SUBSAMPLE,
                 backend: str | None = None):
        w, h = depth_cam.size
        us, vs = np.meshgrid(np.arange(0, w, subsample, dtype=np.float64),
                             np.arange(0, h, subsample, dtype=np.float64))
        K = depth_cam.K
        rays = np.stack([(us - K[0, 2]) / K[0, 0], (vs - K[1, 2]) / K[1, 1], np.ones_like(us)], -1)
        R, t = depth_cam.T_ref_cam[:3, :3], depth_cam.T_ref_cam[:3, 3]
        scale = depth_units_mm / 1000.0  # raw units -> metres
        self.ax, self.ay, self.az = ((rays @ R[k]) * scale for k in range(3))
        self.ax, self.ay, self.az = (a.astype(np.float32) for a in (self.ax, self.ay, self.az))
        self.t = t.astype(np.float32)
        self.step = subsample
        # kernels/height.cu: the belt plane in the depth camera's frame is R[2] . X + t_z = 0, and a
        # subsampled pixel u' is pixel step * u', i.e. the intrinsics divided by step
        self.backend = backend
        self._units_m = scale
        self._K_sub = K.astype(np.float64).copy()
        self._K_sub[:2] /= subsample
        self._plane = (R[2].astype(np.float64), float(t[2]))

    def __call__(self, depth: np.ndarray):
        sub = depth[:: self.step, :: self.step]
        d = sub.astype(np.float32)
        valid = d > 0
        if self.backend is None:
            height = np.where(valid, d * self.az + self.t[2], 0.0)
        else:
            mm = height_map(np.ascontiguousarray(sub), self._units_m, self._K_sub, *self._plane,
                            backend=self.backend)
            height = np.where(valid, mm * np.float32(0.001), np.float32(0.0))
        return height, valid, d

    def xy(self, d: np.ndarray, rows: np.ndarray, cols: np.ndarray):
        z = d[rows, cols]
        return z * self.ax[rows, cols] + self.t[0], z * self.ay[rows, cols] + self.t[1]


class Trigger:
    def __init__(self, depth_cam: CameraModel, depth_units_mm: float, speed_mps: float,
                 min_height_mm: float = 5.0, min_area_px: int = 400, match_m: float = 0.12,
                 merge_gap_m: float = 0.04, item_numbers=None, n_cameras: int = 1,
                 thin_height_mm: float = THIN_HEIGHT_MM, height_backend: str | None = None):
        self.mapper = HeightMapper(depth_cam, depth_units_mm, backend=height_backend)
        self._last_t: float | None = None  # the previous frame set's time: the frame interval
        self.predicted = 0  # captures released by prediction (the rest: past the centre, or lost)
        self.speed = speed_mps
        self.min_height = min_height_mm / 1000.0
        self.thin_height = thin_height_mm / 1000.0
        self.min_area = max(1, min_area_px // (SUBSAMPLE * SUBSAMPLE))
        self.match_m = match_m
        self.tracks: list[_Track] = []
        self.n_cameras = n_cameras  # a frame set from every camera beats a partial one as "best"
        self._numbers = item_numbers or itertools.count(1)
        self._kernel = np.ones((3, 3), np.uint8)
        R, t = depth_cam.T_ref_cam[:3, :3], depth_cam.T_ref_cam[:3, 3]
        belt_depth_m = -t[2] / R[2, 2]  # along the optical axis to the belt
        gap_px = max(3, int(round(merge_gap_m * depth_cam.K[0, 0] / belt_depth_m / SUBSAMPLE)))
        self._merge = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (gap_px | 1, gap_px | 1))

    def blobs(self, depth: np.ndarray) -> list[Blob]:
        height, valid, d = self.mapper(depth)
        mask = (height > self.min_height).astype(np.uint8)
        if self.thin_height > 0:
            # thin items (a 2.5 mm blister card, a flat mailer) stand out of the depth noise
            # (about 1 mm) only once averaged: a 5x5 mean over valid pixels cuts it 5x
            # heights are capped at THIN_CAP x the thin level before averaging: one tall neighbour
            # must not lift the mean of belt pixels beside a tall item. Unclipped, a 157 mm
            # carton's top edge lifted the belt seen just past it (up to 45 mm away on the belt,
            # behind the item from the camera) into its blob, and its crop box grew by as much
            v = valid.astype(np.float32)
            capped = np.minimum(np.where(valid, height, 0.0), THIN_CAP * self.thin_height)
            num = cv2.blur(capped.astype(np.float32), (5, 5))
            smooth = num / np.maximum(cv2.blur(v, (5, 5)), 1e-3)
            mask |= ((smooth > self.thin_height) & valid).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel)
        # parts of one item (the domes of a blister pack, contents beside a box) are
        # joined when closer than the merge gap; the measurements use the parts only
        joined = cv2.dilate(mask, self._merge)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
        out = []
        hh, ww = mask.shape
        for k in range(1, n):
            x, y, w, h, _ = stats[k]
            part = (labels[y:y + h, x:x + w] == k) & (mask[y:y + h, x:x + w] > 0)
            area = int(part.sum())
            if area < self.min_area:
                continue
            rows, cols = np.nonzero(part & valid[y:y + h, x:x + w])
            if rows.size < 4:
                continue
            rows, cols = rows + y, cols + x
            bx, by = self.mapper.xy(d, rows, cols)
            hs = height[rows, cols]
            out.append(Blob(float(np.median(bx)), float(np.median(by)), float(np.percentile(bx, 1)),
                            float(np.percentile(bx, 99)), float(np.percentile(by, 1)),
                            float(np.percentile(by, 99)), float(np.percentile(hs, 98)), int(area),
                            bool(x == 0 or y == 0 or x + w >= ww or y + h >= hh)))
        return out

    def update(self, frames: dict, depth: np.ndarray, host_time: float, timestamp_ms: float) -> list[Capture]:
        """Feed one synchronised frame set; returns the items captured now.

        ``frames`` are held FrameRefs; the trigger holds those it keeps as a
        track's best frame and releases them when superseded. A captured track
        stays until its item leaves view, so its blob is never taken for a new item.
        """
        blobs = self.blobs(depth)
        frame_dt = None if self._last_t is None else host_time - self._last_t
        self._last_t = host_time
        done: list[Capture] = []
        unmatched = list(range(len(blobs)))
        for tr in list(self.tracks):
            pred = tr.blob.x + self.speed * (host_time - tr.t)
            best_k, best_d = None, self.match_m
            for k in unmatched:
                b = blobs[k]
                dist = abs(b.x - pred) + abs(b.y - tr.blob.y)
                if dist < best_d:
                    best_k, best_d = k, dist
            if best_k is None:
                # lost: it left the view, or it was a fragment of an item entering the view
                # (parts seen apart for a frame, then merged into the item's own track)
                self.tracks.remove(tr)
                if tr.captured or tr.best is None:
                    continue
                if tr.seen >= MIN_FRAMES and abs(tr.best.x) <= BEST_WITHIN_M:
                    done.append(self._capture(tr))
                else:
                    self._drop(tr)
                continue
            unmatched.remove(best_k)
            b = blobs[best_k]
            velocity = self._velocity(tr, b, host_time)
            tr.blob, tr.t, tr.seen = b, host_time, tr.seen + 1
            if tr.captured:
                continue
            if not b.touches_edge and (tr.best is None or self._rank(frames, b) > self._rank(tr.best_frames, tr.best)):
                self._set_best(tr, b, frames, host_time, timestamp_ms)
                if self._next_is_farther(b, frames, velocity, frame_dt):
                    self.predicted += 1
                    done.append(self._capture(tr))  # predicted: no later frame will be nearer
            elif tr.best is not None and b.x > 0 and abs(b.x) > abs(tr.best.x):
                done.append(self._capture(tr))  # past the centre: its best frame is final
        for k in unmatched:
            b = blobs[k]
            if b.x > 0.05:  # appeared past the centre (e.g. after a restart): not ours to judge
                continue
            tr = _Track(next(self._numbers), b, host_time)
            if not b.touches_edge:
                self._set_best(tr, b, frames, host_time, timestamp_ms)
            self.tracks.append(tr)
        return done

    def _velocity(self, tr: _Track, b: Blob, t: float) -> float:
        """The track's speed along the belt (m/s) from its last two positions; the belt's speed when
        there is no usable measurement (first match, or a blob whose centre jumped)."""
        dt = t - tr.t
        if tr.seen < 2 or dt <= 0:
            return self.speed
        v = (b.x - tr.blob.x) / dt
        return v if 0.5 * self.speed <= v <= 2.0 * self.speed else self.speed

    def _next_is_farther(self, b: Blob, frames, velocity: float, frame_dt: float | None) -> bool:
        """This frame is the best one when the next frame, one interval on, shows the item farther
        from the centre (and this frame set is complete: a complete later one would outrank it)."""
        if frame_dt is None or frame_dt <= 0 or len(frames or ()) < self.n_cameras:
            return False
        return abs(b.x + velocity * frame_dt) > abs(b.x)

    def _rank(self, frames, b: Blob) -> tuple:
        """Complete frame sets first, then nearness to the tunnel centre."""
        return (len(frames or ()) >= self.n_cameras, -abs(b.x))

    def _set_best(self, tr: _Track, b: Blob, frames: dict, t: float, ts: float) -> None:
        if tr.best_frames:
            for f in tr.best_frames.values():
                f.release()
        tr.best, tr.best_t, tr.best_ts = b, t, ts
        tr.best_frames = {c: f.hold() for c, f in frames.items()}

    def _drop(self, tr: _Track) -> None:
        for f in (tr.best_frames or {}).values():
            f.release()
        tr.best_frames = None

    def _capture(self, tr: _Track) -> Capture:
        import time

        frames, tr.best_frames = tr.best_frames, None
        tr.captured = True
        return Capture(tr.no, frames, tr.best, tr.best_t, tr.best_ts, time.monotonic())

    def flush(self) -> list[Capture]:
        """Capture every open track that has a best frame (shutdown)."""
        out = [self._capture(tr) for tr in self.tracks if tr.best is not None and not tr.captured]
        self.tracks.clear()
        return out
