"""The board project of `tatvpr export bitstream` contains every unit: the int8-unit and
vector-unit HLS top functions (hls/src/tatvpr_units_top.cpp) are synthesised as IPs in the
generated vitis_hls.tcl and instantiated and wired in vivado.tcl (parsed by running the Tcl with
the vendor commands stubbed; the vendor tools are not run here), and the top functions compute
the integer model's integers (compiled with g++, called through ctypes)."""

from __future__ import annotations

import ctypes
import re
import subprocess

import numpy as np
import pytest

from tatvpr_hw.lower.hls.csim import compiler
from tatvpr_hw.lower.hls.paths import driver_package, hls_dir

def _load_test_board():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_tatvpr_test_board", Path(__file__).with_name("test_board.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


run_tcl = _load_test_board().run_tcl  # the stubbed-Tcl runner of tests/hls/test_board.py

driver_package()
from tatvpr_pynq import integer as iq  # noqa: E402

TOP_SRC = hls_dir() / "src" / "tatvpr_units_top.cpp"


def top_bundles() -> dict[str, tuple[set[str], set[str]]]:
    """{top function: (m_axi bundles, s_axilite ports)} read from the pragmas of the source."""
    src = TOP_SRC.read_text()
    out = {}
    for m in re.finditer(r"void (\w+)\((.*?)\n\}", src, re.S):
        body = m.group(2)
        out[m.group(1)] = (set(re.findall(r"m_axi port = \w+ offset = slave bundle = (\w+)", body)),
                           set(re.findall(r"s_axilite port = (\w+)", body)))
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from tatvpr_hw.lower.hls.board import default_design_point, get_board, write_project

    out = tmp_path_factory.mktemp("units") / "proj"
    board = get_board("kv260")
    man = write_project(board, default_design_point(board), out, kmax=768, mmax=50, check_csim=False)
    return out, man


def test_vitis_hls_tcl_synthesises_every_unit(project):
    out, _ = project
    calls = run_tcl(out / "vitis_hls.tcl")
    tops = [c[1] for c in calls if c[0] == "set_top"]
    assert tops == ["tatvpr_int8_top", "tatvpr_vector_top", "tatvpr_ternary_gemm"]
    assert set(tops[:2]) == set(top_bundles())           # every top of the wrapper file, and only those
    names = [c[c.index("-ipname") + 1] for c in calls if c[0] == "config_export"]
    assert names == ["tatvpr_int8_unit", "tatvpr_vector_unit", "tatvpr_ternary_gemm"]
    # each project synthesises and exports before the next opens; the ternary IP keeps its C simulation
    seq = [c[0] for c in calls if c[0] in ("open_project", "csynth_design", "export_design", "csim_design")]
    assert seq == ["open_project", "csynth_design", "export_design"] * 2 + \
        ["open_project", "csim_design", "csynth_design", "export_design"]
    adds = [c for c in calls if c[0] == "add_files" and "-tb" not in c]
    for c in adds:
        assert (out / "src" / c[1].rsplit("/src/", 1)[1]).is_file()
    unit_adds = [c for c in adds if "tatvpr_units_top.cpp" in c[1]]
    assert len(unit_adds) == 2 and all("-DTATVPR_VLANES=16 -DTATVPR_I8_ROWS=16 -DTATVPR_I8_COLS=16" in c[3]
                                       for c in unit_adds)  # sim/arch/kv260.yaml: 16 lanes, 16 x 16


def test_vivado_tcl_instantiates_and_wires_every_unit(project):
    out, man = project
    calls = run_tcl(out / "vivado.tcl")
    hls_calls = run_tcl(out / "vitis_hls.tcl")
    projects = [c[-1].replace("$root", "") for c in hls_calls if c[0] == "open_project"]
    repo = [c for c in calls if c[0] == "set_property" and c[1] == "ip_repo_paths"][0][2].split()
    assert [p.split(str(out))[-1].split("/solution1")[0] for p in repo] == \
        [p.split(str(out))[-1] for p in projects[2:] + projects[:2]]
    cells = {c[-1]: c[-2] for c in calls if c[0] == "create_bd_cell"}
    assert cells["tatvpr_int8_0"] == "tatvpr.org:hls:tatvpr_int8_unit:1.0"
    assert cells["tatvpr_vector_0"] == "tatvpr.org:hls:tatvpr_vector_unit:1.0"
    assert cells["tatvpr_gemm_0"] == "tatvpr.org:hls:tatvpr_ternary_gemm:1.0"
    assert man["unit_ips"] == {"int8": cells["tatvpr_int8_0"], "vector": cells["tatvpr_vector_0"]}
    intf = [" ".join(c) for c in calls if c[0] == "connect_bd_intf_net"]
    bundles = top_bundles()
    for inst, top in (("tatvpr_int8_0", "tatvpr_int8_top"), ("tatvpr_vector_0", "tatvpr_vector_top")):
        m_axi, lite = bundles[top]
        assert m_axi and "return" in lite
        for b in m_axi:
            assert sum(f"{inst}/m_axi_{b}" in line and "smc_ddr/S" in line for line in intf) == 1, (inst, b)
        assert sum(f"{inst}/s_axi_control" in line and "smc_ctrl/M" in line for line in intf) == 1
    # SmartConnect sizes equal the ports wired, each port used once
    ddr_s = sorted(re.search(r"smc_ddr/(S\d\d)_AXI", line).group(1) for line in intf if "smc_ddr/S" in line)
    ctrl_m = sorted(re.search(r"smc_ctrl/(M\d\d)_AXI", line).group(1) for line in intf if "smc_ctrl/M" in line)
    assert ddr_s == [f"S{i:02d}" for i in range(6)] and ctrl_m == [f"M{i:02d}" for i in range(3)]
    sizes = [" ".join(c) for c in calls if c[0] == "set_property" and "CONFIG.NUM_MI" in " ".join(c)]
    assert any("CONFIG.NUM_SI 1 CONFIG.NUM_MI 3" in s for s in sizes)
    assert any("CONFIG.NUM_SI 6 CONFIG.NUM_MI 1" in s for s in sizes)
    nets = [" ".join(c) for c in calls if c[0] == "connect_bd_net"]
    for inst in ("tatvpr_gemm_0", "tatvpr_int8_0", "tatvpr_vector_0"):
        assert any(f"{inst}/ap_clk" in n and "pl_clk0" in n for n in nets), inst
        assert any(f"{inst}/ap_rst_n" in n and "rst_pl/peripheral_aresetn" in n for n in nets), inst


