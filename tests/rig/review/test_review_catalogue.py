"""The review terminal's enrollments reach the site's reference store (config gallery.store)."""

from __future__ import annotations

import importlib

import pytest
import yaml
from damage_rig.rig.detect import gallery
from damage_rig.rig.detect.store import ReferenceStore, model_key
from damage_rig.rig.review import enroll
from damage_rig.rig.review.store import ReviewStore

from tests.rig.review.test_export_tune_gallery import fake_entry, labelled_state

CARD = {"format": "damage-rig-model/1", "version": "review-test", "onnx": {"file": "m.onnx"}, "input": {},
        "damage_types": [], "fusion": {}, "threshold": 0.5, "files": {"m.onnx": "cd" * 32}}


@pytest.fixture
def reviewed(tmp_path, monkeypatch):
    detect_enroll = importlib.import_module("damage_rig.rig.detect.enroll")
    state, model = tmp_path / "state", tmp_path / "model"
    labelled_state(state)
    gallery.save_gallery(model, gallery.Gallery({"sku-a": fake_entry(2), "sku-b": fake_entry(3)}), "trained")
    (model / "model_card.yaml").write_text(yaml.safe_dump(CARD))

    def fake_enroll(model_dir, sku, images, *, replace=True, note="", **kw):
        g = gallery.load_gallery(model_dir)
        return gallery.save_gallery(model_dir, gallery.Gallery({**g.skus, sku: fake_entry(len(images))}), note)

    monkeypatch.setattr(detect_enroll, "enroll", fake_enroll)
    return state, model


@pytest.mark.postgres
def test_a_reviewed_enrollment_is_written_to_the_store(reviewed, pg_url):
    state, model = reviewed
    store = ReviewStore(state)
    try:
        r = enroll.enroll_reviewed(store, model, "sku-a", pg_url)
    finally:
        store.close()
    assert r["store_version"] == 1 and "store_error" not in r
    key = model_key(CARD)
    s = ReferenceStore(pg_url)
    try:
        assert s.require_model(key) == 1
        assert s.fetch(key, 1, "sku-a").n_refs == r["enrolled"]  # the enrolled entry, not the trained one
        assert len(s.images("sku-a")) == r["enrolled"]
    finally:
        s.close()


def test_a_store_away_leaves_the_local_enrollment_and_says_so(reviewed):
    state, model = reviewed
    store = ReviewStore(state)
    try:
        r = enroll.enroll_reviewed(store, model, "sku-a", "postgresql://nobody@127.0.0.1:1/none")
    finally:
        store.close()
    assert r["version"] == "v0002" and gallery.current_version(model) == "v0002"
    assert "cannot connect" in r["store_error"] and "store_version" not in r
