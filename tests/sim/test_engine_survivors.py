"""Engine checks added for the sim/engine.py mutants the first `make mutation` run left alive
(docs/testing.md, "sim/engine.py"). Every expected number is worked by hand in the comments
from docs/engine.md; none is computed by sim.engine.

Arch of the cases (tests/sim/conftest.py make_arch): 250 MHz, DRAM 1 GB/s x efficiency 1 ->
D = 4 bytes per cycle, latency 40 ns -> L = 10 cycles.
"""

import re

import numpy as np
import pytest

from sim.arch import arch_from_dict, with_overrides
from sim.engine import (_passes, act_buffer_bytes, bank_counts, choose_loop_order, index_bits, systolic_layer,
                        ternary_layer, vector_cycles, weight_bank_max)
from sim.errors import SimInputError
from sim.packing import pack_ternary2
from sim.trace import TernaryLinearOp


def _op(mask, w, name="l"):
    mask = np.asarray(mask, bool)
    w = np.asarray(w, np.int8)
    return TernaryLinearOp(name, mask.shape[0], mask.shape[1], w.shape[0], pack_ternary2(w), mask)


def _arch(make_arch, *, banks=None, out_kb=256, order="auto", **kw):
    return with_overrides(make_arch(**kw), {"compute.gather.banks": banks, "buffers.outputs_kb": out_kb,
                                            "buffers.loop_order": order})


# ------------------------------------------------------------------ ternary_layer: every field
# M = 5 tokens, K = 8, N = 4, PE 2 (2 folds), SIMD 4, 4 banks (q = 1).
# Activation buffer 32 bytes < M*K = 40: tiled, h = 2 -> M_t = floor(32 / 16) = 2: blocks 2, 2, 1.
# Weights: rows with 8, 4, 2 and 0 nonzeros (14 in all).
W_TILED = np.array([[1, -1, 1, -1, 1, -1, 1, -1],
                    [1, 0, 1, 0, -1, 0, 1, 0],
                    [0, 0, 0, 1, 0, 0, 0, -1],
                    [0, 0, 0, 0, 0, 0, 0, 0]])


@pytest.mark.parametrize("mode", ["none", "weight"])
def test_tiled_layer_every_field_by_hand(make_arch, mode):
    # Both modes take c(m, f) = ceil(K / SIMD) = 2 per token and fold (none: all K; weight: the
    # token-load bound, g <= ceil(ceil(8/4) / 1) = 2), so the cycles are the same.
    # token_outer steps (f,b): (0,0) (1,0) (0,1) (1,1) (0,2) (1,2); a fold's weights 2*8*2/8 = 4 bytes
    # C = 4 4 4 4 2 2 (sum 20); X = (4+16)/4 = 5, 1, 5, 1, (4+8)/4 = 3, 1 (sum 16)
    # L + X0 + max(4,1)+max(4,5)+max(4,1)+max(4,3)+max(2,1)+max(2,0) + fill (log2 4 + 2 = 4) = 40;
    # output M*N = 20 bytes over a 16-byte output buffer: + ceil(20 / 4) = 5 -> 45
    op = _op(np.ones((5, 8)), W_TILED, name="blocks.0.attn.qkv")
    arch = _arch(make_arch, banks=4, order="token_outer", pe=2, simd=4, mode=mode, act_kb=32 / 1024,
                 out_kb=16 / 1024)
    t = ternary_layer(op, arch)
    assert (t.name, t.m, t.k, t.n, t.folds) == ("blocks.0.attn.qkv", 5, 8, 4, 2)
    assert t.cycles == 45
    assert (t.compute_cycles, t.transfer_cycles, t.fill_cycles, t.latency_cycles, t.spill_cycles) == (20, 16, 4, 10, 5)
    # waits: X0 = 5 before the first step and max(4, 5) - 4 = 1 at step 1: 45 - 20 - 4 - 10 - 5 = 6
    assert t.stall_cycles == 6
    assert (t.loop_order, t.token_blocks, t.act_resident) == ("token_outer", 3, False)
    assert t.output_bytes == 20 and type(t.output_bytes) is int and t.output_spilled is True
    assert t.counts["pairs_dense"] == 5 * 4 * 8 == 160
    if mode == "none":
        assert t.counts["pairs_processed"] == 160 and t.counts["pairs_skipped"] == 0
    else:  # every token meets the 14 nonzero weights: 5 * 14 = 70 processed, 160 - 70 skipped
        assert t.counts["pairs_processed"] == 70 and t.counts["pairs_skipped"] == 90


