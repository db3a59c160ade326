"""FINN route (``route.py``): one ternary GEMM as the folder FINN's ``build_dataflow`` consumes."""
