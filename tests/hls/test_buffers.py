"""Every array the HLS kernel declares, for a design point, is one of the simulator's buffers
(sim.buffers.plan_buffers: docs/engine.md section 6) with the same bits, memories, word width,
depth and ports; everything else it declares is a fully partitioned datapath register.

The kernel side is computed from the kernel source itself: the C preprocessor applies the -D
values the flow passes for the arch (its #if branches included), and the declarations, typedefs,
constants and ARRAY_PARTITION / ARRAY_RESHAPE / BIND_STORAGE pragmas are read from its output.
"""

from __future__ import annotations

import math
import re
import subprocess

import pytest

from tatvpr_hw.lower.hls.board import design_point_from_arch, kernel_params
from tatvpr_hw.lower.hls.csim import compiler
from tatvpr_hw.lower.hls.paths import hls_dir

# kernel array -> simulator buffer (the IP is the ternary array only: no int8 unit, so no
# int8_weights; act mode, so no act_gather)
BUFFER_OF = {"wbuf0": "weights", "wbuf1": "weights", "abuf": "activations", "obuf": "outputs"}
REGISTERS = {"acc", "fold_bias", "cnt"}   # accumulators, the fold's bias, the stream check's bank counters
NOT_BUILT = {"int8_weights"}
RAM_TYPE = {1: "ram_1p", 2: "ram_2p"}
# the activation buffer's loads write one half while the array reads the other (or, resident,
# the array only reads): one write port + one read port, sim.buffers' memory of r = 1 read port
# beside its write port (memory_libmap's simple dual port)
STORAGE = {"activations": {1: "ram_s2p"}}

_DECL = re.compile(r"^\s*(static\s+)?([A-Za-z_][\w:]*(?:<[^;>]*>)?)\s+([A-Za-z_]\w*)((?:\[[^\]]+\])+)\s*;", re.M)
_CONST = re.compile(r"^const int (\w+) = ([^;]+);", re.M)
_TYPEDEF = re.compile(r"^typedef (ap_u?int)<([^>]+)> (\w+);", re.M)
_PRAGMA = re.compile(r"#pragma HLS (ARRAY_PARTITION|ARRAY_RESHAPE|BIND_STORAGE) variable = (\w+) type = (\w+)"
                     r"(?: dim = (\d+))?")
_BITS = {"int8_t": 8, "int32_t": 32, "uint8_t": 8, "uint16_t": 16, "uint32_t": 32, "int": 32}


def _eval(expr: str, env: dict) -> int:
    """A C integer constant expression of the header (+ - * / % << and clog2)."""
    py = re.sub(r"(?<![/])/(?![/])", "//", expr)
    return int(eval(py, {"__builtins__": {}}, {**env, "clog2": lambda x: (x - 1).bit_length() if x > 1 else 0,
                                                "topk_clog2": lambda x: (x - 1).bit_length() if x > 1 else 0}))


def preprocess(defines: list[str], tmp_path, source=None) -> str:
    stub = tmp_path / "stub"
    stub.mkdir(exist_ok=True)
    for name in ("ap_int.h", "stdint.h"):    # keep only the kernel's own code in the output
        (stub / name).write_text("")
    root = hls_dir()
    return subprocess.run([compiler(), "-E", "-P", "-x", "c++", *defines, f"-I{stub}", f"-I{root / 'include'}",
                           str(source or root / "src" / "tatvpr_gemm.cpp")],
                          capture_output=True, text=True, check=True).stdout


