// testutil.c: see testutil.h.
#include "testutil.h"

#include "common/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int test_failures = 0;

int check_close(const char *what, const float *got, const float *ref, int64_t n, double atol, double rtol) {
    double maxabs = 0, maxrel = 0, se = 0, sr = 0;
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        double a = got[i], b = ref[i], d = fabs(a - b);
        if (!isfinite(a) || d > atol + rtol * fabs(b) || isnan(d)) {
            if (first < 0) first = i;
            bad++;
        }
        if (d > maxabs) maxabs = d;
        if (fabs(b) > 1e-30 && d / fabs(b) > maxrel) maxrel = d / fabs(b);
        se += d * d;
        sr += b * b;
    }
    double nmse = sr > 0 ? se / sr : se;
    fprintf(stderr, "%-48s n=%-8lld maxabs=%.3g maxrel=%.3g nmse=%.3g %s\n", what, (long long)n, maxabs,
            maxrel, nmse, bad ? "FAIL" : "ok");
    if (bad) {
        fprintf(stderr, "  %lld elements out of tolerance (atol=%g rtol=%g); first at %lld: got %.9g ref %.9g\n",
                (long long)bad, atol, rtol, (long long)first, got[first], ref[first]);
        test_failures++;
        return 0;
    }
    return 1;
}

const char *test_models_dir(void) {
    const char *d = getenv("QLORA_TEST_MODELS");
#ifdef QL_TEST_MODELS
    if (!d) d = QL_TEST_MODELS;
#endif
    if (!d || access(d, R_OK) != 0) return NULL;
    return d;
}

const char *test_path(const char *a, const char *b) {
    static char buf[8][4096];
    static int k = 0;
    char *p = buf[k++ & 7];
    snprintf(p, 4096, "%s/%s", a, b);
    return p;
}

const char *test_source_dir(void) {
#ifdef QL_SOURCE_DIR
    return QL_SOURCE_DIR;
#else
    return ".";
#endif
}

int test_finish(const char *name) {
    if (test_failures) {
        fprintf(stderr, "%s: FAILED (%d failed checks)\n", name, test_failures);
        return 1;
    }
    fprintf(stderr, "%s: passed\n", name);
    return 0;
}

uint64_t test_rand_u64(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

float test_rand_uniform(uint64_t *s) { return (float)((test_rand_u64(s) >> 40) * (1.0 / 8388608.0)) - 1.0f; }

float test_rand_normal(uint64_t *s) {
    double u1 = ((test_rand_u64(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (test_rand_u64(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void test_weight_init(test_weight *t, dtype type, int64_t rows, int64_t cols, float scale, uint64_t *seed) {
    const int64_t n = rows * cols;
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) f[i] = test_rand_normal(seed) * scale;
    memset(t, 0, sizeof *t);
    t->w.type = type, t->w.rows = rows, t->w.cols = cols;
    if (type == DT_F32) {
        t->data = f;
        t->w.data = f;
        return;
    }
    if (type == DT_F16 || type == DT_BF16) {
        uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
        for (int64_t i = 0; i < n; i++) h[i] = type == DT_F16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
        t->data = h;
        t->w.data = h;
    } else {
        t->codes = malloc((size_t)(n + 1) / 2 + 1);
        t->absmax_q = malloc((size_t)nf4_nblocks(n) + 1);
        t->absmax_scale = malloc(sizeof(float) * (size_t)(nf4_ngroups(n) + 1));
        float off;
        nf4_quantize(t->codes, t->absmax_q, t->absmax_scale, &off, f, n);
        t->w.nf4 = (nf4_data){.n = n, .codes = t->codes, .absmax_q = t->absmax_q, .absmax_scale = t->absmax_scale,
                              .absmax_offset = off};
    }
    free(f);
}

void test_weight_free(test_weight *t) {
    free(t->data), free(t->codes), free(t->absmax_q), free(t->absmax_scale);
    memset(t, 0, sizeof *t);
}

void test_lora_random(lora_adapter *a, const model_config *c, int rank, float alpha, int rslora, unsigned targets,
                      uint64_t seed) {
    CHECK_OK(lora_init(a, c, rank, alpha, rslora, 0.0f, targets, seed));
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++) {
        lora_pair *p = &a->w[i];
        if (!p->B) continue;
        for (int j = 0; j < p->out * rank; j++) p->B[j] = 0.3f * test_rand_normal(&seed);
    }
}
