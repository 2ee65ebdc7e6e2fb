// test_trainer_fd.c: the whole training step's LoRA gradients (every op's
// backward composed through the model, packed rows, two segments, NF4 base)
// against central finite differences of the trainer's own loss.
// The loss is fp32 maths, so the differences use a step of 1e-2 on parameters
// of size ~0.1 and are compared with atol 2e-4, rtol 2e-2: the fp32 rounding of
// a loss of ~6 is ~5e-7, divided by 2e-2 gives ~3e-5 of noise, and the second-order
// error of the central difference is below 1e-4 here. A wrong sign, a missing
// term or a mask leak moves gradients by far more.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/model.h"
#include "testutil.h"
#include "model/lora.h"
#include "train/trainer.h"

enum { B = 2, T = 12 };

static int tokens[B * T], targets[B * T], pos[B * T], seg[B * T];

static double loss_of(trainer *t, float scale) {
    double nll;
    long n;
    CHECK_OK(trainer_eval(t, tokens, targets, pos, seg, &nll, &n));
    return nll * scale;
}

static void run(const char *backend, int ckpt, float dropout) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/tiny_gqa", test_source_dir());
    model m;
    CHECK_OK(model_load(&m, dir, DT_NF4));
    if (test_failures) return;
    lora_adapter a;
    CHECK_OK(lora_init(&a, &m.cfg, 2, 4.0f, 0, dropout, LORA_ALL, 7));
    uint64_t rs = 99;
    for (int i = 0; i < m.cfg.n_layers * LORA_NMODULES; i++)
        for (int j = 0; j < a.w[i].out * a.rank; j++) a.w[i].B[j] = 0.05f * test_rand_normal(&rs);
    ops *o = ops_new(backend, 0);
    trainer t;
    CHECK_OK(trainer_init(&t, &m, o, &a, B, T, ckpt));
    if (test_failures) return;
    // row 0: two packed samples (7 + 5 tokens); row 1: one sample of 9 and 3 padding
    uint64_t s = 5;
    for (int n = 0; n < B * T; n++) tokens[n] = 3 + (int)(test_rand_u64(&s) % 300);
    for (int n = 0; n < B * T; n++) {
        int r = n / T, i = n % T;
        seg[n] = r == 0 ? (i < 7 ? 0 : 1) : (i < 9 ? 0 : -1);
        pos[n] = r == 0 ? (i < 7 ? i : i - 7) : (i < 9 ? i : 0);
        int last = r == 0 ? (i == 6 || i == 11) : (i >= 8);
        targets[n] = last || (r == 1 && i < 2) ? -1 : tokens[n + 1];  // a short prompt in row 1
    }
    long trained = 0;
    for (int n = 0; n < B * T; n++) trained += targets[n] >= 0;
    float scale = 1.0f / (float)trained;
    trainer_zero_grads(&t);
    double nll;
    long nt;
    CHECK_OK(trainer_step(&t, tokens, targets, pos, seg, scale, 11, &nll, &nt));
    CHECK(nt == trained);
    // with dropout the loss depends on the mask: use the same key in the probes
    if (dropout > 0) { fprintf(stderr, "dropout run: gradient computed, no FD (the eval path has no dropout)\n"); }
    int checked = 0;
    // every module of every layer is probed; under ASan+UBSan once per matrix instead of three times
    int probes = getenv("QLORA_TEST_SANITIZED") ? 1 : 3;
    for (int l = 0; l < m.cfg.n_layers && dropout == 0; l++)
        for (int k = 0; k < LORA_NMODULES; k++) {
            int i = l * LORA_NMODULES + k;
            lora_pair *p = &a.w[i];
            float *g[2] = {malloc(sizeof(float) * (size_t)a.rank * p->in), malloc(sizeof(float) * (size_t)p->out * a.rank)};
            o->to_host(o, g[0], t.dA[i], sizeof(float) * (size_t)a.rank * p->in);
            o->to_host(o, g[1], t.dB[i], sizeof(float) * (size_t)p->out * a.rank);
            for (int which = 0; which < 2; which++) {
                float *w = which ? p->B : p->A;
                int n = which ? p->out * a.rank : a.rank * p->in;
                for (int probe = 0; probe < probes; probe++) {
                    int j = (int)(test_rand_u64(&s) % (uint64_t)n);
                    float keep = w[j], h = 1e-2f;
                    w[j] = keep + h;
                    trainer_push(&t);
                    double lp = loss_of(&t, scale);
                    w[j] = keep - h;
                    trainer_push(&t);
                    double lm = loss_of(&t, scale);
                    w[j] = keep;
                    trainer_push(&t);
                    double fd = (lp - lm) / (2 * h), an = g[which][j];
                    CHECKF(fabs(fd - an) <= 2e-4 + 2e-2 * fabs(fd), "%s layer %d %s %s[%d]: analytic %.6g, fd %.6g",
                           backend, l, LORA_MODULE_NAMES[k], which ? "B" : "A", j, an, fd);
                    checked++;
                }
            }
            free(g[0]), free(g[1]);
        }
    fprintf(stderr, "trainer fd (%s, checkpoint %d, dropout %.1f): loss %.5f, %d gradient entries checked\n", backend,
            ckpt, dropout, nll * scale, checked);
    trainer_free(&t);
    ops_delete(o);
    lora_free(&a);
    model_free(&m);
}

int main(void) {
    run("cpu", 0, 0);
    run("cpu", 1, 0);
    run("ref", 0, 0);
    run("cpu", 1, 0.1f);
    return test_finish("test_trainer_fd");
}
