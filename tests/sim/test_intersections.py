"""Per-bank intersection counts (sim.trace's bank-byte kernel) against plain numpy references.

The references below never use the code under test: a bank's count is a matrix product of the
0/1 masks restricted to channels k = b, b + B, ... (numpy int64 matmul), and the layouts are
checked against a hand-written loop over channels.
"""

from __future__ import annotations

import numpy as np
import pytest

import sim.trace as st
from sim.engine import both_chunk_sum, weight_bank_max
from sim.errors import SimInputError
from sim.packing import pack_ternary2
from sim.trace import TernaryLinearOp, bank_bytes, bank_max_intersections, packed_bank_bytes


def _busiest_bank(a: np.ndarray, b: np.ndarray, banks: int) -> np.ndarray:
    """max over banks of |nz(a_m) ∩ nz(b_n) ∩ bank|, by one int64 matmul per bank."""
    per_bank = [a[:, j::banks].astype(np.int64) @ b[:, j::banks].astype(np.int64).T for j in range(banks)]
    return np.max(per_bank, axis=0)


def _op(m: int, k: int, n: int, seed: int, act_density: float = 0.6, w_zero: float = 0.4) -> TernaryLinearOp:
    rng = np.random.default_rng(seed)
    act = rng.random((m, k)) < act_density
    w = np.where(rng.random((n, k)) < w_zero, 0, np.where(rng.random((n, k)) < 0.5, 1, -1)).astype(np.int8)
    return TernaryLinearOp("l", m, k, n, pack_ternary2(w), act)


def test_bank_byte_layout_by_hand():
    """K = 20, B = 4: bank b holds channels b, b + 4, ..., b + 16 (5 addresses -> 1 byte per bank)."""
    mask = np.zeros((2, 20), bool)
    mask[0, [0, 4, 16]] = True  # bank 0, addresses 0, 1, 4 -> bits 0, 1, 4 = 0b10011 = 19
    mask[0, 7] = True  # bank 3, address 1 -> 0b10 = 2
    mask[1, 18] = True  # bank 2, address 4 -> 0b10000 = 16
    got = bank_bytes(mask, 4)
    assert got.shape == (1, 4, 2)
    assert got[0].T.tolist() == [[19, 0, 0, 2], [0, 0, 16, 0]]


def test_bank_byte_layout_matches_a_channel_loop():
    rng = np.random.default_rng(0)
    for rows, k, banks in [(3, 1, 1), (4, 13, 3), (2, 100, 8), (5, 770, 32), (3, 3072, 64), (2, 65, 16)]:
        mask = rng.random((rows, k)) < 0.5
        per_bank = -(-k // banks)
        nbytes = max(1, -(-per_bank // 8))
        want = np.zeros((nbytes, banks, rows), np.uint8)
        for i in range(rows):
            for ch in np.flatnonzero(mask[i]):
                b, addr = ch % banks, ch // banks
                want[addr // 8, b, i] |= 1 << (addr % 8)
        assert np.array_equal(bank_bytes(mask, banks), want), (rows, k, banks)
        # the packed route (8 x 8 bit transposes when B is a multiple of 8) gives the same bytes
        packed = np.packbits(mask, axis=1, bitorder="little")
        assert np.array_equal(packed_bank_bytes(packed, k, banks), want), (rows, k, banks)


@pytest.mark.parametrize("m,k,n,banks", [
    (7, 300, 13, 2), (7, 300, 13, 3), (5, 70, 9, 1), (3, 64, 5, 4), (2, 5, 3, 8), (9, 770, 21, 32),
    (4, 3000, 17, 64), (11, 100, 8, 16), (1, 1, 1, 1), (6, 33, 40, 32),
])
def test_bank_max_intersections_equal_per_bank_matmuls(m, k, n, banks, monkeypatch):
    """K not a multiple of B or of 64, N not a multiple of 8; tiles forced to split rows and columns."""
    rng = np.random.default_rng(m * k + n + banks)
    for density in (0.0, 0.35, 1.0):
        a = rng.random((m, k)) < density
        b = rng.random((n, k)) < max(density, 0.5)
        want = _busiest_bank(a, b, banks)
        for tile in (1 << 18, banks * 8 * 3, 1):  # default, 3 rows x 8 columns, 1 row x 8 columns
            monkeypatch.setattr(st, "_BANK_TILE_BYTES", tile)
            got = bank_max_intersections(a, b, banks)
            assert got.dtype == np.int32 and got.shape == (m, n)
            assert np.array_equal(got, want), (density, tile)


def test_bank_counts_past_255_and_past_uint8():
    """One bank of 300 channels, all set: the count 300 needs the uint16 accumulator."""
    a = np.ones((2, 300), bool)
    b = np.ones((3, 300), bool)
    b[1, :45] = False
    assert bank_max_intersections(a, b, 1).tolist() == [[300, 255, 300]] * 2


def test_bank_max_rejects_bad_input():
    with pytest.raises(SimInputError, match="K = 4 and 5"):
        bank_max_intersections(np.ones((1, 4), bool), np.ones((1, 5), bool), 2)
    with pytest.raises(SimInputError, match="banks = 0"):
        bank_max_intersections(np.ones((1, 4), bool), np.ones((1, 4), bool), 0)


@pytest.mark.parametrize("m,k,n,banks,q", [
    (7, 300, 13, 2, 2), (7, 300, 13, 3, 1), (5, 70, 9, 1, 4), (3, 64, 5, 4, 3), (2, 5, 3, 8, 1),
    (9, 770, 21, 32, 1), (9, 770, 21, 32, 2), (4, 3000, 17, 64, 1), (6, 33, 40, 32, 1),
])
def test_both_chunk_sum_equals_brute_force(m, k, n, banks, q, monkeypatch):
    monkeypatch.setattr(st, "_BANK_TILE_BYTES", banks * 8 * 2)  # 2 tokens x 8 outputs per tile
    op = _op(m, k, n, seed=k + banks + q)
    busiest = _busiest_bank(op.act_mask, op.weights() != 0, banks)
    want = int(np.maximum(1, -(-busiest // q)).sum())
    assert both_chunk_sum(op, banks, q) == want
    assert op._cache[("both_chunks", banks, q)] == want  # a sweep's next arch reuses it


def test_weight_bank_max_and_intersection_total():
    for m, k, n, banks in [(7, 300, 13, 3), (9, 770, 21, 32), (3, 5, 2, 8), (300, 64, 9, 1)]:
        op = _op(m, k, n, seed=m + k)
        wnz = op.weights() != 0
        want_w = np.max([wnz[:, j::banks].sum(axis=1) for j in range(banks)], axis=0)
        assert weight_bank_max(op, banks).tolist() == want_w.tolist()
        want_total = int((op.act_mask.astype(np.int64) @ wnz.astype(np.int64).T).sum())
        assert op.intersection_total() == want_total


def test_packed_bank_bytes_ignores_bits_past_k():
    rng = np.random.default_rng(4)
    for k, banks in [(13, 8), (100, 32), (13, 3)]:
        mask = rng.random((3, k)) < 0.5
        packed = np.packbits(mask, axis=1, bitorder="little")
        dirty = packed.copy()
        dirty[:, -1] |= np.uint8(0xFF << (k % 8) & 0xFF) if k % 8 else 0
        assert np.array_equal(packed_bank_bytes(dirty, k, banks), bank_bytes(mask, banks)), (k, banks)
