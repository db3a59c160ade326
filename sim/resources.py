"""FPGA resources of an arch and whether it fits its board (coefficients: sim/boards/resource_model.yaml).

    LUT  = PE*SIMD*(lut_per_lane + lut_per_lane_skip[mode]) + PE*(SIMD-1)*(8 + stages)*lut_per_tree_bit
         + PE*acc_bits*lut_per_accumulator_bit + decoders*lut_per_base3_decoder
         + int8 DSPs*lut_per_int8_dsp + vector lanes*lut_per_vector_lane + lut_control
    FF   = PE*SIMD*ff_per_lane + SIMD*ff_per_input_lane + PE*acc_bits*ff_per_accumulator_bit + vector lanes*ff_per_vector_lane + ff_control
    DSP  = PE*dsp_per_pe_requant + ceil(rows*cols/macs_per_dsp) + vector lanes*dsp_per_vector_lane
    BRAM36 / URAM per buffer = max(ceil(bits / bits_per_block), ceil(port_bits / port_bits_per_block))

A design fits when every class is at most ``max_utilisation`` of the board's.
"""

from __future__ import annotations

import math

CLASSES = ("lut", "ff", "dsp", "bram36", "uram")


def port_bits(arch) -> dict[str, int]:
    """Buffer port widths in bits: the arch's, or the width that feeds one chunk per cycle."""
    c, b = arch.spec.compute, arch.spec.buffers
    idx = 12  # index bits for K up to 4096
    compressed_w = c.skip_mode in ("weight", "both")
    compressed_a = c.skip_mode in ("act", "both")
    return {
        "weights": b.weight_port_bits or c.pe * c.simd * (2 + (idx if compressed_w else 0)),
        "activations": b.activation_port_bits or c.simd * (8 + (idx if compressed_a else 0)),
        "outputs": b.output_port_bits or c.pe * 8,
    }


def estimate_resources(arch) -> dict:
    """Resource estimate, board capacity, utilisation and fit of ``arch``."""
    r = arch.resource_model
    s = arch.spec
    c = s.compute
    lanes = c.pe * c.simd
    vec_lanes = s.vector_unit.lanes if s.vector_unit.mode == "fabric" else 0
    int8_dsp = math.ceil(s.int8_unit.rows * s.int8_unit.cols / s.int8_unit.macs_per_dsp)
    decoders = math.ceil(arch.dram_bytes_per_cycle) if c.weight_format == "ternary1.6" else 0
    lut = (lanes * (r.lut_per_lane.value + r.lut_per_lane_skip[c.skip_mode].value)
           + c.pe * (c.simd - 1) * (8 + c.tree_stages) * r.lut_per_tree_bit.value
           + c.pe * c.accumulator_bits * r.lut_per_accumulator_bit.value
           + decoders * r.lut_per_base3_decoder.value + int8_dsp * r.lut_per_int8_dsp.value
           + vec_lanes * r.lut_per_vector_lane.value + r.lut_control.value)
    ff = (lanes * r.ff_per_lane.value + c.simd * r.ff_per_input_lane.value
          + c.pe * c.accumulator_bits * r.ff_per_accumulator_bit.value
          + vec_lanes * r.ff_per_vector_lane.value + r.ff_control.value)
    dsp = c.pe * r.dsp_per_pe_requant.value + int8_dsp + vec_lanes * r.dsp_per_vector_lane.value
    used = {"lut": math.ceil(lut), "ff": math.ceil(ff), "dsp": math.ceil(dsp), "bram36": 0, "uram": 0}
    ports = port_bits(arch)
    buffers = {}
    for name, kb, mem in (("weights", s.buffers.weights_kb, s.buffers.weights_memory),
                          ("activations", s.buffers.activations_kb, s.buffers.activations_memory),
                          ("outputs", s.buffers.outputs_kb, s.buffers.outputs_memory)):
        cap = (r.bram36_bits if mem == "bram" else r.uram_bits).value
        port = (r.bram36_port_bits if mem == "bram" else r.uram_port_bits).value
        blocks = max(math.ceil(kb * 1024 * 8 / cap), math.ceil(ports[name] / port))
        key = "bram36" if mem == "bram" else "uram"
        used[key] += blocks
        buffers[name] = {"kb": kb, "memory": key, "blocks": blocks, "port_bits": ports[name]}
    avail = arch.board.resources.model_dump()
    limit = arch.board.max_utilisation.value
    # a class the board lacks (URAM on a Zynq-7000) has utilisation None and fails when used
    util = {k: (used[k] / avail[k] if avail[k] else (0.0 if used[k] == 0 else None)) for k in CLASSES}
    over = [k for k in CLASSES if util[k] is None or util[k] > limit]
    return {"board": arch.board.name, "part": arch.board.part, "used": used, "available": avail,
            "utilisation": util, "max_utilisation": limit, "fits": not over, "over": over, "buffers": buffers}
