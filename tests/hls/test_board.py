"""`tatvpr export bitstream`: the generated Vitis HLS / Vivado Tcl names the right part, PS,
IP and ports, runs in a Tcl interpreter with the vendor commands stubbed, and bad boards or
design points give clear errors."""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from tatvpr_hw.cli import main
from tatvpr_hw.lower.hls.paths import hls_dir

REPO = Path(__file__).resolve().parents[2]
PARTS = {"kv260": "xck26-sfvc784-2LV-c", "zcu104": "xczu7ev-ffvc1156-2-e", "pynq-z2": "xc7z020clg400-1"}


def defines_by_hand(arch: dict) -> str:
    """The -D values of an arch file's design point, from docs/engine.md section 6:
    K_max = floor(8192 * weights_kb / (h * PE * 2)) as a multiple of B, I = ceil(log2 K_max),
    CHUNKS_MAX = ceil(8192 * activations_kb / (SIMD * (8 + I))), MMAX = ceil(8192 * outputs_kb / (PE * 8))."""
    c, buf = arch["compute"], arch["buffers"]
    pe, simd = c["pe"], c["simd"]
    gather = c.get("gather") or {}
    banks, ports = gather.get("banks") or simd, gather.get("ports", 1)
    h = 2 if arch.get("double_buffering", True) else 1
    kmax = int(8192 * buf["weights_kb"] // (h * pe * 2))
    kmax -= kmax % banks
    if buf.get("k_max"):  # the arch's cap, rounded up to whole bank words
        kmax = min(kmax, buf["k_max"] + (-buf["k_max"] % banks))
    i = math.ceil(math.log2(kmax))
    chunks = math.ceil(8192 * buf["activations_kb"] / (simd * (8 + i)))
    mmax = math.ceil(8192 * buf["outputs_kb"] / (pe * 8))
    return (f"-DTATVPR_PE={pe} -DTATVPR_SIMD={simd} -DTATVPR_BANKS={banks} -DTATVPR_PORTS={ports} "
            f"-DTATVPR_HALVES={h} -DTATVPR_KMAX={kmax} -DTATVPR_MMAX={mmax} -DTATVPR_CHUNKS_MAX={chunks}")


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
    import tkinter  # the Tcl interpreter that runs the generated Tcl: never skipped
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
    assert any(c[1].endswith("src/tatvpr_gemm.cpp") and c[3].endswith(defines_by_hand(arch)) for c in add)

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
    assert (out / "deploy" / "ternary_format" / "packing.py").read_text() == \
        (Path(__file__).resolve().parents[2] / "ternary_format" / "packing.py").read_text()
    assert os.access(out / "build.sh", os.X_OK)


def test_design_point_sizes_the_ip(tmp_path):
    point = tmp_path / "best_point.json"
    point.write_text(json.dumps({"format": "tatvpr-dse-point", "pe": 16, "simd": 4, "clock_mhz": 250,
                                 "weight_format": "ternary1.6", "skip_mode": "act", "board": "zcu104",
                                 "arch": "zcu104", "overrides": {"buffers.weights_kb": 128, "buffers.activations_kb":
                                                                 1024, "buffers.outputs_kb": 1024,
                                                                 "buffers.k_max": None}}))
    rc, out = export(tmp_path, "--board", "zcu104", "--dse-point", str(point), "--no-run")
    assert rc == 0
    hls = (out / "vitis_hls.tcl").read_text()
    assert "-DTATVPR_PE=16 -DTATVPR_SIMD=4" in hls and "create_clock -period 4.000" in hls
    assert "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {250}" in (out / "vivado.tcl").read_text()
    man = json.loads((out / "project.json").read_text())
    assert man["design_point"]["weight_format"] == "ternary1.6"
    assert man["csim_sample"]["layer"]["fmt"] == "ternary1.6" and man["csim_sample"]["bit_exact"]
    # PE 16, SIMD 4 (B = 4), 128 / 1024 / 1024 KiB, no k_max cap: K_max = 8192 * 128 / (2 * 16 * 2) = 16384, I = 14,
    # CHUNKS_MAX = ceil(8192 * 1024 / (4 * 22)) = ceil(95325.09), MMAX = 8388608 / 128
    assert (man["kernel"]["kmax"], man["kernel"]["chunks_max"], man["kernel"]["mmax"]) == (16384, 95326, 65536)


def test_banks_and_ports_of_the_point_reach_the_kernel(tmp_path):
    point = tmp_path / "best_point.json"
    point.write_text(json.dumps({"pe": 8, "simd": 16, "clock_mhz": 200, "banks": 4, "ports": 2, "board": "kv260",
                                 "arch": "kv260", "overrides": {"buffers.weights_kb": 16, "buffers.k_max": 4096}}))
    rc, out = export(tmp_path, "--board", "kv260", "--dse-point", str(point), "--no-run")
    assert rc == 0
    # K_max = min(8192 * 16 / (2 * 8 * 2), k_max) = 4096; R = 16 / (4 * 2) = 2: weights 2 halves x 2 x 4 memories
    # of 16-bit words, depth 1024
    assert "-DTATVPR_BANKS=4 -DTATVPR_PORTS=2 -DTATVPR_HALVES=2 -DTATVPR_KMAX=4096" in (out / "vitis_hls.tcl").read_text()
    man = json.loads((out / "project.json").read_text())
    assert man["onchip_bits"]["weights_bits"] == 2 * 2 * 4 * 16 * 1024
    assert man["csim_sample"]["bit_exact"]
    deploy = json.loads((out / "deploy" / "design_point.json").read_text())
    assert (deploy["banks"], deploy["ports"], deploy["kmax"]) == (4, 2, 4096)


def test_skip_mode_none_point_exports(tmp_path):
    """Issue 15: the simulator's best KV260 point uses skip mode none; the IP builds it with
    TATVPR_SKIP_NONE (dense int8 words, no index bits): export, sample C-sim bit-exact."""
    point = tmp_path / "best_point.json"
    point.write_text(json.dumps({"pe": 32, "simd": 32, "clock_mhz": 250, "skip_mode": "none", "board": "kv260"}))
    rc, out = export(tmp_path, "--board", "kv260", "--dse-point", str(point), "--no-run")
    assert rc == 0
    assert "-DTATVPR_SKIP_NONE" in (out / "vitis_hls.tcl").read_text()
    man = json.loads((out / "project.json").read_text())
    # kv260 arch: 512 KiB of activations in words of 32 int8 (256 bits, no index): 4,194,304 / 256 = 16384 words
    assert man["kernel"]["skip_mode"] == "none" and man["kernel"]["chunks_max"] == 16384
    assert man["onchip_bits"]["activations_bits"] == 16384 * 256
    cs = man["csim_sample"]
    assert cs["bit_exact"] and cs["chunk_cycles_per_fold"] == cs["expected_chunk_cycles_per_fold"]
    # the sample layer: 16 tokens of K = 96 at SIMD 32: 3 words each, whatever their zeros
    assert cs["chunk_cycles_per_fold"] == 16 * 3
    deploy = json.loads((out / "deploy" / "design_point.json").read_text())
    assert deploy["skip_mode"] == "none"


def test_config_sizes_the_buffers(tmp_path, capsys):
    cfg = REPO / "configs" / "tatvpr_boq_vitb14.yaml"
    # the ViT-B/14 student at 224 px (K <= 3072, 257 tokens) on ZCU104's default arch fits
    rc, out = export(tmp_path, "--board", "zcu104", "--config", str(cfg), "--no-run")
    assert rc == 0
    man = json.loads((out / "project.json").read_text())
    # zcu104: 8192 * 128 / (2 * 64 * 2) = 4096, capped by its buffers.k_max = 3072
    assert man["layers"] == {"kmax": 3072, "mmax": 257} and man["kernel"]["kmax"] == 3072
    # a 64-row array on Pynq-Z2's 32 KiB weight buffer: 8192 * 32 / (2 * 64 * 2) = 1024, capped at k_max 768
    point = tmp_path / "p.json"
    point.write_text(json.dumps({"pe": 64, "simd": 16, "clock_mhz": 100}))
    rc, _ = export(tmp_path / "b", "--board", "pynq-z2", "--config", str(cfg), "--dse-point", str(point), "--no-run")
    err = capsys.readouterr().err
    assert rc == 2 and "K = 3072 do not fit the weight buffer: K_max = 768" in err
    assert "weights_kb >= 96 and buffers.k_max >= 3072" in err          # 2 * 64 * 2 * 3072 / 8192


@pytest.mark.parametrize("point, message", [
    ({"pe": 8, "clock_mhz": 200}, "missing key(s) simd"),
    ({"pe": 0, "simd": 8, "clock_mhz": 200}, "pe = 0"),
    ({"pe": 8, "simd": 8, "clock_mhz": 900}, "clock_mhz = 900"),
    ({"pe": 8, "simd": 8, "clock_mhz": 200, "skip_mode": "weight"}, "builds activation skipping ('act') or no skipping"),
    ({"pe": 8, "simd": 8, "clock_mhz": 200, "board": "pynq_z2"}, "is for board 'pynq_z2'"),
    ({"pe": 8, "simd": 8, "clock_mhz": 200, "weight_format": "int4"}, "weight_format = 'int4'"),
    ({"pe": 8, "simd": 8, "clock_mhz": 200, "banks": 3}, "compute.gather.banks = 3 does not divide compute.simd = 8"),
    ({"pe": 8, "simd": 8, "clock_mhz": 200, "banks": 1}, "at least 2 banks"),
    ({"pe": 8, "simd": 8, "clock_mhz": 200, "overrides": {"buffers.weights_kb": 0.01}}, "holds no fold"),
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
    assert rc == 2 and "unknown board 'zedboard'" in err and "kv260, zcu104, pynq_z2" in err
    rc, _ = export(tmp_path, "--board", "pynq-z2", "--kmax", "16384", "--tokens", "1025", "--no-run")
    err = capsys.readouterr().err
    assert rc == 2 and "K = 16384 do not fit the weight buffer: K_max = 768" in err  # pynq_z2.yaml k_max
    # any M: the IP cuts a layer's tokens into blocks of at most MMAX (10240 here) on chip
    from tatvpr_hw.lower.hls.board import check_layer_sizes, default_design_point, get_board, kernel_params
    point = default_design_point(get_board("pynq-z2"))
    kp = kernel_params(point)
    check_layer_sizes(point, kp, 64, 10 * kp.mmax + 1)
    # 2 MiB of activations: 16.8 Mbit, more than Pynq-Z2's 140 BRAM36 (5.2 Mbit)
    point = tmp_path / "big.json"
    point.write_text(json.dumps({"pe": 16, "simd": 16, "clock_mhz": 100, "overrides": {"buffers.activations_kb": 2048}}))
    rc, _ = export(tmp_path / "c", "--board", "pynq-z2", "--dse-point", str(point), "--no-run")
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
