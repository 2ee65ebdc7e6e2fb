// sample.c: see sample.h.
#include "sample.h"

#include <math.h>
#include <stdlib.h>

void sampler_init(sampler *s, float temperature, int top_k, float top_p, uint64_t seed) {
    s->temperature = temperature, s->top_k = top_k, s->top_p = top_p;
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
    sampler_penalties(s, 1.0f, 0.0f, 0.0f, 0.0f);
    s->nhist = 0;
}

void sampler_penalties(sampler *s, float repetition, float frequency, float presence, float min_p) {
    s->repetition = repetition, s->frequency = frequency, s->presence = presence, s->min_p = min_p;
}

void sampler_reset_history(sampler *s) { s->nhist = 0; }

const char *sample_penalties_check(const sample_penalties *p) {
    if (!(p->repetition > 0 && p->repetition <= 10)) return "repetition-penalty: expected (0, 10] (1 is off)";
    if (!(p->frequency >= -2 && p->frequency <= 2)) return "frequency-penalty: expected [-2, 2] (0 is off)";
    if (!(p->presence >= -2 && p->presence <= 2)) return "presence-penalty: expected [-2, 2] (0 is off)";
    if (!(p->min_p >= 0 && p->min_p <= 1)) return "min-p: expected [0, 1] (0 is off)";
    return NULL;
}

// The penalties on the logits of the tokens in the history (each distinct token once)
static void apply_penalties(const sampler *s, float *logits, int V) {
    const float rep = s->repetition > 0 ? s->repetition : 1.0f;  // 0: a zeroed struct, off
    if (rep == 1.0f && s->frequency == 0.0f && s->presence == 0.0f) return;
    const int n = s->nhist < SAMPLER_HISTORY ? s->nhist : SAMPLER_HISTORY;
    for (int i = 0; i < n; i++) {
        const int t = s->hist[i];
        int seen = 0, count = 1;
        for (int j = 0; j < i && !seen; j++) seen = s->hist[j] == t;
        if (seen || t < 0 || t >= V) continue;
        for (int j = i + 1; j < n; j++) count += s->hist[j] == t;
        float l = logits[t];
        if (rep != 1.0f) l = l > 0 ? l / rep : l * rep;
        logits[t] = l - s->frequency * (float)count - s->presence;
    }
}

static int remember(sampler *s, int id) {
    s->hist[s->nhist % SAMPLER_HISTORY] = id;
    s->nhist = s->nhist + 1 == 2 * SAMPLER_HISTORY ? SAMPLER_HISTORY : s->nhist + 1;  // the ring stays full
    return id;
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
    apply_penalties(s, logits, V);
    if (s->temperature <= 0) return remember(s, argmax(logits, V));
    float mx = logits[argmax(logits, V)];
    cand *c = malloc(sizeof(cand) * (size_t)V);
    if (!c) return remember(s, argmax(logits, V));
    double sum = 0;
    for (int i = 0; i < V; i++) {
        c[i].p = expf((logits[i] - mx) / s->temperature);  // the most likely is 1
        if (c[i].p < s->min_p) c[i].p = 0;
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
    return remember(s, id);
}