def test_token_that_does_not_fit_names_the_arch(make_arch):
    op = _op(np.ones((5, 8)), W_TILED, name="fc")
    # 12 bytes = 3 words of 4 values; a block holds floor(3 / 2) = 1 < the 2 words of a token
    arch = _arch(make_arch, banks=4, pe=2, simd=4, mode="none", act_kb=12 / 1024)
    with pytest.raises(SimInputError) as e:
        ternary_layer(op, arch)
    assert str(e.value).startswith(arch.source + ": buffers.activations_kb = ")


# ----------------------------------------------------------- weight buffer and accumulator checks
def test_weight_buffer_exact_fit_and_message(make_arch):
    # K_max = floor(8192 * weights_kb / (h * PE * 2)) rounded down to 4 banks; PE 2.
    # double buffered, 8/1024 KiB: floor(8192 * 8/1024 / 8) = 8 -> K = 8 fits exactly
    w8 = np.ones((2, 8))
    ternary_layer(_op(np.ones((1, 8)), w8), _arch(make_arch, banks=4, pe=2, simd=4, mode="none", w_kb=8 / 1024))
    # K = 10 does not; the message asks for K rounded up to the banks (12) x h 2 x PE 2 x 2 bits
    # = 96 bits... in KiB: 12 * 2 * 2 * 2 / 8192 = 96 / 8192
    op10 = _op(np.ones((1, 10)), np.ones((2, 10)), name="fc2")
    for db, w_kb, need_kb in [(True, 8 / 1024, 96 / 8192), (False, 4 / 1024, 48 / 8192)]:
        # not double buffered: 4/1024 KiB holds floor(8192 * 4/1024 / 4) = 8; need 12 * 1 * 2 * 2 / 8192
        arch = _arch(make_arch, banks=4, pe=2, simd=4, mode="none", w_kb=w_kb, db=db)
        with pytest.raises(SimInputError, match=re.escape(
                f"layer 'fc2' has K = 10: need buffers.weights_kb >= {need_kb:g} or a smaller compute.pe") + "$"):
            ternary_layer(op10, arch)


def test_accumulator_bits_boundaries(make_arch):
    # K = 510: |sum| <= 510 * 128 = 65280 < 2**16: 17 bits hold it; 16 bits (2**15 = 32768) do not,
    # and ceil(log2 65280) + 1 = 16 + 1 = 17 bits are asked for
    op = _op(np.ones((1, 510)), np.ones((1, 510)), name="fc")
    arch = make_arch(pe=1, simd=2, mode="none")
    ternary_layer(op, with_overrides(arch, {"compute.accumulator_bits": 17}))
    with pytest.raises(SimInputError, match=re.escape("need at least 17 bits") + "$"):
        ternary_layer(op, with_overrides(arch, {"compute.accumulator_bits": 16}))


