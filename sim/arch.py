"""Hardware description: one YAML file validated once into a typed :class:`Arch`.

An arch file (``sim/arch/*.yaml``) describes the accelerator of docs/engine.md and names a board
(``sim/boards/<board>.yaml``: FPGA resources, DRAM) and an energy table
(``sim/energy/<table>.yaml``: pJ per action, every number with its ``source``). Both are given
by name (looked up in those folders) or by a path relative to the arch file.

Every section forbids unknown keys; a bad value raises :class:`SimInputError` naming the file,
the key path, the value and what is allowed::

    sim/arch/x.yaml: compute.skip_mode = 'rows': Input should be 'none', 'act', 'weight' or 'both'

Fields, with units (see docs/simulator.md for what each changes):

- ``clock_mhz``: accelerator clock. ``static_power_w``: static (leakage + idle clock) power of
  the programmable logic while a query runs, charged as ``static_power_w * latency``.
- ``compute``: the ternary MAC array: ``pe`` output lanes x ``simd`` input lanes,
  ``weight_format`` ``ternary2`` (2 bits/weight) or ``ternary1.6`` (5 trits/byte, decoded on
  the way into the weight buffer; ``decode_latency_cycles`` added to every weight transfer),
  ``skip_mode`` ``none|act|weight|both`` (docs/engine.md), ``accumulator_bits``,
  ``adder_tree_stages`` (null = ``ceil(log2 simd)``; the fill is ``stages + 2``);
  ``mode`` ``mvau`` (default: the docs/engine.md machine) or ``systolic`` (a dense ``pe x simd``
  systolic array of ternary lanes whose compute cycles are SCALE-Sim v3's,
  :func:`sim.systolic.systolic_cycles`; ``skip_mode`` must be ``none``) and ``dataflow``
  ``os|ws|is`` (systolic mode only; rows = ``pe``, cols = ``simd``).
- ``int8_unit``: DSP-based int8 x int8 GEMM unit for attention and non-ternary linears:
  an output-stationary ``rows x cols`` grid of MACs, ``macs_per_dsp`` int8 MACs per DSP slice,
  ``pipeline_cycles`` per GEMM.
- ``vector_unit``: softmax / LayerNorm / GELU / adds; ``mode: fabric`` with ``lanes``,
  ``cycles_per_element`` per kind and ``row_op_cycles`` per kind (the per-row square root /
  reciprocal steps; defaults: the HLS unit's), or ``mode: host`` (the CPU does it) with
  ``host_ns_per_element`` per kind, ``host_call_overhead_us`` per op and ``host_pj_per_element``.
- ``buffers``: on-chip ``weights_kb`` (both halves when double-buffering), ``k_max`` (the largest
  layer K built for; null = what ``weights_kb`` holds), ``activations_kb``,
  ``outputs_kb`` (KiB = 1024 bytes); ``*_memory`` ``bram|uram`` (URAM preferred where the
  board has it); word widths follow docs/engine.md section 6 (sim.buffers), not a key.
- ``dram``: ``bandwidth_gb_per_s`` (null = the board's peak; 1 GB = 1e9 bytes) times
  ``efficiency`` (fraction of peak sustained by the DMA); ``latency_ns`` paid once per
  ternary layer before its first weight transfer.
- ``double_buffering``: overlap fold f's compute with fold f+1's weight transfer.
- ``schedule``: ``overlap`` ``none`` (default: ops one after another) or ``pipelined`` (row-local
  ops pipelined across the units by tiles of ``tile_tokens`` tokens, attention by head;
  docs/engine.md section 5a, :mod:`sim.schedule`); ``max_tokens`` sizes the pipeline's buffers.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sim.errors import SimInputError
from sim.trace import VECTOR_KINDS  # the vector-unit kinds: one list, the trace format's

SIM_DIR = Path(__file__).resolve().parent
ARCH_DIR = SIM_DIR / "arch"
BOARD_DIR = SIM_DIR / "boards"
ENERGY_DIR = SIM_DIR / "energy"
DEFAULT_ARCH = ARCH_DIR / "kv260.yaml"
RESOURCE_MODEL = BOARD_DIR / "resource_model.yaml"

SKIP_MODES = ("none", "act", "weight", "both")
COMPUTE_MODES = ("mvau", "systolic")
DATAFLOWS = ("os", "ws", "is")
WEIGHT_FORMATS = ("ternary2", "ternary1.6")
BITS_PER_WEIGHT = {"ternary2": 2.0, "ternary1.6": 1.6}
BLOCK_TYPES = ("registers", "lutram", "bram18", "bram36", "uram")  # sim.buffers maps memories to these


class _Strict(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` in any arch, board, energy or resource file is an error
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ------------------------------------------------------------------------------------ arch file

class GatherSpec(_Strict):
    """docs/engine.md section 3: the gathered operand's banks and read ports (replicas derived)."""

    banks: int | None = Field(None, ge=1, le=4096, description="memory banks by channel (k mod banks); null = simd")
    ports: Literal[1, 2] = Field(1, description="read ports per bank memory (2 = true dual port)")


