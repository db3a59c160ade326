// TAT-VPR packed-ternary sparse GEMM IP: implementation of tatvpr_ternary_gemm().
// Formats, buffers, requantisation and the loop <-> cycle-count correspondence: tatvpr_gemm.h.
#include "tatvpr_gemm.h"

using namespace tatvpr;

namespace {

#ifdef TATVPR_COUNT_CYCLES
#define TATVPR_COUNT(call) call
#else
#define TATVPR_COUNT(call)
#endif

// One token block as the step loop sees it: tokens [tok0, tok1) of the layer, whose chunks sit in
// abuf rows [base, base + chunks) and, in the DDR stream, start at chunk ddr_chunk0.
struct Block {
    int tok0, tok1, base, chunks;
    long ddr_chunk0;
};

#ifdef TATVPR_SKIP_NONE
// LOAD_A, skip mode none: the next token block of the dense int8 tokens into abuf rows [base,
// base + cap). Every token takes W = ceil(K / SIMD) words, so the rule of
// ternary_format/tiling.py takes floor(cap / W) tokens (at most max_tokens, the rest of the
// layer); STATUS_BAD_STREAM when one token alone exceeds cap. Word c of a token holds channels
// c * SIMD .. c * SIMD + SIMD - 1 (zeros past K). *bytes = the block's M_b * K int8 bytes.
int load_block(const act_word_t *act, const uint16_t *, int m, int k, int cap, int max_tokens, int &,
               Block &blk, slot_t abuf[CHUNKS_MAX][SIMD], long *bytes) {
    const int words = (k + SIMD - 1) / SIMD;
    if (words > cap) return STATUS_BAD_STREAM;
    int tokens = cap / words;
    if (tokens > max_tokens) tokens = max_tokens;
    if (tokens > m - blk.tok0) tokens = m - blk.tok0;
LOAD_TOKENS:
    for (int t = 0; t < tokens; t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MMAX
    LOAD_WORDS:
        for (int c = 0; c < words; c++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = KMAX / SIMD
        LOAD_SLOTS:
            for (int s = 0; s < SIMD; s++) {
#pragma HLS PIPELINE II = 1
                const int ch = c * SIMD + s;
                abuf[blk.base + t * words + c][s] = ch < k ? (slot_t)act[(long)(blk.tok0 + t) * k + ch] : (slot_t)0;
            }
        }
    }
    blk.tok1 = blk.tok0 + tokens;
    blk.chunks = tokens * words;
    if (bytes) *bytes = (long)tokens * k;
    return STATUS_OK;
}
#else
// LOAD_A: the next token block of the bank-scheduled stream into abuf rows [base, base + cap),
// cut by the rule of ternary_format/tiling.py (docs/engine.md section 4): the block takes
// tokens from blk.tok0 on while their chunks fit cap words and at most max_tokens tokens (the
// first token always, or STATUS_BAD_STREAM when it alone exceeds cap). Each token's count is
// read once: `pending` carries in the count of blk.tok0 when the previous block's load already
// read it (-1: read it here), and carries out the count of the token that ended this block.
// Checks the stream as it goes. Sets blk.tok1 and blk.chunks; *bytes = the block's stream bytes
// (its chunks' uint32 slots + its tokens' uint16 counts).
int load_block(const act_word_t *act_pairs, const uint16_t *tok_chunks, int m, int k, int cap, int max_tokens,
               int &pending, Block &blk, slot_t abuf[CHUNKS_MAX][SIMD], long *bytes) {
    // a dense token: bank 0 holds ceil(K / B) channels, q of them per chunk
    const int token_chunks_max = ((k + BANKS - 1) / BANKS + LANES_PER_BANK - 1) / LANES_PER_BANK;
    bool bad = false;  // flags instead of early exits keep the loops pipelined / bursting
    int t = blk.tok0, used = 0;
    int chunks = pending >= 0 ? pending : (int)tok_chunks[t];
    ap_uint<16> cnt[BANKS];  // the token's pairs per bank: is its chunk count the minimal one?
#pragma HLS ARRAY_PARTITION variable = cnt type = complete
LOAD_TOKENS:
    while (true) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MMAX
        if (chunks < 1 || chunks > token_chunks_max || chunks > cap) return STATUS_BAD_STREAM;
        for (int b = 0; b < BANKS; b++) {
#pragma HLS UNROLL
            cnt[b] = 0;
        }
    LOAD_CHUNKS:
        for (int c = 0; c < chunks; c++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 64
            const unsigned last = c == chunks - 1 ? 1u : 0u;
            const long src = (blk.ddr_chunk0 + used + c) * SIMD;
        LOAD_SLOTS:
            for (int s = 0; s < SIMD; s++) {
#pragma HLS PIPELINE II = 1
                const uint32_t word = act_pairs[src + s];
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
                abuf[blk.base + used + c][s] = slot;
            }
        }
        unsigned busiest = 0;
        for (int b = 0; b < BANKS; b++) {
#pragma HLS UNROLL
            if (cnt[b] > busiest) busiest = cnt[b];
        }
        // minimal: chunks = max(1, max_b ceil(cnt_b / q)); each chunk holds <= q per bank
        bad |= chunks > 1 && busiest <= (unsigned)((chunks - 1) * LANES_PER_BANK);
        used += chunks;
        t++;
        if (t == m) {
            pending = -1;
            break;
        }
        chunks = tok_chunks[t];  // the next token: in this block, or the first of the next one
        if (used + chunks > cap || t - blk.tok0 >= max_tokens) {
            pending = chunks;
            break;
        }
    }
    blk.tok1 = t;
    blk.chunks = used;
    if (bytes) *bytes = (long)used * SIMD * 4 + (long)(t - blk.tok0) * 2;
    return bad ? STATUS_BAD_STREAM : STATUS_OK;
}
#endif

