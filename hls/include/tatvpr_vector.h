// The vector unit of the accelerator (docs/integer.md, docs/engine.md section 5): LayerNorm,
// softmax, GELU, the residual add, the head's int16 -> int8 requantisation and the descriptor's L2
// normalisation in the integer arithmetic of tatvpr_pynq.integer, bit for bit.
//
// Each element loop processes TATVPR_VLANES elements per iteration (one pipelined II = 1
// iteration per cycle); with TATVPR_COUNT_CYCLES the testbench counts those iterations, which
// is the simulator's vector-unit charge ceil(elements / lanes) x cycles_per_element[kind]
// (layernorm 2 passes, softmax 2 passes: the row max comes with the scores, gelu 1, add 1,
// requant 1, l2norm 2: the sum of squares, then the scaling).
// The per-row steps run between a row's passes, one cycle each, counted apart (row_cycles;
// row_ops counts the rows): LayerNorm's mean mu = floor(sx / d) (16 quotient bits: |sx| <= 2^15 d),
// ssd = sxx - mu (sx + r) (r = sx - d mu, 0 <= r < d; 16 shift-and-add steps, one bit of |mu| a step),
// var = ssd / d (32 quotient bits: ssd < d 2^32), its square root (TATVPR_ISQRT_STEPS = 32 steps) and
// reciprocal 2^47 / sd (48 quotient bits), softmax's reciprocal 2^32 / sum (33 quotient bits), the
// L2 norm's square root and reciprocal 2^47 / sd once for the whole vector (one row):
// TATVPR_ROW_CYCLES_LAYERNORM = 144, TATVPR_ROW_CYCLES_SOFTMAX = 33 and TATVPR_ROW_CYCLES_L2NORM = 80
// per row, the simulator's vector_unit.row_op_cycles (docs/engine.md section 5).
//
// The top-k and bank scheduling of a ternary linear's input (tatvpr_topk_schedule, docs/engine.md
// section 5): per row of K int8 channels, a histogram pass (ceil(K / lanes) cycles: |x| into 129
// bins, the row kept on chip), the threshold scan (TATVPR_ROW_CYCLES_TOPK = 128 row steps: bins 128
// down to 1, one a cycle; magnitude 0 never enters the stream), a select pass (ceil(K / lanes)
// cycles: kept channels appended to their bank's queue, ties to the lower index) and, for the act
// stream, an emit pass of ceil(SIMD / lanes) cycles per chunk: g(m) chunks of SIMD slots, g(m) =
// max(1, max over banks of ceil(kept_b / q)). Per row 2 ceil(K / lanes) + 128 + g(m) ceil(SIMD / lanes).
#ifndef TATVPR_VECTOR_H
#define TATVPR_VECTOR_H

#include <stdint.h>

#ifndef TATVPR_VLANES
#define TATVPR_VLANES 16
#endif

#define TATVPR_ISQRT_STEPS 32
// LayerNorm's mean and variance (rows of at most 65,535 int16 elements): mu's quotient bits, the
// shift-and-add steps of mu (sx + r) (|mu| <= 2^15 < 2^16), ssd / d's quotient bits (ssd < d 2^32)
#define TATVPR_LN_MU_STEPS 16
#define TATVPR_LN_MUL_STEPS 16
#define TATVPR_LN_VAR_STEPS 32
#define TATVPR_ROW_CYCLES_LAYERNORM (TATVPR_LN_MU_STEPS + TATVPR_LN_MUL_STEPS + TATVPR_LN_VAR_STEPS + TATVPR_ISQRT_STEPS + 48)
#define TATVPR_ROW_CYCLES_SOFTMAX 33
#define TATVPR_ROW_CYCLES_L2NORM (TATVPR_ISQRT_STEPS + 48)
// The L2 norm's sum of squares stays below 2^46 (its Q8 square root's radicand below 2^62) for any
// int16 vector shorter than 2^16 elements: the longest vector the unit normalises.
#define TATVPR_L2NORM_MAX_N 65535

// The top-k unit serves one ternary IP: its SIMD and banks (compute.gather.banks) are the IP's, its
// on-chip row and bank queues hold TATVPR_TOPK_KMAX channels (the IP's K_max).
#ifndef TATVPR_TOPK_SIMD
#define TATVPR_TOPK_SIMD 8
#endif
#ifndef TATVPR_TOPK_BANKS
#define TATVPR_TOPK_BANKS TATVPR_TOPK_SIMD
#endif
#ifndef TATVPR_TOPK_KMAX
#define TATVPR_TOPK_KMAX 4096
#endif
#define TATVPR_TOPK_MAGS 128
#define TATVPR_ROW_CYCLES_TOPK TATVPR_TOPK_MAGS
#if TATVPR_TOPK_SIMD % TATVPR_TOPK_BANKS
#error "TATVPR_TOPK_BANKS must divide TATVPR_TOPK_SIMD"
#endif
// The top-k unit's memories (docs/engine.md section 7; rtl/topk_unit.v; sim.buffers.topk_memories),
// declared in tatvpr_topk_schedule: row[L][ceil(K_max / L)] int8 (channel c in memory c mod L),
// hist[L][128] counters of ceil(log2(ceil(K_max / L) + 1)) bits (lane l's magnitudes 1..128, bin
// mag mod 128), queue[B * R][ceil(ceil(K_max / B) / R)] words of 8 + ceil(log2 K_max) bits (value,
// channel), R = max(1, L / B) memories a bank taking one of a cycle's kept channels of the bank each.
#if TATVPR_VLANES % TATVPR_TOPK_BANKS && TATVPR_TOPK_BANKS % TATVPR_VLANES
#error "TATVPR_VLANES and TATVPR_TOPK_BANKS must divide one another"
#endif

