// Packed-ternary MAC array: one fold of the reference accelerator (docs/engine.md).
//
// PE output lanes x SIMD input lanes. Each cycle one chunk may enter: SIMD (index, value)
// pairs of one token's kept int8 activations (the `act` skip mode) together with the 2-bit
// weight codes every PE gathered at those indices (00 = 0, 01 = +1, 11 = -1; 10 unused = 0).
//
// Multiplier-free, in the cheap form: a lane outputs (a XOR {8{neg}}) AND {8{nonzero}}, that
// is a, ~a or 0; since -a = ~a + 1, the +1s of all negative lanes are added once, at the tree
// root, as a count of negative lanes.
//
// Pipeline (docs/engine.md: fill = ceil(log2 SIMD) + 2):
//   stage 0      lane register (chunk, codes, flags); with CODE_REG = 0 the codes arrive already
//                registered (a synchronous memory read in the same cycle: ternary_tile.v)
//   stages 1..L  adder tree, one registered level each, L = ceil(log2 SIMD)
//   stage L+1    accumulator: acc = (first ? 0 : acc) + tree + negcount; out_valid on `last`
// A chunk presented in cycle t is visible in `out_acc` (with out_valid if it was the token's
// last chunk) in cycle t + L + 2.
module ternary_mac_array #(
    parameter integer PE = 4,
    parameter integer SIMD = 4,
    parameter integer ACCW = 32,
    parameter integer CODE_REG = 1             // 0: in_code is already a stage-0 register output
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire                 in_valid,    // a chunk is presented this cycle
    input  wire                 in_first,    // first chunk of a token
    input  wire                 in_last,     // last chunk of a token
    input  wire [SIMD-1:0]      in_lane_ok,  // lane carries a kept activation
    input  wire [8*SIMD-1:0]    in_act,      // int8 activations, lane s at [8s +: 8]
    input  wire [2*PE*SIMD-1:0] in_code,     // code of PE p, lane s at [2(p*SIMD+s) +: 2]
                                             // (CODE_REG = 0: one cycle after the chunk)
    output reg                  out_valid,   // out_acc holds a finished token
    output wire [ACCW*PE-1:0]   out_acc      // accumulators, PE p at [ACCW p +: ACCW]
);
    localparam integer L  = (SIMD <= 1) ? 0 : $clog2(SIMD);
    localparam integer P2 = 1 << L;
    localparam integer TW = 9 + L;             // tree word: 8-bit lane, L carries, sign
    localparam integer CW = $clog2(SIMD + 1);  // width of the negative-lane count

    // stage 0: lane register
    reg                 v0, f0, l0;
    reg [SIMD-1:0]      ok0;
    reg [8*SIMD-1:0]    act0;
    wire [2*PE*SIMD-1:0] code0;
    always @(posedge clk) begin
        v0 <= rst ? 1'b0 : in_valid;
        f0 <= in_first;
        l0 <= in_last;
        ok0 <= in_lane_ok;
        act0 <= in_act;
    end
    generate
        if (CODE_REG != 0) begin : code_reg
            reg [2*PE*SIMD-1:0] code_q;
            always @(posedge clk) code_q <= in_code;
            assign code0 = code_q;
        end else begin : code_in
            assign code0 = in_code;
        end
    endgenerate

    // flags travel beside the tree so that they meet its root in the same cycle
    wire vr, fr, lr;
    generate
        if (L == 0) begin : flags_direct
            assign vr = v0;
            assign fr = f0;
            assign lr = l0;
        end else begin : flags_delayed
            reg [L-1:0] vd, fd, ld;
            always @(posedge clk) begin
                vd <= rst ? {L{1'b0}} : ((vd << 1) | v0);
                fd <= (fd << 1) | f0;
                ld <= (ld << 1) | l0;
            end
            assign vr = vd[L-1];
            assign fr = fd[L-1];
            assign lr = ld[L-1];
        end
    endgenerate

    genvar p, i, lv;
    generate
        for (p = 0; p < PE; p = p + 1) begin : pe
            wire [TW*P2-1:0] lane;
            wire [SIMD-1:0]  neg;
            for (i = 0; i < P2; i = i + 1) begin : ln
                if (i < SIMD) begin : used
                    wire [1:0] c  = code0[2*(p*SIMD+i) +: 2];
                    wire       nz = ok0[i] & c[0];
                    wire       ng = nz & c[1];
                    wire [7:0] x  = (act0[8*i +: 8] ^ {8{ng}}) & {8{nz}};
                    assign lane[TW*i +: TW] = {{(TW-8){x[7]}}, x};
                    assign neg[i] = ng;
                end else begin : pad
                    assign lane[TW*i +: TW] = {TW{1'b0}};
                end
            end

            // count of negative lanes (the deferred +1s), delayed to meet the root
            reg [CW-1:0] pop;
            integer q;
            always @* begin
                pop = {CW{1'b0}};
                for (q = 0; q < SIMD; q = q + 1) pop = pop + {{(CW-1){1'b0}}, neg[q]};
            end

            wire [TW-1:0] root;
            wire [CW-1:0] nroot;
            if (L == 0) begin : no_tree
                assign root = lane[TW-1:0];
                assign nroot = pop;
            end else begin : tree
                reg [CW*L-1:0] nd;
                always @(posedge clk) nd <= (nd << CW) | pop;
                assign nroot = nd[CW*L-1 -: CW];
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

            reg  [ACCW-1:0] acc;
            wire [ACCW-1:0] root_ext = {{(ACCW-TW){root[TW-1]}}, root};
            wire [ACCW-1:0] nroot_ext = {{(ACCW-CW){1'b0}}, nroot};
            always @(posedge clk)
                if (vr) acc <= (fr ? {ACCW{1'b0}} : acc) + root_ext + nroot_ext;
            assign out_acc[ACCW*p +: ACCW] = acc;
        end
    endgenerate

    always @(posedge clk) out_valid <= rst ? 1'b0 : (vr & lr);
endmodule
