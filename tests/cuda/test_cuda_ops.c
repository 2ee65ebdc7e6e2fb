// test_cuda_ops.c: the inference ops of the CUDA backend against the plain-C
// reference (kernels/ref), in the style of ggml's test-backend-ops. (The training
// ops, the optimizer and LoRA shrink/expand are checked, on every backend present,
// CUDA included, by tests/test_grad.c and tests/test_batch.c; whole training runs
// and batches by tests/cuda/test_cuda_train.c.) Each case prints its
// descriptor, e.g. matmul(N=1,rows=172,cols=64,nf4), runs the op on both
// backends with the same random inputs (none zero), and compares with the one
// tolerance rule (testutil.h) using the table below. Device outputs are
// poisoned with NaN before the op, so an element it never writes fails, and
// sit between guard bytes that must come back untouched.
//
//   test_cuda_ops [filter]   runs the cases whose descriptor contains filter
//
// Returns 77 (skipped) when there is no GPU or the build has no CUDA; fails
// when a GPU is present but the backend cannot start.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"
#include "tests/testutil.h"
#ifdef QLORA_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#define GUARD 256         // bytes of guard before and after every device buffer
#define POISON 0xFF       // guard and poison byte: 0xFFFFFFFF is a NaN
#define TINY_TILE "12288" // QLORA_CUDA_TILE_BYTES of the "tiled" backend: a few rows per tile

// ---- tolerances: accept |got-ref| <= atol + rtol*|ref| ----
// Inputs are scaled so outputs are O(1): x, q, k, v uniform in [-1,1), weights
// N(0, 1/cols), so matmul outputs have rms ~0.6 whatever cols is.
typedef struct {
    const char *op, *prec;
    double atol, rtol;
} tolerance;

static const tolerance TOLERANCES[] = {
    // Copying table rows, or dequantizing them through the NF4 tables (fp32, no FMA,
    // as in nf4.c), is exact.
    {"embed", "any", 0, 0},
    // One fp32 addition per element, the same rounding on both sides.
    {"add", "any", 0, 0},
    // GEMV (N <= OPS_CUDA_GEMV_MAX_N): exact weights, fp32 x, fp32 accumulation in
    // another order than the reference's double sum: a few hundred roundings of
    // O(1) partial sums at 2^-24 each, ~1e-6 at most.
    {"matmul", "gemv", 2e-5, 2e-5},
    // N > OPS_CUDA_GEMV_MAX_N, F32 weights: SGEMM in fp32 (no TF32): as the GEMV.
    {"matmul", "tc-f32", 2e-5, 2e-5},
    // N > OPS_CUDA_GEMV_MAX_N, F16/NF4: x rounded to fp16 and NF4 weights rounded to
    // fp16, relative 2^-11 each, random in sign: ~2.3e-4 rms error at |out| ~ 0.6.
    // Emulating that rounding on the CPU for these shapes gives at most 4.6e-4
    // (F16) and 8e-4 (NF4); a wrong element is off by O(0.5).
    {"matmul", "tc-f16", 3e-3, 3e-3},
    // N > OPS_CUDA_GEMV_MAX_N, BF16: x rounded to bf16 (relative 2^-9), 4x coarser;
    // the CPU emulation gives at most 3.5e-3.
    {"matmul", "tc-bf16", 8e-3, 8e-3},
    // fp32 tree sum of squares against a double sum moves 1/rms by ~1e-6 relative;
    // then two fp32 products as in the reference.
    {"rmsnorm", "any", 1e-6, 1e-5},
    // The same double arithmetic as the reference; CUDA's double sin/cos may differ
    // from libm by an ulp of double, which moves the fp32 result by at most one of
    // its ulps near a rounding tie (atol for results that cancel to near zero).
    {"rope", "any", 1e-9, 3e-7},
    // fp32 dot products (D <= 256 terms), expf within 2 ulp, fp32 sums of up to a
    // few thousand probabilities; the output is a convex combination of |v| <= 1.
    {"attention", "any", 1e-5, 1e-4},
    // fp32 expf (2 ulp), one addition, one division, one product against double.
    {"swiglu", "any", 1e-8, 1e-6},
};

