"""The HTML run report: ``render_report(run_dir)`` -> ``run_dir/index.html``.

The page is self-contained in its folder (figures by relative path, CSS inline). It shows:

- the ML results, from ``metrics.json`` / ``eval.json`` / the figures written by
  :func:`tatvpr_hw.evaluation.evaluate_run` (2A, 2B, R@1 vs simulated latency per granularity;
  template ``section_ml.html.j2``);
- one pluggable section per other area: when ``run_dir/<name>.json`` exists for a name in
  :data:`SECTIONS` (``sim``, ``dse``, ``export``, ``hls``, ``rtl``, in that order) -- or any name with a
  template ``templates/section_<name>.html.j2`` -- that template is rendered with
  ``data`` = the parsed JSON, ``name``, and ``figures`` = image files of the run folder that
  belong to the section (``<name>_*.png|svg|jpg`` at the top level and every image under
  ``run_dir/<name>/``), as paths relative to ``run_dir``. A section without its template is
  shown as a generic table of its JSON; a section whose JSON or template fails is shown as an
  error box naming the file, and the rest of the report still renders. Filters for section
  templates: ``num`` (compact number), ``fixed(digits)`` (fixed decimals), ``tojson_pretty``;
- the run configuration (``config.json``) as YAML.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, TemplateNotFound, select_autoescape
from markupsafe import escape

from tatvpr_hw.errors import UserError
from tatvpr_hw.io import write_text

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
SECTIONS = ("sim", "dse", "paper", "export", "hls", "query", "rtl")
RESERVED_JSON = {"metrics", "eval", "config"}
IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg")
FIG_CAPTIONS = {
    "fig2a_recall_vs_gops.png": "Figure 2A: Recall@1 against operations per query, one point per sparsity level.",
    "fig2b_recall_vs_memory.png": "Figure 2B: Recall@1 against model memory for fp32 / fp16 / int8 / ternary.",
    "fig_recall_vs_sim_latency.png": ("R@1 vs simulated latency per query (KV260 default arch, SIMULATED): one "
                                      "line per top-k granularity of the same trained student, points labelled "
                                      "by sparsity; latency from the simulator on one query's real trace at "
                                      "that granularity and sparsity, not measured on hardware."),
}


# Tables longer than LONG_TABLE_ROWS data rows show their first TOP_ROWS; the rest sit behind <details>.
TOP_ROWS = 10
LONG_TABLE_ROWS = 15

_TABLE = re.compile(r"(<table\b[^>]*>)(.*?)(</table>)", re.S)
_ROW = re.compile(r"<tr\b.*?</tr>", re.S)
_HEADING = re.compile(r"<h2\b[^>]*>(.*?)</h2>", re.S)


def collapse_long_tables(html: str, top: int = TOP_ROWS, limit: int = LONG_TABLE_ROWS) -> str:
    """Every ``<table>`` with more than ``limit`` data rows keeps its header and first ``top`` rows;
    the other rows follow in a second table (same header) inside ``<details>``, so nothing is lost.
    The templates' tables are flat (no nested tables), which this relies on."""
    def split(m: re.Match) -> str:
        open_tag, body, close_tag = m.groups()
        rows = _ROW.findall(body)
        if _ROW.sub("", body).strip():  # something besides rows (caption, tbody): leave it whole
            return m.group(0)
        n_head = 0
        while n_head < len(rows) and "<td" not in rows[n_head]:
            n_head += 1
        head, data = rows[:n_head], rows[n_head:]
        if len(data) <= limit:
            return m.group(0)
        shown = open_tag + "\n".join(head + data[:top]) + close_tag
        rest = open_tag + "\n".join(head + data[top:]) + close_tag
        return (f'{shown}\n<details class="more-rows"><summary>show the other {len(data) - top} of '
                f'{len(data)} rows</summary>\n{rest}\n</details>')
    return _TABLE.sub(split, html)


def split_heading(html: str) -> tuple[str, str]:
    """(inner HTML of the first ``<h2>``, the HTML without it); ("", html) when there is none."""
    m = _HEADING.search(html)
    if not m:
        return "", html
    return m.group(1).strip(), html[:m.start()] + html[m.end():]


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["fixed"] = lambda v, digits=2: "" if v is None else f"{float(v):.{digits}f}"
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)
    env.tests["mapping"] = lambda v: isinstance(v, dict)
    env.tests["sequence_of_mappings"] = lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
    return env


def _num(v: Any, digits: int = 3) -> str:
    """Numbers for tables: ints with thousands separators, floats with at most ``digits`` decimals."""
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if v != v:
        return "nan"
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 10 ** -digits):
        return f"{v:.{digits}g}"
    text = f"{v:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not readable JSON: {err}") from None


