// One lane of the vector unit (docs/engine.md section 5; the RTL twin of the per-element arithmetic
// of hls/src/tatvpr_vector.cpp, docs/rtl.md "The vector unit's lane"). The lane takes one element a
// cycle (in_valid) and runs one op at a time (op, constant over a pass; the pipeline drains between
// passes): its two multipliers, rounding shifter and saturation logic are shared by every op.
//
//   op 0 SUMS   LayerNorm pass 1 / L2 norm pass 1: acc_s += x, acc_q += x * x (x int16)
//   op 1 LN     LayerNorm pass 2: n = (dv * inv + 2^22) >> 23, dv = x - mu (rconst = mu, inv = 2^47 / sd),
//               out = sat8((n * gain + bias + 2^25) >> 26)
//   op 2 SMSUM  softmax pass 1: u = ((rmax - s) * mult + 2^(shift-1)) >> shift (rconst = rmax, s int32),
//               e = T[u & 255] >> min(u >> 8, 31) (T: the 2^(-f/256) table in Q15), acc_q += e, out = e (16 bits, unsigned)
//   op 3 SMP    softmax pass 2: e again, out = sat[0, 255]((e * 255 * recip + 2^31) >> 32), recip = 2^32 / sum
//   op 4 GELU   out = table[x + 128] (the lane's copy of the 256 x int8 table, written through tbl_we)
//   op 5 ADD    residual add: out = sat16(x + sat16((y8 * mult + 2^(shift-1)) >> shift)) (mult signed)
//   op 6 REQ    requantisation: out = sat8((x * mult + 2^(shift-1)) >> shift), 0 <= mult < 2^31
//   op 7 L2     L2 norm pass 2: out = sat16((x * inv + 2^23) >> 24)
//
// What is NOT in the lane (shared by the unit's lanes, once per row): the row constants' registers
// (rconst, inv, recip), the per-row square root and divider that make them, the reduction of the lanes'
// acc_s / acc_q, the control FSM and the AXI streams. Operand widths (the value ranges of the HLS code):
//   multiplier 1 (33 x 49 bits signed, low 64 bits kept): dv (17 bits) x inv (48 bits unsigned), z = rmax - s
//   (33 bits, >= 0) x mult (31 bits), y8 x mult (32 bits signed), x x mult, x x inv, x x x; every product
//   fits int64 as in the C code;
//   multiplier 2 (34 x max(GAIN_BITS, 19) bits signed, GAIN_BITS <= 27): n (|n| < 2^33 for rows of at most 65535 elements) x gain (GAIN_BITS
//   signed), e (16 bits) x recip (18 bits).
// Timing: x, y8, mult, shift, op enter with in_valid; gain is used 6 cycles later and bias 7 cycles later
// (the per-channel buffers are read with a delayed address); out is valid LATENCY = 9 cycles after the
// element entered. acc_clr (with no element in flight) clears the accumulators.
//
// SOFTMAX_ONLY = 1: the same source built as a softmax-only lane (the fused attention's lanes, the int8
// IP's mode 3, hls/src/tatvpr_attention.cpp): op is read as SMSUM / SMP (op[0]), nothing else is built:
// multiplier 1 takes z = rmax - s (33 bits, >= 0) x mult (31 bits unsigned), multiplier 2 e (16 bits
// unsigned) x recip (18 bits unsigned) on one slice, no GELU table, no acc_s, gain / bias / inv unused.
module vector_lane #(
    parameter integer SOFTMAX_ONLY = 0,
    parameter integer GAIN_BITS = 24,
    parameter integer BIAS_BITS = 48,
    parameter integer ACC_S_BITS = 32,
    parameter integer ACC_Q_BITS = 48
) (
    input  wire                         clk,
    input  wire                         rst,
    input  wire                         in_valid,
    input  wire [2:0]                   op,
    input  wire                         acc_clr,
    input  wire signed [31:0]           x,       // int16 element (sign-extended) or an int32 score
    input  wire signed [7:0]            y8,      // the residual add's int8 branch
    input  wire signed [31:0]           mult,
    input  wire [5:0]                   shift,   // 1 .. 62
    input  wire signed [GAIN_BITS-1:0]  gain,    // 6 cycles after its element
    input  wire signed [BIAS_BITS-1:0]  bias,    // 7 cycles after its element
    input  wire signed [31:0]           rconst,  // row constant: LayerNorm mu, softmax row max
    input  wire [47:0]                  inv,     // row constant: 2^47 / sd (LayerNorm, L2 norm)
    input  wire [17:0]                  recip,   // row constant: 2^32 / sum (softmax)
    input  wire                         tbl_we,
    input  wire [7:0]                   tbl_addr,
    input  wire [7:0]                   tbl_data,
    output reg                          out_valid,
    output reg signed [15:0]            out,
    output reg signed [ACC_S_BITS-1:0]  acc_s,
    output reg [ACC_Q_BITS-1:0]         acc_q
);
    localparam [2:0] SUMS = 3'd0, LN = 3'd1, SMSUM = 3'd2, SMP = 3'd3, GELU = 3'd4, ADD = 3'd5, REQ = 3'd6,
                     L2 = 3'd7;
    localparam integer B2W = (GAIN_BITS > 19) ? GAIN_BITS : 19;  // multiplier 2's second operand: gain or recip

    function [15:0] exp2_rom;  // round(2^15 * 2^(-f/256)), hls/include/tatvpr_exp2_table.inc
        input [7:0] f;
        begin
            case (f)
            8'd0: exp2_rom = 16'd32768; 8'd1: exp2_rom = 16'd32679; 8'd2: exp2_rom = 16'd32591; 8'd3: exp2_rom = 16'd32503;
            8'd4: exp2_rom = 16'd32415; 8'd5: exp2_rom = 16'd32327; 8'd6: exp2_rom = 16'd32240; 8'd7: exp2_rom = 16'd32153;
            8'd8: exp2_rom = 16'd32066; 8'd9: exp2_rom = 16'd31979; 8'd10: exp2_rom = 16'd31893; 8'd11: exp2_rom = 16'd31806;
            8'd12: exp2_rom = 16'd31720; 8'd13: exp2_rom = 16'd31635; 8'd14: exp2_rom = 16'd31549; 8'd15: exp2_rom = 16'd31464;
            8'd16: exp2_rom = 16'd31379; 8'd17: exp2_rom = 16'd31294; 8'd18: exp2_rom = 16'd31209; 8'd19: exp2_rom = 16'd31125;
            8'd20: exp2_rom = 16'd31041; 8'd21: exp2_rom = 16'd30957; 8'd22: exp2_rom = 16'd30873; 8'd23: exp2_rom = 16'd30790;
            8'd24: exp2_rom = 16'd30706; 8'd25: exp2_rom = 16'd30623; 8'd26: exp2_rom = 16'd30541; 8'd27: exp2_rom = 16'd30458;
            8'd28: exp2_rom = 16'd30376; 8'd29: exp2_rom = 16'd30293; 8'd30: exp2_rom = 16'd30212; 8'd31: exp2_rom = 16'd30130;
            8'd32: exp2_rom = 16'd30048; 8'd33: exp2_rom = 16'd29967; 8'd34: exp2_rom = 16'd29886; 8'd35: exp2_rom = 16'd29805;
            8'd36: exp2_rom = 16'd29725; 8'd37: exp2_rom = 16'd29644; 8'd38: exp2_rom = 16'd29564; 8'd39: exp2_rom = 16'd29484;
            8'd40: exp2_rom = 16'd29405; 8'd41: exp2_rom = 16'd29325; 8'd42: exp2_rom = 16'd29246; 8'd43: exp2_rom = 16'd29167;
            8'd44: exp2_rom = 16'd29088; 8'd45: exp2_rom = 16'd29009; 8'd46: exp2_rom = 16'd28931; 8'd47: exp2_rom = 16'd28852;
            8'd48: exp2_rom = 16'd28774; 8'd49: exp2_rom = 16'd28697; 8'd50: exp2_rom = 16'd28619; 8'd51: exp2_rom = 16'd28542;
            8'd52: exp2_rom = 16'd28464; 8'd53: exp2_rom = 16'd28388; 8'd54: exp2_rom = 16'd28311; 8'd55: exp2_rom = 16'd28234;
            8'd56: exp2_rom = 16'd28158; 8'd57: exp2_rom = 16'd28082; 8'd58: exp2_rom = 16'd28006; 8'd59: exp2_rom = 16'd27930;
            8'd60: exp2_rom = 16'd27855; 8'd61: exp2_rom = 16'd27779; 8'd62: exp2_rom = 16'd27704; 8'd63: exp2_rom = 16'd27629;
            8'd64: exp2_rom = 16'd27554; 8'd65: exp2_rom = 16'd27480; 8'd66: exp2_rom = 16'd27406; 8'd67: exp2_rom = 16'd27332;
            8'd68: exp2_rom = 16'd27258; 8'd69: exp2_rom = 16'd27184; 8'd70: exp2_rom = 16'd27110; 8'd71: exp2_rom = 16'd27037;
            8'd72: exp2_rom = 16'd26964; 8'd73: exp2_rom = 16'd26891; 8'd74: exp2_rom = 16'd26818; 8'd75: exp2_rom = 16'd26746;
            8'd76: exp2_rom = 16'd26674; 8'd77: exp2_rom = 16'd26601; 8'd78: exp2_rom = 16'd26530; 8'd79: exp2_rom = 16'd26458;
            8'd80: exp2_rom = 16'd26386; 8'd81: exp2_rom = 16'd26315; 8'd82: exp2_rom = 16'd26244; 8'd83: exp2_rom = 16'd26173;
            8'd84: exp2_rom = 16'd26102; 8'd85: exp2_rom = 16'd26031; 8'd86: exp2_rom = 16'd25961; 8'd87: exp2_rom = 16'd25891;
            8'd88: exp2_rom = 16'd25821; 8'd89: exp2_rom = 16'd25751; 8'd90: exp2_rom = 16'd25681; 8'd91: exp2_rom = 16'd25612;
            8'd92: exp2_rom = 16'd25543; 8'd93: exp2_rom = 16'd25474; 8'd94: exp2_rom = 16'd25405; 8'd95: exp2_rom = 16'd25336;
            8'd96: exp2_rom = 16'd25268; 8'd97: exp2_rom = 16'd25199; 8'd98: exp2_rom = 16'd25131; 8'd99: exp2_rom = 16'd25063;
            8'd100: exp2_rom = 16'd24995; 8'd101: exp2_rom = 16'd24928; 8'd102: exp2_rom = 16'd24860; 8'd103: exp2_rom = 16'd24793;
            8'd104: exp2_rom = 16'd24726; 8'd105: exp2_rom = 16'd24659; 8'd106: exp2_rom = 16'd24593; 8'd107: exp2_rom = 16'd24526;
            8'd108: exp2_rom = 16'd24460; 8'd109: exp2_rom = 16'd24394; 8'd110: exp2_rom = 16'd24328; 8'd111: exp2_rom = 16'd24262;
            8'd112: exp2_rom = 16'd24196; 8'd113: exp2_rom = 16'd24131; 8'd114: exp2_rom = 16'd24066; 8'd115: exp2_rom = 16'd24001;
            8'd116: exp2_rom = 16'd23936; 8'd117: exp2_rom = 16'd23871; 8'd118: exp2_rom = 16'd23806; 8'd119: exp2_rom = 16'd23742;
            8'd120: exp2_rom = 16'd23678; 8'd121: exp2_rom = 16'd23614; 8'd122: exp2_rom = 16'd23550; 8'd123: exp2_rom = 16'd23486;
            8'd124: exp2_rom = 16'd23423; 8'd125: exp2_rom = 16'd23359; 8'd126: exp2_rom = 16'd23296; 8'd127: exp2_rom = 16'd23233;
            8'd128: exp2_rom = 16'd23170; 8'd129: exp2_rom = 16'd23108; 8'd130: exp2_rom = 16'd23045; 8'd131: exp2_rom = 16'd22983;
            8'd132: exp2_rom = 16'd22921; 8'd133: exp2_rom = 16'd22859; 8'd134: exp2_rom = 16'd22797; 8'd135: exp2_rom = 16'd22735;
            8'd136: exp2_rom = 16'd22674; 8'd137: exp2_rom = 16'd22613; 8'd138: exp2_rom = 16'd22552; 8'd139: exp2_rom = 16'd22491;
            8'd140: exp2_rom = 16'd22430; 8'd141: exp2_rom = 16'd22369; 8'd142: exp2_rom = 16'd22309; 8'd143: exp2_rom = 16'd22248;
            8'd144: exp2_rom = 16'd22188; 8'd145: exp2_rom = 16'd22128; 8'd146: exp2_rom = 16'd22068; 8'd147: exp2_rom = 16'd22009;
            8'd148: exp2_rom = 16'd21949; 8'd149: exp2_rom = 16'd21890; 8'd150: exp2_rom = 16'd21831; 8'd151: exp2_rom = 16'd21772;
            8'd152: exp2_rom = 16'd21713; 8'd153: exp2_rom = 16'd21654; 8'd154: exp2_rom = 16'd21595; 8'd155: exp2_rom = 16'd21537;
            8'd156: exp2_rom = 16'd21479; 8'd157: exp2_rom = 16'd21421; 8'd158: exp2_rom = 16'd21363; 8'd159: exp2_rom = 16'd21305;
            8'd160: exp2_rom = 16'd21247; 8'd161: exp2_rom = 16'd21190; 8'd162: exp2_rom = 16'd21133; 8'd163: exp2_rom = 16'd21076;
            8'd164: exp2_rom = 16'd21019; 8'd165: exp2_rom = 16'd20962; 8'd166: exp2_rom = 16'd20905; 8'd167: exp2_rom = 16'd20849;
            8'd168: exp2_rom = 16'd20792; 8'd169: exp2_rom = 16'd20736; 8'd170: exp2_rom = 16'd20680; 8'd171: exp2_rom = 16'd20624;
            8'd172: exp2_rom = 16'd20568; 8'd173: exp2_rom = 16'd20513; 8'd174: exp2_rom = 16'd20457; 8'd175: exp2_rom = 16'd20402;
            8'd176: exp2_rom = 16'd20347; 8'd177: exp2_rom = 16'd20292; 8'd178: exp2_rom = 16'd20237; 8'd179: exp2_rom = 16'd20182;
            8'd180: exp2_rom = 16'd20127; 8'd181: exp2_rom = 16'd20073; 8'd182: exp2_rom = 16'd20019; 8'd183: exp2_rom = 16'd19965;
            8'd184: exp2_rom = 16'd19911; 8'd185: exp2_rom = 16'd19857; 8'd186: exp2_rom = 16'd19803; 8'd187: exp2_rom = 16'd19750;
            8'd188: exp2_rom = 16'd19696; 8'd189: exp2_rom = 16'd19643; 8'd190: exp2_rom = 16'd19590; 8'd191: exp2_rom = 16'd19537;
            8'd192: exp2_rom = 16'd19484; 8'd193: exp2_rom = 16'd19431; 8'd194: exp2_rom = 16'd19379; 8'd195: exp2_rom = 16'd19326;
            8'd196: exp2_rom = 16'd19274; 8'd197: exp2_rom = 16'd19222; 8'd198: exp2_rom = 16'd19170; 8'd199: exp2_rom = 16'd19118;
            8'd200: exp2_rom = 16'd19066; 8'd201: exp2_rom = 16'd19015; 8'd202: exp2_rom = 16'd18963; 8'd203: exp2_rom = 16'd18912;
            8'd204: exp2_rom = 16'd18861; 8'd205: exp2_rom = 16'd18810; 8'd206: exp2_rom = 16'd18759; 8'd207: exp2_rom = 16'd18708;
            8'd208: exp2_rom = 16'd18658; 8'd209: exp2_rom = 16'd18607; 8'd210: exp2_rom = 16'd18557; 8'd211: exp2_rom = 16'd18507;
            8'd212: exp2_rom = 16'd18457; 8'd213: exp2_rom = 16'd18407; 8'd214: exp2_rom = 16'd18357; 8'd215: exp2_rom = 16'd18308;
            8'd216: exp2_rom = 16'd18258; 8'd217: exp2_rom = 16'd18209; 8'd218: exp2_rom = 16'd18160; 8'd219: exp2_rom = 16'd18110;
            8'd220: exp2_rom = 16'd18061; 8'd221: exp2_rom = 16'd18013; 8'd222: exp2_rom = 16'd17964; 8'd223: exp2_rom = 16'd17915;
            8'd224: exp2_rom = 16'd17867; 8'd225: exp2_rom = 16'd17819; 8'd226: exp2_rom = 16'd17770; 8'd227: exp2_rom = 16'd17722;
            8'd228: exp2_rom = 16'd17674; 8'd229: exp2_rom = 16'd17627; 8'd230: exp2_rom = 16'd17579; 8'd231: exp2_rom = 16'd17531;
            8'd232: exp2_rom = 16'd17484; 8'd233: exp2_rom = 16'd17437; 8'd234: exp2_rom = 16'd17390; 8'd235: exp2_rom = 16'd17343;
            8'd236: exp2_rom = 16'd17296; 8'd237: exp2_rom = 16'd17249; 8'd238: exp2_rom = 16'd17202; 8'd239: exp2_rom = 16'd17156;
            8'd240: exp2_rom = 16'd17109; 8'd241: exp2_rom = 16'd17063; 8'd242: exp2_rom = 16'd17017; 8'd243: exp2_rom = 16'd16971;
            8'd244: exp2_rom = 16'd16925; 8'd245: exp2_rom = 16'd16879; 8'd246: exp2_rom = 16'd16834; 8'd247: exp2_rom = 16'd16788;
            8'd248: exp2_rom = 16'd16743; 8'd249: exp2_rom = 16'd16697; 8'd250: exp2_rom = 16'd16652; 8'd251: exp2_rom = 16'd16607;
            8'd252: exp2_rom = 16'd16562; 8'd253: exp2_rom = 16'd16518; 8'd254: exp2_rom = 16'd16473; 8'd255: exp2_rom = 16'd16428;
            default: exp2_rom = 16'd0;
            endcase
        end
    endfunction

    // saturation from the sign and the bits above the result (no wide compares)
    function signed [15:0] sat16;
        input signed [63:0] v;
        sat16 = (~v[63] & |v[62:15]) ? 16'sd32767 : (v[63] & ~&v[62:15]) ? -16'sd32768 : v[15:0];
    endfunction

    function signed [15:0] sat8;
        input signed [63:0] v;
        sat8 = (~v[63] & |v[62:7]) ? 16'sd127 : (v[63] & ~&v[62:7]) ? -16'sd128 : {{8{v[7]}}, v[7:0]};
    endfunction

    // ---- stage 0: the element's registers
    reg               v0;
    reg [2:0]         op0;
    reg signed [31:0] x0, mult0;
    reg signed [7:0]  y0;
    reg [5:0]         sh0;
    always @(posedge clk) begin
        v0 <= in_valid & ~rst;
        op0 <= SOFTMAX_ONLY ? {2'b01, op[0]} : op; x0 <= x; y0 <= y8; mult0 <= mult; sh0 <= shift;
    end

    // the GELU table: written by the host's loader, read with the element (synchronous)
    reg [7:0] g1;
    generate
        if (SOFTMAX_ONLY) begin : no_gelu
            always @(posedge clk) g1 <= 8'd0;
        end else begin : gelu
            reg [7:0] gtab [0:255];
            always @(posedge clk) begin
                if (tbl_we) gtab[tbl_addr] <= tbl_data;
                g1 <= gtab[x0[7:0] ^ 8'h80];
            end
        end
    endgenerate

    // ---- stage 1: multiplier 1's operands
    reg               v1;
    reg [2:0]         op1;
    reg signed [32:0] a1;
    reg signed [48:0] b1;
    reg [5:0]         sh1;
    reg signed [15:0] x1;
    always @(posedge clk) begin
        v1 <= v0 & ~rst; op1 <= op0; x1 <= x0[15:0];
        if (SOFTMAX_ONLY) begin a1 <= rconst - x0; b1 <= {18'd0, mult0[30:0]}; sh1 <= sh0; end
        else case (op0)
            LN:       begin a1 <= x0 - rconst;          b1 <= {1'b0, inv};         sh1 <= 6'd23; end
            SMSUM, SMP: begin a1 <= rconst - x0;        b1 <= {{17{mult0[31]}}, mult0}; sh1 <= sh0; end
            ADD:      begin a1 <= {{25{y0[7]}}, y0};    b1 <= {{17{mult0[31]}}, mult0}; sh1 <= sh0; end
            REQ:      begin a1 <= {x0[31], x0};         b1 <= {{17{mult0[31]}}, mult0}; sh1 <= sh0; end
            L2:       begin a1 <= {x0[31], x0};         b1 <= {1'b0, inv};         sh1 <= 6'd24; end
            default:  begin a1 <= {x0[31], x0};         b1 <= {{17{x0[31]}}, x0};  sh1 <= 6'd1;  end  // SUMS, GELU
        endcase
    end

    // ---- stage 2: product 1 (int64, as the C code), tiled by hand for DSP48E2 (27 x 18 signed, AMD UG579):
    // b1 = bh 2^26 + bl (bl 26 bits unsigned, the 27-bit port), a1 = ah 2^17 + al (al 17 bits unsigned, the
    // 18-bit port): 4 slices, the partial products summed after them (low 64 bits kept)
    wire signed [26:0] b1l = {1'b0, b1[25:0]};
    wire signed [22:0] b1h = b1[48:26];
    wire signed [17:0] a1l = {1'b0, a1[16:0]};
    wire signed [15:0] a1h = a1[32:17];
    wire signed [44:0] pp_ll = a1l * b1l;
    wire signed [40:0] pp_lh = a1l * b1h;
    wire signed [42:0] pp_hl = a1h * b1l;
    wire signed [38:0] pp_hh = a1h * b1h;
    wire signed [63:0] prod1 = pp_ll + (pp_lh <<< 26) + (pp_hl <<< 17) + (pp_hh <<< 43);
    reg               v2;
    reg [2:0]         op2;
    reg signed [63:0] p1;
    reg [5:0]         sh2;
    reg signed [15:0] x2;
    reg [7:0]         g2;
    always @(posedge clk) begin
        v2 <= v1 & ~rst; op2 <= op1; sh2 <= sh1; x2 <= x1; g2 <= g1;
        p1 <= prod1;
    end

    // ---- stages 3 and 4: the rounding shift (p + 2^(sh-1)) >> sh = ((p >> (sh-1)) + 1) >> 1 (floor shifts)
    reg               v3;
    reg [2:0]         op3;
    reg signed [63:0] q3;
    reg signed [15:0] x3;
    reg [7:0]         g3;
    always @(posedge clk) begin
        v3 <= v2 & ~rst; op3 <= op2; x3 <= x2; g3 <= g2;
        q3 <= p1 >>> (sh2 - 6'd1);
    end

    reg               v4;
    reg [2:0]         op4;
    reg signed [63:0] r4;
    reg signed [15:0] x4;
    reg [7:0]         g4;
    wire signed [64:0] q3r = q3 + 65'sd1;
    always @(posedge clk) begin
        v4 <= v3 & ~rst; op4 <= op3; x4 <= x3; g4 <= g3;
        r4 <= q3r[64:1];
    end

    // ---- stage 5: saturations of the one-multiply ops; the exp2 table read (softmax)
    reg               v5;
    reg [2:0]         op5;
    reg signed [15:0] er5;
    reg [15:0]        rom5;
    reg [3:0]         w5;
    reg               big5;
    reg signed [33:0] n5;
    wire signed [15:0] r4s16 = sat16(r4);
    always @(posedge clk) begin
        v5 <= v4 & ~rst; op5 <= op4;
        case (op4)
            ADD:     er5 <= sat16($signed({{48{x4[15]}}, x4}) + $signed({{48{r4s16[15]}}, r4s16}));
            REQ:     er5 <= sat8(r4);
            L2:      er5 <= r4s16;
            GELU:    er5 <= {{8{g4[7]}}, g4};
            default: er5 <= 16'sd0;
        endcase
        rom5 <= exp2_rom(r4[7:0]);
        w5 <= r4[11:8];
        big5 <= |r4[63:12];  // u >= 2^12: whole >= 16, the table (<= 2^15) shifted to 0
        n5 <= r4[33:0];
    end

    // ---- stage 6: e; multiplier 2's operands (gain arrives now)
    wire [15:0]       e5 = big5 ? 16'd0 : (rom5 >> w5);
    reg               v6;
    reg [2:0]         op6;
    reg signed [33:0] a2;
    reg signed [B2W-1:0] b2;
    reg signed [15:0] er6;
    always @(posedge clk) begin
        v6 <= v5 & ~rst; op6 <= op5;
        if (SOFTMAX_ONLY) begin a2 <= {18'd0, e5}; b2 <= $signed({{(B2W-18){1'b0}}, recip}); end
        else if (op5 == LN) begin a2 <= n5; b2 <= gain; end
        else begin a2 <= {18'd0, e5}; b2 <= $signed({{(B2W-18){1'b0}}, recip}); end
        er6 <= (op5 == SMSUM) ? $signed(e5) : er5;
    end

    // the accumulators: SUMS from product 1 (x, x * x), SMSUM at stage 6 (e); one op at a time
    always @(posedge clk) begin
        if (rst | acc_clr) begin
            acc_s <= 0;
            acc_q <= 0;
        end else if (!SOFTMAX_ONLY && v2 && op2 == SUMS) begin
            acc_s <= acc_s + x2;
            acc_q <= acc_q + p1[ACC_Q_BITS-1:0];
        end else if (v6 && op6 == SMSUM) begin
            acc_q <= acc_q + er6[15:0];
        end
    end

    // ---- stage 7: product 2 (bias arrives now)
    // a2 = ah 2^17 + al (al 17 bits unsigned, the 18-bit port), b2 on the 27-bit port: 2 slices
    wire signed [17:0] a2l = {1'b0, a2[16:0]};
    wire signed [16:0] a2h = a2[33:17];
    wire signed [17+B2W:0] pp2_l = a2l * b2;
    wire signed [16+B2W:0] pp2_h = a2h * b2;
    // the softmax-only lane: a2 = e < 2^16 fits the 18-bit port alone, one slice
    wire signed [33+B2W:0] prod2 = SOFTMAX_ONLY ? pp2_l : pp2_l + (pp2_h <<< 17);
    reg               v7;
    reg [2:0]         op7;
    reg signed [33+B2W:0] p2;
    reg signed [BIAS_BITS-1:0] bias7;
    reg signed [15:0] er7;
    always @(posedge clk) begin
        v7 <= v6 & ~rst; op7 <= op6; er7 <= er6;
        p2 <= prod2;
        bias7 <= bias;
    end

    // ---- stage 8: LayerNorm's gain/bias rounding, softmax's probability
    wire signed [63:0] ln_sum = p2 + bias7 + (64'sd1 <<< 25);
    wire signed [63:0] ln_y = ln_sum >>> 26;
    wire [47:0] sm_sum = {p2[39:0], 8'd0} - {8'd0, p2[39:0]} + (48'd1 << 31);  // e * recip <= 2^32
    wire [15:0] sm_p = sm_sum[47:32];
    always @(posedge clk) begin
        out_valid <= v7 & ~rst;
        case (op7)
            LN:      out <= sat8(ln_y);
            SMP:     out <= (sm_p > 16'd255) ? 16'sd255 : sm_p;
            default: out <= er7;
        endcase
    end
endmodule

// LANES lanes as the vector unit holds them (for synthesis: tatvpr rtl / tests/rtl/test_vector_lane.py):
// the row constants' registers, the op and valid are shared; every lane has its own element inputs
// (x, y8, mult, shift, gain, bias) and outputs. Per-lane cost = the slope over LANES.
module vector_lanes #(
    parameter integer LANES = 1,
    parameter integer SOFTMAX_ONLY = 0,   // softmax-only lanes: mult / shift shared (the call's sm_mult / sm_shift)
    parameter integer GAIN_BITS = 24,
    parameter integer BIAS_BITS = 48
) (
    input  wire                          clk,
    input  wire                          rst,
    input  wire                          in_valid,
    input  wire [2:0]                    op,
    input  wire                          acc_clr,
    input  wire                          row_load,   // load the row constants
    input  wire signed [31:0]            rconst_in,
    input  wire [47:0]                   inv_in,
    input  wire [17:0]                   recip_in,
    input  wire [32*LANES-1:0]           x,
    input  wire [8*LANES-1:0]            y8,
    input  wire [32*LANES-1:0]           mult,
    input  wire [6*LANES-1:0]            shift,
    input  wire [GAIN_BITS*LANES-1:0]    gain,
    input  wire [BIAS_BITS*LANES-1:0]    bias,
    input  wire                          tbl_we,
    input  wire [7:0]                    tbl_addr,
    input  wire [7:0]                    tbl_data,
    output wire [LANES-1:0]              out_valid,
    output wire [16*LANES-1:0]           out,
    output wire [32*LANES-1:0]           acc_s,
    output wire [48*LANES-1:0]           acc_q
);
    reg signed [31:0] rconst;
    reg [47:0] inv;
    reg [17:0] recip;
    always @(posedge clk)
        if (row_load) begin
            rconst <= rconst_in;
            inv <= inv_in;
            recip <= recip_in;
        end
    genvar l;
    generate
        for (l = 0; l < LANES; l = l + 1) begin : lane
            vector_lane #(.SOFTMAX_ONLY(SOFTMAX_ONLY), .GAIN_BITS(GAIN_BITS), .BIAS_BITS(BIAS_BITS),
                          .ACC_Q_BITS(SOFTMAX_ONLY ? 32 : 48)) u (
                .clk(clk), .rst(rst), .in_valid(in_valid), .op(op), .acc_clr(acc_clr),
                .x(x[32*l +: 32]), .y8(y8[8*l +: 8]),
                .mult(SOFTMAX_ONLY ? mult[31:0] : mult[32*l +: 32]),
                .shift(SOFTMAX_ONLY ? shift[5:0] : shift[6*l +: 6]),
                .gain(gain[GAIN_BITS*l +: GAIN_BITS]), .bias(bias[BIAS_BITS*l +: BIAS_BITS]), .rconst(rconst),
                .inv(inv), .recip(recip), .tbl_we(tbl_we), .tbl_addr(tbl_addr), .tbl_data(tbl_data),
                .out_valid(out_valid[l]), .out(out[16*l +: 16]), .acc_s(acc_s[32*l +: 32]),
                .acc_q(acc_q[48*l +: (SOFTMAX_ONLY ? 32 : 48)]));
            if (SOFTMAX_ONLY) begin : acc_hi
                assign acc_q[48*l+32 +: 16] = 16'd0;   // a softmax lane's row-sum part: < 2^31 (T <= 65536)
            end
        end
    endgenerate
endmodule