# ------------------------------------------------------------------ the top functions compute the model's integers
@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    so = tmp_path_factory.mktemp("units_top") / "libunits.so"
    root = hls_dir()
    subprocess.run([compiler(), "-O1", "-std=c++14", "-shared", "-fPIC", "-Wno-unknown-pragmas",
                    "-Wno-unused-label", f"-I{root / 'include'}", str(TOP_SRC), str(root / "src" / "tatvpr_int8.cpp"),
                    str(root / "src" / "tatvpr_vector.cpp"), "-o", str(so)], check=True, capture_output=True)
    return ctypes.CDLL(str(so))


def _p(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _vector(lib, op, *, x16=None, x8=None, s32=None, rmax=None, gain=None, bias=None, mult32=None, shift32=None,
            table=None, t=0, d=0, mult=0, shift=0, eps=0):
    z = np.zeros(1, np.int64)
    y8 = np.zeros(max(t * d, 1), np.int8)
    p8 = np.zeros(max(t * d, 1), np.uint8)
    o16 = np.zeros(max(t * d, 1), np.int16)
    arrs = [x16, x8, s32, rmax, gain, bias, mult32, shift32, table]
    args = [_p(np.ascontiguousarray(a) if a is not None else z) for a in arrs]
    lib.tatvpr_vector_top(ctypes.c_int(op), *args, _p(y8), _p(p8), _p(o16), ctypes.c_int(t), ctypes.c_int(d),
                          ctypes.c_longlong(mult), ctypes.c_int(shift), ctypes.c_longlong(eps))
    return y8, p8, o16


def test_vector_top_equals_the_integer_model(lib):
    rng = np.random.default_rng(3)
    t, d = 5, 40
    x = rng.integers(-3000, 3000, size=(t, d)).astype(np.int16)
    ln = iq.layernorm_params(rng.normal(1, 0.3, d), rng.normal(0, 0.2, d), 1e-6, 0.01, 0.04)
    y8, _, _ = _vector(lib, 1, x16=x, gain=ln.gain.astype(np.int64), bias=ln.bias.astype(np.int64), t=t, d=d,
                       eps=ln.eps_q)
    assert np.array_equal(y8.reshape(t, d), iq.NUMPY_UNITS.layernorm("", ln, x))
    s = rng.integers(-4000, 4000, size=(t, d)).astype(np.int32)
    _, p8, _ = _vector(lib, 2, s32=s, rmax=s.max(1).astype(np.int32), t=t, d=d, mult=1234567, shift=30)
    assert np.array_equal(p8.reshape(t, d), iq.softmax_int(s, 1234567, 30))
    table = iq.gelu_table(0.05, 0.03)
    x8 = rng.integers(-128, 128, size=(t, d)).astype(np.int8)
    y8, _, _ = _vector(lib, 3, x8=x8, table=table, t=t, d=d)
    assert np.array_equal(y8.reshape(t, d), table[x8.astype(np.int64) + 128])
    m32 = rng.integers(-2 ** 30, 2 ** 30, size=d).astype(np.int32)
    s32 = rng.integers(20, 31, size=d).astype(np.int32)
    _, _, o16 = _vector(lib, 4, x16=x, x8=x8, mult32=m32, shift32=s32, t=t, d=d)
    assert np.array_equal(o16.reshape(t, d), iq.NUMPY_UNITS.add("", x, x8, m32, s32))


@pytest.mark.parametrize("mode, out", [(0, "int32"), (1, "int8"), (2, "int16")])
def test_int8_top_equals_the_integer_model(lib, mode, out):
    rng = np.random.default_rng(mode)
    batch, m, k, n = 2, 7, 19, 21
    a = rng.integers(-128, 256, size=(batch, m, k)).astype(np.int16)  # uint8 probabilities reach 255
    b = rng.integers(-128, 128, size=(batch, k, n)).astype(np.int8)
    bias = rng.integers(-5000, 5000, size=n).astype(np.int32)
    mult, shift = 1518500250, 38
    o32 = np.zeros(batch * m * n, np.int32)
    o8 = np.zeros(batch * m * n, np.int8)
    o16 = np.zeros(batch * m * n, np.int16)
    lib.tatvpr_int8_top(_p(a), _p(b), _p(bias), _p(o32), _p(o8), _p(o16), *(ctypes.c_int(v) for v in
                        (batch, m, k, n, mode)), ctypes.c_longlong(mult), ctypes.c_int(shift))
    got = {0: o32, 1: o8, 2: o16}[mode].reshape(batch, m, n)
    ref = iq.NUMPY_UNITS.gemm("", a, b, bias, out=out, mult=mult, shift=shift)
    assert np.array_equal(got, ref)
