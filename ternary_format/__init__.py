"""The packed ternary weight formats (``ternary2``, ``ternary1.6``): one implementation, numpy only.

Used by the models' footprint (``brevitas_models.footprint``), the simulator (``sim.packing``
re-exports it), the HLS flow's testbench files and the PYNQ board driver
(``hls/driver/tatvpr_pynq``; ``tatvpr export bitstream`` copies this package into the board's
``deploy/`` folder). It imports nothing of the project, so each of those can depend on it.
"""

from ternary_format.packing import (BITS_PER_WEIGHT, CODE_INVALID, CODE_MINUS, CODE_PLUS, CODE_ZERO, FORMATS,
                                    MAX_TERNARY16_BYTE, TRITS_PER_BYTE, WEIGHTS_PER_BYTE, pack, pack_ternary2,
                                    pack_ternary16, packed_bytes, row_bytes, unpack, unpack_ternary2,
                                    unpack_ternary16)

__all__ = ["BITS_PER_WEIGHT", "CODE_INVALID", "CODE_MINUS", "CODE_PLUS", "CODE_ZERO", "FORMATS",
           "MAX_TERNARY16_BYTE", "TRITS_PER_BYTE", "WEIGHTS_PER_BYTE", "pack", "pack_ternary2", "pack_ternary16",
           "packed_bytes", "row_bytes", "unpack", "unpack_ternary2", "unpack_ternary16"]
