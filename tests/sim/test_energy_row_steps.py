"""The vector unit's row steps cost energy (issue 10): a LayerNorm row's mean (16 steps), variance
(16 shift-and-add + 32 quotient steps), square root (32) and reciprocal (48), a softmax row's reciprocal (33), each step one 64-bit compare-subtract priced by the
energy table's ``vector_row_step_pj`` (docs/engine.md sections 5 and 7). Expected values are worked
out here from the table numbers written below (sim/energy/ultrascale_plus.yaml), not read through
the code under test."""

import pytest

from sim.arch import load_arch, with_overrides
from sim.energy import energy_pj
from sim.engine import vector_op
from sim.simulator import simulate
from sim.trace import Trace, VectorOp

LN_PJ, SOFTMAX_PJ, STEP_PJ = 6.72, 19.264, 0.896  # ultrascale_plus: per element, per row step (2 x add32 0.448)


def test_row_steps_priced_by_hand():
    arch = load_arch("kv260")  # fabric vector unit, ultrascale_plus table, default row steps 144 / 33
    # ViT-B LayerNorm: 257 token rows of 768: 257 x 144 = 37,008 steps x 0.896 pJ = 33,159.168 pJ
    ln = vector_op(VectorOp("ln", "layernorm", 257 * 768, 768), arch)
    assert ln.counts["vector_row_steps"] == 37_008
    e = energy_pj(ln.counts, arch, ln.cycles, vector_kind="layernorm")
    assert e["vector_unit"] == pytest.approx(257 * 768 * LN_PJ + 33_159.168, rel=1e-12)
    # 12 heads' softmax: 12 x 257 rows of 257 scores, 33 steps a row: 101,772 steps = 91,187.712 pJ
    sm = vector_op(VectorOp("sm", "softmax", 12 * 257 * 257, 257), arch)
    assert sm.counts["vector_row_steps"] == 101_772
    e = energy_pj(sm.counts, arch, sm.cycles, vector_kind="softmax")
    assert e["vector_unit"] == pytest.approx(12 * 257 * 257 * SOFTMAX_PJ + 91_187.712, rel=1e-12)
    # element-wise ops have no rows, no steps
    assert vector_op(VectorOp("g", "gelu", 1000), arch).counts["vector_row_steps"] == 0


def test_an_arch_row_step_count_is_what_is_priced():
    # a faster divider: 10 steps per LayerNorm row -> 4 rows x 10 x 0.896 = 35.84 pJ on top of 4 x 8 x 6.72
    arch = with_overrides(load_arch("kv260"), {"vector_unit.row_op_cycles": {"layernorm": 10}})
    t = vector_op(VectorOp("ln", "layernorm", 32, 8), arch)
    assert energy_pj(t.counts, arch, t.cycles, vector_kind="layernorm")["vector_unit"] == pytest.approx(
        32 * LN_PJ + 35.84, rel=1e-12)


def test_host_vector_unit_has_no_row_steps():
    # the ARM runs a host-mode op: elements x host_pj_per_element (100 by default), no row-step term
    arch = with_overrides(load_arch("kv260"), {"vector_unit.mode": "host"})
    t = vector_op(VectorOp("ln", "layernorm", 257 * 768, 768), arch)
    assert "vector_row_steps" not in t.counts
    assert energy_pj(t.counts, arch, t.cycles, vector_kind="layernorm")["vector_unit"] == pytest.approx(
        257 * 768 * 100.0, rel=1e-12)


def test_row_step_energy_reaches_the_query():
    # one LayerNorm of 2 rows of 16 on the KV260 point: the query's vector_unit energy is
    # 32 x 6.72 + 2 x 144 x 0.896 = 215.04 + 258.048 = 473.088 pJ
    r = simulate(load_arch("kv260"), Trace(1, {"tokens": 2}, [VectorOp("ln", "layernorm", 32, 16)]))
    assert r["energy_by_component_mj"]["vector_unit"] == pytest.approx(473.088e-9, rel=1e-12)
