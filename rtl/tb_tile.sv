// Testbench (for Verilator) of ternary_tile: loads fold weights and dense tokens from hex files
// that tatvpr_hw/lower/rtl/flow.py writes, and for every fold streams all tokens as fast as the tile takes
// them (valid/ready), printing every finished token's accumulators and the fold's cycle counts.
// The chunks are the tile's own (its bank scheduler); nothing here knows the chunk rule.
//   plusargs: +dir=<folder with weights.hex, tokens.hex>  +nfold=<folds>  +ntok=<tokens>
//   weights.hex: nfold*K words of 2*PE bits (fold f, channel k at line f*K + k)
//   tokens.hex : ntok words of 8*K bits (channel k at [8k +: 8])
// Folds are loaded H at a time (fold f into half f mod H), then streamed one after another, so
// with H = 2 a fold reads its half while the other half holds a different fold.
// Per fold it prints "FOLD f <cycles> <latency>": cycles = first chunk issued .. last result
// visible (inclusive), latency = first token presented .. last result visible.
module tb_tile;
    parameter integer PE = 4;
    parameter integer SIMD = 4;
    parameter integer K = 16;
    parameter integer B = SIMD;
    parameter integer P = 1;
    parameter integer H = 1;
    localparam integer KW = (K <= 2) ? 1 : $clog2(K);
    localparam integer MAXW = 1 << 16;   // weight words
    localparam integer MAXT = 1 << 12;   // tokens

    reg clk = 1'b0;
    reg rst = 1'b1;
    reg w_we = 1'b0, w_half = 1'b0, rd_half = 1'b0;
    reg [KW-1:0] w_chan = 0;
    reg [2*PE-1:0] w_word = 0;
    reg tok_valid = 1'b0;
    reg [8*K-1:0] tok_act = 0;
    wire tok_ready, ch_valid, out_valid;
    wire [32*PE-1:0] out_acc;

    ternary_tile #(.PE(PE), .SIMD(SIMD), .K(K), .B(B), .P(P), .H(H)) dut (
        .clk(clk), .rst(rst), .w_we(w_we), .w_half(w_half), .w_chan(w_chan), .w_word(w_word),
        .rd_half(rd_half), .tok_valid(tok_valid), .tok_act(tok_act), .tok_ready(tok_ready),
        .ch_valid(ch_valid), .out_valid(out_valid), .out_acc(out_acc));

    reg [2*PE-1:0] weights [0:MAXW-1];
    reg [8*K-1:0] tokens [0:MAXT-1];
    string dir;
    integer nfold, ntok, cyc, i, f, g, hh, k, p, seen, last_out, first_ch, first_tok, accepted, wait_cyc;

    always #5 clk = ~clk;
    always @(posedge clk) cyc <= cyc + 1;

    initial begin
        if (!$value$plusargs("dir=%s", dir)) begin $display("ERROR missing +dir"); $finish; end
        if (!$value$plusargs("nfold=%d", nfold)) begin $display("ERROR missing +nfold"); $finish; end
        if (!$value$plusargs("ntok=%d", ntok)) begin $display("ERROR missing +ntok"); $finish; end
        if (nfold * K > MAXW || ntok > MAXT) begin $display("ERROR too many weights or tokens"); $finish; end
        $readmemh({dir, "/weights.hex"}, weights, 0, nfold * K - 1);
        $readmemh({dir, "/tokens.hex"}, tokens, 0, ntok - 1);
        cyc = 0;
        first_ch = -1;
        @(negedge clk); @(negedge clk);
        rst = 1'b0;
        for (g = 0; g < nfold; g = g + H) begin
            for (hh = 0; hh < H && g + hh < nfold; hh = hh + 1) begin
                for (k = 0; k < K; k = k + 1) begin
                    w_we = 1'b1; w_half = hh[0]; w_chan = k[KW-1:0];
                    w_word = weights[(g + hh) * K + k];
                    @(negedge clk);
                end
            end
            w_we = 1'b0;
            for (hh = 0; hh < H && g + hh < nfold; hh = hh + 1) begin
                f = g + hh;
                rd_half = hh[0];
                seen = 0; last_out = -1; first_ch = -1;
                first_tok = cyc;
                i = 0;
                while (i < ntok) begin
                    tok_valid = 1'b1;
                    tok_act = tokens[i];
                    accepted = tok_ready;   // registers only: settled since the last edge
                    @(negedge clk);
                    if (accepted != 0) i = i + 1;
                end
                tok_valid = 1'b0;
                // the last two tokens are still in the tile: wait for every result (bounded)
                wait_cyc = 0;
                while (seen < ntok && wait_cyc < 2 * (K + 1) + 64) begin
                    @(negedge clk);
                    wait_cyc = wait_cyc + 1;
                end
                repeat (8) @(negedge clk);
                if (seen != ntok) $display("ERROR fold %0d: saw %0d tokens, expected %0d", f, seen, ntok);
                $display("FOLD %0d %0d %0d", f, last_out - first_ch + 1, last_out - first_tok + 1);
            end
        end
        $finish;
    end

    always @(negedge clk) begin
        if (!rst && ch_valid && first_ch < 0) first_ch = cyc;
        if (!rst && out_valid) begin
            $write("OUT");
            for (p = 0; p < PE; p = p + 1) $write(" %0d", $signed(out_acc[32*p +: 32]));
            $write("\n");
            seen = seen + 1;
            last_out = cyc;
        end
    end
endmodule
