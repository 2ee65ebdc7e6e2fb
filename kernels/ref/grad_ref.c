// grad_ref.c: the training ops' reference (see grad_ref.h). Naive loops in
// fp64, single thread; the fp32 table entries wrap them.
#include "grad_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"

// ---- fp64 reference ----

void ref64_rmsnorm(double *out, const double *x, const double *w, int N, int C, double eps) {
    for (int n = 0; n < N; n++) {
        const double *xr = x + (size_t)n * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += xr[c] * xr[c];
        double r = 1.0 / sqrt(ss / C + eps);
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] = xr[c] * r * w[c];
    }
}

void ref64_rmsnorm_backward(double *dx, double *dw, const double *dy, const double *x, const double *w, int N, int C,
                            double eps) {
    for (int n = 0; n < N; n++) {
        const double *xr = x + (size_t)n * C, *g = dy + (size_t)n * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += xr[c] * xr[c];
        double r = 1.0 / sqrt(ss / C + eps);
        // dxn = dy*w; dx = r * (dxn - xn * mean(dxn * xn)), xn = x*r
        double dot = 0;
        for (int c = 0; c < C; c++) dot += g[c] * w[c] * xr[c] * r;
        dot /= C;
        for (int c = 0; c < C; c++) {
            dx[(size_t)n * C + c] += r * (g[c] * w[c] - xr[c] * r * dot);
            if (dw) dw[c] += g[c] * xr[c] * r;
        }
    }
}

void ref64_rope(double *x, const int *pos, int N, int H, int D, const double *inv_freq, int inverse) {
    int half = D / 2;
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            double *v = x + ((size_t)n * H + h) * D;
            for (int i = 0; i < half; i++) {
                double a = (double)pos[n] * inv_freq[i];
                double c = cos(a), s = inverse ? -sin(a) : sin(a);
                double x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x1 * c + x0 * s;
            }
        }
}

void ref64_attention_train(double *out, double *lse, const double *q, const double *k, const double *v,
                           const int *seg_start, int N, int H, int Hkv, int D) {
    int group = H / Hkv;
    double scale = 1.0 / sqrt((double)D);
    double *p = mallocCheck(sizeof(double) * (size_t)(N > 0 ? N : 1));
    for (int n = 0; n < N; n++) {
        QL_ASSERT(seg_start[n] >= 0 && seg_start[n] <= n);
        for (int h = 0; h < H; h++) {
            const double *qv = q + ((size_t)n * H + h) * D;
            int kh = h / group;
            double mx = -INFINITY, sum = 0;
            for (int t = seg_start[n]; t <= n; t++) {
                const double *kv = k + ((size_t)t * Hkv + kh) * D;
                double d = 0;
                for (int i = 0; i < D; i++) d += qv[i] * kv[i];
                p[t] = d * scale;
                if (p[t] > mx) mx = p[t];
            }
            for (int t = seg_start[n]; t <= n; t++) sum += (p[t] = exp(p[t] - mx));
            double *ov = out + ((size_t)n * H + h) * D;
            for (int i = 0; i < D; i++) {
                double acc = 0;
                for (int t = seg_start[n]; t <= n; t++) acc += p[t] * v[((size_t)t * Hkv + kh) * D + i];
                ov[i] = acc / sum;
            }
            lse[(size_t)n * H + h] = mx + log(sum);
        }
    }
    free(p);
}

