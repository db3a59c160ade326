"""The resumable step runner: order, skip of finished steps, start/stop slices, bad names."""

import json

import pytest

from tatvpr_hw.config import parse_config
from tatvpr_hw.errors import UserError
from tatvpr_hw.flow import FlowContext, NamedStep, run_flow


def _steps(calls, fail_at=None):
    def make(name):
        def fn(ctx):
            if name == fail_at:
                raise RuntimeError("killed")
            calls.append(name)
            return {"name": name, "seen": sorted(ctx.results)}
        return NamedStep(name, fn, f"step {name}")
    return [make(n) for n in ("a", "b", "c")]


def test_runs_in_order_and_records_state(tmp_path):
    calls = []
    ctx = FlowContext(parse_config({}), tmp_path)
    run_flow(_steps(calls), ctx)
    assert calls == ["a", "b", "c"]
    assert ctx.results["c"]["seen"] == ["a", "b"]
    state = json.loads((tmp_path / "steps.json").read_text())
    assert list(state["steps"]) == ["a", "b", "c"]
    assert all(s["seconds"] >= 0 for s in state["steps"].values())


def test_killed_run_resumes_at_first_unfinished_step(tmp_path):
    calls = []
    with pytest.raises(RuntimeError):
        run_flow(_steps(calls, fail_at="b"), FlowContext(parse_config({}), tmp_path))
    assert calls == ["a"]
    calls.clear()
    ctx = FlowContext(parse_config({}), tmp_path)
    run_flow(_steps(calls), ctx)
    assert calls == ["b", "c"]          # a was not rerun
    assert ctx.results["a"]["name"] == "a"


def test_start_stop_force_and_config_change(tmp_path):
    calls = []
    run_flow(_steps(calls), FlowContext(parse_config({}), tmp_path))
    calls.clear()
    run_flow(_steps(calls), FlowContext(parse_config({}), tmp_path), start="b", stop="b", force=True)
    assert calls == ["b"]
    calls.clear()
    run_flow(_steps(calls), FlowContext(parse_config({"seed": 7}), tmp_path))
    assert calls == ["a", "b", "c"]     # a different config invalidates earlier results


def test_bad_step_names_and_corrupt_state(tmp_path):
    ctx = FlowContext(parse_config({}), tmp_path)
    with pytest.raises(UserError, match="unknown start step 'x'.*a, b, c"):
        run_flow(_steps([]), ctx, start="x")
    with pytest.raises(UserError, match="comes after"):
        run_flow(_steps([]), ctx, start="c", stop="a")
    (tmp_path / "steps.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        run_flow(_steps([]), ctx)
