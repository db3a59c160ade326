// Testbench (for Verilator) of rtl/ice40_top.v (the iCEBreaker self-test): a 12 MHz-style clock, the
// button released; prints each LED change with its cycle, presses the button once after the
// first verdict to check that the test runs again, and stops after the second verdict.
// Run it in the folder that holds the selftest_*.hex files.
module tb_ice40_top;
    parameter integer PE = 2;
    parameter integer SIMD = 4;
    parameter integer K = 16;
    parameter integer B = SIMD;
    parameter integer P = 1;
    parameter integer NTOK = 4;

    reg clk = 1'b0;
    reg btn_n = 1'b1;
    wire ledr_n, ledg_n;
    integer cyc = 0, verdicts = 0;
    reg [1:0] leds_q = 2'b00;

    ice40_top #(.PE(PE), .SIMD(SIMD), .K(K), .B(B), .P(P), .NTOK(NTOK)) dut (
        .CLK(clk), .BTN_N(btn_n), .LEDR_N(ledr_n), .LEDG_N(ledg_n));

    always #5 clk = ~clk;

    always @(posedge clk) begin
        cyc <= cyc + 1;
        if ({~ledg_n, ~ledr_n} != leds_q) begin
            leds_q <= {~ledg_n, ~ledr_n};
            $display("LED green=%0d red=%0d cycle %0d", ~ledg_n, ~ledr_n, cyc);
        end
        if (cyc > 200000) begin
            $display("TIMEOUT");
            $finish;
        end
    end

    initial begin
        repeat (2) @(posedge clk);    // past time 0, when the LED wires are not yet evaluated
        wait (!ledg_n || !ledr_n);
        repeat (3) @(posedge clk);
        btn_n = 1'b0;                 // press: both LEDs go dark, the test restarts on release
        repeat (5) @(posedge clk);
        btn_n = 1'b1;
        repeat (4) @(posedge clk);
        wait (!ledg_n || !ledr_n);
        repeat (3) @(posedge clk);
        $display("END");
        $finish;
    end
endmodule
