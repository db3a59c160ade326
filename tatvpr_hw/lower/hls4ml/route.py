"""hls4ml route: one ternary GEMM of the student through QONNX into an HLS project.

Per layer (see :mod:`tatvpr_hw.lower.layers`)::

    Brevitas QuantLinear --export_qonnx--> QONNX --cleanup, ConvertToChannelsLastAndClean,
    GemmToMatMul, cleanup--> hls4ml (QONNX frontend) --write, compile (g++ C-sim)--> predict

hls4ml turns the int8 input ``Quant`` into ``ApplyAlpha(1/s_x) -> int8``, the ternary weight
``Quant`` into integer weights followed by ``ApplyAlpha(s_x * gamma, bias)``. The precisions are
derived from the Brevitas scales (:func:`precision_plan`), not left at hls4ml's defaults:

- input ``fixed<I+F, I, RND, SAT>``: ``I`` covers ``127 s_x`` (+ sign), ``F = ceil(-log2 s_x) + 14``,
  so the input is resolved to ``s_x / 2**14`` before it is rounded to int8;
- ``1/s_x`` with 28 fractional bits (its rounding error times a code up to 127 stays ~1e-6);
- the Dense accumulator and result ``ap_fixed<A, A>`` (an integer): ``A = ceil(log2(127 K + 1)) + 1``
  holds any sum of K int8 x ternary products exactly;
- the output scale ``s_x * gamma`` with 16 significant fractional bits below its leading one,
  the bias and the result with 16 fractional bits.

The ternary weights are forced to ``ap_int<2>`` (hls4ml's own quantizer gives ``ap_fixed<2,2>``),
so hls4ml's backend selects ``nnet::product::weight_ternary`` - the multiplier-free product
(``w == 1 ? x : w == -1 ? -x : 0``); :func:`inspect_generated` reads that back from the
generated ``parameters.h`` / ``defines.h``.

Error bound of the C-simulation against PyTorch: the integer GEMM is exact; what differs is
the int8 rounding of the input (hls4ml computes ``x * (1/s_x)`` in fixed point, PyTorch
``x / s_x`` in float32: a value within ~2^-15 s_x of a rounding boundary can land on the other side,
changing one code by one, which moves output ``n`` by ``s_x * gamma_n``), the fixed-point
output scale/bias (< 1e-3 relative) and the truncation of up to three output-side stages to
2^-16. Bound (:func:`hls_bounds`): ``max |err| <= 2 s_x gamma_max + 1e-3 max|y| + 4 * 2^-16``
and ``mean |err| <= 0.05 s_x gamma_max + 1e-4 max|y| + 2 * 2^-16``.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.common import Check, error_stats
from tatvpr_hw.lower.layers import LayerExport
from tatvpr_hw.lower.qonnx.route import export_qonnx_file

log = logging.getLogger(__name__)

BACKENDS = ("Vitis", "Vivado")
IO_TYPES = ("io_parallel", "io_stream")
STRATEGIES = ("Latency", "Resource")
KV260_PART = "xck26-sfvc784-2LV-c"
# parts hls4ml knows as defaults of its Xilinx backends, plus the KV260 (Kria K26 SOM)
KNOWN_PARTS = (KV260_PART, "xcvu13p-flga2577-2-e", "xcku115-flvb2104-2-i", "xczu7ev-ffvc1156-2-e",
               "xc7z020clg400-1")
_PART_RE = re.compile(r"^x[a-z0-9]+-[a-z0-9]+-[a-z0-9-]+$", re.IGNORECASE)

HLS_BOUND_WHY = ("integer GEMM exact; int8 rounding of the input in fixed point vs float32 can "
                 "flip a code at a rounding boundary (one flip = s_x*gamma per output); fixed-point "
                 "output scale/bias < 1e-3 of max|y|")


OUT_FRAC_BITS = 16  # fraction bits of the output-side ApplyAlpha results and bias

# Products per clock (n_in * n_out / ReuseFactor) above which a dense layer is not expected to
# synthesise: hls4ml partitions the layer's arrays completely only up to its build script's
# `config_array_partition -maximum_size` (MaximumSize, default 4096, hls4ml writer/vivado_writer.py),
# and a fully unrolled 192 x 768 layer (147,456 products at ReuseFactor 1) stops Vitis HLS
# with "Stop unrolling loop". Above the limit the route warns (and says which reuse factor fits).
UNROLL_LIMIT = 4096
# Products per clock when neither a reuse factor nor a design point is given: the KV260's
# default accelerator, 32 x 32 (sim/arch/kv260.yaml).
DEFAULT_PE_SIMD = 32 * 32


def valid_reuse_factors(n_in: int, n_out: int, backend: str = "Vitis") -> list[int]:
    """hls4ml's valid ReuseFactors of an ``n_in x n_out`` Dense layer (its own rule,
    ``FPGABackend._validate_reuse_factor``, applied to the divisors of ``n_in * n_out``: the
    rule requires one, so the set equals hls4ml's ``get_valid_reuse_factors`` without its
    ``n_in * n_out``-step loop)."""
    import hls4ml

    be = hls4ml.backends.get_backend(backend)
    total = n_in * n_out
    small = [d for d in range(1, math.isqrt(total) + 1) if total % d == 0]
    divs = sorted(set(small + [total // d for d in small]))
    return [rf for rf in divs if be._validate_reuse_factor(n_in, n_out, rf)]


def choose_reuse_factor(n_in: int, n_out: int, *, reuse_factor: int | None = None,
                        pe_simd: int | None = None, backend: str = "Vitis") -> dict[str, Any]:
    """The ReuseFactor of a layer: ``reuse_factor`` if given, else ``n_in * n_out / (PE * SIMD)``
    (the accelerator's products per clock, from the design point), rounded to the closest
    valid hls4ml reuse factor (a tie goes to the smaller, as hls4ml's own
    ``get_closest_reuse_factor``). Neither given: ``pe_simd`` = :data:`DEFAULT_PE_SIMD`."""
    import hls4ml

    if reuse_factor is None and pe_simd is None:
        pe_simd = DEFAULT_PE_SIMD
    total = n_in * n_out
    if reuse_factor is not None:
        if reuse_factor < 1:
            raise UserError(f"reuse factor must be >= 1, got {reuse_factor}")
        wanted, source = reuse_factor, "--reuse-factor"
    else:
        wanted, source = max(1, round(total / pe_simd)), f"PE x SIMD = {pe_simd}"
    valid = valid_reuse_factors(n_in, n_out, backend)
    chosen = hls4ml.backends.get_backend(backend).get_closest_reuse_factor(valid, wanted)
    return {"reuse_factor": chosen, "wanted": wanted, "source": source,
            "products_per_clock": total // chosen, "adjusted": chosen != wanted}


def unroll_warning(name: str, n_in: int, n_out: int, reuse_factor: int, backend: str = "Vitis"
                   ) -> str | None:
    """A warning text when ``n_in * n_out / reuse_factor`` exceeds :data:`UNROLL_LIMIT`."""
    products = n_in * n_out // reuse_factor
    if products <= UNROLL_LIMIT:
        return None
    fits = [rf for rf in valid_reuse_factors(n_in, n_out, backend) if n_in * n_out // rf <= UNROLL_LIMIT]
    return (f"{name}: ReuseFactor {reuse_factor} unrolls {products} products per clock "
            f"({n_in} x {n_out} / {reuse_factor}), over the {UNROLL_LIMIT} that HLS synthesis "
            f"is expected to handle; the smallest valid ReuseFactor within it is {fits[0]}")


def project_name(layer_name: str) -> str:
    """The hls4ml project (and top function / IP) name of a layer: ``tatvpr_<layer>`` with
    dots and other non-identifier characters as ``_``, so layers' IPs do not collide."""
    return "tatvpr_" + re.sub(r"[^A-Za-z0-9_]+", "_", layer_name).strip("_")


def hls_bounds(step: float, ref_max: float) -> tuple[float, float]:
    """(max, mean) error bounds of a C-simulated GEMM: two int8 input flips (``step`` =
    s_x * gamma each), 1e-3 / 1e-4 of max|y| for the fixed-point scale, and up to three
    truncations to the output LSB (one per ApplyAlpha stage)."""
    lsb = 2.0 ** -OUT_FRAC_BITS
    return 2 * step + 1e-3 * ref_max + 4 * lsb, 0.05 * step + 1e-4 * ref_max + 2 * lsb


def check_part(part: str) -> str:
    if not _PART_RE.match(part):
        raise UserError(f"FPGA part {part!r} does not look like a Xilinx part name (e.g. {KV260_PART}); "
                        f"known: {', '.join(KNOWN_PARTS)}")
    return part


def _fixed(int_bits: int, frac_bits: int, signed: bool = True) -> str:
    return f"{'' if signed else 'u'}fixed<{int_bits + frac_bits},{int_bits}>"


def precision_plan(le: LayerExport) -> dict[str, Any]:
    """Per-role precisions derived from the layer's Brevitas scales and shapes."""
    s_x = le.input_scale()
    gamma = le.weight_scale().numpy()
    qmax = 2 ** (le.act_bits - 1) - 1
    wmax = 2 ** (le.weight_bits - 1) - 1 if le.weight_bits > 2 else 1
    k = le.in_features
    bias = le.module.bias.detach().numpy() if le.module.bias is not None else np.zeros(1)
    in_int = max(1, math.ceil(math.log2(qmax * s_x + 1e-30)) + 2)
    in_frac = max(0, math.ceil(-math.log2(s_x))) + 14
    inv = 1.0 / s_x
    acc_bits = math.ceil(math.log2(qmax * wmax * k + 1)) + 1
    out_scale = s_x * gamma
    os_int = max(1, math.ceil(math.log2(float(out_scale.max()))) + 2)
    os_frac = max(0, math.ceil(-math.log2(float(out_scale.min())))) + 16
    b_int = max(1, math.ceil(math.log2(float(np.abs(bias).max()) + 1e-30)) + 2)
    # hls4ml may apply s_x and gamma as two successive ApplyAlpha layers: size the results for
    # the larger of the two partial products
    y_max = qmax * wmax * k * max(s_x, float(gamma.max()), float(out_scale.max())) \
        + float(np.abs(bias).max())
    y_int = max(1, math.ceil(math.log2(y_max + 1e-30)) + 2)
    return {
        # rounded (not truncated) on entry, so only inputs within s_x / 2**15 of an int8
        # rounding boundary can round differently from PyTorch
        "input": _fixed(in_int, in_frac)[:-1] + ",RND,SAT>",
        "input_inv_scale": _fixed(max(1, math.ceil(math.log2(inv)) + 2), 28),
        # int8 codes: round half to even (torch.round), symmetric saturation (narrow range)
        "input_codes": f"fixed<{le.act_bits},{le.act_bits},RND_CONV,SAT_SYM>",
        "weight": f"int<{le.weight_bits}>",
        "accum": f"fixed<{acc_bits},{acc_bits}>",
        "output_scale": _fixed(os_int, os_frac),
        "bias": _fixed(b_int, OUT_FRAC_BITS),
        "result": _fixed(y_int, OUT_FRAC_BITS),
        "scales": {"s_x": s_x, "gamma_max": float(gamma.max()), "gamma_min": float(gamma.min())},
    }


def _prepare_qonnx(le: LayerExport, path: Path):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    export_qonnx_file(le.module, le.inputs[:1], path)
    model = cleanup_model(ModelWrapper(str(path)))
    model = model.transform(ConvertToChannelsLastAndClean())
    model = model.transform(GemmToMatMul())
    model = cleanup_model(model)
    model.save(str(path.with_name(path.stem + "_hls4ml_in.onnx")))
    return model


def _hls_config(model, plan: dict[str, Any], backend: str, reuse: int, strategy: str,
                layer_classes: dict[str, str]) -> dict[str, Any]:
    """hls4ml config dict: model defaults plus per-layer precisions from ``plan``."""
    cfg = {"Model": {"Precision": {"default": "fixed<32,16>"}, "ReuseFactor": reuse,
                     "Strategy": strategy, "BramFactor": 1_000_000_000, "TraceOutput": False},
           "LayerName": {}}
    seen_dense = False
    for name, cls in layer_classes.items():
        if cls == "Input":
            p = {"result": plan["input"]}
        elif cls == "ApplyAlpha" and not seen_dense:
            p = {"scale": plan["input_inv_scale"], "bias": plan["input_inv_scale"],
                 "result": plan["input_codes"]}
        elif cls == "Dense":
            seen_dense = True
            p = {"accum": plan["accum"], "result": plan["accum"], "bias": plan["accum"]}
        elif cls == "ApplyAlpha":
            p = {"scale": plan["output_scale"], "bias": plan["bias"], "result": plan["result"]}
        else:
            continue
        cfg["LayerName"][name] = {"Precision": p, "ReuseFactor": reuse, "Trace": False}
    return cfg


def _convert(model, out_dir: Path, backend: str, io_type: str, part: str, cfg: dict[str, Any],
             name: str):
    import hls4ml

    return hls4ml.converters.convert_from_onnx_model(
        model, output_dir=str(out_dir), project_name=name, backend=backend,
        io_type=io_type, part=part, hls_config=cfg)


def _force_integer_weights(hmodel, weight_bits: int, backend: str) -> list[str]:
    """Give every Dense an ``ap_int<weight_bits>`` weight type and regenerate its templates."""
    from hls4ml.backends.fpga.fpga_types import APTypeConverter
    from hls4ml.model.types import IntegerPrecisionType

    changed = []
    for layer in hmodel.get_layers():
        if layer.class_name != "Dense":
            continue
        w = layer.get_weights("weight")
        vals = np.unique(w.data)
        lim = 1 if weight_bits == 2 else 2 ** (weight_bits - 1) - 1
        if np.any(np.abs(vals) > lim) or np.any(vals != np.round(vals)):
            raise UserError(f"{layer.name}: weights reached hls4ml as non-integers {vals[:5]} "
                            f"(expected integers in [-{lim}, {lim}])")
        w.update_precision(APTypeConverter().convert(IntegerPrecisionType(weight_bits, signed=True)))
        changed.append(layer.name)
    hmodel.apply_flow(f"{backend.lower()}:apply_templates")
    return changed


def inspect_generated(project_dir: Path) -> dict[str, Any]:
    """What the generated C++ uses: the product of every dense config, the weight typedefs."""
    fw = Path(project_dir) / "firmware"
    params = (fw / "parameters.h").read_text()
    defines = (fw / "defines.h").read_text()
    products = re.findall(r"using product = nnet::product::(\w+)<", params)
    weight_types = re.findall(r"typedef (ap_\w+<[^>]*>) (weight\w*_t);", defines)
    dense_products = re.findall(r"struct config\d+ : nnet::dense_config \{.*?product::(\w+)<",
                                params, flags=re.S)
    return {"products": products, "dense_products": dense_products,
            "weight_types": {n: t for t, n in weight_types},
            "multiplier_free": bool(dense_products) and all(p == "weight_ternary" for p in dense_products)}


def build_command(backend: str) -> str:
    if backend == "Vitis":
        return "vitis-run --tcl build_prj.tcl --mode hls"
    return ('vivado_hls -f build_prj.tcl "reset=0 csim=0 synth=1 cosim=0 validation=0 export=0 '
            'vsynth=0 fifo_opt=0"')


def vendor_tool(backend: str) -> str | None:
    return shutil.which("vitis-run" if backend == "Vitis" else "vivado_hls")


def export_layer_hls4ml(le: LayerExport, out_dir: Path, *, backend: str = "Vitis",
                        io_type: str = "io_parallel", part: str = KV260_PART,
                        reuse_factor: int | None = None, pe_simd: int | None = None,
                        strategy: str = "Resource", build: bool = True, return_model: bool = False):
    """Lower one layer, C-simulate it and compare with PyTorch; return the summary
    (and the compiled hls4ml model with ``return_model``).

    ReuseFactor: ``reuse_factor`` if given, else ``K * N / pe_simd`` (the design point's
    products per clock), rounded to a valid one (:func:`choose_reuse_factor`); a layer whose
    products per clock exceed :data:`UNROLL_LIMIT` is warned about (log + summary).
    The hls4ml project, its top function and IP are named :func:`project_name` of the layer.
    ``build``: run hls4ml's ``build()`` (C synthesis) when the vendor tool is on PATH;
    otherwise (or with ``build=False``) the summary carries the exact command to run.
    """
    import hls4ml  # noqa: F401  (fail early with the import error if missing)

    for v, allowed, what in ((backend, BACKENDS, "backend"), (io_type, IO_TYPES, "io type"),
                             (strategy, STRATEGIES, "strategy")):
        if v not in allowed:
            raise UserError(f"unknown {what} {v!r}; allowed: {', '.join(allowed)}")
    check_part(part)
    rf = choose_reuse_factor(le.in_features, le.out_features, reuse_factor=reuse_factor,
                             pe_simd=pe_simd, backend=backend)
    reuse = rf["reuse_factor"]
    if rf["adjusted"]:
        log.warning("%s: ReuseFactor %d (from %s) is not valid for hls4ml's %d x %d dense layer; "
                    "using the closest valid %d", le.name, rf["wanted"], rf["source"],
                    le.in_features, le.out_features, reuse)
    warn = unroll_warning(le.name, le.in_features, le.out_features, reuse, backend)
    if warn:
        log.warning(warn)
    if le.weight_scale().numel() > 1:
        raise UserError(f"{le.name}: per-channel weight scales (model.ternary.per_channel: true) are "
                        "not lowered: hls4ml 1.3.0's QONNX frontend fails on a per-channel weight "
                        "Quant (IndexError in its precision inference); export a per-tensor student")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_]+", "_", le.name)
    name = project_name(le.name)
    t0 = time.perf_counter()
    qmodel = _prepare_qonnx(le, out_dir / f"{safe}.onnx")
    plan = precision_plan(le)
    # a first conversion (no files compiled) only to learn the layer names hls4ml creates
    probe = _convert(qmodel, out_dir / f".{safe}_probe", backend, io_type, part,
                     {"Model": {"Precision": {"default": "fixed<32,16>"}, "ReuseFactor": reuse,
                                "Strategy": strategy}}, name)
    classes = {layer.name: layer.class_name for layer in probe.get_layers()}
    shutil.rmtree(out_dir / f".{safe}_probe", ignore_errors=True)
    cfg = _hls_config(qmodel, plan, backend, reuse, strategy, classes)
    project = out_dir / f"hls4ml_{safe}"
    hmodel = _convert(qmodel, project, backend, io_type, part, cfg, name)
    forced = _force_integer_weights(hmodel, le.weight_bits, backend)
    t1 = time.perf_counter()
    hmodel.compile()
    t2 = time.perf_counter()
    x = np.ascontiguousarray(le.inputs.numpy(), dtype=np.float32)
    got = np.asarray(hmodel.predict(x)).reshape(x.shape[0], -1)
    ref = le.reference().numpy()
    stats = error_stats(got, ref)
    step = plan["scales"]["s_x"] * plan["scales"]["gamma_max"]
    check = Check(f"hls4ml:{project.name}", {**stats, "samples": int(x.shape[0])},
                  *hls_bounds(step, stats["ref_max_abs"]), HLS_BOUND_WHY)
    gen = inspect_generated(project)
    if le.ternary and not gen["multiplier_free"]:
        raise UserError(f"{project}: the generated dense layer does not use hls4ml's ternary "
                        f"product (found {gen['dense_products']}); the ternary weights did not reach "
                        "hls4ml as 2-bit integers")
    (project / "build_opt.tcl").write_text(
        "array set opt {\n    reset 0\n    csim 0\n    synth 1\n    cosim 0\n    validation 0\n"
        "    export 0\n    vsynth 0\n    fifo_opt 0\n}\n")
    cmd = f"cd {project.resolve()} && {build_command(backend)}"
    built = None
    if build and vendor_tool(backend):
        log.info("running C synthesis: %s", cmd)
        built = hmodel.build(csim=False, synth=True)
    elif build:
        print(f"{'vitis-run' if backend == 'Vitis' else 'vivado_hls'} is not on PATH; "
              f"to synthesise run:\n  {cmd}")
    summary = {
        "route": "hls4ml", "layer": le.name, "project": str(project), "backend": backend,
        "io_type": io_type, "part": part, "reuse_factor": reuse, "strategy": strategy,
        "project_name": name, "reuse": rf, "unroll_limit": UNROLL_LIMIT, "warnings": [warn] if warn else [],
        "n_in": le.in_features, "n_out": le.out_features, "ternary": le.ternary,
        "precision": plan, "forced_integer_weights": forced, "generated": gen,
        "check": check.to_dict(), "build_command": cmd, "synthesis": built,
        "time_s": {"convert": t1 - t0, "gxx_compile": t2 - t1},
        # a float head layer is exported int8-quantized: how far that is from the float layer
        "int8_export_vs_float": (None if le.float_output is None
                                 else error_stats(ref, le.float_output.numpy())),
    }
    log.info("hls4ml %s (%s, %s): C-sim max |err| %.3g (bound %.3g), product %s, g++ %.1fs",
             le.name, backend, io_type, stats["max_abs_err"], check.bound_max_abs,
             gen["dense_products"], t2 - t1)
    return (summary, hmodel) if return_model else summary
