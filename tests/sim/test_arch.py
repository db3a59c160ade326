"""Hardware description: shipped files load, bad files give errors naming key, value and what is allowed."""

import pytest
import yaml

from sim.arch import ARCH_DIR, load_arch, with_overrides
from sim.errors import SimInputError


@pytest.mark.parametrize("name", ["kv260", "zcu104", "pynq_z2"])
def test_shipped_archs_load(name):
    a = load_arch(ARCH_DIR / f"{name}.yaml")
    assert a.board.name == name
    assert a.dram_bytes_per_cycle > 0
    assert a.energy.add8_pj.value > 0


def test_board_numbers():
    kv = load_arch("kv260").board
    assert (kv.resources.lut, kv.resources.ff, kv.resources.dsp, kv.resources.bram36, kv.resources.uram) == \
        (117120, 234240, 1248, 144, 64)
    assert kv.dram_bandwidth_gb_per_s.value == 19.2
    pz = load_arch("pynq_z2").board
    assert (pz.resources.lut, pz.resources.dsp, pz.resources.bram36) == (53200, 220, 140)
    assert pz.dram_bandwidth_gb_per_s.value == 2.1
    zc = load_arch("zcu104").board
    assert (zc.resources.lut, zc.resources.ff, zc.resources.dsp, zc.resources.bram36, zc.resources.uram) == \
        (230400, 460800, 1728, 312, 96)


def _write(tmp_path, edit):
    data = yaml.safe_load((ARCH_DIR / "kv260.yaml").read_text())
    edit(data)
    p = tmp_path / "a.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("edit,needles", [
    (lambda d: d["compute"].update(pe=0), ["compute.pe", "0", "greater than or equal to 1"]),
    (lambda d: d["compute"].update(skip_mode="rows"), ["compute.skip_mode", "'none', 'act', 'weight' or 'both'"]),
    (lambda d: d["compute"].update(weight_format="ternary3"), ["compute.weight_format", "ternary1.6"]),
    (lambda d: d.update(colour="red"), ["unknown key 'colour'"]),
    (lambda d: d["buffers"].update(weights_kbytes=3), ["unknown key 'buffers.weights_kbytes'"]),
    (lambda d: d.update(board="kv999"), ["unknown board 'kv999'", "kv260"]),
    (lambda d: d.update(energy_table="nope"), ["unknown energy table 'nope'", "horowitz45nm"]),
    (lambda d: d["dram"].update(bandwidth_gb_per_s=50), ["exceeds", "19.2"]),
    (lambda d: d["compute"].update(adder_tree_stages=2), ["adder_tree_stages", "at least 5"]),
    (lambda d: d["vector_unit"]["cycles_per_element"].update(relu=1), ["unknown kind 'relu'"]),
    (lambda d: d.update(clock_mhz=-5), ["clock_mhz", "-5"]),
])
def test_bad_arch_named(tmp_path, edit, needles):
    p = _write(tmp_path, edit)
    with pytest.raises(SimInputError) as ei:
        load_arch(p)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, msg
    if "board" not in needles[0] and "energy" not in needles[0]:
        assert str(p) in msg


