"""The PYNQ driver, off-board: a mocked `pynq` module (DefaultIP with PYNQ's `bindto` registry,
allocate, Overlay reading a real-format .hwh) whose "IP" is the C simulation run on the raw DDR
buffers and registers the driver programmed (round trip driver -> C-sim -> driver)."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import types
import warnings
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tatvpr_hw.lower.hls.csim import run_csim
from tatvpr_hw.lower.hls.formats import prepare_layer, quantize_multiplier, read_result_file, reference_gemm
from tatvpr_hw.lower.hls.paths import driver_package
from ternary_format import row_bytes

from .conftest import random_layer

driver_package()
from tatvpr_pynq.driver import (AP_CTRL, AP_DONE, AP_START, IP_VLNV, IPError, TernaryGemmOverlay,  # noqa: E402
                                default_offsets, load_block, offsets_from_hw_header, save_block)

# The register layout the test's .hwh declares, by hand. It differs from default_offsets() (every
# argument 4 bytes later), so a driver that ignored the .hwh would program the wrong registers.
HWH_OFFSETS = {"ap_return": 0x10, "act_pairs": 0x1C, "tok_chunks": 0x28, "weights": 0x34, "bias": 0x40,
               "out": 0x4C, "m": 0x58, "k": 0x60, "n": 0x68, "fmt": 0x70, "mult": 0x78, "shift": 0x80,
               "order": 0x88, "resident": 0x90}
IP_BASE = 0xA000_0000
FMT_NAME = {0: "ternary2", 1: "ternary1.6"}


def hwh_text(vlnv: str = IP_VLNV, offsets: dict[str, int] | None = HWH_OFFSETS) -> str:
    """A Vivado .hwh in the real format (EDKSYSTEM / MODULES / MODULE / ADDRESSBLOCKS / REGISTERS,
    PS MEMORYMAP), with the Vitis HLS register names: CTRL ..., ap_return, <ptr>_1 / <ptr>_2 (low /
    high word), scalars by name, `out` renamed `out_r` (an HDL keyword)."""
    def reg(name, off, desc):
        return (f'<REGISTER NAME="{name}"><PROPERTY NAME="DESCRIPTION" VALUE="{desc}"/>'
                f'<PROPERTY NAME="ADDRESS_OFFSET" VALUE="{off}"/><PROPERTY NAME="SIZE" VALUE="32"/>'
                f'<PROPERTY NAME="ACCESS" VALUE="read-write"/><PROPERTY NAME="IS_ENABLED" VALUE="true"/>'
                f'<PROPERTY NAME="RESET_VALUE" VALUE="0"/><FIELDS><FIELD NAME="{name.upper()}">'
                f'<PROPERTY NAME="DESCRIPTION" VALUE="{desc}"/><PROPERTY NAME="ADDRESS_OFFSET" VALUE="0"/>'
                f'<PROPERTY NAME="ACCESS" VALUE="read-write"/><PROPERTY NAME="BIT_OFFSET" VALUE="0"/>'
                f'<PROPERTY NAME="BIT_WIDTH" VALUE="32"/></FIELD></FIELDS></REGISTER>')
    # offsets=None: a .hwh whose IP lists no registers at all (what older tool versions wrote)
    regs = [] if offsets is None else [
        reg("CTRL", 0, "Control signals"), reg("GIER", 4, "Global Interrupt Enable Register"),
        reg("IP_IER", 8, "IP Interrupt Enable Register"), reg("IP_ISR", 12, "IP Interrupt Status Register")]
    for name, off in (offsets or {}).items():
        hdl = "out_r" if name == "out" else name
        if name in ("act_pairs", "tok_chunks", "weights", "bias", "out"):
            regs += [reg(f"{hdl}_1", off, f"Data signal of {hdl}"), reg(f"{hdl}_2", off + 4, f"Data signal of {hdl}")]
        else:
            regs.append(reg(hdl, off, f"Data signal of {hdl}"))
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="Wed Dec  2 12:00:00 2026" VIVADOVERSION="2022.1">
  <SYSTEMINFO ARCH="zynquplus" DEVICE="xck26" NAME="tatvpr_bd" PACKAGE="sfvc784" SPEEDGRADE="-2LV"/>
  <EXTERNALPORTS/>
  <MODULES>
    <MODULE FULLNAME="/ps_0" INSTANCE="ps_0" IPTYPE="PERIPHERAL" MODCLASS="PROCESSOR"
            MODTYPE="zynq_ultra_ps_e" VLNV="xilinx.com:ip:zynq_ultra_ps_e:3.4">
      <MEMORYMAP>
        <MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_BASEADDR" BASEVALUE="0x{IP_BASE:08X}" HIGHNAME="C_HIGHADDR"
                  HIGHVALUE="0x{IP_BASE + 0xFFFF:08X}" INSTANCE="tatvpr_gemm_0" IS_DATA="TRUE" IS_INSTRUCTION="TRUE"
                  MASTERBUSINTERFACE="M_AXI_HPM0_FPD" MEMTYPE="REGISTER" SLAVEBUSINTERFACE="s_axi_control"/>
      </MEMORYMAP>
    </MODULE>
    <MODULE FULLNAME="/tatvpr_gemm_0" HWVERSION="1.0" INSTANCE="tatvpr_gemm_0" IPTYPE="PERIPHERAL"
            IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="tatvpr_ternary_gemm" VLNV="{vlnv}">
      <PARAMETERS><PARAMETER NAME="C_S_AXI_CONTROL_ADDR_WIDTH" VALUE="8"/></PARAMETERS>
      <ADDRESSBLOCKS>
        <ADDRESSBLOCK ACCESS="read-write" INTERFACE="s_axi_control" NAME="Reg" RANGE="65536" USAGE="register">
          <REGISTERS>{"".join(regs)}</REGISTERS>
        </ADDRESSBLOCK>
      </ADDRESSBLOCKS>
    </MODULE>
  </MODULES>
</EDKSYSTEM>
"""


