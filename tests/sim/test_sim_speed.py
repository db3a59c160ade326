"""The simulator's speed caches must never change an answer (sim.arch's parsed-YAML cache,
sim.engine's transfer_cycles memo)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from sim.arch import load_yaml_mapping
from sim.engine import transfer_cycles
from sim.errors import SimInputError


def test_yaml_cache_sees_a_same_size_rewrite(tmp_path):
    """Rewritten at once with the same length (mtime may not tick): the new value is read."""
    p = tmp_path / "m.yaml"
    p.write_text("a: 16\n")
    assert load_yaml_mapping(p, "test") == {"a": 16}
    p.write_text("a: 32\n")
    assert load_yaml_mapping(p, "test") == {"a": 32}


def test_yaml_cache_returns_copies(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("a: {b: 1}\n")
    first = load_yaml_mapping(p, "test")
    first["a"]["b"] = 99
    assert load_yaml_mapping(p, "test") == {"a": {"b": 1}}


def test_yaml_cache_keeps_errors(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("- 1\n")
    for _ in range(2):
        with pytest.raises(SimInputError, match="must be a mapping"):
            load_yaml_mapping(p, "test")


@pytest.mark.parametrize("nbytes,bpc,want", [(10, 3.0, 4), (Fraction(8, 5), 0.4, 4), (9, 3.0, 3),
                                             (Fraction(1, 3), 0.1, 4), (0, 2.5, 0)])
def test_transfer_cycles_memo_exact(nbytes, bpc, want):
    for _ in range(2):  # the second call is served by the memo
        assert transfer_cycles(nbytes, bpc) == want
