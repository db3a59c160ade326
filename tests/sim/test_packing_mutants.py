"""Packing checks added for the mutants `make mutation` found alive (docs/testing.md).

Expected bytes are worked by hand from the format definitions in ternary_format's docstring:
ternary2 codes 00 = 0, 01 = +1, 11 = -1, weight k in byte k // 4 at bits 2*(k%4);
ternary1.6 byte = sum_i (w_i + 1) * 3**i, padding digit 1.
"""

import re

import numpy as np
import pytest

from ternary_format import pack, pack_ternary2, pack_ternary16, packed_bytes, row_bytes, unpack, unpack_ternary2, \
    unpack_ternary16

# Row A = [+1, -1, 0, +1, +1]: ternary2 [77, 1], ternary1.6 [227] (test_packing_golden.py).
# Row B = [-1, 0, 0, 0, -1]: ternary2 3 | 0 | 0 | 0 = 3, then 3 -> [3, 3];
#          ternary1.6 0 + 1*3 + 1*9 + 1*27 + 0*81 = 39 -> [39].
ROW_A = [1, -1, 0, 1, 1]
ROW_B = [-1, 0, 0, 0, -1]


def _exactly(message: str) -> str:
    """A pytest.raises pattern matching the whole message (a prefix or suffix added fails)."""
    return "^" + re.escape(message) + "$"


def test_packed_bytes_by_hand():
    # 2 x 3 rows of K = 10: ternary2 ceil(10/4) = 3 bytes a row -> 18; ternary1.6 ceil(10/5) = 2 -> 12
    assert packed_bytes((2, 3, 10), "ternary2") == 18
    assert packed_bytes((2, 3, 10), "ternary1.6") == 12
    # one row of K = 7: 2 bytes (ternary2), 2 bytes (ternary1.6)
    assert packed_bytes((7,), "ternary2") == 2
    assert packed_bytes((7,), "ternary1.6") == 2
    # 4 rows of K = 11: 3 x 4 = 12 ; 3 x 4 = 12 ... and K = 5: 2 x 4 = 8 ; 1 x 4 = 4
    assert packed_bytes((4, 11), "ternary2") == 12
    assert packed_bytes((4, 5), "ternary2") == 8
    assert packed_bytes((4, 5), "ternary1.6") == 4
    assert isinstance(packed_bytes((4, 5), "ternary1.6"), int)
    with pytest.raises(ValueError, match=_exactly("unknown ternary format 'int4'; allowed: ternary2, ternary1.6")):
        packed_bytes((4, 5), "int4")


def test_three_dimensional_tensor_packs_per_row():
    # [2, 2, 5] tensor: the last axis is K; the leading axes are kept as they are.
    w = np.array([[ROW_A, ROW_B], [ROW_B, ROW_A]], dtype=np.int8)
    t2 = pack_ternary2(w)
    t16 = pack_ternary16(w)
    assert t2.dtype == np.uint8 and t16.dtype == np.uint8
    assert t2.tolist() == [[[77, 1], [3, 3]], [[3, 3], [77, 1]]]
    assert t16.tolist() == [[[227], [39]], [[39], [227]]]
    assert pack(w, "ternary2").tolist() == t2.tolist()
    u2 = unpack_ternary2(t2, 5)
    u16 = unpack_ternary16(t16, 5)
    assert u2.dtype == np.int8 and u16.dtype == np.int8
    assert u2.tolist() == w.tolist() and u16.tolist() == w.tolist()
    assert unpack(t16, 5, "ternary1.6").tolist() == w.tolist()


def test_one_dimensional_row_packs():
    # a single row (ndim 1) is a valid tensor: [+1, -1] -> 01 | 11<<2 = 13 ; 2 + 0 + 1*9 + 27 + 81 = 119
    w = np.array([1, -1], dtype=np.int8)
    assert pack_ternary2(w).tolist() == [13]
    assert pack_ternary16(w).tolist() == [119]
    assert unpack_ternary2(np.array([13], np.uint8), 2).tolist() == [1, -1]
    assert unpack_ternary16(np.array([119], np.uint8), 2).tolist() == [1, -1]


def test_signed_byte_buffer_is_read_as_unsigned():
    # A buffer read as int8 (227 stored as -29) still decodes as the byte 227.
    packed = np.array([[227]], dtype=np.uint8).view(np.int8)
    assert unpack_ternary16(packed, 5).tolist() == [ROW_A]
    assert unpack_ternary2(np.array([[77, 1]], np.uint8).view(np.int8), 5).tolist() == [ROW_A]


def test_out_of_range_weights_rejected_with_message():
    for bad, lo, hi in (([0, 2], 0, 2), ([-2, 0], -2, 0), ([-2, 2], -2, 2)):
        with pytest.raises(ValueError, match=_exactly(
                f"ternary weights must be in {{-1, 0, +1}}, got values in [{lo}, {hi}]")):
            pack_ternary2(np.array([bad]))
    with pytest.raises(ValueError, match=_exactly(
            "ternary weights must have at least one dimension (rows x K)")):
        pack_ternary16(np.int8(1))


def test_unknown_format_messages():
    msg = _exactly("unknown ternary format 'int4'; allowed: ternary2, ternary1.6")
    with pytest.raises(ValueError, match=msg):
        row_bytes(4, "int4")
    with pytest.raises(ValueError, match=msg):
        pack(np.zeros((1, 4), np.int8), "int4")
    with pytest.raises(ValueError, match=msg):
        unpack(np.zeros((1, 1), np.uint8), 4, "int4")


def test_wrong_row_length_messages():
    # 3 bytes given; K = 5 needs 2 (ternary2) and 1 (ternary1.6). 3-D so axis -1 differs from axis 1.
    packed = np.zeros((1, 2, 3), np.uint8)
    with pytest.raises(ValueError, match=_exactly("packed rows have 3 bytes; 5 weights need 2 in ternary2")):
        unpack_ternary2(packed, 5)
    with pytest.raises(ValueError, match=_exactly("packed rows have 3 bytes; 5 weights need 1 in ternary1.6")):
        unpack_ternary16(packed, 5)
    # axis 1 has the right length (2 / 1) but the row axis does not: still rejected
    with pytest.raises(ValueError):
        unpack_ternary2(np.zeros((1, 2, 1), np.uint8), 5)
    with pytest.raises(ValueError):
        unpack_ternary16(np.zeros((1, 1, 2), np.uint8), 5)


def test_invalid_byte_messages():
    with pytest.raises(ValueError, match=_exactly("invalid 2-bit weight code 0b10 in packed ternary2 data")):
        unpack_ternary2(np.array([[0b1000]], np.uint8), 2)
    with pytest.raises(ValueError, match=_exactly("invalid base-3 byte 250 (> 242) in ternary1.6 data")):
        unpack_ternary16(np.array([[242, 250]], np.uint8), 10)
