"""Multiply-accumulate (MAC) counts per query, from the real input sizes and the real nonzeros.

One forward pass of ``images`` at sparsity ``s`` with forward hooks on every layer that
multiplies. Per query (batch average), MACs are counted as:

- ternary linear (:class:`~brevitas_models.quant.SparseTernaryLinear`), input rows ``x_m``
  (``M`` = tokens, ``K`` channels) as the int8 codes it really sees (after top-k AND int8
  rounding, so a kept value that rounds to 0 is a zero), ternary weights ``w_n`` (``N`` rows):
    * ``dense``  = ``M * K * N``
    * ``act``    = ``nnz(X) * N``: activation zero-skipping (what the top-k knob saves; the
      accelerator's ``act`` mode). **This is ``effective_macs`` / ``gmacs``.**
    * ``weight`` = ``M * nnz(W)``: weight zero-skipping only.
    * ``both``   = ``sum_m sum_n |nz(x_m) ∩ nz(w_n)|`` = ``sum_k nnz(X[:, k]) * nnz(W[:, k])``:
      a pair is skipped when either operand is zero (reported as ``effective_macs_both``).
  Ternary "MACs" are additions/subtractions (no multiplier).
- attention matmuls (timm ``Attention``: ``Q K^T`` and ``A V``, ``2 * T^2 * D`` per image;
  ``nn.MultiheadAttention``: its in/out projections + the two matmuls), every float
  ``nn.Linear`` / ``nn.Conv2d`` (patch embedding, heads, non-ternary layers): dense.
- Not counted: elementwise work (norms, softmax, GELU, adds) and matmuls a head does with
  bare tensor ops (e.g. SALAD's Sinkhorn iterations); the counts are of MAC layers only.
- A ternary linear whose input quantizer is off (``model.ternary.act_quant: false``, the
  Sparse-TeTRA reference) counts the nonzeros of its float top-k output instead of int8 codes.

The authors' convention (Sparse-TeTRA ``evaluate.py`` ``_compute_flops``), :func:`authors_flops`:
``torch.profiler`` with ``with_flops=True`` over one forward pass of ONE image at sparsity ``s``;
every profiler event whose name contains ``linear`` or ``addmm`` counts ``flops * (1 - s)``,
every other event (``aten::mm``, ``aten::bmm``, ``aten::conv2d``, ``aten::mul``, ``aten::add``)
its full ``flops``. FLOPs there are the profiler's (2 per multiply-accumulate of a matmul, 1 per
elementwise mul/add). It assumes every ``addmm`` sees exactly a (1 - s) fraction of nonzero
inputs, whether or not it is sparsified (a float head or dense FFN is scaled too; a bias-free
sparsified linear, which runs as ``aten::mm``, is not). See docs/recipe.md.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from brevitas_models.quant import SparseTernaryLinear
from brevitas_models.sparsity import set_sparsity, sparsity_modules

log = logging.getLogger(__name__)


def _timm_attention_cls():
    from timm.models.vision_transformer import Attention

    return Attention


class _Counter:
    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.layers: "OrderedDict[str, dict[str, Any]]" = OrderedDict()

    def add(self, name: str, kind: str, **macs: int) -> None:
        rec = self.layers.setdefault(name, {"name": name, "kind": kind})
        for k, v in macs.items():
            rec[k] = rec.get(k, 0) + int(v)


def _ternary_hook(counter: _Counter, name: str):
    def hook(mod: SparseTernaryLinear, args):
        x = args[0]
        if getattr(mod.linear.input_quant, "disable_quant", False):  # float inputs (no act quant)
            q = mod.sparsity(x).reshape(-1, mod.in_features)
        else:
            q = mod.quantize_input(x).reshape(-1, mod.in_features)  # int codes after top-k
        codes, _ = mod.ternary_weight()
        xnz = (q != 0)
        wnz = (codes != 0)
        m, k = q.shape
        n = codes.shape[0]
        counter.add(name, "ternary", m=m, k=k, n=n,
                    dense=m * k * n,
                    act=int(xnz.sum()) * n,
                    weight=m * int(wnz.sum()),
                    both=int((xnz.sum(0).to(torch.int64) * wnz.sum(0).to(torch.int64)).sum()),
                    act_nnz=int(xnz.sum()), act_elems=m * k,
                    weight_nnz=int(wnz.sum()), weight_elems=n * k)
        return None
    return hook


def _linear_hook(counter: _Counter, name: str):
    def hook(mod: nn.Linear, args, out):
        m = args[0].numel() // mod.in_features
        macs = m * mod.in_features * mod.out_features
        counter.add(name, "linear", dense=macs, act=macs, weight=macs, both=macs)
    return hook


def _conv_hook(counter: _Counter, name: str):
    def hook(mod: nn.Conv2d, args, out):
        k = (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        macs = out.numel() * k
        counter.add(name, "conv", dense=macs, act=macs, weight=macs, both=macs)
    return hook


def _attn_hook(counter: _Counter, name: str):
    def hook(mod, args, out):
        x = args[0]  # [B, T, D]
        b, t, d = x.shape
        macs = 2 * b * t * t * d  # Q K^T and A V over all heads
        counter.add(name + ".matmul", "attention", dense=macs, act=macs, weight=macs, both=macs)
    return hook


def _mha_hook(counter: _Counter, name: str):
    def hook(mod: nn.MultiheadAttention, args, kwargs, out):
        q = args[0] if args else kwargs["query"]
        k = args[1] if len(args) > 1 else kwargs["key"]
        e = mod.embed_dim
        if q.dim() == 2:  # unbatched [L, E]
            bq, lq, lk = 1, q.shape[0], k.shape[0]
        elif mod.batch_first:
            bq, lq, lk = q.shape[0], q.shape[1], k.shape[1]
        else:
            bq, lq, lk = q.shape[1], q.shape[0], k.shape[0]
        kd = mod.kdim
        vd = mod.vdim
        proj = bq * (lq * e * e + lk * kd * e + lk * vd * e + lq * e * e)
        mat = 2 * bq * lq * lk * e
        counter.add(name + ".proj", "linear", dense=proj, act=proj, weight=proj, both=proj)
        counter.add(name + ".matmul", "attention", dense=mat, act=mat, weight=mat, both=mat)
    return hook


@torch.no_grad()
def count_ops(model: nn.Module, images: torch.Tensor, sparsity: float | None = None, *,
              per_layer: bool = False) -> dict[str, Any]:
    """MACs per query of ``model(images)`` at ``sparsity`` (``None``: the model's current one).

    Returns ``{"sparsity", "gmacs" (= effective_macs / 1e9), "dense_macs", "effective_macs",
    "effective_macs_weight", "effective_macs_both", "ternary_dense_macs", "ternary_act_macs",
    "attention_macs", "other_macs", "act_density", "weight_density", "batch"}`` (all MACs per
    query) and, with ``per_layer``, a ``"layers"`` list. The model's previous sparsity and
    train/eval mode are restored.
    """
    mods = sparsity_modules(model)
    old = [m.sparsity for m in mods]
    if sparsity is not None:
        set_sparsity(model, sparsity)
    batch = int(images.shape[0])
    counter = _Counter(batch)
    attn_cls = _timm_attention_cls()
    inside_ternary: set[int] = set()
    for _, m in model.named_modules():
        if isinstance(m, SparseTernaryLinear):
            inside_ternary.update(id(x) for x in m.modules())
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, SparseTernaryLinear):
            hooks.append(m.register_forward_pre_hook(_ternary_hook(counter, name)))
        elif id(m) in inside_ternary:
            continue
        elif isinstance(m, nn.MultiheadAttention):
            hooks.append(m.register_forward_hook(_mha_hook(counter, name), with_kwargs=True))
        elif isinstance(m, nn.Linear) and not _inside_mha(model, name):
            hooks.append(m.register_forward_hook(_linear_hook(counter, name)))
        elif isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(_conv_hook(counter, name)))
        elif isinstance(m, attn_cls):
            hooks.append(m.register_forward_hook(_attn_hook(counter, name)))
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
        for m, v in zip(mods, old):
            m.sparsity = v
        model.train(was_training)
    layers = list(counter.layers.values())

    def total(key: str, kinds: Iterable[str] | None = None) -> int:
        return sum(r[key] for r in layers if kinds is None or r["kind"] in kinds)

    tern = [r for r in layers if r["kind"] == "ternary"]
    act_elems = sum(r["act_elems"] for r in tern)
    w_elems = sum(r["weight_elems"] for r in tern)
    per_q = lambda v: v / batch  # noqa: E731
    out: dict[str, Any] = {
        "sparsity": float(sparsity if sparsity is not None else (old[0] if old else 0.0)),
        "gmacs": per_q(total("act")) / 1e9,
        "dense_macs": per_q(total("dense")),
        "effective_macs": per_q(total("act")),
        "effective_macs_weight": per_q(total("weight")),
        "effective_macs_both": per_q(total("both")),
        "ternary_dense_macs": per_q(total("dense", ["ternary"])),
        "ternary_act_macs": per_q(total("act", ["ternary"])),
        "ternary_both_macs": per_q(total("both", ["ternary"])),
        "attention_macs": per_q(total("dense", ["attention"])),
        "other_macs": per_q(total("dense", ["linear", "conv"])),
        "act_density": (sum(r["act_nnz"] for r in tern) / act_elems) if act_elems else 1.0,
        "weight_density": (sum(r["weight_nnz"] for r in tern) / w_elems) if w_elems else 1.0,
        "ternary_layers": len(tern),
        "batch": batch,
        "image_hw": [int(images.shape[-2]), int(images.shape[-1])],
    }
    if per_layer:
        out["layers"] = [{k: (per_q(v) if k in ("dense", "act", "weight", "both") else v)
                          for k, v in r.items()} for r in layers]
    return out


def _inside_mha(model: nn.Module, name: str) -> bool:
    parent = name.rpartition(".")[0]
    return bool(parent) and isinstance(model.get_submodule(parent), nn.MultiheadAttention)


def seeded_images(batch: int, img_size: int, seed: int) -> torch.Tensor:
    """Deterministic ImageNet-normalised-like inputs: N(0, 1) pixels from ``seed``, smoothed
    with a 5x5 box filter (a little spatial structure, like images) and re-standardised."""
    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn(batch, 3, img_size, img_size, generator=g)
    x = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    return (x - x.mean()) / x.std()


def sweep(model: nn.Module, images: torch.Tensor, sparsities: Iterable[float],
          **kwargs) -> list[dict[str, Any]]:
    """:func:`count_ops` at each sparsity, with the reduction vs the dense count."""
    rows = []
    for s in sparsities:
        r = count_ops(model, images, s, **kwargs)
        r["reduction_vs_dense"] = 1.0 - r["effective_macs"] / r["dense_macs"]
        rows.append(r)
    return rows


def _profile_events(model: nn.Module, image: torch.Tensor) -> list[tuple[str, int]]:
    """``(name, flops)`` of every ``torch.profiler`` event of one no-grad forward pass.

    timm's fused attention (``scaled_dot_product_attention``) has no profiler FLOP formula, so it
    is switched to its explicit ``q @ k^T`` / ``attn @ v`` path for the pass (the reference ViT
    computes attention with ``torch.matmul``, which the profiler counts).
    """
    attn_cls = _timm_attention_cls()
    fused = [(m, m.fused_attn) for m in model.modules() if isinstance(m, attn_cls)]
    try:
        for m, _ in fused:
            m.fused_attn = False
        with torch.no_grad():
            model(image)  # warm-up, as the reference
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                        record_shapes=True, with_flops=True) as prof:
                model(image)
    finally:
        for m, v in fused:
            m.fused_attn = v
    return [(e.key, int(e.flops)) for e in prof.key_averages() if e.flops]


def authors_rule(events: Iterable[tuple[str, int]], sparsity: float) -> dict[str, float]:
    """The reference's sum over profiler events: ``linear``/``addmm`` events x (1 - s), others 1x."""
    scaled = sum(f for k, f in events if "linear" in k.lower() or "addmm" in k.lower())
    other = sum(f for k, f in events if not ("linear" in k.lower() or "addmm" in k.lower()))
    return {"authors_flops": scaled * (1.0 - sparsity) + other, "authors_flops_addmm": float(scaled),
            "authors_flops_other": float(other)}


@torch.no_grad()
def authors_flops(model: nn.Module, images: torch.Tensor, sparsity: float) -> dict[str, float]:
    """FLOPs per query by the Sparse-TeTRA convention (module docstring): the first image of
    ``images``, the model run at ``sparsity``. The model's sparsity and mode are restored."""
    mods = sparsity_modules(model)
    old = [m.sparsity for m in mods]
    was_training = model.training
    set_sparsity(model, sparsity)
    model.eval()
    try:
        events = _profile_events(model, images[:1])
    finally:
        for m, v in zip(mods, old):
            m.sparsity = v
        model.train(was_training)
    return authors_rule(events, float(sparsity))


def add_authors_flops(model: nn.Module, images: torch.Tensor, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``authors_flops`` (+ its parts) and ``authors_reduction_vs_s0`` (1 - FLOPs(s) /
    FLOPs(0), as the paper's "-28 % at s = 0.4") to each :func:`count_ops` record, in place.
    Also adds ``reduction_vs_s0`` = 1 - effective_macs(s) / effective_macs(0) (the project's
    count, same baseline)."""
    base_rows = [r for r in rows if r["sparsity"] == 0.0]
    base = base_rows[0]["effective_macs"] if base_rows else count_ops(model, images, 0.0)["effective_macs"]
    base_authors = None
    for r in rows:
        r.update(authors_flops(model, images, r["sparsity"]))
        if r["sparsity"] == 0.0:
            base_authors = r["authors_flops"]
    if base_authors is None:
        base_authors = authors_flops(model, images, 0.0)["authors_flops"]
    for r in rows:
        r["authors_reduction_vs_s0"] = 1.0 - r["authors_flops"] / base_authors
        r["reduction_vs_s0"] = 1.0 - r["effective_macs"] / base
    return rows
