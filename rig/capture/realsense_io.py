"""RealSense recordings (.db3) written through pyrealsense2's software_device and read
back through its playback device.

A recording written here is a real librealsense recording: ``rs.align``,
``realsense-viewer`` and the runtime's ``recording`` capture backend read it like one
from a camera. One colour stream (RGB8) and one depth stream (Z16) with the
depth-units option and the depth-to-colour extrinsics.

Pitfalls handled here (pyrealsense2 2.59, measured):

* the recorder writes ROS 2 ``.db3`` files only; a ``.bag`` name is refused;
* in non-real-time playback a frame can be handed over twice and, under CPU load,
  one (usually the first) is occasionally never delivered: :meth:`Recording.frames`
  replays the file until every frame number has been seen, drops repeats, and yields
  frames in frame-number order. The number of frames expected comes from the file
  itself (it is an SQLite database: one message per frame on each image topic).
* recorded extrinsics keep 6 decimals: read them back with
  :attr:`Recording.T_color_depth` instead of reusing the values that were written.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...calibration.model import CameraModel
from ..foundation.errors import DeviceError

log = logging.getLogger(__name__)

MAX_REPLAYS = 8


def import_rs():
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # also catches a missing libusb-1.0 behind the import
        raise DeviceError(
            "pyrealsense2 is not available (" + str(exc) + "): install it with "
            "`pip install 'damage-rig[realsense]'` (and Debian's libusb-1.0-0)") from None
    return rs


def _check_path(path: Path, must_exist: bool) -> None:
    if path.suffix != ".db3":
        raise DeviceError(f"{path}: RealSense recordings are ROS 2 .db3 files (librealsense 2.59 "
                          "refuses other names, .bag included): use a name ending in .db3")
    if must_exist and not path.is_file():
        raise DeviceError(f"recording {path} does not exist")


def _intrinsics(rs, K: np.ndarray, size: tuple[int, int]):
    i = rs.intrinsics()
    i.width, i.height = int(size[0]), int(size[1])
    i.fx, i.fy, i.ppx, i.ppy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    i.model = rs.distortion.none
    i.coeffs = [0.0] * 5
    return i


def intrinsics_K(intr) -> np.ndarray:
    return np.array([[intr.fx, 0.0, intr.ppx], [0.0, intr.fy, intr.ppy], [0.0, 0.0, 1.0]])


def extrinsics_to_T(ext) -> np.ndarray:
    """4x4 matrix of an rs.extrinsics (its rotation is stored column-major)."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(ext.rotation, float).reshape(3, 3).T
    T[:3, 3] = ext.translation
    return T


