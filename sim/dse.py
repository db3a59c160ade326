"""Design-space sweeps over the accelerator description: Pareto fronts under a board constraint.

A sweep file (YAML, validated; unknown keys are named) says which hardware knobs to vary::

    arch: kv260                 # base hardware description: a name in sim/arch/ or a path
                                # (relative paths are taken from the sweep file's folder)
    board: kv260                # optional board constraint (a name in sim/boards/)
    axes:                       # knob -> list of values; aliases below, or any dotted arch path
      pe: [8, 16, 32]
      simd: [16, 32, 64]
      clock_mhz: [200, 300]
      weight_format: [ternary2, ternary1.6]
      skip_mode: [none, act, both]
      buffers.activations_kb: [256, 512]
      compute.gather.banks: [8, 16]   # a combination where banks x ports does not divide simd is an invalid row
    sampling: {mode: grid}      # or {mode: random, n: 200, seed: 0}
    select: {metric: edp}       # best point: edp | latency_ms | energy_mj; optional sparsity: s

A sweep holds at most :data:`MAX_POINTS` (10^6) design points: a larger grid is an input error
naming its size (use random sampling; a sampled grid may have up to 2^62 combinations).
``select.sparsity`` must be the sparsity of one of the traces.

The traces given on the command line are one more axis: one trace per sparsity level (read
from each trace's ``meta["sparsity"]``). Every design point is ``sim.simulate(arch with the
point's overrides, trace)``; the metrics kept per point are listed in :data:`METRIC_COLUMNS`.

Outputs in the sweep folder:

``points.jsonl``      append-only, one flushed JSON line per finished point (the resume log);
                      a rerun skips every point already there, a killed sweep loses none.
``results.csv`` / ``results.parquet``  the table, one row per point of the space, in the
                      space's enumeration order (same table whatever the backend or worker count).
``pareto.png``        latency vs energy per query, Pareto points marked, per sparsity.
``best_point.json``   the chosen design (read by the FINN / bitstream exporters, ``--dse-point``).
``sweep.json``        the resolved sweep (arch path, overrides per axis, traces) and a summary.

Processes: local workers are forked from the driver and die with it whatever ends it (kill -9
included: ``PR_SET_PDEATHSIG`` on Linux, a parent-pid watch elsewhere); Ctrl-C stops them at
once. On Ray a trace travels through the object store and each node caches it under its full
SHA-256, re-hashed before every reuse; a local Ray that the sweep starts itself is reaped with
the driver too (:func:`_start_reaper`).

A point that does not fit the board (sim.resources: any class over ``max_utilisation``) has
``fits`` False and its ``misfit`` column names the class and the buffers using most of it, e.g.
``uram: 60 of 64; largest: activations 36 (uram), outputs 24 (uram)``; it is plotted grey and is
never on the Pareto front or the best point.

A combination of axis values that the hardware description itself rejects (``sim.arch``'s
validators: banks x ports not dividing simd, ``schedule.topk: host`` with ``schedule.handoffs:
onchip``) is **invalid**: it is not simulated, its reason is in column ``invalid`` (the rule, without
the file and overrides) and the sweep counts it apart (``invalid`` / ``invalid_reasons`` in
``sweep.json`` and :func:`dse_summary`, one log line per reason), not as a failure. A valid point
the simulator refuses (e.g. a layer wider than the weight buffer's K_max) has its message in
``error``: a genuine failure, logged as a warning.

Pareto front: among the points that fit the board, per trace (sparsity level: the workloads of
two traces differ in accuracy, so they are not compared with each other), the points that no
other point beats or ties on all of latency (ms), energy per query (mJ) and resource use
(the mean used/available fraction over the board's resource kinds, ``resource_mean``).
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import logging
import math
import os
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import yaml

from sim.arch import load_yaml_mapping, resolve_builtin
from sim.atomic import atomic_write, check_output_dir
from sim.errors import SimInputError

log = logging.getLogger(__name__)

SIM_DIR = Path(__file__).resolve().parent
ARCH_DIR = SIM_DIR / "arch"
BOARD_DIR = SIM_DIR / "boards"

# Short axis names -> dotted paths in the hardware description (sim.arch.with_overrides keys).
AXIS_ALIASES: dict[str, str] = {
    "pe": "compute.pe",
    "simd": "compute.simd",
    "clock_mhz": "clock_mhz",
    "weight_format": "compute.weight_format",
    "skip_mode": "compute.skip_mode",
    "board": "board",
    "int8_rows": "int8_unit.rows",
    "int8_cols": "int8_unit.cols",
    "overlap": "schedule.overlap",
    "tile_tokens": "schedule.tile_tokens",
}
# Columns of the table that best_point.json always names (the exporters' knobs).
POINT_KNOBS = ("pe", "simd", "clock_mhz", "weight_format", "skip_mode", "board")
# Metrics copied from each simulation result (``SimResult.to_dict()``).
METRIC_COLUMNS = ("cycles", "latency_ms", "queries_per_s", "energy_mj", "dram_mb", "fits", "resource_frac",
                  "resource_mean", "critical", "saved_cycles")
# The Pareto objectives (all minimised).
PARETO_OBJECTIVES = ("latency_ms", "energy_mj", "resource_mean")
SELECT_METRICS = ("edp", "latency_ms", "energy_mj")
BACKENDS = ("local", "ray")
DEFAULT_EVALUATOR = "sim.dse:simulate_point"

# At most this many design points per sweep (a grid, or a random sample's n); a grid larger than
# that needs sampling: {mode: random, n: ...}, and even a sampled grid must stay below
# MAX_SAMPLED_GRID combinations (numpy samples int64 indices).
MAX_POINTS = 1_000_000
MAX_SAMPLED_GRID = 2**62

_SWEEP_KEYS = {"arch", "board", "axes", "sampling", "select"}
_SAMPLING_KEYS = {"mode", "n", "seed"}
_SELECT_KEYS = {"metric", "sparsity"}


# ------------------------------------------------------------------------------- sweep spec

@dataclass
class SweepSpec:
    """A validated sweep: base arch file, ordered axes (dotted path -> values), sampling."""

    arch_path: Path
    board: str | None
    axes: dict[str, list]  # column name -> values (column = alias name or dotted path)
    paths: dict[str, str]  # column name -> dotted arch path
    mode: str = "grid"
    n: int | None = None
    seed: int = 0
    select_metric: str = "edp"
    select_sparsity: float | None = None
    source: str = "<sweep>"

    def to_dict(self) -> dict:
        return {"arch": str(self.arch_path), "board": self.board, "axes": self.axes,
                "paths": self.paths, "sampling": {"mode": self.mode, "n": self.n, "seed": self.seed},
                "select": {"metric": self.select_metric, "sparsity": self.select_sparsity}}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.axes.values()) if self.axes else 1

    def points(self) -> list[dict]:
        """The design points (column -> value), grid order or a seeded random sample of the grid."""
        names = list(self.axes)
        total = self.grid_size()
        if self.mode == "grid":
            idx: Iterable[int] = range(total)
        else:
            rng = np.random.default_rng(self.seed)
            take = min(int(self.n), total)
            idx = sorted(int(i) for i in rng.choice(total, size=take, replace=False))
        sizes = [len(self.axes[a]) for a in names]
        out = []
        for flat in idx:
            rem, pt = flat, {}
            for a, size in zip(reversed(names), reversed(sizes)):  # last axis varies fastest
                rem, j = divmod(rem, size)
                pt[a] = self.axes[a][j]
            out.append({a: pt[a] for a in names})
        return out


def _resolve_named(value: str, base_dir: Path, lib_dir: Path, what: str) -> Path:
    p = Path(value)
    for cand in (p if p.is_absolute() else base_dir / p, lib_dir / p, lib_dir / f"{value}.yaml"):
        if cand.is_file():
            return cand.resolve()
    known = sorted(q.stem for q in lib_dir.glob("*.yaml")) if lib_dir.is_dir() else []
    raise SimInputError(f"{what} {value!r} not found (looked in {base_dir} and {lib_dir}); "
                        f"known names: {', '.join(known) or 'none'}")


def _scalar_ok(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and not math.isfinite(v))


def _section(data: dict, key: str, allowed: set[str], source: str, hint: str, default: dict) -> dict:
    """The optional sub-mapping ``data[key]`` (``default`` when absent), unknown keys named."""
    sec = data.get(key) or default
    if not isinstance(sec, dict):
        raise SimInputError(f"{source}: '{key}' must be a mapping ({hint})")
    unknown = sorted(set(sec) - allowed)
    if unknown:
        raise SimInputError(f"{source}: unknown key(s) {key}.{(', ' + key + '.').join(unknown)}; "
                            f"allowed: {', '.join(sorted(allowed))}")
    return sec


def parse_sweep(data: Any, source: str = "<sweep>", base_dir: Path | None = None) -> SweepSpec:
    """Validate a sweep mapping; raise :class:`SimInputError` naming the bad key and what is allowed."""
    base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
    if not isinstance(data, dict):
        raise SimInputError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _SWEEP_KEYS)
    if unknown:
        raise SimInputError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                            f"allowed: {', '.join(sorted(_SWEEP_KEYS))}")
    if not isinstance(data.get("arch"), str) or not data["arch"]:
        raise SimInputError(f"{source}: 'arch' must name the base hardware description "
                            "(a name in sim/arch/ or a YAML path)")
    arch_path = _resolve_named(data["arch"], base_dir, ARCH_DIR, f"{source}: arch")
    board = data.get("board")
    if board is not None:
        if not isinstance(board, str) or not board:
            raise SimInputError(f"{source}: 'board' = {board!r}: must be a board name (sim/boards/*.yaml)")
        if BOARD_DIR.is_dir():
            _resolve_named(board, base_dir, BOARD_DIR, f"{source}: board")

    axes_in = data.get("axes") or {}
    if not isinstance(axes_in, dict):
        raise SimInputError(f"{source}: 'axes' must be a mapping of knob -> list of values")
    axes: dict[str, list] = {}
    paths: dict[str, str] = {}
    for name, values in axes_in.items():
        if not isinstance(name, str) or not name:
            raise SimInputError(f"{source}: axis name {name!r} must be a string")
        if name == "sparsity":
            raise SimInputError(f"{source}: axes.sparsity: the sparsity axis comes from the traces "
                                "(one --trace per sparsity level), not from the sweep file")
        if name == "board" and board is not None:
            raise SimInputError(f"{source}: give either 'board' or axes.board, not both")
        if name not in AXIS_ALIASES and "." not in name:
            raise SimInputError(f"{source}: unknown axis {name!r}; allowed: "
                                f"{', '.join(AXIS_ALIASES)} or a dotted path into the arch file "
                                "(e.g. buffers.act_kb)")
        if not isinstance(values, list) or not values:
            raise SimInputError(f"{source}: axes.{name} must be a non-empty list of values, got {values!r}")
        for v in values:
            if not _scalar_ok(v):
                raise SimInputError(f"{source}: axes.{name} value {v!r}: must be a number or a string")
        if len(set(map(repr, values))) != len(values):
            raise SimInputError(f"{source}: axes.{name} lists a value twice: {values}")
        if name in ("pe", "simd", "clock_mhz") and any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in values):
            raise SimInputError(f"{source}: axes.{name} = {values}: every value must be a number > 0")
        axes[name] = list(values)
        paths[name] = AXIS_ALIASES.get(name, name)

    sampling = _section(data, "sampling", _SAMPLING_KEYS, source, "mode: grid | random, n, seed",
                        {"mode": "grid"})
    mode = sampling.get("mode", "grid")
    if mode not in ("grid", "random"):
        raise SimInputError(f"{source}: sampling.mode = {mode!r}; allowed: grid, random")
    n = sampling.get("n")
    seed = sampling.get("seed", 0)
    if mode == "random":
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SimInputError(f"{source}: sampling.n = {n!r}: random sampling needs an integer n >= 1")
    elif n is not None:
        raise SimInputError(f"{source}: sampling.n is only used with mode: random")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise SimInputError(f"{source}: sampling.seed = {seed!r}: must be an integer in [0, 2^63)")

    total = math.prod(len(v) for v in axes.values()) if axes else 1
    if mode == "grid" and total > MAX_POINTS:
        raise SimInputError(f"{source}: the grid has {total:.3g} design points ({' x '.join(str(len(v)) for v in axes.values())}); "
                            f"allowed: at most {MAX_POINTS:,} per sweep (use sampling: {{mode: random, n: ...}})")
    if mode == "random" and n > MAX_POINTS:
        raise SimInputError(f"{source}: sampling.n = {n}: at most {MAX_POINTS:,} design points per sweep")
    if mode == "random" and total > MAX_SAMPLED_GRID:
        raise SimInputError(f"{source}: the grid has {total:.3g} combinations; allowed: at most 2^62 = "
                            f"{MAX_SAMPLED_GRID:.3g} to sample from (fewer axes or values)")

    select = _section(data, "select", _SELECT_KEYS, source, "metric, sparsity", {})
    metric = select.get("metric", "edp")
    if metric not in SELECT_METRICS:
        raise SimInputError(f"{source}: select.metric = {metric!r}; allowed: {', '.join(SELECT_METRICS)}")
    sel_s = select.get("sparsity")
    if sel_s is not None and (isinstance(sel_s, bool) or not isinstance(sel_s, (int, float))
                              or not math.isfinite(sel_s) or not 0 <= sel_s < 1):
        raise SimInputError(f"{source}: select.sparsity = {sel_s!r}: must be in [0, 1)")
    return SweepSpec(arch_path, board, axes, paths, mode, n, seed, metric,
                     None if sel_s is None else float(sel_s), source)


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a sweep YAML file (a bare name like ``kv260_small`` means ``sim/sweeps/kv260_small.yaml``)."""
    path = resolve_builtin(path, SIM_DIR / "sweeps", "sweep")
    return parse_sweep(load_yaml_mapping(path, "sweep"), str(path), path.parent)


