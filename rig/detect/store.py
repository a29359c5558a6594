"""The reference store: a site's product catalogue in PostgreSQL (psycopg 3).

What lives there (``SCHEMA``):

* ``products``: one row per SKU (``id`` is the product's number everywhere else);
* ``reference_images``: the pictures a product was enrolled from (PNG colour, 16-bit depth);
* ``models``: every model version that computed references, keyed by :func:`model_key`
  (the card's version and the ONNX file's SHA-256);
* ``entries``: what one model computed from one product's references (the gallery's
  :class:`~.gallery.SkuEntry`, serialised by :func:`entry_to_bytes`) and the product's
  identification prototypes (a few embeddings, for the ANN index);
* ``gallery_versions`` / ``gallery_members`` / ``gallery_current``: per model, numbered
  gallery versions (which entry each product uses), the current one, rollbacks;
* ``site_products``: the products a site handles (its rigs index those only; none listed: all);
* ``product_seen``: how often each site's rigs saw each product (warm start of their caches).

Every read names the model key: an entry computed by one model is never handed to
another (:class:`ModelMismatch`, a :class:`ModelError`, says which models the store holds).
psycopg is imported here only, at construction, with a message saying how to get it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..foundation.errors import DeviceError, ModelError
from .anomaly import coreset
from .gallery import Gallery, SkuEntry
from .registration import RefSet

log = logging.getLogger(__name__)

#: identification prototypes kept per product for the ANN index (k-center over its embeddings)
PROTOS_PER_PRODUCT = 4
_URL = re.compile(r"^postgres(ql)?://")

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model_key text PRIMARY KEY, card_version text NOT NULL, onnx_sha256 text NOT NULL,
    created timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS products (
    id bigserial PRIMARY KEY, sku text NOT NULL UNIQUE, created timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS reference_images (
    id bigserial PRIMARY KEY, product_id bigint NOT NULL REFERENCES products(id), name text NOT NULL,
    color bytea NOT NULL, depth bytea, created timestamptz NOT NULL DEFAULT now(), UNIQUE (product_id, name));
CREATE TABLE IF NOT EXISTS entries (
    id bigserial PRIMARY KEY, model_key text NOT NULL REFERENCES models(model_key),
    product_id bigint NOT NULL REFERENCES products(id), data bytea NOT NULL, protos bytea NOT NULL,
    sha256 text NOT NULL, nbytes bigint NOT NULL, created timestamptz NOT NULL DEFAULT now());
ALTER TABLE entries ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE entries ALTER COLUMN protos SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS gallery_versions (
    model_key text NOT NULL REFERENCES models(model_key), version int NOT NULL, parent int,
    note text NOT NULL DEFAULT '', meta jsonb NOT NULL DEFAULT '{}',
    created timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (model_key, version));
CREATE TABLE IF NOT EXISTS gallery_members (
    model_key text NOT NULL, version int NOT NULL, product_id bigint NOT NULL REFERENCES products(id),
    entry_id bigint NOT NULL REFERENCES entries(id), PRIMARY KEY (model_key, version, product_id),
    FOREIGN KEY (model_key, version) REFERENCES gallery_versions(model_key, version));
CREATE TABLE IF NOT EXISTS gallery_current (
    model_key text PRIMARY KEY REFERENCES models(model_key), version int NOT NULL);
CREATE TABLE IF NOT EXISTS site_products (
    site text NOT NULL, product_id bigint NOT NULL REFERENCES products(id), PRIMARY KEY (site, product_id));
CREATE TABLE IF NOT EXISTS product_seen (
    site text NOT NULL, product_id bigint NOT NULL REFERENCES products(id), n bigint NOT NULL,
    PRIMARY KEY (site, product_id));
"""


class ModelMismatch(ModelError):
    """References computed by one model offered to another."""


def model_key(card: dict) -> str:
    """The key of a model's computed references: card version + the ONNX file's SHA-256 (first 16)."""
    onnx = card.get("onnx", {}).get("file")
    sha = str((card.get("files") or {}).get(onnx, ""))
    if not sha:
        raise ModelError("the model card lists no SHA-256 for its ONNX file: references computed by it "
                         "cannot be keyed; re-export the model with 'rig train'")
    return f"{card.get('version', 'unversioned')}+{sha[:16]}"


