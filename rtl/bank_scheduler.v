// Bank scheduler of the `act` skip mode (docs/engine.md sections 3 and 8): turns a token's
// DENSE int8 activations (all K values, zeros included) into the bank-scheduled chunk stream.
//
// Channel k lives in bank k mod B at address floor(k / B). Lane s is wired to bank s mod B;
// the q = SIMD / B lanes of bank b are s = b + B*j, j = 0..q-1. Each cycle, every bank hands
// its next (at most q) nonzero channels, in ascending channel order, to its lanes (lane j gets
// the j-th); the token's last chunk is the one after which no bank has a nonzero left, so a
// token takes max(1, max_b ceil(nz_b / q)) cycles, and a token with no nonzero still takes one.
//
// Tokens arrive whole (tok_act: K x 8 bits in one cycle, valid/ready) into a two-entry token
// register file (cur, nxt): a token presented in cycle t issues its first chunk in cycle t + 1
// (the scheduler's own latency, once per stream), and when the next token is already waiting,
// or arrives in the cycle the current token issues its last chunk, the next token's first
// chunk follows in the very next cycle: token loading never adds cycles inside a stream.
module bank_scheduler #(
    parameter integer SIMD = 4,
    parameter integer K = 16,
    parameter integer B = SIMD,
    parameter integer Q = SIMD / B,                // lanes per bank
    parameter integer D = (K + B - 1) / B,         // words per bank (addresses)
    parameter integer AW = (D <= 1) ? 1 : $clog2(D)
) (
    input  wire               clk,
    input  wire               rst,
    input  wire               tok_valid,
    input  wire [8*K-1:0]     tok_act,      // channel k at [8k +: 8]
    output wire               tok_ready,
    output wire               ch_valid,     // a chunk is issued this cycle
    output wire               ch_first,
    output wire               ch_last,
    output wire [SIMD-1:0]    ch_lane_ok,   // lane s carries a nonzero activation
    output wire [AW*SIMD-1:0] ch_addr,      // lane s reads its bank at [AW s +: AW]
    output wire [8*SIMD-1:0]  ch_act        // lane s's activation at [8s +: 8]
);
    localparam integer KP = B * D;           // channels padded to whole bank words

    reg            cur_valid, cur_first, nxt_valid;
    reg [8*K-1:0]  cur_val, nxt_val;
    reg [KP-1:0]   cur_rem;                  // channel k still to issue
    wire [KP-1:0]  rem_next;                 // what is left after this cycle's chunk
    wire [B-1:0]   left;
    wire [8*KP-1:0] vals;                    // cur_val padded with zero channels

    genvar b, jj, i, a;
    generate
        if (KP > K) begin : pad
            assign vals = {{(8*(KP-K)){1'b0}}, cur_val};
        end else begin : nopad
            assign vals = cur_val;
        end
        for (b = 0; b < B; b = b + 1) begin : bank
            // lane j takes the lowest remaining nonzero: oh = r & -r isolates it, r & (r - 1)
            // clears it (carry chains, not a D-deep priority mux); its address and value are
            // one-hot AND-OR reductions
            wire [D*(Q+1)-1:0] r;             // r[j]: what is left before lane j, at [D j +: D]
            for (jj = 0; jj < D; jj = jj + 1) begin : cur
                assign r[jj] = cur_rem[jj*B + b];
            end
            for (jj = 0; jj < Q; jj = jj + 1) begin : lane
                wire [D-1:0]  rj = r[D*jj +: D];
                wire [D-1:0]  oh = rj & (~rj + 1'b1);
                wire [AW-1:0] aj;
                wire [7:0]    vj;
                assign r[D*(jj+1) +: D] = rj & (rj - 1'b1);
                for (i = 0; i < AW; i = i + 1) begin : abit
                    wire [D-1:0] sel;
                    for (a = 0; a < D; a = a + 1) begin : m
                        if (((a >> i) & 1) != 0) begin : one
                            assign sel[a] = oh[a];
                        end else begin : zero
                            assign sel[a] = 1'b0;
                        end
                    end
                    assign aj[i] = |sel;
                end
                for (i = 0; i < 8; i = i + 1) begin : vbit
                    wire [D-1:0] sel;
                    for (a = 0; a < D; a = a + 1) begin : m
                        assign sel[a] = oh[a] & vals[8*(a*B + b) + i];
                    end
                    assign vj[i] = |sel;
                end
                assign ch_lane_ok[b + B*jj] = cur_valid & (|rj);
                assign ch_addr[AW*(b + B*jj) +: AW] = aj;
                assign ch_act[8*(b + B*jj) +: 8] = vj;
            end
            assign left[b] = |r[D*Q +: D];
            for (jj = 0; jj < D; jj = jj + 1) begin : keep
                assign rem_next[jj*B + b] = r[D*Q + jj];
            end
        end
    endgenerate

    assign ch_valid = cur_valid;
    assign ch_first = cur_first;
    assign ch_last = ~|left;
    wire advance = ~cur_valid | ch_last;      // cur is free after this cycle
    assign tok_ready = ~nxt_valid | advance;
    wire accept = tok_valid & tok_ready;

    // the token that becomes current: the waiting one, else the one arriving now
    wire [8*K-1:0] src = nxt_valid ? nxt_val : tok_act;
    wire [KP-1:0]  src_nz;
    generate
        for (jj = 0; jj < KP; jj = jj + 1) begin : nz
            if (jj < K) begin : real_ch
                assign src_nz[jj] = |src[8*jj +: 8];
            end else begin : pad_ch
                assign src_nz[jj] = 1'b0;
            end
        end
    endgenerate

    always @(posedge clk) begin
        if (rst) begin
            cur_valid <= 1'b0;
            nxt_valid <= 1'b0;
            cur_first <= 1'b0;
        end else if (advance) begin
            cur_valid <= nxt_valid | accept;
            cur_first <= 1'b1;
            cur_val <= src;
            cur_rem <= src_nz;
            if (nxt_valid) begin
                nxt_valid <= accept;
                if (accept) nxt_val <= tok_act;
            end
        end else begin
            cur_first <= 1'b0;
            cur_rem <= rem_next;
            if (accept) begin
                nxt_valid <= 1'b1;
                nxt_val <= tok_act;
            end
        end
    end
endmodule
