// test_grad.c: the training ops of kernels/ops.h, checked twice.
//
// 1. Finite differences, fp64, tiny shapes: for each op the fp64 reference
//    (kernels/ref/grad_ref.h, the same ref64_* functions the "ref" table wraps)
//    evaluates L = sum(g * forward(inputs)) with a random g; every input element
//    is moved by +-h and (L+ - L-)/(2h) must equal the analytic backward.
//    h = 1e-6: the truncation error is ~h^2/6 * |f'''| ~ 1e-13; the rounding
//    error is ~ eps64 * sum|g*f| / (2h) ~ 2e-16 * 50 / 2e-6 ~ 5e-9 for these
//    shapes. So atol 1e-7, rtol 1e-6 (a wrong term is O(0.1..1)).
// 2. Every backend in this binary (ref, cpu, and cuda when a GPU is present)
//    against the fp64 reference on fp32 inputs, through backend memory (alloc,
//    to_device, to_host; guards copied too) wherever host_memory is 0 (ref,
//    cuda), in the style of tests/test_ops_cpu.c: a descriptor per case,
//    outputs poisoned (or, for += outputs, random and checked as init + delta),
//    guard floats after every output, NaN/Inf fails (check_close), awkward
//    shapes (N=1, R=1, C=13, NF4 cols=172 with blocks spanning rows, a W
//    larger than one dequantization tile), and the optimizer's ops (zero,
//    sumsq, adamw) and dropout, which must be bit-exact.
//    fp32 tolerances (reason per op at the call).
// Usage: test_grad [filter]   (substring of the case descriptor)
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/err.h"
#include "kernels/ops.h"
#include "kernels/ref/grad_ref.h"
#include "testutil.h"

#define GUARD 16
static const float POISON = 1e30f;
static uint64_t rng = 7;
static const char *filter;
static int want(const char *d) { return !filter || strstr(d, filter); }

// ---------------------------------------------------------------- fp64 part

static double *r64(size_t n) {
    double *p = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = test_rand_normal(&rng);
    return p;
}
static double *z64(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

// The one tolerance rule, on doubles (check_close takes floats).
static void check64(const char *what, const double *got, const double *ref, size_t n, double atol, double rtol) {
    double maxabs = 0, maxrel = 0;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - ref[i]);
        if (!isfinite(got[i]) || isnan(d) || d > atol + rtol * fabs(ref[i])) {
            if (!bad) first = i;
            bad++;
        }
        if (d > maxabs) maxabs = d;
        if (fabs(ref[i]) > 1e-30 && d / fabs(ref[i]) > maxrel) maxrel = d / fabs(ref[i]);
    }
    fprintf(stderr, "%-48s n=%-8zu maxabs=%.3g maxrel=%.3g %s\n", what, n, maxabs, maxrel, bad ? "FAIL" : "ok");
    if (bad) {
        fprintf(stderr, "  %zu out of tolerance (atol=%g rtol=%g); first at %zu: got %.12g ref %.12g\n", bad, atol,
                rtol, first, got[first], ref[first]);
        test_failures++;
    }
}

