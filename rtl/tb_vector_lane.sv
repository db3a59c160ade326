// Testbench (for Verilator) of vector_lane (SOFTMAX_ONLY = 1, e.g. verilator -GSOFTMAX_ONLY=1: the
// softmax-only lane of the fused attention): runs the groups of elements that tests/rtl/test_vector_lane.py
// writes (plusarg +file=<path>) and prints what comes out.
//   file: "G op rconst inv recip n" (hex, two's complement in 64 bits), then n lines "x y8 mult shift gain
//         bias" (hex, 64 bits each); the table lines "T addr data" (hex) write the GELU table first.
// Per group: acc_clr, then one element a cycle (gain 6 and bias 7 cycles after their element, as the
// lane expects), then the pipeline drains; prints "O <out>" per output (signed decimal) and
// "A <acc_s> <acc_q>" after the group.
module tb_vector_lane #(parameter integer SOFTMAX_ONLY = 0);
    reg clk = 1'b0;
    reg rst = 1'b1;
    reg in_valid = 1'b0, acc_clr = 1'b0, tbl_we = 1'b0;
    reg [2:0] op = 3'd0;
    reg signed [31:0] x = 0, mult = 0, rconst = 0;
    reg signed [7:0] y8 = 0;
    reg [5:0] shift = 6'd1;
    reg signed [23:0] gain = 0;
    reg signed [47:0] bias = 0;
    reg [47:0] inv = 0;
    reg [17:0] recip = 0;
    reg [7:0] tbl_addr = 0, tbl_data = 0;
    wire out_valid;
    wire signed [15:0] out;
    wire signed [31:0] acc_s;
    wire [(SOFTMAX_ONLY ? 32 : 48)-1:0] acc_q;   // the softmax-only lane's row-sum part is 32 bits

    vector_lane #(.SOFTMAX_ONLY(SOFTMAX_ONLY), .ACC_Q_BITS(SOFTMAX_ONLY ? 32 : 48)) dut (.clk(clk), .rst(rst), .in_valid(in_valid), .op(op), .acc_clr(acc_clr), .x(x), .y8(y8),
                     .mult(mult), .shift(shift), .gain(gain), .bias(bias), .rconst(rconst), .inv(inv),
                     .recip(recip), .tbl_we(tbl_we), .tbl_addr(tbl_addr), .tbl_data(tbl_data),
                     .out_valid(out_valid), .out(out), .acc_s(acc_s), .acc_q(acc_q));

    localparam integer MAXN = 1 << 17;
    reg [63:0] ex [0:MAXN-1];
    reg [63:0] ey [0:MAXN-1];
    reg [63:0] em [0:MAXN-1];
    reg [63:0] es [0:MAXN-1];
    reg [63:0] eg [0:MAXN-1];
    reg [63:0] eb [0:MAXN-1];
    reg [63:0] g_op, g_rc, g_inv, g_rec, g_n, a0, a1, a2, a3, a4, a5;
    string path, tag;
    integer fd, rc, i, t, n;

    always #5 clk = ~clk;
    always @(posedge clk) if (out_valid) $display("O %0d", out);

    initial begin
        if (!$value$plusargs("file=%s", path)) path = "groups.txt";
        fd = $fopen(path, "r");
        if (fd == 0) begin $display("ERROR cannot open %s", path); $finish; end
        repeat (3) @(negedge clk);
        rst = 1'b0;
        while (!$feof(fd)) begin
            rc = $fscanf(fd, "%s", tag);
            if (rc != 1) break;
            if (tag == "T") begin
                rc = $fscanf(fd, "%h %h", a0, a1);
                tbl_we = 1'b1; tbl_addr = a0[7:0]; tbl_data = a1[7:0];
                @(negedge clk);
                tbl_we = 1'b0;
            end else begin
                rc = $fscanf(fd, "%h %h %h %h %h", g_op, g_rc, g_inv, g_rec, g_n);
                n = g_n;
                for (i = 0; i < n; i = i + 1) begin
                    rc = $fscanf(fd, "%h %h %h %h %h %h", a0, a1, a2, a3, a4, a5);
                    ex[i] = a0; ey[i] = a1; em[i] = a2; es[i] = a3; eg[i] = a4; eb[i] = a5;
                end
                op = g_op[2:0]; rconst = g_rc[31:0]; inv = g_inv[47:0]; recip = g_rec[17:0];
                acc_clr = 1'b1;
                @(negedge clk);
                acc_clr = 1'b0;
                for (t = 0; t < n + 12; t = t + 1) begin
                    in_valid = (t < n);
                    if (t < n) begin
                        x = ex[t][31:0]; y8 = ey[t][7:0]; mult = em[t][31:0]; shift = es[t][5:0];
                    end
                    if (t >= 6 && t - 6 < n) gain = eg[t - 6][23:0];
                    if (t >= 7 && t - 7 < n) bias = eb[t - 7][47:0];
                    @(negedge clk);
                end
                $display("A %0d %0d", acc_s, acc_q);
            end
        end
        $display("END");
        $finish;
    end
endmodule
