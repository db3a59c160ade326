"""``tatvpr footprint`` and ``tatvpr ops``: JSON shapes, numbers, checkpoints and bad input."""

import json
from pathlib import Path

import pytest
import torch

from brevitas_models.checkpoint import save_checkpoint
from brevitas_models.model import build_model
from brevitas_models.quant import calibrate_input_scales
from brevitas_models.sparsity import sparsity_context
from tatvpr_hw.cli import main
from tatvpr_hw.config import config_to_dict, load_config

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")
PAPER = str(REPO / "configs" / "tatvpr_boq_vitb14.yaml")
FORMATS = {"fp32", "fp16", "int8", "ternary2", "ternary1.6"}


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_footprint_json_paper_config(capsys):
    rc, out, _ = _run(capsys, "footprint", "--config", PAPER, "--json")
    assert rc == 0
    fp = json.loads(out)
    for key in ("backbone_bytes", "total_bytes"):
        assert set(fp[key]) == FORMATS and all(isinstance(v, int) for v in fp[key].values())
    bb = fp["backbone_bytes"]
    assert bb["fp16"] >= 5 * bb["ternary2"] and bb["fp32"] >= 10 * bb["ternary2"]
    assert isinstance(fp["components"], list) and fp["components"][0]["name"] == "cls_token"
    assert fp["total_bytes"]["fp32"] > bb["fp32"]  # the BoQ head is counted in the total


def test_footprint_text_table(capsys):
    rc, out, _ = _run(capsys, "footprint", "--config", TINY)
    assert rc == 0
    assert "blocks.3" in out and "fp16 backbone / x" in out and "ternary1.6" in out


def test_ops_json(capsys):
    rc, out, _ = _run(capsys, "ops", "--config", TINY, "--sparsity", "0,0.4", "--json")
    assert rc == 0
    rows = json.loads(out)
    assert [r["sparsity"] for r in rows] == [0.0, 0.4]
    assert all(isinstance(r["gmacs"], float) for r in rows)
    assert rows[1]["gmacs"] < rows[0]["gmacs"] <= rows[0]["dense_macs"] / 1e9
    rc2, out2, _ = _run(capsys, "ops", "--config", TINY, "--sparsity", "0.4", "--json")
    assert json.loads(out2) == rows[1:]  # same seed, same numbers


@pytest.mark.parametrize("arg, words", [("0,1.5", ["1.5", "[0, 1)"]), ("0,abc", ["'abc'", "not a number"]),
                                        (",", ["at least one"])])
def test_ops_bad_sparsity(capsys, arg, words):
    rc, _, err = _run(capsys, "ops", "--config", TINY, "--sparsity", arg)
    assert rc == 2
    assert err.startswith("error: --sparsity")
    for w in words:
        assert w in err


def test_missing_config(capsys, tmp_path):
    rc, _, err = _run(capsys, "footprint", "--config", str(tmp_path / "none.yaml"))
    assert rc == 2 and "config file not found" in err


def test_checkpoint_packs_real_weights_and_counts_its_ops(capsys, tmp_path):
    cfg = load_config(TINY)
    torch.manual_seed(0)
    student = build_model(cfg.model, student=True)
    x = torch.randn(2, 3, 98, 98)
    with sparsity_context(student, 0.0):
        calibrate_input_scales(student, [x])
    ck = save_checkpoint(tmp_path / "student", student,
                         {"config": config_to_dict(cfg), "role": "student", "stage": "init", "step": 0,
                          "seed": 0, "rng": {}, "teacher_checkpoint": None})
    rc, out, _ = _run(capsys, "footprint", "--config", TINY, "--checkpoint", str(ck), "--json")
    assert rc == 0
    fp = json.loads(out)
    rc, out, _ = _run(capsys, "footprint", "--config", TINY, "--json")
    planned = json.loads(out)
    assert fp["total_bytes"] == planned["total_bytes"]  # packed arrays have the counted size
    dens = [c["weight_density"] for c in fp["components"] if c["quantized"]]
    assert len(dens) == 16 and all(0.3 < d < 0.9 for d in dens)
    rc, out, _ = _run(capsys, "ops", "--config", TINY, "--checkpoint", str(ck), "--sparsity", "0.2", "--json")
    assert rc == 0
    assert json.loads(out)[0]["model"] == "student"


def test_write_model_reports(tmp_path):
    from tatvpr_hw.commands.models import write_model_reports

    cfg = load_config(TINY)
    paths = write_model_reports(cfg, tmp_path / "run", sparsities=[0.0, 0.5])
    fp = json.loads(paths["footprint"].read_text())
    rows = json.loads(paths["ops"].read_text())
    assert set(fp["backbone_bytes"]) == FORMATS
    assert [r["sparsity"] for r in rows] == [0.0, 0.5] and rows[1]["gmacs"] < rows[0]["gmacs"]


def test_package_exports_resolve():
    import brevitas_models

    for name in brevitas_models.__all__:
        assert getattr(brevitas_models, name) is not None
    with pytest.raises(AttributeError):
        brevitas_models.no_such_name
