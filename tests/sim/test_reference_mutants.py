"""sim/reference.py checks added for the mutants `make mutation` left alive in the literal
reference (docs/testing.md, "sim/reference.py"): its defaults, its own choice of loop order,
output spills and read-back of the int8 grid, the systolic reference's spills and counts, the
lane wiring of the bank scheduler. Every expected number is worked by hand in the comments from
docs/engine.md (the engine's closed form, evaluated by hand, where a tick count is long).
"""

import numpy as np
import pytest

from sim.reference import reference_dense, reference_layer, reference_systolic, schedule_chunks


# ------------------------------------------------------------------------------ reference_layer
def _dense_case(k=34):
    return np.ones((5, k), bool), np.ones((4, k), np.int8)


def test_reference_layer_defaults_by_hand():
    # M = 5, K = 34, N = 4, PE 2 (2 folds), SIMD 4; defaults: ternary2, D = 16 bytes/cycle, double
    # buffering, fill = log2(4) + 2 = 4, no decoder or DRAM latency, B = SIMD = 4 banks, 1 port,
    # input resident (one block), no output buffer limit, loop order auto (a tie: fold_outer).
    # mode none: every token ceil(ceil(34/4) / 1) = 9 chunks -> C_f = 5 * 9 = 45 per fold;
    # a fold's weights 2 * 34 * 2 / 8 = 17 bytes -> X = ceil(17 / 16) = 2
    mask, w = _dense_case()
    r = reference_layer(mask, w, pe=2, simd=4, skip_mode="none", act_values=np.ones((5, 34), np.int64))
    assert r["cycles"] == 2 + 45 + 45 + 4 == 96  # X0 + max(C0, X1) + max(C1, 0) + fill
    assert r["compute"].tolist() == [45, 45]
    assert (r["loop_order"], r["token_blocks"], r["spill"]) == ("fold_outer", 1, 0)
    assert r["counts"]["dram_act_bits"] == 0 and r["counts"]["dram_weight_bits"] == 2 * 17 * 8
    assert r["y"].dtype == np.int64 and r["y"].tolist() == [[34] * 4] * 5  # 34 products of 1 x 1
    # ternary1.6: 2 * 34 * 1.6 / 8 = 13.6 bytes -> X = 1, and no decoder latency by default
    assert reference_layer(mask, w, pe=2, simd=4, skip_mode="none", weight_format="ternary1.6")["cycles"] == 95
    # without double buffering every load is waited for: 2 + 45 + 2 + 45 + 4
    assert reference_layer(mask, w, pe=2, simd=4, skip_mode="none", double_buffering=False)["cycles"] == 98


def test_reference_layer_one_token_must_fit():
    mask, w = _dense_case(8)
    with pytest.raises(AssertionError, match="^one token does not fit the activation buffer$"):
        reference_layer(mask, w, pe=2, simd=4, skip_mode="none", act_buffer_words=3)  # 3 // 2 < 2 words


@pytest.mark.parametrize("m, pe, n, fmt, want", [
    # K = 8, SIMD 4: a token takes 2 words; an 8-word activation buffer: blocks of floor(8 / 2) = 4
    # words = 2 tokens, t = ceil(M / 2).
    # fold bytes F = PE * 8 * bits / 8, activation bytes A = M * 8; two folds (N = 2 PE):
    #   fold_outer loads F per fold once and every block per fold: 2F + 2A
    #   token_outer loads every fold per block and every block once: 2tF + A
    # M = 5 (t = 3, A = 40), PE 5 (F = 10): 20 + 80 = 100 vs 60 + 40 = 100: a tie -> fold_outer
    (5, 5, 10, "ternary2", "fold_outer"),
    # M = 6 (t = 3, A = 48, last block 2 tokens), PE 7 (F = 14): 28 + 96 = 124 vs 84 + 48 = 132
    (6, 7, 14, "ternary2", "fold_outer"),
    # M = 5, PE 6 at 1.6 bits (F = 9.6): 19.2 + 80 = 99.2 vs 57.6 + 40 = 97.6 -> token_outer
    (5, 6, 12, "ternary1.6", "token_outer"),
    # M = 5, PE 2 (F = 4): 8 + 80 = 88 vs 24 + 40 = 64 -> token_outer
    (5, 2, 4, "ternary2", "token_outer"),
])
def test_reference_picks_the_loop_order_by_hand(m, pe, n, fmt, want):
    r = reference_layer(np.ones((m, 8), bool), np.ones((n, 8), np.int8), pe=pe, simd=4, skip_mode="none",
                        weight_format=fmt, act_buffer_words=8)
    assert (r["loop_order"], r["token_blocks"]) == (want, 3)


