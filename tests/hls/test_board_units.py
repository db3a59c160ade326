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

from tatvpr_hw.errors import UserError
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
    # the int8 IP's fused attention (schedule.attention: fused) is in both unit projects, sized by the point
    assert sum("tatvpr_attention.cpp" in c[1] for c in adds) == 2
    assert all("-DTATVPR_ATT_ROWS=32 -DTATVPR_ATT_MAX_TOKENS=257 -DTATVPR_ATT_MAX_HEAD_DIM=64" in c[3]
               for c in unit_adds)
    # its softmax lanes: schedule.attention_lanes, not given in kv260.yaml -> the vector unit's 16
    assert all(" -DTATVPR_ATT_LANES=16 " in c[3] for c in unit_adds)
    # the vector unit's top-k schedules for the ternary IP of the same project: its SIMD, banks and K_max
    kp = re.search(r"-DTATVPR_SIMD=(\d+) -DTATVPR_BANKS=(\d+).* -DTATVPR_KMAX=(\d+)",
                   next(" ".join(c) for c in adds if "tatvpr_gemm.cpp" in c[1]))
    assert kp and all(f"-DTATVPR_TOPK_SIMD={kp[1]} -DTATVPR_TOPK_BANKS={kp[2]} -DTATVPR_TOPK_KMAX={kp[3]}" in c[3]
                      for c in unit_adds)


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
                    "-Wno-unused-label", "-DTATVPR_TOPK_SIMD=8", "-DTATVPR_TOPK_BANKS=4",  # the pe4_simd8 IP's gather
                    f"-I{root / 'include'}", str(TOP_SRC), str(root / "src" / "tatvpr_int8.cpp"),
                    str(root / "src" / "tatvpr_vector.cpp"), str(root / "src" / "tatvpr_attention.cpp"),
                    str(root / "src" / "tatvpr_chain.cpp"), "-o", str(so)],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(so))


def _p(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _vector(lib, op, *, x16=None, x8=None, s32=None, rmax=None, gain=None, bias=None, mult32=None, shift32=None,
            table=None, t=0, d=0, mult=0, shift=0, eps=0, keep=0, streams=None):
    z = np.zeros(1, np.int64)
    y8 = np.zeros(max(t * d, 1), np.int8)
    p8 = np.zeros(max(t * d, 1), np.uint8)
    o16 = np.zeros(max(t * d, 1), np.int16)
    c16, p32 = streams if streams is not None else (np.zeros(1, np.uint16), np.zeros(1, np.uint32))
    arrs = [x16, x8, s32, rmax, gain, bias, mult32, shift32, table]
    args = [_p(np.ascontiguousarray(a) if a is not None else z) for a in arrs]
    lib.tatvpr_vector_top(ctypes.c_int(op), *args, _p(y8), _p(p8), _p(o16), ctypes.c_int(t), ctypes.c_int(d),
                          ctypes.c_longlong(mult), ctypes.c_int(shift), ctypes.c_longlong(eps), _p(c16), _p(p32),
                          ctypes.c_int(keep))
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
    # op 6: the head's requantisation (one multiplier); op 7: the descriptor's L2 norm in Q15 (5 x 40 = one vector)
    y8, _, _ = _vector(lib, 6, x16=x, t=t, d=d, mult=1518500250, shift=36)
    assert np.array_equal(y8.reshape(t, d), iq.NUMPY_UNITS.requant("", x, 1518500250, 36))
    _, _, o16 = _vector(lib, 7, x16=x, t=t, d=d)
    assert np.array_equal(o16, iq.l2norm_int(x))
    _, _, o16 = _vector(lib, 7, x16=np.zeros(d, np.int16), t=1, d=d)
    assert not o16.any()
    # op 8: the top-k + bank scheduling for the ternary IP the top is built for (SIMD 8, 4 banks);
    # op 9: the top-k alone, the kept values in place
    from tatvpr_pynq.formats import schedule_activations

    keep = 24  # ceil(0.4 x 40)
    c16, p32 = np.zeros(t, np.uint16), np.zeros(t * 5 * 8, np.uint32)
    _vector(lib, 8, x8=x8, t=t, d=d, keep=keep, streams=(c16, p32))
    chunks, pairs = schedule_activations(iq.topk_int(x8, 0.4), 8, 4)
    assert np.array_equal(c16, chunks) and np.array_equal(p32[:pairs.size], pairs) and not p32[pairs.size:].any()
    y8, _, _ = _vector(lib, 9, x8=x8, t=t, d=d, keep=keep)
    assert np.array_equal(y8.reshape(t, d), iq.topk_int(x8, 0.4))


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
                        (batch, m, k, n, mode)), ctypes.c_longlong(mult), ctypes.c_int(shift),
                        ctypes.c_longlong(0), ctypes.c_int(0))
    got = {0: o32, 1: o8, 2: o16}[mode].reshape(batch, m, n)
    ref = iq.NUMPY_UNITS.gemm("", a, b, bias, out=out, mult=mult, shift=shift)
    assert np.array_equal(got, ref)


