"""The vector unit's HLS kernels (C simulation, g++) equal the integer model bit for bit, and their
counted cycles (element-loop iterations and per-row steps) are the simulator's vector-unit cycles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tatvpr_hw.lower.hls.paths import driver_package
from tatvpr_hw.lower.hls.unit_csim import (add_call, build_unit_csim, gelu_call, l2norm_call, layernorm_call,
                                           requant_call, run_unit_ops, softmax_call)

driver_package()
from tatvpr_pynq import integer as iq  # noqa: E402
from tatvpr_pynq.formats import quantize_multiplier  # noqa: E402


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return build_unit_csim(tmp_path_factory.mktemp("vbuild"), lanes=16)


def test_layernorm_bit_exact(exe, tmp_path):
    rng = np.random.default_rng(0)
    d = 200  # not a multiple of the 16 lanes: the last iteration is partial
    gamma, beta = rng.normal(1, 0.4, d), rng.normal(0, 0.3, d)
    ln = iq.layernorm_params(gamma, beta, 1e-6, 0.004, 0.03)
    x = np.concatenate([rng.normal(-2000, 9000, size=(6, d)), np.full((1, d), -31000.0),  # constant row
                        rng.integers(-32768, 32768, size=(1, d))]).round().astype(np.int16)
    [res] = run_unit_ops(exe, [layernorm_call(ln, x)], tmp_path)
    assert np.array_equal(res.out, ln(x))
    assert res.element_cycles == 8 * 2 * math.ceil(200 / 16)  # 8 tokens, 2 passes of 13 iterations
    assert res.row_ops == 8
    # per token: mu = floor(sx / d) by restoring division, one quotient bit per step (|sx| <= 2^15 d:
    # 16 bits), sxx - mu (sx + r) by shift and subtract (16 bits of |mu|), ssd / d (ssd < d 2^32: 32
    # bits), a restoring square root of a < 2^62 radicand, one result bit per step (bit = 4^31 .. 4^0:
    # 32 steps), then 2^47 / sd by restoring division (the 48 bits of 2^47)
    assert res.row_cycles == 8 * (16 + 16 + 32 + 32 + 48)


def test_layernorm_mean_and_variance_steps_on_small_variances(exe, tmp_path):
    """Rows whose variance is tiny next to their mean (a step's error in mu's floor remainder or in the
    product moves ssd by about |mu|, so var by |mu| / d: visible in sd and the output), negative and positive
    means, exact and inexact, the mean's bounds (-2^15, 2^15 - 1) with one element off: bit-exact with the
    numpy model; 144 row steps a row."""
    d = 5
    ln = iq.layernorm_params(np.linspace(0.5, 1.5, d), np.zeros(d), 1e-6, 0.004, 0.03)
    base = np.array([-30001, -30000, -17, -1, 0, 1, 29999, 12345, -32768, 32767])
    x = np.repeat(base[:, None], d, axis=1)
    x[:, -1] += np.where(base < 0, 1, -1)   # one element off: ssd = (d - 1) / d, never 0
    x[2, :2] -= 1                           # an inexact negative mean with remainder 2
    x = x.astype(np.int16)
    [res] = run_unit_ops(exe, [layernorm_call(ln, x)], tmp_path)
    assert np.array_equal(res.out, ln(x))
    assert len({tuple(r) for r in res.out.tolist()}) >= 3    # not one saturated pattern for every row
    assert (res.row_ops, res.row_cycles) == (10, 10 * (16 + 16 + 32 + 32 + 48))


def test_softmax_bit_exact_including_far_tails(exe, tmp_path):
    rng = np.random.default_rng(1)
    scores = rng.integers(-300000, 300000, size=(5, 64)).astype(np.int32)
    scores[0] = 7                      # all equal
    scores[1, :] = -2 ** 30            # one huge outlier: every other u clamps to 31 whole octaves
    scores[1, 5] = 2 ** 30
    m, s = quantize_multiplier(0.0017 * math.log2(math.e) * 256)
    [res] = run_unit_ops(exe, [softmax_call(scores, m, s)], tmp_path)
    assert np.array_equal(res.out, iq.softmax_int(scores, m, s))
    assert res.out[0].tolist() == [4] * 64      # 255 / 64 = 3.98
    assert res.out[1, 5] == 255 and res.out[1].sum() == 255
    assert res.element_cycles == 5 * 2 * 4
    assert (res.row_ops, res.row_cycles) == (5, 5 * 33)  # 2^32 / sum: the 33 bits of 2^32 per row


def test_gelu_and_add_bit_exact(exe, tmp_path):
    rng = np.random.default_rng(2)
    table = iq.gelu_table(0.05, 0.02)
    x8 = np.arange(-128, 128, dtype=np.int8)
    t, d = 3, 40
    xr = rng.integers(-32768, 32768, size=(t, d)).astype(np.int16)
    y8 = rng.integers(-128, 128, size=(t, d)).astype(np.int8)
    ls = rng.normal(0, 2, d)
    ls[0] = 0.0
    ms = [quantize_multiplier(abs(v) * 300.0) if v else (0, 1) for v in ls]
    mult = np.array([m if v > 0 else -m for (m, _), v in zip(ms, ls)], np.int64)
    shift = np.array([s for _, s in ms], np.int64)
    g, a = run_unit_ops(exe, [gelu_call(table, x8), add_call(xr, y8, mult, shift)], tmp_path)
    assert np.array_equal(g.out, table[x8.astype(np.int64) + 128])
    expect = iq.sat(xr.astype(np.int64) + iq.requant_channels(y8, mult, shift, -32768, 32767, np.int64),
                    -32768, 32767, np.int16)
    assert np.array_equal(a.out, expect)
    assert (a.out == 32767).any() or (a.out == -32768).any()  # saturation exercised
    assert g.element_cycles == 256 // 16 and a.element_cycles == math.ceil(t * d / 16)
    assert g.row_cycles == a.row_cycles == 0 and g.cycles == g.element_cycles


def test_element_cycles_equal_the_simulators_vector_unit(exe, tmp_path):
    """sim.engine.vector_cycles = counted iterations and per-row steps + the unit's pipeline depth
    (KV260 arch: 16 lanes, layernorm / softmax 2 cycles per element, gelu / add 1, row steps
    layernorm 144 / softmax 33 a row)."""
    from sim.arch import load_arch
    from sim.engine import vector_cycles

    arch = load_arch("kv260")
    pipe = arch.spec.vector_unit.pipeline_cycles
    assert arch.spec.vector_unit.lanes == 16
    rng = np.random.default_rng(3)
    t, d = 10, 192
    ln = iq.layernorm_params(np.ones(d), np.zeros(d), 1e-6, 0.01, 0.05)
    scores = rng.integers(-1000, 1000, size=(3 * 10, 48)).astype(np.int32)
    calls = [layernorm_call(ln, rng.integers(-5000, 5000, size=(t, d)).astype(np.int16)),
             softmax_call(scores, *quantize_multiplier(0.01)),
             gelu_call(iq.gelu_table(0.1, 0.1), rng.integers(-128, 128, size=(t, 4 * d)).astype(np.int8)),
             add_call(np.zeros((t, d), np.int16), np.ones((t, d), np.int8), np.ones(d, np.int64) << 30,
                      np.full(d, 31, np.int64))]
    kinds = [("layernorm", t * d, d), ("softmax", scores.size, 48), ("gelu", t * 4 * d, 0), ("add", t * d, 0)]
    results = run_unit_ops(exe, calls, tmp_path)
    for res, (kind, elements, row) in zip(results, kinds):
        assert res.cycles + pipe == vector_cycles(elements, kind, arch, row), kind
    assert results[0].row_cycles == 10 * 144 and results[1].row_cycles == 30 * 33


def test_requant_bit_exact_with_saturation(exe, tmp_path):
    """The head's int16 -> int8 requantisation (``tatvpr_requant``) equals ``formats.requantize``."""
    from tatvpr_pynq.formats import requantize

    rng = np.random.default_rng(6)
    x = rng.integers(-32768, 32768, size=(49, 192)).astype(np.int16)
    edge = np.array([-32768, 32767, 0, 1, -1, 2, -2, 3, -3], np.int16)  # the extremes, rounding half up
    calls = [requant_call(x, *quantize_multiplier(0.004)), requant_call(x, *quantize_multiplier(0.9)),
             requant_call(edge, 1, 1), requant_call(np.zeros((3, 5), np.int16), 2 ** 31 - 1, 62)]
    res = run_unit_ops(exe, calls, tmp_path)
    for r, c in zip(res, calls):
        assert np.array_equal(r.out.ravel(), requantize(c.arrays[0], c.params[1], c.params[2]))
    # x / 2, rounded half up: -16384 -> -128 (saturated), 16384 -> 127, 0, 1/2 -> 1, -1/2 -> 0, 1, -1, 3/2 -> 2, -1
    assert res[2].out.tolist() == [-128, 127, 0, 1, 0, 1, -1, 2, -1]
    assert (res[1].out == 127).any() and (res[1].out == -128).any()
    assert not res[3].out.any()
    assert [r.element_cycles for r in res] == [588, 588, 1, 1]  # ceil(9408 / 16), ceil(9 / 16), ceil(15 / 16)
    assert [r.row_ops for r in res] == [0] * 4 and [r.row_cycles for r in res] == [0] * 4