# ------------------------------------------------------------------------------ evaluation

@dataclass(frozen=True)
class TraceInfo:
    """One trace of the sweep: its path, content hash and sparsity level."""

    path: str
    sha256: str
    sparsity: float | None
    label: str


def describe_traces(paths: Sequence[str | os.PathLike]) -> list[TraceInfo]:
    """Read each trace (validating it), note its sparsity from ``meta``; reject duplicates."""
    from sim.trace import read_trace

    infos: list[TraceInfo] = []
    seen: dict[str, str] = {}
    for p in paths:
        p = Path(p)
        tr = read_trace(p)
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        if sha in seen:
            raise SimInputError(f"--trace {p} is the same file as {seen[sha]}; give each trace once")
        seen[sha] = str(p)
        s = tr.meta.get("sparsity")
        s = float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else None
        infos.append(TraceInfo(str(p.resolve()), sha, s, p.name))
    labels = [i.sparsity for i in infos]
    if len(infos) > 1 and len(set(labels)) != len(labels):
        log.warning("several traces have the same sparsity %s; they are told apart by file name", labels)
    return infos


def point_key(arch_sha: str, board: str | None, trace_sha: str, params: dict) -> str:
    """Stable id of a design point: hash of the base arch, board, trace content and knob values."""
    blob = json.dumps({"arch": arch_sha, "board": board, "trace": trace_sha, "params": params},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v)):
        return float(v)
    return None


