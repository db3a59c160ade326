"""The buffers of a design point and the physical blocks they map to (docs/engine.md sections 6, 7).

``plan_buffers(arch)`` lists every buffer the machine builds (what the HLS kernel declares and
the RTL instantiates): its memories (one bank of one replica of one half), their word width and
depth, and the blocks each memory maps to (docs/engine.md section 7).

The block rule is the one yosys applies when it synthesises the RTL tile for UltraScale+
(``synth_xilinx -family xcup``, yosys 0.70), the only mapping rule of this flow that can be
read and checked (Vivado is not available): ``memory_libmap`` prices every way of building the
memory from the cells of yosys' Xilinx memory library -- ``share/xilinx/lutrams_xcu.txt``
(LUTRAM) and ``share/xilinx/brams_xc4v.txt`` with ``HAS_SIZE_36 HAS_MIXWIDTH_SDP HAS_ADDRCE``
(BRAM18 = ``MODE HALF``, BRAM36 = ``MODE FULL``, no cascade) -- and as flip-flops (one per bit),
and takes the cheapest (``passes/memory/memory_libmap.cc``, ``MemMapping::handle_geom`` and the
pass's ``execute``; re-implemented below for the memories this machine builds: one write port
with one enable, ``r`` = 1 or 2 synchronous read ports, the first sharing the write address
when ``r = 2``). A memory the arch puts in URAM (``buffers.*_memory: uram``, on a board with
URAM, ``d >= 2048``) is **URAM288** (``ceil(w / 72) * ceil(d / 4096)``): yosys maps URAM only
on request (``-no-auto-huge``; ``ram_style = "ultra"``), never by cost.

Block sizes (AMD UG573, UltraScale memory resources): BRAM18 16K x 1 .. 1K x 18 true dual
port, 512 x 36 simple dual port; BRAM36 32K x 1 .. 1K x 36, 512 x 72 simple dual port;
URAM288 4K x 72. LUTRAM (AMD UG574, CLB): a SLICEM LUT6 is 64 x 1 bit; ``RAM64M8`` / ``RAM32M16``
use all 8 LUTs of a slice (7 data bits at 64 deep / 14 at 32 deep, plus the write-address LUT),
``RAM64X1D`` 2 LUTs per bit, ``RAM128X1D`` 4, ``RAM256X1D`` 8.

``act_gather`` has no ``*_memory`` key and never asks for URAM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.errors import SimInputError

# (depth, width) of each aspect ratio, AMD UG573 (UltraScale+ memory resources) tables 1-3/1-4;
# the last entry of each list is the simple-dual-port-only width.
BRAM18_RATIOS = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
BRAM36_RATIOS = ((32768, 1), (16384, 2), (8192, 4), (4096, 9), (2048, 18), (1024, 36), (512, 72))
URAM_DEPTH, URAM_WIDTH = 4096, 72  # UltraRAM 4K x 72 (UG573), two ports

# yosys memory_libmap's weights (memory_libmap.cc: FACTOR_MUX, FACTOR_DEMUX, FACTOR_EMU) and the
# cost of a memory built from flip-flops (synth_xilinx passes no -logic-cost-ram: 1 per bit).
FACTOR_MUX, FACTOR_DEMUX, FACTOR_EMU = 0.5, 0.5, 2.0
LOGIC_COST_PER_BIT = 1.0


@dataclass(frozen=True)
class _Cell:
    """One RAM cell option of yosys' Xilinx library, as memory_libmap sees it."""
    name: str            # library cell and option, e.g. "$__XILINX_LUTRAM_SDP_ ABITS 6"
    block_type: str      # lutram / bram18 / bram36
    abits: int           # address bits at the narrowest width
    dbits: tuple         # data widths (one for LUTRAM "global" widths; the per-port list for BRAM)
    cost: float
    widthscale: float    # the part of the cost that scales with the bits used (LUTRAM: all of it)
    byte: int            # write-enable granularity (0: none)
    rw_port: bool        # has a port that writes AND reads (hosts the shared read of r = 2)
    primitive: str       # what lutrams_xc5v_map.v / brams_xcu_map.v emit per unit
    luts_per_unit: int   # LUT sites per emitted primitive (LUTRAM)
    per_bit: bool        # the map emits one primitive per USED bit (RAM64X1D ...), not per unit


