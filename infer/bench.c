// bench.c: qlora bench: prompt and decode tokens/s and peak memory, at real
// model shapes with random NF4 weights (or a real model with --base).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/cli.h"
#include "../common/dtype.h"
#include "../common/err.h"
#include "../common/fileio.h"
#include "../model/forward.h"
#include "../common/json.h"
#include "../common/log.h"
#include "../model/model.h"
#include "../model/shapes.h"
#include "../common/tokenizer.h"
#include "../kernels/cpu/blas_cpu.h"
#include "../kernels/cpu/matmul_cpu.h"
#include "commands.h"
#include "sample.h"
#include "../model/lora.h"
#include "../train/peft.h"
#include "../train/trainer.h"

// ---- Memory read bandwidth (issue 13): the bound that decoding streams against ----

#define BW_BYTES ((size_t)512 << 20)  // far past every cache of a workstation CPU
#define BW_REPS 5

// This machine's streaming read bandwidth in bytes/s with the threads the CPU
// backend uses (omp_get_max_threads, set by ops_new): an integer sum over a
// 512 MiB buffer (vectorized; no stores), each thread its contiguous share, the
// best of 5 passes after the buffer is first written. 0 when out of memory.
static double read_bandwidth(void) {
    static double cached;  // measured once per process
    if (cached > 0) return cached;
    size_t n = BW_BYTES / sizeof(uint64_t);
    uint64_t *buf = malloc(BW_BYTES);
    if (!buf) return 0;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = i;
    double best = 0;
    uint64_t sink = 0;
    for (int r = 0; r < BW_REPS; r++) {
        uint64_t sum = 0;
        double t0 = time_now();
#pragma omp parallel for schedule(static) reduction(+ : sum)
        for (size_t i = 0; i < n; i++) sum += buf[i];
        double bw = BW_BYTES / (time_now() - t0);
        sink ^= sum;
        if (bw > best) best = bw;
    }
    free(buf);
    log_debug("read bandwidth probe: %.2f GB/s (checksum %llx)", best / 1e9, (unsigned long long)sink);
    return cached = best;
}

// Bytes one decoded token (batch 1) reads from the weights: every linear, all of
// lm_head and one row of the embedding (KV-cache reads left out: small at short context).
static double decode_bytes_per_token(const model *m) {
    size_t np, lb = model_linear_bytes(m, &np);
    return (double)lb + (double)qweight_bytes(&m->lm_head) + (double)qweight_bytes(&m->embed) / m->cfg.vocab_size;
}

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
    // decode against the memory bound: bandwidth / bytes per token (CPU only: a
    // GPU streams its own memory, which this probe does not measure)
    double bw = strcmp(o->name, "cpu") ? 0 : read_bandwidth(), per_tok = decode_bytes_per_token(m);
    if (!rc)
        printf("bench model=%s backend=%s base=%s prompt=%d gen=%d pp_tok/s=%.2f tg_tok/s=%.2f peak_rss_MB=%.1f "
               "linear_bytes_per_param=%.4f weights_MB=%.1f decode_MB/token=%.1f read_GB/s=%.2f "
               "tg_bound_tok/s=%.2f tg_share_of_bound=%.1f%%\n",
               name, o->name, base_dtype_name(m->base_dtype), P, G, best_pp, best_tg, mem_peak_rss() / 1e6,
               (double)lb / (double)np, model_weight_bytes(m) / 1e6, per_tok / 1e6, bw / 1e9,
               bw > 0 ? bw / per_tok : 0, bw > 0 ? 100.0 * best_tg / (bw / per_tok) : 0);
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
    rc = trainer_init(&t, m, o, &a, 1, T, 0);
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
        if (!rc) train_update(&t, &oc, r + 1, oc.lr);
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
    trainer_free(&t);
    lora_free(&a);
    return rc;
}

// ---- Multi-adapter decoding (issue 4) ----

