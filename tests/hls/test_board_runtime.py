"""The board runtime (tatvpr_pynq.runtime): numpy heads against PyTorch, the bundle export, a whole
query image -> place on the numpy units, the C-simulated HLS units and a stand-in PYNQ overlay,
and that it runs with numpy alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from tatvpr_hw.lower.hls.paths import driver_package, hls_dir

driver_package()
from tatvpr_pynq import heads as nh  # noqa: E402
from tatvpr_pynq import runtime as rt  # noqa: E402

SPARSITY = 0.4


# ------------------------------------------------------------------ heads: numpy == PyTorch
@pytest.mark.parametrize("num_heads", [1, 2])
def test_numpy_boq_equals_pytorch_boq(num_heads):
    import torch

    from brevitas_models.heads.boq import BoQHead
    from tatvpr_hw.lower.hls.bundle import export_head

    torch.manual_seed(num_heads)
    head = BoQHead(in_dim=24, proj_channels=16, num_queries=5, num_layers=2, row_dim=3, num_heads=num_heads).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines (default 1/0 would hide a swapped weight/bias)
        for m in head.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    grid = (3, 4)
    model = SimpleNamespace(head=head, backbone=SimpleNamespace(num_prefix_tokens=1))
    p = export_head(model, grid)
    tokens = torch.randn(2, 1 + 12, 24, dtype=torch.float64)
    with torch.no_grad():
        ref = head.double()(tokens, grid, 1).numpy()
    got = np.stack([nh.head_descriptor(t, p) for t in tokens.numpy()])
    assert got.shape == (2, 16 * 3)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_numpy_cls_head_is_the_normalised_class_token():
    p = {"kind": np.array("cls"), "num_prefix_tokens": np.array(1), "grid_hw": np.array([1, 2])}
    tok = np.array([[3.0, 4.0], [9.0, 9.0], [1.0, 1.0]])
    assert nh.head_descriptor(tok, p).tolist() == [0.6, 0.8]  # 3-4-5 triangle


def test_head_file_round_trip_and_refusals(tmp_path):
    p = {"kind": np.array("cls"), "num_prefix_tokens": np.array(1), "grid_hw": np.array([1, 1])}
    nh.save_head(tmp_path / "h.npz", p)
    assert str(nh.load_head(tmp_path / "h.npz")["kind"]) == "cls"
    nh.save_head(tmp_path / "s.npz", {**p, "kind": np.array("gem")})
    with pytest.raises(nh.HeadError, match="'gem' is not implemented"):
        nh.load_head(tmp_path / "s.npz")
    with pytest.raises(nh.HeadError, match=r"must be \[1 \+ 1\*1, D\]"):
        nh.head_descriptor(np.zeros((3, 2)), p)


# ------------------------------------------------------------------ preprocessing, search
def test_preprocess_equals_the_evaluation_transform():
    from PIL import Image

    from tatvpr_hw.data.transforms import preprocess as eval_preprocess

    img = np.random.default_rng(0).integers(0, 256, size=(61, 75, 3), dtype=np.uint8)
    ref = eval_preprocess(Image.fromarray(img, "RGB"), 28).numpy()
    got = rt.preprocess(img, 28)
    assert got.shape == (3, 28, 28) and got.dtype == np.float32
    assert np.array_equal(got, ref)
    with pytest.raises(rt.RuntimeInputError, match="uint8"):
        rt.preprocess(np.zeros((4, 4)), 28)
    with pytest.raises(rt.RuntimeInputError, match=r"\[3, 28, 28\]"):
        rt.preprocess(np.zeros((3, 14, 14), np.float32), 28)


@pytest.mark.parametrize("engine", ["numpy", "faiss if installed"])
def test_top_n_order_by_hand(monkeypatch, engine):
    if engine == "numpy":
        monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError: the argpartition path
    db = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    q = np.array([[0.8, 0.6]])
    # inner products: 0.8, 0.6, 0.96, -0.8 -> order 2, 0, 1
    idx, sc = rt.top_n(db, q, 3)
    assert idx.tolist() == [[2, 0, 1]]
    assert np.allclose(sc, [[0.96, 0.8, 0.6]])


# ------------------------------------------------------------------ the tiny student, end to end
@pytest.fixture(scope="module")
def bundle(tmp_path_factory, student_and_images):
    from tatvpr_hw.lower.hls.bundle import export_bundle

    student, calib = student_and_images
    out = tmp_path_factory.mktemp("bundle")
    export_bundle(student, calib, out, sparsity=SPARSITY)
    rng = np.random.default_rng(5)
    # synthetic "places": smooth colour fields of different sizes (resized by the runtime)
    places = []
    for i in range(4):
        yy, xx = np.mgrid[0:110 + 7 * i, 0:120]
        f = np.stack([np.sin(xx / (9 + 3 * i) + c) * np.cos(yy / (13 - 2 * i) + 2 * c) for c in range(3)], -1)
        places.append(np.clip(127.5 + 110 * f + rng.normal(0, 4, f.shape), 0, 255).astype(np.uint8))
    return SimpleNamespace(dir=out, student=student, places=places)


def _noisy(img, seed):
    n = np.random.default_rng(seed).normal(0, 6, img.shape)
    return np.clip(img + n, 0, 255).astype(np.uint8)


def test_bundle_files_load_without_pickle(bundle):
    meta = json.loads((bundle.dir / "meta.json").read_text())
    assert meta["img_size"] == 98 and meta["sparsity"] == SPARSITY and meta["head"] == "boq"
    assert meta["head_integer"] is True
    for f in ("trunk.npz", "head.npz", "head_q.npz"):
        with np.load(bundle.dir / f, allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)


def test_numpy_runtime_runs_the_integer_query_and_finds_places(bundle):
    import torch

    from tatvpr_hw.data.transforms import preprocess as eval_preprocess
    from tatvpr_hw.integer import integer_descriptors, integer_query_descriptors

    from PIL import Image

    rec = rt.PlaceRecognizer(bundle.dir)
    assert rec.head_q is not None and rec.head_q.kind == "boq"
    db = rec.build_database(bundle.places)
    assert db.shape == (4, bundle.student.descriptor_dim)
    # the evaluation transform and the integer query of tatvpr eval --integer: the same bits
    imgs = torch.stack([eval_preprocess(Image.fromarray(p, "RGB"), 98) for p in bundle.places])
    assert np.array_equal(db.astype(np.float32), integer_query_descriptors(rec.trunk, rec.head_q, imgs, SPARSITY))
    assert rec.describe_q(bundle.places[0]).dtype == np.int16
    # and next to the integer trunk + PyTorch head (the float head path)
    ref = integer_descriptors(bundle.student, rec.trunk, imgs, SPARSITY)
    assert (db * ref).sum(1).min() > 0.99, (db * ref).sum(1)
    for i, place in enumerate(bundle.places):
        idx, scores = rec.query(_noisy(place, 10 + i), 2)
        assert idx[0] == i and scores[0] >= scores[1]
    path = rec.save_database()
    again = rt.PlaceRecognizer(bundle.dir)
    assert np.array_equal(again.database, db) and path.name == "database.npy"


def test_csim_units_give_bit_identical_descriptors_and_the_same_place(bundle, tmp_path):
    from sim.arch import load_arch
    from tatvpr_hw.lower.hls.query_csim import csim_units

    arch = load_arch("kv260")
    c = arch.spec.compute
    rec_np = rt.PlaceRecognizer(bundle.dir)
    db = rec_np.build_database(bundle.places)
    trunk = rec_np.trunk
    widest = max([trunk.pos.shape[1]] + [b.fc1.codes.shape[0] for b in trunk.blocks])
    units = csim_units(tmp_path, pe=c.pe, simd=c.simd, banks=c.banks, ports=c.ports, fmt="ternary2",
                       lanes=arch.spec.vector_unit.lanes, rows=arch.spec.int8_unit.rows,
                       cols=arch.spec.int8_unit.cols, kmax=-(-widest // c.simd) * c.simd,
                       mmax=trunk.prefix.shape[0] + trunk.pos.shape[0])
    rec_cs = rt.PlaceRecognizer(bundle.dir, units=units)
    rec_cs.database = db
    query = _noisy(bundle.places[2], 99)
    d_cs = rec_cs.describe(query)
    assert np.array_equal(d_cs, rec_np.describe(query))
    kinds = {op["unit"] for op in units.ops}
    assert kinds == {"ternary", "int8", "vector"}, kinds
    head_units = {op["unit"] for op in units.ops if op["name"].startswith("head.") and op["csim"]}
    assert head_units == {"int8", "vector"}  # the head ran on the C-simulated units too
    assert rec_cs.query(query, 1)[0][0] == rec_np.query(query, 1)[0][0] == 2


def test_pynq_units_run_every_ternary_linear_on_the_overlay(bundle):
    calls = []

    class FakeOverlay:  # stands in for TernaryGemmOverlay.run_layer: the int8 x ternary IP contract
        def run_layer(self, x, w, bias, mult, shift):
            calls.append((x.shape, w.shape))
            acc = x.astype(np.int64) @ w.astype(np.int64).T + (0 if bias is None else bias)
            return np.clip((acc * mult + (1 << (shift - 1))) >> shift, -128, 127).astype(np.int8)

    rec_np = rt.PlaceRecognizer(bundle.dir)
    units = rt.PynqUnits(FakeOverlay())
    rec_hw = rt.PlaceRecognizer(bundle.dir, units=units)
    img = bundle.places[1]
    assert np.array_equal(rec_hw.describe(img), rec_np.describe(img))
    assert units.fabric_ops == len(calls) == 4 * len(rec_np.trunk.blocks)
    d = rec_np.trunk.pos.shape[1]
    assert calls[0][1] == (3 * d, d)  # first call: blocks.0 qkv
    # a pipelined design point: the runtime lets the units issue the trunk tile by tile, same integers
    ov = FakeOverlay()
    ov.design_point = {"overlap": "pipelined", "tile_tokens": 8}
    units = rt.PynqUnits(ov)
    rec_pipe = rt.PlaceRecognizer(bundle.dir, units=units)
    assert np.array_equal(rec_pipe.describe(img), rec_np.describe(img))
    assert units.last_issue is not None and units.fabric_ops > 4 * len(rec_np.trunk.blocks)  # one call per tile


def test_runtime_refuses_bad_bundles_and_queries(bundle, tmp_path):
    with pytest.raises(rt.RuntimeInputError, match="missing trunk.npz, head.npz, meta.json"):
        rt.PlaceRecognizer(tmp_path)
    rec = rt.PlaceRecognizer(bundle.dir)
    rec.database = None
    with pytest.raises(rt.RuntimeInputError, match="no database.npy"):
        rec.query(bundle.places[0])
    for f in ("trunk.npz", "head.npz"):
        (tmp_path / f).write_bytes((bundle.dir / f).read_bytes())
    (tmp_path / "meta.json").write_text(json.dumps({"img_size": 98}))
    with pytest.raises(rt.RuntimeInputError, match="lacks sparsity, final_norm, descriptor_dim"):
        rt.PlaceRecognizer(tmp_path)
    meta = json.loads((bundle.dir / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(rt.RuntimeInputError, match="says the head is integer, head_q.npz is missing"):
        rt.PlaceRecognizer(tmp_path)
    (tmp_path / "head_q.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(rt.RuntimeInputError, match="not an integer-head file"):
        rt.PlaceRecognizer(tmp_path)


def test_runtime_runs_with_numpy_alone(bundle):
    rec = rt.PlaceRecognizer(bundle.dir)
    img = bundle.places[3][:98, :98]  # the model's side: no resize needed
    np.save(bundle.dir / "q.npy", img)
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'sim', 'tatvpr_hw', 'brevitas_models', 'brevitas', 'timm', 'PIL'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(hls_dir() / 'driver')!r})
        import numpy as np
        from tatvpr_pynq.runtime import PlaceRecognizer
        rec = PlaceRecognizer({str(bundle.dir)!r})
        np.save({str(bundle.dir / 'd.npy')!r}, rec.describe(np.load({str(bundle.dir / 'q.npy')!r})))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert np.array_equal(np.load(bundle.dir / "d.npy"), rec.describe(img))


def test_numpy_mixvpr_equals_pytorch_mixvpr():
    import torch

    from brevitas_models.heads.mixvpr import MixVPRHead
    from tatvpr_hw.lower.hls.bundle import export_head

    torch.manual_seed(3)
    grid = (3, 4)
    head = MixVPRHead(in_dim=24, grid_hw=grid, out_channels=10, mix_depth=2, mlp_ratio=1.5, out_rows=3).eval()
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    p = export_head(SimpleNamespace(head=head, backbone=SimpleNamespace(num_prefix_tokens=1)), grid)
    tokens = torch.randn(2, 1 + 12, 24, dtype=torch.float64)
    with torch.no_grad():
        ref = head.double()(tokens, grid, 1).numpy()
    got = np.stack([nh.head_descriptor(t, p) for t in tokens.numpy()])
    assert got.shape == (2, 30)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("grid", [(3, 4), (2, 2)])  # 12 tokens > 8 clusters; 4 = 4 clusters (empty dustbin)
def test_numpy_salad_equals_pytorch_salad(grid):
    import torch

    from brevitas_models.heads.salad import SALADHead
    from tatvpr_hw.lower.hls.bundle import export_head

    torch.manual_seed(4)
    m = 8 if grid == (3, 4) else 4
    head = SALADHead(in_dim=24, num_clusters=m, cluster_dim=5, token_dim=7, hidden_dim=16, dropout=0.2,
                     sinkhorn_iters=3).eval()
    p = export_head(SimpleNamespace(head=head, backbone=SimpleNamespace(num_prefix_tokens=1)), grid)
    n = grid[0] * grid[1]
    tokens = torch.randn(2, 1 + n, 24, dtype=torch.float64)
    with torch.no_grad():
        ref = head.double()(tokens, grid, 1).numpy()
    got = np.stack([nh.head_descriptor(t, p) for t in tokens.numpy()])
    assert got.shape == (2, m * 5 + 7)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_export_refuses_a_ternary_head():
    from brevitas_models.heads.boq import BoQHead
    from tatvpr_hw.lower.hls.bundle import export_head
    from tatvpr_hw.errors import UserError

    head = BoQHead(in_dim=8, proj_channels=8, num_queries=2, num_layers=1, row_dim=2)
    head.fc.ternary_weight = lambda: None  # what a Brevitas ternary layer (model.ternary.head: true) has
    with pytest.raises(UserError, match="head.fc is ternary"):
        export_head(SimpleNamespace(head=head, backbone=SimpleNamespace(num_prefix_tokens=1)), (1, 1))


def test_salad_bundle_runs_its_mlps_in_integers_and_sinkhorn_on_the_host(tmp_path):
    """A SALAD student's bundle: head_q.npz with the MLPs in integers; the runtime's descriptor is the
    integer query's (`eval --integer`), its Sinkhorn part recorded as host work, near the float student."""
    import torch

    from brevitas_models.checkpoint import init_student_from_teacher
    from brevitas_models.model import build_model
    from brevitas_models.quant import calibrate_input_scales
    from tatvpr_hw.config import load_config
    from tatvpr_hw.integer import integer_query_descriptors
    from tatvpr_hw.lower.hls.bundle import export_bundle
    from tatvpr_pynq.integer import RecordingUnits

    cfg = load_config(hls_dir().parent / "configs" / "tiny.yaml")
    cfg.model.head.name = "salad"
    torch.manual_seed(2)
    student = build_model(cfg.model, student=True)
    init_student_from_teacher(student, build_model(cfg.model, student=False))
    student.eval()
    calib = torch.randn(4, 3, 98, 98, generator=torch.Generator().manual_seed(1))
    calibrate_input_scales(student, [calib])
    export_bundle(student, calib, tmp_path, sparsity=SPARSITY)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["head"] == "salad" and meta["head_integer"] is True
    units = RecordingUnits()
    rec = rt.PlaceRecognizer(tmp_path, units=units)
    img = calib[0].numpy()
    d = rec.describe(img)
    assert np.array_equal(d.astype(np.float32), integer_query_descriptors(rec.trunk, rec.head_q, calib[:1], SPARSITY)[0])
    head_ops = [op for op in units.ops if op["name"].startswith("head.")]
    assert [op["unit"] for op in head_ops].count("int8") == 6 and head_ops[-1]["unit"] == "host"
    with torch.no_grad():
        from brevitas_models.sparsity import sparsity_context

        with sparsity_context(student, SPARSITY):
            ref = torch.nn.functional.normalize(student(calib[:1]), dim=-1)[0].numpy()
    assert float(d @ ref) > 0.99
