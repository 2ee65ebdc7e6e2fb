// sample.h: choosing the next token from logits: greedy, temperature, top-k, top-p.
#ifndef QL_SAMPLE_H
#define QL_SAMPLE_H

#include <stdint.h>

typedef struct {
    float temperature;  // 0: greedy (argmax)
    int top_k;          // 0: off
    float top_p;        // 1: off
    uint64_t rng;       // xorshift64* state, from the seed
} sampler;

void sampler_init(sampler *s, float temperature, int top_k, float top_p, uint64_t seed);
// logits (V) may be modified. Returns the token id.
int sampler_next(sampler *s, float *logits, int V);
// index of the largest value (the first on ties)
int argmax(const float *x, int n);

#endif
