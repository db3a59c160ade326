"""The PYNQ driver, off-board: mocked pynq objects whose "IP" is the C simulation run on the raw
DDR buffers and registers the driver programmed (round trip driver -> C-sim -> driver)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from tatvpr_hw.hlsflow.csim import run_csim
from tatvpr_hw.hlsflow.formats import prepare_layer, quantize_multiplier, reference_gemm
from tatvpr_hw.hlsflow.paths import driver_package

from .conftest import random_layer

driver_package()
from tatvpr_pynq.driver import (AP_CTRL, AP_DONE, AP_START, IPError, TernaryGemmOverlay,  # noqa: E402
                                default_offsets, load_block, offsets_from_hw_header, save_block)


class FakeBuffer(np.ndarray):
    """Stand-in for pynq.allocate's PynqBuffer: an ndarray with a device address and syncs."""

    def sync_to_device(self):
        self.synced_to = True

    def sync_from_device(self):
        self.synced_from = True


class FakeDDR:
    def __init__(self):
        self.buffers: dict[int, FakeBuffer] = {}
        self.next_addr = 0x1_2000_0000          # above 4 GiB: both address words matter

    def allocate(self, shape, dtype):
        buf = np.zeros(shape, dtype).view(FakeBuffer)
        buf.device_address = self.next_addr
        self.buffers[self.next_addr] = buf
        self.next_addr += (buf.nbytes + 0xFFF) & ~0xFFF
        return buf


class CsimIP:
    """AXI4-Lite register file; writing ap_start runs the C simulation on the DDR buffers."""

    def __init__(self, ddr: FakeDDR, exe, kp, work_dir):
        self.ddr, self.exe, self.kp, self.work_dir = ddr, exe, kp, work_dir
        self.regs: dict[int, int] = {}
        self.off = default_offsets()
        self.runs = 0
        self.tokens: list[int] = []

    def write(self, offset, value):
        assert 0 <= value < 2 ** 32
        self.regs[offset] = value
        if offset == AP_CTRL and value & AP_START:
            self._run()

    def read(self, offset):
        return self.regs.get(offset, 0)

    def _ptr(self, name):
        return self.ddr.buffers[self.regs[self.off[name]] | (self.regs[self.off[name] + 4] << 32)]

    def _run(self):
        r = {n: self.regs[self.off[n]] for n in ("m", "k", "n", "fmt", "mult", "shift")}
        m, n = r["m"], r["n"]
        sections = [self._ptr("tok_chunks")[:m].tobytes(), self._ptr("act_pairs").tobytes(),
                    self._ptr("weights").tobytes(), self._ptr("bias")[:n].tobytes(), b""]
        kp = self.kp
        raw = struct.pack("<8s10i", b"TVPRLYR2", kp.pe, kp.simd, kp.banks, kp.ports, m, r["k"], n, r["fmt"],
                          r["mult"], r["shift"])
        raw += b"".join(struct.pack("<I", len(s)) + s for s in sections)
        self.runs += 1
        self.tokens.append(m)
        lp, rp = self.work_dir / f"ip{self.runs}.layer.bin", self.work_dir / f"ip{self.runs}.result.bin"
        lp.write_bytes(raw)
        subprocess.run([str(self.exe), str(lp), str(rp)], check=True, capture_output=True)
        res = rp.read_bytes()
        status = struct.unpack_from("<i", res, 8)[0]
        self._ptr("out")[:m * n] = np.frombuffer(res, np.int8, m * n, 28)
        self.regs[self.off["ap_return"]] = status & 0xFFFFFFFF
        self.regs[AP_CTRL] = AP_DONE


@pytest.fixture
def overlay(csim_builds, tmp_path):
    kp, exe = csim_builds["pe4_simd8"]
    ddr = FakeDDR()
    ip = CsimIP(ddr, exe, kp, tmp_path)

    class FakePynq:
        allocate = staticmethod(ddr.allocate)

        class Overlay:
            def __init__(self, path):
                self.path = path
                self.tatvpr_gemm_0 = ip

    bit = tmp_path / "tatvpr_gemm.bit"
    bit.write_bytes(b"")
    (tmp_path / "design_point.json").write_text(json.dumps({
        "pe": kp.pe, "simd": kp.simd, "banks": kp.banks, "ports": kp.ports, "clock_mhz": 200,
        "weight_format": "ternary2", "kmax": kp.kmax, "mmax": kp.mmax, "chunks_max": kp.chunks_max}))
    return TernaryGemmOverlay(str(bit), pynq_module=FakePynq), ip, exe


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
                        "m": 0x5c, "k": 0x64, "n": 0x6c, "fmt": 0x74, "mult": 0x7c, "shift": 0x84}.items()])
    off = offsets_from_hw_header(header)
    assert off["act_pairs"] == 0x20 and off["shift"] == 0x84 and off["ap_return"] == 0x10
    assert default_offsets()["act_pairs"] == 0x18      # Vitis HLS: after the 0x10 return register
    with pytest.raises(ValueError, match="mult"):
        offsets_from_hw_header(header.replace("_MULT_DATA", "_MULX_DATA"))


def test_run_block_matches_the_pytorch_block(overlay, tiny_student, tmp_path):
    import torch

    from tatvpr_hw.hlsflow.layers import block_params

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


def test_layer_split_into_token_blocks_that_fit_the_ip(overlay, tmp_path):
    """A layer whose stream exceeds the IP's chunk buffer runs in token blocks (the simulator's
    token tiling); the result is the whole layer's."""
    ov, ip, _ = overlay
    x, w, bias = random_layer(np.random.default_rng(9), 40, 64, 6, 0.0)     # dense: 8 chunks per token
    mult, shift = quantize_multiplier(1 / 80)
    ov.ip.chunks_max = 100                      # 12 tokens x 8 chunks = 96 <= 100 per block
    y = ov.run_layer(x, w, bias, mult, shift)
    np.testing.assert_array_equal(y, reference_gemm(x, w, bias, mult, shift)[0])
    assert ip.tokens == [12, 12, 12, 4]
    ov.ip.mmax = 5                              # the output buffer's tokens bound a block too
    ip.tokens.clear()
    ov.run_layer(x[:11], w, bias, mult, shift)
    assert ip.tokens == [5, 5, 1]
    with pytest.raises(ValueError, match="K = 64 exceeds the IP's K_max = 32"):
        ov.ip.kmax = 32
        ov.run_layer(x, w, bias, mult, shift)


def test_deploy_package_runs_without_sim_torch_or_the_flow(tmp_path):
    """On the board there is no `sim`, `torch`, `tatvpr_hw` or `brevitas_models`: the deploy folder's
    package imports with them blocked, packs with the bundled format package `ternary_format` and
    builds the bank-scheduled stream; without that package it says what to copy."""
    import shutil

    from tatvpr_hw.hlsflow.board import default_design_point, get_board, write_project

    board = get_board("kv260")
    write_project(board, default_design_point(board), tmp_path / "p", kmax=64, mmax=8, check_csim=False)
    deploy = tmp_path / "p" / "deploy"
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
