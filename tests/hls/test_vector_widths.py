"""The vector unit's operand widths (hls/include/tatvpr_vector.h TATVPR_VW_*, docs/hls.md "Operand widths of
the vector unit"): the HLS kernel holds each per-element operand in the RTL lane's width, and

- at the extremes of every narrowed operand the C build stays bit-exact with the integer model
  (tatvpr_pynq.integer) and with values worked out by hand, in both builds: ap_int / ap_uint (the
  hls4ml-bundled headers, as the C simulation and Vitis HLS) and the plain-C wrap (no headers);
- narrowing any one width by a bit (by -D) breaks that case: the extremes need every bit;
- the export refuses a checkpoint whose LayerNorm gain (or another checkpoint-derived operand) does not
  fit, with one message naming the layer, the value and the range; ``tatvpr eval --integer`` exits 2.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import subprocess

import numpy as np
import pytest

from tatvpr_hw.lower.hls.csim import compiler
from tatvpr_hw.lower.hls.paths import ap_types_dir, driver_package, hls_dir

driver_package()
from tatvpr_pynq import integer as iq  # noqa: E402
from tatvpr_pynq.formats import requantize  # noqa: E402

# extern "C" entry points of the kernels (their C++ names are mangled)
SHIM = r"""
#include "tatvpr_vector.h"
#ifdef TATVPR_COUNT_CYCLES
#error "not counted here"
#endif
extern "C" {
void w_layernorm(const int16_t *x, int8_t *y, int t, int d, const int64_t *g, const int64_t *b, long long eps) {
    tatvpr_layernorm(x, y, t, d, g, b, eps);
}
void w_softmax(const int32_t *s, const int32_t *rmax, uint8_t *p, int rows, int n, long long mult, int shift) {
    tatvpr_softmax(s, rmax, p, rows, n, mult, shift);
}
void w_add(const int16_t *x, const int8_t *y, int16_t *out, int t, int d, const int32_t *m, const int32_t *s) {
    tatvpr_residual_add(x, y, out, t, d, m, s);
}
void w_requant(const int16_t *x, int8_t *y, int n, long long mult, int shift) { tatvpr_requant(x, y, n, mult, shift); }
void w_l2norm(const int16_t *x, int16_t *y, int n) { tatvpr_l2norm(x, y, n); }
int w_ap() { return TATVPR_VECTOR_AP; }
}
"""

# (macro, default width, the case that needs every bit of it, planted width)
WIDTHS = {"DV": 17, "INV": 48, "N": 34, "GAIN": 24, "BIAS": 48, "Z": 33, "MULT": 31, "E": 16, "RECIP": 18,
          "SHIFT": 6}


def build(tmp_path_factory, *, ap: bool, defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    d = tmp_path_factory.mktemp("vw")
    (d / "shim.cpp").write_text(SHIM)
    root = hls_dir()
    cmd = [compiler(), "-O1", "-std=c++14", "-shared", "-fPIC", "-Wno-unknown-pragmas", "-Wno-unused-label",
           f"-DTATVPR_VECTOR_AP={int(ap)}", *defines, f"-I{root / 'include'}"]
    if ap:
        cmd.append(f"-I{ap_types_dir()}")
    cmd += [str(d / "shim.cpp"), str(root / "src" / "tatvpr_vector.cpp"), "-o", str(d / "lib.so")]
    subprocess.run(cmd, check=True, capture_output=True)
    lib = ctypes.CDLL(str(d / "lib.so"))
    assert lib.w_ap() == int(ap)
    for name in ("w_layernorm", "w_softmax", "w_add", "w_requant", "w_l2norm"):
        getattr(lib, name).restype = None
    return lib


def _p(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def layernorm(lib, x, gain, bias, eps=0):
    x = np.ascontiguousarray(x, np.int16)
    t, d = x.shape
    y = np.zeros((t, d), np.int8)
    g, b = np.ascontiguousarray(gain, np.int64), np.ascontiguousarray(bias, np.int64)
    lib.w_layernorm(_p(x), _p(y), t, d, _p(g), _p(b), ctypes.c_longlong(eps))
    return y


def softmax(lib, s, mult, shift):
    s = np.ascontiguousarray(s, np.int32)
    rows, n = s.shape
    rmax = np.ascontiguousarray(s.max(1), np.int32)
    p = np.zeros((rows, n), np.uint8)
    lib.w_softmax(_p(s), _p(rmax), _p(p), rows, n, ctypes.c_longlong(mult), shift)
    return p


def add(lib, x, y, mult, shift):
    x, y = np.ascontiguousarray(x, np.int16), np.ascontiguousarray(y, np.int8)
    t, d = x.shape
    m, s = np.ascontiguousarray(mult, np.int32), np.ascontiguousarray(shift, np.int32)
    out = np.zeros((t, d), np.int16)
    lib.w_add(_p(x), _p(y), _p(out), t, d, _p(m), _p(s))
    return out


def requant(lib, x, mult, shift):
    x = np.ascontiguousarray(x, np.int16)
    y = np.zeros(x.size, np.int8)
    lib.w_requant(_p(x), _p(y), x.size, ctypes.c_longlong(mult), shift)
    return y


def l2norm(lib, x):
    x = np.ascontiguousarray(x, np.int16)
    y = np.zeros(x.size, np.int16)
    lib.w_l2norm(_p(x), _p(y), x.size)
    return y


G_MAX, G_MIN = 2 ** 23 - 1, -2 ** 23          # 24-bit signed gain
B_MAX, B_MIN = 2 ** 47 - 1, -2 ** 47          # 48-bit signed bias
M_MAX = 2 ** 31 - 1                            # 31-bit unsigned multiplier


def case_dv(lib):
    """|x - mu| = 65520 (17 bits signed): one 32767 in a row of 4095 x -32768 (mu = -32753)."""
    x = np.full((1, 4096), -32768, np.int16)
    x[0, 7] = 32767
    ln = iq.LayerNormQ(np.full(4096, 1024, np.int64), np.zeros(4096, np.int64), 0)
    return layernorm(lib, x, ln.gain, ln.bias), ln(x)


def case_inv(lib):
    """inv = 2^47 (48 bits unsigned): row [0, 0, 0, 1], eps 0 -> var 0, sd 1; n = 2^24 on channel 3,
    (2^24 * 1024 + 2^25) >> 26 = 256 -> 127 by hand; the zeros: (0 + 2^25) >> 26 = 0."""
    x = np.array([[0, 0, 0, 1]], np.int16)
    ln = iq.LayerNormQ(np.full(4, 1024, np.int64), np.zeros(4, np.int64), 0)
    y = layernorm(lib, x, ln.gain, ln.bias)
    assert ln(x).tolist() == [[0, 0, 0, 127]]
    return y, ln(x)


def case_n(lib):
    """n = 255 * 2^24 (needs 33 bits signed; the port is 34): 255 in a row of 65534 zeros has ssd =
    65025 < d, so var = 0, sd = 1, inv = 2^47; with gain 1: (255 * 2^24 + 2^25) >> 26 = 64 by hand."""
    d = 65535
    x = np.zeros((1, d), np.int16)
    x[0, 100] = 255
    ln = iq.LayerNormQ(np.ones(d, np.int64), np.zeros(d, np.int64), 0)
    want = ln(x)
    assert want[0, 100] == 64 and not want[0, :100].any()
    return layernorm(lib, x, ln.gain, ln.bias), want


def case_gain_bias(lib):
    """gain at 2^23 - 1 and -2^23, bias at 2^47 - 1 and -2^47 on row [0, 0, 0, 1] (n = 0, 0, 0, 2^24):
    by hand ch0 (2^47 - 1 + 2^25) >> 26 -> 127, ch1 (-2^47 + 2^25) >> 26 -> -128, ch2 0,
    ch3 (2^24 (2^23 - 1) + 2^25) >> 26 -> 127; then gain -2^23 on ch3: -2^21 -> -128."""
    x = np.array([[0, 0, 0, 1]], np.int16)
    outs, wants = [], []
    for g3, want_hand in ((G_MAX, [127, -128, 0, 127]), (G_MIN, [127, -128, 0, -128])):
        ln = iq.LayerNormQ(np.array([0, 0, 0, g3], np.int64), np.array([B_MAX, B_MIN, 0, 0], np.int64), 0)
        assert ln(x).tolist() == [want_hand]
        outs.append(layernorm(lib, x, ln.gain, ln.bias))
        wants.append(ln(x))
    return np.concatenate(outs), np.concatenate(wants)


def case_softmax(lib):
    """z = 2^32 - 1 (33 bits signed), e = 2^15 (16 bits unsigned): scores [2^31 - 1, -2^31], mult 1, shift 24:
    u = (2^32 - 1 + 2^23) >> 24 = 256 -> e = 2^15 >> 1; plus mult 2^31 - 1 (31 bits) at shift 31 on
    scores [0, -1]: u = 1 -> e = T[1]; and a row of one score: sum 2^15, recip 2^17 (18 bits) -> 255."""
    rows = [(np.array([[2 ** 31 - 1, -2 ** 31]]), 1, 24), (np.array([[0, -1]]), M_MAX, 31),
            (np.array([[5]]), M_MAX, 31)]
    outs, wants = [], []
    for s, m, sh in rows:
        outs.append(softmax(lib, s, m, sh).ravel())
        wants.append(iq.softmax_int(s, m, sh).ravel())
    assert wants[2].tolist() == [255]
    # by hand: e = [32768, 16384], recip = 2^32 // 49152 = 87381, p = (e * 255 * 87381 + 2^31) >> 32
    assert wants[0].tolist() == [(e * 255 * 87381 + 2 ** 31) >> 32 for e in (32768, 16384)] == [170, 85]
    return np.concatenate(outs), np.concatenate(wants)


def case_requant(lib):
    """mult 2^31 - 1 (31 bits), shift 31: x = 1 -> (2^31 - 1 + 2^30) >> 31 = 1; shift 62 (6 bits): 0."""
    x = np.array([1, -1, 3, 32767, -32768], np.int16)
    a, b = requant(lib, x, M_MAX, 31), requant(lib, x, M_MAX, 62)
    assert requantize(x, M_MAX, 31).tolist() == [1, -1, 3, 127, -128]
    assert requantize(x, M_MAX, 62).tolist() == [0, 0, 0, 0, 0]
    return np.concatenate([a, b]), np.concatenate([requantize(x, M_MAX, 31), requantize(x, M_MAX, 62)])


def case_add(lib):
    """The residual add at shift 62 (6 bits: by hand 127 * (2^31 - 1) >> 62 = 0) and 1, mult int32 extremes."""
    x = np.array([[100, -100, 32767, -32768]], np.int16)
    y = np.array([[127, -128, 127, -128]], np.int8)
    m = np.array([M_MAX, -2 ** 31, 1, 1], np.int32)
    s = np.array([62, 31, 1, 1], np.int32)
    want = iq.NUMPY_UNITS.add("add", x, y, m, s)
    assert want.tolist() == [[100, -100 + 128, 32767, -32768]]
    return add(lib, x, y, m, s), want


def case_l2(lib):
    """The L2 norm's inv at its largest, 2^47 // 256 = 2^39 (x = [1]): (2^39 + 2^23) >> 24 -> 32767."""
    outs, wants = [], []
    for x in (np.array([1], np.int16), np.array([0, -1, 0], np.int16), np.full(300, -32768, np.int16)):
        outs.append(l2norm(lib, x))
        wants.append(iq.l2norm_int(x))
    assert wants[0].tolist() == [32767] and wants[1].tolist() == [0, -32768, 0]
    return np.concatenate(outs), np.concatenate(wants)


