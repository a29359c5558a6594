"""Reviewer labels in the event database, and the queries the review page, export and tuning need.

Only diverted items are reviewed (every one is looked at by a person at the
divert station anyway). Each label change bumps the row's ``label_rev``; the
page sends back the revision it showed, so two reviewers (or a stale tab)
cannot silently overwrite each other.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from .. import events
from ..dataset import DAMAGE_TYPES
from ..foundation.errors import RigError
from .drift import drift_flags


class ReviewError(RigError):
    """A review request that cannot be honoured; ``http_status`` is what the web API answers."""

    http_status = 400


class BadLabelError(ReviewError):
    http_status = 400


class NotDivertedError(ReviewError):
    http_status = 409


class StaleLabelError(ReviewError):
    http_status = 409


class ReviewStore:
    """Reads items and writes labels; one connection shared by the review server's threads."""

    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir).expanduser()
        if not events.db_path(self.state_dir).is_file():
            raise events.EventLogError(f"{events.db_path(self.state_dir)}: no event log here "
                                       "(point --state at the rig's state directory)")
        self.crops_root = self.state_dir / "crops"
        try:
            self._conn = events.connect(self.state_dir)
        except sqlite3.Error as exc:  # corrupt, read-only or locked: a clear error, not a traceback
            raise events.EventLogError(f"{events.db_path(self.state_dir)}: cannot open the event log for "
                                       f"review: {exc} (a read-only or damaged state directory?)") from None
        self._lock = threading.Lock()

    def _rows(self, sql: str, params: tuple = ()) -> list[dict]:
        with self._lock:
            return [events.row_to_dict(r, self.crops_root) for r in self._conn.execute(sql, params)]

    def item(self, item_id: str) -> dict:
        rows = self._rows("SELECT * FROM items WHERE id = ?", (item_id,))
        if not rows:
            raise events.UnknownItemError(f"no item {item_id!r} in the event log {events.db_path(self.state_dir)}")
        return rows[0]

    def diverted(self, limit: int = 200, unreviewed_only: bool = False) -> list[dict]:
        """Diverted items, newest first."""
        where = "decision = 'divert'" + (" AND label IS NULL" if unreviewed_only else "")
        return self._rows(f"SELECT * FROM items WHERE {where} ORDER BY captured_at DESC, rowid DESC LIMIT ?",
                          (int(limit),))

    def reviewed(self, since: float | None = None) -> list[dict]:
        """Every labelled item, oldest first (export, tuning, enrollment)."""
        return self._rows("SELECT * FROM items WHERE label IS NOT NULL AND captured_at > ? "
                          "ORDER BY captured_at, rowid", (since if since is not None else -1.0,))

    def confirmed_good(self, sku: str, limit: int = 20) -> list[dict]:
        """The SKU's items reviewed 'not damaged' or 'packaging changed', newest first (reference images)."""
        return self._rows("SELECT * FROM items WHERE sku_pred = ? AND label IN ('not_damaged', 'packaging_changed') "
                          "ORDER BY labelled_at DESC, rowid DESC LIMIT ?", (sku, int(limit)))

    def label(self, item_id: str, verdict: str, damage_type: str | None = None, rev: int | None = None,
              reviewer: str | None = None) -> dict:
        """Store a reviewer's verdict; ``rev`` is the label revision the reviewer saw (None: do not check)."""
        if verdict not in events.VERDICTS:
            raise BadLabelError(f"verdict {verdict!r} is not one of {list(events.VERDICTS)}")
        if verdict == "damaged":
            if damage_type is not None and damage_type not in DAMAGE_TYPES:
                raise BadLabelError(f"damage type {damage_type!r} is not one of {list(DAMAGE_TYPES)}")
        elif damage_type is not None:
            raise BadLabelError(f"a damage type only goes with 'damaged', not {verdict!r}")
        with self._lock:
            row = self._conn.execute("SELECT decision, type, label, label_rev, reviewer, labelled_at "
                                     "FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise events.UnknownItemError(f"no item {item_id!r} in the event log")
            if row["decision"] != "divert":
                raise NotDivertedError(f"item {item_id!r} was never diverted (decision {row['decision']!r}); "
                                       "only diverted items are reviewed")
            if rev is not None and int(rev) != row["label_rev"]:
                who = f" by {row['reviewer']}" if row["reviewer"] else ""
                raise StaleLabelError(
                    f"item {item_id!r} was labelled {row['label']!r}{who} after your page loaded "
                    f"(revision {row['label_rev']}, your page shows {rev}); reload the page")
            if verdict == "damaged" and damage_type is None:
                damage_type = row["type"] if row["type"] in DAMAGE_TYPES else None
            try:
                self._conn.execute(
                    "UPDATE items SET label = ?, label_type = ?, labelled_at = ?, reviewer = ?, "
                    "label_rev = label_rev + 1 WHERE id = ? AND label_rev = ?",
                    (verdict, damage_type, time.time(), reviewer, item_id, row["label_rev"]))
            except sqlite3.OperationalError as exc:
                raise events.EventLogError(f"cannot store the label of {item_id!r}: {exc}") from None
        return self.item(item_id)

    def record_gallery_event(self, sku: str, action: str, version: str | None, item_ids: list[str]) -> None:
        with self._lock:
            self._conn.execute("INSERT INTO gallery_events (at, sku, action, version, items) VALUES (?, ?, ?, ?, ?)",
                               (time.time(), sku, action, version, json.dumps(item_ids)))

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def drift(self) -> list[dict]:
        with self._lock:
            return [f.to_json() for f in drift_flags(self._conn)]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