def kernel_arrays(defines: list[str], tmp_path, source=None) -> dict[str, dict]:
    """Every array the kernel declares: bits, memories, word width, depth, storage type."""
    text = preprocess(defines, tmp_path, source)
    env: dict[str, int] = {}
    for name, expr in _CONST.findall(text):
        try:
            env[name] = _eval(expr, env)
        except (SyntaxError, NameError):  # another kernel's list of constants (tatvpr_vector.cpp)
            continue
    bits_of = dict(_BITS)
    for kind, width, name in _TYPEDEF.findall(text):
        bits_of[name] = _eval(width, env)
    for base, name in re.findall(r"^typedef (\w+) (\w+);", text, re.M):
        if base in _BITS:
            bits_of[name] = _BITS[base]
    pragmas: dict[str, list[tuple[str, str, int | None]]] = {}
    for what, var, typ, dim in _PRAGMA.findall(text):
        pragmas.setdefault(var, []).append((what, typ, int(dim) if dim else None))
    arrays = {}
    for static, typ, name, dims in _DECL.findall(text):
        shape = [_eval(d, env) for d in re.findall(r"\[([^\]]+)\]", dims)]
        elem = bits_of[typ] if typ in bits_of else _eval(re.fullmatch(r"ap_u?int<(.+)>", typ).group(1), env)
        memories, word, depth, complete = 1, elem, 1, False
        prag = pragmas.get(name, [])
        for i, n in enumerate(shape, start=1):
            kinds = {w for w, t, d in prag if d == i and t == "complete"}
            if "ARRAY_PARTITION" in kinds:
                memories *= n
            elif "ARRAY_RESHAPE" in kinds:
                word *= n
            else:
                depth *= n
        if any(w == "ARRAY_PARTITION" and t == "complete" and d is None for w, t, d in prag):
            memories, word, depth, complete = math.prod(shape), elem, 1, True
        storage = [t for w, t, d in prag if w == "BIND_STORAGE"]
        assert name not in arrays, f"two arrays named {name}"
        arrays[name] = {"static": bool(static), "bits": math.prod(shape) * elem, "memories": memories,
                        "width_bits": word, "depth": depth, "registers": complete,
                        "storage": storage[0] if storage else None}
    return arrays


def _arch(overrides):
    from sim.arch import load_arch, with_overrides

    name, ov = overrides
    arch = load_arch(name)
    return with_overrides(arch, ov) if ov else arch


POINTS = [
    ("kv260", {}),
    ("zcu104", {}),
    ("pynq_z2", {}),
    # the demo DSE's best point: PE 32 x SIMD 64 at 300 MHz
    ("kv260", {"compute.simd": 64, "clock_mhz": 300}),
    # B = 8 banks x P = 2 ports: R = 32 / 16 = 2 replicas per bank
    ("kv260", {"compute.gather.banks": 8, "compute.gather.ports": 2}),
    # B = 4, P = 1: R = 4; one weight half
    ("kv260", {"compute.pe": 8, "compute.simd": 16, "compute.gather.banks": 4, "double_buffering": False}),
    # skip mode none (TATVPR_SKIP_NONE): activation words of SIMD int8, no index bits
    ("kv260", {"compute.skip_mode": "none"}),
    ("zcu104", {"compute.skip_mode": "none", "compute.gather.banks": 8, "compute.gather.ports": 2}),
]


@pytest.mark.parametrize("point", POINTS, ids=lambda p: f"{p[0]}{''.join(f'-{k}={v}' for k, v in p[1].items())}")
def test_kernel_arrays_are_the_simulators_buffers(point, tmp_path):
    from sim.buffers import plan_buffers

    arch = _arch(point)
    kp = kernel_params(design_point_from_arch(arch, "test"))
    arrays = kernel_arrays(kp.defines(), tmp_path)
    # no array outside the known ones: a hidden replica or table would show up here
    # skip mode none has no stream check, so no per-bank counters
    registers = REGISTERS - ({"cnt"} if kp.skip_mode == "none" else set())
    assert set(arrays) == set(BUFFER_OF) - ({"wbuf1"} if kp.halves == 1 else set()) | registers
    for name in registers:
        assert arrays[name]["registers"] and not arrays[name]["static"], name
    plan = {e["name"]: e for e in plan_buffers(arch) if not e["name"].startswith("topk_")}  # the vector IP's
    assert set(plan) - set(BUFFER_OF.values()) == NOT_BUILT
    for buf in ("weights", "activations", "outputs"):
        mine = [a for n, a in arrays.items() if BUFFER_OF.get(n) == buf]
        want = plan[buf]
        assert all(a["static"] and not a["registers"] for a in mine), buf
        assert sum(a["bits"] for a in mine) == want["bits"], buf
        assert sum(a["memories"] for a in mine) == want["memories"], buf
        assert {(a["width_bits"], a["depth"]) for a in mine} == {(want["width_bits"], want["depth"])}, buf
        assert {a["storage"] for a in mine} == {STORAGE.get(buf, RAM_TYPE)[want["ports"]]}, buf
    w = plan["weights"]
    assert (w["halves"], w["replicas"], w["banks"]) == (kp.halves, kp.replicas, kp.banks)
    assert w["memories"] == kp.halves * kp.replicas * kp.banks


