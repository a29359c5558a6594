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
from .products import make_catalogue
from .scene import draw_spec, render_views

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


def catalogue_for(s: SimSettings):
    return make_catalogue(s.skus, s.catalogue_seed, s.printed_share, {n: 1 for n in s.new_artwork})


def _split_of(s: SimSettings, index: int) -> str:
    u = int(hashlib.sha1(f"{s.seed}:{index}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    tr, va, _ = s.splits
    return "train" if u < tr else ("val" if u < tr + va else "test")


def item_id(s: SimSettings, index: int) -> str:
    return f"s{s.seed}-{index:06d}"


_CTX: dict = {}


def _init_worker(settings: SimSettings, calib: Calibration, root: str) -> None:
    _CTX.update(settings=settings, calib=calib, root=Path(root), catalogue=catalogue_for(settings))


def _render_item(index: int) -> dict:
    s, calib, root = _CTX["settings"], _CTX["calib"], _CTX["root"]
    spec = draw_spec(_CTX["catalogue"], s.seed, index, s.damage_rate)
    iid = item_id(s, index)
    views = {}
    for name, v in render_views(spec, calib, noise=s.noise).items():
        vp = write_view_files(root, iid, name, v.rgb, v.depth_mm, v.mask if spec.damaged else None)
        views[name] = vp
    return Item(iid, spec.sku.name, _split_of(s, index), "damaged" if spec.damaged else "ok",
                list(spec.damage), spec.sku.printed_damage is not None, views).to_json()


def _render_reference(task: tuple[int, int]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    s, calib = _CTX["settings"], _CTX["calib"]
    sku_index, k = task
    spec = draw_spec(_CTX["catalogue"], 10_000 + s.catalogue_seed, sku_index * 1000 + k, 0.0,
                     sku_index=sku_index, force_damage=[])
    cams = sorted(calib.cameras)
    cam = cams[k % len(cams)]
    v = render_views(spec, calib, cameras=[cam], noise=s.noise)[cam]
    return [(spec.sku.name, f"ref{k:02d}_{cam}", v.rgb, v.depth_mm)]


def generate_dataset(out: str | Path, calib: Calibration, settings: SimSettings, workers: int | None = None,
                     overwrite: bool = False, progress: bool = True):
    """Render ``settings.items`` items plus references into a dataset at ``out``."""
    out = Path(out)
    workers = workers or min(2, os.cpu_count() or 1)
    views = sorted(calib.cameras)
    notes = (f"rig sim: seed {settings.seed}, {settings.skus} SKUs (catalogue seed {settings.catalogue_seed}), "
             f"damage rate {settings.damage_rate}, printed-damage share {settings.printed_share}, "
             f"splits {settings.splits}, noise {settings.noise}, new artwork {list(settings.new_artwork)}")
    writer = DatasetWriter(out, f"sim-seed{settings.seed}", views, 1.0, notes, overwrite=overwrite)
    with writer, ProcessPoolExecutor(workers, initializer=_init_worker,
                                     initargs=(settings, calib, str(out))) as pool:
        tasks = [(i, k) for i in range(settings.skus) for k in range(settings.refs_per_sku)]
        for refs in tqdm(pool.map(_render_reference, tasks, chunksize=4), total=len(tasks),
                         desc="references", disable=not progress, unit="img"):
            for sku, name, rgb, depth in refs:
                writer.add_reference(sku, name, rgb, depth)
        for obj in tqdm(pool.map(_render_item, range(settings.items), chunksize=4), total=settings.items,
                        desc="items", disable=not progress, unit="item"):
            writer.add_item(parse_item(obj, "simulator"))
    return read_dataset(out)
