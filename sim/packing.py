"""Packed ternary weight formats, as the simulator uses them: re-exported from the one
authority, the top-level numpy-only package :mod:`ternary_format` (its docstring defines both
formats byte by byte). Kept so ``sim.packing`` imports keep working; new code may import
``ternary_format`` directly.
"""

from ternary_format import (BITS_PER_WEIGHT, CODE_INVALID, CODE_MINUS, CODE_PLUS, CODE_ZERO, FORMATS,
                            MAX_TERNARY16_BYTE, TRITS_PER_BYTE, WEIGHTS_PER_BYTE, pack, pack_ternary2,
                            pack_ternary16, packed_bytes, row_bytes, unpack, unpack_ternary2, unpack_ternary16)

__all__ = ["BITS_PER_WEIGHT", "CODE_INVALID", "CODE_MINUS", "CODE_PLUS", "CODE_ZERO", "FORMATS",
           "MAX_TERNARY16_BYTE", "TRITS_PER_BYTE", "WEIGHTS_PER_BYTE", "pack", "pack_ternary2", "pack_ternary16",
           "packed_bytes", "row_bytes", "unpack", "unpack_ternary2", "unpack_ternary16"]
