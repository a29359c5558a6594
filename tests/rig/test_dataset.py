"""Dataset format: write/read round trip, and malformed files rejected with their line number."""

from __future__ import annotations

import json

import numpy as np
import pytest
from damage_rig.rig.cli import main
from damage_rig.rig.dataset import DatasetWriter, Item, read_dataset
from damage_rig.rig.foundation.errors import DatasetError


def _write_small(root):
    rng = np.random.default_rng(0)
    with DatasetWriter(root, "t", ["a", "b"], depth_units_mm=0.5) as w:
        for i in range(3):
            views = {}
            for v in ("a", "b"):
                rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
                depth = rng.uniform(100, 900, (20, 30)).astype(np.float32)
                mask = (rng.random((20, 30)) > 0.8).astype(np.uint8) if i == 2 else None
                views[v] = w.write_view(f"i{i}", v, rgb, depth, mask)
            w.add_item(Item(f"i{i}", "skuA", ["train", "val", "test"][i], "damaged" if i == 2 else "ok",
                            ["hole"] if i == 2 else [], i == 1, views))
        w.add_reference("skuA", "r0", rng.integers(0, 255, (10, 10, 3), dtype=np.uint8))
    return rng


def test_round_trip(tmp_path):
    _write_small(tmp_path / "ds")
    ds = read_dataset(tmp_path / "ds")
    assert ds.views == ["a", "b"] and ds.depth_units_mm == 0.5
    assert [it.id for it in ds.items] == ["i0", "i1", "i2"]
    assert ds.items[2].damage == ["hole"] and ds.items[1].printed_damage
    assert list(ds.references) == ["skuA"]
    d = ds.load_depth_mm(ds.items[0], "a")
    assert d.dtype == np.float32 and np.all(np.abs(d - np.round(d / 0.5) * 0.5) < 1e-4)
    assert ds.load_mask(ds.items[0], "a") is None
    assert set(np.unique(ds.load_mask(ds.items[2], "b"))) <= {0, 255}


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o.update(split="dev"), "'split' must be one of"),
    (lambda o: o.update(damage=["dent"]), "'damage' must be a list drawn from"),
    (lambda o: o.pop("sku"), "missing key(s) ['sku']"),
    (lambda o: o.update(label="ok", damage=["hole"]), "label 'ok' but damage"),
    (lambda o: o["views"].update(c={"rgb": "x.png"}), "views ['c'] are not in dataset.yaml"),
])
def test_malformed_item_names_file_line_and_item(tmp_path, mutate, message):
    _write_small(tmp_path / "ds")
    path = tmp_path / "ds" / "items.jsonl"
    lines = path.read_text().splitlines()
    obj = json.loads(lines[1])
    mutate(obj)
    lines[1] = json.dumps(obj)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as exc:
        read_dataset(tmp_path / "ds")
    assert f"items.jsonl:2" in str(exc.value) and message in str(exc.value)


def test_broken_json_line_and_missing_file(tmp_path):
    _write_small(tmp_path / "ds")
    path = tmp_path / "ds" / "items.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(DatasetError, match=r"items.jsonl:4: not valid JSON"):
        read_dataset(tmp_path / "ds")
    _write_small(tmp_path / "ds2")
    (tmp_path / "ds2" / "items" / "i1" / "b_depth.png").unlink()
    with pytest.raises(DatasetError, match=r"items.jsonl:2 \(item 'i1'\): view 'b' depth file"):
        read_dataset(tmp_path / "ds2")


def test_import_mvtec(tmp_path, capsys):
    import cv2

    root = tmp_path / "mv"
    rng = np.random.default_rng(1)
    for cat in ("bottle", "tile"):
        for sub, n in (("train/good", 10), ("test/good", 4), ("test/crack", 3)):
            d = root / cat / sub
            d.mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(str(d / f"{i:03d}.png"), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        g = root / cat / "ground_truth" / "crack"
        g.mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(g / f"{i:03d}_mask.png"), np.full((16, 16), 255, np.uint8))
    assert main(["dataset", "import-mvtec", str(root), "--out", str(tmp_path / "out")]) == 0
    ds = read_dataset(tmp_path / "out")
    assert sorted(ds.references) == ["bottle", "tile"] and len(ds.references["tile"]) == 2
    assert len(ds.split("train")) == 16
    tests = ds.split("val") + ds.split("test")
    assert len(tests) == 14
    cracked = [it for it in tests if it.label == "damaged"]
    assert len(cracked) == 6 and all(it.damage == ["tear"] for it in cracked)
    assert all(ds.load_mask(it, "main").max() == 255 for it in cracked)
    assert "16 items" in capsys.readouterr().out
    assert main(["dataset", "import-mvtec", str(tmp_path), "--out", str(tmp_path / "o2")]) == 1