# ------------------------------------------------------------------------------ reference_dense
def test_reference_dense_weights_defaults_by_hand():
    # [4, 8] x [8, 34] on a 4 x 17 grid, weights streamed: 2 column slices of 8 x 17 = 136 bytes;
    # D = 16 (default) -> 9 cycles a slice; each column tile computes ceil(4/4) x 8 = 8 cycles;
    # L = 0 (default): X0 + max(C0, X1) + max(C1, 0) + pipeline = 9 + 9 + 8 + 4
    assert reference_dense(4, 8, 34, 1, 4, 17, 4, weights=True)["cycles"] == 30
    assert reference_dense(4, 8, 34, 1, 4, 17, 4, weights=True, latency_cycles=3)["cycles"] == 33
    # the double-buffered slice (2 x 8 x 17 = 272 bytes) must fit the weight buffer
    reference_dense(4, 8, 34, 1, 4, 17, 4, weights=True, weight_buffer_bytes=272)
    with pytest.raises(AssertionError):
        reference_dense(4, 8, 34, 1, 4, 17, 4, weights=True, weight_buffer_bytes=271)


def test_reference_dense_uneven_slices_by_hand():
    # [4, 8] x [8, 40] on a 4 x 16 grid at D = 4: slices of 8 x 16, 8 x 16, 8 x 8 bytes = 32, 32, 16
    # cycles; column tiles compute 8 each: 32 + max(8, 32) + max(8, 16) + max(8, 0) + 4
    r = reference_dense(4, 8, 40, 1, 4, 16, 4, weights=True, dram_bytes_per_cycle=4.0)
    assert r["cycles"] == 32 + 32 + 16 + 8 + 4 == 92
    assert r["counts"]["dram_int8_weight_bits"] == (128 + 128 + 64) * 8


def test_reference_dense_spill_and_read_back_by_hand():
    # 2 GEMMs [4, 8] x [8, 10] on a 4 x 16 grid, D = 16: read back 20 bytes first (ceil(20/16) = 2),
    # 2 x 1 x 1 tiles x 8 = 16 compute cycles, pipeline 4; output 2 * 4 * 10 = 80 bytes
    kw = dict(dram_bytes_per_cycle=16.0, readback_bytes=20)
    spilled = reference_dense(4, 8, 10, 2, 4, 16, 4, out_buffer_bytes=64, **kw)
    # 80 > 64: written out in exactly 80 / 16 = 5 cycles
    assert spilled["cycles"] == 2 + 16 + 4 + 5 == 27
    assert spilled["counts"]["dram_spill_bits"] == (20 + 80) * 8
    fits = reference_dense(4, 8, 10, 2, 4, 16, 4, out_buffer_bytes=80, **kw)  # exactly fits
    assert fits["cycles"] == 22 and fits["counts"]["dram_spill_bits"] == 20 * 8


# --------------------------------------------------------------------------- reference_systolic
def test_reference_systolic_defaults_and_counts_by_hand():
    # [4, 34] x [34, 4] on a 2 x 2 array, os: 4 folds of K + rows + cols - 2 = 36 cycles, the last 35
    # (143 in all); a fold's 34 x 2 = 68 weights = 17 bytes at D = 16 (default): 2 cycles; L = 0
    r = reference_systolic(4, 4, 34, rows=2, cols=2, dataflow="os")
    assert r["compute"] == 143 and r["cycles"] == 2 + 143 and r["spill"] == 0
    assert r["counts"] == {
        "pairs_processed": 4 * 4 * 34, "acc_updates": 4 * 4 * 34,
        "weight_buf_write_bits": 4 * 68 * 2, "weight_buf_read_bits": 4 * 68 * 2,
        "act_buf_read_bits": 4 * (2 * 34) * 8, "act_buf_write_bits": 0,
        "out_buf_write_bits": 16 * 8, "requant_mults": 16,
        "dram_weight_bits": 4 * 68 * 2, "dram_act_bits": 0, "dram_spill_bits": 0, "base3_decodes": 0,
    }
    # 1.6 bits: 13.6 bytes -> 1 cycle, and no decoder latency by default
    r16 = reference_systolic(4, 4, 34, rows=2, cols=2, dataflow="os", weight_format="ternary1.6")
    assert r16["cycles"] == 1 + 143
    assert r16["counts"]["base3_decodes"] == 4 * 14  # ceil(68 / 5) per fold


def test_reference_systolic_spill_boundary():
    # [4, 4] x [4, 4] on 2 x 2, os: 1 + 23 = 24 cycles; 16 output bytes
    assert reference_systolic(4, 4, 4, rows=2, cols=2, dataflow="os", out_buffer_bytes=16)["cycles"] == 24
    r = reference_systolic(4, 4, 4, rows=2, cols=2, dataflow="os", out_buffer_bytes=8)
    assert (r["cycles"], r["spill"]) == (25, 1)  # 16 bytes at 16 bytes a cycle: exactly 1
    assert r["counts"]["dram_spill_bits"] == 16 * 8