// L = sum(g * forward(...)) evaluated by the op's context
typedef double (*loss_fn)(void *ctx);
static double dot64(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

#define FD_H 1e-6
#define FD_ATOL 1e-7
#define FD_RTOL 1e-6

// Central differences of L with respect to every element of p (n), compared with grad.
static void fd_check(const char *what, loss_fn L, void *ctx, double *p, size_t n, const double *grad) {
    if (!want(what)) return;
    double *fd = z64(n);
    for (size_t i = 0; i < n; i++) {
        double keep = p[i];
        p[i] = keep + FD_H;
        double lp = L(ctx);
        p[i] = keep - FD_H;
        double lm = L(ctx);
        p[i] = keep;
        fd[i] = (lp - lm) / (2 * FD_H);
    }
    check64(what, grad, fd, n, FD_ATOL, FD_RTOL);
    free(fd);
}

typedef struct {
    int N, C;
    double *x, *w, *g, eps;
} rms_ctx;
static double rms_loss(void *c) {
    rms_ctx *r = c;
    size_t n = (size_t)r->N * r->C;
    double *y = z64(n);
    ref64_rmsnorm(y, r->x, r->w, r->N, r->C, r->eps);
    double l = dot64(r->g, y, n);
    free(y);
    return l;
}
static void fd_rmsnorm(int N, int C) {
    size_t n = (size_t)N * C;
    rms_ctx r = {N, C, r64(n), r64((size_t)C), r64(n), 1e-5};
    double *dx = z64(n), *dw = z64((size_t)C);
    ref64_rmsnorm_backward(dx, dw, r.g, r.x, r.w, N, C, r.eps);
    char d[96];
    snprintf(d, sizeof d, "fd rmsnorm dx (N=%d,C=%d)", N, C);
    fd_check(d, rms_loss, &r, r.x, n, dx);
    snprintf(d, sizeof d, "fd rmsnorm dw (N=%d,C=%d)", N, C);
    fd_check(d, rms_loss, &r, r.w, (size_t)C, dw);
    free(r.x), free(r.w), free(r.g), free(dx), free(dw);
}

typedef struct {
    int N, H, D, *pos;
    double *x, *g, *inv;
} rope_ctx;
static double rope_loss(void *c) {
    rope_ctx *r = c;
    size_t n = (size_t)r->N * r->H * r->D;
    double *y = malloc(sizeof(double) * n);
    memcpy(y, r->x, sizeof(double) * n);
    ref64_rope(y, r->pos, r->N, r->H, r->D, r->inv, 0);
    double l = dot64(r->g, y, n);
    free(y);
    return l;
}
static void fd_rope(int N, int H, int D) {
    size_t n = (size_t)N * H * D;
    rope_ctx r = {N, H, D, malloc(sizeof(int) * (size_t)N), r64(n), r64(n), z64((size_t)D / 2)};
    for (int i = 0; i < N; i++) r.pos[i] = 3 + 5 * i;
    for (int i = 0; i < D / 2; i++) r.inv[i] = pow(10000.0, -2.0 * i / D);
    double *dx = malloc(sizeof(double) * n);
    memcpy(dx, r.g, sizeof(double) * n);
    ref64_rope(dx, r.pos, N, H, D, r.inv, 1);
    char d[96];
    snprintf(d, sizeof d, "fd rope dx (N=%d,H=%d,D=%d)", N, H, D);
    fd_check(d, rope_loss, &r, r.x, n, dx);
    free(r.pos), free(r.x), free(r.g), free(r.inv), free(dx);
}

typedef struct {
    int N, H, Hkv, D;
    const int *seg;
    double *q, *k, *v, *g;
} att_ctx;
static double att_loss(void *c) {
    att_ctx *a = c;
    size_t nq = (size_t)a->N * a->H * a->D;
    double *out = z64(nq), *lse = z64((size_t)a->N * a->H);
    ref64_attention_train(out, lse, a->q, a->k, a->v, a->seg, a->N, a->H, a->Hkv, a->D);
    double l = dot64(a->g, out, nq);
    free(out), free(lse);
    return l;
}
static void fd_attention(int N, int H, int Hkv, int D, const int *seg) {
    size_t nq = (size_t)N * H * D, nk = (size_t)N * Hkv * D;
    att_ctx a = {N, H, Hkv, D, seg, r64(nq), r64(nk), r64(nk), r64(nq)};
    double *out = z64(nq), *lse = z64((size_t)N * H), *dq = z64(nq), *dk = z64(nk), *dv = z64(nk);
    ref64_attention_train(out, lse, a.q, a.k, a.v, seg, N, H, Hkv, D);
    ref64_attention_backward(dq, dk, dv, a.g, a.q, a.k, a.v, out, lse, seg, N, H, Hkv, D);
    char d[96];
    const char *nm[3] = {"dq", "dk", "dv"};
    double *p[3] = {a.q, a.k, a.v}, *gr[3] = {dq, dk, dv};
    for (int i = 0; i < 3; i++) {
        snprintf(d, sizeof d, "fd attention %s (N=%d,H=%d,Hkv=%d,D=%d)", nm[i], N, H, Hkv, D);
        fd_check(d, att_loss, &a, p[i], i ? nk : nq, gr[i]);
    }
    free(a.q), free(a.k), free(a.v), free(a.g), free(out), free(lse), free(dq), free(dk), free(dv);
}

typedef struct {
    int n;
    double *gate, *up, *g;
} swi_ctx;
static double swi_loss(void *c) {
    swi_ctx *s = c;
    double *y = z64((size_t)s->n);
    ref64_swiglu(y, s->gate, s->up, s->n);
    double l = dot64(s->g, y, (size_t)s->n);
    free(y);
    return l;
}
static void fd_swiglu(int n) {
    swi_ctx s = {n, r64((size_t)n), r64((size_t)n), r64((size_t)n)};
    for (int i = 0; i < n; i++) s.gate[i] *= 3;  // reach the flat tails of silu too
    double *dg = z64((size_t)n), *du = z64((size_t)n);
    ref64_swiglu_backward(dg, du, s.g, s.gate, s.up, n);
    char d[96];
    snprintf(d, sizeof d, "fd swiglu dgate (n=%d)", n);
    fd_check(d, swi_loss, &s, s.gate, (size_t)n, dg);
    snprintf(d, sizeof d, "fd swiglu dup (n=%d)", n);
    fd_check(d, swi_loss, &s, s.up, (size_t)n, du);
    free(s.gate), free(s.up), free(s.g), free(dg), free(du);
}

typedef struct {
    int N, rows, cols;
    double *x, *W, *g;
} mm_ctx;
static double mm_loss(void *c) {
    mm_ctx *m = c;
    double *y = z64((size_t)m->N * m->rows);
    ref64_matmul(y, m->x, m->W, m->N, m->rows, m->cols);
    double l = dot64(m->g, y, (size_t)m->N * m->rows);
    free(y);
    return l;
}
static void fd_matmul(int N, int rows, int cols) {
    mm_ctx m = {N, rows, cols, r64((size_t)N * cols), r64((size_t)rows * cols), r64((size_t)N * rows)};
    double *dx = r64((size_t)N * cols);  // garbage: accumulate = 0 must overwrite it
    ref64_matmul_backward_input(dx, m.g, m.W, N, rows, cols, 0);
    char d[96];
    snprintf(d, sizeof d, "fd matmul_backward_input (N=%d,rows=%d,cols=%d)", N, rows, cols);
    fd_check(d, mm_loss, &m, m.x, (size_t)N * cols, dx);
    free(m.x), free(m.W), free(m.g), free(dx);
}

typedef struct {
    int N, V;
    const int *t;
    double *logits, scale;
} ce_ctx;
static double ce_loss(void *c) {
    ce_ctx *e = c;
    double *loss = z64((size_t)e->N), l = 0;
    ref64_cross_entropy(loss, NULL, e->logits, e->t, e->N, e->V, e->scale);
    for (int n = 0; n < e->N; n++) l += e->scale * loss[n];
    free(loss);
    return l;
}
static void fd_cross_entropy(int N, int V, const int *targets, double scale) {
    ce_ctx e = {N, V, targets, r64((size_t)N * V), scale};
    double *loss = z64((size_t)N), *dl = z64((size_t)N * V);
    ref64_cross_entropy(loss, dl, e.logits, targets, N, V, scale);
    char d[96];
    snprintf(d, sizeof d, "fd cross_entropy (N=%d,V=%d)", N, V);
    fd_check(d, ce_loss, &e, e.logits, (size_t)N * V, dl);
    // the loss itself: -log softmax, directly
    for (int n = 0; n < N; n++) {
        const double *l = e.logits + (size_t)n * V;
        double s = 0;
        for (int i = 0; i < V; i++) s += exp(l[i]);
        double want_l = targets[n] < 0 ? 0 : log(s) - l[targets[n]];
        CHECKF(fabs(loss[n] - want_l) <= 1e-12 + 1e-12 * fabs(want_l), "loss[%d] %.15g vs %.15g", n, loss[n], want_l);
    }
    free(e.logits), free(loss), free(dl);
}

typedef struct {
    int N, in, out, R;
    double *x, *A, *B, *g, s;
} lora_ctx;
static double lora_loss(void *c) {
    lora_ctx *q = c;
    double *y = z64((size_t)q->N * q->out), *xa = z64((size_t)q->N * q->R);
    ref64_lora_forward(y, xa, q->x, q->A, q->B, q->N, q->in, q->out, q->R, q->s);
    double l = dot64(q->g, y, (size_t)q->N * q->out);
    free(y), free(xa);
    return l;
}
static void fd_lora(int N, int in, int out, int R, double s) {
    lora_ctx q = {N, in, out, R, r64((size_t)N * in), r64((size_t)R * in), r64((size_t)out * R),
                  r64((size_t)N * out), s};
    double *y = z64((size_t)N * out), *xa = z64((size_t)N * R), *dxa = z64((size_t)N * R);
    double *dA = z64((size_t)R * in), *dB = z64((size_t)out * R), *dx = z64((size_t)N * in);
    ref64_lora_forward(y, xa, q.x, q.A, q.B, N, in, out, R, s);
    ref64_lora_backward(dA, dB, dx, dxa, q.g, q.x, xa, q.A, q.B, N, in, out, R, s);
    char d[96];
    snprintf(d, sizeof d, "fd lora dx (N=%d,in=%d,out=%d,R=%d)", N, in, out, R);
    fd_check(d, lora_loss, &q, q.x, (size_t)N * in, dx);
    snprintf(d, sizeof d, "fd lora dA (N=%d,in=%d,out=%d,R=%d)", N, in, out, R);
    fd_check(d, lora_loss, &q, q.A, (size_t)R * in, dA);
    snprintf(d, sizeof d, "fd lora dB (N=%d,in=%d,out=%d,R=%d)", N, in, out, R);
    fd_check(d, lora_loss, &q, q.B, (size_t)out * R, dB);
    free(q.x), free(q.A), free(q.B), free(q.g), free(y), free(xa), free(dxa), free(dA), free(dB), free(dx);
}

static void fd_all(void) {
    fd_rmsnorm(3, 8);
    fd_rmsnorm(1, 13);
    fd_rope(3, 2, 8);
    int seg2[5] = {0, 0, 0, 3, 3};  // two packed samples: tokens 0..2 and 3..4
    fd_attention(5, 2, 1, 4, seg2);
    int seg3[6] = {0, 1, 1, 3, 3, 3};  // three samples, the first one token long
    fd_attention(6, 4, 2, 4, seg3);
    int seg1[1] = {0};
    fd_attention(1, 2, 2, 4, seg1);
    fd_swiglu(12);
    fd_matmul(3, 6, 5);
    int t1[4] = {3, -1, 10, 0};  // the second token is not trained
    fd_cross_entropy(4, 11, t1, 1.0 / 3);
    fd_lora(4, 10, 9, 2, 2.0);
    fd_lora(1, 5, 3, 1, 0.5);
}

// ---------------------------------------------------------------- backends

static float *fbuf(size_t n, int random) {
    float *p = malloc(sizeof(float) * (n + GUARD));
    for (size_t i = 0; i < n + GUARD; i++) p[i] = random && i < n ? test_rand_normal(&rng) : POISON;
    return p;
}
static float *fcopy(const float *src, size_t n) {  // with fresh poisoned guards
    float *p = fbuf(n, 0);
    memcpy(p, src, sizeof(float) * n);
    return p;
}
static double *d_of(const float *x, size_t n) {
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}
static float *f_of(const double *x, size_t n) {  // expected values as floats (no guards)
    float *f = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}
static void guards(const char *what, const float *p, size_t n) {
    for (size_t i = n; i < n + GUARD; i++)
        if (p[i] != POISON) { CHECKF(0, "%s: write past the end at +%zu", what, i - n); return; }
}
// got vs expected (double), with guards
static void expect(const char *d, const char *out, const float *got, const double *ref, size_t n, double atol,
                   double rtol) {
    char w[256];
    snprintf(w, sizeof w, "%s %s", d, out);
    float *rf = f_of(ref, n);
    check_close(w, got, rf, (int64_t)n, atol, rtol);
    guards(w, got, n);
    free(rf);
}

static ops *be[3];
static int nbe;

// ---- backend memory ----
// Backends with host_memory (cpu) take the host arrays as they are. The others
// (cuda, and ref on purpose) get copies in backend memory: n floats plus the
// GUARD floats after them, poison included, so a write past the end still shows
// in the guards once the buffer is back on the host.
static float *dup_in(ops *o, const float *host, size_t n) {
    if (o->host_memory) return (float *)host;
    size_t bytes = sizeof(float) * (n + GUARD);
    float *d = o->alloc(o, bytes);
    if (!d) {
        fprintf(stderr, "%s: alloc of %zu bytes failed: %s\n", o->name, bytes, ql_errmsg());
        exit(1);
    }
    o->to_device(o, d, host, bytes);
    return d;
}
// Backend buffer dev (n + GUARD floats) back into host (no-op with host_memory).
static void pull(ops *o, float *host, const float *dev, size_t n) {
    if (!o->host_memory) o->to_host(o, host, dev, sizeof(float) * (n + GUARD));
}
static void release(ops *o, const float *dev) {
    if (!o->host_memory) o->free(o, (void *)dev);
}
// An output: back to the host, then freed.
static void get_out(ops *o, float *host, float *dev, size_t n) {
    pull(o, host, dev, n);
    release(o, dev);
}

static void bk_rmsnorm(int N, int C, int with_dw) {
    size_t n = (size_t)N * C;
    float *x = fbuf(n, 1), *w = fbuf((size_t)C, 1), *dy = fbuf(n, 1), *dx0 = fbuf(n, 1), *dw0 = fbuf((size_t)C, 1);
    double *xd = d_of(x, n), *wd = d_of(w, (size_t)C), *gd = d_of(dy, n), *dx = d_of(dx0, n),
           *dw = d_of(dw0, (size_t)C);
    ref64_rmsnorm_backward(dx, with_dw ? dw : NULL, gd, xd, wd, N, C, 1e-5);
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s rmsnorm_bwd(N=%d,C=%d%s)", o->name, N, C, with_dw ? ",dw" : "");
        if (!want(d)) continue;
        float *gx = fcopy(dx0, n), *gw = fcopy(dw0, (size_t)C);
        float *Dx = dup_in(o, x, n), *Dw = dup_in(o, w, (size_t)C), *Ddy = dup_in(o, dy, n),
              *Dgx = dup_in(o, gx, n), *Dgw = dup_in(o, gw, (size_t)C);
        o->rmsnorm_backward(o, Dgx, with_dw ? Dgw : NULL, Ddy, Dx, Dw, N, C, 1e-5f);
        get_out(o, gx, Dgx, n), get_out(o, gw, Dgw, (size_t)C);
        release(o, Dx), release(o, Dw), release(o, Ddy);
        // fp32 sums over C <= 100 terms of size ~1 (rel. ~1e-6) added to O(1) values
        expect(d, "dx+=", gx, dx, n, 1e-5, 1e-4);
        if (with_dw) expect(d, "dw+=", gw, dw, (size_t)C, 1e-5, 1e-4);
        else CHECKF(memcmp(gw, dw0, sizeof(float) * ((size_t)C + GUARD)) == 0, "%s: dw written although NULL", d);
        free(gx), free(gw);
    }
    free(x), free(w), free(dy), free(dx0), free(dw0), free(xd), free(wd), free(gd), free(dx), free(dw);
}

