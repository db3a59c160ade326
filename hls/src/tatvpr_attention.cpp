// Fused attention kernel: see tatvpr_attention.h.
#include "tatvpr_attention.h"

namespace {

const int R = TATVPR_ATT_ROWS, TMAX = TATVPR_ATT_MAX_TOKENS, DMAX = TATVPR_ATT_MAX_HEAD_DIM, L = TATVPR_ATT_LANES;

// round(2^15 * 2^(-f/256)), f = 0..255: each softmax lane's own copy (a ROM in LUTs, rtl/vector_lane.v)
const int32_t ATT_EXP2[256] = {
#include "tatvpr_exp2_table.inc"
};

// floor(2^32 / d), 1 <= d < 2^62: restoring division, 33 quotient steps, one row-op cycle each (the
// softmax's reciprocal, as the vector unit's div_pow2(32, d))
int64_t att_recip(int64_t d) {
    uint64_t rem = 0, q = 0;
ATT_DIV:
    for (int i = 32; i >= 0; i--) {
#pragma HLS PIPELINE II = 1
        TATVPR_ROWCYCLE();
        rem = (rem << 1) | (i == 32 ? 1u : 0u);
        q <<= 1;
        if (rem >= (uint64_t)d) {
            rem -= (uint64_t)d;
            q |= 1;
        }
    }
    return (int64_t)q;
}

}  // namespace

// The softmax-only lane's two multipliers (tatvpr_attention.h): the exact product of the port widths, which
// are the vector lane's TATVPR_VW_Z x TATVPR_VW_MULT (33 x 31: 4 DSP48E2 by the UG579 tiling rule) and
// TATVPR_VW_E x TATVPR_VW_RECIP (16 x 18 unsigned: 1); not inlined, so that row_softmax's ALLOCATION
// pragmas can bound their instances to TATVPR_ATT_LANES each. The C build without ap_types: the same
// value through a wrapping unsigned multiply (both products stay below 2^63).
int64_t tatvpr_att_mul1(tatvpr_s<TATVPR_VW_Z> z, tatvpr_u<TATVPR_VW_MULT> mult) {
#pragma HLS INLINE off
#if TATVPR_VECTOR_AP
    ap_int<64> p = z * mult;
    return p.to_int64();
#else
    return (int64_t)((uint64_t)z.v * (uint64_t)mult.v);
#endif
}

int64_t tatvpr_att_mul2(tatvpr_u<TATVPR_VW_E> e, tatvpr_u<TATVPR_VW_RECIP> recip) {
#pragma HLS INLINE off
#if TATVPR_VECTOR_AP
    ap_uint<TATVPR_VW_E + TATVPR_VW_RECIP> p = e * recip;
    return (int64_t)p.to_uint64();
#else
    return (int64_t)((uint64_t)e.v * (uint64_t)recip.v);
#endif
}

