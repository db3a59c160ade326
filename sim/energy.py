"""Energy per action: the engine's action counts x the arch's energy table + static power x time.

Components (pJ), each a sum of ``count x table entry``:

- ``mac_array``: ternary add/sub per processed (weight, activation) pair (``add8_pj``) +
  accumulator updates (``add32_pj``).
- ``skip_logic``: skipped pairs (``skip_pair_pj``), channel-index decodes of compressed streams
  (``index_decode_pj``), index comparisons of the ``both`` intersection (``intersect_compare_pj``).
- ``weight_decode``: 5-trit bytes decoded by the ternary1.6 decoder (``base3_decode_pj``).
- ``requant``: one int32 x scale multiply per output (``mult32_pj``).
- ``weight_buffer`` / ``act_gather`` / ``act_buffer`` / ``out_buffer`` / ``int8_weight_buffer``:
  bits read + bits written x ``sram_write_factor``, times the pJ per bit of the block type that
  buffer is built from (``block_pj_per_bit[block_type]``, block type of the buffers ``weights``,
  ``act_gather``, ``activations``, ``outputs``, ``int8_weights`` of :func:`sim.buffers.plan_buffers`),
  not of one SRAM of the buffer's total size (docs/engine.md section 7).
- ``dram``: bits moved off chip (ternary weights, activations, int8-unit weights, output spills
  written and read back, and under ``schedule.handoffs: dram`` the hand-offs an op writes and reads,
  ``dram_handoff_bits``) x ``dram_pj_per_bit``.
- ``int8_unit``: int8 MACs on the DSP unit (``dsp_mac_pj``).
- ``vector_unit``: elements x ``vector_pj_per_element[kind]`` + row steps (``vector_row_steps``: rows x
  ``vector_unit.row_op_cycles[kind]``, the square root / reciprocal bits between a row's passes, one
  64-bit compare-subtract each) x ``vector_row_step_pj``; a ``host``-mode unit: elements x
  ``host_pj_per_element`` (no row steps: the ARM runs them, outside the power scope).
- ``static``: ``static_power_w x cycles / clock``.
"""

from __future__ import annotations

from sim.buffers import buffer_by_name

COMPONENTS = ("mac_array", "skip_logic", "weight_decode", "requant", "weight_buffer", "act_gather", "act_buffer",
              "out_buffer", "int8_weight_buffer", "dram", "int8_unit", "vector_unit", "static")
# energy component -> (buffer name in sim.buffers, read-bits count, write-bits count)
BUFFER_COMPONENTS = {
    "weight_buffer": ("weights", "weight_buf_read_bits", "weight_buf_write_bits"),
    "act_gather": ("act_gather", "act_gather_read_bits", "act_gather_write_bits"),
    "act_buffer": ("activations", "act_buf_read_bits", "act_buf_write_bits"),
    "out_buffer": ("outputs", None, "out_buf_write_bits"),
    "int8_weight_buffer": ("int8_weights", "int8_weight_buf_read_bits", "int8_weight_buf_write_bits"),
}
DRAM_COUNTS = ("dram_weight_bits", "dram_act_bits", "dram_int8_weight_bits", "dram_spill_bits", "dram_handoff_bits")


def buffer_pj_per_bit(arch) -> dict[str, float]:
    """pJ per bit accessed of each buffer of ``arch``: its block type's ``block_pj_per_bit``."""
    table = arch.energy.block_pj_per_bit
    return {name: table[b["block_type"]].value for name, b in buffer_by_name(arch).items()}


def static_pj(arch, cycles: int) -> float:
    """``static_power_w x time``: W x (cycles / MHz) us = pJ x 1e-6 ... returned in pJ."""
    return arch.spec.static_power_w * cycles / arch.spec.clock_mhz * 1e6


def energy_pj(counts: dict, arch, cycles: int, vector_kind: str | None = None) -> dict[str, float]:
    """Energy of one op by component, in pJ (every component present, zeros included)."""
    e = arch.energy
    g = counts.get
    wf = e.sram_write_factor.value
    per_bit = buffer_pj_per_bit(arch)
    out = dict.fromkeys(COMPONENTS, 0.0)
    out["mac_array"] = g("pairs_processed", 0) * e.add8_pj.value + g("acc_updates", 0) * e.add32_pj.value
    out["skip_logic"] = (g("pairs_skipped", 0) * e.skip_pair_pj.value + g("index_decodes", 0) * e.index_decode_pj.value
                         + g("intersect_compares", 0) * e.intersect_compare_pj.value)
    out["weight_decode"] = g("base3_decodes", 0) * e.base3_decode_pj.value
    out["requant"] = g("requant_mults", 0) * e.mult32_pj.value
    for comp, (buf, rd, wr) in BUFFER_COMPONENTS.items():
        bits = (g(rd, 0) if rd else 0) + wf * g(wr, 0)
        if not bits:
            continue
        if buf not in per_bit:
            raise ValueError(f"{comp}: {bits:g} bits accessed but {arch.source} builds no {buf!r} buffer "
                             f"(skip_mode {arch.spec.compute.skip_mode!r})")
        out[comp] = bits * per_bit[buf]
    out["dram"] = sum(g(k, 0) for k in DRAM_COUNTS) * e.dram_pj_per_bit.value
    out["int8_unit"] = g("dsp_macs", 0) * e.dsp_mac_pj.value
    if g("vector_elements"):
        out["vector_unit"] = g("vector_elements") * e.vector_pj_per_element[vector_kind].value
    if g("vector_row_steps"):
        out["vector_unit"] += g("vector_row_steps") * e.vector_row_step_pj.value
    if g("host_elements"):
        out["vector_unit"] = g("host_elements") * arch.spec.vector_unit.host_pj_per_element
    out["static"] = static_pj(arch, cycles)
    return out
