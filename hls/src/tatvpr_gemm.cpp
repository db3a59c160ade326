// TAT-VPR packed-ternary sparse GEMM IP: implementation of tatvpr_ternary_gemm().
// Formats, requantisation and the loop <-> cycle-count correspondence: tatvpr_gemm.h.
#include "tatvpr_gemm.h"

using namespace tatvpr;

namespace {

// Load the compressed activation stream of the whole layer into the on-chip buffer
// (the activations stay on chip for every fold). Returns a status.
int load_activations(const uint32_t *act_pairs, const uint16_t *tok_nnz, int m, int k,
                     ap_uint<16> tok_chunks[MMAX], idx_t a_idx[CHUNKS_MAX][SIMD],
                     act_t a_val[CHUNKS_MAX][SIMD], int &total_chunks) {
    int total = 0;
    bool bad = false;  // flags instead of early exits keep the loops pipelined / bursting
LOAD_NNZ:
    for (int t = 0; t < m; t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MMAX
#pragma HLS PIPELINE II = 1
        int nnz = tok_nnz[t];
        bad |= nnz > k;
        int chunks = (nnz + SIMD - 1) / SIMD;
        if (chunks == 0) chunks = 1;  // the accumulator-write cycle of an empty token
        tok_chunks[t] = chunks;
        total += chunks;
    }
    if (bad || total > CHUNKS_MAX) return STATUS_BAD_STREAM;
LOAD_PAIRS:
    for (int c = 0; c < total; c++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CHUNKS_MAX
        for (int s = 0; s < SIMD; s++) {
#pragma HLS PIPELINE II = 1
            uint32_t word = act_pairs[c * SIMD + s];
            unsigned idx = (word >> 8) & 0xFFFFu;
            bad |= idx >= (unsigned)k;
            a_idx[c][s] = idx;
            a_val[c][s] = (act_t)(ap_int<8>)(word & 0xFFu);
        }
    }
    total_chunks = total;
    return bad ? STATUS_BAD_STREAM : STATUS_OK;
}

// LOAD_W of ENGINE.md: PE packed rows of fold f -> 2-bit codes, replicated once per SIMD lane
// so that every lane can gather its own channel index in the same cycle. Rows past N are 0.
int load_weights(const uint8_t *weights, int f, int k, int n, int fmt,
                 code_t wbuf[SIMD][PE][KMAX]) {
    const int per_byte = (fmt == FMT_TERNARY2) ? 4 : 5;
    const int row_bytes = (k + per_byte - 1) / per_byte;
    bool bad = false;
LOAD_W_ROWS:
    for (int p = 0; p < PE; p++) {
        const int row = f * PE + p;
    LOAD_W_BYTES:
        for (int b = 0; b < row_bytes; b++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = KMAX / 4
#pragma HLS PIPELINE II = 1
            ap_uint<8> byte = (row < n) ? weights[(long)row * row_bytes + b] : (uint8_t)0;
            ap_uint<10> codes;
            if (fmt == FMT_TERNARY2) {
                codes = byte;  // four 2-bit codes, weight i in bits 2i+1..2i
                for (int i = 0; i < 4; i++) {
#pragma HLS UNROLL
                    bad |= codes.range(2 * i + 1, 2 * i) == 2;
                }
            } else {
                bad |= byte > 242;
                codes = decode_base3(byte);
            }
            for (int i = 0; i < 5; i++) {
#pragma HLS UNROLL
                const int kk = b * per_byte + i;
                if (i < per_byte && kk < k) {
                    for (int s = 0; s < SIMD; s++) {
#pragma HLS UNROLL
                        wbuf[s][p][kk] = codes.range(2 * i + 1, 2 * i);
                    }
                }
            }
        }
    }
    return bad ? STATUS_BAD_WEIGHT : STATUS_OK;
}

// One fold: CHUNK (C_f cycles) over the on-chip activations against the fold's PE weight rows,
// then WRITE its PE output channels of every token.
void compute_fold(int f, int m, int n, int mult, int shift, int total_chunks,
                  const ap_uint<16> tok_chunks[MMAX], const idx_t a_idx[CHUNKS_MAX][SIMD],
                  const act_t a_val[CHUNKS_MAX][SIMD], const code_t wbuf[SIMD][PE][KMAX],
                  const int32_t *bias, int8_t *out) {
    static int8_t obuf[MMAX][PE];
#pragma HLS ARRAY_PARTITION variable = obuf type = complete dim = 2
    int32_t fold_bias[PE];
#pragma HLS ARRAY_PARTITION variable = fold_bias type = complete
    for (int p = 0; p < PE; p++) {
#pragma HLS PIPELINE II = 1
        fold_bias[p] = (f * PE + p < n) ? bias[f * PE + p] : 0;
    }

    acc_t acc[PE];
#pragma HLS ARRAY_PARTITION variable = acc type = complete
    for (int p = 0; p < PE; p++) {
#pragma HLS UNROLL
        acc[p] = 0;
    }
    int token = 0;
    int left = tok_chunks[0];
CHUNK:  // flattened "for m in tokens: for chunk in chunks(m)": one iteration per cycle
    for (int c = 0; c < total_chunks; c++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CHUNKS_MAX
#pragma HLS PIPELINE II = 1
#ifdef TATVPR_COUNT_CYCLES
        tatvpr_count_chunk(f);
#endif
        for (int p = 0; p < PE; p++) {
#pragma HLS UNROLL
            acc_t lanes = 0;  // adder tree over the SIMD lanes of PE p
            for (int s = 0; s < SIMD; s++) {
#pragma HLS UNROLL
                lanes += ternary_lane(wbuf[s][p][a_idx[c][s]], a_val[c][s]);
            }
            acc[p] += lanes;
        }
        if (--left == 0) {  // last chunk of this token: requantise and write PE outputs
            for (int p = 0; p < PE; p++) {
#pragma HLS UNROLL
                obuf[token][p] = requantize((ap_int<64>)acc[p] + fold_bias[p], mult, shift);
                acc[p] = 0;
            }
            token++;
            if (token < m) left = tok_chunks[token];
        }
    }
WRITE:
    for (int t = 0; t < m; t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MMAX
        for (int p = 0; p < PE; p++) {
#pragma HLS PIPELINE II = 1
            if (f * PE + p < n) out[(long)t * n + f * PE + p] = obuf[t][p];
        }
    }
}

}  // namespace

