"""CLI commands: `tatvpr rtl {sim,synth,ice40}` -- the RTL witness of the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tatvpr_hw.errors import UserError


# Tile geometry bounds for the RTL commands: a Verilator / yosys build of a larger tile would run
# for hours (the tiles these commands check are 2x4 .. 32x32, K up to a few thousand).
MAX_LANES = 256
MAX_K = 65536


def _check_geometry(**values: int | None) -> None:
    """pe / simd / banks (lanes) in [1, MAX_LANES], k in [1, MAX_K], ports 1 or 2, layers >= 1."""
    for name, v in values.items():
        if v is None:
            continue
        hi = {"k": MAX_K, "layers": 10_000}.get(name, MAX_LANES)
        if name == "ports":
            if v not in (1, 2):
                raise UserError(f"--ports = {v}; allowed: 1 or 2")
        elif not 1 <= v <= hi:
            raise UserError(f"--{name} = {v}; allowed: an integer in [1, {hi}]")


def _check_folder(path: Path, what: str) -> None:
    from sim.atomic import check_output_dir
    check_output_dir(path, what)


def _grid(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        try:
            pe, simd = item.lower().split("x")
            out.append((int(pe), int(simd)))
        except ValueError:
            raise UserError(f"--grid item {item!r} is not PExSIMD (e.g. 4x8)") from None
        _check_geometry(pe=out[-1][0], simd=out[-1][1])
    return out


def _tile_points(text: str) -> list[dict]:
    """``PExSIMD:K:B[:P]`` items, comma-separated (B = banks, P = read ports per memory)."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            (pe, simd), = _grid(parts[0])
            k, banks = int(parts[1]), int(parts[2])
            ports = int(parts[3]) if len(parts) > 3 else 1
            if len(parts) > 4:
                raise ValueError
        except (ValueError, IndexError, UserError):
            raise UserError(f"tile point {item!r} is not PExSIMD:K:B[:P] (e.g. 4x8:128:8:1)") from None
        _check_geometry(pe=pe, simd=simd, k=k, banks=banks, ports=ports)
        out.append({"pe": pe, "simd": simd, "k": k, "banks": banks, "ports": ports})
    return out


def _topk_points(text: str) -> list[dict]:
    """``L:K_MAX:B:SIMD`` items of the top-k unit (vector lanes, channels, banks, slots), comma-separated."""
    out = []
    for item in text.split(","):
        try:
            lanes, k_max, banks, simd = (int(p) for p in item.strip().split(":"))
        except ValueError:
            raise UserError(f"top-k point {item!r} is not L:K_MAX:B:SIMD (e.g. 16:3072:32:32)") from None
        _check_geometry(lanes=lanes, k=k_max, banks=banks, simd=simd)
        out.append({"lanes": lanes, "k_max": k_max, "banks": banks, "simd": simd})
    return out


def _print_topk_table(table: dict) -> None:
    print(f"{'set':8} {'L':>3} {'K_max':>6} {'B':>3} {'SIMD':>4} {'LUT':>6} {'LUTRAM':>6} {'FF':>6} {'BRAM36eq':>8} "
          f"{'pred LUT':>8} {'pred FF':>7} {'rule LUTRAM':>11}  RAM cells")
    for p, r in zip(table["fit"]["points"], table["rows"]):
        pr, me = p["predicted"], p["measured"]
        print(f"{p['set']:8} {r['lanes']:>3} {r['k_max']:>6} {r['banks']:>3} {r['simd']:>4} {me['lut']:>6} "
              f"{me['lutram_luts']:>6} {me['ff']:>6} {me['bram36_eq']:>8g} {pr['lut']:>8.0f} {pr['ff']:>7.0f} "
              f"{pr['lutram_luts']:>11}  {r['lutram_cells']}")
    fit = table["fit"]
    print("logic fit (LUT logic+SRL): " + ", ".join(f"{v:.3f}/{k}" for k, v in fit["lut"].items()))
    print("logic fit (FF):            " + ", ".join(f"{v:.3f}/{k}" for k, v in fit["ff"].items()))
    for cls, e in fit["held_out_errors"].items():
        print(f"held-out error {cls:12}: max {100 * e['max_rel_error']:.1f}%, mean {100 * e['mean_rel_error']:.1f}%")


