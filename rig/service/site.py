"""What a site wires to a rig besides cameras and the gate: health figures, metrics, MQTT, the upstream scan.

``attach(handle)`` is called by ``open_rig`` once the rig is built (so
`rig run`, `rig demo` and `rig bench` get the same): it adds the decision sinks
(rig/service/health.DecisionStats always; the MQTT publisher and the Prometheus
metrics when the config has ``mqtt`` / ``metrics``) and the expected-product
input (rig/scan) when it has ``scan``, and registers their closers.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

from ..scan import ExpectedProducts, open_scan_source
from ..scan.mqtt_source import expected_from_json
from .health import DecisionStats
from .metrics import RigMetrics
from .mqtt import MqttPublisher

log = logging.getLogger(__name__)


def _pos_to_time(link, cpm: float, speed: float, pos: int) -> float:
    now = time.monotonic()
    return now + (pos - link.position_at(now)) / (cpm * speed)


def attach(handle) -> None:
    cfg, rig = handle.cfg, handle.rig
    state_dir = Path(cfg.state_dir)
    handle.stats = DecisionStats()
    rig.sinks.append(handle.stats)
    speed = cfg.belt.speed_mps or 0.5
    if cfg.scan is not None:
        sc = cfg.scan
        handle.expected = ExpectedProducts(sc.distance_m, speed, sc.match_window_m, sc.codes)
        rig.expect_from(handle.expected, sc)
        handle.closers.append(handle.expected.close)
        if sc.url == "sim":
            belt = handle.sources.groups["sim"].state  # the simulated belt (tools/sim/capture.py)
            rates = cfg.sim.scanner
            scanner = belt.scanner(sc.distance_m, log_path=state_dir / "sim-scanner.jsonl",
                                   wrong_rate=rates.wrong_rate, missing_rate=rates.missing_rate,
                                   unreadable_rate=rates.unreadable_rate, seed=cfg.sim.seed)
            handle.sim_scanner = scanner
            handle.closers.append(scanner.close)
            open_scan_source(scanner.port, handle.expected, baud=sc.baud)
        elif sc.url != "mqtt":
            open_scan_source(sc.url, handle.expected, baud=sc.baud)
        log.info("expected product from %s, %.2f m upstream; wrong items %s", sc.url, sc.distance_m,
                 sc.on_wrong_item)
    gallery = getattr(rig.scorer, "gallery", None)
    if cfg.gallery is not None:
        rig.score.on_refs_missing = cfg.gallery.on_miss
        if handle.expected is not None and hasattr(gallery, "prefetch"):
            # the scan names the product seconds before the item reaches the cameras: fetch it now
            handle.expected.listeners.append(lambda scan: gallery.prefetch(scan.sku))
    if cfg.mqtt is not None:
        on_expected = None
        if cfg.scan is not None and cfg.scan.url == "mqtt":
            pos = partial(_pos_to_time, handle.link, float(cfg.belt.encoder_counts_per_m or 1000.0), speed)
            on_expected = partial(expected_from_json, expected=handle.expected, pos_to_time=pos)
        handle.mqtt = MqttPublisher(cfg.mqtt, cfg.name, state_dir, str(getattr(rig.scorer, "version", "")),
                                    on_expected=on_expected).start()
        rig.sinks.append(handle.mqtt)
        handle.closers.append(handle.mqtt.close)
    if cfg.metrics is not None:
        handle.metrics = RigMetrics(rig, link=handle.link, state_dir=state_dir, mqtt=handle.mqtt,
                                    expected=handle.expected, events=handle.events)
        rig.sinks.append(handle.metrics)
        handle.metrics.serve(cfg.metrics.listen)
        handle.closers.append(handle.metrics.close)
