"""FPGA resources of an arch and whether it fits its board (docs/engine.md section 7).

Resources = the datapath (coefficients in sim/boards/resource_model.yaml; the MAC-array terms are
fitted to yosys synthesis of the RTL tile) + the blocks of every buffer (:mod:`sim.buffers`):

    LUT  = PE*SIMD*(lut_per_lane + lut_per_lane_skip[mode]) + PE*(SIMD-1)*(8 + stages)*lut_per_tree_bit
         + PE*acc_bits*lut_per_accumulator_bit + decoders*lut_per_base3_decoder
         + int8 DSPs*lut_per_int8_dsp + vector lanes*lut_per_vector_lane + lut_control
         + (attention fused) attention_lanes*lut_per_softmax_lane
         + (fabric vector unit) lut_row_steps_fixed + vector lanes*lut_per_row_step_lane
         + (attention fused) lut_softmax_row_steps_fixed + attention_lanes*lut_per_softmax_row_step_lane
                             + int8 rows*lut_per_row_max
         + LUTRAM LUTs of the buffers
         + (top-k unit) (L*I*lut_per_topk_lane_bit + B*I*lut_per_topk_bank_bit + L*R*lut_per_topk_queue_path
                        + lut_topk_fixed)
    FF   = PE*SIMD*ff_per_lane + SIMD*ff_per_input_lane + PE*acc_bits*ff_per_accumulator_bit
         + vector lanes*ff_per_vector_lane + ff_control + register-mapped buffer bits
         + (attention fused) attention_lanes*ff_per_softmax_lane
         + (fabric vector unit) ff_row_steps_fixed + vector lanes*ff_per_row_step_lane
         + (attention fused) ff_softmax_row_steps_fixed + attention_lanes*ff_per_softmax_row_step_lane
                             + int8 rows*ff_per_row_max
         + (top-k unit) (L*I*ff_per_topk_lane_bit + B*I*ff_per_topk_bank_bit + L*R*ff_per_topk_queue_path
                        + ff_topk_fixed)
    DSP  = PE*dsp_per_pe_requant + ceil(rows*cols/macs_per_dsp) + vector lanes*dsp_per_vector_lane
         + (attention fused) attention_lanes*dsp_per_softmax_lane
    BRAM36 = buffers' BRAM36 + ceil(buffers' BRAM18 / 2)       URAM = buffers' URAM288

The gather is wired (lane s reads bank s mod B through its own port, docs/engine.md section 3):
no crossbar is charged; ``lut_per_lane_skip`` is what remains per lane (valid gating, the
intersection compare of ``both``), see its sources.

The row steps (``rtl/row_steps.v``, docs/rtl.md "The vector unit's row steps"): a fabric vector unit has one
square root + divider + reduction of its lanes' sums, shared by the lanes; the fused attention IP has its own
divider + reduction (its softmax-only lanes) and a row-max comparator per int8 array row.

A design fits when every class is at most ``max_utilisation`` of the board's; ``over`` names
the classes that do not, ``why`` the buffers using the most of each such class.

The top-k unit (``sim.buffers.topk_built``: ``schedule.topk: fabric`` on a fabric vector unit) is the
vector unit's ``tatvpr_topk_schedule`` (``rtl/topk_unit.v``, docs/engine.md section 7): its logic with
``L`` vector lanes, ``B`` banks, ``R = max(1, L / B)`` queue memories a bank and ``I = ceil(log2 K_max)``
index bits is fitted to yosys; its
memories (``topk_row``, ``topk_hist``, ``topk_queue``) are buffers of :func:`sim.buffers.plan_buffers`.
It is the only bank scheduler built: the HLS ternary IP reads the chunk stream it (or, with
``schedule.topk: host``, the ARM) makes, so ``act`` charges no scheduler of its own (the RTL tile's
``rtl/bank_scheduler.v`` terms, ``lut_per_scheduler_*``, describe only ``tatvpr rtl``'s tile).
"""

from __future__ import annotations

import math

from sim.buffers import index_bits, k_max, plan_buffers, topk_built
from sim.schedule import attention_lanes, pipeline_buffers

CLASSES = ("lut", "ff", "dsp", "bram36", "uram")


