"""Recall@N over the sparsity sweep, operation counts, memory, and the method's two figures.

For a trained teacher and student (``brevitas_models.model.VPRModel``: ``forward(x)`` gives
L2-normalised descriptors) :func:`evaluate_run` computes, on the evaluation set of the run
config (``data.eval_root``, or ``data.root/eval`` for the built-in benchmark):

- Recall@N (N from ``eval.recall_at``, default 1/5/10) in percent: a query counts as a hit at
  N when one of its N nearest database descriptors (exact inner product with faiss, i.e.
  cosine on L2-normalised descriptors) lies within ``data.positive_radius_m`` (UTM) of it.
  Queries with no positive at all count as misses (the denominator is all queries).
- GMACs per query from ``brevitas_models.ops.count_ops`` at that sparsity (real nonzeros of
  a few query images); GOPs in Figure 2A are 2 x GMACs (one MAC = a multiply and an add).
- memory in MB (10^6 bytes) from ``brevitas_models.footprint.footprint`` in the row's format.
- SIMULATED latency and energy per query of the student: :func:`simulate_query` traces the
  first query image through the student at that row's sparsity and top-k granularity
  (:func:`tatvpr_hw.tracing.trace_query`, the real masks) and runs :func:`sim.simulator.simulate`
  on the default arch (:func:`sim.arch.load_arch`, the KV260 one). Modelled, not measured.

The student is evaluated under every top-k granularity of ``eval.granularities`` (token, bank,
tensor; set at run time like the sparsity, on the one trained student) at every sparsity.

Rows of ``metrics.json`` (one list of records)::

    {"model": "teacher",      "format": "fp32",     "granularity": null, "sparsity": 0.0,
     "recall@1": ..., "recall@5": ..., "recall@10": ..., "gmacs": ..., "memory_mb": ...,
     "sim_latency_ms": null, "sim_energy_mj": null}
    {"model": "teacher_fp16", "format": "fp16", ...}   teacher weights rounded to fp16 (compute in fp32)
    {"model": "teacher_int8", "format": "int8", ...}   teacher weights int8 per output channel
                                                        (symmetric, post-training), compute in fp32
    {"model": "student",      "format": "ternary2", "granularity": g, "sparsity": s, ...,
     "sim_latency_ms": ..., "sim_energy_mj": ..., "sim_cycles": ..., "sim_ternary_cycles": ...,
     "sim_compute_cycles": ..., "sim_conflict_cycles": ...}     one row per (granularity, sparsity)

The teacher rows have no top-k and are not simulated (the accelerator runs the ternary student;
their sim fields are null). ``sim_cycles`` = all cycles of the query, ``sim_ternary_cycles`` =
the ternary array's (compute, DRAM stalls, fill), ``sim_compute_cycles`` = the array's compute
cycles alone (docs/engine.md section 3's ``c(m, f)`` summed), ``sim_conflict_cycles`` = the
cycles lost to bank conflicts when the simulator reports them (else null).

Figures (matplotlib, Agg, PNG, in the output folder):
``fig2a_recall_vs_gops.png`` (R@1 vs GOPs, one student line per granularity, one point per
sparsity, the teacher for reference), ``fig2b_recall_vs_memory.png`` (R@1 vs memory: fp32
teacher, fp16 teacher, int8 teacher, ternary student at s = 0) and
``fig_recall_vs_sim_latency.png`` (R@1 vs SIMULATED latency per query on the default arch, one
line per granularity, points labelled by sparsity).

``eval.json`` beside them holds the details (set sizes, radius, chance level, the raw-pixel
baseline, timings); ``config.json`` is the run config used.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from tatvpr_hw.data.vpr import ImageListDataset, VPREvalSet, eval_root
from tatvpr_hw.errors import UserError
from tatvpr_hw.io import write_json, write_text
from tatvpr_hw.integer import l2_normalize

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
DETAILS_FILE = "eval.json"
CONFIG_FILE = "config.json"
TABLE_FILE = "metrics.md"
FIG_2A = "fig2a_recall_vs_gops.png"
FIG_2B = "fig2b_recall_vs_memory.png"
FIG_LATENCY = "fig_recall_vs_sim_latency.png"
MB = 1e6
OPS_SAMPLE_IMAGES = 4


# ----------------------------------------------------------------------------- recall

def first_hit_ranks(db_desc: np.ndarray, q_desc: np.ndarray, positives: Sequence[Iterable[int]],
                    ns: Sequence[int] = (1, 5, 10)) -> np.ndarray:
    """Per query, the 0-based rank of its first correct database image among the top ``max(ns)``
    (``inf`` when none is there). Arguments as :func:`recall_at_n`."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every CPU-feature probe
    import faiss

    db = np.ascontiguousarray(db_desc, dtype=np.float32)
    q = np.ascontiguousarray(q_desc, dtype=np.float32)
    if db.ndim != 2 or q.ndim != 2 or db.shape[1] != q.shape[1]:
        raise UserError(f"descriptor shapes do not match: database {db.shape}, queries {q.shape}")
    if len(positives) != len(q):
        raise UserError(f"{len(positives)} positive lists for {len(q)} queries")
    if not ns or min(ns) < 1:
        raise UserError(f"recall N values must be >= 1, got {list(ns)}")
    k = min(max(ns), len(db))
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    _, pred = index.search(q, k)
    first_hit = np.full(len(q), np.inf)
    for i, (row, pos) in enumerate(zip(pred, positives)):
        hits = np.flatnonzero(np.isin(row, np.fromiter(pos, dtype=np.int64)))
        if hits.size:
            first_hit[i] = hits[0]
    return first_hit


