"""Board runtime: a whole query from image to place (numpy only; PIL optional).

    >>> rec = PlaceRecognizer("bundle/")                         # trunk.npz, head.npz, meta.json
    >>> rec.build_database([img0, img1, ...])                    # same path as the queries
    >>> rec.save_database()                                      # bundle/database.npy
    >>> idx, scores = rec.query(img, top_n=5)                    # database rows, inner products

Path of one image: resize to the model's side (bilinear, PIL) and ImageNet-normalise exactly like
``tatvpr_hw.data.transforms.preprocess`` -> int8 (the trunk's image quantiser) -> the integer
trunk (``tatvpr_pynq.integer.TrunkQ``) with every op on ``units`` -> final LayerNorm (vector unit)
if the head uses it -> the integer head (``head_q.npz``, ``tatvpr_pynq.integer.HeadQ``: BoQ,
MixVPR, CLS, SALAD's MLPs) on ``units`` too -> the L2-normalised descriptor in Q15, as float64
(SALAD: its Sinkhorn part in float64 on the ARM cores) -> top-N database rows by inner product
(faiss ``IndexFlatIP`` if importable, else numpy ``argpartition``). A bundle without
``head_q.npz`` (``meta.json`` ``head_integer`` false, e.g. written before the integer head)
dequantises the trunk's output and runs the float head in numpy (``tatvpr_pynq.heads``).

Units backends: ``NUMPY_UNITS`` (the golden integer model), the C simulation of the HLS kernels
(``tatvpr_hw.lower.hls.query_csim.csim_units``, host-side test stand-in for the bitstream), and
:class:`PynqUnits`, which runs the ternary linears, the int8-unit GEMMs and the vector-unit ops on
the bitstream's three IPs (numpy on the ARM cores for a unit whose IP the overlay lacks, and for
SALAD's Sinkhorn part, host work on every backend), and issues the trunk as
the design point schedules it (``pipelined``: tile by tile, one host thread per IP).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .heads import head_descriptor, load_head
from .integer import (NUMPY_UNITS, IntegerModelError, Units, descriptor_float, load_head_q, load_trunk,
                      query_descriptor, topk_int, topk_keep)

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.asarray((0.485, 0.456, 0.406), dtype=np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.asarray((0.229, 0.224, 0.225), dtype=np.float32).reshape(3, 1, 1)
BUNDLE_FILES = ("trunk.npz", "head.npz", "meta.json")
META_KEYS = ("img_size", "sparsity", "final_norm", "descriptor_dim")


class RuntimeInputError(ValueError):
    """A bundle, image or database the runtime cannot use (the message names it)."""


def preprocess(image, img_size: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB (or a PIL image) -> float32 ``[3, S, S]`` normalised as in
    ``tatvpr_hw.data.transforms.preprocess``; a float ``[3, S, S]`` array is taken as already
    preprocessed. Resizing needs PIL; without it the caller passes ``S x S`` images."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image
        pil = image.convert("RGB")
    else:
        a = np.asarray(image)
        if a.ndim == 3 and a.shape[0] == 3 and a.dtype.kind == "f":
            if a.shape[1:] != (img_size, img_size):
                raise RuntimeInputError(f"float image must be preprocessed [3, {img_size}, {img_size}], "
                                        f"got {a.shape}")
            return a.astype(np.float32)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise RuntimeInputError(f"image must be uint8 [H, W, 3] RGB or float [3, {img_size}, {img_size}], "
                                    f"got {a.dtype} {a.shape}")
        if a.shape[:2] == (img_size, img_size):
            pil = None
            arr = a
        else:
            try:
                from PIL import Image
            except ImportError:
                raise RuntimeInputError(f"image is {a.shape[1]}x{a.shape[0]} and PIL is not installed to resize it: "
                                        f"pass {img_size}x{img_size} images") from None
            pil = Image.fromarray(a, "RGB")
    if pil is not None:
        from PIL import Image

        if pil.size != (img_size, img_size):
            pil = pil.resize((img_size, img_size), Image.BILINEAR)
        arr = np.asarray(pil)
    x = np.asarray(arr, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def top_n(database: np.ndarray, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and inner products of the ``n`` best database rows per query (best first)."""
    n = min(int(n), database.shape[0])
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatIP(database.shape[1])
        index.add(np.ascontiguousarray(database, dtype=np.float32))
        scores, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), n)
        return idx, scores
    sims = queries @ database.T
    part = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, 1)
    return idx, np.take_along_axis(sims, idx, 1)


