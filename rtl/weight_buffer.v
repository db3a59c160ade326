// The tile's banked weight buffer (docs/engine.md section 6, `weights` in none/act), a module of
// its own so that yosys can map exactly these memories without the rest of the tile
// (tests/rtl/test_memory_rule.py); ternary_tile.v instantiates it.
//
// H halves x R replicas x B banks, each a memory of D = ceil(K / B) words of 2*PE bits (word =
// one channel's codes of all PE rows); channel k is in bank k mod B at address floor(k / B); a
// load writes one channel per cycle into all R replicas of its bank in half w_half. Each memory
// has P read ports (P = 2: port 0 shares its address with the write port, as a true-dual-port
// BRAM or a LUTRAM with a read-write port does); R = SIMD / (B * P). Lane s reads bank s mod B,
// replica floor(floor(s / B) / P), port floor(s / B) mod P, at rd_addr[AW*s +: AW]; reads are
// synchronous (the memory's output register).
module weight_buffer #(
    parameter integer PE = 4,
    parameter integer SIMD = 4,
    parameter integer K = 16,
    parameter integer B = SIMD,
    parameter integer P = 1,
    parameter integer H = 1,
    parameter integer D = (K + B - 1) / B,
    parameter integer AW = (D <= 1) ? 1 : $clog2(D),
    parameter integer KW = (K <= 2) ? 1 : $clog2(K)
) (
    input  wire                    clk,
    input  wire                    w_we,
    input  wire                    w_half,
    input  wire [KW-1:0]           w_chan,
    input  wire [2*PE-1:0]         w_word,
    input  wire [AW*SIMD-1:0]      rd_addr,
    // the word lane s read from half h, at [2*PE*(h*SIMD + s) +: 2*PE]
    output wire [2*PE*SIMD*H-1:0]  rd
);
    localparam integer R = SIMD / (B * P);

    wire [B-1:0]  w_bank_hit;
    wire [31:0]   w_chan32 = {{(32-KW){1'b0}}, w_chan};
    wire [31:0]   w_div = w_chan32 / B;
    wire [AW-1:0] w_addr = w_div[AW-1:0];
    genvar h, r, b;
    generate
        for (b = 0; b < B; b = b + 1) begin : wsel
            assign w_bank_hit[b] = (w_chan32 % B) == b;
        end
    endgenerate

    generate
        for (h = 0; h < H; h = h + 1) begin : half
            for (r = 0; r < R; r = r + 1) begin : rep
                for (b = 0; b < B; b = b + 1) begin : bank
                    localparam integer S0 = b + B * (r * P);   // lane on port 0
                    wire we = w_we & w_bank_hit[b] & ((H == 1) | (w_half == h));
                    reg [2*PE-1:0] mem [0:D-1];
                    reg [2*PE-1:0] q0;
                    if (P == 1) begin : sdp
                        always @(posedge clk) begin
                            if (we) mem[w_addr] <= w_word;
                            q0 <= mem[rd_addr[AW*S0 +: AW]];
                        end
                    end else begin : tdp
                        localparam integer S1 = b + B * (r * P + 1);  // lane on port 1
                        wire [AW-1:0] a0 = we ? w_addr : rd_addr[AW*S0 +: AW];
                        reg [2*PE-1:0] q1;
                        always @(posedge clk) begin
                            if (we) mem[a0] <= w_word;
                            q0 <= mem[a0];
                        end
                        always @(posedge clk) q1 <= mem[rd_addr[AW*S1 +: AW]];
                        assign rd[2*PE*(h*SIMD + S1) +: 2*PE] = q1;
                    end
                    assign rd[2*PE*(h*SIMD + S0) +: 2*PE] = q0;
                end
            end
        end
    endgenerate
endmodule