def test_l2norm_bit_exact_on_edge_cases(exe, tmp_path):
    """The descriptor's L2 norm in Q15 (``tatvpr_l2norm``) equals ``l2norm_int``: random vectors, all
    zeros, one nonzero element (exactly 1.0: saturates to 32767), the largest magnitude everywhere on
    the longest vector the unit takes (65535 x -32768: the sum of squares just below 2^46), partial
    lane groups."""
    rng = np.random.default_rng(7)
    vecs = [rng.integers(-32768, 32768, size=512).astype(np.int16), np.zeros(7, np.int16),
            np.array([3, 4], np.int16), np.array([0, -9, 0], np.int16), np.full(65535, -32768, np.int16),
            np.full(4096, 32767, np.int16), rng.integers(-3, 4, size=200).astype(np.int16),
            np.array([1], np.int16)]
    res = run_unit_ops(exe, [l2norm_call(v) for v in vecs], tmp_path)
    for r, v in zip(res, vecs):
        assert np.array_equal(r.out, iq.l2norm_int(v)), v.size
    assert res[1].out.tolist() == [0] * 7
    assert res[2].out.tolist() == [19661, 26214]        # 0.6 and 0.8 in Q15, by hand
    assert res[3].out.tolist() == [0, -32768, 0]        # -1.0 fits int16
    assert res[7].out.tolist() == [32767]               # +1.0 saturates
    # 65535 elements of -2^15: sum of squares 65535 * 2^30 < 2^46; sd = isqrt(65535 * 2^46) = 2147467263
    # (the norm 8388543.9998 in Q8), inv = 2^47 // sd = 65536, (-2^15 * 65536 + 2^23) >> 24 = -128:
    # -1 / sqrt(65535) = -0.0039064 = -128.001 in Q15
    assert set(res[4].out.tolist()) == {-128}
    ref = vecs[0] / np.linalg.norm(vecs[0].astype(np.float64)) * 2 ** 15
    assert np.abs(res[0].out - ref).max() <= 1.0
    # 2 passes of ceil(n / 16) lane groups, one row: 32 square-root steps + 48 quotient bits of 2^47 / sd
    assert [r.element_cycles for r in res] == [2 * math.ceil(v.size / 16) for v in vecs]
    assert [(r.row_ops, r.row_cycles) for r in res] == [(1, 80)] * len(vecs)