CASES = {"DV": case_dv, "INV": case_inv, "N": case_n, "GAIN": case_gain_bias, "BIAS": case_gain_bias,
         "Z": case_softmax, "MULT": case_softmax, "E": case_softmax, "RECIP": case_softmax, "SHIFT": case_add}
ALL_CASES = (case_dv, case_inv, case_n, case_gain_bias, case_softmax, case_requant, case_add, case_l2)


@pytest.fixture(scope="module", params=[True, False], ids=["ap_types", "plain_c"])
def lib(request, tmp_path_factory):
    return build(tmp_path_factory, ap=request.param)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.__name__)
def test_extremes_bit_exact(lib, case):
    got, want = case(lib)
    np.testing.assert_array_equal(got, want)


def test_random_rows_at_full_operand_ranges(lib):
    """Random int16 rows, gains over the whole 24-bit and biases over the whole 48-bit signed range."""
    rng = np.random.default_rng(7)
    for d, spread in ((48, 32767), (384, 300), (7, 3)):
        x = rng.integers(-spread - 1, spread + 1, size=(5, d)).astype(np.int16)
        ln = iq.LayerNormQ(rng.integers(G_MIN, G_MAX + 1, size=d), rng.integers(B_MIN, B_MAX + 1, size=d),
                           int(rng.integers(0, 50)))
        np.testing.assert_array_equal(layernorm(lib, x, ln.gain, ln.bias, ln.eps_q), ln(x))
        s = rng.integers(-2 ** 31, 2 ** 31, size=(3, d)).astype(np.int32)
        for m, sh in ((int(rng.integers(0, 2 ** 31)), 40), (1, 24), (M_MAX, 62)):
            np.testing.assert_array_equal(softmax(lib, s, m, sh), iq.softmax_int(s, m, sh))


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_one_bit_narrower_breaks_the_extreme_case(name, tmp_path_factory):
    """Planted bug: TATVPR_VW_<name> one bit narrower (N: two; its values need 33 of the port's 34 bits)
    and the extreme case is no longer the integer model's."""
    narrower = WIDTHS[name] - (2 if name == "N" else 1)
    lib = build(tmp_path_factory, ap=(name == "DV"), defines=(f"-DTATVPR_VW_{name}={narrower}",))  # DV: ap types
    got, want = CASES[name](lib)
    assert not np.array_equal(got, want), name


