"""Identification at catalogue scale: an approximate nearest-neighbour index (faiss) over products.

Each product brings a few prototypes (store.prototypes: k-center over its reference
embeddings, L2-normalised, so inner product = cosine). Small catalogues use an exact
flat index; from ``IVF_FROM`` vectors on, an inverted file with fp16 scalar quantisation
(``IVF{nlist},SQfp16``, inner product): a query looks into ``nprobe`` lists only, and
distances are exact to fp16, so recall against exact search is set by ``nprobe`` alone
(measured by ``rig bench gallery``). Vector ids are ``product_id * MAX_PROTOS + j``, so
a product is added or replaced on enrollment without rebuilding (``add`` / ``remove``).

``identify`` answers like gallery.GalleryIndex: per product, each view's best similarity
among the candidates found, averaged over the views; a product a view did not return
gets that view's lowest returned similarity (an upper bound of its own).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from ..foundation.errors import DeviceError, ModelError

log = logging.getLogger(__name__)

MAX_PROTOS = 8
IVF_FROM = 20_000      # vectors: below, exact search is as fast
TOP_K = 32             # vectors returned per view


def _faiss():
    try:
        import faiss
    except ImportError:
        raise DeviceError("catalogue-scale identification needs faiss: pip install 'damage-rig[catalogue]' "
                          "(faiss-cpu)") from None
    return faiss


class AnnIndex:
    """Products' prototypes in one faiss index; ``skus`` lists the products it holds."""

    def __init__(self, dim: int, *, nprobe: int = 32, threads: int = 1):
        if dim < 1:
            raise ModelError(f"ANN index: embedding dimension must be >= 1, got {dim}")
        self.faiss = _faiss()
        self.faiss.omp_set_num_threads(threads)  # one core per owner (DESIGN: thread pools)
        self.dim, self.nprobe = int(dim), int(nprobe)
        self.index = None
        self.sku_of: dict[int, str] = {}
        self.id_of: dict[str, int] = {}
        self._lock = threading.Lock()
        self.kind = "empty"

    @property
    def skus(self) -> list[str]:
        return list(self.id_of)

    def __len__(self) -> int:
        return len(self.id_of)

    def __contains__(self, sku) -> bool:
        return sku in self.id_of

    # ---- building -----------------------------------------------------------------------------
    def build(self, products: list[tuple[int, str, np.ndarray]], seed: int = 0) -> AnnIndex:
        """From (product id, sku, prototypes (P, E)) of every product; trains the IVF when large."""
        vecs, ids = self._rows(products)
        f = self.faiss
        if len(vecs) >= IVF_FROM:
            nlist = int(min(65536, max(64, np.sqrt(len(vecs)))))
            index = f.index_factory(self.dim, f"IVF{nlist},SQfp16", f.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = vecs[rng.choice(len(vecs), min(len(vecs), 64 * nlist), replace=False)]
            index.train(sample)
            f.extract_index_ivf(index).nprobe = self.nprobe
            self.kind = f"IVF{nlist},SQfp16 nprobe={self.nprobe}"
        else:
            index = f.IndexIDMap2(f.IndexFlatIP(self.dim))
            self.kind = "Flat"
        with self._lock:
            index.add_with_ids(vecs, ids)
            self.index = index
            for pid, sku, _ in products:
                self.sku_of[int(pid)], self.id_of[sku] = sku, int(pid)
        log.info("ANN index: %d products, %d vectors, %s", len(self.id_of), len(vecs), self.kind)
        return self

    def _rows(self, products) -> tuple[np.ndarray, np.ndarray]:
        vecs, ids = [], []
        for pid, sku, protos in products:
            p = np.asarray(protos, np.float32).reshape(-1, self.dim)[:MAX_PROTOS]
            if not len(p):
                raise ModelError(f"ANN index: product {sku!r} has no prototype embeddings")
            p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
            vecs.append(p)
            ids.append(int(pid) * MAX_PROTOS + np.arange(len(p), dtype=np.int64))
        if not vecs:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64)
        return np.ascontiguousarray(np.concatenate(vecs), np.float32), np.concatenate(ids)

    def add(self, products: list[tuple[int, str, np.ndarray]]) -> None:
        """Enrollment: add products, or replace their prototypes (the trained lists are kept)."""
        if self.index is None:
            self.build(products)
            return
        vecs, ids = self._rows(products)
        with self._lock:
            for pid, sku, _ in products:
                self._remove_locked(int(pid))
            self.index.add_with_ids(vecs, ids)
            for pid, sku, _ in products:
                self.sku_of[int(pid)], self.id_of[sku] = sku, int(pid)

    def remove(self, sku: str) -> None:
        with self._lock:
            pid = self.id_of.pop(sku, None)
            if pid is not None:
                self._remove_locked(pid)
                self.sku_of.pop(pid, None)

    def _remove_locked(self, pid: int) -> None:
        sel = self.faiss.IDSelectorRange(pid * MAX_PROTOS, (pid + 1) * MAX_PROTOS)
        self.index.remove_ids(sel)

    # ---- searching ----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, product ids) per query row, best first (-1: none)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if q.shape[1] != self.dim:
            raise ModelError(f"ANN index: query embeddings have {q.shape[1]} dims, the index {self.dim}")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        with self._lock:
            if self.index is None or self.index.ntotal == 0:
                raise ModelError("ANN index: no products indexed (is the gallery empty?)")
            sims, ids = self.index.search(q, k)
        pids = np.where(ids >= 0, ids // MAX_PROTOS, -1)
        return sims, pids

    def identify(self, embeddings: list[np.ndarray], temperature: float) -> tuple[str, float, float]:
        """(sku, softmax confidence, margin), like GalleryIndex.identify, over the candidates found."""
        sims, pids = self.search(np.stack([np.ravel(e) for e in embeddings]))
        valid = pids >= 0
        if not valid.any():
            raise ModelError("ANN index: the search returned no product")
        # a product a view did not return scores that view's lowest returned similarity
        floors = np.where(valid, sims, np.inf).min(axis=1)
        floors[~valid.any(axis=1)] = -1.0
        cands, inv = np.unique(pids[valid], return_inverse=True)
        best = np.repeat(floors[:, None], len(cands), axis=1)
        np.maximum.at(best, (np.nonzero(valid)[0], inv), sims[valid])
        scores = best.mean(axis=0)
        order = np.argsort(scores)[::-1]
        top = float(scores[order[0]])
        margin = top - float(scores[order[1]]) if len(order) > 1 else top
        conf = float(1.0 / np.exp((scores - top) / temperature).sum())
        return self.sku_of[int(cands[order[0]])], conf, float(margin)

    # ---- snapshot (a rig starting while the store is away) ---------------------------------------
    def save(self, path) -> None:
        with self._lock:
            self.faiss.write_index(self.index, str(path))

    def load(self, path, skus: dict[str, int]) -> AnnIndex:
        index = self.faiss.read_index(str(path))
        ivf = None
        try:
            ivf = self.faiss.extract_index_ivf(index)
        except RuntimeError:
            pass
        if ivf is not None:
            ivf.nprobe = self.nprobe
        with self._lock:
            self.index = index
            self.id_of = dict(skus)
            self.sku_of = {v: k for k, v in skus.items()}
        self.kind = "snapshot"
        return self


def exact_top1(protos: np.ndarray, owner: np.ndarray, queries: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """Exact search's best product per query: brute force over every prototype (the recall reference)."""
    q = np.asarray(queries, np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    best_s = np.full(len(q), -np.inf, np.float32)
    best_o = np.full(len(q), -1, np.int64)
    for s in range(0, len(protos), chunk):
        p = np.asarray(protos[s:s + chunk], np.float32)
        p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        sims = q @ p.T
        j = sims.argmax(1)
        better = sims[np.arange(len(q)), j] > best_s
        best_s[better] = sims[np.arange(len(q)), j][better]
        best_o[better] = owner[s + j[better]]
    return best_o
