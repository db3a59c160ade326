"""docs/engine.md section 3 by hand: banks, ports, replicas and the token-load bound of c(m, f).

Every expected value below is worked out in the comment next to it from the spec's rule
``g = max(1, max_b ceil(w_b / q))``, ``q = SIMD / B``, channel k in bank k mod B.
"""

import numpy as np
import pytest

from sim.engine import bank_counts, fold_compute_cycles, token_cycles
from sim.errors import SimInputError


def mask_of(k, *rows):
    out = np.zeros((len(rows), k), bool)
    for i, nz in enumerate(rows):
        out[i, list(nz)] = True
    return out


def test_bank_counts_by_channel_mod_banks():
    # K = 7, B = 3: banks hold {0,3,6}, {1,4}, {2,5}
    m = mask_of(7, [0, 3, 6, 1], [5])
    assert bank_counts(m, 3).tolist() == [[3, 1, 0], [0, 0, 1]]


def test_all_nonzeros_in_one_bank_take_one_cycle_each():
    # SIMD 4, B 4 (q = 1), P 1: token 0 has channels 0, 4, 8 -> all bank 0 -> 3 cycles (not ceil(3/4) = 1);
    # token 1 has 0, 1, 2 (one per bank) -> 1 cycle; token 2 has nothing -> 1 (accumulator write)
    act = mask_of(12, [0, 4, 8], [0, 1, 2], [])
    w = np.ones((3, 12), np.int8)  # N = 3, PE 2 -> 2 folds
    c = token_cycles(act, w, 2, 4, "act", banks=4, ports=1)
    assert c.tolist() == [[3, 3], [1, 1], [1, 1]]
    assert fold_compute_cycles(act, w, 2, 4, "act", banks=4).tolist() == [5, 5]
    # banks=None is the default machine B = SIMD, not version 1's free gather
    assert fold_compute_cycles(act, w, 2, 4, "act").tolist() == [5, 5]
    # one bank of SIMD ports (B = 1, q = 4): ceil(3/4) = 1 per token -> version 1's 3 per fold
    assert fold_compute_cycles(act, w, 2, 4, "act", banks=1).tolist() == [3, 3]


@pytest.mark.parametrize("ports", [1, 2])
def test_two_banks_two_lanes_each(ports):
    # SIMD 4, B 2 -> q = 2 lanes per bank (P 1: R 2 replicas; P 2: R 1). K = 12.
    # token 0: channels 0,2,4,6,8 all even -> bank 0 has 5 -> ceil(5/2) = 3
    # token 1: channels 1,3 (bank 1: 2) and 0 (bank 0: 1) -> max(ceil(1/2), ceil(2/2)) = 1
    # token 2: channels 1,3,5,7,9,11,0 -> bank 1: 6 -> 3;  bank 0: 1
    act = mask_of(12, [0, 2, 4, 6, 8], [1, 3, 0], [1, 3, 5, 7, 9, 11, 0])
    w = np.ones((1, 12), np.int8)
    assert token_cycles(act, w, 1, 4, "act", banks=2, ports=ports)[:, 0].tolist() == [3, 1, 3]


def test_none_mode_is_ceil_k_over_simd_for_any_banks():
    # K = 10, SIMD 4: ceil(10/4) = 3 whatever B; B 4: bank 0 holds 0,4,8 (3 channels), q = 1 -> 3;
    # B 2: bank 0 holds 0,2,4,6,8 (5), q = 2 -> 3; B 1: 10 / 4 -> 3
    act = np.zeros((2, 10), bool)
    w = np.ones((5, 10), np.int8)
    for b in (1, 2, 4):
        assert token_cycles(act, w, 4, 4, "none", banks=b).tolist() == [[3, 3], [3, 3]]