def test_malformed_yaml_and_missing(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("compute: {pe: [1,\n")
    with pytest.raises(SimInputError, match="malformed YAML"):
        load_arch(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(SimInputError, match="mapping"):
        load_arch(p)
    with pytest.raises(SimInputError, match="not found"):
        load_arch(tmp_path / "none.yaml")


def test_with_overrides():
    a = load_arch("kv260")
    b = with_overrides(a, {"compute.pe": 16, "clock_mhz": 300, "energy_table": "horowitz45nm"})
    assert (b.compute.pe, b.clock_mhz, b.energy.name) == (16, 300, "horowitz45nm")
    assert a.compute.pe == 32  # the original is unchanged
    with pytest.raises(SimInputError, match="unknown key 'pes'"):
        with_overrides(a, {"compute.pes": 1})
    with pytest.raises(SimInputError, match="compute.simd"):
        with_overrides(a, {"compute.simd": 0})


@pytest.mark.parametrize("sets,needles", [
    (["compute.gather.ports=0"], ["compute.gather.ports = 0", "1 or 2"]),
    (["compute.gather.ports=3"], ["compute.gather.ports = 3", "1 or 2"]),
    (["compute.gather.banks=5"], ["compute.gather.banks = 5 does not divide compute.simd = 32"]),
    (["compute.gather.banks=32", "compute.gather.ports=2"], ["32 x 2 does not divide compute.simd = 32"]),
    (["compute.gather.banks=16", "compute.gather.ports=2", "compute.simd=48"],
     ["16 x 2 does not divide compute.simd = 48"]),  # banks divide simd, banks x ports do not
    (["clock_mhz=450"], ["clock_mhz = 450", "fabric fmax of 400 MHz", "DS925"]),
])
def test_bad_gather_and_clock_one_error_line_exit_2(tmp_path, capsys, sets, needles):
    """Through the real `tatvpr sim` entry point: one `error:` line naming the key, exit 2."""
    from sim.trace import synthetic_vit_trace, write_trace
    from tatvpr_hw.cli import main

    trace = tmp_path / "t.npz"
    write_trace(trace, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, seed=0))
    args = ["sim", "--trace", str(trace)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_clock_at_the_board_fmax_is_accepted():
    a = with_overrides(load_arch("kv260"), {"clock_mhz": 400})
    assert a.clock_mhz == 400 == a.board.fabric_fmax_mhz.value
    assert "DS925" in a.board.fabric_fmax_mhz.source


def test_row_op_cycles_defaults_and_bad_values():
    """vector_unit.row_op_cycles: the HLS unit's per-row steps by default (LayerNorm 16 + 32 quotient
    steps of the mean and the variance, 16 shift-and-add steps, 32 square-root + 48 quotient steps, softmax 33 quotient steps, the L2 norm's square root + reciprocal 32 + 48), kinds
    left out keep them, bad values refused."""
    kv = load_arch("kv260")
    assert kv.spec.vector_unit.row_op_cycles == {"softmax": 33, "layernorm": 144, "gelu": 0, "add": 0, "other": 0,
                                                 "requant": 0, "l2norm": 80, "topk": 128}
    one = with_overrides(kv, {"vector_unit.row_op_cycles": {"add": 2}})
    assert one.spec.vector_unit.row_op_cycles == {"softmax": 33, "layernorm": 144, "gelu": 0, "add": 2, "other": 0,
                                                  "requant": 0, "l2norm": 80, "topk": 128}
    for bad, msg in (({"relu": 1}, "unknown kind 'relu'"), ({"softmax": -1}, "softmax = -1: must be an integer"),
                     ({"softmax": 2.5}, "fractional part")):
        with pytest.raises(SimInputError, match=msg):
            with_overrides(kv, {"vector_unit.row_op_cycles": bad})


TOPK_NEEDLES = ["schedule.topk = 'host' needs schedule.handoffs = 'dram'", "only sees activations handed off through DRAM",
                "allowed: schedule.topk: fabric, or schedule.handoffs: dram"]


@pytest.mark.parametrize("overlap", ["none", "pipelined"])
def test_host_topk_needs_dram_handoffs_under_every_overlap(overlap):
    """With on-chip hand-offs (overlap none + onchip: the all-on-chip machine; pipelined + onchip) the
    activations never reach the ARM: a top-k on the host would be free work nobody does. The default is
    the fabric top-k; the host's is accepted with hand-offs through DRAM only."""
    a = load_arch("kv260")
    assert (a.spec.schedule.topk, a.spec.schedule.handoffs, a.spec.schedule.overlap) == ("fabric", "onchip", "none")
    with pytest.raises(SimInputError) as ei:
        with_overrides(a, {"schedule.overlap": overlap, "schedule.topk": "host"})
    msg = str(ei.value)
    assert len(msg.splitlines()) == 1 and all(n in msg for n in TOPK_NEEDLES), msg
    ok = with_overrides(a, {"schedule.overlap": overlap, "schedule.topk": "host", "schedule.handoffs": "dram"})
    assert (ok.spec.schedule.topk, ok.spec.schedule.handoffs) == ("host", "dram")
    for handoffs in ("onchip", "dram"):
        assert with_overrides(a, {"schedule.overlap": overlap, "schedule.handoffs": handoffs}).spec.schedule.topk == "fabric"


@pytest.mark.parametrize("name", ["kv260", "zcu104", "pynq_z2", "kv260_systolic"])
def test_shipped_archs_charge_their_top_k(name):
    """Every shipped arch either puts the top-k on the fabric or hands off through DRAM (the rule above)."""
    s = load_arch(name).spec.schedule
    assert s.topk == "fabric" or s.handoffs == "dram"


def test_host_topk_in_a_file_one_error_line_exit_2(tmp_path, capsys):
    """An arch file with schedule.topk host and default (on-chip) hand-offs, and --set on the shipped one,
    through `tatvpr sim`: one `error:` line naming both keys and what is allowed, exit 2."""
    from sim.trace import synthetic_vit_trace, write_trace
    from tatvpr_hw.cli import main

    trace = tmp_path / "t.npz"
    write_trace(trace, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, seed=0))
    p = _write(tmp_path, lambda d: d.setdefault("schedule", {}).update(topk="host"))
    for args in (["--arch", str(p)], ["--set", "schedule.topk=host"],
                 ["--set", "schedule.topk=host", "--set", "schedule.overlap=pipelined"]):
        assert main(["sim", "--trace", str(trace), *args]) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
        assert all(n in lines[0] for n in TOPK_NEEDLES), lines[0]
    assert main(["sim", "--trace", str(trace), "--json", "--set", "schedule.topk=host",
                 "--set", "schedule.handoffs=dram"]) == 0
    assert '"topk": "host"' in capsys.readouterr().out
