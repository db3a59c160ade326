"""Aggregation heads in numpy (float64) for the board's ARM cores: trunk tokens -> descriptor.

The float heads: the runtime's head for bundles without an integer head, and a reference for the
integer heads (``tatvpr_pynq.integer.HeadQ``; SALAD's Sinkhorn part, :func:`salad_aggregate`, is
also the integer SALAD's host part). Each head is a plain dict of float arrays loaded from ``head.npz``
(``allow_pickle=False``), written by ``tatvpr_hw.lower.hls.bundle`` from the float student's PyTorch
head, and computes what that head computes (``brevitas_models/heads``): BoQ, CLS, MixVPR and
SALAD.
"""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np

HEAD_KINDS = ("boq", "cls", "mixvpr", "salad")


class HeadError(ValueError):
    """A head file or input the numpy head cannot run."""


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``F.normalize(x, p=2, dim=axis)`` in float64: ``x / max(||x||, 1e-12)`` along ``axis``; the float
    descriptor's normalisation (the integer descriptor's is ``tatvpr_pynq.integer.l2norm_int``, Q15)."""
    x = np.asarray(x, np.float64)
    norm = np.linalg.norm(x) if x.ndim == 1 else np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x [C, h, w]``, ``w [O, C, 3, 3]`` -> ``[O, h, w]`` (stride 1, zero padding 1)."""
    c, h, wd = x.shape
    xp = np.zeros((c, h + 2, wd + 2), x.dtype)
    xp[:, 1:-1, 1:-1] = x
    cols = np.stack([xp[:, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=1)  # [C, 9, h, w]
    out = w.reshape(w.shape[0], c * 9) @ cols.reshape(c * 9, h * wd)  # BLAS, not einsum's loops
    return out.reshape(w.shape[0], h, wd) + b[:, None, None]


def mha(q_in: np.ndarray, kv_in: np.ndarray, p: dict, pre: str, heads: int) -> np.ndarray:
    """``nn.MultiheadAttention(q_in, kv_in, kv_in)`` (batch_first, one sample [L, E])."""
    e = q_in.shape[-1]
    w, b = p[pre + "in_proj_weight"], p[pre + "in_proj_bias"]
    q = q_in @ w[:e].T + b[:e]
    k = kv_in @ w[e:2 * e].T + b[e:2 * e]
    v = kv_in @ w[2 * e:].T + b[2 * e:]
    hd = e // heads
    split = lambda t: t.reshape(t.shape[0], heads, hd).transpose(1, 0, 2)  # noqa: E731
    a = softmax(split(q) @ split(k).transpose(0, 2, 1) / math.sqrt(hd)) @ split(v)
    return a.transpose(1, 0, 2).reshape(q_in.shape[0], e) @ p[pre + "out_proj.weight"].T + p[pre + "out_proj.bias"]


def encoder_layer(x: np.ndarray, p: dict, pre: str, heads: int) -> np.ndarray:
    """``nn.TransformerEncoderLayer`` post-norm, ReLU feed-forward, no dropout."""
    eps = float(p["ln_eps"])
    x = layer_norm(x + mha(x, x, p, pre + "self_attn.", heads), p[pre + "norm1.weight"], p[pre + "norm1.bias"], eps)
    f = np.maximum(x @ p[pre + "linear1.weight"].T + p[pre + "linear1.bias"], 0.0)
    f = f @ p[pre + "linear2.weight"].T + p[pre + "linear2.bias"]
    return layer_norm(x + f, p[pre + "norm2.weight"], p[pre + "norm2.bias"], eps)


def boq(prefix: np.ndarray, patches: np.ndarray, p: dict) -> np.ndarray:
    """BoQ on one image: ``patches [D, h, w]`` -> unnormalised descriptor [P * row_dim]."""
    eps = float(p["ln_eps"])
    heads = int(p["num_heads"])
    x = conv3x3(patches, p["proj_c.weight"], p["proj_c.bias"])
    x = layer_norm(x.reshape(x.shape[0], -1).T, p["norm_input.weight"], p["norm_input.bias"], eps)   # [N, P]
    outs = []
    for i in range(int(p["num_layers"])):
        pre = f"boqs.{i}."
        x = encoder_layer(x, p, pre + "encoder.", heads)
        q = p[pre + "queries"][0]
        q = layer_norm(q + mha(q, q, p, pre + "self_attn.", heads), p[pre + "norm_q.weight"],
                       p[pre + "norm_q.bias"], eps)
        outs.append(layer_norm(mha(q, x, p, pre + "cross_attn.", heads), p[pre + "norm_out.weight"],
                               p[pre + "norm_out.bias"], eps))
    q = np.concatenate(outs, axis=0)                                     # [L*Q, P]
    return (q.T @ p["fc.weight"].T + p["fc.bias"]).reshape(-1)           # [P * row_dim]


def cls(prefix: np.ndarray, patches: np.ndarray, p: dict) -> np.ndarray:
    if prefix.shape[0] < 1:
        raise HeadError("the CLS head needs a class token (num_prefix_tokens >= 1)")
    return prefix[0]


def mixvpr(prefix: np.ndarray, patches: np.ndarray, p: dict) -> np.ndarray:
    """MixVPR: feature mixers over the h*w axis, channel projection, row projection."""
    eps = float(p["ln_eps"])
    x = patches.reshape(patches.shape[0], -1)                                  # [C, hw]
    for i in range(int(p["mix_depth"])):
        pre = f"mix.{i}.mix."
        f = layer_norm(x, p[pre + "0.weight"], p[pre + "0.bias"], eps)
        f = np.maximum(f @ p[pre + "1.weight"].T + p[pre + "1.bias"], 0.0)
        x = x + f @ p[pre + "3.weight"].T + p[pre + "3.bias"]
    x = x.T @ p["channel_proj.weight"].T + p["channel_proj.bias"]             # [hw, out_c]
    return (x.T @ p["row_proj.weight"].T + p["row_proj.bias"]).reshape(-1)    # [out_c * out_rows]


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (m + np.log(np.exp(a - m).sum(axis, keepdims=True))).squeeze(axis)


def salad(prefix: np.ndarray, patches: np.ndarray, p: dict) -> np.ndarray:
    """SALAD: 1x1-conv cluster features and scores, log-space Sinkhorn with a dustbin row,
    per-cluster L2, plus the L2-normalised global token (brevitas_models/heads/salad.py)."""
    if prefix.shape[0] < 1:
        raise HeadError("the SALAD head needs a class token (num_prefix_tokens >= 1)")
    x = patches.reshape(patches.shape[0], -1)                                   # [D, n]

    def conv1(pre, t):
        w = p[pre + ".weight"]
        return w.reshape(w.shape[0], -1) @ t + p[pre + ".bias"][:, None]

    f = conv1("cluster_features.3", np.maximum(conv1("cluster_features.0", x), 0.0))   # [l, n]
    sc = conv1("score.3", np.maximum(conv1("score.0", x), 0.0))                        # [m, n]
    g = np.maximum(prefix[0] @ p["token_features.0.weight"].T + p["token_features.0.bias"], 0.0)
    g = g @ p["token_features.2.weight"].T + p["token_features.2.bias"]
    return salad_aggregate(f, sc, g, float(p["dust_bin"]), int(p["sinkhorn_iters"]))


def salad_aggregate(f: np.ndarray, sc: np.ndarray, g: np.ndarray, dust_bin: float, iters: int) -> np.ndarray:
    """SALAD after its MLPs (float64): cluster features ``f [l, n]``, scores ``sc [m, n]``, global
    token ``g`` -> log-space Sinkhorn, aggregation, per-cluster L2 and the normalised global token
    (unnormalised as a whole). The integer model's SALAD runs this part on the host."""
    m, n = sc.shape
    if n < m:
        raise HeadError(f"salad: {n} patch tokens are fewer than the {m} clusters")
    z = np.concatenate([sc, np.full((1, n), float(dust_bin))], axis=0)
    log_norm = -math.log(m + n)
    log_mu = np.full(m + 1, log_norm)
    log_mu[m] = math.log(n - m) + log_norm if n > m else -np.inf
    log_nu = np.full(n, log_norm)
    u, v = np.zeros(m + 1), np.zeros(n)
    for _ in range(int(iters)):
        u = log_mu - _logsumexp(z + v[None, :], 1)
        v = log_nu - _logsumexp(z + u[:, None], 0)
    plan = np.exp(z + u[:, None] + v[None, :] - log_norm)[:-1]                  # [m, n]
    agg = f @ plan.T                                                            # [l, m]
    return np.concatenate([l2_normalize(g), l2_normalize(agg, axis=0).reshape(-1)])


_AGG = {"boq": boq, "cls": cls, "mixvpr": mixvpr, "salad": salad}


def head_descriptor(tokens: np.ndarray, head: dict) -> np.ndarray:
    """Float tokens ``[P + h*w, D]`` (timm order) -> L2-normalised float64 descriptor."""
    kind = str(head["kind"])
    if kind not in _AGG:
        raise HeadError(f"head kind {kind!r} is not implemented in numpy; allowed: {', '.join(HEAD_KINDS)}")
    tokens = np.asarray(tokens, np.float64)
    n_pre = int(head["num_prefix_tokens"])
    gh, gw = (int(v) for v in head["grid_hw"])
    if tokens.ndim != 2 or tokens.shape[0] != n_pre + gh * gw:
        raise HeadError(f"head input must be [{n_pre} + {gh}*{gw}, D] tokens, got {tokens.shape}")
    patches = tokens[n_pre:].T.reshape(tokens.shape[1], gh, gw)
    return l2_normalize(_AGG[kind](tokens[:n_pre], patches, head))


def save_head(path, head: dict) -> None:
    arrays = {k: np.asarray(v) for k, v in head.items()}
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_head(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            head = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise HeadError(f"{path}: not a head file ({exc})") from exc
    for key in ("kind", "num_prefix_tokens", "grid_hw"):
        if key not in head:
            raise HeadError(f"{path}: head file lacks the array {key!r}")
    if str(head["kind"]) not in _AGG:
        raise HeadError(f"{path}: head kind {str(head['kind'])!r} is not implemented in numpy; "
                        f"allowed: {', '.join(HEAD_KINDS)}")
    return head