def write_recording(path, camera: CameraModel, frames: Iterable[tuple[np.ndarray, np.ndarray]],
                    fps: int = 30, serial: str | None = None) -> int:
    """Write ``frames`` ((rgb HxWx3 uint8 RGB, depth uint16) pairs) to the .db3 ``path``.

    The colour stream has ``camera.K``/``camera.size``; the depth stream
    ``camera.depth.K``/``camera.depth.size``, the depth-units option from
    ``camera.depth.depth_units_mm`` and the extrinsics depth -> colour from
    ``camera.depth.T_color_depth``. Frame ``i`` gets frame number ``i`` and timestamp
    ``i * 1000 / fps`` ms on both streams. Returns the number of frames written.
    """
    rs = import_rs()
    path = Path(path)
    _check_path(path, must_exist=False)
    if camera.depth is None:
        raise DeviceError(f"camera {camera.name!r} has no depth model: a recording needs one "
                          "(add cameras.{name}.depth to the calibration)")
    if fps <= 0:
        raise DeviceError(f"fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()  # the recorder appends to nothing: start clean
    cw, ch = (int(v) for v in camera.size)
    dw, dh = (int(v) for v in camera.depth.size)

    dev = rs.software_device()
    dev.register_info(rs.camera_info.name, f"damage-rig software camera {camera.name}")
    dev.register_info(rs.camera_info.serial_number, serial or f"sim-{camera.name}")
    depth_sensor = dev.add_sensor("Depth")
    color_sensor = dev.add_sensor("Color")

    def stream(kind, uid, w, h, bpp, fmt, K):
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid = kind, 0, uid
        vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = w, h, int(fps), bpp, fmt
        vs.intrinsics = _intrinsics(rs, K, (w, h))
        return vs

    depth_profile = depth_sensor.add_video_stream(
        stream(rs.stream.depth, 0, dw, dh, 2, rs.format.z16, camera.depth.K))
    color_profile = color_sensor.add_video_stream(
        stream(rs.stream.color, 1, cw, ch, 3, rs.format.rgb8, camera.K))
    depth_sensor.add_read_only_option(rs.option.depth_units,
                                      float(camera.depth.depth_units_mm) / 1000.0)
    T = np.asarray(camera.depth.T_color_depth, float)
    ext = rs.extrinsics()
    ext.rotation = T[:3, :3].T.ravel().tolist()  # column-major
    ext.translation = T[:3, 3].tolist()
    depth_profile.register_extrinsics_to(color_profile, ext)

    recorder = rs.recorder(str(path), dev)
    depth_sensor.open(depth_profile)
    color_sensor.open(color_profile)
    sink = rs.syncer()
    depth_sensor.start(sink)
    color_sensor.start(sink)
    n = 0
    try:
        for rgb, depth in frames:
            rgb = np.ascontiguousarray(rgb)
            depth = np.ascontiguousarray(depth)
            if rgb.shape != (ch, cw, 3) or rgb.dtype != np.uint8:
                raise DeviceError(f"frame {n}: colour must be uint8 {(ch, cw, 3)}, got "
                                  f"{rgb.dtype} {rgb.shape}")
            if depth.shape != (dh, dw) or depth.dtype != np.uint16:
                raise DeviceError(f"frame {n}: depth must be uint16 {(dh, dw)}, got "
                                  f"{depth.dtype} {depth.shape}")
            ts = n * 1000.0 / fps
            for sensor, profile, pixels, bpp, w in ((depth_sensor, depth_profile, depth, 2, dw),
                                                    (color_sensor, color_profile, rgb, 3, cw)):
                f = rs.software_video_frame()
                f.pixels = pixels
                f.bpp, f.stride = bpp, w * bpp
                f.timestamp = ts
                f.domain = rs.timestamp_domain.hardware_clock
                f.frame_number = n
                f.profile = profile.as_video_stream_profile()
                sensor.on_video_frame(f)
            n += 1
    finally:
        for s in (depth_sensor, color_sensor):
            s.stop()
            s.close()
        del recorder  # flushes and closes the file
    return n


@dataclass
class RecordedFrame:
    index: int  # 0-based frame number
    timestamp_ms: float
    color: np.ndarray  # HxWx3 uint8, RGB
    depth: np.ndarray  # HxW uint16, in depth_units_mm


def _count_image_messages(path: Path) -> dict[str, int]:
    """Frames per stream ('depth', 'color') from the .db3's own message table."""
    counts: dict[str, int] = {}
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT t.name, COUNT(m.id) FROM topics t JOIN messages m ON m.topic_id = t.id "
                "WHERE t.name LIKE '%/image/data%' GROUP BY t.name").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        log.warning("%s: could not count frames from the file (%s); replaying until stable",
                    path, exc)
        return {}
    for name, count in rows:
        stream = name.split("/")[3].lower() if len(name.split("/")) > 3 else name
        kind = "depth" if stream.startswith("depth") else "color" if stream.startswith("color") else None
        if kind:
            counts[kind] = max(counts.get(kind, 0), int(count))
    return counts


