"""Energy per action: the engine's action counts x the arch's energy table + static power x time.

Components (pJ), each a sum of ``count x table entry``:

- ``mac_array``: ternary add/sub per processed (weight, activation) pair (``add8_pj``) +
  accumulator updates (``add32_pj``).
- ``skip_logic``: skipped pairs (``skip_pair_pj``), channel-index decodes of compressed streams
  (``index_decode_pj``), index comparisons of the ``both`` intersection (``intersect_compare_pj``).
- ``weight_decode``: 5-trit bytes decoded by the ternary1.6 decoder (``base3_decode_pj``).
- ``requant``: one int32 x scale multiply per output (``mult32_pj``).
- ``weight_buffer`` / ``act_buffer`` / ``out_buffer``: bits read and written x the SRAM
  energy per bit of a buffer of that size (``sram_read_64b_pj`` / 64; writes x
  ``sram_write_factor``); the weight buffer's size is one half when double-buffering.
- ``dram``: bits moved off chip x ``dram_pj_per_bit``.
- ``int8_unit``: int8 MACs on the DSP unit (``dsp_mac_pj``).
- ``vector_unit``: elements x ``vector_pj_per_element[kind]`` (or ``host_pj_per_element``).
- ``static``: ``static_power_w x cycles / clock``.
"""

from __future__ import annotations

COMPONENTS = ("mac_array", "skip_logic", "weight_decode", "requant", "weight_buffer", "act_buffer",
              "out_buffer", "dram", "int8_unit", "vector_unit", "static")


def _per_bit(arch, kb: float) -> float:
    return arch.energy.sram_read_64b_pj.pj_per_64b(kb) / 64.0


def static_pj(arch, cycles: int) -> float:
    """``static_power_w x time``: W x (cycles / MHz) us = pJ x 1e-6 ... returned in pJ."""
    return arch.spec.static_power_w * cycles / arch.spec.clock_mhz * 1e6


def energy_pj(counts: dict, arch, cycles: int, vector_kind: str | None = None) -> dict[str, float]:
    """Energy of one op by component, in pJ (every component present, zeros included)."""
    e = arch.energy
    b = arch.spec.buffers
    g = counts.get
    wkb = b.weights_kb / (2 if arch.spec.double_buffering else 1)
    wf = e.sram_write_factor.value
    out = dict.fromkeys(COMPONENTS, 0.0)
    out["mac_array"] = g("pairs_processed", 0) * e.add8_pj.value + g("acc_updates", 0) * e.add32_pj.value
    out["skip_logic"] = (g("pairs_skipped", 0) * e.skip_pair_pj.value + g("index_decodes", 0) * e.index_decode_pj.value
                         + g("intersect_compares", 0) * e.intersect_compare_pj.value)
    out["weight_decode"] = g("base3_decodes", 0) * e.base3_decode_pj.value
    out["requant"] = g("requant_mults", 0) * e.mult32_pj.value
    out["weight_buffer"] = (g("weight_buf_read_bits", 0) + wf * g("weight_buf_write_bits", 0)) * _per_bit(arch, wkb)
    out["act_buffer"] = g("act_buf_read_bits", 0) * _per_bit(arch, b.activations_kb)
    out["out_buffer"] = wf * g("out_buf_write_bits", 0) * _per_bit(arch, b.outputs_kb)
    out["dram"] = (g("dram_weight_bits", 0) + g("dram_act_bits", 0)) * e.dram_pj_per_bit.value
    out["int8_unit"] = g("dsp_macs", 0) * e.dsp_mac_pj.value
    if g("vector_elements"):
        out["vector_unit"] = g("vector_elements") * e.vector_pj_per_element[vector_kind].value
    if g("host_elements"):
        out["vector_unit"] = g("host_elements") * arch.spec.vector_unit.host_pj_per_element
    out["static"] = static_pj(arch, cycles)
    return out
