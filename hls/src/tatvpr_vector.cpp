// Vector unit kernels: see tatvpr_vector.h and docs/integer.md for the arithmetic.
#include "tatvpr_vector.h"
#if defined(__SYNTHESIS__) || defined(TATVPR_TOPK_AP_TYPES)  // TATVPR_TOPK_AP_TYPES: the same types in C
#include <ap_int.h>
#endif

namespace {

const int LN_F = 16, LN_G = 10, LN_SD_BITS = 8, U_BITS = 8, EXP2_Q = 15;

// round(2^15 * 2^(-f/256)), f = 0..255 (the numpy model's EXP2_TABLE)
const int32_t EXP2_TABLE[256] = {
#include "tatvpr_exp2_table.inc"
};

inline int64_t sat(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

// floor(sqrt(n)) for 0 <= n < 2^62: restoring square root, one result bit per step, always
// TATVPR_ISQRT_STEPS = 32 steps (bit = 4^31 .. 4^0; a step with bit > rem while root = 0 changes
// nothing, so the fixed count gives the same root as skipping them). Each step is one row-op cycle.
int64_t isqrt64(int64_t n) {
    uint64_t rem = (uint64_t)n, root = 0, bit = 1ULL << 62;
ISQRT:
    for (int step = 0; step < TATVPR_ISQRT_STEPS; step++) {
#pragma HLS PIPELINE II = 1
        TATVPR_ROWCYCLE();
        if (rem >= root + bit) {
            rem -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    return (int64_t)root;
}

// floor(2^e / d) for 1 <= d < 2^62, e < 63: restoring division, one quotient bit per step, e + 1
// steps (the dividend's bits, most significant first). Each step is one row-op cycle.
int64_t div_pow2(int e, int64_t d) {
    uint64_t rem = 0, q = 0;
DIV:
    for (int i = e; i >= 0; i--) {
#pragma HLS PIPELINE II = 1
        TATVPR_ROWCYCLE();
        rem = (rem << 1) | (i == e ? 1u : 0u);
        q <<= 1;
        if (rem >= (uint64_t)d) {
            rem -= (uint64_t)d;
            q |= 1;
        }
    }
    return (int64_t)q;
}

// floor(n / d) for 1 <= d and 0 <= n < d 2^bits: restoring division, one quotient bit per step, `bits`
// steps (the remainder starts at n >> bits < d, then n's low bits come in from the top); *rem = n - q d.
// Each step is one row-op cycle.
uint64_t div_steps(uint64_t n, uint64_t d, int bits, uint64_t *rem) {
    uint64_t r = n >> bits, q = 0;
DIVN:
    for (int i = bits - 1; i >= 0; i--) {
#pragma HLS PIPELINE II = 1
        TATVPR_ROWCYCLE();
        r = (r << 1) | ((n >> i) & 1);
        q <<= 1;
        if (r >= d) {
            r -= d;
            q |= 1;
        }
    }
    *rem = r;
    return q;
}

// acc - q u for 0 <= q < 2^TATVPR_LN_MUL_STEPS: shift and subtract, one bit of q per step, least
// significant first (u << i). Each step is one row-op cycle.
int64_t mul_sub_steps(int64_t acc, uint64_t q, int64_t u) {
MULS:
    for (int i = 0; i < TATVPR_LN_MUL_STEPS; i++) {
#pragma HLS PIPELINE II = 1
        TATVPR_ROWCYCLE();
        if ((q >> i) & 1) acc -= (int64_t)((uint64_t)u << i);
    }
    return acc;
}

}  // namespace

// The lane's two multipliers (tatvpr_vector.h). Vitis HLS: a x b is the exact product of the port widths
// (MUL1: 33 x 49 -> 4 DSP48E2, MUL2: 34 x 24 -> 2 by the UG579 tiling rule), its low 64 bits kept. The C
// build without ap_types: the same low 64 bits through an unsigned (wrapping) multiply.
int64_t tatvpr_lane_mul1(tatvpr_s<TATVPR_VW_MUL1_A> a, tatvpr_s<TATVPR_VW_MUL1_B> b) {
#pragma HLS INLINE off
#if TATVPR_VECTOR_AP
    ap_int<64> p = a * b;
    return p.to_int64();
#else
    return (int64_t)((uint64_t)a.v * (uint64_t)b.v);
#endif
}

int64_t tatvpr_lane_mul2(tatvpr_s<TATVPR_VW_MUL2_A> a, tatvpr_s<TATVPR_VW_MUL2_B> b) {
#pragma HLS INLINE off
#if TATVPR_VECTOR_AP
    ap_int<64> p = a * b;
    return p.to_int64();
#else
    return (int64_t)((uint64_t)a.v * (uint64_t)b.v);
#endif
}

// The op kernels below are inlined into their caller (the vector top), so that every op's calls of the
// lane multipliers are in one function, where the top's ALLOCATION pragmas bound them.
void tatvpr_layernorm(const int16_t *x, int8_t *y, int t, int d, const int64_t *gain, const int64_t *bias,
                      int64_t eps_q) {
#pragma HLS INLINE
TOKENS:
    for (int i = 0; i < t; i++) {
        const int16_t *row = x + (int64_t)i * d;
        int64_t sx = 0, sxx = 0;
    STATS:  // pass 1: sum and sum of squares
        for (int c0 = 0; c0 < d; c0 += TATVPR_VLANES) {
#pragma HLS PIPELINE II = 1
            TATVPR_VCYCLE();
            for (int l = 0; l < TATVPR_VLANES && c0 + l < d; l++) {
                int16_t v = row[c0 + l];
                sx += v;
                sxx += tatvpr_lane_mul1(v, v);
            }
        }
        TATVPR_ROWOP();
        // mu = floor(sx / d) (numpy's //): |sx| <= 2^15 d, so the magnitude's quotient (of -sx + d - 1
        // when sx < 0) is below 2^16; r = sx - d mu, 0 <= r < d, from the divider's remainder
        const bool neg = sx < 0;
        uint64_t rem;
        const uint64_t q = div_steps(neg ? (uint64_t)(-sx) + (uint64_t)d - 1 : (uint64_t)sx, (uint64_t)d,
                                     TATVPR_LN_MU_STEPS, &rem);
        const int64_t mu = neg ? -(int64_t)q : (int64_t)q;
        const int64_t r = neg ? (int64_t)d - 1 - (int64_t)rem : (int64_t)rem;
        // sum((x - mu)^2) = sxx - 2 mu sx + d mu^2 = sxx - mu (sx + r) = sxx - q u, u = +-(sx + r)
        const int64_t u = neg ? -(sx + r) : sx + r;
        int64_t ssd = mul_sub_steps(sxx, q, u);
        // ssd / d: ssd <= d 65535^2 < d 2^32 (|x - mu| <= 65535)
        int64_t var = (int64_t)div_steps((uint64_t)ssd, (uint64_t)d, TATVPR_LN_VAR_STEPS, &rem) + eps_q;
        int64_t sd = isqrt64(var << (2 * LN_SD_BITS));
        if (sd < 1) sd = 1;
        const tatvpr_u<TATVPR_VW_INV> inv = div_pow2(31 + LN_F, sd);  // (1 << 47) / sd
        const int sh = 31 - LN_SD_BITS, fg = LN_F + LN_G;
    NORM:  // pass 2: normalise, per-channel gain and bias, saturate to int8
        for (int c0 = 0; c0 < d; c0 += TATVPR_VLANES) {
#pragma HLS PIPELINE II = 1
            TATVPR_VCYCLE();
            for (int l = 0; l < TATVPR_VLANES && c0 + l < d; l++) {
                int c = c0 + l;
                const tatvpr_s<TATVPR_VW_DV> dv = (int64_t)row[c] - mu;
                const tatvpr_s<TATVPR_VW_N> n = (tatvpr_lane_mul1(dv, inv) + ((int64_t)1 << (sh - 1))) >> sh;
                const tatvpr_s<TATVPR_VW_GAIN> g = gain[c];
                const tatvpr_s<TATVPR_VW_BIAS> b = bias[c];
                int64_t v = (tatvpr_lane_mul2(n, g) + b.to_int64() + ((int64_t)1 << (fg - 1))) >> fg;
                y[(int64_t)i * d + c] = (int8_t)sat(v, -128, 127);
            }
        }
    }
}

void tatvpr_softmax(const int32_t *s, const int32_t *row_max, uint8_t *p, int rows, int n, int64_t mult, int shift) {
#pragma HLS INLINE
    const tatvpr_u<TATVPR_VW_MULT> m = mult;
    const tatvpr_u<TATVPR_VW_SHIFT> sh = shift;
    const int64_t half = (int64_t)1 << (sh.to_int64() - 1);
ROWS:
    for (int r = 0; r < rows; r++) {
        const int32_t *row = s + (int64_t)r * n;
        int64_t sum = 0;
    EXP:  // pass 1: 2^(-u) from the table, row sum
        for (int c0 = 0; c0 < n; c0 += TATVPR_VLANES) {
#pragma HLS PIPELINE II = 1
            TATVPR_VCYCLE();
            for (int l = 0; l < TATVPR_VLANES && c0 + l < n; l++) {
                const tatvpr_s<TATVPR_VW_Z> z = (int64_t)row_max[r] - row[c0 + l];
                int64_t u = (tatvpr_lane_mul1(z, m) + half) >> sh.to_int64();
                int64_t whole = u >> U_BITS;
                if (whole > 31) whole = 31;
                const tatvpr_u<TATVPR_VW_E> e = EXP2_TABLE[u & ((1 << U_BITS) - 1)] >> whole;
                sum += e.to_int64();
            }
        }
        TATVPR_ROWOP();
        const tatvpr_u<TATVPR_VW_RECIP> recip = div_pow2(32, sum);  // (1 << 32) / sum
    NORM:  // pass 2: recompute e (cheaper than storing it), scale by the reciprocal
        for (int c0 = 0; c0 < n; c0 += TATVPR_VLANES) {
#pragma HLS PIPELINE II = 1
            TATVPR_VCYCLE();
            for (int l = 0; l < TATVPR_VLANES && c0 + l < n; l++) {
                const tatvpr_s<TATVPR_VW_Z> z = (int64_t)row_max[r] - row[c0 + l];
                int64_t u = (tatvpr_lane_mul1(z, m) + half) >> sh.to_int64();
                int64_t whole = u >> U_BITS;
                if (whole > 31) whole = 31;
                const tatvpr_u<TATVPR_VW_E> e = EXP2_TABLE[u & ((1 << U_BITS) - 1)] >> whole;
                int64_t v = (tatvpr_lane_mul2(e, recip) * 255 + ((int64_t)1 << 31)) >> 32;  // e * 255 * recip
                p[(int64_t)r * n + c0 + l] = (uint8_t)sat(v, 0, 255);
            }
        }
    }
    (void)EXP2_Q;
}

void tatvpr_gelu(const int8_t *x, int8_t *y, int n, const int8_t *table) {
#pragma HLS INLINE
GELU:
    for (int c0 = 0; c0 < n; c0 += TATVPR_VLANES) {
#pragma HLS PIPELINE II = 1
        TATVPR_VCYCLE();
        for (int l = 0; l < TATVPR_VLANES && c0 + l < n; l++) y[c0 + l] = table[(int)x[c0 + l] + 128];
    }
}

void tatvpr_residual_add(const int16_t *x, const int8_t *y, int16_t *out, int t, int d, const int32_t *mult,
                         const int32_t *shift) {
#pragma HLS INLINE
    const int64_t total = (int64_t)t * d;
ADD:
    for (int64_t e0 = 0; e0 < total; e0 += TATVPR_VLANES) {
#pragma HLS PIPELINE II = 1
        TATVPR_VCYCLE();
        for (int l = 0; l < TATVPR_VLANES && e0 + l < total; l++) {
            int64_t e = e0 + l;
            int c = (int)(e % d);
            const tatvpr_u<TATVPR_VW_SHIFT> sh = shift[c];
            int64_t v = (tatvpr_lane_mul1(y[e], mult[c]) + ((int64_t)1 << (sh.to_int64() - 1))) >> sh.to_int64();
            out[e] = (int16_t)sat((int64_t)x[e] + sat(v, -32768, 32767), -32768, 32767);
        }
    }
}

void tatvpr_requant(const int16_t *x, int8_t *y, int n, int64_t mult, int shift) {
#pragma HLS INLINE
    const tatvpr_u<TATVPR_VW_MULT> m = mult;
    const tatvpr_u<TATVPR_VW_SHIFT> sh = shift;
    const int64_t half = (int64_t)1 << (sh.to_int64() - 1);
REQUANT:
    for (int c0 = 0; c0 < n; c0 += TATVPR_VLANES) {
#pragma HLS PIPELINE II = 1
        TATVPR_VCYCLE();
        for (int l = 0; l < TATVPR_VLANES && c0 + l < n; l++)
            y[c0 + l] = (int8_t)sat((tatvpr_lane_mul1(x[c0 + l], m) + half) >> sh.to_int64(), -128, 127);
    }
}

void tatvpr_l2norm(const int16_t *x, int16_t *y, int n) {
#pragma HLS INLINE
    const int L2_SD_BITS = 8, L2_SHIFT = 24;  // sd in Q8; x * 2^47 / (||x|| * 2^8) >> 24 = x / ||x|| in Q15
    int64_t n2 = 0;
SUMSQ:  // pass 1: the sum of squares (below 2^46 for n <= TATVPR_L2NORM_MAX_N)
    for (int c0 = 0; c0 < n; c0 += TATVPR_VLANES) {
#pragma HLS PIPELINE II = 1
        TATVPR_VCYCLE();
        for (int l = 0; l < TATVPR_VLANES && c0 + l < n; l++) n2 += tatvpr_lane_mul1(x[c0 + l], x[c0 + l]);
    }
    TATVPR_ROWOP();
    int64_t sd = isqrt64(n2 << (2 * L2_SD_BITS));
    if (sd < 1) sd = 1;
    const tatvpr_u<TATVPR_VW_INV> inv = div_pow2(47, sd);  // (1 << 47) / sd, < 2^40 (sd >= 2^8 when n2 > 0)
    const int64_t half = (int64_t)1 << (L2_SHIFT - 1);
SCALE:  // pass 2: x * inv, rounded, saturated to int16
    for (int c0 = 0; c0 < n; c0 += TATVPR_VLANES) {
#pragma HLS PIPELINE II = 1
        TATVPR_VCYCLE();
        for (int l = 0; l < TATVPR_VLANES && c0 + l < n; l++)
            y[c0 + l] = (int16_t)sat((tatvpr_lane_mul1(x[c0 + l], inv) + half) >> L2_SHIFT, -32768, 32767);
    }
}

// The top-k unit's memory geometry (tatvpr_vector.h; sim.buffers.topk_memories)
constexpr int topk_clog2(int x) { return x <= 1 ? 0 : 1 + topk_clog2((x + 1) / 2); }
const int TOPK_ROWDEPTH = (TATVPR_TOPK_KMAX + TATVPR_VLANES - 1) / TATVPR_VLANES;
const int TOPK_COUNT_BITS = topk_clog2(TOPK_ROWDEPTH + 1);
const int TOPK_QMEMS = (TATVPR_VLANES + TATVPR_TOPK_BANKS - 1) / TATVPR_TOPK_BANKS;  // max(1, L / B)
const int TOPK_QDEPTH = ((TATVPR_TOPK_KMAX + TATVPR_TOPK_BANKS - 1) / TATVPR_TOPK_BANKS + TOPK_QMEMS - 1) / TOPK_QMEMS;
const int TOPK_IDX_BITS = topk_clog2(TATVPR_TOPK_KMAX);
#if defined(__SYNTHESIS__) || defined(TATVPR_TOPK_AP_TYPES)  // Vitis HLS builds these widths; the C simulation holds the same values in standard types
typedef ap_uint<TOPK_COUNT_BITS> topk_count_t;
typedef ap_uint<8 + TOPK_IDX_BITS> topk_word_t;
#else
typedef uint16_t topk_count_t;
typedef uint32_t topk_word_t;
#endif

long long tatvpr_topk_schedule(const int8_t *x, int m, int k, int keep, int stream, uint16_t *tok_chunks,
                               uint32_t *pairs, int8_t *y) {
    // Storage and parallelism (docs/engine.md section 7, the same structure as rtl/topk_unit.v and
    // what sim.buffers.topk_memories charges): L = TATVPR_VLANES lanes, B = TATVPR_TOPK_BANKS banks.
    const int L = TATVPR_VLANES, B = TATVPR_TOPK_BANKS, S = TATVPR_TOPK_SIMD, Q = TATVPR_TOPK_SIMD / TATVPR_TOPK_BANKS;
    const int R = TOPK_QMEMS;
    // the row, kept on chip between the passes (one DDR read): channel c in memory c mod L
    static int8_t row[TATVPR_VLANES][TOPK_ROWDEPTH];
#pragma HLS ARRAY_PARTITION variable = row type = complete dim = 1
    // per lane, the count of each magnitude 1..128 (bin mag mod 128), read-modify-written a cycle;
    // all zero between rows (the scan clears each bin it reads)
    static topk_count_t hist[TATVPR_VLANES][TATVPR_TOPK_MAGS];
#pragma HLS ARRAY_PARTITION variable = hist type = complete dim = 1
#pragma HLS BIND_STORAGE variable = hist type = ram_1p impl = lutram
#pragma HLS DEPENDENCE variable = hist type = inter false
    // per bank b its kept channels in ascending order (value | channel << 8), R memories a bank:
    // entry e in queue[b * R + e mod R][e / R]; a cycle's kept entries of one bank are consecutive
    static topk_word_t queue[TATVPR_TOPK_BANKS * TOPK_QMEMS][TOPK_QDEPTH];
#pragma HLS ARRAY_PARTITION variable = queue type = complete dim = 1
    if (m < 1 || k < 1 || k > TATVPR_TOPK_KMAX || keep < 0) return -1;
    long long out = 0;
ROWS:
    for (int r = 0; r < m; r++) {
        const int8_t *xr = x + (int64_t)r * k;
        int last_a[TATVPR_VLANES], last_n[TATVPR_VLANES];  // the histogram update's forwarding registers
#pragma HLS ARRAY_PARTITION variable = last_a type = complete
#pragma HLS ARRAY_PARTITION variable = last_n type = complete
        for (int l = 0; l < L; l++) last_a[l] = -1;
    HIST:  // pass 1: the row into the on-chip row buffer, |x| (1..128) into the lane's bin
        for (int c0 = 0; c0 < k; c0 += L) {
#pragma HLS PIPELINE II = 1
            TATVPR_VCYCLE();
            for (int l = 0; l < L && c0 + l < k; l++) {
                int v = xr[c0 + l], a = v < 0 ? -v : v;
                row[l][c0 / L] = (int8_t)v;
                if (a != 0) {
                    int bin = a % TATVPR_TOPK_MAGS;
                    int n = (bin == last_a[l] ? last_n[l] : (int)hist[l][bin]) + 1;
                    hist[l][bin] = (topk_count_t)n;
                    last_a[l] = bin;
                    last_n[l] = n;
                }
            }
        }
        // the threshold magnitude thr: fewer than keep channels above it, at least keep at or above;
        // ties = how many of the channels at thr to keep (the lowest indices). None found (the row has
        // at most keep nonzero channels): thr = 0, every nonzero channel kept.
        TATVPR_ROWOP();
        int above = 0, thr = 0, ties = 0;
        bool found = false;
    SCAN:  // bins 128 .. 1, one a cycle: the lanes' counts summed, the bin cleared for the next row
        for (int mag = TATVPR_TOPK_MAGS; mag >= 1; mag--) {
#pragma HLS PIPELINE II = 1
            TATVPR_ROWCYCLE();
            int n = 0;
            for (int l = 0; l < L; l++) {
                n += (int)hist[l][mag % TATVPR_TOPK_MAGS];
                hist[l][mag % TATVPR_TOPK_MAGS] = 0;
            }
            if (!found && above + n >= keep) {
                thr = mag;
                ties = keep - above;
                found = true;
            }
            above += n;
        }
        int cnt[TATVPR_TOPK_BANKS];
#pragma HLS ARRAY_PARTITION variable = cnt type = complete
        for (int b = 0; b < B; b++) cnt[b] = 0;
    SELECT:  // pass 2: kept channels (|x| > thr, or = thr while ties last, in channel order) to their bank
        for (int c0 = 0; c0 < k; c0 += L) {
#pragma HLS PIPELINE II = 1
            TATVPR_VCYCLE();
            for (int l = 0; l < L && c0 + l < k; l++) {
                int c = c0 + l, v = row[l][c0 / L], a = v < 0 ? -v : v;
                bool kept = false;
                if (v != 0 && a > thr) {
                    kept = true;
                } else if (v != 0 && a == thr && ties > 0) {  // the lanes at thr before: a prefix count
                    kept = true;
                    ties--;
                }
                if (stream) {
                    if (kept) {  // the bank's next entry: its R memories take one each
                        int b = c % B, e = cnt[b]++;
                        queue[b * R + e % R][e / R] = (topk_word_t)((uint32_t)(uint8_t)v | ((uint32_t)c << 8));
                    }
                } else {
                    y[(int64_t)r * k + c] = kept ? (int8_t)v : (int8_t)0;
                }
            }
        }
        if (!stream) continue;
        int g = 1;
        for (int b = 0; b < B; b++) {
            int gb = (cnt[b] + Q - 1) / Q;
            g = gb > g ? gb : g;
        }
        tok_chunks[r] = (uint16_t)g;
    EMIT:  // chunk j, slot s = i * B + b: bank b's entry j * q + i, or a pad
        for (int j = 0; j < g; j++) {
            for (int s0 = 0; s0 < S; s0 += L) {
#pragma HLS PIPELINE II = 1
                TATVPR_VCYCLE();
                for (int l = 0; l < L && s0 + l < S; l++) {
                    int s = s0 + l, b = s % B, e = j * Q + s / B;
                    pairs[out + (int64_t)j * S + s] = e < cnt[b] ? (uint32_t)queue[b * R + e % R][e / R] : 0u;
                }
            }
        }
        out += (long long)g * S;
    }
    return out;
}
