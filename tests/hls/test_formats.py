"""The IP's data formats (shared by the host flow, the C testbench files and the PYNQ driver)."""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tatvpr_hw.hlsflow import formats as F
from tatvpr_hw.hlsflow.paths import driver_package


@settings(max_examples=60, deadline=None)
@given(x=arrays(np.int8, st.tuples(st.integers(1, 6), st.integers(1, 40))), simd=st.integers(1, 9))
def test_compress_round_trip_and_layout(x, simd):
    nnz, pairs = F.compress_activations(x, simd)
    np.testing.assert_array_equal(nnz, (x != 0).sum(1))
    chunks = F.chunks_per_token(nnz, simd)
    assert pairs.size == chunks.sum() * simd and (chunks >= 1).all()
    np.testing.assert_array_equal(F.decompress_activations(nnz, pairs, x.shape[1], simd), x)
    start = 0
    for m in range(x.shape[0]):
        words = pairs[start:start + chunks[m] * simd]
        idx = (words[:nnz[m]] >> 8) & 0xFFFF
        assert (np.diff(idx.astype(np.int64)) > 0).all()                 # ascending channels
        assert (words[nnz[m]:] == 0).all()                               # zero padding words
        assert (words >> 24 == 0).all()
        start += chunks[m] * simd


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
    (lambda: F.compress_activations(np.zeros((2, 3), np.int16), 4), "must be int8"),
    (lambda: F.compress_activations(np.zeros(3, np.int8), 4), "2-D"),
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
    assert raw[:8] == b"TVPRLYR1"
    assert np.frombuffer(raw[8:40], "<i4").tolist() == [2, 2, 2, 3, 2, 1, 1 << 30, 31]
    # by hand: token 0 acc = [0 + 0 + 3, 0 + 5 - 3] + bias [7, -7] = [10, -5]; token 1 = [7, -7];
    # times 2^30 / 2^31 = 1/2 with round-half-up: [5, -2.5 -> -2], [3.5 -> 4, -3.5 -> -3]
    np.testing.assert_array_equal(layer.expected, [[5, -2], [4, -3]])