// With P[n,t] = exp(s[n,t] - lse[n]), s = scale * q.k:
//   dv[t] += P dout[n];  dP = dout[n].v[t];  dS = P (dP - dout[n].out[n])
//   dq[n] += scale * dS k[t];  dk[t] += scale * dS q[n]
void ref64_attention_backward(double *dq, double *dk, double *dv, const double *dout, const double *q, const double *k,
                              const double *v, const double *out, const double *lse, const int *seg_start, int N,
                              int H, int Hkv, int D) {
    int group = H / Hkv;
    double scale = 1.0 / sqrt((double)D);
    memset(dq, 0, sizeof(double) * (size_t)N * H * D);
    memset(dk, 0, sizeof(double) * (size_t)N * Hkv * D);
    memset(dv, 0, sizeof(double) * (size_t)N * Hkv * D);
    for (int n = 0; n < N; n++) {
        QL_ASSERT(seg_start[n] >= 0 && seg_start[n] <= n);
        for (int h = 0; h < H; h++) {
            size_t qo = ((size_t)n * H + h) * D;
            int kh = h / group;
            double delta = 0;
            for (int i = 0; i < D; i++) delta += dout[qo + i] * out[qo + i];
            for (int t = seg_start[n]; t <= n; t++) {
                size_t ko = ((size_t)t * Hkv + kh) * D;
                double s = 0, dp = 0;
                for (int i = 0; i < D; i++) s += q[qo + i] * k[ko + i], dp += dout[qo + i] * v[ko + i];
                double p = exp(s * scale - lse[(size_t)n * H + h]);
                double ds = p * (dp - delta) * scale;
                for (int i = 0; i < D; i++) {
                    dv[ko + i] += p * dout[qo + i];
                    dq[qo + i] += ds * k[ko + i];
                    dk[ko + i] += ds * q[qo + i];
                }
            }
        }
    }
}

void ref64_swiglu(double *out, const double *gate, const double *up, int n) {
    for (int i = 0; i < n; i++) out[i] = gate[i] / (1.0 + exp(-gate[i])) * up[i];
}

void ref64_swiglu_backward(double *dgate, double *dup, const double *dout, const double *gate, const double *up,
                           int n) {
    for (int i = 0; i < n; i++) {
        double g = gate[i], u = up[i], s = 1.0 / (1.0 + exp(-g));
        // d silu(g)/dg = s * (1 + g * (1 - s))
        dgate[i] = dout[i] * u * s * (1.0 + g * (1.0 - s));
        dup[i] = dout[i] * g * s;
    }
}

void ref64_matmul(double *out, const double *x, const double *W, int N, int rows, int cols) {
    for (int n = 0; n < N; n++)
        for (int r = 0; r < rows; r++) {
            double acc = 0;
            for (int c = 0; c < cols; c++) acc += x[(size_t)n * cols + c] * W[(size_t)r * cols + c];
            out[(size_t)n * rows + r] = acc;
        }
}

void ref64_matmul_backward_input(double *dx, const double *dy, const double *W, int N, int rows, int cols,
                                 int accumulate) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < cols; c++) {
            double acc = 0;
            for (int r = 0; r < rows; r++) acc += dy[(size_t)n * rows + r] * W[(size_t)r * cols + c];
            double *d = dx + (size_t)n * cols + c;
            *d = accumulate ? *d + acc : acc;
        }
}

void ref64_cross_entropy(double *loss, double *dlogits, const double *logits, const int *targets, int N, int V,
                         double scale) {
    for (int n = 0; n < N; n++) {
        const double *l = logits + (size_t)n * V;
        double *d = dlogits ? dlogits + (size_t)n * V : NULL;
        int t = targets[n];
        QL_ASSERT(t < V);
        if (t < 0) {
            loss[n] = 0;
            if (d) memset(d, 0, sizeof(double) * (size_t)V);
            continue;
        }
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < V; i++) if (l[i] > mx) mx = l[i];
        for (int i = 0; i < V; i++) sum += exp(l[i] - mx);
        double lse = mx + log(sum);
        loss[n] = lse - l[t];
        if (d)
            for (int i = 0; i < V; i++) d[i] = scale * (exp(l[i] - lse) - (i == t ? 1.0 : 0.0));
    }
}

void ref64_lora_forward(double *y, double *xa, const double *x, const double *A, const double *B, int N, int in,
                        int out, int R, double scaling) {
    ref64_matmul(xa, x, A, N, R, in);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) {
            double acc = 0;
            for (int r = 0; r < R; r++) acc += xa[(size_t)n * R + r] * B[(size_t)o * R + r];
            y[(size_t)n * out + o] += scaling * acc;
        }
}