# ------------------------------------------------------------------ the PYNQ driver of the unit IPs
def _load_test_module(name):
    import importlib.util
    from pathlib import Path

    # named inside the tests.hls package pytest's importlib mode set up, so `from .conftest import` works
    spec = importlib.util.spec_from_file_location(f"{__name__.rpartition('.')[0] or 'tests.hls'}._h3_{name}",
                                                  Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_td = _load_test_module("test_driver")   # the mocked pynq, DDR and ternary IP of tests/hls/test_driver.py
_tp = _load_test_module("test_pipeline")  # the random integer trunk

from tatvpr_pynq import driver as drv  # noqa: E402
from tatvpr_pynq.pipeline import run_trunk  # noqa: E402
from tatvpr_pynq.runtime import PynqUnits  # noqa: E402

INT8_BASE, VECTOR_BASE = 0xA001_0000, 0xA002_0000


def _hwh_offsets(args, shift=4):
    """A register layout unlike the Vitis default (every argument ``shift`` bytes later), so a driver
    that ignored the .hwh would program the wrong registers."""
    return {k: v + shift for k, v in drv.unit_default_offsets(args).items()}


INT8_OFFSETS = _hwh_offsets(drv.INT8_ARGS)
VECTOR_OFFSETS = _hwh_offsets(drv.VECTOR_ARGS, 8)


def _module(instance, vlnv, args, offsets):
    def reg(name, off):
        return (f'<REGISTER NAME="{name}"><PROPERTY NAME="ADDRESS_OFFSET" VALUE="{off}"/>'
                f'<PROPERTY NAME="SIZE" VALUE="32"/><PROPERTY NAME="ACCESS" VALUE="read-write"/></REGISTER>')
    regs = [reg("CTRL", 0)] if offsets is not None else []
    for name, kind, _ in (args if offsets is not None else ()):
        if kind == "u32":
            regs.append(reg(name, offsets[name]))
        else:  # Vitis HLS: a 64-bit argument is <arg>_1 (low word) and <arg>_2 (high word)
            regs += [reg(f"{name}_1", offsets[name]), reg(f"{name}_2", offsets[name] + 4)]
    return (f'<MODULE FULLNAME="/{instance}" INSTANCE="{instance}" MODTYPE="{vlnv.split(":")[2]}" VLNV="{vlnv}">'
            f'<ADDRESSBLOCKS><ADDRESSBLOCK INTERFACE="s_axi_control" NAME="Reg" RANGE="65536" USAGE="register">'
            f'<REGISTERS>{"".join(regs)}</REGISTERS></ADDRESSBLOCK></ADDRESSBLOCKS></MODULE>')


def units_hwh(int8_vlnv=drv.INT8_VLNV, offsets=True):
    """test_driver's .hwh (PS + ternary IP) with the int8-unit and vector-unit IPs added."""
    text = _td.hwh_text()
    ranges = "".join(
        f'<MEMRANGE BASEVALUE="0x{base:08X}" HIGHVALUE="0x{base + 0xFFFF:08X}" INSTANCE="{inst}" '
        f'MEMTYPE="REGISTER" SLAVEBUSINTERFACE="s_axi_control"/>'
        for base, inst in ((INT8_BASE, "tatvpr_int8_0"), (VECTOR_BASE, "tatvpr_vector_0")))
    mods = (_module("tatvpr_int8_0", int8_vlnv, drv.INT8_ARGS, INT8_OFFSETS if offsets else None)
            + _module("tatvpr_vector_0", drv.VECTOR_VLNV, drv.VECTOR_ARGS, VECTOR_OFFSETS if offsets else None))
    text = text.replace("</MEMORYMAP>", ranges + "</MEMORYMAP>", 1)
    return text.replace("</MODULES>", mods + "</MODULES>", 1)


class TopIP:
    """AXI4-Lite registers at the .hwh's offsets; ap_start calls the compiled top function (the HLS
    source, through ctypes) on the DDR buffers the registers point at, as the IP would."""

    def __init__(self, ddr, lib, top, args, offsets):
        self.ddr, self.lib, self.top, self.args, self.off = ddr, lib, top, args, offsets
        self.regs: dict[int, int] = {}
        self.runs = 0

    def write(self, offset, value):
        assert 0 <= value < 2 ** 32
        self.regs[offset] = value
        if offset == drv.AP_CTRL and value & drv.AP_START:
            self._run()

    def read(self, offset):
        return self.regs.get(offset, 0)

    def _word(self, name, wide):
        lo = self.regs[self.off[name]]
        return lo | (self.regs[self.off[name] + 4] << 32) if wide else lo

    def _run(self):
        vals = []
        for name, kind, _ in self.args:
            if kind == "ptr":
                buf = self.ddr.buffers[self._word(name, True)]
                assert buf.device_address in self.ddr.live, f"{name} points at a freed buffer"
                vals.append(buf.ctypes.data_as(ctypes.c_void_p))
            elif kind == "u64":
                v = self._word(name, True)
                vals.append(ctypes.c_longlong(v - (1 << 64) if v >= 1 << 63 else v))
            else:
                v = self._word(name, False)
                vals.append(ctypes.c_int(v - (1 << 32) if v >= 1 << 31 else v))
        getattr(self.lib, self.top)(*vals)
        self.runs += 1
        self.regs[drv.AP_CTRL] = drv.AP_DONE


@pytest.fixture
def unit_board(lib, csim_builds, tmp_path):
    kp, exe = csim_builds["pe4_simd8"]
    ddr = _td.FakeDDR()
    gemm = _td.CsimIP(ddr, exe, kp, tmp_path, _td.HWH_OFFSETS)
    int8 = TopIP(ddr, lib, "tatvpr_int8_top", drv.INT8_ARGS, INT8_OFFSETS)
    vec = TopIP(ddr, lib, "tatvpr_vector_top", drv.VECTOR_ARGS, VECTOR_OFFSETS)

    def make(hwh=None, registers_in_description=True, **point):
        bit = _td.write_deploy(tmp_path, kp, hwh=hwh or units_hwh(), **point)
        devices = {_td.IP_BASE: gemm, INT8_BASE: int8, VECTOR_BASE: vec}
        return drv.TernaryGemmOverlay(str(bit), pynq_module=_td.fake_pynq(
            ddr, devices, registers_in_description=registers_in_description))
    return make, ddr, gemm, int8, vec


def test_unit_ips_bound_to_their_vlnvs_with_the_hwh_register_maps(unit_board):
    make, *_ = unit_board
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")
        ov = make()
    assert type(ov.overlay.tatvpr_int8_0).__name__ == "Int8UnitDriver"
    assert type(ov.overlay.tatvpr_vector_0).__name__ == "VectorUnitDriver"
    assert ov.overlay.tatvpr_int8_0.bindto == ["tatvpr.org:hls:tatvpr_int8_unit:1.0"]
    assert isinstance(ov.int8, drv.Int8UnitIP) and isinstance(ov.vector, drv.VectorUnitIP)
    assert ov.int8.offsets == INT8_OFFSETS and ov.vector.offsets == VECTOR_OFFSETS
    assert ov.unit_register_sources == {"int8": "hwh (pynq)", "vector": "hwh (pynq)"}
    # the Vitis layout by hand: a void top's arguments from 0x10, pointers and long long 12 bytes,
    # ints 8: a 0x10, b 0x1c, bias 0x28, out32 0x34, out8 0x40, out16 0x4c, batch 0x58, m 0x60, k 0x68,
    # n 0x70, mode 0x78, mult 0x80 (two words), shift 0x8c, att_mult 0x94 (two words), att_shift 0xa0
    assert drv.unit_default_offsets(drv.INT8_ARGS) == {
        "a": 0x10, "b": 0x1C, "bias": 0x28, "out32": 0x34, "out8": 0x40, "out16": 0x4C, "batch": 0x58,
        "m": 0x60, "k": 0x68, "n": 0x70, "mode": 0x78, "mult": 0x80, "shift": 0x8C, "att_mult": 0x94,
        "att_shift": 0xA0}
    ov2 = make(registers_in_description=False)
    assert ov2.int8.offsets == INT8_OFFSETS and ov2.unit_register_sources["int8"] == "hwh"
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        ov3 = make(hwh=units_hwh(offsets=False), registers_in_description=False)
    assert sorted(str(c.message).split()[4] for c in caught) == ["tatvpr_int8_0", "tatvpr_vector_0"]
    assert all("using the Vitis HLS default offsets" in str(c.message) for c in caught)
    assert ov3.int8.offsets == drv.unit_default_offsets(drv.INT8_ARGS)
    with pytest.raises(drv.IPError, match="tatvpr_int8_0 .* not Int8UnitDriver: its VLNV in the .hwh is "
                                          "tatvpr.org:hls:other:1.0"):
        make(hwh=units_hwh(int8_vlnv="tatvpr.org:hls:other:1.0"))
    bad = units_hwh().replace('NAME="mult_2"', 'NAME="mult_3"', 1).replace('NAME="shift"', 'NAME="shiftx"', 1)
    with pytest.raises(ValueError, match="missing shift"):
        make(hwh=bad)
    # a bitstream without the unit IPs (the ternary IP alone): the units stay in numpy
    ov4 = make(hwh=_td.hwh_text())
    assert ov4.int8 is None and ov4.vector is None
    units = PynqUnits(ov4)
    trunk = _tp.random_trunk(seed=3)
    img = _tp._image(trunk)
    assert np.array_equal(trunk.tokens(img, 0.4, units), trunk.tokens(img, 0.4))
    assert units.fabric_ops_by_unit["int8"] == 0 and units.arm_ops["vector"] > 0


def test_unit_ip_calls_equal_the_integer_model(unit_board):
    make, ddr, _, int8, vec = unit_board
    ov = make()
    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, size=(3, 7, 13)).astype(np.uint8)           # attention probabilities
    b = rng.integers(-128, 128, size=(3, 13, 9)).astype(np.int8)
    for out, mult, shift in (("int32", 0, 0), ("int8", 1518500250, 40), ("int16", 1518500250, 33)):
        ref = iq.NUMPY_UNITS.gemm("", a, b, out=out, mult=mult, shift=shift)
        got = ov.int8.gemm(a, b, out=out, mult=mult, shift=shift)
        assert np.array_equal(got, ref), out          # int32 scores (the model holds them as int64)
        assert out == "int32" or got.dtype == ref.dtype
    x2 = rng.integers(-128, 128, size=(5, 13)).astype(np.int8)
    w2 = rng.integers(-128, 128, size=(13, 6)).astype(np.int8)
    bias = rng.integers(-3000, 3000, size=6)
    assert np.array_equal(ov.int8.gemm(x2, w2, bias, out="int16", mult=1 << 30, shift=36),
                          iq.NUMPY_UNITS.gemm("", x2, w2, bias, out="int16", mult=1 << 30, shift=36))
    x = rng.integers(-3000, 3000, size=(6, 32)).astype(np.int16)
    ln = iq.layernorm_params(rng.normal(1, .3, 32), rng.normal(0, .2, 32), 1e-6, 0.01, 0.04)
    assert np.array_equal(ov.vector.layernorm(ln, x), iq.NUMPY_UNITS.layernorm("", ln, x))
    s = rng.integers(-5000, 5000, size=(6, 17)).astype(np.int64)
    assert np.array_equal(ov.vector.softmax(s, 1234567, 30), iq.softmax_int(s, 1234567, 30))
    table = iq.gelu_table(0.05, 0.03)
    x8 = rng.integers(-128, 128, size=(6, 32)).astype(np.int8)
    assert np.array_equal(ov.vector.gelu(table, x8), table[x8.astype(np.int64) + 128])
    m32, s32 = rng.integers(2 ** 29, 2 ** 30, size=32), rng.integers(20, 31, size=32)
    assert np.array_equal(ov.vector.add(x, x8, m32, s32), iq.NUMPY_UNITS.add("", x, x8, m32, s32))
    # the head's requantisation and the descriptor's L2 norm (a long long multiplier: both words)
    got = ov.vector.requant(x, 1518500250, 37)
    assert got.dtype == np.int8 and np.array_equal(got, iq.NUMPY_UNITS.requant("", x, 1518500250, 37))
    d16 = rng.integers(-32768, 32768, size=300).astype(np.int16)
    got = ov.vector.l2norm(d16)
    assert got.dtype == np.int16 and np.array_equal(got, iq.l2norm_int(d16))
    assert int8.runs == 4 and vec.runs == 6
    with pytest.raises(ValueError, match="normalises 1 to 65535"):
        ov.vector.l2norm(np.zeros(65536, np.int16))
    with pytest.raises(ValueError, match="shift in \\[1, 62\\]"):
        ov.vector.requant(x, 3, 63)
    # PynqUnits routes the head's requant and l2norm to the vector IP
    units = PynqUnits(ov)
    assert np.array_equal(units.requant("head.input", x, 1518500250, 37), iq.NUMPY_UNITS.requant("", x, 1518500250, 37))
    assert np.array_equal(units.l2norm("head.l2norm", d16), iq.l2norm_int(d16))
    assert units.fabric_ops_by_unit["vector"] == 2 and units.arm_ops["vector"] == 0 and vec.runs == 8
    # a wrong register map bites: program the IP's registers at the Vitis defaults instead
    ov.vector.offsets = drv.unit_default_offsets(drv.VECTOR_ARGS)
    with pytest.raises(KeyError):
        ov.vector.layernorm(ln, x)


