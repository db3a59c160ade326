"""The C simulation on real layers: the tiny ternary student's linears (int8 activations from
their own input quantizers after top-k, codes from ternary_weight()) and trace files, at token
and bank granularity; CHUNK trip counts equal the simulator's C_f with bank conflicts."""

from __future__ import annotations

import numpy as np
import pytest

from tatvpr_hw.lower.hls.csim import run_csim
from tatvpr_hw.lower.hls.formats import reference_gemm
from tatvpr_hw.lower.hls.layers import layers_from_trace, model_layers

from .conftest import expected_fold_cycles, layer_for

LAYERS = ["backbone.blocks.0.attn.qkv", "backbone.blocks.1.attn.proj",
          "backbone.blocks.2.mlp.fc1", "backbone.blocks.3.mlp.fc2"]


@pytest.mark.parametrize("sparsity", [0.0, 0.4, 0.6])
@pytest.mark.parametrize("fmt", ["ternary2", "ternary1.6"])
def test_tiny_student_layers_bit_exact(csim_builds, tiny_student, tmp_path, sparsity, fmt):
    model, images = tiny_student
    kp, exe = csim_builds["pe8_simd4"]
    pairs = model_layers(model, images, sparsity, pe=kp.pe, simd=kp.simd, banks=kp.banks, ports=kp.ports, fmt=fmt,
                         names=LAYERS)
    results = run_csim(exe, [p[0] for p in pairs], tmp_path)
    for (layer, info), res in zip(pairs, results):
        assert res.status == 0, info["name"]
        assert res.mismatches == 0, info["name"]
        x = _decompressed(layer)
        np.testing.assert_array_equal(res.out, layer.expected)
        np.testing.assert_array_equal(res.chunk_cycles, expected_fold_cycles(x != 0, _weights(layer), kp))
        # the integer reference is the PyTorch layer: acc * s_act * gamma + bias == float output
        assert info["acc_max_abs_err"] <= 1e-4 * max(1.0, info["out_max_abs"])
        # and the int8 output dequantises to it within the requantisation step (+ bias rounding)
        assert info["out_max_abs_err"] <= 0.51 * info["out_scale"] + 1e-3 * info["out_max_abs"]
        # top-k really thinned the stream: density follows the sparsity knob
        assert info["act_density"] <= 1.0 - sparsity + 0.02
        assert layer.m == 50           # 7 x 7 patches + CLS of the 98 px tiny model


def _decompressed(layer):
    from tatvpr_hw.lower.hls.formats import unschedule_activations
    return unschedule_activations(layer.tok_chunks, layer.pairs, layer.k, layer.simd, layer.banks)


def _weights(layer):
    from tatvpr_hw.lower.hls.formats import unpack_weights
    return unpack_weights(layer.weights, layer.n, layer.k, layer.fmt)


