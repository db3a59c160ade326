"""Cycle-level simulator of the packed-ternary MAC-array accelerator (see docs/engine.md).

Numpy only: never imports torch or the model packages. Entry points::

    from sim import load_arch, read_trace, simulate
    result = simulate(load_arch("sim/arch/kv260.yaml"), read_trace("trace.npz"))
    result.to_dict()["latency_ms"]
"""

from sim.arch import Arch, load_arch, with_overrides
from sim.errors import SimInputError
from sim.simulator import SimResult, simulate
from sim.trace import DenseOp, TernaryLinearOp, Trace, VectorOp, read_trace, synthetic_vit_trace, write_trace

__all__ = ["Arch", "load_arch", "with_overrides", "SimResult", "simulate", "SimInputError", "Trace", "TernaryLinearOp", "DenseOp", "VectorOp", "read_trace", "write_trace",
           "synthetic_vit_trace"]
