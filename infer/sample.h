// sample.h: choosing the next token from logits: greedy, temperature, top-k, top-p,
// min-p, and the repetition, frequency and presence penalties.
#ifndef QL_SAMPLE_H
#define QL_SAMPLE_H

#include <stdint.h>

#define SAMPLER_HISTORY 256  // the generated tokens the penalties look at (the last ones)

typedef struct {
    float temperature;  // 0: greedy (argmax)
    int top_k;          // 0: off
    float top_p;        // 1: off
    uint64_t rng;       // xorshift64* state, from the seed
    // Penalties on the tokens this answer generated so far (the last
    // SAMPLER_HISTORY), applied to the logits before anything else, greedy
    // included. For each such token t seen c times: with repetition r (1: off) its
    // logit is divided by r when positive and multiplied by r otherwise (as the
    // Hugging Face and llama.cpp samplers do); then frequency * c + presence is
    // subtracted (0: off; OpenAI's frequency_penalty and presence_penalty).
    float repetition, frequency, presence;  // all 0 (a zeroed struct): off, as 1, 0, 0
    float min_p;  // 0: off; else only tokens with p >= min_p * p(most likely) remain
    int hist[SAMPLER_HISTORY];
    int nhist;    // tokens generated since sampler_init / sampler_reset_history
} sampler;

// The penalties and min-p as the command line and request files give them.
typedef struct {
    float repetition, frequency, presence, min_p;
} sample_penalties;
#define SAMPLE_PENALTIES_OFF ((sample_penalties){1.0f, 0.0f, 0.0f, 0.0f})
// NULL when they are in range (repetition in (0, 10], frequency and presence in
// [-2, 2] as OpenAI's, min_p in [0, 1]), else what is wrong.
const char *sample_penalties_check(const sample_penalties *p);

// No penalties, no min-p.
void sampler_init(sampler *s, float temperature, int top_k, float top_p, uint64_t seed);
void sampler_penalties(sampler *s, float repetition, float frequency, float presence, float min_p);
// A new answer: the penalties forget the tokens of the last one.
void sampler_reset_history(sampler *s);
// logits (V) may be modified. Returns the token id, which joins the history.
int sampler_next(sampler *s, float *logits, int V);
// index of the largest value (the first on ties)
int argmax(const float *x, int n);

#endif
