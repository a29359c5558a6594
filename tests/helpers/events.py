"""Shared makers of ItemRecords with known content for the event-log, service and review tests."""

from __future__ import annotations

import numpy as np
from damage_rig.rig.events import ItemRecord


def make_record(i: int, decision: str = "divert", score: float | None = None, sku: str = "sku-a",
                t0: float = 1_700_000_000.0, views: tuple[str, ...] = ("top", "side"),
                size: int = 48, with_images: bool = True) -> ItemRecord:
    """Item i with a deterministic crop (a gradient whose level encodes i) and a heatmap peaking at (i % size)."""
    rng = np.random.default_rng(i)
    vs = {}
    if with_images:
        for k, v in enumerate(views):
            rgb = np.zeros((size, size, 3), np.uint8)
            rgb[..., 0] = (i * 7 + k) % 256
            rgb[..., 1] = np.arange(size, dtype=np.uint8)[None, :] * 4
            rgb[..., 2] = rng.integers(0, 40, (size, size))
            heat = np.zeros((size // 2, size // 2), np.float32)
            heat[(i % (size // 2)), (i % (size // 2))] = 3.0
            vs[v] = {"rgb": rgb, "heatmap": heat}
    return ItemRecord(
        id=f"it{i:06d}", captured_at=t0 + i * 1.0, belt_pos=1000 * i, sku_pred=sku, sku_conf=0.9,
        score=score if score is not None else (0.9 if decision == "divert" else 0.1),
        type="crush", decision=decision, reason="score", latency_ms=30.0 + i % 5,
        model_version="test-1", views=vs, truth={"damaged": decision == "divert"})