def test_requant_and_l2norm_calls_refuse_what_the_unit_cannot_take():
    import re

    from tatvpr_hw.errors import UserError
    from tatvpr_hw.lower.hls.paths import hls_dir

    # one limit: the HLS header's TATVPR_L2NORM_MAX_N is the integer model's (and so the driver's)
    header = (hls_dir() / "include" / "tatvpr_vector.h").read_text()
    assert int(re.search(r"#define TATVPR_L2NORM_MAX_N (\d+)", header).group(1)) == iq.L2NORM_MAX_N == 2 ** 16 - 1
    assert iq.L2NORM_MAX_N * 2 ** 30 < 2 ** 46  # the longest int16 vector keeps the square root's radicand < 2^62
    with pytest.raises(iq.IntegerModelError, match="normalises at most 65535"):
        iq.l2norm_int(np.zeros(65536, np.int16))

    with pytest.raises(UserError, match="normalises 1 to 65535"):
        l2norm_call(np.zeros(65536, np.int16))
    with pytest.raises(UserError, match="normalises 1 to 65535"):
        l2norm_call(np.zeros(0, np.int16))
    with pytest.raises(UserError, match="input is int16"):
        l2norm_call(np.array([40000]))
    with pytest.raises(UserError, match="shift in \\[1, 62\\]"):
        requant_call(np.zeros(3, np.int16), 5, 0)


def test_requant_and_l2norm_cycles_are_the_simulators_by_hand(exe, tmp_path):
    """KV260 arch (16 lanes, pipeline 12): a requant of 40 elements is ceil(40 / 16) = 3 lane groups x 1
    pass + 12 = 15 cycles; an L2 norm of 40 elements (one row) 3 groups x 2 passes = 6, + 80 row steps
    (square root 32, reciprocal 48), + 12 = 98. The C simulation counts the same, less the pipeline."""
    from sim.arch import load_arch
    from sim.engine import vector_cycles

    arch = load_arch("kv260")
    assert vector_cycles(40, "requant", arch) == 15
    assert vector_cycles(40, "l2norm", arch, 40) == 98
    rng = np.random.default_rng(8)
    x = rng.integers(-2000, 2000, size=40).astype(np.int16)
    rq, l2 = run_unit_ops(exe, [requant_call(x, 3, 4), l2norm_call(x)], tmp_path)
    assert rq.cycles == 15 - 12 and l2.cycles == 98 - 12
    for n in (1, 16, 17, 512, 4096):  # and on other sizes, against the simulator's formula
        y = rng.integers(-2000, 2000, size=n).astype(np.int16)
        rq, l2 = run_unit_ops(exe, [requant_call(y, 3, 4), l2norm_call(y)], tmp_path)
        assert rq.cycles + 12 == vector_cycles(n, "requant", arch), n
        assert l2.cycles + 12 == vector_cycles(n, "l2norm", arch, n), n


@pytest.mark.parametrize("arch_name", ["kv260", "zcu104", "pynq_z2"])
def test_row_op_cycles_of_the_arch_are_the_hls_units(exe, tmp_path, arch_name):
    """vector_unit.row_op_cycles (the simulator's one description of the per-row steps) is what the
    HLS kernels count per row, on rows of every size (the steps do not depend on the data)."""
    from sim.arch import load_arch

    table = load_arch(arch_name).spec.vector_unit.row_op_cycles
    rng = np.random.default_rng(5)
    for d in (1, 17, 768):
        ln = iq.layernorm_params(np.ones(d), np.zeros(d), 1e-6, 0.01, 0.05)
        scores = rng.integers(-10 ** 6, 10 ** 6, size=(3, d)).astype(np.int32)
        x = rng.integers(-32768, 32768, size=(2, d)).astype(np.int16)
        lr, sr = run_unit_ops(exe, [layernorm_call(ln, x), softmax_call(scores, *quantize_multiplier(0.01))],
                              tmp_path)
        assert lr.row_cycles == 2 * table["layernorm"] and sr.row_cycles == 3 * table["softmax"]
        l2, rq = run_unit_ops(exe, [l2norm_call(x[0]), requant_call(x, 1, 1)], tmp_path)
        assert l2.row_cycles == table["l2norm"] and rq.row_cycles == table["requant"] == 0
    assert table["gelu"] == table["add"] == table["other"] == 0


