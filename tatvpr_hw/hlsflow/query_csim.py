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
