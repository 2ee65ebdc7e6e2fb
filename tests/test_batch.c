// test_batch.c: multi-adapter batches (issue 4) on tests/fixtures/models/tiny_gqa.
//   (a) ops lora_shrink / lora_expand, ref, CPU and CUDA (when present), against a
//       direct fp64 sum: segments of different ranks, rows in no segment left
//       untouched; through backend memory where host_memory is 0 (ref, CUDA);
//   (b) fwd_batch: four sequences with different prompts, lengths and adapters
//       (rank 4 on all modules, rank 8 on three, none, rank 2 rsLoRA) prefilled
//       and decoded greedily in one batch give each sequence the logits and tokens
//       of running it alone; one leaves the batch early and the rest go on;
//   (c) an adapter at scale 0 gives the base's logits exactly;
//   (d) scale 0.5 gives the logits of the adapter with half its scaling;
// (a) again with F16 and BF16 A and B (a resident adapter's, read in place), and
// (b) to (d) again with the adapters resident in F16 (cpu, and ref as a backend
// without half kernels, whose copies are converted to fp32) and BF16 (ref).
// Tolerance for (b): the batch runs the base matmul over all rows at once, the
// solo run over its own rows: the same fp32 products summed in another order
// (OpenBLAS tiles vs the GEMV), ~1e-6 relative on O(1) logits; 2e-5 leaves room
// and is far below the effect of an adapter applied to the wrong rows (>1e-2,
// checked in (b) too).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/forward.h"
#include "model/model.h"
#include "infer/sample.h"
#include "testutil.h"
#include "model/lora.h"

#define ATOL 2e-5
#define RTOL 2e-5

// ---- (a) ----
// n floats of host into backend memory (a copy unless host_memory), and back.
static void *to_backend_bytes(ops *o, const void *host, size_t bytes) {
    if (o->host_memory) return (void *)host;
    void *d = o->alloc(o, bytes);
    CHECK(d);
    if (d) o->to_device(o, d, host, bytes);
    return d;
}
static float *to_backend(ops *o, const float *host, size_t n) { return to_backend_bytes(o, host, sizeof(float) * n); }

// m (n floats) rounded through type t in place, and as stored in t (a malloc'd
// copy, or m itself for F32)
static void *as_type(float *m, size_t n, dtype t) {
    if (t == DT_F32) return m;
    uint16_t *h = malloc(sizeof *h * n);
    for (size_t i = 0; i < n; i++) {
        h[i] = t == DT_F16 ? f32_to_f16(m[i]) : f32_to_bf16(m[i]);
        m[i] = t == DT_F16 ? f16_to_f32(h[i]) : bf16_to_f32(h[i]);
    }
    return h;
}
static void from_backend(ops *o, float *host, float *dev, size_t n) {
    if (o->host_memory) return;
    o->to_host(o, host, dev, sizeof(float) * n);
    o->free(o, dev);
}

