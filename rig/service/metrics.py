"""Prometheus metrics served by `rig run` itself (prometheus_client, one registry).

Enabled by the config's ``metrics: {listen: "127.0.0.1:9464"}``: loopback unless
the site sets another address (then it is logged). Observed as things happen:

* ``damage_rig_decision_latency_seconds`` (histogram): capture to decision, per item.
* ``damage_rig_stage_seconds{stage}`` (histogram): every stage the pipeline times
  (capture, sync, trigger, preprocess, batch_wait, infer, identify, anomaly, fuse,
  divert_send, ack).
* ``damage_rig_decisions_total{decision,reason}``, ``damage_rig_late_total``,
  ``damage_rig_failsafe_total{reason}``, ``damage_rig_divert_results_total{result}``.

Read from the running rig at each scrape (no bookkeeping on the decision path):

* ``damage_rig_dropped_frames_total{camera}`` (``camera="sync"``: sets the synchroniser
  gave up), ``damage_rig_queue_overflows_total``, ``damage_rig_event_write_failures_total``,
  ``damage_rig_stage_errors_total``; the event log's ``damage_rig_event_log_backlog``,
  ``damage_rig_event_log_writable``, ``damage_rig_event_log_records_dropped_total``.
* gauges ``damage_rig_camera_fps{camera}``, ``damage_rig_camera_connected{camera}``,
  ``damage_rig_link_up``, ``damage_rig_link_heartbeat_age_seconds``,
  ``damage_rig_queue_depth{queue}``, ``damage_rig_state_dir_free_bytes``,
  ``damage_rig_items_in_flight``.
* MQTT: ``damage_rig_mqtt_connected``, ``damage_rig_mqtt_outbox_depth``,
  ``damage_rig_mqtt_published_total``, ``damage_rig_mqtt_redelivered_total``,
  ``damage_rig_mqtt_dropped_total{where}``.
* Scans: ``damage_rig_scans_total{result}``, ``damage_rig_scans_unmatched_total``.
* ``damage_rig_model_info{version,gallery,backend,preprocess}``.
* Reference store (config ``gallery``): ``damage_rig_gallery_fetch_seconds{source}`` (histogram,
  store or disk level), ``damage_rig_gallery_cache_hits_total``, ``..._misses_total`` (a decision
  found the product's references absent), ``..._evictions_total``, ``..._fetch_errors_total``,
  ``..._prefetches_total``; gauges ``damage_rig_gallery_cache_hit_ratio``, ``..._bytes``,
  ``..._entries``, ``damage_rig_gallery_store_up``, ``damage_rig_gallery_products``.
"""

from __future__ import annotations