// Operand widths of the lane's per-element arithmetic (docs/hls.md "Operand widths of the vector unit";
// the RTL twin rtl/vector_lane.v, docs/rtl.md "The vector unit's lane"). Every multiply of an element goes
// through one of the lane's two multipliers, tatvpr_lane_mul1 (MUL1_A x MUL1_B bits signed, low 64 bits
// of the product kept) and tatvpr_lane_mul2 (MUL2_A x MUL2_B bits signed); their operands are held in
// these widths (ap_int / ap_uint: a value outside the width wraps, as Vitis HLS builds it). Ranges:
//   DV    LayerNorm x - mu, |x - mu| <= 65535                              17 bits signed
//   INV   2^47 / sd (LayerNorm, L2 norm; the row constant), <= 2^47        48 bits unsigned
//   N     LayerNorm (dv * inv + 2^22) >> 23, |n| < 2^32 for rows <= 65535  34 bits signed (the port)
//   GAIN  LayerNorm per-channel gain (Q10; checkpoint: checked at export)  24 bits signed
//   BIAS  LayerNorm per-channel bias (Q26; checkpoint: checked at export)  48 bits signed
//   Z     softmax row max - score, 0 .. 2^32 - 1                           33 bits signed
//   MULT  softmax / requant multiplier, 0 .. 2^31 - 1                      31 bits unsigned
//   E     softmax 2^(-u) from the table, <= 2^15                           16 bits unsigned
//   RECIP softmax 2^32 / sum, sum >= 2^15 (the max's own term)            18 bits unsigned
//   SHIFT requant / residual-add / softmax rounding shift, 1 .. 62         6 bits unsigned
// The residual add's per-channel multiplier is the int32 of its array (signed), its int8 operand int8.
// Each width can be overridden with -D (tests/hls/test_vector_widths.py narrows one by a bit).
#ifndef TATVPR_VW_DV
#define TATVPR_VW_DV 17
#endif
#ifndef TATVPR_VW_INV
#define TATVPR_VW_INV 48
#endif
#ifndef TATVPR_VW_N
#define TATVPR_VW_N 34
#endif
#ifndef TATVPR_VW_GAIN
#define TATVPR_VW_GAIN 24
#endif
#ifndef TATVPR_VW_BIAS
#define TATVPR_VW_BIAS 48
#endif
#ifndef TATVPR_VW_Z
#define TATVPR_VW_Z 33
#endif
#ifndef TATVPR_VW_MULT
#define TATVPR_VW_MULT 31
#endif
#ifndef TATVPR_VW_E
#define TATVPR_VW_E 16
#endif
#ifndef TATVPR_VW_RECIP
#define TATVPR_VW_RECIP 18
#endif
#ifndef TATVPR_VW_SHIFT
#define TATVPR_VW_SHIFT 6
#endif
#define TATVPR_VW_MUL1_A 33  // dv, z, the int8 y, x (int16): the widest is z
#define TATVPR_VW_MUL1_B 49  // inv (48 unsigned), mult (31 unsigned), the add's int32 mult, x
#define TATVPR_VW_MUL2_A 34  // n, e (16 unsigned)
#define TATVPR_VW_MUL2_B 24  // gain, recip (18 unsigned): max(GAIN, RECIP + 1)
#if TATVPR_VW_MUL2_B < TATVPR_VW_GAIN || TATVPR_VW_MUL2_B < TATVPR_VW_RECIP + 1
#error "TATVPR_VW_MUL2_B must hold the LayerNorm gain and the softmax reciprocal"
#endif

// ap_int / ap_uint when the headers are there (Vitis HLS; the C simulation, which passes the
// hls4ml-bundled ap_types directory); otherwise standard types that wrap a value to the same width
// (a g++ build without those headers, e.g. the board-units library of tests/hls/test_board_units.py).
#ifndef TATVPR_VECTOR_AP
#if defined(__SYNTHESIS__)
#define TATVPR_VECTOR_AP 1
#elif defined(__has_include)
#if __has_include(<ap_int.h>)
#define TATVPR_VECTOR_AP 1
#endif
#endif
#endif
#ifndef TATVPR_VECTOR_AP
#define TATVPR_VECTOR_AP 0
#endif

