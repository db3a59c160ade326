"""Shared helpers for the simulator tests (small archs built from dicts)."""

import pytest

from sim.arch import arch_from_dict, load_arch


def _make_arch(**kw):
    """An arch on the KV260 board; keyword args: pe, simd, mode, fmt, db, act_kb, w_kb, bw, clock, latency_ns, table."""
    spec = {
        "name": "test",
        "board": "kv260",
        "energy_table": kw.get("table", "horowitz45nm"),
        "clock_mhz": kw.get("clock", 250),
        "static_power_w": kw.get("static_w", 0.5),
        "double_buffering": kw.get("db", True),
        "compute": {"pe": kw.get("pe", 4), "simd": kw.get("simd", 4), "skip_mode": kw.get("mode", "act"),
                    "weight_format": kw.get("fmt", "ternary2"), "decode_latency_cycles": kw.get("decode", 3)},
        "buffers": {"weights_kb": kw.get("w_kb", 64), "activations_kb": kw.get("act_kb", 256), "outputs_kb": 256},
        "dram": {"bandwidth_gb_per_s": kw.get("bw", 1.0), "efficiency": 1.0, "latency_ns": kw.get("latency_ns", 40)},
    }
    return arch_from_dict(spec, "test-arch")


@pytest.fixture
def kv260():
    return load_arch("kv260")


@pytest.fixture
def make_arch():
    """Factory fixture: ``make_arch(pe=8, mode="both", ...)`` (stateless, safe under hypothesis)."""
    return _make_arch
