"""RealSense camera settings (``cameras[].settings`` in the config) and what a device reports.

:func:`apply_settings` writes the configured visual preset, exposure, gain,
laser power, emitter and hardware-sync mode to a device's sensors, each
checked against the range the device itself reports, and reads every value
back. :func:`describe_device` is what `rig cameras` prints: name, serial,
firmware, USB type, stream profiles and the current values of those options.
Both take a pyrealsense2 device (live or a recording's playback device).
"""

from __future__ import annotations

from ..foundation.errors import DeviceError

SYNC_MODES = {"default": 0, "master": 1, "slave": 2, "full_slave": 3}

# setting -> (sensor: 'depth' | 'color', pyrealsense2 option name)
OPTIONS = {
    "visual_preset": ("depth", "visual_preset"),
    "depth_exposure_us": ("depth", "exposure"),
    "laser_power_mw": ("depth", "laser_power"),
    "emitter": ("depth", "emitter_enabled"),
    "sync_mode": ("depth", "inter_cam_sync_mode"),
    "exposure_us": ("color", "exposure"),
    "gain": ("color", "gain"),
}
# manual exposure switches auto-exposure off on the same sensor
AUTO_EXPOSURE = {"exposure_us": "color", "depth_exposure_us": "depth"}
INFO = ("name", "serial_number", "firmware_version", "usb_type_descriptor", "product_line", "physical_port")


def _sensors(rs, dev) -> dict[str, object]:
    """The device's depth and colour sensors (by the streams they offer)."""
    out = {}
    for s in dev.query_sensors():
        kinds = {p.stream_type() for p in s.get_stream_profiles()}
        if "depth" not in out and (rs.stream.depth in kinds or s.is_depth_sensor()):
            out["depth"] = s
        elif "color" not in out and rs.stream.color in kinds:
            out["color"] = s
    return out


def _wanted(rs, settings) -> dict[str, float]:
    """Configured settings as option values (None = leave the camera's own)."""
    want: dict[str, float] = {}
    for key in OPTIONS:
        v = getattr(settings, key, None)
        if v is None:
            continue
        if key == "visual_preset":
            v = float(int(getattr(rs.rs400_visual_preset, v)))
        elif key == "sync_mode":
            v = float(SYNC_MODES[v])
        elif key == "emitter":
            v = 1.0 if v else 0.0
        want[key] = float(v)
    return want


def apply_settings(dev, settings, camera: str) -> dict[str, float]:
    """Write ``settings`` (a CameraSettings) to ``dev``; returns each written setting's read-back value.

    A setting the camera does not have, or a value outside the range the camera
    reports, raises DeviceError naming the camera, the setting and the range.
    """
    from .realsense_io import import_rs

    rs = import_rs()
    sensors = _sensors(rs, dev)
    serial = _info(rs, dev, "serial_number") or "?"
    product = _info(rs, dev, "name") or "camera"
    where = f"camera {camera} (serial {serial}, {product})"
    want = _wanted(rs, settings)
    plan = []
    for key, value in want.items():
        kind, opt_name = OPTIONS[key]
        sensor = sensors.get(kind)
        opt = getattr(rs.option, opt_name)
        if sensor is None or not sensor.supports(opt):
            raise DeviceError(f"{where}: has no {kind} option {opt_name!r} for settings.{key} — "
                              "remove it from the config for this camera")
        r = sensor.get_option_range(opt)
        if not r.min <= value <= r.max:
            raise DeviceError(f"{where}: settings.{key} {value:g} is outside the camera's range "
                              f"{r.min:g}..{r.max:g}")
        plan.append((key, sensor, opt, value))
    # the preset first (it may change other options), then auto exposure off where exposure is manual
    at = 1 if plan and plan[0][0] == "visual_preset" else 0
    for key, kind in AUTO_EXPOSURE.items():
        s = sensors.get(kind)
        if key in want and s is not None and s.supports(rs.option.enable_auto_exposure):
            plan.insert(at, (f"{kind}_auto_exposure", s, rs.option.enable_auto_exposure, 0.0))
    done = {}
    for key, sensor, opt, value in plan:
        try:
            sensor.set_option(opt, value)
            done[key] = float(sensor.get_option(opt))
        except RuntimeError as exc:
            raise DeviceError(f"{where}: cannot set settings.{key} to {value:g}: {exc}") from None
    return done


def _info(rs, dev, name: str) -> str | None:
    info = getattr(rs.camera_info, name, None)
    if info is None or not dev.supports(info):
        return None
    try:
        return dev.get_info(info)
    except RuntimeError:
        return None


def describe_device(dev) -> dict:
    """Name, serial, firmware, USB type, stream profiles and the current setting values of a device."""
    from .realsense_io import import_rs

    rs = import_rs()
    out = {k: _info(rs, dev, k) for k in INFO}
    sensors = []
    for s in dev.query_sensors():
        profiles = set()
        for p in s.get_stream_profiles():
            kind = str(p.stream_type()).split(".")[-1]
            fmt = str(p.format()).split(".")[-1]
            if p.is_video_stream_profile():
                v = p.as_video_stream_profile()
                profiles.add((kind, fmt, v.width(), v.height(), p.fps()))
            else:
                profiles.add((kind, fmt, 0, 0, p.fps()))
        name = s.get_info(rs.camera_info.name) if s.supports(rs.camera_info.name) else "sensor"
        streams = [{"stream": k, "format": f, "width": w, "height": h, "fps": fps}
                   for k, f, w, h, fps in sorted(profiles, key=lambda t: (t[0], t[1], -t[2], -t[3], -t[4]))]
        sensors.append({"name": name, "streams": streams})
    settings = {}
    found = _sensors(rs, dev)
    for key, (kind, opt_name) in OPTIONS.items():
        s, opt = found.get(kind), getattr(rs.option, opt_name)
        if s is not None and s.supports(opt):
            try:
                v = float(s.get_option(opt))
            except RuntimeError:
                continue
            if key == "visual_preset":
                settings[key] = _enum_name(rs.rs400_visual_preset, v)
            elif key == "sync_mode":
                settings[key] = next((n for n, i in SYNC_MODES.items() if i == v), v)
            else:
                settings[key] = v
    out["sensors"] = sensors
    out["settings"] = settings
    return out


def _enum_name(enum, value: float):
    for name, member in enum.__members__.items():
        if int(member) == int(value):
            return name
    return value
