// test_cuda_train.c: the CUDA backend end to end against the CPU backend, on
// tests/fixtures/models/tiny_gqa (3 layers, GQA 6/2 heads, Llama 3 RoPE).
//   (a) training (plain, and with gradient checkpointing): 6 AdamW steps of a rank-4 adapter on all seven modules, two
//       packed rows of 16 (two samples in row 0, padding in row 1), gradient
//       accumulation over 2 micro-batches, dropout 0.1 (the same mask on both
//       backends: ops.h dropout_keep); per-step loss and gradient norm, then the
//       final weights and AdamW moments (trainer_get_state);
//   (b) multi-adapter inference: three sequences in one batch (the adapter from
//       (a), a random one at scale 0.5, the base), prefill then 6 decode steps
//       fed the CPU's greedy tokens: the logits of every step.
// Both run with an F32 base and with an NF4 base. With the argument "ref" the
// reference backend stands in for CUDA (test_device_standin, label cpu): it keeps
// its memory apart from the host's the way a GPU does, so CI runs this test's
// logic and every device copy of the trainer and of the forward pass.
//
// Tolerances. F32 base: every matmul on CUDA is fp32 (SGEMM, no TF32; the GEMV
// for N <= 8), so the backends differ only in summation order (~1e-6 relative)
// and expf's last bits: losses and norms within 2e-5 relative, logits within
// 1e-4, and after 6 Adam steps of lr 1e-2 the weights within 1e-3 of each other
// relative to the largest update (Adam's m/sqrt(v) turns a gradient's rounding
// into a relative change of the step where g is tiny: 1.2e-4 measured with ref
// as the device, and 3e-6 on the moments).
// NF4 base: prefill (N > 8) and the training matmuls run on tensor cores with x
// rounded to fp16 and the backward on TF32 (2^-11 relative per operand), so
// the losses move by ~1e-3 relative; bounds 1e-2 on losses and norms, 3e-2 on
// logits (|logits| ~ 1..5), and the weights within 10% of the update: these
// catch a missing term, a wrong mask or a wrong index (O(1) effects), not
// rounding.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/forward.h"
#include "model/model.h"
#include "kernels/ops.h"
#include "testutil.h"
#include "model/lora.h"
#include "train/trainer.h"
#ifdef QLORA_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

enum { B = 2, T = 16, MB = 2, STEPS = 6, RANK = 4, GEN = 6 };

typedef struct {
    double loss[STEPS], norm[STEPS];
    float *state;  // weights, m, v: 3 * n_params
    int64_t n_params;
    lora_adapter a;  // the trained adapter (host)
} train_run;

static int tokens[MB][B * T], targets[MB][B * T], pos[MB][B * T], seg[MB][B * T];

static void make_batches(void) {
    uint64_t s = 17;
    for (int mb = 0; mb < MB; mb++)
        for (int n = 0; n < B * T; n++) {
            int r = n / T, i = n % T, cut = 6 + 3 * mb;
            tokens[mb][n] = 3 + (int)(test_rand_u64(&s) % 300);
            seg[mb][n] = r == 0 ? (i < cut ? 0 : 1) : (i < 11 ? 0 : -1);
            pos[mb][n] = r == 0 ? (i < cut ? i : i - cut) : (i < 11 ? i : 0);
        }
    for (int mb = 0; mb < MB; mb++)
        for (int n = 0; n < B * T; n++) {
            int r = n / T, i = n % T, cut = 6 + 3 * mb;
            int last = r == 0 ? (i == cut - 1 || i == T - 1) : i >= 10;
            targets[mb][n] = last ? -1 : tokens[mb][n + 1];
        }
}

static void train(const char *dir, dtype base, ops *o, int ckpt, train_run *run) {
    int f0 = test_failures;  // earlier cases' failures do not stop this one
    model m;
    CHECK_OK(model_load(&m, dir, base));
    CHECK_OK(lora_init(&run->a, &m.cfg, RANK, 8.0f, 0, 0.1f, LORA_ALL, 3));
    if (test_failures > f0) return;
    trainer t;
    CHECK_OK(trainer_init(&t, &m, o, &run->a, B, T, ckpt));
    if (test_failures > f0) return;
    adamw_config oc = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f,
                       .schedule = SCHED_CONSTANT, .total_steps = STEPS, .max_grad_norm = 1.0f};
    long total = 0;
    for (int mb = 0; mb < MB; mb++)
        for (int n = 0; n < B * T; n++) total += targets[mb][n] >= 0;
    for (int step = 0; step < STEPS; step++) {
        trainer_zero_grads(&t);
        double loss = 0;
        for (int mb = 0; mb < MB; mb++) {
            double nll;
            long k;
            CHECK_OK(trainer_step(&t, tokens[mb], targets[mb], pos[mb], seg[mb], 1.0f / (float)total,
                                  1000u * (uint64_t)step + (uint64_t)mb, &nll, &k));
            loss += nll / (double)total;
        }
        run->loss[step] = loss;
        run->norm[step] = train_update(&t, &oc, step + 1, oc.lr);
    }
    run->n_params = t.n_params;
    run->state = malloc(sizeof(float) * 3 * (size_t)t.n_params);
    trainer_get_state(&t, run->state, run->state + t.n_params, run->state + 2 * t.n_params);
    trainer_pull(&t);
    trainer_free(&t);
    model_free(&m);
}