namespace {

// e = 2^(-u) in Q15 for u = (z * mult + 2^(shift-1)) >> shift, z = rmax - s: one softmax-only lane's
// element step, z in TATVPR_VW_Z bits signed (>= 0), mult in TATVPR_VW_MULT unsigned, e in TATVPR_VW_E.
inline tatvpr_u<TATVPR_VW_E> att_exp(int32_t rmax, int32_t s, tatvpr_u<TATVPR_VW_MULT> mult,
                                      tatvpr_u<TATVPR_VW_SHIFT> shift) {
#pragma HLS INLINE
    const tatvpr_s<TATVPR_VW_Z> z = (int64_t)rmax - s;
    const int sh = (int)shift.to_int64();
    const int64_t u = (tatvpr_att_mul1(z, mult) + ((int64_t)1 << (sh - 1))) >> sh;
    const int64_t whole = (u >> 8) > 31 ? 31 : (u >> 8);
    return (int64_t)(ATT_EXP2[u & 255] >> whole);
}

// One score row -> its probabilities on the IP's TATVPR_ATT_LANES softmax-only lanes (tatvpr_softmax's
// arithmetic, docs/integer.md): pass 1 e and the row sum (TATVPR_ATT_VW_SUM bits), the reciprocal (33 row
// steps), pass 2 p = sat[0, 255]((e * recip * 255 + 2^31) >> 32), the x 255 as (x << 8) - x (no multiplier);
// 2 ceil(t / lanes) + 33 counted cycles a row. Every multiply goes through tatvpr_att_mul1 / tatvpr_att_mul2,
// at most TATVPR_ATT_LANES of each (the lanes; requested from Vitis HLS, not verified here); the function
// is kept (INLINE off, one call site) so that the pragmas' scope is its body.
void row_softmax(const int32_t s[TMAX], int32_t rmax, uint8_t p[TMAX], int t, int64_t mult, int shift) {
#pragma HLS INLINE off
#pragma HLS ALLOCATION function instances = tatvpr_att_mul1 limit = TATVPR_ATT_LANES
#pragma HLS ALLOCATION function instances = tatvpr_att_mul2 limit = TATVPR_ATT_LANES
    const tatvpr_u<TATVPR_VW_MULT> m = mult;
    const tatvpr_u<TATVPR_VW_SHIFT> sh = shift;
    tatvpr_u<TATVPR_ATT_VW_SUM> sum = 0;
SM_EXP:
    for (int c0 = 0; c0 < t; c0 += L) {
#pragma HLS PIPELINE II = 1
        TATVPR_VCYCLE();
        for (int l = 0; l < L && c0 + l < t; l++) sum = sum.to_int64() + att_exp(rmax, s[c0 + l], m, sh).to_int64();
    }
    TATVPR_ROWOP();
    const tatvpr_u<TATVPR_VW_RECIP> recip = att_recip(sum.to_int64());
SM_NORM:
    for (int c0 = 0; c0 < t; c0 += L) {
#pragma HLS PIPELINE II = 1
        TATVPR_VCYCLE();
        for (int l = 0; l < L && c0 + l < t; l++) {
            const int64_t er = tatvpr_att_mul2(att_exp(rmax, s[c0 + l], m, sh), recip);
            const int64_t v = ((er << 8) - er + ((int64_t)1 << 31)) >> 32;  // e * recip * 255
            p[c0 + l] = (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
        }
    }
}

// S[rb][t] = Q_b[rb][dh] . K[t][dh]^T on the array; row_max[r] = max over the row, as each tile drains.
void block_scores(const int8_t q[R][DMAX], const int8_t k[TMAX][DMAX], int32_t s[R][TMAX], int32_t row_max[R],
                  int rb, int t, int dh) {
    for (int r = 0; r < rb; r++) row_max[r] = INT32_MIN;
QK_M:
    for (int i0 = 0; i0 < rb; i0 += TATVPR_I8_ROWS) {
    QK_N:
        for (int j0 = 0; j0 < t; j0 += TATVPR_I8_COLS) {
            int64_t acc[TATVPR_I8_ROWS][TATVPR_I8_COLS];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
            for (int r = 0; r < TATVPR_I8_ROWS; r++)
                for (int c = 0; c < TATVPR_I8_COLS; c++) acc[r][c] = 0;
        QK_K:
            for (int kk = 0; kk < dh; kk++) {
#pragma HLS PIPELINE II = 1
                TATVPR_I8CYCLE();
                for (int r = 0; r < TATVPR_I8_ROWS && i0 + r < rb; r++)
                    for (int c = 0; c < TATVPR_I8_COLS && j0 + c < t; c++)
                        acc[r][c] += (int64_t)q[i0 + r][kk] * k[j0 + c][kk];
            }
        QK_DRAIN:  // into the score rows, each row's comparator on the way
            for (int r = 0; r < TATVPR_I8_ROWS && i0 + r < rb; r++)
                for (int c = 0; c < TATVPR_I8_COLS && j0 + c < t; c++) {
                    int32_t v = (int32_t)acc[r][c];
                    s[i0 + r][j0 + c] = v;
                    row_max[i0 + r] = v > row_max[i0 + r] ? v : row_max[i0 + r];
                }
        }
    }
}

// O_b[rb][dh] = P_b[rb][t] . V[t][dh] on the array, requantised to int8 into the output rows.
void block_output(const uint8_t p[R][TMAX], const int8_t v[TMAX][DMAX], int8_t *out, int row0, int rb, int t, int dh,
                  int col0, int ld, int64_t mult, int shift) {
    const int64_t half = (int64_t)1 << (shift - 1);
PV_M:
    for (int i0 = 0; i0 < rb; i0 += TATVPR_I8_ROWS) {
    PV_N:
        for (int j0 = 0; j0 < dh; j0 += TATVPR_I8_COLS) {
            int64_t acc[TATVPR_I8_ROWS][TATVPR_I8_COLS];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
            for (int r = 0; r < TATVPR_I8_ROWS; r++)
                for (int c = 0; c < TATVPR_I8_COLS; c++) acc[r][c] = 0;
        PV_K:
            for (int kk = 0; kk < t; kk++) {
#pragma HLS PIPELINE II = 1
                TATVPR_I8CYCLE();
                for (int r = 0; r < TATVPR_I8_ROWS && i0 + r < rb; r++)
                    for (int c = 0; c < TATVPR_I8_COLS && j0 + c < dh; c++)
                        acc[r][c] += (int64_t)p[i0 + r][kk] * v[kk][j0 + c];
            }
        PV_WRITE:
            for (int r = 0; r < TATVPR_I8_ROWS && i0 + r < rb; r++)
                for (int c = 0; c < TATVPR_I8_COLS && j0 + c < dh; c++) {
                    int64_t y = (acc[r][c] * mult + half) >> shift;
                    y = y < -128 ? -128 : (y > 127 ? 127 : y);
                    out[(int64_t)(row0 + i0 + r) * ld + col0 + j0 + c] = (int8_t)y;
                }
        }
    }
}

}  // namespace

int tatvpr_attention(const int8_t *qkv, int8_t *out, int heads, int t, int dh, int64_t sm_mult, int sm_shift,
                     int64_t av_mult, int av_shift) {
    if (heads < 1 || t < 1 || t > TMAX || dh < 1 || dh > DMAX || sm_shift < 1 || sm_shift > 62 || av_shift < 1 ||
        av_shift > 62)
        return -1;
    // on chip: K and V of the head (attn_k / attn_v), the block's Q rows (attn_q), ping-pong score and
    // probability rows (attn_scores / attn_probs) with the score rows' maxima
    static int8_t kbuf[TMAX][DMAX], vbuf[TMAX][DMAX], qbuf[2][R][DMAX];
    static int32_t sbuf[2][R][TMAX], smax[2][R];
    static uint8_t pbuf[2][R][TMAX];
#pragma HLS ARRAY_PARTITION variable = sbuf cyclic factor = TATVPR_ATT_LANES dim = 3
#pragma HLS ARRAY_PARTITION variable = pbuf cyclic factor = TATVPR_ATT_LANES dim = 3
    const int d = heads * dh, ld = 3 * d, nb = (t + R - 1) / R;
HEADS:
    for (int h = 0; h < heads; h++) {
    LOAD_KV:  // one read of the head's K and V
        for (int i = 0; i < t; i++)
            for (int c = 0; c < dh; c++) {
                kbuf[i][c] = qkv[(int64_t)i * ld + d + h * dh + c];
                vbuf[i][c] = qkv[(int64_t)i * ld + 2 * d + h * dh + c];
            }
    SLOTS:  // slot s: QK^T of block s, softmax of block s - 1, P.V of block s - 2
        for (int s = 0; s < nb + 2; s++) {
            if (s < nb) {
                const int r0 = s * R, rb = t - r0 < R ? t - r0 : R;
                for (int r = 0; r < rb; r++)
                    for (int c = 0; c < dh; c++) qbuf[s & 1][r][c] = qkv[(int64_t)(r0 + r) * ld + h * dh + c];
                block_scores(qbuf[s & 1], kbuf, sbuf[s & 1], smax[s & 1], rb, t, dh);
            }
            if (s >= 1 && s <= nb) {
                const int b = s - 1, rb = t - b * R < R ? t - b * R : R;
                for (int r = 0; r < rb; r++)
                    row_softmax(sbuf[b & 1][r], smax[b & 1][r], pbuf[b & 1][r], t, sm_mult, sm_shift);
            }
            if (s >= 2) {
                const int b = s - 2, rb = t - b * R < R ? t - b * R : R;
                block_output(pbuf[b & 1], vbuf, out, b * R, rb, t, dh, h * dh, d, av_mult, av_shift);
            }
        }
    }
    return 0;
}
