"""Energy checks added for the mutants `make mutation` found alive (docs/testing.md).

Table values are written here from sim/energy/horowitz45nm.yaml (softmax 8.6 pJ per element,
gelu 5.6), not read through the code under test.
"""

import pytest

from sim.arch import ENERGY_DIR, arch_from_dict
from sim.energy import COMPONENTS, energy_pj


def _arch(**vector_unit):
    spec = {"name": "v", "energy_table": str(ENERGY_DIR / "horowitz45nm.yaml"), "clock_mhz": 250,
            "static_power_w": 0.5, "compute": {"pe": 8, "simd": 8, "skip_mode": "none"}}
    if vector_unit:
        spec["vector_unit"] = vector_unit
    return arch_from_dict(spec, "energy-mutants")


def test_missing_counts_cost_nothing():
    # A count the op does not report is zero actions: every component but static is 0 pJ.
    e = energy_pj({}, _arch(), 0)
    assert set(e) == set(COMPONENTS)
    assert all(v == 0.0 for v in e.values()), e


def test_vector_elements_priced_by_kind():
    # 10 softmax elements x 8.6 pJ = 86 pJ; 4 gelu elements x 5.6 = 22.4 pJ; nothing else
    e = energy_pj({"vector_elements": 10}, _arch(), 0, vector_kind="softmax")
    assert e["vector_unit"] == pytest.approx(86.0, rel=1e-12)
    assert sum(v for k, v in e.items() if k != "vector_unit") == 0.0
    assert energy_pj({"vector_elements": 4}, _arch(), 0, vector_kind="gelu")["vector_unit"] \
        == pytest.approx(22.4, rel=1e-12)


def test_host_elements_priced_per_element():
    # host vector unit: 6 elements x 7 pJ = 42 pJ (the spec's host_pj_per_element)
    e = energy_pj({"host_elements": 6}, _arch(mode="host", host_pj_per_element=7.0), 0)
    assert e["vector_unit"] == pytest.approx(42.0, rel=1e-12)
    assert set(e) == set(COMPONENTS)
    # default host price 100 pJ per element (sim.arch VectorUnitSpec): 3 x 100
    assert energy_pj({"host_elements": 3}, _arch(mode="host"), 0)["vector_unit"] == pytest.approx(300.0)