// max |a-b| / max |ref - init| over n: the difference relative to the size of the update
static double rel_to_update(const float *a, const float *b, const float *init, int64_t n) {
    double d = 0, u = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        u = fmax(u, fabs((double)b[i] - (init ? init[i] : 0)));
    }
    return d / (u > 0 ? u : 1);
}

static void compare_training(const char *what, const train_run *cu, const train_run *cpu, const float *init,
                             double tol_loss, double tol_w) {
    for (int s = 0; s < STEPS; s++) {
        fprintf(stderr, "%s step %d: loss cuda %.7f cpu %.7f, grad norm cuda %.6f cpu %.6f\n", what, s, cu->loss[s],
                cpu->loss[s], cu->norm[s], cpu->norm[s]);
        CHECKF(fabs(cu->loss[s] - cpu->loss[s]) <= tol_loss * fabs(cpu->loss[s]), "%s step %d loss", what, s);
        CHECKF(fabs(cu->norm[s] - cpu->norm[s]) <= tol_loss * fabs(cpu->norm[s]), "%s step %d grad norm", what, s);
    }
    CHECK(cu->n_params == cpu->n_params);
    if (cu->n_params != cpu->n_params) return;
    int64_t n = cpu->n_params;
    double dw = rel_to_update(cu->state, cpu->state, init, n);
    double dm = rel_to_update(cu->state + n, cpu->state + n, NULL, n);
    double dv = rel_to_update(cu->state + 2 * n, cpu->state + 2 * n, NULL, n);
    fprintf(stderr, "%s after %d steps: weights %.3g, m %.3g, v %.3g (max difference / max update; bound %g)\n", what,
            STEPS, dw, dm, dv, tol_w);
    CHECKF(dw <= tol_w && dm <= tol_w && dv <= tol_w, "%s: final state differs", what);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) b = x[i] > x[b] ? i : b;
    return b;
}

// Three sequences in one batch; logits of every step (GEN+1 steps of 3 rows of V)
// into out. feed: the tokens to decode (from the CPU run), or NULL to take the argmax
// (and write them to feed_out).
static void infer(const char *dir, dtype base, ops *o, const lora_adapter *a1, const lora_adapter *a2, float *out,
                  const int *feed, int *feed_out) {
    int f0 = test_failures;
    model m;
    CHECK_OK(model_load(&m, dir, base));
    if (test_failures > f0) return;
    const int V = m.cfg.vocab_size;
    fwd_state f;
    CHECK_OK(fwd_init_slots(&f, &m, o, 32, 64, 3));
    if (test_failures > f0) return;
    int prompt[5 + 9 + 12], np[3] = {5, 9, 12};
    uint64_t s = 23;
    for (int i = 0; i < 26; i++) prompt[i] = 3 + (int)(test_rand_u64(&s) % 300);
    const lora_adapter *ad[3] = {a1, a2, NULL};
    float sc[3] = {1.0f, 0.5f, 1.0f};
    fwd_seq q[3];
    for (int i = 0; i < 3; i++) q[i] = (fwd_seq){np[i], 0, i, ad[i], sc[i]};
    CHECK_OK(fwd_batch(&f, out, prompt, q, 3, 0));
    for (int t = 0; t < GEN; t++) {
        int next[3];
        for (int i = 0; i < 3; i++) {
            next[i] = feed ? feed[t * 3 + i] : argmax(out + ((size_t)t * 3 + i) * V, V);
            if (feed_out) feed_out[t * 3 + i] = next[i];
            q[i] = (fwd_seq){1, np[i] + t, i, ad[i], sc[i]};
        }
        CHECK_OK(fwd_batch(&f, out + (size_t)(t + 1) * 3 * V, next, q, 3, 0));
    }
    fwd_free(&f);
    model_free(&m);
}