enum { MA_BASE, MA_DISTINCT, MA_SHARED, MA_NCASES };
static const char *const ma_case_names[MA_NCASES] = {"base", "distinct", "shared"};

// Batch sizes from "1,4,8,16" into b (at most nmax); *n set.
static int parse_batches(int *b, int nmax, int *n, const char *csv) {
    const char *p = csv;
    *n = 0;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 4096 || (*end && *end != ',') || *n == nmax)
            return ql_err(QL_EINVAL, "--batches: expected up to %d sizes 1..4096 like 1,4,8,16, found '%s'", nmax, csv);
        b[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (!*n) return ql_err(QL_EINVAL, "--batches: expected sizes like 1,4,8,16, found '%s'", csv);
    return QL_OK;
}

// Benchmark adapter i: rank R on the modules in targets (LORA_* bits), PEFT's
// init (A from seed 1000+i), then B (zero after init) filled with non-zero
// values, |B| in [0.001, 0.01) with a random sign (xorshift64 from a seed fixed
// by i), so every LoRA term is real work on real numbers.
static int bench_adapter(lora_adapter *a, const model_config *c, int R, unsigned targets, int i) {
    QL_CHECK(lora_init(a, c, R, 2.0f * R, 0, 0.0f, targets, 1000 + (uint64_t)i));
    uint64_t s = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
    for (int j = 0; j < a->n_layers * LORA_NMODULES; j++) {
        lora_pair *p = &a->w[j];
        for (size_t e = 0; p->B && e < (size_t)p->out * (size_t)R; e++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            float u = (float)(s >> 40) * (1.0f / 16777216.0f);  // [0, 1)
            p->B[e] = (s & 1 ? 1.0f : -1.0f) * (0.001f + 0.009f * u);
        }
    }
    return QL_OK;
}

// The backend with its LoRA ops timed: a copy of it (same ctx) whose
// lora_shrink and lora_expand add their wall time to s. The time spent in them
// is then measured inside a case's own decode steps, which the machine's load
// cannot skew the way it skews one case against another run seconds later.
typedef struct {
    ops o;       // first: forward.c calls o->lora_shrink(o, ...) with &this->o
    ops *inner;  // the real backend
    double s;    // seconds inside the LoRA ops since the last reset
} timed_ops;

static void timed_shrink(ops *o, float *xa, const float *x, const lora_seg *seg, int nseg, int in) {
    timed_ops *t = (timed_ops *)o;
    t->inner->sync(t->inner);  // a no-op on the CPU; on a device, time only this op
    double t0 = time_now();
    t->inner->lora_shrink(t->inner, xa, x, seg, nseg, in);
    t->inner->sync(t->inner);
    t->s += time_now() - t0;
}

static void timed_expand(ops *o, float *y, const float *xa, const lora_seg *seg, int nseg, int out) {
    timed_ops *t = (timed_ops *)o;
    t->inner->sync(t->inner);
    double t0 = time_now();
    t->inner->lora_expand(t->inner, y, xa, seg, nseg, out);
    t->inner->sync(t->inner);
    t->s += time_now() - t0;
}

