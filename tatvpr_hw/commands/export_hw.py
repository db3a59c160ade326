"""CLI: ``tatvpr export bitstream`` -- the HLS IP's board project (Vitis HLS + Vivado + PYNQ)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

log = logging.getLogger(__name__)


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add ``export bitstream`` to the export group."""

    @export_app.command("bitstream")
    def bitstream(
        board: str = typer.Option("kv260", help="target board: kv260, zcu104 or pynq_z2"),
        dse_point: Optional[Path] = typer.Option(None, "--dse-point",
                                                 help="best_point.json of `tatvpr dse` (pe, simd, clock_mhz); "
                                                      "default: the simulator's accelerator for the board (sim/arch/<board>.yaml)"),
        out: Path = typer.Option(..., "--out", help="project folder to write"),
        config: Optional[Path] = typer.Option(None, "--config",
                                              help="run config: size the buffers for its student (K and tokens)"),
        kmax: Optional[int] = typer.Option(None, help="largest K (input channels) [default 768, or from --config]"),
        tokens: Optional[int] = typer.Option(None, help="largest M (tokens) [default 50, or from --config]"),
        jobs: int = typer.Option(4, min=1, max=64, help="Vivado implementation jobs"),
        no_run: bool = typer.Option(False, "--no-run", help="write the project only, even if the tools are on PATH"),
        seed: int = typer.Option(0, min=0, help="seed of the sample layer the C simulation checks"),
    ) -> None:
        """Write the board project of the packed-ternary GEMM IP and build it when the tools exist."""
        from tatvpr_hw.boards import board_name, tool_board
        from tatvpr_hw.config import load_config
        from tatvpr_hw.errors import UserError
        from tatvpr_hw.lower.hls.board import export_bitstream, sizes_from_config

        hls_board = tool_board(board, "hls")
        k_cfg, m_cfg = sizes_from_config(load_config(config)) if config else (768, 50)
        k = kmax if kmax is not None else k_cfg
        m = tokens if tokens is not None else m_cfg
        if k < 1 or k > 65536 or m < 1:
            raise UserError(f"--kmax must be in [1, 65536] and --tokens >= 1, got {k} and {m}")
        man = export_bitstream(hls_board, out, dse_point=dse_point, kmax=k, mmax=m, jobs=jobs,
                               run=not no_run, seed=seed)
        dp = man["design_point"]
        print(f"{board_name(board)} ({man['part']}): PE={dp['pe']} x SIMD={dp['simd']} at {dp['clock_mhz']:g} MHz, "
              f"K<={man['kernel']['kmax']}, M<={man['kernel']['mmax']} -> {out}")
        cs = man["csim_sample"]
        if cs.get("checked"):
            print(f"C simulation of a sample layer: {'bit-exact' if cs['bit_exact'] else 'MISMATCH'} "
                  f"({cs['chunk_cycles_per_fold']} CHUNK cycles per fold)")
        tools = man["tools"]
        if tools.get("ran"):
            print(f"bitstream: {man['bitstream']}\nhwh:       {man['hwh']}")
        else:
            why = ("--no-run given" if not tools["missing"]
                   else f"{' and '.join(tools['missing'])} not on PATH")
            print(f"vendor tools not run ({why}); to build the bitstream run:")
            for cmd in man["commands"]:
                print(f"  {cmd}")
