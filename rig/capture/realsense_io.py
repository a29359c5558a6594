"""RealSense recordings (.db3) written through pyrealsense2's software_device and read
back through its playback device.

A recording written here is a real librealsense recording: ``rs.align``,
``realsense-viewer`` and the runtime's ``recording`` capture backend read it like one
from a camera. One colour stream (RGB8) and one depth stream (Z16) with the
depth-units option and the depth-to-colour extrinsics.

Pitfalls handled here (pyrealsense2 2.59, measured):

* the recorder writes ROS 2 ``.db3`` files only; a ``.bag`` name is refused;
* in non-real-time playback a frame can be handed over twice and one (usually the
  first) is sometimes never delivered, far more often through ``rs.pipeline`` than with
  the sensors started straight into an ``rs.syncer`` (done here): :meth:`Recording.frames`
  replays the file until every frame has been seen, drops repeats, and yields frames in
  the recording's order;
* frame numbers are the camera's own counter: any start, gaps, repeats. The frames
  expected (number and timestamp per stream) come from the file itself: it is an SQLite
  database with one metadata message per frame (``Frame number=N;...;timestamp=T``).
  A .bag (ROS 1) is read where the installed librealsense can; it does not list its
  frames here, so it is played until a pass brings nothing new.
* recorded extrinsics keep 6 decimals: read them back with
  :attr:`Recording.T_color_depth` instead of reusing the values that were written.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...calibration.model import CameraModel
from ..foundation.errors import DeviceError

log = logging.getLogger(__name__)

MAX_REPLAYS = 8
ALIGNED_PASSES = 3  # librealsense_aligned: passes before a frame never held in one frameset is left out
SYNC_QUEUE = 64  # framesets the syncer holds for the reader


def _stop(sensors) -> None:
    for sensor in sensors:
        try:
            sensor.stop()
            sensor.close()
        except RuntimeError as exc:  # already stopped by the end of the file
            log.debug("stopping a playback sensor: %s", exc)


def import_rs():
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # also catches a missing libusb-1.0 behind the import
        raise DeviceError(
            "pyrealsense2 is not available (" + str(exc) + "): install it with "
            "`pip install 'damage-rig[realsense]'` (and Debian's libusb-1.0-0)") from None
    return rs


RECORDING_SUFFIXES = (".db3", ".bag")


def _check_path(path: Path, must_exist: bool) -> None:
    if must_exist:  # reading: ROS 2 .db3, and ROS 1 .bag where the installed librealsense reads them
        if path.suffix not in RECORDING_SUFFIXES:
            raise DeviceError(f"{path}: not a RealSense recording (expected a .db3 or .bag file)")
        if not path.is_file():
            raise DeviceError(f"recording {path} does not exist")
    elif path.suffix != ".db3":
        raise DeviceError(f"{path}: RealSense recordings are ROS 2 .db3 files (librealsense 2.59 "
                          "refuses other names, .bag included): use a name ending in .db3")


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
                    fps: int = 30, serial: str | None = None,
                    frame_numbers: Sequence[int] | None = None) -> int:
    """Write ``frames`` ((rgb HxWx3 uint8 RGB, depth uint16) pairs) to the .db3 ``path``.

    The colour stream has ``camera.K``/``camera.size``; the depth stream
    ``camera.depth.K``/``camera.depth.size``, the depth-units option from
    ``camera.depth.depth_units_mm`` and the extrinsics depth -> colour from
    ``camera.depth.T_color_depth``. Frame ``i`` gets frame number ``i`` (or
    ``frame_numbers[i]``, as a camera's own counter would: any start, gaps, repeats) and
    timestamp ``number * 1000 / fps`` ms on both streams. Returns the number of frames written.
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
            if frame_numbers is not None and n >= len(frame_numbers):
                raise DeviceError(f"frame {n}: only {len(frame_numbers)} frame numbers were given")
            number = n if frame_numbers is None else int(frame_numbers[n])
            ts = number * 1000.0 / fps
            for sensor, profile, pixels, bpp, w in ((depth_sensor, depth_profile, depth, 2, dw),
                                                    (color_sensor, color_profile, rgb, 3, cw)):
                f = rs.software_video_frame()
                f.pixels = pixels
                f.bpp, f.stride = bpp, w * bpp
                f.timestamp = ts
                f.domain = rs.timestamp_domain.hardware_clock
                f.frame_number = number
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
    index: int  # the recording's own frame number (depth stream): any start, gaps
    timestamp_ms: float
    color: np.ndarray  # HxWx3 uint8, RGB
    depth: np.ndarray  # HxW uint16, in depth_units_mm
    occurrence: int = 0  # > 0 for a later frame that carries an earlier frame's number

    @property
    def name(self) -> str:
        """A file-name stem unique within the recording: ``12``, or ``12_1`` for a second frame numbered 12."""
        return f"{self.index}_{self.occurrence}" if self.occurrence else str(self.index)


_FRAME_NUMBER = re.compile(r"Frame number=(\d+)")
_TIMESTAMP = re.compile(r"(?:^|;)timestamp=([-+0-9.eE]+)")
Key = tuple[int, float]  # (frame number, timestamp in ms rounded to 1 us): one frame of one stream


def _key(number, timestamp_ms) -> Key:
    return int(number), round(float(timestamp_ms), 3)


def _frame_keys(path: Path) -> dict[str, list[Key]]:
    """Each stream's frames ('depth', 'color') in file order, from the .db3's metadata messages.

    librealsense writes one metadata message per frame (``Frame number=N;...;timestamp=T;``);
    a message repeated with the same number and timestamp is the same frame handed over twice.
    Empty when the file is not a .db3 (or says nothing usable).
    """
    if path.suffix != ".db3":
        return {}
    keys: dict[str, list[Key]] = {}
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT t.name, m.data FROM topics t JOIN messages m ON m.topic_id = t.id "
                "WHERE t.name LIKE '%/image/metadata' ORDER BY m.timestamp, m.id").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        log.warning("%s: could not read the frame numbers from the file (%s); playing it through", path, exc)
        return {}
    seen: set[tuple[str, Key]] = set()
    for name, data in rows:
        parts = name.split("/")
        stream = parts[3].lower() if len(parts) > 3 else ""
        kind = "depth" if stream.startswith("depth") else "color" if stream.startswith("color") else None
        text = bytes(data).decode("latin-1")
        number, stamp = _FRAME_NUMBER.search(text), _TIMESTAMP.search(text)
        if kind is None or number is None or stamp is None:
            continue
        k = _key(number.group(1), stamp.group(1))
        if (kind, k) not in seen:
            seen.add((kind, k))
            keys.setdefault(kind, []).append(k)
    return keys if len(keys) == 2 else {}


