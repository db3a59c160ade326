// Testbench (for Verilator) of ternary_tile: loads weights and a chunk stream from hex files that
// tatvpr_hw/rtl.py writes, streams the chunks back to back, and prints every finished token's
// accumulators and the fold's cycle count (first chunk presented .. last result visible).
//   plusargs: +dir=<folder with weights.hex, chunks.hex>  +nch=<chunks>  +ntok=<tokens>
module tb_tile;
    parameter integer PE = 4;
    parameter integer SIMD = 4;
    parameter integer K = 16;
    localparam integer IW = (K <= 2) ? 1 : $clog2(K);
    localparam integer CWID = 2 + SIMD + IW*SIMD + 8*SIMD;  // {first, last, lane_ok, idx, act}
    localparam integer MAXCH = 1 << 16;

    reg clk = 1'b0;
    reg rst = 1'b1;
    reg w_we = 1'b0;
    reg [$clog2(PE*K)-1:0] w_addr = 0;
    reg [1:0] w_code = 2'b00;
    reg in_valid = 1'b0, in_first = 1'b0, in_last = 1'b0;
    reg [SIMD-1:0] in_lane_ok = 0;
    reg [IW*SIMD-1:0] in_idx = 0;
    reg [8*SIMD-1:0] in_act = 0;
    wire out_valid;
    wire [32*PE-1:0] out_acc;

    ternary_tile #(.PE(PE), .SIMD(SIMD), .K(K)) dut (
        .clk(clk), .rst(rst), .w_we(w_we), .w_addr(w_addr), .w_code(w_code),
        .in_valid(in_valid), .in_first(in_first), .in_last(in_last),
        .in_lane_ok(in_lane_ok), .in_idx(in_idx), .in_act(in_act),
        .out_valid(out_valid), .out_acc(out_acc));

    reg [1:0] weights [0:PE*K-1];
    reg [CWID-1:0] chunks [0:MAXCH-1];
    string dir;
    integer nch, ntok, cyc, i, p, start, seen, last_out;

    always #5 clk = ~clk;
    always @(posedge clk) cyc <= cyc + 1;

    initial begin
        if (!$value$plusargs("dir=%s", dir)) begin $display("ERROR missing +dir"); $finish; end
        if (!$value$plusargs("nch=%d", nch)) begin $display("ERROR missing +nch"); $finish; end
        if (!$value$plusargs("ntok=%d", ntok)) begin $display("ERROR missing +ntok"); $finish; end
        if (nch > MAXCH) begin $display("ERROR too many chunks"); $finish; end
        $readmemh({dir, "/weights.hex"}, weights);
        $readmemh({dir, "/chunks.hex"}, chunks, 0, nch - 1);
        cyc = 0; seen = 0; last_out = -1;
        @(negedge clk); @(negedge clk);
        rst = 1'b0;
        for (i = 0; i < PE*K; i = i + 1) begin
            w_we = 1'b1; w_addr = i[$clog2(PE*K)-1:0]; w_code = weights[i];
            @(negedge clk);
        end
        w_we = 1'b0;
        start = cyc;
        for (i = 0; i < nch; i = i + 1) begin
            {in_first, in_last, in_lane_ok, in_idx, in_act} = chunks[i];
            in_valid = 1'b1;
            @(negedge clk);
        end
        in_valid = 1'b0;
        repeat (64) @(negedge clk);
        if (seen != ntok) $display("ERROR saw %0d tokens, expected %0d", seen, ntok);
        $display("DONE %0d", last_out - start + 1);
        $finish;
    end

    always @(negedge clk) begin
        if (!rst && out_valid) begin
            $write("OUT");
            for (p = 0; p < PE; p = p + 1) $write(" %0d", $signed(out_acc[32*p +: 32]));
            $write("\n");
            seen = seen + 1;
            last_out = cyc;
        end
    end
endmodule
