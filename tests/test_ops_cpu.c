// test_ops_cpu.c: the CPU backend's element-wise ops, RoPE and attention against
// the plain-C reference (kernels/ref), in the style of ggml's test-backend-ops:
// each case prints a descriptor, inputs are random (never zero), outputs are
// poisoned before the run and guard floats after them must survive.
// (matmul has its own table: tests/test_matmul_cpu.c.)
//
// Tolerances: atol 1e-5, rtol 1e-4 for all ops here. The CPU versions differ
// from the reference only by fp32 vs double accumulation over at most a few
// thousand terms of size ~1 (relative error ~1e-6); a wrong index or mask
// shows up as an O(1) difference.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/ops.h"
#include "testutil.h"

#define GUARD 16
static const float POISON = 1e30f;

static uint64_t rng = 42;

static float *buf(size_t n, int random) {
    float *p = malloc(sizeof(float) * (n + GUARD));
    for (size_t i = 0; i < n + GUARD; i++) p[i] = random && i < n ? test_rand_normal(&rng) : POISON;
    return p;
}

static void guards(const char *what, const float *p, size_t n) {
    for (size_t i = n; i < n + GUARD; i++)
        if (p[i] != POISON) { CHECKF(0, "%s: write past the end at +%zu", what, i - n); return; }
}

static const char *filter;
static int want(const char *d) { return !filter || strstr(d, filter); }

static void case_rmsnorm(ops *cpu, ops *ref, int N, int C) {
    char d[128];
    snprintf(d, sizeof d, "rmsnorm(N=%d,C=%d)", N, C);
    if (!want(d)) return;
    float *x = buf((size_t)N * C, 1), *w = buf((size_t)C, 1), *a = buf((size_t)N * C, 0), *b = buf((size_t)N * C, 0);
    cpu->rmsnorm(cpu, a, x, w, N, C, 1e-5f);
    ref->rmsnorm(ref, b, x, w, N, C, 1e-5f);
    check_close(d, a, b, (int64_t)N * C, 1e-5, 1e-4);
    guards(d, a, (size_t)N * C);
    free(x), free(w), free(a), free(b);
}

static void case_rope(ops *cpu, ops *ref, int N, int H, int D, int T0) {
    char d[128];
    snprintf(d, sizeof d, "rope(N=%d,H=%d,D=%d,T0=%d)", N, H, D, T0);
    if (!want(d)) return;
    size_t n = (size_t)N * H * D;
    float *a = buf(n, 1), *b = malloc(sizeof(float) * (n + GUARD)), *inv = malloc(sizeof(float) * (size_t)(D / 2));
    memcpy(b, a, sizeof(float) * (n + GUARD));
    int *pos = malloc(sizeof(int) * (size_t)N);
    for (int i = 0; i < N; i++) pos[i] = T0 + i;
    for (int i = 0; i < D / 2; i++) inv[i] = (float)(1.0 / pow(10000.0, 2.0 * i / D));
    cpu->rope(cpu, a, pos, N, H, D, inv);
    ref->rope(ref, b, pos, N, H, D, inv);
    // positions up to ~4000 radians: fp32 angles (as Hugging Face computes them) carry
    // ~4000 * 6e-8 = 2.4e-4 absolute error in the angle, so atol 1e-3 here.
    check_close(d, a, b, (int64_t)n, T0 > 100 ? 1e-3 : 1e-5, 1e-4);
    guards(d, a, n);
    free(a), free(b), free(inv), free(pos);
}

static void case_attention(ops *cpu, ops *ref, int N, int T0, int H, int Hkv, int D) {
    char d[128];
    snprintf(d, sizeof d, "attention(N=%d,T0=%d,H=%d,Hkv=%d,D=%d)", N, T0, H, Hkv, D);
    if (!want(d)) return;
    int T = T0 + N;
    size_t nq = (size_t)N * H * D, nk = (size_t)T * Hkv * D;
    float *q = buf(nq, 1), *k = buf(nk, 1), *v = buf(nk, 1), *a = buf(nq, 0), *b = buf(nq, 0);
    cpu->attention(cpu, a, q, k, v, N, T0, H, Hkv, D);
    ref->attention(ref, b, q, k, v, N, T0, H, Hkv, D);
    check_close(d, a, b, (int64_t)nq, 1e-5, 1e-4);
    guards(d, a, nq);
    free(q), free(k), free(v), free(a), free(b);
}

static void case_elementwise(ops *cpu, ops *ref, int n) {
    char d[128];
    snprintf(d, sizeof d, "swiglu+add(n=%d)", n);
    if (!want(d)) return;
    float *g = buf((size_t)n, 1), *u = buf((size_t)n, 1), *a = buf((size_t)n, 0), *b = buf((size_t)n, 0);
    cpu->swiglu(cpu, a, g, u, n);
    ref->swiglu(ref, b, g, u, n);
    check_close(d, a, b, n, 1e-5, 1e-4);
    guards(d, a, (size_t)n);
    cpu->add(cpu, a, g, n);
    ref->add(ref, b, g, n);
    check_close(d, a, b, n, 1e-5, 1e-4);
    free(g), free(u), free(a), free(b);
}

static void case_embed(ops *cpu, ops *ref, dtype t) {
    char d[128];
    snprintf(d, sizeof d, "embed(V=50,C=72,%s)", t == DT_F32 ? "f32" : t == DT_F16 ? "f16" : "bf16");
    if (!want(d)) return;
    int V = 50, C = 72, N = 5, tok[5] = {0, 49, 7, 7, 13};
    float *src = buf((size_t)V * C, 1), *a = buf((size_t)N * C, 0), *b = buf((size_t)N * C, 0);
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)V * C);
    for (int i = 0; i < V * C; i++) h[i] = t == DT_F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
    qweight w = {.type = t, .rows = V, .cols = C, .data = t == DT_F32 ? (void *)src : (void *)h};
    cpu->embed(cpu, a, &w, tok, N);
    ref->embed(ref, b, &w, tok, N);
    check_close(d, a, b, (int64_t)N * C, 0, 0);  // a copy: exact
    guards(d, a, (size_t)N * C);
    free(src), free(a), free(b), free(h);
}

int main(int argc, char **argv) {
    filter = argc > 1 ? argv[1] : NULL;
    ops *cpu = ops_cpu_new(0), *ref = ops_ref_new();
    CHECK(cpu && ref);
    if (!cpu || !ref) return test_finish("test_ops_cpu");
    int shapes[][2] = {{1, 64}, {3, 172}, {17, 65}, {64, 2048}};
    for (int i = 0; i < 4; i++) case_rmsnorm(cpu, ref, shapes[i][0], shapes[i][1]);
    case_rope(cpu, ref, 1, 4, 8, 0);
    case_rope(cpu, ref, 7, 6, 16, 3);
    case_rope(cpu, ref, 3, 2, 128, 4000);
    case_attention(cpu, ref, 1, 0, 4, 4, 8);
    case_attention(cpu, ref, 12, 0, 6, 2, 16);
    case_attention(cpu, ref, 1, 37, 8, 4, 8);
    case_attention(cpu, ref, 5, 7, 6, 2, 16);
    case_attention(cpu, ref, 2, 1000, 4, 1, 128);
    case_elementwise(cpu, ref, 1);
    case_elementwise(cpu, ref, 1000);
    case_embed(cpu, ref, DT_F32);
    case_embed(cpu, ref, DT_F16);
    case_embed(cpu, ref, DT_BF16);
    ops_delete(cpu);
    ops_delete(ref);
    return test_finish("test_ops_cpu");
}
