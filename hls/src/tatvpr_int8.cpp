// int8 unit kernel: see tatvpr_int8.h.
#include "tatvpr_int8.h"

void tatvpr_int8_gemm(const int16_t *a, const int8_t *b, const int32_t *bias, int32_t *out32, int8_t *out8,
                      int16_t *out16, int batch, int m, int k, int n, int mode, int64_t mult, int shift) {
    const int64_t half = shift >= 1 ? ((int64_t)1 << (shift - 1)) : 0;
BATCH:
    for (int bt = 0; bt < batch; bt++) {
        const int16_t *ab = a + (int64_t)bt * m * k;
        const int8_t *bb = b + (int64_t)bt * k * n;
    TILE_M:
        for (int i0 = 0; i0 < m; i0 += TATVPR_I8_ROWS) {
        TILE_N:
            for (int j0 = 0; j0 < n; j0 += TATVPR_I8_COLS) {
                int64_t acc[TATVPR_I8_ROWS][TATVPR_I8_COLS];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
                for (int r = 0; r < TATVPR_I8_ROWS; r++)
                    for (int c = 0; c < TATVPR_I8_COLS; c++) acc[r][c] = 0;
            K:
                for (int kk = 0; kk < k; kk++) {
#pragma HLS PIPELINE II = 1
                    TATVPR_I8CYCLE();
                    for (int r = 0; r < TATVPR_I8_ROWS; r++) {
                        if (i0 + r >= m) break;
                        int64_t av = ab[(int64_t)(i0 + r) * k + kk];
                        for (int c = 0; c < TATVPR_I8_COLS; c++) {
                            if (j0 + c >= n) break;
                            acc[r][c] += av * bb[(int64_t)kk * n + j0 + c];
                        }
                    }
                }
            WRITE:
                for (int r = 0; r < TATVPR_I8_ROWS && i0 + r < m; r++) {
                    for (int c = 0; c < TATVPR_I8_COLS && j0 + c < n; c++) {
                        int64_t v = acc[r][c] + (bias ? bias[j0 + c] : 0);
                        int64_t o = (int64_t)(i0 + r) * n + j0 + c + (int64_t)bt * m * n;
                        if (mode == TATVPR_I8_OUT32) {
                            out32[o] = (int32_t)v;
                        } else {
                            int64_t q = (v * mult + half) >> shift;
                            int64_t lo = mode == TATVPR_I8_OUT8 ? -128 : -32768, hi = mode == TATVPR_I8_OUT8 ? 127 : 32767;
                            q = q < lo ? lo : (q > hi ? hi : q);
                            if (mode == TATVPR_I8_OUT8) out8[o] = (int8_t)q;
                            else out16[o] = (int16_t)q;
                        }
                    }
                }
            }
        }
    }
}
