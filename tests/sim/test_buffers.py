"""sim.buffers: every buffer of a design point and its blocks (docs/engine.md sections 6 and 7).

Every expected count below is worked by hand from the rule in the comment next to it, not
taken from the code: URAM (ceil(w/72) * ceil(d/4096)) if preferred, present and d >= 2048;
else the cheapest of flip-flops, yosys' LUTRAM cells and BRAM18/BRAM36 by yosys' memory_libmap
costs (written out above the one-memory table). tests/rtl/test_memory_rule.py checks the same
rule against yosys itself.
"""

import math

import pytest

from sim.arch import arch_from_dict, load_arch, load_resource_model, with_overrides
from sim.buffers import (BRAM18_RATIOS, BRAM36_RATIOS, URAM_DEPTH, URAM_WIDTH, k_max, map_memory,
                         plan_buffers)
from sim.errors import SimInputError
from sim.resources import estimate_resources


# the top-k on the ARM (nothing of it on chip), explicitly: the default is the fabric top-k unit,
# whose buffers and logic the tests at the end of this file work by hand
HOST_TOPK = {"topk": "host", "handoffs": "dram"}


def _arch(**compute):
    buffers = compute.pop("buffers", {})
    spec = {"name": "t", "board": compute.pop("board", "kv260"), "double_buffering": compute.pop("db", True),
            "compute": compute, "buffers": buffers, "schedule": compute.pop("schedule", dict(HOST_TOPK))}
    return arch_from_dict(spec, "test-arch")


def _by_name(arch):
    return {b["name"]: b for b in plan_buffers(arch)}


# ------------------------------------------------------------------------------ one memory

# Costs by hand from yosys' memory_libmap model (docs/engine.md section 7), m = address segments:
#   flip-flops: w * d;  LUTRAM (16 per cell, scaled by bits): 16 * m * w / u * copies
#   + 0.5 * r * (m - 1) * w (read mux) + 0.5 * m if m > 1 (write demux) + 2 * (unshared reads);
#   DP a (u = 8, 4, 2, 1 at a = 5..8, depth 2^a) hosts both reads (one unshared);
#   SDP a (u = 14 at 32 deep, 7 at 64 deep) one copy per read port, each unshared;
#   BRAM: 129 (BRAM18) / 257 (BRAM36) per block + the same mux / demux / 2 per unshared read,
#   the word padded to whole 9-bit bytes at widths >= 9; SDP widths 36 / 72 need one copy per read.
@pytest.mark.parametrize("w,d,ports,uram,want", [
    (2, 2, 1, False, ("registers", 4, {"ff": 4})),              # FF 4 < SDP5 16*2/14 + 2 = 4.29
    (8, 8, 1, False, ("lutram", 8, {"lut": 8})),                # SDP5 16*8/14 + 2 = 11.1 < FF 64: 1 RAM32M16
    (8, 9, 2, False, ("lutram", 8, {"lut": 8})),                # DP5 16*8/8 + 2 = 18 < SDP5 2 copies 22.3: RAM32M16
    (64, 64, 1, True, ("lutram", 80, {"lut": 80})),             # SDP6 16*64/7 + 2 = 148.3 < BRAM36 259; 64 bits
                                                                # in ceil(64/7) = 10 RAM64M8 of 8 LUTs; no URAM (d < 2048)
    (64, 128, 1, False, ("bram36", 1, {"bram36": 1})),          # BRAM36 512x72: 257 + 2 = 259 < 2 BRAM18 512x36 260
                                                                # < SDP6 m = 2: 292.6 + 31.5 + 1 + 2 = 327.6
    (64, 128, 2, False, ("lutram", 256, {"lut": 256})),         # DP7 16*64/2 + 2 = 514 < BRAM36 1Kx36 x2 = 516:
                                                                # 64 RAM128X1D of 4 LUTs
    (8, 256, 2, False, ("lutram", 64, {"lut": 64})),            # DP8 16*8 + 2 = 130 < BRAM18 131: 8 RAM256X1D x 8
    (8, 1024, 1, False, ("bram18", 1, {"bram18": 1})),          # BRAM18 2Kx9: 129 + 2 = 131; LUTRAM SDP6 m = 16: 340
    (8, 1024, 2, False, ("bram18", 1, {"bram18": 1})),          # BRAM18 2Kx9 true dual port: 131
    (128, 4096, 1, False, ("bram36", 15, {"bram36": 15})),      # 4Kx9: ceil(128/9) = 15 x 257 + 2 = 3857;
                                                                # BRAM18 2Kx9: 15 x 2 = 30 x 129 = 3870 (+ mux)
    (72, 1024, 1, True, ("bram36", 2, {"bram36": 2})),          # URAM preferred but d < 2048: 1Kx36 x2 = 516
    (640, 9831, 1, True, ("uram", 27, {"uram": 27})),           # ceil(640/72) = 9 x ceil(9831/4096) = 3
    (256, 28672, 1, True, ("uram", 28, {"uram": 28})),          # 4 x 7
    (20, 300, 1, False, ("bram18", 1, {"bram18": 1})),          # BRAM18 512x36 (word padded to 27): 131
    (20, 300, 2, False, ("bram36", 1, {"bram36": 1})),          # BRAM36 1Kx36: 259 < BRAM18 1Kx18 x2 + mux = 260
])
def test_map_memory_by_hand(w, d, ports, uram, want):
    kind, blocks, cls = want
    got = map_memory(w, d, ports, uram, True)
    assert (got["block_type"], got["blocks"]) == (kind, blocks)
    for k in ("lut", "ff", "bram18", "bram36", "uram"):
        assert got[k] == cls.get(k, 0), k