void ref64_lora_backward(double *dA, double *dB, double *dx, double *dxa, const double *dy, const double *x,
                         const double *xa, const double *A, const double *B, int N, int in, int out, int R,
                         double scaling) {
    ref64_matmul_backward_input(dxa, dy, B, N, out, R, 0);  // dxa = dy @ B
    for (size_t i = 0; i < (size_t)N * R; i++) dxa[i] *= scaling;
    for (int o = 0; o < out; o++)
        for (int r = 0; r < R; r++) {
            double acc = 0;
            for (int n = 0; n < N; n++) acc += dy[(size_t)n * out + o] * xa[(size_t)n * R + r];
            dB[(size_t)o * R + r] += scaling * acc;
        }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < in; c++) {
            double acc = 0;
            for (int n = 0; n < N; n++) acc += dxa[(size_t)n * R + r] * x[(size_t)n * in + c];
            dA[(size_t)r * in + c] += acc;
        }
    if (dx) ref64_matmul_backward_input(dx, dxa, A, N, R, in, 1);
}

// ---- fp32 table entries ----

static double *to64(const float *x, size_t n) {
    double *d = mallocCheck(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}
static double *zeros64(size_t n) { return callocCheck(n ? n : 1, sizeof(double)); }
static void to32(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}
static void add32(float *dst, const double *src, size_t n) {  // dst += src, rounded once
    for (size_t i = 0; i < n; i++) dst[i] = (float)((double)dst[i] + src[i]);
}

void ref_rmsnorm(ops *o, float *out, const float *x, const float *w, int N, int C, float eps) {
    size_t n = (size_t)N * C;
    double *xx = to64(x, n), *ww = to64(w, (size_t)C), *y = zeros64(n);
    ref64_rmsnorm(y, xx, ww, N, C, eps);
    to32(out, y, n);
    free(xx), free(ww), free(y);
}

void ref_rope(ops *o, float *x, const int *pos, int N, int H, int D, const float *inv_freq) {
    size_t n = (size_t)N * H * D;
    double *xx = to64(x, n), *f = to64(inv_freq, (size_t)(D / 2));
    ref64_rope(xx, pos, N, H, D, f, 0);
    to32(x, xx, n);
    free(xx), free(f);
}

void ref_swiglu(ops *o, float *out, const float *gate, const float *up, int n) {
    double *g = to64(gate, (size_t)n), *u = to64(up, (size_t)n), *y = zeros64((size_t)n);
    ref64_swiglu(y, g, u, n);
    to32(out, y, (size_t)n);
    free(g), free(u), free(y);
}

void ref_rmsnorm_backward(ops *o, float *dx, float *dw, const float *dy, const float *x, const float *w, int N, int C,
                          float eps) {
    size_t n = (size_t)N * C;
    double *ddx = zeros64(n), *ddw = dw ? zeros64((size_t)C) : NULL;
    double *g = to64(dy, n), *xx = to64(x, n), *ww = to64(w, (size_t)C);
    ref64_rmsnorm_backward(ddx, ddw, g, xx, ww, N, C, eps);
    add32(dx, ddx, n);
    if (dw) add32(dw, ddw, (size_t)C);
    free(ddx), free(ddw), free(g), free(xx), free(ww);
}

void ref_rope_backward(ops *o, float *dx, const int *pos, int N, int H, int D, const float *inv_freq) {
    size_t n = (size_t)N * H * D;
    double *x = to64(dx, n), *f = to64(inv_freq, (size_t)(D / 2));
    ref64_rope(x, pos, N, H, D, f, 1);
    to32(dx, x, n);
    free(x), free(f);
}

void ref_attention_train(ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                         const int *seg_start, int N, int H, int Hkv, int D) {
    size_t nq = (size_t)N * H * D, nk = (size_t)N * Hkv * D;
    double *qq = to64(q, nq), *kk = to64(k, nk), *vv = to64(v, nk), *oo = zeros64(nq), *ll = zeros64((size_t)N * H);
    ref64_attention_train(oo, ll, qq, kk, vv, seg_start, N, H, Hkv, D);
    to32(out, oo, nq);
    to32(lse, ll, (size_t)N * H);
    free(qq), free(kk), free(vv), free(oo), free(ll);
}

void ref_attention_backward(ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *out, const float *lse, const int *seg_start, int N, int H,
                            int Hkv, int D) {
    size_t nq = (size_t)N * H * D, nk = (size_t)N * Hkv * D;
    double *g = to64(dout, nq), *qq = to64(q, nq), *kk = to64(k, nk), *vv = to64(v, nk), *oo = to64(out, nq),
           *ll = to64(lse, (size_t)N * H);
    double *dqq = zeros64(nq), *dkk = zeros64(nk), *dvv = zeros64(nk);
    ref64_attention_backward(dqq, dkk, dvv, g, qq, kk, vv, oo, ll, seg_start, N, H, Hkv, D);
    to32(dq, dqq, nq), to32(dk, dkk, nk), to32(dv, dvv, nk);
    free(g), free(qq), free(kk), free(vv), free(oo), free(ll), free(dqq), free(dkk), free(dvv);
}

void ref_swiglu_backward(ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         int n) {
    double *g = to64(dout, (size_t)n), *ga = to64(gate, (size_t)n), *u = to64(up, (size_t)n);
    double *dg = zeros64((size_t)n), *du = zeros64((size_t)n);
    ref64_swiglu_backward(dg, du, g, ga, u, n);
    to32(dgate, dg, (size_t)n), to32(dup, du, (size_t)n);
    free(g), free(ga), free(u), free(dg), free(du);
}

void ref_matmul_backward_input(ops *o, float *dx, const float *dy, const qweight *w, int N, int accumulate) {
    int rows = (int)w->rows, cols = (int)w->cols;
    double *W = mallocCheck(sizeof(double) * ((size_t)rows * cols + 1));
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) W[(size_t)r * cols + c] = qweight_get(w, r, c);
    double *g = to64(dy, (size_t)N * rows), *d = zeros64((size_t)N * cols);
    ref64_matmul_backward_input(d, g, W, N, rows, cols, 0);
    if (accumulate) add32(dx, d, (size_t)N * cols);
    else to32(dx, d, (size_t)N * cols);
    free(W), free(g), free(d);
}

