// TAT-VPR packed-ternary sparse GEMM: one ternary linear layer of the reference accelerator,
// version 2 (docs/engine.md in the repository: the authority; docs/hls.md: this IP).
//
//   Y[M,N] = requant( X[M,K] . W~[N,K]^T + bias[N] )
//
// X   int8 activations after the per-token top-k, delivered as the bank-scheduled chunk stream
//     of the "act" skip mode (below).
// W~  ternary weights {-1,0,+1}, packed 2 bits per weight (ternary2) or 5 trits per byte
//     (ternary1.6), decoded on chip into 2-bit codes 00 = 0, 01 = +1, 11 = -1.
// acc int32 per output; bias int32 (already in accumulator units); Y int8.
//
// Requantisation (identical to tatvpr_pynq.formats.requantize in Python):
//   v = acc + bias[n]                                   (int64)
//   y = saturate_int8( (v * mult + 2^(shift-1)) >> shift )   (arithmetic shift: floor)
// i.e. round-half-up of v * mult / 2^shift, then clamp to [-128, 127];
// mult in [0, 2^31), shift in [1, 62].
//
// ---------------------------------------------------------------------------------------
// Operand gather (docs/engine.md section 3). B = TATVPR_BANKS banks, P = TATVPR_PORTS read
// ports per bank memory, R = SIMD / (B * P) replicas, q = SIMD / B lanes per bank:
//   channel k lives in bank k mod B at address floor(k / B);
//   lane s reads bank s mod B, replica floor(floor(s / B) / P), port floor(s / B) mod P.
// No crossbar: the chunk stream puts every pair into a lane of its channel's bank.
//
// Bank-scheduled activation stream (built by tatvpr_pynq.formats.schedule_activations), per
// layer in DDR:
//   tok_chunks[M] uint16  chunks of token m: max(1, max over banks b of ceil(nnz_b(m) / q)),
//                         nnz_b(m) = the token's nonzero channels in bank b. This is the
//                         simulator's c(m) of the act mode, bank conflicts included.
//   pairs[...]    uint32  for token 0, 1, ..., M-1: tok_chunks[m] chunks of SIMD slot words.
//                         slot word: bits  7..0  value (two's complement int8, nonzero)
//                                    bits 23..8  channel index k (0 <= k < K)
//                                    bits 31..24 zero
//                         or a zero word (a pad: adds nothing).
//                         Slot s of a chunk holds a channel of bank s mod B (k mod B == s mod B).
//                         Canonical order (what the host writes; the kernel only checks the bank
//                         rule): bank b's nonzero channels of the token in ascending order, the
//                         i-th in chunk floor(i / q), slot (i mod q) * B + b.
//                         A token with no nonzeros still has one all-pad chunk: the cycle the
//                         simulator charges for its accumulator write.
// The kernel answers STATUS_BAD_STREAM for a pair in a lane of another bank, an index >= K, a
// value-0 word that is not all zero, a token whose chunk count is not the minimal one above,
// a token with more chunks than a block may hold, or resident = 1 with more chunks than the
// whole buffer holds.
// Weights in DDR: N rows, row n = packed K weights of output channel n, each row padded to
// whole bytes (ternary_format/packing.py): ceil(K/4) bytes (ternary2) or ceil(K/5) bytes (ternary1.6).
//
// Skip mode "none" (compile with -DTATVPR_SKIP_NONE; tatvpr_hw.lower.hls derives it from an
// arch with compute.skip_mode: none): act_pairs points at the dense int8 tokens x[M][K] (row m
// at byte m * K; tok_chunks is not read), a token is W = ceil(K / SIMD) words of SIMD int8
// values (channel c * SIMD + s in slot s of word c, zeros past K), the activation buffer abuf
// holds such words (SIMD * 8 bits, no index), and lane s of word c reads channel c * SIMD + s
// (bank s mod B: no conflicts). CHUNK runs W cycles per token: sim.engine's none-mode c(m).
// A block load reads its tokens' M_b * K bytes.
//
// ---------------------------------------------------------------------------------------
// On-chip buffers = the simulator's sim.buffers.plan_buffers(arch) for the act mode
// (docs/engine.md section 6), sized by the -D values below (tatvpr_hw.lower.hls derives them
// from the arch):
//   weights      h halves (wbuf0, wbuf1 when TATVPR_HALVES = 2) x R replicas x B banks, each a
//                memory of 2*PE-bit words (one channel's codes of the fold's PE rows), depth
//                KMAX / B. Partitioned over replicas and banks only, reshaped over PE.
//   activations  abuf: one memory of SIMD * (8 + I)-bit words (I = ceil(log2 KMAX)), depth
//                CHUNKS_MAX, one write port (loads) and one read port (the array). On chip a
//                slot holds the value (8 bits) and, in its I index bits, address * 2 + last: the
//                bank is implied by the slot, and the freed bit (B >= 2 makes 2 * KMAX / B <=
//                2^I) marks a token's last chunk, so no token table is needed. With
//                TATVPR_HALVES = 2 a non-resident token block uses one half (rows from 0 or from
//                CHUNKS_MAX / 2, floor(CHUNKS_MAX / 2) words) while the next loads into the other;
//                a resident input uses all CHUNKS_MAX words.
//   outputs      obuf: one memory of PE * 8-bit words, depth MMAX (one fold's PE outputs of each
//                token of a block: MMAX is the most tokens a block has).
// Besides these, only fully partitioned registers of the datapath: acc[PE] (accumulators),
// fold_bias[PE] and the stream check's per-bank counters cnt[B].
//
// ---------------------------------------------------------------------------------------
// One call = one whole layer (docs/engine.md section 4, skip mode "act"). Arguments besides
// the buffers: m, k, n (M any >= 1; K <= KMAX), fmt, mult, shift, and
//   order     0 fold_outer (for f: for b), 1 token_outer (for b: for f)
//             (ternary_format.tiling.LOOP_ORDERS; the driver passes choose_loop_order's pick);
//   resident  1: a block may use the whole activation buffer (the simulator's resident input:
//             all tokens' chunks fit CHUNKS_MAX and the previous op did not spill them); the IP
//             reads the whole stream once (on the board it always comes from DDR) and cuts blocks
//             of MMAX tokens, loading nothing more. 0: a block may use floor(CHUNKS_MAX / h)
//             words (h = TATVPR_HALVES).
// Token blocks: consecutive tokens, greedily, as ternary_format.tiling.token_blocks: a block
// ends before the token that would take it over its words or over MMAX tokens.
//
//   LOAD_A(block 0), LOAD_W(fold 0)                              X_0
//   STEP: for j = (f, b) in ternary_format.tiling.loop_steps(N_f, T, order)
//     compute step j from the current halves, while the loads of step j+1 fill the idle
//     halves (HALVES = 2)                                        max(C_j, X_{j+1})
//     or followed by them (HALVES = 1)                           C_j + X_{j+1}
//     LOAD_W:  only when step j+1 has another fold: its PE rows of packed weights -> codes
//     LOAD_A:  only when step j+1 has another block and the input is not resident: the block's
//              chunk counts and slots -> abuf (its half), checked
//     CHUNK:   for c in the block's chunks   (II = 1)            C_j = sum over its tokens of c(m)
//              one iteration = one cycle = PE x SIMD lanes (add / subtract / skip) + the PE adder
//              trees; on a token's last chunk the PE accumulators are requantised and written
//              (the write shares the token's last cycle).
//     WRITE:   the fold's PE outputs of the block's tokens -> DDR
//
// The CHUNK trip count of step (f, b) is exactly sim.engine's C_j (its token cycles in skip
// mode "act", banks B, ports P); the steps, the loads per step and their bytes are the
// simulator's (tests/hls/test_ip_steps.py). Under TATVPR_COUNT_CYCLES (C simulation only) the
// kernel reports every step, CHUNK iteration and load to the testbench (below).
// ---------------------------------------------------------------------------------------
#ifndef TATVPR_GEMM_H
#define TATVPR_GEMM_H

