"""Bag-of-Queries (BoQ) aggregation head.

Ali-bey, Chaib-draa, Giguere: "BoQ: A Place is Worth a Bag of Learnable Queries", CVPR 2024.

Patch tokens are projected by a 3x3 convolution and a LayerNorm, then pass through
``num_layers`` blocks; each block refines the tokens with a transformer encoder layer and lets
``num_queries`` learnable queries cross-attend to them. The query outputs of all blocks are
concatenated and a linear layer over the query axis reduces them to ``row_dim`` rows per
channel: descriptor_dim = proj_channels * row_dim (DINOv2-BoQ: 384 * 32 = 12288).

Module and parameter names follow the authors' release (``proj_c``, ``norm_input``,
``boqs.N.{encoder,queries,self_attn,norm_q,cross_attn,norm_out}``, ``fc``) so its
``aggregator.*`` weights load into this head unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from brevitas_models.heads.base import AggregationHead
from brevitas_models.errors import ModelInputError


class BoQBlock(nn.Module):
    """One BoQ layer: encoder layer over the tokens, learnable queries cross-attending to them.

    Args:
        dim: token width.
        num_queries: learnable queries of this block.
        num_heads: attention heads (dim must divide by it).
    """

    def __init__(self, dim: int, num_queries: int, num_heads: int) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(
            d_model=dim, nhead=num_heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True)
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim))
        # Self-attention among the queries: independent of the image, so its output could be
        # cached for inference; kept in the forward for training stability as in the paper.
        self.self_attn = nn.MultiheadAttention(dim, num_heads=num_heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads=num_heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, N, dim] -> (refined tokens [B, N, dim], query outputs [B, Q, dim], attn [B, Q, N])."""
        x = self.encoder(x)
        q = self.queries.expand(x.shape[0], -1, -1)
        q = self.norm_q(q + self.self_attn(q, q, q, need_weights=False)[0])
        out, attn = self.cross_attn(q, x, x)
        return x, self.norm_out(out), attn


class BoQHead(AggregationHead):
    """BoQ head on the patch tokens (the class / register tokens are not used).

    Args:
        in_dim: backbone token width D.
        proj_channels: width after the 3x3 projection convolution.
        num_queries: learnable queries per block.
        num_layers: BoQ blocks.
        row_dim: output rows per channel after the linear over all queries.
        num_heads: attention heads; default proj_channels // 64 (at least 1), as released.
    """

    uses_final_norm = False  # the BoQ release feeds the last block's tokens, before the final norm

    def __init__(self, in_dim: int, proj_channels: int = 384, num_queries: int = 64,
                 num_layers: int = 2, row_dim: int = 32, num_heads: int | None = None) -> None:
        super().__init__()
        num_heads = max(1, proj_channels // 64) if num_heads is None else num_heads
        if proj_channels % num_heads:
            raise ModelInputError(f"boq: proj_channels={proj_channels} must be divisible by "
                            f"num_heads={num_heads}")
        for name, v in (("in_dim", in_dim), ("proj_channels", proj_channels),
                        ("num_queries", num_queries), ("num_layers", num_layers), ("row_dim", row_dim)):
            if v < 1:
                raise ModelInputError(f"boq: {name} must be >= 1, got {v}")
        self.in_dim = in_dim
        self.descriptor_dim = proj_channels * row_dim
        self.proj_c = nn.Conv2d(in_dim, proj_channels, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        self.boqs = nn.ModuleList(BoQBlock(proj_channels, num_queries, num_heads)
                                  for _ in range(num_layers))
        self.fc = nn.Linear(num_layers * num_queries, row_dim)

    def aggregate(self, prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        x = self.norm_input(self.proj_c(patches).flatten(2).transpose(1, 2))   # [B, N, P]
        outs = []
        for block in self.boqs:
            x, out, _ = block(x)
            outs.append(out)
        q = torch.cat(outs, dim=1)                                             # [B, L*Q, P]
        return self.fc(q.transpose(1, 2)).flatten(1)                           # [B, P*row_dim]
