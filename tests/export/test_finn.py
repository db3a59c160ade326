"""FINN folder: build-config field names/values and MVAU folding constraints."""

from __future__ import annotations

import json

import pytest

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.finn import route as fr

# Field names of FINN main's DataflowBuildConfig (Xilinx/finn branch main, commit 39f0c9a of
# 2026-04-14, src/finn/builder/build_dataflow_config.py, read for issue 14): no fifosim_* and no
# input_range_info there (those are dev-branch fields)
FINN_FIELDS = {
    "output_dir", "synth_clk_period_ns", "generate_outputs", "specialize_layers_config_file",
    "folding_config_file", "target_fps", "folding_two_pass_relaxation", "verify_steps",
    "verify_input_npy", "verify_expected_output_npy", "verify_save_full_context",
    "verify_save_rtlsim_waveforms", "stitched_ip_gen_dcp", "signature", "mvau_wwidth_max",
    "standalone_thresholds", "minimize_bit_width", "board", "shell_flow_type", "fpga_part",
    "auto_fifo_depths", "split_large_fifos", "auto_fifo_strategy", "force_python_rtlsim",
    "large_fifo_mem_style", "hls_clk_period_ns", "default_swg_exception", "vitis_platform",
    "vitis_floorplan_file", "vitis_opt_strategy", "save_intermediate_models", "enable_hw_debug",
    "enable_build_pdb_debug", "verbose", "steps", "start_step", "stop_step",
    "max_multithreshold_bit_width", "rtlsim_batch_size", "rtlsim_use_vivado_comps",
}
FINN_REQUIRED = {"output_dir", "synth_clk_period_ns", "generate_outputs"}
# DataflowOutputType / ShellFlowType / VerificationStepType values in the same file
FINN_OUTPUTS = {"stitched_ip", "estimate_reports", "out_of_context_synth", "rtlsim_performance",
                "bitfile", "pynq_driver", "deployment_package"}
FINN_SHELLS = {"vivado_zynq", "vitis_alveo"}
FINN_VERIFY = {"finn_onnx_python", "initial_python", "streamlined_python", "folded_hls_cppsim",
               "stitched_ip_rtlsim"}
# finn.util.basic.pynq_part_map (FINN main), keyed by the project's board names
FINN_BOARDS = {"kv260": ("KV260_SOM", "xck26-sfvc784-2LV-c"), "zcu104": ("ZCU104", "xczu7ev-ffvc1156-2-e"),
               "pynq_z2": ("Pynq-Z2", "xc7z020clg400-1")}


def _point(board="kv260", pe=16, simd=8, clock_mhz=None):
    b = fr.finn_board(board)
    return b, fr.design_point(b, pe=pe, simd=simd, clock_mhz=clock_mhz)


@pytest.mark.parametrize("board", sorted(FINN_BOARDS))
def test_build_config_matches_finn(board):
    b, p = _point(board)
    cfg = fr.build_config(b, p)
    assert set(cfg) <= FINN_FIELDS, set(cfg) - FINN_FIELDS
    assert FINN_REQUIRED <= set(cfg)
    assert (cfg["board"], b.part) == FINN_BOARDS[board]
    assert cfg["shell_flow_type"] == "vivado_zynq" and cfg["shell_flow_type"] in FINN_SHELLS
    assert set(cfg["generate_outputs"]) <= FINN_OUTPUTS
    for needed in ("estimate_reports", "bitfile", "pynq_driver", "deployment_package"):
        assert needed in cfg["generate_outputs"]
    assert set(cfg["verify_steps"]) <= FINN_VERIFY and "folded_hls_cppsim" in cfg["verify_steps"]
    assert cfg["folding_config_file"] == "folding_config.json"
    # the requantisation is its own thresholding layer, specialised to RTL
    assert cfg["standalone_thresholds"] is True
    assert fr.specialize_config()["Thresholding_0"] == {"preferred_impl_style": "rtl"}
    json.dumps(cfg)  # JSON-serialisable as FINN's dataclass_json reads it