def test_uram_preferred_on_a_board_without_uram_is_bram():
    # 640 x 9831 on a Zynq-7000: BRAM. 4Kx9: ceil(640/9) = 72 x ceil(9831/4096) = 3 = 216;
    # 512x72: 9 x 20 = 180; 1Kx36: 18 x 10 = 180; BRAM18 512x36: 18 x 20 = 360 = 180.0: 180 BRAM36
    got = map_memory(640, 9831, 1, True, False)
    assert (got["block_type"], got["blocks"], got["uram"]) == ("bram36", 180, 0)


def test_block_geometry_matches_the_resource_model_sources():
    r = load_resource_model()
    assert URAM_DEPTH * URAM_WIDTH == r.uram_bits.value and URAM_WIDTH == r.uram_port_bits.value
    assert (512, 72) in BRAM36_RATIOS and 512 * 72 == r.bram36_bits.value == 2 * 512 * 36
    assert max(w for _, w in BRAM36_RATIOS) == r.bram36_port_bits.value
    assert (512, 36) in BRAM18_RATIOS


# ---------------------------------------------------------------------- whole design points

def test_default_kv260_by_hand():
    a = with_overrides(load_arch("kv260"), {f"schedule.{k}": v for k, v in HOST_TOPK.items()})  # 32 x 32, act, B = SIMD = 32, P = 1, R = 1, weights 64 KiB double-buffered
    # K_max = min(floor(8192 * 64 / (2 * 32 * 2)) = 4096, buffers.k_max = 3072) = 3072; I = 12
    assert k_max(a) == 3072
    b = _by_name(a)
    assert list(b) == ["weights", "activations", "outputs", "int8_weights"]  # no act_gather in act mode
    w = b["weights"]  # h*R*B = 2*1*32 = 64 memories of 2*32 = 64 bits x 3072/32 = 96 words
    assert (w["memories"], w["width_bits"], w["depth"], w["halves"], w["banks"]) == (64, 64, 96, 2, 32)
    assert w["bits"] == 64 * 64 * 96 == 48 * 8192  # 48 of the 64 KiB: what K_max = 3072 needs
    assert (w["block_type"], w["blocks"], w["bram36"]) == ("bram36", 64, 64)  # one 512x72 each
    act = b["activations"]  # 32 * (8 + 12) = 640 bits x ceil(8192 * 512 / 640) = 6554: 9 x 2 URAM
    assert (act["width_bits"], act["depth"], act["block_type"], act["blocks"]) == (640, 6554, "uram", 18)
    out = b["outputs"]  # 32 * 8 = 256 bits x 8192 * 896 / 256 = 28672: 4 x 7 URAM
    assert (out["width_bits"], out["depth"], out["block_type"], out["blocks"]) == (256, 28672, "uram", 28)
    i8 = b["int8_weights"]  # cols 16 * 8 = 128 bits x 8192 * 64 / 128 = 4096: 15 BRAM36 4Kx9
    assert (i8["width_bits"], i8["depth"], i8["block_type"], i8["blocks"]) == (128, 4096, "bram36", 15)
    res = estimate_resources(a)
    assert res["used"]["bram36"] == 64 + 15 and res["used"]["uram"] == 18 + 28
    assert res["fits"] and res["why"] == []