# ------------------------------------------------------------------ the export's range contract
# (student_and_images: tests/hls/conftest.py, the demo's tiny student from the shipped teacher)
def test_checkpoint_within_range_exports_and_passes_the_check(student_and_images):
    from tatvpr_hw.integer import LN_GAIN_BITS, check_vector_operands, export_trunk

    student, images = student_and_images
    trunk = export_trunk(student, images, sparsity=0.0)
    check_vector_operands(trunk=trunk)
    gains = np.concatenate([np.abs(b.ln1.gain) for b in trunk.blocks] + [np.abs(b.ln2.gain) for b in trunk.blocks])
    assert 0 < gains.max() < 2 ** (LN_GAIN_BITS - 1)


def test_out_of_range_gain_is_refused_naming_layer_value_and_range(student_and_images):
    import torch

    from tatvpr_hw.errors import UserError
    from tatvpr_hw.integer import export_trunk

    student, images = student_and_images
    w = student.backbone.blocks[1].norm2.weight
    saved = w.detach().clone()
    s_out = float(student.backbone.blocks[1].mlp.fc1.input_scale())
    # gain = round(gamma / s_out * 2^10): the smallest gamma whose gain is 2^23 (one past the 24-bit range)
    gamma = (2 ** 23 + 0.25) * s_out / 2 ** 10
    try:
        with torch.no_grad():
            w[5] = gamma
        with pytest.raises(UserError) as err:
            export_trunk(student, images, sparsity=0.0)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    msg = str(err.value)
    assert "blocks.1.norm2" in msg and "gain[5] = 8388608" in msg and "[-8388608, 8388607]" in msg