# ------------------------------------------------------------------ the int8 unit
def test_int8_unit_attention_and_patch_embedding_bit_exact(exe, tmp_path):
    from tatvpr_hw.lower.hls.unit_csim import gemm_call

    rng = np.random.default_rng(4)
    h, t, dh = 3, 50, 64
    q = rng.integers(-128, 128, size=(h, t, dh)).astype(np.int8)
    k = rng.integers(-128, 128, size=(h, t, dh)).astype(np.int8)
    p = rng.integers(0, 256, size=(h, t, t)).astype(np.uint8)
    v = rng.integers(-128, 128, size=(h, t, dh)).astype(np.int8)
    pt = rng.integers(-128, 128, size=(49, 588)).astype(np.int8)
    w = rng.integers(-127, 128, size=(192, 588)).astype(np.int8)
    bias = rng.integers(-40000, 40000, size=192)
    am, ash = quantize_multiplier(0.0007)
    em, es = quantize_multiplier(0.9)
    calls = [gemm_call(q, k.transpose(0, 2, 1)), gemm_call(p, v, out="int8", mult=am, shift=ash),
             gemm_call(pt, w.T, bias, out="int16", mult=em, shift=es)]
    scores, av, emb = run_unit_ops(exe, calls, tmp_path)
    ref_scores = np.einsum("htd,hsd->hts", q.astype(np.int64), k.astype(np.int64))  # independent of imatmul
    assert np.array_equal(scores.out, ref_scores)
    assert np.array_equal(av.out, iq.requantize(iq.imatmul(p, v), am, ash))
    acc = pt.astype(np.int64) @ w.astype(np.int64).T + bias
    ref = np.clip((acc * em + (1 << (es - 1))) >> es, -32768, 32767)
    assert np.array_equal(emb.out[0], ref)
    assert (emb.out == 32767).any() and (emb.out == -32768).any()  # saturation exercised
    # output-stationary 16 x 16 grid: batch * ceil(m/16) * ceil(n/16) * k iterations, by hand
    assert scores.element_cycles == 3 * 4 * 4 * 64
    assert av.element_cycles == 3 * 4 * 4 * 50
    assert emb.element_cycles == 1 * 4 * 12 * 588


def test_int8_unit_cycles_equal_the_simulators(exe, tmp_path):
    from sim.arch import load_arch
    from sim.engine import dense_cycles
    from tatvpr_hw.lower.hls.unit_csim import gemm_call

    arch = load_arch("kv260")
    u = arch.spec.int8_unit
    assert (u.rows, u.cols) == (16, 16)
    rng = np.random.default_rng(5)
    for batch, m, k, n in [(1, 17, 5, 33), (2, 16, 9, 16), (3, 1, 40, 100)]:
        a = rng.integers(-5, 5, size=(batch, m, k)).astype(np.int8)
        b = rng.integers(-5, 5, size=(batch, k, n)).astype(np.int8)
        [res] = run_unit_ops(exe, [gemm_call(a, b)], tmp_path)
        assert np.array_equal(res.out, np.einsum("bmk,bkn->bmn", a.astype(np.int64), b.astype(np.int64)))
        assert res.element_cycles + u.pipeline_cycles == dense_cycles(m, k, n, batch, u.rows, u.cols,
                                                                       u.pipeline_cycles)


def test_vector_rows_are_charged_per_row_by_hand():
    """A softmax over 150 rows of 50 scores on 16 lanes: ceil(50 / 16) = 4 lane groups per row
    (groups do not span rows), 2 cycles per element: 150 * 4 * 2 = 1200, plus 33 reciprocal steps
    per row: 150 * 33 = 4950, + 12 pipeline; without rows the same 7500 elements are
    ceil(7500 / 16) * 2 = 938 + 12 (no row steps). A LayerNorm of 3 tokens of 40: 3 * 3 * 2 = 18
    + 3 * 144 = 432 + 12 (16 + 16 + 32 mean and variance steps, 32 + 48 square root and reciprocal);
    GELU has no row steps."""
    from sim.arch import load_arch, with_overrides
    from sim.engine import vector_cycles

    arch = load_arch("kv260")
    assert vector_cycles(7500, "softmax", arch, 50) == 1200 + 4950 + 12 == 6162
    assert vector_cycles(7500, "softmax", arch) == 950
    assert vector_cycles(120, "layernorm", arch, 40) == 18 + 432 + 12
    assert vector_cycles(120, "gelu", arch) == math.ceil(120 / 16) + 12
    # the arch's row_op_cycles is the one description: changing it moves the charge
    cheap = with_overrides(arch, {"vector_unit.row_op_cycles": {"softmax": 1}})
    assert vector_cycles(7500, "softmax", cheap, 50) == 1200 + 150 + 12
    assert cheap.spec.vector_unit.row_op_cycles["layernorm"] == 144  # kinds not given keep the HLS values


def test_traces_carry_rows_and_reject_bad_ones(tmp_path):
    from sim.errors import SimInputError
    from sim.trace import Trace, VectorOp, read_trace, synthetic_vit_trace, validate_trace, write_trace

    tr = synthetic_vit_trace(depth=1, dim=64, tokens=10, heads=2, mlp_ratio=4.0, sparsity=0.0, seed=0)
    rows = {op.name: op.row for op in tr.ops if isinstance(op, VectorOp)}
    assert rows["blocks.0.attn.softmax"] == 10 and rows["blocks.0.norm1"] == 64 and rows["blocks.0.add1"] == 0
    back = read_trace(write_trace(tmp_path / "t.npz", tr))
    assert {op.name: op.row for op in back.ops if isinstance(op, VectorOp)} == rows
    with pytest.raises(SimInputError, match="'row' = 7 does not divide elements = 20"):
        validate_trace(Trace(1, {}, [VectorOp("x", "softmax", 20, 7)]))


