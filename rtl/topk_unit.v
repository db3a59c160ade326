// The vector unit's top-k and bank-scheduling unit (docs/engine.md section 5; the RTL twin of the
// HLS kernel tatvpr_topk_schedule in hls/src/tatvpr_vector.cpp, same storage and parallelism).
//
// Per row of k int8 channels (k <= K_MAX; keep <= k, the driver clamps it):
//   HIST   ceil(k / LANES) cycles: LANES channels a cycle into the row buffer (LANES memories of
//          8 bits x ceil(K_MAX / LANES), channel c in memory c mod LANES) and |x| (1..128) into the
//          lane's own 128-bin histogram (LANES LUTRAMs of 128 counters, read-modify-write in one
//          cycle through the asynchronous read; magnitude 0 is never counted: never kept).
//   SCAN   128 cycles: bins 128 down to 1, one a cycle: the sum over lanes of the bin decides the
//          threshold magnitude thr and how many channels at thr to keep (ties); the bin is cleared
//          as it is read, so the histograms are all zero again for the next row.
//   SELECT ceil(k / LANES) cycles: the row read back (prefetched one cycle ahead, synchronous
//          reads), a channel kept when |x| > thr, or |x| = thr while ties last (a prefix count of
//          the lanes at thr gives the lower indices first). stream = 0: the kept values in place
//          (dense out, zero elsewhere). stream = 1: kept channel c appended to bank c mod BANKS's
//          queue. With LANES >= BANKS, R = LANES / BANKS lanes map to one bank: their kept entries
//          are compacted (prefix count) and land at consecutive entries, so a bank's queue is R
//          memories (entry e in memory e mod R, address floor(e / R)), one write each a cycle.
//   EMIT   (stream = 1) g * ceil(SIMD / LANES) cycles: chunk j, slot s = i * BANKS + b carries
//          bank b's entry j * Q + i (Q = SIMD / BANKS) or a zero pad; g = max(1, max over banks
//          of ceil(kept_b / Q)). LANES slots a cycle, read synchronously.
// Cycles per row 2 ceil(k / LANES) + 128 (+ g ceil(SIMD / LANES) in stream mode): busy counts
// exactly these; outputs are registered, so the last word of a run appears one cycle after busy
// falls (tests/rtl/test_topk_unit.py). LANES, BANKS and SIMD are powers of two, BANKS divides SIMD.
//
// Output words: stream: value (7..0) | channel << 8 (IW = clog2(K_MAX) index bits), 0 = pad;
// dense: the kept int8 value in bits 7..0. out_mask marks the lanes that carry a slot/channel.
module topk_unit #(
    parameter integer LANES = 16,
    parameter integer K_MAX = 256,
    parameter integer BANKS = 8,
    parameter integer SIMD = 8
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire                     start,      // sampled in idle: run m_rows rows
    input  wire [15:0]              m_rows,
    input  wire [KB-1:0]            k,          // channels per row, 1 .. K_MAX
    input  wire [KB-1:0]            keep,       // 0 .. k
    input  wire                     stream,
    output wire                     busy,
    output wire                     row_start,  // the first HIST cycle of a row
    output wire                     in_rd,      // HIST: in_data is consumed this cycle
    input  wire [8*LANES-1:0]       in_data,    // channel grp * LANES + l at [8l +: 8]
    output reg                      out_valid,
    output reg                      out_dense,
    output reg  [LANES-1:0]         out_mask,
    output wire [QW*LANES-1:0]      out_data,
    output reg                      tok_valid,  // a row's chunk count (stream mode)
    output reg  [CW-1:0]            tok_chunks
);
    localparam integer IW = (K_MAX <= 2) ? 1 : $clog2(K_MAX);     // channel index bits
    localparam integer KB = $clog2(K_MAX + 1);                     // counts up to K_MAX
    localparam integer QW = 8 + IW;                                // queue / output word
    localparam integer RG = (K_MAX + LANES - 1) / LANES;           // row buffer depth per lane
    localparam integer RA = (RG <= 1) ? 1 : $clog2(RG);
    localparam integer CB = $clog2(RG + 1);                        // histogram counter bits
    localparam integer D = (K_MAX + BANKS - 1) / BANKS;            // queue entries per bank
    localparam integer CW = $clog2(D + 1);                         // queue counts, chunk index
    localparam integer R = (LANES >= BANKS) ? LANES / BANKS : 1;   // queue memories per bank
    localparam integer LR = (R <= 1) ? 0 : $clog2(R);
    localparam integer QD = (D + R - 1) / R;                       // depth of one queue memory
    localparam integer QA = (QD <= 1) ? 1 : $clog2(QD);
    localparam integer Q = SIMD / BANKS;                           // slots per bank in a chunk
    localparam integer LQ = (Q <= 1) ? 0 : $clog2(Q);
    localparam integer SG = (SIMD + LANES - 1) / LANES;            // emit cycles per chunk
    localparam integer LL = (LANES <= 1) ? 0 : $clog2(LANES);
    localparam integer LB = (BANKS <= 1) ? 0 : $clog2(BANKS);
    localparam integer SUMW = CB + LL + 1;
    localparam integer SELW = (LB > LR ? LB : LR) + 1;

    localparam [2:0] IDLE = 3'd0, HIST = 3'd1, SCAN = 3'd2, SEL = 3'd3, EMIT = 3'd4;
    reg [2:0] state;
    reg [15:0] rows_left;
    reg [KB-1:0] kr, keepr;
    reg streamr;
    reg [RA:0] grp;                   // HIST / SEL group
    reg [7:0] mag;                    // SCAN bin
    reg [CW-1:0] j;                   // EMIT chunk
    reg [15:0] sg;                    // EMIT slot group inside the chunk
    reg found;
    reg [KB-1:0] above, ties;
    reg [7:0] thr;
    reg [CW-1:0] cnt [0:BANKS-1];

    wire [RA:0] ngrp = (kr + LANES - 1) >> LL;
    wire last_grp = (grp == ngrp - 1);

    assign busy = state != IDLE;
    assign in_rd = state == HIST;
    assign row_start = state == HIST && grp == 0;

    // ---------------------------------------------------------------- row buffer + histograms
    wire [RA-1:0] row_raddr = (state == SEL) ? grp[RA-1:0] + 1'b1 : {RA{1'b0}};
    wire [8*LANES-1:0] row_q;
    wire [SUMW*LANES-1:0] bin_ext;
    genvar l, b, u;
    generate
        for (l = 0; l < LANES; l = l + 1) begin : lane
            reg [7:0] rowmem [0:RG-1];
            reg [7:0] rq;
            reg [CB-1:0] hist [0:127];
            integer z;
            initial for (z = 0; z < 128; z = z + 1) hist[z] = {CB{1'b0}};
            wire [7:0] v = in_data[8*l +: 8];
            wire [7:0] a = v[7] ? (~v + 1'b1) : v;           // 1 .. 128 (128 = |-128|), 0
            wire in_ok = ({grp, {LL{1'b0}}} | l) < kr;
            wire hwe = (state == HIST && in_ok && a != 0) || state == SCAN;
            wire [6:0] haddr = (state == SCAN) ? mag[6:0] : a[6:0];
            wire [CB-1:0] hq = hist[haddr];                 // asynchronous read (LUTRAM)
            always @(posedge clk) begin
                if (state == HIST && in_ok) rowmem[grp[RA-1:0]] <= v;
                rq <= rowmem[row_raddr];
                if (hwe) hist[haddr] <= (state == SCAN) ? {CB{1'b0}} : hq + 1'b1;
            end
            assign row_q[8*l +: 8] = rq;
            assign bin_ext[SUMW*l +: SUMW] = {{(SUMW-CB){1'b0}}, hq};
        end
    endgenerate

    // ---------------------------------------------------------------- SCAN: sum over lanes
    reg [KB-1:0] bin_sum;
    integer s1;
    always @* begin
        bin_sum = {KB{1'b0}};
        for (s1 = 0; s1 < LANES; s1 = s1 + 1) bin_sum = bin_sum + bin_ext[SUMW*s1 +: SUMW];
    end
    wire [KB:0] above_next = above + bin_sum;

    // ---------------------------------------------------------------- SELECT: kept lanes
    reg [LANES-1:0] gt, eq, kept;
    reg [KB-1:0] eq_before, eq_total;
    integer s2;
    always @* begin
        eq_before = {KB{1'b0}};
        for (s2 = 0; s2 < LANES; s2 = s2 + 1) begin : sel
            reg [7:0] v2, a2;
            reg ok;
            v2 = row_q[8*s2 +: 8];
            a2 = v2[7] ? (~v2 + 1'b1) : v2;
            ok = ({grp, {LL{1'b0}}} | s2) < kr && v2 != 0;
            gt[s2] = ok && a2 > thr;
            eq[s2] = ok && a2 == thr;
            kept[s2] = gt[s2] || (eq[s2] && eq_before < ties);
            eq_before = eq_before + eq[s2];
        end
        eq_total = eq_before;
    end

    // ---------------------------------------------------------------- bank queues
    // queue memory (b, u): write port (we, waddr, wdata), synchronous read (raddr -> qd)
    reg [BANKS*R-1:0] q_we;
    reg [QA*BANKS*R-1:0] q_waddr, q_raddr;
    reg [QW*BANKS*R-1:0] q_wdata;
    wire [QW*BANKS*R-1:0] q_rdata;
    generate
        for (b = 0; b < BANKS; b = b + 1) begin : bank
            for (u = 0; u < R; u = u + 1) begin : sub
                reg [QW-1:0] qmem [0:QD-1];
                reg [QW-1:0] qd;
                always @(posedge clk) begin
                    if (q_we[b*R+u]) qmem[q_waddr[QA*(b*R+u) +: QA]] <= q_wdata[QW*(b*R+u) +: QW];
                    qd <= qmem[q_raddr[QA*(b*R+u) +: QA]];
                end
                assign q_rdata[QW*(b*R+u) +: QW] = qd;
            end
        end
    endgenerate

    // writes (SELECT, stream): bank b's lanes, their kept entries compacted from cnt[b]: lane
    // b + jj * BANKS (LANES >= BANKS) gets entry cnt[b] + (kept lanes of the bank before it), which
    // goes to memory entry mod R; each memory takes at most one of them a cycle
    reg [CW-1:0] cnt_add [0:BANKS-1];
    reg [CW-1:0] ent [0:LANES-1];
    integer wb, wj, wl, wu;
    always @* begin
        q_we = 0;
        q_waddr = 0;
        q_wdata = 0;
        for (wb = 0; wb < BANKS; wb = wb + 1) begin : wr
            reg [CW-1:0] e;
            e = cnt[wb];
            if (LANES >= BANKS) begin
                for (wj = 0; wj < R; wj = wj + 1) begin
                    ent[wb + wj * BANKS] = e;
                    e = e + kept[wb + wj * BANKS];
                end
                for (wu = 0; wu < R; wu = wu + 1)
                    for (wj = 0; wj < R; wj = wj + 1) begin
                        wl = wb + wj * BANKS;
                        if (kept[wl] && (ent[wl] % R) == wu) begin
                            q_we[wb*R + wu] = state == SEL && streamr;
                            q_waddr[QA*(wb*R + wu) +: QA] = ent[wl] >> LR;
                            q_wdata[QW*(wb*R + wu) +: QW] = {grp[IW-LL-1:0], wl[LL-1:0], row_q[8*wl +: 8]};
                        end
                    end
            end else begin
                // one lane, wb mod LANES, reaches bank wb when the group starts at its bank block
                wl = wb % LANES;
                if (kept[wl] && ((({grp, {LL{1'b0}}} | wl) % BANKS) == wb)) begin
                    q_we[wb] = state == SEL && streamr;
                    q_waddr[QA*wb +: QA] = e;
                    q_wdata[QW*wb +: QW] = {grp[IW-LL-1:0], wl[LL-1:0], row_q[8*wl +: 8]};
                    e = e + 1'b1;
                end
            end
            cnt_add[wb] = e;
        end
    end

    // EMIT: chunk j, slot group sg; g = max(1, max_b ceil(cnt_b / Q))
    reg [CW-1:0] g;
    integer gb;
    always @* begin
        g = 1;
        for (gb = 0; gb < BANKS; gb = gb + 1)
            if (((cnt[gb] + Q - 1) >> LQ) > g) g = (cnt[gb] + Q - 1) >> LQ;
    end
    wire last_sg = (sg == SG - 1);
    // reads: slot s = sg * LANES + l, bank s mod BANKS, entry j * Q + floor(s / BANKS)
    reg [LANES-1:0] slot_ok;                   // the slot exists and its entry is below the bank's count
    reg [LANES-1:0] emit_ok;
    reg [SELW-1:0] slot_sel [0:LANES-1];           // which memory the lane's word comes from (registered)
    reg [SELW-1:0] emit_sel [0:LANES-1];
    reg [QW*LANES-1:0] dense_data;
    wire [31:0] s0 = sg << LL;                 // first slot of the group
    wire [31:0] e0 = (j << LQ) + (s0 >> LB);   // the group's first entry (per bank)
    integer rl, rb, ru;
    generate
        if (LANES >= BANKS) begin : rd_wide
            // lane l: bank l mod BANKS, entry e0 + floor(l / BANKS), in memory (e0 + l / BANKS) mod R
            always @* begin
                q_raddr = 0;
                for (rl = 0; rl < LANES; rl = rl + 1) begin
                    slot_ok[rl] = s0 + rl < SIMD && e0 + (rl >> LB) < cnt[rl % BANKS];
                    slot_sel[rl] = (e0 + (rl >> LB)) % R;
                end
                for (rb = 0; rb < BANKS; rb = rb + 1)
                    for (ru = 0; ru < R; ru = ru + 1)  // memory u serves entry e0 + ((u - e0) mod R)
                        q_raddr[QA*(rb*R + ru) +: QA] = (e0 + ((ru - e0) % R)) >> LR;
            end
        end else begin : rd_narrow
            // R = 1: lane l reads bank (s0 mod BANKS) + l; every bank at entry e0
            always @* begin
                q_raddr = 0;
                for (rl = 0; rl < LANES; rl = rl + 1) begin
                    slot_sel[rl] = (s0 % BANKS) >> LL;   // the bank block
                    slot_ok[rl] = s0 + rl < SIMD && e0 < cnt[(s0 % BANKS) + rl];
                end
                for (rb = 0; rb < BANKS; rb = rb + 1) q_raddr[QA*rb +: QA] = e0;
            end
        end
    endgenerate

    // ---------------------------------------------------------------- control + outputs
    integer ob;
    always @(posedge clk) begin
        out_valid <= 1'b0;
        tok_valid <= 1'b0;
        emit_ok <= 0;
        if (rst) begin
            state <= IDLE;
        end else begin
            case (state)
                IDLE: if (start && m_rows != 0) begin
                    state <= HIST;
                    rows_left <= m_rows;
                    kr <= k;
                    keepr <= keep;
                    streamr <= stream;
                    grp <= 0;
                end
                HIST: begin
                    grp <= grp + 1'b1;
                    if (last_grp) begin
                        state <= SCAN;
                        mag <= 8'd128;
                        found <= 1'b0;
                        above <= 0;
                        thr <= 0;
                        ties <= 0;
                    end
                end
                SCAN: begin
                    if (!found && above_next >= keepr) begin
                        thr <= mag;
                        ties <= keepr - above;
                        found <= 1'b1;
                    end
                    above <= above_next[KB-1:0];
                    mag <= mag - 1'b1;
                    for (ob = 0; ob < BANKS; ob = ob + 1) cnt[ob] <= 0;
                    if (mag == 8'd1) begin
                        state <= SEL;
                        grp <= 0;
                    end
                end
                SEL: begin
                    grp <= grp + 1'b1;
                    ties <= ties - ((eq_total < ties) ? eq_total : ties);
                    if (streamr) begin
                        for (ob = 0; ob < BANKS; ob = ob + 1) cnt[ob] <= cnt_add[ob];
                    end else begin
                        out_valid <= 1'b1;
                        out_dense <= 1'b1;
                        for (ob = 0; ob < LANES; ob = ob + 1) begin
                            out_mask[ob] <= ({grp, {LL{1'b0}}} | ob) < kr;
                            dense_data[QW*ob +: QW] <= kept[ob] ? {{IW{1'b0}}, row_q[8*ob +: 8]} : {QW{1'b0}};
                        end
                    end
                    if (last_grp) begin
                        j <= 0;
                        sg <= 0;
                        if (streamr) begin
                            state <= EMIT;
                        end else begin
                            rows_left <= rows_left - 1'b1;
                            grp <= 0;
                            state <= (rows_left == 1) ? IDLE : HIST;
                        end
                    end
                end
                EMIT: begin
                    if (j == 0 && sg == 0) begin
                        tok_valid <= 1'b1;
                        tok_chunks <= g;
                    end
                    out_valid <= 1'b1;
                    out_dense <= 1'b0;
                    emit_ok <= slot_ok;
                    for (ob = 0; ob < LANES; ob = ob + 1) begin
                        emit_sel[ob] <= slot_sel[ob];
                        out_mask[ob] <= s0 + ob < SIMD;
                    end
                    sg <= last_sg ? 16'd0 : sg + 1'b1;
                    if (last_sg) j <= j + 1'b1;
                    if (last_sg && j == g - 1) begin
                        rows_left <= rows_left - 1'b1;
                        grp <= 0;
                        state <= (rows_left == 1) ? IDLE : HIST;
                    end
                end
                default: state <= IDLE;
            endcase
        end
    end

    // the emitted words: the queue memories' outputs one cycle after their reads
    reg [QW*LANES-1:0] emit_word;
    integer el, eu;
    always @* begin
        emit_word = 0;
        for (el = 0; el < LANES; el = el + 1)
            if (LANES >= BANKS) begin      // bank el mod BANKS, memory emit_sel
                for (eu = 0; eu < R; eu = eu + 1)
                    if (emit_ok[el] && emit_sel[el] == eu)
                        emit_word[QW*el +: QW] = q_rdata[QW*((el % BANKS)*R + eu) +: QW];
            end else begin                 // bank block emit_sel: bank emit_sel * LANES + el
                for (eu = 0; eu < BANKS / LANES; eu = eu + 1)
                    if (emit_ok[el] && emit_sel[el] == eu)
                        emit_word[QW*el +: QW] = q_rdata[QW*(eu*LANES + el) +: QW];
            end
    end
    assign out_data = out_dense ? dense_data : emit_word;
endmodule