def _print_tile_table(table: dict) -> None:
    print(f"{'set':8} {'PExSIMD':>8} {'K':>5} {'B':>3} {'P':>2} {'LUT':>6} {'SRL':>4} {'LUTRAM':>6} {'FF':>6} "
          f"{'BRAM18':>6} {'BRAM36':>6} {'rule':>9} {'rule LUTRAM':>11} {'rule BRAM36':>11} {'FINN LUT':>8}  RAM cells")
    kinds = {(p["pe"], p["simd"], p["k"], p["banks"], p["ports"]): p["set"] for p in table["fit"]["points"]}
    for r in table["rows"]:
        rule = r["block_rule"]
        tag = kinds.get((r["pe"], r["simd"], r["k"], r["banks"], r["ports"]), "")
        print(f"{tag:8} {r['pe']:>3}x{r['simd']:<4} {r['k']:>5} {r['banks']:>3} {r['ports']:>2} {r['lut']:>6} "
              f"{r['srl']:>4} {r['lutram_luts']:>6} {r['ff']:>6} {r['bram18']:>6} {r['bram36']:>6} "
              f"{rule['block_type']:>9} {rule['lut']:>11} {rule['bram36'] + rule['bram18'] / 2:>11g} "
              f"{r['finn_mvau_lut']:>8}  {r['lutram_cells']}")
    fit = table["fit"]
    print("datapath fit (LUT logic+SRL): " + ", ".join(f"{v:.3f}/{k}" for k, v in fit["lut"].items()))
    print("datapath fit (FF):            " + ", ".join(f"{v:.3f}/{k}" for k, v in fit["ff"].items()))
    for cls, e in fit["held_out_errors"].items():
        print(f"held-out error {cls:12}: max {100 * e['max_rel_error']:.1f}%, mean {100 * e['mean_rel_error']:.1f}%")


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add the `rtl` command group."""
    rtl_app = typer.Typer(help="RTL tile: Verilator cross-check of the simulator, yosys resources, "
                               "iCE40 bitstream.", no_args_is_help=True)
    app.add_typer(rtl_app, name="rtl")

    @rtl_app.command("sim")
    def rtl_sim(
        trace: Optional[Path] = typer.Option(None, help="workload trace (tatvpr trace); default: a "
                                             "synthetic ViT-tiny trace at --sparsity"),
        pe: int = typer.Option(4, help="output lanes of the tile"),
        simd: int = typer.Option(8, help="input lanes of the tile"),
        layers: int = typer.Option(3, help="how many ternary layers of the trace to check (fold 0 each)"),
        banks: Optional[int] = typer.Option(None, help="weight-buffer banks B (default: simd)"),
        ports: int = typer.Option(1, help="read ports per bank memory (1 or 2)"),
        sparsity: float = typer.Option(0.4, help="sparsity of the synthetic trace (without --trace)"),
        seed: int = typer.Option(0, min=0, help="seed of the int8 activation values"),
        build_dir: Path = typer.Option(Path("build/rtl"), help="where Verilator builds"),
        as_json: bool = typer.Option(False, "--json", help="print JSON rows"),
    ) -> None:
        """Run trace tiles through the Verilog tile; check bit-exact outputs and cycle-exact timing vs sim."""
        from tatvpr_hw.lower.rtl import flow as rtl

        import math

        _check_geometry(pe=pe, simd=simd, banks=banks, ports=ports, layers=layers)
        rtl.TileShape(pe, simd, 1, banks, ports)   # bad gather values: one error line, exit 2
        if not math.isfinite(sparsity):
            raise UserError(f"--sparsity must be in [0, 1), got {sparsity}")
        _check_folder(build_dir, "--build-dir")
        if trace is not None and not trace.is_file():
            raise UserError(f"trace file not found: {trace}")
        build_dir.mkdir(parents=True, exist_ok=True)
        if trace is None:
            from sim.trace import synthetic_vit_trace, write_trace
            if not 0.0 <= sparsity < 1.0:
                raise UserError(f"--sparsity must be in [0, 1), got {sparsity}")
            trace = build_dir / f"synthetic_s{sparsity:g}.npz"
            write_trace(trace, synthetic_vit_trace(depth=1, dim=192, tokens=50, heads=3,
                                                   sparsity=sparsity, seed=seed))
        rows = rtl.check_trace_tiles(trace, pe, simd, build_dir, layers=layers, banks=banks, ports=ports,
                                     seed=seed)
        if as_json:
            print(json.dumps(rows, indent=2))
        else:
            print(f"{'layer':24} {'PExSIMD':>8} {'B':>3} {'P':>2} {'K':>5} {'tok':>4} {'bit-exact':>9} "
                  f"{'RTL cyc':>8} {'sim cyc':>8} {'conflict':>8}")
            for r in rows:
                print(f"{r['layer']:24} {r['pe']:>3}x{r['simd']:<4} {r['banks']:>3} {r['ports']:>2} {r['k']:>5} "
                      f"{r['tokens']:>4} {str(r['bit_exact']):>9} {r['rtl_cycles']:>8} {r['sim_cycles']:>8} "
                      f"{r['conflict_cycles']:>8}")
        if not all(r["bit_exact"] and r["cycle_exact"] for r in rows):
            print("MISMATCH between the RTL and the reference/simulator")
            raise typer.Exit(1)

    @rtl_app.command("synth")
    def rtl_synth(
        grid: str = typer.Option("2x4,4x4,4x8,8x8", help="PExSIMD points, comma-separated"),
        family: str = typer.Option("xc7,xcup", help="yosys synth_xilinx families: xc7 (7-series), xcup (UltraScale+)"),
        out: Optional[Path] = typer.Option(None, help="write the table as JSON here"),
        no_int8: bool = typer.Option(False, help="skip the int8 x int8 comparison"),
        tiles: Optional[str] = typer.Option(None, help="synthesise whole tiles (weight buffer, gather, scheduler, "
                                            "array) instead: PExSIMD:K:B[:P] points to fit on"),
        held_out: Optional[str] = typer.Option(None, help="with --tiles / --topk: points kept out of the fit, to "
                                               "measure the model's error per resource class"),
        topk: Optional[str] = typer.Option(None, help="synthesise the vector unit's top-k unit (rtl/topk_unit.v) "
                                           "instead: L:K_MAX:B:SIMD points to fit on"),
    ) -> None:
        """Synthesise with yosys: the ternary MAC array (lane-model fit, int8 comparison) or, with --tiles,
        whole tiles with their RAM blocks / LUTRAM, a datapath fit and held-out errors, and FINN's MVAU estimate."""
        from tatvpr_hw.lower.rtl import flow as rtl
        from tatvpr_hw.io import write_json

        fams = [f.strip() for f in family.split(",") if f.strip()]
        if topk is not None:
            if tiles is not None:
                raise UserError("--topk and --tiles are two different syntheses; give one")
            if not held_out:
                raise UserError("--topk needs --held-out points (the model's error is measured on them)")
            if len(fams) != 1:
                raise UserError(f"--topk takes one --family, got {family!r}")
            table = rtl.topk_synth_table(_topk_points(topk), _topk_points(held_out), fams[0])
            _print_topk_table(table)
            if out:
                write_json(out, table)
            return
        if tiles is not None:
            if not held_out:
                raise UserError("--tiles needs --held-out points (the model's error is measured on them)")
            if len(fams) != 1:
                raise UserError(f"--tiles takes one --family, got {family!r}")
            ttable = rtl.tile_synth_table(_tile_points(tiles), _tile_points(held_out), fams[0])
            _print_tile_table(ttable)
            if out:
                write_json(out, ttable)
            return
        table = rtl.synth_table(_grid(grid), fams, compare_int8=not no_int8)
        print(f"{'family':6} {'PExSIMD':>8} {'lanes':>6} {'LUT':>6} {'SRL':>4} {'FF':>6} {'CARRY':>6} {'DSP':>4}")
        for r in table["rows"]:
            print(f"{r['family']:6} {r['pe']:>3}x{r['simd']:<4} {r['lanes']:>6} {r['lut']:>6} {r['srl']:>4} "
                  f"{r['ff']:>6} {r['carry']:>6} {r['dsp']:>4}")
        for fam, fit in table["fit"].items():
            lut, ff = fit["lut"], fit["ff"]
            print(f"{fam}: LUT ~= {lut['lut_per_lane']:.2f}/lane + {lut['lut_per_accumulator_bit']:.3f}/accumulator bit "
                  f"(max error {100 * lut['max_rel_error']:.1f}%, SIMD >= 2); FF ~= {ff['ff_per_lane']:.2f}/lane + "
                  f"{ff['ff_per_input_lane']:.2f}/input lane + {ff['ff_per_accumulator_bit']:.3f}/accumulator bit "
                  f"(max error {100 * ff['max_rel_error']:.1f}%)")
        if table["int8_comparison"]:
            print("int8 x int8 comparison (same array):")
            for r in table["int8_comparison"]:
                print(f"  {r['family']:5} {r['design']:8} dsp={'yes' if r['dsp_allowed'] else 'no ':3} "
                      f"LUT {r['lut']:>6} FF {r['ff']:>6} CARRY {r['carry']:>5} DSP {r['dsp']:>4}")
        if out:
            write_json(out, table)

    @rtl_app.command("ice40")
    def rtl_ice40(
        out: Path = typer.Option(Path("build/ice40"), help="output folder (bitstream tile.bin)"),
        board: str = typer.Option("icebreaker", help="the board whose pin file (rtl/<board>.pcf) places the "
                                  "self-test's clock, button and LEDs: icebreaker (iCEBreaker v1.0e, UP5K)"),
        pe: int = typer.Option(2), simd: int = typer.Option(4), k: int = typer.Option(16),
        banks: Optional[int] = typer.Option(None, help="weight-buffer banks (default: simd)"),
        ports: int = typer.Option(1, help="read ports per bank memory (1 or 2)"),
        tokens: int = typer.Option(4, help="tokens in the stored test vector (1..64)"),
        seed: int = typer.Option(1, min=0, help="nextpnr placement seed"),
    ) -> None:
        """Build the board self-test for an iCE40 UP5K end to end (yosys, nextpnr-ice40 with the board's pins,
        icepack): the tile runs a stored test vector at power-up; green LED = pass, red = fail."""
        from tatvpr_hw.lower.rtl import flow as rtl

        _check_geometry(pe=pe, simd=simd, k=k, banks=banks, ports=ports)
        rtl.TileShape(pe, simd, k, banks, ports)
        if board not in rtl.ICE40_BOARDS:
            raise UserError(f"unknown iCE40 board {board!r}; allowed: {', '.join(rtl.ICE40_BOARDS)}")
        _check_folder(out, "--out")
        r = rtl.build_ice40(out, pe=pe, simd=simd, k=k, seed=seed, banks=banks, ports=ports, board=board,
                            tokens=tokens)
        print(f"{r['board']} ({r['device']}), self-test of tile {pe}x{simd}, K={k}, B={r['banks']}, P={r['ports']}, "
              f"{r['tokens']} tokens: {r['logic_cells']}/{r['logic_cells_available']} logic cells, fmax "
              f"{r['fmax_mhz']:.1f} MHz (board clock {r['clock_mhz']:g} MHz), bitstream {r['bitstream_bytes']} bytes "
              f"-> {r['bitstream']}")
        print(f"flash it: iceprog {r['bitstream']}   (green LED = pass, red = fail, button = run again)")
