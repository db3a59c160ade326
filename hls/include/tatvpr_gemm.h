// TAT-VPR packed-ternary sparse GEMM: one ternary linear layer of the reference accelerator
// (../../ENGINE.md in the shared design notes; docs/hls.md in the repository).
//
//   Y[M,N] = requant( X[M,K] . W~[N,K]^T + bias[N] )
//
// X   int8 activations after the per-token top-k, delivered compressed ("act" skip mode).
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
// Compressed activation stream (the "act" skip mode of the simulator), per layer in DDR:
//   tok_nnz[M]   uint16  kept (nonzero) int8 values of token m, 0 <= nnz[m] <= K
//   pairs[...]   uint32  for token 0, 1, ..., M-1: chunks(m) * SIMD pair words, where
//                        chunks(m) = max(1, ceil(nnz[m] / SIMD)).
//                        pair word: bits  7..0  value (two's complement int8, nonzero)
//                                   bits 23..8  channel index k (0 <= k < K; 16 bits on the bus,
//                                               ceil(log2 K) bits in the on-chip buffer)
//                                   bits 31..24 zero
//                        pairs of a token are in ascending channel order; the last chunk of a
//                        token is padded with zero words (index 0, value 0), which add nothing.
//                        A token with no nonzeros still has one all-padding chunk: that is the
//                        cycle the simulator charges for its accumulator write.
// Weights in DDR: N rows, row n = packed K weights of output channel n, each row padded to
// whole bytes (sim/packing.py): ceil(K/4) bytes (ternary2) or ceil(K/5) bytes (ternary1.6).
//
// ---------------------------------------------------------------------------------------
// Loop nest <-> simulator cycle counts (ENGINE.md, skip mode "act"):
//
//   LOAD_W(0)                                           T_0
//   FOLD:  for f in 0 .. ceil(N/PE)-1                    N_f folds
//     compute_fold(f) on one ping-pong weight buffer, while LOAD_W(f+1) fills the other
//                                                       max(C_f, T_{f+1}) when overlapped
//     LOAD_W:  PE rows of packed weights -> on-chip codes        T_{f+1} (weight transfer)
//     CHUNK:   for c in 0 .. total_chunks-1   (II = 1)          C_f = sum_m chunks(m)
//              = the flattened "for m in tokens: for chunk in chunks(m)" of ENGINE.md;
//              one iteration = one cycle = PE x SIMD lanes (add / subtract / skip) + the
//              PE adder trees; on the last chunk of token m the PE accumulators are
//              requantised and written (the write shares the token's last cycle).
//     WRITE:   PE outputs of every token -> DDR
//
// The trip count of CHUNK in fold f is exactly sim.engine.fold_compute_cycles(...,
// skip_mode="act")[f] = sum over m of max(1, ceil(nnz[m] / SIMD)); it does not depend on f
// because activation skipping gathers the same chunks for every fold. Under
// TATVPR_COUNT_CYCLES (C simulation only) every CHUNK iteration calls tatvpr_count_chunk(f),
// and the tests compare those counts with the simulator's.
// ---------------------------------------------------------------------------------------
#ifndef TATVPR_GEMM_H
#define TATVPR_GEMM_H

#include <stdint.h>

#include "ap_int.h"

// Design point (the simulator's PE x SIMD) and on-chip buffer sizes; the flow passes them
// with -D flags (tatvpr_hw.hlsflow), these are only defaults.
#ifndef TATVPR_PE
#define TATVPR_PE 8
#endif
#ifndef TATVPR_SIMD
#define TATVPR_SIMD 8
#endif
#ifndef TATVPR_KMAX  // largest K (input channels) of a layer
#define TATVPR_KMAX 1024
#endif
#ifndef TATVPR_MMAX  // largest M (tokens) of a layer
#define TATVPR_MMAX 64
#endif
#ifndef TATVPR_CHUNKS_MAX  // on-chip activation buffer, in chunks of SIMD pairs
#define TATVPR_CHUNKS_MAX 8192
#endif

#if defined(TATVPR_COUNT_CYCLES) && defined(__SYNTHESIS__)
#undef TATVPR_COUNT_CYCLES  // the counter exists in C simulation only, never in hardware
#endif
#ifdef TATVPR_COUNT_CYCLES
// Defined by the C-simulation testbench: one call per CHUNK iteration (= one cycle).
void tatvpr_count_chunk(int fold);
#endif

namespace tatvpr {

enum Format { FMT_TERNARY2 = 0, FMT_TERNARY16 = 1 };

// Status returned through the AXI4-Lite return register.
enum Status {
    STATUS_OK = 0,
    STATUS_BAD_SHAPE = 1,     // M, K or N zero or above the compiled maxima
    STATUS_BAD_FORMAT = 2,    // weight format not 0 or 1
    STATUS_BAD_WEIGHT = 3,    // 2-bit code 0b10 or base-3 byte > 242
    STATUS_BAD_STREAM = 4,    // nnz > K, index >= K, or more chunks than the buffer holds
    STATUS_BAD_REQUANT = 5,   // shift outside [1, 62] or mult negative
};

typedef ap_uint<2> code_t;    // 2-bit weight code
typedef ap_int<8> act_t;      // int8 activation
typedef ap_int<32> acc_t;     // int32 accumulator
typedef ap_uint<16> idx_t;    // channel index

const int PE = TATVPR_PE;
const int SIMD = TATVPR_SIMD;
const int KMAX = TATVPR_KMAX;
const int MMAX = TATVPR_MMAX;
const int CHUNKS_MAX = TATVPR_CHUNKS_MAX;

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
    static const code_t code_of_digit[3] = {3, 0, 1};  // digit = w + 1
    ap_uint<10> codes = 0;
    unsigned v = b.to_uint();
    for (int i = 0; i < 5; i++) {
#pragma HLS UNROLL
        codes.range(2 * i + 1, 2 * i) = code_of_digit[v % 3];
        v /= 3;
    }
    return codes;
}

}  // namespace tatvpr

// The IP's top function (AXI4 masters to DDR, AXI4-Lite control, status as return value).
extern "C" int tatvpr_ternary_gemm(const uint32_t *act_pairs, const uint16_t *tok_nnz,
                                   const uint8_t *weights, const int32_t *bias, int8_t *out,
                                   int m, int k, int n, int fmt, int mult, int shift);

#endif  // TATVPR_GEMM_H