void ref_cross_entropy(ops *o, float *loss, float *dlogits, const float *logits, const int *targets, int N, int V,
                       float scale) {
    size_t n = (size_t)N * V;
    double *l = to64(logits, n), *ls = zeros64((size_t)N), *d = dlogits ? zeros64(n) : NULL;
    ref64_cross_entropy(ls, d, l, targets, N, V, scale);
    to32(loss, ls, (size_t)N);
    if (dlogits) to32(dlogits, d, n);  // after reading logits: dlogits may alias them
    free(l), free(ls), free(d);
}

void ref_lora_forward(ops *o, float *y, float *xa, const float *x, const float *A, const float *B, int N, int in,
                      int out, int R, float scaling) {
    double *xx = to64(x, (size_t)N * in), *AA = to64(A, (size_t)R * in), *BB = to64(B, (size_t)out * R);
    double *yy = zeros64((size_t)N * out), *xaa = zeros64((size_t)N * R);
    ref64_lora_forward(yy, xaa, xx, AA, BB, N, in, out, R, scaling);
    add32(y, yy, (size_t)N * out);
    to32(xa, xaa, (size_t)N * R);
    free(xx), free(AA), free(BB), free(yy), free(xaa);
}

void ref_lora_backward(ops *o, float *dA, float *dB, float *dx, float *dxa, const float *dy, const float *x,
                       const float *xa, const float *A, const float *B, int N, int in, int out, int R, float scaling) {
    double *g = to64(dy, (size_t)N * out), *xx = to64(x, (size_t)N * in), *xaa = to64(xa, (size_t)N * R),
           *AA = to64(A, (size_t)R * in), *BB = to64(B, (size_t)out * R);
    double *dAA = zeros64((size_t)R * in), *dBB = zeros64((size_t)out * R), *dxx = dx ? zeros64((size_t)N * in) : NULL,
           *dxaa = zeros64((size_t)N * R);
    ref64_lora_backward(dAA, dBB, dxx, dxaa, g, xx, xaa, AA, BB, N, in, out, R, scaling);
    add32(dA, dAA, (size_t)R * in), add32(dB, dBB, (size_t)out * R);
    if (dx) add32(dx, dxx, (size_t)N * in);
    to32(dxa, dxaa, (size_t)N * R);
    free(g), free(xx), free(xaa), free(AA), free(BB), free(dAA), free(dBB), free(dxx), free(dxaa);
}
