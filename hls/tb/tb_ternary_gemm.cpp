// C-simulation testbench of tatvpr_ternary_gemm (g++ with the ap_int headers, or Vitis HLS
// csim_design). Usage:
//
//   tb_ternary_gemm LAYER.bin RESULT.bin [LAYER.bin RESULT.bin ...]
//
// LAYER.bin (written by tatvpr_pynq.formats.write_layer_file; little-endian):
//   char[8] "TVPRLYR3"
//   int32 pe, simd, banks, ports, m, k, n, fmt, mult, shift, order, resident
//   5 sections, each uint32 nbytes followed by nbytes of data, in this order:
//     tok_chunks uint16[m] | pairs uint32[...] (TATVPR_SKIP_NONE: int8 x[m][k]) | weights uint8[...] |
//     bias int32[n] |
//     expected int8[m*n] (nbytes 0 when there is no expected output)
// RESULT.bin (read by tatvpr_pynq.formats.read_result_file):
//   char[8] "TVPRRES2", int32 status, m, n, folds, mismatches, steps,
//   int8 out[m*n],
//   steps x { int32 fold, block, weight_loads, act_loads;  int64 chunk_cycles, weight_bytes, act_bytes }
//     one record per step (f, b) in the order the kernel ran them: its CHUNK iterations, and the
//     loads made for it (0 or 1 each: the fold's weights, the block's activations; before the
//     first step or while the previous step computed) with their bytes.
//
// Exit status: 0 when every layer ran and matched its expected output bit-exactly, 1 when
// some output differs (the first differences are printed), 2 for an unreadable file or a
// layer built for another PE x SIMD x banks x ports.
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <string>
#include <vector>

#include "tatvpr_gemm.h"

struct StepRecord {
    int32_t fold, block, weight_loads, act_loads;
    int64_t chunk_cycles, weight_bytes, act_bytes;
};
static std::vector<StepRecord> g_steps;
static StepRecord g_pending = {0, 0, 0, 0, 0, 0, 0};  // loads reported before their step starts

static StepRecord &record_for(int step) {
    if (step < (int)g_steps.size()) return g_steps[step];  // not expected: loads precede their step
    return g_pending;
}

void tatvpr_count_step(int fold, int block) {
    StepRecord r = g_pending;
    r.fold = fold;
    r.block = block;
    r.chunk_cycles = 0;
    g_steps.push_back(r);
    g_pending = StepRecord{0, 0, 0, 0, 0, 0, 0};
}

void tatvpr_count_chunk() {
    if (!g_steps.empty()) g_steps.back().chunk_cycles++;
}

void tatvpr_count_load(int step, int what, long bytes) {
    if (step != (int)g_steps.size()) {  // a load must be for the step after the last started
        fprintf(stderr, "tb: a load for step %d reported after %zu steps started\n", step, g_steps.size());
    }
    StepRecord &r = record_for(step);
    if (what == tatvpr::LOAD_WEIGHTS) {
        r.weight_loads++;
        r.weight_bytes += bytes;
    } else {
        r.act_loads++;
        r.act_bytes += bytes;
    }
}