static void run(const char *dir, dtype base, ops *cu, ops *cpu) {
    const char *bn = base == DT_NF4 ? "nf4" : "f32";
    int f32 = base == DT_F32 || strcmp(cu->name, "cuda") != 0;  // tight bounds: fp32 maths on both sides
    int f0 = test_failures;
    train_run rc = {0}, rg = {0}, rk = {0};
    train(dir, base, cpu, 0, &rc);
    train(dir, base, cu, 0, &rg);
    train(dir, base, cu, 1, &rk);  // gradient checkpointing: block forwards recomputed
    if (test_failures > f0) return;
    // the initial weights: lora_init with the same seed
    model m;
    CHECK_OK(model_load(&m, dir, base));
    lora_adapter a0;
    CHECK_OK(lora_init(&a0, &m.cfg, RANK, 8.0f, 0, 0.1f, LORA_ALL, 3));
    float *init = calloc((size_t)rc.n_params, sizeof(float));
    int64_t off = 0;
    for (int i = 0; i < m.cfg.n_layers * LORA_NMODULES; i++) {
        const lora_pair *p = &a0.w[i];
        memcpy(init + off, p->A, sizeof(float) * (size_t)RANK * p->in), off += (int64_t)RANK * p->in;
        memcpy(init + off, p->B, sizeof(float) * (size_t)p->out * RANK), off += (int64_t)p->out * RANK;
    }
    char what[64];
    snprintf(what, sizeof what, "train %s", bn);
    compare_training(what, &rg, &rc, init, f32 ? 2e-5 : 1e-2, f32 ? 1e-3 : 0.1);
    snprintf(what, sizeof what, "train %s checkpointed", bn);
    compare_training(what, &rk, &rc, init, f32 ? 2e-5 : 1e-2, f32 ? 1e-3 : 0.1);
    // trainer_pull gave the CUDA run's host adapter its final weights, bit for bit
    int64_t bad = 0;
    off = 0;
    for (int i = 0; i < m.cfg.n_layers * LORA_NMODULES; i++) {
        const lora_pair *p = &rg.a.w[i];
        for (int j = 0; j < RANK * p->in; j++) bad += p->A[j] != rg.state[off++];
        for (int j = 0; j < p->out * RANK; j++) bad += p->B[j] != rg.state[off++];
    }
    CHECKF(bad == 0, "trainer_pull: %lld weights of the host adapter differ from the backend's", (long long)bad);

    // (b): a second adapter with random B at scale 0.5
    lora_adapter a2;
    CHECK_OK(lora_init(&a2, &m.cfg, 8, 16.0f, 0, 0.0f, LORA_Q | LORA_V | LORA_DOWN, 9));
    uint64_t s = 31;
    for (int i = 0; i < m.cfg.n_layers * LORA_NMODULES; i++)
        if (a2.w[i].B)
            for (int j = 0; j < a2.w[i].out * 8; j++) a2.w[i].B[j] = 0.1f * test_rand_normal(&s);
    const int V = m.cfg.vocab_size;
    size_t nl = (size_t)(GEN + 1) * 3 * V;
    float *lc = malloc(sizeof(float) * nl), *lg = malloc(sizeof(float) * nl);
    int feed[GEN * 3];
    infer(dir, base, cpu, &rc.a, &a2, lc, NULL, feed);
    infer(dir, base, cu, &rc.a, &a2, lg, feed, NULL);
    int agree = 0;
    for (int t = 0; t <= GEN; t++) {
        char w[96];
        snprintf(w, sizeof w, "infer %s step %d (3 sequences: trained adapter, random at 0.5, base)", bn, t);
        double tol = f32 ? 1e-4 : (t == 0 ? 3e-2 : 1e-2);  // NF4 decode: GEMV with exact weights, fp32 x
        check_close(w, lg + (size_t)t * 3 * V, lc + (size_t)t * 3 * V, 3 * V, tol, tol);
        for (int i = 0; i < 3; i++)
            agree += argmax(lg + ((size_t)t * 3 + i) * V, V) == argmax(lc + ((size_t)t * 3 + i) * V, V);
    }
    fprintf(stderr, "infer %s: %d of %d greedy tokens agree\n", bn, agree, (GEN + 1) * 3);
    if (f32) CHECKF(agree == (GEN + 1) * 3, "infer f32: greedy tokens differ");
    free(lc), free(lg), free(init), free(rc.state), free(rg.state), free(rk.state);
    lora_free(&a0), lora_free(&a2), lora_free(&rc.a), lora_free(&rg.a), lora_free(&rk.a);
    model_free(&m);
}

int main(int argc, char **argv) {
    setenv("QLORA_CUDA_SYNC", "1", 0);
    // "test_cuda_train ref": the same checks with the reference backend standing in
    // for the device (its memory is reached through alloc/to_device/to_host, as a
    // GPU's), so CI runs the test's logic and the trainer's and forward's copies.
    int standin = argc > 1 && !strcmp(argv[1], "ref");
    ops *cu = standin ? ops_ref_new() : ops_cuda_new(0);
    if (!cu) {
#ifdef QLORA_HAVE_CUDA
        int count = 0;
        if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) {
            fprintf(stderr, "test_cuda_train: %d GPU(s) but ops_cuda_new failed: %s\n", count, ql_errmsg());
            return 1;
        }
#endif
        fprintf(stderr, "test_cuda_train: skipped: %s\n", ql_errmsg());
        return TEST_SKIP;
    }
    ops *cpu = ops_cpu_new(0);
    QL_ASSERT(cpu);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/tiny_gqa", test_source_dir());
    make_batches();
    run(dir, DT_F32, cu, cpu);
    run(dir, DT_NF4, cu, cpu);
    ops_delete(cu);
    ops_delete(cpu);
    return test_finish("test_cuda_train");
}
