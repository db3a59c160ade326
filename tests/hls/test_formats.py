"""The IP's data formats (shared by the host flow, the C testbench files and the PYNQ driver)."""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tatvpr_hw.lower.hls import formats as F
from tatvpr_hw.lower.hls.paths import driver_package


def _schedule_by_loops(x, simd, banks):
    """docs/engine.md section 3's bank-scheduled stream written out with plain loops."""
    q = simd // banks
    chunks, words = [], []
    for row in x:
        per_bank = [[k for k in range(x.shape[1]) if k % banks == b and row[k] != 0] for b in range(banks)]
        c = max(1, max(-(-len(ch) // q) for ch in per_bank))
        block = [0] * (c * simd)
        for b, ch in enumerate(per_bank):
            for i, k in enumerate(ch):
                block[(i // q) * simd + (i % q) * banks + b] = (int(row[k]) & 0xFF) | (k << 8)
        chunks.append(c)
        words += block
    return chunks, words


@st.composite
def _gather(draw):
    simd = draw(st.integers(1, 12))
    banks = draw(st.sampled_from([b for b in range(1, simd + 1) if simd % b == 0]))
    return simd, banks


@settings(max_examples=80, deadline=None)
@given(x=arrays(np.int8, st.tuples(st.integers(1, 6), st.integers(1, 40)),
                elements=st.sampled_from([0, 0, 0, 1, -3, 7, 127, -128]), fill=st.nothing()),
       gather=_gather())
@example(x=np.array([[1, 0, 1, 0, 1, 0, 1]], np.int8), gather=(4, 2))    # 4 in bank 0 of 2 lanes
def test_schedule_layout_round_trip_and_cycles(x, gather):
    from sim.engine import token_cycles

    simd, banks = gather
    chunks, pairs = F.schedule_activations(x, simd, banks)
    want_chunks, want_words = _schedule_by_loops(x, simd, banks)
    assert chunks.tolist() == want_chunks and pairs.tolist() == want_words
    # the token's chunks are the simulator's act-mode cycles c(m), bank conflicts included
    w = np.ones((1, x.shape[1]), np.int8)
    np.testing.assert_array_equal(chunks, token_cycles(x != 0, w, 1, simd, "act", banks=banks)[:, 0])
    np.testing.assert_array_equal(F.chunks_per_token(x != 0, simd, banks), chunks)
    np.testing.assert_array_equal(F.unschedule_activations(chunks, pairs, x.shape[1], simd, banks), x)
    lane = np.arange(pairs.size) % simd
    live = pairs != 0
    assert (((pairs[live] >> 8) % banks) == lane[live] % banks).all()    # the bank rule
    assert live.sum() == (x != 0).sum() and (pairs >> 24 == 0).all()


def test_bank_conflict_example_by_hand():
    # SIMD 4, B = 2 (q = 2): channels 0, 2, 4 are all in bank 0 -> ceil(3 / 2) = 2 chunks;
    # chunk 0: slots 0, 2 (bank 0 lanes) = channels 0, 2; slot 1 = channel 1 (bank 1);
    # chunk 1: slot 0 = channel 4, the rest pads.
    x = np.array([[5, -1, 6, 0, 7]], np.int8)
    chunks, pairs = F.schedule_activations(x, 4, 2)
    assert chunks.tolist() == [2]
    assert pairs.tolist() == [0x005, 0x1FF, 0x206, 0, 0x407, 0, 0, 0]
    bad = pairs.copy()
    bad[0], bad[1] = bad[1], bad[0]                                      # channel 1 in a bank-0 lane
    with pytest.raises(F.FormatError, match="channel 1 is in bank 1, but slot 0 reads bank 0"):
        F.unschedule_activations(chunks, bad, 5, 4, 2)


def test_doctests():
    mod = driver_package().formats
    assert doctest.testmod(mod).failed == 0


@settings(max_examples=60, deadline=None)
@given(w=arrays(np.int8, st.tuples(st.integers(1, 5), st.integers(1, 23)), elements=st.integers(-1, 1)),
       fmt=st.sampled_from(["ternary2", "ternary1.6"]))
def test_weight_round_trip(w, fmt):
    flat = F.pack_weights(w, fmt)
    assert flat.ndim == 1 and flat.size == w.shape[0] * -(-w.shape[1] // (4 if fmt == "ternary2" else 5))
    np.testing.assert_array_equal(F.unpack_weights(flat, *w.shape, fmt), w)


def test_requantize_rounds_half_up_and_saturates():
    # mult / 2^shift = 1/4
    v = np.array([2, -2, 6, -6, 1, -1, 10_000, -10_000])
    assert F.requantize(v, 1 << 29, 31).tolist() == [1, 0, 2, -1, 0, 0, 127, -128]


@settings(max_examples=200, deadline=None)
@given(r=st.floats(1e-9, 1e3))
def test_quantize_multiplier_precision(r):
    mult, shift = F.quantize_multiplier(r)
    assert 0 < mult < 2 ** 31 and 1 <= shift <= 62
    assert abs(mult / 2 ** shift - r) <= r * 2 ** -29


@pytest.mark.parametrize("call, message", [
    (lambda: F.schedule_activations(np.zeros((2, 3), np.int16), 4), "must be int8"),
    (lambda: F.schedule_activations(np.zeros(3, np.int8), 4), "2-D"),
    (lambda: F.schedule_activations(np.zeros((2, 3), np.int8), 8, banks=3), "banks = 3 must be a divisor of SIMD = 8"),
    (lambda: F.prepare_layer(np.zeros((2, 4), np.int8), np.zeros((3, 4), np.int8), None, 1, 1, pe=2, simd=8,
                             banks=8, ports=2), "ports = 2 must be 1 or 2 with banks x ports dividing SIMD = 8"),
    (lambda: F.pack_weights(np.array([[2, 0]]), "ternary2"), "{-1, 0, +1}"),
    (lambda: F.pack_weights(np.array([[1, 0]]), "ternary3"), "unknown weight format"),
    (lambda: F.quantize_multiplier(0.0), "finite positive"),
    (lambda: F.quantize_multiplier(2.0 ** 40), "outside"),
    (lambda: F.prepare_layer(np.zeros((2, 4), np.int8), np.zeros((3, 5), np.int8), None, 1, 1, pe=2, simd=2),
     "do not chain"),
    (lambda: F.prepare_layer(np.zeros((2, 4), np.int8), np.zeros((3, 4), np.int8), np.full(3, 2 ** 31 - 1),
                             1, 1, pe=2, simd=2), "2^30"),
])
def test_bad_inputs_name_the_problem(call, message):
    with pytest.raises(F.FormatError, match=re.escape(message)):
        call()


def test_layer_file_round_trip_fields(tmp_path):
    x = np.array([[0, 5, -3], [0, 0, 0]], np.int8)
    w = np.array([[1, 0, -1], [0, 1, 1]], np.int8)
    layer = F.prepare_layer(x, w, np.array([7, -7]), 1 << 30, 31, pe=2, simd=2, fmt="ternary1.6")
    raw = F.write_layer_file(tmp_path / "l.bin", layer).read_bytes()
    assert raw[:8] == b"TVPRLYR3"
    # pe, simd, banks (None -> SIMD), ports, m, k, n, fmt, mult, shift, order (fold_outer), resident
    assert np.frombuffer(raw[8:56], "<i4").tolist() == [2, 2, 2, 1, 2, 3, 2, 1, 1 << 30, 31, 0, 1]
    # by hand: token 0 acc = [0 + 0 + 3, 0 + 5 - 3] + bias [7, -7] = [10, -5]; token 1 = [7, -7];
    # times 2^30 / 2^31 = 1/2 with round-half-up: [5, -2.5 -> -2], [3.5 -> 4, -3.5 -> -3]
    np.testing.assert_array_equal(layer.expected, [[5, -2], [4, -3]])