static void bk_rope(int N, int H, int D, int T0) {
    size_t n = (size_t)N * H * D;
    float *g = fbuf(n, 1), *inv = fbuf((size_t)D / 2, 0);
    int *pos = malloc(sizeof(int) * (size_t)N);
    for (int i = 0; i < N; i++) pos[i] = T0 + i;
    for (int i = 0; i < D / 2; i++) inv[i] = (float)(1.0 / pow(10000.0, 2.0 * i / D));
    double *gd = d_of(g, n), *invd = d_of(inv, (size_t)D / 2);
    ref64_rope(gd, pos, N, H, D, invd, 1);
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s rope_bwd(N=%d,H=%d,D=%d,T0=%d)", o->name, N, H, D, T0);
        if (!want(d)) continue;
        float *x = fcopy(g, n), *Dx = dup_in(o, x, n);
        o->rope_backward(o, Dx, pos, N, H, D, inv);  // pos, inv_freq on the host
        pull(o, x, Dx, n);
        // positions <= 60: the CPU's fp32 angle (as Hugging Face) is off by <= 60 * 6e-8 rad
        expect(d, "dx", x, gd, n, 1e-5, 1e-4);
        // backward is the inverse: rope(rope_backward(g)) = g on the same backend
        o->rope(o, Dx, pos, N, H, D, inv);
        get_out(o, x, Dx, n);
        char w[160];
        snprintf(w, sizeof w, "%s rope(rope_bwd(g)) = g", d);
        check_close(w, x, g, (int64_t)n, 1e-6, 1e-5);  // two fp32 rotations: a few ulps
        guards(w, x, n);
        free(x);
    }
    free(g), free(inv), free(pos), free(gd), free(invd);
}

