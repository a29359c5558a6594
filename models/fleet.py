"""Training from many rigs: a manifest lists the datasets each rig exported (`rig dataset export`).

```yaml
# fleet.yaml
datasets:
  - /data/exports/hall-1-rig-04   # paths relative to this file, or absolute
  - /data/exports/hall-2-rig-11
```

``rig train --data fleet.yaml`` trains on all of them as one dataset. Nothing is copied:
``manifest_dataset`` writes a dataset folder whose items name the exported files through one
link per dataset (``src0/``, ``src1/``, ...), item ids and reference file names prefixed with
the dataset's number (rigs number their items independently). Images are read as training
reaches them, a batch at a time, each torchrun rank reading only its own rows
(models/distributed.py). Every dataset must have the same views and depth units.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..rig.dataset import read_dataset, reference_depth_path
from ..rig.foundation.errors import DatasetError


def is_manifest(path: str | Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() in (".yaml", ".yml")


def read_manifest(path: str | Path) -> list[Path]:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"{path}: unreadable manifest ({exc})") from None
    sets = doc.get("datasets") if isinstance(doc, dict) else None
    if not isinstance(sets, list) or not sets or not all(isinstance(s, str) and s for s in sets):
        raise DatasetError(f"{path}: a manifest is a mapping with 'datasets': a non-empty list of dataset "
                           f"folders, got {doc!r:.200}")
    roots = [(path.parent / s).resolve() for s in sets]
    repeated = sorted({str(r) for r in roots if roots.count(r) > 1})
    if repeated:
        raise DatasetError(f"{path}: dataset(s) listed twice: {repeated}")
    return roots


def manifest_dataset(path: str | Path, workdir: str | Path) -> Path:
    """One dataset folder in ``workdir`` that holds every dataset of the manifest (links, no copies)."""
    roots = read_manifest(path)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    first = None
    lines = []
    for k, root in enumerate(roots):
        ds = read_dataset(root)  # each validated as it is (files, ids, views)
        if first is None:
            first = ds
        elif (ds.views, ds.depth_units_mm) != (first.views, first.depth_units_mm):
            raise DatasetError(f"{path}: {root} has views {ds.views} and depth units {ds.depth_units_mm} mm, "
                               f"{first.root} {first.views} and {first.depth_units_mm} mm: train them apart")
        src = work / f"src{k}"
        src.symlink_to(root, target_is_directory=True)
        for it in ds.items:
            obj = it.to_json()
            obj["id"] = f"r{k}_{it.id}"
            for vp in obj["views"].values():
                for key in ("rgb", "depth", "mask"):
                    if vp.get(key):
                        vp[key] = f"src{k}/{vp[key]}"
            lines.append(json.dumps(obj))
        for sku, files in ds.references.items():
            d = work / "references" / sku
            d.mkdir(parents=True, exist_ok=True)
            for f in files:
                (d / f"r{k}_{f.name}").symlink_to(f.resolve())
                depth = reference_depth_path(f)
                if depth is not None:
                    (d / f"r{k}_{depth.name}").symlink_to(depth.resolve())
    (work / "dataset.yaml").write_text(yaml.safe_dump(
        {"name": f"fleet:{Path(path).name}", "views": first.views, "depth_units_mm": first.depth_units_mm,
         "notes": "datasets of the manifest " + ", ".join(str(r) for r in roots)}, sort_keys=False))
    (work / "items.jsonl").write_text("\n".join(lines) + "\n")
    return work