// One case at one batch size: sequence i (of nB) in KV slot i with adapter ad[i]
// (NULL: the base alone), P prompt tokens each, all prefilled in one fwd_batch
// call; then one untimed warm-up decode step and G timed steps of one token per
// sequence. The next token of each sequence is the greedy argmax of its logits
// (what a server does; the argmax is timed). *tps = tokens decoded, all sequences
// together, per second of the G steps; *lora_s = seconds per step inside the LoRA
// ops (t, the backend of f). f needs nB slots, nB*P rows and P+G+1 positions.
static int multi_decode(fwd_state *f, timed_ops *t, float *logits, int *toks, fwd_seq *seqs,
                        const lora_adapter *const *ad, int nB, int P, int G, double *tps, double *lora_s) {
    int V = f->m->cfg.vocab_size;
    for (int i = 0; i < nB; i++) {
        seqs[i] = (fwd_seq){.n = P, .pos = 0, .slot = i, .adapter = ad[i], .scale = 1.0f};
        for (int j = 0; j < P; j++) toks[i * P + j] = 3 + (int)(((long long)i * P + j) * 7919 % (V - 3));
    }
    QL_CHECK(fwd_batch(f, logits, toks, seqs, nB, 0));  // logits (nB, V): each sequence's last token
    double t0 = time_now();
    for (int g = 0; g <= G; g++) {  // g = 0 warms up
        if (g == 1) t0 = time_now(), t->s = 0;
        for (int i = 0; i < nB; i++) {
            toks[i] = argmax(logits + (size_t)i * V, V);
            seqs[i].n = 1, seqs[i].pos = P + g;
        }
        QL_CHECK(fwd_batch(f, logits, toks, seqs, nB, 0));
    }
    f->o->sync(f->o);
    *tps = (double)nB * G / (time_now() - t0);
    *lora_s = t->s / G;
    return QL_OK;
}

// The overhead the adapters should add to a decode step of nB sequences, from
// what the step reads and computes (KV-cache reads and attention left out):
//   base bytes: the linears (model_linear_bytes), all of lm_head, nB rows of embed;
//   adapter bytes: A (R,in) and B (out,R) of every targeted linear as held (fp32,
//     or F16 when resident), once per distinct adapter in use (nB for "distinct",
//     1 for "shared");
//   FLOPs per token: 2*in*out per linear and for lm_head, against 2*R*(in+out) per
//     targeted linear (the same for both cases).
// base_tps: the measured base decode tokens/s at this batch size, for the floor.
static void multi_predict(const char *name, const model *m, const lora_adapter *a, int nB, double base_tps) {
    const model_config *c = &m->cfg;
    size_t np, lb = model_linear_bytes(m, &np);
    double embed_row = (double)qweight_bytes(&m->embed) / c->vocab_size;
    double base_bytes = (double)lb + (double)qweight_bytes(&m->lm_head) + nB * embed_row;
    double base_flops = 2.0 * (double)np + 2.0 * (double)c->vocab_size * c->dim;
    double ad_floats = 0, ad_bytes = 0;
    for (int j = 0; j < a->n_layers * LORA_NMODULES; j++)
        if (lora_pair_on(&a->w[j]))
            ad_floats += (double)a->rank * (a->w[j].in + a->w[j].out), ad_bytes += lora_pair_bytes(&a->w[j], a->rank);
    double ad_flops = 2.0 * ad_floats;
    printf("bench_multi_predict model=%s batch=%d rank=%d base_MB/step=%.1f adapter_MB=%.1f "
           "bytes_overhead_distinct=%.1f%% bytes_overhead_shared=%.1f%% flops_overhead=%.2f%%\n",
           name, nB, a->rank, base_bytes / 1e6, ad_bytes / 1e6, 100.0 * nB * ad_bytes / base_bytes,
           100.0 * ad_bytes / base_bytes, 100.0 * ad_flops / base_flops);
    // The floor of the LoRA time: reading each distinct adapter's A and B once per
    // step at the probe's bandwidth, against the measured base step
    double bw = read_bandwidth();
    if (bw > 0 && base_tps > 0)
        printf("bench_multi_bound model=%s batch=%d read_GB/s=%.2f base_ms/step=%.2f lora_floor_ms/step_distinct=%.3f "
               "overhead_floor_distinct=%.2f%% lora_floor_ms/step_shared=%.3f overhead_floor_shared=%.2f%%\n",
               name, nB, bw / 1e9, 1e3 * nB / base_tps, 1e3 * nB * ad_bytes / bw,
               100.0 * (nB * ad_bytes / bw) / (nB / base_tps), 1e3 * ad_bytes / bw,
               100.0 * (ad_bytes / bw) / (nB / base_tps));
}