// mid_rows: rows of the middle segment: 20 (CUDA: one cuBLAS call per segment)
// or 8 (every segment short: CUDA's one-launch SGMV kernels).
// halves: 0, every A and B fp32; 1, A and B of the three segments as a resident
// adapter's may be: A F16 / BF16 / F32 and B BF16 / F16 / F16 (when the backend
// reads halves)
static void test_ops(ops *o, int mid_rows, int halves) {
    enum { N = 37, IN = 24, OUT = 19 };
    uint64_t seed = 7;
    float x[N * IN], y0[N * OUT];
    for (int i = 0; i < N * IN; i++) x[i] = test_rand_uniform(&seed);
    for (int i = 0; i < N * OUT; i++) y0[i] = test_rand_uniform(&seed);
    const int ranks[3] = {4, 8, 2}, row0[3] = {0, 9, 29}, rows[3] = {5, mid_rows, 1};
    float *A[3], *B[3];
    void *hA[3], *hB[3];
    const dtype tA[3] = {DT_F16, DT_BF16, DT_F32}, tB[3] = {DT_BF16, DT_F16, DT_F16};
    lora_seg seg[3];  // host array; its A and B are in backend memory
    size_t xa_n = 0;
    for (int g = 0; g < 3; g++) {
        A[g] = malloc(sizeof(float) * (size_t)ranks[g] * IN);
        B[g] = malloc(sizeof(float) * (size_t)OUT * ranks[g]);
        for (int i = 0; i < ranks[g] * IN; i++) A[g][i] = test_rand_uniform(&seed);
        for (int i = 0; i < OUT * ranks[g]; i++) B[g][i] = test_rand_uniform(&seed);
        dtype ta = halves ? tA[g] : DT_F32, tb = halves ? tB[g] : DT_F32;
        hA[g] = as_type(A[g], (size_t)ranks[g] * IN, ta), hB[g] = as_type(B[g], (size_t)OUT * ranks[g], tb);
        seg[g] = (lora_seg){row0[g], rows[g], ranks[g], 0.5f + g,
                            to_backend_bytes(o, hA[g], dtype_size(ta) * (size_t)ranks[g] * IN),
                            to_backend_bytes(o, hB[g], dtype_size(tb) * (size_t)OUT * ranks[g]), ta, tb};
        xa_n += (size_t)rows[g] * ranks[g];
    }
    // expected, in fp64: xa packed in segment order, and y
    float want[N * OUT], *want_xa = malloc(sizeof(float) * xa_n);
    memcpy(want, y0, sizeof want);
    size_t off = 0;
    for (int g = 0; g < 3; g++)
        for (int i = row0[g]; i < row0[g] + rows[g]; i++) {
            for (int r = 0; r < ranks[g]; r++) {
                double xa = 0;
                for (int c = 0; c < IN; c++) xa += (double)x[i * IN + c] * A[g][r * IN + c];
                want_xa[off++] = (float)xa;
            }
            for (int j = 0; j < OUT; j++) {
                double acc = 0;
                for (int r = 0; r < ranks[g]; r++) {
                    double xa = 0;
                    for (int c = 0; c < IN; c++) xa += (double)x[i * IN + c] * A[g][r * IN + c];
                    acc += xa * B[g][j * ranks[g] + r];
                }
                want[i * OUT + j] = (float)(y0[i * OUT + j] + seg[g].scale * acc);
            }
        }
    float *xa = malloc(sizeof(float) * xa_n), y[N * OUT];
    for (size_t i = 0; i < xa_n; i++) xa[i] = NAN;  // each element must be written
    memcpy(y, y0, sizeof y);
    float *Dx = to_backend(o, x, (size_t)N * IN), *Dxa = to_backend(o, xa, xa_n),
          *Dy = to_backend(o, y, (size_t)N * OUT);
    o->lora_shrink(o, Dxa, Dx, seg, 3, IN);
    o->lora_expand(o, Dy, Dxa, seg, 3, OUT);
    from_backend(o, y, Dy, (size_t)N * OUT);
    from_backend(o, xa, Dxa, xa_n);
    if (!o->host_memory) o->free(o, Dx);
    char what[96];
    snprintf(what, sizeof what, "%s lora_shrink xa (packed, 3 segments, rows 5/%d/1%s)", o->name, mid_rows,
             halves ? ", F16/BF16" : "");
    check_close(what, xa, want_xa, (int64_t)xa_n, 1e-5, 1e-5);
    snprintf(what, sizeof what, "%s lora_shrink+expand (3 segments, ranks 4/8/2, rows 5/%d/1%s)", o->name, mid_rows,
             halves ? ", F16/BF16" : "");
    check_close(what, y, want, N * OUT, 1e-5, 1e-5);
    for (int i = 0; i < N; i++) {
        int in_seg = 0;
        for (int g = 0; g < 3; g++) in_seg |= i >= row0[g] && i < row0[g] + rows[g];
        if (!in_seg) CHECKF(!memcmp(y + i * OUT, y0 + i * OUT, sizeof(float) * OUT), "%s: row %d changed", o->name, i);
    }
    free(xa), free(want_xa);
    for (int g = 0; g < 3; g++) {
        if (!o->host_memory) o->free(o, (void *)seg[g].A), o->free(o, (void *)seg[g].B);
        if (hA[g] != A[g]) free(hA[g]);
        if (hB[g] != B[g]) free(hB[g]);
        free(A[g]), free(B[g]);
    }
}

// ---- (b), (c), (d) ----

enum { NSEQ = 4, GEN = 6, MAXP = 9 };

typedef struct {
    int prompt[MAXP], n_prompt, leave_after;  // decode steps before it leaves the batch
    const lora_adapter *adapter;
    float scale;
} request;