# ------------------------------------------------------------------------------ schedule_chunks
def test_schedule_chunks_lane_wiring_by_hand():
    # SIMD 4, 2 banks: lanes 0, 2 read bank 0 and lanes 1, 3 bank 1 (lane s reads bank s mod 2).
    # channels 0 1 2 3 4 -> banks 0 1 0 1 0: bank 0 gets 0 (lane 0), 2 (lane 2), 4 (lane 0, next chunk)
    assert schedule_chunks([0, 1, 2, 3, 4], 4, 2, 1) == [{0: 0, 1: 1, 2: 2, 3: 3}, {0: 4}]
    # 4 banks (one lane each): channels 1 and 5 share bank 1 -> two chunks on lane 1
    assert schedule_chunks([1, 5, 2], 4, 4, 1) == [{1: 1, 2: 2}, {1: 5}]
    assert schedule_chunks([], 4, 2, 1) == [{}]  # no work still costs one chunk


def test_reference_dense_spill_of_a_partial_beat():
    # [9, 1] x [1, 9] on a 16 x 16 grid, D = 16: 1 tile x 1 cycle + pipeline 4; 81 output bytes over
    # a 64-byte buffer: 5 full beats of 16 and one more for the last byte -> 6 cycles
    r = reference_dense(9, 1, 9, 1, 16, 16, 4, dram_bytes_per_cycle=16.0, out_buffer_bytes=64)
    assert r["cycles"] == 1 + 4 + 6


# ------------------------------------------------------------- issue 10's blocks, mutants of that run
def test_reference_refuses_a_gather_whose_banks_and_ports_do_not_divide_simd():
    """SIMD 4 with 4 banks of 2 ports would need 8 lanes: refused (a '/' for the '*' let it pass)."""
    mask, w = _dense_case(8)
    with pytest.raises(AssertionError):
        reference_layer(mask, w, pe=2, simd=4, skip_mode="act", banks=4, ports=2)
    reference_layer(mask, w, pe=2, simd=4, skip_mode="act", banks=2, ports=2)  # 2 x 2 = 4 lanes


def test_reference_auto_order_of_a_resident_input_in_several_blocks():
    """M = 5 dense tokens of K = 8, N = 4, PE 2 (2 folds of F = 2 * 8 * 2 / 8 = 4 bytes); the input
    is resident (10 words of 4 values fit 16) but the output buffer holds 2 tokens: blocks 2, 2, 1.
    fold_outer loads each fold once (8 bytes) and never the resident input; token_outer loads both
    folds per block (24 bytes): auto picks fold_outer. Counting the input as loaded (40 bytes per
    fold in fold_outer: 88 vs 24 + 40 = 64) would pick token_outer."""
    r = reference_layer(np.ones((5, 8), bool), np.ones((4, 8), np.int8), pe=2, simd=4, skip_mode="none",
                        act_buffer_words=16, out_buffer_tokens=2)
    assert (r["loop_order"], r["token_blocks"]) == ("fold_outer", 3)
    assert r["counts"]["dram_weight_bits"] == 2 * 4 * 8 and r["counts"]["dram_act_bits"] == 0


def test_reference_layer_adder_tree_output_fit_and_scheduler_lag_by_hand():
    """The defaults case (96 cycles with fill = log2(4) + 2 = 4) with a 7-stage adder tree: fill
    7 + 2 = 9 -> 101. Its 5 x 4 = 20 output bytes fit a 20-byte output buffer exactly (no spill);
    19 bytes spill all 20 at 16 bytes a tick: 2 ticks. The bank scheduler's lag is 1 tick in act,
    0 in the other modes."""
    mask, w = _dense_case()
    assert reference_layer(mask, w, pe=2, simd=4, skip_mode="none", tree_stages=7)["cycles"] == 101
    fits = reference_layer(mask, w, pe=2, simd=4, skip_mode="none", out_buffer_bytes=20)
    assert (fits["cycles"], fits["spill"], fits["counts"]["dram_spill_bits"]) == (96, 0, 0)
    over = reference_layer(mask, w, pe=2, simd=4, skip_mode="none", out_buffer_bytes=19)
    assert (over["cycles"], over["spill"], over["counts"]["dram_spill_bits"]) == (98, 2, 20 * 8)
    assert reference_layer(mask, w, pe=2, simd=4, skip_mode="none")["scheduler_lag"] == 0
    assert reference_layer(mask, w, pe=2, simd=4, skip_mode="act")["scheduler_lag"] == 1
