"""PYNQ host driver of the TAT-VPR packed-ternary sparse GEMM IP (numpy only, no torch).

``formats`` holds the IP's data formats (shared with the host flow and its C testbench);
``driver`` loads the overlay and runs layers and blocks on the IP.
"""

from . import formats

__all__ = ["formats"]