#include <stdint.h>

#include "ap_int.h"

// Design point (the simulator's arch) and on-chip buffer sizes; the flow passes them with -D
// flags (tatvpr_hw.lower.hls.csim.KernelParams.defines), these are only defaults.
#ifndef TATVPR_PE
#define TATVPR_PE 8
#endif
#ifndef TATVPR_SIMD
#define TATVPR_SIMD 8
#endif
#ifndef TATVPR_BANKS  // compute.gather.banks (B)
#define TATVPR_BANKS TATVPR_SIMD
#endif
#ifndef TATVPR_PORTS  // compute.gather.ports (P): 1 or 2
#define TATVPR_PORTS 1
#endif
#ifndef TATVPR_HALVES  // weight and activation buffer halves: 2 with double buffering, else 1
#define TATVPR_HALVES 2
#endif
#ifndef TATVPR_KMAX  // K_max: largest K (input channels) of a layer, a multiple of B
#define TATVPR_KMAX 1024
#endif
#ifndef TATVPR_MMAX  // depth of the output buffer = the most tokens of a token block
#define TATVPR_MMAX 64
#endif
#ifndef TATVPR_CHUNKS_MAX  // depth of the activation buffer, in chunks of SIMD slots
#define TATVPR_CHUNKS_MAX 8192
#endif

