"""`tatvpr export bitstream`: the generated Vitis HLS / Vivado Tcl names the right part, PS,
IP and ports, runs in a Tcl interpreter with the vendor commands stubbed, and bad boards or
design points give clear errors."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from tatvpr_hw.cli import main
from tatvpr_hw.hlsflow.paths import hls_dir

REPO = Path(__file__).resolve().parents[2]
PARTS = {"kv260": "xck26-sfvc784-2LV-c", "zcu104": "xczu7ev-ffvc1156-2-e", "pynq-z2": "xc7z020clg400-1"}

# Stub every vendor command: record the call, return something plausible.
_TCL_STUBS = r"""
set ::calls {}
proc unknown {cmd args} {
    lappend ::calls [concat [list $cmd] $args]
    switch -- $cmd {
        get_ipdefs { return "[string trimright [lindex $args end] {:*}]:1.0" }
        get_property { return "100%" }
        get_board_parts { return {} }
        default { return "<$cmd $args>" }
    }
}
rename file _tcl_file
proc file {sub args} {
    if {$sub in {copy mkdir}} { lappend ::calls [concat [list file $sub] $args]; return }
    return [_tcl_file $sub {*}$args]
}
proc glob {args} { return "<glob [lindex $args end]>" }
proc exit {args} { }
"""


def run_tcl(path: Path) -> list[list[str]]:
    tkinter = pytest.importorskip("tkinter")
    tcl = tkinter.Tcl()
    tcl.eval(_TCL_STUBS)
    tcl.eval(f"source {{{path}}}")
    n = int(tcl.eval("llength $::calls"))
    return [[str(w) for w in tcl.splitlist(tcl.eval(f"lindex $::calls {i}"))] for i in range(n)]


def kernel_bundles() -> tuple[set[str], set[str]]:
    src = (hls_dir() / "src" / "tatvpr_gemm.cpp").read_text()
    m_axi = set(re.findall(r"mode = m_axi port = \w+ offset = slave bundle = (\w+)", src))
    lite = set(re.findall(r"mode = s_axilite port = \w+ bundle = (\w+)", src))
    return m_axi, lite


def export(tmp_path, *args) -> tuple[int, Path]:
    out = tmp_path / "proj"
    rc = main(["export", "bitstream", "--out", str(out), *args])
    return rc, out


@pytest.mark.parametrize("board", list(PARTS))
def test_project_for_each_board(tmp_path, capsys, board):
    rc, out = export(tmp_path, "--board", board, "--no-run")
    assert rc == 0
    text = capsys.readouterr().out
    assert "bit-exact" in text and "vivado -mode batch -source vivado.tcl" in text

    hls_calls = run_tcl(out / "vitis_hls.tcl")
    by_cmd = {c[0]: c for c in hls_calls}
    assert by_cmd["set_part"] == ["set_part", PARTS[board]]
    assert by_cmd["set_top"] == ["set_top", "tatvpr_ternary_gemm"]
    assert "csim_design" in by_cmd and "csynth_design" in by_cmd and "export_design" in by_cmd
    add = [c for c in hls_calls if c[0] == "add_files"]
    # no --dse-point: the simulator's default accelerator of the board (sim/arch/<board>.yaml)
    arch = yaml.safe_load((REPO / "sim" / "arch" / f"{board.replace('-', '_')}.yaml").read_text())
    pe, simd = arch["compute"]["pe"], arch["compute"]["simd"]
    assert any(c[1].endswith("src/tatvpr_gemm.cpp") and f"-DTATVPR_PE={pe} -DTATVPR_SIMD={simd}" in c[3]
               for c in add)

    calls = run_tcl(out / "vivado.tcl")
    create = [c for c in calls if c[0] == "create_project"][0]
    assert create[-1] == PARTS[board]
    cells = {c[-1]: c[-2] for c in calls if c[0] == "create_bd_cell"}
    ps_ip = "zynq_ultra_ps_e" if board != "pynq-z2" else "processing_system7"
    assert cells["ps_0"].startswith(f"xilinx.com:ip:{ps_ip}:")
    assert cells["tatvpr_gemm_0"] == "tatvpr.org:hls:tatvpr_ternary_gemm:1.0"
    # every AXI port the kernel's pragmas declare is wired: the masters to DDR, the lite slave
    m_axi, lite = kernel_bundles()
    assert m_axi == {"gmem_act", "gmem_w"} and lite == {"control"}
    intf_pins = " ".join(" ".join(c) for c in calls if c[0] == "connect_bd_intf_net")
    for bundle in m_axi:
        assert f"tatvpr_gemm_0/m_axi_{bundle}" in intf_pins
    assert "tatvpr_gemm_0/s_axi_control" in intf_pins
    hp = "S_AXI_HP0_FPD" if board != "pynq-z2" else "S_AXI_HP0"
    assert any(c[0] == "get_bd_intf_pins" and c[1] == f"ps_0/{hp}" for c in calls)
    assert any(c[:2] == ["launch_runs", "impl_1"] and "write_bitstream" in c for c in calls)
    assert any(c[:2] == ["file", "copy"] and c[-1].endswith("deploy/tatvpr_gemm.hwh") for c in calls)

    man = json.loads((out / "project.json").read_text())
    assert man["part"] == PARTS[board] and man["csim_sample"]["bit_exact"]
    assert man["design_point"]["source"].startswith("sim/arch/")
    assert man["design_point"]["clock_mhz"] == min(arch["clock_mhz"], 999)
    assert man["tools"]["ran"] is False
    assert (out / "deploy" / "tatvpr_pynq" / "_packing.py").read_text() == \
        (Path(__file__).resolve().parents[2] / "sim" / "packing.py").read_text()
    assert os.access(out / "build.sh", os.X_OK)


def test_design_point_sizes_the_ip(tmp_path):
    point = tmp_path / "best_point.json"
    point.write_text(json.dumps({"format": "tatvpr-dse-point", "pe": 16, "simd": 4, "clock_mhz": 250,
                                 "weight_format": "ternary1.6", "skip_mode": "act", "board": "zcu104"}))
    rc, out = export(tmp_path, "--board", "zcu104", "--dse-point", str(point), "--no-run")
    assert rc == 0
    hls = (out / "vitis_hls.tcl").read_text()
    assert "-DTATVPR_PE=16 -DTATVPR_SIMD=4" in hls and "create_clock -period 4.000" in hls
    assert "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {250}" in (out / "vivado.tcl").read_text()
    man = json.loads((out / "project.json").read_text())
    assert man["design_point"]["weight_format"] == "ternary1.6"
    assert man["csim_sample"]["layer"]["fmt"] == "ternary1.6" and man["csim_sample"]["bit_exact"]
    assert man["kernel"]["chunks_max"] == 50 * 768 // 4


def test_config_sizes_the_buffers(tmp_path):
    cfg = REPO / "configs" / "tatvpr_boq_vitb14.yaml"
    # the ViT-B/14 student at 224 px on ZCU104's default 64 x 32 array needs more on-chip memory
    # than the board has; a 16 x 16 point fits
    rc, _ = export(tmp_path / "a", "--board", "zcu104", "--config", str(cfg), "--no-run")
    assert rc == 2
    point = tmp_path / "p.json"
    point.write_text(json.dumps({"pe": 16, "simd": 16, "clock_mhz": 200}))
    rc, out = export(tmp_path, "--board", "zcu104", "--config", str(cfg), "--dse-point", str(point), "--no-run")
    assert rc == 0
    kernel = json.loads((out / "project.json").read_text())["kernel"]
    assert kernel["kmax"] == 3072 and kernel["mmax"] == 16 * 16 + 1


@pytest.mark.parametrize("point, message", [
    ({"pe": 8, "clock_mhz": 200}, "missing key(s) simd"),
    ({"pe": 0, "simd": 8, "clock_mhz": 200}, "pe = 0"),
    ({"pe": 8, "simd": 8, "clock_mhz": 900}, "clock_mhz = 900"),
    ({"pe": 8, "simd": 8, "clock_mhz": 200, "skip_mode": "weight"}, "activation skipping only"),
    ({"pe": 8, "simd": 8, "clock_mhz": 200, "board": "pynq_z2"}, "is for board 'pynq_z2'"),
    ({"pe": 8, "simd": 8, "clock_mhz": 200, "weight_format": "int4"}, "weight_format = 'int4'"),
    ("not json", "not JSON"),
])
def test_bad_design_point(tmp_path, capsys, point, message):
    p = tmp_path / "point.json"
    p.write_text(point if isinstance(point, str) else json.dumps(point))
    rc, out = export(tmp_path, "--board", "kv260", "--dse-point", str(p), "--no-run")
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_bad_board_and_oversized_buffers(tmp_path, capsys):
    rc, _ = export(tmp_path, "--board", "zedboard", "--no-run")
    err = capsys.readouterr().err
    assert rc == 2 and "unknown board 'zedboard'" in err and "kv260, zcu104, pynq-z2" in err
    rc, _ = export(tmp_path, "--board", "pynq-z2", "--kmax", "16384", "--tokens", "1025", "--no-run")
    err = capsys.readouterr().err
    assert rc == 2 and "Mbit" in err and "pynq-z2" in err


def test_runs_the_tools_when_on_path(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("vitis_hls", "vivado"):
        script = bin_dir / tool
        # a stand-in tool: records its arguments; "vivado" drops the files the real one writes
        script.write_text("#!/bin/sh\necho \"$0 $*\" >> calls.txt\n"
                          + ("mkdir -p deploy && touch deploy/tatvpr_gemm.bit deploy/tatvpr_gemm.hwh\n"
                             if tool == "vivado" else ""))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    rc, out = export(tmp_path, "--board", "kv260")
    assert rc == 0
    calls = (out / "calls.txt").read_text().splitlines()
    assert calls[0].endswith("vitis_hls -f vitis_hls.tcl -l logs/vitis_hls.log")
    assert "vivado -mode batch -source vivado.tcl" in calls[1]
    assert json.loads((out / "project.json").read_text())["tools"]["ran"] is True
    assert "bitstream:" in capsys.readouterr().out
