"""Where the damage is: boxes and brush strokes a reviewer draws on a crop, kept as a mask per view.

The page sends shapes in crop-relative coordinates (0..1 across the crop's
width and height), so the server never trusts a client's image::

    {"view": "top", "shapes": [{"box": [x0, y0, x1, y1]},
                                {"brush": [[x, y], ...], "r": 0.03}]}   (r: radius, share of the width)

The server rasterises them at the crop's own size into an 8-bit PNG (255 =
damaged pixel, the dataset format's mask) under ``STATE/masks/ITEM/VIEW.png``
with ``VIEW.json`` beside it (reviewer, time, shapes). No shapes clears the
mask. `rig dataset export` puts the masks of damaged items into the dataset.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np

from .store import BadLabelError

MAX_SHAPES = 64
MAX_POINTS = 4000  # over all strokes
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def _num(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadLabelError(f"{what} must be a finite number, got {v!r}"[:200])
    if not -0.5 <= v <= 1.5:
        raise BadLabelError(f"{what} must lie in the crop (0..1), got {v!r}")
    return float(v)


def parse_shapes(shapes) -> list[dict]:
    """The shapes of a mask request, checked; BadLabelError (HTTP 400) naming the bad part."""
    if not isinstance(shapes, list):
        raise BadLabelError("'shapes' must be a list of {'box': [x0, y0, x1, y1]} or {'brush': [[x, y], ...], 'r': R}")
    if len(shapes) > MAX_SHAPES:
        raise BadLabelError(f"at most {MAX_SHAPES} shapes per mask, got {len(shapes)}")
    out, points = [], 0
    for i, s in enumerate(shapes):
        if not isinstance(s, dict) or len(s.keys() & {"box", "brush"}) != 1 or set(s) - {"box", "brush", "r"}:
            raise BadLabelError(f"shape {i}: expected {{'box': [...]}} or {{'brush': [...], 'r': R}}")
        if "box" in s:
            b = s["box"]
            if not isinstance(b, list) or len(b) != 4:
                raise BadLabelError(f"shape {i}: 'box' must be [x0, y0, x1, y1]")
            x0, y0, x1, y1 = (_num(v, f"shape {i} box") for v in b)
            out.append({"box": [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]})
        else:
            pts = s["brush"]
            if not isinstance(pts, list) or not pts:
                raise BadLabelError(f"shape {i}: 'brush' must be a non-empty list of [x, y]")
            points += len(pts)
            if points > MAX_POINTS:
                raise BadLabelError(f"at most {MAX_POINTS} brush points per mask")
            if any(not isinstance(p, list) or len(p) != 2 for p in pts):
                raise BadLabelError(f"shape {i}: each brush point must be [x, y]")
            r = s.get("r", 0.03)
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.002 <= r <= 0.25:
                raise BadLabelError(f"shape {i}: brush radius 'r' must be within 0.002..0.25 of the width")
            out.append({"brush": [[_num(x, f"shape {i} brush"), _num(y, f"shape {i} brush")] for x, y in pts],
                        "r": float(r)})
    return out


def rasterize(shapes: list[dict], size: tuple[int, int]) -> np.ndarray:
    """uint8 mask (h, w), 255 inside the shapes."""
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    for s in shapes:
        if "box" in s:
            x0, y0, x1, y1 = s["box"]
            p0 = (int(np.clip(round(x0 * w), 0, w - 1)), int(np.clip(round(y0 * h), 0, h - 1)))
            p1 = (int(np.clip(round(x1 * w) - 1, 0, w - 1)), int(np.clip(round(y1 * h) - 1, 0, h - 1)))
            cv2.rectangle(mask, p0, p1, 255, thickness=-1)
        else:
            rad = max(1, round(s["r"] * w))
            pts = [(round(x * w), round(y * h)) for x, y in s["brush"]]
            for a, b in zip(pts, pts[1:] or pts):
                cv2.line(mask, a, b, 255, thickness=2 * rad, lineType=cv2.LINE_8)
                cv2.circle(mask, a, rad, 255, thickness=-1)
            cv2.circle(mask, pts[-1], rad, 255, thickness=-1)
    return mask


class MaskStore:
    """Masks on disk under the state directory: ``masks/ITEM/VIEW.png`` + ``VIEW.json``."""

    def __init__(self, state_dir: str | Path):
        self.root = Path(state_dir) / "masks"

    def _paths(self, item_id: str, view: str) -> tuple[Path, Path]:
        if not _NAME.match(item_id) or not _NAME.match(view):
            raise BadLabelError(f"bad item id or view name: {item_id!r}, {view!r}"[:200])
        d = self.root / item_id
        return d / f"{view}.png", d / f"{view}.json"

    def path(self, item_id: str, view: str) -> Path | None:
        png, _ = self._paths(item_id, view)
        return png if png.is_file() else None

    def info(self, item_id: str, view: str) -> dict | None:
        _, meta = self._paths(item_id, view)
        try:
            return json.loads(meta.read_text())
        except (OSError, ValueError):
            return None

    def views(self, item_id: str) -> list[str]:
        d = self.root / item_id
        return sorted(p.stem for p in d.glob("*.png")) if _NAME.match(item_id) and d.is_dir() else []

    def save(self, item_id: str, view: str, shapes: list[dict], size: tuple[int, int],
             reviewer: str) -> np.ndarray | None:
        """Write (or, with no shapes, remove) the mask; returns it (None when cleared)."""
        png, meta = self._paths(item_id, view)
        if not shapes:
            for p in (png, meta):
                p.unlink(missing_ok=True)
            return None
        mask = rasterize(shapes, size)
        png.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".png", mask)
        if not ok:
            raise BadLabelError(f"cannot encode the mask of {item_id}/{view}")
        for path, data in ((png, buf.tobytes()),
                           (meta, json.dumps({"reviewer": reviewer, "at": time.time(), "size": list(size),
                                              "shapes": shapes}).encode())):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # a reader sees the old mask or the new one, never half of one
        return mask