#if TATVPR_VECTOR_AP
#include <ap_int.h>
template <int W>
using tatvpr_s = ap_int<W>;
template <int W>
using tatvpr_u = ap_uint<W>;
#else
// the value of ap_int<W> / ap_uint<W> (W <= 64) assigned from an int64: the low W bits, sign- or zero-extended
template <int W>
struct tatvpr_u;
template <int W>
struct tatvpr_s {
    int64_t v;
    tatvpr_s(int64_t x = 0) : v((int64_t)((uint64_t)x << (64 - W)) >> (64 - W)) {}
    template <int W2>
    tatvpr_s(const tatvpr_s<W2> &o) : tatvpr_s(o.v) {}
    template <int W2>
    tatvpr_s(const tatvpr_u<W2> &o) : tatvpr_s(o.v) {}
    int64_t to_int64() const { return v; }
    operator int64_t() const { return v; }
};
template <int W>
struct tatvpr_u {
    int64_t v;
    tatvpr_u(int64_t x = 0) : v((int64_t)(W >= 64 ? (uint64_t)x : (uint64_t)x & ((1ULL << (W & 63)) - 1))) {}
    template <int W2>
    tatvpr_u(const tatvpr_s<W2> &o) : tatvpr_u(o.v) {}
    template <int W2>
    tatvpr_u(const tatvpr_u<W2> &o) : tatvpr_u(o.v) {}
    int64_t to_int64() const { return v; }
    operator int64_t() const { return v; }
};
#endif
// The lane's multipliers: the low 64 bits of a x b (every product of the kernels fits int64). Not inlined,
// so that the vector top's ALLOCATION pragmas can bound their instances (TATVPR_VLANES each).
int64_t tatvpr_lane_mul1(tatvpr_s<TATVPR_VW_MUL1_A> a, tatvpr_s<TATVPR_VW_MUL1_B> b);
int64_t tatvpr_lane_mul2(tatvpr_s<TATVPR_VW_MUL2_A> a, tatvpr_s<TATVPR_VW_MUL2_B> b);

#ifdef TATVPR_COUNT_CYCLES
void tatvpr_count_vector_cycle();
void tatvpr_count_row_op();
void tatvpr_count_row_cycle();
#define TATVPR_VCYCLE() tatvpr_count_vector_cycle()
#define TATVPR_ROWOP() tatvpr_count_row_op()
#define TATVPR_ROWCYCLE() tatvpr_count_row_cycle()
#else
#define TATVPR_VCYCLE()
#define TATVPR_ROWOP()
#define TATVPR_ROWCYCLE()
#endif

// int16 residual x[t][d] -> int8 y[t][d]; gain/bias per channel (Q10 / Q26, held in TATVPR_VW_GAIN /
// TATVPR_VW_BIAS bits), eps_q in x units^2.
void tatvpr_layernorm(const int16_t *x, int8_t *y, int t, int d, const int64_t *gain, const int64_t *bias,
                      int64_t eps_q);

// int32 scores s[rows][n] with their row maxima -> uint8 probabilities (units of 1/255).
void tatvpr_softmax(const int32_t *s, const int32_t *row_max, uint8_t *p, int rows, int n, int64_t mult, int shift);

// int8 x[n] -> int8 y[n] through the 256-entry table (entry i + 128 for input i).
void tatvpr_gelu(const int8_t *x, int8_t *y, int n, const int8_t *table);

// int16 x[t][d] + per-channel requant(int8 y) -> int16, saturating.
void tatvpr_residual_add(const int16_t *x, const int8_t *y, int16_t *out, int t, int d, const int32_t *mult,
                         const int32_t *shift);

// int16 x[n] -> int8 y[n]: sat8((x * mult + 2^(shift-1)) >> shift), one multiplier for the tensor
// (0 <= mult < 2^31, 1 <= shift <= 62): the head's int8 input from an int16 stream.
void tatvpr_requant(const int16_t *x, int8_t *y, int n, int64_t mult, int shift);

// int16 x[n] -> int16 y[n] = x / ||x|| in Q15, the descriptor (1 <= n <= TATVPR_L2NORM_MAX_N; all
// zeros give zeros): n2 = sum(x^2), sd = max(1, isqrt(n2 * 2^16)), inv = 2^47 / sd,
// y = sat16((x * inv + 2^23) >> 24).
void tatvpr_l2norm(const int16_t *x, int16_t *y, int n);

// int8 x[m][k] -> keep the `keep` largest |x| of every row, ties to the lower index (keep >= k: every
// channel), as tatvpr_pynq.integer.topk_int, then
//   stream = 1: the bank-scheduled act stream of tatvpr_pynq.formats.schedule_activations with
//               TATVPR_TOPK_SIMD slots and TATVPR_TOPK_BANKS banks: tok_chunks[m] and, one after
//               another, tok_chunks[r] * SIMD uint32 slots per row (value | channel << 8, 0 a pad);
//   stream = 0: the kept values in place, int8 y[m][k] (the dense IP's input; no emit pass).
// Returns the pair words written (stream 0: 0), or -1 for a bad shape (m < 1, k < 1,
// k > TATVPR_TOPK_KMAX, keep < 0): nothing written then.
long long tatvpr_topk_schedule(const int8_t *x, int m, int k, int keep, int stream, uint16_t *tok_chunks,
                               uint32_t *pairs, int8_t *y);

#endif
