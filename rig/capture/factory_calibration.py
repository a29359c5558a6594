"""Factory calibration stored in RealSense cameras (or in a recording of one), and how it
compares with the board result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...calibration.model import Calibration, CameraModel, DepthModel
from ..foundation.errors import DeviceError
from .realsense_io import Recording, extrinsics_to_T, import_rs, intrinsics_K

FOCAL_WARN_PCT = 1.0
PP_WARN_PX = 5.0


@dataclass
class FactoryCalibration:
    source: str  # serial number or recording path
    serial: str
    color_K: np.ndarray
    color_size: tuple[int, int]
    color_coeffs: list[float]
    depth_K: np.ndarray
    depth_size: tuple[int, int]
    T_color_depth: np.ndarray
    depth_units_mm: float

    def depth_model(self) -> DepthModel:
        return DepthModel(K=self.depth_K, size=tuple(self.depth_size), T_color_depth=self.T_color_depth,
                          depth_units_mm=self.depth_units_mm)

    def to_dict(self) -> dict:
        return {"source": self.source, "serial": self.serial, "color_K": self.color_K.tolist(),
                "color_size": list(self.color_size), "color_coeffs": list(self.color_coeffs),
                "depth_K": self.depth_K.tolist(), "depth_size": list(self.depth_size),
                "T_color_depth": self.T_color_depth.tolist(), "depth_units_mm": self.depth_units_mm}


def from_recording(path) -> FactoryCalibration:
    r = Recording(path)
    return FactoryCalibration(str(path), r.serial, r.color_K, r.color_size, r.color_coeffs,
                              r.depth_K, r.depth_size, r.T_color_depth, r.depth_units_mm)


def from_connected(size: tuple[int, int] | None = None) -> list[FactoryCalibration]:
    """Every connected RealSense camera; colour and depth profiles at ``size`` when offered
    (else the camera's largest)."""
    rs = import_rs()
    devices = list(rs.context().query_devices())
    if not devices:
        raise DeviceError("no RealSense camera is connected: plug the cameras in (USB 3), or pass "
                          "--recording NAME=FILE.db3")
    out = []
    for dev in devices:
        serial = dev.get_info(rs.camera_info.serial_number)
        picks = {}
        units = 1.0
        for sensor in dev.query_sensors():
            for p in sensor.get_stream_profiles():
                st = p.stream_type()
                if st not in (rs.stream.color, rs.stream.depth) or not p.is_video_stream_profile():
                    continue
                vp = p.as_video_stream_profile()
                key = (vp.width(), vp.height())
                score = (key == tuple(size)) if size else 0, key[0] * key[1]
                if st not in picks or score > picks[st][0]:
                    picks[st] = (score, vp)
                if st == rs.stream.depth and sensor.supports(rs.option.depth_units):
                    units = float(sensor.get_option(rs.option.depth_units)) * 1000.0
        if rs.stream.color not in picks or rs.stream.depth not in picks:
            raise DeviceError(f"camera {serial}: needs a colour and a depth stream")
        cp, dp = picks[rs.stream.color][1], picks[rs.stream.depth][1]
        ci, di = cp.get_intrinsics(), dp.get_intrinsics()
        out.append(FactoryCalibration(serial, serial, intrinsics_K(ci), (ci.width, ci.height), list(ci.coeffs),
                                      intrinsics_K(di), (di.width, di.height),
                                      extrinsics_to_T(dp.get_extrinsics_to(cp)), round(units, 6)))
    return out


def compare(factory: FactoryCalibration, board: CameraModel) -> dict:
    """Factory colour intrinsics against the board's (scaled to the board's resolution)."""
    sx = board.size[0] / factory.color_size[0]
    sy = board.size[1] / factory.color_size[1]
    fK = factory.color_K.copy()
    fK[0] *= sx
    fK[1] *= sy
    # Pixel-centre convention: scaling maps (c + 0.5) * s - 0.5.
    fK[0, 2] = (factory.color_K[0, 2] + 0.5) * sx - 0.5
    fK[1, 2] = (factory.color_K[1, 2] + 0.5) * sy - 0.5
    focal = [float(100 * (board.K[0, 0] / fK[0, 0] - 1)), float(100 * (board.K[1, 1] / fK[1, 1] - 1))]
    pp = [float(board.K[0, 2] - fK[0, 2]), float(board.K[1, 2] - fK[1, 2])]
    notes = []
    if max(abs(v) for v in focal) > FOCAL_WARN_PCT:
        notes.append(f"{board.name}: the board's focal length differs from the factory value by "
                     f"{max(focal, key=abs):+.2f} % — check that {factory.serial} is the camera mounted "
                     f"as {board.name} and that the board's square_mm is right")
    if max(abs(v) for v in pp) > PP_WARN_PX:
        notes.append(f"{board.name}: the principal point differs from the factory value by "
                     f"({pp[0]:+.1f}, {pp[1]:+.1f}) px — add board views near the image edges, or "
                     f"check the camera's resolution ({board.size[0]}x{board.size[1]})")
    return {"camera": board.name, "serial": factory.serial, "focal_diff_pct": focal,
            "principal_point_diff_px": pp, "notes": notes, "ok": not notes}


def merge_depth(calib: Calibration, factories: dict[str, FactoryCalibration]) -> Calibration:
    """``calib`` with each named camera's depth model taken from the factory calibration."""
    for name, f in factories.items():
        if name in calib.cameras:
            calib.cameras[name].depth = f.depth_model()
        else:
            calib.cameras[name] = CameraModel(name=name, K=f.color_K, dist=np.zeros(5),
                                              size=tuple(f.color_size), T_ref_cam=np.eye(4),
                                              depth=f.depth_model())
    return calib
