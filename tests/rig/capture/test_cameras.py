"""`rig cameras` and the RealSense settings: listing a recording's device, no camera, settings applied."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from damage_rig.rig.capture.realsense_settings import apply_settings
from damage_rig.rig.cli import main
from damage_rig.rig.config import DEMO_CONFIG, PACKAGE_DATA, CameraSettings, parse_config
from damage_rig.rig.foundation.errors import ConfigError, DeviceError

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed")
pytestmark = pytest.mark.realsense


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from damage_rig.rig.capture.realsense_io import write_recording
    from damage_rig.tools.sim.rigs import demo_calibration

    cam = demo_calibration(160, 120).cameras["top"]
    path = tmp_path_factory.mktemp("rec") / "top.db3"
    frames = [(np.zeros((120, 160, 3), np.uint8), np.full((120, 160), 800, np.uint16))] * 2
    write_recording(path, cam, frames, fps=15, serial="918273645")
    return path


def test_lists_a_recordings_device_and_streams(recording, capsys):
    assert main(["cameras", "--recording", str(recording)]) == 0
    out = capsys.readouterr().out
    assert "serial 918273645" in out
    assert "depth    z16      160x120 @ 15 fps" in out and "color    rgb8     160x120 @ 15 fps" in out
    assert main(["cameras", "--recording", str(recording), "--json"]) == 0
    cap = capsys.readouterr()
    d = json.loads(cap.out)["devices"][0]  # the JSON alone on stdout, the text on stderr
    assert "serial 918273645" in cap.err
    assert d["serial_number"] == "918273645"
    assert {(s["stream"], s["format"]) for sensor in d["sensors"] for s in sensor["streams"]} == {
        ("depth", "z16"), ("color", "rgb8")}


def test_no_camera_says_so_and_exits_1(capsys):
    if rs.context().query_devices().size():
        pytest.skip("a RealSense camera is connected")
    assert main(["cameras"]) == 1
    assert "no RealSense camera connected" in capsys.readouterr().err


def test_configured_camera_missing_is_named(tmp_path, capsys):
    if rs.context().query_devices().size():
        pytest.skip("a RealSense camera is connected")
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data["calibration"] = str(PACKAGE_DATA / "demo_calib.yaml")
    data["cameras"][0].update(source="realsense", serial="111222333", settings={"exposure_us": 400})
    (tmp_path / "rig.yaml").write_text(yaml.safe_dump(data))
    assert main(["cameras", "--config", str(tmp_path / "rig.yaml")]) == 1
    assert "configured camera 'top' (serial 111222333) is not connected" in capsys.readouterr().err


def test_bad_recording_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "x.db3"
    bad.write_bytes(b"not a bag")
    assert main(["cameras", "--recording", str(bad)]) == 1
    assert "not a recording pyrealsense2 can read" in capsys.readouterr().err


@pytest.mark.parametrize("settings, message", [
    ({"gain": 16}, "set exposure_us too"),
    ({"laser_power_mw": 400}, "laser_power_mw"),
    ({"visual_preset": "sharp"}, "visual_preset"),
    ({"exposure": 300}, "unknown key"),
    ({"laser_power_mw": 150, "emitter": False}, "the laser is off"),
])
def test_bad_settings_in_the_config_are_refused(settings, message):
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data["cameras"][0]["settings"] = settings
    with pytest.raises(ConfigError) as exc:
        parse_config(yaml.safe_dump(data), "rig.yaml")
    assert message in "\n".join(exc.value.problems)


def test_two_sync_masters_are_refused():
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    for c in data["cameras"]:
        c["settings"] = {"sync_mode": "master"}
    with pytest.raises(ConfigError) as exc:
        parse_config(yaml.safe_dump(data), "rig.yaml")
    assert "more than one camera" in "\n".join(exc.value.problems)


class _Range:
    def __init__(self, lo, hi):
        self.min, self.max = lo, hi


class _Sensor:
    """The part of a pyrealsense2 sensor apply_settings uses, with a D435's ranges."""

    def __init__(self, stream, options):
        self.stream, self.ranges = stream, options
        self.values = {o: r.min for o, r in options.items()}
        self.log = []

    def get_stream_profiles(self):
        class P:
            def stream_type(_):
                return self.stream
        return [P()]

    def is_depth_sensor(self):
        return self.stream == rs.stream.depth

    def supports(self, opt):
        return opt in self.ranges

    def get_option_range(self, opt):
        return self.ranges[opt]

    def set_option(self, opt, v):
        self.values[opt] = v
        self.log.append((opt, v))

    def get_option(self, opt):
        return self.values[opt]


