"""Write a simulated dataset (and optionally librealsense recordings) with `rig sim`."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ...calibration.model import Calibration
from ...rig.dataset import DatasetWriter, Item, parse_item, read_dataset, write_view_files
from .domain import (
    draw_rigs,
    draw_wide_spec,
    item_rig,
    make_wide_catalogue,
    missing_depth,
    reference_depth_policy,
    reference_has_depth,
)
from .products import make_catalogue
from .scene import build_item, draw_spec, render_views

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimSettings:
    items: int = 200
    seed: int = 1
    skus: int = 24
    catalogue_seed: int = 0
    damage_rate: float = 0.35
    printed_share: float = 0.3
    refs_per_sku: int = 6
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train, val, test
    noise: bool = True
    new_artwork: tuple[str, ...] = ()  # SKU names rendered with revised packaging
    # domain randomisation (domain.py); off = the standard simulator, unchanged byte for byte
    randomize: bool = False
    rig_seed: int | None = None  # seed of the camera setups (default: seed)
    rigs: int = 3  # camera setups mixed in a randomised dataset, one per item
    reference_depth: str | None = None  # all | none | some (default: drawn per randomised dataset)

    @property
    def rig_seed_used(self) -> int:
        return self.seed if self.rig_seed is None else self.rig_seed

    @property
    def reference_depth_used(self) -> str:
        if self.reference_depth is not None:
            return self.reference_depth
        return reference_depth_policy(self.seed, self.catalogue_seed) if self.randomize else "all"


def catalogue_for(s: SimSettings):
    make = make_wide_catalogue if s.randomize else make_catalogue
    return make(s.skus, s.catalogue_seed, s.printed_share, {n: 1 for n in s.new_artwork})


def calibrations_for(s: SimSettings, calib: Calibration | None) -> list[Calibration]:
    """The camera setups that render the items: the given calibration, or the randomised draws."""
    if s.randomize:
        return [r.calibration for r in draw_rigs(s.rig_seed_used, s.rigs)]
    if calib is None:
        raise ValueError("the standard simulator needs a calibration")
    return [calib]


def _split_of(s: SimSettings, index: int) -> str:
    u = int(hashlib.sha1(f"{s.seed}:{index}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    tr, va, _ = s.splits
    return "train" if u < tr else ("val" if u < tr + va else "test")


def item_id(s: SimSettings, index: int) -> str:
    return f"s{s.seed}-{index:06d}"


_CTX: dict = {}


def _init_worker(settings: SimSettings, calibs: list[Calibration], root: str) -> None:
    _CTX.update(settings=settings, calibs=calibs, root=Path(root), catalogue=catalogue_for(settings))


def _render_item(index: int) -> dict | None:
    s, root = _CTX["settings"], _CTX["root"]
    if s.randomize:
        spec = draw_wide_spec(_CTX["catalogue"], s.seed, index, s.damage_rate)
        calib = _CTX["calibs"][item_rig(s.seed, index, len(_CTX["calibs"]))]
    else:
        spec = draw_spec(_CTX["catalogue"], s.seed, index, s.damage_rate)
        calib = _CTX["calibs"][0]
    iid = item_id(s, index)
    views = {}
    surface = build_item(spec)  # built here (as render_views would) for its damage sizes
    for name, v in render_views(spec, calib, noise=s.noise, surface=surface).items():
        depth = v.depth_mm
        lost = missing_depth(s.seed, index, name) if s.randomize else None
        if lost == "absent":
            depth = None
        elif lost == "zero":
            depth = np.zeros_like(depth)
        vp = write_view_files(root, iid, name, v.rgb, depth, v.mask if spec.damaged else None)
        views[name] = vp
    if not views:  # no camera of this setup sees the item (the randomised rigs aim at the tunnel)
        return None
    return Item(iid, spec.sku.name, _split_of(s, index), "damaged" if spec.damaged else "ok",
                list(spec.damage), spec.sku.printed_damage is not None, views,
                damage_size_mm=surface.damage_size_mm).to_json()


def _render_reference(task: tuple[int, int]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    s, calibs = _CTX["settings"], _CTX["calibs"]
    sku_index, k = task
    draw = draw_wide_spec if s.randomize else draw_spec
    spec = draw(_CTX["catalogue"], 10_000 + s.catalogue_seed, sku_index * 1000 + k, 0.0,
                sku_index=sku_index, force_damage=[])
    # reference k: camera k of all the setups' cameras in turn; the next where a view misses the item
    pairs = [(c, cam) for c in calibs for cam in sorted(c.cameras)]
    first = k % len(pairs)
    for calib, cam in pairs[first:] + pairs[:first]:
        v = render_views(spec, calib, cameras=[cam], noise=s.noise).get(cam)
        if v is not None:
            break
    else:
        return []
    depth = v.depth_mm if reference_has_depth(s.reference_depth_used, spec.sku.name) else None
    return [(spec.sku.name, f"ref{k:02d}_{cam}", v.rgb, depth)]


def generate_dataset(out: str | Path, calib: Calibration | None, settings: SimSettings,
                     workers: int | None = None, overwrite: bool = False, progress: bool = True):
    """Render ``settings.items`` items plus references into a dataset at ``out``.

    With ``settings.randomize`` the cameras are drawn (domain.draw_rigs) and ``calib`` is
    ignored (pass None)."""
    out = Path(out)
    workers = workers or min(2, os.cpu_count() or 1)
    calibs = calibrations_for(settings, calib)
    views = sorted({v for c in calibs for v in c.cameras})
    notes = (f"rig sim: seed {settings.seed}, {settings.skus} SKUs (catalogue seed {settings.catalogue_seed}), "
             f"damage rate {settings.damage_rate}, printed-damage share {settings.printed_share}, "
             f"splits {settings.splits}, noise {settings.noise}, new artwork {list(settings.new_artwork)}")
    if settings.randomize:
        rigs = draw_rigs(settings.rig_seed_used, settings.rigs)
        notes += (f"; randomized (tools/sim/domain.py): rig seed {settings.rig_seed_used}, camera setups: "
                  + " | ".join(f"[{r.summary}]" for r in rigs)
                  + f"; reference depth: {settings.reference_depth_used}")
    elif settings.reference_depth not in (None, "all"):
        notes += f"; reference depth: {settings.reference_depth}"
    writer = DatasetWriter(out, f"sim-seed{settings.seed}", views, 1.0, notes, overwrite=overwrite)
    with writer, ProcessPoolExecutor(workers, initializer=_init_worker,
                                     initargs=(settings, calibs, str(out))) as pool:
        tasks = [(i, k) for i in range(settings.skus) for k in range(settings.refs_per_sku)]
        for refs in tqdm(pool.map(_render_reference, tasks, chunksize=4), total=len(tasks),
                         desc="references", disable=not progress, unit="img"):
            for sku, name, rgb, depth in refs:
                writer.add_reference(sku, name, rgb, depth)
        for obj in tqdm(pool.map(_render_item, range(settings.items), chunksize=4), total=settings.items,
                        desc="items", disable=not progress, unit="item"):
            if obj is not None:
                writer.add_item(parse_item(obj, "simulator"))
    return read_dataset(out)
