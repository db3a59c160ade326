"""QONNX route: Brevitas export, qonnx cleanup + shape inference, check with qonnx's executor.

The exported graph holds the student as the hardware sees it:

- every ternary weight as a ``Quant`` node with ``bitwidth = 2``, ``narrow = 1``, ``signed = 1``
  and the absmean scale gamma (integer range [-1, 1]);
- every int8 activation quantizer as a ``Quant`` node with ``bitwidth = act_bits``;
- the top-k sparsity as standard ONNX ops (``Abs -> TopK -> ScatterElements -> Mul``).

Why the check has a bound and not bit-equality: qonnx's executor runs each node in float32 with
onnxruntime, PyTorch runs fused float32 kernels; the summation orders differ (relative error
~1e-6). Where an activation sits within that distance of an int8 rounding boundary
(x / s = n + 0.5), or two |x| tie at the top-k cut, one code flips by one step. One flip moves
a linear layer's output by at most ``s_x * gamma`` per channel; the descriptor is
L2-normalised, so a handful of flips stays far below 1e-2. The bounds are therefore
``max |err| <= 2e-2`` and ``mean |err| <= 1e-3`` on descriptors / layer outputs normalised by
the reference's largest magnitude; float-only disagreement (no flip) measures ~1e-6.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tatvpr_hw.lower.common import Check, error_stats

log = logging.getLogger(__name__)

QONNX_BOUND_MAX = 2e-2
QONNX_BOUND_MEAN = 1e-3
QONNX_BOUND_WHY = ("float32 summation-order differences between onnxruntime and PyTorch "
                   "(~1e-6) can flip an int8 rounding boundary or a top-k tie; one flip moves a "
                   "layer output by at most s_x*gamma; errors are relative to the reference's "
                   "largest magnitude")


def export_qonnx_file(module: nn.Module, example: torch.Tensor, path: Path, *,
                      opset: int = 17) -> Path:
    """Brevitas QONNX export of ``module`` (eval mode) for input shape ``example``."""
    import warnings

    from brevitas.export import export_qonnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.onnx")
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        export_qonnx(module, example, export_path=str(tmp), opset_version=opset, dynamo=False)
    tmp.replace(path)
    return path


_KEEP_OPS = ("Quant", "BipolarQuant", "Trunc")


def _static_shape(model, name: str) -> list[int] | None:
    """The shape of ``name`` if its annotation is fully static (every dim an integer; 0 is a
    real empty dim), else None."""
    g = model.graph
    for vi in (*g.input, *g.output, *g.value_info):
        if vi.name == name:
            t = vi.type.tensor_type
            if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
                return [int(d.dim_value) for d in t.shape.dim]
            return None
    return None


def _elem_types(model) -> dict[str, int]:
    g = model.graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.output, *g.value_info)
            if vi.type.tensor_type.elem_type}


def _run_node(node, feeds: dict[str, np.ndarray], out_types: list[int], opset: int) -> list[np.ndarray]:
    """Run one standard ONNX node with onnxruntime; outputs declared without a shape, so
    onnxruntime reports whatever shape it computes."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    from qonnx.util.basic import qonnx_make_model

    inits = [numpy_helper.from_array(np.asarray(v), name=k) for k, v in feeds.items()]
    outs = [helper.make_tensor_value_info(o, t, None) for o, t in zip(node.output, out_types)]
    graph = helper.make_graph([node], "fold", [], outs, initializer=inits)
    m = qonnx_make_model(graph)
    m.opset_import[0].version = opset
    opts = ort.SessionOptions()
    # the node is the whole graph: nothing to optimise, and the optimiser's notes on an
    # all-initializer graph ("UnsqueezeElimination cannot remove node") are noise
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {})


def prefold_constants(model, max_passes: int = 16):
    """Fold every constant-only standard node (quantizers stay), in topological passes.

    Why not qonnx's folders: ``FoldConstants`` folds one node per pass and re-runs shape
    inference after each (quadratic: ~8 minutes on the tiny ViT's ~600 nodes). Both it and
    ``FoldConstantsFiltered`` execute a node into a buffer pre-shaped from its value_info; the
    traced student computes shapes at run time (``Shape -> Slice -> Concat -> Expand`` for the
    class token and the head's reshapes), ONNX shape inference cannot see through those
    (unknown ``unk__`` or zero-length dims), and every such node gave one "Output shapes
    disagree" warning (~600 on the tiny student). Here each constant node runs on its own in
    onnxruntime with its outputs declared without a shape, its result becomes an initializer
    (which carries the real shape), and shape inference runs once per pass, after which the
    downstream annotations are static. A ``Shape`` node is folded from its input's static
    annotation only. Passes repeat until nothing is left to fold (3 on the tiny student).
    """
    from qonnx.transformation.infer_shapes import InferShapes

    model = model.transform(InferShapes())
    opset = model.model.opset_import[0].version
    for i in range(max_passes):
        types = _elem_types(model)
        folded = []
        for n in model.graph.node:
            if n.op_type in _KEEP_OPS or n.domain not in ("", "ai.onnx") or not n.input:
                continue
            if n.op_type == "Shape":
                shape = _static_shape(model, n.input[0])
                if shape is None:
                    continue
                attrs = {a.name: a.i for a in n.attribute}
                start, end = attrs.get("start", 0), attrs.get("end", len(shape))
                outs = [np.asarray(shape[start:end], dtype=np.int64)]
            else:
                vals = {x: model.get_initializer(x) for x in n.input if x}
                if any(v is None for v in vals.values()) or not all(o in types for o in n.output):
                    continue
                outs = _run_node(n, vals, [types[o] for o in n.output], opset)
            for o, v in zip(n.output, outs):
                model.set_initializer(o, np.asarray(v))
            folded.append(n)
        for n in folded:
            model.graph.node.remove(n)
        # stale annotations of the folded outputs go; inference re-annotates everything else
        gone = {o for n in folded for o in n.output}
        keep = [vi for vi in model.graph.value_info if vi.name not in gone]
        del model.graph.value_info[:]
        model.graph.value_info.extend(keep)
        model = model.transform(InferShapes())
        if not folded:
            log.debug("prefold_constants: %d passes", i + 1)
            break
    return model


