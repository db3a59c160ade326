"""The integer model of the student (tatvpr_pynq.integer): primitives worked by hand, the whole
trunk against the float student, files, and that it runs with numpy alone."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tatvpr_hw.lower.hls.paths import driver_package, hls_dir

driver_package()
from tatvpr_pynq import integer as iq  # noqa: E402


def test_softmax_equal_scores_split_255_in_half():
    # u = 0 for both: e = 2**15 each, sum 2**16, r = 2**16, p = (2**15 * 255 * 2**16 + 2**31) >> 32 = 128
    assert iq.softmax_int(np.array([[7, 7]]), 1, 1).tolist() == [[128, 128]]


def test_softmax_one_octave_apart_is_two_thirds_one_third():
    # mult/2**shift = 1/2: z = 512 -> u = 256 = one whole power of two -> e = [2**15, 2**14];
    # probabilities 2/3 and 1/3 of 255 = 170 and 85 (floor after the +2**31 rounding of 170.5 / 85.5
    # in the exact arithmetic: 2**32 // 49152 = 87381 < 2**32 / 49152)
    assert iq.softmax_int(np.array([[512, 0]]), 1, 1).tolist() == [[170, 85]]


def test_softmax_tracks_float_softmax():
    rng = np.random.default_rng(0)
    scores = rng.integers(-4000, 4000, size=(16, 50))
    s_score = 0.002
    from tatvpr_pynq.formats import quantize_multiplier
    m, s = quantize_multiplier(s_score * math.log2(math.e) * 256)
    p = iq.softmax_int(scores, m, s).astype(np.float64) / 255
    z = scores * s_score
    ref = np.exp(z - z.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    assert np.abs(p - ref).max() < 2.5 / 255


def test_gelu_table_hand_values():
    t = iq.gelu_table(0.1, 0.05)
    assert t.dtype == np.int8 and t.shape == (256,)
    assert t[128] == 0                       # gelu(0) = 0
    assert t[128 + 10] == 17                 # gelu(1.0) = 0.841345 -> 16.83 -> 17
    assert t[128 - 10] == -3                 # gelu(-1.0) = -0.158655 -> -3.17 -> -3
    assert t[255] == 127 and t[0] == 0       # 12.7 / 0.05 saturates; gelu(-12.8) ~ 0


def test_layernorm_hand_example():
    # x = [0, 2, 4, 6]: mean 3, d = [-3, -1, 1, 3], var 5, std 2.236; gamma 1, beta 0, s_out = 1/64:
    # y = d / std * 64 = [-85.9, -28.6, 28.6, 85.9] -> [-86, -29, 29, 86]
    ln = iq.layernorm_params(np.ones(4), np.zeros(4), 0.0, 1.0, 1 / 64)
    assert ln(np.array([[0, 2, 4, 6]], np.int16)).tolist() == [[-86, -29, 29, 86]]
    # beta = 0.5 adds 32 steps
    ln = iq.layernorm_params(np.ones(4), np.full(4, 0.5), 0.0, 1.0, 1 / 64)
    assert ln(np.array([[0, 2, 4, 6]], np.int16)).tolist() == [[-54, 3, 61, 118]]


def test_layernorm_tracks_float_layernorm_and_eps():
    rng = np.random.default_rng(1)
    d = 192
    x = rng.normal(0, 3000, size=(20, d)).round().astype(np.int16)
    gamma, beta = rng.normal(1, 0.3, d), rng.normal(0, 0.2, d)
    s_res, s_out, eps = 0.01, 0.04, 1e-6
    y = iq.layernorm_params(gamma, beta, eps, s_res, s_out)(x).astype(np.float64)
    xf = x * s_res
    mu, var = xf.mean(-1, keepdims=True), xf.var(-1, keepdims=True)
    ref = np.clip(np.rint(((xf - mu) / np.sqrt(var + eps) * gamma + beta) / s_out), -128, 127)
    assert np.abs(y - ref).max() <= 1
    # a constant token: variance 0, eps keeps it finite; output = beta
    ln = iq.layernorm_params(np.ones(4), np.full(4, 0.25), 1.0, 1.0, 1 / 64)
    assert ln.eps_q == 1
    assert ln(np.full((1, 4), 5, np.int16)).tolist() == [[16, 16, 16, 16]]


def test_topk_ties_go_to_the_lower_channel():
    assert iq.topk_int(np.array([[3, -3, 1, 3]], np.int8), 0.5).tolist() == [[3, -3, 0, 0]]
    assert iq.topk_int(np.array([[1, 2, 3]], np.int8), 0.0).tolist() == [[1, 2, 3]]
    # ceil((1 - 0.4) * 5) = 3 kept
    assert (iq.topk_int(np.array([[5, -1, 4, 0, -6]], np.int8), 0.4) != 0).sum() == 3


def test_isqrt_exact_on_large_values():
    vals = np.array([0, 1, 2, 3, 4, 15, 16, 17, 2 ** 52 - 1, 2 ** 52, (2 ** 31 - 1) ** 2, 2 ** 62 - 1])
    assert iq.isqrt(vals).tolist() == [math.isqrt(int(v)) for v in vals]


def test_requant_channels_signed_multiplier():
    # v * mult / 2**shift: 100 * 3 / 4 = 75; 100 * -3 / 4 = -75; rounding half up: 10 * 1 / 4 = 2.5 -> 3
    out = iq.requant_channels(np.array([[100, 100, 10]]), np.array([3, -3, 1]), np.array([2, 2, 2]),
                              -128, 127, np.int64)
    assert out.tolist() == [[75, -75, 3]]


# ------------------------------------------------------------------ the whole trunk
# student_and_images: tests/hls/conftest.py


@pytest.mark.parametrize("sparsity", [0.0, 0.4])
def test_integer_trunk_matches_float_student(student_and_images, sparsity):
    import torch

    from brevitas_models.sparsity import sparsity_context
    from tatvpr_hw.integer import export_trunk, integer_descriptors

    student, images = student_and_images
    trunk = export_trunk(student, images, sparsity=sparsity)
    with torch.no_grad(), sparsity_context(student, sparsity):
        feats = student.forward_features(images).numpy()
        desc = torch.nn.functional.normalize(student(images), dim=-1).numpy()
    fq = np.stack([trunk.features(img, sparsity) for img in images.double().numpy()])
    rel = np.linalg.norm(fq - feats) / np.linalg.norm(feats)
    assert rel < 0.03, f"integer trunk is {rel:.1%} off the float student"
    dq = integer_descriptors(student, trunk, images, sparsity)
    assert (dq * desc).sum(1).min() > 0.995


def test_integer_trunk_file_round_trip_is_bit_exact(student_and_images, tmp_path):
    from tatvpr_hw.integer import export_trunk

    student, images = student_and_images
    trunk = export_trunk(student, images, sparsity=0.4)
    path = tmp_path / "trunk.npz"
    iq.save_trunk(path, trunk)
    again = iq.load_trunk(path)
    img = trunk.quantize_image(images[0].double().numpy())
    assert np.array_equal(trunk.tokens(img, 0.4), again.tokens(img, 0.4))
    assert trunk.tokens(img, 0.4).dtype == np.int16
    assert not list(tmp_path.glob("*.tmp*"))


def test_load_trunk_rejects_foreign_and_truncated_files(tmp_path):
    bad = tmp_path / "x.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(iq.IntegerModelError, match="lacks the array"):
        iq.load_trunk(bad)
    trunc = tmp_path / "t.npz"
    trunc.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(iq.IntegerModelError, match="not an integer-model file"):
        iq.load_trunk(trunc)


def test_integer_model_imports_with_numpy_alone():
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'sim', 'tatvpr_hw', 'brevitas_models', 'brevitas', 'timm'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(hls_dir() / 'driver')!r})
        from tatvpr_pynq import integer
        import numpy as np
        print(integer.softmax_int(np.array([[7, 7]]), 1, 1).tolist())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[128, 128]]"


# ------------------------------------------------------------------ the whole query in C simulation
def test_whole_trunk_csim_with_the_fused_attention(student_and_images, tmp_path):
    """schedule.attention: fused: each block's attention is one call of the int8 IP's fused attention
    (tatvpr_attention, C simulation), the tokens bit for bit the integer model's; per unit the counted
    cycles equal the simulator's (sim.schedule.FusedAttention: the array's under int8, the softmax lanes'
    under int8_softmax); no op of the vector unit is a softmax and no separate QK^T / P.V op runs."""
    from sim.arch import load_arch, with_overrides
    from tatvpr_hw.integer import export_trunk
    from tatvpr_hw.lower.hls.query_csim import csim_trunk, sim_unit_cycles

    student, images = student_and_images
    s = 0.4
    trunk = export_trunk(student, images, sparsity=s)
    img = trunk.quantize_image(images[1].double().numpy())
    arch = with_overrides(load_arch("kv260"), {"schedule.overlap": "pipelined", "schedule.attention": "fused",
                                               "schedule.attention_rows": 8})
    c = arch.spec.compute
    out = csim_trunk(trunk, img, s, tmp_path, pe=c.pe, simd=c.simd, banks=c.banks, ports=c.ports,
                     attention="fused", att_rows=8)
    assert np.array_equal(out.tokens, trunk.tokens(img, s))
    names = [op["name"] for op in out.ops]
    assert not any(n.endswith(("attn.qk", "attn.softmax", "attn.av")) for n in names)
    att = [op for op in out.ops if op.get("kind") == "attention"]
    assert [op["unit"] for op in att] == ["int8", "int8_softmax"] * len(trunk.blocks)
    assert out.unit_cycles() == sim_unit_cycles(out, trunk, arch)
    # by hand for the array (16 x 16): blocks of 8 rows, one row tile each; T tokens, head dim dh
    t, d = out.tokens.shape
    h = trunk.blocks[0].num_heads
    dh = d // h
    nb = -(-t // 8)
    assert att[0]["cycles"] == h * nb * (-(-t // 16) * dh + -(-dh // 16) * t)


def test_whole_query_csim_equals_the_integer_model(student_and_images, tmp_path):
    """The tiny student's trunk through the HLS kernels in sequence (vector unit, int8 unit,
    ternary IP) gives the integer model's tokens bit for bit; the ternary IP's counted cycles
    per op equal the simulator's C_f on the same operands, the other units' the simulator's
    formulas (KV260 arch: 16 lanes, 16 x 16 int8 grid)."""
    from sim.arch import load_arch
    from sim.engine import dense_cycles, fold_compute_cycles, vector_cycles
    from tatvpr_hw.lower.hls.query_csim import csim_trunk
    from tatvpr_hw.integer import export_trunk

    student, images = student_and_images
    s = 0.4
    trunk = export_trunk(student, images, sparsity=s)
    img = trunk.quantize_image(images[1].double().numpy())
    out = csim_trunk(trunk, img, s, tmp_path, pe=8, simd=16)
    assert np.array_equal(out.tokens, trunk.tokens(img, s))
    arch = load_arch("kv260")
    v, u = arch.spec.vector_unit, arch.spec.int8_unit
    t, d = out.tokens.shape
    h = trunk.blocks[0].num_heads
    expect = {
        "norm1": vector_cycles(t * d, "layernorm", arch, d) - v.pipeline_cycles,
        "attn.softmax": vector_cycles(h * t * t, "softmax", arch, t) - v.pipeline_cycles,
        "add1": vector_cycles(t * d, "add", arch) - v.pipeline_cycles,
        "gelu": vector_cycles(t * 4 * d, "gelu", arch) - v.pipeline_cycles,
        "attn.qk": dense_cycles(t, d // h, t, h, u.rows, u.cols, 0),
        "attn.av": dense_cycles(t, t, d // h, h, u.rows, u.cols, 0),
    }
    seen = 0
    for op in out.ops:
        key = op["name"].split(".", 2)[-1]
        if op["unit"] == "ternary":
            c_f = fold_compute_cycles(op["act_mask"], op["codes"], 8, 16, "act")
            assert op["cycles"] == int(np.asarray(c_f).sum()), op["name"]
            seen += 1
        elif key in expect:
            assert op["cycles"] == expect[key], op["name"]
            seen += 1
    assert seen == 10 * len(trunk.blocks)
    # every ternary linear read the act stream the vector unit made (tatvpr_topk_schedule, issue 15): the
    # op before it, its cycles by hand: per row 2 x ceil(K / 16) + 128 scan steps, + ceil(16 / 16) a chunk
    from tatvpr_pynq.formats import chunks_per_token

    ternary = [i for i, op in enumerate(out.ops) if op["unit"] == "ternary"]
    assert len(ternary) == 4 * len(trunk.blocks)
    for i in ternary:
        tk, lin = out.ops[i - 1], out.ops[i]
        assert (tk["name"], tk["unit"], tk["kind"]) == (lin["name"] + ".topk", "vector", "topk")
        m, k = lin["act_mask"].shape
        chunks = int(chunks_per_token(lin["act_mask"], 16).sum())
        assert tk["cycles"] == m * (2 * -(-k // 16) + 128) + chunks, lin["name"]


# ------------------------------------------------------------------ the head in integers
def test_l2norm_hand_values():
    # [3, 4]: norm 5 -> 0.6 and 0.8 in Q15 = 19660.8 -> 19661 and 26214.4 -> 26214
    assert iq.l2norm_int(np.array([3, 4])).tolist() == [19661, 26214]
    assert iq.l2norm_int(np.array([-3, 4])).tolist() == [-19661, 26214]
    # one nonzero element is exactly 1.0 = 2**15: saturates to 32767; all zeros stay zeros
    assert iq.l2norm_int(np.array([0, 7, 0])).tolist() == [0, 32767, 0]
    assert iq.l2norm_int(np.zeros(4, np.int16)).tolist() == [0, 0, 0, 0]
    rng = np.random.default_rng(2)
    x = rng.integers(-32768, 32768, size=512)
    ref = x / np.linalg.norm(x.astype(np.float64)) * 2 ** 15
    assert np.abs(iq.l2norm_int(x) - ref).max() <= 1.0


def test_one_float_l2_normalisation_for_the_board_and_the_flow():
    """tatvpr_pynq.heads.l2_normalize is F.normalize (x / max(||x||, 1e-12)); tatvpr_hw.integer uses it."""
    from tatvpr_pynq.heads import l2_normalize

    from tatvpr_hw.integer import l2_normalize as flow_l2

    assert l2_normalize(np.array([3.0, 4.0])).tolist() == [0.6, 0.8]
    assert l2_normalize(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    assert l2_normalize(np.array([1e-13, 0.0])).tolist() == [0.1, 0.0]          # the 1e-12 floor
    rows = np.array([[3.0, 0.0], [4.0, 2.0]])
    assert l2_normalize(rows, axis=0).tolist() == [[0.6, 0.0], [0.8, 1.0]]      # per column (SALAD's clusters)
    assert flow_l2(np.array([[0.0, -5.0]])).tolist() == [[0.0, -1.0]]


def test_im2col3x3_is_a_zero_padded_convolution():
    rng = np.random.default_rng(3)
    h, w, c, o = 3, 4, 2, 5
    x = rng.integers(-9, 10, size=(h * w, c))
    wt = rng.integers(-3, 4, size=(o, c, 3, 3))
    got = iq.im2col3x3(x, h, w) @ wt.reshape(o, -1).T
    grid = x.reshape(h, w, c)
    for r in range(h):          # the convolution written out, zero outside the grid
        for col in range(w):
            for oc in range(o):
                acc = sum(int(grid[r + i - 1, col + j - 1, ci]) * int(wt[oc, ci, i, j])
                          for ci in range(c) for i in range(3) for j in range(3)
                          if 0 <= r + i - 1 < h and 0 <= col + j - 1 < w)
                assert got[r * w + col, oc] == acc


def test_relu_table_hand_values():
    from tatvpr_hw.integer import _relu_table

    t = _relu_table(0.1, 0.05)  # in step 0.1, out step 0.05: i -> max(0, 2 i), saturating
    assert t[128 + 3] == 6 and t[128 - 3] == 0 and t[128] == 0 and t[255] == 127


def _head_model(kind, student_and_images):
    """(student, images) with ``kind``'s head: the shipped teacher's BoQ student, or a fresh one."""
    import torch

    from brevitas_models.checkpoint import init_student_from_teacher
    from brevitas_models.model import build_model
    from brevitas_models.quant import calibrate_input_scales
    from tatvpr_hw.config import load_config

    student, images = student_and_images
    if kind == "boq":
        return student, images
    cfg = load_config(hls_dir().parent / "configs" / "tiny.yaml")
    cfg.model.head.name = kind
    torch.manual_seed(1)
    teacher = build_model(cfg.model, student=False)
    other = build_model(cfg.model, student=True)
    init_student_from_teacher(other, teacher)
    other.eval()
    calibrate_input_scales(other, [images])
    return other, images


@pytest.mark.parametrize("kind", ["boq", "mixvpr", "cls", "salad"])
@pytest.mark.parametrize("sparsity", [0.0, 0.4])
def test_integer_query_follows_the_float_student(student_and_images, kind, sparsity):
    """The whole query in integers (trunk, head, Q15 descriptor) lands next to the float student's
    descriptor of the same image (cosine > 0.995) and is unit-norm up to the Q15 rounding."""
    import torch

    from brevitas_models.sparsity import sparsity_context
    from tatvpr_hw.integer import export_head_q, export_trunk, integer_query_descriptors

    student, images = _head_model(kind, student_and_images)
    trunk = export_trunk(student, images, sparsity=sparsity)
    head = export_head_q(student, trunk, images, sparsity=sparsity)
    assert head.kind == kind
    dq = integer_query_descriptors(trunk, head, images, sparsity)
    with torch.no_grad(), sparsity_context(student, sparsity):
        df = torch.nn.functional.normalize(student(images), dim=-1).numpy()
    assert dq.shape == df.shape
    assert np.abs(np.linalg.norm(dq, axis=1) - 1).max() < 1e-3
    cos = (dq * df).sum(1)
    assert cos.min() > 0.995, cos
    assert (np.argmax(dq @ df.T, axis=1) == np.arange(len(images))).all()


def test_integer_head_file_round_trip_and_refusals(student_and_images, tmp_path):
    from tatvpr_hw.integer import export_head_q, export_trunk

    student, images = student_and_images
    trunk = export_trunk(student, images, sparsity=0.4)
    head = export_head_q(student, trunk, images, sparsity=0.4)
    iq.save_head_q(tmp_path / "h.npz", head)
    again = iq.load_head_q(tmp_path / "h.npz")
    img = trunk.quantize_image(images[2].double().numpy())
    d = iq.query_descriptor(trunk, head, img, 0.4)
    assert d.dtype == np.int16 and np.array_equal(d, iq.query_descriptor(trunk, again, img, 0.4))
    with np.load(tmp_path / "h.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    bad = tmp_path / "b.npz"
    np.savez(bad, kind=np.array("gem"), num_prefix_tokens=np.array(1), grid_hw=np.array([7, 7]),
             uses_final_norm=np.array(1))
    with pytest.raises(iq.IntegerModelError, match="'gem'; implemented: boq, cls, mixvpr, salad"):
        iq.load_head_q(bad)
    np.savez(bad, kind=np.array("boq"))
    with pytest.raises(iq.IntegerModelError, match="lacks the array 'num_prefix_tokens'"):
        iq.load_head_q(bad)
    with pytest.raises(iq.IntegerModelError, match=r"head input must be \[1 \+ 7\*7, D\]"):
        head(np.zeros((3, 192), np.int16))


# ------------------------------------------------------------------ head ops = the simulator's ops
@pytest.mark.parametrize("kind", ["boq", "mixvpr", "cls", "salad"])
def test_integer_head_runs_the_ops_the_simulator_charges(student_and_images, kind):
    """Per op, the integer head's int8-unit GEMMs and vector-unit ops equal the ops the simulator's
    trace of the same model charges (same unit, same m/k/n/batch or kind/elements/row, same order),
    apart from the declared differences; a changed shape is caught."""
    from sim.trace import DenseOp
    from tatvpr_hw.integer import INTEGER_ONLY, TRACE_ONLY, compare_head_ops, export_head_q, export_trunk
    from tatvpr_hw.tracing import trace_query

    student, images = _head_model(kind, student_and_images)
    trace = trace_query(student, images[0])
    trunk = export_trunk(student, images, sparsity=0.0)
    head = export_head_q(student, trunk, images)
    units = iq.RecordingUnits()
    iq.query_descriptor(trunk, head, trunk.quantize_image(images[0].double().numpy()), 0.0, units)
    r = compare_head_ops(units.ops, trace.ops)
    assert r["match"], r["first_difference"]
    assert set(reason for _, reason in r["trace_only"]) <= set(TRACE_ONLY.values())
    # the tracer records the head's requantisations and drops what the hardware does not run (the
    # attention's query scaling and averaged weights, a linear's separate bias add): nothing is
    # declared away any more, apart from SALAD's host part
    assert r["integer_only"] == []
    assert [reason for _, reason in r["trace_only"] if reason != TRACE_ONLY["host"]] == []
    requants = {"boq": ["head.input"], "mixvpr": ["head.mix_out"], "cls": [], "salad": []}[kind]
    assert [op.name for op in trace.ops if op.name in ("head.input", "head.mix_out")] == requants
    assert all(op["kind"] in INTEGER_ONLY for op in units.ops if op["name"] in requants)
    # by hand: BoQ requant + conv + LN + 2 layers x (encoder 12 + query self-attention 7 + cross-attention 7)
    # + fc + l2norm; MixVPR 2 mixers x 5 + requant + 2 projections + l2norm; CLS l2norm; SALAD 3 MLPs x 3
    # + the host part (one signature for the run of host ops)
    n_head = {"boq": 57, "mixvpr": 14, "cls": 1, "salad": 10}[kind]
    assert len(r["integer"]) == n_head
    head_ops = [op for op in trace.ops if op.name.startswith("head")]
    if kind == "salad":  # the Sinkhorn part: host work in the integer model and, by its host flag, in the trace
        assert r["trace_only"] == [] and r["integer"][-1] == ("host",) and units.ops[-1]["unit"] == "host"
        # the 9 MLP ops run on the units; the 32 ATen ops after them (3 Sinkhorn iterations x 2 x (add,
        # logsumexp, sub) = 18, the plan's add, add, sub, exp = 4, the aggregation bmm, 3 F.normalize x 3)
        # are the host's
        assert [op.host for op in head_ops] == [False] * 9 + [True] * 32
        # the simulator charges them on the host (KV260: 250 MHz, 5 us a call, 1 ns an element, a host
        # GEMM's MACs as its elements) and the other ops as without the flag
        from sim.arch import load_arch
        from sim.simulator import simulate

        arch = load_arch("kv260")
        res = simulate(arch, trace)
        work = {op.name: op.macs if isinstance(op, DenseOp) else op.elements for op in head_ops if op.host}
        host_rows = [r for r in res.layers if r.get("host")]
        assert [r["name"] for r in host_rows] == list(work)
        assert [r["cycles"] for r in host_rows] == [math.ceil((5000 + e) * 250 / 1000) for e in work.values()]
        # a trace from before the host flag still compares: its ops after the MLPs are declared host work
        for op in head_ops:
            op.host = False
        fabric = simulate(arch, trace)
        assert [r["cycles"] for r in fabric.layers if r["name"] not in work] == \
            [r["cycles"] for r in res.layers if r["name"] not in work]
        legacy = compare_head_ops(units.ops, trace.ops)
        assert legacy["match"] and [reason for _, reason in legacy["trace_only"]] == [TRACE_ONLY["host"]]
    else:
        assert r["integer"][-1] == ("l2norm", n_desc := head_ops[-1].elements, n_desc)
        assert not any(op.host for op in head_ops)
    # the check bites: one GEMM one column wider, or a dropped op, is a difference
    ops = [dict(op) for op in units.ops]
    gemm = next(i for i, op in enumerate(ops) if op["name"].startswith("head.") and op["unit"] == "int8"
                ) if kind != "cls" else None
    if gemm is not None:
        ops[gemm]["n"] += 1
        assert not compare_head_ops(ops, trace.ops)["match"]
    assert not compare_head_ops(units.ops[:-1], trace.ops)["match"]


def test_whole_query_with_the_head_in_csim_is_bit_exact(student_and_images, tmp_path):
    """Trunk + BoQ head on the C-simulated units: the int16 Q15 descriptor equals the integer
    model's bit for bit; per unit the counted cycles equal the simulator's; every head op ran on the
    int8 and vector units' C simulation, the requantisation and the L2 norm included."""
    from sim.arch import load_arch
    from tatvpr_hw.integer import export_head_q, export_trunk
    from tatvpr_hw.lower.hls.query_csim import csim_query, sim_unit_cycles

    student, images = student_and_images
    s = 0.4
    trunk = export_trunk(student, images, sparsity=s)
    head = export_head_q(student, trunk, images, sparsity=s)
    img = trunk.quantize_image(images[3].double().numpy())
    arch = load_arch("kv260")
    c = arch.spec.compute
    out = csim_query(trunk, head, img, s, tmp_path, pe=c.pe, simd=c.simd, banks=c.banks, ports=c.ports)
    assert np.array_equal(out.descriptor, iq.query_descriptor(trunk, head, img, s))
    assert out.numpy_ops() == []
    head_ops = {op["name"]: op for op in out.ops if op["name"].startswith("head.")}
    assert {op["unit"] for op in head_ops.values() if op["csim"]} == {"int8", "vector"}
    # by hand (16 x 16 int8 grid, 16 lanes): the 3x3 convolution 49 x 1728 x 64 -> 4 x 4 tiles x 1728;
    # norm_input: 49 rows of 64 = 4 lane groups, 2 passes; the cross-attention softmax 16 rows of 49
    # (4 groups each), 2 passes; the fc 64 x 32 x 8 -> 4 x 1 tiles x 32; plus the row steps
    # (docs/engine.md section 5): LayerNorm 144 a row (mean 16, product 16, variance 32,
    # square root 32, reciprocal 48), softmax 33
    assert head_ops["head.proj_c"]["cycles"] == 4 * 4 * 1728
    assert head_ops["head.norm_input"]["cycles"] == 49 * 4 * 2 + 49 * 144
    assert head_ops["head.boqs.0.cross_attn.softmax"]["cycles"] == 16 * 4 * 2 + 16 * 33
    assert head_ops["head.fc"]["cycles"] == 4 * 1 * 32
    # the requantisation of the 49 x 192 patch tokens: 9408 / 16 = 588 lane groups, one pass; the L2 norm
    # of the 64 x 8 = 512-element descriptor: 32 lane groups, 2 passes, + one square root (32 steps) and
    # one reciprocal 2^47 / sd (48 quotient bits)
    assert (head_ops["head.input"]["kind"], head_ops["head.input"]["cycles"]) == ("requant", 588)
    assert (head_ops["head.l2norm"]["kind"], head_ops["head.l2norm"]["cycles"]) == ("l2norm", 32 * 2 + 80)
    assert out.unit_cycles() == sim_unit_cycles(out, trunk, arch)