# ------------------------------------------------------------------ the top-k and bank scheduling (issue 15)
def _topk_cases(rng, k):
    """Rows that exercise the selection: random, many ties (values in -3..3), all zero, all -128, one
    nonzero, fewer nonzero channels than kept ones."""
    rows = [rng.integers(-128, 128, size=(5, k)), rng.integers(-3, 4, size=(6, k)), np.zeros((1, k)),
            np.full((1, k), -128), np.eye(1, k, k // 2) * 7, np.where(rng.random((2, k)) < 0.2,
                                                                       rng.integers(-9, 10, size=(2, k)), 0)]
    return np.concatenate(rows).astype(np.int8)


def _topk_cycles_by_hand(m, k, chunks, lanes, simd):
    """Per row: the histogram pass and the select pass, ceil(K / lanes) each; 128 scan steps (bins 128
    down to 1); per chunk of the stream ceil(SIMD / lanes) emit cycles."""
    return m * 2 * math.ceil(k / lanes) + m * 128 + int(np.sum(chunks)) * math.ceil(simd / lanes)


@pytest.mark.parametrize("simd,banks,lanes,k", [(8, 8, 16, 100), (16, 4, 4, 150), (16, 1, 16, 77), (8, 2, 16, 64)])
def test_topk_schedule_is_the_hosts_bit_for_bit(tmp_path, simd, banks, lanes, k):
    """``tatvpr_topk_schedule`` = ``schedule_activations(topk_int(x, s), simd, banks)`` (the stream the
    ternary IP reads) for sparsities 0, 0.4, 0.9 and 1, banks = SIMD and banks < SIMD, K not a multiple
    of SIMD; the dense variant = ``topk_int``; counted cycles = the closed form by hand."""
    from tatvpr_hw.lower.hls.unit_csim import topk_call, topk_keep
    from tatvpr_pynq.formats import schedule_activations

    exe = build_unit_csim(tmp_path / "b", lanes=lanes, simd=simd, banks=banks, kmax=256)
    rng = np.random.default_rng(simd * 1000 + k)
    x = _topk_cases(rng, k)
    m = x.shape[0]
    sps = (0.0, 0.4, 0.9, 1.0)
    calls = [topk_call(x, topk_keep(k, s)) for s in sps] + [topk_call(x, topk_keep(k, s), stream=False) for s in sps]
    res = run_unit_ops(exe, calls, tmp_path / "w")
    for s, r, d in zip(sps, res[:4], res[4:]):
        chunks, pairs = schedule_activations(iq.topk_int(x, s), simd, banks)
        assert np.array_equal(r.out[0], chunks), s
        assert np.array_equal(r.out[1], pairs), s
        assert np.array_equal(d.out, iq.topk_int(x, s)), s
        assert r.cycles == _topk_cycles_by_hand(m, k, chunks, lanes, simd), s
        assert d.cycles == _topk_cycles_by_hand(m, k, [], lanes, simd), s
        assert (r.row_ops, r.row_cycles) == (m, 128 * m)
    # the ties rows keep exactly ceil((1 - s) K) channels (unless fewer are nonzero) ...
    kept = (res[5].out != 0).sum(axis=1)
    assert kept.tolist() == np.minimum((x != 0).sum(axis=1), topk_keep(k, 0.4)).tolist()
    # ... and s = 1 keeps nothing: one chunk of pads a row
    assert res[3].out[0].tolist() == [1] * m and not res[3].out[1].any()


def test_topk_ties_go_to_the_lower_index_and_the_stream_by_hand(tmp_path):
    """SIMD 2, banks 2 (q = 1), 16 lanes, one row x = [0, 3, 0, -2, 0, 3, -3]: keep 2 (s = 5/7) keeps the
    two lowest-index magnitude-3 channels 1 and 5 (not 6), both bank 1: two chunks
    [pad, 0x103], [pad, 0x503]; keep 7 keeps 1, 3, 5, 6: bank 1 holds 1, 3, 5 -> 3 chunks, bank 0 holds 6.
    Cycles: 2 x ceil(7 / 16) + 128 + chunks x ceil(2 / 16) = 130 + chunks."""
    from tatvpr_hw.lower.hls.unit_csim import topk_call

    exe = build_unit_csim(tmp_path / "b", lanes=16, simd=2, banks=2, kmax=64)
    x = np.array([[0, 3, 0, -2, 0, 3, -3]], np.int8)
    r2, r7 = run_unit_ops(exe, [topk_call(x, 2), topk_call(x, 7)], tmp_path / "w")
    assert r2.out[0].tolist() == [2] and [hex(p) for p in r2.out[1]] == ["0x0", "0x103", "0x0", "0x503"]
    assert r7.out[0].tolist() == [3]
    assert [hex(p) for p in r7.out[1]] == ["0x6fd", "0x103", "0x0", "0x3fe", "0x0", "0x503"]
    assert (r2.cycles, r7.cycles) == (132, 133)


def test_topk_cycles_equal_the_simulators_formula(tmp_path):
    """sim.engine.vector_topk_cycles (the simulator's charge) = the counted cycles + the unit's pipeline
    depth, on the KV260 arch's lanes and the ternary IP's SIMD and banks."""
    from sim.arch import load_arch
    from sim.engine import vector_topk_cycles
    from tatvpr_hw.lower.hls.unit_csim import topk_call, topk_keep
    from tatvpr_pynq.formats import schedule_activations

    arch = load_arch("kv260")
    c, v = arch.spec.compute, arch.spec.vector_unit
    exe = build_unit_csim(tmp_path / "b", lanes=v.lanes, simd=c.simd, banks=c.banks, kmax=1024)
    rng = np.random.default_rng(11)
    for m, k, s in [(17, 200, 0.4), (3, 1000, 0.9), (5, 96, 0.0)]:
        x = rng.integers(-128, 128, size=(m, k)).astype(np.int8)
        [r] = run_unit_ops(exe, [topk_call(x, topk_keep(k, s))], tmp_path / "w")
        chunks, _ = schedule_activations(iq.topk_int(x, s), c.simd, c.banks)
        assert r.cycles + v.pipeline_cycles == vector_topk_cycles(m, k, int(chunks.sum()), arch), (m, k, s)


