"""Issue 17 deliverables 5 and 6: `rig predict` on loose images, and an eval report that reads at a
glance (misses are missed items, labels inside their charts, evidence painted only where it is)."""

from __future__ import annotations

import csv
import re
import shutil

import cv2
import numpy as np
import pytest
from damage_rig.rig.cli import main


@pytest.fixture(scope="module")
def loose_images(small_sim_dataset, tmp_path_factory):
    """The top view of 5 test items as loose files (NAME.png + NAME_depth.png), and their items."""
    ds = small_sim_dataset
    folder = tmp_path_factory.mktemp("loose")
    items = [it for it in ds.items if "top" in it.views][:5]
    for it in items:
        shutil.copy(ds.root / it.views["top"].rgb, folder / f"{it.id}.png")
        shutil.copy(ds.root / it.views["top"].depth, folder / f"{it.id}_depth.png")
    assert ds.depth_units_mm == 1.0
    return folder, {it.id: it for it in items}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_folder_identifies_scores_and_paints_evidence(loose_images, model_dir, tmp_path, capsys):
    folder, items = loose_images
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model_dir), "--folder", str(folder), "--out", str(out),
                 "--view", "top"]) == 0
    rows = _rows(out / "predictions.csv")
    assert [r["file"].rsplit("/", 1)[1] for r in rows] == [f"{i}.png" for i in sorted(items)]  # depth files skipped
    right = 0
    for r in rows:
        item = items[r["file"].rsplit("/", 1)[1][:-4]]
        score, thr = float(r["score"]), float(r["threshold"])
        assert r["decision"] == ("damaged" if score > thr else "ok") and r["sku_given"] == "0"
        assert r["depth"].endswith(f"{item.id}_depth.png")
        right += r["sku"] == item.sku
        img = cv2.imread(str(folder / f"{item.id}.png"))
        over = cv2.imread(r["overlay"])
        assert over.shape == img.shape
        changed = np.abs(over.astype(int) - img).max(axis=2) > 0
        if float(r["evidence_max"]) < 1.5:  # nothing above a pristine view's level: the image untouched
            assert not changed.any(), item.id
        else:  # painted where the evidence is, not all over
            assert 0 < changed.mean() < 0.5, (item.id, changed.mean())
    assert right >= 4, rows  # the product identified from the image alone
    by_truth = {d: [float(r["score"]) for r in rows if items[r["file"].rsplit("/", 1)[1][:-4]].damaged == d]
                for d in (True, False)}
    assert by_truth[True] and by_truth[False] and min(by_truth[True]) > max(by_truth[False]), by_truth
    assert "image(s):" in capsys.readouterr().out


def test_predict_images_with_a_given_sku_and_json(loose_images, model_dir, tmp_path, capsys):
    import json

    folder, items = loose_images
    first = min(items)
    sku = items[first].sku
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model_dir), str(folder / f"{first}.png"), "--sku", sku,
                 "--out", str(out), "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)  # --json -: the rows alone on stdout
    assert len(rows) == 1 and rows[0]["sku"] == sku and rows[0]["sku_given"] == 1
    assert (out / "overlays" / f"{first}.png").is_file()


def test_predict_errors_name_what_and_where(loose_images, model_dir, tmp_path, capsys):
    folder, items = loose_images
    img = str(folder / f"{min(items)}.png")
    assert main(["predict", "--model", str(model_dir), img, "--sku", "no-such-sku", "--out", str(tmp_path / "o")]) == 1
    assert "--sku 'no-such-sku': not in the gallery" in capsys.readouterr().err
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    assert main(["predict", "--model", str(model_dir), str(bad), "--out", str(tmp_path / "o")]) == 1
    assert f"image {bad}: cannot read it" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), str(tmp_path / "none.png"), "--out", str(tmp_path / "o")]) == 1
    assert "none.png: no such file" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), img, "--out", "/no/such/dir/out", "--json",
                 "/no/such/dir/p.json"]) == 1
    assert "/no/such/dir/p.json" in capsys.readouterr().err


