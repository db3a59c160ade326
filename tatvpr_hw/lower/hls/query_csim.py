"""A whole query through the HLS kernels in sequence, driven as the board drives them.

Every op runs in the C simulation of its unit: LayerNorm, softmax, GELU / ReLU tables, residual
adds, the head's int16 -> int8 requantisation and the descriptor's L2 normalisation on the vector
unit (``tatvpr_vector.cpp``), the patch embedding, attention and the head's linears and attention
on the int8 unit (``tatvpr_int8.cpp``; with ``attention="fused"`` a block's attention is one call of the
int8 IP's fused attention, ``tatvpr_attention.cpp``: an op ``<block>.attn`` on the array and an op
``<block>.attn.softmax_lanes`` on its softmax lanes, unit ``int8_softmax``), the ternary linears on the ternary IP
(``tatvpr_gemm.cpp``) reading the act stream the vector unit makes (``tatvpr_topk_schedule``: the
top-k and bank scheduling of the linear's input, an op ``<name>.topk`` of its own). The position-embedding
add stays on the host, and SALAD's Sinkhorn part is host work in float on every backend (the one
op ``QueryCsim.numpy_ops`` lists, for SALAD only).
The result must equal the integer model (``tatvpr_pynq.integer``) bit for bit, and each op's
counted cycles are returned per unit, to compare with the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.hls.csim import KernelParams, build_csim, run_csim
from tatvpr_hw.lower.hls.paths import driver_package
from tatvpr_hw.lower.hls.unit_csim import (add_call, attention_call, build_unit_csim, chain_call, gemm_call, gelu_call,
                                         l2norm_call,
                                         layernorm_call, requant_call, run_unit_ops, softmax_call, topk_call,
                                         topk_keep)


@dataclass
class QueryCsim:
    tokens: np.ndarray                    # int16 [T, D]: the trunk's output
    ops: list[dict] = field(default_factory=list)   # {name, unit, csim, cycles, shape...} in execution order
    descriptor: np.ndarray | None = None  # int16 Q15: the integer head's output (csim_query)

    def unit_cycles(self) -> dict[str, int]:
        """Counted cycles per unit of the ops that ran in C simulation."""
        out: dict[str, int] = {}
        for op in self.ops:
            if op.get("csim", True):
                out[op["unit"]] = out.get(op["unit"], 0) + int(op["cycles"])
        return out

    def numpy_ops(self) -> list[str]:
        """Ops that did not run in C simulation (SALAD's host part, in numpy on every backend)."""
        return [op["name"] for op in self.ops if not op.get("csim", True)]


def csim_units(work_dir: str | Path, *, pe: int, simd: int, banks: int | None, ports: int, fmt: str, lanes: int,
               rows: int, cols: int, kmax: int, mmax: int, attention: str = "split", att_rows: int = 32):
    """A ``tatvpr_pynq.integer.Units`` whose every op runs in the C simulation of its unit and is
    recorded in ``.ops`` ({name, unit, cycles, ...}). ``attention``: ``split`` (QK^T, softmax, P.V as
    three ops) or ``fused`` (the int8 IP's fused attention, blocks of ``att_rows`` query rows)."""
    if attention not in ("split", "fused"):
        raise UserError(f"attention = {attention!r}; allowed: split, fused")
    driver_package()
    from tatvpr_pynq.formats import layer_from_stream, unschedule_activations
    from tatvpr_pynq.integer import Units, op_shape

    work = Path(work_dir)
    build = work / "build"
    gemm_exe = build_csim(KernelParams(pe=pe, simd=simd, banks=banks, ports=ports, kmax=kmax, mmax=mmax), build)
    unit_exe = build_unit_csim(build, lanes, rows, cols, simd=simd, banks=banks or simd, kmax=kmax, att_rows=att_rows,
                               max_tokens=max(mmax, 1))

    class CsimUnits(Units):
        def __init__(self) -> None:
            self.ops: list[dict] = []

        def _sub(self) -> Path:
            return work / f"op{len(self.ops):04d}"

        def _unit(self, name, shape, call):
            [r] = run_unit_ops(unit_exe, [call], self._sub())
            self.ops.append({"name": name, **shape, "csim": True, "cycles": r.cycles, "row_ops": r.row_ops})
            return r.out

        def layernorm(self, name, ln, x):
            return self._unit(name, op_shape("layernorm", x), layernorm_call(ln, x))

        def softmax(self, name, scores, mult, shift):
            return self._unit(name, op_shape("softmax", scores), softmax_call(scores, mult, shift))

        def gelu(self, name, table, x):
            return self._unit(name, op_shape("gelu", x), gelu_call(table, x))

        def add(self, name, x, y, mult, shift):
            return self._unit(name, op_shape("add", x), add_call(x, y, mult, shift))

        def gemm(self, name, a, b, bias=None, *, out="int32", mult=0, shift=0):
            squeeze = np.asarray(a).ndim == 2
            r = self._unit(name, op_shape("gemm", a, b), gemm_call(a, b, bias, out=out, mult=mult, shift=shift))
            return r[0] if squeeze else r

        def requant(self, name, x, mult, shift):
            return self._unit(name, op_shape("requant", x), requant_call(x, mult, shift))

        def attention(self, name, qkv, heads, sm_mult, sm_shift, av_mult, av_shift):
            if attention == "split":
                return super().attention(name, qkv, heads, sm_mult, sm_shift, av_mult, av_shift)
            qkv = np.asarray(qkv, np.int8)
            [r] = run_unit_ops(unit_exe, [attention_call(qkv, heads, sm_mult, sm_shift, av_mult, av_shift)],
                               self._sub())
            t, dh = qkv.shape[0], qkv.shape[1] // (3 * heads)
            shape = {"kind": "attention", "batch": heads, "m": t, "k": dh}
            self.ops.append({"name": name, "unit": "int8", **shape, "csim": True, "cycles": r.int8_cycles})
            self.ops.append({"name": name + ".softmax_lanes", "unit": "int8_softmax", **shape, "csim": True,
                             "cycles": r.cycles, "row_ops": r.row_ops})
            return r.out

        def l2norm(self, name, x):
            return self._unit(name, op_shape("l2norm", x), l2norm_call(np.asarray(x).reshape(-1)))

        def host(self, name, fn, *arrays):  # SALAD's Sinkhorn: host work on every backend
            self.ops.append({"name": name, "unit": "host", "csim": False, "cycles": 0})
            return super().host(name, fn, *arrays)

        _stream = None  # (name, input copy, sparsity, stream): the last stream made

        def topk_schedule(self, name, x, sparsity, simd_, banks_=None):
            """The vector unit's top-k + bank scheduling (C simulation), an op ``<name>.topk``; the same
            input again (qkv, issued once per head with the whole input by the pipelined issue) reuses
            the stream made (same op, same input), as ``tatvpr_pynq.runtime.PynqUnits`` does: made once, as the
            simulator charges."""
            x = np.asarray(x, np.int8)
            c = self._stream
            if (c is not None and c[0] == name and c[2] == sparsity and c[1].shape == x.shape
                    and np.array_equal(c[1], x)):
                return c[3]
            out = self._unit(name + ".topk", op_shape("topk", x), topk_call(x, topk_keep(x.shape[1], sparsity)))
            self._stream = (name, x.copy(), sparsity, out)
            return out

        def vector_chain(self, name, *, x16=None, x8=None, add=None, ln=None, gelu_table=None, sparsity=None,
                         simd=None, banks=None):
            """schedule.vector_chain: fused: one call of the vector IP's chain op (``tatvpr_chain``), an op
            ``<name>.chain`` (kind ``chain``, its ``steps``); with ``sparsity`` the act stream the next ternary
            linear reads (a ``ChainStream``)."""
            from tatvpr_pynq.pipeline import ChainStream

            ref = np.asarray(x8 if gelu_table is not None else x16)
            t_, k = ref.shape
            keep = None if sparsity is None else topk_keep(k, sparsity)
            [r] = run_unit_ops(unit_exe, [chain_call(x16=x16, x8=x8, add=add, ln=ln, gelu_table=gelu_table, keep=keep,
                                                     write_res=add is not None)], self._sub())
            steps = (["add"] if add is not None else []) + (["layernorm"] if ln is not None else ["gelu"])
            self.ops.append({"name": name + ".chain", "unit": "vector", "kind": "chain",
                             "steps": steps + (["topk"] if keep is not None else []), "m": t_, "k": k, "csim": True,
                             "cycles": r.cycles, "row_ops": r.row_ops})
            res, out = r.out
            return res, (out if keep is None else ChainStream(out[0], out[1], k))

        def ternary(self, name, lin, x, sparsity):
            if hasattr(x, "chunks") and hasattr(x, "pairs"):  # a chain's act stream (vector_chain: fused)
                k, chunks, pairs = x.k, x.chunks, x.pairs
            else:
                k = np.asarray(x).shape[1]
                chunks, pairs = self.topk_schedule(name, x, sparsity, simd, banks)  # the ternary IP reads its stream
            layer = layer_from_stream(chunks, pairs, k, lin.codes, lin.bias, lin.mult, lin.shift, pe=pe, simd=simd,
                                      banks=banks, ports=ports, fmt=fmt)
            [r] = run_csim(gemm_exe, [layer], self._sub(), names=[name.replace(".", "_")])
            if r.status != 0:
                raise UserError(f"{name}: the ternary IP's C simulation returned status {r.status}")
            xs = unschedule_activations(chunks, pairs, k, simd, banks)  # what the IP received
            self.ops.append({"name": name, **op_shape("ternary", xs, lin), "csim": True,
                             "cycles": int(np.asarray(r.chunk_cycles).sum()),
                             "folds": len(r.chunk_cycles), "act_mask": xs != 0, "codes": lin.codes})
            return r.out

    return CsimUnits()


def _trunk_units(trunk, work_dir, *, simd: int, **kw):  # kw: csim_units' (attention, att_rows included)
    """C-simulated units whose ternary IP is compiled for ``trunk``'s widest layer and token count."""
    widest = max([trunk.pos.shape[1]] + [b.fc1.codes.shape[0] for b in trunk.blocks])
    tokens = trunk.prefix.shape[0] + trunk.pos.shape[0]
    return csim_units(work_dir, simd=simd, kmax=max(-(-widest // simd) * simd, simd), mmax=max(tokens, 1), **kw)


def csim_trunk(trunk, img_q: np.ndarray, sparsity: float, work_dir: str | Path, *, pe: int = 8, simd: int = 8,
               banks: int | None = None, ports: int = 1, fmt: str = "ternary2", lanes: int = 16, rows: int = 16,
               cols: int = 16, attention: str = "split", att_rows: int = 32,
               vector_chain: str = "split") -> QueryCsim:
    """int8 image ``img_q [3, H, W]`` through ``trunk`` (a ``TrunkQ``) on the C-simulated units
    (``attention``: ``split`` or ``fused``, :func:`csim_units`). ``vector_chain: fused``: issued as the
    board's pipelined host issues it with the chains on (``tatvpr_pynq.pipeline.run_trunk(chain=True)``,
    one tile of every token, in sequence): each ``[add ->] LayerNorm | GELU -> top-k`` one chain op.

    Ternary-IP cycles are the counted CHUNK iterations summed over folds (``C_f``, conflicts
    included); int8- and vector-unit cycles are the counted loop iterations (no pipeline depth).
    """
    units = _trunk_units(trunk, work_dir, pe=pe, simd=simd, banks=banks, ports=ports, fmt=fmt, lanes=lanes,
                         rows=rows, cols=cols, attention=attention, att_rows=att_rows)
    if vector_chain not in ("split", "fused"):
        raise UserError(f"vector_chain = {vector_chain!r}; allowed: split, fused")
    if vector_chain == "fused":
        from tatvpr_pynq.pipeline import run_trunk

        tokens = trunk.prefix.shape[0] + trunk.pos.shape[0]
        x, _ = run_trunk(trunk, img_q, sparsity, units, tile_tokens=tokens, fused=attention == "fused", chain=True)
    else:
        x = trunk.tokens(img_q, sparsity, units)
    return QueryCsim(tokens=x, ops=units.ops)


def csim_query(trunk, head, img_q: np.ndarray, sparsity: float, work_dir: str | Path, *, pe: int = 8,
               simd: int = 8, banks: int | None = None, ports: int = 1, fmt: str = "ternary2", lanes: int = 16,
               rows: int = 16, cols: int = 16, attention: str = "split", att_rows: int = 32) -> QueryCsim:
    """The whole query (trunk, final LayerNorm for heads that use it, the integer ``head``, the Q15
    descriptor) on the C-simulated units; ``tokens`` is the trunk's output, ``descriptor`` the head's."""
    units = _trunk_units(trunk, work_dir, pe=pe, simd=simd, banks=banks, ports=ports, fmt=fmt, lanes=lanes,
                         rows=rows, cols=cols, attention=attention, att_rows=att_rows)
    x = trunk.tokens(img_q, sparsity, units)
    y = units.layernorm("norm", trunk.norm, x) if head.uses_final_norm else x
    return QueryCsim(tokens=x, ops=units.ops, descriptor=head(y, units))


def sim_unit_cycles(res: QueryCsim, trunk, arch) -> dict[str, int]:
    """The simulator's cycles (``sim.engine``, without pipeline depths) of the ops ``res`` ran:
    ternary C_f on the same operands and gather, int8- and vector-unit formulas on the shapes; a fused
    attention (``arch`` ``schedule.attention_rows``): ``sim.schedule.FusedAttention.unit_cycles``, the array's
    under ``int8``, the softmax lanes' under ``int8_softmax``."""
    from sim.engine import bank_counts, dense_cycles, fold_compute_cycles, vector_cycles, vector_topk_cycles
    from sim.schedule import FusedAttention

    c = arch.spec.compute
    v, u = arch.spec.vector_unit, arch.spec.int8_unit
    t, d = res.tokens.shape
    h = trunk.blocks[0].num_heads if trunk.blocks else 1
    hidden = trunk.blocks[0].fc1.codes.shape[0] if trunk.blocks else 0
    n_patches = trunk.pos.shape[0]
    per_kind = {
        "norm1": vector_cycles(t * d, "layernorm", arch, d), "norm2": vector_cycles(t * d, "layernorm", arch, d),
        "attn.softmax": vector_cycles(h * t * t, "softmax", arch, t), "add1": vector_cycles(t * d, "add", arch),
        "add2": vector_cycles(t * d, "add", arch), "gelu": vector_cycles(t * hidden, "gelu", arch),
        "attn.qk": dense_cycles(t, d // h, t, h, u.rows, u.cols, u.pipeline_cycles),
        "attn.av": dense_cycles(t, t, d // h, h, u.rows, u.cols, u.pipeline_cycles),
        "patch_embed": dense_cycles(n_patches, trunk.embed_w.shape[1], d, 1, u.rows, u.cols, u.pipeline_cycles),
    }
    out: dict[str, int] = {}
    for i, op in enumerate(res.ops):
        if not op.get("csim", True):
            continue
        if op.get("kind") == "chain":  # schedule.vector_chain: fused: its steps' formulas (the passes still run)
            m, k = op["m"], op["k"]
            cyc = sum(vector_cycles(m * k, st, arch, k if st == "layernorm" else 0) - v.pipeline_cycles
                      for st in op["steps"] if st != "topk")
            if "topk" in op["steps"]:  # the next op is the ternary linear reading the chain's stream
                mask = res.ops[i + 1]["act_mask"]
                b = c.banks or c.simd
                chunks = int(np.maximum(1, -(-bank_counts(mask, b).max(axis=1) // (c.simd // b))).sum())
                cyc += vector_topk_cycles(m, k, chunks, arch) - v.pipeline_cycles
        elif op.get("kind") == "attention":  # the int8 IP's fused attention (two records: array, softmax lanes)
            fc = FusedAttention.of(arch).unit_cycles(op["batch"], op["m"], op["k"])
            cyc = (fc["int8_unit"] - 2 * u.pipeline_cycles if op["unit"] == "int8"
                   else fc["softmax"] - v.pipeline_cycles)
        elif op.get("kind") == "topk":  # the next op is its ternary linear: its chunks from the mask it ran on
            mask = res.ops[i + 1]["act_mask"]
            b = c.banks or c.simd
            chunks = int(np.maximum(1, -(-bank_counts(mask, b).max(axis=1) // (c.simd // b))).sum())
            cyc = vector_topk_cycles(mask.shape[0], mask.shape[1], chunks, arch) - v.pipeline_cycles
        elif op["name"] == "norm" or op["name"].startswith("head."):
            # the final LayerNorm and the head: the simulator's formulas on the op's shape (the shapes
            # equal the traced ones: tests/hls/test_integer_model.py); a ReLU table is traced as "other"
            if op["unit"] == "int8":
                cyc = dense_cycles(op["m"], op["k"], op["n"], op["batch"], u.rows, u.cols, 0)
            else:
                kind = {"lut": "other"}.get(op["kind"], op["kind"])
                cyc = vector_cycles(op["elements"], kind, arch, op["row"]) - v.pipeline_cycles
        elif op["unit"] == "ternary":
            cyc = int(np.asarray(fold_compute_cycles(op["act_mask"], op["codes"], c.pe, c.simd, "act",
                                                     banks=c.banks, ports=c.ports)).sum())
        else:
            key = op["name"].split(".", 2)[-1] if op["name"].startswith("blocks.") else op["name"]
            pipe = v.pipeline_cycles if op["unit"] == "vector" else u.pipeline_cycles
            cyc = per_kind[key] - pipe
        out[op["unit"]] = out.get(op["unit"], 0) + cyc
    return out


QUERY_SPARSITY = 0.4


def flow_step_query(ctx) -> dict:
    """Flow step: the trained student's first evaluation query through the integer model and
    through the C-simulated HLS units (vector, int8, ternary IP) in sequence, the head included
    (BoQ, MixVPR, CLS; SALAD's Sinkhorn part runs in float on the host); ``query.json``."""
    import json
    import time

    import torch

    from sim.arch import load_arch
    from tatvpr_hw.data.vpr import VPREvalSet, eval_root
    from tatvpr_hw.evaluation import _student_checkpoint_from, load_models
    from tatvpr_hw.integer import export_head_q, export_trunk, head_is_integer, integer_descriptors, l2_normalize
    from tatvpr_hw.io import write_json

    driver_package()
    from tatvpr_pynq.integer import descriptor_float, query_descriptor

    t0 = time.perf_counter()
    cfg = ctx.cfg
    ck = _student_checkpoint_from(ctx)
    _, student = load_models(cfg, ck)
    if student is None:
        raise UserError(f"{ck} is a teacher checkpoint; the query C simulation needs the ternary student")
    ev = VPREvalSet(eval_root(cfg.data), cfg.model.student_img_size, cfg.data.positive_radius_m)
    calib = torch.stack([ev.database[i][0] for i in range(min(16, len(ev.database)))])
    image = ev.queries[0][0]
    trunk = export_trunk(student, calib, sparsity=QUERY_SPARSITY)
    head = export_head_q(student, trunk, calib, sparsity=QUERY_SPARSITY) if head_is_integer(student) else None
    img_q = trunk.quantize_image(image.double().numpy())
    arch = load_arch("kv260")
    c = arch.spec.compute
    kw = dict(pe=c.pe, simd=c.simd, banks=c.banks, ports=c.ports, lanes=arch.spec.vector_unit.lanes,
              rows=arch.spec.int8_unit.rows, cols=arch.spec.int8_unit.cols)
    work = Path(ctx.run_dir) / "query_csim"
    res = (csim_trunk(trunk, img_q, QUERY_SPARSITY, work, **kw) if head is None
           else csim_query(trunk, head, img_q, QUERY_SPARSITY, work, **kw))
    ref = trunk.tokens(img_q, QUERY_SPARSITY)
    bit_exact = bool(np.array_equal(res.tokens, ref))
    if head is not None:
        d_ref = query_descriptor(trunk, head, img_q, QUERY_SPARSITY)
        desc_exact = bool(np.array_equal(res.descriptor, d_ref))
        bit_exact = bit_exact and desc_exact
        d_int = descriptor_float(d_ref)
    else:
        desc_exact = None
        d_int = integer_descriptors(student, trunk, image[None], QUERY_SPARSITY)[0]
    csim_cycles = res.unit_cycles()
    sim_cycles = sim_unit_cycles(res, trunk, arch)
    with torch.no_grad():
        from brevitas_models.sparsity import sparsity_context

        with sparsity_context(student, QUERY_SPARSITY, "token"):
            d_float = l2_normalize(student(image[None])[0].double().numpy())
    summary = {
        "checkpoint": str(ck), "image": ev.queries.paths[0].name, "sparsity": QUERY_SPARSITY, "granularity": "token",
        "arch": arch.name, "pe": c.pe, "simd": c.simd, "banks": c.banks, "ports": c.ports,
        "head": cfg.model.head.name, "head_integer": head is not None,
        "tokens": list(res.tokens.shape), "ops": len(res.ops), "bit_exact": bit_exact,
        "descriptor_bit_exact": desc_exact,
        "head_ops": sum(1 for op in res.ops if op["name"].startswith("head.")),
        "numpy_ops": res.numpy_ops(),
        "max_abs_token_diff": int(np.abs(res.tokens.astype(np.int64) - ref).max()),
        "units": {u: {"csim_cycles": int(csim_cycles.get(u, 0)), "sim_cycles": int(sim_cycles.get(u, 0)),
                      "match": int(csim_cycles.get(u, 0)) == int(sim_cycles.get(u, 0))}
                  for u in ("ternary", "int8", "vector")},
        "descriptor_cosine_integer_vs_float": round(float(np.dot(d_int, d_float)), 6),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(Path(ctx.run_dir) / "query.json", summary)
    if not bit_exact or not all(u["match"] for u in summary["units"].values()):
        raise UserError("whole-query C simulation differs from the integer model or the simulator: "
                        + json.dumps({k: summary[k] for k in ("bit_exact", "descriptor_bit_exact", "units")}))
    return summary
