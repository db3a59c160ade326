"""The IP's data formats, re-exported from the PYNQ driver's ``tatvpr_pynq.formats``.

One implementation serves the host flow, the C testbench files and the board driver; see
``hls/driver/tatvpr_pynq/formats.py`` for the layouts.
"""

from tatvpr_hw.lower.hls.paths import driver_package

driver_package()
from tatvpr_pynq.formats import (  # noqa: E402
    FMT_CODE, STATUS_TEXT, CsimResult, FormatError, IPLayer, bank_counts, chunks_per_token,
    pack_weights, prepare_layer, quantize_multiplier, read_result_file, reference_gemm, requantize,
    schedule_activations, unpack_weights, unschedule_activations, write_layer_file)

__all__ = ["FMT_CODE", "STATUS_TEXT", "CsimResult", "FormatError", "IPLayer", "bank_counts", "chunks_per_token",
           "pack_weights", "prepare_layer", "quantize_multiplier", "read_result_file", "reference_gemm",
           "requantize", "schedule_activations", "unpack_weights", "unschedule_activations", "write_layer_file"]
