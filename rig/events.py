"""The event log: one SQLite row per item the rig decided, plus JPEG crops on disk.

Why SQLite in WAL mode: the runtime writes from its decision and divert
threads while ``rig review`` and ``rig status`` read from other processes;
WAL lets readers run beside the one writer, and with ``synchronous=FULL``
every committed row (an acknowledgement in particular) is on disk before
``mark_acked`` returns, so a SIGKILL or a power cut loses nothing that was
acknowledged.

Layout under the state directory::

    STATE/events.db                 table `items` (schema below), table `gallery_events`
    STATE/crops/YYYYMMDD/ID/VIEW.jpg        the view's crop as the model saw it
    STATE/crops/YYYYMMDD/ID/VIEW_heat.png   its anomaly heatmap, 8-bit, scaled by heat_max

Crops are written before the row, so a crash leaves at worst an orphan
folder, never a row pointing at nothing. Retention removes crops (never rows)
older than ``retention_days`` and, oldest first, whatever exceeds
``max_crops_mb``; unreviewed diverted items lose their crops last because a
reviewer still needs them.

A full disk or an unwritable state directory raises :class:`EventLogError`
(a DeviceError) naming the path; rows already committed stay intact because
SQLite rolls the failed transaction back. A crop that cannot be written is
logged and the row is still recorded: the decision matters more than the
picture.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .foundation.errors import DeviceError, RigError

log = logging.getLogger(__name__)

DB_NAME = "events.db"
SCHEMA_VERSION = 1

#: what a reviewer may say about a diverted item
VERDICTS = ("damaged", "not_damaged", "packaging_changed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id            TEXT PRIMARY KEY,
    captured_at   REAL NOT NULL,          -- epoch seconds
    belt_pos      INTEGER NOT NULL,
    sku_pred      TEXT NOT NULL,
    sku_conf      REAL NOT NULL,
    score         REAL NOT NULL,          -- fused P(damage) / anomaly score
    type          TEXT NOT NULL,          -- predicted damage type
    decision      TEXT NOT NULL CHECK (decision IN ('divert', 'pass')),
    reason        TEXT NOT NULL,          -- current reason: score | late | fault | failsafe | ...
    decided_reason TEXT NOT NULL,         -- the reason given at decision time
    latency_ms    REAL NOT NULL,
    model_version TEXT NOT NULL,
    acked         INTEGER NOT NULL DEFAULT 0,
    acked_at      REAL,
    views         TEXT NOT NULL,          -- JSON list of view names
    crops         TEXT NOT NULL,          -- JSON {view: {rgb, heatmap, heat_max}} (relative paths)
    crop_bytes    INTEGER NOT NULL DEFAULT 0,
    crops_deleted INTEGER NOT NULL DEFAULT 0,
    truth         TEXT,                   -- JSON simulator ground truth (demo summaries only)
    label         TEXT CHECK (label IS NULL OR label IN ('damaged', 'not_damaged', 'packaging_changed')),
    label_type    TEXT,                   -- damage type when label = damaged
    labelled_at   REAL,
    reviewer      TEXT,
    label_rev     INTEGER NOT NULL DEFAULT 0  -- bumped on every label change (stale-page check)
);
CREATE INDEX IF NOT EXISTS items_captured ON items (captured_at);
CREATE INDEX IF NOT EXISTS items_divert ON items (decision, captured_at);
CREATE INDEX IF NOT EXISTS items_sku ON items (sku_pred, captured_at);
CREATE TABLE IF NOT EXISTS gallery_events (
    at       REAL NOT NULL,
    sku      TEXT NOT NULL,
    action   TEXT NOT NULL,       -- enroll | rollback
    version  TEXT,
    items    TEXT                 -- JSON list of item ids enrolled
);
"""


class EventLogError(DeviceError):
    """The event log cannot be written (disk full, unwritable or corrupt state directory)."""


