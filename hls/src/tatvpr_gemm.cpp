// TAT-VPR packed-ternary sparse GEMM IP: implementation of tatvpr_ternary_gemm().
// Formats, buffers, requantisation and the loop <-> cycle-count correspondence: tatvpr_gemm.h.
#include "tatvpr_gemm.h"

using namespace tatvpr;

namespace {

// Load the bank-scheduled activation stream of the whole layer into the on-chip chunk buffer
// (the activations stay on chip for every fold) and check it. Returns a status.
int load_activations(const uint32_t *act_pairs, const uint16_t *tok_chunks, int m, int k,
                     slot_t abuf[CHUNKS_MAX][SIMD], int &total_chunks) {
    // a dense token: bank 0 holds ceil(K / B) channels, q of them per chunk
    const int token_chunks_max = ((k + BANKS - 1) / BANKS + LANES_PER_BANK - 1) / LANES_PER_BANK;
    int total = 0;
    bool bad = false;  // flags instead of early exits keep the loops pipelined / bursting
LOAD_COUNT:
    for (int t = 0; t < m; t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MMAX
#pragma HLS PIPELINE II = 1
        const int chunks = tok_chunks[t];
        bad |= chunks < 1 || chunks > token_chunks_max;
        total += chunks;
    }
    if (bad || total > CHUNKS_MAX) return STATUS_BAD_STREAM;

    ap_uint<16> cnt[BANKS];  // the token's pairs per bank: is its chunk count the minimal one?
#pragma HLS ARRAY_PARTITION variable = cnt type = complete
    int token = 0, left = 0, chunks = 0;
LOAD_PAIRS:
    for (int c = 0; c < total; c++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CHUNKS_MAX
        if (left == 0) {  // first chunk of a token
            chunks = tok_chunks[token];
            left = chunks;
            for (int b = 0; b < BANKS; b++) {
#pragma HLS UNROLL
                cnt[b] = 0;
            }
        }
        const unsigned last = left == 1 ? 1u : 0u;
    LOAD_SLOTS:
        for (int s = 0; s < SIMD; s++) {
#pragma HLS PIPELINE II = 1
            const uint32_t word = act_pairs[(long)c * SIMD + s];
            const unsigned val = word & 0xFFu;
            const unsigned idx = (word >> 8) & 0xFFFFu;
            slot_t slot = 0;
            if (val == 0) {  // a pad: all-zero word, reads address 0 of its bank, adds nothing
                bad |= word != 0;
                slot = (slot_t)(last << 8);
            } else {
                // the bank rule: lane s is wired to bank s mod B only (no crossbar)
                bad |= idx >= (unsigned)k || (idx % BANKS) != (unsigned)(s % BANKS) || (word >> 24) != 0;
                cnt[s % BANKS]++;
                slot = (slot_t)val | ((slot_t)((idx / BANKS) * 2 + last) << 8);
            }
            abuf[c][s] = slot;
        }
        if (--left == 0) {
            unsigned busiest = 0;
            for (int b = 0; b < BANKS; b++) {
#pragma HLS UNROLL
                if (cnt[b] > busiest) busiest = cnt[b];
            }
            // minimal: chunks = max(1, max_b ceil(cnt_b / q)); each chunk holds <= q per bank
            bad |= chunks > 1 && busiest <= (unsigned)((chunks - 1) * LANES_PER_BANK);
            token++;
        }
    }
    total_chunks = total;
    return bad ? STATUS_BAD_STREAM : STATUS_OK;
}

// LOAD_W of docs/engine.md: PE packed rows of fold f -> 2-bit codes in the banked buffer:
// channel kk to bank kk mod B, address kk / B, word bits of row p, written to every replica.
// Rows past N are 0.
int load_weights(const uint8_t *weights, int f, int k, int n, int fmt,
                 code_t wbuf[REPLICAS][BANKS][WDEPTH][PE]) {
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
                    for (int r = 0; r < REPLICAS; r++) {
#pragma HLS UNROLL
                        wbuf[r][kk % BANKS][kk / BANKS][p] = codes.range(2 * i + 1, 2 * i);
                    }
                }
            }
        }
    }
    return bad ? STATUS_BAD_WEIGHT : STATUS_OK;
}