def test_accumulator_boundary_k_times_128_equals_half_the_range(make_arch):
    """K = 256: every x = -128 and w = -1 sums to 128 * 256 = 32768 = 2^15, one over the largest
    16-bit signed value 32767 (numpy's int16 wraps it to -32768), so 16 bits must be refused and
    17 asked for; 255 products (32640) fit 16 bits. The old check (K * 128 > 2^15) let K = 256 pass."""
    x = np.full(256, -128, np.int16)
    w = np.full(256, -1, np.int16)
    assert int((x * w).sum(dtype=np.int16)) == -32768 and int((x * w).sum(dtype=np.int64)) == 32768
    assert int((x[:255] * w[:255]).sum(dtype=np.int16)) == 32640  # no wrap
    arch = make_arch(pe=1, simd=2, mode="none")
    op = _op(np.ones((1, 256)), np.ones((1, 256)), name="fc")
    with pytest.raises(SimInputError, match=re.escape("K = 256 int8 products); need at least 17 bits") + "$"):
        ternary_layer(op, with_overrides(arch, {"compute.accumulator_bits": 16}))
    ternary_layer(op, with_overrides(arch, {"compute.accumulator_bits": 17}))
    ternary_layer(_op(np.ones((1, 255)), np.ones((1, 255)), name="fc"),
                  with_overrides(arch, {"compute.accumulator_bits": 16}))


# -------------------------------------------------------------------- token tiling, loop order
def test_token_blocks_boundaries_and_defaults():
    """ternary_format.tiling.token_blocks (the rule of the engine and the board driver) by hand."""
    from ternary_format.tiling import TokenTooLarge
    from ternary_format.tiling import token_blocks as blocks

    # 4 tokens of 2 words in 8 words: resident, one block (also when the tokens exactly fit)
    assert blocks([2, 2, 2, 2], 8, 100, 2) == (True, [(0, 4)])
    # ... unless the previous op spilled them: blocks of floor(8 / 2) = 4 words
    assert blocks([2, 2, 2, 2], 8, 100, 2, input_in_dram=True) == (False, [(0, 2), (2, 4)])
    # 7 words < 8: tiled; h = 2: 3 words a block (one token), h = 1: 7 words (3 tokens)
    assert blocks([2, 2, 2, 2], 7, 100, 2) == (False, [(0, 1), (1, 2), (2, 3), (3, 4)])
    assert blocks([2, 2, 2, 2], 7, 100, 1) == (False, [(0, 3), (3, 4)])
    # uneven words, greedy in token order: a block ends before the token that would overflow it
    assert blocks([3, 1, 2, 1, 1, 3], 8, 100, 2) == (False, [(0, 2), (2, 5), (5, 6)])
    # the output buffer's tokens bound a block, resident or not
    assert blocks([1] * 5, 8, 2, 2) == (True, [(0, 2), (2, 4), (4, 5)])
    assert blocks([1] * 5, 4, 3, 1, input_in_dram=True) == (False, [(0, 3), (3, 5)])
    assert blocks([], 4, 3, 2) == (True, [])
    # one token over a block: 3 words in 4 words halved
    with pytest.raises(TokenTooLarge, match="^one token takes 3 words of the activation buffer; a block may "
                                            "hold 2$"):
        blocks([1, 3], 4, 10, 2, input_in_dram=True)
    assert blocks([1, 3], 4, 10, 2) == (True, [(0, 2)])  # resident: the whole buffer is one block


def test_passes_by_hand():
    # (weight loads per fold, activation loads per block)
    assert _passes("fold_outer", 3, 2, False) == (1, 3)   # every fold re-reads both blocks
    assert _passes("fold_outer", 3, 1, False) == (1, 1)   # one block: loaded once
    assert _passes("fold_outer", 3, 2, True) == (1, 0)
    assert _passes("token_outer", 3, 2, False) == (2, 1)  # every block re-reads the 3 folds
    assert _passes("token_outer", 1, 3, False) == (1, 1)  # one fold: loaded once
    assert _passes("token_outer", 1, 3, True) == (1, 0)


