"""Packed ternary weight formats: the one authority for the model's footprint, the simulator,
the HLS IP's testbench files and the PYNQ board driver.

Numpy only, and no imports of ``sim``, ``torch``, ``tatvpr_hw`` or ``brevitas_models``, so the
board driver runs with numpy alone and the models do not import hardware code. Two formats,
both packing each weight row (the K input channels of one output channel) separately and
padding it to whole bytes, so a row starts on a byte boundary, as the IP streams it:

``ternary2`` -- 2 bits per weight, 4 weights per byte. Codes (docs/engine.md section 2;
:data:`CODE_ZERO`, :data:`CODE_PLUS`, :data:`CODE_MINUS`): ``00`` = 0, ``01`` = +1, ``11`` = -1
(``10`` is unused and rejected on unpack). Weight ``k`` of a row sits in byte ``k // 4`` at
bits ``2*(k % 4) .. 2*(k % 4)+1`` (little-endian inside the byte).

``ternary1.6`` -- base-3, 5 trits per byte (3**5 = 243 <= 256), 1.6 bits per weight.
Byte ``j`` of a row holds weights ``5j .. 5j+4`` as ``sum_i (w[5j+i] + 1) * 3**i``; a
padding trit is stored as weight 0 (digit 1). Bytes above 242 are invalid.

    >>> w = np.array([[1, -1, 0, 1, 1]], dtype=np.int8)
    >>> pack_ternary2(w)            # 0b01_00_11_01, 0b01
    array([[77,  1]], dtype=uint8)
    >>> pack_ternary16(w)           # 2 + 0*3 + 1*9 + 2*27 + 2*81
    array([[227]], dtype=uint8)
"""

from __future__ import annotations

import math

import numpy as np

FORMATS = ("ternary2", "ternary1.6")
BITS_PER_WEIGHT = {"ternary2": 2.0, "ternary1.6": 1.6}
WEIGHTS_PER_BYTE = {"ternary2": 4, "ternary1.6": 5}

CODE_ZERO, CODE_PLUS, CODE_MINUS = 0b00, 0b01, 0b11
"""The 2-bit codes of ``ternary2`` (and of the on-chip weight buffer); ``0b10`` is invalid."""
CODE_INVALID = 0b10
TRITS_PER_BYTE = 5
MAX_TERNARY16_BYTE = 3 ** TRITS_PER_BYTE - 1
"""Largest valid ``ternary1.6`` byte (242): five digits of 2."""

_CODE_OF = np.array([CODE_MINUS, CODE_ZERO, CODE_PLUS], dtype=np.uint8)  # index w+1 -> 2-bit code
_VALUE_OF_CODE = np.array([0, 1, 0, -1], dtype=np.int8)                 # code -> weight (0b10 rejected)
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.int32)


def _check_ternary(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim < 1:
        raise ValueError("ternary weights must have at least one dimension (rows x K)")
    if w.size and (w.min() < -1 or w.max() > 1):
        raise ValueError(
            f"ternary weights must be in {{-1, 0, +1}}, got values in [{w.min()}, {w.max()}]")
    return w.astype(np.int8, copy=False)


def row_bytes(k: int, fmt: str) -> int:
    """Bytes one packed row of ``k`` weights takes in format ``fmt``."""
    if fmt not in WEIGHTS_PER_BYTE:
        raise ValueError(f"unknown ternary format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return math.ceil(k / WEIGHTS_PER_BYTE[fmt])


def packed_bytes(shape: tuple[int, ...], fmt: str) -> int:
    """Total bytes of a packed tensor of ``shape`` (last axis = K), rows padded to bytes."""
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return rows * row_bytes(int(shape[-1]), fmt)


def pack_ternary2(w: np.ndarray) -> np.ndarray:
    """Pack ternary ``w[..., K]`` into uint8 ``[..., ceil(K/4)]`` (2-bit codes)."""
    w = _check_ternary(w)
    k = w.shape[-1]
    nb = row_bytes(k, "ternary2")
    codes = np.zeros(w.shape[:-1] + (nb * 4,), dtype=np.uint8)
    codes[..., :k] = _CODE_OF[w.astype(np.int64) + 1]
    codes = codes.reshape(w.shape[:-1] + (nb, 4))
    return (codes[..., 0] | (codes[..., 1] << 2) | (codes[..., 2] << 4)
            | (codes[..., 3] << 6)).astype(np.uint8)


def unpack_ternary2(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_ternary2`; returns int8 ``[..., k]``."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.shape[-1] != row_bytes(k, "ternary2"):
        raise ValueError(f"packed rows have {packed.shape[-1]} bytes; {k} weights need "
                         f"{row_bytes(k, 'ternary2')} in ternary2")
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    codes = (packed[..., None] >> shifts) & 3
    if np.any(codes == CODE_INVALID):
        raise ValueError("invalid 2-bit weight code 0b10 in packed ternary2 data")
    vals = _VALUE_OF_CODE[codes]
    vals = vals.reshape(packed.shape[:-1] + (packed.shape[-1] * 4,))
    return np.ascontiguousarray(vals[..., :k])


def pack_ternary16(w: np.ndarray) -> np.ndarray:
    """Pack ternary ``w[..., K]`` into uint8 ``[..., ceil(K/5)]`` (5 trits per byte)."""
    w = _check_ternary(w)
    k = w.shape[-1]
    nb = row_bytes(k, "ternary1.6")
    digits = np.ones(w.shape[:-1] + (nb * 5,), dtype=np.int32)  # padding = weight 0
    digits[..., :k] = w.astype(np.int32) + 1
    digits = digits.reshape(w.shape[:-1] + (nb, 5))
    return (digits @ _POW3).astype(np.uint8)


def unpack_ternary16(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_ternary16`; returns int8 ``[..., k]``."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.shape[-1] != row_bytes(k, "ternary1.6"):
        raise ValueError(f"packed rows have {packed.shape[-1]} bytes; {k} weights need "
                         f"{row_bytes(k, 'ternary1.6')} in ternary1.6")
    if packed.size and packed.max() > MAX_TERNARY16_BYTE:
        raise ValueError(f"invalid base-3 byte {int(packed.max())} (> 242) in ternary1.6 data")
    digits = (packed[..., None].astype(np.int32) // _POW3) % 3
    vals = (digits - 1).astype(np.int8)
    vals = vals.reshape(packed.shape[:-1] + (packed.shape[-1] * 5,))
    return np.ascontiguousarray(vals[..., :k])


def pack(w: np.ndarray, fmt: str) -> np.ndarray:
    """Pack in the named format (``"ternary2"`` or ``"ternary1.6"``)."""
    if fmt == "ternary2":
        return pack_ternary2(w)
    if fmt == "ternary1.6":
        return pack_ternary16(w)
    raise ValueError(f"unknown ternary format {fmt!r}; allowed: {', '.join(FORMATS)}")


def unpack(packed: np.ndarray, k: int, fmt: str) -> np.ndarray:
    """Unpack from the named format."""
    if fmt == "ternary2":
        return unpack_ternary2(packed, k)
    if fmt == "ternary1.6":
        return unpack_ternary16(packed, k)
    raise ValueError(f"unknown ternary format {fmt!r}; allowed: {', '.join(FORMATS)}")