// Greedy decoding of r alone: logits (GEN+1, V) after the prompt and each new token.
static void run_solo(model *m, ops *o, const request *r, float *logits) {
    fwd_state f;
    const int V = m->cfg.vocab_size;
    CHECK_OK(fwd_init(&f, m, o, 32, 16));
    fwd_seq q = {r->n_prompt, 0, 0, r->adapter, r->scale};
    CHECK_OK(fwd_batch(&f, logits, r->prompt, &q, 1, 0));
    for (int t = 0; t < GEN; t++) {
        int next = argmax(logits + (size_t)t * V, V);
        q = (fwd_seq){1, r->n_prompt + t, 0, r->adapter, r->scale};
        CHECK_OK(fwd_batch(&f, logits + (size_t)(t + 1) * V, &next, &q, 1, 0));
    }
    fwd_free(&f);
}

// All requests in one batch: prompts together, then one token each per step;
// request i leaves after leave_after decode steps. logits[i] as in run_solo.
static void run_batch(model *m, ops *o, const request *r, float **logits) {
    fwd_state f;
    const int V = m->cfg.vocab_size;
    CHECK_OK(fwd_init_slots(&f, m, o, 32, 64, NSEQ));
    int tokens[NSEQ * MAXP], n = 0, idx[NSEQ];
    fwd_seq q[NSEQ];
    for (int i = 0; i < NSEQ; i++) {
        q[i] = (fwd_seq){r[i].n_prompt, 0, i, r[i].adapter, r[i].scale};
        memcpy(tokens + n, r[i].prompt, sizeof(int) * r[i].n_prompt);
        n += r[i].n_prompt;
    }
    float *out = malloc(sizeof(float) * NSEQ * V);
    CHECK_OK(fwd_batch(&f, out, tokens, q, NSEQ, 0));
    for (int i = 0; i < NSEQ; i++) memcpy(logits[i], out + (size_t)i * V, sizeof(float) * V);
    for (int t = 0; t < GEN; t++) {
        int ns = 0;
        for (int i = 0; i < NSEQ; i++) {
            if (t >= r[i].leave_after) continue;
            tokens[ns] = argmax(logits[i] + (size_t)t * V, V);
            q[ns] = (fwd_seq){1, r[i].n_prompt + t, i, r[i].adapter, r[i].scale};
            idx[ns++] = i;
        }
        CHECK_OK(fwd_batch(&f, out, tokens, q, ns, 0));
        for (int j = 0; j < ns; j++) memcpy(logits[idx[j]] + (size_t)(t + 1) * V, out + (size_t)j * V, sizeof(float) * V);
    }
    free(out);
    fwd_free(&f);
}

// res: DT_F32 (fp32 adapters, as training holds them) or DT_F16 / DT_BF16
// (resident, as served: lora_make_resident)
static void test_model(model *m, ops *o, dtype res) {
    const model_config *c = &m->cfg;
    const int V = c->vocab_size;
    lora_adapter a4, a8, a2;
    test_lora_random(&a4, c, 4, 8.0f, 0, LORA_ALL, 11);
    test_lora_random(&a8, c, 8, 16.0f, 0, LORA_Q | LORA_V | LORA_DOWN, 12);
    test_lora_random(&a2, c, 2, 4.0f, 1, LORA_ALL, 13);
    if (res != DT_F32) {
        CHECK_OK(lora_make_resident(&a4, res));
        CHECK_OK(lora_make_resident(&a8, res));
        CHECK_OK(lora_make_resident(&a2, res));
    }
    request r[NSEQ] = {
        {{1, 5, 9, 14, 3}, 5, GEN, &a4, 1.0f},
        {{1, 7, 2, 8, 21, 4, 6, 11, 30}, 9, 2, &a8, 1.0f},  // leaves after 2 steps
        {{1, 40, 3}, 3, GEN, NULL, 0.0f},
        {{1, 9, 9, 9, 2, 17}, 6, GEN, &a2, 0.7f},
    };
    float *solo[NSEQ], *batch[NSEQ];
    for (int i = 0; i < NSEQ; i++) {
        solo[i] = calloc((size_t)(GEN + 1) * V, sizeof(float));
        batch[i] = calloc((size_t)(GEN + 1) * V, sizeof(float));
        run_solo(m, o, &r[i], solo[i]);
    }
    run_batch(m, o, r, batch);
    char what[96];
    for (int i = 0; i < NSEQ; i++) {
        int steps = r[i].leave_after + 1;
        snprintf(what, sizeof what, "%s batch = solo, sequence %d (%d logit rows)", o->name, i, steps);
        check_close(what, batch[i], solo[i], (int64_t)steps * V, ATOL, RTOL);
        for (int t = 0; t < steps; t++)
            CHECKF(argmax(batch[i] + (size_t)t * V, V) == argmax(solo[i] + (size_t)t * V, V),
                   "%s: sequence %d step %d: greedy token differs", o->name, i, t);
    }
    // The adapters matter: each adapted sequence's solo logits differ from the base's.
    for (int i = 0; i < NSEQ; i++) {
        if (!r[i].adapter) continue;
        request b = r[i];
        b.adapter = NULL;
        float *base = calloc((size_t)(GEN + 1) * V, sizeof(float));
        run_solo(m, o, &b, base);
        double d = 0;
        for (int j = 0; j < V; j++) d = fmax(d, fabs(base[j] - solo[i][j]));
        CHECKF(d > 1e-2, "%s: sequence %d: adapter moves the first logits by only %g", o->name, i, d);
        // (c) scale 0 is the base, exactly
        b.adapter = r[i].adapter, b.scale = 0.0f;
        float *zero = calloc((size_t)(GEN + 1) * V, sizeof(float));
        run_solo(m, o, &b, zero);
        CHECKF(!memcmp(zero, base, sizeof(float) * (GEN + 1) * V), "%s: sequence %d: scale 0 differs from the base",
               o->name, i);
        free(base), free(zero);
    }
    // (d) scale 0.5 = the adapter with half its scaling
    {
        request h = r[0];
        h.scale = 0.5f;
        float *half = calloc((size_t)(GEN + 1) * V, sizeof(float)), *want = calloc((size_t)(GEN + 1) * V, sizeof(float));
        run_solo(m, o, &h, half);
        a4.scaling *= 0.5f;
        h.scale = 1.0f;
        run_solo(m, o, &h, want);
        a4.scaling *= 2.0f;
        snprintf(what, sizeof what, "%s scale 0.5 = half scaling", o->name);
        check_close(what, half, want, (int64_t)(GEN + 1) * V, 0, 0);
        free(half), free(want);
    }
    for (int i = 0; i < NSEQ; i++) free(solo[i]), free(batch[i]);
    lora_free(&a4), lora_free(&a8), lora_free(&a2);
}