class FakeBuffer(np.ndarray):
    """Stand-in for pynq.allocate's PynqBuffer: an ndarray with a device address, syncs and freebuffer."""

    def sync_to_device(self):
        self.synced_to = True

    def sync_from_device(self):
        self.synced_from = True

    def freebuffer(self):
        self.ddr.live.pop(self.device_address)


class FakeDDR:
    def __init__(self):
        import threading

        self.lock = threading.Lock()            # pynq.allocate may be called from the units' threads
        self.buffers: dict[int, FakeBuffer] = {}
        self.live: dict[int, FakeBuffer] = {}
        self.allocations = 0
        self.next_addr = 0x1_2000_0000          # above 4 GiB: both address words matter

    def allocate(self, shape, dtype):
        with self.lock:
            return self._allocate(shape, dtype)

    def _allocate(self, shape, dtype):
        buf = np.zeros(shape, dtype).view(FakeBuffer)
        buf.device_address = self.next_addr
        buf.ddr = self
        self.buffers[self.next_addr] = self.live[self.next_addr] = buf
        self.allocations += 1
        self.next_addr += (buf.nbytes + 0xFFF) & ~0xFFF
        return buf


class CsimIP:
    """AXI4-Lite register file at the offsets the .hwh declares; writing ap_start runs the C
    simulation on the DDR buffers (read only as far as the registers say, as the IP does)."""

    def __init__(self, ddr: FakeDDR, exe, kp, work_dir, offsets):
        self.ddr, self.exe, self.kp, self.work_dir = ddr, exe, kp, work_dir
        self.regs: dict[int, int] = {}
        self.off = offsets
        self.runs = 0
        self.tokens: list[int] = []
        self.results: list = []          # the C simulation's result of each call (its steps and loads)

    def write(self, offset, value):
        assert 0 <= value < 2 ** 32
        self.regs[offset] = value
        if offset == AP_CTRL and value & AP_START:
            self._run()

    def read(self, offset):
        return self.regs.get(offset, 0)

    def _ptr(self, name):
        buf = self.ddr.buffers[self.regs[self.off[name]] | (self.regs[self.off[name] + 4] << 32)]
        assert buf.device_address in self.ddr.live, f"{name} points at a freed buffer"
        return buf

    def _run(self):
        r = {n: self.regs[self.off[n]] for n in ("m", "k", "n", "fmt", "mult", "shift", "order", "resident")}
        m, k, n = r["m"], r["k"], r["n"]
        chunks = self._ptr("tok_chunks")[:m]
        if self.kp.skip_mode == "none":      # the dense int8 tokens (tok_chunks is not read by the IP)
            act = self._ptr("act_pairs")[:m * k].tobytes()
        else:
            act = self._ptr("act_pairs")[:int(chunks.astype(np.int64).sum()) * self.kp.simd].tobytes()
        sections = [chunks.tobytes(), act,
                    self._ptr("weights")[:n * row_bytes(k, FMT_NAME[r["fmt"]])].tobytes(),
                    self._ptr("bias")[:n].tobytes(), b""]
        kp = self.kp
        raw = struct.pack("<8s12i", b"TVPRLYR3", kp.pe, kp.simd, kp.banks, kp.ports, m, k, n, r["fmt"],
                          r["mult"], r["shift"], r["order"], r["resident"])
        raw += b"".join(struct.pack("<I", len(s)) + s for s in sections)
        self.runs += 1
        self.tokens.append(m)
        lp, rp = self.work_dir / f"ip{self.runs}.layer.bin", self.work_dir / f"ip{self.runs}.result.bin"
        lp.write_bytes(raw)
        subprocess.run([str(self.exe), str(lp), str(rp)], check=True, capture_output=True)
        res = read_result_file(rp)
        self.results.append(res)
        self._ptr("out")[:m * n] = res.out.reshape(-1)
        self.regs[self.off["ap_return"]] = res.status & 0xFFFFFFFF
        self.regs[AP_CTRL] = AP_DONE