def test_pynq_units_run_the_whole_trunk_on_the_three_ips(unit_board):
    """Every ternary linear on the ternary IP (its C simulation), every int8-unit GEMM and vector-unit
    op on the unit IPs (their HLS top functions): the integer model's tokens bit for bit, op by op and
    issued pipelined; the DDR buffers are allocated once per operand and reused by later calls."""
    make, ddr, gemm, int8, vec = unit_board
    ov = make()
    trunk = _tp.random_trunk(seed=4)
    img = _tp._image(trunk)
    ref = trunk.tokens(img, 0.4)
    units = PynqUnits(ov)
    assert np.array_equal(trunk.tokens(img, 0.4, units), ref)
    # by hand, 2 blocks: 4 ternary linears each; patch embedding + QK^T + P.V; 2 LN, softmax, GELU, 2 adds
    assert units.fabric_ops_by_unit == {"ternary": 8, "int8": 5, "vector": 12}
    assert units.arm_ops == {"int8": 0, "vector": 0}
    assert (gemm.runs, int8.runs, vec.runs) == (8, 5, 12)
    allocated = ddr.allocations
    got, log = run_trunk(trunk, img, 0.4, units, tile_tokens=5)
    assert np.array_equal(got, ref)
    assert units.fabric_ops == 25 + len(log.tasks) - 1  # every issued task but the host's position add
    # no new DDR buffers for the same shapes' operands; tiles are smaller than whole ops
    assert ddr.allocations == allocated
    # the three IPs driven at the same time, one host thread each
    got, log_t = run_trunk(trunk, img, 0.4, units, tile_tokens=5, threads=True)
    assert np.array_equal(got, ref) and len(log_t.tasks) == len(log.tasks)
    ov.close()
    assert ddr.live == {}


