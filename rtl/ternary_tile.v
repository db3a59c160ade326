// One fold of the packed-ternary accelerator with its weight store and gather
// (shared/ENGINE.md, `act` skip mode): PE x K 2-bit weight codes held on chip, a stream of
// chunks of SIMD (channel index, int8 value) pairs, each PE gathering its codes at the chunk's
// indices, then the multiplier-free MAC array (ternary_mac_array.v).
//
// Weights are written one code per cycle before the fold (w_we, w_addr = p*K + k).
// Cycles of a fold: one per chunk (a token of nnz kept activations sends max(1, ceil(nnz/SIMD))
// chunks) plus the pipeline fill ceil(log2 SIMD) + 2 -- exactly the simulator's C_f + fill.
module ternary_tile #(
    parameter integer PE = 4,
    parameter integer SIMD = 4,
    parameter integer K = 16,
    parameter integer IW = (K <= 2) ? 1 : $clog2(K),  // index width, ceil(log2 K)
    parameter integer ACCW = 32
) (
    input  wire                   clk,
    input  wire                   rst,
    // weight load port
    input  wire                   w_we,
    input  wire [$clog2(PE*K)-1:0] w_addr,
    input  wire [1:0]             w_code,
    // chunk stream (act skip mode)
    input  wire                   in_valid,
    input  wire                   in_first,
    input  wire                   in_last,
    input  wire [SIMD-1:0]        in_lane_ok,
    input  wire [IW*SIMD-1:0]     in_idx,    // channel index of lane s at [IW s +: IW]
    input  wire [8*SIMD-1:0]      in_act,
    // results
    output wire                   out_valid,
    output wire [ACCW*PE-1:0]     out_acc
);
    reg [1:0] wmem [0:PE*K-1];
    always @(posedge clk) if (w_we) wmem[w_addr] <= w_code;

    wire [2*PE*SIMD-1:0] codes;
    genvar p, s;
    generate
        for (p = 0; p < PE; p = p + 1) begin : gp
            for (s = 0; s < SIMD; s = s + 1) begin : gs
                assign codes[2*(p*SIMD+s) +: 2] = wmem[p*K + in_idx[IW*s +: IW]];
            end
        end
    endgenerate

    ternary_mac_array #(.PE(PE), .SIMD(SIMD), .ACCW(ACCW)) array (
        .clk(clk), .rst(rst),
        .in_valid(in_valid), .in_first(in_first), .in_last(in_last),
        .in_lane_ok(in_lane_ok), .in_act(in_act), .in_code(codes),
        .out_valid(out_valid), .out_acc(out_acc)
    );
endmodule
