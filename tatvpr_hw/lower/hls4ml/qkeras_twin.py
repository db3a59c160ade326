"""QKeras twin of a ternary GEMM: the same layer through hls4ml's Keras frontend.

Needs the optional extra ``qkeras`` (tensorflow, tf-keras, qkeras, pyparsing) and runs with
``TF_USE_LEGACY_KERAS=1`` (QKeras is written for Keras 2, i.e. ``tf_keras``); this module sets
that variable before TensorFlow is imported.

The twin takes the layer's int8 input *codes* (``clamp(round(x_topk / s_x), -127, 127)``, what
the accelerator streams) and holds the same ternary weights and scales::

    QActivation(quantized_bits(8, 7))          # the int8 codes, exactly representable
    QDense(kernel = s_x * gamma * W~,           # ternary(alpha = s_x * gamma): codes W~ in {-1,0,1}
           bias = b)

so ``y = s_x * gamma * (q . W~) + b``, the Brevitas layer's output. hls4ml factorises ``alpha``
out of the kernel (QKerasFactorizeAlpha) and multiplies by ``ap_int<2>`` codes with its
``weight_ternary`` product, as in the QONNX route. The check compares the two C-simulations
on the same real activations: two frontends, one answer. Their only difference is where the
int8 rounding of the input happens (PyTorch float32 here, hls4ml fixed point in the QONNX
route), so the bound is the QONNX route's: a couple of code flips, ``2 s_x gamma``, plus the
fixed-point rounding of the output scale and bias (``1e-3 max|y|``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.common import Check, error_stats
from tatvpr_hw.lower.layers import LayerExport

log = logging.getLogger(__name__)

TWIN_BOUND_WHY = ("same integer GEMM in both C-simulations; the int8 input codes are rounded "
                  "in float32 (QKeras twin) vs fixed point (QONNX route): a flip moves an output "
                  "by s_x*gamma; fixed-point output scale/bias < 1e-3 of max|y|")


def _keras2_convert(model, hls_cfg: dict[str, Any], project: Path, backend: str, io_type: str,
                    part: str, name: str = "tatvpr_gemm_qkeras"):
    """hls4ml's Keras-2 frontend on a tf_keras model.

    ``hls4ml.converters.convert_from_keras_model`` picks its Keras-3 frontend whenever the
    ``keras`` package is 3.x - which tensorflow installs next to ``tf_keras`` - and that frontend
    cannot read a tf_keras (QKeras) model. So the same config is assembled here and handed to
    the Keras-2 frontend directly.
    """
    from hls4ml.converters import keras_v2_to_hls
    from hls4ml.utils.config import create_config

    config = create_config(output_dir=str(project), project_name=name,
                           backend=backend, part=part, io_type=io_type)
    config.update({"KerasModel": model, "InputData": None, "OutputPredictions": None,
                   "HLSConfig": hls_cfg})
    return keras_v2_to_hls(config)


def _import_qkeras():
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        log.warning("TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set; QKeras may fail")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import qkeras  # noqa: F401
        import tf_keras  # noqa: F401
    except ImportError as err:
        raise UserError(f"the QKeras twin needs the optional extra: pip install -c constraints.txt "
                        f"-e '.[qkeras]' ({err})") from None
    import qkeras
    import tf_keras

    return qkeras, tf_keras


def input_codes(le: LayerExport) -> np.ndarray:
    """The int8 codes the layer's input quantizer produces (as float32), ``[rows, K]``."""
    import torch

    s_x = le.input_scale()
    qmax = 2 ** (le.act_bits - 1) - 1
    with torch.no_grad():
        q = torch.clamp(torch.round(le.inputs / s_x), -qmax, qmax)
    return q.numpy().astype(np.float32)


def build_twin(le: LayerExport):
    """The QKeras model of ``le`` (ternary per-tensor layers only)."""
    qkeras, tf_keras = _import_qkeras()
    from qkeras import QActivation, QDense, quantized_bits, ternary

    if not le.ternary:
        raise UserError(f"{le.name}: the QKeras twin is built for ternary layers only")
    gamma = le.weight_scale().numpy()
    if gamma.size != 1:
        raise UserError(f"{le.name}: per-channel weight scales; the QKeras twin supports the "
                        "per-tensor absmean scale (model.ternary.per_channel: false)")
    alpha = float(le.input_scale() * gamma[0])
    codes = le.int_weight().numpy().astype(np.float32)  # [N, K]
    bias = (le.module.bias.detach().numpy() if le.module.bias is not None
            else np.zeros(le.out_features, np.float32))
    inp = tf_keras.Input(shape=(le.in_features,), name="codes")
    h = QActivation(quantized_bits(le.act_bits, le.act_bits - 1, keep_negative=True,
                                   alpha=1), name="int8_in")(inp)
    out = QDense(le.out_features, name="ternary_dense",
                 # QKeras' ternary threshold is absolute (a dead band on the kernel value)
                 kernel_quantizer=ternary(alpha=alpha, threshold=alpha / 2),
                 use_bias=True)(h)
    model = tf_keras.Model(inp, out)
    model.get_layer("ternary_dense").set_weights([(codes.T * alpha).astype(np.float32), bias])
    return model, alpha