def test_banked_two_port_act_point_by_hand():
    # PE 8, SIMD 32, B = 8, P = 2: R = 32 / 16 = 2; weights 16 KiB double-buffered
    a = _arch(pe=8, simd=32, skip_mode="act", gather={"banks": 8, "ports": 2}, buffers={"weights_kb": 16})
    # K_max = floor(8192 * 16 / (2 * 8 * 2)) = 4096
    assert k_max(a) == 4096
    w = _by_name(a)["weights"]
    # h*R*B = 2*2*8 = 32 memories, 16 bits x 4096/8 = 512, two read ports:
    # BRAM18 1Kx18: 1 (0.5) beats BRAM36 2Kx18: 1 (1.0); 512x36 not allowed with 2 ports
    assert (w["memories"], w["replicas"], w["ports"], w["width_bits"], w["depth"]) == (32, 2, 2, 16, 512)
    assert (w["block_type"], w["blocks"], w["bram18"], w["bram36"]) == ("bram18", 32, 32, 16)
    assert w["bits"] == 32 * 16 * 512 == 2 * 16 * 8192  # R = 2 copies of the 16 KiB


def test_both_mode_gather_point_by_hand():
    # PE 4, SIMD 8, B = 2, P = 2: R = 8 / 4 = 2; weights 4 KiB double-buffered
    a = _arch(pe=4, simd=8, skip_mode="both", gather={"banks": 2, "ports": 2}, buffers={"weights_kb": 4})
    # K_max = floor(8192 * 4 / (2 * 4 * 2)) = 2048; I = 11
    assert k_max(a) == 2048
    b = _by_name(a)
    w = b["weights"]  # h*PE = 8 memories of 8 * (2 + 11) = 104 bits x 2048/8 = 256
    # 512x72: 2 = 2.0; BRAM18 512x36: ceil(104/36) = 3 = 1.5 (cheapest); 1Kx36: 3 = 3.0
    assert (w["memories"], w["width_bits"], w["depth"]) == (8, 104, 256)
    assert (w["block_type"], w["blocks"], w["bram36"]) == ("bram18", 24, 12)
    g = b["act_gather"]  # 2*PE*R*B = 2*4*2*2 = 32 memories of 8 bits x 2048/2 = 1024, two ports
    assert (g["memories"], g["width_bits"], g["depth"], g["ports"], g["halves"]) == (32, 8, 1024, 2, 2)
    assert (g["block_type"], g["blocks"], g["bram36"]) == ("bram18", 32, 16)  # 2Kx9 BRAM18 each
    act = b["activations"]  # both: 8 * (8 + 11) = 152 bits x ceil(4194304 / 152 = 27594.1) = 27595: 3 x 7 URAM
    assert (act["width_bits"], act["depth"], act["blocks"]) == (152, 27595, 21)
    res = estimate_resources(a)
    # BRAM18: 24 + 32 = 56 -> 28 BRAM36; + int8_weights 15 BRAM36
    assert res["used"]["bram36"] == 28 + 15


def test_paper_layer_weight_mode_32x64_does_not_fit_by_hand():
    # PE 32 x SIMD 64 `weight` mode, K_max = 3072: weights_kb = 3072 * 2 * 32 * 2 / 8192 = 48
    a = with_overrides(load_arch("kv260"), {"compute.simd": 64, "compute.skip_mode": "weight",
                                            "buffers.weights_kb": 48, "clock_mhz": 300,
                                            **{f"schedule.{k}": v for k, v in HOST_TOPK.items()}})
    assert k_max(a) == 3072
    b = _by_name(a)
    # weights: 2*32 = 64 memories of 64 * (2 + 12) = 896 bits x 3072/64 = 48: LUTRAM SDP6
    # 16 * 896 / 7 + 2 = 2050 < BRAM36 512x72 ceil(900/72) = 13 x 257 + 2 = 3343: 128 RAM64M8 = 1024 LUTs each
    assert (b["weights"]["width_bits"], b["weights"]["depth"], b["weights"]["block_type"]) == (896, 48, "lutram")
    assert b["weights"]["lut"] == 64 * 1024 == 65536
    # act_gather: 2*32*1*64 = 4096 memories of 8 bits x 3072/64 = 48: SDP6 16*8/7 + 2 = 20.3 <
    # FF 384: ceil(8/7) = 2 RAM64M8 = 16 LUTs each
    assert (b["act_gather"]["memories"], b["act_gather"]["lut"]) == (4096, 4096 * 16)
    res = estimate_resources(a)
    # datapath by hand: 2048 lanes * (12.03 + 1 weight-mode gating) + 32*32*1.747 + 128 int8 DSPs * 12
    # + 16 vector lanes * 1254 (the measured lane, 185ad81) + 6000 control = 56074.368; + the vector unit's
    # row steps (rtl/row_steps.v) 704 + 16 * 80 = 1984 -> 58058.368; + 65536 + 65536 = 189130.368 -> 189131
    assert res["used"]["lut"] == 189131
    assert not res["fits"] and res["over"] == ["lut"]
    assert res["why"][0].startswith("lut: 189,131 of 117,120") and "weights" in res["why"][0] \
        and "act_gather" in res["why"][0]