namespace {

bool read_section(FILE *fp, std::vector<uint8_t> &buf) {
    uint32_t nbytes = 0;
    if (fread(&nbytes, 4, 1, fp) != 1) return false;
    buf.resize(nbytes);
    return nbytes == 0 || fread(buf.data(), 1, nbytes, fp) == nbytes;
}

int run_one(const char *layer_path, const char *result_path) {
    FILE *fp = fopen(layer_path, "rb");
    if (!fp) {
        fprintf(stderr, "tb: cannot open %s\n", layer_path);
        return 2;
    }
    char magic[8];
    int32_t hdr[12];
    std::vector<uint8_t> chunks_b, pairs_b, w_b, bias_b, exp_b;
    bool ok = fread(magic, 1, 8, fp) == 8 && memcmp(magic, "TVPRLYR3", 8) == 0 &&
              fread(hdr, 4, 12, fp) == 12 && read_section(fp, chunks_b) && read_section(fp, pairs_b) &&
              read_section(fp, w_b) && read_section(fp, bias_b) && read_section(fp, exp_b);
    fclose(fp);
    if (!ok) {
        fprintf(stderr, "tb: %s is not a TVPRLYR3 layer file\n", layer_path);
        return 2;
    }
    const int pe = hdr[0], simd = hdr[1], banks = hdr[2], ports = hdr[3], m = hdr[4], k = hdr[5];
    const int n = hdr[6], fmt = hdr[7], mult = hdr[8], shift = hdr[9], order = hdr[10], resident = hdr[11];
    if (pe != TATVPR_PE || simd != TATVPR_SIMD || banks != TATVPR_BANKS || ports != TATVPR_PORTS) {
        fprintf(stderr, "tb: %s was written for PE=%d SIMD=%d B=%d P=%d; this build is PE=%d SIMD=%d B=%d P=%d\n",
                layer_path, pe, simd, banks, ports, TATVPR_PE, TATVPR_SIMD, TATVPR_BANKS, TATVPR_PORTS);
        return 2;
    }
    if (m <= 0 || n <= 0 || chunks_b.size() != (size_t)m * 2 || bias_b.size() != (size_t)n * 4 ||
        (!exp_b.empty() && exp_b.size() != (size_t)m * n) || pairs_b.size() % sizeof(tatvpr::act_word_t)) {
        fprintf(stderr, "tb: %s: section sizes do not match m=%d n=%d\n", layer_path, m, n);
        return 2;
    }
    std::vector<uint16_t> chunks(m);
    memcpy(chunks.data(), chunks_b.data(), chunks_b.size());
    std::vector<uint32_t> pairs(pairs_b.size() / 4 + 1, 0);
    memcpy(pairs.data(), pairs_b.data(), pairs_b.size());
    std::vector<int32_t> bias(n);
    memcpy(bias.data(), bias_b.data(), bias_b.size());
    w_b.push_back(0);  // never dereferenced past the real size; keeps data() valid
    std::vector<int8_t> out((size_t)m * n, 0);

    const int folds = (n + TATVPR_PE - 1) / TATVPR_PE;
    g_steps.clear();
    g_pending = StepRecord{0, 0, 0, 0, 0, 0, 0};
    // the act section: uint32 slot words, or (skip mode none) the dense int8 tokens
    int status = tatvpr_ternary_gemm((const tatvpr::act_word_t *)pairs.data(), chunks.data(), w_b.data(), bias.data(),
                                     out.data(), m, k, n, fmt, mult, shift, order, resident);

    int mismatches = 0;
    if (!exp_b.empty()) {
        for (size_t i = 0; i < out.size(); i++) {
            int8_t want = (int8_t)exp_b[i];
            if (out[i] != want) {
                if (mismatches < 5)
                    fprintf(stderr, "tb: %s: y[%zu][%zu] = %d, expected %d\n", layer_path,
                            i / n, i % n, out[i], want);
                mismatches++;
            }
        }
    }
    FILE *rp = fopen(result_path, "wb");
    if (!rp) {
        fprintf(stderr, "tb: cannot write %s\n", result_path);
        return 2;
    }
    int32_t rh[6] = {status, m, n, folds, mismatches, (int32_t)g_steps.size()};
    fwrite("TVPRRES2", 1, 8, rp);
    fwrite(rh, 4, 6, rp);
    fwrite(out.data(), 1, out.size(), rp);
    for (const StepRecord &r : g_steps) {
        int32_t ints[4] = {r.fold, r.block, r.weight_loads, r.act_loads};
        int64_t longs[3] = {r.chunk_cycles, r.weight_bytes, r.act_bytes};
        fwrite(ints, 4, 4, rp);
        fwrite(longs, 8, 3, rp);
    }
    fclose(rp);
    printf("%s: status %d, %d x %d -> %d, %d mismatches\n", layer_path, status, m, k, n, mismatches);
    if (status != 0) return exp_b.empty() ? 0 : 1;
    return mismatches ? 1 : 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 3 || (argc - 1) % 2) {
        fprintf(stderr, "usage: %s LAYER.bin RESULT.bin [LAYER.bin RESULT.bin ...]\n", argv[0]);
        return 2;
    }
    int worst = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        int rc = run_one(argv[i], argv[i + 1]);
        if (rc > worst) worst = rc;
    }
    return worst;
}
