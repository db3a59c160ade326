"""Lightning DDP on CPU: 2 gloo processes (ddp_spawn) train the teacher stage."""

from __future__ import annotations

import json

import torch

from brevitas_models.checkpoint import load_checkpoint
from tatvpr_hw.training import run_stage


def test_ddp_two_gloo_processes(tiny_cfg):
    # epochs=1, no step cap: with 2 ranks x 2 places per step the 8 places give 2 steps
    # (one process would take 4), so the step count proves the data was sharded over 2 ranks.
    cfg = tiny_cfg("ddp", strategy="ddp_spawn", devices=2,
                   teacher={"epochs": 1, "max_steps": -1, "lr": 1e-3, "warmup_steps": 1})
    path = run_stage(cfg, "teacher", progress=False)
    sd, meta = load_checkpoint(path)
    assert meta["step"] == 2
    # each step logs max - min over ranks of the sum of the weights: the replicas stay equal
    assert meta["final_metrics"]["ddp_replica_spread"] == 0.0
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    logged = json.loads(path.with_suffix(".json").read_text())["meta"]["config"]["train"]
    assert logged["devices"] == 2 and logged["strategy"] == "ddp_spawn"