def fake_pynq(ddr: FakeDDR, devices: dict[int, object], *, registers_in_description: bool = True):
    """A `pynq` module as far as the driver uses it, shaped on PYNQ's own: DefaultIP's metaclass
    records each subclass's `bindto` VLNVs; Overlay parses the .hwh next to the bitstream into an
    ip_dict (phys_addr, addr_range, type = VLNV, registers) and hands each IP to the driver bound to
    its VLNV, else DefaultIP. `registers_in_description=False` is a PYNQ that leaves registers out."""
    mod = types.ModuleType("pynq")
    mod.ip_drivers = {}

    class RegisterIP(type):
        def __init__(cls, name, bases, attrs):
            for vlnv in attrs.get("bindto", []):
                mod.ip_drivers[vlnv] = cls
            super().__init__(name, bases, attrs)

    class DefaultIP(metaclass=RegisterIP):
        def __init__(self, description):
            self.mmio = devices[description["phys_addr"]]       # PYNQ: MMIO(phys_addr, addr_range)

        def read(self, offset=0):
            return self.mmio.read(offset)

        def write(self, offset, value):
            self.mmio.write(offset, value)

    class Overlay:
        def __init__(self, bitfile):
            root = ElementTree.parse(bitfile[:-len(".bit")] + ".hwh").getroot()
            mods = {m.get("INSTANCE"): m for m in root.iter("MODULE")}
            self.ip_dict = {}
            for rng in root.iter("MEMRANGE"):
                m = mods[rng.get("INSTANCE")]
                regs = {r.get("NAME"): {"address_offset": int(r.find('./PROPERTY[@NAME="ADDRESS_OFFSET"]').get("VALUE"), 0),
                                        "size": int(r.find('./PROPERTY[@NAME="SIZE"]').get("VALUE"), 0)}
                        for r in m.findall(".//REGISTERS/REGISTER[@NAME]")}
                base, high = int(rng.get("BASEVALUE"), 16), int(rng.get("HIGHVALUE"), 16)
                desc = {"phys_addr": base, "addr_range": high - base + 1, "type": m.get("VLNV"),
                        "fullpath": m.get("INSTANCE")}
                if registers_in_description:
                    desc["registers"] = regs
                self.ip_dict[m.get("INSTANCE")] = desc

        def __getattr__(self, name):
            if name in self.__dict__.get("ip_dict", {}):
                desc = self.ip_dict[name]
                return mod.ip_drivers.get(desc["type"], DefaultIP)(desc)
            raise AttributeError(name)

    mod.DefaultIP, mod.Overlay, mod.allocate = DefaultIP, Overlay, ddr.allocate
    return mod


