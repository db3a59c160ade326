// The vector unit's chained row op (docs/engine.md section 5a, schedule.vector_chain: fused): a run of
// consecutive vector-unit ops of one token row as one call of the vector IP (tatvpr_vector_top, op
// TATVPR_V_CHAIN), instead of one call per op with every hand-off through DDR:
//
//   [residual add ->] LayerNorm | GELU [-> the next ternary linear's top-k (act stream or dense)]
//
// Each row is read once; the add's int16 output stays in the on-chip row (chain_row: TATVPR_CHAIN_MAX_DIM
// int16, ping-pong in hardware so the next row's read overlaps; sim.schedule.chain_buffers), the
// LayerNorm's / GELU's int8 output goes straight into the top-k unit's own row memory. Only what a later op
// reads is written: the int16 residual stream when TATVPR_CHAIN_WRITE_RES is set (a later residual add
// reads it), and the top-k's output (the act stream, or the kept values in place) or, without a top-k,
// the int8 row. The passes are the split ops' (tatvpr_residual_add, tatvpr_layernorm, tatvpr_gelu,
// tatvpr_topk_schedule called on one row at a time), so the counted cycles are the split ops' sum when the
// vector lanes divide the row width (sim.schedule.vector_chains charges that sum).
#ifndef TATVPR_CHAIN_H
#define TATVPR_CHAIN_H

#include <stdint.h>

#include "tatvpr_vector.h"

#ifndef TATVPR_CHAIN_MAX_DIM
#define TATVPR_CHAIN_MAX_DIM 4096  // schedule.max_dim: the longest int16 row the chain holds
#endif

// flags: which steps run, in this order
#define TATVPR_CHAIN_ADD 1         // out = x16 + requant(x8) per channel (mult32 / shift32), int16
#define TATVPR_CHAIN_LAYERNORM 2   // LayerNorm of the int16 row (the add's output, else x16) -> int8
#define TATVPR_CHAIN_GELU 4        // GELU table of the int8 row x8 -> int8
#define TATVPR_CHAIN_TOPK 8        // top-k + bank scheduling -> chunks16[t], pairs32 (the act stream)
#define TATVPR_CHAIN_TOPK_DENSE 16 // top-k, the kept values in place -> y8[t * d]
#define TATVPR_CHAIN_WRITE_RES 32  // write the add's int16 output to out16[t * d] (the residual stream)

// t rows of d channels. Returns the pair words written to pairs32 (0 without TATVPR_CHAIN_TOPK), or -1 for
// a bad call (nothing written): t < 1, d < 1, no LayerNorm / GELU step or both, an add without a LayerNorm,
// GELU after an add, TOPK with TOPK_DENSE, WRITE_RES without an add, d over TATVPR_CHAIN_MAX_DIM (add /
// LayerNorm) or TATVPR_TOPK_KMAX, keep < 0.
long long tatvpr_chain(const int16_t *x16, const int8_t *x8, const int32_t *mult32, const int32_t *shift32,
                       const int64_t *gain64, const int64_t *bias64, int64_t eps_q, const int8_t *table8,
                       int16_t *out16, int8_t *y8, uint16_t *chunks16, uint32_t *pairs32, int t, int d, int keep,
                       int flags);

#endif