// Multi-adapter decoding: decode tokens/s at each batch size bs[0..nbs) for three
// cases: no adapter, a distinct rank-R adapter per sequence, one adapter shared by
// all (on the modules in targets; tname names them); the cases run back to back
// within each repetition (the best is kept), so they see the same machine load.
// For the best repetition of each case, the time per step inside the LoRA ops and
// its share: LoRA time / (step time - LoRA time), the overhead measured within
// the case's own steps. Then the predicted overhead per batch size.
static int bench_multi(const char *name, model *m, ops *o, const int *bs, int nbs, int P, int G, int R,
                       unsigned targets, const char *tname, int reps, dtype ad_type) {
    if (!o->lora_shrink) return ql_err(QL_EUNSUP, "the %s backend cannot apply LoRA adapters yet", o->name);
    int maxB = 0, V = m->cfg.vocab_size;
    for (int b = 0; b < nbs; b++) maxB = bs[b] > maxB ? bs[b] : maxB;
    lora_adapter *ads = calloc((size_t)maxB, sizeof *ads);  // zeroed: lora_free is a no-op on unmade ones
    const lora_adapter **use = calloc((size_t)maxB, sizeof *use);
    fwd_seq *seqs = calloc((size_t)maxB, sizeof *seqs);
    int *toks = malloc(sizeof(int) * (size_t)maxB * P);
    float *logits = malloc(sizeof(float) * (size_t)maxB * V);
    double *best = calloc((size_t)nbs * MA_NCASES, sizeof *best);
    double *best_lora = calloc((size_t)nbs * MA_NCASES, sizeof *best_lora);  // LoRA s/step in the best rep
    int rc = QL_OK;
    if (!ads || !use || !seqs || !toks || !logits || !best || !best_lora) rc = ql_err(QL_ENOMEM, "out of memory");
    double t0 = time_now();
    for (int i = 0; i < maxB && !rc; i++) {
        rc = bench_adapter(&ads[i], &m->cfg, R, targets, i);
        if (!rc && ad_type != DT_F32) rc = lora_make_resident(&ads[i], ad_type);  // as served
    }
    if (!rc) log_info("%s: %d rank-%d adapters made in %.1f s", name, maxB, R, time_now() - t0);
    timed_ops t = {.o = *o, .inner = o};
    t.o.lora_shrink = timed_shrink, t.o.lora_expand = timed_expand;
    fwd_state f = {0};
    if (!rc) rc = fwd_init_slots(&f, m, &t.o, P + G + 1, maxB * P, maxB);
    for (int b = 0; b < nbs && !rc; b++) {
        int nB = bs[b];
        for (int r = 0; r < reps && !rc; r++)
            for (int k = 0; k < MA_NCASES && !rc; k++) {
                for (int i = 0; i < nB; i++) use[i] = k == MA_BASE ? NULL : k == MA_DISTINCT ? &ads[i] : &ads[0];
                double tps, lora_s;
                rc = multi_decode(&f, &t, logits, toks, seqs, use, nB, P, G, &tps, &lora_s);
                if (rc) break;
                log_info("%s batch %d %s rep %d: decode %.2f tok/s, LoRA ops %.3f ms/step", name, nB,
                         ma_case_names[k], r, tps, 1e3 * lora_s);
                int j = b * MA_NCASES + k;
                if (tps > best[j]) best[j] = tps, best_lora[j] = lora_s;
            }
        for (int k = 0; k < MA_NCASES && !rc; k++) {
            double tps = best[b * MA_NCASES + k], base = best[b * MA_NCASES + MA_BASE];
            double lora = best_lora[b * MA_NCASES + k], step = nB / tps;
            // overhead: extra time per decoded token relative to the base;
            // lora_share: the same from the LoRA ops' time inside this case's steps
            printf("bench_multi model=%s backend=%s base=%s batch=%d case=%s rank=%d targets=%s adapter_dtype=%s "
                   "prompt=%d gen=%d decode_tok/s=%.2f overhead_vs_base=%.1f%% lora_ms/step=%.3f lora_share=%.1f%%\n",
                   name, o->name, base_dtype_name(m->base_dtype), nB, ma_case_names[k], R, tname, dtype_name(ad_type),
                   P, G, tps,
                   100.0 * (base / tps - 1.0), 1e3 * lora, 100.0 * lora / (step - lora));
        }
        fflush(stdout);
    }
    for (int b = 0; b < nbs && !rc; b++) multi_predict(name, m, &ads[0], bs[b], best[b * MA_NCASES + MA_BASE]);
    if (!rc) printf("bench_multi_mem model=%s max_batch=%d peak_rss_MB=%.1f\n", name, maxB, mem_peak_rss() / 1e6);
    fflush(stdout);
    fwd_free(&f);
    for (int i = 0; ads && i < maxB; i++) lora_free(&ads[i]);
    free(ads), free(use), free(seqs), free(toks), free(logits), free(best), free(best_lora);
    return rc;
}