def test_sparsity_cuts_chunk_cycles(csim_builds, tiny_student, tmp_path):
    model, images = tiny_student
    kp, exe = csim_builds["pe4_simd8"]
    cycles, v1 = {}, {}
    for s in (0.0, 0.5):
        ((layer, info),) = model_layers(model, images, s, pe=kp.pe, simd=kp.simd, banks=kp.banks, ports=kp.ports,
                                        names=[LAYERS[1]])
        (res,) = run_csim(exe, [layer], tmp_path / str(s))
        assert res.mismatches == 0
        cycles[s] = int(res.chunk_cycles.sum())
        # version 1's rule (any lane reads any channel): max(1, ceil(nnz / SIMD)) per token
        nnz = (_decompressed(layer) != 0).sum(axis=1)
        v1[s] = int(np.maximum(1, -(-nnz // kp.simd)).sum()) * layer.folds
    # measured on this build (SIMD 8, B = 4, q = 2): 50 % sparsity saves ~39 % of the cycles, not
    # 50 %: unstructured top-k masks put more than q kept channels into some bank
    assert cycles[0.5] < 0.7 * cycles[0.0]
    assert cycles[0.5] > v1[0.5]


@pytest.mark.parametrize("fmt", ["ternary2", "ternary1.6"])
def test_trace_file_layers(csim_builds, tmp_path, fmt):
    from sim.trace import read_trace, synthetic_vit_trace, write_trace

    path = write_trace(tmp_path / "t.npz", synthetic_vit_trace(depth=1, dim=64, tokens=17, heads=2,
                                                                sparsity=0.5, seed=3))
    trace = read_trace(path)
    kp, exe = csim_builds["pe4_simd8"]
    pairs = layers_from_trace(trace, pe=kp.pe, simd=kp.simd, banks=kp.banks, ports=kp.ports, fmt=fmt, seed=5)
    assert len(pairs) == 4
    results = run_csim(exe, [p[0] for p in pairs], tmp_path / "run")
    for op, (layer, info), res in zip(trace.ternary_ops(), pairs, results):
        assert res.status == 0 and res.mismatches == 0, info["name"]
        x = _decompressed(layer)
        np.testing.assert_array_equal(x != 0, op.act_mask)
        np.testing.assert_array_equal(res.out, reference_gemm(x, op.weights(), None, layer.mult, layer.shift)[0])
        np.testing.assert_array_equal(res.chunk_cycles, expected_fold_cycles(op.act_mask, op.weights(), kp))


def test_trace_of_the_tiny_student_agrees_with_the_ip_stream(csim_builds, tiny_student, tmp_path):
    """B2's tracer and this flow see the same int8 nonzeros; its trace layers run bit-exact."""
    from brevitas_models.sparsity import set_sparsity
    from sim.trace import read_trace, write_trace
    from tatvpr_hw.tracing import trace_query

    model, images = tiny_student
    kp, exe = csim_builds["pe8_simd4"]
    set_sparsity(model, 0.4)
    try:
        trace = read_trace(write_trace(tmp_path / "q.npz", trace_query(model, images[0])))
    finally:
        set_sparsity(model, 0.0)
    ops = {op.name: op for op in trace.ternary_ops()}
    ((layer, _),) = model_layers(model, images, 0.4, pe=kp.pe, simd=kp.simd, banks=kp.banks, ports=kp.ports,
                                 names=[LAYERS[2]])
    np.testing.assert_array_equal(_decompressed(layer) != 0, ops[LAYERS[2]].act_mask)
    np.testing.assert_array_equal(_weights(layer), ops[LAYERS[2]].weights())
    pairs = layers_from_trace(trace, pe=kp.pe, simd=kp.simd, banks=kp.banks, ports=kp.ports, seed=2, max_layers=1)
    for (lay, info), res in zip(pairs, run_csim(exe, [p[0] for p in pairs], tmp_path / "run")):
        assert res.mismatches == 0 and res.status == 0, info["name"]
        op = ops[info["name"]]
        np.testing.assert_array_equal(res.chunk_cycles, expected_fold_cycles(op.act_mask, op.weights(), kp))


def _student_trace(model, images, tmp_path, sparsity, granularity, banks):
    from brevitas_models.sparsity import set_sparsity
    from sim.trace import read_trace, write_trace
    from tatvpr_hw.tracing import trace_query

    set_sparsity(model, sparsity, granularity, banks)
    try:
        path = write_trace(tmp_path / f"q_{granularity}_{sparsity}.npz", trace_query(model, images[0]))
    finally:
        set_sparsity(model, 0.0, "token")
    return read_trace(path)


def test_student_trace_conflicts_token_vs_bank_granularity(csim_builds, tiny_student, tmp_path):
    """Real layers of the tiny student's own traces at several sparsities: C-sim trip counts =
    the simulator's C_f with the build's banks (conflicts included); with ``bank`` granularity
    (groups = the build's B) the conflicts almost vanish, with ``token`` they do not."""
    from sim.engine import fold_compute_cycles

    model, images = tiny_student
    kp, exe = csim_builds["pe4_simd8"]             # B = 4, q = 2, R = 2
    conflicts = {}
    for granularity in ("token", "bank"):
        for s in (0.4, 0.6):
            trace = _student_trace(model, images, tmp_path, s, granularity, kp.banks)
            pairs = layers_from_trace(trace, pe=kp.pe, simd=kp.simd, banks=kp.banks, ports=kp.ports, seed=3,
                                      max_layers=4)
            ops = trace.ternary_ops()[:4]
            results = run_csim(exe, [p[0] for p in pairs], tmp_path / f"{granularity}_{s}")
            total = 0
            for op, (layer, info), res in zip(ops, pairs, results):
                assert res.status == 0 and res.mismatches == 0, info["name"]
                banked = expected_fold_cycles(op.act_mask, op.weights(), kp)
                np.testing.assert_array_equal(res.chunk_cycles, banked)
                one_bank = fold_compute_cycles(op.act_mask, op.weights(), kp.pe, kp.simd, "act", banks=1)
                assert (banked >= one_bank).all()
                total += int((banked - one_bank).sum())
            conflicts[granularity, s] = total
    for s in (0.4, 0.6):
        assert conflicts["token", s] > 0                       # unstructured masks collide in banks
        assert conflicts["bank", s] < conflicts["token", s]    # balanced banks: fewer conflict cycles
