"""MixVPR aggregation head (feature mixing).

Ali-bey, Chaib-draa, Giguere: "MixVPR: Feature Mixing for Visual Place Recognition", WACV 2023.

The patch map [B, C, h, w] is read as C flattened spatial rows of length h*w; ``mix_depth``
residual MLPs (LayerNorm, Linear, ReLU, Linear) mix each row over space, then two linear maps
reduce channels to ``out_channels`` and rows to ``out_rows``:
descriptor_dim = out_channels * out_rows (published ResNet-50 setting: 1024 * 4 = 4096).
Because the mixers and the row projection act on the h*w positions, the head is built for one
grid size: the grid of the image size the model runs at (teacher and student sizes may differ;
:func:`~brevitas_models.checkpoint.init_student_from_teacher` then copies ``channel_proj`` and
leaves the grid-sized tensors, :attr:`MixVPRHead.grid_dependent`, at the student's init).

Parameter names and shapes follow the authors' release (amaralibey/MixVPR,
``models/aggregators/mixvpr.py``), so its ``aggregator.*`` weights load unchanged::

    mix.N.mix.0.{weight,bias}  [hw]             LayerNorm(hw)
    mix.N.mix.1.{weight,bias}  [hw*r, hw] [hw*r] Linear(hw, hw*r)
    mix.N.mix.3.{weight,bias}  [hw, hw*r] [hw]   Linear(hw*r, hw)
    channel_proj.{weight,bias} [out_c, C] [out_c]
    row_proj.{weight,bias}     [out_rows, hw] [out_rows]
"""

from __future__ import annotations

import torch
from torch import nn

from brevitas_models.heads.base import AggregationHead
from brevitas_models.errors import ModelInputError


class FeatureMixerLayer(nn.Module):
    """x + MLP(LayerNorm(x)) over the last axis (the h*w positions)."""

    def __init__(self, dim: int, mlp_ratio: float = 1.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.mix = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPRHead(AggregationHead):
    """MixVPR head on the patch tokens (the release's ``MixVPR`` module with in_h, in_w = grid_hw).

    Args:
        in_dim: backbone token width D (the channels C).
        grid_hw: patch grid (h, w) the head is built for.
        out_channels: channels after the channel projection.
        mix_depth: feature-mixer layers.
        mlp_ratio: hidden width of each mixer relative to h*w.
        out_rows: rows after the row projection.
    """

    grid_dependent = ("mix.", "row_proj.")

    def __init__(self, in_dim: int, grid_hw: tuple[int, int], out_channels: int = 1024,
                 mix_depth: int = 4, mlp_ratio: float = 1.0, out_rows: int = 4) -> None:
        super().__init__()
        h, w = int(grid_hw[0]), int(grid_hw[1])
        for name, v in (("in_dim", in_dim), ("grid h", h), ("grid w", w), ("out_channels", out_channels),
                        ("mix_depth", mix_depth), ("out_rows", out_rows)):
            if v < 1:
                raise ModelInputError(f"mixvpr: {name} must be >= 1, got {v}")
        if mlp_ratio <= 0 or int(h * w * mlp_ratio) < 1:
            raise ModelInputError(f"mixvpr: mlp_ratio must give a hidden width >= 1, got {mlp_ratio}")
        self.in_dim = in_dim
        self.grid_hw = (h, w)
        self.descriptor_dim = out_channels * out_rows
        self.mix = nn.Sequential(*[FeatureMixerLayer(h * w, mlp_ratio) for _ in range(mix_depth)])
        self.channel_proj = nn.Linear(in_dim, out_channels)
        self.row_proj = nn.Linear(h * w, out_rows)

    def aggregate(self, prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        if tuple(patches.shape[-2:]) != self.grid_hw:
            raise ModelInputError(f"mixvpr head was built for a {self.grid_hw[0]}x{self.grid_hw[1]} patch grid, "
                            f"got {patches.shape[-2]}x{patches.shape[-1]} (image size changed?)")
        x = self.mix(patches.flatten(2))                        # [B, C, hw]
        x = self.channel_proj(x.transpose(1, 2))                # [B, hw, out_c]
        return self.row_proj(x.transpose(1, 2)).flatten(1)      # [B, out_c * out_rows]
