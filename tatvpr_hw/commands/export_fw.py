"""CLI commands: ``tatvpr export qonnx | hls4ml | finn`` (the FPGA-framework routes)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import typer

from tatvpr_hw.errors import UserError

log = logging.getLogger(__name__)

_CONFIG = typer.Option(..., "--config", "-c", help="run configuration YAML")
_CKPT = typer.Option(..., "--checkpoint", help="student checkpoint <name>.safetensors (+ <name>.json)")
_OUT = typer.Option(..., "--out", help="output folder")


def _cfg(path: Path):
    from tatvpr_hw.config import load_config

    return load_config(path)


def _ckpt(path: Path) -> Path:
    st = path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")
    if not st.is_file():
        raise UserError(f"checkpoint not found: {st} (expected <name>.safetensors + <name>.json "
                        "written by the training stages)")
    return st


def _check_sparsity(sparsity: Optional[float]) -> None:
    if sparsity is not None and not (math.isfinite(sparsity) and 0 <= sparsity < 1):
        raise UserError(f"--sparsity = {sparsity}; allowed: a number in [0, 1)")


def _line(name: str, check: dict) -> str:
    return (f"{name}: max |err| {check['max_abs_err']:.3g} (bound {check['bound_max_abs']:.3g}), "
            f"mean |err| {check['mean_abs_err']:.3g} (bound {check['bound_mean_abs']:.3g}) "
            f"-> {'PASS' if check['passed'] else 'FAIL'}")


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add this area's commands to the tatvpr app (and its export group)."""

    @export_app.command("qonnx")
    def qonnx_cmd(config: Path = _CONFIG, checkpoint: Path = _CKPT, out: Path = _OUT,
                  sparsity: Optional[float] = typer.Option(None, help="top-k sparsity s baked into the graph "
                                                           "(default: model.sparsity.default)"),
                  images: int = typer.Option(2, min=1, max=64, help="real images to verify on"),
                  seed: Optional[int] = typer.Option(None, min=0, help="seed of the image choice (default: config seed)")):
        """Brevitas QONNX export of the student, qonnx cleanup, check with qonnx's executor."""
        from tatvpr_hw.lower import export_qonnx

        _check_sparsity(sparsity)
        s = export_qonnx(_cfg(config), _ckpt(checkpoint), out, sparsity=sparsity, n_images=images,
                         seed=seed)
        print(f"wrote {s['file']}  ({s['quant_nodes']['weights_2bit_narrow']} ternary 2-bit Quant, "
              f"{s['quant_nodes']['activation']} int8 Quant, {s['ops'].get('TopK', 0)} TopK nodes)")
        print(_line(f"qonnx vs PyTorch on {s['inputs']}", s["check"]))

    @export_app.command("hls4ml")
    def hls4ml_cmd(config: Path = _CONFIG, checkpoint: Path = _CKPT, out: Path = _OUT,
                   block: str = typer.Option(..., help="mlp | attn_proj | head"),
                   layer: int = typer.Option(0, min=0, help="transformer block index (mlp, attn_proj)"),
                   backend: str = typer.Option("Vitis", help="Vitis | Vivado"),
                   io: str = typer.Option("io_parallel", "--io", help="io_parallel | io_stream"),
                   board: str = typer.Option("kv260", help="target board: kv260, zcu104 or pynq_z2 "
                                             "(its part, and its default PE x SIMD for the reuse factor)"),
                   part: Optional[str] = typer.Option(None, help="FPGA part (default: the board's)"),
                   dse_point: Optional[Path] = typer.Option(None, help="design point JSON (best_point.json "
                                                            "of tatvpr dse): ReuseFactor = K*N / (PE*SIMD)"),
                   reuse_factor: Optional[int] = typer.Option(None, min=1, help="hls4ml ReuseFactor "
                                                              "(default: from the design point)"),
                   strategy: str = typer.Option("Resource", help="Resource | Latency"),
                   sparsity: Optional[float] = typer.Option(None, help="top-k sparsity of the activations"),
                   images: int = typer.Option(2, min=1, max=64, help="real images whose tokens are compared"),
                   max_layers: Optional[int] = typer.Option(None, min=1, help="lower only the first N layers of the block"),
                   no_build: bool = typer.Option(False, "--no-build", help="never run C synthesis"),
                   qkeras_twin: bool = typer.Option(False, "--qkeras-twin", help="also build each ternary "
                                                    "layer's QKeras twin and compare (needs the qkeras extra)")):
        """Lower a block's GEMMs through QONNX into hls4ml, C-simulate, compare with PyTorch."""
        from tatvpr_hw.lower import export_hls4ml
        from tatvpr_hw.lower.common import BLOCKS, check_choice
        from tatvpr_hw.lower.hls4ml.route import BACKENDS, IO_TYPES, STRATEGIES

        _check_sparsity(sparsity)
        check_choice(block, BLOCKS, "block")
        check_choice(backend, BACKENDS, "backend")
        check_choice(io, IO_TYPES, "io type")
        check_choice(strategy, STRATEGIES, "strategy")
        from tatvpr_hw.lower.finn.route import finn_board

        finn_board(board)  # unknown board: exit 2 before loading anything
        s = export_hls4ml(_cfg(config), _ckpt(checkpoint), out, block=block, layer=layer,
                          backend=backend, io_type=io, board=board, part=part,
                          reuse_factor=reuse_factor, dse_point=dse_point,
                          strategy=strategy, sparsity=sparsity, n_images=images,
                          build=not no_build, max_layers=max_layers, qkeras_twin=qkeras_twin)
        for r in s["layers"]:
            g = r["generated"]
            print(f"{r['layer']} ({r['n_in']}->{r['n_out']}): {r['project']} (IP {r['project_name']})  "
                  f"{r['strategy']} ReuseFactor {r['reuse_factor']} ({r['reuse']['products_per_clock']} "
                  f"products/clock, from {r['reuse']['source']}), product "
                  f"{','.join(g['dense_products'])}, weights {','.join(g['weight_types'].values())}, "
                  f"g++ {r['time_s']['gxx_compile']:.1f} s")
            for w in r["warnings"]:
                print(f"  warning: {w}")
            print("  " + _line("C-sim vs PyTorch", r["check"]))
        for t in s.get("qkeras_twins", []):
            print(f"QKeras twin of {t['layer']}: {t['project']}  product "
                  f"{','.join(t['generated']['dense_products'])}")
            print("  " + _line("QKeras C-sim vs QONNX C-sim", t["check"]))

    @export_app.command("finn")
    def finn_cmd(config: Path = _CONFIG, checkpoint: Path = _CKPT, out: Path = _OUT,
                 board: str = typer.Option("kv260", help="target board: kv260, zcu104 or pynq_z2 "
                                           "(written as FINN's KV260_SOM, ZCU104, Pynq-Z2)"),
                 dse_point: Optional[Path] = typer.Option(None, help="design point JSON with pe, simd, "
                                                          "clock_mhz (best_point.json of tatvpr dse)"),
                 pe: Optional[int] = typer.Option(None, help="MVAU PE, with --simd, instead of --dse-point"),
                 simd: Optional[int] = typer.Option(None, help="MVAU SIMD, with --pe, instead of --dse-point"),
                 clock_mhz: Optional[float] = typer.Option(None, help="clock with --pe/--simd "
                                                           "(default: the board's sim/arch clock)"),
                 strict: bool = typer.Option(False, help="reject PE/SIMD that do not divide the layer"),
                 block: str = typer.Option("mlp", help="mlp | attn_proj | head"),
                 layer: int = typer.Option(0, min=0, help="transformer block index"),
                 index: int = typer.Option(0, min=0, help="which ternary GEMM of the block (0 = first)"),
                 sparsity: Optional[float] = typer.Option(None, help="top-k sparsity of the activations")):
        """Write the folder FINN's build_dataflow consumes (model, build config, folding)."""
        from tatvpr_hw.lower import export_finn
        from tatvpr_hw.lower.common import BLOCKS, check_choice
        from tatvpr_hw.lower.finn.route import finn_board

        _check_sparsity(sparsity)
        if clock_mhz is not None and not math.isfinite(clock_mhz):
            raise UserError(f"--clock-mhz = {clock_mhz}; allowed: a clock in MHz, > 0")
        finn_board(board)  # unknown board: exit 2 before loading anything
        check_choice(block, BLOCKS, "block")
        s = export_finn(_cfg(config), _ckpt(checkpoint), out, board=board, dse_point=dse_point,
                        pe=pe, simd=simd, clock_mhz=clock_mhz, strict=strict, block=block,
                        layer=layer, index=index, sparsity=sparsity)
        f = s["folding"]
        print(f"wrote {s['dir']}: {s['layer']} MW={s['mw']} MH={s['mh']} M={s['tokens']} -> "
              f"PE={f['PE']} SIMD={f['SIMD']} at {s['clock_mhz']:g} MHz on {s['board']} "
              f"(FINN {s['finn_board']})" + (f"  ({f['note']})" if f["adjusted"] else ""))
        print(_line("QONNX (qonnx executor) vs PyTorch", s["check"]))
        print(f"run in FINN's container: {s['command']}")