def test_topk_call_refuses_what_the_unit_cannot_take(tmp_path):
    from tatvpr_hw.errors import UserError
    from tatvpr_hw.lower.hls.unit_csim import topk_call

    with pytest.raises(UserError, match="int8 \\[M, K\\]"):
        topk_call(np.zeros((2, 3), np.int16), 1)
    with pytest.raises(UserError, match="keep = -1"):
        topk_call(np.zeros((2, 3), np.int8), -1)
    with pytest.raises(UserError, match="must divide simd"):
        build_unit_csim(tmp_path, simd=8, banks=3)
    exe = build_unit_csim(tmp_path / "b", lanes=16, simd=8, banks=8, kmax=64)
    with pytest.raises(UserError, match="malformed"):  # a row over the unit's K_max
        run_unit_ops(exe, [topk_call(np.ones((1, 65), np.int8), 3)], tmp_path / "w")


def test_fused_attention_bit_exact_and_counted_by_hand(exe, tmp_path):
    """The int8 IP's fused attention (tatvpr_attention, schedule.attention: fused): from the qkv projection's
    output to the projection's input, the integer model's integers (composed from an independent einsum
    here), its array and softmax-lane cycles by hand and the simulator's (sim.schedule.FusedAttention)."""
    from sim.arch import load_arch, with_overrides
    from sim.schedule import FusedAttention
    from tatvpr_hw.lower.hls.unit_csim import attention_call

    rng = np.random.default_rng(12)
    h, t, dh = 3, 50, 64
    qkv = rng.integers(-128, 128, size=(t, 3 * h * dh)).astype(np.int8)
    sm_mult, sm_shift = 1234567, 30
    av_mult, av_shift = quantize_multiplier(0.0007)
    [r] = run_unit_ops(exe, [attention_call(qkv, h, sm_mult, sm_shift, av_mult, av_shift)], tmp_path)
    q, k, v = (qkv.reshape(t, 3, h, dh)[:, i].transpose(1, 0, 2).astype(np.int64) for i in range(3))
    p = iq.softmax_int(np.einsum("htd,hsd->hts", q, k).reshape(h * t, t), sm_mult, sm_shift).reshape(h, t, t)
    o = np.einsum("hts,hsd->htd", p.astype(np.int64), v)
    ref = np.clip((o * av_mult + (1 << (av_shift - 1))) >> av_shift, -128, 127).transpose(1, 0, 2).reshape(t, h * dh)
    assert np.array_equal(r.out, ref)
    assert np.array_equal(r.out, iq.NUMPY_UNITS.attention("", qkv, h, sm_mult, sm_shift, av_mult, av_shift))
    # 16 x 16 array, blocks of 32 and 18 rows (2 row tiles each): QK^T 2 x ceil(50/16) x 64 = 512 and P.V
    # 2 x ceil(64/16) x 50 = 400 a block, 3 heads: 3 x 2 x 912 = 5472 (the split ops' 3072 + 2400)
    assert r.int8_cycles == 5472
    # softmax lanes: 150 rows of 50 scores, 4 groups of 16, 2 passes, 33 reciprocal steps a row
    assert (r.element_cycles, r.row_ops, r.row_cycles) == (150 * 4 * 2, 150, 150 * 33)
    arch = load_arch("kv260")
    arch = with_overrides(arch, {"schedule.overlap": "pipelined", "schedule.attention": "fused",
                                 "schedule.attention_rows": 32, "vector_unit.lanes": 16})
    fc = FusedAttention.of(arch).unit_cycles(h, t, dh)
    assert fc["int8_unit"] - 2 * arch.spec.int8_unit.pipeline_cycles == r.int8_cycles
    assert fc["softmax"] - arch.spec.vector_unit.pipeline_cycles == r.cycles
    # saturating output, one-token and one-head-dim edge cases
    for hh, tt, dd, am in ((2, 1, 1, 1 << 30), (1, 33, 7, 1 << 30), (4, 16, 5, av_mult)):
        x = rng.integers(-128, 128, size=(tt, 3 * hh * dd)).astype(np.int8)
        [r] = run_unit_ops(exe, [attention_call(x, hh, sm_mult, sm_shift, am, 36)], tmp_path / f"e{tt}")
        assert np.array_equal(r.out, iq.NUMPY_UNITS.attention("", x, hh, sm_mult, sm_shift, am, 36)), (hh, tt, dd)


def test_fused_attention_refuses_what_the_ip_is_not_built_for(exe, tmp_path):
    from tatvpr_hw.errors import UserError
    from tatvpr_hw.lower.hls.unit_csim import attention_call

    with pytest.raises(UserError, match="multiple of 3 heads"):
        attention_call(np.zeros((4, 10), np.int8), 3, 1, 1, 1, 1)
    big = np.zeros((258, 3 * 64), np.int8)  # one token more than TATVPR_ATT_MAX_TOKENS = 257
    with pytest.raises(UserError, match="C simulation failed"):
        run_unit_ops(exe, [attention_call(big, 1, 1, 30, 1, 30)], tmp_path)


