"""The HLS kernel's C simulation: bit-exact against the Python integer reference, and its
CHUNK-loop trip counts equal the simulator's cycle counts (skip mode "act")."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tatvpr_hw.hlsflow.csim import run_csim
from tatvpr_hw.hlsflow.formats import prepare_layer, quantize_multiplier, reference_gemm

from .conftest import expected_fold_cycles, random_layer


@pytest.mark.parametrize("build", ["pe4_simd8", "pe8_simd4"])
@pytest.mark.parametrize("fmt", ["ternary2", "ternary1.6"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.6, 0.95])
def test_random_layer_bit_exact_and_cycles(csim_builds, tmp_path, build, fmt, sparsity):
    kp, exe = csim_builds[build]
    rng = np.random.default_rng(int(sparsity * 100) + len(fmt) + kp.pe)
    m, k, n = 19, 103, 13          # K, N not multiples of 4, 5, PE or SIMD: exercises padding
    x, w, bias = random_layer(rng, m, k, n, sparsity)
    mult, shift = quantize_multiplier(1.0 / (40.0 * np.sqrt(k)))
    layer = prepare_layer(x, w, bias, mult, shift, pe=kp.pe, simd=kp.simd, fmt=fmt)
    (res,) = run_csim(exe, [layer], tmp_path)
    assert res.status == 0
    want, _ = reference_gemm(x, w, bias, mult, shift)
    np.testing.assert_array_equal(res.out, want)
    assert res.mismatches == 0
    # the outputs are not trivially saturated or zero: the test can see a wrong sum
    assert np.unique(want).size > 10
    np.testing.assert_array_equal(res.chunk_cycles, expected_fold_cycles(x != 0, w, kp.pe, kp.simd))


def test_empty_tokens_cost_one_cycle_and_give_bias(csim_builds, tmp_path):
    kp, exe = csim_builds["pe4_simd8"]
    rng = np.random.default_rng(1)
    x, w, bias = random_layer(rng, 6, 40, 9, 0.5)
    x[[0, 3]] = 0                                   # two tokens with no nonzero at all
    x[5, :] = 0
    x[5, :kp.simd] = -127                           # exactly one full chunk
    layer = prepare_layer(x, w, bias, *quantize_multiplier(1 / 64), pe=kp.pe, simd=kp.simd)
    (res,) = run_csim(exe, [layer], tmp_path)
    assert res.status == 0 and res.mismatches == 0
    np.testing.assert_array_equal(res.out[0], res.out[3])   # bias only
    cycles = np.maximum(1, -(-(x != 0).sum(1) // kp.simd))
    assert cycles[0] == 1 and cycles[5] == 1
    assert (res.chunk_cycles == cycles.sum()).all()
    np.testing.assert_array_equal(res.chunk_cycles, expected_fold_cycles(x != 0, w, kp.pe, kp.simd))


def test_saturation_and_rounding_match(csim_builds, tmp_path):
    kp, exe = csim_builds["pe8_simd4"]
    rng = np.random.default_rng(2)
    x, w, bias = random_layer(rng, 8, 64, 16, 0.0, weight_zero_frac=0.0)
    layer = prepare_layer(x, w, bias, *quantize_multiplier(0.37), pe=kp.pe, simd=kp.simd)
    (res,) = run_csim(exe, [layer], tmp_path)
    assert res.status == 0 and res.mismatches == 0
    assert (res.out == 127).any() and (res.out == -128).any()       # both rails hit
    # an exact .5 case rounds up: 3 * 2^30 / 2^31 = 1.5 -> 2, -1.5 -> -1
    x2 = np.array([[3, 0, 0, 0], [-3, 0, 0, 0]], np.int8)
    w2 = np.array([[1, 0, 0, 0]] * kp.pe, np.int8)
    layer2 = prepare_layer(x2, w2, None, 1 << 30, 31, pe=kp.pe, simd=kp.simd)
    (res2,) = run_csim(exe, [layer2], tmp_path / "half")
    assert res2.out[:, 0].tolist() == [2, -1]


def test_testbench_reports_a_wrong_expected_output(csim_builds, tmp_path):
    kp, exe = csim_builds["pe4_simd8"]
    x, w, bias = random_layer(np.random.default_rng(3), 5, 30, 7, 0.2)
    layer = prepare_layer(x, w, bias, *quantize_multiplier(1 / 50), pe=kp.pe, simd=kp.simd)
    wrong = layer.expected.copy()
    wrong[2, 3] = np.int8(wrong[2, 3] ^ 1)
    (res,) = run_csim(exe, [dataclasses.replace(layer, expected=wrong)], tmp_path)
    assert res.mismatches == 1


@pytest.mark.parametrize("corrupt, status", [("index", 4), ("nnz", 4), ("code", 3), ("base3", 3),
                                             ("shift", 5)])
def test_kernel_rejects_corrupt_inputs(csim_builds, tmp_path, corrupt, status):
    kp, exe = csim_builds["pe4_simd8"]
    x, w, bias = random_layer(np.random.default_rng(4), 4, 20, 6, 0.0)
    fmt = "ternary1.6" if corrupt == "base3" else "ternary2"
    layer = prepare_layer(x, w, bias, 1 << 20, 30, pe=kp.pe, simd=kp.simd, fmt=fmt, with_expected=False)
    if corrupt == "index":
        layer.pairs[0] = (layer.pairs[0] & 0xFF) | (20 << 8)       # channel 20 of K = 20
    elif corrupt == "nnz":
        layer.tok_nnz[1] = 21                                       # more kept values than K = 20
    elif corrupt == "code":
        layer.weights[0] = 0b10                                     # unused 2-bit code
    elif corrupt == "base3":
        layer.weights[0] = 243                                      # > 3^5 - 1
    else:
        layer = dataclasses.replace(layer, shift=0)
    (res,) = run_csim(exe, [layer], tmp_path)
    assert res.status == status