def test_unit_ip_start_and_wait_let_the_host_overlap_ips(unit_board):
    """start() returns with the IP running; the host may start another IP before wait()."""
    make, _, _, int8, vec = unit_board
    ov = make()
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, size=(4, 8)).astype(np.int8)
    b = rng.integers(-128, 128, size=(8, 4)).astype(np.int8)
    ov.int8.start_gemm(a, b)
    x8 = rng.integers(-128, 128, size=(2, 16)).astype(np.int8)
    table = iq.gelu_table(0.05, 0.03)
    y = ov.vector.gelu(table, x8)                           # the vector unit runs meanwhile
    assert np.array_equal(ov.int8.wait().reshape(4, 4), iq.imatmul(a, b))
    assert np.array_equal(y, table[x8.astype(np.int64) + 128])
    with pytest.raises(drv.IPError, match="without a started call"):
        ov.int8.wait()
    ov.int8.start_gemm(a, b)
    with pytest.raises(drv.IPError, match="start\\(\\) while a call is running"):
        ov.int8.start_gemm(a, b)
    ov.int8.wait()
    # a long long argument fills both of its words (low, then high at +4)
    ov.vector.start({"x8": x8.reshape(-1), "table8": table}, {"op": 3, "t": 1, "d": 32, "eps_q": 2 ** 33 + 5},
                    "y8", 32)
    assert (vec.regs[VECTOR_OFFSETS["eps_q"]], vec.regs[VECTOR_OFFSETS["eps_q"] + 4]) == (5, 2)
    ov.vector.wait()


