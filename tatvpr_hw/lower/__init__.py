"""Lowering of the ternary student to hardware, one sub-package per route.

- ``qonnx/``  - whole student -> QONNX (Brevitas export, qonnx cleanup, executor check);
- ``hls4ml/`` - ternary GEMMs -> hls4ml projects (and the QKeras twin);
- ``finn/``   - one ternary GEMM -> the folder FINN's ``build_dataflow`` consumes;
- ``hls/``    - the project's own HLS IP (packed-ternary GEMM, int8 and vector units): formats,
  C-simulation, whole-query C-sim, Vitis/Vivado projects, the board bundle;
- ``rtl/``    - the Verilog tile under Verilator, yosys and nextpnr (``rtl/flow.py``).

``common.py`` and ``layers.py`` are shared by the framework routes; ``api.py`` is their face.

Public functions (each verifies its artifact against PyTorch and writes a JSON summary):

- :func:`export_qonnx` - whole student -> QONNX, checked with qonnx's executor;
- :func:`export_hls4ml` - one block's GEMMs -> hls4ml projects, checked by g++ C-simulation;
- :func:`export_finn` - one ternary GEMM -> the folder FINN's ``build_dataflow`` consumes;
- :func:`export_demo` - the three on the tiny student + ``run_dir/export.json`` for the report;
- :func:`write_export_json` - that JSON from route summaries.

Heavy imports (brevitas, qonnx, hls4ml) happen inside the functions.

``TF_USE_LEGACY_KERAS=1`` is set here, before anything can import TensorFlow (hls4ml pulls in
Keras during conversion): the QKeras twin needs ``tf.keras`` to be Keras 2 (``tf_keras``).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tatvpr_hw.lower.api import (export_demo, export_finn, export_hls4ml, export_qonnx,
                                  write_export_json)
from tatvpr_hw.lower.common import BLOCKS, ExportCheckError

__all__ = ["BLOCKS", "ExportCheckError", "export_demo", "export_finn", "export_hls4ml",
           "export_qonnx", "write_export_json"]
