// The int8 unit of the accelerator (docs/engine.md section 5, docs/integer.md): an
// output-stationary TATVPR_I8_ROWS x TATVPR_I8_COLS grid of int8 MACs on DSPs. One K-loop
// iteration per cycle updates every accumulator of the tile, so the counted iterations are
// batch * ceil(m / rows) * ceil(n / cols) * k: the simulator's int8-unit cycles without the
// pipeline depth.
#ifndef TATVPR_INT8_H
#define TATVPR_INT8_H

#include <stdint.h>

#ifndef TATVPR_I8_ROWS
#define TATVPR_I8_ROWS 16
#endif
#ifndef TATVPR_I8_COLS
#define TATVPR_I8_COLS 16
#endif

#ifdef TATVPR_COUNT_CYCLES
void tatvpr_count_int8_cycle();
#define TATVPR_I8CYCLE() tatvpr_count_int8_cycle()
#else
#define TATVPR_I8CYCLE()
#endif

enum { TATVPR_I8_OUT32 = 0, TATVPR_I8_OUT8 = 1, TATVPR_I8_OUT16 = 2 };

// a[batch][m][k] (int8 values, or uint8 attention probabilities: 9 bits), b[batch][k][n] int8,
// bias[n] int32 (or null) in accumulator units. mode OUT32: out32 = acc + bias (attention
// scores); OUT8 / OUT16: sat((acc + bias) * mult + 2^(shift-1)) >> shift) to int8 / int16.
void tatvpr_int8_gemm(const int16_t *a, const int8_t *b, const int32_t *bias, int32_t *out32, int8_t *out8,
                      int16_t *out16, int batch, int m, int k, int n, int mode, int64_t mult, int shift);

#endif