def test_merge_adds_items_into_a_split_and_refuses_clashes(tmp_path, capsys):
    _write_small(tmp_path / "dst")
    _write_small(tmp_path / "src")
    # same ids: refused before anything is written
    before = (tmp_path / "dst" / "items.jsonl").read_bytes()
    assert main(["dataset", "merge", str(tmp_path / "src"), "--into", str(tmp_path / "dst")]) == 1
    assert "already has item(s) ['i0', 'i1', 'i2']" in capsys.readouterr().err
    assert (tmp_path / "dst" / "items.jsonl").read_bytes() == before
    # other ids: added, moved to val, files readable from the receiving dataset
    lines = [json.loads(x) for x in (tmp_path / "src" / "items.jsonl").read_text().splitlines()]
    with (tmp_path / "src" / "items.jsonl").open("w") as fh:
        for o in lines:
            fh.write(json.dumps({**o, "id": "new-" + o["id"]}) + "\n")
    assert main(["dataset", "merge", str(tmp_path / "src"), "--into", str(tmp_path / "dst"), "--split", "val"]) == 0
    ds = read_dataset(tmp_path / "dst")
    added = [it for it in ds.items if it.id.startswith("new-")]
    assert len(ds.items) == 6 and len(added) == 3 and {it.split for it in added} == {"val"}
    src = read_dataset(tmp_path / "src")
    assert np.array_equal(ds.load_rgb(added[0], "a"), src.load_rgb(src.items[0], "a"))
    assert all(str(ds.path(it.views["b"].rgb)).startswith(str(ds.root)) for it in added)
    # other views: refused
    with DatasetWriter(tmp_path / "other", "t", ["a"], depth_units_mm=0.5):
        pass
    with pytest.raises(DatasetError, match="they must match"):
        from damage_rig.rig.dataset import merge_items

        merge_items(tmp_path / "other", tmp_path / "dst")


# ---- damage_size_mm (optional; issue 12's small-hole target)

SIZES = {"hole": {"diameter": 6.3}}


def _with_sizes(root, sizes=SIZES):
    """The small dataset with item i2 (damaged, a hole) carrying ``sizes``."""
    _write_small(root)
    path = root / "items.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    lines[2]["damage_size_mm"] = sizes
    path.write_text("".join(json.dumps(o) + "\n" for o in lines))
    return path


def test_damage_sizes_round_trip_and_merge(tmp_path):
    path = _with_sizes(tmp_path / "ds", {"hole": {"diameter": 6.3, "depth": 0}})
    ds = read_dataset(tmp_path / "ds")
    assert [it.damage_size_mm for it in ds.items] == [{}, {}, {"hole": {"diameter": 6.3, "depth": 0}}]
    # re-exported as written; items without sizes carry no key
    assert "".join(json.dumps(it.to_json()) + "\n" for it in ds.items) == path.read_text()
    assert "damage_size_mm" not in ds.items[0].to_json()
    _write_small(tmp_path / "dst")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**o, "id": "new-" + o["id"]}) + "\n" for o in lines))
    assert main(["dataset", "merge", str(tmp_path / "ds"), "--into", str(tmp_path / "dst")]) == 0
    merged = {it.id: it for it in read_dataset(tmp_path / "dst").items}
    assert merged["new-i2"].damage_size_mm == {"hole": {"diameter": 6.3, "depth": 0}}
    assert merged["new-i0"].damage_size_mm == {} and merged["i2"].damage_size_mm == {}


def test_an_old_item_line_parses_and_re_exports_byte_for_byte(tmp_path):
    """A line as every dataset before damage_size_mm wrote it."""
    old = ('{"id": "s1-000004", "sku": "sku002-blister", "split": "val", "label": "damaged", '
           '"damage": ["tear", "hole"], "printed_damage": true, "views": {"top": {"rgb": '
           '"items/s1-000004/top_rgb.png", "depth": "items/s1-000004/top_depth.png", "mask": '
           '"items/s1-000004/top_mask.png"}}}')
    from damage_rig.rig.dataset import parse_item

    it = parse_item(json.loads(old), "items.jsonl:5")
    assert it.damage == ["tear", "hole"] and it.damage_size_mm == {}
    assert json.dumps(it.to_json()) == old


@pytest.mark.parametrize("sizes, message", [
    ([6.3], "'damage_size_mm' must be an object"),
    ({"crush": {"radius": 3.0}}, "'damage_size_mm' names 'crush', which is not in the item's damage"),
    ({"dent": {"radius": 3.0}}, "names 'dent'"),
    ({"hole": 6.3}, "'damage_size_mm' 'hole': expected an object"),
    ({"hole": {"diameter": -1}}, "'hole' 'diameter': must be a finite number >= 0"),
    ({"hole": {"diameter": "6 mm"}}, "'hole' 'diameter': must be a finite number >= 0"),
    ({"hole": {"diameter": True}}, "must be a finite number >= 0"),
    ({"hole": {"diameter": None}}, "must be a finite number >= 0"),
])
def test_malformed_damage_sizes_name_the_line_and_item(tmp_path, sizes, message):
    _with_sizes(tmp_path / "ds", sizes)
    with pytest.raises(DatasetError) as exc:
        read_dataset(tmp_path / "ds")
    assert "items.jsonl:3 (item 'i2')" in str(exc.value) and message in str(exc.value), str(exc.value)


def test_infinite_damage_size_refused(tmp_path):
    path = _with_sizes(tmp_path / "ds")
    path.write_text(path.read_text().replace("6.3", "1e999"))  # JSON reads it as inf
    with pytest.raises(DatasetError, match=r"items.jsonl:3 \(item 'i2'\).*finite number"):
        read_dataset(tmp_path / "ds")