static void bk_attention(int N, int H, int Hkv, int D, const int *seg) {
    size_t nq = (size_t)N * H * D, nk = (size_t)N * Hkv * D, nl = (size_t)N * H;
    float *q = fbuf(nq, 1), *k = fbuf(nk, 1), *v = fbuf(nk, 1), *g = fbuf(nq, 1);
    double *qd = d_of(q, nq), *kd = d_of(k, nk), *vd = d_of(v, nk), *gd = d_of(g, nq);
    double *out = calloc(nq, 8), *lse = calloc(nl, 8), *dq = calloc(nq, 8), *dk = calloc(nk, 8), *dv = calloc(nk, 8);
    ref64_attention_train(out, lse, qd, kd, vd, seg, N, H, Hkv, D);
    ref64_attention_backward(dq, dk, dv, gd, qd, kd, vd, out, lse, seg, N, H, Hkv, D);
    int all0 = 1;
    for (int i = 0; i < N; i++) all0 &= seg[i] == 0;
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s attention_train(N=%d,H=%d,Hkv=%d,D=%d,seg=%d)", o->name, N, H, Hkv, D, seg[N - 1]);
        if (!want(d)) continue;
        float *fo = fbuf(nq, 0), *fl = fbuf(nl, 0), *fdq = fbuf(nq, 0), *fdk = fbuf(nk, 0), *fdv = fbuf(nk, 0);
        float *Dq = dup_in(o, q, nq), *Dk = dup_in(o, k, nk), *Dv = dup_in(o, v, nk), *Dg = dup_in(o, g, nq);
        float *Do = dup_in(o, fo, nq), *Dl = dup_in(o, fl, nl);
        o->attention_train(o, Do, Dl, Dq, Dk, Dv, seg, N, H, Hkv, D);  // seg_start on the host
        pull(o, fo, Do, nq), pull(o, fl, Dl, nl);
        // fp32 dot products over D <= 16 and softmax sums over <= 40 keys (rel. ~1e-6)
        expect(d, "out", fo, out, nq, 1e-5, 1e-4);
        expect(d, "lse", fl, lse, nl, 1e-5, 1e-4);
        if (all0) {  // plain causal: equal to the inference op
            float *fa = fbuf(nq, 0), *Da = dup_in(o, fa, nq);
            o->attention(o, Da, Dq, Dk, Dv, N, 0, H, Hkv, D);
            get_out(o, fa, Da, nq);
            char w[160];
            snprintf(w, sizeof w, "%s = attention(T0=0)", d);
            check_close(w, fo, fa, (int64_t)nq, 1e-6, 1e-5);
            guards(w, fa, nq);
            free(fa);
        }
        // backward on the backend's own out/lse: fp32 scores and products over <= 40 keys
        // and 2 heads; gradients are O(1), so atol 1e-4 and rtol 1e-3
        float *Ddq = dup_in(o, fdq, nq), *Ddk = dup_in(o, fdk, nk), *Ddv = dup_in(o, fdv, nk);
        o->attention_backward(o, Ddq, Ddk, Ddv, Dg, Dq, Dk, Dv, Do, Dl, seg, N, H, Hkv, D);
        get_out(o, fdq, Ddq, nq), get_out(o, fdk, Ddk, nk), get_out(o, fdv, Ddv, nk);
        release(o, Dq), release(o, Dk), release(o, Dv), release(o, Dg), release(o, Do), release(o, Dl);
        snprintf(d, sizeof d, "%s attention_bwd(N=%d,H=%d,Hkv=%d,D=%d,seg=%d)", o->name, N, H, Hkv, D, seg[N - 1]);
        expect(d, "dq", fdq, dq, nq, 1e-4, 1e-3);
        expect(d, "dk", fdk, dk, nk, 1e-4, 1e-3);
        expect(d, "dv", fdv, dv, nk, 1e-4, 1e-3);
        free(fo), free(fl), free(fdq), free(fdk), free(fdv);
    }
    free(q), free(k), free(v), free(g), free(qd), free(kd), free(vd), free(gd), free(out), free(lse), free(dq),
        free(dk), free(dv);
}