@pytest.mark.parametrize("kind", ["mixvpr", "salad"])
def test_whole_query_csim_of_the_other_heads(student_and_images, tmp_path, kind):
    """MixVPR: every op in C simulation (its requant of the 192 x 49 mixer output and the 256-element L2
    norm included), the descriptor bit-exact, per-unit cycles the simulator's. SALAD: its MLPs in C
    simulation, the Sinkhorn part the one op left to the host (the same numpy on every backend)."""
    from sim.arch import load_arch
    from tatvpr_hw.integer import export_head_q, export_trunk
    from tatvpr_hw.lower.hls.query_csim import csim_query, sim_unit_cycles

    student, images = _head_model(kind, student_and_images)
    trunk = export_trunk(student, images, sparsity=0.0)
    head = export_head_q(student, trunk, images)
    img = trunk.quantize_image(images[2].double().numpy())
    arch = load_arch("kv260")
    c = arch.spec.compute
    out = csim_query(trunk, head, img, 0.0, tmp_path, pe=c.pe, simd=c.simd, banks=c.banks, ports=c.ports)
    assert np.array_equal(out.descriptor, iq.query_descriptor(trunk, head, img, 0.0))
    assert out.unit_cycles() == sim_unit_cycles(out, trunk, arch)
    ops = {op["name"]: op for op in out.ops}
    if kind == "mixvpr":
        assert out.numpy_ops() == []
        # 192 x 49 = 9408 elements: 588 lane groups; the 256-element descriptor: 16 groups x 2 + 80
        assert ops["head.mix_out"]["cycles"] == 588 and ops["head.l2norm"]["cycles"] == 16 * 2 + 80
    else:
        assert out.numpy_ops() == ["head.sinkhorn"] and out.descriptor.dtype == np.float64