def recall_at_n(db_desc: np.ndarray, q_desc: np.ndarray, positives: Sequence[Iterable[int]],
                ns: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Recall@N in percent for each N in ``ns``.

    Args:
        db_desc: [N_db, D] L2-normalised database descriptors.
        q_desc: [N_q, D] L2-normalised query descriptors.
        positives: for every query, the database indices that count as correct.
        ns: the N values.
    """
    first_hit = first_hit_ranks(db_desc, q_desc, positives, ns)
    return {int(n): float(100.0 * np.mean(first_hit < n)) for n in ns}


def recall_with_ci(db_desc: np.ndarray, q_desc: np.ndarray, positives: Sequence[Iterable[int]],
                   ns: Sequence[int] = (1, 5, 10), seed: int = 0) -> tuple[dict[int, float], list[float]]:
    """:func:`recall_at_n` and the 95 % percentile-bootstrap interval of R@1 over the queries
    (``[low, high]`` percent, seeded; :mod:`tatvpr_hw.stats`)."""
    from tatvpr_hw.stats import bootstrap_ci
    first_hit = first_hit_ranks(db_desc, q_desc, positives, ns)
    lo, hi = bootstrap_ci(first_hit < 1, seed=seed)
    return {int(n): float(100.0 * np.mean(first_hit < n)) for n in ns}, [round(lo, 4), round(hi, 4)]


def chance_recall_at_1(positives: Sequence[np.ndarray], num_db: int) -> float:
    """Expected R@1 (percent) of a random ranking."""
    return float(100.0 * np.mean([len(p) / num_db for p in positives]))


# ----------------------------------------------------------------------------- descriptors

def _loader(dataset: ImageListDataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


@torch.no_grad()
def compute_descriptors(model: nn.Module, dataset: ImageListDataset, *, batch_size: int = 32,
                        num_workers: int = 0, sparsities: Sequence[float] | None = None,
                        granularities: Sequence[str] | None = None,
                        settings: Sequence[tuple[str, float]] | None = None,
                        desc: str = "descriptors") -> dict[Any, np.ndarray]:
    """Descriptors of every image of ``dataset``, at each sparsity (images are read once).

    ``sparsities=None`` runs the model as it is (key ``None``). Returns {s: [N, D] float32};
    with ``granularities`` the keys are ``(granularity, s)`` for every pair; ``settings`` (a
    list of ``(granularity, s)``) gives those keys directly. The model's own sparsity and
    granularity are restored afterwards.
    """
    import contextlib

    from brevitas_models.sparsity import sparsity_context

    model.eval()
    if settings is not None:
        keys: list[Any] = [(g, float(s)) for g, s in settings]
    elif sparsities is None:
        keys = [None]
    elif granularities is None:
        keys = [float(s) for s in sparsities]
    else:
        keys = [(g, float(s)) for g in granularities for s in sparsities]
    out: dict[Any, list[np.ndarray]] = {k: [] for k in keys}
    for images, _ in tqdm(_loader(dataset, batch_size, num_workers), desc=desc, unit="batch", leave=False):
        for key in keys:
            if key is None:
                ctx = contextlib.nullcontext()
            elif isinstance(key, tuple):
                ctx = sparsity_context(model, key[1], key[0])
            else:
                ctx = sparsity_context(model, key)
            with ctx:
                d = model(images)
            out[key].append(torch.nn.functional.normalize(d.float(), dim=-1).cpu().numpy())
    return {k: np.concatenate(v, axis=0) for k, v in out.items()}


def pixel_descriptors(dataset: ImageListDataset, side_px: int = 16) -> np.ndarray:
    """Raw-pixel baseline: RGB resized to ``side_px``^2, per-image standardised, L2-normalised."""
    from PIL import Image

    from tatvpr_hw.data.transforms import load_rgb

    rows = []
    for p in dataset.paths:
        a = np.asarray(load_rgb(p).resize((side_px, side_px), Image.BILINEAR), np.float32).ravel()
        a = (a - a.mean()) / (a.std() + 1e-6)
        rows.append(a)
    return l2_normalize(np.stack(rows)).astype(np.float32)


def pixel_baseline(eval_set: VPREvalSet, ns: Sequence[int] = (1, 5, 10), side_px: int = 16) -> dict[int, float]:
    """Recall@N (percent) of :func:`pixel_descriptors` on ``eval_set``."""
    return recall_at_n(pixel_descriptors(eval_set.database, side_px), pixel_descriptors(eval_set.queries, side_px),
                       eval_set.all_positives, ns)


# ----------------------------------------------------------------------------- ops and memory

def model_gmacs(model: nn.Module, images: torch.Tensor, sparsity: float) -> float:
    """Effective GMACs per query (activation zeros skipped, from the real nonzeros of ``images``
    at ``sparsity``), from :func:`brevitas_models.ops.count_ops`."""
    from brevitas_models.ops import count_ops

    return float(count_ops(model, images, sparsity)["gmacs"])


def model_memory_bytes(model: nn.Module, img_size: int, fmt: str, plan: Mapping[str, bool] | None = None) -> float:
    """Total bytes of ``model`` in format ``fmt`` (:func:`brevitas_models.footprint.footprint`;
    ``plan`` names the layers of a float model counted as quantized)."""
    from brevitas_models.footprint import footprint

    fp = footprint(model, img_size, plan=dict(plan) if plan is not None else None)
    return float(fp["total_bytes"][fmt])


SIM_KEYS = ("sim_latency_ms", "sim_energy_mj", "sim_cycles", "sim_ternary_cycles", "sim_compute_cycles",
            "sim_conflict_cycles")


def simulate_query(model: nn.Module, image: torch.Tensor, sparsity: float, granularity: str, arch,
                   weight_cache: dict | None = None) -> dict[str, Any]:
    """SIMULATED cost of one query: trace ``image`` through ``model`` at ``sparsity`` and
    ``granularity`` (:func:`tatvpr_hw.tracing.trace_query`), simulate it on ``arch``.

    Returns the :data:`SIM_KEYS` (``sim_conflict_cycles`` is None when the simulator does not
    report bank conflicts). The model's sparsity and granularity are restored.
    """
    from brevitas_models.sparsity import sparsity_context
    from sim.simulator import simulate
    from tatvpr_hw.tracing import trace_query

    with sparsity_context(model, sparsity, granularity):
        trace = trace_query(model, image, {"sparsity": float(sparsity), "granularity": granularity,
                                           "source": "tatvpr eval"}, weight_cache)
    res = simulate(arch, trace)
    summ = res.summary
    tern = [r for r in res.layers if r.get("unit") == "ternary_array"]
    conflict = (summ.get("gather") or {}).get("conflict_cycles")
    if conflict is None and tern and all("conflict_cycles" in r for r in tern):
        conflict = sum(int(r["conflict_cycles"]) for r in tern)
    return {"sim_latency_ms": float(summ["latency_ms"]), "sim_energy_mj": float(summ["energy_mj"]),
            "sim_cycles": int(summ["cycles"]), "sim_ternary_cycles": int(summ["cycles_by_unit"]["ternary_array"]),
            "sim_compute_cycles": int(sum(int(r["compute_cycles"]) for r in tern)),
            "sim_conflict_cycles": None if conflict is None else int(conflict)}


def default_sim_arch():
    """The arch the evaluation simulates on: :func:`sim.arch.load_arch`'s default (KV260)."""
    from sim.arch import load_arch

    return load_arch()


def _module_name(model: nn.Module, plan_key: str) -> str:
    """Footprint plan keys drop the ``backbone.`` prefix of a VPRModel; module names keep it."""
    if hasattr(model, "backbone") and hasattr(model, "head") and not plan_key.startswith("head."):
        return "backbone." + plan_key
    return plan_key


def int8_plan(model_cfg, model: nn.Module) -> dict[str, bool]:
    """The layers the student quantizes (``model.ternary``), named in the float ``model``, each
    per output channel (the scales :func:`int8_weights` uses)."""
    from brevitas_models.footprint import quantized_plan

    return {k: True for k in quantized_plan(model_cfg, model)}


@torch.no_grad()
def fp16_weights(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose floating-point parameters are rounded to fp16 (kept in fp32)."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        if p.is_floating_point():
            p.copy_(p.half().float())
    return m


@torch.no_grad()
def int8_weights(model: nn.Module, plan: Mapping[str, bool] | None = None) -> nn.Module:
    """A copy of ``model`` after post-training int8 weight quantisation.

    The layers of ``plan`` (footprint plan keys; None = every ``nn.Linear`` / ``nn.Conv2d``) get
    their weight quantised to int8, symmetric, one scale per output channel (max |w| / 127),
    then dequantised; with a plan every other parameter is rounded to fp16, as the footprint
    stores it.
    """
    m = fp16_weights(model) if plan is not None else copy.deepcopy(model)
    modules = dict(m.named_modules())
    if plan is None:
        targets = [mod for mod in modules.values() if isinstance(mod, (nn.Linear, nn.Conv2d))]
    else:
        missing = [k for k in plan if _module_name(m, k) not in modules]
        if missing:
            raise UserError(f"int8 plan names layers the model lacks: {missing[:5]}")
        targets = [modules[_module_name(m, k)] for k in plan]
        src = dict(model.named_modules())
        for k in plan:           # start from the fp32 weight, not its fp16 rounding
            modules[_module_name(m, k)].weight.copy_(src[_module_name(model, k)].weight)
    for mod in targets:
        w = mod.weight
        flat = w.reshape(w.shape[0], -1)
        scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        q = torch.clamp(torch.round(flat / scale[:, None]), -127, 127)
        w.copy_((q * scale[:, None]).reshape(w.shape))
    return m


# ----------------------------------------------------------------------------- the run

INTEGER_CALIBRATION_IMAGES = 16  # database images that set the integer model's output scales


def _sample_images(dataset: ImageListDataset, n: int = OPS_SAMPLE_IMAGES) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])