static const tolerance *tolerance_of(const char *op, const char *prec) {
    for (size_t i = 0; i < sizeof TOLERANCES / sizeof TOLERANCES[0]; i++)
        if (!strcmp(TOLERANCES[i].op, op) && (!strcmp(TOLERANCES[i].prec, "any") || !strcmp(TOLERANCES[i].prec, prec)))
            return &TOLERANCES[i];
    fprintf(stderr, "no tolerance for (%s, %s)\n", op, prec);
    abort();
}

// ---- cases ----

typedef enum { OP_MATMUL, OP_EMBED, OP_RMSNORM, OP_ROPE, OP_ATTENTION, OP_SWIGLU, OP_ADD } op_kind;

typedef struct {
    op_kind op;
    int N;              // tokens: matmul, embed, rmsnorm, rope, attention
    int rows, cols;     // matmul: W (rows,cols); embed: table (V,C)
    dtype wt;           // matmul, embed
    int xoff;           // matmul: x starts this many floats past a 256-byte boundary
    int tiled;          // matmul: run on a backend with a tiny dequantization tile
    int C;              // rmsnorm
    int T0, H, Hkv, D;  // rope (H, D), attention
    int n;              // swiglu, add
} op_case;

#define MAX_CASES 512
static op_case cases[MAX_CASES];
static int ncases;

static void add_case(op_case c) {
    if (ncases == MAX_CASES) { fprintf(stderr, "MAX_CASES too small\n"); abort(); }
    cases[ncases++] = c;
}

static const char *wt_name(dtype t) {
    switch (t) {
    case DT_F32: return "f32";
    case DT_F16: return "f16";
    case DT_BF16: return "bf16";
    case DT_NF4: return "nf4";
    default: return "?";
    }
}

static void describe(const op_case *c, char *buf, size_t len) {
    switch (c->op) {
    case OP_MATMUL:
        snprintf(buf, len, "matmul(N=%d,rows=%d,cols=%d,%s%s%s)", c->N, c->rows, c->cols, wt_name(c->wt),
                 c->xoff ? ",x+1" : "", c->tiled ? ",tiled" : "");
        break;
    case OP_EMBED: snprintf(buf, len, "embed(N=%d,V=%d,C=%d,%s)", c->N, c->rows, c->cols, wt_name(c->wt)); break;
    case OP_RMSNORM: snprintf(buf, len, "rmsnorm(N=%d,C=%d)", c->N, c->C); break;
    case OP_ROPE: snprintf(buf, len, "rope(N=%d,H=%d,D=%d)", c->N, c->H, c->D); break;
    case OP_ATTENTION:
        snprintf(buf, len, "attention(N=%d,T0=%d,H=%d,Hkv=%d,D=%d)", c->N, c->T0, c->H, c->Hkv, c->D);
        break;
    case OP_SWIGLU: snprintf(buf, len, "swiglu(n=%d)", c->n); break;
    case OP_ADD: snprintf(buf, len, "add(n=%d)", c->n); break;
    }
}

