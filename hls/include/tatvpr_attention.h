// The fused attention of one ViT block (docs/engine.md section 5a, schedule.attention: fused): a mode of
// the int8 unit's IP (tatvpr_int8_top, mode TATVPR_I8_ATTENTION). Per head, K_h and V_h are loaded once
// into on-chip buffers; the query rows then go through in blocks of TATVPR_ATT_ROWS rows:
//
//   S_b = Q_b K_h^T   int32, on the int8 unit's rows x cols array loops (counted as tatvpr_int8_gemm
//                     counts: ceil(R_b / rows) * ceil(T / cols) * dh); each row's maximum taken as S drains
//   P_b = softmax(S_b) uint8, tatvpr_softmax's exact arithmetic (docs/integer.md) on the IP's own
//                     TATVPR_ATT_LANES softmax-only lanes (schedule.attention_lanes, default the vector
//                     unit's TATVPR_VLANES; rtl/vector_lane.v SOFTMAX_ONLY), in that lane's operand
//                     widths (below): 2 ceil(T / lanes) + 33 row steps a row
//   O_b = P_b V_h     on the array (ceil(R_b / rows) * ceil(dh / cols) * T), requantised to int8
//
// Blocks flow through three stages with ping-pong score and probability rows: slot s runs QK^T of block s
// and P.V of block s - 2 on the array while the softmax lanes run block s - 1 (sim.schedule.FusedAttention:
// a head takes sum over slots of max(qk_s + pv_(s-2), sm_(s-1))). The C simulation runs a slot's three
// calls one after another (they touch different halves, so the result is the same); the concurrency itself
// is unverified without the AMD tools. Only Q, K, V in and the output out cross the AXI ports: no int32
// scores, no probabilities, no host row maxima.
#ifndef TATVPR_ATTENTION_H
#define TATVPR_ATTENTION_H

#include <stdint.h>

#include "tatvpr_int8.h"
#include "tatvpr_vector.h"

#ifndef TATVPR_ATT_ROWS
#define TATVPR_ATT_ROWS 32  // query rows per block (schedule.attention_rows)
#endif
#ifndef TATVPR_ATT_LANES
#define TATVPR_ATT_LANES TATVPR_VLANES  // softmax-only lanes (schedule.attention_lanes)
#endif
#ifndef TATVPR_ATT_MAX_TOKENS
#define TATVPR_ATT_MAX_TOKENS 257  // schedule.max_tokens: sizes K, V and the score rows
#endif
#ifndef TATVPR_ATT_MAX_HEAD_DIM
#define TATVPR_ATT_MAX_HEAD_DIM 64  // schedule.max_head_dim
#endif

// The softmax-only lane's operand widths (rtl/vector_lane.v SOFTMAX_ONLY = 1, charged as
// lut/ff/dsp_per_softmax_lane in sim/boards/resource_model.yaml; docs/hls.md "Operand widths of the vector
// unit"): the vector lane's TATVPR_VW_Z / MULT / E / RECIP / SHIFT (tatvpr_vector.h, one definition, the same
// -D overrides), on two multipliers of their own ports: tatvpr_att_mul1 z x mult (33 signed x 31 unsigned)
// and tatvpr_att_mul2 e x recip (16 x 18 unsigned), where the full lane's tatvpr_lane_mul1 / 2 are 33 x 49 and
// 34 x 24. The row sum of e (each <= 2^15) is held in TATVPR_ATT_VW_SUM bits unsigned, the lane's 32-bit sum.
#ifndef TATVPR_ATT_VW_SUM
#define TATVPR_ATT_VW_SUM 32
#endif
#if TATVPR_ATT_MAX_TOKENS >= (1LL << (TATVPR_ATT_VW_SUM - 15))
#error "TATVPR_ATT_MAX_TOKENS x 2^15 must fit the TATVPR_ATT_VW_SUM-bit row sum"
#endif
int64_t tatvpr_att_mul1(tatvpr_s<TATVPR_VW_Z> z, tatvpr_u<TATVPR_VW_MULT> mult);
int64_t tatvpr_att_mul2(tatvpr_u<TATVPR_VW_E> e, tatvpr_u<TATVPR_VW_RECIP> recip);

// tatvpr_int8_top's mode for this kernel (after TATVPR_I8_OUT32 / OUT8 / OUT16)
enum { TATVPR_I8_ATTENTION = 3 };

// qkv[t][3 * heads * dh] int8: the qkv projection's output as the integer model lays it out (token-major;
// Q, K, V one after another, each head-major). out[t][heads * dh] int8: softmax(Q_h K_h^T) V_h requantised
// by sat8((acc * av_mult + 2^(av_shift - 1)) >> av_shift), head h in columns h * dh .. (h + 1) * dh - 1 (the
// projection's input). sm_mult / sm_shift: the softmax's multiplier (tatvpr_softmax). Returns 0, or -1 for a
// bad shape (t < 1, t > TATVPR_ATT_MAX_TOKENS, dh < 1, dh > TATVPR_ATT_MAX_HEAD_DIM, heads < 1, a shift
// outside [1, 62]): nothing written then.
int tatvpr_attention(const int8_t *qkv, int8_t *out, int heads, int t, int dh, int64_t sm_mult, int sm_shift,
                     int64_t av_mult, int av_shift);

#endif
