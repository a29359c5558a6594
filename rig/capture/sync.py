"""Match frames from several cameras by timestamp."""

from __future__ import annotations

from collections import deque

from .base import FrameRef


class FrameSync:
    """Groups one frame per camera whose timestamps lie within ``tolerance_ms``.

    Frames arrive per camera in time order. Whenever every camera has a frame
    waiting, the heads are compared: within tolerance -> a set is emitted;
    otherwise the oldest head can never be matched and is dropped (counted).
    """

    def __init__(self, cameras: list[str], tolerance_ms: float, max_pending: int = 4):
        self.cameras = list(cameras)
        self.tolerance_ms = tolerance_ms
        self.max_pending = max_pending
        self.pending: dict[str, deque[FrameRef]] = {c: deque() for c in cameras}
        self.dropped = 0
        self.sets = 0

    def push(self, ref: FrameRef) -> list[dict[str, FrameRef]]:
        q = self.pending[ref.camera]
        q.append(ref)
        while len(q) > self.max_pending:  # a camera whose partners stopped: keep memory bounded
            q.popleft().release()
            self.dropped += 1
        out = []
        while all(self.pending[c] for c in self.cameras):
            heads = {c: self.pending[c][0] for c in self.cameras}
            ts = [h.timestamp_ms for h in heads.values()]
            if max(ts) - min(ts) <= self.tolerance_ms:
                for c in self.cameras:
                    self.pending[c].popleft()
                out.append(heads)
                self.sets += 1
            else:
                oldest = min(heads.values(), key=lambda h: h.timestamp_ms)
                self.pending[oldest.camera].popleft().release()
                self.dropped += 1
        return out

    def flush(self) -> None:
        for q in self.pending.values():
            while q:
                q.popleft().release()