def datapath_resources(arch) -> dict[str, float]:
    """LUT / FF / DSP of everything but the buffers (the fitted MAC array and the estimates)."""
    r = arch.resource_model
    s = arch.spec
    c = s.compute
    lanes = c.pe * c.simd
    vec_lanes = s.vector_unit.lanes if s.vector_unit.mode == "fabric" else 0
    # the fused attention IP's softmax-only lanes (sim.schedule.FusedAttention; rtl/vector_lane.v SOFTMAX_ONLY)
    sm_lanes = attention_lanes(arch) if s.schedule.attention == "fused" else 0
    int8_dsp = math.ceil(s.int8_unit.rows * s.int8_unit.cols / s.int8_unit.macs_per_dsp)
    decoders = math.ceil(arch.dram_bytes_per_cycle) if c.weight_format == "ternary1.6" else 0
    lut = (lanes * (r.lut_per_lane.value + r.lut_per_lane_skip[c.skip_mode].value)
           + c.pe * (c.simd - 1) * (8 + c.tree_stages) * r.lut_per_tree_bit.value
           + c.pe * c.accumulator_bits * r.lut_per_accumulator_bit.value
           + decoders * r.lut_per_base3_decoder.value + int8_dsp * r.lut_per_int8_dsp.value
           + vec_lanes * r.lut_per_vector_lane.value + sm_lanes * r.lut_per_softmax_lane.value
           + r.lut_control.value)
    ff = (lanes * r.ff_per_lane.value + c.simd * r.ff_per_input_lane.value
          + c.pe * c.accumulator_bits * r.ff_per_accumulator_bit.value
          + vec_lanes * r.ff_per_vector_lane.value + sm_lanes * r.ff_per_softmax_lane.value + r.ff_control.value)
    if vec_lanes:
        # the vector unit's shared row steps: square root, divider, the lanes' sum reduction (rtl/row_steps.v)
        lut += r.lut_row_steps_fixed.value + vec_lanes * r.lut_per_row_step_lane.value
        ff += r.ff_row_steps_fixed.value + vec_lanes * r.ff_per_row_step_lane.value
    if s.schedule.attention == "fused":
        # the fused attention IP's own row steps (divider, reduction) and the int8 unit's row-max comparators
        lut += (r.lut_softmax_row_steps_fixed.value + sm_lanes * r.lut_per_softmax_row_step_lane.value
                + s.int8_unit.rows * r.lut_per_row_max.value)
        ff += (r.ff_softmax_row_steps_fixed.value + sm_lanes * r.ff_per_softmax_row_step_lane.value
               + s.int8_unit.rows * r.ff_per_row_max.value)
    if topk_built(arch):
        # the vector unit's top-k + bank scheduling unit (its memories are buffers: sim.buffers)
        L, B, i = s.vector_unit.lanes, c.banks, index_bits(k_max(arch))
        paths = L * max(1, L // B)
        lut += (L * i * r.lut_per_topk_lane_bit.value + B * i * r.lut_per_topk_bank_bit.value
                + paths * r.lut_per_topk_queue_path.value + r.lut_topk_fixed.value)
        ff += (L * i * r.ff_per_topk_lane_bit.value + B * i * r.ff_per_topk_bank_bit.value
               + paths * r.ff_per_topk_queue_path.value + r.ff_topk_fixed.value)
    dsp = (c.pe * r.dsp_per_pe_requant.value + int8_dsp + vec_lanes * r.dsp_per_vector_lane.value
           + sm_lanes * r.dsp_per_softmax_lane.value)
    return {"lut": lut, "ff": ff, "dsp": dsp}


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,.1f}"


def _why(cls: str, used: dict, avail: dict, datapath: dict, buffers: list[dict]) -> str:
    """One line naming what uses the most of an over class: its largest buffers (and the datapath)."""
    users = sorted((b for b in buffers if b.get(cls, 0) > 0), key=lambda b: -b[cls])
    parts = [f"{b['name']} {_num(b[cls])} ({b['blocks']:,} {b['block_type']})" for b in users[:2]]
    if datapath.get(cls):
        parts.append(f"datapath {math.ceil(datapath[cls]):,}")
    cap = avail[cls]
    have = f"{used[cls]:,} of {cap:,}" if cap else f"{used[cls]:,} (the board has none)"
    return f"{cls}: {have}; largest: " + ", ".join(parts)


def estimate_resources(arch) -> dict:
    """Resource estimate, board capacity, utilisation and fit of ``arch``.

    Keys: ``board, part, used, available, utilisation, max_utilisation, fits, over, why,
    datapath, buffers`` (``buffers`` = :func:`sim.buffers.plan_buffers`).
    """
    dp = datapath_resources(arch)
    buffers = plan_buffers(arch) + pipeline_buffers(arch)  # the overlap schedule's (sim.schedule)
    bram18 = sum(b["bram18"] for b in buffers)
    bram36 = sum(b["bram36"] - b["bram18"] / 2 for b in buffers)
    used = {"lut": math.ceil(dp["lut"] + sum(b["lut"] for b in buffers)),
            "ff": math.ceil(dp["ff"] + sum(b["ff"] for b in buffers)),
            "dsp": math.ceil(dp["dsp"]),
            "bram36": int(bram36) + math.ceil(bram18 / 2),
            "uram": sum(b["uram"] for b in buffers)}
    avail = arch.board.resources.model_dump()
    limit = arch.board.max_utilisation.value
    # a class the board lacks (URAM on a Zynq-7000) has utilisation None and fails when used
    util = {k: (used[k] / avail[k] if avail[k] else (0.0 if used[k] == 0 else None)) for k in CLASSES}
    over = [k for k in CLASSES if util[k] is None or util[k] > limit]
    why = [_why(k, used, avail, dp, buffers) for k in over]
    return {"board": arch.board.name, "part": arch.board.part, "used": used, "available": avail,
            "utilisation": util, "max_utilisation": limit, "fits": not over, "over": over, "why": why,
            "datapath": {k: math.ceil(v) for k, v in dp.items()}, "buffers": buffers}
