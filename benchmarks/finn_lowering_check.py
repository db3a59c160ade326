"""FINN main's own Python steps on a folder written by `tatvpr export finn` (not part of the
test suite: FINN main is not a pip package and pins its own qonnx / onnx).

What it runs, as FINN's builder does: step_qonnx_to_finn (cleanup_model + ConvertQONNXtoFINN),
step_tidy_up, step_streamline, step_convert_to_hw (with standalone_thresholds from the
folder's config), step_specialize_layers (specialize_layers.json) and the folding config
(ApplyConfig after GiveUniqueNodeNames), and FINN's python verification after the first three
(np.isclose(expected_output.npy, produced, atol=1e-3), as FINN's verify_step). It prints the
HW nodes with PE / SIMD / noActivation and FINN's expected cycles.

Setup used for docs/export.md (throwaway, outside the project's venv):

    python3.11 -m venv /tmp/finnvenv
    /tmp/finnvenv/bin/pip install numpy==1.26.4 onnx==1.17.0 onnxruntime==1.18.1 protobuf==5.29.6 \
        bitstring==3.1.7 sigtools==4.0.1 toposort==1.7.0 clize==5.0.1 dataclasses-json==0.5.7 scipy psutil
    # FINN main (39f0c9a) src/ and the qonnx commit it pins (fd61cfe, fetch-repos.sh) src/
    # pyverilator is only imported by FINN's rtlsim code: a stub package whose names raise
    PYTHONPATH=<stubs>:<qonnx>/src:<finn>/src /tmp/finnvenv/bin/python \
        benchmarks/finn_lowering_check.py <folder written by tatvpr export finn> [--cppsim]

``--cppsim`` then runs FINN's folded_hls_cppsim verification as its builder does
(MinimizeWeightBitWidth, MinimizeAccumulatorWidth, PrepareCppSim, CompileCppSim, exec mode
cppsim) and times the g++ compile. It needs FINN_ROOT with src/, custom_hls/, deps/finn-hlslib
(16e5847, the commit FINN main pins) and deps/cnpy (4e8810b), and HLS_PATH/include with the
ap_types headers; without Vitis, AP_TYPES=<hls4ml>/templates/vivado/ap_types makes a HLS_PATH
from hls4ml's copy plus a minimal stand-in of Vitis' ap_axi_sdata.h (finn-hlslib's
streamtools.h includes it; the MVAU does not use those structs).
"""
import sys, json, time
from pathlib import Path
import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.general import GiveUniqueNodeNames, GiveReadableTensorNames, RemoveStaticGraphInputs
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.core.onnx_exec import execute_onnx
from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
from finn.transformation.streamline import Streamline
import finn.transformation.fpgadataflow.convert_to_hw_layers as to_hw
import finn.transformation.streamline.absorb as absorb
from qonnx.custom_op.registry import getCustomOp

AXI_STANDIN = """// minimal stand-in for Vitis' ap_axi_sdata.h (AXI stream structs), cppsim only
#pragma once
#include "ap_int.h"
template <int D, int U, int TI, int TD> struct ap_axiu {
  ap_uint<D> data; ap_uint<(D + 7) / 8> keep; ap_uint<(D + 7) / 8> strb; ap_uint<U> user;
  ap_uint<1> last; ap_uint<TI> id; ap_uint<TD> dest; };
template <int D, int U, int TI, int TD> struct ap_axis {
  ap_int<D> data; ap_uint<(D + 7) / 8> keep; ap_uint<(D + 7) / 8> strb; ap_uint<U> user;
  ap_uint<1> last; ap_uint<TI> id; ap_uint<TD> dest; };
template <int D, int U, int TI, int TD> struct qdma_axis {
  ap_uint<D> data; ap_uint<(D + 7) / 8> keep; ap_uint<1> last;
  ap_uint<D> get_data() const { return data; } void set_data(ap_uint<D> d) { data = d; }
  void set_keep(ap_uint<(D + 7) / 8> k) { keep = k; } void set_last(ap_uint<1> l) { last = l; } };
"""

folder = sys.argv[1]
cfg = json.load(open(f"{folder}/dataflow_build_config.json"))
x = np.load(f"{folder}/input.npy"); y = np.load(f"{folder}/expected_output.npy")
m = ModelWrapper(f"{folder}/model.onnx")
ishape = m.get_tensor_shape(m.graph.input[0].name)
xin = x.reshape(ishape)
def check(m, tag):
    o = execute_onnx(m, {m.graph.input[0].name: xin})[m.graph.output[0].name]
    ok = np.isclose(y.reshape(o.shape), o, atol=1e-3)
    print(f"{tag}: {'SUCCESS' if ok.all() else 'FAIL'} ({(~ok).sum()} of {ok.size} off by > 1e-3)")