def test_kmax_rounds_to_banks_and_a_layer_too_small_is_an_error():
    # PE 3, SIMD 8, B 8, weights 1 KiB, no double buffering: floor(8192 / 6) = 1365 -> 1360
    a = _arch(pe=3, simd=8, db=False, buffers={"weights_kb": 1})
    assert k_max(a) == 1360
    tiny = _arch(pe=64, simd=64, buffers={"weights_kb": 0.5})  # floor(4096 / 256) = 16 < B = 64
    with pytest.raises(SimInputError, match="weights_kb = 0.5"):
        plan_buffers(tiny)


def test_systolic_and_every_mode_bits_equal_memories_times_words():
    for mode in ("none", "act", "weight", "both"):
        a = _arch(pe=16, simd=16, skip_mode=mode, gather={"banks": 4})
        for e in plan_buffers(a):
            assert e["memories"] == e["halves"] * e["replicas"] * e["banks"], (mode, e["name"])
            assert e["bits"] == e["memories"] * e["width_bits"] * e["depth"]
        assert ("act_gather" in _by_name(a)) == (mode in ("weight", "both"))


def test_resources_add_each_block_class_to_its_resource():
    """LUTRAM -> LUT, registers -> FF, BRAM18 pairs -> BRAM36, URAM -> URAM, on top of the datapath.
    PE 8 x SIMD 8 `weight`, banks 2 (R 4), weights 2 KiB: K_max 512, I 9. By hand:
    weights 16 memories of 88 x 64 -> LUTRAM SDP6 (16*88/7 + 2 = 203 < BRAM36 2 x 257):
    ceil(88/7) = 13 RAM64M8 = 104 LUTs each, 1,664; act_gather 2*8*4*2 = 128 memories of 8 x 256,
    one port -> SDP6, m = 4: 16*4*8/7 + 0.5*3*8 + 0.5*4 + 2 = 89.1 < BRAM18 131: 4 x 2 RAM64M8 =
    64 LUTs each, 8,192; activations 4 KiB 64 x 512 -> 1 BRAM36 512x72 (259); outputs 16 KiB
    64 x 2048 -> 1 URAM; int8_weights 16 bits x 4 -> SDP5 16*16/14 + 2 = 20.3 < FF 64: 2 RAM32M16 = 16."""
    from sim.resources import datapath_resources

    a = _arch(pe=8, simd=8, skip_mode="weight", gather={"banks": 2},
              buffers={"weights_kb": 2, "activations_kb": 4, "outputs_kb": 16, "int8_weights_kb": 8 / 1024})
    a = with_overrides(a, {"int8_unit.cols": 2})
    dp = datapath_resources(a)
    r = estimate_resources(a)
    assert r["used"]["lut"] == math.ceil(dp["lut"] + 1664 + 8192 + 16)
    assert r["used"]["ff"] == math.ceil(dp["ff"])
    assert r["used"]["bram36"] == 1 and r["used"]["uram"] == 1
    # an odd BRAM18 count rounds up against the board: PE 3 x SIMD 1, no double buffering,
    # weights 1.5 KiB: K_max = 8192*1.5/(1*3*2) = 2048: 1 memory of 6 x 2048 -> one BRAM18 2Kx9;
    # activations 16 KiB of 1*(8+11) = 19 bits x 6899 -> URAM 1 x 2; outputs 24 x 5462 -> URAM 1 x 2
    odd = _arch(pe=3, simd=1, skip_mode="act", db=False, buffers={"weights_kb": 1.5, "activations_kb": 16,
                                                                  "outputs_kb": 16})
    w = _by_name(odd)["weights"]
    assert (w["memories"], w["block_type"], w["blocks"], w["bram36"]) == (1, "bram18", 1, 0.5)
    used = estimate_resources(odd)["used"]
    assert used["bram36"] == 1 + 15 and used["uram"] == 2 + 2  # ceil(1/2) + int8_weights' 15