import ipaddress
import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from ..foundation.errors import ConfigError
from ..pipeline.items import SCORED_REASONS
from .status import free_bytes

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port_n = int(port)
    except ValueError:
        port_n = -1
    if not 0 <= port_n <= 65535:
        raise ConfigError(f"metrics.listen {listen!r}: expected HOST:PORT with a port 0-65535")
    return host, port_n


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RigMetrics:
    """The service's metrics: a decision sink, a stage-clock observer and a scrape-time collector."""

    def __init__(self, rig, *, link=None, state_dir=None, mqtt=None, expected=None, events=None, gallery=None):
        self.rig, self.link, self.state_dir, self.mqtt, self.expected = rig, link, state_dir, mqtt, expected
        self.events = events  # the event log's recorder (rig/pipeline/recorder.py): backlog, retries, drops
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("damage_rig_decision_latency_seconds",
                                 "Capture to decision, per item (monotonic clock)", buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.stage = Histogram("damage_rig_stage_seconds", "Time spent in each pipeline stage", ["stage"],
                               buckets=STAGE_BUCKETS, registry=r)
        self.decisions = Counter("damage_rig_decisions", "Decisions, by outcome and reason",
                                 ["decision", "reason"], registry=r)
        self.late = Counter("damage_rig_late", "Items late: no decision by their deadline, or the divert not "
                            "acknowledged before the gate", registry=r)
        self.failsafe = Counter("damage_rig_failsafe", "Decisions taken by the fail-safe, by reason", ["reason"],
                                registry=r)
        self.divert_results = Counter("damage_rig_divert_results", "Divert commands, by result (acked, late, "
                                      "fault)", ["result"], registry=r)
        # the reference store's gallery (rig/detect/catalogue.py): its cache's figures
        self.gallery = gallery if gallery is not None else getattr(getattr(rig, "scorer", None), "gallery", None)
        self.cache = getattr(self.gallery, "cache", None)
        if self.cache is not None:
            self.fetch = Histogram("damage_rig_gallery_fetch_seconds", "Fetching one product's references "
                                   "(the reference store or the cache's disk level)", ["source"],
                                   buckets=STAGE_BUCKETS, registry=r)
            self.cache.fetch_observers.append(self.observe_fetch)
        r.register(_Scrape(self))
        self.server = None
        self._thread = None
        if rig is not None:
            rig.clock.observers.append(self.observe_stage)

    # ---- observers (decision path: a lock and an add each) ----------------------
    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)

    def observe_fetch(self, seconds: float, source: str) -> None:
        self.fetch.labels(source).observe(seconds)

    def decision(self, item, latency_ms: float) -> None:
        self.latency.observe(latency_ms / 1000.0)
        self.decisions.labels(item.decision, item.reason).inc()
        if item.reason == "late":
            self.late.inc()
        elif item.reason not in SCORED_REASONS:
            self.failsafe.labels(item.reason).inc()

    def divert_result(self, item, res) -> None:
        self.divert_results.labels("acked" if res.acked else "late" if res.late else "fault").inc()
        if res.late and not res.acked:
            self.late.inc()

    # ---- serving ---------------------------------------------------------------------
    def serve(self, listen: str) -> int:
        host, port = parse_listen(listen)
        if not is_loopback(host):
            log.warning("metrics served on %s:%d, beyond this host (metrics.listen); loopback is the default",
                        host, port)
        self.server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self.server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.rig is not None and self.observe_stage in self.rig.clock.observers:
            self.rig.clock.observers.remove(self.observe_stage)