// ---- Adapter load time (issue 4) ----

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// lora_load_peft of a rank-R adapter on the modules in targets (tname names them)
// at config c: bench_adapter's random adapter is written by lora_save_peft (F16,
// as qlora train writes it) into a fresh directory under /tmp, loaded once to
// bring the file into the page cache (and checked against the F16-rounded
// original), then loaded reps times; the best and the median are reported.
// The directory is removed afterwards.
static int bench_adapter_load(const char *name, const model_config *c, int R, unsigned targets, const char *tname,
                              int reps, dtype ad_type) {
    // F16: served, resident (lora_load_peft_resident); F32: converted to fp32 (lora_load_peft)
    int (*load)(lora_adapter *, const model_config *, const char *) =
        ad_type == DT_F32 ? lora_load_peft : lora_load_peft_resident;
    lora_adapter src, a = {0};
    QL_CHECK(bench_adapter(&src, c, R, targets, 0));
    char dir[] = "/tmp/qlora-bench-adapter-XXXXXX";
    if (!mkdtemp(dir)) {
        lora_free(&src);
        return ql_err(QL_EIO, "%s: cannot create a temporary directory: %s", dir, strerror(errno));
    }
    double *ms = calloc((size_t)reps, sizeof *ms);
    int rc = ms ? lora_save_peft(&src, dir, NULL) : ql_err(QL_ENOMEM, "out of memory");
    struct stat st = {0};
    char wpath[4096];
    snprintf(wpath, sizeof wpath, "%s/%s", dir, PEFT_WEIGHTS_NAME);
    if (!rc && stat(wpath, &st) != 0) rc = ql_err(QL_EIO, "%s: %s", wpath, strerror(errno));
    if (!rc) rc = load(&a, c, dir);  // warms the page cache
    // what was loaded is what was saved: each value the F16 rounding of the original
    size_t mem = 0, bad = 0;
    int tensors = 0;
    for (int j = 0; !rc && j < a.n_layers * LORA_NMODULES; j++) {
        const lora_pair *p = &a.w[j], *q = &src.w[j];
        if (lora_pair_on(p) != lora_pair_on(q)) { bad++; continue; }
        if (!lora_pair_on(p)) continue;
        size_t na = (size_t)R * p->in, nb = (size_t)p->out * R;
        const uint16_t *hA = p->rA, *hB = p->rB;
        if (p->rA && (p->tA != DT_F16 || p->tB != DT_F16)) { bad++; continue; }
        for (size_t e = 0; e < na; e++)
            bad += (p->A ? p->A[e] : f16_to_f32(hA[e])) != f16_to_f32(f32_to_f16(q->A[e]));
        for (size_t e = 0; e < nb; e++)
            bad += (p->B ? p->B[e] : f16_to_f32(hB[e])) != f16_to_f32(f32_to_f16(q->B[e]));
        mem += lora_pair_bytes(p, R), tensors += 2;
    }
    if (!rc && bad) rc = ql_err(QL_EFORMAT, "%s: %zu values loaded differ from the saved adapter", dir, bad);
    lora_free(&a);
    lora_free(&src);
    for (int r = 0; r < reps && !rc; r++) {
        double t0 = time_now();
        rc = load(&a, c, dir);
        ms[r] = 1e3 * (time_now() - t0);
        lora_free(&a);
        if (!rc) log_info("%s adapter load rep %d: %.2f ms", name, r, ms[r]);
    }
    dir_discard(dir);
    if (!rc) {
        qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
        printf("bench_adapter_load model=%s rank=%d targets=%s adapter_dtype=%s tensors=%d disk_MB=%.1f mem_MB=%.1f "
               "reps=%d load_ms_best=%.2f load_ms_median=%.2f disk_GB/s=%.2f mem_GB/s=%.2f\n",
               name, R, tname, dtype_name(ad_type), tensors, st.st_size / 1e6, mem / 1e6, reps, ms[0], ms[reps / 2],
               st.st_size / (ms[0] * 1e6), mem / (ms[0] * 1e6));
    }
    fflush(stdout);
    free(ms);
    return rc;
}

