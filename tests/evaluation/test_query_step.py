"""The demo's `query` step: a trained student's query through the C-simulated units equals the
integer model bit for bit, unit cycles equal the simulator's, and the report shows it."""

from __future__ import annotations

import json
from types import SimpleNamespace

from .test_eval_real_models import checkpoints  # noqa: F401  (module fixture: real tiny checkpoints)


def test_query_step_bit_exact_and_reported(checkpoints, tmp_path):  # noqa: F811
    from tatvpr_hw.config import load_config
    from tatvpr_hw.lower.hls.query_csim import flow_step_query
    from tatvpr_hw.report import render_report

    ctx = SimpleNamespace(cfg=load_config(checkpoints["cfg"]), run_dir=tmp_path,
                          results={"finetune": {"checkpoint": str(checkpoints["student"])}})
    res = flow_step_query(ctx)
    assert res["bit_exact"] and res["max_abs_token_diff"] == 0
    # the (CLS) head is integer: the final norm and the Q15 L2 norm on the C-simulated vector unit, nothing
    # left in numpy; descriptor bit-exact (BoQ's 57 head ops: tests/hls/test_integer_model.py)
    assert res["head"] == "cls" and res["head_integer"] and res["descriptor_bit_exact"]
    assert res["head_ops"] == 1 and res["numpy_ops"] == []
    assert set(res["units"]) == {"ternary", "int8", "vector"}
    for name, u in res["units"].items():
        assert u["match"] and u["csim_cycles"] > 0, name
    assert res["descriptor_cosine_integer_vs_float"] > 0.9
    assert json.loads((tmp_path / "query.json").read_text())["ops"] == res["ops"]
    html = render_report(tmp_path).read_text()
    assert "One query on the C-simulated units" in html and "bit-exact" in html
    assert "The cls head is integer too (1 op)" in html and "Without an HLS kernel yet" not in html