def test_compare_head_ops_follows_a_tracer_that_records_the_requant():
    """If the tracer records the head's int8 requantisation (``head.input``, as the lead may add), the
    integer head's requant is matched against it instead of being declared integer-only."""
    from sim.trace import DenseOp, VectorOp
    from tatvpr_hw.integer import compare_head_ops

    ops = [{"name": "head.input", "unit": "vector", "kind": "requant", "elements": 98, "row": 0},
           {"name": "head.proj_c", "unit": "int8", "m": 49, "k": 18, "n": 4, "batch": 1}]
    plain = [DenseOp("head.proj_c.conv1", 49, 18, 4, weights=True)]
    r = compare_head_ops(ops, plain)
    assert r["match"] and r["integer_only"] == ["head.input"]
    traced = [VectorOp("head.input", "other", 98), *plain]
    r = compare_head_ops(ops, traced)
    assert r["match"] and r["integer_only"] == []
    assert not compare_head_ops(ops, [VectorOp("head.input", "other", 97), *plain])["match"]


def test_vector_chain_is_the_split_ops_by_hand():
    """``Units.vector_chain`` (schedule.vector_chain: fused; the vector IP's ``tatvpr_chain``) returns the split
    ops' integers: on a 1 x 4 row by hand, x16 = [100, -100, 0, 50], x8 = [10, -20, 30, 0] with mult 2^30,
    shift 31 (x8 / 2, rounded half up): the residual [105, -110, 15, 50]; GELU through a table that negates
    (-128 -> 127 saturating) then keep 2 of 4 (s = 0.5): |[-10, 20, -30, 0]| keeps 20 and -30 (the largest)."""
    u = iq.NUMPY_UNITS
    x16 = np.array([[100, -100, 0, 50]], np.int16)
    x8 = np.array([[10, -20, 30, 0]], np.int8)
    mult, shift = np.full(4, 2 ** 30, np.int64), np.full(4, 31, np.int64)
    ln = iq.layernorm_params(np.ones(4), np.zeros(4), 1e-6, 1.0, 1.0)
    res, y = u.vector_chain("c", x16=x16, x8=x8, add=(mult, shift), ln=ln)
    assert res.tolist() == [[105, -110, 15, 50]] and np.array_equal(y, ln(res))
    table = np.clip(-np.arange(-128, 128), -128, 127).astype(np.int8)
    res, y = u.vector_chain("c", x8=x8, gelu_table=table, sparsity=0.5)
    assert res is None and y.tolist() == [[0, 20, -30, 0]]
    # the act stream of a 2-lane, 2-bank IP: kept channels 1 (bank 1) and 2 (bank 0), one chunk
    _, (chunks, pairs) = u.vector_chain("c", x8=x8, gelu_table=table, sparsity=0.5, simd=2, banks=2)
    assert chunks.tolist() == [1] and [hex(p) for p in pairs] == ["0x2e2", "0x114"]


