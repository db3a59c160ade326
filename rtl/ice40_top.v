// iCE40 UltraPlus wrapper of ternary_tile for the open-source bitstream: a few pins only, so
// chunks and weights are shifted in serially and results shifted out serially.
//   sdi/sld : serial data in, shifted (LSB first) while sld = 1
//   go      : present the shift register as one chunk {first, last, lane_ok, idx, act}
//   wr      : write one weight code from the shift register {addr, code}
//   sdo     : serial result out (the PE accumulators captured at out_valid, LSB first)
//   done    : a token finished (out_valid seen)
module ice40_top #(
    parameter integer PE = 4,
    parameter integer SIMD = 4,
    parameter integer K = 16
) (
    input  wire clk,
    input  wire rst,
    input  wire sdi,
    input  wire sld,
    input  wire go,
    input  wire wr,
    output wire sdo,
    output reg  done
);
    localparam integer IW = (K <= 2) ? 1 : $clog2(K);
    localparam integer AW = $clog2(PE*K);
    localparam integer CWID = 2 + SIMD + IW*SIMD + 8*SIMD;
    localparam integer SW = (CWID > AW + 2) ? CWID : AW + 2;

    reg [SW-1:0] sh;
    always @(posedge clk) if (sld) sh <= {sdi, sh[SW-1:1]};

    wire out_valid;
    wire [32*PE-1:0] out_acc;
    ternary_tile #(.PE(PE), .SIMD(SIMD), .K(K)) tile (
        .clk(clk), .rst(rst),
        .w_we(wr), .w_addr(sh[AW+1:2]), .w_code(sh[1:0]),
        .in_valid(go),
        .in_first(sh[CWID-1]), .in_last(sh[CWID-2]),
        .in_lane_ok(sh[CWID-3 -: SIMD]),
        .in_idx(sh[IW*SIMD+8*SIMD-1 -: IW*SIMD]),
        .in_act(sh[8*SIMD-1:0]),
        .out_valid(out_valid), .out_acc(out_acc));

    reg [32*PE-1:0] res;
    always @(posedge clk) begin
        if (rst) begin
            done <= 1'b0;
        end else if (out_valid) begin
            res <= out_acc;
            done <= 1'b1;
        end else begin
            res <= {1'b0, res[32*PE-1:1]};
        end
    end
    assign sdo = res[0];
endmodule
