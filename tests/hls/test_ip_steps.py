"""The IP runs the machine the simulator charges (issue 10): one call per layer, the token blocks
of ternary_format.tiling.token_blocks cut on chip, the steps (f, b) in the loop order the driver
passes, each step loading only what differs from the previous one into the idle halves.

The C simulation reports every step (fold, block, CHUNK iterations) and every load made for it
(weights of a fold, activations of a block, their bytes); each must be what ``sim.engine.
ternary_layer`` charges on the arch whose buffers the build has (``kernel_params`` of that arch is
the build): steps and ``C_j``, the weight loads ``pw * N_f``, the block loads ``pa * T`` and their
DRAM bytes (the act stream: chunks x SIMD x 4 + tokens x 2), and the outputs bit-exact against
the numpy reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.arch import arch_from_dict
from sim.buffers import buffer_by_name
from sim.engine import fold_compute_cycles, ternary_layer
from sim.packing import pack_ternary2
from sim.trace import TernaryLinearOp
from tatvpr_hw.lower.hls.board import design_point_from_arch, kernel_params
from tatvpr_hw.lower.hls.csim import KernelParams, build_csim, cached_build, compile_command, run_csim
from tatvpr_hw.lower.hls.formats import quantize_multiplier, reference_gemm
from tatvpr_hw.lower.hls.paths import hls_dir
from ternary_format.tiling import act_stream_bytes, passes

from .conftest import layer_for, random_layer

# small buffers force many blocks: 24 chunks (a non-resident block: 12 with two halves, 24 with
# one) and 5 tokens a block
SMALL = {"halves2": KernelParams(pe=4, simd=8, banks=4, ports=1, halves=2, kmax=256, mmax=5, chunks_max=24),
         "halves1": KernelParams(pe=8, simd=4, banks=2, ports=2, halves=1, kmax=256, mmax=5, chunks_max=24),
         # skip mode none (issue 15): dense words of SIMD int8, ceil(K / SIMD) a token
         "none_halves2": KernelParams(pe=4, simd=8, banks=4, ports=1, halves=2, kmax=256, mmax=5, chunks_max=24,
                                      skip_mode="none"),
         "none_halves1": KernelParams(pe=8, simd=4, banks=2, ports=2, halves=1, kmax=256, mmax=5, chunks_max=24,
                                      skip_mode="none")}
ACT_SMALL = ["halves1", "halves2"]
# the tiny student's layers (K 192 / 768, 50 tokens): a dense K = 768 token is 96 chunks at B = 4, q = 2
REAL = {"halves2": KernelParams(pe=4, simd=8, banks=4, ports=1, halves=2, kmax=1024, mmax=16, chunks_max=400),
        "halves1": KernelParams(pe=8, simd=4, banks=2, ports=2, halves=1, kmax=1024, mmax=16, chunks_max=400)}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    d = tmp_path_factory.mktemp("ip_steps_build")
    return {(size, name): (kp, build_csim(kp, d)) for size, table in (("small", SMALL), ("real", REAL))
            for name, kp in table.items()}


def arch_of(kp: KernelParams, order: str, fmt: str = "ternary2"):
    """The simulator's arch whose buffers are this build's: activation depth CHUNKS_MAX words,
    output depth MMAX tokens, K_max, PE x SIMD, banks, ports, halves; loop order ``order``."""
    h = kp.halves
    spec = {"name": "ip", "board": "kv260", "energy_table": "horowitz45nm", "clock_mhz": 250,
            "static_power_w": 0.5, "double_buffering": h == 2,
            "compute": {"pe": kp.pe, "simd": kp.simd, "skip_mode": kp.skip_mode, "weight_format": fmt},
            "buffers": {"weights_kb": h * kp.pe * 2 * kp.kmax / 8192, "k_max": kp.kmax, "activations_kb": 1,
                        "outputs_kb": (kp.mmax * kp.pe * 8 - 0.5) / 8192, "loop_order": order},
            "dram": {"bandwidth_gb_per_s": 1.0, "efficiency": 1.0, "latency_ns": 40}}
    from sim.arch import with_overrides

    arch = with_overrides(arch_from_dict(spec, "ip-arch"), {"compute.gather.banks": kp.banks,
                                                            "compute.gather.ports": kp.ports})
    width = buffer_by_name(arch)["activations"]["width_bits"]
    arch = with_overrides(arch, {"buffers.activations_kb": (kp.chunks_max * width - 0.5) / 8192})
    # the build `tatvpr export` makes for this arch is this one
    got = kernel_params(design_point_from_arch(arch, "ip-arch"))
    assert got == kp, (got, kp)
    return arch


def check_ip_is_sim(kp, exe, x, w, bias, arch, work, *, fmt="ternary2", in_dram=False, order=None):
    """Run the layer on the C-simulated IP with the simulator's (or the given) order and resident
    flag; assert steps, chunk cycles, loads and bytes equal the simulator's; return both."""
    m, k = x.shape
    n = w.shape[0]
    op = TernaryLinearOp("l", m, k, n, pack_ternary2(w), x != 0)
    t = ternary_layer(op, arch, input_in_dram=in_dram)
    mult, shift = quantize_multiplier(1.0 / (30.0 * np.sqrt(k)))
    layer = dataclasses.replace(layer_for(kp, x, w, bias, mult, shift, fmt=fmt, skip_mode=kp.skip_mode),
                                order=order or t.loop_order, resident=t.act_resident)
    (res,) = run_csim(exe, [layer], work)
    assert res.status == 0 and res.mismatches == 0
    np.testing.assert_array_equal(res.out, reference_gemm(x, w, bias, mult, shift)[0])
    # per fold, the CHUNK iterations over its steps = the simulator's C_f (sum over the blocks)
    np.testing.assert_array_equal(res.chunk_cycles, fold_compute_cycles(x != 0, w, kp.pe, kp.simd, kp.skip_mode,
                                                                         banks=kp.banks, ports=kp.ports))
    # steps in order, each step's CHUNK trip count = the simulator's C_j
    assert [(s["fold"], s["block"], s["chunk_cycles"]) for s in res.steps] == [st[:3] for st in t.steps]
    # a fold's weights load exactly when the simulator's step loads them: pw * N_f loads in all
    pw, pa = passes(t.loop_order, t.folds, t.token_blocks, t.act_resident)
    assert [s["weight_loads"] for s in res.steps] == [int(st[3]) for st in t.steps]
    assert sum(s["weight_loads"] for s in res.steps) == pw * t.folds
    chunks = layer.tok_chunks.astype(np.int64)
    if t.act_resident:
        # the resident input: read once before the first step (on the board from DDR; in the
        # simulated machine the previous op wrote it), never again
        assert [s["act_loads"] for s in res.steps] == [1] + [0] * (len(res.steps) - 1)
        assert res.steps[0]["act_bytes"] == (act_stream_bytes(int(chunks.sum()), kp.simd, m)
                                             if kp.skip_mode == "act" else m * k)
        assert t.counts["dram_act_bits"] == 0
    else:
        assert [s["act_loads"] for s in res.steps] == [int(st[4]) for st in t.steps]
        assert sum(s["act_loads"] for s in res.steps) == pa * t.token_blocks
        assert [s["act_bytes"] for s in res.steps] == [st[5] for st in t.steps]
        assert 8 * sum(s["act_bytes"] for s in res.steps) == t.counts["dram_act_bits"]
    return t, res