def test_the_parser_sees_a_planted_extra_copy(tmp_path):
    """The check can fail: the version-1 buffer (one weight copy per SIMD lane) has SIMD times the
    bits and memories of the banked one."""
    kp = kernel_params(design_point_from_arch(_arch(("kv260", {})), "test"))
    src = tmp_path / "src.cpp"
    text = (hls_dir() / "src" / "tatvpr_gemm.cpp").read_text()
    text = text.replace("static code_t wbuf0[REPLICAS][BANKS][WDEPTH][PE];",
                        "static code_t wbuf0[SIMD][REPLICAS][BANKS][WDEPTH][PE];")
    src.write_text(text.replace("variable = wbuf0 type = complete dim = 1", "variable = wbuf0 type = complete dim = 3")
                   .replace("variable = wbuf0 type = complete dim = 2\n",
                            "variable = wbuf0 type = complete dim = 2\n#pragma HLS ARRAY_PARTITION variable = "
                            "wbuf0 type = complete dim = 1\n")
                   .replace("variable = wbuf0 type = complete dim = 4", "variable = wbuf0 type = complete dim = 5"))
    arrays = kernel_arrays(kp.defines(), tmp_path, src)
    good = kernel_arrays(kp.defines(), tmp_path)
    assert arrays["wbuf0"]["bits"] == kp.simd * good["wbuf0"]["bits"]
    assert arrays["wbuf0"]["memories"] == kp.simd * good["wbuf0"]["memories"]
    assert arrays["wbuf0"]["width_bits"] == 2 * kp.pe and good["wbuf0"]["depth"] == kp.kmax // kp.banks


# ------------------------------------------------------------------ the vector IP's top-k unit
TOPK_ARRAYS = {"row": "topk_row", "hist": "topk_hist", "queue": "topk_queue"}
TOPK_POINTS = [
    ("kv260", {}),                                                       # L = 16 < B = 32: one memory a bank
    ("kv260", {"compute.gather.banks": 4}),                              # L = 16 > B = 4: R = 4 memories a bank
    ("zcu104", {"vector_unit.lanes": 64, "compute.simd": 64}),
    ("kv260", {"compute.skip_mode": "none", "buffers.k_max": 1000}),
]


def vector_defines(arch) -> list[str]:
    """The -D values tatvpr_hw.lower.hls.board gives the vector IP (its top-k serves the ternary IP)."""
    point = design_point_from_arch(arch, "test")
    kp = kernel_params(point)
    return [f"-DTATVPR_VLANES={point.vector_lanes}", f"-DTATVPR_TOPK_SIMD={kp.simd}",
            f"-DTATVPR_TOPK_BANKS={kp.banks}", f"-DTATVPR_TOPK_KMAX={kp.kmax}", "-D__SYNTHESIS__"]


@pytest.mark.parametrize("point", TOPK_POINTS, ids=lambda p: f"{p[0]}{''.join(f'-{k}={v}' for k, v in p[1].items())}")
def test_topk_arrays_are_the_simulators_buffers(point, tmp_path):
    """The top-k kernel's row buffer, histograms and bank queues (as Vitis HLS builds them: the
    __SYNTHESIS__ widths, the ARRAY_PARTITION pragmas) are the simulator's topk_* buffers with
    schedule.topk: fabric, and are not charged with schedule.topk: host."""
    from sim.arch import with_overrides
    from sim.buffers import plan_buffers

    arch = with_overrides(_arch(point), {"schedule.topk": "fabric", "schedule.handoffs": "dram",
                                         "vector_unit.mode": "fabric"})
    arrays = kernel_arrays(vector_defines(arch), tmp_path, hls_dir() / "src" / "tatvpr_vector.cpp")
    plan = {e["name"]: e for e in plan_buffers(arch)}
    assert {n for n in plan if n.startswith("topk_")} == set(TOPK_ARRAYS.values())
    for name, buf in TOPK_ARRAYS.items():
        a, want = arrays[name], plan[buf]
        assert a["static"] and not a["registers"], name
        assert (a["bits"], a["memories"], a["width_bits"], a["depth"]) == \
            (want["bits"], want["memories"], want["width_bits"], want["depth"]), name
        assert want["ports"] == 1 and want["halves"] == want["replicas"] == 1
    host = with_overrides(arch, {"schedule.topk": "host"})
    assert not [e for e in plan_buffers(host) if e["name"].startswith("topk_")]


