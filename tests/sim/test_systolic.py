"""Dense systolic mode: closed-form cycles equal SCALE-Sim v3.0.0's for the same GEMM/array."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sim.errors import SimInputError
from sim.systolic import DATAFLOWS, systolic_cycles, systolic_gemm, trace_systolic

# The reference tool (installed by its own script; creates its own venv on first use).
_DEFAULT_TOOL = Path(__file__).resolve().parents[3] / "shared" / "tools" / "scalesim-cycles"
TOOL = os.environ.get("TATVPR_SCALESIM_CYCLES") or (
    str(_DEFAULT_TOOL) if _DEFAULT_TOOL.exists() else shutil.which("scalesim-cycles"))

# Small shapes (the tool's run time grows with M*N*K), multiples and non-multiples of the array.
SHAPES = [  # m, n, k, rows, cols
    (8, 8, 8, 4, 4),
    (10, 7, 13, 4, 3),
    (50, 70, 33, 8, 16),
    (3, 5, 2, 8, 8),       # GEMM smaller than the array
    (50, 2, 64, 4, 8),     # tokens x narrow head, tall K
]


def _scalesim(m, n, k, rows, cols, df) -> dict:
    out = subprocess.run([TOOL, str(m), str(n), str(k), str(rows), str(cols), df],
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# The independent reference never skips: without it this test fails and says how to get it.
def test_cycles_equal_scalesim_v3():
    assert TOOL is not None, (
        "SCALE-Sim v3 reference tool not found: put the project's shared/ folder beside the checkout "
        "(../shared/tools/scalesim-cycles, which builds its own venv with scalesim 3.0.0 and numpy<2.4 "
        "on first use), or point TATVPR_SCALESIM_CYCLES at a copy of that script")
    cases = [(*s, df) for s in SHAPES for df in DATAFLOWS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        refs = list(pool.map(lambda c: _scalesim(*c), cases))
    for case, ref in zip(cases, refs):
        assert ref["stall_cycles"] == 0, ref
        g = systolic_gemm(*case)
        assert g.cycles == ref["compute_cycles"], (case, g, ref)
        assert g.util_pct == pytest.approx(ref["compute_util_pct"], rel=1e-9), (case, ref)


def test_closed_form_examples():
    # 4 folds * (8 + 4 + 4 - 2) - 1 (os); 4 folds * (8 + 8 + 4 - 2) - 1 (ws, is)
    assert systolic_cycles(8, 8, 8, 4, 4, "os") == 55
    assert systolic_cycles(8, 8, 8, 4, 4, "ws") == 71
    # ViT-B linear on 32x32, os: ceil(197/32)*ceil(768/32) = 168 folds of 768+62 cycles
    assert systolic_cycles(197, 768, 768, 32, 32, "os") == 168 * 830 - 1


def test_monotone_in_gemm_size_and_array():
    for df in DATAFLOWS:
        base = systolic_cycles(40, 40, 40, 8, 8, df)
        assert systolic_cycles(41, 40, 40, 8, 8, df) >= base
        assert systolic_cycles(40, 41, 40, 8, 8, df) >= base
        assert systolic_cycles(40, 40, 41, 8, 8, df) >= base
        # a bigger array never needs more folds; for big GEMMs it is faster
        assert systolic_cycles(256, 256, 256, 16, 16, df) < systolic_cycles(256, 256, 256, 8, 8, df)


def test_bad_input_is_named():
    with pytest.raises(SimInputError, match="dataflow 'rs'"):
        systolic_cycles(4, 4, 4, 2, 2, "rs")
    with pytest.raises(SimInputError, match="rows = 0"):
        systolic_cycles(4, 4, 4, 0, 2, "os")


def test_trace_sums_gemms_and_batches():
    from sim.trace import DenseOp, VectorOp, synthetic_vit_trace
    tr = synthetic_vit_trace(depth=1, dim=32, tokens=10, heads=2, seed=0)
    res = trace_systolic(tr.ops, 4, 4, "ws", clock_mhz=100.0)
    want = 0
    for op in tr.ops:
        if isinstance(op, VectorOp):
            continue
        b = op.batch if isinstance(op, DenseOp) else 1
        want += b * systolic_cycles(op.m, op.n, op.k, 4, 4, "ws")
    assert res["cycles"] == want
    assert len(res["layers"]) == 7  # patch_embed, qkv, qk, av, proj, fc1, fc2
    assert res["latency_ms"] == pytest.approx(want / 1e5)