class ComputeSpec(_Strict):
    pe: int = Field(32, ge=1, le=4096, description="output lanes (channels per fold)")
    simd: int = Field(32, ge=1, le=4096, description="input lanes per PE (pairs per chunk)")
    weight_format: Literal["ternary2", "ternary1.6"] = "ternary2"
    skip_mode: Literal["none", "act", "weight", "both"] = "act"
    accumulator_bits: int = Field(32, ge=8, le=64)
    adder_tree_stages: int | None = Field(None, ge=0, le=16, description="null = ceil(log2 simd)")
    decode_latency_cycles: int = Field(3, ge=0, le=1000, description="ternary1.6 decoder pipeline, per transfer")
    mode: Literal["mvau", "systolic"] = Field("mvau", description="mvau = docs/engine.md; systolic = dense SCALE-Sim array")
    dataflow: Literal["os", "ws", "is"] = Field("os", description="systolic mode: which operand stays in the array")
    gather: GatherSpec = Field(default_factory=GatherSpec, description="banks and ports of the gathered operand")

    @model_validator(mode="after")
    def _gather(self) -> "ComputeSpec":
        b, p = self.gather.banks, self.gather.ports
        if b is not None and self.simd % b:
            raise ValueError(f"compute.gather.banks = {b} does not divide compute.simd = {self.simd}; "
                             f"allowed: a divisor of simd (lane s reads bank s mod banks)")
        if (b or self.simd) * p > self.simd or self.simd % ((b or self.simd) * p):
            raise ValueError(f"compute.gather.banks x compute.gather.ports = {(b or self.simd)} x {p} does not divide "
                             f"compute.simd = {self.simd}; allowed: banks x ports a divisor of simd (replicas = "
                             f"simd / (banks x ports))")
        return self

    @property
    def banks(self) -> int:
        """``B``: banks of the gathered operand (channel k in bank k mod B)."""
        return self.gather.banks or self.simd

    @property
    def ports(self) -> int:
        return self.gather.ports

    @property
    def replicas(self) -> int:
        """``R = SIMD / (B * P)``: copies of each bank, so that every lane has its own read port."""
        return self.simd // (self.banks * self.gather.ports)

    @property
    def lanes_per_bank(self) -> int:
        """``q = SIMD / B = P * R``: work channels of one bank a chunk can hold."""
        return self.simd // self.banks

    @model_validator(mode="after")
    def _systolic_dense(self) -> "ComputeSpec":
        if self.mode == "systolic" and self.skip_mode != "none":
            raise ValueError(f"compute.skip_mode = {self.skip_mode!r} with compute.mode = 'systolic': the systolic "
                             f"array is dense (no zero-skipping); allowed with mode 'systolic': skip_mode 'none' "
                             f"(or use mode 'mvau' for {self.skip_mode!r} skipping)")
        return self

    @model_validator(mode="after")
    def _tree(self) -> "ComputeSpec":
        need = math.ceil(math.log2(self.simd)) if self.simd > 1 else 0
        if self.adder_tree_stages is not None and self.adder_tree_stages < need:
            raise ValueError(f"adder_tree_stages = {self.adder_tree_stages} is too few for simd = {self.simd}: "
                             f"an adder tree over {self.simd} inputs needs at least {need} stages")
        return self

    @property
    def tree_stages(self) -> int:
        if self.adder_tree_stages is not None:
            return self.adder_tree_stages
        return math.ceil(math.log2(self.simd)) if self.simd > 1 else 0

    @property
    def bits_per_weight(self) -> float:
        return BITS_PER_WEIGHT[self.weight_format]


class Int8UnitSpec(_Strict):
    rows: int = Field(16, ge=1, le=1024, description="output rows computed in parallel")
    cols: int = Field(16, ge=1, le=1024, description="output columns computed in parallel")
    macs_per_dsp: int = Field(2, ge=1, le=4, description="int8 MACs per DSP slice per cycle")
    pipeline_cycles: int = Field(4, ge=0, le=1000, description="fill/drain per GEMM")


# the HLS vector unit's per-row steps (hls/include/tatvpr_vector.h): TATVPR_ROW_CYCLES_LAYERNORM,
# TATVPR_ROW_CYCLES_SOFTMAX, TATVPR_ROW_CYCLES_L2NORM (LayerNorm: mu's 16 quotient bits, 16 shift-and-add
# steps of the variance's product, ssd / d's 32 quotient bits, then a 32-step square root and the 48 quotient
# bits of 2^47 / sd; the descriptor is one row: the square root and 2^47 / sd only); the other kinds have no rows
# topk (tatvpr_topk_schedule, TATVPR_ROW_CYCLES_TOPK): the threshold scan over the 128 nonzero magnitude bins
ROW_OP_CYCLES = {"softmax": 33, "layernorm": 16 + 16 + 32 + 32 + 48, "gelu": 0, "add": 0, "other": 0, "requant": 0, "l2norm": 32 + 48,
                 "topk": 128}
