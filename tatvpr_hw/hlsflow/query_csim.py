"""A whole query's trunk through the HLS kernels in sequence, driven as the board drives them.

Every op runs in the C simulation of its unit: LayerNorm, softmax, GELU and residual adds on
the vector unit (``tatvpr_vector.cpp``), the patch embedding and attention on the int8 unit
(``tatvpr_int8.cpp``), the ternary linears on the ternary IP (``tatvpr_gemm.cpp``, after the
top-k and bank scheduling the host does). The position-embedding add and the head stay on the
host. The result must equal the integer model (``tatvpr_pynq.integer``) bit for bit, and each
op's counted cycles are returned per unit, to compare with the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.hlsflow.csim import KernelParams, build_csim, run_csim
from tatvpr_hw.hlsflow.formats import prepare_layer
from tatvpr_hw.hlsflow.paths import driver_package
from tatvpr_hw.hlsflow.unit_csim import (add_call, build_unit_csim, gemm_call, gelu_call, layernorm_call,
                                         run_unit_ops, softmax_call)


@dataclass
class QueryCsim:
    tokens: np.ndarray                    # int16 [T, D]: the trunk's output
    ops: list[dict] = field(default_factory=list)   # {name, unit, cycles, ...} in execution order

    def unit_cycles(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            out[op["unit"]] = out.get(op["unit"], 0) + int(op["cycles"])
        return out


def csim_trunk(trunk, img_q: np.ndarray, sparsity: float, work_dir: str | Path, *, pe: int = 8, simd: int = 8,
               banks: int | None = None, ports: int = 1, fmt: str = "ternary2", lanes: int = 16, rows: int = 16,
               cols: int = 16) -> QueryCsim:
    """int8 image ``img_q [3, H, W]`` through ``trunk`` (a ``TrunkQ``) on the C-simulated units.

    Ternary-IP cycles are the counted CHUNK iterations summed over folds (``C_f``, conflicts
    included); int8- and vector-unit cycles are the counted loop iterations (no pipeline depth).
    """
    driver_package()
    from tatvpr_pynq.integer import RES_MAX, RES_MIN, sat, topk_int

    work = Path(work_dir)
    build = work / "build"
    d_model = trunk.pos.shape[1]
    widest = max([d_model] + [b.fc1.codes.shape[0] for b in trunk.blocks])
    tokens = trunk.prefix.shape[0] + trunk.pos.shape[0]
    kmax = -(-widest // simd) * simd
    gemm_exe = build_csim(KernelParams(pe=pe, simd=simd, banks=banks, ports=ports, kmax=max(kmax, simd),
                                       mmax=max(tokens, 1)), build)
    unit_exe = build_unit_csim(build, lanes, rows, cols)
    res = QueryCsim(tokens=np.zeros(0))
    counter = [0]

    def sub():
        counter[0] += 1
        return work / f"op{counter[0]:04d}"

    def unit(name, unit_name, call):
        [r] = run_unit_ops(unit_exe, [call], sub())
        res.ops.append({"name": name, "unit": unit_name, "cycles": r.element_cycles, "row_ops": r.row_ops})
        return r.out

    def ternary(name, lin, x):
        xs = topk_int(x, sparsity)
        layer = prepare_layer(xs, lin.codes, lin.bias, lin.mult, lin.shift, pe=pe, simd=simd, banks=banks,
                              ports=ports, fmt=fmt, with_expected=False)
        [r] = run_csim(gemm_exe, [layer], sub(), names=[name.replace(".", "_")])
        if r.status != 0:
            raise UserError(f"{name}: the ternary IP's C simulation returned status {r.status}")
        res.ops.append({"name": name, "unit": "ternary", "cycles": int(np.asarray(r.chunk_cycles).sum()),
                        "folds": len(r.chunk_cycles), "act_mask": xs != 0, "codes": lin.codes})
        return r.out

    pt = trunk.patches(img_q)
    e = unit("patch_embed", "int8", gemm_call(pt, trunk.embed_w.T, trunk.embed_bias, out="int16",
                                               mult=trunk.embed_mult, shift=trunk.embed_shift))[0]
    x = sat(np.concatenate([trunk.prefix.astype(np.int64), e.astype(np.int64) + trunk.pos]), RES_MIN, RES_MAX,
            np.int16)  # position embedding: host
    t, d = x.shape
    for i, blk in enumerate(trunk.blocks):
        p = f"blocks.{i}."
        h = blk.num_heads
        qkv = ternary(p + "qkv", blk.qkv, unit(p + "norm1", "vector", layernorm_call(blk.ln1, x)))
        qkv = qkv.reshape(t, 3, h, d // h)
        q, k, v = (qkv[:, j].transpose(1, 0, 2) for j in range(3))
        scores = unit(p + "attn.qk", "int8", gemm_call(q, k.transpose(0, 2, 1)))
        probs = unit(p + "attn.softmax", "vector", softmax_call(scores.reshape(h * t, t), blk.softmax_mult,
                                                                   blk.softmax_shift)).reshape(h, t, t)
        a = unit(p + "attn.av", "int8", gemm_call(probs, v, out="int8", mult=blk.av_mult, shift=blk.av_shift))
        y = ternary(p + "proj", blk.proj, a.transpose(1, 0, 2).reshape(t, d))
        x = unit(p + "add1", "vector", add_call(x, y, blk.res1_mult, blk.res1_shift))
        y = ternary(p + "fc1", blk.fc1, unit(p + "norm2", "vector", layernorm_call(blk.ln2, x)))
        y = unit(p + "gelu", "vector", gelu_call(blk.gelu, y))
        y = ternary(p + "fc2", blk.fc2, y)
        x = unit(p + "add2", "vector", add_call(x, y, blk.res2_mult, blk.res2_shift))
    res.tokens = x
    return res


def sim_unit_cycles(res: QueryCsim, trunk, arch) -> dict[str, int]:
    """The simulator's cycles (``sim.engine``, without pipeline depths) of the ops ``res`` ran:
    ternary C_f on the same operands and gather, int8- and vector-unit formulas on the shapes."""
    from sim.engine import dense_cycles, fold_compute_cycles, vector_cycles

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
    for op in res.ops:
        if op["unit"] == "ternary":
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
    through the C-simulated HLS units (vector, int8, ternary IP) in sequence; ``query.json``."""
    import json
    import time

    import torch

    from sim.arch import load_arch
    from tatvpr_hw.data.vpr import VPREvalSet, eval_root
    from tatvpr_hw.evaluation import _student_checkpoint_from, load_models
    from tatvpr_hw.integer import export_trunk, integer_descriptors
    from tatvpr_hw.io import write_json

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
    img_q = trunk.quantize_image(image.double().numpy())
    arch = load_arch("kv260")
    c = arch.spec.compute
    res = csim_trunk(trunk, img_q, QUERY_SPARSITY, Path(ctx.run_dir) / "query_csim", pe=c.pe, simd=c.simd,
                     banks=c.banks, ports=c.ports, lanes=arch.spec.vector_unit.lanes, rows=arch.spec.int8_unit.rows,
                     cols=arch.spec.int8_unit.cols)
    ref = trunk.tokens(img_q, QUERY_SPARSITY)
    bit_exact = bool(np.array_equal(res.tokens, ref))
    csim_cycles = res.unit_cycles()
    sim_cycles = sim_unit_cycles(res, trunk, arch)
    d_int = integer_descriptors(student, trunk, image[None], QUERY_SPARSITY)[0]
    with torch.no_grad():
        from brevitas_models.sparsity import sparsity_context

        with sparsity_context(student, QUERY_SPARSITY, "token"):
            d_float = torch.nn.functional.normalize(student(image[None]), dim=-1)[0].numpy()
    summary = {
        "checkpoint": str(ck), "image": ev.queries.paths[0].name, "sparsity": QUERY_SPARSITY, "granularity": "token",
        "arch": arch.name, "pe": c.pe, "simd": c.simd, "banks": c.banks, "ports": c.ports,
        "tokens": list(res.tokens.shape), "ops": len(res.ops), "bit_exact": bit_exact,
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
                        + json.dumps({k: summary[k] for k in ("bit_exact", "units")}))
    return summary