# lutrams_xcu.txt in file order ($__XILINX_LUTRAM_SP_ and _64X8SW_ are single-port: a memory
# whose read address differs from its write address cannot use them; _32X16DR8_ is a 32-deep,
# 7-bit-read cell at the cost of the 14-bit RAM32M16 option of _SDP_, never cheaper), then
# brams_xc4v.txt (TDP, SDP; MODE HALF = RAMB18E2, FULL = RAMB36E2; no HAS_CASCADE on xcup).
_LIBRARY = (
    _Cell("LUTRAM_DP ABITS 5", "lutram", 5, (8,), 16, 16, 0, True, "RAM32M16", 8, False),
    _Cell("LUTRAM_DP ABITS 6", "lutram", 6, (4,), 16, 16, 0, True, "RAM64X1D", 2, True),
    _Cell("LUTRAM_DP ABITS 7", "lutram", 7, (2,), 16, 16, 0, True, "RAM128X1D", 4, True),
    _Cell("LUTRAM_DP ABITS 8", "lutram", 8, (1,), 16, 16, 0, True, "RAM256X1D", 8, True),
    _Cell("LUTRAM_QP ABITS 5", "lutram", 5, (4,), 16, 16, 0, True, "RAM32M16", 8, False),
    _Cell("LUTRAM_QP ABITS 6", "lutram", 6, (2,), 16, 16, 0, True, "RAM64M8", 8, False),
    _Cell("LUTRAM_OP ABITS 5", "lutram", 5, (2,), 16, 16, 0, True, "RAM32M16", 8, False),
    _Cell("LUTRAM_OP ABITS 6", "lutram", 6, (1,), 16, 16, 0, True, "RAM64M8", 8, False),
    _Cell("LUTRAM_SDP ABITS 5", "lutram", 5, (14,), 16, 16, 0, False, "RAM32M16", 8, False),
    _Cell("LUTRAM_SDP ABITS 6", "lutram", 6, (7,), 16, 16, 0, False, "RAM64M8", 8, False),
    _Cell("BLOCKRAM_TDP MODE HALF", "bram18", 14, (1, 2, 4, 9, 18), 129, 0, 9, True, "RAMB18E2", 0, False),
    _Cell("BLOCKRAM_TDP MODE FULL", "bram36", 15, (1, 2, 4, 9, 18, 36), 257, 0, 9, True, "RAMB36E2", 0, False),
    _Cell("BLOCKRAM_SDP MODE HALF", "bram18", 14, (1, 2, 4, 9, 18, 36), 129, 0, 9, False, "RAMB18E2", 0, False),
    _Cell("BLOCKRAM_SDP MODE FULL", "bram36", 15, (1, 2, 4, 9, 18, 36, 72), 257, 0, 9, False, "RAMB36E2", 0, False),
)

BUFFER_NAMES = ("weights", "act_gather", "activations", "outputs", "int8_weights")
# block types (sim.arch.BLOCK_TYPES, the keys of an energy table's block_pj_per_bit):
# registers, lutram, bram18, bram36, uram


def _halves(arch) -> int:
    return 2 if arch.spec.double_buffering else 1


def k_max(arch) -> int:
    """Largest ``K`` whose fold fits the weight buffer: ``floor(8192 * weights_kb / (h * PE * 2))``,
    rounded down to a multiple of the banks ``B``, and at most ``buffers.k_max`` (rounded up to a
    multiple of ``B``) when the arch sets it (docs/engine.md section 6)."""
    c = arch.spec.compute
    b = c.banks
    k = math.floor(8192 * arch.spec.buffers.weights_kb / (_halves(arch) * c.pe * 2))
    k -= k % b
    cap = arch.spec.buffers.k_max
    if cap is not None and k >= 1:
        k = min(k, cap + (-cap % b))  # the cap rounded up to whole bank words
    if k < 1:
        need = _halves(arch) * c.pe * 2 * b / 8192
        raise SimInputError(f"{arch.source}: buffers.weights_kb = {arch.spec.buffers.weights_kb:g} holds no "
                            f"fold of {c.pe} PE rows x {b} banks (K_max = 0); allowed: weights_kb >= {need:g}")
    return k


def index_bits(kmax: int) -> int:
    """``I = ceil(log2 K_max)``: bits of a channel index."""
    return math.ceil(math.log2(kmax)) if kmax > 1 else 0


