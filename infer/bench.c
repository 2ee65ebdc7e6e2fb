// bench.c: qlora bench: prompt and decode tokens/s and peak memory, at real
// model shapes with random NF4 weights (or a real model with --base).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/cli.h"
#include "../common/err.h"
#include "../common/forward.h"
#include "../common/log.h"
#include "../common/model.h"
#include "commands.h"
#include "../train/lora.h"
#include "../train/trainer.h"

typedef struct {
    const char *name;
    model_config cfg;
} shape;

// Published shapes: TinyLlama-1.1B (TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json)
// and Llama-2-7B (meta-llama/Llama-2-7b-hf config.json).
static const shape shapes[] = {
    {"tinyllama-1.1b", {.dim = 2048, .hidden_dim = 5632, .n_layers = 22, .n_heads = 32, .n_kv_heads = 4,
                        .head_dim = 64, .vocab_size = 32000, .max_pos = 2048, .norm_eps = 1e-5f,
                        .rope_theta = 10000.0f, .bos_id = 1, .eos_id = 2, .add_bos = 1}},
    {"llama2-7b", {.dim = 4096, .hidden_dim = 11008, .n_layers = 32, .n_heads = 32, .n_kv_heads = 32,
                   .head_dim = 128, .vocab_size = 32000, .max_pos = 4096, .norm_eps = 1e-5f,
                   .rope_theta = 10000.0f, .bos_id = 1, .eos_id = 2, .add_bos = 1}},
};

static int bench_one(const char *name, model *m, ops *o, int P, int G, int reps) {
    fwd_state f;
    int rc = fwd_init(&f, m, o, P + G, P);
    if (rc) return rc;
    int V = m->cfg.vocab_size;
    int *toks = malloc(sizeof(int) * (size_t)P);
    float *logits = malloc(sizeof(float) * (size_t)V);
    if (!toks || !logits) rc = ql_err(QL_ENOMEM, "out of memory");
    for (int i = 0; i < P && !rc; i++) toks[i] = 3 + (i * 7919) % (V - 3);
    double best_pp = 0, best_tg = 0;
    for (int r = 0; r < reps && !rc; r++) {
        double t0 = time_now();
        rc = fwd_forward(&f, logits, toks, P, 0, 0);
        double t1 = time_now();
        for (int g = 0; g < G && !rc; g++) {
            int t = 3 + (g * 104729) % (V - 3);
            rc = fwd_forward(&f, logits, &t, 1, P + g, 0);
        }
        o->sync(o);
        double t2 = time_now();
        double pp = P / (t1 - t0), tg = G / (t2 - t1);
        if (pp > best_pp) best_pp = pp;
        if (tg > best_tg) best_tg = tg;
        log_info("%s rep %d: prompt %.2f tok/s, decode %.2f tok/s", name, r, pp, tg);
    }
    size_t np, lb = model_linear_bytes(m, &np);
    if (!rc)
        printf("bench model=%s backend=%s base=%s prompt=%d gen=%d pp_tok/s=%.2f tg_tok/s=%.2f peak_rss_MB=%.1f "
               "linear_bytes_per_param=%.4f weights_MB=%.1f\n",
               name, o->name, base_dtype_name(m->base_dtype), P, G, best_pp, best_tg, mem_peak_rss() / 1e6,
               (double)lb / (double)np, model_weight_bytes(m) / 1e6);
    fflush(stdout);
    free(toks);
    free(logits);
    fwd_free(&f);
    return rc;
}

