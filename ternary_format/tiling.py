"""Token blocks of a ternary layer (docs/engine.md section 4): the ONE rule that both the
simulator (``sim.engine.ternary_layer``) and the board driver (``tatvpr_pynq.driver``, one IP
call per block) use, so that the weight passes the simulator charges are the IP calls the board
makes. Numpy-free, imports nothing of the project (the board ships this package).

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