def test_clock_from_the_design_point(tmp_path):
    """One clock: the point's clock_mhz is FINN's period and the bitstream export's clock."""
    from tatvpr_hw.lower.hls.board import get_board, read_design_point

    p = tmp_path / "best_point.json"
    p.write_text(json.dumps({"format": "tatvpr-dse-point", "pe": 16, "simd": 32, "clock_mhz": 300,
                             "weight_format": "ternary2", "skip_mode": "act", "board": "kv260"}))
    b = fr.finn_board("kv260")
    point = fr.read_dse_point(p, b)
    assert (point.pe, point.simd, point.clock_mhz) == (16, 32, 300.0)
    cfg = fr.build_config(b, point)
    assert cfg["synth_clk_period_ns"] == pytest.approx(3.333333, abs=1e-6)  # 1000 / 300
    assert read_design_point(p, get_board("kv260")).clock_mhz == 300.0  # export bitstream's reader


@pytest.mark.parametrize("board,hls_name", [("kv260", "kv260"), ("pynq_z2", "pynq-z2")])
def test_explicit_folding_default_clock_is_the_board_arch(board, hls_name):
    """--pe/--simd without --clock-mhz: the clock of sim/arch/<board>.yaml capped at the board's
    fabric_fmax_mhz (sim/boards/<board>.yaml, the flow's cap too), what `export bitstream` uses
    without a point."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    arch_mhz = yaml.safe_load((root / "sim" / "arch" / f"{board}.yaml").read_text())["clock_mhz"]
    max_mhz = yaml.safe_load((root / "sim" / "boards" / f"{board}.yaml").read_text())["fabric_fmax_mhz"]["value"]
    b, p = _point(board, pe=4, simd=4)
    assert p.clock_mhz == min(arch_mhz, max_mhz)
    assert fr.build_config(b, p)["synth_clk_period_ns"] == pytest.approx(1000 / min(arch_mhz, max_mhz))
    assert _point(board, pe=4, simd=4, clock_mhz=100)[1].clock_mhz == 100


def test_design_point_required_and_exclusive(tmp_path):
    b = fr.finn_board("zcu104")
    with pytest.raises(UserError, match="--dse-point .* or both --pe and --simd"):
        fr.design_point(b)
    with pytest.raises(UserError, match="--dse-point .* or both --pe and --simd"):
        fr.design_point(b, pe=8)
    p = tmp_path / "bp.json"
    p.write_text(json.dumps({"pe": 8, "simd": 8, "clock_mhz": 200}))
    with pytest.raises(UserError, match="either --dse-point .* not both"):
        fr.design_point(b, dse_point=p, pe=8, simd=8)
    p.write_text(json.dumps({"pe": 8, "simd": 8}))
    with pytest.raises(UserError, match="missing key\\(s\\) clock_mhz"):
        fr.design_point(b, dse_point=p)
    # ZCU104's limit is its fabric fmax, 400 MHz (sim/boards/zcu104.yaml; the simulator's cap too)
    p.write_text(json.dumps({"pe": 8, "simd": 8, "clock_mhz": 450}))
    with pytest.raises(UserError, match="clock_mhz = 450; allowed: a number in \\(0, 400\\]"):
        fr.design_point(b, dse_point=p)
    p.write_text(json.dumps({"pe": 8, "simd": 8, "clock_mhz": 200, "board": "kv260"}))
    with pytest.raises(UserError, match="is for board 'kv260', not 'zcu104'"):
        fr.design_point(b, dse_point=p)


@pytest.mark.parametrize("spelling,name", [("kv260", "kv260"), ("KV260_SOM", "kv260"),
                                           ("pynq_z2", "pynq_z2"), ("Pynq-Z2", "pynq_z2")])
def test_board_vocabulary(spelling, name):
    b = fr.finn_board(spelling)
    assert b.name == name and b.finn_name == FINN_BOARDS[name][0]


def test_unknown_board_rejected():
    with pytest.raises(UserError, match="unknown board 'U250'.*allowed: kv260, zcu104, pynq_z2"):
        fr.finn_board("U250")


@pytest.mark.parametrize("mw,mh,pe,simd", [(192, 768, 16, 16), (768, 192, 8, 32), (192, 576, 3, 64)])
def test_fold_valid_point_kept(mw, mh, pe, simd):
    f = fr.fold(mw, mh, pe, simd)
    assert (f["PE"], f["SIMD"], f["adjusted"]) == (pe, simd, False)


def test_fold_adjusts_to_nearest_divisor():
    f = fr.fold(192, 768, pe=10, simd=10)
    assert 768 % f["PE"] == 0 and 192 % f["SIMD"] == 0
    assert f["adjusted"] and "PE 10 -> 8" in f["note"] and "SIMD 10 -> 8" in f["note"]
    # 7 is 1 away from both 6 and 8 (divisors of 192): the tie goes to the smaller one
    assert fr.fold(192, 768, pe=1, simd=7)["SIMD"] == 6


def test_fold_strict_rejects_non_divisible():
    with pytest.raises(UserError, match="non-divisible folding: PE=10 does not divide the 768"):
        fr.fold(192, 768, pe=10, simd=16, strict=True)


def test_divisors_and_nearest():
    assert fr.divisors(12) == [1, 2, 3, 4, 6, 12]
    assert fr.nearest_divisor(192, 1000) == 192


def test_folding_config_names_the_specialised_nodes():
    fc = fr.folding_config(fr.fold(192, 768, 16, 8))
    assert fc["MVAU_hls_0"]["PE"] == 16 and fc["MVAU_hls_0"]["SIMD"] == 8
    # the thresholding unit takes the MVAU's PE (FINN needs NumChannels % PE == 0: 768 % 16)
    assert fc["Thresholding_rtl_0"]["PE"] == 16
    assert "Defaults" in fc


def test_read_dse_point(tmp_path):
    b = fr.finn_board("kv260")
    p = tmp_path / "best_point.json"
    p.write_text(json.dumps({"pe": 16, "simd": 32, "clock_mhz": 250.0, "latency_ms": 1.0}))
    assert fr.read_dse_point(p, b) == fr.FinnPoint(16, 32, 250.0, str(p))
    p.write_text(json.dumps({"pe": 0, "simd": 32, "clock_mhz": 250}))
    with pytest.raises(UserError, match="pe = 0; allowed: a positive integer"):
        fr.read_dse_point(p, b)
    with pytest.raises(UserError, match="design point file not found"):
        fr.read_dse_point(tmp_path / "nope.json", b)


def test_export_json_and_report_section(tmp_path):
    """write_export_json rows carry error + bound; the report renders the export section."""
    from tatvpr_hw.lower import write_export_json

    check = {"artifact": "a", "max_abs_err": 1e-4, "mean_abs_err": 1e-5, "bound_max_abs": 2e-2,
             "bound_mean_abs": 1e-3, "bound_reason": "why-qonnx", "passed": True}
    qonnx = {"file": "student_clean.onnx", "check": check, "ops": {"TopK": 16},
             "quant_nodes": {"weights_2bit_narrow": 16, "activation": 16}}
    layer = {"project": "hls4ml_fc1", "check": {**check, "bound_reason": "why-hls"}, "layer": "fc1",
             "n_in": 192, "n_out": 768, "backend": "Vitis", "io_type": "io_parallel",
             "part": "xck26-sfvc784-2LV-c", "ternary": True, "build_command": "cd x && vitis-run",
             "generated": {"dense_products": ["weight_ternary"], "multiplier_free": True},
             "time_s": {"gxx_compile": 20.0}}
    finn = {"dir": "finn", "check": {**check, "passed": False}, "layer": "fc1", "mw": 192, "mh": 768,
            "board": "KV260_SOM", "command": "./run-docker.sh build_dataflow /x",
            "folding": {"PE": 8, "SIMD": 16, "adjusted": True, "note": "PE 10 -> 8"}}
    path = write_export_json(tmp_path, qonnx=qonnx, hls4ml={"layers": [layer]}, finn=finn,
                             time_s={"qonnx": 60.0})
    doc = json.loads(path.read_text())
    assert [r["route"] for r in doc["artifacts"]] == ["qonnx", "hls4ml", "finn"]
    assert doc["hls4ml_multiplier_free"] is True
    assert doc["artifacts"][2]["passed"] is False and "PE 10 -> 8" in doc["artifacts"][2]["detail"]
    from tatvpr_hw.report import render_report

    html = render_report(tmp_path).read_text()
    assert "Export to FPGA frameworks" in html and "weight_ternary" in html
    assert "why-hls" in html and "FAIL" in html and "run-docker.sh build_dataflow" in html