class UnknownItemError(RigError, LookupError):
    """No item with that id is in the event log."""


@dataclass
class ItemRecord:
    """Everything the runtime knows about one decided item."""

    id: str
    captured_at: float
    belt_pos: int
    sku_pred: str
    sku_conf: float
    score: float
    type: str
    decision: str
    reason: str
    latency_ms: float
    model_version: str
    views: dict[str, dict] = field(default_factory=dict)  # {view: {"rgb": HxWx3 uint8 RGB, "heatmap": float | None}}
    truth: dict | None = None


def db_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / DB_NAME


def connect(state_dir: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """Open the event database (creating it unless ``readonly``) with the pragmas every user needs."""
    path = db_path(state_dir)
    if readonly:
        if not path.is_file():
            raise EventLogError(f"{path}: no event log here (is --state the rig's state directory?)")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            # a read-only state directory: WAL readers need to create -shm; read the file as it is
            conn.close()
            conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True, timeout=5.0, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is fsynced before it returns, so an acknowledgement survives a power cut too.
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return conn


def row_to_dict(row: sqlite3.Row, crops_root: Path | None = None) -> dict:
    """A row as plain JSON-able data; crop paths made absolute when ``crops_root`` is given."""
    d = dict(row)
    d["views"] = json.loads(d["views"])
    crops = json.loads(d["crops"])
    if crops_root is not None:
        for c in crops.values():
            for k in ("rgb", "heatmap"):
                if c.get(k):
                    c[k] = str(crops_root / c[k])
    d["crops"] = crops
    d["truth"] = json.loads(d["truth"]) if d["truth"] else None
    d["acked"] = bool(d["acked"])
    d["crops_deleted"] = bool(d["crops_deleted"])
    return d


def _check_record(rec: ItemRecord) -> None:
    if rec.decision not in ("divert", "pass"):
        raise ValueError(f"item {rec.id!r}: decision must be 'divert' or 'pass', got {rec.decision!r}")
    if not rec.id or "/" in rec.id or rec.id.startswith("."):
        raise ValueError(f"item id {rec.id!r} must be non-empty and free of '/' (it names a folder)")
    for view, v in rec.views.items():
        rgb = v.get("rgb")
        if rgb is not None and (rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3):
            raise ValueError(f"item {rec.id!r} view {view!r}: rgb must be HxWx3 uint8, "
                             f"got {rgb.shape} {rgb.dtype}")


class EventLog:
    """The runtime's writer of the event log; safe to call from several threads."""

    #: seconds between retention passes (also run at open)
    PRUNE_PERIOD_S = 60.0

    def __init__(self, state_dir: str | Path, retention_days: float = 30, max_crops_mb: float = 2048,
                 save_crops: bool = True, jpeg_quality: int = 90):
        self.state_dir = Path(state_dir).expanduser()
        self.crops_root = self.state_dir / "crops"
        self.retention_s = float(retention_days) * 86400.0
        self.max_crop_bytes = int(max_crops_mb * 1024 * 1024)
        self.save_crops = save_crops
        self.jpeg_quality = int(jpeg_quality)
        self._lock = threading.Lock()
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._conn = connect(self.state_dir)
        except (OSError, sqlite3.Error) as exc:
            raise EventLogError(f"cannot open the event log in {self.state_dir}: {exc} "
                                "(check that the state directory exists, is a folder and is writable "
                                "by this user)") from None
        self._last_prune = 0.0
        self.prune()

    # -- writing -------------------------------------------------------------------------------

    def record(self, rec: ItemRecord) -> None:
        """Write the crops, then insert the row (acked = 0). Raises EventLogError if the row is not stored."""
        _check_record(rec)
        crops, nbytes = self._write_crops(rec) if self.save_crops else ({}, 0)
        values = (rec.id, float(rec.captured_at), int(rec.belt_pos), rec.sku_pred, float(rec.sku_conf),
                  float(rec.score), rec.type, rec.decision, rec.reason, rec.reason, float(rec.latency_ms),
                  rec.model_version, json.dumps(sorted(rec.views)), json.dumps(crops), nbytes,
                  json.dumps(rec.truth) if rec.truth is not None else None)
        self._write(
            "INSERT INTO items (id, captured_at, belt_pos, sku_pred, sku_conf, score, type, decision, "
            "reason, decided_reason, latency_ms, model_version, views, crops, crop_bytes, truth) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values, f"record item {rec.id!r}")
        if time.monotonic() - self._last_prune > self.PRUNE_PERIOD_S:
            try:
                self.prune()
            except (sqlite3.Error, OSError) as exc:  # the row is stored; retention waits for next time
                log.warning("retention pass skipped: %s", exc)

    def mark_acked(self, item_id: str, acked_at: float) -> None:
        """The controller acknowledged the divert: committed (fsynced) before this returns."""
        n = self._write("UPDATE items SET acked = 1, acked_at = ? WHERE id = ?", (float(acked_at), item_id),
                        f"mark item {item_id!r} acked")
        if n == 0:
            raise UnknownItemError(f"mark_acked: no item {item_id!r} in {db_path(self.state_dir)}")

    def mark_result(self, item_id: str, acked: bool, reason: str | None) -> None:
        """Final outcome of the divert link (e.g. acked=False, reason='late' or 'fault')."""
        if reason is None:
            sql, params = "UPDATE items SET acked = ? WHERE id = ?", (int(bool(acked)), item_id)
        else:
            sql, params = "UPDATE items SET acked = ?, reason = ? WHERE id = ?", (int(bool(acked)), reason, item_id)
        if self._write(sql, params, f"mark result of item {item_id!r}") == 0:
            raise UnknownItemError(f"mark_result: no item {item_id!r} in {db_path(self.state_dir)}")

    def _write(self, sql: str, params: tuple, what: str) -> int:
        with self._lock:
            try:
                cur = self._conn.execute(sql, params)
                return cur.rowcount
            except sqlite3.IntegrityError as exc:
                raise EventLogError(f"{what}: {exc} in {db_path(self.state_dir)}") from None
            except sqlite3.OperationalError as exc:
                raise EventLogError(f"{what}: {exc} ({db_path(self.state_dir)}; rows already recorded are "
                                    "intact — free disk space or fix the state directory's permissions)"
                                    ) from None

    def _write_crops(self, rec: ItemRecord) -> tuple[dict, int]:
        import cv2

        day = time.strftime("%Y%m%d", time.gmtime(rec.captured_at))
        rel_dir = Path(day) / rec.id
        out: dict[str, dict] = {}
        nbytes = 0
        try:
            (self.crops_root / rel_dir).mkdir(parents=True, exist_ok=True)
            for view, v in sorted(rec.views.items()):
                entry: dict = {"rgb": None, "heatmap": None, "heat_max": None}
                if v.get("rgb") is not None:
                    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(v["rgb"], cv2.COLOR_RGB2BGR),
                                           [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                    if ok:
                        rel = rel_dir / f"{view}.jpg"
                        (self.crops_root / rel).write_bytes(buf.tobytes())
                        entry["rgb"], nbytes = str(rel), nbytes + len(buf)
                heat = v.get("heatmap")
                if heat is not None:
                    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0)
                    hmax = float(max(heat.max(), 1e-6))
                    img = np.clip(np.round(heat / hmax * 255.0), 0, 255).astype(np.uint8)
                    ok, buf = cv2.imencode(".png", img)
                    if ok:
                        rel = rel_dir / f"{view}_heat.png"
                        (self.crops_root / rel).write_bytes(buf.tobytes())
                        entry.update(heatmap=str(rel), heat_max=hmax)
                        nbytes += len(buf)
                out[view] = entry
        except OSError as exc:
            log.error("item %s: crops not saved (%s); the row is recorded without them", rec.id, exc)
        return out, nbytes

    # -- retention -----------------------------------------------------------------------------

    def prune(self, now: float | None = None) -> int:
        """Delete crops past retention age, then the oldest beyond the size budget. Returns items pruned."""
        now = time.time() if now is None else now
        self._last_prune = time.monotonic()
        with self._lock:
            old = [r[0] for r in self._conn.execute(
                "SELECT id FROM items WHERE crops_deleted = 0 AND crop_bytes > 0 AND captured_at < ?",
                (now - self.retention_s,))]
            total = self._conn.execute(
                "SELECT COALESCE(SUM(crop_bytes), 0) FROM items WHERE crops_deleted = 0").fetchone()[0]
            over = []
            if total > self.max_crop_bytes:
                # passes first, then reviewed diverts, then unreviewed diverts; oldest first within each
                for item_id, size in self._conn.execute(
                        "SELECT id, crop_bytes FROM items WHERE crops_deleted = 0 AND crop_bytes > 0 "
                        "ORDER BY (decision = 'divert' AND label IS NULL), captured_at"):
                    if total <= self.max_crop_bytes:
                        break
                    over.append(item_id)
                    total -= size
        victims = list(dict.fromkeys(old + over))
        for item_id in victims:
            self._delete_crops(item_id)
        if victims:
            log.info("retention: removed crops of %d item(s) (%d past %.1f days, %d over %.0f MB)",
                     len(victims), len(old), self.retention_s / 86400, len(over), self.max_crop_bytes / 2**20)
        return len(victims)

    def _delete_crops(self, item_id: str) -> None:
        with self._lock:
            row = self._conn.execute("SELECT crops FROM items WHERE id = ?", (item_id,)).fetchone()
        folders = {(self.crops_root / c[k]).parent for c in json.loads(row[0]).values()
                   for k in ("rgb", "heatmap") if c.get(k)} if row else set()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        try:
            self._write("UPDATE items SET crops_deleted = 1 WHERE id = ?", (item_id,), "retention")
        except EventLogError as exc:
            log.warning("retention: %s", exc)

    # -- reading -------------------------------------------------------------------------------

    def get(self, item_id: str) -> dict:
        with self._lock:
            row = self._conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise UnknownItemError(f"no item {item_id!r} in {db_path(self.state_dir)}")
        return row_to_dict(row, self.crops_root)

    def recent(self, n: int) -> list[dict]:
        """The last ``n`` items, newest first."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM items ORDER BY captured_at DESC, rowid DESC LIMIT ?",
                                      (int(n),)).fetchall()
        return [row_to_dict(r, self.crops_root) for r in rows]

    def counts(self) -> dict:
        with self._lock:
            return counts(self._conn)

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                log.warning("event log checkpoint at close failed: %s", exc)
            self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def counts(conn: sqlite3.Connection) -> dict:
    """Totals over the whole log: items, per decision, acked diverts, per reason, review progress."""
    one = conn.execute(
        "SELECT COUNT(*), "
        "COALESCE(SUM(decision = 'divert'), 0), COALESCE(SUM(decision = 'pass'), 0), "
        "COALESCE(SUM(decision = 'divert' AND acked = 1), 0), "
        "COALESCE(SUM(decision = 'divert' AND label IS NOT NULL), 0) FROM items").fetchone()
    by_reason = {r[0]: r[1] for r in conn.execute("SELECT reason, COUNT(*) FROM items GROUP BY reason")}
    by_label = {r[0]: r[1] for r in conn.execute(
        "SELECT label, COUNT(*) FROM items WHERE label IS NOT NULL GROUP BY label")}
    return {"items": one[0], "divert": one[1], "pass": one[2], "divert_acked": one[3],
            "divert_unacked": one[1] - one[3], "reviewed": one[4], "unreviewed": one[1] - one[4],
            "by_reason": by_reason, "by_label": by_label}