static void build_cases(void) {
    static const dtype types[] = {DT_F32, DT_F16, DT_BF16, DT_NF4};
    // matmul (N, rows, cols, xoff, tiled). With 16-byte chunks the fast GEMV needs
    // cols % 32 (NF4), % 8 (F16/BF16), % 4 (F32) and an aligned x; the rest take the
    // general kernel. NF4 absmax blocks of 64 span rows when cols % 64 != 0.
    static const int mm[][5] = {
        {1, 172, 64, 0, 0},    // many rows, one absmax block per row
        {1, 64, 172, 0, 0},    // blocks span rows; general kernel for NF4/F16/BF16
        {3, 5, 65, 0, 0},      // odd cols: rows start mid-byte
        {1, 1, 4096, 0, 0},    // one row
        {1, 3, 1, 0, 0},       // one column
        {2, 301, 96, 0, 0},    // cols % 64 == 32; a partial last block of rows
        {4, 37, 256, 0, 0},    // 4 rows per block, 37 % 4 != 0
        {5, 37, 256, 0, 0},    // 2 rows per block
        {6, 7, 32, 0, 0},      // one chunk per row
        {7, 19, 160, 0, 0},
        {8, 33, 512, 0, 0},
        {2, 64, 11008, 0, 0},  // several chunks per thread (down_proj width)
        {3, 40, 4096, 0, 0},
        {2, 64, 128, 1, 0},    // unaligned x: general kernel
        {9, 70, 128, 0, 0},    // tensor cores from here on
        {16, 1, 64, 0, 0},     // one row
        {33, 301, 96, 0, 0},
        {17, 33, 172, 0, 0},   // element-wise dequantization
        {13, 5, 65, 0, 0},
        {64, 256, 512, 0, 0},
        {12, 40, 64, 1, 0},    // unaligned x
        {16, 300, 96, 0, 1},   // several tiles, the last one partial
        {12, 300, 172, 0, 1},  // tiles of an odd number of rows, element-wise
        {10, 7, 4096, 0, 1},   // one row per tile
    };
    for (size_t i = 0; i < sizeof mm / sizeof mm[0]; i++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            // tiles are used by NF4 (and BF16 before sm_80) only
            if (mm[i][4] && types[t] != DT_NF4 && types[t] != DT_BF16) continue;
            add_case((op_case){.op = OP_MATMUL, .N = mm[i][0], .rows = mm[i][1], .cols = mm[i][2], .wt = types[t],
                               .xoff = mm[i][3], .tiled = mm[i][4]});
        }
    static const int em[][3] = {{5, 100, 64}, {3, 37, 65}, {1, 2, 172}, {7, 1000, 4096}};
    for (size_t i = 0; i < sizeof em / sizeof em[0]; i++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
            add_case((op_case){.op = OP_EMBED, .N = em[i][0], .rows = em[i][1], .cols = em[i][2], .wt = types[t]});
    static const int rn[][2] = {{1, 4096}, {3, 65}, {7, 1}, {2, 11008}, {5, 172}};
    for (size_t i = 0; i < sizeof rn / sizeof rn[0]; i++) add_case((op_case){.op = OP_RMSNORM, .N = rn[i][0], .C = rn[i][1]});
    static const int rp[][3] = {{1, 1, 2}, {5, 6, 16}, {3, 32, 128}, {2, 3, 80}, {1, 8, 64}};
    for (size_t i = 0; i < sizeof rp / sizeof rp[0]; i++)
        add_case((op_case){.op = OP_ROPE, .N = rp[i][0], .H = rp[i][1], .D = rp[i][2]});
    static const int at[][5] = {
        {1, 0, 1, 1, 16},     // one key
        {5, 7, 6, 2, 16},     // groups of 3 query heads
        {1, 999, 8, 2, 128},  // decode at T = 1000
        {17, 0, 4, 4, 64},    // prefill, no GQA
        {3, 1000, 2, 1, 80},
        {2, 2100, 2, 2, 128}, // T > one chunk of keys (2048): online rescaling
        {4, 3, 3, 3, 6},      // D % 4 != 0: scalar key loads
        {1, 5, 4, 1, 256},    // largest head dim
        {33, 0, 2, 1, 32},
    };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        add_case((op_case){.op = OP_ATTENTION, .N = at[i][0], .T0 = at[i][1], .H = at[i][2], .Hkv = at[i][3],
                           .D = at[i][4]});
    static const int el[] = {1, 4097, (1 << 20) + 3};
    for (size_t i = 0; i < sizeof el / sizeof el[0]; i++) add_case((op_case){.op = OP_SWIGLU, .n = el[i]});
    for (size_t i = 0; i < sizeof el / sizeof el[0]; i++) add_case((op_case){.op = OP_ADD, .n = el[i]});
}

// ---- inputs ----

static uint64_t seed_of(const char *s) {  // FNV-1a: each case its own inputs
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h | 1;
}

// n values uniform in [-scale, scale), none zero
static float *rand_nonzero(int64_t n, float scale, uint64_t *seed) {
    float *v = mallocCheck(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        float u = test_rand_uniform(seed);
        if (fabsf(u) < 1e-3f) u = u < 0 ? -1e-3f : 1e-3f;
        v[i] = u * scale;
    }
    return v;
}

// ---- device buffers with guards ----

typedef struct {
    ops *o;
    unsigned char *base;  // device: GUARD, bytes, GUARD
    size_t bytes;
} dev_buf;

// A poisoned buffer (every byte POISON); returns the address past the front guard.
static void *dev_buf_new(dev_buf *b, ops *o, size_t bytes) {
    b->o = o;
    b->bytes = bytes;
    const size_t total = bytes + 2 * GUARD;
    b->base = o->alloc(o, total);
    if (!b->base) {
        fprintf(stderr, "device alloc of %zu bytes failed: %s\n", total, ql_errmsg());
        abort();
    }
    unsigned char *p = mallocCheck(total);
    memset(p, POISON, total);
    o->to_device(o, b->base, p, total);
    free(p);
    return b->base + GUARD;
}

static void dev_buf_set(dev_buf *b, size_t offset, const void *host, size_t bytes) {
    b->o->to_device(b->o, b->base + GUARD + offset, host, bytes);
}

// Copies the buffer back into host (bytes) and checks both guards.
static void dev_buf_get(dev_buf *b, void *host, const char *what) {
    const size_t total = b->bytes + 2 * GUARD;
    unsigned char *p = mallocCheck(total);
    b->o->to_host(b->o, p, b->base, total);
    size_t bad = 0;
    for (size_t i = 0; i < GUARD; i++) bad += (p[i] != POISON) + (p[GUARD + b->bytes + i] != POISON);
    CHECKF(bad == 0, "%s: %zu guard bytes around the output were overwritten", what, bad);
    memcpy(host, p + GUARD, b->bytes);
    free(p);
}

static void dev_buf_free(dev_buf *b) { b->o->free(b->o, b->base); }

// Uploads host data into a fresh guarded buffer and returns its device address.
static void *dev_upload(dev_buf *b, ops *o, const void *host, size_t bytes) {
    void *d = dev_buf_new(b, o, bytes);
    dev_buf_set(b, 0, host, bytes);
    return d;
}

// ---- running one case ----

typedef struct {
    ops *cuda, *cuda_tiled, *ref;
} backends;

static void compare(const char *desc, const char *op, const char *prec, const float *got, const float *want, int64_t n) {
    const tolerance *t = tolerance_of(op, prec);
    check_close(desc, got, want, n, t->atol, t->rtol);
}

static void run_matmul(const op_case *c, const char *desc, ops *cu, ops *ref, uint64_t *seed) {
    const int N = c->N, rows = c->rows, cols = c->cols;
    test_weight tw;
    test_weight_init(&tw, c->wt, rows, cols, 1.0f / sqrtf((float)cols), seed);  // N(0, 1/cols)
    float *x = rand_nonzero((int64_t)N * cols, 1.0f, seed);
    float *want = mallocCheck(sizeof(float) * (size_t)N * rows), *got = mallocCheck(sizeof(float) * (size_t)N * rows);
    ref->matmul(ref, want, x, &tw.w, N);

    qweight w = tw.w;
    w.dev = NULL;
    int rc = cu->weight_upload(cu, &w);
    CHECKF(rc == QL_OK, "%s: weight_upload: %s", desc, ql_errmsg());
    if (rc == QL_OK) {
        dev_buf bx, bo;
        float *dx = (float *)dev_buf_new(&bx, cu, sizeof(float) * ((size_t)N * cols + c->xoff)) + c->xoff;
        dev_buf_set(&bx, sizeof(float) * c->xoff, x, sizeof(float) * (size_t)N * cols);
        float *dout = dev_buf_new(&bo, cu, sizeof(float) * (size_t)N * rows);
        cu->matmul(cu, dout, dx, &w, N);
        dev_buf_get(&bo, got, desc);
        const char *prec = N <= OPS_CUDA_GEMV_MAX_N ? "gemv"
                           : c->wt == DT_F32        ? "tc-f32"
                           : c->wt == DT_BF16       ? "tc-bf16"
                                                    : "tc-f16";
        compare(desc, "matmul", prec, got, want, (int64_t)N * rows);
        dev_buf_free(&bx);
        dev_buf_free(&bo);
        cu->weight_release(cu, &w);
        CHECK(w.dev == NULL);
    }
    test_weight_free(&tw);
    free(x);
    free(want);
    free(got);
}

static void run_embed(const op_case *c, const char *desc, ops *cu, ops *ref, uint64_t *seed) {
    const int N = c->N, V = c->rows, C = c->cols;
    test_weight tw;
    test_weight_init(&tw, c->wt, V, C, 1.0f / sqrtf((float)C), seed);
    int *tokens = mallocCheck(sizeof(int) * (size_t)N);
    for (int i = 0; i < N; i++) tokens[i] = (int)(test_rand_u64(seed) % (uint64_t)V);
    tokens[0] = V - 1;  // both ends of the table
    if (N > 1) tokens[N - 1] = 0;
    float *want = mallocCheck(sizeof(float) * (size_t)N * C), *got = mallocCheck(sizeof(float) * (size_t)N * C);
    ref->embed(ref, want, &tw.w, tokens, N);
    qweight w = tw.w;
    w.dev = NULL;
    int rc = cu->weight_upload(cu, &w);
    CHECKF(rc == QL_OK, "%s: weight_upload: %s", desc, ql_errmsg());
    if (rc == QL_OK) {
        dev_buf bo;
        float *dout = dev_buf_new(&bo, cu, sizeof(float) * (size_t)N * C);
        cu->embed(cu, dout, &w, tokens, N);
        dev_buf_get(&bo, got, desc);
        compare(desc, "embed", wt_name(c->wt), got, want, (int64_t)N * C);
        dev_buf_free(&bo);
        cu->weight_release(cu, &w);
    }
    test_weight_free(&tw);
    free(tokens);
    free(want);
    free(got);
}

static void run_rmsnorm(const op_case *c, const char *desc, ops *cu, ops *ref, uint64_t *seed) {
    const int N = c->N, C = c->C;
    const int64_t n = (int64_t)N * C;
    const float eps = 1e-5f;
    float *x = rand_nonzero(n, 2.0f, seed), *w = rand_nonzero(C, 1.0f, seed);
    float *want = mallocCheck(sizeof(float) * (size_t)n), *got = mallocCheck(sizeof(float) * (size_t)n);
    ref->rmsnorm(ref, want, x, w, N, C, eps);
    dev_buf bx, bw, bo;
    float *dx = dev_upload(&bx, cu, x, sizeof(float) * (size_t)n), *dw = dev_upload(&bw, cu, w, sizeof(float) * C);
    float *dout = dev_buf_new(&bo, cu, sizeof(float) * (size_t)n);
    cu->rmsnorm(cu, dout, dx, dw, N, C, eps);
    dev_buf_get(&bo, got, desc);
    compare(desc, "rmsnorm", "f32", got, want, n);
    // in place (out == x), as the model may call it
    cu->rmsnorm(cu, dx, dx, dw, N, C, eps);
    dev_buf_get(&bx, got, desc);
    char what[160];
    snprintf(what, sizeof what, "%s in place", desc);
    compare(what, "rmsnorm", "f32", got, want, n);
    dev_buf_free(&bx);
    dev_buf_free(&bw);
    dev_buf_free(&bo);
    free(x);
    free(w);
    free(want);
    free(got);
}

static void run_rope(const op_case *c, const char *desc, ops *cu, ops *ref, uint64_t *seed) {
    const int N = c->N, H = c->H, D = c->D;
    const int64_t n = (int64_t)N * H * D;
    float *x = rand_nonzero(n, 1.0f, seed), *want = mallocCheck(sizeof(float) * (size_t)n),
          *got = mallocCheck(sizeof(float) * (size_t)n);
    int *pos = mallocCheck(sizeof(int) * (size_t)N);
    float *inv_freq = mallocCheck(sizeof(float) * (size_t)(D / 2));
    for (int i = 0; i < N; i++) pos[i] = (int)(test_rand_u64(seed) % 4096);
    pos[0] = N > 1 ? 0 : 4095;
    for (int i = 0; i < D / 2; i++) inv_freq[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)D);
    memcpy(want, x, sizeof(float) * (size_t)n);
    ref->rope(ref, want, pos, N, H, D, inv_freq);
    dev_buf bx;
    float *dx = dev_upload(&bx, cu, x, sizeof(float) * (size_t)n);
    cu->rope(cu, dx, pos, N, H, D, inv_freq);
    dev_buf_get(&bx, got, desc);
    compare(desc, "rope", "f32", got, want, n);
    dev_buf_free(&bx);
    free(x);
    free(want);
    free(got);
    free(pos);
    free(inv_freq);
}

