"""The packed-weight format has one authority, ``ternary_format``: numpy only, importing nothing of
the project, and the simulator, the models' footprint and the board driver all use it (issue 14
item 1)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np

import sim.packing
import ternary_format

REPO = Path(__file__).resolve().parents[2]
PROJECT = ("sim", "torch", "tatvpr_hw", "brevitas_models", "tatvpr_pynq")


def test_format_package_imports_numpy_only():
    # a fresh interpreter with the project's packages (and torch) blocked: importing them would fail
    code = ("import sys\n"
            f"for name in {PROJECT!r}: sys.modules[name] = None\n"
            "import ternary_format\n"
            "import numpy as np\n"
            "assert ternary_format.pack(np.array([[1, -1, 0, 1, 1]]), 'ternary2').tolist() == [[77, 1]]\n"
            "top = sorted({m.split('.')[0] for m in sys.modules if sys.modules[m] is not None})\n"
            "print(' '.join(top))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    assert "ternary_format" in loaded and "numpy" in loaded
    assert not loaded & set(PROJECT)


def test_format_package_source_has_no_project_imports():
    # the static picture, so a lazy import inside a function is caught too
    for path in sorted((REPO / "ternary_format").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in {"__future__", "math", "numpy", "ternary_format"}, (path, name)


def test_simulator_models_and_driver_use_the_authority():
    # sim.packing re-exports the very objects (no second copy to drift)
    for name in ternary_format.__all__:
        assert getattr(sim.packing, name) is getattr(ternary_format, name), name
    # the models' footprint imports the format package, not the simulator
    tree = ast.parse((REPO / "brevitas_models" / "footprint.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "ternary_format" in modules
    assert not {m for m in modules if m and m.split(".")[0] in ("sim", "tatvpr_hw", "tatvpr_pynq")}
    from tatvpr_hw.lower.hls.paths import driver_package

    formats = driver_package().formats
    assert formats.pack is ternary_format.pack and formats.unpack is ternary_format.unpack


def test_code_constants_match_the_hand_bytes():
    # ternary2 codes by definition: 00 = 0, 01 = +1, 11 = -1; [+1, -1, 0, -1] -> 0b11_00_11_01 = 205
    assert (ternary_format.CODE_ZERO, ternary_format.CODE_PLUS, ternary_format.CODE_MINUS) == (0, 1, 3)
    assert ternary_format.pack_ternary2(np.array([1, -1, 0, -1])).tolist() == [205]
    # the largest base-3 byte: five digits 2 = 2 * (1 + 3 + 9 + 27 + 81) = 242
    assert ternary_format.MAX_TERNARY16_BYTE == 242
    assert ternary_format.pack_ternary16(np.ones(5, np.int8)).tolist() == [242]
