"""The vector-unit kinds of the head (``requant``, ``l2norm``) and the trace's ``host`` flag: the arch's
defaults for the new kinds, traces that carry the flag (and older ones without it), and the
simulator's host charge of host ops (SALAD's Sinkhorn part, docs/integer.md), worked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sim.arch import load_arch, with_overrides
from sim.errors import SimInputError
from sim.simulator import simulate
from sim.trace import (VECTOR_KINDS, DenseOp, Trace, VectorOp, read_trace, synthetic_vit_trace, validate_trace,
                       write_trace)


def test_new_kinds_have_the_hls_units_defaults_in_every_shipped_arch():
    """requant: 1 pass, no row steps; l2norm: 2 passes + 80 row steps (hls/src/tatvpr_vector.cpp); the
    arch files written before the kinds existed get them without naming them."""
    assert VECTOR_KINDS[-3:] == ("requant", "l2norm", "topk")
    for name in ("kv260", "zcu104", "pynq_z2", "kv260_systolic"):
        v = load_arch(name).spec.vector_unit
        assert (v.cycles_per_element["requant"], v.cycles_per_element["l2norm"]) == (1.0, 2.0), name
        assert (v.row_op_cycles["requant"], v.row_op_cycles["l2norm"]) == (0, 80), name
        assert (v.host_ns_per_element["requant"], v.host_ns_per_element["l2norm"]) == (1.0, 1.0), name
    # an arch may set them; a kind it leaves out keeps the default
    kv = with_overrides(load_arch("kv260"), {"vector_unit.cycles_per_element.l2norm": 3.0})
    assert kv.spec.vector_unit.cycles_per_element["l2norm"] == 3.0
    assert kv.spec.vector_unit.cycles_per_element["requant"] == 1.0
    with pytest.raises(SimInputError, match="unknown key 'norm'; allowed here: add, gelu, l2norm, layernorm"):
        with_overrides(load_arch("kv260"), {"vector_unit.cycles_per_element.norm": 1.0})


def test_topk_kind_has_the_hls_units_defaults_in_every_shipped_arch():
    """topk (tatvpr_topk_schedule): 2 passes (histogram, select), 128 scan steps a row (bins 128 down to
    1), 380 ns per element on a host-mode unit (the ARM's numpy top-k + scheduling, HOST_STEP_NS); its
    energy 2 x add32_pj (ultrascale_plus 2 x 0.448 = 0.896 pJ; horowitz45nm 2 x 0.1 = 0.2 pJ)."""
    from sim.arch import ENERGY_DIR, EnergyTable, load_yaml_mapping

    for name in ("kv260", "zcu104", "pynq_z2", "kv260_systolic"):
        arch = load_arch(name)
        v = arch.spec.vector_unit
        assert (v.cycles_per_element["topk"], v.row_op_cycles["topk"], v.host_ns_per_element["topk"]) == \
            (2.0, 128, 380.0), name
        assert arch.spec.schedule.topk == "fabric", name  # the default: the host's needs handoffs dram
    assert load_arch("kv260").energy.vector_pj_per_element["topk"].value == pytest.approx(0.896)
    h = EnergyTable(**load_yaml_mapping(ENERGY_DIR / "horowitz45nm.yaml", "energy"))
    assert h.vector_pj_per_element["topk"].value == pytest.approx(0.2)
    with pytest.raises(SimInputError, match="topk"):
        with_overrides(load_arch("kv260"), {"schedule.topk": "arm"})


def test_new_kinds_energy_derived_from_each_table_by_hand():
    """requant = mult32 + add32 per element; l2norm = 2 x that (two passes). ultrascale_plus: mult32
    6.944, add32 0.448 -> 7.392 and 14.784 pJ; horowitz45nm: 3.1 + 0.1 -> 3.2 and 6.4 pJ."""
    for name, rq, l2 in (("kv260", 7.392, 14.784), ("pynq_z2", 7.392, 14.784)):
        e = load_arch(name).energy.vector_pj_per_element
        assert (e["requant"].value, e["l2norm"].value) == (pytest.approx(rq), pytest.approx(l2))
        assert "mult32_pj + add32_pj" in e["l2norm"].source
    from sim.arch import EnergyTable, load_yaml_mapping, ENERGY_DIR

    h = EnergyTable(**load_yaml_mapping(ENERGY_DIR / "horowitz45nm.yaml", "energy"))
    assert (h.vector_pj_per_element["requant"].value, h.vector_pj_per_element["l2norm"].value) == \
        (pytest.approx(3.2), pytest.approx(6.4))


def test_host_flag_round_trips_and_old_traces_load(tmp_path):
    ops = [DenseOp("head.mlp", 49, 192, 64, weights=True), VectorOp("head.l2norm", "l2norm", 64, 64),
           VectorOp("head.sinkhorn.lse", "other", 833, host=True), DenseOp("head.agg", 16, 49, 16, host=True)]
    back = read_trace(write_trace(tmp_path / "t.npz", Trace(1, {}, ops)))
    assert [getattr(o, "host") for o in back.ops] == [False, False, True, True]
    assert (back.ops[1].kind, back.ops[1].row) == ("l2norm", 64)
    # the header writes the flag only where it is set: a trace without it is the old format
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
        header = json.loads(z["__header__"].tobytes())
    assert ["host" in o for o in header["ops"]] == [False, False, True, True]
    # an old trace (no host fields anywhere) loads, every op on the fabric
    old = read_trace(write_trace(tmp_path / "old.npz", synthetic_vit_trace(depth=1, dim=64, tokens=10, heads=2,
                                                                         mlp_ratio=4.0, sparsity=0.0, seed=0)))
    assert not any(getattr(o, "host", False) for o in old.ops)


def _write_header(path, ops):
    header = {"format": "tatvpr-trace", "version": 1, "meta": {}, "ops": ops}
    with open(path, "wb") as fh:
        np.savez_compressed(fh, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8))
    return path


def test_bad_host_flags_are_refused(tmp_path):
    with pytest.raises(SimInputError, match="field 'host' = 'yes': must be true or false"):
        read_trace(_write_header(tmp_path / "a.npz", [{"type": "vector", "name": "v", "kind": "other",
                                                       "elements": 3, "host": "yes"}]))
    with pytest.raises(SimInputError, match="field 'host' = 1: must be true or false"):
        read_trace(_write_header(tmp_path / "b.npz", [{"type": "dense", "name": "d", "m": 1, "k": 1, "n": 1,
                                                       "host": 1}]))
    with pytest.raises(SimInputError, match="field 'host' is for dense and vector ops"):
        read_trace(_write_header(tmp_path / "c.npz", [{"type": "ternary_linear", "name": "t", "m": 1, "k": 4,
                                                       "n": 1, "host": False}]))
    with pytest.raises(SimInputError, match="field 'host' = None"):
        validate_trace(Trace(1, {}, [VectorOp("v", "other", 3, host=None)]))
    with pytest.raises(SimInputError, match="'kind' = 'norm'"):
        validate_trace(Trace(1, {}, [VectorOp("v", "norm", 3)]))


def _salad_like(host: bool) -> Trace:
    """A tiny SALAD tail: an MLP's last GEMM and ReLU on the units, then the Sinkhorn part (a logsumexp
    over the 17 x 49 score matrix, the aggregation f . P^T of [16, 49] x [49, 16]) and an op after it."""
    return Trace(1, {}, [DenseOp("head.score.3", 49, 64, 16, weights=True), VectorOp("head.score.2", "other", 3136),
                         VectorOp("head.lse", "other", 833, host=host), DenseOp("head.agg", 16, 49, 16, host=host),
                         VectorOp("head.after", "add", 256)])


def test_simulator_charges_host_ops_on_the_host_by_hand():
    """KV260 (250 MHz; host call 5 us, 1 ns per element, 100 pJ per element by default): the 833-element
    host op takes ceil((5000 + 833) ns x 0.25 cycles/ns) = ceil(1458.25) = 1459 cycles; the host
    aggregation 16 x 49 x 16 = 12544 MACs as 12544 elements: (5000 + 12544) x 0.25 = 4386 cycles; their
    energy 83,300 and 1,254,400 pJ in the vector_unit component. The other ops are charged as before."""
    arch = load_arch("kv260")
    v = arch.spec.vector_unit
    assert (arch.spec.clock_mhz, v.host_call_overhead_us, v.host_ns_per_element["other"],
            v.host_pj_per_element) == (250, 5.0, 1.0, 100.0)
    host = simulate(arch, _salad_like(True))
    fabric = simulate(arch, _salad_like(False))
    hl = {r["name"]: r for r in host.layers}
    fl = {r["name"]: r for r in fabric.layers}
    assert hl["head.lse"]["cycles"] == 1459 and hl["head.agg"]["cycles"] == 4386
    assert hl["head.lse"]["host"] and hl["head.agg"]["host"] and "host" not in hl["head.after"]
    assert hl["head.lse"]["energy_pj"]["vector_unit"] == pytest.approx(833 * 100.0)
    assert hl["head.agg"]["energy_pj"]["vector_unit"] == pytest.approx(12544 * 100.0)
    assert hl["head.agg"]["energy_pj"]["int8_unit"] == 0
    # on the fabric the same ops cost ceil(833 / 16) + 12 = 65 vector cycles and an int8-unit GEMM
    assert fl["head.lse"]["cycles"] == 53 + 12 and fl["head.agg"]["unit"] == "int8_unit"
    for name in ("head.score.3", "head.score.2", "head.after"):
        assert hl[name]["cycles"] == fl[name]["cycles"], name
        assert hl[name]["energy_pj_total"] == pytest.approx(fl[name]["energy_pj_total"]), name
    assert host["cycles"] - fabric["cycles"] == (1459 + 4386) - (65 + fl["head.agg"]["cycles"])
    assert host["cycles_by_unit"]["vector_unit"] == fabric["cycles_by_unit"]["vector_unit"] - 65 + 1459 + 4386


def test_simulator_charges_head_requant_and_l2norm_on_the_fabric_by_hand():
    """16 lanes, pipeline 12: requant of 49 x 192 = 9408 elements: 588 + 12 = 600 cycles; l2norm of 512
    (one row): 32 x 2 + 80 + 12 = 156 cycles."""
    arch = load_arch("kv260")
    res = simulate(arch, Trace(1, {}, [VectorOp("head.input", "requant", 9408),
                                       VectorOp("head.l2norm", "l2norm", 512, 512)]))
    assert [r["cycles"] for r in res.layers] == [600, 156]
    assert math.isclose(res.layers[1]["energy_pj"]["vector_unit"],
                        512 * 14.784 + 80 * arch.energy.vector_row_step_pj.value)
