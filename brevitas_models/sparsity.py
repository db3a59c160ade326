"""Dynamic top-k activation sparsity (TAT-VPR).

For a sparsity ``s`` in ``[0, 1)`` (the fraction of activations zeroed), a
:class:`TopKSparsity` keeps the largest-magnitude entries of its input and zeroes the rest:

- ``granularity="token"`` (default, what the accelerator streams): each token (last axis,
  ``C`` channels) keeps exactly ``k = kept_count(C, s) = ceil((1 - s) * C)`` channels.
- ``granularity="tensor"``: each sample keeps the ``ceil((1 - s) * T * C)`` largest entries of
  its whole ``[T, C]`` activation (one top-k over the sample's tensor, as the reference
  TAT-VPR code sparsifies); samples of a batch never influence each other.

``Y = X * M`` with ``M`` a 0/1 mask built from ``TopK(|X|, k)`` indices (exactly ``k`` kept even
with ties), so the gradient reaches the kept entries only. The mask is built with ``TopK`` +
``ScatterElements``, which export as standard ONNX operators.

The sparsity is a plain attribute, changed at run time on a whole model with
:func:`set_sparsity` (no rebuild, no parameter change)::

    >>> m = TopKSparsity(0.5)
    >>> m(torch.tensor([[3.0, -1.0, 0.5, -4.0]]))
    tensor([[ 3., -0., 0., -4.]])
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Literal

import torch
from torch import nn

from tatvpr_hw.errors import UserError

Granularity = Literal["token", "tensor"]
GRANULARITIES = ("token", "tensor")

# (1 - s) * C is computed in floating point: 0.6 * 10 = 6.000000000000001 must give 6, not 7.
_CEIL_EPS = 1e-9


def check_sparsity(s: float) -> float:
    """Return ``s`` as a float if ``0 <= s < 1``; otherwise raise :class:`UserError`."""
    try:
        s = float(s)
    except (TypeError, ValueError):
        raise UserError(f"sparsity must be a number in [0, 1), got {s!r}") from None
    if not 0.0 <= s < 1.0 or math.isnan(s):
        raise UserError(f"sparsity must be in [0, 1) (fraction of activations zeroed), got {s}")
    return s


def kept_count(n: int, s: float) -> int:
    """Entries kept out of ``n`` at sparsity ``s``: ``ceil((1 - s) * n)``, at least 1 when n > 0."""
    if n <= 0:
        return 0
    k = math.ceil((1.0 - s) * n - _CEIL_EPS)
    return max(1, min(n, k))


class TopKSparsity(nn.Module):
    """Keep the top-k |x| entries per token (or per sample tensor), zero the rest.

    Args:
        sparsity: fraction of entries zeroed, ``0 <= s < 1``; runtime-settable attribute.
        granularity: ``"token"`` (top-k over the last axis) or ``"tensor"`` (over all axes
            but the batch axis).
    """

    def __init__(self, sparsity: float = 0.0, granularity: Granularity = "token") -> None:
        super().__init__()
        self.sparsity = sparsity
        self.granularity = granularity

    @property
    def sparsity(self) -> float:
        return self._sparsity

    @sparsity.setter
    def sparsity(self, s: float) -> None:
        self._sparsity = check_sparsity(s)

    @property
    def granularity(self) -> Granularity:
        return self._granularity

    @granularity.setter
    def granularity(self, g: str) -> None:
        if g not in GRANULARITIES:
            raise UserError(f"sparsity granularity must be one of {', '.join(GRANULARITIES)}, got {g!r}")
        self._granularity = g

    def extra_repr(self) -> str:
        return f"sparsity={self._sparsity}, granularity={self._granularity!r}"

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The 0/1 keep-mask (same shape and dtype as ``x``, no gradient)."""
        x = x.detach()
        if self.granularity == "token" or x.dim() < 2:
            flat = x
        else:
            flat = x.reshape(x.shape[0], -1)
        n = flat.shape[-1]
        k = kept_count(n, self._sparsity)
        if k >= n:
            return torch.ones_like(x)
        idx = torch.topk(flat.abs(), k, dim=-1, largest=True, sorted=False).indices
        m = torch.zeros_like(flat).scatter(-1, idx, 1.0)
        return m.reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._sparsity == 0.0:
            return x
        return x * self.mask(x)


def sparsity_modules(model: nn.Module) -> list[TopKSparsity]:
    """Every :class:`TopKSparsity` inside ``model`` (in module order)."""
    return [m for m in model.modules() if isinstance(m, TopKSparsity)]


def set_sparsity(model: nn.Module, s: float, granularity: Granularity | None = None) -> int:
    """Set the sparsity (and optionally the granularity) of every top-k module in ``model``.

    Returns how many modules were changed (0 for a model without any, e.g. the teacher).
    """
    s = check_sparsity(s)
    mods = sparsity_modules(model)
    for m in mods:
        m.sparsity = s
        if granularity is not None:
            m.granularity = granularity
    return len(mods)


def get_sparsity(model: nn.Module) -> float | None:
    """The common sparsity of the model's top-k modules; ``None`` if it has none.

    Raises :class:`UserError` if the modules disagree (set them with :func:`set_sparsity`).
    """
    values = {m.sparsity for m in sparsity_modules(model)}
    if not values:
        return None
    if len(values) > 1:
        raise UserError(f"the model's top-k modules have different sparsities {sorted(values)}; "
                        "use set_sparsity(model, s) to set one value")
    return values.pop()


@contextlib.contextmanager
def sparsity_context(model: nn.Module, s: float) -> Iterator[nn.Module]:
    """Temporarily run ``model`` at sparsity ``s``; restores every module's previous value."""
    mods = sparsity_modules(model)
    old = [m.sparsity for m in mods]
    set_sparsity(model, s)
    try:
        yield model
    finally:
        for m, v in zip(mods, old):
            m.sparsity = v
