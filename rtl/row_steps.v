// The vector unit's per-row steps, shared by all its lanes (hls/src/tatvpr_vector.cpp: isqrt64, div_pow2 and
// the lanes' partial sums added into one row sum), and the int8 unit's row-max comparators of the fused
// attention (hls/src/tatvpr_attention.cpp block_scores: QK_DRAIN). Verilog-2005, for yosys and Verilator.
//
// row_steps: one step a cycle, as the HLS kernel counts them (TATVPR_ROW_CYCLES_*, hls/include/tatvpr_vector.h):
//   mode 0 LayerNorm: from sx = sum_s, sxx = sum_q, d = ln_d: mu = floor(sx / d) in 16 steps, ssd = sxx - mu (sx + r)
//                     in 16 shift-and-subtract steps, var = ssd / d + eps_in in 32 steps, sd = max(1, isqrt(var << 16))
//                     in 32 steps, then inv = 2^47 / sd in 48 steps                                  (144 cycles)
//   mode 1 softmax:   recip = 2^32 / sum_q in 33 steps                                                (33 cycles)
//   mode 2 L2 norm:   sd = max(1, isqrt(sum_q << 16)) in 32 steps, then inv = 2^47 / sd in 48 steps   (80 cycles)
// Square root: restoring, two radicand bits a step (a 64-bit radicand, 32 steps: floor(sqrt), the same root as
// the C code's form with bit = 4^31 .. 4^0). Divider: restoring, one quotient bit a step (div_pow2: the dividend
// 2^e, its bits from the top: a 1, then e zeros; div_steps: n < d 2^bits, the remainder starting at n >> bits).
// LayerNorm's mean (div_steps, 16 bits): |sx| <= 2^15 d (int16 rows), the dividend sx or -sx + d - 1 < d 2^16;
// r = sx - d mu (0 <= r < d) from the remainder; ssd = sxx - q u (q = |mu|, u = +-(sx + r), |u| < 2^32): one bit
// of q a step, least significant first, on a 50-bit accumulator (|q u| < 2^48); ssd <= d 65535^2 < d 2^32, so
// ssd / d is 32 quotient bits (div_steps, 32 bits); eps_in below 2^46 - 2^32 keeps var below 2^46. Widths are the value ranges of the C code: var and the sum of squares
// below 2^46 (rows of at most 65,535 int16 elements; TATVPR_L2NORM_MAX_N), so the radicand is below 2^62 and
// sd below 2^31; the softmax sum below 2^31 (e <= 2^15 a element), so every divisor fits DIV_BITS = 32 bits.
// NOT here: the control FSM that sequences the passes; mu itself for the normalising pass (-q when sx < 0:
// the quotient register's low 16 bits and the sign, at the end of the mean's steps).
// Reduction: the lanes' accumulators (acc_s: LANES x S_BITS signed, acc_q: LANES x Q_BITS unsigned) into the
// row sums sum_s / sum_q, a binary adder tree with a register after each level (latency clog2(LANES) cycles,
// sum_valid). SOFTMAX_ONLY = 1 (the fused attention's unit): no square root, no acc_s tree, mode 1 only.
module row_steps #(
    parameter integer LANES = 4,
    parameter integer SOFTMAX_ONLY = 0,
    parameter integer S_BITS = 32,
    parameter integer Q_BITS = 48,
    parameter integer DIV_BITS = 32
) (
    input  wire                      clk,
    input  wire                      rst,
    input  wire                      reduce,     // the lanes' accumulators are final: add them up
    input  wire [S_BITS*LANES-1:0]   acc_s,
    input  wire [Q_BITS*LANES-1:0]   acc_q,
    output wire [S_BITS-1:0]         sum_s,
    output wire [Q_BITS-1:0]         sum_q,
    output wire                      sum_valid,
    input  wire                      start,      // the row steps, from sum_q (modes 1, 2) or sum_s, sum_q (mode 0)
    input  wire [1:0]                mode,
    input  wire [15:0]               ln_d,       // LayerNorm's row length d (1 .. 65535)
    input  wire [45:0]               eps_in,     // LayerNorm's eps_q
    output reg                       busy,
    output reg                       done,       // one cycle, after the last step; quot holds the result
    output reg  [47:0]               quot
);
    localparam integer D = (LANES <= 1) ? 0 : $clog2(LANES);
    localparam integer P = 1 << D;

    // ---- the reduction: heap layout, leaves P .. 2P-1 (lanes, zeros above LANES), root 1
    wire [S_BITS-1:0] ls [1:2*P-1];
    wire [Q_BITS-1:0] lq [1:2*P-1];
    localparam integer DV = (D == 0) ? 0 : D - 1;
    reg  [P:0]        vpipe;
    genvar n;
    generate
        for (n = 0; n < P; n = n + 1) begin : leaf
            if (n < LANES) begin : used
                assign ls[P + n] = SOFTMAX_ONLY ? {S_BITS{1'b0}} : acc_s[S_BITS*n +: S_BITS];
                assign lq[P + n] = acc_q[Q_BITS*n +: Q_BITS];
            end else begin : pad
                assign ls[P + n] = {S_BITS{1'b0}};
                assign lq[P + n] = {Q_BITS{1'b0}};
            end
        end
        for (n = 1; n < P; n = n + 1) begin : node
            reg [S_BITS-1:0] rs;
            reg [Q_BITS-1:0] rq;
            always @(posedge clk) begin
                rs <= SOFTMAX_ONLY ? {S_BITS{1'b0}} : ls[2*n] + ls[2*n+1];
                rq <= lq[2*n] + lq[2*n+1];
            end
            assign ls[n] = rs;
            assign lq[n] = rq;
        end
    endgenerate
    always @(posedge clk) begin
        if (rst) vpipe <= 0;
        else vpipe <= {vpipe[P-1:0], reduce};
    end
    assign sum_s = ls[1];
    assign sum_q = lq[1];
    assign sum_valid = (D == 0) ? reduce : vpipe[DV];

    // ---- the row steps
    localparam [2:0] IDLE = 3'd0, SQRT = 3'd1, DIV = 3'd2, MU = 3'd3, MUL = 3'd4, VDIV = 3'd5;
    reg  [2:0]          phase;
    reg  [5:0]          cnt;        // the step within the phase
    reg  [5:0]          e_last;     // the reciprocal's last step: e (47 or 32)
    reg  [63:0]         rad;        // the radicand, two bits out a step
    reg  [32:0]         srem;       // the square root's remainder (<= 2 root)
    reg  [31:0]         root;
    reg  [DIV_BITS-1:0] dvs;        // the divisor
    reg  [DIV_BITS-1:0] drem;       // the divider's remainder (< dvs)
    reg  [47:0]         num;        // the dividend's bits still to come in, from the top
    reg  [49:0]         acc;        // LayerNorm: sxx, then ssd
    reg  [49:0]         tt;         // LayerNorm: sx during the mean's steps, then u << step
    reg  [15:0]         qm;         // LayerNorm: q = |mu|, one bit out a step

    wire [34:0]         srem2 = {srem, rad[63:62]};
    wire [34:0]         trial = {1'b0, root, 2'b01};
    wire                s_ge = (srem2 >= trial);
    wire [DIV_BITS:0]   drem2 = {drem, num[47]};
    wire                d_ge = (drem2 >= {1'b0, dvs});
    wire [DIV_BITS-1:0] drem_next = d_ge ? drem2[DIV_BITS-1:0] - dvs : drem2[DIV_BITS-1:0];
    wire [47:0]         quot_next = {quot[46:0], d_ge};
    wire [31:0]         root_next = {root[30:0], s_ge};
    wire [63:0]         sum_q64 = {{(64-Q_BITS){1'b0}}, sum_q};
    // LayerNorm's operands: the dividend of the mean, the floor remainder r and u = +-(sx + r), ssd, var
    wire                neg = tt[49];
    wire [49:0]         sx50 = {{(50-S_BITS){sum_s[S_BITS-1]}}, sum_s};
    wire [32:0]         mu_num = sx50[49] ? (33'd0 - sx50[32:0]) + {17'd0, ln_d} - 33'd1 : sx50[32:0];
    wire [16:0]         r17 = neg ? {1'b0, ln_d} - 17'd1 - {1'b0, drem_next[15:0]} : {1'b0, drem_next[15:0]};
    wire [33:0]         t34 = tt[33:0] + {17'd0, r17};
    wire [33:0]         u34 = neg ? 34'd0 - t34 : t34;
    wire [49:0]         acc_next = qm[0] ? acc - tt : acc;
    wire [45:0]         var_next = {14'd0, quot_next[31:0]} + eps_in;

    always @(posedge clk) begin
        done <= 1'b0;
        if (rst) begin
            phase <= IDLE;
            busy <= 1'b0;
        end else if (phase == IDLE) begin
            if (start) begin
                busy <= 1'b1;
                cnt <= 6'd0;
                quot <= 48'd0;
                drem <= {DIV_BITS{1'b0}};
                num <= 48'h800000000000;
                srem <= 33'd0;
                root <= 32'd0;
                if (SOFTMAX_ONLY || mode == 2'd1) begin
                    phase <= DIV;
                    e_last <= 6'd32;
                    dvs <= sum_q64[DIV_BITS-1:0];
                end else if (mode == 2'd0) begin
                    phase <= MU;
                    e_last <= 6'd47;
                    dvs <= {{(DIV_BITS-16){1'b0}}, ln_d};
                    drem <= {{(DIV_BITS-17){1'b0}}, mu_num[32:16]};
                    num <= {mu_num[15:0], 32'd0};
                    acc <= {2'b00, sum_q64[47:0]};
                    tt <= sx50;
                end else begin
                    phase <= SQRT;
                    e_last <= 6'd47;
                    rad <= {2'b00, sum_q64[45:0], 16'd0};
                end
            end
        end else if (!SOFTMAX_ONLY && phase == MU) begin
            drem <= drem_next;
            quot <= quot_next;
            num <= {num[46:0], 1'b0};
            if (cnt == 6'd15) begin
                phase <= MUL;
                cnt <= 6'd0;
                qm <= quot_next[15:0];
                tt <= {{16{u34[33]}}, u34};
            end else begin
                cnt <= cnt + 6'd1;
            end
        end else if (!SOFTMAX_ONLY && phase == MUL) begin
            acc <= acc_next;
            tt <= {tt[48:0], 1'b0};
            qm <= {1'b0, qm[15:1]};
            if (cnt == 6'd15) begin
                phase <= VDIV;
                cnt <= 6'd0;
                quot <= 48'd0;
                drem <= {{(DIV_BITS-16){1'b0}}, acc_next[47:32]};
                num <= {acc_next[31:0], 16'd0};
            end else begin
                cnt <= cnt + 6'd1;
            end
        end else if (!SOFTMAX_ONLY && phase == VDIV) begin
            drem <= drem_next;
            quot <= quot_next;
            num <= {num[46:0], 1'b0};
            if (cnt == 6'd31) begin
                phase <= SQRT;
                cnt <= 6'd0;
                rad <= {2'b00, var_next, 16'd0};
            end else begin
                cnt <= cnt + 6'd1;
            end
        end else if (!SOFTMAX_ONLY && phase == SQRT) begin
            srem <= s_ge ? srem2[32:0] - trial[32:0] : srem2[32:0];
            root <= root_next;
            rad <= {rad[61:0], 2'b00};
            if (cnt == 6'd31) begin
                phase <= DIV;
                cnt <= 6'd0;
                quot <= 48'd0;
                drem <= {DIV_BITS{1'b0}};
                num <= 48'h800000000000;
                dvs <= (root_next == 32'd0) ? 32'd1 : root_next;   // sd = max(sd, 1)
            end else begin
                cnt <= cnt + 6'd1;
            end
        end else if (phase == DIV) begin
            drem <= drem_next;
            quot <= quot_next;
            num <= {num[46:0], 1'b0};
            if (cnt == e_last) begin
                phase <= IDLE;
                busy <= 1'b0;
                done <= 1'b1;
            end else begin
                cnt <= cnt + 6'd1;
            end
        end
    end
endmodule

// The int8 unit's row-max comparators (the fused attention, block_scores QK_DRAIN): ROWS int32 scores drain a
// cycle, one per array row, each compared with its row's running maximum and kept if larger; clr sets every
// maximum to INT32_MIN (the start of a block). Per-row cost = the slope over ROWS.
module row_max_bank #(
    parameter integer ROWS = 8
) (
    input  wire                 clk,
    input  wire                 clr,
    input  wire [ROWS-1:0]      valid,
    input  wire [32*ROWS-1:0]   score,
    output wire [32*ROWS-1:0]   row_max
);
    genvar r;
    generate
        for (r = 0; r < ROWS; r = r + 1) begin : row
            reg signed [31:0] m;
            wire signed [31:0] v = score[32*r +: 32];
            always @(posedge clk) begin
                if (clr) m <= 32'sh80000000;
                else if (valid[r] && v > m) m <= v;
            end
            assign row_max[32*r +: 32] = m;
        end
    endgenerate
endmodule
