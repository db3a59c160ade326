// HLS top functions of the int8 unit and the vector unit (one IP each) for the board project of
// `tatvpr export bitstream`: AXI4 masters for the DDR arrays, AXI4-Lite for the scalars and
// ap_ctrl. The kernels are the C-simulated ones (tatvpr_int8.cpp, tatvpr_vector.cpp), unchanged.
// Generated into vitis_hls.tcl; not synthesised in this repository (no Vitis HLS here).
// extern "C": unmangled names, so the host tests call them through ctypes (Vitis HLS accepts C-linkage tops).
#include "tatvpr_attention.h"
#include "tatvpr_chain.h"
#include "tatvpr_int8.h"
#include "tatvpr_vector.h"

// The int8 unit: patch embedding, QK^T, AV (tatvpr_int8_gemm). The host passes a zero bias
// array when the op has none (an AXI pointer cannot be null on the fabric).
// mode TATVPR_I8_ATTENTION (schedule.attention: fused): a block's whole attention (tatvpr_attention):
// b = the qkv projection's int8 output [m tokens][3 * batch heads * k head dim], out8 = the attention
// output [m][batch * k]; mult / shift requantise P.V, att_mult / att_shift are the softmax's.
extern "C" void tatvpr_int8_top(const int16_t *a, const int8_t *b, const int32_t *bias, int32_t *out32, int8_t *out8,
                     int16_t *out16, int batch, int m, int k, int n, int mode, long long mult, int shift,
                     long long att_mult, int att_shift) {
#pragma HLS INTERFACE m_axi port = a offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = b offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = bias offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = out32 offset = slave bundle = gmem_out
#pragma HLS INTERFACE m_axi port = out8 offset = slave bundle = gmem_out
#pragma HLS INTERFACE m_axi port = out16 offset = slave bundle = gmem_out
#pragma HLS INTERFACE s_axilite port = batch
#pragma HLS INTERFACE s_axilite port = m
#pragma HLS INTERFACE s_axilite port = k
#pragma HLS INTERFACE s_axilite port = n
#pragma HLS INTERFACE s_axilite port = mode
#pragma HLS INTERFACE s_axilite port = mult
#pragma HLS INTERFACE s_axilite port = shift
#pragma HLS INTERFACE s_axilite port = att_mult
#pragma HLS INTERFACE s_axilite port = att_shift
#pragma HLS INTERFACE s_axilite port = return
    if (mode == TATVPR_I8_ATTENTION) {
        tatvpr_attention(b, out8, batch, m, k, (int64_t)att_mult, att_shift, (int64_t)mult, shift);
    } else {
        tatvpr_int8_gemm(a, b, bias, out32, out8, out16, batch, m, k, n, mode, (int64_t)mult, shift);
    }
}

// 5 and 10 are the int8 unit's gemm and attention in the testbench's numbering, unused here
enum { TATVPR_V_LAYERNORM = 1, TATVPR_V_SOFTMAX = 2, TATVPR_V_GELU = 3, TATVPR_V_ADD = 4, TATVPR_V_REQUANT = 6,
       TATVPR_V_L2NORM = 7, TATVPR_V_TOPK = 8, TATVPR_V_TOPK_DENSE = 9, TATVPR_V_CHAIN = 11 };

