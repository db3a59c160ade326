"""Token blocks, loop order and residency of the one IP call per layer (issue 10): the simulator's
token blocks of a ternary layer are exactly the blocks the board driver plans and the HLS IP
cuts on chip (sized as ``tatvpr export`` compiles it, ``kernel_params``: CHUNKS_MAX, MMAX), and
the driver passes the simulator's loop order and resident flag, so every weight pass and block
load of the IP is one the simulator charges (tests/hls/test_ip_steps.py runs the C-simulated IP
step by step). Expected values by hand from docs/engine.md sections 4, 6."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.arch import load_arch, with_overrides
from sim.buffers import buffer_by_name
from sim.engine import ternary_layer, token_blocks
from sim.packing import pack_ternary2
from sim.trace import TernaryLinearOp
from tatvpr_hw.lower.hls.board import design_point_from_arch, kernel_params
from tatvpr_hw.lower.hls.paths import driver_package

driver_package()
from tatvpr_pynq.driver import TernaryGemmIP  # noqa: E402
from tatvpr_pynq.formats import chunks_per_token  # noqa: E402

# ViT-B/14 at 224 px: 16 x 16 patches + CLS = 257 tokens, width 768, MLP 3072
PAPER_LAYERS = {"qkv": (768, 2304), "proj": (768, 768), "fc1": (768, 3072), "fc2": (3072, 768)}


def _op(mask, n, rng, name="l"):
    w = rng.integers(-1, 2, (n, mask.shape[1])).astype(np.int8)
    return TernaryLinearOp(name, mask.shape[0], mask.shape[1], n, pack_ternary2(w), mask)


def _ip(arch):
    """The driver of the IP that ``tatvpr export`` builds for ``arch`` (no board: only its tiling)."""
    kp = kernel_params(design_point_from_arch(arch, arch.source))
    c = arch.spec.compute
    ip = TernaryGemmIP(None, None, pe=c.pe, simd=c.simd, banks=c.banks, ports=c.ports,
                       activations_kb=arch.spec.buffers.activations_kb, double_buffering=arch.spec.double_buffering,
                       kmax=kp.kmax, mmax=kp.mmax, chunks_max=kp.chunks_max, loop_order=arch.spec.buffers.loop_order)
    return ip, kp


def _ip_calls(ip, mask, input_in_dram=False, n=8):
    """The token blocks of the driver's one IP call of a layer with this activation mask
    (run_tiled's plan, no IP run)."""
    return _ip_plan(ip, mask, input_in_dram, n)["blocks"]


def _ip_plan(ip, mask, input_in_dram=False, n=8):
    chunks = chunks_per_token(mask, ip.simd, ip.banks)
    return ip.plan(chunks, mask.shape[1], n, "ternary2", input_in_dram=input_in_dram)


@pytest.mark.parametrize("simd", [32, 64])
def test_paper_fc2_dense_by_hand(simd):
    """Dense fc2 (257 x 3072 -> 768) on the KV260 point: the IP's chunk buffer, not M * K bytes,
    sets the blocks, and each block streams the 24 folds' weights once (token_outer)."""
    arch = load_arch("kv260")
    if simd != 32:
        arch = with_overrides(arch, {"compute.simd": simd})
    # K_max = 3072 (buffers.k_max) -> I = 12 index bits; a chunk word is SIMD x (8 + 12) bits;
    # 512 KiB = 4,194,304 bits -> ceil(4194304 / (SIMD * 20)) words: 6554 (SIMD 32), 3277 (SIMD 64)
    depth = {32: 6554, 64: 3277}[simd]
    # a dense token: B = SIMD banks, one lane each: ceil(3072 / SIMD) chunks = 96 (32), 48 (64)
    per_token = 3072 // simd
    # 257 tokens do not fit (24,672 / 12,336 words); double buffered: floor(depth / 2) words a block
    # = 3277 / 1638 -> 34 tokens (34 x 96 = 3264, 34 x 48 = 1632) -> 7 blocks of 34 and one of 19
    assert buffer_by_name(arch)["activations"]["depth"] == depth
    assert (depth // 2) // per_token == 34
    ip, kp = _ip(arch)
    assert kp.chunks_max == depth and kp.mmax == 896 * 8192 // (32 * 8)  # the IP is built as charged
    mask = np.ones((257, 3072), bool)
    t = ternary_layer(_op(mask, 768, np.random.default_rng(0), "fc2"), arch)
    assert (t.token_blocks, t.loop_order, t.act_resident) == (8, "token_outer", False)
    # 8 passes of 24 folds x 32 rows x 3072 two-bit codes
    assert t.counts["dram_weight_bits"] == 8 * 24 * 32 * 3072 * 2
    plan = _ip_plan(ip, mask, n=768)
    calls = plan["blocks"]
    assert len(calls) == 8 and [c.stop - c.start for c in calls] == [34] * 7 + [19]
    assert (plan["order"], plan["resident"]) == ("token_outer", False)


@pytest.mark.parametrize("name", sorted(PAPER_LAYERS))
@pytest.mark.parametrize("density", [1.0, 0.6, 0.25])
@pytest.mark.parametrize("simd", [32, 64])
def test_paper_layers_ip_calls_are_the_sims_blocks(name, density, simd):
    k, n = PAPER_LAYERS[name]
    arch = load_arch("kv260")
    if simd != 32:
        arch = with_overrides(arch, {"compute.simd": simd})
    rng = np.random.default_rng(7)
    mask = rng.random((257, k)) < density
    ip, _ = _ip(arch)
    for in_dram in (False, True):
        t = ternary_layer(_op(mask, n, rng, name), arch, input_in_dram=in_dram)
        c = arch.spec.compute
        _, sim_bounds = token_blocks(chunks_per_token(mask, c.simd, c.banks), arch, input_in_dram=in_dram)
        plan = _ip_plan(ip, mask, in_dram, n)
        calls = plan["blocks"]
        assert [(s.start, s.stop) for s in calls] == sim_bounds
        assert t.token_blocks == len(calls)
        # the order and residency the driver writes to the IP's registers: the simulator's
        assert (plan["order"], plan["resident"]) == (t.loop_order, t.act_resident)
        # every call streams the weights of all folds: what the simulator's DRAM weight bits count
        # (token_outer, or fold_outer with one block)
        if t.loop_order == "token_outer" or len(calls) == 1:
            n_f = math.ceil(n / c.pe)
            assert t.counts["dram_weight_bits"] == len(calls) * n_f * c.pe * k * 2


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 40), k=st.integers(1, 200), n=st.integers(1, 9), pe=st.integers(1, 4),
       simd_banks=st.sampled_from([(4, 4), (4, 2), (8, 8), (8, 4), (8, 2), (16, 8)]), db=st.booleans(),
       words=st.integers(1, 400), out_tokens=st.integers(1, 50), density=st.floats(0, 1),
       in_dram=st.booleans(), seed=st.integers(0, 2**16))
