"""PYNQ host driver of the TAT-VPR ternary GEMM IP (runs on the board's ARM cores; numpy only).

    >>> with TernaryGemmOverlay("tatvpr_gemm.bit") as ov:       # bitstream + .hwh + design_point.json
    ...     y = ov.run_layer(x_int8, w_ternary, bias_int32, mult, shift)     # int8 [M, N]
    ...     h = ov.run_block(x_float, block)                 # one ViT block, linears on the IP

In the PYNQ idiom: :func:`ip_driver_class` defines ``TernaryGemmDriver``, a ``pynq.DefaultIP``
subclass whose ``bindto`` is the IP's VLNV (:data:`IP_VLNV`, the one ``vitis_hls.tcl`` exports
and ``vivado.tcl`` instantiates), so ``pynq.Overlay`` hands the IP to it. Register offsets come
from the ``.hwh`` register map (PYNQ's parse of it, the IP description's ``registers``; or this
module's own parse of the ``.hwh`` when the PYNQ release leaves them out); only when neither has
them, from the IP export's ``x<top>_hw.h``, and last from the Vitis HLS layout with a warning.

The driver packs weights and compresses activations with :mod:`tatvpr_pynq.formats`, copies
them into contiguous DDR buffers that are allocated once and reused by every call (grown when a
bigger layer arrives, freed by ``close()`` or leaving the ``with`` block), programs the AXI4-Lite
registers, starts the IP, polls ``ap_done`` and reads the status and the int8 outputs back.

One IP call runs a whole layer (docs/engine.md section 4). The IP cuts the layer's tokens into
the simulator's token blocks on chip (the rule of :func:`ternary_format.tiling.token_blocks`,
which ``sim.engine`` calls too) and runs the steps ``(fold, block)`` in the loop order the driver
writes to its ``order`` register; ``resident`` says whether a block may use the whole chunk
buffer. The driver takes both from the simulator's rules (:meth:`TernaryGemmIP.plan`): resident
when the layer's chunk stream fits the IP's ``CHUNKS_MAX`` chunks and the previous op did not
spill the input (on the board the stream always comes from DDR: resident means one block
holding the whole buffer, read once; in the simulated machine the previous op wrote it there),
else blocks of at most ``floor(CHUNKS_MAX / h)`` chunks (``h = 2`` with double buffering: the
next block loads into the other half); no block has more tokens than the output buffer
(``MMAX``); the order is ``buffers.loop_order`` of the design point, or for ``auto`` the one with
fewer DRAM bytes (:func:`ternary_format.tiling.choose_loop_order`).
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from .formats import (FMT_CODE, LOOP_ORDER_CODE, STATUS_TEXT, IPLayer, chunks_per_token, layer_from_stream,
                      prepare_layer, quantize_multiplier)

IP_VLNV = "tatvpr.org:hls:tatvpr_ternary_gemm:1.0"
"""vendor:library:name:version of the exported IP (``config_export`` in ``vitis_hls.tcl``)."""
AP_CTRL = 0x00
AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
POINTER_ARGS = ("act_pairs", "tok_chunks", "weights", "bias", "out")
SCALAR_ARGS = ("m", "k", "n", "fmt", "mult", "shift", "order", "resident")
BUFFER_DTYPES = {"act_pairs": np.uint32, "tok_chunks": np.uint16, "weights": np.uint8, "bias": np.int32,
                 "out": np.int8, "act_dense": np.int8}
"""Element type of each DDR buffer the IP reads or writes."""


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
    for arg in ("out",):  # a C argument named like an HDL keyword gets an `_r` suffix
        if arg not in found and f"{arg}_r" in found:
            found[arg] = found.pop(f"{arg}_r")
    missing = [a for a in ("ap_return", *POINTER_ARGS, *SCALAR_ARGS) if a not in found]
    if missing:
        raise ValueError(f"hardware header lacks the register(s) {', '.join(missing)}")
    return found


def offsets_from_registers(registers: dict | None) -> dict[str, int] | None:
    """Offsets from a register map in PYNQ's ``ip_dict`` form (``{name: {"address_offset": int,
    "size": int, ...}}``, parsed from the ``.hwh``); ``None`` when there is none.

    Vitis HLS names a 64-bit pointer's halves ``<arg>_1`` (bits 31..0) and ``<arg>_2`` (63..32), a
    scalar ``<arg>``, and appends ``_r`` to an argument named like an HDL keyword (``out_r``)."""
    if not registers:
        return None
    regs = {name.lower(): int(v["address_offset"]) for name, v in registers.items()}

    def find(*names):
        return next((regs[n] for n in names if n in regs), None)

    found, problems = {}, []
    if find("ap_return") is not None:
        found["ap_return"] = find("ap_return")
    for arg in POINTER_ARGS:
        lo = find(f"{arg}_1", f"{arg}_r_1", arg, f"{arg}_r")
        hi = find(f"{arg}_2", f"{arg}_r_2")
        if lo is None:
            continue
        if hi is not None and hi != lo + 4:
            problems.append(f"{arg}: high word at 0x{hi:x}, expected 0x{lo + 4:x}")
        found[arg] = lo
    for arg in SCALAR_ARGS:
        off = find(arg, f"{arg}_r")
        if off is not None:
            found[arg] = off
    missing = [a for a in ("ap_return", *POINTER_ARGS, *SCALAR_ARGS) if a not in found]
    if missing or problems:
        raise ValueError(f"the .hwh register map of the IP does not match this driver ({IP_VLNV}): "
                         + "; ".join(([f"missing {', '.join(missing)}"] if missing else []) + problems)
                         + f"; it has {', '.join(sorted(regs))}")
    return found


def registers_from_hwh(text: str, instance: str) -> dict[str, dict] | None:
    """The register map of module ``instance`` in a Vivado ``.hwh`` (XML), in PYNQ's ``ip_dict``
    form; ``None`` when the module lists no registers. Raises ``ValueError`` when the module is absent."""
    root = ElementTree.fromstring(text)
    mod = next((m for m in root.iter("MODULE") if m.get("INSTANCE") == instance), None)
    if mod is None:
        names = sorted(m.get("INSTANCE", "?") for m in root.iter("MODULE"))
        raise ValueError(f".hwh has no module {instance!r}; it has {', '.join(names)}")
    regs = {}
    for reg in mod.findall(".//REGISTERS/REGISTER[@NAME]"):
        props = {p.get("NAME"): p.get("VALUE") for p in reg.findall("./PROPERTY")}
        if "ADDRESS_OFFSET" in props:
            regs[reg.get("NAME")] = {"address_offset": int(props["ADDRESS_OFFSET"], 0),
                                     "size": int(props.get("SIZE", "32"), 0),
                                     "access": props.get("ACCESS"), "description": props.get("DESCRIPTION")}
    return regs or None


class IPError(RuntimeError):
    """The IP reported a bad status or did not finish."""


def _device_address(buf) -> int:
    for attr in ("device_address", "physical_address"):
        if hasattr(buf, attr):
            return int(getattr(buf, attr))
    raise TypeError("buffer has neither device_address nor physical_address (not a pynq.allocate buffer)")


def _free(buf) -> None:
    if hasattr(buf, "freebuffer"):
        buf.freebuffer()


def sim_token_blocks(chunks, chunks_max: float, mmax: float, double_buffering: bool, *,
                     input_in_dram: bool = False) -> tuple[bool, list[slice]]:
    """docs/engine.md section 4's ``(resident, token blocks)`` of a layer whose tokens take
    ``chunks[m]`` chunks of the activation stream, on an IP with a ``chunks_max``-chunk activation
    buffer and an ``mmax``-token output buffer (``math.inf``: unbounded):
    :func:`ternary_format.tiling.token_blocks`, the function the simulator uses and the rule the
    IP applies on chip. Raises ``ValueError`` when one token does not fit a block."""
    from ternary_format.tiling import TokenTooLarge, token_blocks

    try:
        resident, blocks = token_blocks(chunks, chunks_max, mmax, 2 if double_buffering else 1,
                                        input_in_dram=input_in_dram)
    except TokenTooLarge as e:
        raise ValueError(f"one token takes {e.words} chunks; the IP's activation buffer ({chunks_max} chunks) "
                         f"cannot hold a block of it (at most {e.cap_words} chunks a block)") from None
    return resident, [slice(s, e) for s, e in blocks]


WEIGHT_BITS = {"ternary2": Fraction(2), "ternary1.6": Fraction(8, 5)}
"""DRAM bits of one packed weight (what ``sim.engine.weight_fold_bytes`` charges per fold)."""


class _OwnsBuffers:
    """DDR buffers kept in ``self.buffers`` (name -> pynq buffer), reused across calls; ``close()``
    (or leaving a ``with`` block) frees them, the next call allocates again."""

    buffers: dict

    def close(self) -> None:
        for buf in self.buffers.values():
            _free(buf)
        self.buffers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TernaryGemmIP(_OwnsBuffers):
    """One IP instance, without PYNQ: ``mmio`` has ``read(offset)`` / ``write(offset, value)`` (the
    ``TernaryGemmDriver``, a ``pynq.DefaultIP``), ``allocate(shape, dtype)`` returns contiguous DDR
    buffers (``pynq.allocate``). ``banks``/``ports``: the IP's gather (None = SIMD banks);
    ``activations_kb``, ``double_buffering``: the design point's activation buffer, which sets the
    token blocks (:func:`sim_token_blocks`); ``kmax``, ``mmax``, ``chunks_max``: the IP's compiled
    buffer sizes (``design_point.json``); ``loop_order``: the design point's ``buffers.loop_order``
    (``auto``, ``fold_outer`` or ``token_outer``), see :meth:`plan`; ``skip_mode``: the IP's build,
    ``act`` (the bank-scheduled stream) or ``none`` (dense int8 tokens, ``TATVPR_SKIP_NONE``).

    DDR buffers are allocated on first use and reused by later calls (a bigger layer replaces one
    with a bigger one); :meth:`close` frees them, as does leaving a ``with`` block.
    """

    def __init__(self, mmio, allocate: Callable, *, pe: int, simd: int, activations_kb: float,
                 double_buffering: bool = True, banks: int | None = None, ports: int = 1,
                 kmax: int | None = None, mmax: int | None = None, chunks_max: int | None = None,
                 loop_order: str = "auto", skip_mode: str = "act", offsets: dict[str, int] | None = None,
                 timeout_s: float = 10.0) -> None:
        self.mmio = mmio
        self.allocate = allocate
        self.pe = int(pe)
        self.simd = int(simd)
        self.banks = int(banks or simd)
        self.ports = int(ports)
        self.activations_kb = float(activations_kb)
        self.double_buffering = bool(double_buffering)
        self.kmax, self.mmax, self.chunks_max = kmax, mmax, chunks_max
        self.loop_order = loop_order
        if skip_mode not in ("act", "none"):
            raise ValueError(f"skip_mode {skip_mode!r}: the IP builds 'act' or 'none'")
        self.skip_mode = skip_mode
        self.offsets = offsets or default_offsets()
        self.timeout_s = timeout_s
        self.buffers: dict[str, object] = {}
        self.last_plan: dict | None = None
        """The last :meth:`run_tiled`'s :meth:`plan` (its one IP call's order, resident and blocks)."""

    # ---------------------------------------------------------------- buffers
    def _stage(self, name: str, size: int):
        """The reused DDR buffer ``name`` with room for ``size`` elements (allocated or grown)."""
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < size:
            if buf is not None:
                _free(buf)
                del self.buffers[name]
            buf = self.allocate(shape=(max(1, size),), dtype=BUFFER_DTYPES[name])
            self.buffers[name] = buf
        return buf

    def _upload(self, name: str, data: np.ndarray):
        data = np.ascontiguousarray(data, dtype=BUFFER_DTYPES[name]).reshape(-1)
        buf = self._stage(name, data.size)
        buf[:data.size] = data
        buf.sync_to_device()
        return buf


    # ---------------------------------------------------------------- tiling
    def token_blocks(self, chunks: np.ndarray, k: int, *, input_in_dram: bool = False) -> tuple[bool, list[slice]]:
        """``(resident, blocks)``: the simulator's token blocks of a layer of ``K`` channels whose
        tokens take ``chunks`` (:func:`sim_token_blocks` on the IP's ``chunks_max`` and ``mmax``; None =
        unbounded), the blocks the IP cuts on chip."""
        if self.kmax is not None and k > self.kmax:
            raise ValueError(f"K = {k} exceeds the IP's K_max = {self.kmax} (its weight buffer)")
        cap = self.chunks_max if self.chunks_max is not None else math.inf
        tokens = self.mmax if self.mmax is not None else math.inf
        return sim_token_blocks(chunks, cap, tokens, self.double_buffering, input_in_dram=input_in_dram)

    def plan(self, chunks: np.ndarray, k: int, n: int, fmt: str, *, input_in_dram: bool = False) -> dict:
        """The one IP call of a layer whose tokens take ``chunks`` activation-buffer words (act: their
        chunks; none: ``ceil(K / SIMD)`` each): ``{order, resident, blocks}``, the simulator's
        (docs/engine.md section 4): its token blocks and the loop order of ``buffers.loop_order``
        (``auto``: fewer DRAM bytes, :func:`ternary_format.tiling.choose_loop_order`, with the
        folds' packed weights and the act stream's bytes, ``act_stream_bytes``)."""
        from ternary_format.tiling import act_stream_bytes, choose_loop_order

        resident, blocks = self.token_blocks(chunks, k, input_in_dram=input_in_dram)
        folds = -(-n // self.pe)
        fold_bytes = self.pe * k * WEIGHT_BITS[fmt] / 8
        if self.skip_mode == "none":  # the dense int8 tokens
            act_bytes = len(chunks) * k
        else:
            act_bytes = act_stream_bytes(int(np.asarray(chunks, np.int64).sum()), self.simd, len(chunks))
        order = choose_loop_order(self.loop_order, folds, len(blocks), resident, fold_bytes, act_bytes)
        return {"order": order, "resident": resident, "blocks": blocks}

    def run_tiled(self, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, mult: int, shift: int,
                  fmt: str, *, input_in_dram: bool = False) -> np.ndarray:
        """int8 ``x[M, K]`` as one IP call with the simulator's loop order and token blocks; returns
        int8 ``[M, N]``. ``input_in_dram``: the previous op spilled its output (docs/engine.md section 4)."""
        x = np.asarray(x)
        if self.skip_mode == "none":
            chunks = np.full(x.shape[0], max(1, -(-x.shape[1] // self.simd)), np.int64)
        else:
            chunks = chunks_per_token(x != 0, self.simd, self.banks)
        self.last_plan = self.plan(chunks, x.shape[1], np.asarray(w).shape[0], fmt, input_in_dram=input_in_dram)
        layer = prepare_layer(x, w, bias, mult, shift, pe=self.pe, simd=self.simd, banks=self.banks,
                              ports=self.ports, fmt=fmt, with_expected=False, skip_mode=self.skip_mode)
        layer.order, layer.resident = self.last_plan["order"], self.last_plan["resident"]
        return self.run(layer)

    def run_stream(self, tok_chunks: np.ndarray, pairs: np.ndarray, k: int, w: np.ndarray, bias: np.ndarray | None,
                   mult: int, shift: int, fmt: str, *, input_in_dram: bool = False) -> np.ndarray:
        """As :meth:`run_tiled`, on an ``act`` stream already made (``tok_chunks``, ``pairs``: the
        vector unit's top-k + bank scheduling, ``VectorUnitIP.topk_schedule``) instead of int8 ``x``."""
        if self.skip_mode != "act":
            raise ValueError(f"an act stream needs the act IP; this one is built for {self.skip_mode!r}")
        chunks = np.asarray(tok_chunks, np.int64)
        self.last_plan = self.plan(chunks, int(k), np.asarray(w).shape[0], fmt, input_in_dram=input_in_dram)
        layer = layer_from_stream(tok_chunks, pairs, int(k), w, bias, mult, shift, pe=self.pe, simd=self.simd,
                                  banks=self.banks, ports=self.ports, fmt=fmt)
        layer.order, layer.resident = self.last_plan["order"], self.last_plan["resident"]
        return self.run(layer)

    # ---------------------------------------------------------------- one call
    def run(self, layer: IPLayer) -> np.ndarray:
        """Run one prepared layer (the whole layer in one IP call, in ``layer.order`` with
        ``layer.resident``); returns int8 ``[M, N]``. Raises :class:`IPError` on a bad status."""
        if (layer.pe, layer.simd, layer.banks, layer.ports) != (self.pe, self.simd, self.banks, self.ports):
            raise ValueError(f"layer packed for PE={layer.pe} SIMD={layer.simd} B={layer.banks} P={layer.ports}; "
                             f"the IP is PE={self.pe} SIMD={self.simd} B={self.banks} P={self.ports}")
        if layer.skip_mode != self.skip_mode:
            raise ValueError(f"layer prepared for skip mode {layer.skip_mode!r}; the IP is built for {self.skip_mode!r}")
        # the act register: the slot words (act) or the dense int8 tokens (none)
        act = self._upload("act_dense", layer.pairs) if layer.skip_mode == "none" else \
            self._upload("act_pairs", layer.pairs)
        bufs = {"act_pairs": act,
                "tok_chunks": self._upload("tok_chunks", layer.tok_chunks),
                "weights": self._upload("weights", layer.weights), "bias": self._upload("bias", layer.bias),
                "out": self._stage("out", layer.m * layer.n)}
        for name, buf in bufs.items():
            addr = _device_address(buf)
            self.mmio.write(self.offsets[name], addr & 0xFFFFFFFF)
            self.mmio.write(self.offsets[name] + 4, (addr >> 32) & 0xFFFFFFFF)
        regs = {"m": layer.m, "k": layer.k, "n": layer.n, "fmt": FMT_CODE[layer.fmt],
                "mult": layer.mult, "shift": layer.shift, "order": LOOP_ORDER_CODE[layer.order],
                "resident": int(bool(layer.resident))}
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
        out = bufs["out"]
        out.sync_from_device()
        return np.array(out[:layer.m * layer.n], dtype=np.int8).reshape(layer.m, layer.n)


_DRIVER_CLASSES: dict[int, type] = {}


def ip_driver_class(pynq_module) -> type:
    """``TernaryGemmDriver``: the ``pynq_module.DefaultIP`` subclass bound to :data:`IP_VLNV`.

    Defining it registers the binding (PYNQ's ``DefaultIP`` metaclass reads ``bindto``), so it must
    exist before ``pynq.Overlay`` is built; importing this module on a board with ``pynq`` does
    that, and :class:`TernaryGemmOverlay` calls it again (cached) for a ``pynq_module`` it is given.
    """
    key = id(pynq_module)
    if key in _DRIVER_CLASSES:
        return _DRIVER_CLASSES[key]

    class TernaryGemmDriver(pynq_module.DefaultIP):
        """PYNQ driver of the TAT-VPR ternary GEMM IP; :meth:`configure` attaches the design point."""

        bindto = [IP_VLNV]

        def __init__(self, description):
            super().__init__(description)
            self.description_registers = description.get("registers") or None
            self.core: TernaryGemmIP | None = None

        def register_offsets(self) -> dict[str, int] | None:
            """Offsets from the register map PYNQ parsed out of the ``.hwh`` (None if it has none)."""
            return offsets_from_registers(self.description_registers)

        def configure(self, point: dict, allocate: Callable, offsets: dict[str, int]) -> TernaryGemmIP:
            self.core = TernaryGemmIP(self, allocate, pe=point["pe"], simd=point["simd"],
                                      activations_kb=point["activations_kb"],
                                      double_buffering=point.get("double_buffering", True),
                                      banks=point.get("banks"), ports=point.get("ports", 1), kmax=point.get("kmax"),
                                      mmax=point.get("mmax"), chunks_max=point.get("chunks_max"),
                                      loop_order=point.get("loop_order", "auto"),
                                      skip_mode=point.get("skip_mode", "act"), offsets=offsets)
            return self.core

    _DRIVER_CLASSES[key] = TernaryGemmDriver
    return TernaryGemmDriver


try:  # on the board: importing the driver binds it to the IP's VLNV, as PYNQ drivers do
    import pynq as _pynq
except ImportError:  # off the board (tests pass a mocked module to TernaryGemmOverlay)
    _pynq = None
if _pynq is not None and hasattr(_pynq, "DefaultIP"):
    TernaryGemmDriver = ip_driver_class(_pynq)


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


_POINT_KEYS = ("pe", "simd", "activations_kb", "outputs_kb")


class TernaryGemmOverlay:
    """The bitstream on the board: ``pynq.Overlay`` + its ``TernaryGemmDriver`` + the design point
    (``design_point.json``: PE, SIMD, gather, buffer sizes). Close it (or use ``with``) to free the
    DDR buffers.

    ``register_source`` says where the register offsets came from: ``"hwh (pynq)"``, ``"hwh"``,
    ``"hw.h"`` or ``"default"``. ``int8`` and ``vector``: the bitstream's int8-unit and vector-unit IPs
    (:class:`Int8UnitIP`, :class:`VectorUnitIP`; ``None`` when it has none), their offsets' sources in
    ``unit_register_sources``."""

    def __init__(self, bitfile: str = "tatvpr_gemm.bit", ip_name: str = "tatvpr_gemm_0", *,
                 pynq_module=None, fmt: str | None = None) -> None:
        if pynq_module is None:
            import pynq as pynq_module  # only on the board
        driver_cls = ip_driver_class(pynq_module)  # bound before the overlay maps its IP to drivers
        for unit in UNIT_INSTANCES:
            unit_driver_class(pynq_module, unit)
        bitfile = Path(bitfile)
        point_path = bitfile.with_name("design_point.json")
        if not point_path.is_file():
            raise FileNotFoundError(f"{point_path} not found: it is written next to the bitstream by "
                                    "`tatvpr export bitstream` and gives the IP's PE, SIMD and buffer sizes")
        point = json.loads(point_path.read_text())
        missing = [key for key in _POINT_KEYS if key not in point]
        if missing:
            raise ValueError(f"{point_path} lacks {', '.join(missing)}; re-export the bitstream's deploy folder "
                             "with `tatvpr export bitstream`")
        self.design_point = point
        self.fmt = fmt or point.get("weight_format", "ternary2")
        self.overlay = pynq_module.Overlay(str(bitfile))
        ip = getattr(self.overlay, ip_name)
        if not isinstance(ip, driver_cls):
            vlnv = getattr(self.overlay, "ip_dict", {}).get(ip_name, {}).get("type", "unknown")
            raise IPError(f"{ip_name} in {bitfile.name} is driven by {type(ip).__name__}, not TernaryGemmDriver: "
                          f"its VLNV in the .hwh is {vlnv}, this driver binds {IP_VLNV}")
        offsets, self.register_source = ip.register_offsets(), "hwh (pynq)"
        hwh = bitfile.with_suffix(".hwh")
        if offsets is None and hwh.is_file():
            offsets, self.register_source = offsets_from_registers(registers_from_hwh(hwh.read_text(), ip_name)), "hwh"
        headers = sorted(bitfile.parent.glob("x*_hw.h"))
        if offsets is None and headers:
            offsets, self.register_source = offsets_from_hw_header(headers[0].read_text()), "hw.h"
        if offsets is None:
            warnings.warn(f"no register map for {ip_name} in {hwh.name} or an x*_hw.h: using the Vitis HLS "
                          "default offsets", stacklevel=2)
            offsets, self.register_source = default_offsets(), "default"
        self.ip = ip.configure(point, pynq_module.allocate, offsets)
        # the int8-unit and vector-unit IPs of the same bitstream (None: a bitstream without them)
        self.int8, src8 = bind_unit(self.overlay, pynq_module, "int8", bitfile)
        self.vector, srcv = bind_unit(self.overlay, pynq_module, "vector", bitfile)
        self.unit_register_sources = {"int8": src8, "vector": srcv}

    def close(self) -> None:
        """Free the IPs' DDR buffers."""
        self.ip.close()
        for core in (self.int8, self.vector):
            if core is not None:
                core.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run_layer(self, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, mult: int, shift: int,
                  fmt: str | None = None, *, input_in_dram: bool = False) -> np.ndarray:
        """int8 ``x[M, K]``, ternary ``w[N, K]``, int32 ``bias[N]`` -> int8 ``[M, N]`` from the IP, in the
        simulator's token blocks (``input_in_dram``: the previous op's output spilled to DRAM)."""
        return self.ip.run_tiled(x, w, bias, mult, shift, fmt or self.fmt, input_in_dram=input_in_dram)

    def run_layer_stream(self, tok_chunks: np.ndarray, pairs: np.ndarray, k: int, w: np.ndarray,
                         bias: np.ndarray | None, mult: int, shift: int, fmt: str | None = None, *,
                         input_in_dram: bool = False) -> np.ndarray:
        """As :meth:`run_layer`, on the act stream the vector unit made (``tatvpr_topk_schedule``)."""
        return self.ip.run_stream(tok_chunks, pairs, k, w, bias, mult, shift, fmt or self.fmt,
                                  input_in_dram=input_in_dram)

    def linear(self, p: TernaryLinearParams, x: np.ndarray) -> np.ndarray:
        """Float in, float out: one ternary linear on the IP (int8 output dequantised). Inside a ViT
        block the op before a linear (LayerNorm, attention, GELU) outputs the linear's ``M x K`` input,
        so that input is in DRAM exactly when ``M * K`` bytes exceed ``outputs_kb`` (docs/engine.md section 4)."""
        x_int, bias, mult, shift = linear_operands(p, x)
        spilled = x_int.size > Fraction(self.design_point["outputs_kb"]) * 1024
        return self.ip.run_tiled(x_int, p.codes, bias, mult, shift, self.fmt,
                                 input_in_dram=bool(spilled)).astype(np.float64) * p.out_scale

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


# --------------------------------------------------------------------------- the int8 and vector unit IPs
INT8_VLNV = "tatvpr.org:hls:tatvpr_int8_unit:1.0"
VECTOR_VLNV = "tatvpr.org:hls:tatvpr_vector_unit:1.0"
"""VLNVs of the int8-unit and vector-unit IPs (``UNIT_IPS`` in ``tatvpr_hw.lower.hls.board``: the
names ``vitis_hls.tcl`` exports, ``vivado.tcl`` instantiates as ``tatvpr_int8_0``, ``tatvpr_vector_0``)."""
UNIT_INSTANCES = {"int8": "tatvpr_int8_0", "vector": "tatvpr_vector_0"}

# The C arguments of each top function (hls/src/tatvpr_units_top.cpp), in order: (name, kind, dtype);
# kind "ptr" (64-bit DDR address), "u32" (int), "u64" (long long: two 32-bit words).
INT8_ARGS = (("a", "ptr", np.int16), ("b", "ptr", np.int8), ("bias", "ptr", np.int32), ("out32", "ptr", np.int32),
             ("out8", "ptr", np.int8), ("out16", "ptr", np.int16), ("batch", "u32", None), ("m", "u32", None),
             ("k", "u32", None), ("n", "u32", None), ("mode", "u32", None), ("mult", "u64", None),
             ("shift", "u32", None), ("att_mult", "u64", None), ("att_shift", "u32", None))
VECTOR_ARGS = (("op", "u32", None), ("x16", "ptr", np.int16), ("x8", "ptr", np.int8), ("s32", "ptr", np.int32),
               ("row_max32", "ptr", np.int32), ("gain64", "ptr", np.int64), ("bias64", "ptr", np.int64),
               ("mult32", "ptr", np.int32), ("shift32", "ptr", np.int32), ("table8", "ptr", np.int8),
               ("y8", "ptr", np.int8), ("p8", "ptr", np.uint8), ("out16", "ptr", np.int16), ("t", "u32", None),
               ("d", "u32", None), ("mult", "u64", None), ("shift", "u32", None), ("eps_q", "u64", None),
               ("chunks16", "ptr", np.uint16), ("pairs32", "ptr", np.uint32), ("keep", "u32", None))
VECTOR_OPS = {"layernorm": 1, "softmax": 2, "gelu": 3, "add": 4, "requant": 6, "l2norm": 7, "topk": 8,
              "topk_dense": 9}
"""``op`` register values (``TATVPR_V_*`` in tatvpr_units_top.cpp)."""
GEMM_MODES = {"int32": (0, "out32"), "int8": (1, "out8"), "int16": (2, "out16")}
ATTENTION_MODE = 3
"""``mode`` of the int8 IP's fused attention (``TATVPR_I8_ATTENTION``, hls/include/tatvpr_attention.h)."""


def unit_default_offsets(args) -> dict[str, int]:
    """Vitis HLS layout of a void top: arguments from 0x10, a 32-bit one every 8 bytes, a 64-bit one
    (pointer, long long) every 12."""
    offsets, addr = {}, 0x10
    for name, kind, _ in args:
        offsets[name] = addr
        addr += 8 if kind == "u32" else 12
    return offsets


def unit_offsets_from_registers(registers: dict | None, args, vlnv: str) -> dict[str, int] | None:
    """Offsets of ``args`` from a register map in PYNQ's ``ip_dict`` form (parsed from the ``.hwh``):
    a 64-bit argument is ``<arg>_1`` (bits 31..0) and ``<arg>_2`` (63..32), a 32-bit one ``<arg>``;
    ``None`` when there is no map. A map that lacks an argument is refused, naming it."""
    if not registers:
        return None
    regs = {name.lower(): int(v["address_offset"]) for name, v in registers.items()}
    found, problems = {}, []
    for name, kind, _ in args:
        if kind == "u32":
            off = regs.get(name, regs.get(f"{name}_r"))
            if off is not None:
                found[name] = off
            continue
        lo = next((regs[n] for n in (f"{name}_1", f"{name}_r_1", name, f"{name}_r") if n in regs), None)
        hi = next((regs[n] for n in (f"{name}_2", f"{name}_r_2") if n in regs), None)
        if lo is None:
            continue
        if hi is not None and hi != lo + 4:
            problems.append(f"{name}: high word at 0x{hi:x}, expected 0x{lo + 4:x}")
        found[name] = lo
    missing = [n for n, _, _ in args if n not in found]
    if missing or problems:
        raise ValueError(f"the .hwh register map of the IP does not match this driver ({vlnv}): "
                         + "; ".join(([f"missing {', '.join(missing)}"] if missing else []) + problems)
                         + f"; it has {', '.join(sorted(regs))}")
    return found


class UnitIP(_OwnsBuffers):
    """One int8-unit or vector-unit IP without PYNQ (the idiom of :class:`TernaryGemmIP`): ``mmio``
    reads and writes the AXI4-Lite registers, ``allocate(shape, dtype)`` gives contiguous DDR
    buffers, allocated on first use, reused by later calls, grown when a bigger operand comes, freed
    by :meth:`close`. :meth:`start` programs the registers and sets ``ap_start``; :meth:`wait` polls
    ``ap_done`` and reads the output back, so the host can start another IP in between."""

    ARGS: tuple = ()
    VLNV = ""

    def __init__(self, mmio, allocate: Callable, *, offsets: dict[str, int] | None = None,
                 timeout_s: float = 10.0) -> None:
        self.mmio = mmio
        self.allocate = allocate
        self.offsets = offsets or unit_default_offsets(self.ARGS)
        self.timeout_s = timeout_s
        self.buffers: dict[str, object] = {}
        self.dtypes = {n: dt for n, kind, dt in self.ARGS if kind == "ptr"}
        self.calls = 0
        self._pending = None

    def _stage(self, name: str, size: int):
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < size:
            if buf is not None:
                _free(buf)
                del self.buffers[name]
            buf = self.allocate(shape=(max(1, size),), dtype=self.dtypes[name])
            self.buffers[name] = buf
        return buf

    def _upload(self, name: str, data) -> object:
        data = np.ascontiguousarray(data, dtype=self.dtypes[name]).reshape(-1)
        buf = self._stage(name, data.size)
        buf[:data.size] = data
        buf.sync_to_device()
        return buf

    def start(self, arrays: dict[str, np.ndarray], scalars: dict[str, int], out: str, out_size: int) -> None:
        """Upload ``arrays``, point every pointer register at a buffer (an unused one at a 1-element
        placeholder: an AXI address cannot be null), write ``scalars``, set ``ap_start``."""
        if self._pending is not None:
            raise IPError(f"{type(self).__name__}: start() while a call is running; wait() first")
        bufs = {name: self._upload(name, a) for name, a in arrays.items()}
        bufs[out] = self._stage(out, out_size)
        for name, kind, _ in self.ARGS:
            if kind == "ptr":
                buf = bufs.get(name)
                addr = _device_address(buf if buf is not None else self._stage(name, 1))
                self.mmio.write(self.offsets[name], addr & 0xFFFFFFFF)
                self.mmio.write(self.offsets[name] + 4, (addr >> 32) & 0xFFFFFFFF)
            else:
                v = int(scalars.get(name, 0))
                self.mmio.write(self.offsets[name], v & 0xFFFFFFFF)
                if kind == "u64":
                    self.mmio.write(self.offsets[name] + 4, (v >> 32) & 0xFFFFFFFF)
        self.mmio.write(AP_CTRL, AP_START)
        self.calls += 1
        self._pending = (bufs[out], out_size)

    def done(self) -> bool:
        return bool(self.mmio.read(AP_CTRL) & AP_DONE)

    def wait(self) -> np.ndarray:
        """Poll ``ap_done``; the output elements of the call started last (a copy)."""
        if self._pending is None:
            raise IPError(f"{type(self).__name__}: wait() without a started call")
        buf, size = self._pending
        t0 = time.monotonic()
        while not self.done():
            if time.monotonic() - t0 > self.timeout_s:
                self._pending = None
                raise IPError(f"the {type(self).__name__} IP did not finish within {self.timeout_s} s")
            time.sleep(1e-4)
        self._pending = None
        buf.sync_from_device()
        return np.array(buf[:size])



class Int8UnitIP(UnitIP):
    """The int8 unit (``tatvpr_int8_top``): ``batch`` GEMMs ``a[m, k] . b[k, n]`` (+ bias), int32 out
    or requantised to int8 / int16 (:meth:`tatvpr_pynq.integer.Units.gemm`'s arithmetic)."""

    ARGS = INT8_ARGS
    VLNV = INT8_VLNV

    def start_gemm(self, a, b, bias=None, *, out: str = "int32", mult: int = 0, shift: int = 0) -> tuple:
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim == 2:
            a, b = a[None], b[None]
        batch, m, k = a.shape
        if b.shape[:2] != (batch, k):
            raise ValueError(f"int8 unit: a {a.shape} and b {b.shape} do not chain")
        n = b.shape[-1]
        if out not in GEMM_MODES:
            raise ValueError(f"int8 unit: out {out!r}; allowed: {', '.join(GEMM_MODES)}")
        mode, out_buf = GEMM_MODES[out]
        arrays = {"a": a.astype(np.int16), "b": b.astype(np.int8),
                  "bias": np.zeros(n, np.int32) if bias is None else np.asarray(bias, np.int64).astype(np.int32)}
        self.start(arrays, {"batch": batch, "m": m, "k": k, "n": n, "mode": mode, "mult": mult, "shift": shift},
                   out_buf, batch * m * n)
        return batch, m, n

    def gemm(self, a, b, bias=None, *, out: str = "int32", mult: int = 0, shift: int = 0) -> np.ndarray:
        squeeze = np.asarray(a).ndim == 2
        batch, m, n = self.start_gemm(a, b, bias, out=out, mult=mult, shift=shift)
        y = self.wait().reshape(batch, m, n)
        return y[0] if squeeze else y

    def attention(self, qkv, heads: int, sm_mult: int, sm_shift: int, av_mult: int, av_shift: int) -> np.ndarray:
        """A block's fused attention (mode :data:`ATTENTION_MODE`, ``tatvpr_attention``): the qkv projection's
        int8 output ``qkv[T, 3 D]`` (Q, K, V, each head-major) -> int8 ``[T, D]`` (the projection's input),
        :meth:`tatvpr_pynq.integer.Units.attention`'s integers. One call; no scores or probabilities leave the
        IP. The IP is built for at most ``TATVPR_ATT_MAX_TOKENS`` tokens and ``TATVPR_ATT_MAX_HEAD_DIM``
        channels a head (design_point.json ``max_tokens`` / ``max_head_dim``)."""
        qkv = np.asarray(qkv)
        if qkv.ndim != 2 or qkv.dtype != np.int8 or heads < 1 or qkv.shape[1] % (3 * heads):
            raise ValueError(f"int8 unit attention: int8 [T, 3 D] with D a multiple of {heads} heads, got "
                             f"{qkv.dtype} {qkv.shape}")
        for what, shift in (("softmax", sm_shift), ("P.V", av_shift)):
            if not 1 <= int(shift) <= 62:
                raise ValueError(f"int8 unit attention: the {what} shift must be in [1, 62], got {shift}")
        t, d = qkv.shape[0], qkv.shape[1] // 3
        self.start({"a": np.zeros(1, np.int16), "b": qkv.reshape(-1), "bias": np.zeros(1, np.int32)},
                   {"batch": int(heads), "m": t, "k": d // heads, "n": 0, "mode": ATTENTION_MODE, "mult": int(av_mult),
                    "shift": int(av_shift), "att_mult": int(sm_mult), "att_shift": int(sm_shift)}, "out8", t * d)
        return self.wait().reshape(t, d)


class VectorUnitIP(UnitIP):
    """The vector unit (``tatvpr_vector_top``): LayerNorm, softmax, the GELU / ReLU table, the residual
    add, the head's int16 -> int8 requantisation and the descriptor's L2 normalisation, selected by its
    ``op`` register. The softmax takes the rows' maxima from the host (the vector top's ``row_max32``:
    the int8 unit's comparator is not in its IP yet)."""

    ARGS = VECTOR_ARGS
    VLNV = VECTOR_VLNV

    def layernorm(self, ln, x) -> np.ndarray:
        x = np.asarray(x)
        t, d = x.shape
        self.start({"x16": x, "gain64": ln.gain, "bias64": ln.bias},
                   {"op": VECTOR_OPS["layernorm"], "t": t, "d": d, "eps_q": int(ln.eps_q)}, "y8", t * d)
        return self.wait().reshape(t, d)

    def softmax(self, scores, mult: int, shift: int) -> np.ndarray:
        s = np.asarray(scores)
        rows, n = s.shape
        self.start({"s32": s, "row_max32": s.max(axis=1)},
                   {"op": VECTOR_OPS["softmax"], "t": rows, "d": n, "mult": mult, "shift": shift}, "p8", rows * n)
        return self.wait().reshape(rows, n)

    def gelu(self, table, x) -> np.ndarray:
        x = np.asarray(x)
        self.start({"x8": x.reshape(-1), "table8": table}, {"op": VECTOR_OPS["gelu"], "t": 1, "d": x.size},
                   "y8", x.size)
        return self.wait().reshape(x.shape)

    def add(self, x, y, mult, shift) -> np.ndarray:
        x = np.asarray(x)
        t, d = x.shape
        self.start({"x16": x, "x8": y, "mult32": np.asarray(mult, np.int64).astype(np.int32),
                    "shift32": np.asarray(shift, np.int64).astype(np.int32)},
                   {"op": VECTOR_OPS["add"], "t": t, "d": d}, "out16", t * d)
        return self.wait().reshape(t, d)

    def requant(self, x, mult: int, shift: int) -> np.ndarray:
        """int16 ``x`` -> int8 ``sat8((x * mult + 2**(shift-1)) >> shift)`` (one multiplier)."""
        x = np.asarray(x)
        if not (0 <= int(mult) < 2 ** 31 and 1 <= int(shift) <= 62):
            raise ValueError(f"vector unit requant: mult must be in [0, 2^31) and shift in [1, 62], got {mult}, {shift}")
        self.start({"x16": x.reshape(-1)}, {"op": VECTOR_OPS["requant"], "t": 1, "d": x.size, "mult": int(mult),
                                            "shift": int(shift)}, "y8", x.size)
        return self.wait().reshape(x.shape)

    def topk_schedule(self, x, keep: int, *, simd: int, banks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """int8 ``x[M, K]`` -> the act stream (``tok_chunks`` uint16 [M], ``pairs`` uint32) of the ternary IP
        of ``simd`` lanes and ``banks`` banks the vector IP was built for (``TATVPR_TOPK_SIMD`` /
        ``TATVPR_TOPK_BANKS``): the ``keep`` largest ``|x|`` of every row, ties to the lower index,
        bank-scheduled (``schedule_activations(topk_int(x, s), simd, banks)``, op ``topk``)."""
        x = np.asarray(x)
        if x.ndim != 2 or x.dtype != np.int8 or x.size == 0:
            raise ValueError(f"vector unit topk: int8 [M, K] input, got {x.dtype} {x.shape}")
        m, k = x.shape
        b = int(banks or simd)
        q = simd // b
        gmax = max(1, -(-(-(-k // b)) // q))
        self._stage("pairs32", m * gmax * simd)  # the most the stream can take: the IP writes sum(chunks) * SIMD
        self.start({"x8": x.reshape(-1)}, {"op": VECTOR_OPS["topk"], "t": m, "d": k, "keep": int(keep)},
                   "chunks16", m)
        chunks = self.wait().astype(np.uint16)
        words = int(chunks.astype(np.int64).sum()) * simd
        if chunks.min() < 1 or words > self.buffers["pairs32"].shape[0]:
            raise IPError(f"vector unit topk: chunk counts {chunks.tolist()[:8]}... do not fit the stream buffer: "
                          f"is the IP built for SIMD {simd}, {b} banks, K >= {k}?")
        buf = self.buffers["pairs32"]
        buf.sync_from_device()
        return chunks, np.array(buf[:words], dtype=np.uint32)

    def topk_dense(self, x, keep: int) -> np.ndarray:
        """int8 ``x[M, K]`` -> the ``keep`` largest ``|x|`` of every row in place (``topk_int``; op ``topk_dense``)."""
        x = np.asarray(x)
        m, k = x.shape
        self.start({"x8": x.reshape(-1)}, {"op": VECTOR_OPS["topk_dense"], "t": m, "d": k, "keep": int(keep)},
                   "y8", m * k)
        return self.wait().reshape(m, k)

    CHAIN_OP = 11  # TATVPR_V_CHAIN in tatvpr_units_top.cpp (schedule.vector_chain: fused)
    CHAIN_FLAGS = {"add": 1, "layernorm": 2, "gelu": 4, "topk": 8, "topk_dense": 16, "write_res": 32}

    def chain(self, *, x16=None, x8=None, add=None, ln=None, gelu_table=None, keep: int | None = None,
              stream: bool = True, simd: int | None = None, banks: int | None = None,
              write_res: bool = False) -> tuple:
        """One call of the chained row op (``tatvpr_chain``, schedule.vector_chain: fused) on ``[T, D]`` rows:
        ``add = (mult, shift)``: the residual add ``x16 + requant(x8)`` first (``write_res``: its int16
        output written back, the residual stream a later add reads); then ``ln`` of it (or of ``x16``), or
        ``gelu_table`` of ``x8``; then with ``keep`` the next linear's top-k: the act stream of the ternary
        IP of ``simd`` lanes / ``banks`` banks the vector IP was built for (``stream``), or the kept values
        in place. Returns ``(residual int16 [T, D] | None, out)``, ``out`` the ``(tok_chunks, pairs)`` stream
        or int8 ``[T, D]`` (``tatvpr_pynq.integer.Units.vector_chain``'s integers)."""
        ref = np.asarray(x8 if gelu_table is not None else x16)
        if (ln is None) == (gelu_table is None) or (add is not None and ln is None) or (write_res and add is None):
            raise ValueError("vector unit chain: [add ->] LayerNorm | GELU [-> top-k]; write_res needs the add")
        if ref.ndim != 2 or ref.size == 0:
            raise ValueError(f"vector unit chain: [T, D] rows, got {ref.shape}")
        t, d = ref.shape
        f = self.CHAIN_FLAGS
        topk = keep is not None and stream
        flags = ((f["add"] if add is not None else 0) | (f["layernorm"] if ln is not None else 0)
                 | (f["gelu"] if gelu_table is not None else 0) | (f["write_res"] if write_res else 0)
                 | (0 if keep is None else f["topk" if stream else "topk_dense"]))
        arrays = {}
        if x16 is not None and (add is not None or ln is not None):
            arrays["x16"] = np.asarray(x16).reshape(-1)
        if x8 is not None and (add is not None or gelu_table is not None):
            arrays["x8"] = np.asarray(x8).reshape(-1)
        if add is not None:
            arrays["mult32"] = np.asarray(add[0], np.int64).astype(np.int32)
            arrays["shift32"] = np.asarray(add[1], np.int64).astype(np.int32)
        if ln is not None:
            arrays["gain64"], arrays["bias64"] = ln.gain, ln.bias
        if gelu_table is not None:
            arrays["table8"] = gelu_table
        if write_res:
            self._stage("out16", t * d)
        if topk:
            if simd is None:
                raise ValueError("vector unit chain: the act stream needs the ternary IP's simd")
            b = int(banks or simd)
            self._stage("pairs32", t * max(1, -(-(-(-d // b)) // (simd // b))) * simd)
            out, size = "chunks16", t
        else:
            out, size = "y8", t * d
        self.start(arrays, {"op": self.CHAIN_OP, "t": t, "d": d, "shift": flags, "keep": int(keep or 0),
                            "eps_q": int(ln.eps_q) if ln is not None else 0}, out, size)
        got = self.wait()
        res = None
        if write_res:
            buf = self.buffers["out16"]
            buf.sync_from_device()
            res = np.array(buf[:t * d], dtype=np.int16).reshape(t, d)
        if not topk:
            return res, got.reshape(t, d)
        chunks = got.astype(np.uint16)
        words = int(chunks.astype(np.int64).sum()) * simd
        if chunks.min() < 1 or words > self.buffers["pairs32"].shape[0]:
            raise IPError(f"vector unit chain: chunk counts {chunks.tolist()[:8]}... do not fit the stream buffer: "
                          f"is the IP built for SIMD {simd}, K >= {d}?")
        buf = self.buffers["pairs32"]
        buf.sync_from_device()
        return res, (chunks, np.array(buf[:words], dtype=np.uint32))

    def l2norm(self, x) -> np.ndarray:
        """int16 vector ``x`` -> ``x / ||x||`` in Q15 (int16); at most
        :data:`tatvpr_pynq.integer.L2NORM_MAX_N` elements."""
        from .integer import L2NORM_MAX_N

        x = np.asarray(x).reshape(-1)
        if not 1 <= x.size <= L2NORM_MAX_N:
            raise ValueError(f"vector unit l2norm: {x.size} elements; the IP normalises 1 to {L2NORM_MAX_N}")
        self.start({"x16": x}, {"op": VECTOR_OPS["l2norm"], "t": 1, "d": x.size}, "out16", x.size)
        return self.wait()


_UNIT_DRIVER_CLASSES: dict[tuple[int, str], type] = {}


def unit_driver_class(pynq_module, unit: str) -> type:
    """``Int8UnitDriver`` / ``VectorUnitDriver``: ``pynq_module.DefaultIP`` subclasses bound to
    :data:`INT8_VLNV` / :data:`VECTOR_VLNV` (as :func:`ip_driver_class` for the ternary IP)."""
    key = (id(pynq_module), unit)
    if key in _UNIT_DRIVER_CLASSES:
        return _UNIT_DRIVER_CLASSES[key]
    core_cls = {"int8": Int8UnitIP, "vector": VectorUnitIP}[unit]

    class UnitDriver(pynq_module.DefaultIP):
        bindto = [core_cls.VLNV]

        def __init__(self, description):
            super().__init__(description)
            self.description_registers = description.get("registers") or None
            self.core = None

        def register_offsets(self) -> dict[str, int] | None:
            return unit_offsets_from_registers(self.description_registers, core_cls.ARGS, core_cls.VLNV)

        def configure(self, allocate: Callable, offsets: dict[str, int]):
            self.core = core_cls(self, allocate, offsets=offsets)
            return self.core

    UnitDriver.__name__ = UnitDriver.__qualname__ = {"int8": "Int8UnitDriver", "vector": "VectorUnitDriver"}[unit]
    _UNIT_DRIVER_CLASSES[key] = UnitDriver
    return UnitDriver


if _pynq is not None and hasattr(_pynq, "DefaultIP"):
    Int8UnitDriver = unit_driver_class(_pynq, "int8")
    VectorUnitDriver = unit_driver_class(_pynq, "vector")


def bind_unit(overlay, pynq_module, unit: str, bitfile: Path):
    """The ``unit`` IP of ``overlay`` configured (``Int8UnitIP`` / ``VectorUnitIP``), with its register
    offsets from the ``.hwh`` (PYNQ's parse, else this module's, else the Vitis HLS default layout with a
    warning); ``(None, None)`` when the bitstream has no such IP (an overlay built before the units)."""
    name = UNIT_INSTANCES[unit]
    if name not in getattr(overlay, "ip_dict", {}):
        return None, None
    cls = unit_driver_class(pynq_module, unit)
    ip = getattr(overlay, name)
    if not isinstance(ip, cls):
        vlnv = overlay.ip_dict[name].get("type", "unknown")
        raise IPError(f"{name} in {bitfile.name} is driven by {type(ip).__name__}, not {cls.__name__}: its VLNV "
                      f"in the .hwh is {vlnv}, this driver binds {cls.bindto[0]}")
    args = {"int8": INT8_ARGS, "vector": VECTOR_ARGS}[unit]
    offsets, source = ip.register_offsets(), "hwh (pynq)"
    hwh = bitfile.with_suffix(".hwh")
    if offsets is None and hwh.is_file():
        offsets, source = unit_offsets_from_registers(registers_from_hwh(hwh.read_text(), name), args,
                                                      cls.bindto[0]), "hwh"
    if offsets is None:
        warnings.warn(f"no register map for {name} in {hwh.name}: using the Vitis HLS default offsets", stacklevel=3)
        offsets, source = unit_default_offsets(args), "default"
    return ip.configure(pynq_module.allocate, offsets), source