@pytest.mark.parametrize("n_f, t, fold_bytes, act_bytes, want", [
    # fold_outer: n_f*fb + n_f*ab; token_outer: t*n_f*fb + ab
    (2, 2, 1000, 100, "fold_outer"),   # 2000 + 200 = 2200 vs 4000 + 100 = 4100
    (2, 2, 100, 1000, "token_outer"),  # 200 + 2000 = 2200 vs 400 + 1000 = 1400
    (3, 2, 100, 100, "fold_outer"),    # 300 + 300 = 600 vs 600 + 100 = 700
    (3, 2, 100, 250, "token_outer"),   # 300 + 750 = 1050 vs 600 + 250 = 850
    (2, 3, 10, 10, "fold_outer"),      # 20 + 20 = 40 vs 60 + 10 = 70
])
def test_auto_loop_order_by_hand(n_f, t, fold_bytes, act_bytes, want):
    assert choose_loop_order("auto", n_f, t, False, fold_bytes, act_bytes) == want
    assert choose_loop_order("token_outer", n_f, t, False, fold_bytes, act_bytes) == "token_outer"


# -------------------------------------------------------------------------- small helpers
def test_index_bits_by_hand():
    # bits to name one of K channels: K = 1, 2 -> 1; 3, 4 -> 2; 5..8 -> 3; 9 -> 4; 768 -> 10
    assert [index_bits(k) for k in (1, 2, 3, 4, 5, 8, 9, 768, 1024, 1025)] == [1, 1, 2, 2, 3, 3, 4, 10, 10, 11]


def test_act_buffer_bytes_is_whole_bytes():
    assert act_buffer_bytes(3, 5) == 15 and type(act_buffer_bytes(3, 5)) is int


def test_bank_counts_counts_nonzero_entries():
    # channels 0..4 in banks 0 1 0 1 0; nonzero at channels 0 (bank 0), 2 (bank 0), 3 (bank 1):
    # an activation-value array counts like its mask (values 2 and -3 count once each)
    vals = np.array([[2, 0, -3, 1, 0], [0, 0, 0, 0, 0]])
    got = bank_counts(vals, 2)
    assert got.tolist() == [[2, 1], [0, 0]] and got.dtype == np.int64


def test_weight_bank_max_by_hand():
    # K = 8, 2 banks (even / odd channels). Row 0: nonzeros at 0 2 4 (bank 0: 3) and 1 (bank 1: 1) -> 3;
    # row 1: 1 3 5 7 (bank 1: 4) -> 4; row 2: none -> 0
    w = np.array([[1, -1, 1, 0, -1, 0, 0, 0],
                  [0, 1, 0, 1, 0, -1, 0, 1],
                  [0, 0, 0, 0, 0, 0, 0, 0]])
    got = weight_bank_max(_op(np.ones((1, 8)), w), 2)
    assert got.tolist() == [3, 4, 0] and got.dtype == np.int64


def test_vector_cycles_with_non_unit_costs(make_arch):
    arch = with_overrides(make_arch(), {"vector_unit.cycles_per_element.softmax": 2.0})
    # 600 elements on 16 lanes: ceil(600 / 16) = 38 beats x 2 cycles + pipeline 8 = 84
    assert vector_cycles(600, "softmax", arch) == 84
    host = with_overrides(make_arch(), {"vector_unit.mode": "host", "vector_unit.host_ns_per_element.gelu": 2.0})
    # 5 us + 600 x 2 ns = 6200 ns at 250 MHz = 1550 cycles
    assert vector_cycles(600, "gelu", host) == 1550


# ------------------------------------------------------------- 'both' mode chunk sums (tiled)
def _both_op():
    # M = 2048 tokens, K = 8, N = 70 outputs: large enough that the chunk sum runs over several
    # cache tiles. Even tokens: all 8 channels nonzero; odd tokens: channel 0 only.
    # Even outputs: all 8 weights nonzero; odd outputs: channels 0 and 4 only.
    mask = np.zeros((2048, 8), bool)
    mask[0::2] = True
    mask[1::2, 0] = True
    w = np.zeros((70, 8), np.int8)
    w[0::2] = 1
    w[1::2, [0, 4]] = -1
    return _op(mask, w, name="both")