#if defined(TATVPR_COUNT_CYCLES) && defined(__SYNTHESIS__)
#undef TATVPR_COUNT_CYCLES  // the counter exists in C simulation only, never in hardware
#endif
#ifdef TATVPR_COUNT_CYCLES
// Defined by the C-simulation testbench (tb_ternary_gemm.cpp):
//   tatvpr_count_step(f, b)            step (f, b) starts computing (the steps in order);
//   tatvpr_count_chunk()               one CHUNK iteration (= one cycle) of the current step;
//   tatvpr_count_load(j, what, bytes)  a load for step j (0: before the first step; j > 0: while
//                                      step j - 1 computes): what = LOAD_WEIGHTS (a fold's
//                                      weights, bytes read) or LOAD_ACTIVATIONS (a token block,
//                                      its stream bytes: chunks x SIMD x 4 + tokens x 2).
void tatvpr_count_step(int fold, int block);
void tatvpr_count_chunk();
void tatvpr_count_load(int step, int what, long bytes);
#endif

namespace tatvpr {

enum Format { FMT_TERNARY2 = 0, FMT_TERNARY16 = 1 };

// Status returned through the AXI4-Lite return register.
enum Status {
    STATUS_OK = 0,
    STATUS_BAD_SHAPE = 1,     // M, K or N zero or above the compiled maxima
    STATUS_BAD_FORMAT = 2,    // weight format not 0 or 1
    STATUS_BAD_WEIGHT = 3,    // 2-bit code 0b10 or base-3 byte > 242
    STATUS_BAD_STREAM = 4,    // bank rule, index >= K, non-minimal chunks, or buffer overflow
    STATUS_BAD_REQUANT = 5,   // shift outside [1, 62] or mult negative
    STATUS_BAD_SCHEDULE = 6,  // order not 0 or 1, or resident not 0 or 1
};

// The `order` argument: ternary_format.tiling.LOOP_ORDERS[order].
enum Order { ORDER_FOLD_OUTER = 0, ORDER_TOKEN_OUTER = 1 };
// What tatvpr_count_load reports.
enum Load { LOAD_WEIGHTS = 0, LOAD_ACTIVATIONS = 1 };

constexpr int clog2(int x) { return x <= 1 ? 0 : 1 + clog2((x + 1) / 2); }

const int PE = TATVPR_PE;
const int SIMD = TATVPR_SIMD;
const int BANKS = TATVPR_BANKS;
const int PORTS = TATVPR_PORTS;
const int REPLICAS = SIMD / (BANKS * PORTS);
const int LANES_PER_BANK = SIMD / BANKS;  // q
const int HALVES = TATVPR_HALVES;
const int KMAX = TATVPR_KMAX;
const int WDEPTH = KMAX / BANKS;  // words per weight bank memory
const int IDX_BITS = clog2(KMAX);  // I
const int MMAX = TATVPR_MMAX;
const int CHUNKS_MAX = TATVPR_CHUNKS_MAX;

static_assert(SIMD % BANKS == 0, "TATVPR_BANKS must divide TATVPR_SIMD");
static_assert(PORTS == 1 || PORTS == 2, "TATVPR_PORTS must be 1 or 2");
static_assert(SIMD % (BANKS * PORTS) == 0, "TATVPR_BANKS * TATVPR_PORTS must divide TATVPR_SIMD");
static_assert(HALVES == 1 || HALVES == 2, "TATVPR_HALVES must be 1 or 2");
static_assert(KMAX % BANKS == 0, "TATVPR_KMAX must be a multiple of TATVPR_BANKS");
#ifndef TATVPR_SKIP_NONE
static_assert(BANKS >= 2, "the on-chip slot keeps its last-chunk flag in the bank bits: TATVPR_BANKS >= 2");
static_assert(2 * WDEPTH <= (1 << IDX_BITS), "slot field address * 2 + last must fit I bits");
#endif

typedef ap_uint<2> code_t;              // 2-bit weight code
typedef ap_int<8> act_t;                // int8 activation
typedef ap_int<32> acc_t;               // int32 accumulator
#ifdef TATVPR_SKIP_NONE
typedef ap_int<8> slot_t;               // skip mode none: a slot is one dense int8 value
typedef int8_t act_word_t;              // the DDR activations: dense int8 tokens [M][K]
#else
typedef ap_uint<8 + IDX_BITS> slot_t;   // on-chip slot: value (7..0), address * 2 + last (above)
typedef uint32_t act_word_t;            // the DDR activations: the bank-scheduled slot words
#endif

// One lane: code 01 -> +a, 11 -> -a, 00 -> 0. No multiplier.
static inline acc_t ternary_lane(code_t code, act_t a) {
#pragma HLS INLINE
    acc_t v = a;
    if (code == 1) return v;
    if (code == 3) return -v;
    return 0;
}

// The requantisation defined at the top of this file (one multiply per output, not per MAC).
static inline int8_t requantize(ap_int<64> v, int32_t mult, int shift) {
#pragma HLS INLINE
    ap_int<64> p = v * (ap_int<64>)mult;
    p += ((ap_int<64>)1) << (shift - 1);
    p = p >> shift;
    if (p > 127) return 127;
    if (p < -128) return -128;
    return (int8_t)p.to_int();
}

// Base-3 byte -> five 2-bit codes (weight i in bits 2i+1..2i). An 8-bit-input function: the
// tool builds it as a small ROM / LUT network.
static inline ap_uint<10> decode_base3(ap_uint<8> b) {
#pragma HLS INLINE
    ap_uint<10> codes = 0;
    unsigned v = b.to_uint();
    for (int i = 0; i < 5; i++) {
#pragma HLS UNROLL
        const unsigned digit = v % 3;  // digit = w + 1
        codes.range(2 * i + 1, 2 * i) = digit == 0 ? 3 : (digit == 1 ? 0 : 1);
        v /= 3;
    }
    return codes;
}

}  // namespace tatvpr

// The IP's top function (AXI4 masters to DDR, AXI4-Lite control, status as return value).
extern "C" int tatvpr_ternary_gemm(const tatvpr::act_word_t *act_pairs, const uint16_t *tok_chunks,
                                   const uint8_t *weights, const int32_t *bias, int8_t *out,
                                   int m, int k, int n, int fmt, int mult, int shift, int order, int resident);

#endif  // TATVPR_GEMM_H