def _chain_parts(rng, t, d):
    gamma = rng.uniform(0.5, 1.5, d)
    beta = rng.uniform(-0.2, 0.2, d)
    ln = iq.layernorm_params(gamma, beta, 1e-6, 0.01, 0.02)
    ms = [quantize_multiplier(v) for v in rng.uniform(0.05, 2.0, d)]
    mult, shift = np.array([m for m, _ in ms], np.int32), np.array([s for _, s in ms], np.int32)
    x16 = rng.integers(-3000, 3000, size=(t, d)).astype(np.int16)
    x16[0, :4] = [32767, -32768, 32000, -32000]  # saturating adds
    x8 = rng.integers(-128, 128, size=(t, d)).astype(np.int8)
    return ln, (mult, shift), x16, x8


@pytest.mark.parametrize("simd,banks,lanes", [(8, 8, 16), (16, 4, 4)])
def test_vector_chain_bit_exact_and_counted_as_the_split_ops(tmp_path, simd, banks, lanes):
    """schedule.vector_chain: fused: ``tatvpr_chain`` (add -> LayerNorm -> top-k, the act stream and the
    dense variant; GELU -> top-k; add -> LayerNorm alone) = ``Units.vector_chain`` of the integer model, bit
    for bit, the residual stream included; its counted cycles = the split calls' (add, layernorm, gelu,
    topk) sum, the passes the simulator charges (rows a multiple of the lanes)."""
    from tatvpr_hw.lower.hls.unit_csim import chain_call, topk_call, topk_keep

    exe = build_unit_csim(tmp_path / "b", lanes=lanes, simd=simd, banks=banks, kmax=256)
    rng = np.random.default_rng(lanes + simd)
    t, d, h, s = 5, 64, 192, 0.4
    ln, (mult, shift), x16, x8 = _chain_parts(rng, t, d)
    hid = rng.integers(-128, 128, size=(t, h)).astype(np.int8)
    table = iq.gelu_table(0.05, 0.03)
    kd, kh = topk_keep(d, s), topk_keep(h, s)
    calls = [chain_call(x16=x16, x8=x8, add=(mult, shift), ln=ln, keep=kd, write_res=True),
             chain_call(x16=x16, x8=x8, add=(mult, shift), ln=ln, keep=kd, stream=False, write_res=True),
             chain_call(x8=hid, gelu_table=table, keep=kh),
             chain_call(x16=x16, x8=x8, add=(mult, shift), ln=ln),
             chain_call(x16=x16, ln=ln, keep=kd, stream=False)]
    res = run_unit_ops(exe, calls, tmp_path / "w")
    u = iq.NUMPY_UNITS
    want = [u.vector_chain("c", x16=x16, x8=x8, add=(mult, shift), ln=ln, sparsity=s, simd=simd, banks=banks),
            u.vector_chain("c", x16=x16, x8=x8, add=(mult, shift), ln=ln, sparsity=s),
            u.vector_chain("c", x8=hid, gelu_table=table, sparsity=s, simd=simd, banks=banks),
            u.vector_chain("c", x16=x16, x8=x8, add=(mult, shift), ln=ln),
            u.vector_chain("c", x16=x16, ln=ln, sparsity=s)]
    for i, (r, (wres, wout)) in enumerate(zip(res, want)):
        got_res, got = r.out
        if i < 2:
            assert np.array_equal(got_res, wres), i
        else:
            assert got_res is None, i
        if isinstance(wout, tuple):
            assert np.array_equal(got[0], wout[0]) and np.array_equal(got[1], wout[1]), i
        else:
            assert np.array_equal(got, wout), i
    # the split ops on the C simulation, one call each, counted
    y_add = u.add("a", x16, x8, mult, shift)
    y_ln = ln(y_add)
    y_gelu = table[hid.astype(np.int64) + 128]
    split = run_unit_ops(exe, [add_call(x16, x8, mult, shift), layernorm_call(ln, y_add), topk_call(y_ln, kd),
                               topk_call(y_ln, kd, stream=False), gelu_call(table, hid), topk_call(y_gelu, kh),
                               layernorm_call(ln, x16), topk_call(ln(x16), kd, stream=False)], tmp_path / "s")
    c = [r.cycles for r in split]
    assert res[0].cycles == c[0] + c[1] + c[2]
    assert res[1].cycles == c[0] + c[1] + c[3]
    assert res[2].cycles == c[4] + c[5]
    assert res[3].cycles == c[0] + c[1]
    assert res[4].cycles == c[6] + c[7]
    # by hand (add -> LayerNorm, 16 lanes or 4): per row ceil(64 / L) add + 2 ceil(64 / L) LN + 144 row steps
    assert res[3].cycles == t * (3 * -(-d // lanes) + 144)


def test_vector_chain_refuses_what_the_ip_cannot_do(tmp_path):
    from tatvpr_hw.errors import UserError
    from tatvpr_hw.lower.hls.unit_csim import chain_call

    ln = iq.layernorm_params(np.ones(8), np.zeros(8), 1e-6, 0.01, 0.02)
    x = np.zeros((2, 8), np.int16)
    with pytest.raises(UserError, match="exactly one"):
        chain_call(x16=x, keep=3)
    with pytest.raises(UserError, match="followed by a LayerNorm"):
        chain_call(x16=x, x8=x.astype(np.int8), add=(np.ones(8), np.ones(8)), gelu_table=np.zeros(256, np.int8))
    with pytest.raises(UserError, match="write_res"):
        chain_call(x16=x, ln=ln, write_res=True)
    # a row wider than the chain's int16 row (TATVPR_CHAIN_MAX_DIM = 256) is refused by the kernel
    exe = build_unit_csim(tmp_path / "b", lanes=16, simd=8, banks=8, kmax=512, max_dim=256)
    wide = iq.layernorm_params(np.ones(300), np.zeros(300), 1e-6, 0.01, 0.02)
    with pytest.raises(UserError, match="malformed"):
        run_unit_ops(exe, [chain_call(x16=np.zeros((1, 300), np.int16), ln=wide)], tmp_path / "w")


def test_vector_chain_cycles_are_the_simulators_chain_stage(tmp_path):
    """sim.schedule charges a chain as one vector-unit stage of its ops' records plus its top-k (the
    passes still run): vector_cycles(add) + vector_cycles(layernorm) + vector_topk_cycles = the chain's
    counted cycles + one pipeline depth per split op (three), on the KV260 arch's lanes, SIMD and banks;
    GELU -> top-k likewise (two)."""
    from sim.arch import load_arch
    from sim.engine import vector_cycles, vector_topk_cycles
    from tatvpr_hw.lower.hls.unit_csim import chain_call, topk_keep
    from tatvpr_pynq.formats import schedule_activations

    arch = load_arch("kv260")
    c, v = arch.spec.compute, arch.spec.vector_unit
    exe = build_unit_csim(tmp_path / "b", lanes=v.lanes, simd=c.simd, banks=c.banks, kmax=512)
    rng = np.random.default_rng(5)
    t, d, h, s = 7, 128, 512, 0.4
    ln, (mult, shift), x16, x8 = _chain_parts(rng, t, d)
    hid = rng.integers(-128, 128, size=(t, h)).astype(np.int8)
    table = iq.gelu_table(0.05, 0.03)
    r1, r2 = run_unit_ops(exe, [chain_call(x16=x16, x8=x8, add=(mult, shift), ln=ln, keep=topk_keep(d, s),
                                           write_res=True),
                                chain_call(x8=hid, gelu_table=table, keep=topk_keep(h, s))], tmp_path / "w")
    y = ln(iq.NUMPY_UNITS.add("a", x16, x8, mult, shift))
    g1 = int(schedule_activations(iq.topk_int(y, s), c.simd, c.banks)[0].sum())
    g2 = int(schedule_activations(iq.topk_int(table[hid.astype(np.int64) + 128], s), c.simd, c.banks)[0].sum())
    sim1 = (vector_cycles(t * d, "add", arch) + vector_cycles(t * d, "layernorm", arch, d)
            + vector_topk_cycles(t, d, g1, arch))
    sim2 = vector_cycles(t * h, "gelu", arch) + vector_topk_cycles(t, h, g2, arch)
    assert r1.cycles + 3 * v.pipeline_cycles == sim1
    assert r2.cycles + 2 * v.pipeline_cycles == sim2


def test_fused_attention_on_fewer_softmax_lanes_than_the_vector_unit(tmp_path):
    """schedule.attention_lanes = 6 with a 16-lane vector unit (TATVPR_ATT_LANES = 6, TATVPR_VLANES = 16): the
    same integers as the integer model, the softmax-only lanes' counted cycles by hand on 6 lanes and equal to
    the simulator's (sim.schedule.FusedAttention with schedule.attention_lanes 6); the array's unchanged."""
    from sim.arch import load_arch, with_overrides
    from sim.schedule import FusedAttention
    from tatvpr_hw.lower.hls.unit_csim import attention_call

    exe6 = build_unit_csim(tmp_path / "b6", lanes=16, att_lanes=6)
    rng = np.random.default_rng(15)
    h, t, dh = 2, 50, 64
    qkv = rng.integers(-128, 128, size=(t, 3 * h * dh)).astype(np.int8)
    sm_mult, sm_shift = 1234567, 30
    av_mult, av_shift = quantize_multiplier(0.0007)
    [r] = run_unit_ops(exe6, [attention_call(qkv, h, sm_mult, sm_shift, av_mult, av_shift)], tmp_path / "w")
    assert np.array_equal(r.out, iq.NUMPY_UNITS.attention("", qkv, h, sm_mult, sm_shift, av_mult, av_shift))
    # 16 x 16 array, blocks of 32 and 18 rows (2 row tiles each): QK^T 2 x ceil(50/16) x 64 = 512 and P.V
    # 2 x ceil(64/16) x 50 = 400 a block, 2 blocks, 2 heads: 3648 (as on 16 softmax lanes)
    assert r.int8_cycles == 2 * 2 * (512 + 400)
    # 100 rows of 50 scores on 6 lanes: ceil(50/6) = 9 groups x 2 passes = 18 a row (16 lanes: 8), 33 steps a row
    assert (r.element_cycles, r.row_ops, r.row_cycles) == (100 * 18, 100, 100 * 33)
    arch = with_overrides(load_arch("kv260"), {"schedule.overlap": "pipelined", "schedule.attention": "fused",
                                               "schedule.attention_rows": 32, "vector_unit.lanes": 16,
                                               "schedule.attention_lanes": 6})
    fc = FusedAttention.of(arch).unit_cycles(h, t, dh)
    assert fc["softmax"] - arch.spec.vector_unit.pipeline_cycles == r.cycles == 5100
    assert fc["int8_unit"] - 2 * arch.spec.int8_unit.pipeline_cycles == r.int8_cycles
    # the bitstream's IP gets the same count (board.py: -DTATVPR_ATT_LANES from the design point)
    from tatvpr_hw.lower.hls.board import design_point_from_arch

    point = design_point_from_arch(with_overrides(arch, {"schedule.handoffs": "dram"}), "test")
    assert (point.attention_lanes, point.vector_lanes) == (6, 16)