def _section_figures(run_dir: Path, name: str) -> list[str]:
    figs = [p for p in sorted(run_dir.glob(f"{name}_*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    sub = run_dir / name
    if sub.is_dir():
        figs += [p for p in sorted(sub.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return [p.relative_to(run_dir).as_posix() for p in figs]


def _section_names(run_dir: Path) -> list[str]:
    names = list(SECTIONS)
    for t in sorted(TEMPLATES.glob("section_*.html.j2")):
        n = t.name[len("section_"):-len(".html.j2")]
        if n not in names and n != "ml" and n not in RESERVED_JSON:
            names.append(n)
    return [n for n in names if (run_dir / f"{n}.json").is_file()]


# metrics.json record fields the report computes with: null or a finite number
_RECORD_NUMBERS = ("sparsity", "gmacs", "memory_mb", "sim_latency_ms")


def _check_records(records: Any, path: Path) -> list[dict]:
    """``metrics.json``: a list of objects; ``model`` a string, ``recall@N`` and the fields in
    :data:`_RECORD_NUMBERS` null or finite numbers. Raise :class:`UserError` naming the first bad one."""
    import math

    if not isinstance(records, list):
        raise UserError(f"{path}: the top level is a JSON {type(records).__name__}; allowed: a list of "
                        "records (objects), as `tatvpr eval` writes")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise UserError(f"{path}: record {i} is a {type(r).__name__}; allowed: a JSON object")
        if not isinstance(r.get("model"), (str, type(None))):
            raise UserError(f"{path}: record {i}: model = {r['model']!r}; allowed: a string")
        for k, v in r.items():
            if k in _RECORD_NUMBERS or k.startswith("recall@"):
                if k.startswith("recall@") and not k[7:].isdigit():
                    raise UserError(f"{path}: record {i}: key {k!r}; allowed: recall@N with N an integer")
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                    raise UserError(f"{path}: record {i}: {k} = {v!r}; allowed: a finite number or null")
    return records


def _ml_context(run_dir: Path) -> dict[str, Any] | None:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        return None
    records = _check_records(_read_json(metrics_path), metrics_path)
    details = _read_json(run_dir / "eval.json") if (run_dir / "eval.json").is_file() else {}
    if not isinstance(details, dict):
        raise UserError(f"{run_dir / 'eval.json'}: the top level must be a JSON object, got {type(details).__name__}")
    recall_keys = sorted({k for r in records for k in r if k.startswith("recall@")}, key=lambda k: int(k[7:]))
    st0 = [r for r in records if r.get("model") == "student" and r.get("sparsity") == 0]
    rows = []
    for r in records:
        row = dict(r)
        # MACs saved and R@1 change against s = 0 of the same granularity (all s = 0 rows are
        # the same model: no top-k runs)
        base = next((b for b in st0 if b.get("granularity") == r.get("granularity")), st0[0] if st0 else None)
        if r.get("model") == "student" and base and base.get("gmacs"):
            row["macs_saved_pct"] = 100.0 * (1.0 - r["gmacs"] / base["gmacs"])
            row["r1_delta"] = r.get("recall@1", 0.0) - base.get("recall@1", 0.0)
        rows.append(row)
    figures = [{"path": f, "caption": c} for f, c in FIG_CAPTIONS.items() if (run_dir / f).is_file()]
    sim = details.get("sim") if isinstance(details, dict) else None
    simulated = any(r.get("sim_latency_ms") is not None for r in records)
    from tatvpr_hw.evaluation import distinguishability_notes
    return {"rows": rows, "recall_keys": recall_keys, "details": details, "figures": figures,
            "has_ci": any(r.get("r1_ci95") for r in records), "notes": distinguishability_notes(records),
            "sim": sim or {}, "simulated": simulated,
            "granularities": any(r.get("granularity") for r in records)}


def render_report(run_dir: str | Path, title: str | None = None) -> Path:
    """Write ``run_dir/index.html`` from what the run folder holds; returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    env = _env()
    ml = _ml_context(run_dir)
    sections = []
    for name in _section_names(run_dir):
        entry: dict[str, Any] = {"name": name, "source": f"{name}.json"}
        try:
            data = _read_json(run_dir / f"{name}.json")
            ctx = {"data": data, "name": name, "figures": _section_figures(run_dir, name), "run_dir": run_dir}
            try:
                tmpl = env.get_template(f"section_{name}.html.j2")
            except TemplateNotFound:
                tmpl = env.get_template("section_generic.html.j2")
            entry["title"], entry["html"] = split_heading(collapse_long_tables(tmpl.render(**ctx)))
        except Exception as err:  # one broken section must not hide the rest of the report
            log.warning("report section %s failed: %s", name, err)
            entry["error"] = f"{type(err).__name__}: {err}"
        entry["title"] = entry.get("title") or escape(name)
        sections.append(entry)
    config_text = None
    if (run_dir / "config.json").is_file():
        config_text = yaml.safe_dump(_read_json(run_dir / "config.json"), sort_keys=False)
    ml_title, ml_html = (split_heading(collapse_long_tables(env.get_template("section_ml.html.j2").render(ml=ml)))
                         if ml else ("", None))
    html = env.get_template("base.html.j2").render(
        title=title or f"TAT-VPR run report: {run_dir.resolve().name}",
        ml=ml, ml_title=ml_title, ml_html=ml_html,
        sections=sections, config_text=config_text,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    out = write_text(run_dir / "index.html", html)
    log.info("report written to %s", out)
    return out