// LOAD_W of docs/engine.md: PE packed rows of fold f -> 2-bit codes in the banked buffer:
// channel kk to bank kk mod B, address kk / B, word bits of row p, written to every replica.
// Rows past N are 0 (not read). *bytes = the bytes read.
int load_weights(const uint8_t *weights, int f, int k, int n, int fmt,
                 code_t wbuf[REPLICAS][BANKS][WDEPTH][PE], long *bytes) {
    const int per_byte = (fmt == FMT_TERNARY2) ? 4 : 5;
    const int row_bytes = (k + per_byte - 1) / per_byte;
    bool bad = false;
    long nread = 0;
LOAD_W_ROWS:
    for (int p = 0; p < PE; p++) {
        const int row = f * PE + p;
        if (row < n) nread += row_bytes;
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
    if (bytes) *bytes = nread;
    return bad ? STATUS_BAD_WEIGHT : STATUS_OK;
}

// One step (f, b): CHUNK (C_j cycles) over the block's chunks against the fold's banked weight
// codes, then WRITE the fold's PE output channels of the block's tokens. Returns the chunks it
// ran (= the block's chunks: the loop ends at the block's last token's last chunk).
int compute_step(int f, const Block &blk, int k, int n, int mult, int shift, const slot_t abuf[CHUNKS_MAX][SIMD],
                 const code_t wbuf[REPLICAS][BANKS][WDEPTH][PE], int8_t obuf[MMAX][PE], const int32_t *bias,
                 int8_t *out) {
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
    const int tokens = blk.tok1 - blk.tok0;
    int token = 0, c = blk.base;
#ifdef TATVPR_SKIP_NONE
    const int words = (k + SIMD - 1) / SIMD;  // W: every token's words
    int word = 0;                             // the word of the current token
#else
    (void)k;
#endif
CHUNK:  // flattened "for m in the block's tokens: for chunk in c(m)": one iteration per cycle
    while (token < tokens) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CHUNKS_MAX
#pragma HLS PIPELINE II = 1
        TATVPR_COUNT(tatvpr_count_chunk());
        for (int p = 0; p < PE; p++) {
#pragma HLS UNROLL
            acc_t lanes = 0;  // adder tree over the SIMD lanes of PE p
            for (int s = 0; s < SIMD; s++) {
#pragma HLS UNROLL
                const slot_t slot = abuf[c][s];
#ifdef TATVPR_SKIP_NONE
                // channel word * SIMD + s: bank s mod B, address (word * SIMD + s) / B (past K the
                // value is 0; the address is kept inside the memory)
                const int ch_addr = (word * SIMD + s) / BANKS;
                const int addr = ch_addr < WDEPTH ? ch_addr : 0;
                const act_t value = slot;
#else
                const int addr = (int)(slot >> 9).to_uint();
                const act_t value = (act_t)slot.range(7, 0);
#endif
                // lane s: bank s mod B, replica floor(floor(s / B) / P) (its port: floor(s / B) mod P)
                lanes += ternary_lane(wbuf[(s / BANKS) / PORTS][s % BANKS][addr][p], value);
            }
            acc[p] += lanes;
        }
#ifdef TATVPR_SKIP_NONE
        const bool last = word == words - 1;
        word = last ? 0 : word + 1;
#else
        const bool last = abuf[c][0][8];
#endif
        if (last) {  // last chunk of this token: requantise and write PE outputs
            for (int p = 0; p < PE; p++) {
#pragma HLS UNROLL
                obuf[token][p] = requantize((ap_int<64>)acc[p] + fold_bias[p], mult, shift);
                acc[p] = 0;
            }
            token++;
        }
        c++;
    }
WRITE:
    for (int t = 0; t < tokens; t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MMAX
        for (int p = 0; p < PE; p++) {
#pragma HLS PIPELINE II = 1
            if (f * PE + p < n) out[(long)(blk.tok0 + t) * n + f * PE + p] = obuf[t][p];
        }
    }
    return c - blk.base;
}

}  // namespace

