"""Dependencies point down only (issue 14 item 1).

Layers, bottom first:

- ``sim`` (numpy only, never torch) and the packed-weight format package (any package in
  pyproject's package list besides ``sim``, ``brevitas_models``, ``tatvpr_hw``);
- ``brevitas_models``: may import the format package, never ``sim`` or ``tatvpr_hw``;
- ``tatvpr_hw``: may import everything;
- the board driver ``hls/driver/tatvpr_pynq``: none of ``sim``, torch, ``tatvpr_hw``,
  ``brevitas_models`` (it runs on a PYNQ board with numpy alone).

Every import statement of every module counts, also one inside a function (a lazy import is
still an arrow).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER_DIR = ROOT / "hls" / "driver" / "tatvpr_pynq"
TORCH_FAMILY = ("torch", "torchvision", "brevitas", "timm", "lightning", "pytorch_lightning")
DRIVER = "tatvpr_pynq"

def _packages() -> list[str]:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return sorted({p.rstrip("*").rstrip(".") for p in find["include"]})


def _format_packages() -> list[str]:
    return [p for p in _packages() if p not in ("sim", "brevitas_models", "tatvpr_hw")]


def _forbidden() -> dict[str, tuple[str, ...]]:
    """Layer -> top-level names its modules must not import."""
    fmt = tuple(_format_packages())
    rules = {
        "sim": ("brevitas_models", "tatvpr_hw", DRIVER, *TORCH_FAMILY),
        "brevitas_models": ("sim", "tatvpr_hw", DRIVER),
        "tatvpr_hw": (),
        DRIVER: ("sim", "tatvpr_hw", "brevitas_models", *TORCH_FAMILY),
    }
    for f in fmt:
        rules[f] = ("sim", "brevitas_models", "tatvpr_hw", DRIVER, *TORCH_FAMILY)
    return rules


def _layer_dirs(root: Path = ROOT) -> dict[str, Path]:
    dirs = {name: root / name for name in _forbidden() if name != DRIVER}
    dirs[DRIVER] = root / DRIVER_DIR.relative_to(ROOT)
    return dirs


def _module_name(layer: str, path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([layer, *parts])


def imported_names(path: Path, module: str) -> list[str]:
    """Absolute dotted names of every ``import`` / ``from ... import`` in the file (relative
    imports resolved against ``module``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.append(target)
    return names


def upward_arrows(root: Path = ROOT) -> list[tuple[str, str]]:
    """(file relative to ``root``, imported name) for every import a layer must not make."""
    bad = []
    for layer, forbidden in _forbidden().items():
        base = _layer_dirs(root)[layer]
        for path in sorted(base.rglob("*.py")):
            for name in imported_names(path, _module_name(layer, path, base)):
                if name.split(".")[0] in forbidden:
                    bad.append((path.relative_to(root).as_posix(), name))
    return bad


def test_every_layer_has_modules():
    for layer, base in _layer_dirs().items():
        assert len(list(base.rglob("*.py"))) >= 2, f"layer {layer} at {base} has no modules to check"


def test_imported_names_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    f = pkg / "mod.py"
    f.write_text("import os\nfrom . import sibling\nfrom ..up import x\n"
                 "def g():\n    from sim.packing import pack\n    import torch.nn\n")
    assert imported_names(f, "top.pkg.mod") == ["os", "top.pkg", "top.up", "sim.packing", "torch.nn"]


def test_no_upward_arrows():
    arrows = upward_arrows()
    assert not arrows, "imports against the layer order:\n" + "\n".join(f"  {f}: {n}" for f, n in arrows)


@pytest.mark.parametrize("layer, line, arrow", [
    ("brevitas_models", "def f():\n    from tatvpr_hw.errors import UserError\n", "tatvpr_hw.errors"),
    ("brevitas_models", "from sim import packing\n", "sim"),
    ("sim", "import torch\n", "torch"),
    ("hls/driver/tatvpr_pynq", "from sim.packing import pack\n", "sim.packing"),
])
def test_a_planted_upward_arrow_is_caught(tmp_path, layer, line, arrow):
    """The walk flags each kind of arrow the layering forbids (planted in a copy of the tree)."""
    (tmp_path / layer).mkdir(parents=True)
    (tmp_path / layer / "planted.py").write_text(line)
    assert (f"{layer}/planted.py", arrow) in upward_arrows(tmp_path)


# Every module of brevitas_models imports, and a model builds, saves and loads its checkpoint,
# with ``tatvpr_hw`` and ``sim`` unimportable.
_ISOLATED = textwrap.dedent("""
    import importlib, pkgutil, sys, tempfile
    from pathlib import Path

    BLOCKED = ("tatvpr_hw", "sim")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    try:
        import sim  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker does not block")

    import brevitas_models
    names = [m.name for m in pkgutil.walk_packages(brevitas_models.__path__, "brevitas_models.")
             if not m.name.endswith("__main__")]
    for name in names:
        importlib.import_module(name)
    for name in brevitas_models.__all__:
        getattr(brevitas_models, name)

    from brevitas_models.checkpoint import load_model, save_checkpoint
    from brevitas_models.config import ModelConfig
    from brevitas_models.errors import ModelInputError
    from brevitas_models.model import build_model
    import torch

    cfg = ModelConfig(head={"name": "cls"}, teacher_img_size=28, student_img_size=28)
    model = build_model(cfg, student=True)
    with tempfile.TemporaryDirectory() as d:
        meta = {"config": {"model": cfg.model_dump(mode="json")}, "role": "student", "stage": "distill",
                "step": 0, "seed": 0, "rng": None, "teacher_checkpoint": None}
        save_checkpoint(Path(d) / "m", model, meta)
        again, _ = load_model(Path(d) / "m")
        x = torch.randn(1, 3, 28, 28)
        model.eval(); again.eval()
        assert torch.equal(model(x), again(x))
        (Path(d) / "f").write_text("")
        try:
            save_checkpoint(Path(d) / "f" / "m", model, meta)  # under a file: the models' own error
        except ModelInputError as err:
            assert "is a file, not a folder" in str(err), err
        else:
            raise SystemExit("no error for a checkpoint path under a file")
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("imported", len(names), "modules")
""")


def test_brevitas_models_runs_without_flow_and_simulator():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", _ISOLATED], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    count = int(r.stdout.split("imported ")[1].split()[0])
    assert count >= 10, r.stdout  # config, errors, _io, model, vit, quant, sparsity, checkpoint, heads...


@pytest.mark.parametrize("blocked", ["tatvpr_hw", "sim"])
def test_the_isolation_test_fails_when_the_models_import_a_blocked_package(tmp_path, blocked):
    """Plant an import of the blocked package into a copy of the models: the script fails."""
    import shutil

    shutil.copytree(ROOT / "brevitas_models", tmp_path / "brevitas_models",
                    ignore=shutil.ignore_patterns("__pycache__"))
    errors = tmp_path / "brevitas_models" / "errors.py"
    errors.write_text(errors.read_text() + f"\nimport {blocked}.errors\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", _ISOLATED], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert f"blocked for this test: {blocked}" in r.stderr


# Lowering to hardware lives under one name, ``tatvpr_hw.lower``, one sub-package per route.
ROUTES = ("qonnx", "hls4ml", "finn", "hls", "rtl")
ROUTE_TOOLS = ("qonnx", "hls4ml", "finn", "onnxruntime", "qkeras")


def lowering_outside(root: Path = ROOT) -> list[tuple[str, str]]:
    """(file, imported name) for every import of a route's tool from outside ``tatvpr_hw/lower``,
    and every import of the command layer from inside it (the CLI sits above the routes)."""
    bad = []
    base = root / "tatvpr_hw"
    for path in sorted(base.rglob("*.py")):
        inside = "lower" in path.relative_to(base).parts[:1]
        for name in imported_names(path, _module_name("tatvpr_hw", path, base)):
            top = name.split(".")[0]
            if not inside and top in ROUTE_TOOLS:
                bad.append((path.relative_to(root).as_posix(), name))
            if inside and name.startswith("tatvpr_hw.commands"):
                bad.append((path.relative_to(root).as_posix(), name))
    return bad


def test_lowering_lives_under_one_name():
    lower = ROOT / "tatvpr_hw" / "lower"
    for route in ROUTES:
        assert (lower / route / "__init__.py").is_file(), f"route {route} has no sub-package"
    for old in ("export", "hlsflow", "rtl.py", "board_export.py"):
        assert not (ROOT / "tatvpr_hw" / old).exists(), f"tatvpr_hw/{old} is lowering outside tatvpr_hw/lower"
    bad = lowering_outside()
    assert not bad, "route imports outside tatvpr_hw/lower:\n" + "\n".join(f"  {f}: {n}" for f, n in bad)


@pytest.mark.parametrize("where, line", [
    ("tatvpr_hw/evaluation_extra.py", "def f():\n    import hls4ml\n"),
    ("tatvpr_hw/lower/finn/extra.py", "from tatvpr_hw.commands.export_fw import app\n"),
])
def test_a_planted_route_import_is_caught(tmp_path, where, line):
    (tmp_path / where).parent.mkdir(parents=True)
    (tmp_path / where).write_text(line)
    assert [w for w, _ in lowering_outside(tmp_path)] == [where]