def _pair(depth_keys: list[Key], color_keys: list[Key]) -> list[tuple[Key, Key]]:
    """Each depth frame with its colour frame: the same number and time when the streams share a
    counter (as the recorder here and a software device do), else the colour frame nearest in time."""
    if not color_keys:
        return []
    exact = set(color_keys)
    stamps = np.array([k[1] for k in color_keys])
    plan = []
    for d in depth_keys:
        c = d if d in exact else color_keys[int(np.abs(stamps - d[1]).argmin())]
        plan.append((d, c))
    return plan


class Recording:
    """A recording (.db3; .bag where the installed librealsense reads it) opened for
    non-real-time playback.

    Attributes: ``color_K``, ``color_size`` (w, h), ``depth_K``, ``depth_size``,
    ``depth_units_mm``, ``T_color_depth`` (4x4, depth-camera points -> colour-camera
    points, as read back by ``get_extrinsics_to``), ``serial``, ``frame_count`` (None
    when the file does not list its frames), ``frame_numbers`` (the depth stream's, in order).
    """

    def __init__(self, path):
        self._rs = rs = import_rs()
        self.path = Path(path)
        _check_path(self.path, must_exist=True)
        try:
            dev = rs.context().load_device(str(self.path))
        except RuntimeError as exc:
            if self.path.suffix == ".bag":
                raise DeviceError(
                    f"{self.path}: the installed pyrealsense2 ({getattr(rs, '__version__', '?')}) cannot read "
                    f"this .bag recording ({exc}); librealsense 2.56 and later read and write ROS 2 .db3 files: "
                    "record it again as .db3 (realsense-viewer or `rs-record`), or play it with the "
                    "librealsense version that wrote it") from None
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
        keys = _frame_keys(self.path)
        self._plan = _pair(keys["depth"], keys["color"]) if keys else None
        self.frame_count = len(self._plan) if self._plan is not None else None
        self.frame_numbers = [d[0] for d, _ in self._plan] if self._plan is not None else None
        del dev

    def _play_once(self, want, color: dict, depth: dict, align: bool = False):
        """One pass through the file; store the frames (by key) that ``want(stream, key)`` asks for
        (with ``align``, the depth is librealsense's rs.align to the colour stream). Yields after
        each frame stored."""
        rs = self._rs
        try:
            dev = rs.context().load_device(str(self.path))
        except RuntimeError as exc:
            raise DeviceError(f"{self.path}: librealsense cannot play it back ({exc})") from None
        playback = dev.as_playback()
        playback.set_real_time(False)
        # the sensors straight into a syncer: through rs.pipeline the first frames are often lost
        # (measured: frame 0 missing in 5 of 10 passes, 9 of 10 when numbered from 1000; here 0 of 10)
        sync = rs.syncer(SYNC_QUEUE)
        sensors = dev.query_sensors()
        started = []
        try:
            for sensor in sensors:
                sensor.open(sensor.get_stream_profiles())
                sensor.start(sync)
                started.append(sensor)
        except RuntimeError as exc:
            _stop(started)
            raise DeviceError(f"{self.path}: librealsense cannot play it back ({exc})") from None
        aligner = rs.align(rs.stream.color) if align else None
        try:
            waited = 0
            while True:
                ok, fs = sync.try_wait_for_frames(100)
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
                    st = f.get_profile().stream_type()
                    kind, store = (("depth", depth) if st == rs.stream.depth else
                                   ("color", color) if st == rs.stream.color else (None, None))
                    if kind is None:
                        continue
                    k = _key(f.get_frame_number(), f.get_timestamp())
                    if k in store or not want(kind, k):
                        continue  # a repeat, or a frame already yielded
                    store[k] = np.asanyarray(f.get_data()).copy()
                    yield kind, k
        finally:
            _stop(started)

    def frames(self, librealsense_aligned: bool = False) -> Iterator[RecordedFrame]:
        """Every frame once, in the recording's order (see the module's pitfalls): frame numbers
        may start anywhere and have gaps; a frame handed over twice is yielded once.

        With ``librealsense_aligned`` the ``depth`` of each frame is pyrealsense2's own
        ``rs.align(rs.stream.color)`` output (colour size) instead of the raw depth. rs.align
        needs depth and colour in one frameset, and the syncer often hands the first frame's
        over as two: frames it never pairs after ``ALIGNED_PASSES`` passes are left out
        (logged), so compare by ``name``.
        """
        if self._plan is None:
            yield from self._frames_unlisted(librealsense_aligned)
            return
        plan = self._plan
        color: dict[Key, np.ndarray] = {}
        depth: dict[Key, np.ndarray] = {}
        need_d = {d for d, _ in plan}
        need_c = {c for _, c in plan}
        last_use = {c: i for i, (_, c) in enumerate(plan)}  # a colour frame may serve several depth frames
        seen: dict[int, int] = {}
        nxt = 0

        def want(kind, k):
            return k in (need_d if kind == "depth" else need_c)

        def ready():
            nonlocal nxt
            while nxt < len(plan) and plan[nxt][0] in depth and plan[nxt][1] in color:
                d, c = plan[nxt]
                occurrence = seen.get(d[0], 0)
                seen[d[0]] = occurrence + 1
                img = color[c] if last_use[c] > nxt else color.pop(c)
                yield RecordedFrame(d[0], d[1], img, depth.pop(d), occurrence)
                need_d.discard(d)
                if last_use[c] <= nxt:
                    need_c.discard(c)
                nxt += 1

        passes = ALIGNED_PASSES if librealsense_aligned else MAX_REPLAYS
        for attempt in range(passes):
            with closing(self._play_once(want, color, depth, librealsense_aligned)) as play:
                for _ in play:
                    yield from ready()
                    if nxt >= len(plan):
                        return  # every frame delivered: no need to wait for the end of the file
            yield from ready()
            if nxt >= len(plan):
                return
            log.info("%s: replaying (pass %d): frame %d not delivered yet", self.path, attempt + 2, plan[nxt][0][0])
        if librealsense_aligned:
            while nxt < len(plan):
                if plan[nxt][0] not in depth or plan[nxt][1] not in color:
                    log.warning("%s: librealsense never aligned frame %d (no frameset held its depth and "
                                "colour in %d passes); left out", self.path, plan[nxt][0][0], passes)
                    seen[plan[nxt][0][0]] = seen.get(plan[nxt][0][0], 0) + 1
                    nxt += 1
                yield from ready()
            return
        d = plan[nxt][0]
        raise DeviceError(f"{self.path}: frame {d[0]} (timestamp {d[1]:g} ms) was never delivered in "
                          f"{MAX_REPLAYS} replays; the recording may be truncated")

    def _frames_unlisted(self, aligned: bool) -> Iterator[RecordedFrame]:
        """A file that does not list its frames (.bag): play it until a pass brings nothing new, then
        yield depth frames in time order, each with the colour frame of the same number or nearest in time."""
        color: dict[Key, np.ndarray] = {}
        depth: dict[Key, np.ndarray] = {}
        for _ in range(MAX_REPLAYS):
            before = len(color) + len(depth)
            with closing(self._play_once(lambda kind, k: True, color, depth, aligned)) as play:
                for _ in play:
                    pass
            if len(color) + len(depth) == before:
                break
        seen: dict[int, int] = {}
        for d, c in _pair(sorted(depth, key=lambda k: (k[1], k[0])), sorted(color, key=lambda k: (k[1], k[0]))):
            occurrence = seen.get(d[0], 0)
            seen[d[0]] = occurrence + 1
            yield RecordedFrame(d[0], d[1], color[c], depth[d], occurrence)

    def __repr__(self) -> str:
        return (f"Recording({str(self.path)!r}, serial={self.serial!r}, colour {self.color_size}, "
                f"depth {self.depth_size}, frames={self.frame_count})")