def point_metrics(result: dict) -> dict:
    """The table's metrics from one ``SimResult.to_dict()``.

    ``cycles``, ``latency_ms``, ``queries_per_s``, ``energy_mj`` are copied; ``dram_mb``: the result's
    ``dram_bytes`` / 1e6 (every DRAM byte of the query, hand-offs through DRAM included; absent when the
    result has none). Board fit and
    resources are read from ``result["resources"]``: ``fits`` (bool; a result without resource
    information counts as fitting) and the used/available fraction per resource kind, either as
    ``{"utilisation": {"lut": 0.4, ...}}`` (sim.resources) or ``{"used": {...}, "available": {...}}``;
    ``resource_frac`` is the largest fraction (what limits the fit), ``resource_mean`` the mean
    fraction over the kinds (the Pareto's resource objective: a design that saves LUTs while the
    buffers' URAM stays the same is better), and each kind becomes a ``util_<kind>`` column.
    From the ``schedule`` block (docs/simulator.md): ``critical`` (the unit, or ``dram``, that bound
    most of the query's cycles), ``saved_cycles`` (the overlap's saving against the same ops in
    sequence), ``busy_<unit>`` and ``busy_dram_port`` (cycles each was busy).
    """
    missing = [k for k in ("cycles", "latency_ms", "queries_per_s", "energy_mj") if k not in result]
    if missing:
        raise SimInputError(f"simulation result lacks {', '.join(missing)}")
    out = {k: result[k] for k in ("cycles", "latency_ms", "queries_per_s", "energy_mj")}
    if _num(result.get("dram_bytes")) is not None:
        out["dram_mb"] = result["dram_bytes"] / 1e6
    res = result.get("resources") or {}
    util: dict[str, float] = {}
    if isinstance(res, dict):
        given = res.get("utilisation", res.get("util"))
        if isinstance(given, dict):
            util = {k: float(v) for k, v in given.items() if _num(v) is not None}
        elif isinstance(res.get("used"), dict) and isinstance(res.get("available"), dict):
            for k, used in res["used"].items():
                avail = _num(res["available"].get(k))
                if _num(used) is not None and avail:
                    util[k] = float(used) / avail
    fits = result.get("fits", res.get("fits") if isinstance(res, dict) else None)
    if fits is None:
        fits = all(v <= 1.0 for v in util.values())
    out["fits"] = bool(fits)
    why = res.get("why") if isinstance(res, dict) else None
    out["misfit"] = "; ".join(why) if why else ("" if fits else "over the board (no reason given)")
    out["resource_frac"] = max(util.values()) if util else float("nan")
    out["resource_mean"] = sum(util.values()) / len(util) if util else float("nan")
    for k, v in sorted(util.items()):
        out[f"util_{k}"] = v
    sched = result.get("schedule")
    if isinstance(sched, dict):  # sim.schedule.schedule_summary: why the point runs at its rate
        out["critical"] = sched["critical"]
        out["saved_cycles"] = sched["saved_cycles"]
        for unit, c in sched["busy_cycles_by_unit"].items():
            out[f"busy_{unit}"] = c
        out["busy_dram_port"] = sched["dram_cycles"]
    return out


