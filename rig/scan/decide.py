"""Decide an item that was scanned upstream: the scanned product's references, image identification as a check.

=================  =====================================================  ==================
scan               damage judged against                                  reason
=================  =====================================================  ==================
readable, agrees   the scanned SKU's references                           ``score``
readable, the      the product the image shows (the scan is wrong for     ``wrong_item``
image disagrees    this item); decision: ``scan.on_wrong_item``, and
(confidently)      divert whenever the item is damaged
SKU not enrolled   the product the image shows                            ``unknown_sku``
no-read            the product the image shows                            ``unreadable_scan``
no scan            the product the image shows                            ``no_scan``
=================  =====================================================  ==================

Outside ``wrong_item`` the decision is the score's (divert when damaged). The
image only overrules a scan when identification is at least ``min_id_conf``
sure: a look-alike product must not turn every scan into a wrong item.
"""

from __future__ import annotations


def decide_with_scan(scorer, views: dict, scan, threshold, cfg, item_id: str = "item", canons=None):
    """(decision, reason, ItemScore with ``expected_sku`` set) for one item's per-view outputs
    (``canons``: the views' registered crops, passed on to the scorer)."""
    expected = scan.sku if scan is not None else None
    if scan is None:
        reason = "no_scan"
    elif not scan.readable:
        reason = "unreadable_scan"
    elif expected not in scorer.gallery.skus:
        reason = "unknown_sku"
    else:
        image_sku, conf, _ = scorer.identify(views)
        if image_sku != expected and conf >= cfg.min_id_conf:
            reason = "wrong_item"
        else:
            score = scorer.score_item(views, threshold=threshold, item_id=item_id, sku=expected, canons=canons)
            score.expected_sku = expected
            score.image_sku, score.image_conf = image_sku, conf
            return ("divert" if score.damaged else "pass"), "score", score
    score = scorer.score_item(views, threshold=threshold, item_id=item_id, canons=canons)
    score.expected_sku = expected or ""
    score.image_sku, score.image_conf = score.sku_pred, score.sku_conf
    if reason == "wrong_item" and cfg.on_wrong_item == "divert":
        return "divert", reason, score
    return ("divert" if score.damaged else "pass"), reason, score