def test_random_small_ip_calls_are_the_sims_blocks(make_arch, m, k, n, pe, simd_banks, db, words, out_tokens,
                                                   density, in_dram, seed):
    """Random small layers and buffers: the driver's IP calls (sized by kernel_params) are the
    simulator's token blocks, token for token, or both refuse the layer."""
    from sim.errors import SimInputError

    simd, banks = simd_banks
    arch = with_overrides(make_arch(pe=pe, simd=simd, mode="act", db=db, w_kb=8), {
        "compute.gather.banks": banks, "buffers.k_max": 200})
    width = buffer_by_name(arch)["activations"]["width_bits"]
    arch = with_overrides(arch, {"buffers.activations_kb": (words * width - 0.5) / 8192,
                                 "buffers.outputs_kb": (out_tokens * pe * 8 - 0.5) / 8192})
    bufs = buffer_by_name(arch)
    assert (bufs["activations"]["depth"], bufs["outputs"]["depth"]) == (words, out_tokens)
    rng = np.random.default_rng(seed)
    mask = rng.random((m, k)) < density
    ip, kp = _ip(arch)
    assert (kp.chunks_max, kp.mmax) == (words, out_tokens)
    try:
        t = ternary_layer(_op(mask, n, rng), arch, input_in_dram=in_dram)
    except SimInputError as e:
        assert "activations_kb" in str(e)
        with pytest.raises(ValueError, match="cannot hold a block"):
            _ip_calls(ip, mask, in_dram)
        return
    plan = _ip_plan(ip, mask, in_dram, n)
    calls = plan["blocks"]
    _, sim_bounds = token_blocks(chunks_per_token(mask, simd, banks), arch, input_in_dram=in_dram)
    assert [(s.start, s.stop) for s in calls] == sim_bounds and t.token_blocks == len(calls)
    assert (plan["order"], plan["resident"]) == (t.loop_order, t.act_resident)
    assert all(c.stop - c.start <= out_tokens for c in calls)


def test_one_loop_order_rule():
    """The simulator and the driver call ternary_format.tiling's loop-order rule; none is duplicated."""
    import sim.engine as engine
    import ternary_format.tiling as tiling

    assert engine.loop_steps is tiling.loop_steps and engine.choose_loop_order is tiling.choose_loop_order
    assert engine._passes is tiling.passes


def test_loop_rule_by_hand():
    """ternary_format.tiling's loop order rule, worked by hand (docs/engine.md section 4)."""
    from fractions import Fraction

    from ternary_format.tiling import act_stream_bytes, choose_loop_order, loop_steps, passes

    assert loop_steps(2, 2, "token_outer") == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert loop_steps(2, 2, "fold_outer") == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # a step loads what differs from the previous one: fold_outer, 3 folds, 2 blocks: weights once,
    # blocks once per fold; token_outer: blocks once, weights per block; one fold or block: once
    assert passes("fold_outer", 3, 2, False) == (1, 3) and passes("token_outer", 3, 2, False) == (2, 1)
    assert passes("fold_outer", 3, 1, False) == (1, 1) and passes("token_outer", 1, 2, False) == (1, 1)
    assert passes("fold_outer", 3, 2, True) == (1, 0) and passes("token_outer", 3, 2, True) == (2, 0)
    # 3 folds of 64 B, 2 blocks of a 70-byte stream: fold_outer 3 x 64 + 3 x 70 = 402, token_outer
    # 2 x 3 x 64 + 70 = 454 -> fold_outer; with a 1000-byte stream: 3192 vs 1384 -> token_outer;
    # one fold: 64 + 1000 either way, a tie -> fold_outer
    act = act_stream_bytes(4, 4, 3)
    assert act == 70
    assert choose_loop_order("auto", 3, 2, False, Fraction(64), act) == "fold_outer"
    assert choose_loop_order("auto", 3, 2, False, Fraction(64), 1000) == "token_outer"
    assert choose_loop_order("auto", 1, 2, False, Fraction(64), 1000) == "fold_outer"
    with pytest.raises(ValueError, match="loop order 'sideways'"):
        choose_loop_order("sideways", 3, 2, False, Fraction(64), act)
