// Testbench (for Verilator) of topk_unit: runs m rows of k int8 channels read from a hex file
// that tests/rtl/test_topk_unit.py writes, feeding LANES channels whenever the unit consumes
// them (in_rd), and prints what comes out:
//   plusargs: +dir=<folder with rows.hex> +m=<rows> +k=<channels> +keep=<kept> +stream=<0|1>
//   rows.hex: m*k bytes, one a line (row r, channel c at line r*k + c)
// Prints "ROW <cycle>" at each row's first cycle, "TOK <g>" per row (stream), "D <value>" per
// dense lane and "S <word>" per stream slot (hex, in order), and "END <busy cycles> <cycles to
// the last output>" (cycles counted from the first busy cycle).
module tb_topk_unit;
    parameter integer LANES = 16;
    parameter integer K_MAX = 256;
    parameter integer BANKS = 8;
    parameter integer SIMD = 8;
    localparam integer IW = (K_MAX <= 2) ? 1 : $clog2(K_MAX);
    localparam integer KB = $clog2(K_MAX + 1);
    localparam integer QW = 8 + IW;
    localparam integer D = (K_MAX + BANKS - 1) / BANKS;
    localparam integer CW = $clog2(D + 1);
    localparam integer MAXB = 1 << 20;

    reg clk = 1'b0;
    reg rst = 1'b1;
    reg start = 1'b0;
    reg [15:0] m_rows = 0;
    reg [KB-1:0] k = 0, keep = 0;
    reg stream = 1'b0;
    wire busy, row_start, in_rd, out_valid, out_dense, tok_valid;
    wire [LANES-1:0] out_mask;
    wire [QW*LANES-1:0] out_data;
    wire [CW-1:0] tok_chunks;
    reg [8*LANES-1:0] in_data;

    topk_unit #(.LANES(LANES), .K_MAX(K_MAX), .BANKS(BANKS), .SIMD(SIMD)) dut (
        .clk(clk), .rst(rst), .start(start), .m_rows(m_rows), .k(k), .keep(keep), .stream(stream),
        .busy(busy), .row_start(row_start), .in_rd(in_rd), .in_data(in_data), .out_valid(out_valid),
        .out_dense(out_dense), .out_mask(out_mask), .out_data(out_data), .tok_valid(tok_valid),
        .tok_chunks(tok_chunks));

    reg [7:0] bytes [0:MAXB-1];
    string dir;
    integer adv, m, kk, kp, st, row, grp, l, cyc, busy_cycles, last_out, started;

    // the row's next LANES channels (zero past k)
    always @* begin
        for (l = 0; l < LANES; l = l + 1)
            in_data[8*l +: 8] = (grp * LANES + l < kk) ? bytes[row * kk + grp * LANES + l] : 8'd0;
    end

    always #5 clk = ~clk;

    initial begin
        if (!$value$plusargs("dir=%s", dir)) dir = ".";
        if (!$value$plusargs("m=%d", m)) m = 1;
        if (!$value$plusargs("k=%d", kk)) kk = K_MAX;
        if (!$value$plusargs("keep=%d", kp)) kp = kk;
        if (!$value$plusargs("stream=%d", st)) st = 1;
        $readmemh({dir, "/rows.hex"}, bytes, 0, m * kk - 1);
        row = 0; grp = 0; cyc = 0; busy_cycles = 0; last_out = 0; started = 0;
        repeat (3) @(negedge clk);
        rst = 1'b0;
        @(negedge clk);
        start = 1'b1; m_rows = m[15:0]; k = kk[KB-1:0]; keep = kp[KB-1:0]; stream = st[0];
        @(negedge clk);
        start = 1'b0;
        while (busy || out_valid) begin
            if (busy) busy_cycles = busy_cycles + 1;
            if (busy || started) begin started = 1; cyc = cyc + 1; end
            if (row_start) $display("ROW %0d", cyc);
            if (tok_valid) $display("TOK %0d", tok_chunks);
            if (out_valid) begin
                last_out = cyc;
                for (l = 0; l < LANES; l = l + 1)
                    if (out_mask[l]) $display("%s %h", out_dense ? "D" : "S", out_data[QW*l +: QW]);
            end
            adv = in_rd;
            @(posedge clk);
            #1;
            if (adv) begin
                grp = grp + 1;
                if (grp * LANES >= kk) begin row = row + 1; grp = 0; end
            end
        end
        $display("END %0d %0d", busy_cycles, last_out);
        $finish;
    end
endmodule
