"""Token blocks and loop order of a ternary layer (docs/engine.md section 4): the ONE rule that
both the simulator (``sim.engine.ternary_layer``) and the board driver (``tatvpr_pynq.driver``:
one IP call per layer, with the ``order`` and ``resident`` this module gives; the IP cuts the
same blocks on chip) use, so that the steps, weight passes and block loads the simulator charges
are the ones the IP makes. Numpy-free, imports nothing of the project (the board ships this
package).

The activation buffer is a memory of ``capacity_words`` words (its depth, docs/engine.md
section 6; in ``act`` a word is one chunk of ``SIMD`` (value, index) slots, the HLS IP's
``abuf[CHUNKS_MAX][SIMD]``); token ``m`` occupies ``words[m]`` of them (its chunks in ``act``,
``ceil(K / SIMD)`` otherwise). The output buffer holds one fold's outputs of ``max_tokens``
tokens (the IP's ``obuf[MMAX][PE]``).

- resident: the previous op did not spill the input and all tokens' words fit the whole buffer;
  then a block may use the whole buffer, else ``floor(capacity_words / halves)`` words (``halves
  = 2`` with double buffering: a block loads while another computes);
- blocks are consecutive tokens, filled greedily in token order: a block ends before the token
  that would take it over its words or over ``max_tokens`` tokens.
"""

from __future__ import annotations


class TokenTooLarge(ValueError):
    """One token's words exceed what one block may hold."""

    def __init__(self, words: int, cap_words: int) -> None:
        super().__init__(f"one token takes {words} words of the activation buffer; a block may hold {cap_words}")
        self.words, self.cap_words = words, cap_words


def token_blocks(words, capacity_words: int, max_tokens: int, halves: int, *,
                 input_in_dram: bool = False) -> tuple[bool, list[tuple[int, int]]]:
    """``(resident, [(start, stop), ...])`` of the tokens whose buffer words are ``words``
    (a sequence of positive ints, one per token). ``capacity_words``, ``max_tokens`` >= 1 (or
    ``float('inf')``: unbounded); ``halves`` 1 or 2. Raises :class:`TokenTooLarge` when one token
    does not fit a block."""
    words = [int(v) for v in words]
    m = len(words)
    total = sum(words)
    resident = (not input_in_dram) and total <= capacity_words
    cap = capacity_words if resident else capacity_words // halves
    big = max(words, default=0)
    if big > cap:
        raise TokenTooLarge(big, cap)
    if m == 0:
        return resident, []
    if total <= cap and m <= max_tokens:
        return resident, [(0, m)]
    blocks, start, used = [], 0, 0
    for t, v in enumerate(words):
        if t > start and (used + v > cap or t - start >= max_tokens):
            blocks.append((start, t))
            start, used = t, 0
        used += v
    blocks.append((start, m))
    return resident, blocks


SLOT_BYTES = 4       # one (value, index) slot of the act stream: uint32 ``value | index << 8``, 0 = pad
TOK_CHUNKS_BYTES = 2  # one token's chunk count: uint16


def act_stream_bytes(total_chunks: int, simd: int, tokens: int) -> int:
    """DRAM bytes of the bank-scheduled activation stream the ternary IP reads in ``act`` mode
    (``tatvpr_pynq.formats.schedule_activations``): ``total_chunks x simd`` uint32 slots plus one
    uint16 chunk count per token. Example: 3 tokens of 2, 1, 1 chunks at SIMD 4 = 16 slots x 4 B
    + 3 x 2 B = 70 bytes."""
    if total_chunks < 0 or simd < 1 or tokens < 0:
        raise ValueError(f"act_stream_bytes: total_chunks {total_chunks}, simd {simd}, tokens {tokens}")
    return total_chunks * simd * SLOT_BYTES + tokens * TOK_CHUNKS_BYTES


# --------------------------------------------------------------------------- loop order
LOOP_ORDERS = ("fold_outer", "token_outer")
"""The two loop orders of docs/engine.md section 4 (``buffers.loop_order`` adds ``auto``); the
ternary IP's ``order`` argument is their index here (0 ``fold_outer``, 1 ``token_outer``)."""


def loop_steps(n_f: int, t: int, order: str) -> list[tuple[int, int]]:
    """The steps ``(fold f, token block b)`` of a layer of ``n_f`` folds and ``t`` blocks in loop
    order: ``fold_outer`` = for f: for b; ``token_outer`` = for b: for f. Example: 2 folds, 2 blocks,
    token_outer -> (0, 0), (1, 0), (0, 1), (1, 1)."""
    if order == "fold_outer":
        return [(f, b) for f in range(n_f) for b in range(t)]
    if order == "token_outer":
        return [(f, b) for b in range(t) for f in range(n_f)]
    raise ValueError(f"loop order {order!r}; allowed: {', '.join(LOOP_ORDERS)}")


def passes(order: str, n_f: int, t: int, resident: bool) -> tuple[int, int]:
    """``(weight loads per fold, activation loads per block)`` of a loop order: a step loads what
    differs from the previous step's fold / block (so one block, or one fold, is loaded once); a
    resident input is never loaded. Example: fold_outer, 3 folds, 2 blocks, not resident -> (1, 3)."""
    if order == "fold_outer":
        return 1, 0 if resident else (n_f if t > 1 else 1)
    if order == "token_outer":
        return (t if n_f > 1 else 1), 0 if resident else 1
    raise ValueError(f"loop order {order!r}; allowed: {', '.join(LOOP_ORDERS)}")


def choose_loop_order(setting: str, n_f: int, t: int, resident: bool, fold_bytes, act_bytes) -> str:
    """``buffers.loop_order``: ``fold_outer`` / ``token_outer`` as set; ``auto`` = the order whose
    DRAM bytes ``pw * n_f * fold_bytes + pa * act_bytes`` (:func:`passes`) are fewer, ``fold_outer``
    on a tie. ``fold_bytes``: one fold's weights; ``act_bytes``: the whole input's DRAM bytes (any
    exact numbers: ints or ``fractions.Fraction``)."""
    if setting != "auto":
        if setting not in LOOP_ORDERS:
            raise ValueError(f"loop order {setting!r}; allowed: auto, {', '.join(LOOP_ORDERS)}")
        return setting

    def traffic(order: str):
        pw, pa = passes(order, n_f, t, resident)
        return pw * n_f * fold_bytes + pa * act_bytes

    return "token_outer" if traffic("token_outer") < traffic("fold_outer") else "fold_outer"
