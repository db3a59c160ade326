// The vector unit of the accelerator (docs/integer.md, docs/engine.md section 5): LayerNorm,
// softmax, GELU and the residual add in the integer arithmetic of tatvpr_pynq.integer, bit for bit.
//
// Each element loop processes TATVPR_VLANES elements per iteration (one pipelined II = 1
// iteration per cycle); with TATVPR_COUNT_CYCLES the testbench counts those iterations, which
// is the simulator's vector-unit charge ceil(elements / lanes) x cycles_per_element[kind]
// (layernorm 2 passes, softmax 2 passes: the row max comes with the scores, gelu 1, add 1).
// The per-row steps run between a row's passes, one cycle each, counted apart (row_cycles;
// row_ops counts the rows): LayerNorm's square root (TATVPR_ISQRT_STEPS = 32 steps) and
// reciprocal 2^47 / sd (48 quotient bits), softmax's reciprocal 2^32 / sum (33 quotient bits):
// TATVPR_ROW_CYCLES_LAYERNORM = 80 and TATVPR_ROW_CYCLES_SOFTMAX = 33 per row, the simulator's
// vector_unit.row_op_cycles (docs/engine.md section 5).
#ifndef TATVPR_VECTOR_H
#define TATVPR_VECTOR_H

#include <stdint.h>

#ifndef TATVPR_VLANES
#define TATVPR_VLANES 16
#endif

#define TATVPR_ISQRT_STEPS 32
#define TATVPR_ROW_CYCLES_LAYERNORM (TATVPR_ISQRT_STEPS + 48)
#define TATVPR_ROW_CYCLES_SOFTMAX 33

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

#endif
