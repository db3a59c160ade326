"""Build and run the IP's C simulation with g++ and the hls4ml-shipped ap_int headers.

    >>> kp = KernelParams(pe=8, simd=8)
    >>> exe = build_csim(kp, build_dir)                 # compiled once per parameter set
    >>> results = run_csim(exe, [layer], work_dir)      # one process for many layers

The binary is the real kernel source (``hls/src/tatvpr_gemm.cpp``) plus the testbench, built
with ``-DTATVPR_COUNT_CYCLES`` so that the kernel reports every step ``(f, b)``, its CHUNK-loop
iterations and the loads made for it (``CsimResult.steps``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.hls.formats import CsimResult, IPLayer, read_result_file, write_layer_file
from tatvpr_hw.lower.hls.paths import ap_types_dir, hls_dir

log = logging.getLogger(__name__)

_SOURCES = ("include/tatvpr_gemm.h", "src/tatvpr_gemm.cpp", "tb/tb_ternary_gemm.cpp")


@dataclass(frozen=True)
class KernelParams:
    """Compile-time parameters of the kernel (the ``-D`` macros of ``tatvpr_gemm.h``).

    Args:
        pe: output lanes (channels per fold).
        simd: input lanes (slots per chunk / cycle).
        banks: ``compute.gather.banks`` (B; None = simd): channel k in bank k mod B.
        ports: ``compute.gather.ports`` (P, 1 or 2); replicas R = simd / (B * P).
        halves: weight and activation buffer halves (2 with double buffering, else 1).
        kmax: K_max, the largest K (input channels) of a layer; a multiple of B.
        mmax: depth of the output buffer (PE int8 per word) = the most tokens of a token block.
        chunks_max: depth of the activation buffer, in chunks of SIMD slots (words of SIMD int8 in
            skip mode ``none``).
        skip_mode: ``act`` (the bank-scheduled stream) or ``none`` (dense int8 tokens,
            ``-DTATVPR_SKIP_NONE``).
    """

    pe: int = 8
    simd: int = 8
    banks: int | None = None
    ports: int = 1
    halves: int = 2
    kmax: int = 4096
    mmax: int = 1024
    chunks_max: int = 1 << 16
    skip_mode: str = "act"

    def __post_init__(self) -> None:
        if self.banks is None:
            object.__setattr__(self, "banks", self.simd)
        if self.skip_mode not in ("act", "none"):
            raise UserError(f"kernel parameter skip_mode = {self.skip_mode!r}: the IP builds 'act' or 'none'")
        for name, value in asdict(self).items():
            if name == "skip_mode":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"kernel parameter {name} must be a positive integer, got {value!r}")
        if self.simd % self.banks:
            raise UserError(f"kernel parameter banks = {self.banks} must divide simd = {self.simd}")
        if self.ports not in (1, 2) or self.simd % (self.banks * self.ports):
            raise UserError(f"kernel parameter ports = {self.ports}: allowed 1 or 2 with banks x ports "
                            f"({self.banks} x {self.ports}) dividing simd = {self.simd}")
        if self.banks < 2 and self.skip_mode == "act":
            raise UserError("kernel parameter banks = 1: the HLS IP needs at least 2 banks (an on-chip slot "
                            "keeps its token's last-chunk flag in the bank bits of its index); allowed: banks >= 2")
        if self.halves not in (1, 2):
            raise UserError(f"kernel parameter halves must be 1 or 2, got {self.halves}")
        if self.kmax % self.banks:
            raise UserError(f"kernel parameter kmax = {self.kmax} must be a multiple of banks = {self.banks}")
        if self.kmax > 65536:
            raise UserError(f"kernel parameter kmax must be <= 65536 (16-bit channel index), got {self.kmax}")

    @property
    def replicas(self) -> int:
        return self.simd // (self.banks * self.ports)

    @property
    def index_bits(self) -> int:
        """``I = ceil(log2 K_max)``."""
        return (self.kmax - 1).bit_length()

    def defines(self) -> list[str]:
        return [f"-DTATVPR_PE={self.pe}", f"-DTATVPR_SIMD={self.simd}", f"-DTATVPR_BANKS={self.banks}",
                f"-DTATVPR_PORTS={self.ports}", f"-DTATVPR_HALVES={self.halves}", f"-DTATVPR_KMAX={self.kmax}",
                f"-DTATVPR_MMAX={self.mmax}", f"-DTATVPR_CHUNKS_MAX={self.chunks_max}"] + \
            (["-DTATVPR_SKIP_NONE"] if self.skip_mode == "none" else [])

    def fits(self, layer: IPLayer) -> str | None:
        """Why ``layer`` does not fit this build, or None."""
        if (layer.pe, layer.simd, layer.banks, layer.ports) != (self.pe, self.simd, self.banks, self.ports):
            return (f"layer packed for PE={layer.pe} SIMD={layer.simd} B={layer.banks} P={layer.ports}, build is "
                    f"PE={self.pe} SIMD={self.simd} B={self.banks} P={self.ports}")
        if layer.skip_mode != self.skip_mode:
            return f"layer prepared for skip mode {layer.skip_mode!r}, build is {self.skip_mode!r}"
        if layer.k > self.kmax:
            return f"layer {layer.m}x{layer.k} exceeds kmax={self.kmax}"
        if layer.resident and layer.chunk_cycles_per_fold > self.chunks_max:
            return (f"resident layer needs {layer.chunk_cycles_per_fold} chunks, buffer holds {self.chunks_max} "
                    "(pass resident=False: token blocks of floor(chunks_max / halves) chunks)")
        cap = self.chunks_max if layer.resident else self.chunks_max // self.halves
        biggest = int(max(layer.tok_chunks, default=0))
        if biggest > cap:
            return f"one token takes {biggest} chunks, a block holds {cap}"
        return None


def compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        raise UserError("no C++ compiler found for the C simulation: install g++ or set CXX")
    return cxx


def compile_command(params: KernelParams, exe: Path) -> list[str]:
    root = hls_dir()
    return [compiler(), "-O2", "-std=c++14", "-Wno-unknown-pragmas", "-Wno-unused-label",
            "-DTATVPR_COUNT_CYCLES", *params.defines(), f"-I{root / 'include'}",
            f"-I{ap_types_dir()}", str(root / "src" / "tatvpr_gemm.cpp"),
            str(root / "tb" / "tb_ternary_gemm.cpp"), "-o", str(exe)]


def cached_build(build_dir: str | os.PathLike, stem: str, key: str, sources: tuple[str, ...],
                 command, what: str = "C simulation") -> Path:
    """Compile ``command(tmp_path)`` (a g++ argument list writing ``tmp_path``) into
    ``build_dir/<stem>_<hash>``, where the hash covers ``key`` and the ``sources`` under ``hls/``;
    an existing binary of that hash is reused. Written under a temporary name, then renamed."""
    root = hls_dir()
    h = hashlib.sha256(key.encode())
    for rel in sources:
        h.update((root / rel).read_bytes())
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    exe = build_dir / f"{stem}_{h.hexdigest()[:12]}"
    if exe.is_file():
        return exe
    tmp = exe.with_name(exe.name + f".tmp{os.getpid()}")
    cmd = command(tmp)
    log.info("compiling %s: %s", what, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{what} failed to compile ({cmd[0]} exit {proc.returncode}):\n" + proc.stderr[-4000:])
    os.replace(tmp, exe)
    return exe


def build_csim(params: KernelParams, build_dir: str | os.PathLike) -> Path:
    """Compile the C-simulation binary into ``build_dir`` (reused when sources are unchanged)."""
    return cached_build(build_dir, f"tb_ternary_gemm_{params.skip_mode}_pe{params.pe}_simd{params.simd}_b{params.banks}",
                        repr(params), _SOURCES, lambda tmp: compile_command(params, tmp))


def run_csim(exe: str | os.PathLike, layers: list[IPLayer], work_dir: str | os.PathLike,
             names: list[str] | None = None) -> list[CsimResult]:
    """Run the testbench on ``layers`` (one process); returns their results in order.

    A layer whose output differs from its ``expected`` is reported in the result's
    ``mismatches`` (the call does not raise); an unreadable file raises :class:`UserError`.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    names = names or [f"layer{i:03d}" for i in range(len(layers))]
    args: list[str] = []
    for name, layer in zip(names, layers):
        lp = write_layer_file(work_dir / f"{name}.layer.bin", layer)
        args += [str(lp), str(work_dir / f"{name}.result.bin")]
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise UserError(f"C simulation could not run ({exe}, exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    if proc.stderr:
        log.info("C simulation: %s", proc.stderr.strip()[-2000:])
    return [read_result_file(work_dir / f"{name}.result.bin") for name in names]
