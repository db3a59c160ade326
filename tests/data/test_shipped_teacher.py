"""The teacher shipped in checkpoints/ (the demo loads it instead of training one)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from brevitas_models.checkpoint import load_foreign, load_model
from brevitas_models.config import ModelConfig
from brevitas_models.model import build_model
from tatvpr_hw.config import load_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "checkpoints" / "tiny_teacher.safetensors"
CHECK_PLACES = 40


def check_numbers(model: torch.nn.Module, cfg) -> dict:
    """R@1 of ``model`` on a small evaluation split of ``cfg``'s benchmark (the first
    CHECK_PLACES places, seed and difficulty of the config) and the first 8 dimensions of
    its first 3 query descriptors. Used to record the shipped numbers and to check them."""
    from tatvpr_hw.data.synthetic import write_benchmark
    from tatvpr_hw.data.vpr import VPREvalSet
    from tatvpr_hw.evaluation import compute_descriptors, recall_at_n

    syn = cfg.data.synthetic.model_copy(update={"places": 2, "train_images_per_place": 2,
                                                "eval_places": CHECK_PLACES})
    with tempfile.TemporaryDirectory() as tmp:
        root = write_benchmark(Path(tmp) / "check", syn, syn.seed)
        ev = VPREvalSet(root / "eval", model.img_size, cfg.data.positive_radius_m)
        db = compute_descriptors(model, ev.database)[None]
        q = compute_descriptors(model, ev.queries)[None]
        r1 = recall_at_n(db, q, ev.all_positives, (1,))[1]
    return {"places": CHECK_PLACES, "r1": r1, "query_descriptors_head": [[round(float(v), 5) for v in row] for row in q[:3, :8]]}


def test_shipped_teacher_file_matches_its_recorded_sha256():
    doc = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert doc["safetensors"]["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert SHIPPED.stat().st_size == doc["safetensors"]["bytes"] < 6e6          # a few MB


def test_demo_config_starts_from_the_shipped_teacher():
    tiny = load_config(REPO / "configs" / "tiny.yaml")
    assert tiny.model.teacher_checkpoint is not None
    assert (REPO / tiny.model.teacher_checkpoint).resolve() == SHIPPED.resolve()
    # the teacher was trained for exactly the demo's model, on the demo's evaluation split.
    # The recorded model section is read the way load_model reads it (today's schema: a field
    # added after the teacher was shipped takes its default), so adding a field with a default
    # needs no edit here, while a demo value that differs from the recorded one fails.
    shipped, meta = load_model(SHIPPED)
    trained = meta["config"]
    recorded = ModelConfig.model_validate(trained["model"]).model_dump(mode="json")
    assert recorded == {**tiny.model.model_dump(mode="json"), "teacher_checkpoint": None}
    for key in ("seed", "eval_places", "db_per_place", "queries_per_place", "image_px", "difficulty"):
        assert trained["data"]["synthetic"][key] == getattr(tiny.data.synthetic, key), key
    # and what the demo's teacher step does with it (load_teacher of the demo's model section)
    # is the shipped teacher: every tensor loaded as stored, none resampled or left at init,
    # the same descriptors as the model rebuilt from the recorded config
    demo_teacher = build_model(tiny.model, student=False)
    report = load_foreign(demo_teacher, SHIPPED)
    assert report.resampled == [] and report.left_at_init == [] and report.reinitialised == []
    x = torch.randn(2, 3, tiny.model.teacher_img_size, tiny.model.teacher_img_size,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(demo_teacher.eval()(x), shipped.eval()(x), rtol=0, atol=0)


def test_shipped_teacher_reproduces_its_recorded_numbers():
    model, meta = load_model(SHIPPED)
    bench = meta["benchmark"]
    ev = bench["eval_split"]
    # what the issue asks of the demo's benchmark, as recorded when the teacher was shipped
    assert ev["queries"] >= 400 and ev["database"] >= 400
    assert ev["pixel_recall"]["1"] <= 35.0
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    got = check_numbers(model, cfg)
    want = bench["check"]
    np.testing.assert_allclose(got["query_descriptors_head"], want["query_descriptors_head"], atol=2e-4)
    assert abs(got["r1"] - want["r1"]) <= 100.0 / CHECK_PLACES      # at most one query flips


def test_the_recorded_recipe_still_trains_at_small_scale(tmp_path):
    """configs/tiny_teacher.yaml through the training command's code path, shrunk to 2 steps
    on a small benchmark: it runs and writes a teacher of exactly the shipped layout."""
    from brevitas_models.checkpoint import load_checkpoint
    from tatvpr_hw.config import config_to_dict, parse_config
    from tatvpr_hw.training import run_stage

    d = config_to_dict(load_config(REPO / "configs" / "tiny_teacher.yaml"))
    assert d["model"]["teacher_checkpoint"] is None                  # it trains, it does not load
    d["data"].update(root=str(tmp_path / "data"), places_per_batch=4, images_per_place=2)
    d["data"]["synthetic"].update(places=8, train_images_per_place=2, eval_places=2, image_px=32)
    d["train"].update(out_dir=str(tmp_path / "runs"), accelerator="cpu", devices=1)
    d["train"]["teacher"].update(max_steps=2, warmup_steps=1)
    path = run_stage(parse_config(d, "<test>"), "teacher", progress=False)
    sd, meta = load_checkpoint(path)
    shipped, _ = load_checkpoint(SHIPPED)
    assert meta["step"] == 2 and meta["stage"] == "teacher"
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in shipped.items()}
