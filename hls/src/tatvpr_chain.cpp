// The vector unit's chained row op: see tatvpr_chain.h. The steps are the vector unit's kernels
// (tatvpr_vector.cpp) applied to one row at a time, so the arithmetic is theirs bit for bit.
#include "tatvpr_chain.h"

long long tatvpr_chain(const int16_t *x16, const int8_t *x8, const int32_t *mult32, const int32_t *shift32,
                       const int64_t *gain64, const int64_t *bias64, int64_t eps_q, const int8_t *table8,
                       int16_t *out16, int8_t *y8, uint16_t *chunks16, uint32_t *pairs32, int t, int d, int keep,
                       int flags) {
    // inlined into tatvpr_vector_top, so the kernels it calls share the lane multipliers that the
    // top's ALLOCATION pragma limits (docs/hls.md "Operand widths of the vector unit"; unverified without Vitis HLS)
#pragma HLS INLINE
    const bool add = flags & TATVPR_CHAIN_ADD, ln = flags & TATVPR_CHAIN_LAYERNORM, gelu = flags & TATVPR_CHAIN_GELU;
    const bool topk = flags & TATVPR_CHAIN_TOPK, dense = flags & TATVPR_CHAIN_TOPK_DENSE;
    const bool write_res = flags & TATVPR_CHAIN_WRITE_RES;
    if (t < 1 || d < 1 || keep < 0 || (flags & ~63) || ln == gelu || (add && !ln) || (topk && dense) ||
        (write_res && !add) || d > TATVPR_TOPK_KMAX || ((add || ln) && d > TATVPR_CHAIN_MAX_DIM))
        return -1;
    static int16_t row16[TATVPR_CHAIN_MAX_DIM];  // chain_row: the add's int16 output, read by both LN passes
    static int8_t row8[TATVPR_TOPK_KMAX];         // the LN / GELU output (the top-k unit's row memory)
    static uint16_t one_chunk[1];
    long long words = 0;
ROWS:
    for (int r = 0; r < t; r++) {
        const int64_t base = (int64_t)r * d;
        const int16_t *in16 = x16 + base;
        if (add) {  // one pass, the int16 row kept on chip (and written when it is the residual stream)
            tatvpr_residual_add(x16 + base, x8 + base, row16, 1, d, mult32, shift32);
            if (write_res)
                for (int c = 0; c < d; c++) out16[base + c] = row16[c];
            in16 = row16;
        }
        int8_t *dst = (topk || dense) ? row8 : y8 + base;
        if (ln) tatvpr_layernorm(in16, dst, 1, d, gain64, bias64, eps_q);
        if (gelu) tatvpr_gelu(x8 + base, dst, d, table8);
        if (topk) {
            long long w = tatvpr_topk_schedule(row8, 1, d, keep, 1, chunks16 + r, pairs32 + words, 0);
            if (w < 0) return -1;
            words += w;
        } else if (dense) {
            if (tatvpr_topk_schedule(row8, 1, d, keep, 0, one_chunk, 0, y8 + base) < 0) return -1;
        }
    }
    return words;
}