static void run_attention(const op_case *c, const char *desc, ops *cu, ops *ref, uint64_t *seed) {
    const int N = c->N, T = c->T0 + c->N, H = c->H, Hkv = c->Hkv, D = c->D;
    const int64_t nq = (int64_t)N * H * D, nkv = (int64_t)T * Hkv * D;
    float *q = rand_nonzero(nq, 1.0f, seed), *k = rand_nonzero(nkv, 1.0f, seed), *v = rand_nonzero(nkv, 1.0f, seed);
    float *want = mallocCheck(sizeof(float) * (size_t)nq), *got = mallocCheck(sizeof(float) * (size_t)nq);
    ref->attention(ref, want, q, k, v, N, c->T0, H, Hkv, D);
    dev_buf bq, bk, bv, bo;
    float *dq = dev_upload(&bq, cu, q, sizeof(float) * (size_t)nq), *dk = dev_upload(&bk, cu, k, sizeof(float) * (size_t)nkv),
          *dv = dev_upload(&bv, cu, v, sizeof(float) * (size_t)nkv);
    float *dout = dev_buf_new(&bo, cu, sizeof(float) * (size_t)nq);
    cu->attention(cu, dout, dq, dk, dv, N, c->T0, H, Hkv, D);
    dev_buf_get(&bo, got, desc);
    compare(desc, "attention", "f32", got, want, nq);
    dev_buf_free(&bq);
    dev_buf_free(&bk);
    dev_buf_free(&bv);
    dev_buf_free(&bo);
    free(q);
    free(k);
    free(v);
    free(want);
    free(got);
}