# Kinds an arch file may leave out of cycles_per_element / host_ns_per_element (added after the
# first arch files): the HLS unit's element-loop passes (tatvpr_requant 1: one multiply and round;
# tatvpr_l2norm 2: the sum of squares, then the scaling; tatvpr_topk_schedule 2: the histogram pass and
# the select pass, its emit pass charged per chunk by sim.engine.vector_topk_cycles) and the host's
# ns per element (topk: the numpy top-k + bank scheduling on the ARM, HOST_STEP_NS["topk"] = 380).
NEW_KIND_CYCLES_PER_ELEMENT = {"requant": 1.0, "l2norm": 2.0, "topk": 2.0}
NEW_KIND_HOST_NS = {"requant": 1.0, "l2norm": 1.0, "topk": 380.0}


def new_kind_vector_pj(kind: str, table) -> "Sourced":
    """vector_pj_per_element of a kind an energy table leaves out, from the table's own entries:
    ``requant`` one 32-bit multiply and one rounding add per element (mult32 + add32), ``l2norm``
    that in each of its two passes (square and accumulate, then scale and round): 2 x (mult32 + add32);
    the L2 norm's square root and reciprocal are row steps (vector_row_step_pj); ``topk`` one add per
    element in each of its two passes (the histogram bin's increment, then the compare with the
    threshold and the tie count): 2 x add32 (its threshold scan is row steps)."""
    if kind == "topk":
        return Sourced(value=2 * table.add32_pj.value, source=f"derived: topk = 2 x add32_pj = 2 x "
                       f"{table.add32_pj.value:g} of this table (sim.arch.new_kind_vector_pj)")
    per = table.mult32_pj.value + table.add32_pj.value
    passes = {"requant": 1, "l2norm": 2}[kind]
    return Sourced(value=passes * per, source=f"derived: {kind} = {passes} x (mult32_pj + add32_pj) = {passes} x "
                   f"({table.mult32_pj.value:g} + {table.add32_pj.value:g}) of this table (sim.arch.new_kind_vector_pj)")


def _kinds(default: float) -> dict[str, float]:
    return {k: default for k in VECTOR_KINDS}


class VectorUnitSpec(_Strict):
    mode: Literal["fabric", "host"] = "fabric"
    lanes: int = Field(16, ge=1, le=4096)
    cycles_per_element: dict[str, float] = Field(default_factory=lambda: {**_kinds(1.0), **NEW_KIND_CYCLES_PER_ELEMENT})
    # cycles of the per-row steps between a row's passes (docs/engine.md section 5): LayerNorm's
    # square root (32 restoring steps) and reciprocal 2^47 / sd (48 quotient bits), softmax's
    # reciprocal 2^32 / sum (33 quotient bits), as hls/src/tatvpr_vector.cpp computes them
    row_op_cycles: dict[str, int] = Field(default_factory=lambda: dict(ROW_OP_CYCLES))
    pipeline_cycles: int = Field(8, ge=0, le=10000)
    host_ns_per_element: dict[str, float] = Field(default_factory=lambda: {**_kinds(1.0), **NEW_KIND_HOST_NS})
    host_call_overhead_us: float = Field(5.0, ge=0.0, le=1e6)
    host_pj_per_element: float = Field(100.0, ge=0.0, le=1e9)

    @field_validator("row_op_cycles")
    @classmethod
    def _row_ops_valid(cls, table: dict[str, int]) -> dict[str, int]:
        """Kinds not given keep the HLS unit's values (ROW_OP_CYCLES)."""
        extra = sorted(set(table) - set(VECTOR_KINDS))
        if extra:
            raise ValueError(f"unknown kind {extra[0]!r}; allowed: {', '.join(VECTOR_KINDS)}")
        for k, v in table.items():
            if not 0 <= v <= 1_000_000:
                raise ValueError(f"{k} = {v!r}: must be an integer in [0, 1000000]")
        return {k: int(table.get(k, ROW_OP_CYCLES[k])) for k in VECTOR_KINDS}

    @model_validator(mode="after")
    def _kinds_valid(self) -> "VectorUnitSpec":

        for field, new in (("cycles_per_element", NEW_KIND_CYCLES_PER_ELEMENT), ("host_ns_per_element", NEW_KIND_HOST_NS)):
            table = getattr(self, field)
            for k, v in new.items():
                table.setdefault(k, v)
            extra = sorted(set(table) - set(VECTOR_KINDS))
            if extra:
                raise ValueError(f"{field}: unknown kind {extra[0]!r}; allowed: {', '.join(VECTOR_KINDS)}")
            missing = sorted(set(VECTOR_KINDS) - set(table))
            if missing:
                raise ValueError(f"{field}: missing kind {missing[0]!r}; give all of {', '.join(VECTOR_KINDS)}")
            for k, v in table.items():
                if not (v > 0 and math.isfinite(v)):
                    raise ValueError(f"{field}.{k} = {v!r}: must be a finite number > 0")
        return self