t = time.time()
m = cleanup_model(m)
m = m.transform(ConvertQONNXtoFINN()); check(m, "finn_onnx_python")
m = m.transform(InferShapes()).transform(FoldConstants()).transform(GiveUniqueNodeNames()).transform(GiveReadableTensorNames()).transform(InferDataTypes()).transform(RemoveStaticGraphInputs())
check(m, "initial_python")
m = m.transform(absorb.AbsorbSignBiasIntoMultiThreshold()).transform(Streamline())
m = m.transform(InferDataLayouts())
check(m, "streamlined_python")
print("streamlined ops:", [n.op_type for n in m.graph.node])
if cfg.get("standalone_thresholds"):
    m = m.transform(to_hw.InferThresholdingLayer())
m = m.transform(to_hw.InferQuantizedMatrixVectorActivation())
m = m.transform(to_hw.InferThresholdingLayer())
m = m.transform(GiveUniqueNodeNames()).transform(InferDataLayouts())
print("hw ops:", [(n.name, n.op_type) for n in m.graph.node])
for n in m.graph.node:
    if n.op_type in ("MVAU", "Thresholding"):
        inst = getCustomOp(n)
        attrs = {a: inst.get_nodeattr(a) for a in ("MW", "MH", "numInputVectors", "noActivation", "NumChannels", "numSteps", "inputDataType", "outputDataType", "weightDataType") if a in inst.get_nodeattr_types()}
        thr = m.get_initializer(n.input[2] if n.op_type == "MVAU" and len(n.input) > 2 else n.input[1]) if (n.op_type == "Thresholding" or len(n.input) > 2) else None
        print(n.name, attrs, "thresholds", None if thr is None else thr.shape)
print(f"{time.time() - t:.1f} s")
# specialise + folding as FINN's step_specialize_layers / step_apply_folding_config
from qonnx.transformation.general import ApplyConfig
from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
m = m.transform(GiveUniqueNodeNames()).transform(ApplyConfig(f"{folder}/specialize_layers.json"))
part = json.load(open(f"{folder}/finn.json"))["part"]
m = m.transform(SpecializeLayers(part)).transform(InferShapes()).transform(InferDataTypes())
m = m.transform(GiveUniqueNodeNames()).transform(ApplyConfig(f"{folder}/folding_config.json"))
for n in m.graph.node:
    if n.domain.startswith("finn.custom_op.fpgadataflow"):
        inst = getCustomOp(n)
        t = inst.get_nodeattr_types()
        print(n.name, n.op_type, {a: inst.get_nodeattr(a) for a in ("PE", "SIMD", "noActivation", "mem_mode", "numInputVectors") if a in t},
              "exp cycles", inst.get_exp_cycles())
fc = json.load(open(f"{folder}/folding_config.json"))
names = {n.name for n in m.graph.node}
print("folding config nodes present:", {k: k in names for k in fc if k != "Defaults"})

if "--cppsim" in sys.argv:
    import os
    import shutil
    import tempfile

    if "HLS_PATH" not in os.environ:
        inc = Path(tempfile.mkdtemp(prefix="hls_path_")) / "include"
        shutil.copytree(os.environ["AP_TYPES"], inc)
        (inc / "ap_axi_sdata.h").write_text(AXI_STANDIN)
        os.environ["HLS_PATH"] = str(inc.parent)
    os.environ.setdefault("FINN_BUILD_DIR", tempfile.mkdtemp(prefix="finn_build_"))
    from finn.transformation.fpgadataflow.compile_cppsim import CompileCppSim
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.fpgadataflow.prepare_cppsim import PrepareCppSim
    from finn.transformation.fpgadataflow.set_exec_mode import SetExecMode

    m = m.transform(MinimizeWeightBitWidth()).transform(MinimizeAccumulatorWidth())
    t = time.time()
    m = m.transform(PrepareCppSim(num_workers=1))
    print(f"PrepareCppSim {time.time() - t:.1f} s")
    t = time.time()
    m = m.transform(CompileCppSim(num_workers=1))
    print(f"CompileCppSim {time.time() - t:.1f} s")
    m = m.transform(SetExecMode("cppsim"))
    t = time.time()
    check(m, "folded_hls_cppsim")
    print(f"cppsim run {time.time() - t:.1f} s")