_ARCH_CACHE: dict[str, Any] = {}


def simulate_point(arch_path: str, overrides: dict, trace: Any) -> dict:
    """Default evaluator: ``sim.simulate(with_overrides(load_arch(arch_path), overrides), trace)``."""
    from sim.simulator import simulate  # B1 engine, imported in the worker
    from sim.arch import load_arch, with_overrides

    if arch_path not in _ARCH_CACHE:
        _ARCH_CACHE[arch_path] = load_arch(arch_path)
    arch = with_overrides(_ARCH_CACHE[arch_path], overrides) if overrides else _ARCH_CACHE[arch_path]
    return simulate(arch, trace).to_dict()


def resolve_evaluator(ref: str) -> Callable[[str, dict, Any], dict]:
    """``"module:function"`` -> the function."""
    mod, _, fn = ref.partition(":")
    if not mod or not fn:
        raise SimInputError(f"evaluator {ref!r}: expected 'module:function'")
    return getattr(importlib.import_module(mod), fn)


# Per-process state of a worker: evaluator, arch path, traces by sha.
_WORKER: dict[str, Any] = {}


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def trace_cache_path(sha: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where a worker node keeps a trace shipped through Ray's object store: named by its full
    SHA-256 (the name alone is never trusted: :func:`_materialise_trace` re-hashes the file)."""
    return Path(cache_dir or tempfile.gettempdir()) / f"tatvpr-dse-{sha}.npz"


def _materialise_trace(sha: str, data: bytes | None, path: str, cache_dir: str | None = None) -> Any:
    from sim.trace import read_trace

    traces = _WORKER.setdefault("traces", {})
    if sha not in traces:
        if data is not None:  # shipped through Ray's object store: write once per node
            if hashlib.sha256(data).hexdigest() != sha:
                raise SimInputError(f"trace {path}: the bytes shipped to the worker do not have SHA-256 {sha}")
            cache = trace_cache_path(sha, cache_dir)
            # a file of that name from another run, a truncated write or a foreign file: rewrite it
            if _file_sha256(cache) != sha:
                atomic_write(cache, lambda tmp: tmp.write_bytes(data), "trace cache")
            path = str(cache)
        traces[sha] = read_trace(path)
    return traces[sha]


def arch_rejects(arch_path: str, overrides: dict) -> str:
    """Why the hardware description rejects a point's axis values, or ``""`` when
    ``with_overrides(load_arch(arch_path), overrides)`` validates. The reason is the rule broken
    (e.g. ``schedule: schedule.topk = 'host' needs schedule.handoffs = 'dram' ...``), without the
    file and overrides prefix, so equal reasons of different points read the same. An arch file that
    does not load at all is not a property of the point: its error propagates."""
    from sim.arch import load_arch, with_overrides

    if arch_path not in _ARCH_CACHE:
        _ARCH_CACHE[arch_path] = load_arch(arch_path)
    base = _ARCH_CACHE[arch_path]
    try:
        with_overrides(base, overrides)
    except SimInputError as err:
        prefix = f"{base.source} (with overrides {overrides}): "
        return "\n".join(line.removeprefix(prefix) for line in str(err).splitlines()) or "rejected"
    return ""


def _eval_chunk(evaluator: str, arch_path: str, chunk: list[dict],
                trace_blobs: dict[str, tuple[str, bytes | None]]) -> list[dict]:
    """Evaluate a list of point jobs in this process; return their table rows. A point whose axis
    values the arch rejects (:func:`arch_rejects`) is not evaluated: its row has the reason in
    ``invalid``; a valid point the evaluator refuses has the message in ``error``."""
    fn = resolve_evaluator(evaluator)
    rows = []
    for job in chunk:
        path, data = trace_blobs[job["trace_sha"]]
        trace = _materialise_trace(job["trace_sha"], data, path)
        t0 = time.perf_counter()
        row = {"key": job["key"], "index": job["index"], "trace": job["trace"],
               "sparsity": job["sparsity"], **job["params"]}
        why = arch_rejects(arch_path, job["overrides"])
        if why:  # a combination the hardware description forbids: invalid, not a failure
            row.update({k: float("nan") for k in METRIC_COLUMNS}, fits=False, misfit="", error="", invalid=why)
        else:
            try:
                row.update(point_metrics(fn(arch_path, job["overrides"], trace)), error="", invalid="")
            except SimInputError as err:  # a valid point the simulator refuses: a failed point, not a crash
                row.update({k: float("nan") for k in METRIC_COLUMNS}, fits=False, misfit="", error=str(err),
                           invalid="")
        row["sim_s"] = time.perf_counter() - t0
        rows.append(row)
    return rows


def check_axes(spec: SweepSpec, max_tries: int = 512) -> None:
    """Apply every axis value to the base arch, so a bad value fails before the sweep.

    A value is tried alone, then (if alone it is invalid) together with the other axes' values
    (up to ``max_tries`` combinations): a value valid only with another axis's value (ports 2
    with banks 16, a bank count that divides some simd of the sweep) is kept; a combination that
    is invalid becomes an invalid row of the table (column ``invalid``, not simulated), not a crash.
    """
    from sim.arch import load_arch, with_overrides

    base = load_arch(spec.arch_path)
    if spec.board is not None:
        base = with_overrides(base, {AXIS_ALIASES["board"]: spec.board})
    for name, values in spec.axes.items():
        others = [a for a in spec.axes if a != name]
        for v in values:
            try:
                with_overrides(base, {spec.paths[name]: v})
                continue
            except SimInputError as err:
                first = err
            combos = itertools.islice(itertools.product(*(spec.axes[a] for a in others)), max_tries)
            for combo in combos:
                try:
                    with_overrides(base, {spec.paths[name]: v, **{spec.paths[a]: c for a, c in zip(others, combo)}})
                    break
                except SimInputError:
                    continue
            else:
                raise SimInputError(f"{spec.source}: axes.{name} value {v!r} is not a valid "
                                    f"{spec.paths[name]} of {spec.arch_path.name}: {first}") from None


# ------------------------------------------------------------------------------ persistence

def read_done(jsonl: Path) -> dict[str, dict]:
    """Finished points of a sweep log, by key. A torn last line (killed mid-write) is ignored."""
    done: dict[str, dict] = {}
    if not jsonl.is_file():
        return done
    with jsonl.open("r") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: ignoring an incomplete line (a killed run)", jsonl)
                continue
            if isinstance(row, dict) and "key" in row:
                done[row["key"]] = row
    return done


class _Log:
    """Append-only JSONL; every row is one write + flush + fsync, so a kill loses no finished point."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a torn last line from a killed run: start the next row on a fresh line
        needs_nl = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        self.fh = path.open("a")
        if needs_nl:
            self.fh.write("\n")

    def write(self, row: dict) -> None:
        self.fh.write(json.dumps(row, default=_json_default) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    return atomic_write(path, write)


def _write_json(path: Path, obj: Any) -> Path:
    return _atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n"))


# ------------------------------------------------------------------------------ Pareto + pick

def pareto_mask(costs: np.ndarray) -> np.ndarray:
    """bool ``[P]``: rows of ``costs [P, D]`` (lower is better) not dominated by any other row.

    Row ``j`` dominates ``i`` when it is <= on every objective and < on at least one. Equal
    rows do not dominate each other (both stay). NaN objectives are treated as 0 (absent).
    """
    c = np.nan_to_num(np.asarray(costs, dtype=np.float64), nan=0.0)
    p = len(c)
    keep = np.ones(p, dtype=bool)
    for i in range(p):
        le = np.all(c <= c[i], axis=1)
        lt = np.any(c < c[i], axis=1)
        if np.any(le & lt):
            keep[i] = False
    return keep


def _pick_best(df, metric: str, sparsity: float | None):
    cand = df[df["fits"].astype(bool)]
    if sparsity is not None:
        cand = cand[np.isclose(cand["sparsity"].astype(float), sparsity)]
    if cand.empty:
        return None
    score = cand["latency_ms"] * cand["energy_mj"] if metric == "edp" else cand[metric]
    return cand.loc[score.astype(float).idxmin()]


# ------------------------------------------------------------------------------ the sweep

@dataclass
class SweepResult:
    """What :func:`run_sweep` wrote and the table it built."""

    out_dir: Path
    table: Any  # pandas.DataFrame
    best: dict | None
    evaluated: int
    skipped: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)