def test_both_mode_accumulator_updates_per_bank_count(make_arch):
    op = _both_op()
    # SIMD 4, 4 banks (q = 1; channel k in bank k mod 4): g = max(1, max_b |nz(x) & nz(w) & bank b|)
    #   even token x even output: 2 per bank -> 2; even x odd: {0, 4}, both bank 0 -> 2;
    #   odd token: {0} -> 1.  Sum: 1024 * 70 * 2 + 1024 * 70 * 1 = 215040
    a4 = _arch(make_arch, banks=4, pe=2, simd=4, mode="both")
    # 2 banks (q = 2; even / odd channels): g = max(1, ceil(max_b |...| / 2))
    #   even x even: 4 per bank -> 2; even x odd: {0, 4} in bank 0 -> ceil(2/2) = 1; odd token -> 1.
    #   Sum: 1024 * (35 * 2 + 35 * 1) + 1024 * 70 = 107520 + 71680 = 179200
    a2 = _arch(make_arch, banks=2, pe=2, simd=4, mode="both")
    # the same op object under both archs and twice each (the engine may cache per op)
    assert ternary_layer(op, a4).counts["acc_updates"] == 215040
    assert ternary_layer(op, a2).counts["acc_updates"] == 179200
    assert ternary_layer(op, a4).counts["acc_updates"] == 215040
    assert ternary_layer(op, a2).counts["acc_updates"] == 179200
    # a fresh op, 2 banks first
    assert ternary_layer(_both_op(), a2).counts["acc_updates"] == 179200


