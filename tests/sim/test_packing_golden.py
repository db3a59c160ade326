"""Packing against byte vectors worked out by hand from the format's definition (ternary_format, the
authority that sim.packing re-exports).

ternary2: code 00 = 0, 01 = +1, 11 = -1; weight k of a row in byte k // 4, bits 2*(k%4)+1..2*(k%4).
ternary1.6: byte j = sum_i (w[5j+i] + 1) * 3**i, padding trits are weight 0 (digit 1).
A symmetric swap of the +1/-1 codes in both pack and unpack keeps every round trip green; these
bytes do not.
"""

import numpy as np
import pytest

from ternary_format import pack, pack_ternary2, pack_ternary16, unpack, unpack_ternary2, unpack_ternary16

# (row of weights, ternary2 bytes, ternary1.6 bytes), each byte derived in the comment
GOLDEN = [
    # [+1]: code 01 -> 0b00000001 = 1 | digit 2 -> 2, padding 4 trits of digit 1: 2 + 3 + 9 + 27 + 81 = 122
    ([1], [0x01], [122]),
    # [-1]: code 11 -> 3 | digit 0 + padding 3 + 9 + 27 + 81 = 120
    ([-1], [0x03], [120]),
    # [0, 0, 0, 0]: 0 | digits 1,1,1,1 + pad 1: 1 + 3 + 9 + 27 + 81 = 121
    ([0, 0, 0, 0], [0x00], [121]),
    # [-1, +1, 0, -1]: 11 | 01<<2 | 00<<4 | 11<<6 = 3 + 4 + 0 + 192 = 199
    # base 3: 0*1 + 2*3 + 1*9 + 0*27 + pad 1*81 = 96
    ([-1, 1, 0, -1], [199], [96]),
    # [+1, -1, 0, +1, +1]: 01 | 11<<2 | 00<<4 | 01<<6 = 1 + 12 + 64 = 77; then 01 = 1
    # base 3: 2 + 0 + 9 + 54 + 162 = 227
    ([1, -1, 0, 1, 1], [77, 1], [227]),
    # six weights [-1]*6: 0xFF, then 11 11 -> 15 | first byte all digit 0 = 0; second: 0 + pad 3+9+27+81 = 120
    ([-1] * 6, [0xFF, 0x0F], [0, 120]),
    # [+1]*5: 0x55, 0x01 | 2*(1+3+9+27+81) = 242 (the largest valid byte)
    ([1] * 5, [0x55, 0x01], [242]),
]


@pytest.mark.parametrize("row, t2, t16", GOLDEN)
def test_pack_matches_hand_bytes(row, t2, t16):
    w = np.array([row], dtype=np.int8)
    assert pack_ternary2(w).tolist() == [t2]
    assert pack_ternary16(w).tolist() == [t16]
    assert pack(w, "ternary2").tolist() == [t2]
    assert pack(w, "ternary1.6").tolist() == [t16]


@pytest.mark.parametrize("row, t2, t16", GOLDEN)
def test_unpack_of_hand_bytes(row, t2, t16):
    k = len(row)
    assert unpack_ternary2(np.array([t2], np.uint8), k).tolist() == [row]
    assert unpack_ternary16(np.array([t16], np.uint8), k).tolist() == [row]
    assert unpack(np.array([t2], np.uint8), k, "ternary2").tolist() == [row]
    assert unpack(np.array([t16], np.uint8), k, "ternary1.6").tolist() == [row]


def test_rows_pad_to_whole_bytes_independently():
    # two rows of K = 5: each row starts on its own byte (ternary2: 2 bytes per row)
    w = np.array([[1, -1, 0, 1, 1], [-1, 0, 0, 0, -1]], dtype=np.int8)
    # row 1: 11 | 00 | 00 | 00 = 3, then 11 = 3 ; base 3: 0 + 3 + 9 + 27 + 0 = 39
    assert pack_ternary2(w).tolist() == [[77, 1], [3, 3]]
    assert pack_ternary16(w).tolist() == [[227], [39]]


def test_invalid_codes_rejected():
    with pytest.raises(ValueError):
        unpack_ternary2(np.array([[0b10]], np.uint8), 1)
    with pytest.raises(ValueError):
        unpack_ternary16(np.array([[243]], np.uint8), 5)