# ---- one entry <-> bytes ---------------------------------------------------------------------------
def entry_to_bytes(entry: SkuEntry, key: str) -> bytes:
    """One product's references as compressed npz bytes; the model key travels inside."""
    arrays = {"emb": entry.embeddings, "desc": entry.descs, "bank": entry.bank, "src": entry.bank_src,
              "disc": np.asarray(entry.ref_discs, np.float32)}
    geo = {}
    for j, (view, r) in enumerate(sorted(entry.geo.items())):
        arrays[f"geoh_{j}"], arrays[f"geoc_{j}"] = r.height, r.rgb
        arrays[f"geof_{j}"] = np.packbits(r.fg, axis=-1)
        geo[view] = {"index": j, "scale": float(r.scale), "score_ref": [float(v) for v in r.score_ref]}
    meta = {"model_key": key, "patch_scale": float(entry.patch_scale), "global_scale": float(entry.global_scale),
            "ref_disc": float(entry.ref_disc), "ref_disc_base": float(entry.ref_disc_base),
            "sources": list(entry.sources), "geo": geo}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def entry_from_bytes(data: bytes, key: str, where: str = "entry") -> SkuEntry:
    """The entry back; refuses one computed by another model (:class:`ModelMismatch`)."""
    try:
        z = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
        meta = json.loads(z["meta"].tobytes().decode())
    except (ValueError, OSError, KeyError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where}: not a stored gallery entry ({exc})") from None
    if meta.get("model_key") != key:
        raise ModelMismatch(f"{where}: computed by model {meta.get('model_key')!r}, not by this rig's model "
                            f"{key!r}; references are never used across models (push this model's gallery)")
    geo = {}
    for view, g in meta["geo"].items():
        j = g["index"]
        h = z[f"geoh_{j}"]
        fg = np.unpackbits(z[f"geof_{j}"], axis=-1)[..., :h.shape[-1]].astype(bool)
        geo[view] = RefSet(h, z[f"geoc_{j}"], fg, float(g["scale"]), tuple(g["score_ref"]))
    return SkuEntry(z["emb"], z["desc"], z["bank"], z["src"], meta["patch_scale"], meta["global_scale"],
                    list(meta["sources"]), meta["ref_disc"], meta["ref_disc_base"], z["disc"], geo)


def prototypes(entry: SkuEntry, k: int = PROTOS_PER_PRODUCT) -> np.ndarray:
    """(<= k, E) float16: the product's embeddings that cover the rest (greedy k-center)."""
    emb = np.asarray(entry.embeddings, np.float32)
    return emb[np.sort(coreset(emb, min(k, len(emb)), seed=0))].astype(np.float16)


def entry_nbytes(entry: SkuEntry) -> int:
    """Memory an entry takes while the rig scores with it, derived float32 copies included."""
    n = entry.embeddings.nbytes + entry.descs.nbytes + entry.bank.nbytes + entry.bank_src.nbytes
    n += np.asarray(entry.ref_discs).nbytes
    for r in entry.geo.values():
        # height32 / rgb32 / fg8 + valid8 (registration.py)
        n += r.nbytes() + r.height.size * 4 + r.rgb.size * 4 + r.height.size * 2
    return int(n) + 2048


@dataclass
class GalleryInfo:
    version: int
    note: str
    meta: dict
    n_products: int


