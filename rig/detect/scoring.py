"""Runtime scoring of one item from its views: the code `rig eval` and the rig both run.

Per view the network gives a damage logit, type logits, an identification
embedding, a global descriptor and patch features. Per item:

1. identify the product: per SKU, each view's best cosine similarity to that
   SKU's reference embeddings, averaged over the views (every view votes);
2. measure anomaly of every view against the identified SKU's references
   (patch memory bank and global descriptors), normalised by how anomalous the
   SKU's own references look against each other;
3. fuse max/mean damage logits, max anomalies and the identification margin
   into P(damage) (``fusion.py``), and compare with the threshold set for the
   FPR budget.
The item decision takes the maximum over views because damage is often visible
from one side only; identification averages because the product is the same
from every side.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..foundation.errors import ModelError
from ..infer import make_backend
from ..preprocess.framing import check_framing
from ..preprocess.reference import height_detail_valid, normalize_rgb, relative_height
from .anomaly import global_anomaly, map_score, patch_map
from .card import read_card, verify_model_files
from .fusion import FEATURES, Fusion
from .gallery import Gallery, GalleryIndex, load_gallery
from .registration import Canon, ViewResidual, belt_residual, canonical, compare, size_mismatch, size_signature
from .threshold import load_ok_scores, threshold_at_fpr

log = logging.getLogger(__name__)

ID_TEMPERATURE = 0.05
# residual floors: a product whose references agree perfectly must not turn sensor noise into
# a large ratio (mm of height; normalised colour units)
HEIGHT_FLOOR_MM = 0.6
DEPTH_MODES = {"relative_height": 1, "height_detail_valid": 3}  # depth input mode -> channels
COLOR_FLOOR = 0.05
# identification margins below this (mean cosine similarity, best minus second-best product) are
# checked against the runner-up's registered references too (~7 % of items on the simulator test
# split; every misidentified item there had a margin under 0.12)
ID_RECHECK_MARGIN = 0.12
ID_SWITCH_RATIO = 2.0  # the runner-up must fit this many times better (residual ratios, summed logs)
# identification: the best few products by embedding are re-ranked by how well the item's size
# (height and footprint area per view, registration.size_signature) fits each one's references
# (randomised 320x240 val split: top-1 81.6 % by embedding alone, 95.1 % with size)
ID_SIZE_CANDIDATES = 5
BELT_FLOOR = 0.5   # belt residual floor (units of the belt's own spread; bare belt scores ~2)


def _misfit(views: dict) -> float:
    """How badly the views fit a product's registered references: the sum over views of the logs
    of their height and colour residual ratios (0 where nothing was compared)."""
    total = 0.0
    for vs in views.values():
        for r in (vs.height_residual, vs.color_residual):
            if np.isfinite(r):
                total += float(np.log(max(r, 1e-3)))
    return total


@dataclass
class ViewScore:
    damage_prob: float
    anomaly: float
    heatmap: np.ndarray
    patch_anomaly: float = 0.0
    global_anomaly: float = 0.0
    height_residual: float = float("nan")   # x a pristine view's (NaN: not compared)
    color_residual: float = float("nan")
    belt_residual: float = float("nan")     # registration.belt_residual (NaN: no canonical view)
    height_wide: float = float("nan")       # the height residual over a wider window, x a pristine view's
    residual: ViewResidual | None = None    # the registered comparison (maps, pose)
    residual_refs: tuple[float, float] = (1.0, 1.0)  # a pristine view's (height, colour) residual
    damage_map: np.ndarray | None = None    # the head's per-patch damage logits (h, w)
    shape: tuple[int, int] | None = None    # the crop's (H, W), where known (maps)

    def get(self, key, default=None):  # dict-like access for callers that treat views as dicts
        return getattr(self, key, default)

    def __getitem__(self, key):
        return getattr(self, key)


@dataclass
class ItemScore:
    score: float                 # fused P(damage)
    damaged: bool                # score > threshold
    type: str                    # most likely damage type, '' when not damaged
    sku_pred: str
    sku_conf: float              # softmax confidence of the identification
    anomaly: float               # max over views of the normalised anomaly
    views: dict[str, ViewScore] = field(default_factory=dict)
    type_probs: dict[str, float] = field(default_factory=dict)
    features: np.ndarray | None = None   # every fusion.FEATURES value, in that order (fitting, report)
    threshold: float = 0.5
    timing_ms: dict[str, float] = field(default_factory=dict)  # identify/anomaly/fuse, for `rig bench`
    # set by rig/scan/decide.py when the item was scanned upstream: the scanned SKU and what the image said
    expected_sku: str = ""
    image_sku: str = ""
    image_conf: float = 0.0
    # the product's references were not on the rig yet (reference store, fetched in the background):
    # scored without the anomaly and registered channels, which read "as a pristine view"
    refs_missing: bool = False


class Scorer:
    """Preprocess views, run the backend, score items. Build with :meth:`load`."""

    def __init__(self, card: dict, gallery: Gallery | None, backend=None,
                 model_dir: str | Path | None = None):
        self.card = card
        self.model_dir = Path(model_dir) if model_dir is not None else None
        inp = card["input"]
        self.input_size = int(inp["size"])
        self.channels = int(inp["channels"])
        self.mean = tuple(float(v) for v in inp["mean"])
        self.std = tuple(float(v) for v in inp["std"])
        depth = inp.get("depth") or {}
        self.height_scale_mm = float(depth.get("scale_mm", 100.0))
        self.depth_mode = str(depth.get("mode", "relative_height"))
        if self.channels > 3 and self.depth_mode not in DEPTH_MODES:
            raise ModelError(f"model card: unknown depth mode {self.depth_mode!r} "
                             f"(known: {sorted(DEPTH_MODES)})")
        if self.channels > 3 and DEPTH_MODES[self.depth_mode] != self.channels - 3:
            raise ModelError(f"model card: depth mode {self.depth_mode!r} gives "
                             f"{DEPTH_MODES[self.depth_mode]} channel(s), the input has {self.channels - 3}")
        self.reframe = check_framing(inp.get("reframe"))  # None: a model trained on views as stored
        self.damage_types = list(card["damage_types"])
        self.views = list(card.get("views", []))
        self.fusion = Fusion.from_dict(card["fusion"])
        self.threshold = float(card["threshold"])
        self.fpr_budget = card.get("fpr_budget")
        self.version = str(card.get("version", ""))
        self.onnx_path = (self.model_dir / card["onnx"]["file"]) if self.model_dir else None
        self.backend = backend
        self._ok_scores = None
        self.gallery = None
        self.geo_scales: dict[str, float] = {}  # working scale per view name (set_gallery)
        self._compare_pool = None  # threads comparing an item's views side by side (set_view_threads)
        if gallery is not None:
            self.set_gallery(gallery)

    @classmethod
    def load(cls, model_dir: str | Path, backend=None, *, threads: int = 2, max_batch: int = 8,
             gallery_version: str | None = None) -> Scorer:
        """Read the model card and the current gallery; build an ONNX Runtime backend if none given."""
        model_dir = Path(model_dir)
        card = read_card(model_dir)
        onnx_path = model_dir / card["onnx"]["file"]
        if not onnx_path.is_file():
            raise ModelError(f"{model_dir}: the model card names {onnx_path.name}, which is missing")
        verify_model_files(model_dir, card)
        gallery = load_gallery(model_dir, gallery_version)
        if backend is None:
            backend = make_backend("onnxruntime", onnx_path, max_batch=max_batch, threads=threads)
        return cls(card, gallery, backend, model_dir)

    def set_view_threads(self, n: int) -> None:
        """Compare the views of an item with their references on ``n`` threads at once (1: one
        after the other). The comparison is most of an item's CPU and OpenCV's ECC releases the
        GIL, so on a many-core rig this divides an item's scoring latency by up to its views."""
        if n < 1:
            raise ModelError(f"view threads must be at least 1, got {n}")
        if self._compare_pool is not None:
            self._compare_pool.shutdown(wait=False)
        self._compare_pool = None if n == 1 else ThreadPoolExecutor(n, thread_name_prefix="compare")

    # ---- gallery -------------------------------------------------------
    def set_gallery(self, gallery: Gallery) -> None:
        """Swap in a gallery (for example after `rig enroll` wrote a new version)."""
        self.gallery = gallery
        # a store-backed gallery (catalogue.py) brings its ANN index; a local one is searched exactly
        self.index = gallery.make_index() if hasattr(gallery, "make_index") else GalleryIndex(gallery)
        self.skus = self.index.skus
        self.geo_scales = gallery.geo_scales()

    def reload_gallery(self, version: str | None = None) -> str:
        if self.model_dir is None:
            raise ModelError("this scorer was not loaded from a model directory")
        self.set_gallery(load_gallery(self.model_dir, version))
        return self.gallery.version

    # ---- preprocessing -------------------------------------------------
    def prepare_view(self, rgb: np.ndarray, depth_mm: np.ndarray | None = None,
                     where: str = "view") -> np.ndarray:
        """(channels, S, S) float32: the CPU reference preprocessing of one view crop."""
        x = normalize_rgb(rgb, self.input_size, self.mean, self.std, where)
        if self.channels == 3:
            return x
        return np.concatenate([x, self.depth_channel(depth_mm, where)], axis=0)

    def depth_channel(self, depth_mm: np.ndarray | None, where: str = "view") -> np.ndarray | None:
        """(channels - 3, S, S) float32 non-RGB input, or None for an RGB-only model."""
        if self.channels == 3:
            return None
        if self.depth_mode == "height_detail_valid":
            return height_detail_valid(depth_mm, self.input_size, self.height_scale_mm, where)
        return relative_height(depth_mm, self.input_size, self.height_scale_mm, where)

    def canon_view(self, view: str, rgb: np.ndarray, depth_mm: np.ndarray | None) -> Canon | None:
        """The view in canonical pose for the registered comparison (None: the gallery has no
        registered references for this view name)."""
        s = self.geo_scales.get(view)
        return None if s is None else canonical(rgb, depth_mm, s)

    # ---- inference -----------------------------------------------------
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One prepared batch (at most the backend's max_batch views) through the network."""
        if self.backend is None:
            raise ModelError("this scorer has no inference backend")
        return self.backend.run(batch)

    def run_batch(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Run prepared views through the backend in chunks; one output dict per row."""
        if self.backend is None:
            raise ModelError("this scorer has no inference backend")
        rows = []
        step = max(1, int(getattr(self.backend, "max_batch", 8)))
        for s in range(0, len(batch), step):
            out = self.backend.run(np.ascontiguousarray(batch[s:s + step], np.float32))
            n = min(step, len(batch) - s)
            rows += [{k: v[i] for k, v in out.items()} for i in range(n)]
        return rows

    def score_crops(self, crops: dict[str, tuple[np.ndarray, np.ndarray | None]],
                    item_id: str = "item", sku: str | None = None) -> ItemScore:
        """Convenience: {view: (rgb, depth_mm or None)} -> ItemScore."""
        if not crops:
            raise ModelError(f"item {item_id!r}: no views to score")
        names = list(crops)
        batch = np.stack([self.prepare_view(*crops[v], where=f"item {item_id!r} view {v!r}")
                          for v in names])
        canons = {v: self.canon_view(v, *crops[v]) for v in names}
        return self.score_item(dict(zip(names, self.run_batch(batch))), item_id=item_id, sku=sku,
                               canons=canons)

    # ---- scoring -------------------------------------------------------
    def identify(self, view_outputs: dict[str, dict[str, np.ndarray]]) -> tuple[str, float, float]:
        """(sku, softmax confidence, margin between the best and second-best SKU similarity)."""
        return self.index.identify([out["embedding"] for out in view_outputs.values()], ID_TEMPERATURE)

    def score_item(self, view_outputs: dict[str, dict[str, np.ndarray]], threshold: float | None = None,
                   item_id: str = "item", sku: str | None = None,
                   canons: dict[str, Canon | None] | None = None) -> ItemScore:
        """Score one item from per-view backend outputs (each sliced at that view's batch row).

        ``sku`` forces the product instead of identifying it (for example when a
        barcode reader on the line already knows it). ``canons`` (from
        :meth:`canon_view`) adds the comparison with the product's registered
        references; without them those residuals read "as a pristine view".
        """
        if not view_outputs:
            raise ModelError(f"item {item_id!r}: no views to score")
        for v, out in view_outputs.items():
            missing = [k for k in ("damage_logit", "type_logits", "embedding", "global_desc",
                                   "patch_features") if k not in out]
            if missing:
                raise ModelError(f"item {item_id!r} view {v!r}: backend outputs lack {missing}")
        if self.gallery is None:
            raise ModelError("no gallery loaded: enroll references first ('rig enroll')")
        t_id = time.perf_counter()
        embeddings = [out["embedding"] for out in view_outputs.values()]
        if hasattr(self.index, "rank"):
            ranked, sku_conf = self.index.rank(embeddings, ID_TEMPERATURE)
            if sku is None and canons:
                ranked, sku_conf = self._rerank_by_size(ranked, sku_conf, canons)
            sku_pred = ranked[0][0]
            margin = ranked[0][1] - ranked[1][1] if len(ranked) > 1 else ranked[0][1]
        else:  # a store-backed gallery's ANN index (catalogue.py) names the best product only
            sku_pred, sku_conf, margin = self.index.identify(embeddings, ID_TEMPERATURE)
            ranked = [(sku_pred, 0.0)]
        if sku is not None:
            if sku not in self.gallery.skus:
                raise ModelError(f"item {item_id!r}: SKU {sku!r} has no references in gallery "
                                 f"{self.gallery.version}; enroll it with 'rig enroll'")
            sku_pred = sku
        t_anom = time.perf_counter()
        # the belt beside the item is the same whichever product it is: measured once
        belts = {v: belt_residual(c) for v, c in (canons or {}).items() if c is not None}
        views, logits, p_anoms, g_anoms, types, entry = self._views_against(sku_pred, view_outputs, canons, belts)
        if sku is None and canons and entry is not None and len(ranked) > 1 and margin < ID_RECHECK_MARGIN:
            # a close call between two products: the one whose registered references the views fit
            # clearly better is the product (shape and artwork settle what the embedding could not)
            alt = self._views_against(ranked[1][0], view_outputs, canons, belts)
            if alt[-1] is not None and _misfit(alt[0]) < _misfit(views) - np.log(ID_SWITCH_RATIO):
                sku_pred = ranked[1][0]
                sku_conf *= float(np.exp(-margin / ID_TEMPERATURE))  # the runner-up's softmax share
                views, logits, p_anoms, g_anoms, types, entry = alt
        t_fuse = time.perf_counter()
        hres = [vs.height_residual for vs in views.values() if np.isfinite(vs.height_residual)]
        cres = [vs.color_residual for vs in views.values() if np.isfinite(vs.color_residual)]
        bres = [vs.belt_residual for vs in views.values() if np.isfinite(vs.belt_residual)]
        wres = [vs.height_wide for vs in views.values() if np.isfinite(vs.height_wide)]
        named = {"disc_max": max(logits), "disc_mean": float(np.mean(logits)),
                 "patch_anomaly": max(p_anoms), "global_anomaly": max(g_anoms), "id_margin": margin,
                 # log of "x a pristine view's residual"; 0 (= typical) where nothing was compared
                 "height_residual": float(np.log(max(hres))) if hres else 0.0,
                 "color_residual": float(np.log(max(cres))) if cres else 0.0,
                 "belt_residual": float(np.log(max(max(bres), BELT_FLOOR))) if bres else 0.0,
                 "height_wide": float(np.log(max(wres))) if wres else 0.0}
        feats = np.array([named[k] for k in FEATURES])
        score = float(self.fusion(self.fusion.vector(named)))
        thr = self.threshold if threshold is None else float(threshold)
        damaged = score > thr
        type_p = np.max(np.stack(types), axis=0)
        type_probs = {t: float(p) for t, p in zip(self.damage_types, type_p)}
        dtype = self.damage_types[int(np.argmax(type_p))] if damaged and len(type_p) else ""
        t_end = time.perf_counter()
        timing = {"identify": (t_anom - t_id) * 1000.0, "anomaly": (t_fuse - t_anom) * 1000.0,
                  "fuse": (t_end - t_fuse) * 1000.0}
        return ItemScore(score, damaged, dtype, sku_pred, sku_conf,
                         max(v.anomaly for v in views.values()), views, type_probs, feats, thr, timing,
                         refs_missing=entry is None)

    def _entry(self, sku: str):
        """The product's gallery entry; None while a store-backed gallery is still fetching it."""
        return self.gallery.entry(sku) if hasattr(self.gallery, "entry") else self.gallery.skus[sku]

    def _rerank_by_size(self, ranked: list[tuple[str, float]], conf: float, canons: dict
                        ) -> tuple[list[tuple[str, float]], float]:
        """The best ``ID_SIZE_CANDIDATES`` products re-ranked by similarity minus the size mismatch
        (mean over the views that have that product's registered references); the rest follow."""
        sizes = {v: size_signature(c) for v, c in canons.items() if c is not None and c.fg.sum() > 5}
        if not sizes or len(ranked) < 2:
            return ranked, conf
        pens = []
        for sku, _ in ranked[:ID_SIZE_CANDIDATES]:
            geo = getattr(self._entry(sku), "geo", None) or {}
            pen = [size_mismatch(s, geo[v].sizes) for v, s in sizes.items() if v in geo]
            pens.append(float(np.mean(pen)) if pen else None)
        known = [p for p in pens if p is not None]
        if not known:
            return ranked, conf
        # a product with no registered references to compare sizes with is neither favoured nor
        # penalised: it gets the candidates' median mismatch
        neutral = float(np.median(known))
        head = [(sku, sim - (neutral if p is None else p))
                for (sku, sim), p in zip(ranked[:ID_SIZE_CANDIDATES], pens)]
        head.sort(key=lambda kv: -kv[1])
        if head[0][0] == ranked[0][0]:
            return head + ranked[ID_SIZE_CANDIDATES:], conf
        z = (np.array([s for _, s in head]) - head[0][1]) / ID_TEMPERATURE
        return head + ranked[ID_SIZE_CANDIDATES:], float(1.0 / np.exp(z).sum())

    def _views_against(self, sku: str, view_outputs: dict, canons: dict | None, belts: dict[str, float]):
        """Every view scored against one product's references: (views, damage logits, patch and
        global anomalies, type probabilities, the product's entry), the lists in view order.
        A store-backed gallery answers None while the product's references are being fetched:
        the views are then scored without the reference channels (1.0 = as a pristine view)."""
        entry = self._entry(sku)
        p_scale, g_scale = self.gallery.scales(sku)
        bank = entry.bank.astype(np.float32) if entry is not None else None
        shift = self.gallery.disc_shift(sku)  # judged against the product's own references
        views, logits, p_anoms, g_anoms, types, compares = {}, [], [], [], [], []
        for v, out in view_outputs.items():
            logit = float(np.ravel(out["damage_logit"])[0]) - shift
            if entry is None:
                amap = np.ones(np.asarray(out["patch_features"]).shape[-2:], np.float32)
                pa = ga = 1.0
            else:
                amap = patch_map(np.asarray(out["patch_features"], np.float32), bank) / p_scale
                pa = map_score(amap)
                ga = global_anomaly(np.ravel(out["global_desc"]), entry.descs) / g_scale
            views[v] = ViewScore(float(1 / (1 + np.exp(-logit))), float(max(pa, ga)),
                                 amap.astype(np.float32), pa, ga,
                                 damage_map=np.squeeze(np.asarray(out["damage_map"], np.float32))
                                 if "damage_map" in out else None)
            canon = (canons or {}).get(v)
            views[v].belt_residual = belts.get(v, float("nan"))
            if canon is not None and entry is not None and v in entry.geo:
                compares.append((views[v], canon, entry.geo[v]))
            logits.append(logit)
            p_anoms.append(pa)
            g_anoms.append(ga)
            types.append(1 / (1 + np.exp(-np.ravel(out["type_logits"]).astype(np.float64))))
        if self._compare_pool is not None and len(compares) > 1:
            for f in [self._compare_pool.submit(self._compare_view, *job) for job in compares]:
                f.result()  # each fills its own view's residuals
        else:
            for job in compares:
                self._compare_view(*job)
        return views, logits, p_anoms, g_anoms, types, entry

    @staticmethod
    def _compare_view(vs: ViewScore, canon: Canon, refs) -> None:
        """Fill a view's registered residuals (ratios to a pristine view's, floored)."""
        res = compare(canon, refs)
        h_ref, c_ref, w_ref = (tuple(refs.score_ref) + (float("nan"),) * 3)[:3]
        h_ref = h_ref if np.isfinite(h_ref) else 2.0 * HEIGHT_FLOOR_MM
        c_ref = c_ref if np.isfinite(c_ref) else 4.0 * COLOR_FLOOR
        vs.residual_refs = (max(h_ref, HEIGHT_FLOOR_MM), max(c_ref, COLOR_FLOOR))
        vs.height_residual = max(res.height_score, 0.1 * HEIGHT_FLOOR_MM) / vs.residual_refs[0]
        vs.color_residual = max(res.color_score, 0.1 * COLOR_FLOOR) / vs.residual_refs[1]
        # NaN (as "not compared") where the gallery predates the wide score
        vs.height_wide = (max(res.height_wide, 0.05 * HEIGHT_FLOOR_MM) / max(w_ref, 0.5 * HEIGHT_FLOOR_MM)
                          if np.isfinite(w_ref) and np.isfinite(res.height_wide) else float("nan"))
        if not canon.has_depth:
            vs.height_residual = vs.height_wide = float("nan")
        vs.residual = res

    # ---- operating point -----------------------------------------------
    def threshold_for_fpr(self, fpr: float) -> float:
        """Threshold for another FPR budget, from the val ok scores stored with the model."""
        if self._ok_scores is None:
            self._ok_scores = load_ok_scores(self.model_dir)
        return threshold_at_fpr(self._ok_scores, fpr)