@pytest.mark.parametrize("mode", ["weight", "both"])
def test_weight_side_modes_are_bound_by_the_token_load(mode):
    # K = 10, SIMD 4 -> loading a token's 10 activations into a copy takes ceil(10/4) = 3 cycles.
    # channel 0 has one nonzero weight, channel 1 none, channel 2 all ten; the token has none:
    # g = 1 everywhere, but the load bound makes every token 3 cycles in every fold.
    act = mask_of(10, [], [0])
    w = np.zeros((3, 10), np.int8)
    w[0, 3] = 1
    w[2, :] = -1
    for b in (1, 2, 4):
        assert token_cycles(act, w, 2, 4, mode, banks=b).tolist() == [[3, 3], [3, 3]]
    # SIMD 16 > K: the load takes 1 cycle, and so does everything else
    assert token_cycles(act, w, 2, 16, mode, banks=4).tolist() == [[1, 1], [1, 1]]


def test_lockstep_max_over_real_lanes_only():
    # weight mode, K = 3, SIMD 1, B 1 (q = 1): lane cycles = max(nnz(w_p), load 3) = 3 for every lane,
    # so a fold of real lanes takes 3 and the padding lane of fold 1 (N = 3, PE 2) adds nothing.
    act = mask_of(3, [0])
    w = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 0]], np.int8)
    assert token_cycles(act, w, 2, 1, "weight", banks=1).tolist() == [[3, 3]]


@pytest.mark.parametrize("banks,ports", [(3, 1), (0, 1), (4, 2), (2, 3), (8, 1)])
def test_bad_gather_is_a_user_error(banks, ports):
    act = np.ones((1, 8), bool)
    w = np.ones((1, 8), np.int8)
    with pytest.raises(SimInputError, match="banks|ports"):
        token_cycles(act, w, 1, 4, "act", banks=banks, ports=ports)