def test_pynq_units_follow_the_design_points_schedule(unit_board, tmp_path):
    """design_point.json carries the arch's schedule; ``pipelined`` issues tile by tile (one thread per
    IP), ``none`` op by op, the same integers. `tatvpr export bitstream` writes the keys."""
    from tatvpr_hw.lower.hls.board import design_point_from_arch, get_board, write_project
    from sim.arch import load_arch, with_overrides

    make, *_ = unit_board
    ov = make()
    trunk = _tp.random_trunk(seed=6)
    img = _tp._image(trunk)
    units = PynqUnits(ov)
    assert units.overlap == "none"                       # write_deploy's point has no schedule
    assert np.array_equal(units.trunk_tokens(trunk, img, 0.4), trunk.tokens(img, 0.4))
    assert units.last_issue is None and units.fabric_ops == 25
    ov.design_point.update(overlap="pipelined", tile_tokens=4)
    assert np.array_equal(units.trunk_tokens(trunk, img, 0.4), trunk.tokens(img, 0.4))
    # 17 tokens in tiles of 4: 5 tiles of every row op; 2 heads per attention op
    assert sum(1 for n, _, _ in units.last_issue.tasks if n == "blocks.1.fc1") == 5
    assert sum(1 for n, _, _ in units.last_issue.tasks if n == "blocks.0.qkv") == 2
    arch = with_overrides(load_arch("kv260"), {"schedule.overlap": "pipelined", "schedule.tile_tokens": 32})
    # the arch's default on-chip hand-offs are not what the bitstream builds: refused, one message
    with pytest.raises(UserError, match="schedule.handoffs = 'onchip' with overlap 'pipelined'.*set schedule.handoffs: dram"):
        design_point_from_arch(arch, "test")
    arch = with_overrides(arch, {"schedule.handoffs": "dram"})
    point = design_point_from_arch(arch, "test")
    assert (point.overlap, point.tile_tokens, point.handoffs) == ("pipelined", 32, "dram")
    man = write_project(get_board("kv260"), point, tmp_path / "p", kmax=768, mmax=50, check_csim=False)
    import json as _json

    deployed = _json.loads((tmp_path / "p" / "deploy" / "design_point.json").read_text())
    assert (deployed["overlap"], deployed["tile_tokens"], deployed["handoffs"]) == ("pipelined", 32, "dram")
    assert (tmp_path / "p" / "deploy" / "tatvpr_pynq" / "pipeline.py").is_file()
    assert man["design_point"]["overlap"] == "pipelined"