class PynqUnits(Units):
    """The bitstream's units: ternary linears on the ternary GEMM IP (``overlay.run_layer``, e.g. a
    :class:`tatvpr_pynq.driver.TernaryGemmOverlay`) after the host's top-k; the int8-unit GEMMs (patch
    embedding, QK^T, P.V, the head's linears and attention) on ``overlay.int8`` and LayerNorm, softmax,
    GELU / ReLU tables, residual adds, the head's int16 -> int8 requantisation and the descriptor's L2
    normalisation on ``overlay.vector`` (:class:`tatvpr_pynq.driver.Int8UnitIP`,
    :class:`tatvpr_pynq.driver.VectorUnitIP`) when the bitstream has those IPs, else in numpy on the
    ARM cores (the golden model's integers); SALAD's Sinkhorn part on the ARM cores on every backend
    (``Units.host``). ``fabric_ops`` counts the calls that ran on
    the fabric, ``fabric_ops_by_unit`` per unit, ``arm_ops`` the int8- and vector-unit calls that ran in
    numpy."""

    def __init__(self, overlay) -> None:
        self.overlay = overlay
        self.int8 = getattr(overlay, "int8", None)
        self.vector = getattr(overlay, "vector", None)
        self.fabric_ops = 0
        self.fabric_ops_by_unit: dict[str, int] = {"ternary": 0, "int8": 0, "vector": 0}
        self.arm_ops: dict[str, int] = {"int8": 0, "vector": 0}
        self.last_issue = None
        import threading

        self._lock = threading.Lock()
        # the vector IP serves two threads of a pipelined issue when the top-k is on it (the array's
        # thread asks it for the act stream): one call (start + wait) at a time
        self._vector_lock = threading.Lock()
        self._stream_cache = None  # (input copy, op name, sparsity, simd, banks, stream): qkv's stream made once
        log.info("PynqUnits: ternary linears on the IP; int8-unit ops %s; vector-unit ops %s",
                 "on the IP" if self.int8 is not None else "in numpy on the ARM cores",
                 "on the IP" if self.vector is not None else "in numpy on the ARM cores")

    @property
    def overlap(self) -> str:
        """The design point's ``schedule.overlap`` (``design_point.json``; ``none`` when absent)."""
        return str(getattr(self.overlay, "design_point", {}).get("overlap", "none"))

    def trunk_tokens(self, trunk, img_q, sparsity, *, threads: bool = True):
        """``trunk.tokens`` as the design point schedules it: ``pipelined`` issues every segment tile by
        tile with one host thread per IP (:func:`tatvpr_pynq.pipeline.run_trunk`, ``tile_tokens`` of the
        design point), ``none`` op by op. The integers are the same either way."""
        if self.overlap != "pipelined":
            return trunk.tokens(img_q, sparsity, self)
        from .pipeline import run_trunk

        tile = int(self.overlay.design_point.get("tile_tokens", 16))
        x, self.last_issue = run_trunk(trunk, img_q, sparsity, self, tile_tokens=tile, threads=threads,
                                       fused=self.attention_fused, chain=self.vector_chain_fused)
        return x

    def _count(self, unit: str, on_fabric: bool) -> bool:
        with self._lock:  # the units' threads of a pipelined issue count here too
            return self._count_locked(unit, on_fabric)

    def _count_locked(self, unit: str, on_fabric: bool) -> bool:
        if on_fabric:
            self.fabric_ops += 1
            self.fabric_ops_by_unit[unit] += 1
        else:
            self.arm_ops[unit] += 1
        return on_fabric

    @property
    def topk_on_fabric(self) -> bool:
        """The design point's ``schedule.topk`` is ``fabric`` (``design_point.json``; ``host`` when absent,
        e.g. a bitstream built before the vector IP had the op) and the bitstream has the vector IP."""
        return (self.vector is not None
                and str(getattr(self.overlay, "design_point", {}).get("topk", "host")) == "fabric")

    @property
    def attention_fused(self) -> bool:
        """The design point's ``schedule.attention`` is ``fused`` (``design_point.json``; ``split`` when
        absent) and the bitstream has the int8 IP: a block's attention is one call of its attention mode."""
        return (self.int8 is not None
                and str(getattr(self.overlay, "design_point", {}).get("attention", "split")) == "fused")

    @property
    def vector_chain_fused(self) -> bool:
        """The design point's ``schedule.vector_chain`` is ``fused`` (``design_point.json``; ``split`` when
        absent) and the bitstream has the vector IP: under ``pipelined`` a row's chained vector ops are one
        call of its chain op (``VectorUnitIP.chain``; ``tatvpr_pynq.pipeline.trunk_steps(chain=True)``)."""
        return (self.vector is not None
                and str(getattr(self.overlay, "design_point", {}).get("vector_chain", "split")) == "fused")

    def vector_chain(self, name, *, x16=None, x8=None, add=None, ln=None, gelu_table=None, sparsity=None,
                     simd=None, banks=None):
        """One call of the vector IP's chain op; with the top-k on the fabric its output is the act stream
        the ternary IP reads (a :class:`tatvpr_pynq.pipeline.ChainStream`, which :meth:`ternary` takes)."""
        if not self._count("vector", self.vector is not None):
            return super().vector_chain(name, x16=x16, x8=x8, add=add, ln=ln, gelu_table=gelu_table,
                                        sparsity=sparsity, simd=simd, banks=banks)
        from .pipeline import ChainStream

        k = int(np.shape(x8 if gelu_table is not None else x16)[-1])
        keep = None if sparsity is None else topk_keep(k, sparsity)
        stream = keep is not None and self.topk_on_fabric
        ip = self.overlay.ip
        with self._vector_lock:
            res, out = self.vector.chain(x16=x16, x8=x8, add=add, ln=ln, gelu_table=gelu_table, keep=keep,
                                         stream=stream, simd=ip.simd if stream else None,
                                         banks=ip.banks if stream else None, write_res=add is not None)
        return res, (ChainStream(out[0], out[1], k) if stream else out)

    def attention(self, name, qkv, heads, sm_mult, sm_shift, av_mult, av_shift):
        if self.attention_fused:  # one int8-IP call: no scores, probabilities or row maxima on the ARM
            self._count("int8", True)
            return self.int8.attention(qkv, heads, sm_mult, sm_shift, av_mult, av_shift)
        return super().attention(name, qkv, heads, sm_mult, sm_shift, av_mult, av_shift)

    def ternary(self, name, lin, x, sparsity):
        self._count("ternary", True)
        if hasattr(x, "chunks") and hasattr(x, "pairs"):  # a chain's act stream (schedule.vector_chain: fused)
            return np.asarray(self.overlay.run_layer_stream(x.chunks, x.pairs, x.k, lin.codes, lin.bias, lin.mult,
                                                            lin.shift), dtype=np.int8)
        if self.topk_on_fabric:  # the vector IP top-k's and bank-schedules; the ternary IP reads its stream
            ip = self.overlay.ip
            chunks, pairs = self.topk_schedule(name, x, sparsity, ip.simd, ip.banks)
            return np.asarray(self.overlay.run_layer_stream(chunks, pairs, np.asarray(x).shape[1], lin.codes,
                                                            lin.bias, lin.mult, lin.shift), dtype=np.int8)
        return np.asarray(self.overlay.run_layer(topk_int(x, sparsity), lin.codes, lin.bias, lin.mult, lin.shift),
                          dtype=np.int8)

    def topk_schedule(self, name, x, sparsity, simd, banks=None):
        c = self._stream_cache
        if (c is not None and c[1:5] == (name, sparsity, simd, banks) and c[0].shape == np.shape(x)
                and np.array_equal(c[0], x)):
            return c[5]  # qkv, issued per head on the same input: its stream is made once (not counted again)
        if self._count("vector", self.vector is not None):
            with self._vector_lock:
                stream = self.vector.topk_schedule(x, topk_keep(np.asarray(x).shape[-1], sparsity), simd=simd,
                                                   banks=banks)
            self._stream_cache = (np.array(x, copy=True), name, sparsity, simd, banks, stream)
            return stream
        return super().topk_schedule(name, x, sparsity, simd, banks)

    def gemm(self, name, a, b, bias=None, *, out="int32", mult=0, shift=0):
        if self._count("int8", self.int8 is not None):
            return self.int8.gemm(a, b, bias, out=out, mult=mult, shift=shift)
        return super().gemm(name, a, b, bias, out=out, mult=mult, shift=shift)

    def layernorm(self, name, ln, x):
        if self._count("vector", self.vector is not None):
            with self._vector_lock:
                return self.vector.layernorm(ln, x)
        return super().layernorm(name, ln, x)

    def softmax(self, name, scores, mult, shift):
        if self._count("vector", self.vector is not None):
            with self._vector_lock:
                return self.vector.softmax(scores, mult, shift)
        return super().softmax(name, scores, mult, shift)

    def gelu(self, name, table, x):
        if self._count("vector", self.vector is not None):
            with self._vector_lock:
                return self.vector.gelu(table, x)
        return super().gelu(name, table, x)

    def add(self, name, x, y, mult, shift):
        if self._count("vector", self.vector is not None):
            with self._vector_lock:
                return self.vector.add(x, y, mult, shift)
        return super().add(name, x, y, mult, shift)

    def requant(self, name, x, mult, shift):
        if self._count("vector", self.vector is not None):
            with self._vector_lock:
                return self.vector.requant(x, mult, shift)
        return super().requant(name, x, mult, shift)

    def l2norm(self, name, x):
        if self._count("vector", self.vector is not None):
            with self._vector_lock:
                return self.vector.l2norm(x)
        return super().l2norm(name, x)