// The options that pick and size a mode
typedef struct {
    int P, G, reps, rank, train, multi, adapter_load, nbs;
    int bs[64];         // --batches
    unsigned targets;   // --targets, LORA_* bits
    const char *tname;  // --targets as given
    dtype ad_type;      // --adapter-dtype: DT_F16 (resident, as served) or DT_F32
} bench_mode;

static int bench_model(const char *name, model *m, ops *o, const bench_mode *b) {
    if (b->adapter_load)
        return bench_adapter_load(name, &m->cfg, b->rank, b->targets, b->tname, b->reps, b->ad_type);
    if (b->multi)
        return bench_multi(name, m, o, b->bs, b->nbs, b->P, b->G, b->rank, b->targets, b->tname, b->reps, b->ad_type);
    if (b->train) return bench_train(name, m, o, b->P, b->rank, b->reps);
    return bench_one(name, m, o, b->P, b->G, b->reps);
}

// Tokenizer speed: the whole file encoded as one text (special-token text
// recognized, as the reference's encode does), then decoded; the best of reps.
static int bench_tokenize(const char *path, const char *tok_path, int reps) {
    tokenizer *t = NULL;
    struct stat st;
    int rc = stat(tok_path, &st) == 0 && S_ISDIR(st.st_mode) ? tok_load_dir(&t, tok_path) : tok_load_file(&t, tok_path);
    char *text = NULL;
    size_t len = 0;
    if (!rc) rc = file_read_all(path, (size_t)1 << 30, &text, &len);
    double best_e = 1e30, best_d = 1e30;
    int n = 0;
    for (int r = 0; r < reps && !rc; r++) {
        int *ids = NULL;
        char *back = NULL;
        double t0 = time_now();
        rc = tok_encode(t, text, len, TOK_SPECIAL, &ids, &n);
        double t1 = time_now();
        if (!rc) rc = tok_decode(t, ids, n, &back);
        double t2 = time_now();
        if (t1 - t0 < best_e) best_e = t1 - t0;
        if (t2 - t1 < best_d) best_d = t2 - t1;
        free(ids), free(back);
    }
    if (!rc)
        printf("bench_tokenize tokenizer=%s kind=%s file=%s bytes=%zu tokens=%d reps=%d encode_MB/s=%.2f encode_tok/s=%.0f "
               "decode_MB/s=%.2f\n",
               tok_path, tok_kind_of(t) == TOK_BPE ? "bpe" : "spm", path, len, n, reps, len / best_e / 1e6, n / best_e,
               len / best_d / 1e6);
    free(text);
    tok_free(t);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    const char *which, *base, *backend, *base_dtype, *save, *batches, *targets, *tok_path, *ad_dtype;
    int P, G, threads, reps, verbose, train, rank, multi, adapter_load;
    const char *tokenize_file;
    cli_opt opts[] = {
        {"--shape", OPT_STR, &which, "tinyllama-1.1b", "tinyllama-1.1b, llama2-7b, llama3.2-1b, llama3.1-8b or all (random weights)"},
        {"--base", OPT_STR, &base, "", "benchmark this model instead of a random one (its load time is reported)"},
        {"--save-base", OPT_STR, &save, "", "also write the random model to this base file, to time loading it (or serve it)"},
        {"--tokenizer", OPT_STR, &tok_path, "", "--save-base: put this tokenizer.model or tokenizer.json in the file (its vocabulary must fit the shape's); --tokenize: the tokenizer"},
        {"--base-dtype", OPT_STR, &base_dtype, "nf4", "linear weights: nf4, f16 or f32 (random shapes: nf4 or f16)"},
        {"--prompt-tokens", OPT_INT, &P, "128", "prompt length (per sequence with --multi-adapter: try 16)"},
        {"--gen-tokens", OPT_INT, &G, "64", "tokens to decode"},
        {"--reps", OPT_INT, &reps, "3", "repetitions; the best is reported"},
        {"--backend", OPT_STR, &backend, "auto", "auto (the GPU when one is usable, else the CPU), cpu or cuda"},
        {"--threads", OPT_INT, &threads, "0", "CPU threads; 0 is all cores"},
        {"--train", OPT_FLAG, &train, NULL, "measure LoRA training steps instead (--prompt-tokens is the sequence)"},
        {"--multi-adapter", OPT_FLAG, &multi, NULL,
         "measure batched decoding instead: no adapter, a distinct adapter per sequence, one shared adapter"},
        {"--tokenize", OPT_STR, &tokenize_file, "", "measure the tokenizer (--tokenizer: a directory or file) on this text file instead"},
        {"--adapter-load", OPT_FLAG, &adapter_load, NULL,
         "measure lora_load_peft of a random adapter written to a temporary directory instead"},
        {"--batches", OPT_STR, &batches, "1,4,8,16", "batch sizes (sequences) for --multi-adapter"},
        {"--rank", OPT_INT, &rank, "16", "LoRA rank for --train, --multi-adapter and --adapter-load"},
        {"--targets", OPT_STR, &targets, "all",
         "modules for --multi-adapter and --adapter-load: all, or a list of q,k,v,o,gate,up,down"},
        {"--adapter-dtype", OPT_STR, &ad_dtype, "f16",
         "--multi-adapter and --adapter-load: f16 (resident, as served) or f32 (converted to fp32, as before)"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more"},
    };
    int pr = cli_parse("bench",
                       "Prompt and decode tokens/s and peak memory. Prints one 'bench ...' line per model "
                       "('bench_train ...', 'bench_multi ...', 'bench_adapter_load ...' lines for the other modes).",
                       opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    if (tokenize_file[0]) {
        int rc = tok_path[0] ? bench_tokenize(tokenize_file, tok_path, reps)
                             : ql_err(QL_EINVAL, "--tokenize needs --tokenizer (a directory or a tokenizer file)");
        if (rc) fprintf(stderr, "qlora bench: error: %s\n", ql_errmsg());
        return rc ? (rc == QL_EINVAL ? 2 : 1) : 0;
    }
    int bd = base_dtype_parse(base_dtype);
    if (bd < 0 || P < 1 || G < 1 || reps < 1) {
        fprintf(stderr, "qlora bench: error: bad --base-dtype, --prompt-tokens, --gen-tokens or --reps\n");
        return 2;
    }
    bench_mode mode = {.P = P, .G = G, .reps = reps, .rank = rank, .train = train, .multi = multi,
                       .adapter_load = adapter_load, .tname = targets};
    if (train + multi + adapter_load > 1) {
        fprintf(stderr, "qlora bench: error: --train, --multi-adapter and --adapter-load are different modes; "
                        "pick one\n");
        return 2;
    }
    if (strcmp(ad_dtype, "f16") && strcmp(ad_dtype, "f32")) {
        fprintf(stderr, "qlora bench: error: --adapter-dtype: expected f16 or f32, found '%s'\n", ad_dtype);
        return 2;
    }
    mode.ad_type = strcmp(ad_dtype, "f16") ? DT_F32 : DT_F16;
    if (rank < 1 || rank > 4096) {
        fprintf(stderr, "qlora bench: error: --rank: expected 1..4096, found %d\n", rank);
        return 2;
    }
    if (lora_targets_parse(&mode.targets, targets)) {
        fprintf(stderr, "qlora bench: error: %s\n", ql_errmsg());
        return 2;
    }
    if (multi && parse_batches(mode.bs, (int)(sizeof mode.bs / sizeof *mode.bs), &mode.nbs, batches)) {
        fprintf(stderr, "qlora bench: error: %s\n", ql_errmsg());
        return 2;
    }
    ops *o = ops_new(backend, threads);
    if (!o) { fprintf(stderr, "qlora bench: error: %s\n", ql_errmsg()); return 1; }
    if (!strcmp(o->name, "cpu"))  // which kernels each path runs (kernels/cpu/matmul_cpu.h)
        printf("kernels backend=cpu simd=%s decode=%sgemv-%s prefill=\"dequantize-%s + sgemm of %s\" "
               "train=\"sgemm of %s\"\n", matmul_cpu_simd(), matmul_cpu_int8() ? "int8-" : "", matmul_cpu_simd(),
               matmul_cpu_simd(), blas_describe(), blas_describe());
    int rc = QL_OK, found = 0;
    if (base[0]) {
        model m;
        found = 1;
        double t0 = time_now();
        rc = model_load(&m, base, (dtype)bd);
        if (!rc) {
            printf("load model=%s load_s=%.3f\n", base, time_now() - t0);
            rc = bench_model(base, &m, o, &mode);
            model_free(&m);
        }
    } else {
        for (int i = 0; i < MODEL_NSHAPES && !rc; i++) {
            const model_shape *sh = &MODEL_SHAPES[i];
            if (strcmp(which, "all") && strcmp(which, sh->name)) continue;
            found = 1;
            if (adapter_load) {  // needs the shapes only, not weights
                rc = bench_adapter_load(sh->name, &sh->cfg, rank, mode.targets, targets, reps, mode.ad_type);
                continue;
            }
            model m;
            double t0 = time_now();
            rc = model_init_random(&m, &sh->cfg, bd == DT_F16 ? DT_F16 : DT_NF4, 1234);
            if (rc) break;
            log_info("%s: random weights made in %.1f s", sh->name, time_now() - t0);
            char *tk = NULL;
            size_t tkn = 0;
            if (save[0] && tok_path[0] && !(rc = file_read_all(tok_path, (size_t)64 << 20, &tk, &tkn))) {
                tokenizer *sp = NULL;
                rc = tok_load_bytes(&sp, tok_kind_of_path(tok_path), tk, tkn, tok_path);
                if (!rc && tok_vocab_size(sp) > m.cfg.vocab_size)
                    rc = ql_err(QL_EINVAL, "--tokenizer %s: %d pieces, more than the shape's vocabulary of %d", tok_path,
                                tok_vocab_size(sp), m.cfg.vocab_size);
                tok_free(sp);
                m.tokenizer = tk, m.tokenizer_len = tkn, m.tokenizer_kind = tok_kind_of_path(tok_path);
            }
            if (!rc && save[0] && !(rc = model_save_base(&m, save))) log_info("wrote %s", save);
            m.tokenizer = NULL, m.tokenizer_len = 0, m.tokenizer_kind = 0;  // not the model's to free
            free(tk);
            if (rc) { model_free(&m); break; }
            rc = bench_model(sh->name, &m, o, &mode);
            model_free(&m);
        }
    }
    ops_delete(o);
    if (!found) { fprintf(stderr, "qlora bench: error: --shape: unknown shape '%s'\n", which); return 2; }
    if (rc) { fprintf(stderr, "qlora bench: error: %s\n", ql_errmsg()); return 1; }
    return 0;
}
