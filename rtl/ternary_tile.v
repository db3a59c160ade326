// One fold of the packed-ternary accelerator in the `act` skip mode (docs/engine.md sections 3,
// 6 and 8): the banked weight buffer, the gather wiring, the bank scheduler and the MAC array.
//
// Weight buffer (section 6, `weights` in none/act; rtl/weight_buffer.v): H halves x R replicas x B banks, each a
// memory of D = ceil(K / B) words of 2*PE bits (word = one channel's codes of all PE rows,
// PE row p at [2p +: 2]); channel k is in bank k mod B at address floor(k / B); a load writes
// one channel per cycle into all R replicas of its bank in half w_half. Each memory has P read
// ports (P = 2: port 0 shares its address with the write port, as a true-dual-port BRAM or a
// RAM64X1D does); R = SIMD / (B * P).
//
// Gather (section 3): lane s is wired to bank s mod B, replica floor(floor(s / B) / P), port
// floor(s / B) mod P, and reads it at the address the scheduler gives it. No crossbar: the
// scheduler (bank_scheduler.v) only ever puts bank b's channels on bank b's lanes.
//
// Timing: the scheduler issues a chunk in cycle t; the memories read synchronously at the edge
// ending t, in parallel with the array's stage-0 lane register, so the array sees the codes as
// stage-0 registers (CODE_REG = 0) and the pipeline is exactly the array's: a fold of C_f
// chunks takes C_f + ceil(log2 SIMD) + 2 cycles from its first chunk to its last result, and
// the scheduler adds 1 cycle from the first token presented to the first chunk.
module ternary_tile #(
    parameter integer PE = 4,
    parameter integer SIMD = 4,
    parameter integer K = 16,
    parameter integer B = SIMD,                    // banks
    parameter integer P = 1,                       // read ports per memory (1 or 2)
    parameter integer H = 1,                       // halves (2 = ping-pong)
    parameter integer ACCW = 32,
    parameter integer D = (K + B - 1) / B,         // words per memory
    parameter integer AW = (D <= 1) ? 1 : $clog2(D),
    parameter integer KW = (K <= 2) ? 1 : $clog2(K)
) (
    input  wire               clk,
    input  wire               rst,
    // weight load port: one channel's 2*PE-bit word per cycle
    input  wire               w_we,
    input  wire               w_half,
    input  wire [KW-1:0]      w_chan,
    input  wire [2*PE-1:0]    w_word,
    input  wire               rd_half,     // half the lanes read (static during a fold)
    // dense tokens
    input  wire               tok_valid,
    input  wire [8*K-1:0]     tok_act,
    output wire               tok_ready,
    // results
    output wire               ch_valid,    // a chunk was issued this cycle (for cycle counts)
    output wire               out_valid,
    output wire [ACCW*PE-1:0] out_acc
);

    wire              ch_first, ch_last;
    wire [SIMD-1:0]   ch_ok;
    wire [AW*SIMD-1:0] ch_addr;
    wire [8*SIMD-1:0] ch_act;

    bank_scheduler #(.SIMD(SIMD), .K(K), .B(B)) sched (
        .clk(clk), .rst(rst), .tok_valid(tok_valid), .tok_act(tok_act), .tok_ready(tok_ready),
        .ch_valid(ch_valid), .ch_first(ch_first), .ch_last(ch_last),
        .ch_lane_ok(ch_ok), .ch_addr(ch_addr), .ch_act(ch_act));

    // the word lane s read from half h, at [2*PE*(h*SIMD + s) +: 2*PE]
    wire [2*PE*SIMD*H-1:0] rd;
    weight_buffer #(.PE(PE), .SIMD(SIMD), .K(K), .B(B), .P(P), .H(H)) wbuf (
        .clk(clk), .w_we(w_we), .w_half(w_half), .w_chan(w_chan), .w_word(w_word),
        .rd_addr(ch_addr), .rd(rd));

    reg rd_half_q;
    always @(posedge clk) rd_half_q <= rd_half;
    wire [2*PE*SIMD-1:0] lane_word = (H == 2 && rd_half_q) ? rd[2*PE*SIMD*H-1 -: 2*PE*SIMD]
                                                           : rd[2*PE*SIMD-1:0];

    // array order: code of PE p, lane s at [2(p*SIMD+s) +: 2]
    wire [2*PE*SIMD-1:0] codes;
    genvar p, s;
    generate
        for (p = 0; p < PE; p = p + 1) begin : gp
            for (s = 0; s < SIMD; s = s + 1) begin : gs
                assign codes[2*(p*SIMD+s) +: 2] = lane_word[2*PE*s + 2*p +: 2];
            end
        end
    endgenerate

    ternary_mac_array #(.PE(PE), .SIMD(SIMD), .ACCW(ACCW), .CODE_REG(0)) array (
        .clk(clk), .rst(rst),
        .in_valid(ch_valid), .in_first(ch_first), .in_last(ch_last),
        .in_lane_ok(ch_ok), .in_act(ch_act), .in_code(codes),
        .out_valid(out_valid), .out_acc(out_acc)
    );
endmodule