def test_topk_parser_sees_a_planted_wider_queue(tmp_path):
    """The check can fail: a queue of 32-bit words (the C simulation's type) is not the 8 + I bits charged."""
    arch = _arch(("kv260", {}))
    src = tmp_path / "v.cpp"
    text = (hls_dir() / "src" / "tatvpr_vector.cpp").read_text()
    src.write_text(text.replace("typedef ap_uint<8 + TOPK_IDX_BITS> topk_word_t;", "typedef uint32_t topk_word_t;"))
    good = kernel_arrays(vector_defines(arch), tmp_path, hls_dir() / "src" / "tatvpr_vector.cpp")
    bad = kernel_arrays(vector_defines(arch), tmp_path, src)
    assert good["queue"]["width_bits"] < 32 == bad["queue"]["width_bits"]


_TOPK_HARNESS = r"""
#include <cstdio>
#include <vector>
#include "tatvpr_vector.h"
int main() {
    unsigned s = 12345;
    auto rnd = [&]() { s = s * 1103515245u + 12345u; return (s >> 16) & 0x7fff; };
    const int m = 9, k = 256;  // rows: wide values, or -3..3 (ties); the last all -128 (full counters)
    std::vector<int8_t> x(m * k), y(m * k);
    for (int i = 0; i < m * k; i++) { int r = rnd(); x[i] = (i / k) % 3 == 0 ? (int8_t)(r % 256 - 128) : (int8_t)(r % 7 - 3); }
    for (int i = 0; i < k; i++) x[8 * k + i] = -128;
    std::vector<uint16_t> tc(m);
    std::vector<uint32_t> pairs(m * 256 * TATVPR_TOPK_SIMD);
    for (int keep : {0, 1, 37, 120, 256}) {
        long long n = tatvpr_topk_schedule(x.data(), m, k, keep, 1, tc.data(), pairs.data(), y.data());
        for (int r = 0; r < m; r++) printf("%d ", tc[r]);
        for (long long i = 0; i < n; i++) printf("%x ", pairs[i]);
        tatvpr_topk_schedule(x.data(), m, k, keep, 0, tc.data(), pairs.data(), y.data());
        for (int i = 0; i < m * k; i++) printf("%d ", y[i]);
        printf("\n");
    }
}
"""


@pytest.mark.parametrize("lanes,simd,banks", [(16, 8, 2), (4, 16, 16)])
def test_topk_synthesis_widths_compute_the_same(lanes, simd, banks, tmp_path):
    """The kernel with the widths Vitis HLS builds (ap_uint counters of ceil(log2(ceil(K_max / L) + 1))
    bits, queue words of 8 + I bits; -DTATVPR_TOPK_AP_TYPES) gives the C simulation's stream and dense
    values, so the narrow memories charged lose nothing (K_max = k = 256: a lane's 256 / L channels all
    -128 in the last row fill its counter of bin 128: 5 bits at L = 16, 7 at L = 4)."""
    from tatvpr_hw.lower.hls.paths import ap_types_dir

    (tmp_path / "h.cpp").write_text(_TOPK_HARNESS)
    outs = []
    for extra in ([], ["-DTATVPR_TOPK_AP_TYPES"]):
        exe = tmp_path / f"h{len(extra)}"
        subprocess.run([compiler(), "-O1", "-std=c++14", "-Wno-unknown-pragmas", "-Wno-unused-label", *extra,
                        f"-DTATVPR_VLANES={lanes}", f"-DTATVPR_TOPK_SIMD={simd}", f"-DTATVPR_TOPK_BANKS={banks}",
                        "-DTATVPR_TOPK_KMAX=256", f"-I{hls_dir() / 'include'}", f"-I{ap_types_dir()}",
                        str(tmp_path / "h.cpp"), str(hls_dir() / "src" / "tatvpr_vector.cpp"), "-o", str(exe)],
                       check=True, capture_output=True)
        outs.append(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)
    assert outs[0] == outs[1] and len(outs[0].split()) > 5 * 256 * 9
