"""The expected product from the WMS over MQTT: ``<prefix>/<rig>/expected``, one JSON object per item.

``{"sku": "sku012-box", "timestamp": 1764421234.512}``: the item passed the scan
point (``scan.distance_m`` upstream of the tunnel centre) at that epoch time;
or ``"belt_pos": 123456`` (encoder counts, the divert controller's belt
position) instead of the timestamp; with neither, arrival time. ``"sku": null``
or ``"noread": true`` is an unreadable scan. Anything else raises ValueError
(counted and logged by the MQTT client, never fatal).
"""

from __future__ import annotations

import json
import math
import time

from .join import Scan


def expected_from_json(payload: bytes | str, expected, pos_to_time=None) -> Scan:
    try:
        d = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError("expected a JSON object with 'sku'")  # noqa: TRY004 - bad input, reported as such
    sku = d.get("sku")
    if sku is not None and (not isinstance(sku, str) or not sku.strip()):
        raise ValueError(f"'sku' must be a non-empty string or null, not {sku!r}")
    if d.get("noread"):
        sku = None
    now = time.monotonic()
    if d.get("timestamp") is not None:
        try:
            ts = float(d["timestamp"])
        except (TypeError, ValueError, OverflowError):
            ts = math.nan
        if isinstance(d["timestamp"], bool) or not math.isfinite(ts):
            raise ValueError(f"'timestamp' must be epoch seconds, not {d['timestamp']!r}")
        at = now - (time.time() - ts)
    elif d.get("belt_pos") is not None:
        if pos_to_time is None:
            raise ValueError("'belt_pos' needs the divert controller's belt position (none on this rig)")
        pos = d["belt_pos"]
        if isinstance(pos, bool) or not isinstance(pos, int) or abs(pos) >= 1 << 63:
            raise ValueError(f"'belt_pos' must be an integer count, not {pos!r}")
        at = pos_to_time(pos)
    else:
        at = now
    raw = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
    return expected.add(Scan(sku.strip() if sku else None, at, raw[:200], "mqtt"))
