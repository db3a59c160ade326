"""Model-side tracer: run the ternary student on real queries and write the simulator's trace.

``tatvpr trace --config C [--checkpoint CK] --sparsity S [--images N] --out trace.npz``

For one query (batch of 1 image) the student runs once with hooks, and every operation is
recorded in execution order as a :mod:`sim.trace` op:

- each :class:`~brevitas_models.quant.SparseTernaryLinear` (block qkv/proj/fc1/fc2, and the
  patch embedding or head linears when they are ternary): ``m`` tokens, ``k``, ``n``, the
  ternary weights packed (``ternary2``), the REAL activation mask ``[m, k]`` = the int8 codes
  the layer sees after top-k are nonzero (a kept value that rounds to int8 zero is a zero),
  the int8 activation scale and the absmean weight scale(s);
- attention, per block: ``QK^T`` and ``AV`` as :class:`~sim.trace.DenseOp` with
  ``batch = heads``, the softmax (``heads * T * T`` elements);
- LayerNorms, GELU, LayerScale (``other``), the residual adds and the position-embedding add
  as :class:`~sim.trace.VectorOp`; a float patch-embedding convolution as a DenseOp
  (``m = h*w``, ``k = 3*14*14``, ``n = D``);
- the aggregation head, recorded at the ATen level (any head: BoQ, SALAD, MixVPR, CLS):
  matrix products and convolutions as DenseOps (``batch`` for batched products), fused
  attention as QK^T + softmax + AV, and element-wise work (add/sub -> ``add``, softmax,
  layer_norm, gelu; everything else, e.g. mul, div, exp, norms, pooling -> ``other``) as
  VectorOps; views and copies are not operations. The integer head's own ops where PyTorch has
  none: its int16 -> int8 requantisations (``requant``, :data:`_HEAD_REQUANTS`) and the
  descriptor's ``F.normalize`` as one ``l2norm`` op (``head.l2norm``, one row). The ops of a head
  in :data:`_HEAD_HOST` that it runs outside its submodules (SALAD's Sinkhorn, aggregation and
  normalisations) are host work (trace field ``host``), as the integer model runs them.

Inputs: the built-in benchmark's query images (``data.root/eval`` for ``source: synthetic``,
``data.eval_root`` for local data) in file order when they exist; otherwise seeded random
images, and the trace meta says so (``meta["input"]``).

``--images N``: N queries are traced one at a time (each its own trace, so each has its own
masks); N = 1 writes ``--out`` itself, N > 1 writes ``<stem>_0.npz`` .. ``<stem>_{N-1}.npz``
beside it. Without ``--checkpoint`` the student is freshly initialised and its int8 input
scales are calibrated on the traced images (``meta["calibrated"] = true``).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sim.packing import pack_ternary2
from sim.trace import VERSION, DenseOp, TernaryLinearOp, Trace, VectorOp, write_trace
from tatvpr_hw.config import Config, config_to_dict
from tatvpr_hw.errors import UserError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- the model

def build_student(cfg: Config, checkpoint: str | Path | None = None) -> tuple[nn.Module, dict]:
    """The student of ``cfg`` (A2's ``build_model``), with ``checkpoint``'s weights if given."""
    from brevitas_models.model import build_model

    model = build_model(cfg.model, student=True)
    info: dict[str, Any] = {"checkpoint": None}
    if checkpoint is not None:
        from brevitas_models.checkpoint import load_checkpoint, load_into

        sd, meta = load_checkpoint(checkpoint)
        if meta.get("role") not in (None, "student"):
            raise UserError(f"--checkpoint {checkpoint} is a {meta.get('role')} checkpoint; "
                            "tracing needs the student (stage distill, finetune or init)")
        load_into(model, sd, source=str(checkpoint))
        info = {"checkpoint": str(checkpoint), "stage": meta.get("stage"), "step": meta.get("step")}
    model.eval()
    return model, info


def query_images(cfg: Config, n: int, seed: int) -> tuple[torch.Tensor, dict]:
    """``n`` query images ``[n, 3, S, S]`` (S = student_img_size) and where they came from."""
    from tatvpr_hw.data.vpr import eval_root

    size = cfg.model.student_img_size
    root = eval_root(cfg.data)
    qdir = root / "images" / "test" / "queries"
    if qdir.is_dir():
        from tatvpr_hw.data.vpr import VPREvalSet

        queries = VPREvalSet(root, size, cfg.data.positive_radius_m).queries
        if len(queries) < n:
            raise UserError(f"--images {n}: the benchmark at {root} has only {len(queries)} queries")
        imgs = torch.stack([queries[i][0] for i in range(n)])
        names = [queries.paths[i].name for i in range(n)]
        return imgs, {"input": "benchmark queries", "data_root": str(root), "images": names}
    log.warning("no evaluation set at %s: tracing seeded random images (seed %d)", root, seed)
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(n, 3, size, size, generator=g)
    return imgs, {"input": f"seeded random images (no benchmark at {root})", "seed": seed,
                  "images": [f"random_{i}" for i in range(n)]}


# ------------------------------------------------------------------------------ recording

def _packed_weights(mod: nn.Module, cache: dict | None) -> tuple[np.ndarray, float | list[float]]:
    """``(ternary2 bytes [N, ceil(K/4)], gamma)`` of a SparseTernaryLinear (cached per module)."""
    if cache is not None and id(mod) in cache:
        return cache[id(mod)]
    w, scale = mod.ternary_weight()
    scale = scale.detach().float().cpu().reshape(-1)
    wscale: float | list[float] = float(scale[0]) if scale.numel() == 1 else [float(v) for v in scale]
    out = (pack_ternary2(w.cpu().numpy()), wscale)
    if cache is not None:
        cache[id(mod)] = out
    return out


def _ternary_op(name: str, mod: nn.Module, x: torch.Tensor, cache: dict | None = None) -> TernaryLinearOp:
    """One SparseTernaryLinear call on input ``x [.., K]`` as a trace op."""
    k = int(x.shape[-1])
    codes = mod.quantize_input(x).reshape(-1, k)  # int codes after top-k + int8 rounding
    mask = (codes != 0).cpu().numpy()
    packed, wscale = _packed_weights(mod, cache)
    n = int(packed.shape[0])
    return TernaryLinearOp(name, int(mask.shape[0]), k, n, packed,
                           np.ascontiguousarray(mask), act_scale=float(mod.input_scale()),
                           weight_scale=wscale)


def _rows(t: torch.Tensor) -> int:
    return int(math.prod(t.shape[:-1])) if t.dim() > 1 else 1


class _Recorder:
    """Forward hooks on the backbone; collects ops in execution order."""

    def __init__(self, weight_cache: dict | None = None) -> None:
        self.weight_cache = weight_cache
        self.ops: list = []
        self.handles: list = []
        self.suppress = 0  # > 0 while inside a module recorded as one op (no ATen-level records)

    def add(self, op) -> None:
        if isinstance(op, VectorOp) and op.elements < 1:
            return
        self.ops.append(op)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def hook_ternary(self, name: str, mod: nn.Module) -> None:
        def pre(m, args):
            self.suppress += 1

        def post(m, args, out):
            self.suppress -= 1
            self.add(_ternary_op(name, m, args[0], self.weight_cache))
        self.handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]

    def hook_backbone(self, backbone: nn.Module, prefix: str = "") -> None:
        from brevitas_models.quant import SparseTernaryLinear

        for name, mod in backbone.named_modules():
            full = prefix + name
            if isinstance(mod, SparseTernaryLinear):
                self.hook_ternary(full, mod)
            elif isinstance(mod, nn.LayerNorm):
                self.handles.append(mod.register_forward_hook(
                    lambda m, a, o, n=full: self.add(VectorOp(n, "layernorm", int(o.numel()), int(o.shape[-1])))))
            elif isinstance(mod, nn.GELU):
                self.handles.append(mod.register_forward_hook(
                    lambda m, a, o, n=full: self.add(VectorOp(n, "gelu", int(o.numel())))))
            elif isinstance(mod, nn.Conv2d):  # float patch embedding
                def conv(m, a, o, n=full):
                    kk = m.in_channels // m.groups * int(math.prod(m.kernel_size))
                    self.add(DenseOp(n, int(o.shape[0] * o.shape[2] * o.shape[3]), kk, m.out_channels, weights=True))
                self.handles.append(mod.register_forward_hook(conv))
            elif type(mod) is nn.Linear:  # a float linear left in the backbone
                self.handles.append(mod.register_forward_hook(
                    lambda m, a, o, n=full: self.add(DenseOp(n, _rows(a[0]), m.in_features, m.out_features,
                                                             weights=True))))
        if hasattr(backbone, "pos_drop"):
            self.handles.append(backbone.pos_drop.register_forward_hook(
                lambda m, a, o: self.add(VectorOp(prefix + "pos_embed.add", "add", int(o.numel())))))
        for i, blk in enumerate(getattr(backbone, "blocks", [])):
            p = f"{prefix}blocks.{i}."
            attn = blk.attn

            def attn_pre(m, args, p=p, attn=attn):  # fires before attn.proj: the attention core
                x = args[0]
                t, h = int(x.shape[-2]), int(attn.num_heads)
                hd = int(attn.head_dim)
                bh = int(math.prod(x.shape[:-2])) * h
                self.add(DenseOp(p + "attn.qk", t, hd, t, batch=bh))
                self.add(VectorOp(p + "attn.softmax", "softmax", bh * t * t, t))
                self.add(DenseOp(p + "attn.av", t, t, hd, batch=bh))
            # registered before the ternary hook's pre-hook? order does not matter: the ternary
            # op is recorded in the post-hook, after the attention core
            self.handles.append(attn.proj.register_forward_pre_hook(attn_pre))
            for j, ls in ((1, blk.ls1), (2, blk.ls2)):
                def res(m, a, o, p=p, j=j):
                    if hasattr(m, "gamma"):
                        self.add(VectorOp(f"{p}ls{j}", "other", int(o.numel())))
                    self.add(VectorOp(f"{p}add{j}", "add", int(o.numel())))
                self.handles.append(ls.register_forward_hook(res))


_VIEW_OPS = {
    "view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "unsqueeze", "squeeze",
    "select", "slice", "clone", "contiguous", "detach", "alias", "as_strided", "copy_", "_to_copy",
    "split", "split_with_sizes", "unbind", "cat", "stack", "flatten", "unflatten", "lift_fresh",
    "empty", "zeros", "ones", "full", "new_empty", "new_zeros", "empty_like", "zeros_like",
    "ones_like", "fill_", "zero_", "index_select", "gather", "narrow", "repeat", "_reshape_alias",
    "chunk", "dropout", "native_dropout", "scalar_tensor", "arange", "sym_size", "sym_stride", "is_same_size",
    "_local_scalar_dense", "item", "lift", "masked_fill", "masked_fill_", "where", "_has_compatible_shallow_copy_type",
}
_ADD_OPS = {"add", "add_", "sub", "sub_", "rsub"}
_KIND_OPS = {"_softmax": "softmax", "softmax": "softmax", "_log_softmax": "softmax",
             "native_layer_norm": "layernorm", "layer_norm": "layernorm", "gelu": "gelu"}


def _numel(x: Any) -> int:
    return int(x.numel()) if isinstance(x, torch.Tensor) else 0


class _HeadDispatch(TorchDispatchMode):
    """Records the head's ATen ops as trace ops (inside ``rec.suppress`` regions: nothing)."""

    def __init__(self, rec: _Recorder, names: list[str], params: set[int] = frozenset(),
                 mods: list[nn.Module] | None = None, host_head: nn.Module | None = None) -> None:
        super().__init__()
        self.rec, self.names, self.count = rec, names, 0
        self.mods = mods if mods is not None else []  # the modules entered, innermost last
        self.params = params  # storage addresses of the model's parameters: an operand there is weights
        self.prev = None      # the last op recorded
        self.host_head = host_head  # a head whose own ops (outside its submodules) run on the host
        self.skip = 0         # ATen ops still to drop: the clamp_min and div of an F.normalize recorded as l2norm

    def _is_weight(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() in self.params

    def _name(self, op: str) -> str:
        self.count += 1
        return f"{self.names[-1] if self.names else 'head'}.{op}{self.count}"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.rec.suppress:
            return out
        try:
            self._record(func.overloadpacket.__name__, args, out)
        except Exception as err:  # never let bookkeeping break the model run
            log.debug("trace: could not record %s: %s", func, err)
        return out

    def _record(self, op: str, args: tuple, out: Any) -> None:
        n = len(self.rec.ops)
        host = self.host_head is not None and bool(self.mods) and self.mods[-1] is self.host_head
        if host:
            self._record_op(op, args, out)
        elif not self._l2norm(op, args):
            self._record_op(op, args, out)
        for new in self.rec.ops[n:]:
            new.host = host
        if len(self.rec.ops) > n:
            self.prev = self.rec.ops[-1]

    def _l2norm(self, op: str, args: tuple) -> bool:
        """The descriptor's ``F.normalize`` (``linalg_vector_norm``, ``clamp_min``, ``div`` at the head's
        own level) as the vector unit's one ``l2norm`` op; True when ``op`` was consumed."""
        if self.skip and op not in _VIEW_OPS:  # F.normalize's expand_as between them is a view
            if op in ("clamp_min", "div"):
                self.skip -= 1
                return True
            self.skip = 0
        if op == "linalg_vector_norm" and len(self.mods) == 1 and args and isinstance(args[0], torch.Tensor):
            x = args[0]
            self.rec.add(VectorOp("head.l2norm", "l2norm", _numel(x), int(x.shape[-1])))
            self.skip = 2
            return True
        return False

    def _in_attention(self) -> bool:
        return bool(self.mods) and isinstance(self.mods[-1], nn.MultiheadAttention)

    def _record_op(self, op: str, args: tuple, out: Any) -> None:
        rec = self.rec
        if op in ("mm", "addmm"):
            a, b = (args[0], args[1]) if op == "mm" else (args[1], args[2])
            rec.add(DenseOp(self._name("matmul"), int(a.shape[0]), int(a.shape[1]), int(b.shape[1]),
                            weights=self._is_weight(b)))
        elif op in ("bmm", "baddbmm"):
            a, b = (args[0], args[1]) if op == "bmm" else (args[1], args[2])
            rec.add(DenseOp(self._name("bmm"), int(a.shape[1]), int(a.shape[2]), int(b.shape[2]),
                            batch=int(a.shape[0]), weights=self._is_weight(b)))
        elif op == "convolution":
            x, w = args[0], args[1]
            groups = int(args[8]) if len(args) > 8 else 1
            o = out
            m = int(o.shape[0]) * int(math.prod(o.shape[2:]))
            kk = int(math.prod(w.shape[1:]))
            rec.add(DenseOp(self._name("conv"), m, kk, int(w.shape[0]) // groups, batch=groups,
                            weights=self._is_weight(w)))
        elif op.startswith("_scaled_dot_product") or op == "scaled_dot_product_attention":
            q, k, v = args[0], args[1], args[2]
            bh = int(math.prod(q.shape[:-2]))
            lq, e, s, ev = int(q.shape[-2]), int(q.shape[-1]), int(k.shape[-2]), int(v.shape[-1])
            rec.add(DenseOp(self._name("qk"), lq, e, s, batch=bh))
            rec.add(VectorOp(self._name("softmax"), "softmax", bh * lq * s, s))
            rec.add(DenseOp(self._name("av"), lq, s, ev, batch=bh))
        elif op == "_native_multi_head_attention":
            q, k = args[0], args[1]
            e, h = int(args[3]), int(args[4])
            lq, s = int(q.shape[-2]), int(k.shape[-2])
            b = int(math.prod(q.shape[:-2])) or 1
            for nm, rows in (("q_proj", lq), ("k_proj", s), ("v_proj", s)):
                rec.add(DenseOp(self._name(nm), b * rows, e, e, weights=True))
            rec.add(DenseOp(self._name("qk"), lq, e // h, s, batch=b * h))
            rec.add(VectorOp(self._name("softmax"), "softmax", b * h * lq * s, s))
            rec.add(DenseOp(self._name("av"), lq, s, e // h, batch=b * h))
            rec.add(DenseOp(self._name("out_proj"), b * lq, e, e, weights=True))
        elif op in _VIEW_OPS:
            return
        else:
            outs = out if isinstance(out, (tuple, list)) else (out,)
            n_out = max((_numel(o) for o in outs), default=0)
            n_in = max((_numel(a) for a in args), default=0)
            if n_out == 0:
                return
            prev = self.prev
            if (op in ("add", "add_") and isinstance(prev, DenseOp) and prev.weights
                    and n_out == prev.m * prev.n * prev.batch
                    and prev.name.rsplit(".", 1)[0] == (self.names[-1] if self.names else "head")):
                return  # a linear's bias added by a separate ATen add: the int8 unit's accumulator adds it
            if op in ("mul", "mul_", "mean") and self._in_attention():
                # nn.MultiheadAttention's query scaling (folded into the softmax multiplier) and its
                # head-averaged attention weights (not used by the descriptor): no hardware op
                return
            if op in _ADD_OPS:
                rec.add(VectorOp(self._name(op.rstrip("_")), "add", n_out))
            elif op in _KIND_OPS:
                kind = _KIND_OPS[op]
                x0 = args[0] if args and isinstance(args[0], torch.Tensor) else None
                row = 0  # elements per row: the vector unit's lane groups do not span rows
                if x0 is not None and x0.dim() and kind == "softmax":
                    dim = args[1] if len(args) > 1 and isinstance(args[1], int) else -1
                    row = int(x0.shape[dim]) if dim in (-1, x0.dim() - 1) else 0
                elif x0 is not None and kind == "layernorm" and len(args) > 1:
                    row = int(math.prod(args[1]))
                rec.add(VectorOp(self._name(op.strip("_")), kind, n_out if kind != "layernorm" else _numel(args[0]),
                                 row))
            else:  # mul, div, exp, norms, reductions, pooling: elements touched
                rec.add(VectorOp(self._name(op.rstrip("_")), "other", max(n_out, n_in)))


# Requantisations the integer head performs (docs/integer.md) where PyTorch hands a float tensor on:
# (head class name, module whose input is requantised ("" = the head's own input), op name, what);
# recorded as vector-unit ``requant`` ops.
_HEAD_REQUANTS = (("BoQHead", "", "head.input", "patch tokens, int16 residual stream -> int8"),
                  ("MixVPRHead", "channel_proj", "head.mix_out", "the mixers' int16 output -> int8"))
# Heads whose own ops (outside their submodules) the integer model runs on the host in float, and why.
_HEAD_HOST = {"SALADHead": "the log-space Sinkhorn, aggregation and normalisations need a fixed-point "
                           "logsumexp the vector unit does not have (docs/integer.md, SALAD)"}


def _hook_head_names(head: nn.Module, names: list[str], rec: _Recorder,
                     mods: list[nn.Module] | None = None, n_prefix: int = 0) -> None:
    from brevitas_models.quant import SparseTernaryLinear

    mods = mods if mods is not None else []
    requants = {mod: op for cls, mod, op, _ in _HEAD_REQUANTS if type(head).__name__ == cls}
    for name, mod in head.named_modules():
        full = "head" + (f".{name}" if name else "")
        if isinstance(mod, SparseTernaryLinear):
            rec.hook_ternary(full, mod)
            continue

        def enter(m, a, n=full, rq=requants.get(name)):
            if rq and a and isinstance(a[0], torch.Tensor) and not rec.suppress:
                x = a[0]
                # the head's own input holds the prefix tokens too; only the patches are requantised
                rows = x.shape[-2] - n_prefix if rq == "head.input" else x.shape[-2]
                rec.add(VectorOp(rq, "requant", int(math.prod(x.shape[:-2])) * int(rows) * int(x.shape[-1])))
            names.append(n)
            mods.append(m)

        def leave(m, a, o):  # a forward hook must return None (a value would replace the output)
            if names:
                names.pop()
            if mods:
                mods.pop()
        rec.handles += [mod.register_forward_pre_hook(enter), mod.register_forward_hook(leave)]


@torch.no_grad()
def trace_query(model: nn.Module, image: torch.Tensor, meta: dict | None = None,
                weight_cache: dict | None = None) -> Trace:
    """The trace of one query ``image [3, H, W]`` (or ``[1, 3, H, W]``) through ``model``.

    ``weight_cache`` (a dict kept by the caller) reuses packed weights across calls on the
    same, unchanged model (e.g. several sparsities).
    """
    x = image if image.dim() == 4 else image.unsqueeze(0)
    if x.shape[0] != 1:
        raise UserError(f"trace_query takes one image, got a batch of {x.shape[0]}")
    rec = _Recorder(weight_cache)
    names: list[str] = []
    try:
        rec.hook_backbone(model.backbone, "backbone.")
        mods: list[nn.Module] = []
        _hook_head_names(model.head, names, rec, mods, int(getattr(model.backbone, "num_prefix_tokens", 1)))
        tokens = model.forward_features(x)
        grid = model.grid_hw((int(x.shape[-2]), int(x.shape[-1])))
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        host_head = model.head if type(model.head).__name__ in _HEAD_HOST else None
        with _HeadDispatch(rec, names, params, mods, host_head):
            desc = model.forward_head(tokens, grid)
    finally:
        rec.close()
    if not rec.ops:
        raise UserError("tracing recorded no operations: is this a VPRModel?")
    tern = [op for op in rec.ops if isinstance(op, TernaryLinearOp)]
    kept = sum(int(op.act_mask.sum()) for op in tern)
    total = sum(op.m * op.k for op in tern)
    bb = model.backbone
    info = {"format_note": "one query, batch 1; ops in execution order", "source": "tatvpr trace",
            "tokens": int(tokens.shape[1]), "dim": int(bb.embed_dim), "depth": len(getattr(bb, "blocks", [])),
            "heads": int(bb.blocks[0].attn.num_heads) if len(getattr(bb, "blocks", [])) else None,
            "img_size": int(x.shape[-1]), "descriptor_dim": int(desc.shape[-1]),
            "ternary_layers": len(tern), "act_density": kept / total if total else None}
    return Trace(VERSION, {**info, **(meta or {})}, rec.ops)


# ------------------------------------------------------------------------------- commands

class _Session:
    """A student and its query images, traced at several sparsities."""

    def __init__(self, cfg: Config, checkpoint: str | Path | None, images: int, seed: int) -> None:
        from brevitas_models.sparsity import check_sparsity  # noqa: F401  (validates later)

        if images < 1:
            raise UserError(f"--images must be >= 1, got {images}")
        torch.manual_seed(seed)
        self.cfg, self.seed = cfg, seed
        self.model, self.ckpt = build_student(cfg, checkpoint)
        self.images, self.src = query_images(cfg, images, seed)
        self.weight_cache: dict = {}

    def trace(self, sparsity: float, index: int) -> Trace:
        from brevitas_models.quant import calibrate_input_scales
        from brevitas_models.sparsity import check_sparsity, set_sparsity

        s = check_sparsity(sparsity)
        set_sparsity(self.model, s)
        calibrated = False
        if self.ckpt["checkpoint"] is None:  # untrained: int8 input scales from these images
            calibrate_input_scales(self.model, [self.images])
            calibrated = True
        mc = self.cfg.model
        meta = {"model": mc.backbone, "head": mc.head.name, "config": self.cfg.name,
                "sparsity": s, "granularity": mc.sparsity.granularity, "seed": self.seed,
                "calibrated": calibrated, **self.ckpt,
                "input": self.src["input"], "image": self.src["images"][index], "image_index": index}
        if "data_root" in self.src:
            meta["data_root"] = self.src["data_root"]
        return trace_query(self.model, self.images[index], meta, self.weight_cache)


def output_paths(out: str | Path, images: int) -> list[Path]:
    """``[out]`` for one image, else ``<stem>_0.npz`` .. ``<stem>_{N-1}.npz`` beside ``out``."""
    out = Path(out)
    if images == 1:
        return [out]
    suffix = out.suffix or ".npz"
    return [out.with_name(f"{out.stem}_{i}{suffix}") for i in range(images)]


def trace_model(cfg: Config, *, checkpoint: str | Path | None = None, sparsity: float,
                images: int = 1, out: str | Path, seed: int = 0) -> list[Path]:
    """``tatvpr trace``: trace ``images`` queries at ``sparsity``; return the written paths."""
    from tqdm import tqdm

    from brevitas_models.sparsity import check_sparsity

    check_sparsity(sparsity)  # before building anything
    sess = _Session(cfg, checkpoint, images, seed)
    paths = output_paths(out, images)
    for i, p in enumerate(tqdm(paths, desc="trace", unit="query", disable=len(paths) < 2)):
        write_trace(p, sess.trace(sparsity, i))
    return paths


def trace_demo(cfg: Config, checkpoint: str | Path | None, sparsities: Iterable[float],
               out_dir: str | Path, seed: int = 0) -> dict[float, Path]:
    """One trace (first query) per sparsity into ``out_dir/trace_s<s>.npz``; for ``make demo``."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    sess = _Session(cfg, checkpoint, 1, seed)
    paths: dict[float, Path] = {}
    for s in tqdm(list(sparsities), desc="trace", unit="sparsity"):
        paths[float(s)] = write_trace(out_dir / f"trace_s{float(s):g}.npz", sess.trace(float(s), 0))
    log.info("traced %d sparsities in %.1f s", len(paths), time.perf_counter() - t0)
    return paths


def dse_demo(traces: dict[float, Path] | Sequence[Path], out_dir: str | Path, *,
             space: str | Path | None = None, workers: int = 2) -> dict:
    """A small sweep (``sim/sweeps/kv260_small.yaml``) over the demo's traces; for ``make demo``.

    Returns ``{"table": results.csv path, "best": best point dict, "plot": pareto.png, ...}``.
    """
    from sim import dse as sdse

    paths = list(traces.values()) if isinstance(traces, dict) else list(traces)
    spec = sdse.load_sweep(space or sdse.SIM_DIR / "sweeps" / "kv260_small.yaml")
    res = sdse.run_sweep(spec, paths, out_dir, workers=workers)
    return {"out_dir": Path(out_dir), "table": Path(out_dir) / "results.csv",
            "parquet": Path(out_dir) / "results.parquet", "plot": res.files.get("plot"),
            "best": res.best, "best_point": res.files.get("best"), "points": len(res.table),
            "seconds": res.seconds}
