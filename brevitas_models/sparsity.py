"""Dynamic top-k activation sparsity (TAT-VPR).

For a sparsity ``s`` in ``[0, 1)`` (the fraction of activations zeroed), a
:class:`TopKSparsity` keeps the largest-magnitude entries of its input and zeroes the rest:

- ``granularity="token"`` (default, what the accelerator streams): each token (last axis,
  ``C`` channels) keeps exactly ``k = kept_count(C, s) = ceil((1 - s) * C)`` channels.
- ``granularity="bank"`` (docs/engine.md section 3, "Bank granularity"): the ``C`` channels of
  a token are split into ``B = banks`` channel groups ``{c : c mod B = b}`` (the accelerator's
  memory banks: channel ``c`` lives in bank ``c mod B``), and each group keeps its own
  ``kept_count(C_b, s)`` largest-|x| channels, ``C_b`` = the group's size. When ``B`` divides
  ``C`` every group has ``C / B`` channels; otherwise, with ``C = G * B + r``, groups
  ``b < r`` have ``G + 1`` channels and keep ``kept_count(G + 1, s)``, the others have ``G``
  and keep ``kept_count(G, s)`` (an empty group, ``C < B``, keeps nothing). Every bank then
  holds (almost) the same work per token, so the accelerator's busiest bank is no busier than
  the average. Because each group rounds up on its own, a token keeps
  ``sum_b kept_count(C_b, s) >= kept_count(C, s)`` channels (e.g. C = 192, B = 32, s = 0.4:
  32 x 4 = 128 instead of 116).
- ``granularity="tensor"``: each sample keeps the ``ceil((1 - s) * T * C)`` largest entries of
  its whole ``[T, C]`` activation (one top-k per sample; samples of a batch never influence each
  other). This is NOT the reference code's top-k (that is ``batch``).
- ``granularity="batch"`` (the Sparse-TeTRA reference, ``model/layers.py`` ``sparsify``): ONE
  top-k over the whole input tensor, all samples of the batch together (``[B, T, C]``), keeping
  ``k = int((1 - s) * B * T * C)`` entries (floor, as the reference's ``int(...)``; the other
  granularities round up). What one image keeps then depends on the rest of its batch.

``Y = X * M`` with ``M`` a 0/1 mask built from ``TopK(|X|, k)`` indices (exactly ``k`` kept even
with ties, per token, per bank group, per sample or per batch). The gradient follows
``gradient``: ``"masked"`` (default) passes it to the kept entries only (dY/dX = M);
``"straight_through"`` (the reference's ``x * mask + (1 - mask) * (x - x.detach())``) passes
it to every entry, dropped ones included (dY/dX = 1), while the forward value stays ``X * M``.
The mask is built with ``TopK`` + ``ScatterElements`` (for ``bank`` on a padded,
reshaped and transposed ``[..., B, ceil(C / B)]`` view), which export as standard ONNX operators.

The sparsity is a plain attribute, changed at run time on a whole model with
:func:`set_sparsity` (no rebuild, no parameter change)::

    >>> m = TopKSparsity(0.5)
    >>> m(torch.tensor([[3.0, -1.0, 0.5, -4.0]]))
    tensor([[ 3., -0., 0., -4.]])
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Iterator, Literal

import torch
from torch import nn

from brevitas_models.errors import ModelInputError

Granularity = Literal["token", "bank", "tensor", "batch"]
GRANULARITIES = ("token", "bank", "tensor", "batch")
Gradient = Literal["masked", "straight_through"]
GRADIENTS = ("masked", "straight_through")
# Channel groups of the "bank" granularity: the default KV260 arch's SIMD (= its banks).
DEFAULT_BANKS = 32

# (1 - s) * C is computed in floating point: 0.6 * 10 = 6.000000000000001 must give 6, not 7.
_CEIL_EPS = 1e-9


def check_sparsity(s: float) -> float:
    """Return ``s`` as a float if ``0 <= s < 1``; otherwise raise :class:`ModelInputError`."""
    try:
        s = float(s)
    except (TypeError, ValueError):
        raise ModelInputError(f"sparsity must be a number in [0, 1), got {s!r}") from None
    if not 0.0 <= s < 1.0 or math.isnan(s):
        raise ModelInputError(f"sparsity must be in [0, 1) (fraction of activations zeroed), got {s}")
    return s


def check_banks(banks: int) -> int:
    """Return ``banks`` as an int if it is an integer >= 1; otherwise raise :class:`ModelInputError`."""
    ok = not isinstance(banks, bool) and isinstance(banks, numbers.Real) and float(banks).is_integer() \
        and banks >= 1
    if not ok:
        raise ModelInputError(f"sparsity banks must be an integer >= 1 (channel groups of the bank granularity), "
                        f"got {banks!r}")
    return int(banks)


def bank_group_sizes(channels: int, banks: int) -> list[int]:
    """``C_b`` for b = 0 .. B-1: the size of channel group ``{c : c mod B = b}`` of ``channels``."""
    g, r = divmod(int(channels), int(banks))
    return [g + 1 if b < r else g for b in range(int(banks))]


def batch_kept_count(n: int, s: float) -> int:
    """Entries kept out of ``n`` by the ``batch`` granularity: ``int((1 - s) * n)``, the reference's
    floor (no guard against float error, as there: it may keep 0)."""
    return int((1.0 - s) * n)


def kept_count(n: int, s: float) -> int:
    """Entries kept out of ``n`` at sparsity ``s``: ``ceil((1 - s) * n)``, at least 1 when n > 0."""
    if n <= 0:
        return 0
    k = math.ceil((1.0 - s) * n - _CEIL_EPS)
    return max(1, min(n, k))


class TopKSparsity(nn.Module):
    """Keep the top-k |x| entries per token (bank group, sample or batch), zero the rest.

    Args:
        sparsity: fraction of entries zeroed, ``0 <= s < 1``; runtime-settable attribute.
        granularity: ``"token"`` (top-k over the last axis), ``"bank"`` (top-k within each of
            ``banks`` channel groups of the last axis), ``"tensor"`` (over all axes but the
            batch axis) or ``"batch"`` (over the whole tensor); runtime-settable.
        banks: channel groups ``B`` of the ``"bank"`` granularity (ignored by the others).
        gradient: ``"masked"`` (gradient to kept entries only) or ``"straight_through"`` (to
            every entry); runtime-settable.
    """

    def __init__(self, sparsity: float = 0.0, granularity: Granularity = "token",
                 banks: int = DEFAULT_BANKS, gradient: Gradient = "masked") -> None:
        super().__init__()
        self.sparsity = sparsity
        self.granularity = granularity
        self.banks = banks
        self.gradient = gradient

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
            raise ModelInputError(f"sparsity granularity must be one of {', '.join(GRANULARITIES)}, got {g!r}")
        self._granularity = g

    @property
    def gradient(self) -> Gradient:
        return self._gradient

    @gradient.setter
    def gradient(self, g: str) -> None:
        if g not in GRADIENTS:
            raise ModelInputError(f"sparsity gradient must be one of {', '.join(GRADIENTS)}, got {g!r}")
        self._gradient = g

    @property
    def banks(self) -> int:
        return self._banks

    @banks.setter
    def banks(self, b: int) -> None:
        self._banks = check_banks(b)

    def extra_repr(self) -> str:
        text = f"sparsity={self._sparsity}, granularity={self._granularity!r}"
        text += f", banks={self._banks}" if self._granularity == "bank" else ""
        return text + (f", gradient={self._gradient!r}" if self._gradient != "masked" else "")

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The 0/1 keep-mask (same shape and dtype as ``x``, no gradient)."""
        x = x.detach()
        if self.granularity == "bank":
            return self._bank_mask(x)
        if self.granularity == "batch":
            return self._batch_mask(x)
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

    def _batch_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Keep-mask of the batch granularity: one top-k over every entry of ``x``."""
        flat = x.reshape(-1)
        k = batch_kept_count(flat.numel(), self._sparsity)
        if k >= flat.numel():
            return torch.ones_like(x)
        idx = torch.topk(flat.abs(), k, largest=True, sorted=False).indices
        return torch.zeros_like(flat).scatter(0, idx, 1.0).reshape(x.shape)

    def _bank_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Keep-mask of the bank granularity: top-k within each channel group ``c mod B``.

        Channel ``c = a * B + b`` sits at row ``a``, column ``b`` of the ``[..., rows, B]`` view
        (``rows = ceil(C / B)``, zero-padded), so after a transpose group ``b`` is row ``b`` of
        ``[..., B, rows]``. Groups ``b < r`` (``r = C mod B``) fill all ``rows``; the others
        only the first ``rows - 1`` (their last entry is padding and is never selected). Each
        of the two kinds gets one TopK with its own k.
        """
        c, banks = int(x.shape[-1]), self._banks
        g, r = divmod(c, banks)
        rows = g + (1 if r else 0)
        lead = x.shape[:-1]
        a = x.abs()
        if rows * banks != c:
            a = torch.nn.functional.pad(a, (0, rows * banks - c))
        t = a.reshape(*lead, rows, banks).transpose(-1, -2)  # [..., B, rows]
        parts = []
        if r:   # groups 0 .. r-1: rows = g + 1 channels each
            parts.append(self._group_topk(t[..., :r, :], g + 1))
        if g:   # groups r .. B-1: g channels each (+ one padding column when r > 0)
            m = self._group_topk(t[..., r:, :g], g)
            if rows > g:
                m = torch.cat([m, torch.zeros_like(t[..., r:, g:])], dim=-1)
            parts.append(m)
        else:   # C < B: groups r .. B-1 are empty
            parts.append(torch.zeros_like(t[..., r:, :]))
        m = torch.cat(parts, dim=-2) if len(parts) > 1 else parts[0]
        m = m.transpose(-1, -2).reshape(*lead, rows * banks)
        return (m[..., :c] if rows * banks != c else m).to(x.dtype)

    def _group_topk(self, a: torch.Tensor, n: int) -> torch.Tensor:
        """0/1 mask keeping the ``kept_count(n, s)`` largest of each row of ``a [..., n]``."""
        k = kept_count(n, self._sparsity)
        if k >= n:
            return torch.ones_like(a)
        idx = torch.topk(a, k, dim=-1, largest=True, sorted=False).indices
        return torch.zeros_like(a).scatter(-1, idx, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._sparsity == 0.0:
            return x
        m = self.mask(x)
        if self._gradient == "straight_through":
            # forward value x * m; d/dx = m + (1 - m) = 1 (the reference's estimator)
            return x * m + (1.0 - m) * (x - x.detach())
        return x * m


def sparsity_modules(model: nn.Module) -> list[TopKSparsity]:
    """Every :class:`TopKSparsity` inside ``model`` (in module order)."""
    return [m for m in model.modules() if isinstance(m, TopKSparsity)]


def set_sparsity(model: nn.Module, s: float, granularity: Granularity | None = None,
                 banks: int | None = None, gradient: Gradient | None = None) -> int:
    """Set the sparsity (and optionally the granularity, bank groups and gradient) of every
    top-k module in ``model``.

    Returns how many modules were changed (0 for a model without any, e.g. the teacher).
    """
    s = check_sparsity(s)
    if granularity is not None and granularity not in GRANULARITIES:
        raise ModelInputError(f"sparsity granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if banks is not None:
        banks = check_banks(banks)
    if gradient is not None and gradient not in GRADIENTS:
        raise ModelInputError(f"sparsity gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
    mods = sparsity_modules(model)
    for m in mods:
        m.sparsity = s
        if granularity is not None:
            m.granularity = granularity
        if banks is not None:
            m.banks = banks
        if gradient is not None:
            m.gradient = gradient
    return len(mods)


def get_granularity(model: nn.Module) -> str | None:
    """The common granularity of the model's top-k modules; ``None`` if it has none.

    Raises :class:`ModelInputError` if the modules disagree.
    """
    values = {m.granularity for m in sparsity_modules(model)}
    if not values:
        return None
    if len(values) > 1:
        raise ModelInputError(f"the model's top-k modules have different granularities {sorted(values)}; "
                        "use set_sparsity(model, s, granularity=...) to set one value")
    return values.pop()


def get_sparsity(model: nn.Module) -> float | None:
    """The common sparsity of the model's top-k modules; ``None`` if it has none.

    Raises :class:`ModelInputError` if the modules disagree (set them with :func:`set_sparsity`).
    """
    values = {m.sparsity for m in sparsity_modules(model)}
    if not values:
        return None
    if len(values) > 1:
        raise ModelInputError(f"the model's top-k modules have different sparsities {sorted(values)}; "
                        "use set_sparsity(model, s) to set one value")
    return values.pop()


@contextlib.contextmanager
def sparsity_context(model: nn.Module, s: float, granularity: Granularity | None = None) -> Iterator[nn.Module]:
    """Temporarily run ``model`` at sparsity ``s`` (and ``granularity`` if given); restores every
    module's previous values."""
    mods = sparsity_modules(model)
    old = [(m.sparsity, m.granularity) for m in mods]
    set_sparsity(model, s, granularity)
    try:
        yield model
    finally:
        for m, (v, g) in zip(mods, old):
            m.sparsity = v
            m.granularity = g