static void bk_swiglu(int n) {
    float *gate = fbuf((size_t)n, 1), *up = fbuf((size_t)n, 1), *g = fbuf((size_t)n, 1);
    double *gd = d_of(g, (size_t)n), *gad = d_of(gate, (size_t)n), *ud = d_of(up, (size_t)n);
    double *dg = calloc((size_t)n, 8), *du = calloc((size_t)n, 8);
    ref64_swiglu_backward(dg, du, gd, gad, ud, n);
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s swiglu_bwd(n=%d)", o->name, n);
        if (!want(d)) continue;
        float *fg = fbuf((size_t)n, 0), *fu = fbuf((size_t)n, 0);
        float *Dgate = dup_in(o, gate, (size_t)n), *Dup = dup_in(o, up, (size_t)n), *Dg = dup_in(o, g, (size_t)n);
        float *Dfg = dup_in(o, fg, (size_t)n), *Dfu = dup_in(o, fu, (size_t)n);
        o->swiglu_backward(o, Dfg, Dfu, Dg, Dgate, Dup, n);
        get_out(o, fg, Dfg, (size_t)n), get_out(o, fu, Dfu, (size_t)n);
        release(o, Dgate), release(o, Dup);
        // a few fp32 operations per element
        expect(d, "dgate", fg, dg, (size_t)n, 1e-6, 1e-5);
        expect(d, "dup", fu, du, (size_t)n, 1e-6, 1e-5);
        // in place: dgate over gate, dup over up
        float *ig = fcopy(gate, (size_t)n), *iu = fcopy(up, (size_t)n);
        float *Dig = dup_in(o, ig, (size_t)n), *Diu = dup_in(o, iu, (size_t)n);
        o->swiglu_backward(o, Dig, Diu, Dg, Dig, Diu, n);
        get_out(o, ig, Dig, (size_t)n), get_out(o, iu, Diu, (size_t)n);
        release(o, Dg);
        expect(d, "dgate (in place)", ig, dg, (size_t)n, 1e-6, 1e-5);
        expect(d, "dup (in place)", iu, du, (size_t)n, 1e-6, 1e-5);
        free(fg), free(fu), free(ig), free(iu);
    }
    free(gate), free(up), free(g), free(gd), free(gad), free(ud), free(dg), free(du);
}

// A random weight (rows, cols) of type t, with its storage.
typedef struct {
    qweight w;
    void *data, *codes, *q8, *s2;
} wstore;
static void wmake(wstore *ws, dtype t, int64_t rows, int64_t cols) {
    int64_t n = rows * cols;
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) f[i] = 0.5f * test_rand_normal(&rng);
    memset(ws, 0, sizeof *ws);
    ws->w = (qweight){.type = t, .rows = rows, .cols = cols};
    if (t == DT_F32) {
        ws->data = f, f = NULL;
    } else if (t == DT_F16 || t == DT_BF16) {
        uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) h[i] = t == DT_F16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
        ws->data = h;
    } else {
        ws->codes = malloc((size_t)(n + 1) / 2);
        ws->q8 = malloc((size_t)nf4_nblocks(n));
        ws->s2 = malloc(sizeof(float) * (size_t)nf4_ngroups(n));
        float off;
        nf4_quantize(ws->codes, ws->q8, ws->s2, &off, f, n);
        ws->w.nf4 = (nf4_data){.n = n, .codes = ws->codes, .absmax_q = ws->q8, .absmax_scale = ws->s2,
                               .absmax_offset = off};
    }
    ws->w.data = ws->data;
    free(f);
}
static void wfree(wstore *ws) { free(ws->data), free(ws->codes), free(ws->q8), free(ws->s2); }

static void bk_matmul(dtype t, int N, int rows, int cols) {
    wstore ws;
    wmake(&ws, t, rows, cols);
    size_t nx = (size_t)N * cols, ny = (size_t)N * rows;
    float *dy = fbuf(ny, 1), *dx0 = fbuf(nx, 1);
    double *W = malloc(sizeof(double) * (size_t)(rows ? rows : 1) * cols), *gd = d_of(dy, ny);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) W[(size_t)r * cols + c] = qweight_get(&ws.w, r, c);
    double *dxs = calloc(nx, 8), *dxa = d_of(dx0, nx);
    ref64_matmul_backward_input(dxs, gd, W, N, rows, cols, 0);
    ref64_matmul_backward_input(dxa, gd, W, N, rows, cols, 1);
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s matmul_bwd_input(%s,N=%d,rows=%d,cols=%d)", o->name,
                 t == DT_NF4 ? "NF4" : dtype_name(t), N, rows, cols);
        if (!want(d)) continue;
        int rc = o->weight_upload(o, &ws.w);  // a no-op on ref and cpu
        if (rc != QL_OK) {  // CUDA takes no weight with 0 rows
            fprintf(stderr, "%-48s skipped: weight_upload returned %d (%s)\n", d, rc, ql_errmsg());
            CHECKF(rows == 0, "%s: weight_upload failed", d);
            continue;
        }
        // fp32 sums of `rows` products of size ~0.5 in sgemm order: the rounding grows
        // with the number of terms (observed 4e-6 at rows=64, 9e-5 at rows=24500), so
        // atol 1e-4 per 1024 rows; a wrong tile or row offset is O(1)
        double atol = 1e-4 * (rows > 1024 ? rows / 1024.0 : 1.0), rtol = 1e-4;
        if (!strcmp(o->name, "cuda") && t != DT_F32) {
            // CUDA multiplies weights that are not F32 on TF32 tensor cores: both
            // operands rounded to 10-bit mantissas (relative error up to 2^-11 ~ 4.9e-4
            // each; F16 and BF16 weights are exact in TF32, dy and dequantized NF4 are
            // not), accumulated in fp32. Each of the `rows` products (W ~ 0.5*N(0,1),
            // dy ~ N(0,1)) is then off by ~1e-3 relative, random in sign, so the error
            // of one output grows as sqrt(rows) times the size of a product; an output's
            // rms size is sqrt(rows)*0.5. atol 3e-3 * sqrt(rows) * 0.5 is a few times the
            // expected worst error over the outputs; a wrong tile or row offset is still
            // off by the full O(sqrt(rows)*0.5).
            atol = 3e-3 * sqrt((double)rows) * 0.5;
            rtol = 3e-3;
        }
        float *f = fbuf(nx, 0), *Ddy = dup_in(o, dy, ny), *Df = dup_in(o, f, nx);
        o->matmul_backward_input(o, Df, Ddy, &ws.w, N, 0);
        get_out(o, f, Df, nx);
        expect(d, "dx=", f, dxs, nx, atol, rtol);
        float *fa = fcopy(dx0, nx), *Dfa = dup_in(o, fa, nx);
        o->matmul_backward_input(o, Dfa, Ddy, &ws.w, N, 1);
        get_out(o, fa, Dfa, nx);
        release(o, Ddy);
        o->weight_release(o, &ws.w);
        expect(d, "dx+=", fa, dxa, nx, atol, rtol);
        free(f), free(fa);
    }
    wfree(&ws);
    free(dy), free(dx0), free(W), free(gd), free(dxs), free(dxa);
}