@pytest.mark.parametrize("build", sorted(SMALL))
@pytest.mark.parametrize("fmt", ["ternary2", "ternary1.6"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("order", ["fold_outer", "token_outer"])
@pytest.mark.parametrize("in_dram", [False, True])
def test_random_small_layers_steps_are_the_sims(builds, tmp_path, build, fmt, sparsity, order, in_dram):
    kp, exe = builds["small", build]
    rng = np.random.default_rng(int(sparsity * 10) + 3 * len(fmt) + kp.pe + 7 * in_dram)
    x, w, bias = random_layer(rng, 19, 40, 13, sparsity)
    t, res = check_ip_is_sim(kp, exe, x, w, bias, arch_of(kp, order, fmt), tmp_path, fmt=fmt, in_dram=in_dram)
    assert t.loop_order == order
    # the buffers force several blocks and folds: both loop orders are really exercised
    assert t.token_blocks >= 4 and t.folds >= 2
    # dense or half-dense tokens do not fit the 24-chunk buffer; a spilled input is never resident
    assert not t.act_resident if (in_dram or sparsity < 0.9) else True


@pytest.mark.parametrize("build", ACT_SMALL)
@pytest.mark.parametrize("order", ["fold_outer", "token_outer", "auto"])
def test_resident_input_in_blocks_of_mmax_tokens(builds, tmp_path, build, order):
    """8 sparse tokens (2 nonzeros of K = 40 in channels 2i, 2i + 1: two banks, one chunk each)
    fit the whole 24-chunk buffer: resident, cut by the output buffer's 5 tokens into blocks of
    5 and 3, loaded once."""
    kp, exe = builds["small", build]
    rng = np.random.default_rng(5)
    _, w, bias = random_layer(rng, 8, 40, 13, 0.0)
    x = np.zeros((8, 40), np.int8)
    for i in range(8):
        x[i, [2 * i, 2 * i + 1]] = rng.integers(1, 128, 2) * rng.choice([-1, 1], 2)
    t, res = check_ip_is_sim(kp, exe, x, w, bias, arch_of(kp, order), tmp_path)
    assert t.act_resident and t.token_blocks == 2
    assert [s["block"] for s in res.steps if s["fold"] == 0] == [0, 1]
    # spilled by the previous op: the same layer is tiled from DRAM instead
    t2, _ = check_ip_is_sim(kp, exe, x, w, bias, arch_of(kp, order), tmp_path / "dram", in_dram=True)
    assert not t2.act_resident and t2.counts["dram_act_bits"] > 0


def test_steps_by_hand(builds, tmp_path):
    """PE 4, SIMD 8, B 4 (q = 2), 24 chunks, two halves: a block holds 12 chunks and 5 tokens.
    K = 16: a dense token has 4 channels a bank -> 2 chunks. 7 dense tokens = 14 chunks > 12:
    blocks of 5 tokens (the output buffer's 5; 10 chunks) and 2 tokens (4 chunks). N = 9: 3 folds.
    token_outer: (0,0) (1,0) (2,0) (0,1) (1,1) (2,1): weights at every step (6 = 2 passes x 3),
    activations at steps 0 and 3; fold_outer: (0,0) (0,1) (1,0) (1,1) (2,0) (2,1): weights at
    steps 0, 2, 4, activations at every step (6 = 3 passes x 2 blocks)."""
    kp, exe = builds["small", "halves2"]
    x = np.ones((7, 16), np.int8)
    w = np.random.default_rng(1).choice(np.array([-1, 0, 1], np.int8), size=(9, 16))
    bias = np.arange(9, dtype=np.int32)
    blk0 = 10 * 8 * 4 + 5 * 2    # 10 chunks of 8 uint32 slots + 5 uint16 counts = 330 bytes
    blk1 = 4 * 8 * 4 + 2 * 2     # 132 bytes
    for order, steps, wl, al, ab in (
            ("token_outer", [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)], [1] * 6, [1, 0, 0, 1, 0, 0],
             [blk0, 0, 0, blk1, 0, 0]),
            ("fold_outer", [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)], [1, 0, 1, 0, 1, 0], [1] * 6,
             [blk0, blk1] * 3)):
        t, res = check_ip_is_sim(kp, exe, x, w, bias, arch_of(kp, order), tmp_path / order, in_dram=True)
        assert [(s["fold"], s["block"]) for s in res.steps] == steps
        assert [s["chunk_cycles"] for s in res.steps] == [10 if b == 0 else 4 for _, b in steps]
        assert [s["weight_loads"] for s in res.steps] == wl
        assert [s["act_loads"] for s in res.steps] == al
        assert [s["act_bytes"] for s in res.steps] == ab
        # a fold's weights: 4 rows of ceil(16 / 4) = 4 bytes (the last fold: 1 real row of 9)
        assert [s["weight_bytes"] for s in res.steps if s["weight_loads"]][:2] == [16, 16]