extern "C" int tatvpr_ternary_gemm(const uint32_t *act_pairs, const uint16_t *tok_nnz,
                                   const uint8_t *weights, const int32_t *bias, int8_t *out,
                                   int m, int k, int n, int fmt, int mult, int shift) {
#pragma HLS INTERFACE mode = m_axi port = act_pairs offset = slave bundle = gmem_act depth = 65536
#pragma HLS INTERFACE mode = m_axi port = tok_nnz offset = slave bundle = gmem_act depth = 1024
#pragma HLS INTERFACE mode = m_axi port = bias offset = slave bundle = gmem_act depth = 4096
#pragma HLS INTERFACE mode = m_axi port = out offset = slave bundle = gmem_act depth = 65536
#pragma HLS INTERFACE mode = m_axi port = weights offset = slave bundle = gmem_w depth = 65536
#pragma HLS INTERFACE mode = s_axilite port = act_pairs bundle = control
#pragma HLS INTERFACE mode = s_axilite port = tok_nnz bundle = control
#pragma HLS INTERFACE mode = s_axilite port = weights bundle = control
#pragma HLS INTERFACE mode = s_axilite port = bias bundle = control
#pragma HLS INTERFACE mode = s_axilite port = out bundle = control
#pragma HLS INTERFACE mode = s_axilite port = m bundle = control
#pragma HLS INTERFACE mode = s_axilite port = k bundle = control
#pragma HLS INTERFACE mode = s_axilite port = n bundle = control
#pragma HLS INTERFACE mode = s_axilite port = fmt bundle = control
#pragma HLS INTERFACE mode = s_axilite port = mult bundle = control
#pragma HLS INTERFACE mode = s_axilite port = shift bundle = control
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control

    if (m <= 0 || m > MMAX || k <= 0 || k > KMAX || n <= 0) return STATUS_BAD_SHAPE;
    if (fmt != FMT_TERNARY2 && fmt != FMT_TERNARY16) return STATUS_BAD_FORMAT;
    if (shift < 1 || shift > 62 || mult < 0) return STATUS_BAD_REQUANT;

    // On-chip buffers. SIMD lanes (and PE rows) are split into separate memories so that a
    // CHUNK iteration reads SIMD pairs and PE x SIMD weight codes in one cycle.
    static ap_uint<16> tok_chunks[MMAX];
    static idx_t a_idx[CHUNKS_MAX][SIMD];
    static act_t a_val[CHUNKS_MAX][SIMD];
    static code_t wbuf0[SIMD][PE][KMAX];
    static code_t wbuf1[SIMD][PE][KMAX];
#pragma HLS ARRAY_PARTITION variable = a_idx type = complete dim = 2
#pragma HLS ARRAY_PARTITION variable = a_val type = complete dim = 2
#pragma HLS ARRAY_PARTITION variable = wbuf0 type = complete dim = 1
#pragma HLS ARRAY_PARTITION variable = wbuf0 type = complete dim = 2
#pragma HLS ARRAY_PARTITION variable = wbuf1 type = complete dim = 1
#pragma HLS ARRAY_PARTITION variable = wbuf1 type = complete dim = 2

    int total_chunks = 0;
    int status = load_activations(act_pairs, tok_nnz, m, k, tok_chunks, a_idx, a_val, total_chunks);
    if (status != STATUS_OK) return status;

    // Ping-pong weight buffers: fold f computes from one while fold f+1 loads into the other
    // (ENGINE.md double buffering). The two calls in a FOLD iteration touch disjoint buffers
    // and different AXI masters, so the tool may run them concurrently (check the csynth
    // schedule); the C simulation runs them in order, which gives the same results.
    const int folds = (n + PE - 1) / PE;
    status = load_weights(weights, 0, k, n, fmt, wbuf0);
    if (status != STATUS_OK) return status;
FOLD:
    for (int f = 0; f < folds; f++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 512
        const bool more = f + 1 < folds;
        int next = STATUS_OK;
        if ((f & 1) == 0) {
            compute_fold(f, m, n, mult, shift, total_chunks, tok_chunks, a_idx, a_val, wbuf0, bias, out);
            if (more) next = load_weights(weights, f + 1, k, n, fmt, wbuf1);
        } else {
            compute_fold(f, m, n, mult, shift, total_chunks, tok_chunks, a_idx, a_val, wbuf1, bias, out);
            if (more) next = load_weights(weights, f + 1, k, n, fmt, wbuf0);
        }
        if (next != STATUS_OK) return next;
    }
    return STATUS_OK;
}
