"""The iCEBreaker self-test (rtl/ice40_top.v, rtl/icebreaker.pcf): every port on a documented
pin, a bitstream nextpnr places without --pcf-allow-unconstrained, and under Verilator the
green LED for a correct stored vector, the red LED for a corrupted one.

The expected accumulators are computed in this test with numpy (x @ w.T), not by the RTL and
not by tatvpr_hw.lower.rtl.flow's own vector generator."""

import re
from pathlib import Path

import numpy as np
import pytest

from tatvpr_hw.lower.rtl import flow as rtl
from tatvpr_hw.cli import main

# iCEBreaker v1.0e pins, from the board's public constraints file
# (icebreaker-fpga/icebreaker-verilog-examples, icebreaker.pcf): 12 MHz clock, user button,
# red and green LEDs (active low)
ICEBREAKER_PINS = {"CLK": 35, "BTN_N": 10, "LEDR_N": 11, "LEDG_N": 37}
SHAPE = rtl.TileShape(2, 4, 16, banks=2)     # 2 banks of 2 lanes: conflicts happen
TOKENS = 4


def _pcf(path: Path) -> dict:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].split()
        if line and line[0] == "set_io":
            pins[line[-2]] = int(line[-1])
    return pins


def test_pin_file_is_the_boards_and_covers_every_port():
    pins = _pcf(rtl.rtl_dir() / "icebreaker.pcf")
    assert pins == ICEBREAKER_PINS
    header = (rtl.rtl_dir() / "ice40_top.v").read_text().split(");", 1)[0]
    ports = set(re.findall(r"\b(?:input|output)\s+wire\s+(\w+)", header))
    assert ports == set(ICEBREAKER_PINS)


def _vector(seed: int):
    rng = np.random.default_rng(seed)
    w = rng.integers(-1, 2, size=(SHAPE.pe, SHAPE.k))
    acts = rng.integers(-128, 128, size=(TOKENS, SHAPE.k)) * (rng.random((TOKENS, SHAPE.k)) < 0.5)
    acts[0, ::2] = 17                      # token 0: all nonzeros of bank 0 first (a conflict)
    expected = np.zeros((TOKENS, SHAPE.pe), dtype=np.int64)
    for m in range(TOKENS):                # by the definition, one product at a time
        for p in range(SHAPE.pe):
            expected[m, p] = sum(int(acts[m, k]) * int(w[p, k]) for k in range(SHAPE.k))
    return w, acts, expected


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ice40_sim")


def _run(sim_root, folder, w, acts, expected):
    rtl.write_selftest_hex(folder, SHAPE, w, acts, expected)
    return rtl.simulate_ice40_selftest(folder, SHAPE, TOKENS, sim_root)


def test_selftest_lights_green_and_reruns_on_the_button(sim_root, tmp_path):
    w, acts, expected = _vector(3)
    events = _run(sim_root, tmp_path, w, acts, expected)
    # verdict, button press (dark), verdict again
    assert [(e["green"], e["red"]) for e in events] == [(1, 0), (0, 0), (1, 0)], events
    # loading 16 words + 4 tokens of at most 16 / 2 = 8 chunks + the pipeline: well under 200 cycles
    assert events[0]["cycle"] < 200


@pytest.mark.parametrize("corrupt", ["expected", "weight"])
def test_selftest_lights_red_on_a_corrupted_vector(sim_root, tmp_path, corrupt):
    w, acts, expected = _vector(3)
    if corrupt == "expected":
        expected[2, 1] += 1
    else:
        k = int(np.flatnonzero(acts[1])[0])         # a channel token 1 uses: the result must change
        w[0, k] = 1 if w[0, k] != 1 else -1
    events = _run(sim_root, tmp_path, w, acts, expected)
    assert [(e["green"], e["red"]) for e in events] == [(0, 1), (0, 0), (0, 1)], events


def test_board_bitstream_places_every_port_on_its_pin(tmp_path):
    r = rtl.build_ice40(tmp_path / "board", pe=2, simd=2, k=8)
    assert Path(r["bitstream"]).is_file() and r["bitstream_bytes"] > 1000
    assert _pcf(Path(r["pcf"])) == ICEBREAKER_PINS
    assert 0 < r["logic_cells"] <= r["logic_cells_available"] == 5280
    assert r["fmax_mhz"] >= r["clock_mhz"] == 12.0          # closes timing at the board's clock
    # without a pin for the green LED nextpnr must refuse (no --pcf-allow-unconstrained)
    short = tmp_path / "short.pcf"
    short.write_text("".join(f"set_io {n} {p}\n" for n, p in ICEBREAKER_PINS.items() if n != "LEDG_N"))
    with pytest.raises(RuntimeError, match="unconstrained"):
        rtl.build_ice40(tmp_path / "short", pe=2, simd=2, k=8, pcf=short)


def test_cli_rejects_an_unknown_board(capsys):
    assert main(["rtl", "ice40", "--board", "upduino9"]) == 2
    assert "unknown iCE40 board 'upduino9'; allowed: icebreaker" in capsys.readouterr().err