def export_twin_hls4ml(le: LayerExport, out_dir: str | Path, *, qonnx_hls_model,
                       backend: str = "Vitis", io_type: str = "io_parallel",
                       part: str = "xck26-sfvc784-2LV-c", reuse_factor: int = 1,
                       strategy: str = "Latency") -> dict[str, Any]:
    """Convert the twin with hls4ml's Keras frontend, C-simulate, compare with the QONNX route.

    The project is named ``tatvpr_<layer>_qkeras`` and uses the QONNX route's reuse factor and
    strategy (``reuse_factor``, ``strategy``).

    ``qonnx_hls_model`` is the compiled hls4ml model of the same layer from
    :func:`tatvpr_hw.lower.hls4ml.route.export_layer_hls4ml` (``return_model=True``).
    """
    import re

    import hls4ml
    from hls4ml.backends.fpga.fpga_types import APTypeConverter
    from hls4ml.model.types import FixedPrecisionType

    from tatvpr_hw.lower.hls4ml.route import (_force_integer_weights, hls_bounds, precision_plan,
                                               project_name)

    model, alpha = build_twin(le)
    plan = precision_plan(le)
    out_dir = Path(out_dir)
    safe = re.sub(r"[^A-Za-z0-9_]+", "_", le.name)
    project = out_dir / f"qkeras_{safe}"
    hls_cfg = {
        "Model": {"Precision": {"default": "fixed<32,16>"}, "ReuseFactor": reuse_factor, "Strategy": strategy,
                  "BramFactor": 1_000_000_000, "TraceOutput": False, "BitExact": False},
        "LayerName": {
            "codes": {"Precision": {"result": f"fixed<{le.act_bits},{le.act_bits}>"}},
            "ternary_dense": {"Precision": {"accum": plan["accum"], "result": plan["accum"],
                                            "bias": plan["accum"]}},
        },
    }
    t0 = time.perf_counter()
    hmodel = _keras2_convert(model, hls_cfg, project, backend, io_type, part,
                             project_name(le.name) + "_qkeras")
    # precisions of the factorised alpha (scale s_x*gamma, bias b) from the Brevitas scales
    conv = APTypeConverter()
    fixed = {k: plan[k] for k in ("output_scale", "bias", "result")}

    def _fx(s: str):
        w, i = (int(v) for v in re.match(r"fixed<(\d+),(\d+)>", s).groups())
        return conv.convert(FixedPrecisionType(w, i, signed=True))

    for layer in hmodel.get_layers():
        if layer.class_name == "ApplyAlpha":
            layer.get_weights("scale").update_precision(_fx(fixed["output_scale"]))
            layer.get_weights("bias").update_precision(_fx(fixed["bias"]))
            layer.get_output_variable().type.precision = _fx(fixed["result"])
    forced = _force_integer_weights(hmodel, 2, backend)
    hmodel.write()
    t1 = time.perf_counter()
    hmodel.compile()
    t2 = time.perf_counter()
    codes = np.ascontiguousarray(input_codes(le))
    got = np.asarray(hmodel.predict(codes)).reshape(codes.shape[0], -1)
    # the QONNX route's C-simulation on the same (float) inputs
    other = np.asarray(qonnx_hls_model.predict(np.ascontiguousarray(le.inputs.numpy(), np.float32)))
    other = other.reshape(codes.shape[0], -1)
    stats = error_stats(got, other)
    ref_stats = error_stats(got, le.reference().numpy())
    step = plan["scales"]["s_x"] * plan["scales"]["gamma_max"]
    check = Check(f"qkeras-vs-qonnx:{project.name}", {**stats, "samples": int(codes.shape[0]),
                                                       "vs_pytorch_max_abs_err": ref_stats["max_abs_err"]},
                  *hls_bounds(step, stats["ref_max_abs"]), TWIN_BOUND_WHY)
    from tatvpr_hw.lower.hls4ml.route import inspect_generated

    gen = inspect_generated(project)
    return {"route": "qkeras", "layer": le.name, "project": str(project), "alpha": alpha,
            "generated": gen, "forced_integer_weights": forced, "check": check.to_dict(),
            "time_s": {"convert": t1 - t0, "gxx_compile": t2 - t1},
            "detail": f"{le.name} {le.in_features}->{le.out_features}: QKeras->hls4ml vs "
                      f"QONNX->hls4ml C-sim, product {','.join(gen['dense_products'])}"}
