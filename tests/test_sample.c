// test_sample.c: the sampler's penalties and min-p (infer/sample.h), against
// values worked out by hand:
//   - history [2, 2, 5] (token 2 twice), repetition 2, frequency 0.5, presence
//     0.25: logit 3 -> 3/2 - 2*0.5 - 0.25 = 0.25; logit -1 -> -1*2 - 0.5 - 0.25 =
//     -2.75; other logits untouched; greedy then picks the best penalized token;
//   - only the last SAMPLER_HISTORY tokens count (300 generated: count 256);
//   - min-p 0.1 at temperature 1: a token e^-3 = 0.05 as likely as the best is
//     never drawn in 20000 draws, one e^-1 = 0.37 as likely is (about 27%);
//   - sampler_reset_history forgets; out-of-range settings are refused by name.
#include <math.h>
#include <string.h>

#include "infer/sample.h"
#include "testutil.h"

int main(void) {
    sampler s;
    sampler_init(&s, 0.0f, 0, 1.0f, 1);
    CHECK(s.repetition == 1.0f && s.frequency == 0 && s.presence == 0 && s.min_p == 0 && s.nhist == 0);
    // the arithmetic
    sampler_penalties(&s, 2.0f, 0.5f, 0.25f, 0.0f);
    s.hist[0] = 2, s.hist[1] = 2, s.hist[2] = 5, s.nhist = 3;
    float l[8] = {0.5f, 0.1f, 3.0f, 0.2f, 0.3f, -1.0f, 0.0f, 0.4f};
    int id = sampler_next(&s, l, 8);
    CHECKF(fabsf(l[2] - 0.25f) < 1e-6f && fabsf(l[5] + 2.75f) < 1e-6f, "penalized logits %g %g", l[2], l[5]);
    CHECKF(l[0] == 0.5f && l[1] == 0.1f && l[3] == 0.2f && l[7] == 0.4f, "an unseen token's logit changed");
    CHECKF(id == 0, "greedy after the penalties: %d, expected 0 (0.5 beats 0.25)", id);
    CHECK(s.nhist == 4 && s.hist[3] == 0);  // the choice joins the history
    // without penalties the same logits give token 2
    sampler_init(&s, 0.0f, 0, 1.0f, 1);
    float l2[8] = {0.5f, 0.1f, 3.0f, 0.2f, 0.3f, -1.0f, 0.0f, 0.4f};
    CHECK(sampler_next(&s, l2, 8) == 2);
    // the window: 300 greedy picks of token 7, then frequency 0.01 subtracts 256 * 0.01
    sampler_init(&s, 0.0f, 0, 1.0f, 1);
    for (int i = 0; i < 300; i++) {
        float z[8] = {0, 0, 0, 0, 0, 0, 0, 1};
        CHECK(sampler_next(&s, z, 8) == 7);
    }
    sampler_penalties(&s, 1.0f, 0.01f, 0.0f, 0.0f);
    float w[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    sampler_next(&s, w, 8);
    CHECKF(fabsf(w[7] - (1.0f - 2.56f)) < 1e-5f, "after 300 tokens the count is %g, expected 256", (1.0f - w[7]) / 0.01f);
    sampler_reset_history(&s);
    float w2[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    sampler_next(&s, w2, 8);
    CHECK(w2[7] == 1.0f);
    // min-p
    sampler_init(&s, 1.0f, 0, 1.0f, 12345);
    sampler_penalties(&s, 1.0f, 0.0f, 0.0f, 0.1f);
    int counts[3] = {0};
    for (int i = 0; i < 20000; i++) {
        float m[3] = {0.0f, -1.0f, -3.0f};
        counts[sampler_next(&s, m, 3)]++;
        s.nhist = 0;
    }
    CHECKF(counts[2] == 0 && counts[1] > 4000 && counts[1] < 7000, "min-p 0.1: draws %d %d %d", counts[0], counts[1],
           counts[2]);
    sampler_penalties(&s, 1.0f, 0.0f, 0.0f, 0.0f);
    int c2 = 0;
    for (int i = 0; i < 20000; i++) {
        float m[3] = {0.0f, -1.0f, -3.0f};
        c2 += sampler_next(&s, m, 3) == 2;
    }
    CHECKF(c2 > 500, "without min-p the e^-3 token was drawn %d times of 20000", c2);  // expected ~730
    // a zeroed struct's penalties are off (chat_opts and requests built with designated
    // initializers leave them 0): the logits stay as they are
    sampler z0;
    memset(&z0, 0, sizeof z0);
    z0.hist[0] = 1, z0.nhist = 1;
    float zl[3] = {0.5f, 2.0f, -1.0f};
    CHECK(sampler_next(&z0, zl, 3) == 1 && zl[1] == 2.0f);
    // ranges
    sample_penalties p = SAMPLE_PENALTIES_OFF;
    CHECK(sample_penalties_check(&p) == NULL);
    p.repetition = 0;
    CHECK(sample_penalties_check(&p) && strstr(sample_penalties_check(&p), "repetition-penalty"));
    p = SAMPLE_PENALTIES_OFF, p.frequency = 3;
    CHECK(sample_penalties_check(&p) && strstr(sample_penalties_check(&p), "frequency-penalty"));
    p = SAMPLE_PENALTIES_OFF, p.presence = -2.5f;
    CHECK(sample_penalties_check(&p) && strstr(sample_penalties_check(&p), "presence-penalty"));
    p = SAMPLE_PENALTIES_OFF, p.min_p = 1.5f;
    CHECK(sample_penalties_check(&p) && strstr(sample_penalties_check(&p), "min-p"));
    return test_finish("test_sample");
}