# ------------------------------------------------------------------------ systolic mode
# GEMM [M, K] x [K, N] with M = N = K = 4 on a 2 x 2 array (rows = pe, cols = simd), dataflow os:
# ceil(4/2) x ceil(4/2) = 4 folds of K + rows + cols - 2 = 6 cycles, the last one 5: 23 in all
# (SCALE-Sim v3: `scalesim-cycles 4 4 4 2 2 os` prints compute_cycles 23).
# A fold fetches its K x cols = 8 weights (2 bytes at 2 bits) and, when the input is not
# resident, its rows x K = 8 activation bytes.
MASK_S = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]])  # 9 nonzeros
W_S = np.array([[1, -1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [-1, 0, 0, 1]])  # 8 nonzeros


def _sys_arch(db=True, act_kb=256, w_kb=64, out_kb=256):
    return arch_from_dict({
        "name": "sys", "board": "kv260", "energy_table": "horowitz45nm", "clock_mhz": 250, "double_buffering": db,
        "compute": {"mode": "systolic", "dataflow": "os", "pe": 2, "simd": 2, "skip_mode": "none",
                    "weight_format": "ternary2"},
        "buffers": {"weights_kb": w_kb, "activations_kb": act_kb, "outputs_kb": out_kb},
        "dram": {"bandwidth_gb_per_s": 1.0, "efficiency": 1.0, "latency_ns": 40},
    }, "sys-arch")


def test_systolic_layer_every_field_by_hand():
    op = _op(MASK_S, W_S, name="blocks.1.mlp.fc1")
    t = systolic_layer(op, _sys_arch())  # input_in_dram left at its default: not spilled
    # resident input: X_f = ceil(2 / 4) = 1 for every fold; L + X0 + 6 + 6 + 6 + 5 = 10 + 1 + 23 = 34
    assert (t.name, t.m, t.k, t.n, t.folds) == ("blocks.1.mlp.fc1", 4, 4, 4, 4)
    assert t.cycles == 34
    assert (t.compute_cycles, t.transfer_cycles, t.fill_cycles, t.latency_cycles, t.spill_cycles) == (23, 4, 0, 10, 0)
    assert t.stall_cycles == 34 - 23 - 10 == 1  # the first fold's transfer
    assert (t.loop_order, t.token_blocks, t.act_resident) == ("systolic", 1, True)
    assert t.output_bytes == 16 and type(t.output_bytes) is int and t.output_spilled is False
    assert t.counts == {
        "pairs_dense": 64, "pairs_processed": 64, "pairs_skipped": 0, "acc_updates": 64,
        "index_decodes": 0, "intersect_compares": 0,
        "weight_buf_write_bits": 4 * 8 * 2, "weight_buf_read_bits": 4 * 8 * 2,   # 4 folds x 8 weights x 2 bits
        "act_buf_read_bits": 4 * 8 * 8,                                          # 4 folds x 8 bytes
        "out_buf_write_bits": 16 * 8,                                            # os: every output final
        "requant_mults": 16, "dram_weight_bits": 4 * 16, "dram_act_bits": 0, "act_buf_write_bits": 0,
        "act_gather_write_bits": 0, "act_gather_read_bits": 0, "dram_spill_bits": 0, "base3_decodes": 0,
        "nnz_act": 9, "nnz_weight": 8,
    }


def test_systolic_layer_streamed_input_and_spill_by_hand():
    op = _op(MASK_S, W_S)
    # 16 input bytes over an 8-byte activation buffer: every fold also fetches its 8 activation
    # bytes: X_f = ceil((2 + 8) / 4) = 3; 16 output bytes over an 8-byte output buffer: ceil(16/4) = 4
    t = systolic_layer(op, _sys_arch(act_kb=8 / 1024, out_kb=8 / 1024))
    # 10 + 3 + max(6,3) + max(6,3) + max(6,3) + max(5,0) + 4 = 40
    assert t.cycles == 40
    assert (t.transfer_cycles, t.spill_cycles, t.latency_cycles) == (12, 4, 10)
    assert t.stall_cycles == 40 - 23 - 10 - 4 == 3
    assert t.act_resident is False and t.output_spilled is True and t.output_bytes == 16
    assert t.counts["dram_act_bits"] == t.counts["act_buf_write_bits"] == 4 * 8 * 8
    assert t.counts["dram_spill_bits"] == 16 * 8
    # without double buffering every transfer is waited for: 10 + 4 * 3 + 23 + 4 = 49
    assert systolic_layer(op, _sys_arch(db=False, act_kb=8 / 1024, out_kb=8 / 1024)).cycles == 49


def test_systolic_activation_buffer_boundary():
    op = _op(MASK_S, W_S)
    # exactly 16 bytes: resident; 15.995 bytes: not
    assert systolic_layer(op, _sys_arch(act_kb=16 / 1024)).act_resident is True
    assert systolic_layer(op, _sys_arch(act_kb=15.995 / 1024)).act_resident is False
    assert systolic_layer(op, _sys_arch(), input_in_dram=True).act_resident is False


@pytest.mark.parametrize("db, halves", [(True, 2), (False, 1)])
def test_systolic_weight_buffer_boundary_and_message(db, halves):
    op = _op(MASK_S, W_S, name="fc")
    # a fold's 8 weights = ceil(8 * 2 / 8) = 2 bytes; the buffer holds `halves` of them
    fit_bytes = 2 * halves
    systolic_layer(op, _sys_arch(db=db, w_kb=fit_bytes / 1024))  # exactly fits
    short_kb = (fit_bytes - 0.001) / 1024
    with pytest.raises(SimInputError, match=re.escape(
            f"sys-arch: weight buffer of {short_kb:g} KiB cannot hold {halves} systolic fold(s) (os) of layer "
            f"'fc' (8 2-bit weights = 2 bytes each); need buffers.weights_kb >= {fit_bytes / 1024:g} "
            "or a smaller array") + "$"):
        systolic_layer(op, _sys_arch(db=db, w_kb=short_kb))


def test_systolic_weight_buffer_rounds_bits_to_bytes_by_hand():
    # K = 34: an os fold holds K x cols = 68 weights = 136 bits = 17 bytes; two halves 34 bytes
    op = _op(np.ones((4, 34)), np.ones((4, 34)), name="fc")
    systolic_layer(op, _sys_arch(w_kb=34 / 1024))
    with pytest.raises(SimInputError, match=re.escape("(68 2-bit weights = 17 bytes each)")):
        systolic_layer(op, _sys_arch(w_kb=33.999 / 1024))


def test_fill_uses_the_configured_adder_tree(make_arch):
    # SIMD 4 would take log2(4) = 2 tree stages; the arch asks for 3: fill = 3 + 2 = 5.
    # mode none, M = 1, K = 4, N = 1: one token of 1 cycle; weights 1 x 4 x 2 bits = 1 byte -> 1 cycle
    op = _op(np.ones((1, 4)), np.ones((1, 4)))
    arch = with_overrides(_arch(make_arch, banks=4, pe=1, simd=4, mode="none"), {"compute.adder_tree_stages": 3})
    t = ternary_layer(op, arch)
    assert t.fill_cycles == 5
    assert t.cycles == 10 + 1 + 1 + 5  # L + X0 + C0 + fill


def test_vector_op_lane_groups_per_row_by_hand(make_arch):
    from sim.engine import vector_op
    from sim.trace import VectorOp

    arch = make_arch()
    # 600 elements in rows of 40 on 16 lanes: a lane group never spans two rows, so each row takes
    # ceil(40 / 16) = 3 groups: 15 rows x 3 = 45 cycles, + 15 rows x 144 row steps (mean 16, product 16,
    # variance 32, square root 32, reciprocal 48) = 2160, + pipeline 8 = 2213 (38 + 8 = 46 without rows: no row steps either)
    assert vector_op(VectorOp("ln", "layernorm", 600, row=40), arch).cycles == 45 + 2160 + 8
    assert vector_op(VectorOp("ln", "layernorm", 600), arch).cycles == 46
    two = with_overrides(arch, {"vector_unit.cycles_per_element.layernorm": 2.0})
    assert vector_cycles(600, "layernorm", two, 40) == 45 * 2 + 2160 + 8
    # softmax rows: 33 reciprocal steps each; row steps of 0 leave the lane groups only
    assert vector_cycles(600, "softmax", arch, 40) == 45 + 15 * 33 + 8
    none = with_overrides(arch, {"vector_unit.row_op_cycles": {"layernorm": 0, "softmax": 0}})
    assert vector_cycles(600, "layernorm", none, 40) == vector_cycles(600, "softmax", none, 40) == 53
    assert vector_cycles(600, "gelu", arch, 40) == 45 + 8  # no row steps


def test_layer_cycles_and_output_spill_by_hand(make_arch):
    from sim.engine import layer_cycles, output_spill

    # latency defaults to 0: X0 + max(C0, X1) + max(C1, 0) + fill = 2 + 5 + 0 + 4
    assert layer_cycles([3, 0], [2, 5], double_buffering=True, fill=4) == 11
    assert layer_cycles([3, 0], [2, 5], double_buffering=False, fill=4) == 2 + 5 + 3 + 0 + 4
    # 20 output bytes: a 20-byte buffer holds them; 19.99 bytes do not: ceil(20 / 4) = 5 cycles
    arch = _arch(make_arch, out_kb=20 / 1024)
    assert output_spill(20, arch) == (False, 0)
    assert output_spill(20, _arch(make_arch, out_kb=19.99 / 1024)) == (True, 5)


def test_act_mode_charges_the_scheduler_cycle(make_arch):
    # docs/engine.md section 4: S = 1 in act (the bank scheduler's token register), 0 otherwise
    op = _op(np.ones((1, 4)), np.ones((1, 4)))
    assert ternary_layer(op, _arch(make_arch, banks=4, pe=1, simd=4, mode="act")).scheduler_fill_cycles == 1
    assert ternary_layer(op, _arch(make_arch, banks=4, pe=1, simd=4, mode="none")).scheduler_fill_cycles == 0