def test_out_of_range_operands_of_a_head_and_trunk_are_refused():
    """Hand-built models: each checkpoint-derived operand just outside its range is named."""
    from tatvpr_hw.errors import UserError
    from tatvpr_hw.integer import check_vector_operands

    ln_ok = iq.LayerNormQ(np.array([G_MAX, G_MIN]), np.array([B_MAX, B_MIN]), 5)
    check_vector_operands(head=iq.HeadQ({"head.n.gain": ln_ok.gain, "head.n.bias": ln_ok.bias,
                                         "head.n.eps": np.array(5), "head.input.ms": np.array([M_MAX, 62]),
                                         "head.a.mult": np.array([-2 ** 31, M_MAX]),
                                         "head.a.shift": np.array([1, 62])}))
    bad = [({"head.n.gain": np.array([0, G_MIN - 1]), "head.n.bias": np.zeros(2, np.int64),
             "head.n.eps": np.array(0)}, "head.n: LayerNorm gain[1] = -8388609"),
           ({"head.n.gain": np.zeros(2, np.int64), "head.n.bias": np.array([B_MAX + 1, 0]),
             "head.n.eps": np.array(0)}, "head.n: LayerNorm bias[0] = 140737488355328"),
           ({"head.input.ms": np.array([2 ** 31, 31])}, "head.input: multiplier = 2147483648"),
           ({"head.e.softmax.ms": np.array([5, 63])}, "head.e.softmax: shift = 63"),
           ({"head.a.mult": np.array([0, 2 ** 31]), "head.a.shift": np.array([1, 1])},
            "head.a: multiplier[1] = 2147483648")]
    for p, text in bad:
        with pytest.raises(UserError, match=text.replace("[", r"\[").replace("]", r"\]")):
            check_vector_operands(head=iq.HeadQ(p))