class BufferSpec(_Strict):
    weights_kb: float = Field(256.0, gt=0, le=1e6, description="KiB, both halves when double-buffering")
    k_max: int | None = Field(None, ge=1, le=1 << 20, description="largest layer K the machine is built for "
                              "(sizes the weight banks and the bank scheduler); null = what weights_kb holds")
    activations_kb: float = Field(512.0, gt=0, le=1e6)
    outputs_kb: float = Field(512.0, gt=0, le=1e6)
    weights_memory: Literal["bram", "uram"] = "bram"
    activations_memory: Literal["bram", "uram"] = "uram"
    outputs_memory: Literal["bram", "uram"] = "uram"
    int8_weights_kb: float = Field(64.0, gt=0, le=1e6, description="KiB, the int8 unit's weight slices (both halves)")
    int8_weights_memory: Literal["bram", "uram"] = "bram"
    loop_order: Literal["auto", "fold_outer", "token_outer"] = Field(
        "auto", description="ternary layers over the activation buffer: auto = least DRAM traffic")


class DramSpec(_Strict):
    bandwidth_gb_per_s: float | None = Field(None, gt=0, le=1e4, description="null = the board's peak")
    efficiency: float = Field(0.8, gt=0, le=1.0, description="sustained fraction of the bandwidth")
    latency_ns: float = Field(0.0, ge=0, le=1e6, description="paid once per ternary layer")


# ns per element of the host steps between the IPs under schedule.handoffs: dram (docs/engine.md
# section 5a), on the ARM Cortex-A53 of the KV260 (1.333 GHz): measured in numpy on an x86 Xeon at
# 2.6 GHz (benchmarks/bench_host_steps.py, min of 30 runs) x 4, an estimate of the A53's slowdown
# (clock 2.6 / 1.333 = 1.95 x about 2 per clock for an in-order dual-issue core against an out-of-order
# one); not measured on the board (run the benchmark there to replace them):
# topk   = top-k + chunk counts + bank scheduling of a ternary linear's input: 94.7 ns (mean of 16 / 257
#          tokens x 768 / 3072 channels: 77.5, 90.5, 97.6, 113.1) x 4 = 380 ns per input element;
# row_max = the softmax's row maxima: 0.183 ns x 4 = 0.73 ns per score;
# widen  = the int8 unit's operand copies (a to int16, b to int8): 0.057 / 0.045 ns x 4 = 0.2 ns per element;
# topk_dense = the top-k alone (topk_int) of a `none` IP's input (no scheduling: the IP reads dense int8):
#          38.3 ns (mean of 33.7, 37.4, 39.7, 42.3 at 16 / 257 tokens x 768 / 3072 channels, min of 30 runs,
#          measured here as benchmarks/bench_host_steps.py times topk_int, x86 Xeon) x 4 = 153 ns per input element.
HOST_STEP_NS = {"topk": 380.0, "row_max": 0.73, "widen": 0.2, "topk_dense": 153.0}