def build_jobs(spec: SweepSpec, traces: Sequence[TraceInfo]) -> list[dict]:
    """All point jobs of the space, in order: traces outer, design points inner."""
    arch_sha = hashlib.sha256(spec.arch_path.read_bytes()).hexdigest()
    jobs = []
    pts = spec.points()
    for t in traces:
        for params in pts:
            overrides = {spec.paths[a]: v for a, v in params.items()}
            if spec.board is not None:
                overrides[AXIS_ALIASES["board"]] = spec.board
            jobs.append({"index": len(jobs), "trace": t.label, "trace_sha": t.sha256,
                         "sparsity": t.sparsity, "params": params, "overrides": overrides,
                         "key": point_key(arch_sha, spec.board, t.sha256, params)})
    return jobs


def _chunks(seq: list, size: int) -> list[list]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def _run_local(jobs, spec, traces, evaluator, workers, chunk, on_rows, progress) -> None:
    blobs = {t.sha256: (t.path, None) for t in traces}
    if workers <= 1:
        for c in _chunks(jobs, chunk):
            on_rows(_eval_chunk(evaluator, str(spec.arch_path), c, blobs))
        return
    import multiprocessing as mp

    # fork: the workers run numpy-only code, start fast and need no `if __name__ == "__main__"`
    # guard in the caller's script (spawn/forkserver re-import __main__); spawn where no fork.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(os.getpid(),))
    try:
        pending = {pool.submit(_eval_chunk, evaluator, str(spec.arch_path), c, blobs)
                   for c in _chunks(jobs, chunk)}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_rows(fut.result())
    except BaseException:  # Ctrl-C, a failed point, SystemExit: stop the workers now, do not drain
        _kill_pool(pool)
        raise
    pool.shutdown(wait=True)


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    procs = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(timeout=5)


def _worker_init(parent_pid: int) -> None:
    """Tie a pool worker's life to its driver's.

    On Linux the kernel sends SIGKILL to the worker when the driver dies by any signal (kill -9
    included: PR_SET_PDEATHSIG); elsewhere, and as a second line, a daemon thread polls the
    parent pid. Ctrl-C goes to the whole process group: the workers ignore it and the driver,
    which gets it too, stops them (:func:`_kill_pool`).
    """
    import signal
    import sys
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the poll below still works
            pass
    if os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="tatvpr-dse-parent-watch", daemon=True).start()