class ReferenceStore:
    """A connection to the catalogue. One per thread (psycopg connections are not shared here)."""

    def __init__(self, url: str, *, connect_timeout_s: float = 3.0, statement_timeout_ms: int = 30_000,
                 create: bool = False):
        if not isinstance(url, str) or not _URL.match(url):
            raise ModelError(f"reference store {url!r}: expected a postgresql://USER@HOST:PORT/DB URL")
        try:
            import psycopg
        except ImportError:
            raise DeviceError("the reference store needs psycopg 3: pip install 'damage-rig[catalogue]' "
                              "(psycopg[binary])") from None
        self._psycopg = psycopg
        self.url = url
        try:
            self.conn = psycopg.connect(url, connect_timeout=max(1, round(connect_timeout_s)),
                                        autocommit=True,
                                        options=f"-c statement_timeout={int(statement_timeout_ms)}")
        except psycopg.Error as exc:
            raise DeviceError(f"reference store {_redact(url)}: cannot connect ({str(exc).strip()})") from None
        if create:
            self.create_schema()

    # ---- schema, models ------------------------------------------------------------------------
    def create_schema(self) -> None:
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(18180018)")  # two pushes at once: one creates
            self.conn.execute(SCHEMA)

    def register_model(self, key: str, card: dict) -> None:
        onnx = card["onnx"]["file"]
        self.conn.execute("INSERT INTO models (model_key, card_version, onnx_sha256) VALUES (%s, %s, %s) "
                          "ON CONFLICT (model_key) DO NOTHING",
                          (key, str(card.get("version", "")), str(card["files"][onnx])))

    def models(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT model_key FROM models ORDER BY created")]

    def require_model(self, key: str) -> int:
        """The current gallery version for this model; a clear error when the store has none."""
        row = self.conn.execute("SELECT version FROM gallery_current WHERE model_key = %s", (key,)).fetchone()
        if row is None:
            raise ModelMismatch(f"reference store {_redact(self.url)} holds no gallery for model {key!r} "
                                f"(it holds: {self.models() or 'none'}); push one with "
                                "'rig gallery push --model DIR --db URL'")
        return int(row[0])

    # ---- writing --------------------------------------------------------------------------------
    def product_ids(self, skus: list[str]) -> dict[str, int]:
        with self.conn.cursor() as cur:
            cur.executemany("INSERT INTO products (sku) VALUES (%s) ON CONFLICT (sku) DO NOTHING",
                            [(s,) for s in skus])
            rows = cur.execute("SELECT sku, id FROM products WHERE sku = ANY(%s)", (list(skus),)).fetchall()
        return dict(rows)

    def put_images(self, sku: str, images: list[tuple[str, bytes, bytes | None]]) -> int:
        """Reference pictures of a product: (name, PNG colour bytes, 16-bit PNG depth bytes or None)."""
        pid = self.product_ids([sku])[sku]
        with self.conn.cursor() as cur:
            cur.executemany("INSERT INTO reference_images (product_id, name, color, depth) VALUES (%s, %s, %s, %s) "
                            "ON CONFLICT (product_id, name) DO UPDATE SET color = EXCLUDED.color, "
                            "depth = EXCLUDED.depth, created = now()",
                            [(pid, n, c, d) for n, c, d in images])
        return len(images)

    def images(self, sku: str) -> list[tuple[str, bytes, bytes | None]]:
        return [(n, bytes(c), None if d is None else bytes(d)) for n, c, d in self.conn.execute(
            "SELECT i.name, i.color, i.depth FROM reference_images i JOIN products p ON p.id = i.product_id "
            "WHERE p.sku = %s ORDER BY i.name", (sku,))]

    def push(self, key: str, entries: dict[str, SkuEntry] | Iterable[tuple[str, bytes, bytes, int]], *,
             note: str = "", replace_all: bool = False, meta: dict | None = None,
             encoded: bool = False, chunk: int = 500) -> int:
        """A new gallery version of model ``key``: the current one with ``entries`` added or replaced
        (``replace_all``: only ``entries``), written in one transaction (a rig sees all of it or none).
        ``encoded``: entries are (sku, data, protos, nbytes) rows, streamed (the benchmark's catalogue
        never sits in memory). Returns the new version number; it becomes current."""
        if encoded:
            rows: Iterable = entries
        else:
            rows = ((sku, entry_to_bytes(e, key), prototypes(e).tobytes(), entry_nbytes(e))
                    for sku, e in entries.items())
            if entries:
                g = Gallery(dict(entries))
                computed = {"embedding_dim": int(next(iter(entries.values())).embeddings.shape[1]),
                            "default_scales": list(g.default_scales()), "geo_scales": g.geo_scales()}
                meta = {**computed, **(meta or {})}
        n = 0
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
            cur_v = self.conn.execute("SELECT version FROM gallery_current WHERE model_key = %s FOR UPDATE",
                                      (key,)).fetchone()
            parent = None if cur_v is None else int(cur_v[0])
            last = self.conn.execute("SELECT max(version) FROM gallery_versions WHERE model_key = %s",
                                     (key,)).fetchone()[0]
            version = 1 if last is None else int(last) + 1
            pmeta = {}
            if parent is not None:
                pmeta = self.conn.execute("SELECT meta FROM gallery_versions WHERE model_key = %s AND version = %s",
                                          (key, parent)).fetchone()[0]
            # an enrollment keeps the gallery's scales; a full push brings its own
            merged = {**(meta or {}), **pmeta} if parent is not None and not replace_all else {**pmeta, **(meta or {})}
            self.conn.execute("INSERT INTO gallery_versions (model_key, version, parent, note, meta) "
                              "VALUES (%s, %s, %s, %s, %s)", (key, version, parent, note, json.dumps(merged)))
            first = self.conn.execute("SELECT nextval('entries_id_seq')").fetchone()[0]
            for part in _chunks(rows, chunk):
                ids = self.product_ids([r[0] for r in part])
                with self.conn.cursor() as cur, cur.copy(
                        "COPY entries (model_key, product_id, data, protos, sha256, nbytes) FROM STDIN "
                        "WITH (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "int8", "bytea", "bytea", "text", "int8"])
                    for sku, data, protos, nb in part:
                        cp.write_row((key, ids[sku], data, protos, hashlib.sha256(data).hexdigest(), nb))
                n += len(part)
            # this push's entries (the lock keeps every other writer of this model out)
            self.conn.execute(
                "INSERT INTO gallery_members (model_key, version, product_id, entry_id) "
                "SELECT DISTINCT ON (product_id) %s, %s, product_id, id FROM entries "
                "WHERE model_key = %s AND id > %s ORDER BY product_id, id DESC", (key, version, key, first))
            if parent is not None and not replace_all:
                self.conn.execute(
                    "INSERT INTO gallery_members (model_key, version, product_id, entry_id) "
                    "SELECT model_key, %s, product_id, entry_id FROM gallery_members p "
                    "WHERE model_key = %s AND version = %s AND NOT EXISTS (SELECT 1 FROM gallery_members m "
                    "WHERE m.model_key = p.model_key AND m.version = %s AND m.product_id = p.product_id)",
                    (version, key, parent, version))
            self.conn.execute("INSERT INTO gallery_current (model_key, version) VALUES (%s, %s) "
                              "ON CONFLICT (model_key) DO UPDATE SET version = EXCLUDED.version", (key, version))
        log.info("reference store: model %s gallery version %d (%d products written, parent %s)",
                 key, version, n, parent)
        return version

    def rollback(self, key: str, version: int) -> int:
        ok = self.conn.execute("SELECT 1 FROM gallery_versions WHERE model_key = %s AND version = %s",
                               (key, int(version))).fetchone()
        if ok is None:
            known = [v.version for v in self.versions(key)]
            raise ModelError(f"reference store: model {key!r} has no gallery version {version} (stored: {known})")
        self.conn.execute("UPDATE gallery_current SET version = %s WHERE model_key = %s", (int(version), key))
        return int(version)

    def versions(self, key: str) -> list[GalleryInfo]:
        return [GalleryInfo(int(v), n, m, int(c)) for v, n, m, c in self.conn.execute(
            "SELECT g.version, g.note, g.meta, (SELECT count(*) FROM gallery_members m WHERE "
            "m.model_key = g.model_key AND m.version = g.version) FROM gallery_versions g "
            "WHERE g.model_key = %s ORDER BY g.version", (key,))]

    # ---- reading (the rig) ----------------------------------------------------------------------
    def gallery_meta(self, key: str, version: int) -> dict:
        row = self.conn.execute("SELECT meta FROM gallery_versions WHERE model_key = %s AND version = %s",
                                (key, version)).fetchone()
        return dict(row[0]) if row else {}

    def catalogue(self, key: str, version: int, site: str | None = None):
        """Yield (product id, sku, prototypes (P, E) float16) of every product in the version, streamed;
        with ``site``, of the site's products when it has a list (``set_site_products``)."""
        # a store made before site lists existed has no such table: no list there
        listed = site is not None and self.conn.execute(
            "SELECT to_regclass('site_products') IS NOT NULL").fetchone()[0] and self.conn.execute(
            "SELECT 1 FROM site_products WHERE site = %s LIMIT 1", (site,)).fetchone() is not None
        where = " AND m.product_id IN (SELECT product_id FROM site_products WHERE site = %s)" if listed else ""
        args = (key, version, site) if listed else (key, version)
        with self.conn.cursor() as cur:
            for pid, sku, protos in cur.stream(
                    "SELECT p.id, p.sku, e.protos FROM gallery_members m JOIN products p ON p.id = m.product_id "
                    "JOIN entries e ON e.id = m.entry_id WHERE m.model_key = %s AND m.version = %s" + where +
                    " ORDER BY p.id", args):
                yield int(pid), sku, np.frombuffer(protos, np.float16)

    def set_site_products(self, site: str, skus: list[str]) -> int:
        """The products ``site`` handles (replacing its list; empty: no list, the whole catalogue)."""
        ids = self.product_ids(list(skus)) if skus else {}
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("DELETE FROM site_products WHERE site = %s", (site,))
            cur.executemany("INSERT INTO site_products (site, product_id) VALUES (%s, %s)",
                            [(site, i) for i in ids.values()])
        return len(ids)

    def fetch(self, key: str, version: int, sku: str) -> SkuEntry | None:
        """One product's entry under this model and version (None: not in the gallery)."""
        row = self.conn.execute(
            "SELECT e.data, e.model_key FROM gallery_members m JOIN products p ON p.id = m.product_id "
            "JOIN entries e ON e.id = m.entry_id WHERE m.model_key = %s AND m.version = %s AND p.sku = %s",
            (key, version, sku)).fetchone()
        if row is None:
            return None
        if row[1] != key:
            raise ModelMismatch(f"reference store: entry of {sku!r} belongs to model {row[1]!r}, not {key!r}")
        return entry_from_bytes(row[0], key, f"reference store entry of {sku!r}")

    def fetch_raw(self, key: str, version: int, sku: str) -> bytes | None:
        row = self.conn.execute(
            "SELECT e.data FROM gallery_members m JOIN products p ON p.id = m.product_id "
            "JOIN entries e ON e.id = m.entry_id WHERE m.model_key = %s AND m.version = %s AND p.sku = %s",
            (key, version, sku)).fetchone()
        return None if row is None else bytes(row[0])

    def add_seen(self, site: str, counts: dict[str, int]) -> None:
        if not counts:
            return
        ids = dict(self.conn.execute("SELECT sku, id FROM products WHERE sku = ANY(%s)", (list(counts),)).fetchall())
        with self.conn.cursor() as cur:
            cur.executemany("INSERT INTO product_seen (site, product_id, n) VALUES (%s, %s, %s) ON CONFLICT "
                            "(site, product_id) DO UPDATE SET n = product_seen.n + EXCLUDED.n",
                            [(site, ids[s], n) for s, n in counts.items() if s in ids])

    def frequent(self, site: str, limit: int) -> list[str]:
        """The site's most often seen products, most frequent first."""
        return [r[0] for r in self.conn.execute(
            "SELECT p.sku FROM product_seen s JOIN products p ON p.id = s.product_id WHERE s.site = %s "
            "ORDER BY s.n DESC, p.id LIMIT %s", (site, int(limit)))]

    def size_bytes(self) -> int:
        return int(self.conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception as exc:  # noqa: BLE001 - closing a broken connection must not raise
            log.debug("closing the reference store: %s", exc)


def write_enrollment(url: str, model_dir, skus: list[str], images: dict, note: str) -> tuple[int, int]:
    """After an enrollment into a model folder (rig enroll, the review terminal): the products' new
    entries as a new store version, and their reference pictures (paths; a ``NAME_depth.png`` beside
    one goes with it). Returns (store version, pictures written)."""
    from pathlib import Path

    from .card import read_card
    from .gallery import load_gallery

    card = read_card(model_dir)
    key = model_key(card)
    gallery = load_gallery(model_dir)
    store = ReferenceStore(url, create=True)
    try:
        store.register_model(key, card)
        version = store.push(key, {s: gallery.skus[s] for s in skus}, note=note)
        n = 0
        for sku in skus:
            rows = []
            for im in images.get(sku, []):
                p = Path(im)
                depth = p.with_name(p.stem + "_depth.png")
                # the folder too: crops of different items share a file name (side.jpg)
                rows.append((f"{p.parent.name}/{p.name}", p.read_bytes(),
                             depth.read_bytes() if depth.is_file() else None))
            n += store.put_images(sku, rows)
    finally:
        store.close()
    return version, n


def _chunks(rows: Iterable, size: int):
    part = []
    for r in rows:
        part.append(r)
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