static void run_elementwise(const op_case *c, const char *desc, ops *cu, ops *ref, uint64_t *seed) {
    const int n = c->n;
    float *a = rand_nonzero(n, c->op == OP_SWIGLU ? 8.0f : 1.0f, seed), *b = rand_nonzero(n, 1.0f, seed);
    float *want = mallocCheck(sizeof(float) * (size_t)n), *got = mallocCheck(sizeof(float) * (size_t)n);
    dev_buf ba, bb, bo;
    float *da = dev_upload(&ba, cu, a, sizeof(float) * (size_t)n), *db = dev_upload(&bb, cu, b, sizeof(float) * (size_t)n);
    if (c->op == OP_SWIGLU) {
        ref->swiglu(ref, want, a, b, n);
        float *dout = dev_buf_new(&bo, cu, sizeof(float) * (size_t)n);
        cu->swiglu(cu, dout, da, db, n);
        dev_buf_get(&bo, got, desc);
        compare(desc, "swiglu", "f32", got, want, n);
        dev_buf_free(&bo);
    } else {
        memcpy(want, a, sizeof(float) * (size_t)n);
        ref->add(ref, want, b, n);
        cu->add(cu, da, db, n);
        dev_buf_get(&ba, got, desc);
        compare(desc, "add", "f32", got, want, n);
    }
    dev_buf_free(&ba);
    dev_buf_free(&bb);
    free(a);
    free(b);
    free(want);
    free(got);
}

