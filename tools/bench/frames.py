"""The bench's stand-in camera driver: frame sets rendered once, delivered from another process.

The simulator costs ~100 core-ms per item to render; in the rig's process it
would be measured as the rig. Here it runs once per (seed, config): each belt
item's frame set at the tunnel centre (one colour + depth frame per camera) is
rendered and cached on disk (:func:`frame_sets`, under the kernels' cache
root). A :class:`FrameServer` process then delivers cached sets on request into
a ring of slots in shared memory (``multiprocessing.shared_memory``), as a
camera driver writes frames into memory the host reads: the rig's side pays
what it pays with a real camera — one copy out of the driver's buffer — and
the server's CPU is counted as the stand-ins'.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import shutil
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from ...calibration.model import Calibration
from ...kernels.loader import cache_dir
from ...rig.foundation.errors import RigError

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when what is cached changes


@dataclass(frozen=True)
class FrameLayout:
    """Where one frame set lies in a slot: per camera a colour and a depth array."""

    cameras: tuple[str, ...]
    color_shapes: tuple[tuple[int, ...], ...]
    depth_shapes: tuple[tuple[int, ...], ...]

    def parts(self):
        """(camera, kind, shape, dtype, byte offset) of each array in a slot."""
        off = 0
        for cam, cs, ds in zip(self.cameras, self.color_shapes, self.depth_shapes):
            for kind, shape, dtype in (("color", cs, np.uint8), ("depth", ds, np.uint16)):
                yield cam, kind, shape, dtype, off
                off += int(np.prod(shape)) * np.dtype(dtype).itemsize

    @property
    def slot_bytes(self) -> int:
        return sum(int(np.prod(s)) * np.dtype(d).itemsize for _, _, s, d, _ in self.parts())

    def views(self, buf, slot: int) -> dict[str, dict[str, np.ndarray]]:
        """numpy views of slot ``slot`` of ``buf`` (camera -> {"color", "depth"})."""
        base = slot * self.slot_bytes
        out: dict[str, dict[str, np.ndarray]] = {}
        for cam, kind, shape, dtype, off in self.parts():
            out.setdefault(cam, {})[kind] = np.ndarray(shape, dtype, buffer=buf, offset=base + off)
        return out


def cache_key(cfg, calib_path: Path, n_items: int, seed: int, damage_rate: float) -> str:
    h = hashlib.sha256()
    h.update(Path(calib_path).read_bytes())
    cams = [(c.name, tuple(c.resolution), c.source) for c in cfg.cameras]
    h.update(json.dumps([CACHE_VERSION, cams, n_items, seed, damage_rate, cfg.belt.item_pitch_m,
                         cfg.belt.speed_mps]).encode())
    return h.hexdigest()[:20]


def frame_sets(cfg, calib: Calibration, n_items: int, seed: int = 1, damage_rate: float = 0.2,
               progress=None) -> Path:
    """The folder of cached frame sets for these settings, rendering them the first time.

    Per camera ``<cam>.color.npy`` (n, H, W, 3) uint8 and ``<cam>.depth.npy``
    (n, h, w) uint16: item k's frame set with the item at the tunnel centre;
    ``meta.json`` holds the layout and each item's truth.
    """
    from ..sim.belt import BeltSim
    from ..sim.generate import SimSettings

    if n_items < 1:
        raise RigError(f"the frame cache needs at least 1 item, got {n_items}")
    folder = cache_dir() / "bench-frames" / cache_key(cfg, cfg.calibration_path, n_items, seed, damage_rate)
    if (folder / "meta.json").is_file():
        return folder
    say = progress or (lambda msg: None)
    say(f"rendering {n_items} frame sets once (cached in {folder}) ...")
    names = [c.name for c in cfg.cameras]
    belt = BeltSim(calib, names, SimSettings(seed=seed, damage_rate=damage_rate), cfg.belt.speed_mps or 0.5,
                   cfg.belt.item_pitch_m, n_items=n_items)
    tmp = folder.with_name(folder.name + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for k in range(n_items):
        t = belt.item(k).t_center
        for cam in names:
            color, depth = belt.frame(cam, t)
            for kind, a in (("color", color), ("depth", depth)):
                if (cam, kind) not in arrays:
                    arrays[cam, kind] = np.lib.format.open_memmap(tmp / f"{cam}.{kind}.npy", "w+", a.dtype,
                                                                  (n_items, *a.shape))
                arrays[cam, kind][k] = a
    for a in arrays.values():
        a.flush()
    meta = {"cameras": names, "items": n_items, "seed": seed,
            "color_shapes": [list(arrays[c, "color"].shape[1:]) for c in names],
            "depth_shapes": [list(arrays[c, "depth"].shape[1:]) for c in names],
            "t_center": [belt.item(k).t_center for k in range(n_items)],
            "truth": [belt.truth(k) for k in range(n_items)]}
    (tmp / "meta.json").write_text(json.dumps(meta, default=str))
    del arrays
    if folder.exists():  # another bench rendered the same sets meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(folder)
    return folder


def layout_of(folder: Path) -> tuple[FrameLayout, dict]:
    meta = json.loads((Path(folder) / "meta.json").read_text())
    return FrameLayout(tuple(meta["cameras"]), tuple(tuple(s) for s in meta["color_shapes"]),
                       tuple(tuple(s) for s in meta["depth_shapes"])), meta


def _serve(folder: str, shm_name: str, slots: int, conn) -> None:
    """The server process: copy frame set k into slot s on each (k, s) request; None ends it."""
    layout, _ = layout_of(Path(folder))
    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        cached = {(cam, kind): np.load(Path(folder) / f"{cam}.{kind}.npy", mmap_mode="r")
                  for cam in layout.cameras for kind in ("color", "depth")}
        # the cache is read into memory once, as a camera's frames are in its own memory
        cached = {k: np.ascontiguousarray(v) for k, v in cached.items()}
        dst = [layout.views(shm.buf, s) for s in range(slots)]
        conn.send("ready")
        while True:
            req = conn.recv()
            if req is None:
                break
            k, s = req
            for cam in layout.cameras:
                for kind in ("color", "depth"):
                    np.copyto(dst[s][cam][kind], cached[cam, kind][k])
            conn.send(s)
        del dst
    finally:
        shm.close()


class FrameServer:
    """The stand-in driver process and its shared-memory ring (``slots`` frame sets)."""

    def __init__(self, folder: Path, slots: int = 3):
        self.layout, self.meta = layout_of(folder)
        self.slots = slots
        self.n_items = int(self.meta["items"])
        self.shm = shared_memory.SharedMemory(create=True, size=self.layout.slot_bytes * slots)
        ctx = mp.get_context("spawn")  # a fresh interpreter: none of the rig's threads or memory
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(str(folder), self.shm.name, slots, child),
                                name="bench-frame-server", daemon=True)
        self.proc.start()
        child.close()
        if not self._conn.poll(60) or self._conn.recv() != "ready":
            self.close()
            raise RigError("the bench's frame server did not start within 60 s")
        self.views = [self.layout.views(self.shm.buf, s) for s in range(slots)]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, k: int, slot: int) -> None:
        """Ask for frame set ``k % items`` in ``slot`` (returns at once; :meth:`wait` for it)."""
        self._conn.send((k % self.n_items, slot))

    def wait(self) -> int:
        """The slot the server finished writing (requests are served in order)."""
        if not self._conn.poll(30):
            raise RigError("the bench's frame server stopped answering")
        return self._conn.recv()

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self._conn.send(None)
                self.proc.join(5)
        except (OSError, BrokenPipeError):
            pass
        if self.proc.is_alive():
            self.proc.terminate()
        self.views = []
        try:
            self.shm.close()
        except BufferError:  # a view still alive somewhere: the memory goes with the process
            pass
        self.shm.unlink()
