"""PYNQ host driver of the TAT-VPR ternary GEMM IP (runs on the board's ARM cores; numpy only).

    >>> ov = TernaryGemmOverlay("tatvpr_gemm.bit")       # loads the bitstream + .hwh
    >>> y = ov.run_layer(x_int8, w_ternary, bias_int32, mult, shift)     # int8 [M, N]
    >>> h = ov.run_block(x_float, block)                 # one ViT block, linears on the IP

The driver packs weights and compresses activations with :mod:`tatvpr_pynq.formats` (the
same functions the host flow's C testbench files use), copies them into contiguous DDR
buffers, programs the AXI4-Lite registers, starts the IP, polls ``ap_done`` and reads the
status and the int8 outputs back.

Register offsets follow the Vitis HLS s_axilite layout of the top function
``tatvpr_ternary_gemm(act_pairs, tok_chunks, weights, bias, out, m, k, n, fmt, mult, shift)``
with a return value; when the IP export's ``x<top>_hw.h`` is beside the bitstream, its
``#define``s are used instead (:func:`offsets_from_hw_header`).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .formats import FMT_CODE, STATUS_TEXT, IPLayer, chunks_per_token, prepare_layer, quantize_multiplier

AP_CTRL = 0x00
AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
POINTER_ARGS = ("act_pairs", "tok_chunks", "weights", "bias", "out")
SCALAR_ARGS = ("m", "k", "n", "fmt", "mult", "shift")


def default_offsets() -> dict[str, int]:
    """Vitis HLS layout: 0x10 ap_return, then 64-bit pointers every 12 bytes, scalars every 8."""
    offsets = {"ap_return": 0x10}
    addr = 0x18
    for name in POINTER_ARGS:
        offsets[name] = addr
        addr += 12
    for name in SCALAR_ARGS:
        offsets[name] = addr
        addr += 8
    return offsets


def offsets_from_hw_header(text: str) -> dict[str, int]:
    """Register offsets from a Vitis HLS ``x<top>_hw.h`` (``#define ..._ADDR_<ARG>_DATA 0x..``)."""
    found = {m.group(1).lower(): int(m.group(2), 16)
             for m in re.finditer(r"#define\s+X\w+?_CONTROL_ADDR_(\w+?)_DATA\s+0x([0-9a-fA-F]+)", text)}
    ret = re.search(r"#define\s+X\w+?_CONTROL_ADDR_AP_RETURN\s+0x([0-9a-fA-F]+)", text)
    if ret:
        found["ap_return"] = int(ret.group(1), 16)
    missing = [a for a in ("ap_return", *POINTER_ARGS, *SCALAR_ARGS) if a not in found]
    if missing:
        raise ValueError(f"hardware header lacks the register(s) {', '.join(missing)}")
    return found


class IPError(RuntimeError):
    """The IP reported a bad status or did not finish."""


def _device_address(buf) -> int:
    for attr in ("device_address", "physical_address"):
        if hasattr(buf, attr):
            return int(getattr(buf, attr))
    raise TypeError("buffer has neither device_address nor physical_address (not a pynq.allocate buffer)")


class TernaryGemmIP:
    """One IP instance: ``mmio`` has ``read(offset)`` / ``write(offset, value)`` (a PYNQ
    ``DefaultIP``), ``allocate(shape, dtype)`` returns contiguous DDR buffers (``pynq.allocate``).
    ``banks``/``ports``: the IP's gather (None = SIMD banks); ``kmax``, ``mmax``, ``chunks_max``:
    its buffer sizes (``design_point.json``), used to split a layer's tokens into blocks.
    """

    def __init__(self, mmio, allocate: Callable, *, pe: int, simd: int, banks: int | None = None,
                 ports: int = 1, kmax: int | None = None, mmax: int | None = None,
                 chunks_max: int | None = None, offsets: dict[str, int] | None = None,
                 timeout_s: float = 10.0) -> None:
        self.mmio = mmio
        self.allocate = allocate
        self.pe = int(pe)
        self.simd = int(simd)
        self.banks = int(banks or simd)
        self.ports = int(ports)
        self.kmax, self.mmax, self.chunks_max = kmax, mmax, chunks_max
        self.offsets = offsets or default_offsets()
        self.timeout_s = timeout_s

    def token_blocks(self, x: np.ndarray) -> list[slice]:
        """Consecutive token blocks of int8 ``x[M, K]`` whose streams fit the IP's chunk and output
        buffers (the simulator's token tiling, weights streamed again for every block)."""
        m, k = x.shape
        if self.kmax is not None and k > self.kmax:
            raise ValueError(f"K = {k} exceeds the IP's K_max = {self.kmax} (its weight buffer)")
        chunks = chunks_per_token(x != 0, self.simd, self.banks)
        cap_chunks = self.chunks_max if self.chunks_max is not None else int(chunks.sum())
        cap_tokens = self.mmax if self.mmax is not None else m
        if chunks.size and chunks.max() > cap_chunks:
            raise ValueError(f"one token takes {int(chunks.max())} chunks; the IP's buffer holds {cap_chunks}")
        blocks, start, used = [], 0, 0
        for t in range(m):
            if t > start and (used + chunks[t] > cap_chunks or t - start >= cap_tokens):
                blocks.append(slice(start, t))
                start, used = t, 0
            used += int(chunks[t])
        blocks.append(slice(start, m))
        return blocks

    def run_tiled(self, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, mult: int, shift: int,
                  fmt: str) -> np.ndarray:
        """int8 ``x[M, K]`` in token blocks that fit the IP; returns int8 ``[M, N]``."""
        x = np.asarray(x)
        outs = [self.run(prepare_layer(x[blk], w, bias, mult, shift, pe=self.pe, simd=self.simd, banks=self.banks,
                                       ports=self.ports, fmt=fmt, with_expected=False))
                for blk in self.token_blocks(x)]
        return np.concatenate(outs, axis=0)

    def _buffer(self, data: np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1)
        buf = self.allocate(shape=(max(1, data.size),), dtype=data.dtype)
        buf[:data.size] = data
        buf.sync_to_device()
        return buf

    def run(self, layer: IPLayer) -> np.ndarray:
        """Run one prepared layer; returns int8 ``[M, N]``. Raises :class:`IPError` on a bad status."""
        if (layer.pe, layer.simd, layer.banks, layer.ports) != (self.pe, self.simd, self.banks, self.ports):
            raise ValueError(f"layer packed for PE={layer.pe} SIMD={layer.simd} B={layer.banks} P={layer.ports}; "
                             f"the IP is PE={self.pe} SIMD={self.simd} B={self.banks} P={self.ports}")
        bufs = {"act_pairs": self._buffer(layer.pairs), "tok_chunks": self._buffer(layer.tok_chunks),
                "weights": self._buffer(layer.weights), "bias": self._buffer(layer.bias)}
        out = self.allocate(shape=(layer.m * layer.n,), dtype=np.int8)
        bufs["out"] = out
        try:
            for name, buf in bufs.items():
                addr = _device_address(buf)
                self.mmio.write(self.offsets[name], addr & 0xFFFFFFFF)
                self.mmio.write(self.offsets[name] + 4, (addr >> 32) & 0xFFFFFFFF)
            regs = {"m": layer.m, "k": layer.k, "n": layer.n, "fmt": FMT_CODE[layer.fmt],
                    "mult": layer.mult, "shift": layer.shift}
            for name, value in regs.items():
                self.mmio.write(self.offsets[name], int(value) & 0xFFFFFFFF)
            self.mmio.write(AP_CTRL, AP_START)
            t0 = time.monotonic()
            while not self.mmio.read(AP_CTRL) & AP_DONE:
                if time.monotonic() - t0 > self.timeout_s:
                    raise IPError(f"the IP did not finish within {self.timeout_s} s")
                time.sleep(1e-4)
            status = self.mmio.read(self.offsets["ap_return"])
            if status:
                raise IPError(f"IP status {status}: {STATUS_TEXT.get(status, 'unknown')}")
            out.sync_from_device()
            return np.array(out, dtype=np.int8).reshape(layer.m, layer.n)
        finally:
            for buf in bufs.values():
                if hasattr(buf, "freebuffer"):
                    buf.freebuffer()


# --------------------------------------------------------------------------- a ViT block
@dataclass
class TernaryLinearParams:
    """One ternary linear as the IP runs it (exported from a SparseTernaryLinear).

    Float semantics: ``y = topk_s(x) quantised to int8 with act_scale, times gamma * codes^T, + bias``;
    the IP returns ``y`` requantised to int8 with ``out_scale``.
    """

    codes: np.ndarray          # int8 [N, K] in {-1, 0, 1}
    gamma: float               # per-tensor weight scale
    act_scale: float           # int8 input step
    out_scale: float           # int8 output step
    bias: np.ndarray | None = None   # float [N]
    sparsity: float = 0.0


@dataclass
class BlockParams:
    """A pre-norm DINOv2/timm ViT block: x + ls1 * attn(ln1(x)); x + ls2 * mlp(ln2(x))."""

    num_heads: int
    ln1: tuple[np.ndarray, np.ndarray]
    qkv: TernaryLinearParams
    proj: TernaryLinearParams
    ln2: tuple[np.ndarray, np.ndarray]
    fc1: TernaryLinearParams
    fc2: TernaryLinearParams
    ls1: np.ndarray | None = None
    ls2: np.ndarray | None = None
    ln_eps: float = 1e-6


def topk_tokens(x: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the ``ceil((1 - s) * C)`` largest ``|x|`` of each token (row), zero the rest."""
    c = x.shape[-1]
    keep = math.ceil((1.0 - sparsity) * c)
    if keep >= c:
        return x
    idx = np.argpartition(-np.abs(x), keep - 1, axis=-1)[..., :keep]
    out = np.zeros_like(x)
    np.put_along_axis(out, idx, np.take_along_axis(x, idx, axis=-1), axis=-1)
    return out


def quantize_act(x: np.ndarray, act_scale: float) -> np.ndarray:
    return np.clip(np.rint(x / act_scale), -127, 127).astype(np.int8)


def linear_operands(p: TernaryLinearParams, x: np.ndarray):
    """Float tokens ``x[T, K]`` -> ``(x_int8, bias_acc, mult, shift)`` of ``p`` on the IP (top-k, int8,
    bias in accumulator units, requantisation)."""
    x_int = quantize_act(topk_tokens(np.asarray(x, np.float64), p.sparsity), p.act_scale)
    acc_unit = p.act_scale * p.gamma
    bias = None if p.bias is None else np.rint(np.asarray(p.bias, np.float64) / acc_unit).astype(np.int64)
    mult, shift = quantize_multiplier(acc_unit / p.out_scale)
    return x_int, bias, mult, shift


def prepare_linear(p: TernaryLinearParams, x: np.ndarray, *, pe: int, simd: int, fmt: str,
                   banks: int | None = None, ports: int = 1) -> IPLayer:
    """Float tokens ``x[T, K]`` -> the IP layer of ``p`` (all tokens in one stream)."""
    x_int, bias, mult, shift = linear_operands(p, x)
    return prepare_layer(x_int, p.codes, bias, mult, shift, pe=pe, simd=simd, banks=banks, ports=ports, fmt=fmt,
                         with_expected=False)


def _layernorm(x, wb, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * wb[0] + wb[1]


def _gelu(x):
    from math import erf
    return 0.5 * x * (1.0 + np.vectorize(erf)(x / math.sqrt(2.0)))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def run_block(x: np.ndarray, block: BlockParams, linear: Callable[[TernaryLinearParams, np.ndarray], np.ndarray]
              ) -> np.ndarray:
    """One ViT block on tokens ``x[T, D]`` (float); ``linear(p, x) -> float`` runs each ternary
    linear (on the IP: :meth:`TernaryGemmOverlay.linear`). LayerNorm, softmax attention, GELU and
    the residual adds run in numpy on the ARM cores."""
    x = np.asarray(x, np.float64)
    t, d = x.shape
    h = block.num_heads
    qkv = linear(block.qkv, _layernorm(x, block.ln1, block.ln_eps)).reshape(t, 3, h, d // h)
    q, k, v = (qkv[:, i].transpose(1, 0, 2) for i in range(3))
    att = _softmax(q @ k.transpose(0, 2, 1) / math.sqrt(d // h))
    a = (att @ v).transpose(1, 0, 2).reshape(t, d)
    y = linear(block.proj, a)
    x = x + (y if block.ls1 is None else block.ls1 * y)
    y = linear(block.fc2, _gelu(linear(block.fc1, _layernorm(x, block.ln2, block.ln_eps))))
    return x + (y if block.ls2 is None else block.ls2 * y)


class TernaryGemmOverlay:
    """The bitstream on the board: ``pynq.Overlay`` + the IP + PE/SIMD from design_point.json."""

    def __init__(self, bitfile: str = "tatvpr_gemm.bit", ip_name: str = "tatvpr_gemm_0", *,
                 pynq_module=None, fmt: str | None = None) -> None:
        if pynq_module is None:
            import pynq as pynq_module  # only on the board
        bitfile = Path(bitfile)
        point_path = bitfile.with_name("design_point.json")
        if not point_path.is_file():
            raise FileNotFoundError(f"{point_path} not found: it is written next to the bitstream by "
                                    "`tatvpr export bitstream` and gives the IP's PE and SIMD")
        point = json.loads(point_path.read_text())
        self.design_point = point
        self.fmt = fmt or point.get("weight_format", "ternary2")
        self.overlay = pynq_module.Overlay(str(bitfile))
        headers = sorted(bitfile.parent.glob("x*_hw.h"))
        offsets = offsets_from_hw_header(headers[0].read_text()) if headers else None
        self.ip = TernaryGemmIP(getattr(self.overlay, ip_name), pynq_module.allocate,
                                pe=point["pe"], simd=point["simd"], banks=point.get("banks"),
                                ports=point.get("ports", 1), kmax=point.get("kmax"), mmax=point.get("mmax"),
                                chunks_max=point.get("chunks_max"), offsets=offsets)

    def run_layer(self, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, mult: int, shift: int,
                  fmt: str | None = None) -> np.ndarray:
        """int8 ``x[M, K]``, ternary ``w[N, K]``, int32 ``bias[N]`` -> int8 ``[M, N]`` from the IP."""
        return self.ip.run_tiled(x, w, bias, mult, shift, fmt or self.fmt)

    def linear(self, p: TernaryLinearParams, x: np.ndarray) -> np.ndarray:
        """Float in, float out: one ternary linear on the IP (int8 output dequantised)."""
        x_int, bias, mult, shift = linear_operands(p, x)
        return self.ip.run_tiled(x_int, p.codes, bias, mult, shift, self.fmt).astype(np.float64) * p.out_scale

    def run_block(self, x: np.ndarray, block: BlockParams) -> np.ndarray:
        return run_block(x, block, self.linear)


# --------------------------------------------------------------------------- block files
_LINEARS = ("qkv", "proj", "fc1", "fc2")


def save_block(path, block: BlockParams) -> None:
    """Write ``block`` as one ``.npz`` (plain arrays, loaded with ``allow_pickle=False``)."""
    arrays = {"num_heads": np.array(block.num_heads), "ln_eps": np.array(block.ln_eps),
              "ln1_w": block.ln1[0], "ln1_b": block.ln1[1], "ln2_w": block.ln2[0], "ln2_b": block.ln2[1]}
    for ls in ("ls1", "ls2"):
        if getattr(block, ls) is not None:
            arrays[ls] = getattr(block, ls)
    for name in _LINEARS:
        p: TernaryLinearParams = getattr(block, name)
        arrays[f"{name}_codes"] = p.codes.astype(np.int8)
        arrays[f"{name}_scalars"] = np.array([p.gamma, p.act_scale, p.out_scale, p.sparsity])
        if p.bias is not None:
            arrays[f"{name}_bias"] = p.bias
    np.savez(path, **arrays)


def load_block(path) -> BlockParams:
    """Inverse of :func:`save_block`."""
    with np.load(path, allow_pickle=False) as z:
        def lin(name):
            gamma, act_scale, out_scale, sparsity = (float(v) for v in z[f"{name}_scalars"])
            return TernaryLinearParams(codes=z[f"{name}_codes"], gamma=gamma, act_scale=act_scale,
                                       out_scale=out_scale, sparsity=sparsity,
                                       bias=z[f"{name}_bias"] if f"{name}_bias" in z else None)
        return BlockParams(num_heads=int(z["num_heads"]), ln1=(z["ln1_w"], z["ln1_b"]), qkv=lin("qkv"),
                           proj=lin("proj"), ln2=(z["ln2_w"], z["ln2_b"]), fc1=lin("fc1"), fc2=lin("fc2"),
                           ls1=z["ls1"] if "ls1" in z else None, ls2=z["ls2"] if "ls2" in z else None,
                           ln_eps=float(z["ln_eps"]))