def test_whole_trunk_csim_with_chained_vector_ops(student_and_images, tmp_path):
    """schedule.vector_chain: fused (with the fused attention, the measured points' schedule): the tiny
    student's trunk issued with the chains on (run_trunk chain=True, C simulation): the tokens bit for bit
    the integer model's; every LayerNorm, GELU and residual add except
    the last block's add2 runs inside a chain op (add1 -> norm2 -> fc1's top-k, gelu -> fc2's, add2 -> the next
    norm1 -> qkv's; block 0's norm1 -> qkv's), no separate top-k op except proj's; per unit the counted
    cycles equal the simulator's (each chain: its steps' formulas, the passes still run)."""
    from sim.arch import load_arch, with_overrides
    from tatvpr_hw.integer import export_trunk
    from tatvpr_hw.lower.hls.query_csim import csim_trunk, sim_unit_cycles

    student, images = student_and_images
    s = 0.4
    trunk = export_trunk(student, images, sparsity=s)
    img = trunk.quantize_image(images[1].double().numpy())
    arch = with_overrides(load_arch("kv260"), {"schedule.overlap": "pipelined", "schedule.attention": "fused",
                                               "schedule.attention_rows": 8, "schedule.handoffs": "dram",
                                               "schedule.vector_chain": "fused"})
    c = arch.spec.compute
    out = csim_trunk(trunk, img, s, tmp_path, pe=c.pe, simd=c.simd, banks=c.banks, ports=c.ports, vector_chain="fused",
                     attention="fused", att_rows=8)
    assert np.array_equal(out.tokens, trunk.tokens(img, s))
    nb = len(trunk.blocks)
    chains = [op for op in out.ops if op.get("kind") == "chain"]
    assert [op["name"] for op in chains[:4]] == ["blocks.0.norm1.chain", "blocks.0.add1.chain", "blocks.0.gelu.chain",
                                                 "blocks.0.add2.chain"]
    assert len(chains) == 1 + 3 * nb - 1
    assert chains[1]["steps"] == ["add", "layernorm", "topk"] and chains[2]["steps"] == ["gelu", "topk"]
    vec = [op["name"] for op in out.ops if op["unit"] == "vector" and op.get("kind") != "chain"]
    assert [n for n in vec if not n.endswith("proj.topk")] == [f"blocks.{nb - 1}.add2"]
    assert out.unit_cycles() == sim_unit_cycles(out, trunk, arch)
    with pytest.raises(Exception, match="vector_chain"):
        csim_trunk(trunk, img, s, tmp_path, vector_chain="maybe")