def cleanup(path: Path, out_path: Path | None = None):
    """qonnx cleanup (constant folding that keeps Quant nodes, unique names) + shape inference."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(prefold_constants(ModelWrapper(str(path))))
    model = model.transform(InferShapes())
    if out_path is not None:
        tmp = Path(out_path).with_name(f".{Path(out_path).name}.tmp.onnx")
        model.save(str(tmp))
        tmp.replace(out_path)
    return model


def execute(model, x: np.ndarray) -> np.ndarray:
    """Run a QONNX ModelWrapper with qonnx's executor on one input batch."""
    from qonnx.core.onnx_exec import execute_onnx

    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    return execute_onnx(model, {iname: np.ascontiguousarray(x, dtype=np.float32)})[oname]


def execute_rows(model, rows: np.ndarray) -> np.ndarray:
    """Run a model exported for a ``[1, ...]`` input on every row of ``rows``."""
    return np.concatenate([execute(model, rows[i:i + 1]) for i in range(rows.shape[0])])


def quant_nodes(model) -> list[dict[str, Any]]:
    """Every Quant node: name, bit width, narrow, signed (for the report and the tests)."""
    from qonnx.core.modelwrapper import ModelWrapper  # noqa: F401  (type of ``model``)

    out = []
    for n in model.graph.node:
        if n.op_type != "Quant":
            continue
        attrs = {a.name: a for a in n.attribute}
        bw = model.get_initializer(n.input[3])
        scale = model.get_initializer(n.input[1])
        is_weight = model.get_initializer(n.input[0]) is not None
        out.append({"name": n.name, "bitwidth": float(bw) if bw is not None else None,
                    "narrow": int(attrs["narrow"].i) if "narrow" in attrs else 0,
                    "signed": int(attrs["signed"].i) if "signed" in attrs else 1,
                    "weight": is_weight,
                    "scale": float(np.asarray(scale).ravel()[0]) if scale is not None else None})
    return out


def op_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def verify(model, torch_module: nn.Module, inputs: torch.Tensor, artifact: str,
           *, per_row: bool = False) -> Check:
    """Compare the QONNX graph (qonnx executor) with PyTorch on ``inputs``.

    Errors are divided by the reference's largest magnitude (descriptors are unit-norm, so for
    them this is ~the absolute error).
    """
    with torch.no_grad():
        ref = torch_module(inputs).detach().numpy()
    x = inputs.numpy()
    got = execute_rows(model, x) if per_row else execute(model, x)
    stats = error_stats(got, ref)
    scale = stats["ref_max_abs"] or 1.0
    rel = {"max_abs_err": stats["max_abs_err"] / scale, "mean_abs_err": stats["mean_abs_err"] / scale,
           "ref_max_abs": stats["ref_max_abs"], "abs_max_err": stats["max_abs_err"],
           "abs_mean_err": stats["mean_abs_err"], "samples": int(x.shape[0])}
    return Check(artifact, rel, QONNX_BOUND_MAX, QONNX_BOUND_MEAN, QONNX_BOUND_WHY)


def export_model_qonnx(model: nn.Module, images: torch.Tensor, out_dir: Path, *,
                       sparsity: float, name: str = "student") -> dict[str, Any]:
    """Export the whole student at ``sparsity``; verify on ``images``; return the summary.

    Writes ``out_dir/<name>.onnx`` (raw Brevitas export) and ``<name>_clean.onnx`` (after
    qonnx cleanup and shape inference, the file to hand on), and ``qonnx_check.json``.
    """
    from brevitas_models.sparsity import set_sparsity

    out_dir = Path(out_dir)
    set_sparsity(model, sparsity)
    model.eval()
    t0 = time.perf_counter()
    raw = export_qonnx_file(model, images[:1], out_dir / f"{name}.onnx")
    t1 = time.perf_counter()
    clean_path = out_dir / f"{name}_clean.onnx"
    qm = cleanup(raw, clean_path)
    t2 = time.perf_counter()
    check = verify(qm, model, images, f"qonnx:{clean_path.name}", per_row=True)
    t3 = time.perf_counter()
    quants = quant_nodes(qm)
    summary = {
        "route": "qonnx", "file": str(clean_path), "raw_file": str(raw), "sparsity": sparsity,
        "ops": op_counts(qm),
        "quant_nodes": {"weights_2bit_narrow": sum(q["weight"] and q["bitwidth"] == 2 and q["narrow"]
                                                   for q in quants),
                        "activation": sum(not q["weight"] for q in quants),
                        "activation_bits": sorted({q["bitwidth"] for q in quants if not q["weight"]})},
        "check": check.to_dict(),
        "time_s": {"export": t1 - t0, "cleanup": t2 - t1, "execute": t3 - t2},
    }
    log.info("QONNX %s: max |err| %.3g (bound %.3g), mean %.3g; export %.1fs cleanup %.1fs run %.1fs",
             clean_path.name, check.stats["max_abs_err"], check.bound_max_abs,
             check.stats["mean_abs_err"], t1 - t0, t2 - t1, t3 - t2)
    return summary