def _student_trace(model, images, tmp_path, sparsity, granularity, banks):
    from brevitas_models.sparsity import set_sparsity
    from sim.trace import read_trace, write_trace
    from tatvpr_hw.tracing import trace_query

    set_sparsity(model, sparsity, granularity, banks)
    try:
        path = write_trace(tmp_path / f"q_{granularity}_{sparsity}.npz", trace_query(model, images[0]))
    finally:
        set_sparsity(model, 0.0, "token")
    return read_trace(path)


@pytest.mark.parametrize("build", sorted(REAL))
@pytest.mark.parametrize("granularity", ["token", "bank"])
def test_student_trace_layers_steps_are_the_sims(builds, tiny_student, tmp_path, build, granularity):
    """The tiny student's own trace (its int8 top-k masks, its ternary codes) at two sparsities,
    token and bank granularity, both loop orders, resident or spilled input."""
    from tatvpr_hw.lower.hls.formats import unpack_weights, unschedule_activations
    from tatvpr_hw.lower.hls.layers import layers_from_trace

    model, images = tiny_student
    kp, exe = builds["real", build]
    seen = set()
    for s in (0.4, 0.6):
        trace = _student_trace(model, images, tmp_path, s, granularity, kp.banks)
        pairs = layers_from_trace(trace, pe=kp.pe, simd=kp.simd, banks=kp.banks, ports=kp.ports, seed=3,
                                  max_layers=4)
        for i, (layer, info) in enumerate(pairs):
            x = unschedule_activations(layer.tok_chunks, layer.pairs, layer.k, layer.simd, layer.banks)
            w = unpack_weights(layer.weights, layer.n, layer.k, layer.fmt)
            bias = np.random.default_rng(i).integers(-3000, 3000, layer.n).astype(np.int32)
            for order in ("fold_outer", "token_outer"):
                for in_dram in (False, True):
                    t, _ = check_ip_is_sim(kp, exe, x, w, bias, arch_of(kp, order), tmp_path / f"{s}_{i}_{order}_{in_dram}",
                                           in_dram=in_dram)
                    seen.add((t.act_resident, t.token_blocks > 1))
    # tiled layers of several blocks were exercised (resident ones: test_real_layers.py, one block)
    assert (False, True) in seen


