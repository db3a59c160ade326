"""The flow as an ordered list of named, resumable steps (FINN builder style).

Each step is ``step(ctx) -> dict`` (a small JSON-able summary). The runner records every
finished step, its wall time and summary in ``<run_dir>/steps.json`` (written atomically after
each step), so a killed run resumes at the first unfinished step, and ``start``/``stop`` select
a slice of the flow to rerun or bisect.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tatvpr_hw.config import Config, config_to_dict
from tatvpr_hw.errors import UserError
from tatvpr_hw.io import write_json

log = logging.getLogger(__name__)


@dataclass
class FlowContext:
    """What every step sees: the validated config, the run folder and earlier steps' results."""

    cfg: Config
    run_dir: Path
    results: dict[str, Any] = field(default_factory=dict)


Step = Callable[[FlowContext], dict]


@dataclass(frozen=True)
class NamedStep:
    name: str
    fn: Step
    doc: str


def _load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"steps": {}}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is corrupt ({err}); delete it to rerun the flow from scratch") from None
    if not isinstance(state, dict) or not isinstance(state.get("steps"), dict):
        raise UserError(f"{path} is not a flow state file; delete it to rerun the flow")
    for name, rec in state["steps"].items():
        if (not isinstance(rec, dict) or "result" not in rec or isinstance(rec.get("seconds"), bool)
                or not isinstance(rec.get("seconds"), (int, float))):
            raise UserError(f"{path}: step {name!r} = {rec!r} is not a step record ({{seconds, result}}); "
                            "delete the file to rerun the flow")
    return state


def run_flow(steps: list[NamedStep], ctx: FlowContext, *, start: str | None = None,
             stop: str | None = None, force: bool = False) -> dict[str, Any]:
    """Run ``steps`` in order from ``start`` to ``stop`` (inclusive), skipping finished ones.

    A step counts as finished when ``steps.json`` records it with the same config; ``force``
    reruns every selected step.
    """
    names = [s.name for s in steps]
    for label, value in (("start step", start), ("stop step", stop)):
        if value is not None and value not in names:
            raise UserError(f"unknown {label} {value!r}; the steps are: {', '.join(names)}")
    i0 = names.index(start) if start else 0
    i1 = names.index(stop) if stop else len(steps) - 1
    if i0 > i1:
        raise UserError(f"start step {start!r} comes after stop step {stop!r}")

    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    state_path = ctx.run_dir / "steps.json"
    state = _load_state(state_path)
    cfg_dict = config_to_dict(ctx.cfg)
    if state.get("config") not in (None, cfg_dict):
        log.info("config changed since the last run: rerunning every step")
        state = {"steps": {}}
    state["config"] = cfg_dict

    for name in names[:i0]:  # earlier steps' results stay visible to later ones
        if name in state["steps"]:
            ctx.results[name] = state["steps"][name]["result"]
    for idx, step in enumerate(steps[i0:i1 + 1], start=i0 + 1):
        done = state["steps"].get(step.name)
        if done and not force:
            log.info("[%d/%d] %s: done earlier (%.1f s), skipped", idx, len(steps), step.name,
                     done["seconds"])
            ctx.results[step.name] = done["result"]
            continue
        log.info("[%d/%d] %s: %s", idx, len(steps), step.name, step.doc)
        t0 = time.perf_counter()
        result = step.fn(ctx) or {}
        seconds = time.perf_counter() - t0
        ctx.results[step.name] = result
        state["steps"][step.name] = {"seconds": round(seconds, 2), "result": result}
        write_json(state_path, state)
        log.info("[%d/%d] %s: finished in %.1f s", idx, len(steps), step.name, seconds)
    return state