static void bk_cross_entropy(int N, int V, float scale, int mask_every) {
    size_t n = (size_t)N * V;
    float *l = fbuf(n, 1);
    for (size_t i = 0; i < n; i++) l[i] *= 3;  // peaked softmaxes too
    int *t = malloc(sizeof(int) * (size_t)N);
    for (int i = 0; i < N; i++) t[i] = mask_every && i % mask_every == 1 ? -1 : (int)(test_rand_u64(&rng) % V);
    double *ld = d_of(l, n), *loss = calloc((size_t)N, 8), *dl = calloc(n, 8);
    ref64_cross_entropy(loss, dl, ld, t, N, V, scale);
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s cross_entropy(N=%d,V=%d,mask=%d)", o->name, N, V, mask_every);
        if (!want(d)) continue;
        float *fl = fbuf((size_t)N, 0), *fd = fbuf(n, 0);
        float *Dl = dup_in(o, l, n), *Dfl = dup_in(o, fl, (size_t)N), *Dfd = dup_in(o, fd, n);
        o->cross_entropy(o, Dfl, Dfd, Dl, t, N, V, scale);  // targets on the host
        get_out(o, fl, Dfl, (size_t)N), get_out(o, fd, Dfd, n);
        // log-sum-exp in fp32 of values |l| < ~15: abs. error ~1e-6 * 15
        expect(d, "loss", fl, loss, (size_t)N, 1e-5, 1e-5);
        // probabilities in [0,1] times scale: abs. error ~1e-6 (exp of an fp32 lse)
        expect(d, "dlogits", fd, dl, n, 1e-6, 1e-4);
        float *ip = fcopy(l, n), *fl2 = fbuf((size_t)N, 0);
        float *Dip = dup_in(o, ip, n), *Dfl2 = dup_in(o, fl2, (size_t)N);
        o->cross_entropy(o, Dfl2, Dip, Dip, t, N, V, scale);
        get_out(o, ip, Dip, n);
        expect(d, "dlogits (in place)", ip, dl, n, 1e-6, 1e-4);
        o->cross_entropy(o, Dfl2, NULL, Dl, t, N, V, scale);
        get_out(o, fl2, Dfl2, (size_t)N);
        release(o, Dl);
        expect(d, "loss (no dlogits)", fl2, loss, (size_t)N, 1e-5, 1e-5);
        free(fl), free(fd), free(ip), free(fl2);
    }
    free(l), free(t), free(ld), free(loss), free(dl);
}

static void bk_lora(int N, int in, int out, int R, float s, int with_dx) {
    const size_t nx = (size_t)N * in, nA = (size_t)R * in, nB = (size_t)out * R, ny = (size_t)N * out,
                 nxa = (size_t)N * R;
    float *x = fbuf(nx, 1), *A = fbuf(nA, 1), *B = fbuf(nB, 1), *y0 = fbuf(ny, 1), *g = fbuf(ny, 1),
          *dA0 = fbuf(nA, 1), *dB0 = fbuf(nB, 1), *dx0 = fbuf(nx, 1);
    double *xd = d_of(x, nx), *Ad = d_of(A, nA), *Bd = d_of(B, nB), *y = d_of(y0, ny), *gd = d_of(g, ny),
           *dA = d_of(dA0, nA), *dB = d_of(dB0, nB), *dx = d_of(dx0, nx), *xa = calloc(nxa, 8),
           *dxa = calloc(nxa, 8);
    ref64_lora_forward(y, xa, xd, Ad, Bd, N, in, out, R, s);
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s lora(N=%d,in=%d,out=%d,R=%d%s)", o->name, N, in, out, R, with_dx ? "" : ",dx=NULL");
        if (!want(d)) continue;
        float *fy = fcopy(y0, ny), *fxa = fbuf(nxa, 0);
        float *Dx = dup_in(o, x, nx), *DA = dup_in(o, A, nA), *DB = dup_in(o, B, nB), *Dg = dup_in(o, g, ny),
              *Dfy = dup_in(o, fy, ny), *Dfxa = dup_in(o, fxa, nxa);
        o->lora_forward(o, Dfy, Dfxa, Dx, DA, DB, N, in, out, R, s);
        get_out(o, fy, Dfy, ny), pull(o, fxa, Dfxa, nxa);
        // fp32 sums over in <= 100 and R <= 8 terms of size ~1: abs. ~1e-5 on values ~10
        expect(d, "y+=", fy, y, ny, 1e-4, 1e-4);
        expect(d, "xa", fxa, xa, nxa, 1e-4, 1e-4);
        // backward from the backend's own xa, the reference from its fp32 rounding too
        double *xa32 = d_of(fxa, nxa), *rA = d_of(dA0, nA), *rB = d_of(dB0, nB), *rx = d_of(dx0, nx);
        ref64_lora_backward(rA, rB, with_dx ? rx : NULL, dxa, gd, xd, xa32, Ad, Bd, N, in, out, R, s);
        float *fA = fcopy(dA0, nA), *fB = fcopy(dB0, nB), *fx = fcopy(dx0, nx), *fdxa = fbuf(nxa, 0);
        float *DfA = dup_in(o, fA, nA), *DfB = dup_in(o, fB, nB), *Dfx = dup_in(o, fx, nx),
              *Dfdxa = dup_in(o, fdxa, nxa);
        o->lora_backward(o, DfA, DfB, with_dx ? Dfx : NULL, Dfdxa, Dg, Dx, Dfxa, DA, DB, N, in, out, R, s);
        get_out(o, fA, DfA, nA), get_out(o, fB, DfB, nB), get_out(o, fx, Dfx, nx), get_out(o, fdxa, Dfdxa, nxa);
        release(o, Dx), release(o, DA), release(o, DB), release(o, Dg), release(o, Dfxa);
        // sums over N <= 40 or out <= 72 terms: abs. ~1e-5 on values up to ~100
        expect(d, "dxa", fdxa, dxa, nxa, 1e-4, 1e-4);
        expect(d, "dA+=", fA, rA, nA, 1e-4, 1e-4);
        expect(d, "dB+=", fB, rB, nB, 1e-4, 1e-4);
        if (with_dx) expect(d, "dx+=", fx, rx, nx, 1e-4, 1e-4);
        else CHECKF(memcmp(fx, dx0, sizeof(float) * (nx + GUARD)) == 0, "%s: dx written although NULL", d);
        free(fy), free(fxa), free(xa32), free(rA), free(rB), free(rx), free(fA), free(fB), free(fx), free(fdxa);
    }
    free(x), free(A), free(B), free(y0), free(g), free(dA0), free(dB0), free(dx0);
    free(xd), free(Ad), free(Bd), free(y), free(gd), free(dA), free(dB), free(dx), free(xa), free(dxa);
}