class Recording:
    """A .db3 recording opened for non-real-time playback.

    Attributes: ``color_K``, ``color_size`` (w, h), ``depth_K``, ``depth_size``,
    ``depth_units_mm``, ``T_color_depth`` (4x4, depth-camera points -> colour-camera
    points, as read back by ``get_extrinsics_to``), ``serial``, ``frame_count``.
    """

    def __init__(self, path):
        self._rs = rs = import_rs()
        self.path = Path(path)
        _check_path(self.path, must_exist=True)
        try:
            dev = rs.context().load_device(str(self.path))
        except RuntimeError as exc:
            raise DeviceError(f"{self.path}: not a readable RealSense recording ({exc})") from None
        depth_p = color_p = None
        self.depth_units_mm = 1.0
        for sensor in dev.query_sensors():
            for p in sensor.get_stream_profiles():
                if p.stream_type() == rs.stream.depth and depth_p is None:
                    depth_p = p.as_video_stream_profile()
                    if sensor.supports(rs.option.depth_units):
                        self.depth_units_mm = float(sensor.get_option(rs.option.depth_units)) * 1000.0
                elif p.stream_type() == rs.stream.color and color_p is None:
                    color_p = p.as_video_stream_profile()
        if depth_p is None or color_p is None:
            raise DeviceError(f"{self.path}: needs a depth and a colour stream (has "
                              f"depth={depth_p is not None}, colour={color_p is not None})")
        ci, di = color_p.get_intrinsics(), depth_p.get_intrinsics()
        self.color_K, self.color_size = intrinsics_K(ci), (ci.width, ci.height)
        self.depth_K, self.depth_size = intrinsics_K(di), (di.width, di.height)
        self.color_coeffs = list(ci.coeffs)
        self.depth_coeffs = list(di.coeffs)
        self.T_color_depth = extrinsics_to_T(depth_p.get_extrinsics_to(color_p))
        self.depth_units_mm = round(self.depth_units_mm, 6)  # the option is a float32
        info = rs.camera_info.serial_number
        self.serial = dev.get_info(info) if dev.supports(info) else ""
        self.fps = depth_p.fps()
        counts = _count_image_messages(self.path)
        self.frame_count = min(counts.values()) if len(counts) == 2 else None
        del dev

    def _play_once(self, want: set[int], color: dict, depth: dict, stamps: dict,
                   align: bool = False):
        """One pass through the file; store the frames whose numbers are in ``want``
        (with ``align``, the depth is librealsense's rs.align to the colour stream)."""
        rs = self._rs
        cfg = rs.config()
        cfg.enable_device_from_file(str(self.path), repeat_playback=False)
        pipe = rs.pipeline()
        profile = pipe.start(cfg)
        playback = profile.get_device().as_playback()
        playback.set_real_time(False)
        aligner = rs.align(rs.stream.color) if align else None
        try:
            waited = 0
            while True:
                ok, fs = pipe.try_wait_for_frames(100)
                if not ok:
                    waited += 100
                    stopped = playback.current_status() == rs.playback_status.stopped
                    if stopped or waited >= 3000:
                        break
                    continue
                waited = 0
                if aligner is not None:
                    if not (fs.get_depth_frame() and fs.get_color_frame()):
                        continue
                    fs = aligner.process(fs)
                for f in fs:
                    n = f.get_frame_number()
                    if n not in want:
                        continue
                    st = f.get_profile().stream_type()
                    store = depth if st == rs.stream.depth else color if st == rs.stream.color else None
                    if store is None or n in store:
                        continue  # another stream, or a repeat
                    store[n] = np.asanyarray(f.get_data()).copy()
                    stamps.setdefault(n, f.get_timestamp())
                    if n in depth and n in color:
                        yield n
        finally:
            pipe.stop()

    def frames(self, librealsense_aligned: bool = False) -> Iterator[RecordedFrame]:
        """Every frame once, in frame-number order (see the module's pitfalls).

        With ``librealsense_aligned`` the ``depth`` of each frame is pyrealsense2's own
        ``rs.align(rs.stream.color)`` output (colour size) instead of the raw depth.
        """
        color: dict[int, np.ndarray] = {}
        depth: dict[int, np.ndarray] = {}
        stamps: dict[int, float] = {}
        nxt = 0
        total = self.frame_count
        done: set[int] = set()
        for attempt in range(MAX_REPLAYS):
            want = (set(range(total)) if total is not None else _AllInts()) - done
            new = 0
            with closing(self._play_once(want, color, depth, stamps, librealsense_aligned)) as play:
                for _ in play:
                    new += 1
                    while nxt in color and nxt in depth:
                        yield RecordedFrame(nxt, stamps.pop(nxt), color.pop(nxt), depth.pop(nxt))
                        done.add(nxt)
                        nxt += 1
                    if total is not None and nxt >= total:
                        return  # every frame delivered: no need to wait for the end of the file
            if total is not None and nxt >= total:
                return
            if total is None and new == 0 and not color and not depth:
                return  # a pass brought nothing new and nothing is waiting
            log.info("%s: replaying (pass %d): frame %d not delivered yet", self.path, attempt + 2, nxt)
        missing = nxt
        raise DeviceError(f"{self.path}: frame {missing} was never delivered in {MAX_REPLAYS} "
                          "replays; the recording may be truncated")

    def __repr__(self) -> str:
        return (f"Recording({str(self.path)!r}, serial={self.serial!r}, colour {self.color_size}, "
                f"depth {self.depth_size}, frames={self.frame_count})")


class _AllInts:
    """The set of all frame numbers, minus some (when the file does not say how many)."""

    def __init__(self, minus: frozenset = frozenset()):
        self.minus = minus

    def __contains__(self, n) -> bool:
        return n not in self.minus

    def __sub__(self, other):
        return _AllInts(self.minus | frozenset(other))
