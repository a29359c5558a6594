"""The calibration file: camera models, their poses, and the belt frame.

One geometry drives the simulator, the runtime's trigger and alignment, and the
calibration tests. File format (YAML, metres)::

    cameras:
      NAME:
        K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # colour camera
        dist: [k1, k2, p1, p2, k3]
        size: [w, h]
        T_ref_cam: 4x4                              # camera (OpenCV axes) -> reference
        depth:                                      # optional: the depth imager
          K: 3x3
          size: [w, h]
          T_color_depth: 4x4                        # depth camera -> colour camera
          depth_units_mm: 1.0
    belt:                                           # present when the reference is the belt
      reference: belt                               # x along travel, y across, z up, z=0 surface
      source: board moment name or "design"

When ``belt`` is present the reference frame *is* the belt frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..rig.foundation.errors import CalibrationError
from ..rig.foundation.yamlpos import load_with_lines


@dataclass
class DepthModel:
    K: np.ndarray
    size: tuple[int, int]
    T_color_depth: np.ndarray
    depth_units_mm: float = 1.0
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))


@dataclass
class CameraModel:
    name: str
    K: np.ndarray
    dist: np.ndarray
    size: tuple[int, int]  # (w, h)
    T_ref_cam: np.ndarray
    depth: DepthModel | None = None

    @property
    def T_cam_ref(self) -> np.ndarray:
        return invert_T(self.T_ref_cam)

    def depth_imager(self) -> CameraModel:
        """The depth imager as a camera of its own (pose = colour pose @ T_color_depth);
        the colour camera itself when no depth imager is described."""
        if self.depth is None:
            return self
        return CameraModel(f"{self.name}:depth", self.depth.K, self.depth.dist, tuple(self.depth.size),
                           self.T_ref_cam @ self.depth.T_color_depth, None)

    def project(self, pts_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project Nx3 reference-frame points (no distortion): (uv Nx2, z N)."""
        T = self.T_cam_ref
        pc = pts_ref @ T[:3, :3].T + T[:3, 3]
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.K[0, 0] * pc[:, 0] / z + self.K[0, 2]
            v = self.K[1, 1] * pc[:, 1] / z + self.K[1, 2]
        return np.stack([u, v], axis=1), z


@dataclass
class Calibration:
    cameras: dict[str, CameraModel]
    belt: dict | None = None

    def camera(self, name: str) -> CameraModel:
        try:
            return self.cameras[name]
        except KeyError:
            raise CalibrationError(
                f"camera {name!r} is not in the calibration (has: {sorted(self.cameras)})"
            ) from None


def invert_T(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def rotation(axis: str, deg: float) -> np.ndarray:
    """3x3 rotation by ``deg`` degrees about the x, y or z axis."""
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """T_ref_cam for a camera at ``eye`` looking at ``target`` (OpenCV axes:
    x right, y down, z forward)."""
    eye, target, up = (np.asarray(a, float) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking straight along `up`
        x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def _matrix(value, shape, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: expected a {shape} matrix of numbers") from None
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{where}: expected a finite {shape} matrix, got shape {arr.shape}")
    return arr


def _dist(value, where: str) -> np.ndarray:
    """Distortion coefficients: 4, 5, 8, 12 or 14 finite numbers (OpenCV's models)."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: expected a list of numbers (k1, k2, p1, p2[, k3...]), "
                               f"got {value!r}"[:300]) from None
    if arr.ndim != 1 or arr.size not in (4, 5, 8, 12, 14) or not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{where}: expected 4, 5, 8, 12 or 14 finite numbers, got {value!r}"[:300])
    return arr


def _depth_units(value, where: str) -> float:
    """Millimetres per depth count: a positive, finite number (0 or NaN would blind the rig)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0 \
            or value > 1000:
        raise CalibrationError(f"{where}: expected a positive finite number of mm per count (e.g. 1.0 or 0.1), "
                               f"got {value!r}")
    return float(value)


def calibration_from_dict(data: dict, source: str = "<calibration>") -> Calibration:
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), dict) or not data["cameras"]:
        raise CalibrationError(f"{source}: expected a mapping with a non-empty 'cameras' mapping")
    cams = {}
    for name, c in data["cameras"].items():
        where = f"{source}: cameras.{name}"
        if not isinstance(c, dict):
            raise CalibrationError(f"{where}: expected a mapping")
        for key in ("K", "size", "T_ref_cam"):
            if key not in c:
                raise CalibrationError(f"{where}: missing key {key!r}")
        size = c["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
            raise CalibrationError(f"{where}.size: expected [width, height] positive integers, got {size!r}")
        depth = None
        if c.get("depth") is not None:
            d = c["depth"]
            if not isinstance(d, dict):
                raise CalibrationError(f"{where}.depth: expected a mapping")
            depth = DepthModel(
                K=_matrix(d.get("K"), (3, 3), where + ".depth.K"),
                size=tuple(d.get("size", size)),
                T_color_depth=_matrix(d.get("T_color_depth", np.eye(4).tolist()), (4, 4),
                                      where + ".depth.T_color_depth"),
                depth_units_mm=_depth_units(d.get("depth_units_mm", 1.0), where + ".depth.depth_units_mm"),
                dist=_dist(d.get("dist", [0.0] * 5), where + ".depth.dist"),
            )
        cams[str(name)] = CameraModel(
            name=str(name),
            K=_matrix(c["K"], (3, 3), where + ".K"),
            dist=_dist(c.get("dist", [0.0] * 5), where + ".dist"),
            size=(size[0], size[1]),
            T_ref_cam=_matrix(c["T_ref_cam"], (4, 4), where + ".T_ref_cam"),
            depth=depth,
        )
    return Calibration(cameras=cams, belt=data.get("belt"))


def load_calibration(path: str | Path) -> Calibration:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} does not exist")
    try:
        data, _ = load_with_lines(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML: {exc}") from None
    return calibration_from_dict(data, str(path))


def calibration_to_dict(calib: Calibration) -> dict:
    def r(a):
        return np.round(np.asarray(a, float), 9).tolist()

    out: dict = {"cameras": {}}
    for name in sorted(calib.cameras):
        c = calib.cameras[name]
        entry = {"K": r(c.K), "dist": r(c.dist), "size": [int(c.size[0]), int(c.size[1])],
                 "T_ref_cam": r(c.T_ref_cam)}
        if c.depth is not None:
            entry["depth"] = {"K": r(c.depth.K), "size": list(map(int, c.depth.size)),
                              "T_color_depth": r(c.depth.T_color_depth),
                              "depth_units_mm": float(c.depth.depth_units_mm),
                              "dist": r(c.depth.dist)}
        out["cameras"][name] = entry
    if calib.belt is not None:
        out["belt"] = calib.belt
    return out


def save_calibration(calib: Calibration, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(calibration_to_dict(calib), sort_keys=False))
