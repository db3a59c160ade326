"""SALAD aggregation head (Sinkhorn Algorithm for Locally Aggregated Descriptors).

Izquierdo, Civera: "Optimal Transport Aggregation for Visual Place Recognition", CVPR 2024.

Each patch token gets a ``cluster_dim`` feature and ``num_clusters`` assignment scores; an
entropic optimal-transport problem with a learned dustbin (solved by a few log-space Sinkhorn
iterations) turns the scores into soft assignments, features are summed per cluster and
normalised per cluster, and a ``token_dim`` global token made from the class token is put in
front: descriptor_dim = num_clusters * cluster_dim + token_dim (DINOv2-SALAD: 64*128+256 = 8448).

Parameter names follow the authors' release (``token_features``, ``cluster_features``,
``score``, ``dust_bin``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from brevitas_models.heads.base import AggregationHead
from brevitas_models.errors import ModelInputError


def sinkhorn_log_transport(scores: torch.Tensor, dustbin: torch.Tensor, iters: int) -> torch.Tensor:
    """Log transport plan of ``scores [B, m, n]`` plus one dustbin row (score ``dustbin``).

    Row marginals: 1/(m+n) for each of the m clusters and (n-m)/(m+n) for the dustbin; column
    marginals 1/(m+n) for each of the n tokens. Returns log P * (m+n), shape [B, m+1, n]
    (the dustbin row last), so exp() gives each token a total mass of 1.
    """
    b, m, n = scores.shape
    if n < m:
        raise ModelInputError(f"salad: {n} patch tokens are fewer than the {m} clusters; "
                        f"use a larger image or fewer clusters")
    z = torch.cat([scores, dustbin.reshape(1, 1, 1).expand(b, 1, n).to(scores)], dim=1)
    log_norm = -math.log(m + n)
    log_mu = torch.full((m + 1,), log_norm, dtype=scores.dtype, device=scores.device)
    log_mu[m] = math.log(n - m) + log_norm if n > m else -math.inf
    log_nu = torch.full((n,), log_norm, dtype=scores.dtype, device=scores.device)
    u = torch.zeros(b, m + 1, dtype=scores.dtype, device=scores.device)
    v = torch.zeros(b, n, dtype=scores.dtype, device=scores.device)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(z + v[:, None, :], dim=2)
        v = log_nu - torch.logsumexp(z + u[:, :, None], dim=1)
    return z + u[:, :, None] + v[:, None, :] - log_norm


class SALADHead(AggregationHead):
    """SALAD head: class token -> global token, patch tokens -> optimal-transport clusters.

    Args:
        in_dim: backbone token width D.
        num_clusters: clusters m.
        cluster_dim: per-cluster feature width l.
        token_dim: global-token width g.
        hidden_dim: width of the two-layer MLPs (512 in the release).
        dropout: dropout inside the local-feature and score MLPs.
        sinkhorn_iters: log-space Sinkhorn iterations (3 in the release).
    """

    needs_prefix_token = True

    def __init__(self, in_dim: int, num_clusters: int = 64, cluster_dim: int = 128,
                 token_dim: int = 256, hidden_dim: int = 512, dropout: float = 0.3,
                 sinkhorn_iters: int = 3) -> None:
        super().__init__()
        for name, v in (("in_dim", in_dim), ("num_clusters", num_clusters), ("cluster_dim", cluster_dim),
                        ("token_dim", token_dim), ("hidden_dim", hidden_dim), ("sinkhorn_iters", sinkhorn_iters)):
            if v < 1:
                raise ModelInputError(f"salad: {name} must be >= 1, got {v}")
        if not 0.0 <= dropout < 1.0:
            raise ModelInputError(f"salad: dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.num_clusters = num_clusters
        self.cluster_dim = cluster_dim
        self.sinkhorn_iters = sinkhorn_iters
        self.descriptor_dim = num_clusters * cluster_dim + token_dim
        drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.token_features = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, token_dim))
        self.cluster_features = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, 1), drop, nn.ReLU(), nn.Conv2d(hidden_dim, cluster_dim, 1))
        self.score = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, 1), drop, nn.ReLU(), nn.Conv2d(hidden_dim, num_clusters, 1))
        self.dust_bin = nn.Parameter(torch.tensor(1.0))

    def aggregate(self, prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        f = self.cluster_features(patches).flatten(2)                 # [B, l, n]
        s = self.score(patches).flatten(2)                            # [B, m, n]
        g = self.token_features(prefix[:, 0])                         # [B, g]
        p = sinkhorn_log_transport(s, self.dust_bin, self.sinkhorn_iters).exp()[:, :-1]  # [B, m, n]
        v = torch.einsum("bln,bmn->blm", f, p)                        # [B, l, m]
        v = nn.functional.normalize(v, p=2, dim=1).flatten(1)         # per-cluster L2, l-major
        return torch.cat([nn.functional.normalize(g, p=2, dim=-1), v], dim=-1)