class _Scrape:
    """Reads the running rig at each scrape: counters it already keeps, gauges of its state."""

    def __init__(self, m: RigMetrics):
        self.m = m

    def describe(self):
        return []  # collected fresh at each scrape (names checked by the dashboard test)

    def collect(self):
        m, rig = self.m, self.m.rig
        if rig is not None:
            c = dict(rig.counters)
            dropped = CounterMetricFamily("damage_rig_dropped_frames", "Frames dropped, per camera ('sync': "
                                          "frame sets the synchroniser gave up on)", labels=["camera"])
            fps = GaugeMetricFamily("damage_rig_camera_fps", "Frames per second delivered, per camera",
                                    labels=["camera"])
            conn = GaugeMetricFamily("damage_rig_camera_connected", "1 while the camera delivers frames",
                                     labels=["camera"])
            for name, s in rig.camera_stats().items():
                dropped.add_metric([name], s["dropped"])
                fps.add_metric([name], s["fps"])
                age = s.get("last_frame_age_s")
                conn.add_metric([name], 1.0 if age is not None and age < 2.0 else 0.0)
            dropped.add_metric(["sync"], rig.sync.dropped)
            yield from (dropped, fps, conn)
            for name, key, help_ in (
                    ("damage_rig_queue_overflows", "overload", "Items failed safe because a queue was full"),
                    ("damage_rig_stage_errors", "stage_errors", "Exceptions caught in a pipeline stage")):
                yield CounterMetricFamily(name, help_, value=c.get(key, 0))
            ev = m.events.stats() if m.events is not None and hasattr(m.events, "stats") else {}
            failures = c.get("event_write_failures", 0) + ev.get("retries", 0) + ev.get("open_failures", 0)
            yield CounterMetricFamily("damage_rig_event_write_failures", "Event-log writes (or opens) that "
                                      "failed and were retried or refused", value=failures)
            if ev:
                yield GaugeMetricFamily("damage_rig_event_log_backlog", "Records decided, not yet in the event "
                                        "log", value=ev.get("backlog", 0))
                yield GaugeMetricFamily("damage_rig_event_log_writable", "1 while the event log accepts writes",
                                        value=0.0 if ev.get("error") else 1.0)
                yield CounterMetricFamily("damage_rig_event_log_records_dropped", "Records that could not be "
                                          "kept (backlog full)", value=ev.get("records_dropped", 0))
            q = GaugeMetricFamily("damage_rig_queue_depth", "Entries waiting in each pipeline queue",
                                  labels=["queue"])
            for name in ("frames_q", "capture_q", "views_q"):
                q.add_metric([name.removesuffix("_q")], getattr(rig, name).qsize())
            yield q
            yield GaugeMetricFamily("damage_rig_items_in_flight", "Items captured and not yet decided",
                                    value=c.get("items", 0) - c.get("decisions", 0))
            scorer = rig.scorer
            info = InfoMetricFamily("damage_rig_model", "Model, gallery and backends in use")
            gallery = getattr(getattr(scorer, "gallery", None), "version", "") or ""
            info.add_metric([], {"version": str(getattr(scorer, "version", "")), "gallery": str(gallery),
                                 "backend": getattr(scorer.backend, "name", "?"),
                                 "preprocess": getattr(rig.pre, "name", "?")})
            yield info
        link = m.link
        if link is not None:
            yield GaugeMetricFamily("damage_rig_link_up", "1 while the divert controller answers",
                                    value=1.0 if link.healthy else 0.0)
            age = getattr(link, "heartbeat_age_s", None)
            yield GaugeMetricFamily("damage_rig_link_heartbeat_age_seconds", "Seconds since the controller "
                                    "last spoke", value=float("nan") if age is None else age)
        if m.state_dir is not None:
            free = free_bytes(m.state_dir)
            yield GaugeMetricFamily("damage_rig_state_dir_free_bytes", "Free space in the state directory",
                                    value=float("nan") if free is None else free)
        if m.mqtt is not None:
            s = m.mqtt.stats()
            yield GaugeMetricFamily("damage_rig_mqtt_connected", "1 while the MQTT broker is connected",
                                    value=1.0 if s["connected"] else 0.0)
            yield GaugeMetricFamily("damage_rig_mqtt_outbox_depth", "Events waiting in the on-disk outbox",
                                    value=s["outbox_depth"])
            yield CounterMetricFamily("damage_rig_mqtt_published", "Events handed to the broker",
                                      value=s["published"])
            yield CounterMetricFamily("damage_rig_mqtt_redelivered", "Events sent again after a restart "
                                      "(marked redelivered)", value=s["redelivered"])
            d = CounterMetricFamily("damage_rig_mqtt_dropped", "Events never published: the queue was full "
                                    "(stalled disk) or the outbox overflowed", labels=["where"])
            d.add_metric(["queue"], s["queue_dropped"])
            d.add_metric(["outbox"], s["outbox_dropped"])
            yield d
        if m.cache is not None:
            yield from _gallery_metrics(m.gallery.stats())
        if m.expected is not None:
            e = dict(m.expected.counters)
            sc = CounterMetricFamily("damage_rig_scans", "Upstream scans received, by result", labels=["result"])
            sc.add_metric(["read"], e["scans"] - e["unreadable"])
            sc.add_metric(["unreadable"], e["unreadable"])
            yield sc
            yield CounterMetricFamily("damage_rig_scans_unmatched", "Scans that matched no item",
                                      value=e["unmatched"])


def _gallery_metrics(st: dict):
    """The reference-store cache's figures (rig/detect/cache.py stats)."""
    for key, help_ in (("hits", "Decisions that found the product's references in memory"),
                       ("misses", "Decisions that found them absent (scored without them, or diverted)"),
                       ("evictions", "Products dropped from memory to hold cache_mb"),
                       ("fetch_errors", "Fetches that failed (the store away) and were retried"),
                       ("prefetches", "Fetches asked for by the upstream scan")):
        yield CounterMetricFamily(f"damage_rig_gallery_cache_{key}", help_, value=st[key])
    yield GaugeMetricFamily("damage_rig_gallery_cache_hit_ratio", "Hits / (hits + misses) since start",
                            value=st["hit_rate"])
    yield GaugeMetricFamily("damage_rig_gallery_cache_bytes", "Memory the cached references take (accounted)",
                            value=st["bytes"])
    yield GaugeMetricFamily("damage_rig_gallery_cache_entries", "Products in memory", value=st["entries"])
    yield GaugeMetricFamily("damage_rig_gallery_store_up", "1 while the reference store answers",
                            value=1.0 if st["store_up"] else 0.0)
    yield GaugeMetricFamily("damage_rig_gallery_products", "Products the identification index holds",
                            value=st["products"])
