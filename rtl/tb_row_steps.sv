// Testbench (for Verilator) of row_steps (-GLANES=L, -GSOFTMAX_ONLY=0/1) and row_max_bank (-GROWS=R): runs
// the rows that tests/rtl/test_row_steps.py writes (plusarg +file=<path>) and prints what comes out.
//   "S mode eps d" then LANES lines "acc_s acc_q" (hex): reduce, print "R <sum_s> <sum_q>", then the row steps
//       of mode (eps, d: LayerNorm's eps_in and ln_d), print "Q <quot> <cycles>" (cycles: start to done, the steps);
//   "M n" then n lines of ROWS scores (hex) and a valid mask: clear, drain, print "X <max>" per row.
module tb_row_steps #(parameter integer LANES = 4, parameter integer SOFTMAX_ONLY = 0, parameter integer ROWS = 4);
    localparam integer QB = SOFTMAX_ONLY ? 32 : 48;
    reg clk = 1'b0;
    reg rst = 1'b1;
    reg reduce = 1'b0, start = 1'b0;
    reg [1:0] mode = 2'd0;
    reg [45:0] eps_in = 0;
    reg [15:0] ln_d = 16'd1;
    reg [32*LANES-1:0] acc_s = 0;
    reg [QB*LANES-1:0] acc_q = 0;
    wire [31:0] sum_s;
    wire [QB-1:0] sum_q;
    wire sum_valid, busy, done;
    wire [47:0] quot;
    reg clr = 1'b0;
    reg [ROWS-1:0] valid = 0;
    reg [32*ROWS-1:0] score = 0;
    wire [32*ROWS-1:0] row_max;

    row_steps #(.LANES(LANES), .SOFTMAX_ONLY(SOFTMAX_ONLY), .Q_BITS(QB)) dut (
        .clk(clk), .rst(rst), .reduce(reduce), .acc_s(acc_s), .acc_q(acc_q), .sum_s(sum_s), .sum_q(sum_q),
        .sum_valid(sum_valid), .start(start), .mode(mode), .ln_d(ln_d), .eps_in(eps_in), .busy(busy), .done(done), .quot(quot));
    row_max_bank #(.ROWS(ROWS)) bank (.clk(clk), .clr(clr), .valid(valid), .score(score), .row_max(row_max));

    reg [63:0] a0, a1, a2;
    string path, tag;
    integer fd, rc, i, j, n, cycles;

    always #5 clk = ~clk;

    initial begin
        if (!$value$plusargs("file=%s", path)) path = "rows.txt";
        fd = $fopen(path, "r");
        if (fd == 0) begin $display("ERROR cannot open %s", path); $finish; end
        repeat (3) @(negedge clk);
        rst = 1'b0;
        while (!$feof(fd)) begin
            rc = $fscanf(fd, "%s", tag);
            if (rc != 1) break;
            if (tag == "S") begin
                rc = $fscanf(fd, "%h %h %h", a0, a1, a2);
                mode = a0[1:0]; eps_in = a1[45:0]; ln_d = a2[15:0];
                for (i = 0; i < LANES; i = i + 1) begin
                    rc = $fscanf(fd, "%h %h", a0, a1);
                    acc_s[32*i +: 32] = a0[31:0];
                    acc_q[QB*i +: QB] = a1[QB-1:0];
                end
                reduce = 1'b1;
                @(negedge clk);
                reduce = 1'b0;
                while (!sum_valid) @(negedge clk);
                $display("R %0d %0d", $signed(sum_s), sum_q);
                start = 1'b1;
                @(negedge clk);
                start = 1'b0;
                cycles = 0;
                while (!done) begin
                    if (busy) cycles = cycles + 1;
                    @(negedge clk);
                end
                $display("Q %0d %0d", quot, cycles);
            end else begin
                rc = $fscanf(fd, "%h", a0);
                n = a0;
                clr = 1'b1;
                @(negedge clk);
                clr = 1'b0;
                for (j = 0; j < n; j = j + 1) begin
                    for (i = 0; i < ROWS; i = i + 1) begin
                        rc = $fscanf(fd, "%h", a1);
                        score[32*i +: 32] = a1[31:0];
                    end
                    rc = $fscanf(fd, "%h", a1);
                    valid = a1[ROWS-1:0];
                    @(negedge clk);
                end
                valid = 0;
                @(negedge clk);
                for (i = 0; i < ROWS; i = i + 1) $display("X %0d", $signed(row_max[32*i +: 32]));
            end
        end
        $display("END");
        $finish;
    end
endmodule