static void run_case(const op_case *c, const char *desc, backends *be) {
    uint64_t seed = seed_of(desc);
    ops *cu = be->cuda;
    if (c->op == OP_MATMUL && c->tiled) {
        if (!be->cuda_tiled) {
            setenv("QLORA_CUDA_TILE_BYTES", TINY_TILE, 1);
            be->cuda_tiled = ops_cuda_new(0);
            unsetenv("QLORA_CUDA_TILE_BYTES");
            CHECKF(be->cuda_tiled != NULL, "ops_cuda_new with QLORA_CUDA_TILE_BYTES=%s: %s", TINY_TILE, ql_errmsg());
            if (!be->cuda_tiled) return;
        }
        cu = be->cuda_tiled;
    }
    switch (c->op) {
    case OP_MATMUL: run_matmul(c, desc, cu, be->ref, &seed); break;
    case OP_EMBED: run_embed(c, desc, cu, be->ref, &seed); break;
    case OP_RMSNORM: run_rmsnorm(c, desc, cu, be->ref, &seed); break;
    case OP_ROPE: run_rope(c, desc, cu, be->ref, &seed); break;
    case OP_ATTENTION: run_attention(c, desc, cu, be->ref, &seed); break;
    case OP_SWIGLU:
    case OP_ADD: run_elementwise(c, desc, cu, be->ref, &seed); break;
    }
}

