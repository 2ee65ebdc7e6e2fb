// curve.c: see curve.h.
#include "curve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/fileio.h"

int curve_write_svg(const char *path, const float *train, int n_train, const int *val_step, const float *val,
                    int n_val, const char *title) {
    const int W = 640, H = 360, L = 60, R = 20, T = 40, B = 40;
    float lo = 1e30f, hi = -1e30f;
    for (int i = 0; i < n_train; i++) lo = train[i] < lo ? train[i] : lo, hi = train[i] > hi ? train[i] : hi;
    for (int i = 0; i < n_val; i++) lo = val[i] < lo ? val[i] : lo, hi = val[i] > hi ? val[i] : hi;
    if (n_train + n_val == 0) lo = 0, hi = 1;
    if (hi - lo < 1e-6f) hi = lo + 1e-6f;
    int steps = n_train > 0 ? n_train : 1;  // train[i] is the loss of step i+1; val points at steps 0..n
    size_t cap = 8192 + 48 * (size_t)(n_train + 2 * n_val);
    char *s = malloc(cap);
    if (!s) return ql_err(QL_ENOMEM, "out of memory");
    size_t k = 0;
#define OUT(...) k += (size_t)snprintf(s + k, cap - k, __VA_ARGS__)
#define PX(i) (L + (double)(W - L - R) * (i) / steps)
#define PY(v) (T + (double)(H - T - B) * (hi - (v)) / (hi - lo))
    OUT("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    OUT("<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    OUT("<text x=\"%d\" y=\"20\">%s</text>\n", L, title);
    // grid and tick labels: five loss levels, steps at quarters
    for (int g = 0; g <= 4; g++) {
        double v = lo + (hi - lo) * g / 4.0, y = PY(v);
        OUT("<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>", L, y, W - R, y);
        OUT("<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>\n", L - 4, y + 4, v);
        int st = (int)((long long)steps * g / 4);
        double x = PX(st);
        OUT("<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e0e0e0\"/>", x, T, x, H - B);
        OUT("<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", x, H - B + 14, st);
    }
    OUT("<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, H - B, W - R, H - B);
    OUT("<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, T, L, H - B);
    OUT("<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2, H - 8);
    OUT("<text x=\"14\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 14 %d)\">loss</text>\n", (T + H - B) / 2,
        (T + H - B) / 2);
    OUT("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
    for (int i = 0; i < n_train; i++) OUT("%.1f,%.1f ", PX(i + 1), PY(train[i]));
    OUT("\"/>\n");
    if (n_val > 1) {  // the validation curve joins its points
        OUT("<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\" points=\"");
        for (int i = 0; i < n_val; i++) OUT("%.1f,%.1f ", PX(val_step[i]), PY(val[i]));
        OUT("\"/>\n");
    }
    for (int i = 0; i < n_val; i++)
        OUT("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n", PX(val_step[i]), PY(val[i]));
    OUT("<text x=\"%d\" y=\"%d\" fill=\"#1f77b4\">train loss</text>", W - R - 150, T - 8);
    OUT("<text x=\"%d\" y=\"%d\" fill=\"#d62728\">val loss</text>\n</svg>\n", W - R - 70, T - 8);
#undef OUT
#undef PX
#undef PY
    int rc = file_write_atomic(path, s, k);
    free(s);
    return rc;
}