static void test_bad(model *m, ops *o) {
    fwd_state f;
    CHECK_OK(fwd_init_slots(&f, m, o, 8, 8, 2));
    int tok[4] = {1, 2, 3, 4};
    float *logits = malloc(sizeof(float) * 4 * m->cfg.vocab_size);
    fwd_seq same[2] = {{2, 0, 1, NULL, 0}, {2, 0, 1, NULL, 0}};
    CHECK(fwd_batch(&f, logits, tok, same, 2, 0) == QL_EINVAL);
    CHECK(strstr(ql_errmsg(), "share slot 1"));
    fwd_seq far[1] = {{2, 7, 0, NULL, 0}};
    CHECK(fwd_batch(&f, logits, tok, far, 1, 0) == QL_EINVAL);
    fwd_seq slot[1] = {{1, 0, 2, NULL, 0}};
    CHECK(fwd_batch(&f, logits, tok, slot, 1, 0) == QL_EINVAL);
    fwd_seq three[3] = {{1, 0, 0, NULL, 0}, {1, 0, 1, NULL, 0}, {1, 0, 1, NULL, 0}};
    CHECK(fwd_batch(&f, logits, tok, three, 3, 0) == QL_EINVAL);
    free(logits);
    fwd_free(&f);
}

int main(void) {
    ops *ref = ops_ref_new(), *cpu = ops_cpu_new(0);
    CHECK(ref && cpu);
    for (int h = 0; h < 2; h++) {
        test_ops(ref, 20, h), test_ops(ref, 8, h);
        test_ops(cpu, 20, h), test_ops(cpu, 8, h);
    }
    ops *cu = ops_cuda_new(0);
    if (cu) test_ops(cu, 20, 0), test_ops(cu, 8, 0), ops_delete(cu);
    else fprintf(stderr, "cuda: not available (%s); lora_shrink+expand on cuda skipped\n", ql_errmsg());
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/tiny_gqa", test_source_dir());
    model m;
    CHECK_OK(model_load(&m, dir, DT_F32));
    test_model(&m, cpu, DT_F32);
    test_model(&m, ref, DT_F32);
    test_model(&m, cpu, DT_F16);
    test_model(&m, ref, DT_BF16);
    ops ref_fp32 = *ref;  // a backend without half kernels (as cuda): its copies are converted to fp32
    ref_fp32.lora_half = 0;
    test_model(&m, &ref_fp32, DT_F16);
    test_bad(&m, cpu);
    model_free(&m);
    ops_delete(ref), ops_delete(cpu);
    return test_finish("test_batch");
}
