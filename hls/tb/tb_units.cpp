// C-simulation testbench of the vector-unit and int8-unit kernels (tatvpr_vector.cpp,
// tatvpr_int8.cpp, tatvpr_attention.cpp). Usage:
//
//   tb_units IN.bin OUT.bin [IN.bin OUT.bin ...]
//
// IN.bin (written by tatvpr_hw.lower.hls.unit_csim; little-endian):
//   char[8] "TVPRVEC1", int32 op (1 layernorm, 2 softmax, 3 gelu, 4 add, 5 gemm, 6 requant, 7 l2norm,
//   8 topk, 9 topk_dense, 10 attention, 11 chain),
//   int32 nparams,
//   int64 params[nparams], then sections (uint32 nbytes + data):
//     layernorm: params t, d, eps_q;       sections gain int64[d], bias int64[d], x int16[t*d]
//     softmax:   params rows, n, mult, shift; sections scores int32[rows*n]
//     gelu:      params n;                 sections table int8[256], x int8[n]
//     add:       params t, d;              sections mult int32[d], shift int32[d], x int16[t*d], y int8[t*d]
//     gemm:      params batch, m, k, n, mode, mult, shift; sections a int16[batch*m*k],
//                b int8[batch*k*n], bias int32[n] (nbytes 0: no bias); output int32 / int8 / int16
//     requant:   params n, mult, shift;    sections x int16[n]; output int8[n]
//     l2norm:    params n;                 sections x int16[n]; output int16[n] (Q15)
//     topk (8):  params m, k, keep;        sections x int8[m*k]; output uint16 tok_chunks[m], then
//                uint32 pairs[sum tok_chunks * TATVPR_TOPK_SIMD] (the bank-scheduled act stream)
//     topk_dense (9): params m, k, keep;   sections x int8[m*k]; output int8[m*k] (kept values in place)
//     attention (10): params heads, t, dh, sm_mult, sm_shift, av_mult, av_shift; sections qkv
//                int8[t * 3 * heads * dh]; output int64 int8_cycles (the array's counted cycles), then
//                int8[t * heads * dh]; element_cycles / row_ops / row_cycles are the softmax lanes'
//     chain (11): params t, d, flags (TATVPR_CHAIN_*), keep, eps_q; sections x16 int16[t*d], x8 int8[t*d],
//                mult int32[d], shift int32[d], gain int64[d], bias int64[d], table int8[256], each of
//                nbytes 0 when the flags do not read it; output int16[t*d] (WRITE_RES), then uint16
//                tok_chunks[t] + uint32 pairs (TOPK) or int8[t*d] (TOPK_DENSE, or no top-k)
// OUT.bin: char[8] "TVPRVRS2", int32 op, int64 element_cycles, int64 row_ops, int64 row_cycles,
//          uint32 nbytes, output.
// Exit status 0, or 2 for an unreadable or malformed file.
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <vector>

#include "tatvpr_attention.h"
#include "tatvpr_chain.h"
#include "tatvpr_int8.h"
#include "tatvpr_vector.h"

static long long g_cycles = 0, g_row_ops = 0, g_row_cycles = 0, g_i8_cycles = 0;
void tatvpr_count_vector_cycle() { g_cycles++; }
void tatvpr_count_row_op() { g_row_ops++; }
void tatvpr_count_row_cycle() { g_row_cycles++; }
void tatvpr_count_int8_cycle() { g_i8_cycles++; }