def write_deploy(tmp_path, kp, *, hwh: str, activations_kb: float = 64.0, double_buffering: bool = True,
                 outputs_kb: float = 64.0, **extra):
    bit = tmp_path / "tatvpr_gemm.bit"
    bit.write_bytes(b"")
    (tmp_path / "tatvpr_gemm.hwh").write_text(hwh)
    (tmp_path / "design_point.json").write_text(json.dumps({
        "pe": kp.pe, "simd": kp.simd, "banks": kp.banks, "ports": kp.ports, "clock_mhz": 200,
        "weight_format": "ternary2", "double_buffering": double_buffering, "activations_kb": activations_kb,
        "outputs_kb": outputs_kb, "kmax": kp.kmax, "mmax": kp.mmax, "chunks_max": kp.chunks_max, **extra}))
    return bit


@pytest.fixture
def board(csim_builds, tmp_path):
    """(make_overlay, ip, exe, ddr): make_overlay(**design point / pynq options) -> TernaryGemmOverlay."""
    kp, exe = csim_builds["pe4_simd8"]
    ddr = FakeDDR()
    ip = CsimIP(ddr, exe, kp, tmp_path, HWH_OFFSETS)

    def make(hwh=None, registers_in_description=True, **point):
        bit = write_deploy(tmp_path, kp, hwh=hwh or hwh_text(), **point)
        return TernaryGemmOverlay(str(bit), pynq_module=fake_pynq(ddr, {IP_BASE: ip},
                                                                  registers_in_description=registers_in_description))
    return make, ip, exe, ddr


@pytest.fixture
def overlay(board):
    make, ip, exe, _ = board
    return make(), ip, exe


@pytest.mark.parametrize("fmt", ["ternary2", "ternary1.6"])
def test_run_layer_round_trip(overlay, tmp_path, fmt):
    ov, ip, exe = overlay
    x, w, bias = random_layer(np.random.default_rng(7), 21, 90, 11, 0.4)
    mult, shift = quantize_multiplier(1 / 60)
    y = ov.run_layer(x, w, bias, mult, shift, fmt=fmt)
    assert ip.runs == 1
    np.testing.assert_array_equal(y, reference_gemm(x, w, bias, mult, shift)[0])
    (direct,) = run_csim(exe, [prepare_layer(x, w, bias, mult, shift, pe=4, simd=8, banks=4, fmt=fmt)],
                         tmp_path / "d")
    np.testing.assert_array_equal(y, direct.out)


def test_bad_status_raises(overlay):
    ov, ip, _ = overlay
    x, w, bias = random_layer(np.random.default_rng(8), 3, 16, 4, 0.0)
    layer = prepare_layer(x, w, bias, 1 << 20, 30, pe=4, simd=8, banks=4, with_expected=False)
    layer.shift = 63                       # outside [1, 62]: the kernel refuses
    with pytest.raises(IPError, match="bad requantisation"):
        ov.ip.run(layer)


