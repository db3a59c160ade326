"""QONNX route on a small ternary MLP: Quant nodes, TopK as standard ops, executor check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tatvpr_hw.errors import UserError


class _MiniMLP(nn.Module):
    """Token MLP with the student's layers: LN -> ternary fc1 -> GELU -> ternary fc2 + residual."""

    def __init__(self, d=16, h=32):
        super().__init__()
        from brevitas_models.quant import SparseTernaryLinear

        self.norm = nn.LayerNorm(d)
        self.fc1 = SparseTernaryLinear(d, h)
        self.act = nn.GELU()
        self.fc2 = SparseTernaryLinear(h, d)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


@pytest.fixture(scope="module")
def mini():
    from brevitas_models.quant import calibrate_input_scales

    torch.manual_seed(0)
    m = _MiniMLP().eval()
    x = torch.randn(3, 5, 16)
    calibrate_input_scales(m, [x])
    return m, x


def test_export_model_qonnx(tmp_path, mini):
    from tatvpr_hw.lower.qonnx.route import export_model_qonnx, quant_nodes, cleanup

    m, x = mini
    s = export_model_qonnx(m, x, tmp_path, sparsity=0.5, name="mini")
    assert s["quant_nodes"]["weights_2bit_narrow"] == 2
    assert s["quant_nodes"]["activation"] == 2 and s["quant_nodes"]["activation_bits"] == [8.0]
    assert s["ops"]["TopK"] == 2 and s["ops"]["ScatterElements"] == 2
    assert s["check"]["passed"], s["check"]
    assert s["check"]["max_abs_err"] < 1e-3  # no flips expected on this small input
    from qonnx.core.modelwrapper import ModelWrapper

    qm = ModelWrapper(s["file"])
    for q in quant_nodes(qm):
        if q["weight"]:
            assert q["bitwidth"] == 2 and q["narrow"] == 1 and q["signed"] == 1
    # shapes are inferred on every tensor
    assert all(qm.get_tensor_shape(t.name) is not None for t in qm.graph.value_info)


def test_sparsity_changes_the_graph_output(tmp_path, mini):
    """The top-k is in the graph: s = 0 and s = 0.5 exports compute different outputs."""
    from tatvpr_hw.lower.qonnx.route import cleanup, execute_rows, export_model_qonnx

    m, x = mini
    a = export_model_qonnx(m, x, tmp_path / "a", sparsity=0.0, name="a")
    b = export_model_qonnx(m, x, tmp_path / "b", sparsity=0.5, name="b")
    assert a["ops"].get("TopK", 0) == 0 and b["ops"]["TopK"] == 2
    from qonnx.core.modelwrapper import ModelWrapper

    ya = execute_rows(ModelWrapper(a["file"]), x.numpy())
    yb = execute_rows(ModelWrapper(b["file"]), x.numpy())
    assert np.abs(ya - yb).max() > 1e-3


def test_check_fails_above_bound():
    from tatvpr_hw.lower.common import Check, ExportCheckError

    c = Check("x.onnx", {"max_abs_err": 0.5, "mean_abs_err": 0.1}, 0.02, 0.001, "reason")
    assert not c.passed
    with pytest.raises(ExportCheckError, match="x.onnx: verification failed: max \\|err\\| 0.5"):
        c.require()
    assert isinstance(ExportCheckError("m"), UserError)


class _TokenModel(nn.Module):
    """Class token + a ternary layer + a shape-dependent reshape: the run-time shape chains
    (``Shape -> Slice -> Concat -> Expand / Reshape``) that a traced ViT exports."""

    def __init__(self, d=16):
        super().__init__()
        from brevitas_models.quant import SparseTernaryLinear

        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.fc = SparseTernaryLinear(d, 2 * d)

    def forward(self, x):
        b, n, d = x.shape
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)
        y = self.fc(x)
        return y.reshape(b, n + 1, 2, d).mean(dim=2).flatten(1)


def test_cleanup_is_silent_and_annotates_static_shapes(tmp_path, capfd):
    """No "Output shapes disagree" (qonnx's executor found a buffer shaped from a wrong
    value_info) during cleanup or execution; every tensor ends with a static shape."""
    import warnings

    from brevitas_models.quant import calibrate_input_scales
    from qonnx.core.modelwrapper import ModelWrapper
    from tatvpr_hw.lower.qonnx.route import _static_shape, export_model_qonnx

    torch.manual_seed(0)
    m = _TokenModel().eval()
    x = torch.randn(2, 4, 16)
    calibrate_input_scales(m, [x])
    raw_ops = None
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s = export_model_qonnx(m, x, tmp_path, sparsity=0.5, name="tok")
        raw_ops = [n.op_type for n in ModelWrapper(s["raw_file"]).graph.node]
    # the raw export has the run-time shape chain this test is about
    assert "Shape" in raw_ops and "Expand" in raw_ops
    shape_warnings = [w for w in rec if "shapes disagree" in str(w.message)]
    assert shape_warnings == [], str(shape_warnings[0].message)[:300]
    assert "shapes disagree" not in capfd.readouterr().err
    qm = ModelWrapper(s["file"])
    assert not {"Shape", "Expand", "ConstantOfShape"} & {n.op_type for n in qm.graph.node}
    tensors = [o for n in qm.graph.node for o in n.output]
    assert tensors and all(_static_shape(qm, t) is not None for t in tensors)
    # still the PyTorch model: compared per row by qonnx's executor against torch
    assert s["check"]["passed"] and s["check"]["max_abs_err"] < 1e-3