@pytest.mark.parametrize("k,banks,q", [(300, 2, 2), (300, 3, 1), (70, 1, 4), (64, 4, 3), (5, 8, 1)])
def test_both_chunk_sum_equals_brute_force(k, banks, q, monkeypatch):
    """Several 64-channel words per bank, uneven banks, q > 1, tiles that split N unevenly."""
    import sim.trace as st
    from sim.engine import both_chunk_sum
    from sim.packing import pack_ternary2
    from sim.trace import TernaryLinearOp

    monkeypatch.setattr(st, "_TILE_ELEMS", 7 * 5)  # 5 output columns per tile of 7 tokens
    rng = np.random.default_rng(k + banks)
    act = rng.random((7, k)) < 0.6
    w = np.where(rng.random((13, k)) < 0.4, 0, 1).astype(np.int8)
    op = TernaryLinearOp("l", 7, k, 13, pack_ternary2(w), act)
    per_bank = [act[:, b::banks].astype(int) @ (w[:, b::banks] != 0).astype(int).T for b in range(banks)]
    busiest = np.max(per_bank, axis=0)
    want = int(np.maximum(1, -(-busiest // q)).sum())
    assert both_chunk_sum(op, banks, q) == want


# ---------------------------------------------------------------- both mode's chunk kernel
# sim.both_kernel: a C loop built on first use, numpy when it cannot be built. Both must equal the
# spec's sum over (m, n) of max(1, ceil(max_b |nz(x_m) ∩ nz(w_n) ∩ bank b| / q)), computed here as
# one integer matmul per bank.

def _brute_chunks(act, wnz, banks, q):
    per_bank = [act[:, b::banks].astype(np.int64) @ wnz[:, b::banks].astype(np.int64).T for b in range(banks)]
    return int(np.maximum(1, -(-np.max(per_bank, axis=0) // q)).sum())


@pytest.fixture
def fresh_kernel():
    """Forget the loaded kernel before and after (the next call decides its backend again)."""
    from sim import both_kernel

    both_kernel._reset()
    yield both_kernel
    both_kernel._reset()


@pytest.mark.parametrize("m,k,n,banks,q,density", [
    (7, 300, 13, 2, 2, 0.6),     # 150 channels per bank: 19 bytes, 5 words per bank
    (3, 768, 35, 32, 1, 0.6),    # N = 2 blocks of 16 outputs + 3 left over
    (9, 768, 40, 32, 1, 0.6),    # ViT-B's shape of a bank: 24 channels, one word
    (9, 770, 21, 32, 2, 0.6),    # K not a multiple of B
    (5, 3000, 9, 1, 3, 0.9),     # one bank: counts up to 3000 (past uint8)
    (6, 33, 40, 3, 1, 0.5),      # B not a multiple of 8 (the unpacking layout path)
    (2, 5, 3, 8, 1, 0.7),        # K < B: most banks empty
    (4, 96, 17, 4, 4, 0.0),      # nothing nonzero: every (m, n) still costs 1
])
def test_both_kernel_backends_equal_brute_force(fresh_kernel, m, k, n, banks, q, density):
    from sim.trace import bank_bytes

    rng = np.random.default_rng(m + k + n + banks + q)
    act = rng.random((m, k)) < density
    wnz = rng.random((n, k)) < max(density, 0.3)
    a, w = bank_bytes(act, banks), bank_bytes(wnz, banks)
    want = _brute_chunks(act, wnz, banks, q)
    assert fresh_kernel.backend() == "c", fresh_kernel.REASON   # cc is installed here: no silent fallback
    pairs = int((act.astype(np.int64) @ wnz.astype(np.int64).T).sum())
    for v in range(fresh_kernel.variant() + 1):                  # every variant this CPU can run
        got = fresh_kernel.chunk_totals(a, w, q, use="c", c_variant=v)
        assert got == (want, pairs), fresh_kernel.VARIANTS[v]
    assert fresh_kernel.chunk_total(a, w, q, use="c") == want
    assert fresh_kernel.chunk_totals(a, w, q, use="numpy") == (want, None)


def test_both_kernel_builds_once_into_its_folder(fresh_kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("TATVPR_KERNEL_DIR", str(tmp_path))
    assert fresh_kernel.backend() == "c", fresh_kernel.REASON
    built = list(tmp_path.glob("both_kernel_*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    fresh_kernel._reset()
    assert fresh_kernel.backend() == "c" and built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert list(tmp_path.iterdir()) == built  # no temporary build folder left behind


def test_both_kernel_falls_back_to_numpy_and_says_why(fresh_kernel, tmp_path, monkeypatch):
    from sim.trace import bank_bytes

    rng = np.random.default_rng(0)
    act, wnz = rng.random((5, 64)) < 0.5, rng.random((7, 64)) < 0.5
    want = _brute_chunks(act, wnz, 4, 2)
    monkeypatch.setenv("TATVPR_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert fresh_kernel.backend() == "numpy"
    assert "no-such-cc" in fresh_kernel.REASON
    assert fresh_kernel.chunk_total(bank_bytes(act, 4), bank_bytes(wnz, 4), 2) == want
    with pytest.raises(OSError, match="C kernel is not available"):
        fresh_kernel.chunk_total(bank_bytes(act, 4), bank_bytes(wnz, 4), 2, use="c")
    fresh_kernel._reset()
    monkeypatch.delenv("CC")
    monkeypatch.setenv("TATVPR_SIM_KERNEL", "numpy")
    assert fresh_kernel.backend() == "numpy" and fresh_kernel.REASON == "TATVPR_SIM_KERNEL=numpy"


def test_both_kernel_rejects_bad_arguments():
    from sim import both_kernel

    a = np.zeros((1, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="shapes"):
        both_kernel.chunk_total(a, np.zeros((1, 2, 3), np.uint8), 1)
    with pytest.raises(ValueError, match="lanes_per_bank = 0"):
        both_kernel.chunk_total(a, a, 0)
    with pytest.raises(ValueError, match="use = 'gpu'"):
        both_kernel.chunk_total(a, a, 1, use="gpu")
    with pytest.raises(ValueError, match="c_variant = 3"):
        both_kernel.chunk_total(a, a, 1, use="c", c_variant=3)