def load_meta(bundle_dir) -> dict:
    bundle = Path(bundle_dir)
    missing = [f for f in BUNDLE_FILES if not (bundle / f).is_file()]
    if missing:
        raise RuntimeInputError(f"{bundle}: not a board bundle, missing {', '.join(missing)} "
                                "(write one with `tatvpr export board-bundle`)")
    try:
        meta = json.loads((bundle / "meta.json").read_text())
    except ValueError as exc:
        raise RuntimeInputError(f"{bundle / 'meta.json'}: not JSON ({exc})") from None
    lacking = [k for k in META_KEYS if k not in meta]
    if lacking:
        raise RuntimeInputError(f"{bundle / 'meta.json'} lacks {', '.join(lacking)}")
    return meta


class PlaceRecognizer:
    """Image -> descriptor -> nearest database places, every image through the same path.

    ``units``: where the trunk's integer ops run (default ``NUMPY_UNITS``); see the module docstring
    for what runs on the fabric with :class:`PynqUnits`."""

    def __init__(self, bundle_dir, units: Units | None = None) -> None:
        self.bundle = Path(bundle_dir)
        self.meta = load_meta(self.bundle)
        try:
            self.trunk = load_trunk(self.bundle / "trunk.npz")
        except IntegerModelError as exc:
            raise RuntimeInputError(str(exc)) from None
        self.head = load_head(self.bundle / "head.npz")
        self.head_q = None
        if self.meta.get("head_integer"):
            if not (self.bundle / "head_q.npz").is_file():
                raise RuntimeInputError(f"{self.bundle}: meta.json says the head is integer, head_q.npz is missing")
            try:
                self.head_q = load_head_q(self.bundle / "head_q.npz")
            except IntegerModelError as exc:
                raise RuntimeInputError(str(exc)) from None
        self.units = units or NUMPY_UNITS
        self.img_size = int(self.meta["img_size"])
        self.sparsity = float(self.meta["sparsity"])
        self.final_norm = bool(self.meta["final_norm"])
        if self.final_norm and self.trunk.norm is None:
            raise RuntimeInputError(f"{self.bundle}: meta.json says the head uses the final norm, trunk.npz has none")
        db = self.bundle / "database.npy"
        self.database = np.load(db, allow_pickle=False) if db.is_file() else None

    def tokens(self, image) -> np.ndarray:
        """Float64 tokens the head consumes (the trunk's int output dequantised)."""
        img_q = self.trunk.quantize_image(preprocess(image, self.img_size))
        u = self.units
        x = (u.trunk_tokens(self.trunk, img_q, self.sparsity) if hasattr(u, "trunk_tokens")
             else self.trunk.tokens(img_q, self.sparsity, u))
        if self.final_norm:
            return self.units.layernorm("norm", self.trunk.norm, x).astype(np.float64) * self.trunk.norm_scale
        return x.astype(np.float64) * self.trunk.res_scale

    def describe_q(self, image) -> np.ndarray:
        """One image -> the integer model's descriptor: int16 in Q15 (SALAD: float64 from its host part)."""
        if self.head_q is None:
            raise RuntimeInputError(f"{self.bundle}: no integer head (head_q.npz); the {self.meta.get('head')} "
                                    "head runs in float")
        img_q = self.trunk.quantize_image(preprocess(image, self.img_size))
        return query_descriptor(self.trunk, self.head_q, img_q, self.sparsity, self.units)

    def describe(self, image) -> np.ndarray:
        """One image -> L2-normalised float64 descriptor [descriptor_dim]."""
        if self.head_q is not None:
            return descriptor_float(self.describe_q(image))
        return head_descriptor(self.tokens(image), self.head)

    def build_database(self, images) -> np.ndarray:
        """Descriptors [N, D] of the database images, by the path the queries take."""
        rows = [self.describe(img) for img in images]
        if not rows:
            raise RuntimeInputError("build_database needs at least one image")
        self.database = np.stack(rows)
        return self.database

    def save_database(self, path=None) -> Path:
        if self.database is None:
            raise RuntimeInputError("no database to save: call build_database first")
        path = Path(path) if path is not None else self.bundle / "database.npy"
        np.save(path, self.database)
        return path

    def query(self, image, top_n_: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Indices (best first) and inner products of the ``top_n_`` nearest database rows."""
        if self.database is None:
            raise RuntimeInputError(f"{self.bundle}: no database.npy; build one with build_database(images)")
        if top_n_ < 1:
            raise RuntimeInputError(f"top_n must be >= 1, got {top_n_}")
        idx, scores = top_n(self.database, self.describe(image)[None], top_n_)
        return idx[0], scores[0]