class _Device:
    def __init__(self, sensors):
        self.sensors = sensors

    def query_sensors(self):
        return self.sensors

    def supports(self, info):
        return info == rs.camera_info.serial_number

    def get_info(self, info):
        return "555"


def _d435():
    o = rs.option
    depth = _Sensor(rs.stream.depth, {o.visual_preset: _Range(0, 5), o.exposure: _Range(1, 165000),
                                      o.enable_auto_exposure: _Range(0, 1), o.laser_power: _Range(0, 360),
                                      o.emitter_enabled: _Range(0, 2), o.inter_cam_sync_mode: _Range(0, 260)})
    color = _Sensor(rs.stream.color, {o.exposure: _Range(1, 10000), o.gain: _Range(0, 128),
                                      o.enable_auto_exposure: _Range(0, 1)})
    return _Device([depth, color]), depth, color


def test_settings_are_written_checked_and_read_back():
    dev, depth, color = _d435()
    s = CameraSettings(visual_preset="high_accuracy", exposure_us=400, gain=32, laser_power_mw=240,
                       depth_exposure_us=1500, sync_mode="slave")
    done = apply_settings(dev, s, "top")
    o = rs.option
    assert done["exposure_us"] == 400 and done["gain"] == 32 and done["laser_power_mw"] == 240
    assert depth.values[o.visual_preset] == int(rs.rs400_visual_preset.high_accuracy)
    assert depth.values[o.inter_cam_sync_mode] == 2
    # manual colour exposure: auto exposure switched off first, on the colour sensor only
    assert color.log[0] == (o.enable_auto_exposure, 0.0)
    # the preset goes first (it changes other options), then manual exposure switches auto exposure off
    assert depth.log[:3] == [(o.visual_preset, float(int(rs.rs400_visual_preset.high_accuracy))),
                             (o.enable_auto_exposure, 0.0), (o.exposure, 1500.0)]
    dev2, depth2, _ = _d435()
    apply_settings(dev2, CameraSettings(exposure_us=300), "top")
    assert (o.enable_auto_exposure, 0.0) not in depth2.log  # colour exposure leaves the depth sensor's alone
    with pytest.raises(DeviceError, match=r"exposure_us 20000 is outside the camera's range 1\.\.10000"):
        apply_settings(dev, CameraSettings(exposure_us=20000), "top")
    dev.sensors = [depth]  # a camera without colour options
    with pytest.raises(DeviceError, match="has no color option 'exposure' for settings.exposure_us"):
        apply_settings(dev, CameraSettings(exposure_us=300, gain=10), "top")


def test_the_realsense_backend_applies_the_settings_when_it_starts():
    from types import SimpleNamespace

    from damage_rig.rig.capture.realsense import RealSenseCamera

    dev, _, color = _d435()
    calls = []

    class Pipe:
        def start(self, cfg):
            calls.append("start")
            return SimpleNamespace(get_device=lambda: dev)

        def stop(self):
            calls.append("stop")

    cfg = SimpleNamespace(enable_device=lambda s: None, enable_stream=lambda *a: None)
    cam = RealSenseCamera("top", "555", (640, 480), 30, CameraSettings(exposure_us=500, laser_power_mw=150))
    cam._rs = SimpleNamespace(config=lambda: cfg, pipeline=Pipe, stream=rs.stream, format=rs.format)
    cam.open()
    assert cam.applied == {"color_auto_exposure": 0.0, "exposure_us": 500.0, "laser_power_mw": 150.0}
    assert color.values[rs.option.exposure] == 500
    bad = RealSenseCamera("top", "555", (640, 480), 30, CameraSettings(exposure_us=50_000))
    bad._rs = cam._rs
    with pytest.raises(DeviceError, match="outside the camera's range"):
        bad.open()
    assert calls[-1] == "stop" and bad._pipe is None  # a camera with bad settings is not left streaming
