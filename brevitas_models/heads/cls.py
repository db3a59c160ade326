"""CLS head: the backbone's class token, L2-normalised (descriptor_dim = D)."""

from __future__ import annotations

import torch

from brevitas_models.heads.base import AggregationHead


class CLSHead(AggregationHead):
    """Descriptor = class token (prefix token 0). No parameters.

    Args:
        in_dim: backbone token width D.
    """

    needs_prefix_token = True

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.descriptor_dim = in_dim

    def aggregate(self, prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        return prefix[:, 0]
