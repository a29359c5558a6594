"""The alive gallery's damage-logit baseline: enrolled new packaging is judged against itself."""

from __future__ import annotations

import numpy as np
from damage_rig.rig.detect.enroll import _baseline
from damage_rig.rig.detect.gallery import (
    Gallery,
    SkuEntry,
    build_sku_entry,
    load_gallery,
    save_gallery,
)


def _outputs(logits, rng):
    return [{"embedding": rng.normal(size=8), "global_desc": rng.normal(size=8),
             "patch_features": rng.normal(size=(4, 2, 2)).astype(np.float32),
             "damage_logit": np.array([lg])} for lg in logits]


def test_shift_is_how_much_more_damaged_like_the_references_became(tmp_path):
    rng = np.random.default_rng(0)
    trained = build_sku_entry(_outputs([-3.0, -2.5, -2.0, -2.8], rng), ["a", "b", "c", "d"], bank_size=8)
    trained.ref_disc_base = _baseline(None, trained)  # new to the gallery: its own value
    assert trained.ref_disc == np.percentile([-3.0, -2.5, -2.0, -2.8], 90)
    g = Gallery({"p": trained})
    assert g.disc_shift("p") == 0.0
    # reviewed new-packaging images the head finds damaged-like are enrolled next to the old ones
    grown = build_sku_entry(_outputs([-3.0, -2.5, -2.0, -2.8, 1.5, 2.0, 1.0], rng), list("abcdefg"),
                            bank_size=8)
    grown.ref_disc_base = _baseline(trained, grown)  # the baseline stays the trained one
    g = Gallery({"p": grown})
    assert g.disc_shift("p") == grown.ref_disc - trained.ref_disc > 3.0
    # references that look *less* damaged never raise the score
    calm = build_sku_entry(_outputs([-6.0, -5.0], rng), ["x", "y"], bank_size=8)
    calm.ref_disc_base = _baseline(trained, calm)
    assert Gallery({"p": calm}).disc_shift("p") == 0.0
    # stored and read back with the gallery
    save_gallery(tmp_path, Gallery({"p": grown, "q": trained}))
    back = load_gallery(tmp_path)
    assert back.disc_shift("p") == g.disc_shift("p") and back.disc_shift("q") == 0.0


def test_a_gallery_without_baselines_shifts_nothing():
    e = SkuEntry(np.zeros((1, 8)), np.zeros((1, 8)), np.zeros((1, 4)), np.zeros(1, np.int16), 1.0, 1.0)
    assert Gallery({"old": e}).disc_shift("old") == 0.0


def test_extending_an_entry_keeps_every_reference_without_its_source_files(tmp_path):
    """Issue 13 defect 5: the shipped gallery's sources are paths on the training machine; extending
    it used to keep only references whose files still existed (70 -> 2). Now the stored features
    are merged: all 70 stay, and the per-image damage logits go on with the entry."""
    from damage_rig.rig.detect.gallery import merge_entries

    rng = np.random.default_rng(1)
    trained = build_sku_entry(_outputs(list(rng.normal(-3, 0.3, 70)), rng),
                              [f"/elsewhere/ref{i}.png" for i in range(70)], bank_size=16)
    trained.ref_disc_base = trained.ref_disc
    save_gallery(tmp_path, Gallery({"p": trained}))
    old = load_gallery(tmp_path).skus["p"]
    assert len(old.ref_discs) == 70
    new = build_sku_entry(_outputs([1.0, 1.5], rng), ["item:a/top", "item:b/top"], bank_size=16)
    merged = merge_entries(old, new, bank_size=16)
    assert merged.n_refs == 72 and len(merged.embeddings) == 72 and len(merged.ref_discs) == 72
    assert merged.sources[:70] == old.sources and merged.ref_disc_base == old.ref_disc_base
    assert len(merged.bank) == 16 and merged.bank_src.max() < 72
    # judged against its most damaged-looking pristine look: 2 new references are not outvoted by 70
    assert merged.ref_disc == max(new.ref_disc, old.ref_disc) and Gallery({"p": merged}).disc_shift("p") > 3.0
    # a gallery from before ref_discs were stored: the old level stands in for each old image
    legacy = SkuEntry(old.embeddings, old.descs, old.bank, old.bank_src, 1.0, 1.0, old.sources, old.ref_disc,
                      old.ref_disc_base)
    assert merge_entries(legacy, new, bank_size=16).n_refs == 72