def test_pynq_units_top_k_on_the_vector_ip(unit_board):
    """A design point with schedule.topk fabric (design_point.json "topk"): every ternary linear's input is
    top-k'd and bank-scheduled by the vector IP (op topk of its HLS top) and the ternary IP reads that
    stream: the integer model's tokens bit for bit, op by op and issued pipelined with one thread per
    IP (the vector IP then serves two threads); qkv's stream made once, though the pipelined issue calls
    the ternary IP once per head. Without the key the host does it (numpy), as before."""
    make, ddr, gemm, int8, vec = unit_board
    ov = make(topk="fabric")
    trunk = _tp.random_trunk(seed=4)
    img = _tp._image(trunk)
    ref = trunk.tokens(img, 0.4)
    units = PynqUnits(ov)
    assert units.topk_on_fabric and not PynqUnits(make()).topk_on_fabric
    assert np.array_equal(trunk.tokens(img, 0.4, units), ref)
    # by hand, 2 blocks: 4 ternary linears each, each after its input's top-k on the vector IP (12 + 8)
    assert units.fabric_ops_by_unit == {"ternary": 8, "int8": 5, "vector": 20}
    assert (gemm.runs, int8.runs, vec.runs) == (8, 5, 20) and units.arm_ops == {"int8": 0, "vector": 0}
    calls = []
    real = ov.vector.topk_schedule

    def counted(x, keep, **kw):
        calls.append(np.shape(x))
        return real(x, keep, **kw)

    ov.vector.topk_schedule = counted
    runs = gemm.runs
    names = []
    real_t = units.ternary

    def named(name, lin, x, sp):
        names.append((name, np.asarray(x).tobytes(), np.shape(x)))
        return real_t(name, lin, x, sp)

    units.ternary = named
    got, log = run_trunk(trunk, img, 0.4, units, tile_tokens=5, threads=True)
    assert np.array_equal(got, ref)
    # qkv is called once per head on the whole input (17 tokens x 32); its stream is made once per block:
    # the driver keeps the last stream and reuses it when the same op comes with the same input (which
    # also skips this random trunk's proj tiles that repeat the previous one: its attention is uniform)
    heads, blocks = trunk.blocks[0].num_heads, len(trunk.blocks)
    assert heads > 1 and gemm.runs - runs == len(names)
    assert sum(1 for n, _, _ in names if n.endswith("qkv")) == blocks * heads
    fresh = [a for a, b in zip(names, [None] + names[:-1]) if b is None or a[:2] != b[:2]]
    assert calls.count((17, 32)) == blocks and calls == [shape for _, _, shape in fresh]
    # the stream is passed on: the vector IP's x8 input is the linear's int8 input, its pairs32 the
    # ternary IP's act stream (the same numpy model: schedule_activations(topk_int(x, s)))
    x = np.random.default_rng(1).integers(-128, 128, size=(6, 40)).astype(np.int8)
    from tatvpr_pynq.formats import schedule_activations

    chunks, pairs = ov.vector.topk_schedule(x, 24, simd=8, banks=4)
    want = schedule_activations(iq.topk_int(x, 0.4), 8, 4)
    assert np.array_equal(chunks, want[0]) and np.array_equal(pairs, want[1])
    ov.close()


def test_int8_top_fused_attention_equals_the_integer_model(lib):
    """Mode 3 of the int8 top (TATVPR_I8_ATTENTION): the qkv projection's output in b, the attention output
    in out8; P.V requantised by mult / shift, the softmax's multiplier in att_mult / att_shift."""
    rng = np.random.default_rng(21)
    h, t, dh = 4, 40, 24
    qkv = rng.integers(-128, 128, size=(t, 3 * h * dh)).astype(np.int8)
    o8 = np.zeros(t * h * dh, np.int8)
    z16, z32 = np.zeros(1, np.int16), np.zeros(1, np.int32)
    av_mult, av_shift, sm_mult, sm_shift = 1518500250, 42, 1234567, 30
    lib.tatvpr_int8_top(_p(z16), _p(qkv), _p(z32), _p(z32), _p(o8), _p(z16), *(ctypes.c_int(v) for v in
                        (h, t, dh, 0, 3)), ctypes.c_longlong(av_mult), ctypes.c_int(av_shift),
                        ctypes.c_longlong(sm_mult), ctypes.c_int(sm_shift))
    ref = iq.NUMPY_UNITS.attention("", qkv, h, sm_mult, sm_shift, av_mult, av_shift)
    assert np.array_equal(o8.reshape(t, h * dh), ref) and ref.any()


