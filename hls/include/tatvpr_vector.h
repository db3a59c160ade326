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
// row_ops counts the rows): LayerNorm's square root (TATVPR_ISQRT_STEPS = 32 steps) and
// reciprocal 2^47 / sd (48 quotient bits), softmax's reciprocal 2^32 / sum (33 quotient bits), the
// L2 norm's square root and reciprocal 2^47 / sd once for the whole vector (one row):
// TATVPR_ROW_CYCLES_LAYERNORM = 80, TATVPR_ROW_CYCLES_SOFTMAX = 33 and TATVPR_ROW_CYCLES_L2NORM = 80
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
#define TATVPR_ROW_CYCLES_LAYERNORM (TATVPR_ISQRT_STEPS + 48)
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

// int16 residual x[t][d] -> int8 y[t][d]; gain/bias per channel (Q10 / Q26), eps_q in x units^2.
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
