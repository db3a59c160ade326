"""The C simulation on real layers: the tiny ternary student's linears (int8 activations from
their own input quantizers after top-k, codes from ternary_weight()) and trace files."""

from __future__ import annotations

import numpy as np
import pytest

from tatvpr_hw.hlsflow.csim import run_csim
from tatvpr_hw.hlsflow.formats import reference_gemm
from tatvpr_hw.hlsflow.layers import layers_from_trace, model_layers

from .conftest import expected_fold_cycles

LAYERS = ["backbone.blocks.0.attn.qkv", "backbone.blocks.1.attn.proj",
          "backbone.blocks.2.mlp.fc1", "backbone.blocks.3.mlp.fc2"]


@pytest.mark.parametrize("sparsity", [0.0, 0.4, 0.6])
@pytest.mark.parametrize("fmt", ["ternary2", "ternary1.6"])
def test_tiny_student_layers_bit_exact(csim_builds, tiny_student, tmp_path, sparsity, fmt):
    model, images = tiny_student
    kp, exe = csim_builds["pe8_simd4"]
    pairs = model_layers(model, images, sparsity, pe=kp.pe, simd=kp.simd, fmt=fmt, names=LAYERS)
    results = run_csim(exe, [p[0] for p in pairs], tmp_path)
    for (layer, info), res in zip(pairs, results):
        assert res.status == 0, info["name"]
        assert res.mismatches == 0, info["name"]
        x = _decompressed(layer)
        np.testing.assert_array_equal(res.out, layer.expected)
        np.testing.assert_array_equal(res.chunk_cycles,
                                      expected_fold_cycles(x != 0, _weights(layer), kp.pe, kp.simd))
        # the integer reference is the PyTorch layer: acc * s_act * gamma + bias == float output
        assert info["acc_max_abs_err"] <= 1e-4 * max(1.0, info["out_max_abs"])
        # and the int8 output dequantises to it within the requantisation step (+ bias rounding)
        assert info["out_max_abs_err"] <= 0.51 * info["out_scale"] + 1e-3 * info["out_max_abs"]
        # top-k really thinned the stream: density follows the sparsity knob
        assert info["act_density"] <= 1.0 - sparsity + 0.02
        assert layer.m == 50           # 7 x 7 patches + CLS of the 98 px tiny model


def _decompressed(layer):
    from tatvpr_hw.hlsflow.formats import decompress_activations
    return decompress_activations(layer.tok_nnz, layer.pairs, layer.k, layer.simd)


def _weights(layer):
    from tatvpr_hw.hlsflow.formats import unpack_weights
    return unpack_weights(layer.weights, layer.n, layer.k, layer.fmt)


def test_sparsity_cuts_chunk_cycles(csim_builds, tiny_student, tmp_path):
    model, images = tiny_student
    kp, exe = csim_builds["pe4_simd8"]
    cycles = {}
    for s in (0.0, 0.5):
        ((layer, info),) = model_layers(model, images, s, pe=kp.pe, simd=kp.simd, names=[LAYERS[1]])
        (res,) = run_csim(exe, [layer], tmp_path / str(s))
        assert res.mismatches == 0
        cycles[s] = int(res.chunk_cycles.sum())
    assert cycles[0.5] < 0.6 * cycles[0.0]


@pytest.mark.parametrize("fmt", ["ternary2", "ternary1.6"])
def test_trace_file_layers(csim_builds, tmp_path, fmt):
    from sim.trace import read_trace, synthetic_vit_trace, write_trace

    path = write_trace(tmp_path / "t.npz", synthetic_vit_trace(depth=1, dim=64, tokens=17, heads=2,
                                                                sparsity=0.5, seed=3))
    trace = read_trace(path)
    kp, exe = csim_builds["pe4_simd8"]
    pairs = layers_from_trace(trace, pe=kp.pe, simd=kp.simd, fmt=fmt, seed=5)
    assert len(pairs) == 4
    results = run_csim(exe, [p[0] for p in pairs], tmp_path / "run")
    for op, (layer, info), res in zip(trace.ternary_ops(), pairs, results):
        assert res.status == 0 and res.mismatches == 0, info["name"]
        x = _decompressed(layer)
        np.testing.assert_array_equal(x != 0, op.act_mask)
        np.testing.assert_array_equal(res.out, reference_gemm(x, op.weights(), None, layer.mult, layer.shift)[0])
        np.testing.assert_array_equal(res.chunk_cycles,
                                      expected_fold_cycles(op.act_mask, op.weights(), kp.pe, kp.simd))


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
    ((layer, _),) = model_layers(model, images, 0.4, pe=kp.pe, simd=kp.simd, names=[LAYERS[2]])
    np.testing.assert_array_equal(_decompressed(layer) != 0, ops[LAYERS[2]].act_mask)
    np.testing.assert_array_equal(_weights(layer), ops[LAYERS[2]].weights())
    pairs = layers_from_trace(trace, pe=kp.pe, simd=kp.simd, seed=2, max_layers=1)
    for (lay, info), res in zip(pairs, run_csim(exe, [p[0] for p in pairs], tmp_path / "run")):
        assert res.mismatches == 0 and res.status == 0, info["name"]
        op = ops[info["name"]]
        np.testing.assert_array_equal(res.chunk_cycles, expected_fold_cycles(op.act_mask, op.weights(), kp.pe, kp.simd))