def _run_ray(jobs, spec, traces, evaluator, workers, chunk, on_rows, progress) -> None:
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            _start_reaper()
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    # traces travel through the object store, so workers on other nodes need no shared disk
    blobs = {t.sha256: (t.path, Path(t.path).read_bytes()) for t in traces}
    blobs_ref = ray.put(blobs)
    remote = ray.remote(num_cpus=1)(_eval_chunk)
    pending = [remote.remote(evaluator, str(spec.arch_path), c, blobs_ref) for c in _chunks(jobs, chunk)]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            on_rows(ray.get(ref))


# Run by a process the driver starts with a pipe on its stdin: while the driver lives it notes the
# driver's descendants (pid and start time) every half second; when the pipe closes (the driver
# ended, by any signal) it kills those still running. Ray's own local processes do not all die
# with the driver: after a kill -9 its dashboard and runtime-env agents were left running.
_REAPER = """
import os, signal, sys, threading, time
root, me, seen = int(sys.argv[1]), os.getpid(), {}
def table():
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = open("/proc/" + d + "/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(d)] = (int(f[1]), f[19])
    return out
def note():
    procs, tree, grew = table(), {root}, True
    while grew:
        grew = False
        for pid, (ppid, _) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    for pid in tree - {root, me}:
        seen[pid] = procs[pid][1]
def watch():
    while True:
        note()
        time.sleep(0.5)
threading.Thread(target=watch, daemon=True).start()
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.stdin.buffer.read()
time.sleep(1.0)
now = table()
for pid, start in list(seen.items()):
    if pid in now and now[pid][1] == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""
_REAPER_PROC: list = []


def _start_reaper() -> None:
    """Start the reaper of :data:`_REAPER` (Linux, once per driver)."""
    import subprocess
    import sys

    if _REAPER_PROC or not Path("/proc/self/stat").exists():
        return
    _REAPER_PROC.append(subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid())],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL))


def run_sweep(spec: SweepSpec, trace_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
              backend: str = "local", workers: int | None = None, evaluator: str = DEFAULT_EVALUATOR,
              chunk: int | None = None, progress: bool = True, plot: bool = True,
              limit: int | None = None) -> SweepResult:
    """Run (or resume) a sweep; write the table, plot and best point into ``out_dir``.

    ``workers`` processes (default: CPU count) evaluate the points, locally or as Ray tasks.
    ``limit`` evaluates at most that many new points and stops (a partial run, as if killed).
    """
    if backend not in BACKENDS:
        raise SimInputError(f"--backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if not trace_paths:
        raise SimInputError("a sweep needs at least one --trace")
    workers = max(1, int(workers or os.cpu_count() or 1))
    t0 = time.perf_counter()
    out = check_output_dir(out_dir, "--out")
    traces = describe_traces(trace_paths)
    if spec.select_sparsity is not None and not any(
            t.sparsity is not None and math.isclose(t.sparsity, spec.select_sparsity, abs_tol=1e-9) for t in traces):
        have = sorted({t.sparsity for t in traces if t.sparsity is not None})
        raise SimInputError(f"{spec.source}: select.sparsity = {spec.select_sparsity:g} matches no trace; "
                            f"allowed: the sparsity of a --trace ({', '.join(f'{s:g}' for s in have) or 'none has meta.sparsity'})")
    if evaluator == DEFAULT_EVALUATOR:
        check_axes(spec)
    jobs = build_jobs(spec, traces)
    out.mkdir(parents=True, exist_ok=True)  # only now: a rejected sweep leaves no folder behind
    jsonl = out / "points.jsonl"
    done = read_done(jsonl)
    todo = [j for j in jobs if j["key"] not in done]
    skipped = len(jobs) - len(todo)
    if limit is not None:
        todo = todo[:max(0, int(limit))]
    chunk = chunk or max(1, min(32, math.ceil(len(todo) / (workers * 8)) if todo else 1))
    log.info("sweep: %d points (%d design points x %d traces), %d already done, %d to run on %s x%d",
             len(jobs), len(jobs) // max(1, len(traces)), len(traces), skipped, len(todo), backend, workers)

    from tqdm import tqdm

    writer = _Log(jsonl)
    bar = tqdm(total=len(jobs), initial=skipped, desc="dse", unit="pt", disable=not progress)

    def on_rows(rows: list[dict]) -> None:
        for r in rows:
            writer.write(r)
            done[r["key"]] = r
        bar.update(len(rows))

    try:
        if todo:
            runner = _run_local if backend == "local" else _run_ray
            runner(todo, spec, traces, evaluator, workers, chunk, on_rows, progress)
    finally:
        bar.close()
        writer.close()

    result = finalize(spec, traces, jobs, done, out, plot=plot)
    result.evaluated, result.skipped = len(todo), skipped
    result.seconds = time.perf_counter() - t0
    summary_path = out / "sweep.json"
    _write_json(summary_path, {"spec": spec.to_dict(), "source": spec.source,
                               "traces": [t.__dict__ for t in traces], "backend": backend,
                               "workers": workers, "points": len(jobs), "finished": int(len(result.table)),
                               "evaluated_this_run": result.evaluated, "skipped": skipped,
                               "invalid": int((result.table["invalid"] != "").sum()),
                               "invalid_reasons": invalid_reasons(result.table),
                               "seconds": round(result.seconds, 3), "best": result.best})
    result.files["summary"] = summary_path
    return result


def invalid_reasons(df) -> dict[str, int]:
    """Rows per reason in column ``invalid`` (combinations the arch rejects), most frequent first."""
    if "invalid" not in df.columns:
        return {}
    col = df["invalid"].fillna("").astype(str)
    counts = col[col != ""].value_counts(sort=True)
    return {str(k): int(v) for k, v in counts.items()}


def finalize(spec: SweepSpec, traces: Sequence[TraceInfo], jobs: list[dict], done: dict[str, dict],
             out: Path, plot: bool = True) -> SweepResult:
    """Build the table (finished points of this space, in space order), Pareto flags, files."""
    import pandas as pd

    rows = [dict(done[j["key"]], index=j["index"]) for j in jobs if j["key"] in done]
    axis_cols = list(spec.axes)
    if rows:
        df = pd.DataFrame(rows).sort_values("index", kind="stable").reset_index(drop=True)
    else:
        df = pd.DataFrame(columns=["index", "key", "trace", "sparsity", *axis_cols, *METRIC_COLUMNS])
    if "board" not in df.columns:
        df["board"] = spec.board or _arch_board(spec.arch_path)
    df["pareto"] = False
    for _, grp in df.groupby("trace", sort=False):
        fit = grp[grp["fits"].astype(bool)]
        if len(fit):
            costs = fit[list(PARETO_OBJECTIVES)].to_numpy(dtype=np.float64)
            df.loc[fit.index[pareto_mask(costs)], "pareto"] = True
    df = df.drop(columns=["sim_s"], errors="ignore")
    for col in ("misfit", "critical"):
        if col in df.columns:
            df[col] = df[col].fillna("")
    for col in ("error", "invalid"):  # a log written before the column: ""
        df[col] = df[col].fillna("").astype(str) if col in df.columns else ""
    failed, invalid = df[df["error"] != ""], df[df["invalid"] != ""]
    if len(df) and len(failed) + len(invalid) == len(df):
        first = failed["error"].iloc[0] if len(failed) else f"invalid: {invalid['invalid'].iloc[0]}"
        raise SimInputError(f"every design point failed or is invalid; the first: {first}")
    for reason, n in invalid_reasons(df).items():
        log.info("%d of %d points are invalid (the arch rejects the combination, column 'invalid'; not "
                 "simulated): %s", n, len(df), reason)
    if len(failed):
        log.warning("%d of %d points failed (column 'error'); the first: %s", len(failed), len(df),
                    failed["error"].iloc[0])
    files: dict[str, Path] = {}
    files["csv"] = _atomic_write(out / "results.csv", lambda p: df.to_csv(p, index=False))
    files["parquet"] = _atomic_write(out / "results.parquet", lambda p: df.to_parquet(p, index=False))
    best = None
    if len(df) == len(jobs) and len(df):
        row = _pick_best(df, spec.select_metric, spec.select_sparsity)
        if row is not None:
            best = _best_point(spec, row, df)
            files["best"] = _write_json(out / "best_point.json", best)
        else:
            log.warning("no design point fits the board; best_point.json not written")
    elif len(df) < len(jobs):
        log.warning("sweep incomplete (%d of %d points); rerun to finish it", len(df), len(jobs))
    if plot and df["latency_ms"].notna().any():
        files["plot"] = plot_pareto(df[df["latency_ms"].notna()], out / "pareto.png", title=f"{spec.arch_path.stem} sweep (simulated)")
    return SweepResult(out, df, best, 0, 0, 0.0, files)


def _arch_board(arch_path: Path) -> str | None:
    try:
        data = yaml.safe_load(arch_path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    b = data.get("board") if isinstance(data, dict) else None
    return b if isinstance(b, str) else (b.get("name") if isinstance(b, dict) else None)


def _arch_value(arch_path: Path, dotted: str) -> Any:
    try:
        node: Any = yaml.safe_load(arch_path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _best_point(spec: SweepSpec, row, df) -> dict:
    """best_point.json: the knobs the exporters need, the metrics and where they came from."""
    point: dict[str, Any] = {}
    for knob in POINT_KNOBS:
        if knob in row.index and _py(row[knob]) is not None:
            point[knob] = _py(row[knob])
        else:  # not swept: the base arch's value
            point[knob] = _arch_value(spec.arch_path, AXIS_ALIASES[knob]) if knob != "board" \
                else (spec.board or _arch_board(spec.arch_path))
    overrides = {spec.paths[a]: _py(row[a]) for a in spec.axes}
    metrics = {k: _py(row[k]) for k in df.columns
               if k in METRIC_COLUMNS or str(k).startswith(("util_", "busy_"))}
    return {"format": "tatvpr-dse-point", "version": 1, **point,
            "sparsity": _py(row["sparsity"]), "trace": _py(row["trace"]),
            "arch": str(spec.arch_path), "overrides": overrides, "metrics": metrics,
            "selected_by": spec.select_metric, "pareto": bool(row["pareto"])}


def read_best_point(path: str | os.PathLike) -> dict:
    """Read ``best_point.json`` (for ``--dse-point``); raise :class:`SimInputError` if malformed."""
    path = Path(path)
    if not path.is_file():
        raise SimInputError(f"design point file not found: {path}")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SimInputError(f"{path}: not JSON: {err}") from None
    if not isinstance(d, dict) or d.get("format") != "tatvpr-dse-point":
        raise SimInputError(f"{path}: not a design point written by `tatvpr dse` (format tatvpr-dse-point)")
    missing = [k for k in ("pe", "simd", "clock_mhz", "weight_format", "skip_mode", "board", "metrics")
               if k not in d]
    if missing:
        raise SimInputError(f"{path}: missing field(s) {', '.join(missing)}")
    return d


# ---------------------------------------------------------------------------------- plot

def plot_pareto(df, path: Path, title: str = "design-space sweep (simulated)") -> Path:
    """Latency vs energy per query; one colour per sparsity, Pareto points ringed, misfits grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 5.2), dpi=150)  # the report shows figures 8 in x 150 dpi = 1200 px wide
    fits = df["fits"].astype(bool)
    if (~fits).any():
        ax.scatter(df.loc[~fits, "latency_ms"], df.loc[~fits, "energy_mj"], s=10, c="0.8",
                   label="does not fit the board")
    cmap = plt.get_cmap("viridis")
    groups = list(df[fits].groupby("trace", sort=False))
    for i, (label, grp) in enumerate(groups):
        s = grp["sparsity"].iloc[0]
        name = f"s = {s:g}" if isinstance(s, (int, float)) and not pd_isnan(s) else str(label)
        color = cmap(i / max(1, len(groups) - 1))
        ax.scatter(grp["latency_ms"], grp["energy_mj"], s=12, color=color, alpha=0.6, label=name)
        front = grp[grp["pareto"].astype(bool)].sort_values("latency_ms")
        ax.plot(front["latency_ms"], front["energy_mj"], "o-", mfc="none", color=color, ms=7, lw=1)
    ax.set_xlabel("latency per query (ms)")
    ax.set_ylabel("energy per query (mJ)")
    ax.set_title(title)
    if len(df) and (df["latency_ms"] > 0).all() and (df["energy_mj"] > 0).all():
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path


