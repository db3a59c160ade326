"""RTL witness: the Verilog tile is bit-exact against the integer reference and cycle-exact
against the simulator; it synthesises with yosys and builds an iCE40 bitstream."""

import math
from pathlib import Path

import numpy as np
import pytest

from sim.trace import synthetic_vit_trace, write_trace
from tatvpr_hw import rtl
from tatvpr_hw.cli import main


def engine_formula_cycles(mask: np.ndarray, simd: int) -> int:
    """ENGINE.md, `act` mode, one fold, independent of sim: sum_m max(1, ceil(nnz/SIMD)) + fill."""
    c_f = sum(max(1, math.ceil(int(row.sum()) / simd)) for row in mask)
    return c_f + (math.ceil(math.log2(simd)) if simd > 1 else 0) + 2


@pytest.fixture(scope="module")
def build_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rtl_build")


def test_chunk_stream_counts_and_empty_token():
    acts = np.arange(12, dtype=np.int16).reshape(2, 6)
    mask = np.array([[1, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=bool)
    chunks = rtl.chunk_stream(acts, mask, simd=2)
    assert len(chunks) == 3 + 1                       # ceil(5/2) chunks, and 1 for the empty token
    assert chunks[0] == (1, 0, [0, 2], [0, 2])
    assert chunks[2] == (0, 1, [5], [5])
    assert chunks[3] == (1, 1, [], [])


@pytest.mark.parametrize("sparsity", [0.0, 0.4, 0.6])
@pytest.mark.parametrize("pe,simd", [(4, 8), (2, 1), (3, 4)])
def test_tile_bit_exact_and_cycle_exact_on_trace_layers(build_root, tmp_path, pe, simd, sparsity):
    trace_path = tmp_path / "t.npz"
    write_trace(trace_path, synthetic_vit_trace(depth=1, dim=48, tokens=10, heads=3, sparsity=sparsity,
                                                natural_zero_frac=0.1, seed=3))
    rows = rtl.check_trace_tiles(trace_path, pe, simd, build_root, layers=2, seed=1)
    assert len(rows) == 2
    for r in rows:
        assert r["bit_exact"], r
        assert r["rtl_cycles"] == r["sim_cycles"], r
    # and the simulator's number is ENGINE.md's formula, computed here independently
    from sim.trace import read_trace
    op = read_trace(trace_path).ternary_ops()[0]
    assert rows[0]["sim_cycles"] == engine_formula_cycles(op.act_mask, simd)


def test_reference_catches_a_wrong_weight(build_root):
    rng = np.random.default_rng(0)
    shape = rtl.TileShape(4, 8, 24)
    w = rng.integers(-1, 2, size=(4, 24)).astype(np.int8)
    mask = rng.random((6, 24)) < 0.6
    acts = np.where(mask, rng.integers(-128, 128, size=mask.shape), 0)
    run = rtl.run_tile(shape, w, acts, mask, build_root)
    assert np.array_equal(run.acc, rtl.reference_acc(w, acts, mask))
    w_bad = w.copy()
    k = int(np.flatnonzero(mask[0] & (acts[0] != 0))[0])
    w_bad[0, k] = 1 if w[0, k] != 1 else -1
    assert not np.array_equal(run.acc, rtl.reference_acc(w_bad, acts, mask))


def test_tile_rejects_bad_shapes(build_root):
    with pytest.raises(rtl.UserError, match="fold weights"):
        rtl.run_tile(rtl.TileShape(2, 2, 4), np.zeros((3, 4)), np.zeros((1, 4)), np.ones((1, 4), bool), build_root)
    with pytest.raises(rtl.UserError, match="positive integer"):
        rtl.TileShape(0, 2, 4)


def test_yosys_ternary_array_cheaper_than_int8_and_model_fits(tmp_path):
    tern = rtl.synth_xilinx(2, 4, "xcup", "ternary")
    int8_lut = rtl.synth_xilinx(2, 4, "xcup", "int8", dsp=False)
    int8_dsp = rtl.synth_xilinx(2, 4, "xcup", "int8", dsp=True)
    assert tern["dsp"] == 0 and tern["lut"] > 0
    assert tern["lut"] < int8_lut["lut"] / 3           # multiplier-free lanes are far cheaper
    assert int8_dsp["dsp"] == 8                         # one DSP per lane when allowed
    rows = [tern] + [rtl.synth_xilinx(pe, simd, "xcup", "ternary") for pe, simd in [(2, 2), (4, 4)]]
    fit = rtl.fit_lane_model(rows)
    assert 10 < fit["lut"]["lut_per_lane"] < 25          # the cheap form: ~16 LUTs per lane
    assert fit["lut"]["max_rel_error"] < 0.05 and fit["ff"]["max_rel_error"] < 0.10


def test_ice40_bitstream_end_to_end(tmp_path):
    r = rtl.build_ice40(tmp_path / "ice40", pe=2, simd=2, k=8)
    assert Path(r["bitstream"]).is_file() and r["bitstream_bytes"] > 1000
    assert 0 < r["logic_cells"] <= r["logic_cells_available"] == 5280
    assert r["fmax_mhz"] > 1.0


def test_cli_rtl_errors_exit_2(tmp_path, capsys):
    assert main(["rtl", "synth", "--grid", "4by8"]) == 2
    assert "PExSIMD" in capsys.readouterr().err
    assert main(["rtl", "sim", "--trace", str(tmp_path / "missing.npz")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("pe,simd", [(2, 4), (8, 2)])
def test_simulator_resource_model_matches_yosys(pe, simd):
    """sim's MAC-array LUT/FF terms, fitted to yosys (docs/rtl.md), predict a fresh synthesis
    within the fit's stated error."""
    from sim.arch import load_arch
    arch = load_arch("kv260")
    r = arch.resource_model
    stages = math.ceil(math.log2(simd)) if simd > 1 else 0
    acc = arch.spec.compute.accumulator_bits
    lut_model = (pe * simd * r.lut_per_lane.value + pe * (simd - 1) * (8 + stages) * r.lut_per_tree_bit.value
                 + pe * acc * r.lut_per_accumulator_bit.value)
    ff_model = (pe * simd * r.ff_per_lane.value + simd * r.ff_per_input_lane.value
                + pe * acc * r.ff_per_accumulator_bit.value)
    got = rtl.synth_xilinx(pe, simd, "xcup", "ternary")
    assert abs(lut_model - (got["lut"] + got["srl"])) / (got["lut"] + got["srl"]) < 0.05
    assert abs(ff_model - got["ff"]) / got["ff"] < 0.08