class ScheduleSpec(_Strict):
    """docs/engine.md section 5a: overlap between the ternary array, the int8 unit and the vector unit."""

    overlap: Literal["none", "pipelined"] = Field("none", description="none = ops in sequence; pipelined = "
                                                  "row ops by token tiles, attention by head")
    tile_tokens: int = Field(16, ge=1, le=4096, description="tokens per pipeline tile (row segments)")
    max_tokens: int = Field(257, ge=1, le=1 << 16, description="largest token count the pipeline buffers "
                            "are built for (sizes the per-head score buffer)")
    max_head_dim: int = Field(64, ge=1, le=4096, description="largest attention head dim the pipeline "
                              "buffers are built for (sizes the per-head Q/K/V buffer)")
    max_dim: int = Field(768, ge=1, le=1 << 16, description="largest model width D the pipeline's "
                         "token tiles are built for (its hidden tiles: the weight buffer's K_max)")
    buffer_memory: Literal["bram", "uram"] = Field("uram", description="memory of the pipeline buffers")
    handoffs: Literal["onchip", "dram"] = Field("onchip", description="where a segment's stages hand tiles to "
                                                "each other: the pipeline buffers, or DRAM (no pipeline buffers; "
                                                "every hand-off byte written and read through the DRAM port)")
    # where a ternary linear's input is top-k'd and bank-scheduled (docs/engine.md sections 5, 5a, 9):
    # fabric (default) = the vector unit's tatvpr_topk_schedule, charged as vector-unit work
    # (sim.engine.vector_topk_cycles) under every handoffs / overlap; host = the driver's numpy on the
    # ARM, a host step (HOST_STEP_NS topk / topk_dense), only with handoffs: dram: with on-chip
    # hand-offs the activations never reach the ARM (see _topk_reachable)
    topk: Literal["host", "fabric"] = Field("fabric", description="top-k + bank scheduling of a ternary "
                                            "linear's input: fabric (the vector unit) or host (driver numpy "
                                            "on the ARM; needs handoffs: dram)")
    # handoffs: dram, the host (ARM) steps between the IPs (docs/engine.md section 5a), ns per element on
    # the ARM: x86 numpy rates of benchmarks/bench_host_steps.py x 4 (Cortex-A53 estimate, see HOST_STEP_NS)
    host_ns_per_element: dict[str, float] = Field(default_factory=lambda: dict(HOST_STEP_NS))
    # how a block's attention runs (docs/engine.md section 5a): split = QK^T, softmax and P.V as three ops
    # (the int8 IP, the vector IP, the int8 IP) with the scores and probabilities handed over; fused = one
    # call of the int8 IP's attention mode (hls/src/tatvpr_attention.cpp): per head K and V on chip, per
    # block of attention_rows query rows S = Q K^T, the rows' maxima as S drains, the softmax on the IP's
    # own softmax lanes (attention_lanes of them), P.V; only Q, K, V in and the output out cross DDR
    attention: Literal["split", "fused"] = Field("split", description="attention as three ops (split) or one "
                                                 "fused int8-IP call by blocks of query rows (fused; needs "
                                                 "overlap: pipelined)")
    attention_rows: int = Field(32, ge=1, le=4096, description="query rows per block of the fused attention "
                                "(sizes its score / probability rows)")
    # the fused attention IP's softmax lanes (softmax-only lanes, rtl/vector_lane.v SOFTMAX_ONLY; charged as
    # lut/ff/dsp_per_softmax_lane): None = vector_unit.lanes (sim.schedule.attention_lanes)
    attention_lanes: int | None = Field(None, ge=1, le=4096, description="softmax lanes of the fused attention "
                                        "IP (1 .. 4096; default: vector_unit.lanes)")
    # consecutive vector-unit ops of one token row under handoffs: dram (docs/engine.md section 5a): split =
    # one vector-IP call per op, every hand-off through DDR; fused = one call of the vector IP's chain op
    # (hls/src/tatvpr_chain.cpp) for [add ->] LayerNorm | GELU [-> the next ternary linear's top-k]: each
    # row read once, the ops on an on-chip row, only what a later op reads written (the residual stream,
    # the top-k's output)
    vector_chain: Literal["split", "fused"] = Field("split", description="consecutive vector-unit ops of a "
                                                    "token row as one op each (split) or one chained vector-IP "
                                                    "call (fused; needs handoffs: dram)")

    @field_validator("host_ns_per_element")
    @classmethod
    def _host_steps_valid(cls, table: dict[str, float]) -> dict[str, float]:
        """Kinds not given keep the defaults (HOST_STEP_NS)."""
        extra = sorted(set(table) - set(HOST_STEP_NS))
        if extra:
            raise ValueError(f"unknown host step {extra[0]!r}; allowed: {', '.join(HOST_STEP_NS)}")
        for k, v in table.items():
            if not (isinstance(v, (int, float)) and 0 <= v <= 1e9 and math.isfinite(v)):
                raise ValueError(f"{k} = {v!r}: must be a finite number of ns in [0, 1e9]")
        return {k: float(table.get(k, HOST_STEP_NS[k])) for k in HOST_STEP_NS}

    @model_validator(mode="after")
    def _attention_pipelined(self) -> "ScheduleSpec":
        """``attention: fused`` is a stage of the attention segment: it needs ``overlap: pipelined`` (under
        ``none`` each op is its own call and the scores would spill as three ops' outputs)."""
        if self.attention == "fused" and self.overlap != "pipelined":
            raise ValueError("schedule.attention = 'fused' needs schedule.overlap = 'pipelined' (the fused IP is "
                             "the attention segment's stage); allowed: schedule.attention: split, or "
                             "schedule.overlap: pipelined")
        return self

    @model_validator(mode="after")
    def _chain_dram(self) -> "ScheduleSpec":
        """``vector_chain: fused`` removes DDR hand-offs: with ``handoffs: onchip`` there are none to remove
        (the pipeline buffers already hold them), so the combination is refused rather than ignored."""
        if self.vector_chain == "fused" and self.handoffs != "dram":
            raise ValueError("schedule.vector_chain = 'fused' needs schedule.handoffs = 'dram' (it removes the "
                             "DDR hand-offs between chained vector ops; on-chip hand-offs have none); allowed: "
                             "schedule.vector_chain: split, or schedule.handoffs: dram")
        return self

    @model_validator(mode="after")
    def _topk_reachable(self) -> "ScheduleSpec":
        """``topk: host`` needs ``handoffs: dram``: the ARM only sees the activations the ops hand each
        other through DDR. With ``handoffs: onchip`` (under any ``overlap``: ``none`` + ``onchip`` is the
        all-on-chip machine) nothing would do the top-k, so it would be simulated for free."""
        if self.topk == "host" and self.handoffs == "onchip":
            raise ValueError("schedule.topk = 'host' needs schedule.handoffs = 'dram' (the host, the ARM, only "
                             "sees activations handed off through DRAM; with handoffs 'onchip' the top-k is on "
                             "the fabric); allowed: schedule.topk: fabric, or schedule.handoffs: dram")
        return self


