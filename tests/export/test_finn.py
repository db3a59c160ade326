"""FINN folder: build-config field names/values and MVAU folding constraints."""

from __future__ import annotations

import json

import pytest

from tatvpr_hw.errors import UserError
from tatvpr_hw.export import finn_route as fr

# Field names of FINN's DataflowBuildConfig (Xilinx/finn src/finn/builder/build_dataflow_config.py)
FINN_FIELDS = {
    "output_dir", "synth_clk_period_ns", "generate_outputs", "specialize_layers_config_file",
    "folding_config_file", "target_fps", "folding_two_pass_relaxation", "verify_steps",
    "verify_input_npy", "verify_expected_output_npy", "verify_save_full_context",
    "verify_save_rtlsim_waveforms", "stitched_ip_gen_dcp", "signature", "mvau_wwidth_max",
    "standalone_thresholds", "minimize_bit_width", "board", "shell_flow_type", "fpga_part",
    "auto_fifo_depths", "split_large_fifos", "auto_fifo_strategy", "force_python_rtlsim",
    "large_fifo_mem_style", "fifosim_input_throttle", "fifosim_save_waveform", "hls_clk_period_ns",
    "default_swg_exception", "vitis_platform", "vitis_floorplan_file", "vitis_opt_strategy",
    "save_intermediate_models", "enable_hw_debug", "enable_build_pdb_debug", "verbose", "steps",
    "start_step", "stop_step", "max_multithreshold_bit_width", "rtlsim_batch_size",
    "rtlsim_use_vivado_comps", "input_range_info",
}
FINN_REQUIRED = {"output_dir", "synth_clk_period_ns", "generate_outputs"}
# DataflowOutputType / ShellFlowType / VerificationStepType values in the same file
FINN_OUTPUTS = {"stitched_ip", "estimate_reports", "out_of_context_synth", "rtlsim_performance",
                "bitfile", "pynq_driver", "deployment_package"}
FINN_SHELLS = {"vivado_zynq", "vitis_alveo"}
FINN_VERIFY = {"finn_onnx_python", "initial_python", "streamlined_python", "folded_hls_cppsim",
               "node_by_node_rtlsim", "stitched_ip_rtlsim"}
# finn.util.basic.pynq_part_map
FINN_PARTS = {"KV260_SOM": "xck26-sfvc784-2LV-c", "ZCU104": "xczu7ev-ffvc1156-2-e",
              "Pynq-Z2": "xc7z020clg400-1"}


@pytest.mark.parametrize("board", sorted(FINN_PARTS))
def test_build_config_matches_finn(board):
    cfg = fr.build_config(board)
    assert set(cfg) <= FINN_FIELDS, set(cfg) - FINN_FIELDS
    assert FINN_REQUIRED <= set(cfg)
    assert cfg["board"] == board and fr.BOARDS[board][0] == FINN_PARTS[board]
    assert cfg["shell_flow_type"] == "vivado_zynq" and cfg["shell_flow_type"] in FINN_SHELLS
    assert set(cfg["generate_outputs"]) <= FINN_OUTPUTS
    for needed in ("estimate_reports", "bitfile", "pynq_driver", "deployment_package"):
        assert needed in cfg["generate_outputs"]
    assert set(cfg["verify_steps"]) <= FINN_VERIFY
    assert cfg["folding_config_file"] == "folding_config.json"
    assert isinstance(cfg["synth_clk_period_ns"], float) and cfg["synth_clk_period_ns"] > 0
    json.dumps(cfg)  # JSON-serialisable as FINN's dataclass_json reads it


def test_unknown_board_rejected():
    with pytest.raises(UserError, match="unknown board 'U250'.*KV260_SOM"):
        fr.build_config("U250")


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


def test_folding_config_names_the_specialised_mvau():
    fc = fr.folding_config(fr.fold(192, 768, 16, 8))
    assert fc["MVAU_hls_0"]["PE"] == 16 and fc["MVAU_hls_0"]["SIMD"] == 8
    assert "Defaults" in fc


def test_read_dse_point(tmp_path):
    p = tmp_path / "best_point.json"
    p.write_text(json.dumps({"pe": 16, "simd": 32, "latency_ms": 1.0}))
    assert fr.read_dse_point(p) == {"pe": 16, "simd": 32}
    p.write_text(json.dumps({"pe": 0, "simd": 32}))
    with pytest.raises(UserError, match="'pe' must be a positive integer"):
        fr.read_dse_point(p)
    with pytest.raises(UserError, match="design point file not found"):
        fr.read_dse_point(tmp_path / "nope.json")


def test_export_json_and_report_section(tmp_path):
    """write_export_json rows carry error + bound; the report renders the export section."""
    from tatvpr_hw.export import write_export_json

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