// A line in check64's style for the exact checks below.
static void report(const char *what, size_t n, int ok) {
    fprintf(stderr, "%-48s n=%-8zu %s\n", what, n, ok ? "ok (exact)" : "FAIL");
    if (!ok) test_failures++;
}

// zero: the first n floats of a poisoned buffer become 0, the guards stay.
static void bk_zero(size_t n) {
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s zero(n=%zu)", o->name, n);
        if (!want(d)) continue;
        float *h = fbuf(n, 0), *D = dup_in(o, h, n);
        o->zero(o, D, sizeof(float) * n);
        get_out(o, h, D, n);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += h[i] != 0.0f;
        report(d, n, bad == 0);
        guards(d, h, n);
        free(h);
    }
}

// sumsq against a sequential double sum. Every square of a float is exact in double;
// backends add them in other orders (the CPU in chunks, CUDA per thread and block),
// so the sums differ by double rounding only: ~sqrt(n) * 1.1e-16 relative, far
// below rtol 1e-12 (a lost or doubled element is >= 1e-6 relative at n = 300001).
static void bk_sumsq(size_t n) {
    float *x = fbuf(n, 1);
    double want_s = 0;
    for (size_t i = 0; i < n; i++) want_s += (double)x[i] * x[i];
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s sumsq(n=%zu)", o->name, n);
        if (!want(d)) continue;
        float *D = dup_in(o, x, n);
        double got = o->sumsq(o, D, (int64_t)n);
        release(o, D);
        check64(d, &got, &want_s, 1, 0, 1e-12);
    }
    free(x);
}

// One AdamW step in double, torch.optim.AdamW as ops.h writes it.
static void adamw64(double *p, const double *g, double *m, double *v, size_t n, const adamw_args *a) {
    double lr = a->lr, b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay, clip = a->clip;
    double bc1 = 1 - pow(b1, a->step), bc2 = 1 - pow(b2, a->step);
    for (size_t i = 0; i < n; i++) {
        double gi = g[i] * clip;
        p[i] *= 1 - lr * wd;
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        p[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
    }
}

// adamw: two consecutive steps (the moments carry over in backend memory), each
// against the double formula. fp32 does a handful of operations per element on
// O(1) values (p, m) and non-negative v: a few ulps, so rtol 1e-5, and atol 1e-7
// for elements near 0. A wrong bias correction or clip is off by >= 1e-4 on p
// (updates are ~lr) and by O(1) relative on m, v.
static void bk_adamw(size_t n) {
    float *p = fbuf(n, 1), *g = fbuf(n, 1), *m = fbuf(n, 1), *v = fbuf(n, 1);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    const adamw_args st[2] = {
        {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f, .step = 1, .clip = 1.0f},
        {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f, .step = 2, .clip = 0.5f},
    };
    double *P[2], *M[2], *Vv[2], *gd = d_of(g, n);
    {
        double *p64 = d_of(p, n), *m64 = d_of(m, n), *v64 = d_of(v, n);
        for (int s = 0; s < 2; s++) {
            adamw64(p64, gd, m64, v64, n, &st[s]);
            P[s] = malloc(sizeof(double) * (n ? n : 1)), M[s] = malloc(sizeof(double) * (n ? n : 1)),
            Vv[s] = malloc(sizeof(double) * (n ? n : 1));
            memcpy(P[s], p64, sizeof(double) * n), memcpy(M[s], m64, sizeof(double) * n),
                memcpy(Vv[s], v64, sizeof(double) * n);
        }
        free(p64), free(m64), free(v64);
    }
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s adamw(n=%zu)", o->name, n);
        if (!want(d)) continue;
        float *fp = fcopy(p, n), *fg = fcopy(g, n), *fm = fcopy(m, n), *fv = fcopy(v, n);
        float *Dp = dup_in(o, fp, n), *Dg = dup_in(o, fg, n), *Dm = dup_in(o, fm, n), *Dv = dup_in(o, fv, n);
        for (int s = 0; s < 2; s++) {
            o->adamw(o, Dp, Dg, Dm, Dv, (int64_t)n, &st[s]);
            pull(o, fp, Dp, n), pull(o, fm, Dm, n), pull(o, fv, Dv, n);
            char w[160];
            snprintf(w, sizeof w, "%s step %d (clip %g)", d, s + 1, st[s].clip);
            expect(w, "p", fp, P[s], n, 1e-7, 1e-5);
            expect(w, "m", fm, M[s], n, 1e-7, 1e-5);
            expect(w, "v", fv, Vv[s], n, 1e-7, 1e-5);
        }
        get_out(o, fg, Dg, n);
        CHECKF(memcmp(fg, g, sizeof(float) * (n + GUARD)) == 0, "%s: g changed", d);
        release(o, Dp), release(o, Dm), release(o, Dv);
        free(fp), free(fg), free(fm), free(fv);
    }
    for (int s = 0; s < 2; s++) free(P[s]), free(M[s]), free(Vv[s]);
    free(p), free(g), free(m), free(v), free(gd);
}