// One fold: CHUNK (C_f cycles) over the on-chip chunks against the fold's banked weight codes,
// then WRITE its PE output channels of every token.
void compute_fold(int f, int m, int n, int mult, int shift, int total_chunks,
                  const slot_t abuf[CHUNKS_MAX][SIMD], const code_t wbuf[REPLICAS][BANKS][WDEPTH][PE],
                  int8_t obuf[MMAX][PE], const int32_t *bias, int8_t *out) {
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
CHUNK:  // flattened "for m in tokens: for chunk in c(m)": one iteration per cycle
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
                const slot_t slot = abuf[c][s];
                const int addr = (int)(slot >> 9).to_uint();
                // lane s: bank s mod B, replica floor(floor(s / B) / P) (its port: floor(s / B) mod P)
                lanes += ternary_lane(wbuf[(s / BANKS) / PORTS][s % BANKS][addr][p], (act_t)slot.range(7, 0));
            }
            acc[p] += lanes;
        }
        if (abuf[c][0][8]) {  // last chunk of this token: requantise and write PE outputs
            for (int p = 0; p < PE; p++) {
#pragma HLS UNROLL
                obuf[token][p] = requantize((ap_int<64>)acc[p] + fold_bias[p], mult, shift);
                acc[p] = 0;
            }
            token++;
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

extern "C" int tatvpr_ternary_gemm(const uint32_t *act_pairs, const uint16_t *tok_chunks,
                                   const uint8_t *weights, const int32_t *bias, int8_t *out,
                                   int m, int k, int n, int fmt, int mult, int shift) {
#pragma HLS INTERFACE mode = m_axi port = act_pairs offset = slave bundle = gmem_act depth = 65536
#pragma HLS INTERFACE mode = m_axi port = tok_chunks offset = slave bundle = gmem_act depth = 1024
#pragma HLS INTERFACE mode = m_axi port = bias offset = slave bundle = gmem_act depth = 4096
#pragma HLS INTERFACE mode = m_axi port = out offset = slave bundle = gmem_act depth = 65536
#pragma HLS INTERFACE mode = m_axi port = weights offset = slave bundle = gmem_w depth = 65536
#pragma HLS INTERFACE mode = s_axilite port = act_pairs bundle = control
#pragma HLS INTERFACE mode = s_axilite port = tok_chunks bundle = control
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

    // The on-chip buffers: exactly sim.buffers.plan_buffers(arch) of the act mode (tatvpr_gemm.h).
    // activations: one memory, SIMD slots per word; outputs: one memory, PE int8 per word.
    static slot_t abuf[CHUNKS_MAX][SIMD];
#pragma HLS ARRAY_RESHAPE variable = abuf type = complete dim = 2
#pragma HLS BIND_STORAGE variable = abuf type = ram_1p
    static int8_t obuf[MMAX][PE];
#pragma HLS ARRAY_RESHAPE variable = obuf type = complete dim = 2
#pragma HLS BIND_STORAGE variable = obuf type = ram_1p
    // weights: per half, R x B memories (partition over replicas and banks, never over depth)
    // of 2*PE-bit words (reshape over the PE rows); P read ports per memory.
    static code_t wbuf0[REPLICAS][BANKS][WDEPTH][PE];
#pragma HLS ARRAY_PARTITION variable = wbuf0 type = complete dim = 1
#pragma HLS ARRAY_PARTITION variable = wbuf0 type = complete dim = 2
#pragma HLS ARRAY_RESHAPE variable = wbuf0 type = complete dim = 4
#if TATVPR_PORTS == 2
#pragma HLS BIND_STORAGE variable = wbuf0 type = ram_2p
#else
#pragma HLS BIND_STORAGE variable = wbuf0 type = ram_1p
#endif
#if TATVPR_HALVES == 2
    static code_t wbuf1[REPLICAS][BANKS][WDEPTH][PE];
#pragma HLS ARRAY_PARTITION variable = wbuf1 type = complete dim = 1
#pragma HLS ARRAY_PARTITION variable = wbuf1 type = complete dim = 2
#pragma HLS ARRAY_RESHAPE variable = wbuf1 type = complete dim = 4
#if TATVPR_PORTS == 2
#pragma HLS BIND_STORAGE variable = wbuf1 type = ram_2p
#else
#pragma HLS BIND_STORAGE variable = wbuf1 type = ram_1p
#endif
#endif

    int total_chunks = 0;
    int status = load_activations(act_pairs, tok_chunks, m, k, abuf, total_chunks);
    if (status != STATUS_OK) return status;

    const int folds = (n + PE - 1) / PE;
    status = load_weights(weights, 0, k, n, fmt, wbuf0);
    if (status != STATUS_OK) return status;
FOLD:
    for (int f = 0; f < folds; f++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 512
        const bool more = f + 1 < folds;
        int next = STATUS_OK;
#if TATVPR_HALVES == 2
        // Ping-pong halves: fold f computes from one while fold f+1 loads into the other
        // (double buffering). The two calls touch disjoint memories and different AXI masters,
        // so the tool may run them concurrently (check the csynth schedule); the C simulation
        // runs them in order, which gives the same results.
        if ((f & 1) == 0) {
            compute_fold(f, m, n, mult, shift, total_chunks, abuf, wbuf0, obuf, bias, out);
            if (more) next = load_weights(weights, f + 1, k, n, fmt, wbuf1);
        } else {
            compute_fold(f, m, n, mult, shift, total_chunks, abuf, wbuf1, obuf, bias, out);
            if (more) next = load_weights(weights, f + 1, k, n, fmt, wbuf0);
        }
#else
        // one half: the next fold's weights load after this fold's compute (no overlap)
        compute_fold(f, m, n, mult, shift, total_chunks, abuf, wbuf0, obuf, bias, out);
        if (more) next = load_weights(weights, f + 1, k, n, fmt, wbuf0);
#endif
        if (next != STATUS_OK) return next;
    }
    return STATUS_OK;
}
