"""Labels flow back: dataset export round trip, `rig tune`, and gallery enroll / versions / rollback."""

from __future__ import annotations

import importlib
import time

import cv2
import numpy as np
import pytest
import yaml
from damage_rig.rig.cli import main
from damage_rig.rig.dataset import read_dataset
from damage_rig.rig.events import EventLog
from damage_rig.rig.foundation.errors import DatasetError, ModelError
from damage_rig.rig.review import enroll
from damage_rig.rig.review.export import export_reviewed, split_of
from damage_rig.rig.review.store import ReviewStore
from damage_rig.rig.review.tune import evaluate, tune

from tests.helpers.events import make_record
from tests.helpers.review import make_state


def labelled_state(state):
    make_state(state, n=8)  # diverted: it000000, 2, 4, 6
    st = ReviewStore(state)
    st.label("it000000", "damaged", "tear")
    st.label("it000002", "not_damaged")
    st.label("it000004", "packaging_changed")
    st.close()


def test_export_round_trip_into_the_dataset_format(tmp_path):
    state, out = tmp_path / "state", tmp_path / "ds"
    labelled_state(state)
    rep = export_reviewed(state, out, val_share=0.5)
    assert (rep.exported, rep.skipped_no_crops, rep.references) == (3, 0, 2)
    ds = read_dataset(out)  # validates every line and file
    items = {it.id: it for it in ds.items}
    assert sorted(items) == ["it000000", "it000002", "it000004"]
    assert (items["it000000"].label, items["it000000"].damage) == ("damaged", ["tear"])
    assert (items["it000002"].label, items["it000002"].damage) == ("ok", [])
    assert items["it000004"].label == "ok" and len(ds.references["sku-a"]) == 2
    assert {it.split for it in ds.items} <= {"train", "val"}
    assert all(items[i].split == split_of(i, 0.5) for i in items)  # stable across exports
    # the exported crop is the logged crop (same pixels up to the JPEG -> PNG copy: lossless)
    with EventLog(state) as log:
        logged = cv2.imread(log.get("it000000")["crops"]["top"]["rgb"])
    assert np.array_equal(cv2.cvtColor(logged, cv2.COLOR_BGR2RGB), ds.load_rgb(items["it000000"], "top"))
    with pytest.raises(DatasetError, match="already holds a dataset"):
        export_reviewed(state, out)


def test_export_needs_reviewed_items(tmp_path):
    make_state(tmp_path / "state")
    with pytest.raises(DatasetError, match="no reviewed items"):
        export_reviewed(tmp_path / "state", tmp_path / "ds")


def test_tune_figures_against_known_scores():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
    labels = [None, None, None, None, "not_damaged", "packaging_changed", "damaged", None, "damaged", "damaged"]
    rep = evaluate(scores, labels, [0.5, 0.85], fpr_budget=0.15)
    p5, p85 = rep.points
    assert (p5.sideline_rate, p5.diverted, p5.recall) == (0.6, 6, 1.0)
    assert p5.est_fpr == pytest.approx(3 / 7) and p5.reviewed_ok_diverted == 2
    assert (p85.sideline_rate, p85.recall, p85.reviewed_damaged_caught) == (0.3, pytest.approx(2 / 3), 2)
    assert p85.est_fpr == pytest.approx(1 / 7)
    # 7 items not reviewed damaged: at most 15 % of them (1) above t -> t = their 6th of 7 = 0.7
    assert rep.budget_threshold == pytest.approx(0.7)


