// Baseline for the resource comparison: the same PE x SIMD array with int8 x int8 products
// (a multiplier per lane) instead of ternary add/subtract/skip; same tree and accumulator.
module int8_mac_array #(
    parameter integer PE = 4,
    parameter integer SIMD = 4,
    parameter integer ACCW = 32
) (
    input  wire                 clk,
    input  wire                 in_valid,
    input  wire                 in_first,
    input  wire [8*SIMD-1:0]    in_act,
    input  wire [8*PE*SIMD-1:0] in_w,       // int8 weight of PE p, lane s at [8(p*SIMD+s) +: 8]
    output wire [ACCW*PE-1:0]   out_acc
);
    localparam integer L  = (SIMD <= 1) ? 0 : $clog2(SIMD);
    localparam integer P2 = 1 << L;
    localparam integer TW = 16 + L;

    reg              v0, f0;
    reg [8*SIMD-1:0] a0;
    reg [8*PE*SIMD-1:0] w0;
    always @(posedge clk) begin
        v0 <= in_valid; f0 <= in_first; a0 <= in_act; w0 <= in_w;
    end

    wire vr, fr;
    generate
        if (L == 0) begin : flags_direct
            assign vr = v0;
            assign fr = f0;
        end else begin : flags_delayed
            reg [L-1:0] vd, fd;
            always @(posedge clk) begin
                vd <= (vd << 1) | v0;
                fd <= (fd << 1) | f0;
            end
            assign vr = vd[L-1];
            assign fr = fd[L-1];
        end
    endgenerate

    genvar p, i, lv;
    generate
        for (p = 0; p < PE; p = p + 1) begin : pe
            wire [TW*P2-1:0] lane;
            for (i = 0; i < P2; i = i + 1) begin : ln
                if (i < SIMD) begin : used
                    wire signed [15:0] prod = $signed(a0[8*i +: 8]) * $signed(w0[8*(p*SIMD+i) +: 8]);
                    assign lane[TW*i +: TW] = {{(TW-16){prod[15]}}, prod};
                end else begin : pad
                    assign lane[TW*i +: TW] = {TW{1'b0}};
                end
            end
            wire [TW-1:0] root;
            if (L == 0) begin : no_tree
                assign root = lane[TW-1:0];
            end else begin : tree
                for (lv = 1; lv <= L; lv = lv + 1) begin : level
                    reg  [TW*(P2>>lv)-1:0]     s;
                    wire [TW*(P2>>(lv-1))-1:0] below;
                    if (lv == 1) begin : from_lanes
                        assign below = lane;
                    end else begin : from_level
                        assign below = level[lv-1].s;
                    end
                    for (i = 0; i < (P2 >> lv); i = i + 1) begin : add
                        always @(posedge clk)
                            s[TW*i +: TW] <= below[TW*(2*i) +: TW] + below[TW*(2*i+1) +: TW];
                    end
                end
                assign root = level[L].s[TW-1:0];
            end
            reg [ACCW-1:0] acc;
            always @(posedge clk)
                if (vr) acc <= (fr ? {ACCW{1'b0}} : acc) + {{(ACCW-TW){root[TW-1]}}, root};
            assign out_acc[ACCW*p +: ACCW] = acc;
        end
    endgenerate
endmodule