def test_offsets_from_vitis_header():
    header = "\n".join(
        ["#define XTATVPR_TERNARY_GEMM_CONTROL_ADDR_AP_CTRL 0x00",
         "#define XTATVPR_TERNARY_GEMM_CONTROL_ADDR_AP_RETURN 0x10"]
        + [f"#define XTATVPR_TERNARY_GEMM_CONTROL_ADDR_{n.upper()}_DATA 0x{o:x}"
           for n, o in {"act_pairs": 0x20, "tok_chunks": 0x2c, "weights": 0x38, "bias": 0x44, "out": 0x50,
                        "m": 0x5c, "k": 0x64, "n": 0x6c, "fmt": 0x74, "mult": 0x7c, "shift": 0x84,
                        "order": 0x8c, "resident": 0x94}.items()])
    off = offsets_from_hw_header(header)
    assert off["act_pairs"] == 0x20 and off["shift"] == 0x84 and off["ap_return"] == 0x10
    assert (off["order"], off["resident"]) == (0x8c, 0x94)
    assert default_offsets()["act_pairs"] == 0x18      # Vitis HLS: after the 0x10 return register
    # then 5 pointers of 12 bytes (0x18 .. 0x54), 8 scalars of 8: m at 0x54, ..., shift 0x7c, order 0x84, resident 0x8c
    assert (default_offsets()["m"], default_offsets()["order"], default_offsets()["resident"]) == (0x54, 0x84, 0x8c)
    with pytest.raises(ValueError, match="mult"):
        offsets_from_hw_header(header.replace("_MULT_DATA", "_MULX_DATA"))


def test_run_block_matches_the_pytorch_block(overlay, tiny_student, tmp_path):
    import torch

    from tatvpr_hw.lower.hls.layers import block_params

    ov, ip, _ = overlay
    model, images = tiny_student
    blk = model.backbone.blocks[1]
    with torch.no_grad():
        tokens = model.backbone.patch_embed(images)
        tokens = model.backbone._pos_embed(tokens)
        tokens = model.backbone.blocks[0](tokens)
        ref = blk(tokens)[0].double().numpy()
    for s in (0.0, 0.5):
        save_block(tmp_path / f"block_s{s}.npz", block_params(blk, tokens[0], sparsity=s))
        params = load_block(tmp_path / f"block_s{s}.npz")     # what the board loads
        out = ov.run_block(tokens[0].double().numpy(), params)
        assert out.shape == ref.shape
        if s == 0.0:
            # int8 outputs of every linear: the block's update (out - x) within a few percent
            upd_ref = ref - tokens[0].double().numpy()
            upd = out - tokens[0].double().numpy()
            rel = np.linalg.norm(upd - upd_ref) / np.linalg.norm(upd_ref)
            assert rel < 0.05, rel
    assert ip.runs == 8                     # 4 ternary linears per block, twice


