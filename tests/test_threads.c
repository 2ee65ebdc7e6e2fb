// test_threads.c: the CPU backend's thread count under load (kernels/cpu/threads_cpu.h).
//   (a) threads_fit_next, the rule: alone it keeps the configured count; one
//       busy sample (a passing process) does not lower it; beside busy threads it
//       takes the cores left (at least one) from the second busy sample on; one
//       quiet sample does not raise it, a window with fewer than two busy samples
//       does; never above the configured count or the cores of its mask;
//   (b) what makes changing the count between steps safe: a decoding step (fewer
//       than MATMUL_GEMM_MIN_N rows, with and without an adapter, several
//       sequences) gives the same logits, bit for bit, with 1, 2 and 3 threads, on
//       a random NF4 model large enough that every matmul is split among threads;
//   (c) a step of MATMUL_GEMM_MIN_N rows or more runs with the configured count
//       whatever the load, and QLORA_ADAPTIVE_THREADS=0 keeps it always.
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cpu/matmul_cpu.h"
#include "kernels/cpu/threads_cpu.h"
#include "model/forward.h"
#include "model/model.h"
#include "testutil.h"

static threads_fit fit_of(int configured, int ncpu) {
    threads_fit f;
    memset(&f, 0, sizeof f);
    f.configured = configured, f.ncpu = ncpu, f.cur = configured;
    return f;
}

static void test_rule(void) {
    threads_fit f = fit_of(2, 2);
    CHECK(threads_fit_next(&f, 1) == 2);  // alone: the main thread
    CHECK(threads_fit_next(&f, 2) == 2);  // alone, a worker still spinning
    CHECK(threads_fit_next(&f, 3) == 2);  // one passing process: one busy sample
    CHECK(threads_fit_next(&f, 1) == 2);
    // another 2-thread program: 2 of ours (assumed) + 2 of its, twice
    CHECK(threads_fit_next(&f, 4) == 1);  // its first sample and the passing one's
    CHECK(threads_fit_next(&f, 3) == 1);  // now at 1: our main thread + its 2
    // it stops: quiet samples; the window still holds busy ones
    for (int i = 0; i < THREADS_FIT_WINDOW - 2; i++) CHECKF(threads_fit_next(&f, 1) == 1, "quiet sample %d", i);
    CHECK(threads_fit_next(&f, 1) == 2);  // one of its two busy samples left in the window
    // two busy loops beside 2 threads: one core left at most, from the second sample
    f = fit_of(2, 2);
    CHECK(threads_fit_next(&f, 4) == 2);
    CHECK(threads_fit_next(&f, 4) == 1);
    // 8 cores, 6 configured, 3 busy threads elsewhere: 5
    f = fit_of(6, 8);
    CHECK(threads_fit_next(&f, 6 + 3) == 6);
    CHECK(threads_fit_next(&f, 6 + 3) == 5);
    f = fit_of(6, 8);
    CHECK(threads_fit_next(&f, 1) == 6);  // never above the configured count
    f = fit_of(1, 4);
    threads_fit_next(&f, 50);
    CHECK(threads_fit_next(&f, 50) == 1);
    // cores outside our mask: their threads are not counted against us
    f = fit_of(2, 2);
    f.extra_cpus = 2;
    threads_fit_next(&f, 2 + 2);
    CHECK(threads_fit_next(&f, 2 + 2) == 2);
    threads_fit_next(&f, 2 + 2 + 1);
    CHECK(threads_fit_next(&f, 2 + 2 + 1) == 1);
}

#define NSEQ 3
#define STEPS 3

// Logits of STEPS decoding steps of NSEQ sequences (the second with adapter a),
// after a prompt of 5 tokens each, with `threads` OpenMP threads.
static void decode_logits(model *m, ops *o, const lora_adapter *a, int threads, float *out) {
    const int V = m->cfg.vocab_size;
    fwd_state f;
    CHECK_OK(fwd_init_slots(&f, m, o, 16, 16, NSEQ));
    omp_set_num_threads(threads);
    for (int s = 0; s < NSEQ; s++) {
        int prompt[5];
        for (int i = 0; i < 5; i++) prompt[i] = (7 * s + 13 * i + 1) % V;
        fwd_seq q = {5, 0, s, s == 1 ? a : NULL, 1.0f};
        CHECK_OK(fwd_batch(&f, out, prompt, &q, 1, 0));
    }
    for (int t = 0; t < STEPS; t++) {
        int tokens[NSEQ];
        fwd_seq q[NSEQ];
        for (int s = 0; s < NSEQ; s++) {
            tokens[s] = (31 * t + 5 * s + 2) % V;
            q[s] = (fwd_seq){1, 5 + t, s, s == 1 ? a : NULL, 1.0f};
        }
        omp_set_num_threads(threads);  // as a step_begin would leave it
        CHECK_OK(fwd_batch(&f, out + (size_t)t * NSEQ * V, tokens, q, NSEQ, 0));
    }
    fwd_free(&f);
}

static void test_invariance(void) {
    model_config c = {.dim = 512, .hidden_dim = 1408, .n_layers = 2, .n_heads = 8, .n_kv_heads = 2, .head_dim = 64,
                      .vocab_size = 1024, .max_pos = 64, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .bos_id = 1,
                      .eos_id = 2, .eos_ids = {2}, .n_eos = 1, .add_bos = 1};
    model m;
    CHECK_OK(model_init_random(&m, &c, DT_NF4, 77));
    lora_adapter a;
    CHECK_OK(lora_init(&a, &c, 8, 16.0f, 0, 0.0f, 0x7f, 5));
    for (int j = 0; j < a.n_layers * LORA_NMODULES; j++)  // B nonzero, so the adapter counts
        for (int64_t e = 0; a.w[j].B && e < (int64_t)a.w[j].out * 8; e++) a.w[j].B[e] = 0.01f * (float)((e * 7919 + j) % 13 - 6);
    setenv("QLORA_ADAPTIVE_THREADS", "0", 1);  // the count is set here, not fitted to the load
    ops *o = ops_cpu_new(3);
    CHECK(o);
    const size_t n = (size_t)STEPS * NSEQ * c.vocab_size;
    float *l1 = malloc(sizeof(float) * n), *l = malloc(sizeof(float) * n);
    decode_logits(&m, o, &a, 1, l1);
    for (int th = 2; th <= 3; th++) {
        decode_logits(&m, o, &a, th, l);
        CHECKF(memcmp(l, l1, sizeof(float) * n) == 0, "decoding logits with %d threads differ from 1 thread's", th);
    }
    // (c) a large step runs with the configured count; a decoding step, with
    // fitting off, too
    omp_set_num_threads(1);
    o->step_begin(o, MATMUL_GEMM_MIN_N);
    CHECK(omp_get_max_threads() == 3);
    omp_set_num_threads(1);
    o->step_begin(o, 1);
    CHECK(omp_get_max_threads() == 3);
    free(l1), free(l);
    ops_delete(o);
    lora_free(&a);
    model_free(&m);
}

int main(void) {
    test_rule();
    test_invariance();
    return test_finish("test_threads");
}
