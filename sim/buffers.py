"""The buffers of a design point and the physical blocks they map to (docs/engine.md sections 6, 7).

``plan_buffers(arch)`` lists every buffer the machine builds (what the HLS kernel declares and
the RTL instantiates): its memories (one bank of one replica of one half), their word width and
depth, and the blocks each memory maps to:

1. ``w * d <= 64`` bits: **registers** (``w * d`` FFs);
2. ``d <= 64``: **LUTRAM**, ``w * ceil(d / 64)`` LUTs per read port (RAM64X1S / RAM64X1D);
3. the arch prefers URAM for the buffer (``buffers.*_memory: uram``), the board has URAM and
   ``d >= 2048``: **URAM288**, ``ceil(w / 72) * ceil(d / 4096)`` blocks;
4. otherwise **BRAM**: the cheapest single aspect ratio of BRAM18 or BRAM36 (cost in BRAM36
   units: a BRAM18 is half a BRAM36; on a tie the BRAM36 ratio, fewer primitives). The widths
   that exist only in simple dual port mode (BRAM18 512 x 36, BRAM36 512 x 72, AMD UG573) are
   used only by a memory with one read port.

``act_gather`` has no ``*_memory`` key and never asks for URAM.
"""

from __future__ import annotations

import math

from sim.errors import SimInputError

# (depth, width) of each aspect ratio, AMD UG573 (UltraScale+ memory resources) tables 1-3/1-4;
# the last entry of each list is the simple-dual-port-only width.
BRAM18_RATIOS = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
BRAM36_RATIOS = ((32768, 1), (16384, 2), (8192, 4), (4096, 9), (2048, 18), (1024, 36), (512, 72))
SDP_ONLY = {("bram18", 512, 36), ("bram36", 512, 72)}
URAM_DEPTH, URAM_WIDTH = 4096, 72  # UltraRAM 4K x 72 (UG573), two ports
LUTRAM_DEPTH = 64                  # RAM64X1S / RAM64X1D
REGISTER_BITS = 64                 # a memory of at most this many bits is registers

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


def _bram(w: int, d: int, read_ports: int) -> tuple[str, int]:
    """Cheapest BRAM aspect ratio for one ``w x d`` memory: (block type, blocks)."""
    best = None
    for kind, ratios, unit in (("bram36", BRAM36_RATIOS, 1.0), ("bram18", BRAM18_RATIOS, 0.5)):
        for depth, width in ratios:
            if read_ports > 1 and (kind, depth, width) in SDP_ONLY:
                continue
            n = math.ceil(w / width) * math.ceil(d / depth)
            cost = n * unit
            if best is None or cost < best[0]:  # BRAM36 first: it wins a tie
                best = (cost, kind, n)
    return best[1], best[2]


def map_memory(width_bits: int, depth: int, read_ports: int, prefer_uram: bool, board_has_uram: bool) -> dict:
    """Blocks of ONE memory by the rule above: ``{block_type, blocks, lut, ff, bram18, bram36, uram}``."""
    w, d = width_bits, depth
    out = {"block_type": "", "blocks": 0, "lut": 0, "ff": 0, "bram18": 0, "bram36": 0, "uram": 0}
    if w * d <= REGISTER_BITS:
        out.update(block_type="registers", blocks=w * d, ff=w * d)
    elif d <= LUTRAM_DEPTH:
        luts = w * math.ceil(d / LUTRAM_DEPTH) * read_ports
        out.update(block_type="lutram", blocks=luts, lut=luts)
    elif prefer_uram and board_has_uram and d >= 2048:
        n = math.ceil(w / URAM_WIDTH) * math.ceil(d / URAM_DEPTH)
        out.update(block_type="uram", blocks=n, uram=n)
    else:
        kind, n = _bram(w, d, read_ports)
        out.update(block_type=kind, blocks=n, **{kind: n})
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


def plan_buffers(arch) -> list[dict]:
    """Every buffer of ``arch`` with its memories and blocks (docs/engine.md section 6 table).

    Keys: ``name, bits, banks, ports, replicas, halves, width_bits, depth, block_type, blocks,
    memories, lut, ff, bram18, bram36, uram``; ``memories = halves * replicas * banks`` and
    ``bits = memories * width_bits * depth`` (every physical bit built). In ``weight``/``both``
    the weights' "banks" are the PE rows (one compressed stream memory per PE) and the
    ``act_gather`` replicas are ``PE * R`` (one banked token copy per PE, R replicas each).
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
    return out


def buffer_by_name(arch) -> dict[str, dict]:
    """``plan_buffers(arch)`` keyed by name, computed once per Arch object."""
    cached = getattr(arch, "_sim_buffer_plan", None)
    if cached is None:
        cached = {e["name"]: e for e in plan_buffers(arch)}
        arch._sim_buffer_plan = cached
    return cached
