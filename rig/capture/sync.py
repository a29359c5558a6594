"""Match frames from several cameras by timestamp."""

from __future__ import annotations

from collections import deque

from .base import FrameRef


class FrameSync:
    """Groups one frame per camera whose timestamps lie within ``tolerance_ms``.

    Frames arrive per camera in time order. Whenever every camera has a frame
    waiting, the heads are compared: within tolerance -> a set is emitted;
    otherwise the oldest head can never be matched and is dropped (counted).

    With a ``primary`` camera (the trigger's) its frames are never dropped for want
    of a partner: a partner's frame that arrives late (after the primary's next
    frame) is still matched while it is within tolerance, and when a partner's
    frame for it can no longer come (that camera's next frame is already newer),
    the primary's frame goes on in a partial set with whatever partners match it,
    so the trigger sees every frame of its camera. With ``stale_ms`` as well: when
    the primary's oldest frame is ``stale_ms`` older than its newest, the partners
    it waits for are not coming (a camera stopped), and it is emitted partial too
    — so the trigger camera keeps working when another camera is down.
    """

    def __init__(self, cameras: list[str], tolerance_ms: float, max_pending: int = 4,
                 primary: str | None = None, stale_ms: float | None = None):
        self.cameras = list(cameras)
        self.tolerance_ms = tolerance_ms
        self.max_pending = max_pending
        self.primary = primary
        self.stale_ms = stale_ms
        self.partial = 0
        self.pending: dict[str, deque[FrameRef]] = {c: deque() for c in cameras}
        self.dropped = 0
        self.sets = 0

    def push(self, ref: FrameRef) -> list[dict[str, FrameRef]]:
        q = self.pending[ref.camera]
        q.append(ref)
        out = []
        if ref.camera == self.primary and self.stale_ms is not None:
            while q and ref.timestamp_ms - q[0].timestamp_ms > self.stale_ms:
                out.append(self._partial(q.popleft()))
        while len(q) > self.max_pending:  # a camera whose partners stopped: keep memory bounded
            q.popleft().release()
            self.dropped += 1
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
                if oldest.camera == self.primary:  # its partner is lost: the trigger still gets the frame
                    out.append(self._partial(self.pending[oldest.camera].popleft()))
                    continue
                self.pending[oldest.camera].popleft().release()
                self.dropped += 1
        return out

    def _partial(self, head: FrameRef) -> dict[str, FrameRef]:
        fs = {head.camera: head}
        for c in self.cameras:
            if c == head.camera:
                continue
            q = self.pending[c]
            while q and q[0].timestamp_ms < head.timestamp_ms - self.tolerance_ms:
                q.popleft().release()
                self.dropped += 1
            if q and abs(q[0].timestamp_ms - head.timestamp_ms) <= self.tolerance_ms:
                fs[c] = q.popleft()
        self.partial += 1
        return fs

    def flush(self) -> None:
        for q in self.pending.values():
            while q:
                q.popleft().release()
