// iCE40 UltraPlus wrapper of ternary_tile for the open-source bitstream: a few pins only, so
// tokens and weight words are shifted in serially and results shifted out serially.
//   sdi/sld : serial data in, shifted (LSB first) while sld = 1
//   go      : present the shift register's low 8*K bits as one dense token (tok_valid)
//   wr      : write one weight word from the shift register {chan, word} (half 0)
//   sdo     : serial result out (the PE accumulators captured at out_valid, LSB first)
//   done    : a token finished (out_valid seen)
//   rdy     : the tile takes a token this cycle (tok_ready)
module ice40_top #(
    parameter integer PE = 4,
    parameter integer SIMD = 4,
    parameter integer K = 16,
    parameter integer B = SIMD,
    parameter integer P = 1
) (
    input  wire clk,
    input  wire rst,
    input  wire sdi,
    input  wire sld,
    input  wire go,
    input  wire wr,
    output wire sdo,
    output wire rdy,
    output reg  done
);
    localparam integer KW = (K <= 2) ? 1 : $clog2(K);
    localparam integer WW = KW + 2 * PE;
    localparam integer SW = (8 * K > WW) ? 8 * K : WW;

    reg [SW-1:0] sh;
    always @(posedge clk) if (sld) sh <= {sdi, sh[SW-1:1]};

    wire out_valid, ch_valid;
    wire [32*PE-1:0] out_acc;
    ternary_tile #(.PE(PE), .SIMD(SIMD), .K(K), .B(B), .P(P), .H(1)) tile (
        .clk(clk), .rst(rst),
        .w_we(wr), .w_half(1'b0), .w_chan(sh[WW-1:2*PE]), .w_word(sh[2*PE-1:0]),
        .rd_half(1'b0),
        .tok_valid(go), .tok_act(sh[8*K-1:0]), .tok_ready(rdy),
        .ch_valid(ch_valid), .out_valid(out_valid), .out_acc(out_acc));

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
