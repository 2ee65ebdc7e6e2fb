// sample.c: see sample.h.
#include "sample.h"

#include <math.h>
#include <stdlib.h>

void sampler_init(sampler *s, float temperature, int top_k, float top_p, uint64_t seed) {
    s->temperature = temperature, s->top_k = top_k, s->top_p = top_p;
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

static float rand_unit(sampler *s) {  // [0, 1)
    uint64_t x = s->rng;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    s->rng = x;
    return (float)((x * 0x2545F4914F6CDD1DULL) >> 40) / 16777216.0f;
}

int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

typedef struct {
    float p;
    int id;
} cand;

static int cmp_desc(const void *a, const void *b) {
    float x = ((const cand *)a)->p, y = ((const cand *)b)->p;
    return x < y ? 1 : x > y ? -1 : ((const cand *)a)->id - ((const cand *)b)->id;
}

int sampler_next(sampler *s, float *logits, int V) {
    if (s->temperature <= 0) return argmax(logits, V);
    float mx = logits[argmax(logits, V)];
    cand *c = malloc(sizeof(cand) * (size_t)V);
    if (!c) return argmax(logits, V);
    double sum = 0;
    for (int i = 0; i < V; i++) {
        c[i].p = expf((logits[i] - mx) / s->temperature);
        c[i].id = i;
        sum += c[i].p;
    }
    int n = V;
    if ((s->top_k > 0 && s->top_k < V) || s->top_p < 1.0f) {
        qsort(c, (size_t)V, sizeof(cand), cmp_desc);
        if (s->top_k > 0 && s->top_k < n) n = s->top_k;
        if (s->top_p < 1.0f) {
            double tot = 0, lim = 0;
            for (int i = 0; i < n; i++) tot += c[i].p;
            for (int i = 0; i < n; i++) {
                lim += c[i].p;
                if (lim >= s->top_p * tot) { n = i + 1; break; }
            }
        }
        sum = 0;
        for (int i = 0; i < n; i++) sum += c[i].p;
    }
    double r = rand_unit(s) * sum, acc = 0;
    int id = c[n - 1].id;
    for (int i = 0; i < n; i++) {
        acc += c[i].p;
        if (r < acc) { id = c[i].id; break; }
    }
    free(c);
    return id;
}