// 77 when there is no GPU; a failure when there is one and the backend did not start.
static int no_backend(void) {
#ifdef QLORA_HAVE_CUDA
    int count = 0;
    if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) {
        fprintf(stderr, "test_cuda_ops: %d CUDA device(s) present but ops_cuda_new(0) failed: %s\n", count,
                ql_errmsg());
        return 1;
    }
#endif
    fprintf(stderr, "test_cuda_ops: skipped: %s\n", ql_errmsg());
    return TEST_SKIP;
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    setenv("QLORA_CUDA_SYNC", "1", 0);  // a faulting kernel is reported at its own launch
    backends be = {0};
    be.cuda = ops_cuda_new(0);
    if (!be.cuda) return no_backend();
    be.ref = ops_ref_new();
    QL_ASSERT(be.ref);

    build_cases();
    int run = 0;
    for (int i = 0; i < ncases; i++) {
        char desc[128];
        describe(&cases[i], desc, sizeof desc);
        if (filter && !strstr(desc, filter)) continue;
        run_case(&cases[i], desc, &be);
        run++;
    }
    fprintf(stderr, "test_cuda_ops: %d of %d cases run%s%s\n", run, ncases, filter ? " matching " : "",
            filter ? filter : "");
    CHECKF(run > 0, "no case matches '%s'", filter ? filter : "");
    ops_delete(be.cuda_tiled);
    ops_delete(be.cuda);
    ops_delete(be.ref);
    return test_finish("test_cuda_ops");
}
