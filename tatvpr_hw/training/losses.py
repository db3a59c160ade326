"""Training losses: multi-similarity metric learning and token-level distillation.

- :class:`MultiSimilarity`: pytorch-metric-learning's ``MultiSimilarityLoss`` on the pairs its
  ``MultiSimilarityMiner`` selects, with the GSV-Cities / MixVPR / BoQ settings (alpha 1,
  beta 50, base 0, miner epsilon 0.1).
- :func:`distill_loss`: sum over the chosen blocks of the MSE between student and teacher
  tokens; :func:`match_grid` first resamples the student's patch tokens to the teacher's
  patch grid when their input sizes differ (prefix tokens are matched one to one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tatvpr_hw.errors import UserError


class MultiSimilarity(nn.Module):
    """Mined multi-similarity loss on L2-normalised descriptors.

    Args:
        alpha, beta, base: ``MultiSimilarityLoss`` weights of positive pairs, negative pairs
            and the similarity margin.
        epsilon: miner margin: keep negatives harder than the easiest positive minus epsilon
            and positives harder than the hardest negative plus epsilon.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 50.0, base: float = 0.0,
                 epsilon: float = 0.1) -> None:
        super().__init__()
        from pytorch_metric_learning import distances, losses, miners

        self.loss = losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base,
                                               distance=distances.DotProductSimilarity())
        self.miner = miners.MultiSimilarityMiner(epsilon=epsilon, distance=distances.CosineSimilarity())

    def forward(self, descriptors: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(loss, fraction of the batch's images that took part in a mined pair)."""
        pairs = self.miner(descriptors, labels)
        used = torch.unique(torch.cat([p.flatten() for p in pairs])) if pairs[0].numel() else pairs[0]
        loss = self.loss(descriptors, labels, pairs)
        return loss, float(used.numel()) / max(1, descriptors.shape[0])


def match_grid(tokens: torch.Tensor, num_prefix: int, src_grid: tuple[int, int],
               dst_grid: tuple[int, int]) -> torch.Tensor:
    """Resample the patch tokens of ``tokens [B, p + h*w, D]`` from ``src_grid`` to ``dst_grid``.

    Prefix tokens pass unchanged; the patch grid is interpolated bilinearly (no change when the
    grids are equal).
    """
    b, t, d = tokens.shape
    sh, sw = src_grid
    if t != num_prefix + sh * sw:
        raise UserError(f"{t} tokens do not fit grid {sh}x{sw} + {num_prefix} prefix tokens")
    if tuple(src_grid) == tuple(dst_grid):
        return tokens
    prefix = tokens[:, :num_prefix]
    grid = tokens[:, num_prefix:].transpose(1, 2).reshape(b, d, sh, sw)
    grid = F.interpolate(grid, size=tuple(dst_grid), mode="bilinear", align_corners=False)
    return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)


def distill_loss(student_tokens: list[torch.Tensor], teacher_tokens: list[torch.Tensor], *,
                 num_prefix: int, student_grid: tuple[int, int], teacher_grid: tuple[int, int]
                 ) -> torch.Tensor:
    """Sum over layers of ``MSE(match_grid(S_l), T_l)`` (mean over tokens and channels)."""
    if len(student_tokens) != len(teacher_tokens) or not student_tokens:
        raise UserError(f"distillation needs the same non-zero number of student and teacher layers, "
                        f"got {len(student_tokens)} and {len(teacher_tokens)}")
    total = student_tokens[0].new_zeros(())
    for s, t in zip(student_tokens, teacher_tokens):
        s = match_grid(s, num_prefix, student_grid, teacher_grid)
        if s.shape != t.shape:
            raise UserError(f"student tokens {tuple(s.shape)} cannot be matched to teacher tokens "
                            f"{tuple(t.shape)} (different embedding width?)")
        total = total + F.mse_loss(s.float(), t.float())
    return total
