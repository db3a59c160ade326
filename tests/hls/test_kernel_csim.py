"""The HLS kernel's C simulation: bit-exact against the Python integer reference, and its
CHUNK-loop trip counts equal the simulator's cycle counts (skip mode "act", bank conflicts
included: docs/engine.md section 3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tatvpr_hw.lower.hls.csim import run_csim
from tatvpr_hw.lower.hls.formats import quantize_multiplier, reference_gemm

from .conftest import expected_fold_cycles, layer_for, random_layer


@pytest.mark.parametrize("build", ["pe4_simd8", "pe8_simd4", "pe4_simd8_b8"])
@pytest.mark.parametrize("fmt", ["ternary2", "ternary1.6"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.6, 0.95])
def test_random_layer_bit_exact_and_cycles(csim_builds, tmp_path, build, fmt, sparsity):
    kp, exe = csim_builds[build]
    rng = np.random.default_rng(int(sparsity * 100) + len(fmt) + kp.pe + kp.banks)
    m, k, n = 19, 103, 13          # K, N not multiples of 4, 5, PE, SIMD or B: exercises padding
    x, w, bias = random_layer(rng, m, k, n, sparsity)
    mult, shift = quantize_multiplier(1.0 / (40.0 * np.sqrt(k)))
    layer = layer_for(kp, x, w, bias, mult, shift, fmt=fmt)
    (res,) = run_csim(exe, [layer], tmp_path)
    assert res.status == 0
    want, _ = reference_gemm(x, w, bias, mult, shift)
    np.testing.assert_array_equal(res.out, want)
    assert res.mismatches == 0
    # the outputs are not trivially saturated or zero: the test can see a wrong sum
    assert np.unique(want).size > 10
    np.testing.assert_array_equal(res.chunk_cycles, expected_fold_cycles(x != 0, w, kp))


def test_bank_conflicts_worked_by_hand(csim_builds, tmp_path):
    """SIMD 8, B = 4 banks, q = 2 lanes per bank, K = 24 (channel k in bank k mod 4):

    token 0: 6 nonzeros all in bank 0 (channels 0, 4, 8, 12, 16, 20): ceil(6 / 2) = 3 chunks,
             where version 1 (any lane reads any channel) needs ceil(6 / 8) = 1;
    token 1: 6 nonzeros in channels 0..5: banks 0, 1, 2, 3, 0, 1 -> counts 2, 2, 1, 1 -> 1 chunk;
    token 2: no nonzero: 1 chunk (the accumulator write);
    token 3: 8 nonzeros in channels 1, 5, 9, 13 (bank 1) and 2, 3, 6, 7 (banks 2, 3): 4 in bank 1
             -> 2 chunks (version 1: 1).
    Per fold 3 + 1 + 1 + 2 = 7 cycles; N = 9 rows over PE 4 = 3 folds.
    """
    kp, exe = csim_builds["pe4_simd8"]
    assert (kp.simd, kp.banks, kp.ports) == (8, 4, 1)
    k, n = 24, 9
    x = np.zeros((4, k), np.int8)
    x[0, [0, 4, 8, 12, 16, 20]] = [5, -7, 9, 11, -13, 17]
    x[1, :6] = [1, 2, 3, 4, 5, 6]
    x[3, [1, 5, 9, 13, 2, 3, 6, 7]] = [-1, -2, -3, -4, 8, 9, 10, 11]
    rng = np.random.default_rng(11)
    w = rng.choice(np.array([-1, 0, 1], np.int8), size=(n, k))
    bias = np.arange(n, dtype=np.int32) * 3 - 10
    layer = layer_for(kp, x, w, bias, 1 << 30, 31)
    assert layer.tok_chunks.tolist() == [3, 1, 1, 2]
    (res,) = run_csim(exe, [layer], tmp_path)
    assert res.status == 0 and res.mismatches == 0
    assert res.chunk_cycles.tolist() == [7, 7, 7]
    np.testing.assert_array_equal(res.chunk_cycles, expected_fold_cycles(x != 0, w, kp))
    # the same layer on the default machine (B = SIMD = 8, q = 1): token 0 has 6 channels in
    # banks 0, 4, 0, 4, 0, 4 -> 3 chunks; token 1: 1; token 2: 1; token 3: banks 1,5,1,5,2,3,6,7 -> 2
    kp8, exe8 = csim_builds["pe4_simd8_b8"]
    layer8 = layer_for(kp8, x, w, bias, 1 << 30, 31)
    (res8,) = run_csim(exe8, [layer8], tmp_path / "b8")
    assert res8.status == 0 and res8.mismatches == 0
    assert res8.chunk_cycles.tolist() == [7, 7, 7]
    np.testing.assert_array_equal(res8.out, res.out)


def test_empty_tokens_cost_one_cycle_and_give_bias(csim_builds, tmp_path):
    kp, exe = csim_builds["pe4_simd8"]
    rng = np.random.default_rng(1)
    x, w, bias = random_layer(rng, 6, 40, 9, 0.5)
    x[[0, 3]] = 0                                   # two tokens with no nonzero at all
    x[5, :] = 0
    x[5, :kp.simd] = -127                           # channels 0..7: 2 per bank = one full chunk
    layer = layer_for(kp, x, w, bias, *quantize_multiplier(1 / 64))
    (res,) = run_csim(exe, [layer], tmp_path)
    assert res.status == 0 and res.mismatches == 0
    np.testing.assert_array_equal(res.out[0], res.out[3])   # bias only
    assert layer.tok_chunks[[0, 3, 5]].tolist() == [1, 1, 1]
    np.testing.assert_array_equal(res.chunk_cycles, expected_fold_cycles(x != 0, w, kp))


def test_saturation_and_rounding_match(csim_builds, tmp_path):
    kp, exe = csim_builds["pe8_simd4"]
    rng = np.random.default_rng(2)
    x, w, bias = random_layer(rng, 8, 64, 16, 0.0, weight_zero_frac=0.0)
    layer = layer_for(kp, x, w, bias, *quantize_multiplier(0.37))
    (res,) = run_csim(exe, [layer], tmp_path)
    assert res.status == 0 and res.mismatches == 0
    assert (res.out == 127).any() and (res.out == -128).any()       # both rails hit
    # an exact .5 case rounds up: 3 * 2^30 / 2^31 = 1.5 -> 2, -1.5 -> -1
    x2 = np.array([[3, 0, 0, 0], [-3, 0, 0, 0]], np.int8)
    w2 = np.array([[1, 0, 0, 0]] * kp.pe, np.int8)
    layer2 = layer_for(kp, x2, w2, None, 1 << 30, 31)
    (res2,) = run_csim(exe, [layer2], tmp_path / "half")
    assert res2.out[:, 0].tolist() == [2, -1]


def test_testbench_reports_a_wrong_expected_output(csim_builds, tmp_path):
    kp, exe = csim_builds["pe4_simd8"]
    x, w, bias = random_layer(np.random.default_rng(3), 5, 30, 7, 0.2)
    layer = layer_for(kp, x, w, bias, *quantize_multiplier(1 / 50))
    wrong = layer.expected.copy()
    wrong[2, 3] = np.int8(wrong[2, 3] ^ 1)
    (res,) = run_csim(exe, [dataclasses.replace(layer, expected=wrong)], tmp_path)
    assert res.mismatches == 1


def _slot(layer, token, chunk, s):
    """Index into ``layer.pairs`` of slot ``s`` of ``chunk`` of ``token``."""
    start = int(np.asarray(layer.tok_chunks, np.int64)[:token].sum())
    return (start + chunk) * layer.simd + s


@pytest.mark.parametrize("corrupt, status", [("index", 4), ("bank", 4), ("extra_chunk", 4), ("zero_chunks", 4),
                                             ("pad", 4), ("code", 3), ("base3", 3), ("shift", 5), ("k", 1),
                                             ("order", 6), ("resident", 6), ("not_resident", 4)])
def test_kernel_rejects_corrupt_inputs(csim_builds, tmp_path, corrupt, status):
    kp, exe = csim_builds["pe4_simd8"]           # B = 4, q = 2
    x, w, bias = random_layer(np.random.default_rng(4), 4, 20, 6, 0.0)
    x[0] = 0
    x[0, :2] = [7, -9]                           # token 0: channels 0, 1 -> one chunk
    fmt = "ternary1.6" if corrupt == "base3" else "ternary2"
    layer = layer_for(kp, x, w, bias, 1 << 20, 30, fmt=fmt, with_expected=False)
    # dense K = 20: 5 channels per bank -> ceil(5 / 2) = 3 chunks per token
    assert layer.tok_chunks.tolist() == [1, 3, 3, 3]
    i0 = _slot(layer, 1, 0, 0)                   # token 1, chunk 0, slot 0: bank 0, channel 0
    assert (layer.pairs[i0] >> 8) & 0xFFFF == 0
    if corrupt == "index":
        layer.pairs[i0] = (layer.pairs[i0] & 0xFF) | (20 << 8)      # channel 20 of K = 20 (bank 0)
    elif corrupt == "bank":
        layer.pairs[i0] = (layer.pairs[i0] & 0xFF) | (1 << 8)       # channel 1 (bank 1) in a bank-0 lane
    elif corrupt == "extra_chunk":
        # token 0 gets a second, all-pad chunk (2 <= the dense token's 3): the stream still
        # computes right, but it is not the minimal schedule, so its cycles would not be the
        # simulator's
        j = _slot(layer, 1, 0, 0)
        layer.pairs = np.concatenate([layer.pairs[:j], np.zeros(kp.simd, np.uint32), layer.pairs[j:]])
        layer.tok_chunks[0] = 2
    elif corrupt == "zero_chunks":
        layer.tok_chunks[2] = 0                                     # every token takes >= 1 cycle
    elif corrupt == "pad":
        j = _slot(layer, 1, 2, 7)                                   # a pad slot (bank 3 has 5 channels)
        assert layer.pairs[j] == 0
        layer.pairs[j] = 3 << 8                                     # value 0 with a channel
    elif corrupt == "code":
        layer.weights[0] = 0b10                                     # unused 2-bit code
    elif corrupt == "base3":
        layer.weights[0] = 243                                      # > 3^5 - 1
    elif corrupt == "shift":
        layer = dataclasses.replace(layer, shift=0)
    elif corrupt == "k":
        wide = np.zeros((2, kp.kmax + kp.banks), np.int8)            # K over the weight buffer's K_max
        layer = layer_for(kp, wide, np.zeros((6, wide.shape[1]), np.int8), bias, 1 << 20, 30, with_expected=False)
    elif corrupt in ("order", "resident"):
        # register values outside {0, 1}: patch the layer file's header (int32 order at byte 48,
        # resident at 52, tb_ternary_gemm.cpp)
        import struct
        import subprocess

        from tatvpr_hw.lower.hls.formats import read_result_file, write_layer_file
        lp = write_layer_file(tmp_path / "bad.layer.bin", layer)
        raw = bytearray(lp.read_bytes())
        struct.pack_into("<i", raw, 48 if corrupt == "order" else 52, 2)
        lp.write_bytes(bytes(raw))
        subprocess.run([str(exe), str(lp), str(tmp_path / "bad.result.bin")], capture_output=True)
        assert read_result_file(tmp_path / "bad.result.bin").status == status
        return
    elif corrupt == "not_resident":
        # resident = 1 (a block may use the whole buffer) on a stream over the whole buffer
        many = np.ones(((kp.chunks_max // 3) + 1, 20), np.int8)     # 3 chunks a dense token
        layer = layer_for(kp, many, w, bias, 1 << 20, 30, with_expected=False)
    (res,) = run_csim(exe, [layer], tmp_path)
    assert res.status == status
