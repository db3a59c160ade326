"""Host side of the packed-ternary sparse GEMM HLS IP (``hls/``): data formats, C simulation,
integer references from the PyTorch layers, board projects (Vitis HLS + Vivado Tcl), demo.

Submodules: ``paths`` (locating ``hls/``), ``formats`` (shared with the PYNQ driver),
``csim`` (g++ build and run), ``layers`` (layers from the model / traces), ``board``
(bitstream projects), ``demo`` (``hls_demo`` and the report's ``hls.json``), ``unit_csim``
and ``query_csim`` (int8 / vector units and the whole query in C-sim), ``bundle`` (the board
runtime's bundle folder).
"""