// The vector unit: one IP, the op selected by `op` (the C-sim testbench's numbering).
//   layernorm: x16[t*d], gain64/bias64[d], eps_q -> y8[t*d]
//   softmax:   s32[rows*n], row_max32[rows] (the int8 unit's per-row comparator; the host passes
//              it until that comparator is in the int8 IP), mult, shift -> p8[rows*n]
//   gelu:      x8[n], table8[256] -> y8[n]
//   add:       x16[t*d], x8[t*d] (the ternary IP's output), mult32/shift32[d] -> out16[t*d]
//   requant:   x16[t*d], mult, shift -> y8[t*d] (the head's int8 input)
//   l2norm:    x16[t*d] (one vector of t*d <= TATVPR_L2NORM_MAX_N elements) -> out16[t*d] in Q15
//   topk:      x8[t*d] (t rows of d channels), keep -> chunks16[t], pairs32[sum chunks * SIMD]: the
//              bank-scheduled act stream of the ternary IP this unit serves (TATVPR_TOPK_SIMD,
//              TATVPR_TOPK_BANKS); the host sizes pairs32 for t * max(1, ceil(ceil(d / B) / q)) chunks
//   topk_dense: x8[t*d], keep -> y8[t*d], the kept values in place (the dense IP's input)
//   chain (schedule.vector_chain: fused, tatvpr_chain.h): shift = the TATVPR_CHAIN_* flags; x16[t*d] (the
//              residual stream), x8[t*d] (the ternary IP's output, or GELU's input), mult32/shift32[d],
//              gain64/bias64[d], eps_q, table8[256], keep -> out16[t*d] (WRITE_RES), then chunks16[t] +
//              pairs32 (TOPK), y8[t*d] (TOPK_DENSE, or the int8 row without a top-k)
extern "C" void tatvpr_vector_top(int op, const int16_t *x16, const int8_t *x8, const int32_t *s32, const int32_t *row_max32,
                       const int64_t *gain64, const int64_t *bias64, const int32_t *mult32, const int32_t *shift32,
                       const int8_t *table8, int8_t *y8, uint8_t *p8, int16_t *out16, int t, int d, long long mult,
                       int shift, long long eps_q, uint16_t *chunks16, uint32_t *pairs32, int keep) {
#pragma HLS INTERFACE m_axi port = x16 offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = x8 offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = s32 offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = row_max32 offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = gain64 offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = bias64 offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = mult32 offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = shift32 offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = table8 offset = slave bundle = gmem_in
#pragma HLS INTERFACE m_axi port = y8 offset = slave bundle = gmem_out
#pragma HLS INTERFACE m_axi port = p8 offset = slave bundle = gmem_out
#pragma HLS INTERFACE m_axi port = out16 offset = slave bundle = gmem_out
#pragma HLS INTERFACE m_axi port = chunks16 offset = slave bundle = gmem_out
#pragma HLS INTERFACE m_axi port = pairs32 offset = slave bundle = gmem_out
#pragma HLS INTERFACE s_axilite port = keep
#pragma HLS INTERFACE s_axilite port = op
#pragma HLS INTERFACE s_axilite port = t
#pragma HLS INTERFACE s_axilite port = d
#pragma HLS INTERFACE s_axilite port = mult
#pragma HLS INTERFACE s_axilite port = shift
#pragma HLS INTERFACE s_axilite port = eps_q
#pragma HLS INTERFACE s_axilite port = return
    // The lane's two multipliers shared by every op (docs/hls.md "Operand widths of the vector unit"): the
    // op kernels are inlined here, and these ask Vitis HLS for at most TATVPR_VLANES instances of each
    // (33 x 49 and 34 x 24 bits; 4 + 2 DSP48E2 a lane by the UG579 tiling rule, rtl/vector_lane.v's 6).
    // What HLS builds from them is not verified here (no Vitis HLS in this repository).
#pragma HLS ALLOCATION function instances = tatvpr_lane_mul1 limit = TATVPR_VLANES
#pragma HLS ALLOCATION function instances = tatvpr_lane_mul2 limit = TATVPR_VLANES
    if (op == TATVPR_V_LAYERNORM) {
        tatvpr_layernorm(x16, y8, t, d, gain64, bias64, (int64_t)eps_q);
    } else if (op == TATVPR_V_SOFTMAX) {
        tatvpr_softmax(s32, row_max32, p8, t, d, (int64_t)mult, shift);  // t rows of d scores
    } else if (op == TATVPR_V_GELU) {
        tatvpr_gelu(x8, y8, t * d, table8);
    } else if (op == TATVPR_V_ADD) {
        tatvpr_residual_add(x16, x8, out16, t, d, mult32, shift32);
    } else if (op == TATVPR_V_REQUANT) {
        tatvpr_requant(x16, y8, t * d, (int64_t)mult, shift);
    } else if (op == TATVPR_V_L2NORM) {
        tatvpr_l2norm(x16, out16, t * d);
    } else if (op == TATVPR_V_TOPK) {
        tatvpr_topk_schedule(x8, t, d, keep, 1, chunks16, pairs32, y8);
    } else if (op == TATVPR_V_TOPK_DENSE) {
        tatvpr_topk_schedule(x8, t, d, keep, 0, chunks16, pairs32, y8);
    } else if (op == TATVPR_V_CHAIN) {
        tatvpr_chain(x16, x8, mult32, shift32, gain64, bias64, (int64_t)eps_q, table8, out16, y8, chunks16, pairs32, t,
                     d, keep, shift);
    }
}
