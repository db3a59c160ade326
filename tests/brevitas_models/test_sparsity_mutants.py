"""Top-k sparsity checks added for the mutants `make mutation` found alive (docs/testing.md).

Group sizes, kept counts and repr strings are worked by hand from the definitions in
brevitas_models/sparsity.py's docstring (group b = {c : c mod B = b}).
"""

import re

import pytest
import torch
from torch import nn

from brevitas_models.sparsity import TopKSparsity, bank_group_sizes, get_granularity, get_sparsity, kept_count
from brevitas_models.errors import ModelInputError as UserError  # the models raise their own error type


def _exactly(message: str) -> str:
    """A pytest.raises pattern matching the whole message (a prefix or suffix added fails)."""
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize("channels, banks, sizes", [
    (8, 2, [4, 4]),            # even split
    (7, 3, [3, 2, 2]),         # 7 = 2*3 + 1: group 0 = {0, 3, 6}, groups 1, 2 = {1, 4}, {2, 5}
    (10, 4, [3, 3, 2, 2]),     # 10 = 2*4 + 2
    (2, 4, [1, 1, 0, 0]),      # fewer channels than banks: two empty groups
    (5, 1, [5]),
])
def test_bank_group_sizes_by_hand(channels, banks, sizes):
    assert bank_group_sizes(channels, banks) == sizes


def test_extra_repr_names_banks_only_for_the_bank_granularity():
    assert TopKSparsity(0.5).extra_repr() == "sparsity=0.5, granularity='token'"
    assert TopKSparsity(0.25, "tensor", 8).extra_repr() == "sparsity=0.25, granularity='tensor'"
    assert TopKSparsity(0.5, "bank", 4).extra_repr() == "sparsity=0.5, granularity='bank', banks=4"


def test_get_granularity():
    assert get_granularity(nn.Linear(2, 2)) is None
    model = nn.Sequential(TopKSparsity(0.1, "bank"), nn.Linear(4, 4), TopKSparsity(0.1, "bank"))
    assert get_granularity(model) == "bank"
    model[2].granularity = "tensor"
    with pytest.raises(UserError, match=_exactly(
            "the model's top-k modules have different granularities ['bank', 'tensor']; "
            "use set_sparsity(model, s, granularity=...) to set one value")):
        get_granularity(model)


def test_get_sparsity_disagreement_message():
    model = nn.Sequential(TopKSparsity(0.1), TopKSparsity(0.2))
    with pytest.raises(UserError, match=_exactly(
            "the model's top-k modules have different sparsities [0.1, 0.2]; "
            "use set_sparsity(model, s) to set one value")):
        get_sparsity(model)


def test_bank_mask_with_all_zero_groups_keeps_exactly_k_real_channels():
    # C = 7, B = 3, s = 0.5: group 0 = {0, 3, 6} keeps ceil(1.5) = 2, groups 1, 2 keep 1 each,
    # 4 channels in all, even when every |x| ties at 0 (padding never counts as a channel).
    m = TopKSparsity(0.5, "bank", 3).mask(torch.zeros(3, 7))
    assert m.shape == (3, 7)
    assert m[:, [0, 3, 6]].sum(-1).tolist() == [2.0, 2.0, 2.0]
    assert m[:, [1, 4]].sum(-1).tolist() == [1.0, 1.0, 1.0]
    assert m[:, [2, 5]].sum(-1).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("s", [0.0, 0.5, 0.9])
def test_kept_count_of_nothing_is_nothing(s):
    # an empty group (C < B in the bank granularity) keeps 0 channels, not the "at least 1"
    assert kept_count(0, s) == 0
    assert kept_count(1, s) == 1