def pd_isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------- report summary

REPORT_FORMAT = "tatvpr-dse-summary"
PARETO_TABLE_COLUMNS = ("cycles", "latency_ms", "queries_per_s", "energy_mj", "resource_frac", "resource_mean")


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies under it (POSIX form), else its absolute path."""
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def dse_summary(sweep_dir: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> dict:
    """The report's view of a finished sweep folder (what ``run_dir/dse.json`` holds).

    Reads ``results.csv``, ``sweep.json`` and ``best_point.json`` (when present) of
    ``sweep_dir``; paths in the result are relative to ``run_dir`` (default: the sweep
    folder's parent). Keys: ``format``, ``version``, ``simulated`` (always true),
    ``arch`` (base arch file), ``sweep`` (the sweep file), ``board``, ``axes`` (column ->
    values), ``select`` (metric, sparsity), ``points`` (rows), ``fit`` (rows that fit the
    board), ``failed`` (valid rows the simulator refused), ``invalid`` (rows whose combination the
    arch rejects, not simulated) and ``invalid_reasons`` (reason -> rows), ``per_trace`` (trace, sparsity, points,
    fit, pareto), ``pareto`` (the Pareto points: trace, sparsity, axis values and
    :data:`PARETO_TABLE_COLUMNS`, sorted by sparsity then latency), ``best`` (best_point.json
    or null), ``plot`` (pareto.png or null), ``table`` / ``sweep_json`` / ``best_point``
    (file paths), ``seconds`` (the sweep's run time).
    """
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    run_dir = Path(run_dir) if run_dir is not None else sweep_dir.parent
    csv = sweep_dir / "results.csv"
    if not csv.is_file():
        raise SimInputError(f"{csv}: no sweep results (run `tatvpr dse --out {sweep_dir}` first)")
    df = pd.read_csv(csv, keep_default_na=True)
    for col in ("trace", "fits", "pareto", "latency_ms", "energy_mj"):
        if col not in df.columns:
            raise SimInputError(f"{csv}: column {col!r} missing; not a table written by `tatvpr dse`")
    meta = json.loads((sweep_dir / "sweep.json").read_text()) if (sweep_dir / "sweep.json").is_file() else {}
    spec = meta.get("spec", {})
    axes = spec.get("axes") or {}
    best_path = sweep_dir / "best_point.json"
    best = read_best_point(best_path) if best_path.is_file() else None
    plot = sweep_dir / "pareto.png"

    fits = df["fits"].astype(bool)
    pareto = df["pareto"].astype(bool)
    err = df["error"].fillna("").astype(str) if "error" in df.columns else pd.Series([""] * len(df))
    per_trace = []
    for trace, grp in df.groupby("trace", sort=False):
        per_trace.append({"trace": Path(str(trace)).name, "sparsity": _py(grp["sparsity"].iloc[0]),
                          "points": int(len(grp)), "fit": int(fits[grp.index].sum()),
                          "pareto": int(pareto[grp.index].sum())})
    cols = [c for c in axes if c in df.columns] + [c for c in PARETO_TABLE_COLUMNS if c in df.columns]
    front = df[pareto].sort_values(["sparsity", "latency_ms"], kind="stable")
    rows = [{"trace": Path(str(r["trace"])).name, "sparsity": _py(r["sparsity"]),
             **{c: _py(r[c]) for c in cols}} for _, r in front.iterrows()]
    if best is not None:
        best = {**best, "trace": Path(str(best.get("trace"))).name, "arch": _rel(Path(best["arch"]), SIM_DIR.parent)}
    return {
        "format": REPORT_FORMAT, "version": 1, "simulated": True,
        "arch": _rel(Path(spec["arch"]), SIM_DIR.parent) if spec.get("arch") else None,
        "sweep": (None if not meta.get("source") else meta["source"] if str(meta["source"]).startswith("<")
                  else _rel(Path(meta["source"]), SIM_DIR.parent)),
        "board": spec.get("board") or (best or {}).get("board"),
        "axes": axes, "select": spec.get("select"),
        "points": int(len(df)), "fit": int(fits.sum()), "failed": int((err != "").sum()),
        "invalid": int(sum(invalid_reasons(df).values())), "invalid_reasons": invalid_reasons(df),
        "per_trace": per_trace, "pareto_columns": cols, "pareto": rows, "best": best,
        "plot": _rel(plot, run_dir) if plot.is_file() else None,
        "table": _rel(csv, run_dir),
        "sweep_json": _rel(sweep_dir / "sweep.json", run_dir) if meta else None,
        "best_point": _rel(best_path, run_dir) if best is not None else None,
        "seconds": meta.get("seconds"),
    }


def write_dse_summary(sweep_dir: str | os.PathLike, run_dir: str | os.PathLike) -> Path:
    """Write :func:`dse_summary` to ``run_dir/dse.json`` (rendered by the report's ``dse`` section)."""
    run_dir = Path(run_dir)
    return _write_json(run_dir / "dse.json", dse_summary(sweep_dir, run_dir))
