"""The one face every aggregation head shares.

A head turns the backbone's output tokens into one L2-normalised global descriptor::

    head(tokens [B, T, D], grid_hw=(h, w), num_prefix_tokens=p) -> descriptor [B, descriptor_dim]

``tokens`` are the backbone's final tokens in timm order: ``p`` prefix tokens (class token
first, then register tokens, if any) followed by the ``h * w`` patch tokens in row-major order
(T = p + h * w). Heads that need the spatial layout (BoQ, SALAD, MixVPR) read the patch tokens
as a [B, D, h, w] map; the CLS head reads token 0.
"""

from __future__ import annotations

import torch
from torch import nn

from brevitas_models.errors import ModelInputError


def split_tokens(tokens: torch.Tensor, grid_hw: tuple[int, int], num_prefix_tokens: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``tokens [B, T, D]`` into (prefix tokens [B, p, D], patch map [B, D, h, w])."""
    if tokens.dim() != 3:
        raise ModelInputError(f"head input must be tokens [B, T, D], got shape {tuple(tokens.shape)}")
    h, w = int(grid_hw[0]), int(grid_hw[1])
    b, t, d = tokens.shape
    if t != num_prefix_tokens + h * w:
        raise ModelInputError(f"head input has {t} tokens but grid {h}x{w} + {num_prefix_tokens} prefix "
                        f"tokens needs {num_prefix_tokens + h * w}")
    prefix = tokens[:, :num_prefix_tokens]
    patches = tokens[:, num_prefix_tokens:].transpose(1, 2).reshape(b, d, h, w)
    return prefix, patches


class AggregationHead(nn.Module):
    """Base class: subclasses set ``in_dim`` and ``descriptor_dim`` and implement ``aggregate``.

    ``forward`` applies the shared face and the final L2 normalisation.
    """

    in_dim: int
    descriptor_dim: int
    needs_prefix_token: bool = False
    uses_final_norm: bool = True  # the backbone's final LayerNorm is applied before this head
    # parameter-name prefixes whose shapes follow the patch grid the head is built for
    grid_dependent: tuple[str, ...] = ()

    def aggregate(self, prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """(prefix [B, p, D], patch map [B, D, h, w]) -> unnormalised descriptor [B, dim]."""
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor, grid_hw: tuple[int, int], num_prefix_tokens: int
                ) -> torch.Tensor:
        if tokens.shape[-1] != self.in_dim:
            raise ModelInputError(f"{type(self).__name__} was built for {self.in_dim}-d tokens, "
                            f"got {tokens.shape[-1]}-d")
        if self.needs_prefix_token and num_prefix_tokens < 1:
            raise ModelInputError(f"{type(self).__name__} needs a class token (num_prefix_tokens >= 1)")
        prefix, patches = split_tokens(tokens, grid_hw, num_prefix_tokens)
        return nn.functional.normalize(self.aggregate(prefix, patches), p=2, dim=-1)