def test_sim_json_prints_the_buffers_and_power_scope(tmp_path, capsys):
    import json

    from sim.trace import synthetic_vit_trace, write_trace
    from tatvpr_hw.cli import main

    trace = tmp_path / "t.npz"
    write_trace(trace, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, seed=0))
    assert main(["sim", "--trace", str(trace), "--json", "--set", "compute.skip_mode=both",
                 "--set", "compute.gather.banks=8", "--set", "schedule.topk=host", "--set", "schedule.handoffs=dram"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in d["buffers"]] == ["weights", "act_gather", "activations", "outputs", "int8_weights"]
    keys = {"name", "bits", "banks", "ports", "replicas", "halves", "width_bits", "depth", "block_type", "blocks",
            "memories", "lut", "ff", "bram36", "uram"}
    assert all(keys <= set(b) for b in d["buffers"])
    g = d["buffers"][1]  # 2 * PE 32 * R (32 / 8 = 4) * B 8 = 2048 token-copy memories
    assert (g["memories"], g["banks"], g["replicas"], g["halves"]) == (2048, 8, 32 * 4, 2)
    assert "DRAM" in d["power_scope"] and "excluded" in d["power_scope"]


# ------------------------------------------------------------------ the vector unit's top-k unit
FABRIC_TOPK = {"schedule.topk": "fabric", "schedule.handoffs": "dram", "vector_unit.mode": "fabric"}


def _topk(arch):
    return {n: b for n, b in _by_name(arch).items() if n.startswith("topk_")}


def test_topk_unit_buffers_kv260_act_by_hand():
    """KV260 32 x 32 `act`, 16 vector lanes, B = 32, K_max 3072 (I = 12), schedule.topk fabric. By hand
    (memory_libmap costs as written at the top of this file):
    topk_row: L = 16 memories of 8 bits x 3072 / 16 = 192: SDP6 m = 3: 16*3*8/7 + 0.5*2*8 + 0.5*3 + 2 = 66.4
      beats SDP5 (m = 6: 54.9 + 20 + 3 + 2 = 79.9), DP7 (64 + 4 + 1 + 2 = 71), BRAM18 (>= 131):
      3 segments x ceil(8/7) = 6 RAM64M8 = 48 LUTs each, 768;
    topk_hist: 16 memories of ceil(log2(193)) = 8 bits x 128: SDP6 m = 2: 36.6 + 4 + 1 + 2 = 43.6 (SDP5 52.6,
      DP7 66): 4 RAM64M8 = 32 LUTs each, 512;
    topk_queue: B * max(1, 16 / 32) = 32 memories of 8 + 12 = 20 bits x 3072 / 32 = 96: SDP5 m = 3:
      16*3*20/14 + 0.5*2*20 + 1.5 + 2 = 92.1 (SDP6 104.4, BRAM18 131): 3 x 2 = 6 RAM32M16 = 48 LUTs, 1,536."""
    a = with_overrides(load_arch("kv260"), {**FABRIC_TOPK, "vector_unit.lanes": 16})
    t = _topk(a)
    assert [(n, b["memories"], b["width_bits"], b["depth"], b["block_type"], b["lut"]) for n, b in t.items()] == [
        ("topk_row", 16, 8, 192, "lutram", 768), ("topk_hist", 16, 8, 128, "lutram", 512),
        ("topk_queue", 32, 20, 96, "lutram", 1536)]
    host = with_overrides(a, {"schedule.topk": "host"})
    assert _topk(host) == {}
    # the LUTRAM goes to the LUTs: fabric - host = 2,816 + the unit's logic (datapath)
    from sim.resources import datapath_resources
    diff = estimate_resources(a)["used"]["lut"] - estimate_resources(host)["used"]["lut"]
    logic = datapath_resources(a)["lut"] - datapath_resources(host)["lut"]
    assert abs(diff - (2816 + logic)) <= 1


def test_topk_unit_queue_of_r_memories_a_bank_by_hand():
    """16 vector lanes, B = 4 banks: R = 16 / 4 = 4 queue memories a bank (a cycle's 4 kept channels of a
    bank go to 4 memories), 16 memories of 20 bits x ceil(768 / 4) = 192: BRAM18 512 x 36 SDP,
    1 unit (129 + 2 = 131) beats SDP6 (m = 3: 16*3*20/7 + 0.5*2*20 + 1.5 + 2 = 160.6): 16 BRAM18 = 8 BRAM36."""
    a = with_overrides(load_arch("kv260"), {**FABRIC_TOPK, "vector_unit.lanes": 16, "compute.gather.banks": 4})
    q = _topk(a)["topk_queue"]
    assert (q["memories"], q["width_bits"], q["depth"], q["block_type"], q["bram18"], q["bram36"]) == \
        (16, 20, 192, "bram18", 16, 8)
    assert q["bits"] == 16 * 20 * 192  # 4 x 768 entries of 20 bits: every queue entry once


def test_sim_json_lists_the_topk_buffers(tmp_path, capsys):
    """`tatvpr sim --json` with schedule.topk fabric: the buffer table holds the top-k unit's memories
    (16 lanes, `act` B = 32, K_max 3072: the memories worked out above); with host it does not."""
    import json

    from sim.trace import synthetic_vit_trace, write_trace
    from tatvpr_hw.cli import main

    trace = tmp_path / "t.npz"
    write_trace(trace, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, seed=0))
    sets = ["--set", "schedule.handoffs=dram", "--set", "vector_unit.mode=fabric", "--set", "vector_unit.lanes=16"]
    assert main(["sim", "--trace", str(trace), "--json", *sets, "--set", "schedule.topk=fabric"]) == 0
    d = json.loads(capsys.readouterr().out)
    topk = {b["name"]: (b["memories"], b["lut"]) for b in d["buffers"] if b["name"].startswith("topk_")}
    assert topk == {"topk_row": (16, 768), "topk_hist": (16, 512), "topk_queue": (32, 1536)}
    assert main(["sim", "--trace", str(trace), "--json", *sets, "--set", "schedule.topk=host"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert not [b for b in d["buffers"] if b["name"].startswith("topk_")]


def test_topk_unit_logic_and_no_tile_scheduler_by_hand():
    """The unit's logic from the fitted coefficients (sim/boards/resource_model.yaml: 6.217 LUT per lane x
    index bit, 4.121 per bank x index bit, 9.992 per queue path, 333.2 fixed; FF 1.398, 1.979, 4.288, 185.0).
    KV260 32 x 32 `act`, L = 16, B = 32, K_max 3072 (I = 12), R = 1 (16 paths):
    LUT 16*12*6.217 + 32*12*4.121 + 16*9.992 + 333.2 = 1193.664 + 1582.464 + 159.872 + 333.2 = 3269.2;
    FF 16*12*1.398 + 32*12*1.979 + 16*4.288 + 185 = 268.416 + 759.936 + 68.608 + 185 = 1281.96.
    The HLS ternary IP has no bank scheduler: `act` costs over `none` only its lane gating (1 LUT a lane,
    1,024 lanes), not the RTL tile's scheduler (32 x 96 slots x 8.28 + 3072 x 10.24 = 56,893 LUT, 52,224 FF)."""
    from sim.resources import datapath_resources

    act = with_overrides(load_arch("kv260"), {**FABRIC_TOPK, "vector_unit.lanes": 16})
    host = with_overrides(act, {"schedule.topk": "host"})
    fab, dh = datapath_resources(act), datapath_resources(host)
    assert fab["lut"] - dh["lut"] == pytest.approx(3269.2, abs=1e-6)
    assert fab["ff"] - dh["ff"] == pytest.approx(1281.96, abs=1e-6)
    assert fab["dsp"] == dh["dsp"]
    none = datapath_resources(with_overrides(host, {"compute.skip_mode": "none"}))
    assert dh["lut"] - none["lut"] == pytest.approx(32 * 32 * 1, abs=1e-6)
    assert dh["ff"] == pytest.approx(none["ff"], abs=1e-6)
    # the vector unit on the host: no top-k unit on chip, whatever schedule.topk says
    on_host = with_overrides(act, {"vector_unit.mode": "host"})
    assert not [b for b in plan_buffers(on_host) if b["name"].startswith("topk_")]