def test_pynq_units_fused_attention_on_the_int8_ip(unit_board):
    """design_point.json "attention": "fused": a block's attention is one call of the int8 IP's attention
    mode (its HLS top through ctypes), the integer model's tokens bit for bit, op by op and issued
    pipelined (one call per head, the IPs in their own threads); no softmax on the vector IP and no
    scores on the host. Without the key: QK^T, softmax, P.V as before."""
    make, ddr, gemm, int8, vec = unit_board
    ov = make(attention="fused")
    trunk = _tp.random_trunk(seed=4)
    img = _tp._image(trunk)
    ref = trunk.tokens(img, 0.4)
    units = PynqUnits(ov)
    assert units.attention_fused and not PynqUnits(make()).attention_fused
    assert np.array_equal(trunk.tokens(img, 0.4, units), ref)
    # by hand, 2 blocks: patch embedding + one attention call a block on the int8 IP; 2 LN, GELU, 2 adds a block
    assert units.fabric_ops_by_unit == {"ternary": 8, "int8": 3, "vector": 10}
    assert (int8.runs, vec.runs) == (3, 10) and units.arm_ops == {"int8": 0, "vector": 0}
    assert int8.regs[INT8_OFFSETS["mode"]] == drv.ATTENTION_MODE
    got, log = run_trunk(trunk, img, 0.4, units, tile_tokens=5, fused=True, threads=True)
    assert np.array_equal(got, ref)
    # the attention segment is [qkv, attn] by head: 2 heads, 2 blocks -> 4 attention calls (+ the patch embedding)
    assert sum(1 for n, _, _ in log.tasks if n.endswith(".attn")) == 4 and int8.runs == 3 + 1 + 4
    assert not any(n.endswith(("attn.qk", "attn.softmax", "attn.av")) for n, _, _ in log.tasks)
    ov.design_point.update(overlap="pipelined", tile_tokens=4)
    assert np.array_equal(units.trunk_tokens(trunk, img, 0.4), ref)
    assert sum(1 for n, _, _ in units.last_issue.tasks if n.endswith(".attn")) == 4
    with pytest.raises(ValueError, match="multiple of 3 heads"):
        ov.int8.attention(np.zeros((4, 10), np.int8), 3, 1, 30, 1, 30)


def test_vector_ip_chain_equals_the_integer_model(unit_board):
    """schedule.vector_chain: fused: ``VectorUnitIP.chain`` (op 11 of the vector top, the TATVPR_CHAIN_*
    flags in ``shift``) through the IP's registers and DDR buffers = ``Units.vector_chain``: add ->
    LayerNorm -> the act stream (the residual written back), the dense top-k, GELU -> the act stream, and
    LayerNorm alone after an add; one IP call each."""
    from tatvpr_pynq.formats import quantize_multiplier

    make, ddr, gemm, int8, vec = unit_board
    ov = make()
    rng = np.random.default_rng(8)
    t, d, h, s = 6, 40, 160, 0.4
    ln = iq.layernorm_params(rng.normal(1, 0.3, d), rng.normal(0, 0.2, d), 1e-6, 0.01, 0.04)
    ms = [quantize_multiplier(v) for v in rng.uniform(0.05, 2.0, d)]
    mult, shift = np.array([m for m, _ in ms]), np.array([v for _, v in ms])
    x16 = rng.integers(-3000, 3000, size=(t, d)).astype(np.int16)
    x8 = rng.integers(-128, 128, size=(t, d)).astype(np.int8)
    hid = rng.integers(-128, 128, size=(t, h)).astype(np.int8)
    table = iq.gelu_table(0.05, 0.03)
    u = iq.NUMPY_UNITS
    runs = vec.runs
    res, (chunks, pairs) = ov.vector.chain(x16=x16, x8=x8, add=(mult, shift), ln=ln, keep=iq.topk_keep(d, s),
                                           simd=8, banks=4, write_res=True)
    wres, (wc, wp) = u.vector_chain("", x16=x16, x8=x8, add=(mult, shift), ln=ln, sparsity=s, simd=8, banks=4)
    assert np.array_equal(res, wres) and np.array_equal(chunks, wc) and np.array_equal(pairs, wp)
    res, dense = ov.vector.chain(x16=x16, x8=x8, add=(mult, shift), ln=ln, keep=iq.topk_keep(d, s), stream=False)
    assert res is None and np.array_equal(dense, u.vector_chain("", x16=x16, x8=x8, add=(mult, shift), ln=ln,
                                                                 sparsity=s)[1])
    _, (chunks, pairs) = ov.vector.chain(x8=hid, gelu_table=table, keep=iq.topk_keep(h, s), simd=8, banks=4)
    _, (wc, wp) = u.vector_chain("", x8=hid, gelu_table=table, sparsity=s, simd=8, banks=4)
    assert np.array_equal(chunks, wc) and np.array_equal(pairs, wp)
    res, y = ov.vector.chain(x16=x16, x8=x8, add=(mult, shift), ln=ln, write_res=True)
    assert np.array_equal(res, u.add("", x16, x8, mult, shift)) and np.array_equal(y, ln(res))
    assert vec.runs - runs == 4  # one IP call per chain
    with pytest.raises(ValueError, match="write_res"):
        ov.vector.chain(x16=x16, ln=ln, write_res=True)
    ov.close()


