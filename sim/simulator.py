"""``simulate(arch, trace) -> SimResult``: one query's cycles, latency, energy and fit.

The ternary layers run on the MAC array (:func:`sim.engine.ternary_layer`), attention matmuls
and non-ternary linears on the int8 unit, element-wise ops on the vector unit; with
``schedule.overlap: none`` (default) one after another, with ``pipelined`` overlapped as
:mod:`sim.schedule` states (docs/engine.md section 5a). Every number is modelled, not measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.arch import Arch
from sim.energy import COMPONENTS, DRAM_COUNTS, energy_pj
from sim.engine import dense_op, ternary_layer, vector_op
from sim.errors import SimInputError
from sim.resources import estimate_resources
from sim.schedule import FusedAttention, HostCost, TopkFabric, charge_topk, op_classes, piped_outputs, query_cycles, schedule_summary
from sim.trace import DenseOp, TernaryLinearOp, Trace, VectorOp

UNITS = ("ternary_array", "int8_unit", "vector_unit")
# every DRAM bit an op's counts hold: ternary weights, activation tiles, int8-unit weights, spills, and
# (handoffs: dram) the hand-offs it writes and reads (sim.energy prices the same keys)
DRAM_KEYS = DRAM_COUNTS
POWER_SCOPE = ("programmable logic (dynamic actions + static_power_w) and DRAM accesses; the processing "
               "system, DDR background power and the board are excluded: not comparable with a wall-plug "
               "measurement")


@dataclass
class SimResult:
    """Per-query result; :meth:`to_dict` is the JSON that ``tatvpr sim --json`` prints."""

    arch: dict
    trace_meta: dict
    layers: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"simulated": True, **self.summary, "arch": self.arch, "trace_meta": self.trace_meta,
                "resources": self.resources, "layers": self.layers}

    def __getitem__(self, key: str):
        return self.summary[key]


def simulate(arch: Arch, trace: Trace) -> SimResult:
    """Simulate one query of ``trace`` on ``arch``."""
    clock = arch.spec.clock_mhz
    c = arch.spec.compute
    layers: list[dict] = []
    by_comp = dict.fromkeys(COMPONENTS, 0.0)
    by_unit = dict.fromkeys(UNITS, 0)
    totals = dict.fromkeys(DRAM_KEYS + ("pairs_dense", "pairs_processed", "dsp_macs", "compute_cycles",
                                        "stall_cycles", "scheduler_fill_cycles"), 0)
    gather_conflict = 0
    sched = arch.spec.schedule
    pipelined = sched.overlap == "pipelined"
    tokens = int(trace.meta.get("tokens") or 0)
    if pipelined and tokens > sched.max_tokens:
        raise SimInputError(f"{arch.source}: schedule.max_tokens = {sched.max_tokens} is below the trace's "
                            f"{tokens} tokens; allowed: schedule.max_tokens >= {tokens} (it sizes the "
                            f"pipeline's score buffer)")
    head_dim = int(trace.meta["dim"]) // int(trace.meta["heads"]) if trace.meta.get("dim") and trace.meta.get("heads") else 0
    if pipelined and head_dim > sched.max_head_dim:
        raise SimInputError(f"{arch.source}: schedule.max_head_dim = {sched.max_head_dim} is below the trace's head "
                            f"dim {head_dim}; allowed: schedule.max_head_dim >= {head_dim}")
    dim = int(trace.meta.get("dim") or 0)
    if pipelined and dim > sched.max_dim:
        raise SimInputError(f"{arch.source}: schedule.max_dim = {sched.max_dim} is below the trace's width {dim}; "
                            f"allowed: schedule.max_dim >= {dim} (it sizes the pipeline's token tiles)")
    classes = op_classes(trace.ops, tokens) if pipelined else None
    piped = piped_outputs(trace.ops, tokens) if pipelined else [False] * len(trace.ops)
    prev = None  # the previous op's timing: did its output spill to DRAM?
    for i, op in enumerate(trace.ops):
        rec = {"name": op.name, "type": op.type, **({"host": True} if getattr(op, "host", False) else {})}
        if isinstance(op, DenseOp) and op.host:  # host work (trace field host): the host-vector charge
            op = op.as_host_vector()
        spilled_in = bool(prev is not None and prev.output_spilled)
        if isinstance(op, TernaryLinearOp):
            tile = sched.tile_tokens if pipelined and classes[i] == "row" else None
            t = ternary_layer(op, arch, input_in_dram=spilled_in, token_tile=tile, output_piped=piped[i])
            cycles, counts, unit = t.cycles, t.counts, "ternary_array"
            rec.update(m=t.m, k=t.k, n=t.n, folds=t.folds, compute_cycles=t.compute_cycles,
                       transfer_cycles=t.transfer_cycles, stall_cycles=t.stall_cycles, fill_cycles=t.fill_cycles,
                       latency_cycles=t.latency_cycles, act_resident=t.act_resident,
                       conflict_cycles=t.conflict_cycles, loop_order=t.loop_order, token_blocks=t.token_blocks,
                       spill_cycles=t.spill_cycles, scheduler_fill_cycles=t.scheduler_fill_cycles,
                       act_density=counts["nnz_act"] / (t.m * t.k), weight_density=counts["nnz_weight"] / (t.n * t.k),
                       mac_utilisation=counts["pairs_processed"] / (arch.spec.compute.pe * arch.spec.compute.simd * cycles))
            totals["compute_cycles"] += t.compute_cycles
            totals["stall_cycles"] += t.stall_cycles
            totals["scheduler_fill_cycles"] += t.scheduler_fill_cycles
            gather_conflict += t.conflict_cycles
            energy = energy_pj(counts, arch, cycles)
        elif isinstance(op, DenseOp):
            t = dense_op(op, arch, readback_bytes=prev.output_bytes if spilled_in else 0, output_piped=piped[i])
            cycles, counts, unit = t.cycles, t.counts, "int8_unit"
            rec.update(m=op.m, k=op.k, n=op.n, batch=op.batch, weights=bool(op.weights),
                       transfer_cycles=t.transfer_cycles, spill_cycles=t.spill_cycles,
                       readback_cycles=t.readback_cycles)
            energy = energy_pj(counts, arch, cycles)
        elif isinstance(op, VectorOp):
            t = vector_op(op, arch, readback_bytes=prev.output_bytes if spilled_in else 0, output_piped=piped[i])
            cycles, counts, unit = t.cycles, t.counts, "vector_unit"
            rec.update(kind=op.kind, elements=op.elements, spill_cycles=t.spill_cycles,
                       readback_cycles=t.readback_cycles)
            energy = energy_pj(counts, arch, cycles, vector_kind=op.kind)
        else:  # pragma: no cover - read_trace only makes the three types
            raise TypeError(type(op))
        prev = t
        for key in DRAM_KEYS + ("pairs_dense", "pairs_processed", "dsp_macs"):
            totals[key] += counts.get(key, 0)
        rec.update(unit=unit, cycles=int(cycles), counts=counts, energy_pj=energy,
                   energy_pj_total=sum(energy.values()))
        for comp, v in energy.items():
            by_comp[comp] += v
        by_unit[unit] += int(cycles)
        layers.append(rec)

    serial_cycles = sum(r["cycles"] for r in layers)
    if pipelined or sched.handoffs == "dram" or sched.topk == "fabric":
        # handoffs: dram under none: the ops one after another, each handing its output over through DRAM
        cycles, segs = query_cycles(trace.ops, layers, tokens, sched.tile_tokens, arch.dram_bytes_per_cycle,
                                    max_dim=sched.max_dim, source=arch.source, handoffs=sched.handoffs,
                                    act_simd=c.simd if c.skip_mode == "act" else None, host=HostCost.of(arch),
                                    overlap=sched.overlap,
                                    topk=TopkFabric.of(arch) if sched.topk == "fabric" else None,
                                    fused=FusedAttention.of(arch) if sched.attention == "fused" else None,
                                    chain=sched.vector_chain == "fused")
        # handoffs: dram: each op's hand-off bytes (DRAM energy, dram_bytes) and host steps (time only:
        # the processing system is outside the power scope)
        pj_per_bit = arch.energy.dram_pj_per_bit.value
        for s in segs:
            for i, moved, host in zip(range(s["first"], s["last"] + 1), s["op_handoff_bytes"], s["op_host_cycles"]):
                rec = layers[i]
                if host:
                    rec["host_cycles"] = int(host)
                if moved:
                    rec["counts"]["dram_handoff_bits"] = 8 * moved
                    rec["energy_pj"]["dram"] += 8 * moved * pj_per_bit
                    rec["energy_pj_total"] = sum(rec["energy_pj"].values())
                    by_comp["dram"] += 8 * moved * pj_per_bit
                    totals["dram_handoff_bits"] += 8 * moved
        serial_cycles += sum(r.get("host_cycles", 0) for r in layers)
        serial_cycles += charge_topk(segs, layers, arch, by_comp, by_unit)  # schedule.topk: fabric
    else:
        cycles, segs = serial_cycles, []
    latency_s = cycles / (clock * 1e6)
    energy_total_pj = sum(by_comp.values())
    dense_macs = totals["pairs_dense"] + totals["dsp_macs"]
    pe_simd = arch.spec.compute.pe * arch.spec.compute.simd
    summary = {
        "arch_name": arch.name, "arch_file": arch.source,
        "cycles": cycles,
        "latency_ms": latency_s * 1e3,
        "queries_per_s": 1.0 / latency_s,
        "energy_mj": energy_total_pj * 1e-9,
        "energy_by_component_mj": {k: v * 1e-9 for k, v in by_comp.items()},
        "energy_by_layer_mj": {r["name"]: r["energy_pj_total"] * 1e-9 for r in layers},
        "cycles_by_unit": by_unit,
        # docs/engine.md section 5a: the sum of the ops' cycles, and what the overlap schedule makes of it
        "overlap": sched.overlap,
        "serial_cycles": serial_cycles,
        "overlap_segments": len(segs) if pipelined else None,
        "handoffs": sched.handoffs,
        # why the query takes its cycles: busy units, the shared DRAM port, what binds (sim.schedule)
        "schedule": schedule_summary(sched, layers, cycles, segs, arch.dram_bytes_per_cycle, UNITS),
        "cycles_by_layer": {r["name"]: r["cycles"] for r in layers},
        "average_power_w": energy_total_pj * 1e-12 / latency_s,
        "dense_macs": dense_macs,
        "ternary_pairs_processed": totals["pairs_processed"],
        "effective_gops": 2 * dense_macs / latency_s / 1e9,
        "gops_per_w": 2 * dense_macs / (energy_total_pj * 1e-12) / 1e9,
        "mac_utilisation": (totals["pairs_processed"] / (pe_simd * by_unit["ternary_array"])
                            if by_unit["ternary_array"] else 0.0),
        "ternary_stall_cycles": totals["stall_cycles"],
        # act: the bank scheduler's token register, one cycle per ternary layer (docs/engine.md section 4)
        "ternary_scheduler_fill_cycles": totals["scheduler_fill_cycles"],
        "dram_bytes": sum(totals[k] for k in DRAM_KEYS) / 8,
        "dram_weight_bytes": totals["dram_weight_bits"] / 8,
        "dram_act_bytes": totals["dram_act_bits"] / 8,
        "dram_int8_weight_bytes": totals["dram_int8_weight_bits"] / 8,
        "dram_spill_bytes": totals["dram_spill_bits"] / 8,
        # handoffs: dram: the bytes the ops hand each other through DRAM (docs/engine.md section 5a)
        "dram_handoff_bytes": totals["dram_handoff_bits"] / 8,
        "gather": {"mode": c.skip_mode, "banks": c.banks, "ports": c.ports, "replicas": c.replicas,
                   "lanes_per_bank": c.lanes_per_bank, "conflict_cycles": int(gather_conflict)},
    }
    resources = estimate_resources(arch)
    summary["fits"] = resources["fits"]
    summary["buffers"] = resources["buffers"]  # sim.buffers.plan_buffers(arch): docs/engine.md section 6
    summary["power_scope"] = POWER_SCOPE
    return SimResult(arch.to_dict(), dict(trace.meta), layers, summary, resources)