def test_eval_integer_exits_2_on_an_out_of_range_checkpoint(tmp_path, capsys):
    """`tatvpr eval --integer` on a student checkpoint whose norm1 gain cannot fit: exit 2, one error line
    naming the layer, no traceback."""
    import torch
    import yaml

    from brevitas_models.checkpoint import init_student_from_teacher, save_checkpoint
    from brevitas_models.model import build_model
    from tatvpr_hw.cli import main
    from tatvpr_hw.config import config_to_dict, parse_config
    from tatvpr_hw.data.synthetic import ensure_benchmark

    cfg = parse_config({
        "name": "vwidths", "seed": 0,
        "model": {"backbone": "vit_tiny_patch14_dinov2", "teacher_img_size": 28, "student_img_size": 28,
                  "head": {"name": "cls", "preset": "tiny"}},
        "data": {"root": str(tmp_path / "syn"),
                 "synthetic": {"places": 2, "train_images_per_place": 2, "eval_places": 4, "image_px": 32,
                               "difficulty": 0.3}},
        "train": {"out_dir": str(tmp_path / "runs")},
        "eval": {"sparsities": [0.0], "batch_size": 8}})
    ensure_benchmark(cfg)
    torch.manual_seed(0)
    teacher = build_model(cfg.model, student=False)
    student = build_model(cfg.model, student=True)
    init_student_from_teacher(student, teacher)
    with torch.no_grad():
        student.backbone.blocks[0].norm1.weight[3] = 1e6  # gain ~ 1e6 / s_out * 2^10: far past 2^23
    meta = {"config": config_to_dict(cfg), "role": "teacher", "stage": "teacher", "step": 0, "seed": 0, "rng": {},
            "teacher_checkpoint": None}
    save_checkpoint(tmp_path / "ck" / "teacher", teacher, meta)
    save_checkpoint(tmp_path / "ck" / "distill", student, meta | {"role": "student", "stage": "distill"})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["eval", "--config", str(tmp_path / "cfg.yaml"), "--checkpoint", str(tmp_path / "ck" / "distill"),
                   "--out", str(tmp_path / "run"), "--sparsity", "0", "--integer", "0"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "blocks.0.norm1: LayerNorm gain[3]" in lines[0] and "24-bit signed" in lines[0]


# ------------------------------------------------------------------ the fused attention's softmax-only lanes
# (hls/src/tatvpr_attention.cpp: the same TATVPR_VW_* widths on the lane's own two multipliers,
# tatvpr_att_mul1 z x mult 33 x 31, tatvpr_att_mul2 e x recip 16 x 18; docs/hls.md)
ATT_SHIM = r"""
#include "tatvpr_attention.h"
extern "C" {
int w_attention(const int8_t *qkv, int8_t *out, int heads, int t, int dh, long long sm_mult, int sm_shift,
                long long av_mult, int av_shift) {
    return tatvpr_attention(qkv, out, heads, t, dh, sm_mult, sm_shift, av_mult, av_shift);
}
int w_ap() { return TATVPR_VECTOR_AP; }
}
"""
ATT_LANES = 3  # softmax-only lanes of the build (not dividing the rows: partial lane groups)


def build_attention(tmp_path_factory, *, ap: bool, defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    d = tmp_path_factory.mktemp("vwatt")
    (d / "shim.cpp").write_text(ATT_SHIM)
    root = hls_dir()
    cmd = [compiler(), "-O1", "-std=c++14", "-shared", "-fPIC", "-Wno-unknown-pragmas", "-Wno-unused-label",
           f"-DTATVPR_VECTOR_AP={int(ap)}", f"-DTATVPR_ATT_LANES={ATT_LANES}", *defines, f"-I{root / 'include'}"]
    if ap:
        cmd.append(f"-I{ap_types_dir()}")
    cmd += [str(d / "shim.cpp"), str(root / "src" / "tatvpr_attention.cpp"), "-o", str(d / "lib.so")]
    subprocess.run(cmd, check=True, capture_output=True)
    lib = ctypes.CDLL(str(d / "lib.so"))
    assert lib.w_ap() == int(ap)
    return lib


def attention(lib, qkv, heads, sm_mult, sm_shift, av_mult=1, av_shift=1):
    qkv = np.ascontiguousarray(qkv, np.int8)
    t, d3 = qkv.shape
    out = np.zeros((t, d3 // 3), np.int8)
    rc = lib.w_attention(_p(qkv), _p(out), heads, t, d3 // (3 * heads), ctypes.c_longlong(sm_mult), sm_shift,
                         ctypes.c_longlong(av_mult), av_shift)
    assert rc == 0
    return out


def _qkv(q, k, v):
    """One head: token i's row is q[i], k[i], v[i] (the integer model's layout with heads = 1)."""
    return np.concatenate([np.asarray(q), np.asarray(k), np.asarray(v)], axis=1).astype(np.int8)


Z_ATT_MAX = 64 * (128 * 128 + 128 * 127)  # the largest score difference of int8 rows at dh = 64: 2,088,960


def _hand_p(es):
    """softmax probabilities from the e's by hand (python ints): recip = 2^32 // sum, (e 255 recip + 2^31) >> 32."""
    r = 2 ** 32 // sum(es)
    return [min(255, (e * 255 * r + 2 ** 31) >> 32) for e in es], r


def att_case_z(lib):
    """The largest score difference (dh = 64, every q = -128; key 0 all -128, key 1 all 127: scores 2^20 and
    -1,040,384, z = 2,088,960, 22 bits signed), mult 1, shift 21: u = (z + 2^20) >> 21 = 1, e = [2^15, T[1]];
    values 1 / -128, so every output = sat8((p0 - 128 p1 + 2^6) >> 7) = -126 by hand."""
    dh = 64
    q = np.full((2, dh), -128)
    k = np.stack([np.full(dh, -128), np.full(dh, 127)])
    v = np.stack([np.full(dh, 1), np.full(dh, -128)])
    qkv = _qkv(q, k, v)
    assert 2 ** 20 - (-128 * 127 * dh) == Z_ATT_MAX and Z_ATT_MAX >= 2 ** 20
    t1 = round(2 ** 15 * 2 ** (-1 / 256))
    assert ((Z_ATT_MAX + 2 ** 20) >> 21) == 1 and t1 == 32679
    (p0, p1), r = _hand_p([2 ** 15, t1])
    assert (r, p0, p1) == (65625, 128, 127)  # 2^32 // 65447
    want = iq.NUMPY_UNITS.attention("", qkv, 1, 1, 21, 1, 7)
    assert (want == (p0 - 128 * p1 + 2 ** 6) >> 7).all() and (want == -126).all()
    return attention(lib, qkv, 1, 1, 21, 1, 7), want


def att_case_recip_e(lib):
    """The same rows at mult 2^31 - 1 (31 bits), shift 31: u >= 2^21, whole = 31, so key 1's e = 0 and the row
    sum is the max's own e = 2^15 (16 bits): recip = 2^17 (18 bits), p = [255, 0]; output requant(127 x 255)."""
    dh = 64
    qkv = _qkv(np.full((2, dh), -128), np.stack([np.full(dh, -128), np.full(dh, 127)]),
               np.stack([np.full(dh, 127), np.full(dh, -128)]))
    (p0, p1), r = _hand_p([2 ** 15, 0])
    assert (p0, p1, r) == (255, 0, 2 ** 17)
    want = iq.NUMPY_UNITS.attention("", qkv, 1, M_MAX, 31, 1, 8)
    assert (want == (127 * 255 + 128) >> 8).all()  # 126.99 -> 127
    return attention(lib, qkv, 1, M_MAX, 31, 1, 8), want


def att_case_mult(lib):
    """mult 2^31 - 1 at shift 31 on z = 1 (scores 1 and 0): u = (2^31 - 1 + 2^30) >> 31 = 1, e = [2^15, T[1]];
    with a 30-bit mult it would be 2^30 - 1 and u = 0."""
    dh = 8
    q = np.zeros((2, dh), np.int64)
    q[:, 0] = 1
    k = np.zeros((2, dh), np.int64)
    k[0, 0] = 1
    v = np.stack([np.full(dh, 127), np.full(dh, -128)])
    qkv = _qkv(q, k, v)
    (p0, p1), _ = _hand_p([2 ** 15, round(2 ** 15 * 2 ** (-1 / 256))])
    want = iq.NUMPY_UNITS.attention("", qkv, 1, M_MAX, 31, 1, 1)
    assert (want == max(-128, min(127, (127 * p0 - 128 * p1 + 1) >> 1))).all()
    return attention(lib, qkv, 1, M_MAX, 31, 1, 1), want


def att_case_shift(lib):
    """shift 62 (6 bits), mult 2^31 - 1 on the largest z: u = (z (2^31 - 1) + 2^61) >> 62 = 0, so e = [2^15, 2^15]
    and p = [128, 128] by hand; output requant(128 x (127 - 128)) = requant(-128)."""
    dh = 64
    qkv = _qkv(np.full((2, dh), -128), np.stack([np.full(dh, -128), np.full(dh, 127)]),
               np.stack([np.full(dh, 127), np.full(dh, -128)]))
    assert (Z_ATT_MAX * M_MAX + 2 ** 61) >> 62 == 0
    assert _hand_p([2 ** 15, 2 ** 15])[0] == [128, 128]
    want = iq.NUMPY_UNITS.attention("", qkv, 1, M_MAX, 62, 1, 1)
    assert (want == -64).all()
    return attention(lib, qkv, 1, M_MAX, 62, 1, 1), want


ATT_CASES = (att_case_z, att_case_recip_e, att_case_mult, att_case_shift)
# width -> (planted value, the case that then breaks). Z: the fused attention's scores are int8 dot products
# (|s| <= 2^20 at dh 64), so its largest z needs 22 of the lane's 33 bits: planted at 21, not 32.
ATT_PLANTED = {"Z": (21, att_case_z), "MULT": (30, att_case_mult), "E": (15, att_case_recip_e),
               "RECIP": (17, att_case_recip_e), "SHIFT": (5, att_case_shift)}


@pytest.fixture(scope="module", params=[True, False], ids=["ap_types", "plain_c"])
def att_lib(request, tmp_path_factory):
    return build_attention(tmp_path_factory, ap=request.param)


@pytest.mark.parametrize("case", ATT_CASES, ids=lambda c: c.__name__)
def test_fused_attention_extremes_bit_exact(att_lib, case):
    got, want = case(att_lib)
    np.testing.assert_array_equal(got, want)


def test_fused_attention_random_at_full_ranges(att_lib):
    """Random int8 Q, K, V over the whole range (3 heads, 70 tokens: blocks of 32, 32 and 6 rows), softmax
    multipliers over the export's whole range (0 .. 2^31 - 1), shifts 1 .. 62."""
    rng = np.random.default_rng(15)
    heads, t, dh = 3, 70, 64
    qkv = rng.integers(-128, 128, size=(t, 3 * heads * dh)).astype(np.int8)
    for sm_mult, sm_shift in ((int(rng.integers(0, 2 ** 31)), 40), (M_MAX, 31), (1, 12), (M_MAX, 62), (0, 1)):
        got = attention(att_lib, qkv, heads, sm_mult, sm_shift, 12345, 24)
        np.testing.assert_array_equal(got, iq.NUMPY_UNITS.attention("", qkv, heads, sm_mult, sm_shift, 12345, 24))


@pytest.mark.parametrize("name", sorted(ATT_PLANTED))
def test_fused_attention_one_bit_narrower_breaks(name, tmp_path_factory):
    """Planted bug: the width one bit narrower (Z: one bit under the 22 the attention's largest z needs) and the
    extreme case is no longer the integer model's (Z, RECIP: ap types; the others: plain C)."""
    width, case = ATT_PLANTED[name]
    lib = build_attention(tmp_path_factory, ap=name in ("Z", "RECIP"), defines=(f"-DTATVPR_VW_{name}={width}",))
    got, want = case(lib)
    assert not np.array_equal(got, want), name


def test_fused_attention_z_needs_22_bits_only(tmp_path_factory):
    """The other side of the Z plant: at 22 bits the largest score difference still passes (the lane's 33 bits
    are the vector unit's int32 scores; the fused attention's scores are int8 dot products of dh <= 64)."""
    lib = build_attention(tmp_path_factory, ap=True, defines=("-DTATVPR_VW_Z=22",))
    got, want = att_case_z(lib)
    np.testing.assert_array_equal(got, want)


def test_fused_attention_row_sum_width_guard(tmp_path_factory):
    """The row sum's width is checked at compile time: TATVPR_ATT_MAX_TOKENS x 2^15 must fit
    TATVPR_ATT_VW_SUM bits (257 tokens need 24 bits: 23 is refused, 24 builds)."""
    assert 257 * 2 ** 15 >= 2 ** 23 and 257 * 2 ** 15 < 2 ** 24
    with pytest.raises(subprocess.CalledProcessError) as err:
        build_attention(tmp_path_factory, ap=False, defines=("-DTATVPR_ATT_VW_SUM=23",))
    assert b"TATVPR_ATT_VW_SUM" in err.value.stderr
    build_attention(tmp_path_factory, ap=False, defines=("-DTATVPR_ATT_VW_SUM=24",))