namespace {

template <typename T>
bool section(FILE *fp, std::vector<T> &out, size_t count) {
    uint32_t nbytes = 0;
    if (fread(&nbytes, 4, 1, fp) != 1 || nbytes != count * sizeof(T)) return false;
    out.resize(count);
    return nbytes == 0 || fread(out.data(), 1, nbytes, fp) == nbytes;
}

// a section of `count` elements, or none (nbytes 0: the op does not read it; out left empty)
template <typename T>
bool optional_section(FILE *fp, std::vector<T> &out, size_t count) {
    uint32_t nbytes = 0;
    if (fread(&nbytes, 4, 1, fp) != 1 || (nbytes != 0 && nbytes != count * sizeof(T))) return false;
    out.resize(nbytes ? count : 0);
    return nbytes == 0 || fread(out.data(), 1, nbytes, fp) == nbytes;
}

int run_one(const char *in_path, const char *out_path) {
    FILE *fp = fopen(in_path, "rb");
    if (!fp) {
        fprintf(stderr, "tb_units: cannot open %s\n", in_path);
        return 2;
    }
    char magic[8];
    int32_t op = 0, np = 0;
    int64_t prm[8] = {0};
    bool ok = fread(magic, 1, 8, fp) == 8 && memcmp(magic, "TVPRVEC1", 8) == 0 && fread(&op, 4, 1, fp) == 1 &&
              fread(&np, 4, 1, fp) == 1 && np >= 1 && np <= 8 && fread(prm, 8, np, fp) == (size_t)np;
    std::vector<uint8_t> out;
    g_cycles = g_row_ops = g_row_cycles = g_i8_cycles = 0;
    if (ok && op == 1 && np == 3) {
        int t = (int)prm[0], d = (int)prm[1];
        std::vector<int64_t> gain, bias;
        std::vector<int16_t> x;
        ok = section(fp, gain, d) && section(fp, bias, d) && section(fp, x, (size_t)t * d);
        if (ok) {
            std::vector<int8_t> y((size_t)t * d);
            tatvpr_layernorm(x.data(), y.data(), t, d, gain.data(), bias.data(), prm[2]);
            out.assign((uint8_t *)y.data(), (uint8_t *)y.data() + y.size());
        }
    } else if (ok && op == 2 && np == 4) {
        int rows = (int)prm[0], n = (int)prm[1];
        std::vector<int32_t> s;
        ok = section(fp, s, (size_t)rows * n) && n > 0 && prm[3] >= 1 && prm[3] <= 62;
        if (ok) {
            std::vector<int32_t> mx(rows);  // the int8 unit's per-row comparator
            for (int r = 0; r < rows; r++) {
                mx[r] = s[(size_t)r * n];
                for (int c = 1; c < n; c++) mx[r] = s[(size_t)r * n + c] > mx[r] ? s[(size_t)r * n + c] : mx[r];
            }
            std::vector<uint8_t> p((size_t)rows * n);
            tatvpr_softmax(s.data(), mx.data(), p.data(), rows, n, prm[2], (int)prm[3]);
            out = p;
        }
    } else if (ok && op == 3 && np == 1) {
        int n = (int)prm[0];
        std::vector<int8_t> table, x;
        ok = section(fp, table, 256) && section(fp, x, n);
        if (ok) {
            std::vector<int8_t> y(n);
            tatvpr_gelu(x.data(), y.data(), n, table.data());
            out.assign((uint8_t *)y.data(), (uint8_t *)y.data() + y.size());
        }
    } else if (ok && op == 4 && np == 2) {
        int t = (int)prm[0], d = (int)prm[1];
        std::vector<int32_t> mult, shift;
        std::vector<int16_t> x;
        std::vector<int8_t> y;
        ok = section(fp, mult, d) && section(fp, shift, d) && section(fp, x, (size_t)t * d) &&
             section(fp, y, (size_t)t * d);
        if (ok) {
            std::vector<int16_t> o((size_t)t * d);
            tatvpr_residual_add(x.data(), y.data(), o.data(), t, d, mult.data(), shift.data());
            out.assign((uint8_t *)o.data(), (uint8_t *)o.data() + o.size() * 2);
        }
    } else if (ok && op == 5 && np == 7) {
        int batch = (int)prm[0], m = (int)prm[1], k = (int)prm[2], n = (int)prm[3], mode = (int)prm[4];
        std::vector<int16_t> a;
        std::vector<int8_t> b;
        std::vector<int32_t> bias;
        uint32_t bias_bytes = 0;
        ok = mode >= 0 && mode <= 2 && (mode == 0 || (prm[6] >= 1 && prm[6] <= 62)) &&
             section(fp, a, (size_t)batch * m * k) && section(fp, b, (size_t)batch * k * n) &&
             fread(&bias_bytes, 4, 1, fp) == 1 && (bias_bytes == 0 || bias_bytes == (uint32_t)n * 4);
        if (ok && bias_bytes) {
            bias.resize(n);
            ok = fread(bias.data(), 1, bias_bytes, fp) == bias_bytes;
        }
        if (ok) {
            size_t cnt = (size_t)batch * m * n;
            std::vector<int32_t> o32(mode == 0 ? cnt : 0);
            std::vector<int8_t> o8(mode == 1 ? cnt : 0);
            std::vector<int16_t> o16(mode == 2 ? cnt : 0);
            tatvpr_int8_gemm(a.data(), b.data(), bias_bytes ? bias.data() : nullptr, o32.data(), o8.data(),
                             o16.data(), batch, m, k, n, mode, prm[5], (int)prm[6]);
            if (mode == 0) out.assign((uint8_t *)o32.data(), (uint8_t *)o32.data() + cnt * 4);
            if (mode == 1) out.assign((uint8_t *)o8.data(), (uint8_t *)o8.data() + cnt);
            if (mode == 2) out.assign((uint8_t *)o16.data(), (uint8_t *)o16.data() + cnt * 2);
        }
    } else if (ok && op == 6 && np == 3) {
        int n = (int)prm[0];
        std::vector<int16_t> x;
        ok = n >= 1 && prm[1] >= 0 && prm[1] < (1LL << 31) && prm[2] >= 1 && prm[2] <= 62 && section(fp, x, n);
        if (ok) {
            std::vector<int8_t> y(n);
            tatvpr_requant(x.data(), y.data(), n, prm[1], (int)prm[2]);
            out.assign((uint8_t *)y.data(), (uint8_t *)y.data() + y.size());
        }
    } else if (ok && op == 7 && np == 1) {
        int n = (int)prm[0];
        std::vector<int16_t> x;
        ok = n >= 1 && n <= TATVPR_L2NORM_MAX_N && section(fp, x, n);
        if (ok) {
            std::vector<int16_t> y(n);
            tatvpr_l2norm(x.data(), y.data(), n);
            out.assign((uint8_t *)y.data(), (uint8_t *)y.data() + y.size() * 2);
        }
    } else if (ok && (op == 8 || op == 9) && np == 3) {
        int m = (int)prm[0], k = (int)prm[1];
        std::vector<int8_t> x;
        ok = m >= 1 && k >= 1 && k <= TATVPR_TOPK_KMAX && prm[2] >= 0 && prm[2] <= (1LL << 30) &&
             section(fp, x, (size_t)m * k);
        if (ok) {
            const int B = TATVPR_TOPK_BANKS, Q = TATVPR_TOPK_SIMD / TATVPR_TOPK_BANKS;
            int gmax = ((k + B - 1) / B + Q - 1) / Q;
            gmax = gmax > 1 ? gmax : 1;
            std::vector<uint16_t> chunks(m);
            std::vector<uint32_t> pairs((size_t)m * gmax * TATVPR_TOPK_SIMD);
            std::vector<int8_t> y((size_t)m * k);
            long long words = tatvpr_topk_schedule(x.data(), m, k, (int)prm[2], op == 8, chunks.data(), pairs.data(),
                                                   y.data());
            ok = words >= 0;
            if (ok && op == 8) {
                out.assign((uint8_t *)chunks.data(), (uint8_t *)chunks.data() + m * 2);
                out.insert(out.end(), (uint8_t *)pairs.data(), (uint8_t *)pairs.data() + words * 4);
            } else if (ok) {
                out.assign((uint8_t *)y.data(), (uint8_t *)y.data() + y.size());
            }
        }
    } else if (ok && op == 10 && np == 7) {
        int heads = (int)prm[0], t = (int)prm[1], dh = (int)prm[2];
        std::vector<int8_t> qkv;
        ok = heads >= 1 && t >= 1 && dh >= 1 && section(fp, qkv, (size_t)t * 3 * heads * dh);
        if (ok) {
            std::vector<int8_t> o((size_t)t * heads * dh);
            ok = tatvpr_attention(qkv.data(), o.data(), heads, t, dh, prm[3], (int)prm[4], prm[5], (int)prm[6]) == 0;
            long long i8 = g_i8_cycles;
            out.assign((uint8_t *)&i8, (uint8_t *)&i8 + 8);
            out.insert(out.end(), (uint8_t *)o.data(), (uint8_t *)o.data() + o.size());
        }
    } else if (ok && op == 11 && np == 5) {
        int t = (int)prm[0], d = (int)prm[1], flags = (int)prm[2];
        std::vector<int16_t> x16;
        std::vector<int8_t> x8, table;
        std::vector<int32_t> mult, shift;
        std::vector<int64_t> gain, bias;
        size_t n = (size_t)t * d;
        ok = t >= 1 && d >= 1 && d <= TATVPR_TOPK_KMAX && prm[3] >= 0 && prm[3] <= (1LL << 30) &&
             optional_section(fp, x16, n) && optional_section(fp, x8, n) && optional_section(fp, mult, d) &&
             optional_section(fp, shift, d) && optional_section(fp, gain, d) && optional_section(fp, bias, d) &&
             optional_section(fp, table, 256);
        // every array a step reads must be there
        bool add = flags & TATVPR_CHAIN_ADD, ln = flags & TATVPR_CHAIN_LAYERNORM, gelu = flags & TATVPR_CHAIN_GELU;
        ok = ok && (!add || (x16.size() && x8.size() && mult.size() && shift.size())) &&
             (!ln || (gain.size() && bias.size() && (add || x16.size()))) && (!gelu || (x8.size() && table.size()));
        if (ok) {
            const int B = TATVPR_TOPK_BANKS, Q = TATVPR_TOPK_SIMD / TATVPR_TOPK_BANKS;
            int gmax = ((d + B - 1) / B + Q - 1) / Q;
            gmax = gmax > 1 ? gmax : 1;
            std::vector<int16_t> res(n);
            std::vector<int8_t> y(n);
            std::vector<uint16_t> chunks(t);
            std::vector<uint32_t> pairs((size_t)t * gmax * TATVPR_TOPK_SIMD);
            long long words = tatvpr_chain(x16.data(), x8.data(), mult.data(), shift.data(), gain.data(), bias.data(),
                                           prm[4], table.data(), res.data(), y.data(), chunks.data(), pairs.data(),
                                           t, d, (int)prm[3], flags);
            ok = words >= 0;
            if (ok && (flags & TATVPR_CHAIN_WRITE_RES))
                out.insert(out.end(), (uint8_t *)res.data(), (uint8_t *)res.data() + n * 2);
            if (ok && (flags & TATVPR_CHAIN_TOPK)) {
                out.insert(out.end(), (uint8_t *)chunks.data(), (uint8_t *)chunks.data() + t * 2);
                out.insert(out.end(), (uint8_t *)pairs.data(), (uint8_t *)pairs.data() + words * 4);
            } else if (ok) {
                out.insert(out.end(), (uint8_t *)y.data(), (uint8_t *)y.data() + n);
            }
        }
    } else {
        ok = false;
    }
    if (op != 10) g_cycles += g_i8_cycles;  // the int8 gemm's iterations are its element cycles
    fclose(fp);
    if (!ok) {
        fprintf(stderr, "tb_units: %s is malformed (op %d, %d params)\n", in_path, op, np);
        return 2;
    }
    FILE *fo = fopen(out_path, "wb");
    if (!fo) {
        fprintf(stderr, "tb_units: cannot write %s\n", out_path);
        return 2;
    }
    uint32_t nbytes = (uint32_t)out.size();
    long long cyc = g_cycles, rows = g_row_ops, row_cyc = g_row_cycles;
    fwrite("TVPRVRS2", 1, 8, fo);
    fwrite(&op, 4, 1, fo);
    fwrite(&cyc, 8, 1, fo);
    fwrite(&rows, 8, 1, fo);
    fwrite(&row_cyc, 8, 1, fo);
    fwrite(&nbytes, 4, 1, fo);
    fwrite(out.data(), 1, out.size(), fo);
    fclose(fo);
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 3 || (argc - 1) % 2) {
        fprintf(stderr, "usage: tb_units IN.bin OUT.bin [IN.bin OUT.bin ...]\n");
        return 2;
    }
    for (int i = 1; i < argc; i += 2) {
        int rc = run_one(argv[i], argv[i + 1]);
        if (rc) return rc;
    }
    return 0;
}
