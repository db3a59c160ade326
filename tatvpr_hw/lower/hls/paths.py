"""Where the non-Python parts of the HLS IP live, found from the repository checkout.

``hls/`` is not a Python package: the flow locates it beside the ``tatvpr_hw`` package
(the project is installed editable), or under ``$TATVPR_HLS_DIR`` when set.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from tatvpr_hw.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[3]
_REQUIRED = ("include/tatvpr_gemm.h", "src/tatvpr_gemm.cpp", "tb/tb_ternary_gemm.cpp",
             "driver/tatvpr_pynq/formats.py")


def hls_dir() -> Path:
    """The ``hls/`` folder (kernel, testbench, Tcl templates, PYNQ driver)."""
    root = Path(os.environ.get("TATVPR_HLS_DIR", REPO_ROOT / "hls"))
    missing = [p for p in _REQUIRED if not (root / p).is_file()]
    if missing:
        raise UserError(
            f"HLS sources not found: {root} lacks {', '.join(missing)}. The hls/ folder ships with "
            "the repository checkout (pip install -e .); set TATVPR_HLS_DIR to its location")
    return root


def ap_types_dir() -> Path:
    """The ``ap_int.h``/``ap_fixed.h`` headers that the hls4ml package ships."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or spec.origin is None:
        raise UserError("the hls4ml package is not installed; it provides the ap_int headers "
                        "the C simulation compiles against (pip install -e .)")
    d = Path(spec.origin).parent / "templates" / "vivado" / "ap_types"
    if not (d / "ap_int.h").is_file():
        raise UserError(f"ap_int.h not found under {d} (hls4ml installation incomplete?)")
    return d


def driver_package() -> ModuleType:
    """Import the PYNQ driver package ``tatvpr_pynq`` from ``hls/driver/`` (numpy only)."""
    if "tatvpr_pynq" in sys.modules:
        return sys.modules["tatvpr_pynq"]
    pkg_dir = hls_dir() / "driver" / "tatvpr_pynq"
    spec = importlib.util.spec_from_file_location(
        "tatvpr_pynq", pkg_dir / "__init__.py", submodule_search_locations=[str(pkg_dir)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tatvpr_pynq"] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules["tatvpr_pynq"]
        raise
    return module