def test_rig_tune_writes_a_new_model_card(tmp_path, capsys):
    state, model, out = tmp_path / "state", tmp_path / "model", tmp_path / "tuned"
    labelled_state(state)
    model.mkdir()
    (model / "model_card.yaml").write_text(yaml.safe_dump({"version": "test-1", "threshold": 0.5}))
    (model / "model.onnx").write_bytes(b"onnx")
    assert main(["tune", "--model", str(model), "--state", str(state), "--thresholds", "0.5", "0.81",
                 "--apply", "0.81", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "8 items scored by model test-1, 3 reviewed (1 damaged)" in text
    card = yaml.safe_load((out / "model_card.yaml").read_text())
    assert card["threshold"] == 0.81 and card["tuned_from"]["previous_threshold"] == 0.5
    assert card["tuned_from"]["at_threshold"]["diverted"] == 3  # 0.82, 0.84, 0.86 > 0.81
    assert (out / "model.onnx").read_bytes() == b"onnx"
    assert yaml.safe_load((model / "model_card.yaml").read_text())["threshold"] == 0.5  # original untouched
    rep = tune(model, state, [0.5])
    assert rep.points[0].recall == 1.0


def fake_entry(n):
    from damage_rig.rig.detect.gallery import SkuEntry

    rng = np.random.default_rng(n)
    return SkuEntry(rng.random((n, 4), dtype=np.float32).astype(np.float16),
                    rng.random((n, 4), dtype=np.float32).astype(np.float16),
                    rng.random((3, 2), dtype=np.float32).astype(np.float16), np.zeros(3, np.int16),
                    1.0, 0.05, [f"ref{i}" for i in range(n)])


def test_enroll_reviewed_images_then_roll_back(tmp_path, monkeypatch):
    gallery = pytest.importorskip("damage_rig.rig.detect.gallery")
    detect_enroll = importlib.import_module("damage_rig.rig.detect.enroll")

    state, model = tmp_path / "state", tmp_path / "model"
    labelled_state(state)
    v1 = gallery.save_gallery(model, gallery.Gallery({"sku-a": fake_entry(2)}), "trained")
    calls = []

    def fake_enroll(model_dir, sku, images, *, replace=True, note="", **kw):
        # stands in for running the images through the network (tested in the models' own tests)
        calls.append((sku, [str(p) for p in images], replace))
        g = gallery.load_gallery(model_dir)
        return gallery.save_gallery(model_dir, gallery.Gallery({**g.skus, sku: fake_entry(len(images))}), note)

    monkeypatch.setattr(detect_enroll, "enroll", fake_enroll)
    store = ReviewStore(state)
    r = enroll.enroll_reviewed(store, model, "sku-a")
    # it000002 (not damaged) and it000004 (packaging changed), both views; not the damaged it000000
    assert r["items"] == ["it000002", "it000004"] and r["enrolled"] == 4 and r["version"] == "v0002"
    assert calls[0][2] is False and all("it000000" not in p for p in calls[0][1])
    assert [v["version"] for v in enroll.versions(model)] == [v1, "v0002"]
    assert gallery.current_version(model) == "v0002"
    again = enroll.enroll_reviewed(store, model, "sku-a")  # a double submission: nothing new reviewed since
    assert again["enrolled"] == 0 and again["version"] == "v0002" and len(calls) == 1  # idempotent
    assert [v["version"] for v in enroll.versions(model)] == [v1, "v0002"]
    assert enroll.rollback(store, model)["version"] == v1  # one command: back to the parent
    assert gallery.current_version(model) == v1
    with pytest.raises(ModelError, match="no earlier version"):
        enroll.rollback(store, model)
    store.close()
    # the CLI does the same in one line each
    assert main(["review", "--state", str(state), "--model", str(model), "--rollback", "v0002"]) == 0
    assert gallery.current_version(model) == "v0002"


def test_enroll_resets_drift_and_new_labels_enroll_again(tmp_path, monkeypatch):
    gallery = pytest.importorskip("damage_rig.rig.detect.gallery")
    detect_enroll = importlib.import_module("damage_rig.rig.detect.enroll")

    state, model = tmp_path / "state", tmp_path / "model"
    labelled_state(state)
    gallery.save_gallery(model, gallery.Gallery({"sku-a": fake_entry(2)}), "trained")
    monkeypatch.setattr(detect_enroll, "enroll", lambda m, s, imgs, **kw: gallery.save_gallery(
        m, gallery.Gallery({s: fake_entry(len(imgs))}), "x"))
    store = ReviewStore(state)
    enroll.enroll_reviewed(store, model, "sku-a")
    time.sleep(0.01)
    with EventLog(state) as log:
        log.record(make_record(100, "divert", t0=time.time() - 100))
    store.label("it000100", "packaging_changed")
    assert enroll.enroll_reviewed(store, model, "sku-a")["items"] == ["it000100"]
    store.close()