def _record(model: str, fmt: str, s: float, recalls: Mapping[int, float], gmacs: float,
            memory_bytes: float, granularity: str | None = None,
            sim: Mapping[str, Any] | None = None, ci: Sequence[float] | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"model": model, "format": fmt, "granularity": granularity, "sparsity": round(float(s), 6)}
    rec.update({f"recall@{n}": round(v, 4) for n, v in recalls.items()})
    if ci is not None:
        rec["r1_ci95"] = list(ci)
    rec.update({"gmacs": round(gmacs, 6), "memory_mb": round(memory_bytes / MB, 6)})
    if sim is None:
        rec.update({"sim_latency_ms": None, "sim_energy_mj": None})
    else:
        rec.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in sim.items()})
    return rec


def evaluate_run(cfg, teacher: nn.Module, student: nn.Module | None, sparsities: Sequence[float] | None,
                 out_dir: str | Path, granularities: Sequence[str] | None = None,
                 integer_sparsities: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Evaluate teacher (fp32 / fp16 / int8 weights) and student (every granularity x
    sparsity, each also simulated); write ``metrics.json``, ``metrics.md``, ``eval.json``,
    ``config.json`` and the three figures into ``out_dir``.

    Args:
        cfg: the run :class:`tatvpr_hw.config.Config`.
        teacher: float VPR model at ``cfg.model.teacher_img_size``.
        student: ternary VPR model at ``cfg.model.student_img_size`` (None: teacher rows only).
        sparsities: student sparsities (default ``cfg.eval.sparsities``).
        out_dir: output folder (created).
        granularities: top-k granularities (default ``cfg.eval.granularities``).
        integer_sparsities: sparsities of the integer-model rows (``student_integer``, token top-k;
            default ``cfg.eval.integer_sparsities``).
    Returns: the metrics records.
    """
    from brevitas_models.sparsity import GRANULARITIES, sparsity_context
    from tatvpr_hw.config import config_to_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sparsities = list(cfg.eval.sparsities if sparsities is None else sparsities)
    for s in sparsities:
        if not 0.0 <= float(s) < 1.0:
            raise UserError(f"sparsity {s} is outside [0, 1)")
    granularities = list(cfg.eval.granularities if granularities is None else granularities)
    bad = [g for g in granularities if g not in GRANULARITIES]
    if bad or not granularities:
        raise UserError(f"eval granularities {granularities}: allowed a non-empty list of {', '.join(GRANULARITIES)}")
    ns = list(cfg.eval.recall_at)
    torch.manual_seed(cfg.seed)
    if cfg.data.source == "synthetic":
        from tatvpr_hw.data.synthetic import ensure_benchmark

        ensure_benchmark(cfg)
    root = eval_root(cfg.data)
    t_size, s_size = cfg.model.teacher_img_size, cfg.model.student_img_size
    radius = cfg.data.positive_radius_m
    t_set = VPREvalSet(root, t_size, radius)
    s_set = t_set if s_size == t_size else VPREvalSet(root, s_size, radius)
    bs, nw = cfg.eval.batch_size, cfg.data.num_workers
    positives = t_set.all_positives
    timings: dict[str, float] = {}
    records: list[dict[str, Any]] = []

    t_imgs = _sample_images(t_set.queries)
    teacher_gmacs = model_gmacs(teacher, t_imgs, 0.0)
    plan = int8_plan(cfg.model, teacher)
    for name, fmt, make in (("teacher", "fp32", lambda: teacher),
                            ("teacher_fp16", "fp16", lambda: fp16_weights(teacher)),
                            ("teacher_int8", "int8", lambda: int8_weights(teacher, plan))):
        t0 = time.perf_counter()
        model = make()
        db = compute_descriptors(model, t_set.database, batch_size=bs, num_workers=nw, desc=f"{name} db")[None]
        q = compute_descriptors(model, t_set.queries, batch_size=bs, num_workers=nw, desc=f"{name} queries")[None]
        del model
        rec, ci = recall_with_ci(db, q, positives, ns, seed=cfg.seed)
        mem = model_memory_bytes(teacher, t_size, fmt, plan if fmt == "int8" else None)
        records.append(_record(name, fmt, 0.0, rec, teacher_gmacs, mem, ci=ci))
        timings[name] = time.perf_counter() - t0
        log.info("%s: %s", name, ", ".join(f"R@{n} {v:.1f}" for n, v in rec.items()))

    sim_info: dict[str, Any] | None = None
    if student is not None:
        arch = default_sim_arch()  # first: a bad arch file fails before minutes of descriptors
        t0 = time.perf_counter()
        # at s = 0 no top-k runs, so every granularity gives the same model: computed once
        pairs = [(g, float(s)) for g in granularities for s in sparsities
                 if float(s) != 0.0 or g == granularities[0]]
        canon = {(g, float(s)): ((granularities[0], 0.0) if float(s) == 0.0 else (g, float(s)))
                 for g in granularities for s in sparsities}
        db = compute_descriptors(student, s_set.database, batch_size=bs, num_workers=nw, settings=pairs,
                                 desc="student db")
        q = compute_descriptors(student, s_set.queries, batch_size=bs, num_workers=nw, settings=pairs,
                                desc="student queries")
        timings["student_descriptors"] = time.perf_counter() - t0
        s_imgs = _sample_images(s_set.queries)
        student_mem = model_memory_bytes(student, s_size, "ternary2")
        t1 = time.perf_counter()
        gmacs: dict[tuple[str, float], float] = {}
        for g, s in pairs:
            with sparsity_context(student, s, g):
                gmacs[(g, s)] = model_gmacs(student, s_imgs, s)
        timings["student_gmacs"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        cache: dict = {}
        sims = {(g, s): simulate_query(student, s_set.queries[0][0], s, g, arch, cache) for g, s in pairs}
        timings["student_sim"] = time.perf_counter() - t1
        for g in granularities:
            for s in sparsities:
                key = canon[(g, float(s))]
                rec, ci = recall_with_ci(db[key], q[key], s_set.all_positives, ns, seed=cfg.seed)
                records.append(_record("student", "ternary2", s, rec, gmacs[key], student_mem, g, sims[key], ci=ci))
                log.info("student %s s=%.2f: %s, sim %.4g ms", g, s, ", ".join(f"R@{n} {v:.1f}" for n, v in rec.items()),
                         sims[key]["sim_latency_ms"])
        timings["student"] = time.perf_counter() - t0
        int_sp = list(cfg.eval.integer_sparsities if integer_sparsities is None else integer_sparsities)
        if int_sp:
            from tatvpr_hw.integer import integer_eval_descriptors

            t1 = time.perf_counter()
            calib = _sample_images(s_set.database, INTEGER_CALIBRATION_IMAGES)
            with sparsity_context(student, float(int_sp[0]), "token"):
                idb = integer_eval_descriptors(student, s_set.database, int_sp, calib, desc="integer db")
                iq = integer_eval_descriptors(student, s_set.queries, int_sp, calib, desc="integer queries")
            for s in int_sp:
                key = ("token", float(s))
                if key not in gmacs:
                    with sparsity_context(student, float(s), "token"):
                        gmacs[key] = model_gmacs(student, s_imgs, float(s))
                if key not in sims:
                    sims[key] = simulate_query(student, s_set.queries[0][0], float(s), "token", arch, cache)
                rec, ci = recall_with_ci(idb[float(s)], iq[float(s)], s_set.all_positives, ns, seed=cfg.seed)
                records.append(_record("student_integer", "int8+ternary2", s, rec,
                                       gmacs[key], student_mem, "token", sims[key], ci=ci))
                log.info("student (integer model) token s=%.2f: %s", s,
                         ", ".join(f"R@{n} {v:.1f}" for n, v in rec.items()))
            timings["student_integer"] = time.perf_counter() - t1
        sp = getattr(cfg.model, "sparsity", None)
        sim_info = {"simulated": True, "arch_name": arch.name, "arch_file": str(arch.source),
                    "pe": arch.spec.compute.pe, "simd": arch.spec.compute.simd,
                    "skip_mode": arch.spec.compute.skip_mode, "banks": arch.spec.compute.banks,
                    "clock_mhz": arch.spec.clock_mhz, "query_image": s_set.queries.paths[0].name,
                    "model_banks": sp.banks if sp is not None else None,
                    "trained_granularity": sp.granularity if sp is not None else None}
        if sp is not None and sp.banks != arch.spec.compute.banks:
            log.warning("model.sparsity.banks = %d but the simulated arch has %d banks: the bank granularity's "
                        "groups do not match the machine's banks", sp.banks, arch.spec.compute.banks)

    details = {
        "eval_root": str(root), "positive_radius_m": radius, "recall_at": ns,
        "database_images": len(t_set.database), "query_images": len(t_set.queries),
        "queries_without_positives": int(sum(len(p) == 0 for p in positives)),
        "chance_recall@1": round(chance_recall_at_1(positives, len(t_set.database)), 4),
        "queries": len(t_set.queries), "r1_resolution_pt": round(100.0 / max(1, len(t_set.queries)), 4),
        "pixel_baseline": {f"recall@{n}": round(v, 4) for n, v in pixel_baseline(t_set, ns).items()},
        "teacher_img_size": t_size, "student_img_size": s_size, "sparsities": [float(s) for s in sparsities],
        "granularities": granularities, "sim": sim_info,
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }
    write_json(out / METRICS_FILE, records)
    write_text(out / TABLE_FILE, metrics_table_markdown(records, sim_info["arch_name"] if sim_info else None))
    write_json(out / DETAILS_FILE, details)
    write_json(out / CONFIG_FILE, config_to_dict(cfg))
    plot_figures(records, out, sim_info["arch_name"] if sim_info else None)
    return records


def student_base(records: Sequence[Mapping[str, Any]], granularity: str | None) -> Mapping[str, Any] | None:
    """The student's s = 0 record of ``granularity`` (any granularity's s = 0 row if none matches:
    at s = 0 no top-k runs, so they are the same model)."""
    st = [r for r in records if r.get("model") == "student" and r.get("sparsity") == 0.0]
    return next((r for r in st if r.get("granularity") == granularity), st[0] if st else None)


def metrics_table_markdown(records: Sequence[Mapping[str, Any]], sim_arch: str | None = None) -> str:
    """The metrics as a Markdown table (for the README), with MACs saved and R@1 change vs s = 0
    (of the same granularity) and the SIMULATED latency / energy per query on ``sim_arch``."""
    recall_keys = sorted({k for r in records for k in r if k.startswith("recall@")}, key=lambda k: int(k[7:]))
    arch = sim_arch or "default arch"
    has_ci = any("r1_ci95" in r for r in records)
    head = ["model", "weights", "granularity", "sparsity", *[k.replace("recall@", "R@") + " (%)" for k in recall_keys],
            *(["R@1 95 % CI"] if has_ci else []),
            "GMACs/query", "MACs saved vs s=0", "R@1 vs s=0 (pt)", "memory (MB)",
            f"latency (ms, SIMULATED, {arch})", f"energy (mJ, SIMULATED, {arch})"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in records:
        saved = delta = ""
        base = student_base(records, r.get("granularity")) if r["model"] == "student" else None
        if base is not None and base["gmacs"]:
            saved = f"{100.0 * (1.0 - r['gmacs'] / base['gmacs']):.1f} %"
            delta = f"{r['recall@1'] - base['recall@1']:+.2f}"
        lat, en = r.get("sim_latency_ms"), r.get("sim_energy_mj")
        cells = [r["model"], r.get("format", ""), r.get("granularity") or "", f"{r['sparsity']:g}",
                 *[f"{r[k]:.2f}" for k in recall_keys],
                 *([_ci_text(r.get("r1_ci95"))] if has_ci else []),
                 f"{r['gmacs']:.4f}", saved, delta, f"{r['memory_mb']:.3f}",
                 "" if lat is None else f"{lat:.4f}", "" if en is None else f"{en:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = distinguishability_notes(records)
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(f"- {n}" for n in notes) + "\n" if notes else "")


def _ci_text(ci) -> str:
    return "" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def distinguishability_notes(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """For every sparsity > 0 and every pair of granularities, whether their R@1 can be told apart
    on this benchmark (95 % bootstrap intervals disjoint) or not (they overlap)."""
    from tatvpr_hw.stats import overlap
    st = [r for r in records if r.get("model") == "student" and r.get("r1_ci95") and r.get("sparsity", 0) > 0]
    notes = []
    for s in sorted({r["sparsity"] for r in st}):
        rows = [r for r in st if r["sparsity"] == s]
        for i, a in enumerate(rows):
            for b in rows[i + 1:]:
                same = overlap(tuple(a["r1_ci95"]), tuple(b["r1_ci95"]))
                notes.append(f"s = {s:g}: `{a['granularity']}` R@1 {a['recall@1']:.2f} {_ci_text(a['r1_ci95'])} vs "
                             f"`{b['granularity']}` {b['recall@1']:.2f} {_ci_text(b['r1_ci95'])}: "
                             + ("**not distinguishable** (95 % intervals overlap)" if same
                                else "distinguishable (95 % intervals disjoint)"))
    return notes


# ----------------------------------------------------------------------------- figures

def plot_figures(records: Sequence[Mapping[str, Any]], out_dir: str | Path, sim_arch: str | None = None) -> list[Path]:
    """Figure 2A (R@1 vs GOPs per sparsity), 2B (R@1 vs memory per format) and, when the
    records are simulated, R@1 vs simulated latency (:func:`plot_latency_figure`) as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out = Path(out_dir)
    student = sorted((r for r in records if r["model"] == "student"), key=lambda r: r["sparsity"])
    teacher = next((r for r in records if r["model"] == "teacher"), None)
    paths = []

    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=150)  # the report shows figures 8 in x 150 dpi = 1200 px wide
    grans = list(dict.fromkeys(r.get("granularity") for r in student))
    colors = {"token": "#1f6fb2", "bank": "#c0392b", "tensor": "#7a9e3b"}
    for g in grans:
        rows = [r for r in student if r.get("granularity") == g]
        x = [2 * r["gmacs"] for r in rows]
        y = [r["recall@1"] for r in rows]
        ax.plot(x, y, "o-", color=colors.get(g, "#1f6fb2"),
                label="ternary student" + (f" ({g} top-k)" if g else ""))
        for r, xi, yi in zip(rows, x, y):
            ax.annotate(f"s={r['sparsity']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if teacher:
        ax.plot([2 * teacher["gmacs"]], [teacher["recall@1"]], "*", ms=12, color="#d9822b", label="fp32 teacher")
    ax.set_xlabel("GOPs per query (2 x MACs)")
    ax.set_ylabel("Recall@1 (%)")
    ax.set_title("Fig. 2A  Recall@1 vs operations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / FIG_2A)
    _save_fig(fig, paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=150)  # the report shows figures 8 in x 150 dpi = 1200 px wide
    points = [(r, lab) for r, lab in (
        (teacher, "fp32 teacher"),
        (next((r for r in records if r["model"] == "teacher_fp16"), None), "fp16 teacher"),
        (next((r for r in records if r["model"] == "teacher_int8"), None), "int8 (PTQ)"),
        (student[0] if student else None, f"ternary student (s={student[0]['sparsity']:g})" if student else ""),
    ) if r is not None]
    colors = ["#d9822b", "#e8b04a", "#7a9e3b", "#1f6fb2"]
    for (r, lab), c in zip(points, colors):
        ax.scatter([r["memory_mb"]], [r["recall@1"]], s=60, color=c, label=lab, zorder=3)
        ax.annotate(f"{r['memory_mb']:.3g} MB", (r["memory_mb"], r["recall@1"]), textcoords="offset points",
                    xytext=(5, -10), fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel("model memory (MB, log scale)")
    ax.set_ylabel("Recall@1 (%)")
    ax.set_title("Fig. 2B  Recall@1 vs memory")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / FIG_2B)
    _save_fig(fig, paths[-1])
    plt.close(fig)
    lat = plot_latency_figure(records, out, sim_arch)
    if lat is not None:
        paths.append(lat)
    return paths


def plot_latency_figure(records: Sequence[Mapping[str, Any]], out_dir: str | Path,
                        sim_arch: str | None = None) -> Path | None:
    """R@1 against SIMULATED latency per query, one line per granularity, points labelled by
    sparsity; None (no file) when no student record carries a simulated latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    student = [r for r in records if r.get("model") == "student" and r.get("sim_latency_ms") is not None]
    if not student:
        return None
    grans = list(dict.fromkeys(r.get("granularity") or "token" for r in student))
    styles = {"token": ("o-", "#1f6fb2"), "bank": ("s-", "#c0392b"), "tensor": ("^-", "#7a9e3b")}
    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=150)
    for g in grans:
        rows = sorted((r for r in student if (r.get("granularity") or "token") == g), key=lambda r: r["sparsity"])
        fmt, color = styles.get(g, (".-", None))
        x = [r["sim_latency_ms"] for r in rows]
        y = [r["recall@1"] for r in rows]
        ax.plot(x, y, fmt, color=color, label=f"{g} top-k", alpha=0.85)
        for r, xi, yi in zip(rows, x, y):
            ax.annotate(f"{r['sparsity']:g}", (xi, yi), textcoords="offset points", xytext=(3, 4), fontsize=6,
                        color=color)
    ax.set_xlabel(f"latency per query (ms, SIMULATED on {sim_arch or 'the default arch'})")
    ax.set_ylabel("Recall@1 (%)")
    ax.set_title("R@1 vs simulated latency per query (KV260 default arch, SIMULATED)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="granularity (labels: sparsity)", title_fontsize=7)
    fig.tight_layout()
    path = Path(out_dir) / FIG_LATENCY
    _save_fig(fig, path)
    plt.close(fig)
    return path


def _save_fig(fig, path: Path) -> None:
    from tatvpr_hw.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


# ----------------------------------------------------------------------------- from checkpoints

def _resolve(path: str | Path, base: Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists() or p.with_name(p.name + ".json").exists() or p.with_suffix(".json").exists():
        return p
    return base / p


def find_teacher_checkpoint(cfg, student_checkpoint: str | Path, meta: Mapping[str, Any]) -> Path:
    """The teacher of a student checkpoint, first found of:

    1. ``meta["teacher_checkpoint"]`` (relative paths also tried beside the student checkpoint);
    2. ``teacher.safetensors`` beside the student checkpoint (the training stages write it there);
    3. ``<train.out_dir>/teacher.safetensors``;
    4. ``model.teacher_checkpoint`` of the config (a foreign DINOv2 / timm / BoQ file).
    """
    from brevitas_models.checkpoint import checkpoint_paths

    st_dir = checkpoint_paths(student_checkpoint)[0].parent
    if meta.get("teacher_checkpoint"):
        return _resolve(meta["teacher_checkpoint"], st_dir)
    for cand in (st_dir / "teacher", Path(cfg.train.out_dir) / "teacher"):
        if all(p.is_file() for p in checkpoint_paths(cand)):
            return checkpoint_paths(cand)[0]
    if cfg.model.teacher_checkpoint:
        return Path(cfg.model.teacher_checkpoint)
    raise UserError(f"no teacher for {student_checkpoint}: its metadata names no teacher_checkpoint, there is no "
                    f"teacher.safetensors beside it or in train.out_dir ({cfg.train.out_dir}), and the config has "
                    f"no model.teacher_checkpoint")


def load_models(cfg, student_checkpoint: str | Path) -> tuple[nn.Module, nn.Module | None]:
    """(teacher, student) in eval mode: the student from its checkpoint (one of ours), the
    teacher from :func:`find_teacher_checkpoint` (ours, or a foreign DINOv2 / timm / BoQ file).
    A checkpoint with role ``teacher`` gives (teacher, None): teacher-only evaluation."""
    from brevitas_models.checkpoint import checkpoint_paths, load_checkpoint, load_foreign, load_into
    from brevitas_models.model import build_model

    sd, meta = load_checkpoint(student_checkpoint)
    if meta.get("role") == "teacher":
        teacher = build_model(cfg.model, student=False)
        load_into(teacher, sd, source=str(student_checkpoint))
        return teacher.eval(), None
    if meta.get("role") not in (None, "student"):
        raise UserError(f"{student_checkpoint}: unknown checkpoint role {meta.get('role')!r} (teacher or student)")
    student = build_model(cfg.model, student=True)
    load_into(student, sd, source=str(student_checkpoint))
    t_path = find_teacher_checkpoint(cfg, student_checkpoint, meta)
    log.info("teacher checkpoint: %s", t_path)
    teacher = build_model(cfg.model, student=False)
    if checkpoint_paths(t_path)[1].is_file():
        tsd, _ = load_checkpoint(t_path)
        load_into(teacher, tsd, source=str(t_path))
    else:
        load_foreign(teacher, t_path)
    teacher.eval()
    student.eval()
    return teacher, student


def evaluate_checkpoint(cfg, student_checkpoint: str | Path, out_dir: str | Path,
                        sparsities: Sequence[float] | None = None,
                        integer_sparsities: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """``tatvpr eval``: load teacher + student (or only the teacher, given a teacher checkpoint),
    :func:`evaluate_run`, render the report."""
    from tatvpr_hw.report import render_report

    teacher, student = load_models(cfg, student_checkpoint)
    records = evaluate_run(cfg, teacher, student, sparsities, out_dir, integer_sparsities=integer_sparsities)
    render_report(out_dir)
    return records


def parse_sparsity_list(text: str, option: str = "--sparsity") -> list[float]:
    """'0,0.2,0.4' -> [0.0, 0.2, 0.4]; every value in [0, 1)."""
    try:
        vals = [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise UserError(f"{option} must be a comma-separated list of numbers in [0, 1), got {text!r}") from None
    if not vals or any(not (0.0 <= v < 1.0) or math.isnan(v) for v in vals):
        raise UserError(f"{option} must be a comma-separated list of numbers in [0, 1), got {text!r}")
    return vals


# ----------------------------------------------------------------------------- flow steps (tatvpr demo)

def target_check(records: Sequence[Mapping[str, Any]], s: float = 0.4, max_drop_pt: float = 1.0,
                 min_saved_pct: float = 35.0, granularity: str | None = None) -> dict[str, Any] | None:
    """The issue's target: the student at sparsity ``s`` within ``max_drop_pt`` R@1 points of
    s = 0 with at least ``min_saved_pct`` % fewer MACs. None when either row is missing.
    ``granularity``: use that granularity's rows (records without one count as any)."""
    st = {round(r["sparsity"], 6): r for r in records if r["model"] == "student"
          and (granularity is None or r.get("granularity") in (None, granularity))}
    base, at = st.get(0.0), st.get(round(s, 6))
    if base is None or at is None or not base["gmacs"]:
        return None
    drop = base["recall@1"] - at["recall@1"]
    saved = 100.0 * (1.0 - at["gmacs"] / base["gmacs"])
    return {"sparsity": s, "r1_at_0": base["recall@1"], "r1_at_s": at["recall@1"], "r1_drop_pt": round(drop, 4),
            "macs_saved_pct": round(saved, 4), "met": bool(drop <= max_drop_pt and saved >= min_saved_pct)}


def flow_step_data(ctx) -> dict[str, Any]:
    """Flow step: write (or reuse) the synthetic benchmark; summary with the raw-pixel baseline."""
    from tatvpr_hw.data.synthetic import ensure_benchmark

    cfg = ctx.cfg
    if cfg.data.source == "synthetic":
        ensure_benchmark(cfg)
    ev = VPREvalSet(eval_root(cfg.data), 16, cfg.data.positive_radius_m)
    base = pixel_baseline(ev, cfg.eval.recall_at)
    return {"eval_root": str(eval_root(cfg.data)), "database_images": len(ev.database),
            "query_images": len(ev.queries),
            "chance_recall@1": round(chance_recall_at_1(ev.all_positives, len(ev.database)), 4),
            "pixel_baseline": {f"recall@{n}": round(v, 4) for n, v in base.items()}}


def _student_checkpoint_from(ctx) -> Path:
    from brevitas_models.checkpoint import checkpoint_paths

    for name in ("finetune", "train", "distill"):
        res = ctx.results.get(name) or {}
        for key in ("student_checkpoint", "checkpoint", "final"):
            if res.get(key):
                return Path(res[key])
    path = Path(ctx.cfg.train.out_dir) / "finetune"
    if not checkpoint_paths(path)[0].is_file():
        raise UserError(f"no student checkpoint for the eval step: no earlier step result names one and "
                        f"{checkpoint_paths(path)[0]} does not exist (run the training stages first)")
    return path


def flow_step_eval(ctx) -> dict[str, Any]:
    """Flow step: :func:`evaluate_checkpoint` of the fine-tuned student into ``ctx.run_dir``."""
    ck = _student_checkpoint_from(ctx)
    records = evaluate_checkpoint(ctx.cfg, ck, ctx.run_dir)
    student = [r for r in records if r["model"] == "student"]
    by_g: dict[str, dict[str, Any]] = {}
    for r in student:
        by_g.setdefault(r["granularity"], {})[str(r["sparsity"])] = r
    return {"checkpoint": str(ck), "metrics": str(Path(ctx.run_dir) / METRICS_FILE),
            "teacher_recall@1": next((r["recall@1"] for r in records if r["model"] == "teacher"), None),
            "trained_granularity": ctx.cfg.model.sparsity.granularity,
            "student_recall@1": {g: {s: r["recall@1"] for s, r in rows.items()} for g, rows in by_g.items()},
            "student_sim_latency_ms": {g: {s: r["sim_latency_ms"] for s, r in rows.items()}
                                       for g, rows in by_g.items()},
            "student_sim_compute_cycles": {g: {s: r.get("sim_compute_cycles") for s, r in rows.items()}
                                           for g, rows in by_g.items()},
            "student_integer_recall@1": {str(r["sparsity"]): r["recall@1"] for r in records
                                         if r["model"] == "student_integer"},
            "target": target_check(records, granularity=ctx.cfg.model.sparsity.granularity)}


def flow_step_report(ctx) -> dict[str, Any]:
    """Flow step: render ``ctx.run_dir/index.html`` (run it last: it picks up every section JSON)."""
    from tatvpr_hw.report import render_report

    return {"index": str(render_report(ctx.run_dir))}