extern "C" int tatvpr_ternary_gemm(const act_word_t *act_pairs, const uint16_t *tok_chunks,
                                   const uint8_t *weights, const int32_t *bias, int8_t *out,
                                   int m, int k, int n, int fmt, int mult, int shift, int order, int resident) {
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
#pragma HLS INTERFACE mode = s_axilite port = order bundle = control
#pragma HLS INTERFACE mode = s_axilite port = resident bundle = control
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control

    if (m <= 0 || k <= 0 || k > KMAX || n <= 0) return STATUS_BAD_SHAPE;
    if (fmt != FMT_TERNARY2 && fmt != FMT_TERNARY16) return STATUS_BAD_FORMAT;
    if (shift < 1 || shift > 62 || mult < 0) return STATUS_BAD_REQUANT;
    if ((order != ORDER_FOLD_OUTER && order != ORDER_TOKEN_OUTER) || (resident != 0 && resident != 1))
        return STATUS_BAD_SCHEDULE;

    // The on-chip buffers: exactly sim.buffers.plan_buffers(arch) of the act mode (tatvpr_gemm.h).
    // activations: one memory of CHUNKS_MAX words, SIMD slots per word, one write port (the
    // loads) and one read port (the array): with HALVES = 2 a non-resident block lives in one
    // half (rows [0, CHUNKS_MAX / 2) or [CHUNKS_MAX / 2, 2 * (CHUNKS_MAX / 2))), the next block
    // loads into the other; a resident input uses the whole memory. outputs: one memory, PE int8
    // per word.
    static slot_t abuf[CHUNKS_MAX][SIMD];
#pragma HLS ARRAY_RESHAPE variable = abuf type = complete dim = 2
#pragma HLS BIND_STORAGE variable = abuf type = ram_s2p
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

    const int folds = (n + PE - 1) / PE;
    const bool token_outer = order == ORDER_TOKEN_OUTER;
    // a block's words (docs/engine.md section 4): the whole buffer for a resident input, else
    // floor(CHUNKS_MAX / h); half h of the activation buffer starts at row h * a_half
    const int cap = resident ? CHUNKS_MAX : CHUNKS_MAX / HALVES;
    const int a_half = CHUNKS_MAX / 2;
    long nbytes = 0;

    // step 0 = (fold 0, block 0): its loads come first (X_0), nothing to overlap them with
    int pending = -1;  // the chunk count of the next block's first token, when already read
    Block cur = {0, 0, 0, 0, 0};
    int status;
    if (resident) {
        // the whole stream at rows [0, total): the simulator's resident input (the previous op
        // wrote it there); on the board it is read from DDR once, here. Blocks are then cut by
        // the output buffer's MMAX tokens only (all chunks fit), with no further loads.
        Block all = {0, 0, 0, 0, 0};
        status = load_block(act_pairs, tok_chunks, m, k, CHUNKS_MAX, m, pending, all, abuf, &nbytes);
        if (status == STATUS_OK && all.tok1 != m) status = STATUS_BAD_STREAM;  // does not fit: not resident
        if (status != STATUS_OK) return status;
        TATVPR_COUNT(tatvpr_count_load(0, LOAD_ACTIVATIONS, nbytes));
        cur.tok1 = m < MMAX ? m : MMAX;
    } else {
        status = load_block(act_pairs, tok_chunks, m, k, cap, MMAX, pending, cur, abuf, &nbytes);
        if (status != STATUS_OK) return status;
        TATVPR_COUNT(tatvpr_count_load(0, LOAD_ACTIVATIONS, nbytes));
    }
    status = load_weights(weights, 0, k, n, fmt, wbuf0, &nbytes);
    if (status != STATUS_OK) return status;
    TATVPR_COUNT(tatvpr_count_load(0, LOAD_WEIGHTS, nbytes));

    int f = 0, b = 0, step = 0;
    int w_half = 0, a_half_sel = 0;  // the halves the current step reads
STEP:  // the steps (f, b) of ternary_format.tiling.loop_steps in loop order `order`
    while (true) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 4096
        // the next step: fold_outer = for f: for b, token_outer = for b: for f; a block is the
        // last when it ends at token m
        const bool last_block = cur.tok1 == m;
        int nf = f, nb = b;
        bool more = true;
        if (token_outer) {
            if (f + 1 < folds) nf = f + 1;
            else if (!last_block) { nf = 0; nb = b + 1; }
            else more = false;
        } else {
            if (!last_block) nb = b + 1;
            else if (f + 1 < folds) { nf = f + 1; nb = 0; }
            else more = false;
        }
        const bool load_w = more && nf != f;                 // a new fold's weights
        const bool load_a = more && !resident && nb != b;    // a new block's activations
        // the next block: after this one, or block 0 again (fold_outer's next fold)
        Block nxt = cur;
        if (nb != b) {
            nxt.tok0 = nb == 0 ? 0 : cur.tok1;
            nxt.ddr_chunk0 = nb == 0 ? 0 : cur.ddr_chunk0 + cur.chunks;
        }

        // compute step (f, b) from the current halves while the next step's loads fill the idle
        // halves (HALVES = 2: disjoint memories, or disjoint rows of abuf's write port, and
        // different AXI masters, so the tool may run them concurrently: check the csynth
        // schedule). The C simulation runs them in order, which gives the same results.
        // With HALVES = 1 the loads follow the compute into the same buffers (no overlap).
        TATVPR_COUNT(tatvpr_count_step(f, b));
#if TATVPR_HALVES == 2
        const int ran = w_half == 0 ? compute_step(f, cur, k, n, mult, shift, abuf, wbuf0, obuf, bias, out)
                                    : compute_step(f, cur, k, n, mult, shift, abuf, wbuf1, obuf, bias, out);
#else
        const int ran = compute_step(f, cur, k, n, mult, shift, abuf, wbuf0, obuf, bias, out);
#endif
        if (!more) break;
        cur.chunks = ran;
        int next_status = STATUS_OK;
        if (load_w) {
#if TATVPR_HALVES == 2
            // into the idle half (two calls rather than a selected pointer: each names its memory)
            if (w_half == 0) next_status = load_weights(weights, nf, k, n, fmt, wbuf1, &nbytes);
            else next_status = load_weights(weights, nf, k, n, fmt, wbuf0, &nbytes);
            w_half ^= 1;
#else
            next_status = load_weights(weights, nf, k, n, fmt, wbuf0, &nbytes);
#endif
            TATVPR_COUNT(tatvpr_count_load(step + 1, LOAD_WEIGHTS, nbytes));
        }
        if (next_status != STATUS_OK) return next_status;
        if (load_a) {
#if TATVPR_HALVES == 2
            a_half_sel ^= 1;
            nxt.base = a_half_sel * a_half;
#else
            nxt.base = 0;
#endif
            next_status = load_block(act_pairs, tok_chunks, m, k, cap, MMAX, pending, nxt, abuf, &nbytes);
            TATVPR_COUNT(tatvpr_count_load(step + 1, LOAD_ACTIVATIONS, nbytes));
        } else if (resident && nb != b) {
            // the resident input's next block: the next MMAX tokens, right after this block's chunks
            nxt.base = nb == 0 ? 0 : cur.base + ran;
            nxt.tok1 = nxt.tok0 + MMAX < m ? nxt.tok0 + MMAX : m;
        }
        if (next_status != STATUS_OK) return next_status;
        cur = nxt;
        f = nf;
        b = nb;
        step++;
    }
    return STATUS_OK;
}
