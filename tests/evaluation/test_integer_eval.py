"""`tatvpr eval --integer`: the integer model's rows next to the float student's (real tiny models)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from tatvpr_hw.cli import main

from .test_eval_real_models import checkpoints  # noqa: F401  (module fixture: real tiny checkpoints)


@pytest.fixture(scope="module")
def integer_run(checkpoints):  # noqa: F811
    out = checkpoints["tmp"] / "run_integer"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["eval", "--config", str(checkpoints["cfg"]), "--checkpoint", str(checkpoints["student"]),
                   "--out", str(out), "--sparsity", "0,0.5", "--integer", "0,0.5"])
    assert rc == 0
    return out, buf.getvalue()


def test_integer_rows_beside_the_float_student(integer_run):
    out, printed = integer_run
    recs = json.loads((out / "metrics.json").read_text())
    ints = {r["sparsity"]: r for r in recs if r["model"] == "student_integer"}
    floats = {r["sparsity"]: r for r in recs if r["model"] == "student" and r["granularity"] == "token"}
    assert sorted(ints) == [0.0, 0.5]
    for s, r in ints.items():
        assert r["granularity"] == "token" and r["format"] == "int8+ternary2"
        assert 0.0 <= r["recall@1"] <= 100.0 and len(r["r1_ci95"]) == 2
        # same model, same simulated machine and operation count as the float student's row
        assert r["gmacs"] == floats[s]["gmacs"] and r["sim_latency_ms"] == floats[s]["sim_latency_ms"]
    assert "student_integer" in printed
    assert "student_integer" in (out / "metrics.md").read_text()


def test_integer_option_rejects_bad_values(checkpoints, tmp_path, capsys):  # noqa: F811
    rc = main(["eval", "--config", str(checkpoints["cfg"]), "--checkpoint", str(checkpoints["student"]),
               "--out", str(tmp_path / "r"), "--integer", "0,1.5"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--integer" in err and "[0, 1)" in err


def test_integer_descriptors_follow_the_float_student(checkpoints):  # noqa: F811
    """The same images through the integer trunk + float head land next to the float descriptors
    (cosine > 0.99) and not next to another image's."""
    import torch

    from tatvpr_hw.config import load_config
    from tatvpr_hw.evaluation import load_models
    from tatvpr_hw.integer import export_trunk, integer_descriptors

    cfg = load_config(checkpoints["cfg"])
    _, student = load_models(cfg, checkpoints["student"])
    imgs = torch.randn(5, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    trunk = export_trunk(student, imgs, sparsity=0.0)
    dq = integer_descriptors(student, trunk, imgs, 0.0)
    with torch.no_grad():
        df = torch.nn.functional.normalize(student(imgs), dim=-1).numpy()
    sim = dq @ df.T
    assert np.diag(sim).min() > 0.99
    assert (np.argmax(sim, axis=1) == np.arange(5)).all()


def test_integer_eval_runs_the_whole_query_in_integers(checkpoints):  # noqa: F811
    """`eval --integer` descriptors are the integer query's (trunk, BoQ head, Q15 descriptor), not
    the integer trunk + float head's; both near the float student."""
    import torch

    from tatvpr_hw.config import load_config
    from tatvpr_hw.evaluation import load_models
    from tatvpr_hw.integer import (export_head_q, export_trunk, head_is_integer, integer_descriptors,
                                   integer_eval_descriptors, integer_query_descriptors)

    cfg = load_config(checkpoints["cfg"])
    _, student = load_models(cfg, checkpoints["student"])
    assert head_is_integer(student)
    imgs = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(4))
    dataset = [(img,) for img in imgs]
    got = integer_eval_descriptors(student, dataset, [0.5], imgs)[0.5]
    trunk = export_trunk(student, imgs, sparsity=0.5)
    head = export_head_q(student, trunk, imgs, sparsity=0.5)
    assert np.array_equal(got, integer_query_descriptors(trunk, head, imgs, 0.5))
    float_head = integer_descriptors(student, trunk, imgs, 0.5)
    assert not np.array_equal(got, float_head)
    assert (got * float_head).sum(1).min() > 0.99