class ArchSpec(_Strict):
    name: str
    board: str = Field("kv260", description="board name in sim/boards/ or a path")
    energy_table: str = Field("ultrascale_plus", description="table name in sim/energy/ or a path")
    clock_mhz: float = Field(250.0, gt=0, le=5000)
    static_power_w: float = Field(0.5, ge=0, le=1000)
    double_buffering: bool = True
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    int8_unit: Int8UnitSpec = Field(default_factory=Int8UnitSpec)
    vector_unit: VectorUnitSpec = Field(default_factory=VectorUnitSpec)
    buffers: BufferSpec = Field(default_factory=BufferSpec)
    dram: DramSpec = Field(default_factory=DramSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    description: str = ""


# --------------------------------------------------------------------------- board and energy

class Sourced(_Strict):
    value: float = Field(ge=0)
    source: str = Field(min_length=3)


class BoardResources(_Strict):
    lut: int = Field(ge=1)
    ff: int = Field(ge=1)
    dsp: int = Field(ge=0)
    bram36: int = Field(ge=0)
    uram: int = Field(ge=0)


class BoardSpec(_Strict):
    name: str
    part: str
    resources: BoardResources
    resources_source: str = Field(min_length=3)
    dram_type: str
    dram_bandwidth_gb_per_s: Sourced
    max_utilisation: Sourced
    fabric_fmax_mhz: Sourced
    description: str = ""


class SramPoint(_Strict):
    kb: float = Field(gt=0)
    pj: float = Field(ge=0)


class SramTable(_Strict):
    points: list[SramPoint] = Field(min_length=1)
    source: str = Field(min_length=3)

    @model_validator(mode="after")
    def _sorted(self) -> "SramTable":
        kbs = [p.kb for p in self.points]
        if kbs != sorted(kbs) or len(set(kbs)) != len(kbs):
            raise ValueError("points must have strictly increasing kb")
        return self

    def pj_per_64b(self, kb: float) -> float:
        """64-bit access energy of an SRAM of ``kb`` KiB: log-log interpolation, clamped at the ends."""
        pts = self.points
        if kb <= pts[0].kb or len(pts) == 1:
            return pts[0].pj
        if kb >= pts[-1].kb:
            return pts[-1].pj
        for a, b in zip(pts, pts[1:]):
            if kb == a.kb:
                return a.pj
            if a.kb < kb < b.kb:
                t = (math.log(kb) - math.log(a.kb)) / (math.log(b.kb) - math.log(a.kb))
                if a.pj > 0 and b.pj > 0:
                    return math.exp(math.log(a.pj) + t * (math.log(b.pj) - math.log(a.pj)))
                return a.pj + t * (b.pj - a.pj)
        return pts[-1].pj  # kb == last point


class EnergyTable(_Strict):
    """pJ per action; every entry names its source (see sim/energy/*.yaml)."""

    name: str
    description: str = ""
    add8_pj: Sourced
    add32_pj: Sourced
    mult8_pj: Sourced
    mult32_pj: Sourced
    skip_pair_pj: Sourced
    index_decode_pj: Sourced
    intersect_compare_pj: Sourced
    base3_decode_pj: Sourced
    dsp_mac_pj: Sourced
    vector_row_step_pj: Sourced  # one row step of the vector unit (square root / division bit)
    sram_read_64b_pj: SramTable
    sram_write_factor: Sourced
    dram_pj_per_bit: Sourced
    vector_pj_per_element: dict[str, Sourced]
    block_pj_per_bit: dict[str, Sourced]  # per bit accessed in a block of this type (sim.buffers)

    @model_validator(mode="after")
    def _kinds(self) -> "EnergyTable":
        for kind in set(VECTOR_KINDS) - set(self.vector_pj_per_element) & set(NEW_KIND_CYCLES_PER_ELEMENT):
            self.vector_pj_per_element[kind] = new_kind_vector_pj(kind, self)  # kinds after the first tables
        if set(self.vector_pj_per_element) != set(VECTOR_KINDS):
            raise ValueError(f"vector_pj_per_element must have exactly the kinds {', '.join(VECTOR_KINDS)}; "
                             f"got {', '.join(sorted(self.vector_pj_per_element))}")
        if set(self.block_pj_per_bit) != set(BLOCK_TYPES):
            raise ValueError(f"block_pj_per_bit must have exactly the block types {', '.join(BLOCK_TYPES)}; "
                             f"got {', '.join(sorted(self.block_pj_per_bit))}")
        return self


class ResourceModel(_Strict):
    """FPGA resource coefficients (LUT6 fabric); every entry names its source."""

    lut_per_lane: Sourced
    lut_per_tree_bit: Sourced
    ff_per_lane: Sourced
    ff_per_input_lane: Sourced
    lut_per_lane_skip: dict[str, Sourced]
    lut_per_accumulator_bit: Sourced
    ff_per_accumulator_bit: Sourced
    dsp_per_pe_requant: Sourced
    lut_per_base3_decoder: Sourced
    lut_per_int8_dsp: Sourced
    lut_per_vector_lane: Sourced
    ff_per_vector_lane: Sourced
    dsp_per_vector_lane: Sourced
    lut_per_softmax_lane: Sourced
    ff_per_softmax_lane: Sourced
    dsp_per_softmax_lane: Sourced
    # the shared per-row steps (rtl/row_steps.v): the vector unit's (square root, divider, lane-sum reduction)
    # and the fused attention's (divider, reduction), fixed + per lane; the int8 unit's row-max comparators
    lut_row_steps_fixed: Sourced
    lut_per_row_step_lane: Sourced
    ff_row_steps_fixed: Sourced
    ff_per_row_step_lane: Sourced
    lut_softmax_row_steps_fixed: Sourced
    lut_per_softmax_row_step_lane: Sourced
    ff_softmax_row_steps_fixed: Sourced
    ff_per_softmax_row_step_lane: Sourced
    lut_per_row_max: Sourced
    ff_per_row_max: Sourced
    lut_control: Sourced
    lut_per_scheduler_slot: Sourced
    lut_per_scheduler_channel: Sourced
    ff_per_scheduler_channel: Sourced
    lut_per_topk_lane_bit: Sourced
    lut_per_topk_bank_bit: Sourced
    lut_per_topk_queue_path: Sourced
    lut_topk_fixed: Sourced
    ff_per_topk_lane_bit: Sourced
    ff_per_topk_bank_bit: Sourced
    ff_per_topk_queue_path: Sourced
    ff_topk_fixed: Sourced
    ff_control: Sourced
    bram36_bits: Sourced
    bram36_port_bits: Sourced
    uram_bits: Sourced
    uram_port_bits: Sourced

    @model_validator(mode="after")
    def _modes(self) -> "ResourceModel":
        if set(self.lut_per_lane_skip) != set(SKIP_MODES):
            raise ValueError(f"lut_per_lane_skip must have exactly the modes {', '.join(SKIP_MODES)}")
        return self


# --------------------------------------------------------------------------------- the object

class Arch:
    """A validated hardware description with its board, energy table and resource model."""

    def __init__(self, spec: ArchSpec, board: BoardSpec, energy: EnergyTable, resources: ResourceModel,
                 source: str, base_dir: Path):
        self.spec, self.board, self.energy, self.resource_model = spec, board, energy, resources
        self.source, self._base_dir = source, base_dir
        fmax = board.fabric_fmax_mhz.value
        if spec.clock_mhz > fmax:
            raise SimInputError(f"{source}: clock_mhz = {spec.clock_mhz:g} exceeds the {board.name} board's fabric fmax "
                                f"of {fmax:g} MHz for this design class; allowed: clock_mhz <= {fmax:g} "
                                f"({board.fabric_fmax_mhz.source})")
        peak = board.dram_bandwidth_gb_per_s.value
        bw = spec.dram.bandwidth_gb_per_s
        if bw is not None and bw > peak:
            raise SimInputError(f"{source}: dram.bandwidth_gb_per_s = {bw} exceeds the {board.name} board's "
                                f"DRAM peak of {peak} GB/s")

    # convenient views
    def __getattr__(self, item: str) -> Any:
        if item.startswith("_") or item in ("spec",):
            raise AttributeError(item)
        return getattr(self.spec, item)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dram_gb_per_s(self) -> float:
        """Sustained DRAM bandwidth in GB/s (1e9 bytes/s)."""
        bw = self.spec.dram.bandwidth_gb_per_s or self.board.dram_bandwidth_gb_per_s.value
        return bw * self.spec.dram.efficiency

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram_gb_per_s * 1e3 / self.spec.clock_mhz

    @property
    def dram_latency_cycles(self) -> int:
        return math.ceil(self.spec.dram.latency_ns * self.spec.clock_mhz / 1e3 - 1e-9)

    def to_dict(self) -> dict:
        return {**self.spec.model_dump(mode="json"), "source": self.source,
                "dram_bytes_per_cycle": self.dram_bytes_per_cycle}

    def __repr__(self) -> str:
        c = self.spec.compute
        kind = f"systolic-{c.dataflow}, " if c.mode == "systolic" else ""
        return (f"Arch({self.name!r}, {kind}pe={c.pe}, simd={c.simd}, {c.weight_format}, skip={c.skip_mode}, "
                f"{self.spec.clock_mhz} MHz, board={self.board.name})")


def _format(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{path}' (value {e['input']!r})")
        elif e["type"] == "missing":
            lines.append(f"{source}: missing key '{path}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            inp = e.get("input")
            shown = "" if isinstance(inp, dict) else f" = {inp!r}"
            lines.append(f"{source}: {path}{shown}: {msg}")
    return "\n".join(lines)


# Parsed YAML mappings by file text: every with_overrides re-reads the board, energy table and
# resource model, and PyYAML's pure-Python parser took ~90 % of a DSE point's time.
_YAML_CACHE: dict[str, dict] = {}


def load_yaml_mapping(path: Path, what: str) -> dict:
    """Read a YAML file whose top level must be a mapping; SimInputError names what is wrong."""
    if not path.is_file():
        raise SimInputError(f"{what} file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if text in _YAML_CACHE:
            return copy.deepcopy(_YAML_CACHE[text])
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SimInputError(f"{path}: malformed YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise SimInputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); "
                            f"allowed: a UTF-8 YAML {what} file") from None
    if not isinstance(data, dict):
        raise SimInputError(f"{path}: the top level of a {what} file must be a mapping")
    if len(_YAML_CACHE) >= 256:
        _YAML_CACHE.clear()
    _YAML_CACHE[text] = copy.deepcopy(data)
    return data


def _validate(model: type[BaseModel], data: dict, source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SimInputError(_format(source, err)) from None


def _resolve(ref: str, base_dir: Path, folder: Path, what: str) -> Path:
    cand = Path(ref)
    if cand.suffix in (".yaml", ".yml"):
        return cand if cand.is_absolute() else (base_dir / cand)
    path = folder / f"{ref}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "resource_model")
        raise SimInputError(f"unknown {what} {ref!r}; known: {', '.join(known)} (or give a .yaml path)")
    return path


def load_board(ref: str, base_dir: Path = BOARD_DIR) -> BoardSpec:
    path = _resolve(ref, base_dir, BOARD_DIR, "board")
    return _validate(BoardSpec, load_yaml_mapping(path, "board"), str(path))


def load_energy_table(ref: str, base_dir: Path = ENERGY_DIR) -> EnergyTable:
    path = _resolve(ref, base_dir, ENERGY_DIR, "energy table")
    return _validate(EnergyTable, load_yaml_mapping(path, "energy table"), str(path))


def load_resource_model(path: Path = RESOURCE_MODEL) -> ResourceModel:
    return _validate(ResourceModel, load_yaml_mapping(path, "resource model"), str(path))


def arch_from_dict(data: dict, source: str = "<arch>", base_dir: Path = ARCH_DIR) -> Arch:
    """Validate a mapping into an :class:`Arch` (loading its board and energy table)."""
    if not isinstance(data, dict):
        raise SimInputError(f"{source}: the top level must be a mapping")
    spec = _validate(ArchSpec, data, source)
    return Arch(spec, load_board(spec.board, base_dir), load_energy_table(spec.energy_table, base_dir),
                load_resource_model(), source, base_dir)


def builtin_names(folder: Path) -> list[str]:
    """Names of the built-in YAML files of ``folder`` (``sim/arch``, ``sim/sweeps``), sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def resolve_builtin(ref: str | Path, folder: Path, what: str) -> Path:
    """``ref`` as given when it exists or looks like a path (a YAML suffix or a folder part);
    otherwise the built-in ``folder/<ref>.yaml``, from any working directory. An unknown bare
    name raises :class:`SimInputError` listing the built-in names."""
    path = Path(ref)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) != 1:
        return path
    builtin = folder / f"{path.name}.yaml"
    if builtin.is_file():
        return builtin
    raise SimInputError(f"unknown {what} {str(ref)!r}; built-in: {', '.join(builtin_names(folder))} "
                        "(or give the path of a YAML file)")


def load_arch(path: str | Path = DEFAULT_ARCH) -> Arch:
    """Read and validate an arch YAML file (a bare name like ``kv260`` means ``sim/arch/kv260.yaml``)."""
    path = resolve_builtin(path, ARCH_DIR, "arch")
    return arch_from_dict(load_yaml_mapping(path, "arch"), str(path), path.parent)


def with_overrides(arch: Arch, overrides: dict[str, Any]) -> Arch:
    """A new :class:`Arch` with dotted keys replaced, e.g. ``{"compute.pe": 16, "clock_mhz": 300}``."""
    data = arch.spec.model_dump(mode="python")
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise SimInputError(f"override '{key}': '{p}' is not a section of the arch description")
            node = node[p]
        if parts[-1] not in node:
            raise SimInputError(f"override '{key}': unknown key '{parts[-1]}'; "
                                f"allowed here: {', '.join(sorted(node))}")
        node[parts[-1]] = value
    return arch_from_dict(data, f"{arch.source} (with overrides {overrides})", arch._base_dir)