// dropout is exact: out[i] = keep ? x[i] * (1/(1-p) in fp32) : 0, one fp32
// multiply, so every backend must give these bits; out of place and in place.
static void bk_dropout(size_t n, float p) {
    const uint64_t key = 1234;
    float *x = fbuf(n, 1), *want_o = fbuf(n, 0);
    const float s = 1.0f / (1.0f - p);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        int k = dropout_keep(key, (int64_t)i, p);
        want_o[i] = k ? x[i] * s : 0.0f;
        kept += (size_t)k;
    }
    if (n >= 1000) {  // the mask keeps about 1-p: within 5 sigma
        double e = (1 - p) * n, sd = sqrt(p * (1 - p) * n);
        CHECKF(fabs(kept - e) <= 5 * sd, "dropout(n=%zu,p=%g): kept %zu, expected ~%.0f", n, p, kept, e);
    }
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        char d[128];
        snprintf(d, sizeof d, "%s dropout(n=%zu,p=%g)", o->name, n, p);
        if (!want(d)) continue;
        float *f = fbuf(n, 0), *Dx = dup_in(o, x, n), *Df = dup_in(o, f, n);
        o->dropout(o, Df, Dx, (int64_t)n, p, key);
        get_out(o, f, Df, n);
        release(o, Dx);
        report(d, n, memcmp(f, want_o, sizeof(float) * n) == 0);
        guards(d, f, n);
        char w[160];
        snprintf(w, sizeof w, "%s (in place)", d);
        float *ip = fcopy(x, n), *Dip = dup_in(o, ip, n);
        o->dropout(o, Dip, Dip, (int64_t)n, p, key);
        get_out(o, ip, Dip, n);
        report(w, n, memcmp(ip, want_o, sizeof(float) * n) == 0);
        guards(w, ip, n);
        free(f), free(ip);
    }
    free(x), free(want_o);
}

static void backends_all(void) {
    bk_rmsnorm(1, 13, 0);
    bk_rmsnorm(5, 64, 1);
    bk_rmsnorm(33, 100, 1);
    bk_rope(1, 2, 4, 0);
    bk_rope(7, 3, 16, 50);
    int s1[1] = {0};
    bk_attention(1, 1, 1, 4, s1);
    int s2[5] = {0, 0, 0, 3, 3};
    bk_attention(5, 2, 1, 4, s2);
    int s0[9] = {0};
    bk_attention(9, 4, 2, 8, s0);
    int s3[37];
    for (int i = 0; i < 37; i++) s3[i] = i < 11 ? 0 : i < 30 ? 11 : 30;
    bk_attention(37, 4, 2, 16, s3);
    // Several blocks of 64 queries/keys (grad_cpu.c's ATT_BLOCK), samples across block edges.
    int s4[150];
    for (int i = 0; i < 150; i++) s4[i] = i < 70 ? 0 : i < 141 ? 70 : 141;
    bk_attention(150, 4, 2, 8, s4);
    int s5[130] = {0};
    bk_attention(130, 2, 1, 64, s5);
    bk_swiglu(1);
    bk_swiglu(37);
    bk_swiglu(70001);  // above the CPU's OpenMP threshold
    const dtype types[4] = {DT_F32, DT_F16, DT_BF16, DT_NF4};
    for (int i = 0; i < 4; i++) {
        bk_matmul(types[i], 1, 7, 13);
        bk_matmul(types[i], 5, 48, 172);  // NF4 blocks of 64 span rows
        bk_matmul(types[i], 33, 64, 100);
        bk_matmul(types[i], 9, 40, 128);  // cols % 8 == 0: CUDA's 8-at-a-time NF4 dequantization
    }
    bk_matmul(DT_NF4, 2, 24500, 172);  // more rows than one dequantized tile (4M floats)
    bk_matmul(DT_F32, 3, 0, 8);        // rows = 0: dx = 0, or unchanged (skipped where upload refuses it)
    bk_cross_entropy(1, 11, 1.0f, 0);
    bk_cross_entropy(6, 11, 0.2f, 3);
    bk_cross_entropy(9, 1000, 1.0f / 7, 4);
    bk_lora(1, 13, 7, 1, 2.0f, 1);
    bk_lora(5, 12, 10, 2, 0.5f, 1);
    bk_lora(40, 100, 72, 8, 2.0f, 1);
    bk_lora(3, 16, 16, 4, 1.0f, 0);
    bk_zero(1);
    bk_zero(1000);
    bk_sumsq(0);
    bk_sumsq(1);
    bk_sumsq(1000);
    bk_sumsq(300001);  // several of the CPU's chunks of 65536
    bk_adamw(1);
    bk_adamw(37);
    bk_adamw(70001);  // above the CPU's OpenMP threshold
    const size_t dn[3] = {1, 1000, 70001};
    for (int i = 0; i < 3; i++) {
        bk_dropout(dn[i], 0.1f);
        bk_dropout(dn[i], 0.5f);
    }
}

int main(int argc, char **argv) {
    filter = argc > 1 ? argv[1] : NULL;
    fd_all();
    be[nbe++] = ops_ref_new();
    be[nbe] = ops_cpu_new(0);
    if (be[nbe]) nbe++;
    else CHECKF(0, "ops_cpu_new: %s", ql_errmsg());
    be[nbe] = ops_cuda_new(0);
    if (be[nbe]) nbe++;
    else fprintf(stderr, "cuda: not available (%s); its cases are skipped\n", ql_errmsg());
    for (int b = 0; b < nbe; b++) {
        ops *o = be[b];
        CHECKF(o->rmsnorm_backward && o->rope_backward && o->attention_train && o->attention_backward &&
                   o->swiglu_backward && o->matmul_backward_input && o->cross_entropy && o->lora_forward &&
                   o->lora_backward && o->dropout && o->zero && o->sumsq && o->adamw,
               "backend %s lacks a training op", o->name);
    }
    backends_all();
    for (int b = 0; b < nbe; b++) ops_delete(be[b]);
    return test_finish("test_grad");
}
