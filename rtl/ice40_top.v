// Self-test top for an iCEBreaker v1.0e (iCE40UP5K-SG48; pins in rtl/icebreaker.pcf): at power-up
// (and whenever the user button is released) it loads a stored fold of ternary weights into the
// tile (rtl/ternary_tile.v: banked weight buffer, gather, bank scheduler, array), streams NTOK
// stored dense int8 tokens through it, and compares every token's PE accumulators with the
// expected values stored in ROM. Green LED: all NTOK results matched. Red LED: a result
// differed, or the tile did not deliver NTOK results within 2^WATCHDOG_BITS cycles.
//
// The three ROMs are read from hex files at synthesis / simulation time (tatvpr_hw.rtl writes
// them; the expected values come from numpy, not from this RTL):
//   selftest_weights.hex  : K words of 2*PE bits, channel k's codes (PE row p at [2p +: 2];
//                           00 = 0, 01 = +1, 11 = -1)
//   selftest_tokens.hex   : NTOK words of 8*K bits (channel k at [8k +: 8], two's complement)
//   selftest_expected.hex : NTOK words of 32*PE bits (PE p at [32p +: 32], two's complement)
module ice40_top #(
    parameter integer PE = 2,
    parameter integer SIMD = 4,
    parameter integer K = 16,
    parameter integer B = SIMD,
    parameter integer P = 1,
    parameter integer NTOK = 4,
    parameter integer WATCHDOG_BITS = 16
) (
    input  wire CLK,      // 12 MHz oscillator
    input  wire BTN_N,    // user button, active low: held = reset, released = run the test again
    output wire LEDR_N,   // red LED, active low: failed
    output wire LEDG_N    // green LED, active low: passed
);
    localparam integer KW = (K <= 2) ? 1 : $clog2(K);
    localparam integer TW = $clog2(NTOK + 1);          // counts 0..NTOK
    localparam integer IW = (NTOK <= 1) ? 1 : $clog2(NTOK);  // indexes 0..NTOK-1

    reg [2*PE-1:0]  wrom [0:K-1];
    reg [8*K-1:0]   trom [0:NTOK-1];
    reg [32*PE-1:0] erom [0:NTOK-1];
    initial begin
        $readmemh("selftest_weights.hex", wrom);
        $readmemh("selftest_tokens.hex", trom);
        $readmemh("selftest_expected.hex", erom);
    end

    // Power-on reset: iCE40 flip-flops come up 0, so por counts 0 -> 15 before the test starts.
    // The button is synchronised (two flip-flops) and restarts the count while held.
    reg [3:0] por = 4'd0;
    reg btn_p0 = 1'b0, btn_p1 = 1'b0;
    always @(posedge CLK) begin
        btn_p0 <= ~BTN_N;
        btn_p1 <= btn_p0;
        if (btn_p1) por <= 4'd0;
        else if (!(&por)) por <= por + 4'd1;
    end
    wire rst = ~&por;

    reg             loading;
    reg [KW:0]      chan;      // weight words written
    reg [TW-1:0]    tok;       // tokens accepted by the tile
    reg [TW-1:0]    res;       // results compared
    reg             done, fail;
    reg [WATCHDOG_BITS-1:0] wd;

    wire              tok_valid = !loading && (tok != NTOK[TW-1:0]);
    wire              tok_ready, ch_valid, out_valid;
    wire [32*PE-1:0]  out_acc;
    wire [KW-1:0]     w_chan = chan[KW-1:0];
    wire [IW-1:0]     tok_i = (tok < NTOK[TW-1:0]) ? tok[IW-1:0] : {IW{1'b0}};
    wire [IW-1:0]     res_i = (res < NTOK[TW-1:0]) ? res[IW-1:0] : {IW{1'b0}};

    ternary_tile #(.PE(PE), .SIMD(SIMD), .K(K), .B(B), .P(P), .H(1)) tile (
        .clk(CLK), .rst(rst),
        .w_we(loading), .w_half(1'b0), .w_chan(w_chan), .w_word(wrom[w_chan]),
        .rd_half(1'b0),
        .tok_valid(tok_valid), .tok_act(trom[tok_i]), .tok_ready(tok_ready),
        .ch_valid(ch_valid), .out_valid(out_valid), .out_acc(out_acc));

    always @(posedge CLK) begin
        if (rst) begin
            loading <= 1'b1;
            chan <= {(KW+1){1'b0}};
            tok <= {TW{1'b0}};
            res <= {TW{1'b0}};
            done <= 1'b0;
            fail <= 1'b0;
            wd <= {WATCHDOG_BITS{1'b0}};
        end else if (!done) begin
            wd <= wd + 1'b1;
            if (loading) begin
                chan <= chan + 1'b1;
                if (chan == K - 1) loading <= 1'b0;
            end
            if (tok_valid && tok_ready) tok <= tok + 1'b1;
            if (out_valid) begin
                if (out_acc != erom[res_i]) fail <= 1'b1;
                if (res == NTOK - 1) done <= 1'b1;
                res <= res + 1'b1;
            end
            if (&wd) begin
                fail <= 1'b1;
                done <= 1'b1;
            end
        end
    end

    assign LEDG_N = ~(done & ~fail);
    assign LEDR_N = ~(done & fail);
endmodule