def _cell_config(cell: _Cell, w: int, d: int, r: int) -> dict:
    """memory_libmap's cheapest geometry of ``cell`` for a ``w x d`` memory with ``r`` read ports
    (``MemMapping::handle_geom``, for ports of one width and one write enable).

    Ports (``assign_rd_ports`` / ``score_emu_ports``, checked against yosys' debug log): a cell
    with a read-write port hosts the write and, when ``r = 2``, the read that shares its address,
    the other read on a read port: one unshared read, emulation score 1, one copy. A cell with
    separate write and read ports (SDP) needs each read on its read port: score ``r``, ``r``
    copies (``repl_port``)."""
    emu, repl_port = (1, 1) if cell.rw_port else (r, r)
    best = None
    best_int = 0
    for base, unit in enumerate(cell.dbits):
        eb = unit if cell.byte == 0 or cell.byte > unit else cell.byte
        swizzle = -(-w // eb) * eb                        # the word padded to whole bytes
        mult_a = (d - 1) // (1 << (cell.abits - base)) + 1  # address segments
        repl = -(-(mult_a * swizzle) // unit)             # units side by side (and stacked)
        demux = mult_a if mult_a != 1 else 0
        mux = r * (mult_a - 1) * w
        cost = (cell.cost - cell.widthscale) * repl * repl_port
        cost += cell.widthscale * mult_a * w / unit * repl_port
        cost += mux * FACTOR_MUX + demux * FACTOR_DEMUX + emu * FACTOR_EMU
        # yosys keeps its running best in an int: a later geometry must beat the truncated cost
        if best is None or cost < best_int:
            best = {"cost": cost, "unit": unit, "mult_a": mult_a, "repl": repl, "repl_port": repl_port}
            best_int = int(cost)
    return best


def map_memory(width_bits: int, depth: int, read_ports: int, prefer_uram: bool, board_has_uram: bool) -> dict:
    """Blocks of ONE memory by the rule above: ``{block_type, blocks, lut, ff, bram18, bram36, uram,
    primitive, cells}`` (``blocks``: FFs for registers, LUT sites for LUTRAM, blocks otherwise)."""
    w, d, r = width_bits, depth, read_ports
    if r not in (1, 2) or w < 1 or d < 1:
        raise SimInputError(f"memory {w} bits x {d} words with {r} read ports; allowed: w >= 1, d >= 1, "
                            "1 or 2 read ports")
    out = {"block_type": "", "blocks": 0, "lut": 0, "ff": 0, "bram18": 0, "bram36": 0, "uram": 0,
           "primitive": "", "cells": 0}
    if prefer_uram and board_has_uram and d >= 2048:
        n = math.ceil(w / URAM_WIDTH) * math.ceil(d / URAM_DEPTH)
        out.update(block_type="uram", blocks=n, uram=n, primitive="URAM288", cells=n)
        return out
    # MemoryLibMapPass::execute: flip-flops first, then the library in file order; a candidate
    # must be strictly cheaper than the (int-truncated) best so far
    chosen, best = None, int(w * d * LOGIC_COST_PER_BIT)
    for cell in _LIBRARY:
        cfg = _cell_config(cell, w, d, r)
        if cfg["cost"] < best:
            chosen, best = (cell, cfg), int(cfg["cost"])
    if chosen is None:
        out.update(block_type="registers", blocks=w * d, ff=w * d, primitive="FDRE", cells=w * d)
        return out
    cell, cfg = chosen
    if cell.block_type == "lutram":
        # per-bit primitives only for the bits used: w bits in each address segment, per copy
        cells = (cfg["mult_a"] * w if cell.per_bit else cfg["repl"]) * cfg["repl_port"]
        luts = cells * cell.luts_per_unit
        out.update(block_type="lutram", blocks=luts, lut=luts, primitive=cell.primitive, cells=cells)
    else:
        n = cfg["repl"] * cfg["repl_port"]
        out.update(block_type=cell.block_type, blocks=n, primitive=cell.primitive, cells=n, **{cell.block_type: n})
    return out


def _entry(name, *, banks, ports, replicas, halves, width, depth, prefer_uram, board_has_uram) -> dict:
    memories = halves * replicas * banks
    one = map_memory(width, depth, ports, prefer_uram, board_has_uram)
    bram18 = one["bram18"] * memories
    return {"name": name, "bits": memories * width * depth, "banks": banks, "ports": ports,
            "replicas": replicas, "halves": halves, "width_bits": width, "depth": depth,
            "block_type": one["block_type"], "blocks": one["blocks"] * memories, "memories": memories,
            "lut": one["lut"] * memories, "ff": one["ff"] * memories, "bram18": bram18,
            # two BRAM18 count as one BRAM36 against the board (resources round the total up)
            "bram36": one["bram36"] * memories + bram18 / 2, "uram": one["uram"] * memories}


def topk_memories(lanes: int, kmax: int, banks: int, simd: int) -> list[dict]:
    """The memories of the vector unit's top-k unit (``tatvpr_topk_schedule``, ``rtl/topk_unit.v``;
    docs/engine.md section 5) serving a ternary IP of ``K_max`` channels, ``B`` banks and ``SIMD``
    slots with ``L`` vector lanes: ``topk_row`` (the row, L memories of 8 bits x ceil(K_max / L):
    channel c in memory c mod L), ``topk_hist`` (L per-lane histograms of the magnitudes 1..128, counters
    of ceil(log2(ceil(K_max / L) + 1)) bits) and ``topk_queue`` (per bank R = max(1, L / B) memories of
    8 + I bits (value, channel index), ceil(ceil(K_max / B) / R) deep: a bank's entry e in memory e mod R).
    One write and one read port each (``r`` = 1)."""
    rows = -(-kmax // lanes)
    r = max(1, lanes // banks)
    return [
        {"name": "topk_row", "memories": lanes, "width": 8, "depth": rows},
        {"name": "topk_hist", "memories": lanes, "width": math.ceil(math.log2(rows + 1)), "depth": 128},
        {"name": "topk_queue", "memories": banks * r, "width": 8 + index_bits(kmax), "depth": -(-(-(-kmax // banks)) // r)},
    ]


def topk_built(arch) -> bool:
    """The top-k unit is built: the vector unit on the fabric does the top-k (``schedule.topk: fabric``)."""
    return arch.spec.schedule.topk == "fabric" and arch.spec.vector_unit.mode == "fabric"


def plan_buffers(arch) -> list[dict]:
    """Every buffer of ``arch`` with its memories and blocks (docs/engine.md section 6 table).

    Keys: ``name, bits, banks, ports, replicas, halves, width_bits, depth, block_type, blocks,
    memories, lut, ff, bram18, bram36, uram``; ``memories = halves * replicas * banks`` and
    ``bits = memories * width_bits * depth`` (every physical bit built). In ``weight``/``both``
    the weights' "banks" are the PE rows (one compressed stream memory per PE) and the
    ``act_gather`` replicas are ``PE * R`` (one banked token copy per PE, R replicas each).
    With the top-k unit built (:func:`topk_built`) its memories follow: ``topk_row``, ``topk_hist``,
    ``topk_queue`` (:func:`topk_memories`; in ``banks`` their memory count, one read port, LUTRAM or BRAM
    by the rule, never URAM).
    """
    s = arch.spec
    c, b = s.compute, s.buffers
    has_uram = arch.board.resources.uram > 0
    kmax = k_max(arch)
    idx = index_bits(kmax)
    h = _halves(arch)
    B, P, R = c.banks, c.ports, c.replicas
    mode = c.skip_mode
    gathered_w = mode in ("none", "act")
    out = []
    if gathered_w:
        out.append(_entry("weights", banks=B, ports=P, replicas=R, halves=h, width=2 * c.pe,
                          depth=math.ceil(kmax / B), prefer_uram=b.weights_memory == "uram",
                          board_has_uram=has_uram))
    else:
        out.append(_entry("weights", banks=c.pe, ports=1, replicas=1, halves=h, width=c.simd * (2 + idx),
                          depth=math.ceil(kmax / c.simd), prefer_uram=b.weights_memory == "uram",
                          board_has_uram=has_uram))
        out.append(_entry("act_gather", banks=B, ports=P, replicas=c.pe * R, halves=2, width=8,
                          depth=math.ceil(kmax / B), prefer_uram=False, board_has_uram=has_uram))
    act_w = c.simd * (8 + (idx if mode in ("act", "both") else 0))
    for name, width, kb, mem in (("activations", act_w, b.activations_kb, b.activations_memory),
                                 ("outputs", c.pe * 8, b.outputs_kb, b.outputs_memory),
                                 ("int8_weights", s.int8_unit.cols * 8, b.int8_weights_kb, b.int8_weights_memory)):
        out.append(_entry(name, banks=1, ports=1, replicas=1, halves=1, width=width,
                          depth=math.ceil(8192 * kb / width), prefer_uram=mem == "uram", board_has_uram=has_uram))
    if topk_built(arch):
        for m in topk_memories(s.vector_unit.lanes, kmax, B, c.simd):
            out.append(_entry(m["name"], banks=m["memories"], ports=1, replicas=1, halves=1, width=m["width"],
                              depth=m["depth"], prefer_uram=False, board_has_uram=has_uram))
    return out


def buffer_by_name(arch) -> dict[str, dict]:
    """``plan_buffers(arch)`` keyed by name, computed once per Arch object."""
    cached = getattr(arch, "_sim_buffer_plan", None)
    if cached is None:
        cached = {e["name"]: e for e in plan_buffers(arch)}
        arch._sim_buffer_plan = cached
    return cached