// Training: trained tokens/s of full steps (forward, backward, AdamW) on one
// packed row of T tokens, all trained, LoRA rank R on all seven modules.
static int bench_train(const char *name, model *m, ops *o, int T, int R, int reps) {
    lora_adapter a;
    int rc = lora_init(&a, &m->cfg, R, 2.0f * R, 0, 0.0f, LORA_ALL, 1);
    if (rc) return rc;
    trainer t;
    train_params tp = {0};
    rc = trainer_init(&t, m, o, &a, 1, T, 0);
    if (!rc) rc = train_params_init(&tp, &t);
    int *buf = malloc(sizeof(int) * 4 * (size_t)T);
    if (!rc && !buf) rc = ql_err(QL_ENOMEM, "out of memory");
    adamw_config oc = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .max_grad_norm = 1.0f,
                       .schedule = SCHED_CONSTANT, .total_steps = reps + 1};
    double best = 0;
    for (int r = 0; r <= reps && !rc; r++) {  // the first step warms up
        int V = m->cfg.vocab_size;
        for (int i = 0; i < T; i++) {
            buf[i] = 3 + (i * 7919 + r) % (V - 3);
            buf[T + i] = i + 1 < T ? 3 + ((i + 1) * 7919 + r) % (V - 3) : -1;
            buf[2 * T + i] = i, buf[3 * T + i] = 0;
        }
        double t0 = time_now(), nll;
        long n;
        trainer_zero_grads(&t);
        rc = trainer_step(&t, buf, buf + T, buf + 2 * T, buf + 3 * T, 1.0f / (T - 1), 0, &nll, &n);
        if (!rc) train_update(&t, &tp, &oc, r + 1, oc.lr);
        double tps = n / (time_now() - t0);
        if (r > 0 && tps > best) best = tps;
        log_info("%s train step %d: %.1f trained tok/s, loss %.4f", name, r, tps, nll / n);
    }
    size_t np;
    model_linear_bytes(m, &np);
    if (!rc)
        printf("bench_train model=%s backend=%s base=%s seq=%d rank=%d trained_tok/s=%.2f peak_rss_MB=%.1f\n", name,
               o->name, base_dtype_name(m->base_dtype), T, R, best, mem_peak_rss() / 1e6);
    fflush(stdout);
    free(buf);
    train_params_free(&tp);
    trainer_free(&t);
    lora_free(&a);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    const char *which, *base, *backend, *base_dtype, *save;
    int P, G, threads, reps, verbose, train, rank;
    cli_opt opts[] = {
        {"--shape", OPT_STR, &which, "tinyllama-1.1b", "tinyllama-1.1b, llama2-7b or all (random weights)"},
        {"--base", OPT_STR, &base, "", "benchmark this model instead of a random one (its load time is reported)"},
        {"--save-base", OPT_STR, &save, "", "also write the random model to this base file (no tokenizer), to time loading it"},
        {"--base-dtype", OPT_STR, &base_dtype, "nf4", "linear weights: nf4, f16 or f32 (random shapes: nf4 or f16)"},
        {"--prompt-tokens", OPT_INT, &P, "128", "prompt length"},
        {"--gen-tokens", OPT_INT, &G, "64", "tokens to decode"},
        {"--reps", OPT_INT, &reps, "3", "repetitions; the best is reported"},
        {"--backend", OPT_STR, &backend, "cpu", "auto, cpu or cuda"},
        {"--threads", OPT_INT, &threads, "0", "CPU threads; 0 is all cores"},
        {"--train", OPT_FLAG, &train, NULL, "measure LoRA training steps instead (--prompt-tokens is the sequence)"},
        {"--rank", OPT_INT, &rank, "16", "LoRA rank for --train (all seven modules)"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more"},
    };
    int pr = cli_parse("bench", "Prompt and decode tokens/s and peak memory. Prints one 'bench ...' line per model.",
                       opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    int bd = base_dtype_parse(base_dtype);
    if (bd < 0 || P < 1 || G < 1 || reps < 1) {
        fprintf(stderr, "qlora bench: error: bad --base-dtype, --prompt-tokens, --gen-tokens or --reps\n");
        return 2;
    }
    ops *o = ops_new(backend, threads);
    if (!o) { fprintf(stderr, "qlora bench: error: %s\n", ql_errmsg()); return 1; }
    int rc = QL_OK, found = 0;
    if (base[0]) {
        model m;
        found = 1;
        double t0 = time_now();
        rc = model_load(&m, base, (dtype)bd);
        if (!rc) {
            printf("load model=%s load_s=%.3f\n", base, time_now() - t0);
            rc = train ? bench_train(base, &m, o, P, rank, reps) : bench_one(base, &m, o, P, G, reps);
            model_free(&m);
        }
    } else {
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes && !rc; i++) {
            if (strcmp(which, "all") && strcmp(which, shapes[i].name)) continue;
            found = 1;
            model m;
            double t0 = time_now();
            rc = model_init_random(&m, &shapes[i].cfg, bd == DT_F16 ? DT_F16 : DT_NF4, 1234);
            if (rc) break;
            log_info("%s: random weights made in %.1f s", shapes[i].name, time_now() - t0);
            if (save[0]) {
                rc = model_save_base(&m, save);
                if (rc) { model_free(&m); break; }
                log_info("wrote %s", save);
            }
            rc = train ? bench_train(shapes[i].name, &m, o, P, rank, reps) : bench_one(shapes[i].name, &m, o, P, G, reps);
            model_free(&m);
        }
    }
    ops_delete(o);
    if (!found) { fprintf(stderr, "qlora bench: error: --shape: unknown shape '%s'\n", which); return 2; }
    if (rc) { fprintf(stderr, "qlora bench: error: %s\n", ql_errmsg()); return 1; }
    return 0;
}
