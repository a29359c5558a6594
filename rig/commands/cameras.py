"""`rig cameras`: the connected RealSense cameras (or a recording's device), like rs-enumerate-devices.

    rig cameras [--config FILE] [--json [FILE]]        connected cameras; with --config, which is which
    rig cameras --recording FILE.db3 [--json [FILE]]   the device and streams a recording holds

Per device: name, serial, firmware, USB type, its streams (format, size, frame
rates) and the current values of the settings the config can set (preset,
exposure, gain, laser power, emitter, sync mode). Exit status 1 when no camera
is connected (or a configured one is missing), 0 otherwise.
"""

from __future__ import annotations

NAME = "cameras"
HELP = "list connected RealSense cameras (serial, firmware, USB, streams, settings) or a recording's device"


def add_arguments(p):
    p.add_argument("--recording", metavar="FILE.db3", help="list this recording's device and streams instead")
    p.add_argument("--config", metavar="FILE", help="rig config: name the configured cameras, show their "
                   "configured settings, report configured serials that are not connected")
    from ._common import add_json

    add_json(p, "the listing")


def _devices(args) -> tuple[list[dict], str]:
    from pathlib import Path

    from ..capture.realsense_io import import_rs
    from ..capture.realsense_settings import describe_device
    from ..foundation.errors import DeviceError

    rs = import_rs()
    if args.recording:
        path = Path(args.recording)
        if not path.is_file():
            raise DeviceError(f"--recording {path}: no such file")
        try:
            dev = rs.context().load_device(str(path))
        except RuntimeError as exc:
            raise DeviceError(f"--recording {path}: not a recording pyrealsense2 can read ({exc})") from None
        d = describe_device(dev)
        d["recording"] = str(path)
        del dev
        return [d], f"recording {path}"
    return [describe_device(dev) for dev in rs.context().query_devices()], "connected"


def _streams_line(streams: list[dict]) -> list[str]:
    grouped: dict[tuple, list[int]] = {}
    for s in streams:
        grouped.setdefault((s["stream"], s["format"], s["width"], s["height"]), []).append(s["fps"])
    lines = []
    for (kind, fmt, w, h), rates in grouped.items():
        size = f" {w}x{h}" if w else ""
        lines.append(f"{kind:8s} {fmt:8s}{size} @ {'/'.join(str(r) for r in sorted(set(rates), reverse=True))} fps")
    return lines


def run(args) -> int:
    import sys

    from .. import __version__
    from ._common import check_output_file, emit_json, human

    check_output_file(args.json, "--json")
    out = human(args)

    configured = {}
    if args.config:
        from ..config import load_config

        cfg = load_config(args.config)
        configured = {c.serial: c for c in cfg.cameras if c.source == "realsense" and c.serial}
    devices, what = _devices(args)
    for d in devices:
        c = configured.get(d.get("serial_number"))
        if c is not None:
            d["configured_as"] = c.name
            d["configured_settings"] = c.settings.model_dump(exclude_none=True)
    missing = sorted((c.name, s) for s, c in configured.items()
                     if s not in {d.get("serial_number") for d in devices})
    emit_json({"source": what, "devices": devices,
               "missing": [{"camera": n, "serial": s} for n, s in missing]}, args.json)
    if not devices:
        print(f"no RealSense camera connected (damage-rig {__version__}): check the USB 3 cable and port "
              "(`lsusb | grep 8086` lists Intel devices), the udev rules (99-realsense-libusb.rules) and "
              "that no other program holds the camera", file=sys.stderr)
    for d in devices:
        head = d.get("name") or "RealSense device"
        print(f"{head}  serial {d.get('serial_number') or '?'}  firmware {d.get('firmware_version') or '?'}  "
              f"USB {d.get('usb_type_descriptor') or '?'}" + (f"  ({d['recording']})" if d.get("recording") else ""),
              file=out)
        if d.get("configured_as"):
            wanted = ", ".join(f"{k} {v}" for k, v in d["configured_settings"].items()) or "camera defaults"
            print(f"  configured as camera {d['configured_as']!r}: settings {wanted}", file=out)
        for s in d["sensors"]:
            print(f"  {s['name']}:", file=out)
            for line in _streams_line(s["streams"]) or ["(no streams)"]:
                print(f"    {line}", file=out)
        now = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in d["settings"].items())
        print(f"  settings now: {now or 'none of preset/exposure/gain/laser/sync reported'}", file=out)
    for name, serial in missing:
        print(f"configured camera {name!r} (serial {serial}) is not connected", file=sys.stderr)
    return 1 if not devices or missing else 0