def test_unit_projects_build_the_chain_sized_by_the_point(project):
    """Both unit projects compile tatvpr_chain.cpp (tatvpr_units_top.cpp calls it), its int16 row sized by
    the point's schedule.max_dim (sim/arch/kv260.yaml: 768)."""
    out, _ = project
    adds = [c for c in run_tcl(out / "vitis_hls.tcl") if c[0] == "add_files" and "-tb" not in c]
    assert sum("tatvpr_chain.cpp" in c[1] for c in adds) == 2
    assert all("-DTATVPR_CHAIN_MAX_DIM=768" in c[3] for c in adds if "tatvpr_units_top.cpp" in c[1])


def test_pynq_units_chain_the_vector_ops_on_the_vector_ip(unit_board):
    """design_point.json "vector_chain": "fused" (overlap pipelined, top-k fabric): each row tile's add1 ->
    norm2 -> fc1's top-k, gelu -> fc2's top-k and add2 -> the next block's norm1 -> qkv's top-k (block 0:
    norm1 -> qkv's top-k) are one call of the vector IP's chain op (op 11), the ternary IP reading the
    chain's act stream: the integer model's tokens bit for bit. Calls by hand (17 tokens, 5-token tiles: 4
    tiles, 2 blocks, 2 heads): chain ops 4 (block 0's norm1) + 4 x (add1, gelu) x 2 blocks + 4 (block 0's
    add2 -> block 1's norm1) = 24; the last add2 chains with nothing (the head's final norm is not a trunk
    step): 4 add calls; no layernorm or gelu call; 2 x 2 softmax; proj's top-k (its input is the
    attention's, not a chain's) at most 2 x 4 (the driver reuses a stream when a tile's input repeats);
    ternary 2 x (2 qkv heads + 3 x 4 tiles) = 28."""
    make, ddr, gemm, int8, vec = unit_board
    ov = make(topk="fabric", vector_chain="fused", overlap="pipelined", tile_tokens=5)
    trunk = _tp.random_trunk(seed=4)
    img = _tp._image(trunk)
    ref = trunk.tokens(img, 0.4)
    units = PynqUnits(ov)
    assert units.vector_chain_fused and not PynqUnits(make(topk="fabric")).vector_chain_fused
    ops = []
    real = vec._run

    def logged():
        ops.append(vec.regs[VECTOR_OFFSETS["op"]])
        real()

    vec._run = logged
    assert np.array_equal(units.trunk_tokens(trunk, img, 0.4, threads=True), ref)
    n = {k: ops.count(v) for k, v in (("chain", drv.VectorUnitIP.CHAIN_OP), *drv.VECTOR_OPS.items())}
    assert (n["chain"], n["add"], n["layernorm"], n["gelu"], n["softmax"]) == (24, 4, 0, 0, 4)
    assert 1 <= n["topk"] <= 8 and len(ops) == 32 + n["topk"]
    assert units.fabric_ops_by_unit == {"ternary": 28, "int8": 1 + 2 * 4, "vector": len(ops)}
    # qkv reads the row tiles' streams joined in token order: = the stream of all the rows at once
    from tatvpr_pynq.formats import schedule_activations
    from tatvpr_pynq.pipeline import ChainStream

    x = np.random.default_rng(2).integers(-128, 128, size=(9, 40)).astype(np.int8)
    tiles = [ChainStream(*schedule_activations(iq.topk_int(x[a:a + 4], 0.4), 8, 4), 40) for a in (0, 4, 8)]
    whole = schedule_activations(iq.topk_int(x, 0.4), 8, 4)
    joined = ChainStream.join(tiles)
    assert np.array_equal(joined.chunks, whole[0]) and np.array_equal(joined.pairs, whole[1])
    # the chains' streams reach the ternary IP: the same tokens op by op with the chain off
    assert np.array_equal(PynqUnits(make(topk="fabric", overlap="pipelined", tile_tokens=5)).trunk_tokens(
        trunk, img, 0.4), ref)
    ov.close()