@pytest.mark.parametrize("chunks_max, mmax, double_buffering, input_in_dram, loop_order, by_hand, resident, order", [
    # 40 dense tokens of K = 64 at SIMD 8, 4 banks (q = 2): ceil(16 / 2) = 8 chunks each, 320 in all.
    # 96 chunks < 320: tiled; h = 2: 48 chunks a block = 6 tokens. N = 6: 2 folds of 4 x 64 two-bit
    # codes = 64 bytes; the stream is 320 x 8 x 4 + 40 x 2 = 10,320 bytes. auto: fold_outer moves
    # 2 x 64 + 2 x 10,320 bytes, token_outer 7 x 2 x 64 + 10,320: token_outer
    (96, 128, True, False, "auto", [6, 6, 6, 6, 6, 6, 4], False, "token_outer"),
    # one buffer (h = 1): 96 chunks = 12 tokens; the order the design point sets
    (96, 128, False, False, "fold_outer", [12, 12, 12, 4], False, "fold_outer"),
    # 320 chunks hold the whole stream: one resident block; auto: 128 bytes either way, fold_outer
    (320, 128, True, False, "auto", [40], True, "fold_outer"),
    # ... unless the previous op spilled it: 160 chunks = 20 tokens
    (320, 128, True, True, "token_outer", [20, 20], False, "token_outer"),
    # the output buffer's tokens (MMAX) bound a block, resident or not; auto: 128 vs 3 x 128 bytes
    (8192, 16, True, False, "auto", [16, 16, 8], True, "fold_outer"),
])
def test_one_ip_call_runs_the_simulators_token_blocks(tmp_path, chunks_max, mmax, double_buffering, input_in_dram,
                                                      loop_order, by_hand, resident, order):
    """One IP call per layer (issue 10): the driver passes the simulator's order and resident flag
    (ternary_format.tiling), and the IP, built with these CHUNKS_MAX and MMAX, cuts the same token
    blocks on chip (its steps say so); tests/sim/test_chunk_blocks.py checks sim == driver on the
    paper layers."""
    import os

    from tatvpr_hw.lower.hls.csim import KernelParams, build_csim
    from ternary_format.tiling import loop_steps

    kp = KernelParams(pe=4, simd=8, banks=4, ports=1, halves=2 if double_buffering else 1, kmax=1024, mmax=mmax,
                      chunks_max=chunks_max)
    exe = build_csim(kp, os.environ.get("TATVPR_CSIM_CACHE") or tmp_path / "build")
    ddr = FakeDDR()
    ip = CsimIP(ddr, exe, kp, tmp_path, HWH_OFFSETS)
    bit = write_deploy(tmp_path, kp, hwh=hwh_text(), double_buffering=double_buffering, loop_order=loop_order)
    ov = TernaryGemmOverlay(str(bit), pynq_module=fake_pynq(ddr, {IP_BASE: ip}))
    x, w, bias = random_layer(np.random.default_rng(9), 40, 64, 6, 0.0)
    mult, shift = quantize_multiplier(1 / 80)
    y = ov.run_layer(x, w, bias, mult, shift, input_in_dram=input_in_dram)
    np.testing.assert_array_equal(y, reference_gemm(x, w, bias, mult, shift)[0])
    plan = ov.ip.last_plan
    assert [b.stop - b.start for b in plan["blocks"]] == by_hand
    assert (plan["resident"], plan["order"]) == (resident, order)
    assert ip.tokens == [40]                                  # one IP call for the layer
    (res,) = ip.results
    # the IP's steps: the simulator's loop order over its blocks, 8 chunks a dense token
    assert [(st["fold"], st["block"]) for st in res.steps] == loop_steps(2, len(by_hand), order)
    assert [st["chunk_cycles"] // 8 for st in res.steps if st["fold"] == 0] == by_hand
    assert sum(st["act_loads"] for st in res.steps) == (1 if resident else
                                                        len(by_hand) * (2 if order == "fold_outer" and
                                                                        len(by_hand) > 1 else 1))
    with pytest.raises(ValueError, match="K = 64 exceeds the IP's K_max = 32"):
        ov.ip.kmax = 32
        ov.run_layer(x, w, bias, mult, shift)


def test_skip_mode_none_ip_round_trip(tmp_path):
    """Issue 15: the IP built for skip mode none reads the dense int8 tokens; the driver plans its
    blocks with ceil(K / SIMD) words a token. K = 90 at SIMD 8: 12 words; 100 words, two halves:
    4 tokens a block -> 21 tokens in 5 blocks of 4 and one of 1."""
    import os

    from tatvpr_hw.lower.hls.csim import KernelParams, build_csim

    kp = KernelParams(pe=4, simd=8, banks=4, ports=1, halves=2, kmax=1024, mmax=16, chunks_max=100,
                      skip_mode="none")
    exe = build_csim(kp, os.environ.get("TATVPR_CSIM_CACHE") or tmp_path / "build")
    ddr = FakeDDR()
    ip = CsimIP(ddr, exe, kp, tmp_path, HWH_OFFSETS)
    bit = write_deploy(tmp_path, kp, hwh=hwh_text(), skip_mode="none", loop_order="token_outer")
    ov = TernaryGemmOverlay(str(bit), pynq_module=fake_pynq(ddr, {IP_BASE: ip}))
    x, w, bias = random_layer(np.random.default_rng(4), 21, 90, 11, 0.5)
    mult, shift = quantize_multiplier(1 / 60)
    y = ov.run_layer(x, w, bias, mult, shift)
    np.testing.assert_array_equal(y, reference_gemm(x, w, bias, mult, shift)[0])
    assert ip.tokens == [21] and [b.stop - b.start for b in ov.ip.last_plan["blocks"]] == [4] * 5 + [1]
    (res,) = ip.results
    assert [st["chunk_cycles"] for st in res.steps if st["fold"] == 0] == [48] * 5 + [12]
    assert sum(st["act_bytes"] for st in res.steps) == 21 * 90          # token_outer: each block once


def test_token_that_does_not_fit_a_block_is_refused(board):
    make, _, _, _ = board
    ov = make()
    ov.ip.chunks_max = 15                                    # h = 2: 7 chunks a block < 8
    x, w, bias = random_layer(np.random.default_rng(9), 4, 64, 6, 0.0)
    mult, shift = quantize_multiplier(1 / 80)
    with pytest.raises(ValueError, match=r"one token takes 8 chunks; the IP's activation buffer \(15 chunks\) "
                                         r"cannot hold a block of it \(at most 7 chunks a block\)"):
        ov.run_layer(x, w, bias, mult, shift, input_in_dram=True)


def test_binding_and_register_offsets_from_the_hwh(board, tmp_path):
    make, ip, _, _ = board
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no fallback warning: the .hwh has the map
        ov = make()
    drv = ov.overlay.tatvpr_gemm_0
    assert type(drv).__name__ == "TernaryGemmDriver" and drv.bindto == [IP_VLNV]
    assert ov.ip.offsets == HWH_OFFSETS and ov.register_source == "hwh (pynq)"
    assert ov.ip.offsets != default_offsets()
    # a PYNQ that leaves the registers out of the IP description: the driver reads the .hwh itself
    ov2 = make(registers_in_description=False)
    assert ov2.ip.offsets == HWH_OFFSETS and ov2.register_source == "hwh"
    # neither has them: the Vitis HLS default layout, with a warning
    with pytest.warns(UserWarning, match="using the Vitis HLS default offsets"):
        ov3 = make(hwh=hwh_text(offsets=None), registers_in_description=False)
    assert ov3.ip.offsets == default_offsets() and ov3.register_source == "default"
    # an IP of another VLNV is not bound: PYNQ gives it DefaultIP and the driver says why
    with pytest.raises(IPError, match="its VLNV in the .hwh is tatvpr.org:hls:other_ip:1.0, this driver binds "
                                      + re.escape(IP_VLNV)):
        make(hwh=hwh_text(vlnv="tatvpr.org:hls:other_ip:1.0"))
    # a register map that does not match the driver is refused, naming what is missing
    bad = hwh_text().replace('NAME="mult"', 'NAME="mult_x"')
    with pytest.raises(ValueError, match="missing mult"):
        make(hwh=bad)


def test_buffers_allocated_once_reused_grown_and_freed(board):
    make, ip, _, ddr = board
    ov = make()
    rng = np.random.default_rng(3)
    mult, shift = quantize_multiplier(1 / 60)
    x, w, bias = random_layer(rng, 21, 90, 11, 0.4)
    y1 = ov.run_layer(x, w, bias, mult, shift)
    assert ddr.allocations == 5 and len(ddr.live) == 5     # act_pairs, tok_chunks, weights, bias, out
    x2, w2, bias2 = random_layer(rng, 13, 90, 7, 0.6)      # smaller: fits every buffer
    y2 = ov.run_layer(x2, w2, bias2, mult, shift)
    assert ddr.allocations == 5, "the second call allocated"
    np.testing.assert_array_equal(y1, reference_gemm(x, w, bias, mult, shift)[0])
    np.testing.assert_array_equal(y2, reference_gemm(x2, w2, bias2, mult, shift)[0])
    x3, w3, bias3 = random_layer(rng, 30, 90, 11, 0.0)     # more tokens, dense: pairs, chunks and out grow
    y3 = ov.run_layer(x3, w3, bias3, mult, shift)
    np.testing.assert_array_equal(y3, reference_gemm(x3, w3, bias3, mult, shift)[0])
    assert ddr.allocations == 8 and len(ddr.live) == 5     # three replaced, the old ones freed
    ov.close()
    assert ddr.live == {}
    with make() as ov4:
        ov4.run_layer(x, w, bias, mult, shift)
        assert len(ddr.live) == 5
    assert ddr.live == {}


def test_deploy_package_runs_without_sim_torch_or_the_flow(tmp_path):
    """On the board there is no `sim`, `torch`, `tatvpr_hw` or `brevitas_models`: the deploy folder's
    package imports with them blocked, packs with the bundled format package `ternary_format` and
    builds the bank-scheduled stream; without that package it says what to copy."""
    import shutil

    from tatvpr_hw.lower.hls.board import default_design_point, get_board, write_project

    board = get_board("kv260")
    write_project(board, default_design_point(board), tmp_path / "p", kmax=64, mmax=8, check_csim=False)
    deploy = tmp_path / "p" / "deploy"
    # the VLNV the driver binds is the one the Tcl exports the IP under and instantiates
    tcl = (tmp_path / "p" / "vitis_hls.tcl").read_text()
    opts = dict(re.findall(r"-(vendor|library|version|ipname) (\S+)", tcl.split("set_top tatvpr_ternary_gemm", 1)[1].split("config_export", 1)[1].splitlines()[0]))
    assert f"{opts['vendor']}:{opts['library']}:{opts['ipname']}:{opts['version']}" == IP_VLNV
    assert f"create_bd_cell -type ip -vlnv {IP_VLNV} tatvpr_gemm_0" in (tmp_path / "p" / "vivado.tcl").read_text()
    blocked = ("sim", "torch", "tatvpr_hw", "brevitas_models")
    code = ("import sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "import numpy as np\n"
            "from tatvpr_pynq import formats, driver\n"
            "assert formats.pack_weights(np.array([[1, -1, 0, 1, 1]]), 'ternary1.6').tolist() == [227]\n"
            "c, p = formats.schedule_activations(np.array([[5, -1, 6, 0, 7]], np.int8), 4, 2)\n"
            "assert c.tolist() == [2] and p.tolist() == [0x005, 0x1FF, 0x206, 0, 0x407, 0, 0, 0]\n"
            "loaded = sorted(m for m in sys.modules if sys.modules[m] is not None and "
            f"m.split('.')[0] in {blocked!r})\n"
            "tf = sys.modules['ternary_format'].__file__\n"
            "print(formats.pack.__module__, formats.__file__.startswith(sys.argv[1]), tf.startswith(sys.argv[1]), "
            "loaded)")
    # run from the deploy folder's parent so nothing of the repository is on sys.path but what it ships
    out = subprocess.run([sys.executable, "-I", "-c", code, str(deploy)], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ternary_format.packing True True []"       # the shipped copy, not the repository's
    point = json.loads((deploy / "design_point.json").read_text())
    assert (point["pe"], point["simd"], point["banks"], point["ports"]) == (32, 32, 32, 1)
    # a board copy without the format package (blocked too: this interpreter has the repository's installed)
    shutil.rmtree(deploy / "ternary_format")
    res = subprocess.run([sys.executable, "-I", "-c", code.replace("'brevitas_models')", "'brevitas_models', "
                                                                   "'ternary_format')", 1), str(deploy)],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode != 0 and "copy the repository's ternary_format/ folder alongside tatvpr_pynq/" in res.stderr


@pytest.mark.parametrize("outputs_kb, spilled", [(8.0, True), (16.0, False)])
def test_linear_in_a_block_reads_a_spilled_input_from_dram(board, outputs_kb, spilled):
    """Inside a ViT block the op before a linear outputs its M x K input: 50 x 192 = 9600 bytes spill
    an 8 KiB (8192 B) output buffer, not a 16 KiB one (docs/engine.md section 4)."""
    from tatvpr_pynq.driver import TernaryLinearParams

    make, _, _, _ = board
    ov = make(outputs_kb=outputs_kb)
    seen = []
    ov.ip.run_tiled = lambda x, *a, input_in_dram: seen.append(input_in_dram) or np.zeros((x.shape[0], 4), np.int8)
    p = TernaryLinearParams(codes=np.ones((4, 192), np.int8), gamma=0.1, act_scale=0.05, out_scale=0.2)
    ov.linear(p, np.random.default_rng(0).normal(size=(50, 192)))
    assert seen == [spilled]