def test_sim_order_mismatch_is_seen(builds, tmp_path):
    """Planted bug: the simulator picks the other loop order than the IP runs: the steps differ."""
    kp, exe = builds["small", "halves2"]
    x, w, bias = random_layer(np.random.default_rng(2), 19, 40, 13, 0.3)
    with pytest.raises(AssertionError):
        check_ip_is_sim(kp, exe, x, w, bias, arch_of(kp, "fold_outer"), tmp_path, order="token_outer")


MUTANTS = {
    # the IP reloads the block's activations at every step (token_outer: once per fold)
    "reload_every_step": ("const bool load_a = more && !resident && nb != b;",
                          "const bool load_a = more && !resident;"),
    # the IP ignores `order` and always runs token_outer (today's IP before issue 10)
    "always_token_outer": ("const bool token_outer = order == ORDER_TOKEN_OUTER;", "const bool token_outer = true;"),
    # a non-resident block may use the whole buffer (no room for the next block's load)
    "whole_buffer_blocks": ("const int cap = resident ? CHUNKS_MAX : CHUNKS_MAX / HALVES;",
                            "const int cap = CHUNKS_MAX;"),
    # skip mode none: every word's lanes read the first word's channels
    "none_lane_channel": ("const int ch_addr = (word * SIMD + s) / BANKS;", "const int ch_addr = s / BANKS;"),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_planted_kernel_bugs_are_caught(tmp_path, mutant):
    """The checks above fail on a kernel with a planted bug (compiled from a patched copy)."""
    kp = SMALL["none_halves2" if mutant.startswith("none") else "halves2"]
    old, new = MUTANTS[mutant]
    src = (hls_dir() / "src" / "tatvpr_gemm.cpp").read_text()
    assert src.count(old) == 1
    patched = tmp_path / "tatvpr_gemm.cpp"
    patched.write_text(src.replace(old, new))

    def cmd(out):
        c = compile_command(kp, out)
        return [str(patched) if a.endswith("src/tatvpr_gemm.cpp") else a for a in c]

    exe = cached_build(tmp_path / "build", "mutant", mutant, ("include/tatvpr_gemm.h",), cmd)
    x, w, bias = random_layer(np.random.default_rng(6), 19, 40, 13, 0.3)
    order = "fold_outer" if mutant == "always_token_outer" else "token_outer"
    from tatvpr_hw.errors import UserError

    # whole_buffer_blocks writes the second half's block past the array's end: the C simulation
    # may crash (UserError: it could not run) instead of returning wrong counts
    with pytest.raises((AssertionError, UserError)):
        check_ip_is_sim(kp, exe, x, w, bias, arch_of(kp, order), tmp_path / "run", in_dram=True)


def test_compile_command_names_the_kernel_source():
    """The mutant test swaps the kernel source in compile_command's argument list."""
    c = compile_command(SMALL["halves2"], hls_dir() / "x")
    assert sum(a.endswith("src/tatvpr_gemm.cpp") for a in c) == 1


@pytest.mark.parametrize("build", ["none_halves2", "none_halves1"])
def test_skip_mode_none_by_hand(builds, tmp_path, build):
    """Skip mode none: every token takes W = ceil(K / SIMD) cycles whatever its zeros. K = 40:
    W = 5 at SIMD 8, 10 at SIMD 4; a block holds floor(12 / 5) = 2 tokens (two halves of 24) or
    floor(24 / 10) = 2 (one); 5 tokens -> blocks of 2, 2, 1; a block load reads M_b * 40 bytes."""
    kp, exe = builds["small", build]
    w_words = -(-40 // kp.simd)
    x, w, bias = random_layer(np.random.default_rng(8), 5, 40, 13, 0.6)   # zeros do not shorten a token
    t, res = check_ip_is_sim(kp, exe, x, w, bias, arch_of(kp, "token_outer"), tmp_path)
    assert t.token_blocks == 3 and not t.act_resident
    assert [st["chunk_cycles"] for st in res.steps if st["fold"] == 0] == [2 * w_words, 2 * w_words, w_words]
    assert [st["act_bytes"] for st in res.steps if st["act_loads"]] == [80, 80, 40]