def _texts_fit(svg: str) -> list[str]:
    """Text elements of an SVG whose estimated extent (0.6 em a character) leaves the frame."""
    w = float(re.search(r'<svg width="([\d.]+)"', svg).group(1))
    bad = []
    for m in re.finditer(r'<text x="([\d.]+)" y="([\d.]+)" font-size="(\d+)"[^>]*text-anchor="(\w+)"([^>]*)>'
                         r'([^<]*)</text>', svg):
        x, size, anchor, rest, text = float(m.group(1)), int(m.group(3)), m.group(4), m.group(5), m.group(6)
        if "rotate" in rest:
            x0, x1 = x - size, x  # turned along the axis: one line high
        else:
            span = 0.6 * size * len(text)
            x0 = x if anchor == "start" else x - span / 2 if anchor == "middle" else x - span
            x1 = x0 + span
        if x0 < 0 or x1 > w:
            bad.append(text)
    return bad


def test_chart_labels_fit_inside_their_charts():
    from damage_rig.models.evaluate import _svg_hist, _svg_roc

    for thr in (0.02, 0.5, 0.9385, 0.999):  # the threshold's label near either edge
        svg = _svg_hist(np.r_[0.1, 0.2], np.r_[0.95], thr)
        assert not _texts_fit(svg) and f"threshold {thr:.3f}" in svg
    svg = _svg_roc(np.r_[0, 0.001, 1], np.r_[0, 0.8, 1], 0.001, 0.8)
    assert not _texts_fit(svg) and ">recall<" in svg
    # the checker itself catches what the old charts did: a label running off the right edge
    assert _texts_fit('<svg width="420"><text x="390" y="20" font-size="11" text-anchor="start">'
                      "threshold 0.938</text></svg>") == ["threshold 0.938"]


def test_false_positives_and_misses_follow_the_decision():
    from damage_rig.models.evaluate import false_positives_and_misses, nearest_calls

    scores = np.r_[0.9999, 0.2, 0.95, 0.1, 0.9385, 0.5]
    labels = np.r_[True, True, False, False, True, False]
    fp, miss = false_positives_and_misses(scores, labels, 0.9385)
    assert list(fp) == [2] and list(miss) == [1, 4]  # 0.9999 was caught; 0.9385 is not over the threshold
    assert list(nearest_calls(scores, labels, 0.9385, 1)) == [5, 0]  # correct, closest to the line


@pytest.mark.slow
def test_eval_report_lists_only_missed_items_as_misses(small_sim_dataset, model_dir, tmp_path):
    from damage_rig.rig.detect.card import read_card

    report = tmp_path / "r.html"
    assert main(["eval", "--model", str(model_dir), "--data", str(small_sim_dataset.root), "--split", "test",
                 "--scores", str(tmp_path / "s.csv"), "--report", str(report)]) == 0
    thr = float(read_card(model_dir)["threshold"])
    scores = {r["id"]: (float(r["score"]), r["damaged"] == "1") for r in _rows(tmp_path / "s.csv")}
    assert any(d and s > thr for s, d in scores.values())  # a caught damaged item, which must not be a miss
    page = report.read_text()
    sections = dict(re.findall(r"<table border=1 cellpadding=4 class='([\w-]+)'>(.*?)</table>", page, re.DOTALL))
    listed = {k: re.findall(r"data-item='([^']+)'", v) for k, v in sections.items()}
    want_miss = [i for i, (s, d) in scores.items() if d and s <= thr]
    want_fp = [i for i, (s, d) in scores.items() if not d and s > thr]
    assert sorted(listed["misses"]) == sorted(want_miss[:8])
    assert sorted(listed["false-positives"]) == sorted(want_fp[:8])
    for i in listed["nearest"]:  # decided correctly: ok and passed, or damaged and diverted
        assert scores[i][1] == (scores[i][0] > thr)
    assert f"{len(want_miss)} of {sum(d for _, d in scores.values())} damaged items" in page
    for svg in re.findall(r"<svg.*?</svg>", page, re.DOTALL):
        assert not _texts_fit(svg)
