// train_cmd.c: qlora train: base model + JSONL -> a PEFT adapter directory.
#include "train_cmd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/cli.h"
#include "../common/err.h"
#include "../common/fileio.h"
#include "../common/json.h"
#include "../common/log.h"
#include "../common/rng.h"
#include "../model/model.h"
#include "../model/shapes.h"
#include "../common/safetensors.h"
#include "../common/strbuf.h"
#include "../common/tokenizer.h"
#include "../datasets/dataset.h"
#include "curve.h"
#include "../model/lora.h"
#include "checkpoint.h"
#include "../common/interrupt.h"
#include "optim.h"
#include "peft.h"
#include "plan_cmd.h"
#include "recipe.h"
#include "trainer.h"

typedef struct {
    const char *base, *data, *out, *recipe, *targets, *schedule, *val_data, *base_dtype, *backend, *chat_template, *shape;
    int rank, epochs, max_steps, stop_after, batch, accum, seq_len, seed, warmup, save_every, eval_every, log_every, threads;
    int rslora, resume, overwrite, train_on_inputs, skip_invalid, grad_ckpt, verbose, plan, no_mem_check;
    int keep_ckpts, early_stop, save_best;
    float alpha, dropout, lr, val_split, wd, beta1, beta2, eps, max_grad_norm;
} train_opts;

#define OPTS(o)                                                                                                   \
    {"--base", OPT_STR, &o.base, NULL, "model: a Hugging Face directory or a qlora base file"},                   \
    {"--data", OPT_STR, &o.data, NULL, "training data, JSONL (text, prompt/completion, messages, Alpaca or ShareGPT)"},      \
    {"--out", OPT_STR, &o.out, NULL, "the adapter directory to write (adapters/NAME)"},                            \
    {"--plan", OPT_FLAG, &o.plan, NULL, "print the run's memory plan (every buffer, largest first; plan_total_MB=) and exit: needs --base or --shape, no --data or --out, no GPU"}, \
    {"--shape", OPT_STR, &o.shape, "", "--plan of a named shape instead of --base: tinyllama-1.1b, llama2-7b, llama3.2-1b or llama3.1-8b"}, \
    {"--no-memory-check", OPT_FLAG, &o.no_mem_check, NULL, "start even when the plan needs more memory than is available"}, \
    {"--recipe", OPT_STR, &o.recipe, "", "a JSON recipe (recipes/); command-line options override it"},            \
    {"--rank", OPT_INT, &o.rank, "16", "LoRA rank r"},                                                             \
    {"--alpha", OPT_FLOAT, &o.alpha, "32", "LoRA alpha (scaling alpha/r)"},                                        \
    {"--rslora", OPT_FLAG, &o.rslora, NULL, "rank-stabilized scaling alpha/sqrt(r)"},                              \
    {"--dropout", OPT_FLOAT, &o.dropout, "0.05", "dropout on the adapter input"},                                  \
    {"--targets", OPT_STR, &o.targets, "all", "modules: all, or a list like q_proj,v_proj"},                       \
    {"--lr", OPT_FLOAT, &o.lr, "2e-4", "peak learning rate"},                                                      \
    {"--epochs", OPT_INT, &o.epochs, "1", "passes over the data (when --max-steps is 0)"},                          \
    {"--max-steps", OPT_INT, &o.max_steps, "0", "optimizer steps; 0: from --epochs"},                              \
    {"--batch-size", OPT_INT, &o.batch, "4", "packed rows per micro-batch"},                                       \
    {"--grad-accum", OPT_INT, &o.accum, "1", "micro-batches per optimizer step"},                                  \
    {"--seq-len", OPT_INT, &o.seq_len, "512", "tokens per packed row; longer samples are cut"},                    \
    {"--seed", OPT_INT, &o.seed, "42", "seed for the adapter init, shuffling and dropout"},                        \
    {"--warmup", OPT_INT, &o.warmup, "10", "linear warmup steps"},                                                 \
    {"--schedule", OPT_STR, &o.schedule, "cosine", "after warmup: cosine, linear or constant"},                    \
    {"--weight-decay", OPT_FLOAT, &o.wd, "0", "AdamW weight decay"},                                               \
    {"--beta1", OPT_FLOAT, &o.beta1, "0.9", "AdamW beta1"},                                                        \
    {"--beta2", OPT_FLOAT, &o.beta2, "0.999", "AdamW beta2"},                                                      \
    {"--eps", OPT_FLOAT, &o.eps, "1e-8", "AdamW epsilon"},                                                         \
    {"--max-grad-norm", OPT_FLOAT, &o.max_grad_norm, "1.0", "global-norm gradient clipping; 0: off"},              \
    {"--val-split", OPT_FLOAT, &o.val_split, "0.1", "fraction of samples held out for validation"},                \
    {"--val-data", OPT_STR, &o.val_data, "", "validation JSONL instead of --val-split"},                           \
    {"--eval-every", OPT_INT, &o.eval_every, "50", "steps between validation losses (and at the end)"},            \
    {"--log-every", OPT_INT, &o.log_every, "1", "steps between metric lines (on stderr when it is not a terminal, and in metrics.jsonl)"},      \
    {"--save-every", OPT_INT, &o.save_every, "0", "steps between checkpoints (--out/checkpoints/); 0: none"},      \
    {"--keep-checkpoints", OPT_INT, &o.keep_ckpts, "1", "checkpoints kept in --out/checkpoints/, the newest; 0: removed after a run that completes"}, \
    {"--early-stopping", OPT_INT, &o.early_stop, "0", "stop when the validation loss has not improved for N evaluations in a row; 0: off"}, \
    {"--save-best", OPT_FLAG, &o.save_best, NULL, "the adapter in --out is the one with the lowest validation loss, not the last step's"}, \
    {"--resume", OPT_FLAG, &o.resume, NULL, "continue from the newest checkpoint in --out"},                      \
    {"--overwrite", OPT_FLAG, &o.overwrite, NULL, "replace the adapter already in --out (never another kind of directory)"}, \
    {"--stop-after", OPT_INT, &o.stop_after, "0", "stop (with a checkpoint) after this many steps; 0: run to the end"}, \
    {"--chat-template", OPT_STR, &o.chat_template, "", "for messages, Alpaca and ShareGPT: llama2, chatml, zephyr or llama3; empty: the base's (tokenizer_config.json), else llama2"}, \
    {"--train-on-inputs", OPT_FLAG, &o.train_on_inputs, NULL, "train on prompt tokens too"},                       \
    {"--skip-invalid", OPT_FLAG, &o.skip_invalid, NULL, "skip and count bad JSONL lines instead of failing"},       \
    {"--grad-checkpoint", OPT_FLAG, &o.grad_ckpt, NULL, "recompute activations block by block (less memory)"},     \
    {"--base-dtype", OPT_STR, &o.base_dtype, "nf4", "linear weights of the frozen base: nf4, f16 or f32"},         \
    {"--backend", OPT_STR, &o.backend, "auto", "auto (the GPU when one is usable, else the CPU), cpu or cuda"},                  \
    {"--threads", OPT_INT, &o.threads, "0", "CPU threads; 0 is all cores"},                                        \
    {"--verbose", OPT_FLAG, &o.verbose, NULL, "log more"},

static const char *SUMMARY = "Train a LoRA adapter on a frozen NF4 base from JSONL; write a PEFT adapter directory.\n"
                             "With --plan: print the memory the run needs, part by part, and exit (docs/memory.md).";

static uint64_t fnv1a(const char *path) {
    FILE *f = fopen(path, "rb");
    uint64_t h = 0xCBF29CE484222325ULL;
    if (!f) return 0;
    int c;
    while ((c = fgetc(f)) != EOF) h = (h ^ (unsigned char)c) * 0x100000001B3ULL;
    fclose(f);
    return h;
}

// The base's identity for the resume fingerprint, cheap even for gigabytes: the
// size and 4 KiB at 257 evenly spaced offsets of each file (a directory: of its
// regular files, in name order). Two bases that differ in any tensor differ in
// nearly every sample (each 4 KiB holds thousands of weights).
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ULL;
    return h;
}

static uint64_t file_identity(uint64_t h, const char *path) {
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return hash_bytes(h, path, 0);
    }
    uint64_t size = (uint64_t)st.st_size;
    h = hash_bytes(h, &size, sizeof size);
    char buf[4096];
    for (int k = 0; k <= 256; k++) {
        uint64_t off = size > sizeof buf ? (size - sizeof buf) / 256 * (uint64_t)k : 0;
        ssize_t r = pread(fd, buf, sizeof buf, (off_t)off);
        if (r > 0) h = hash_bytes(h, buf, (size_t)r);
        if (size <= sizeof buf) break;
    }
    close(fd);
    return h;
}

static uint64_t base_identity(const char *path) {
    uint64_t h = 0xCBF29CE484222325ULL;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return file_identity(h, path);
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", path, names[i]->d_name);
        if (names[i]->d_name[0] != '.' && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            h = hash_bytes(h, names[i]->d_name, strlen(names[i]->d_name) + 1);
            h = file_identity(h, p);
        }
        free(names[i]);
    }
    if (n >= 0) free(names);
    return h;
}

// Row order over epochs: the permutation of epoch e is a seeded shuffle.
static int row_of(const ds_packed *p, uint64_t seed, long i, int *perm, long *perm_epoch) {
    long e = i / p->R;
    if (e != *perm_epoch) {
        for (int r = 0; r < p->R; r++) perm[r] = r;
        uint64_t s = seed ^ (0xA24BAED4963EE407ULL * (uint64_t)(e + 1));
        for (int r = p->R - 1; r > 0; r--) {
            int j = (int)rng_below(&s, (uint64_t)r + 1);
            int tmp = perm[r]; perm[r] = perm[j]; perm[j] = tmp;
        }
        *perm_epoch = e;
    }
    return perm[i % p->R];
}

// Copies rows into a (B,T) micro-batch; short batches are padded with empty rows.
static void fill_batch(const ds_packed *p, const int *rows, int B, int *tok, int *tgt, int *pos, int *seg) {
    int T = p->T;
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * T;
        if (rows[b] < 0) {
            for (int t = 0; t < T; t++) tok[o + t] = 0, tgt[o + t] = -1, pos[o + t] = 0, seg[o + t] = -1;
            continue;
        }
        size_t r = (size_t)rows[b] * T;
        memcpy(tok + o, p->tokens + r, sizeof(int) * T), memcpy(tgt + o, p->targets + r, sizeof(int) * T);
        memcpy(pos + o, p->pos + r, sizeof(int) * T), memcpy(seg + o, p->seg + r, sizeof(int) * T);
    }
}

static double val_loss(trainer *t, const ds_packed *v, int B, int *tok, int *tgt, int *pos, int *seg) {
    double nll = 0;
    long n = 0;
    int *rows = malloc(sizeof(int) * (size_t)B);
    for (int r0 = 0; r0 < v->R; r0 += B) {
        for (int b = 0; b < B; b++) rows[b] = r0 + b < v->R ? r0 + b : -1;
        fill_batch(v, rows, B, tok, tgt, pos, seg);
        double s;
        long k;
        if (trainer_eval(t, tok, tgt, pos, seg, &s, &k)) { free(rows); return NAN; }
        nll += s, n += k;
    }
    free(rows);
    return n ? nll / (double)n : NAN;
}

// ---- checkpoints (checkpoint.h): the trainer's state, the losses, the step ----

static int save_checkpoint(const char *path, trainer *tr, int step, float *losses, int nval, int *vstep, float *vloss,
                           const char *fingerprint) {
    size_t np = (size_t)tr->n_params ? (size_t)tr->n_params : 1;
    float *flat = malloc(sizeof(float) * 3 * np);
    if (!flat) return ql_err(QL_ENOMEM, "%s: out of memory", path);
    ckpt_state s = {.step = step, .losses = losses, .val_count = nval, .val_step = vstep, .val_loss = vloss,
                    .n_params = tr->n_params, .w = flat, .m = flat + np, .v = flat + 2 * np};
    trainer_get_state(tr, s.w, s.m, s.v);
    int rc = ckpt_write(path, tr->a, &s, fingerprint);
    free(flat);
    return rc;
}

// Restores the trainer and the loss history (losses: steps floats; vstep, vloss:
// steps+3) from a checkpoint validated against this run (at most steps steps).
static int load_checkpoint(const char *path, trainer *tr, int steps, const char *fingerprint, int *step /* out */,
                           float *losses, int *nval /* out */, int *vstep, float *vloss) {
    ckpt_state s;
    QL_CHECK(ckpt_read(&s, path, tr->a, steps, fingerprint));
    QL_ASSERT(s.n_params == tr->n_params && s.step <= steps && s.val_count <= steps + 1);
    *step = s.step, *nval = s.val_count;
    if (s.step) memcpy(losses, s.losses, sizeof(float) * (size_t)s.step);
    if (s.val_count) {
        memcpy(vstep, s.val_step, sizeof(int) * (size_t)s.val_count);
        memcpy(vloss, s.val_loss, sizeof(float) * (size_t)s.val_count);
    }
    trainer_set_state(tr, s.w, s.m, s.v);
    ckpt_state_free(&s);
    return QL_OK;
}

// The parent directories of path (not path itself).
static int mkdir_parents(const char *path) {
    char p[4096];
    if (strlen(path) >= sizeof p) return ql_err(QL_EINVAL, "%s: the path is too long", path);
    snprintf(p, sizeof p, "%s", path);
    char *last = strrchr(p, '/');
    if (!last || last == p) return QL_OK;
    *last = 0;
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    struct stat st;
    if (mkdir(p, 0755) != 0 && (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)))
        return ql_err(QL_EIO, "%s: cannot create the directory", p);
    return QL_OK;
}

// The checkpoints in dir/checkpoints/ (peft.h), by step: their steps into
// steps (at most cap, the newest), the count returned; 0 when there are none.
static int list_checkpoints(const char *dir, long *steps, int cap) {
    char sub[4300];
    snprintf(sub, sizeof sub, "%s/%s", dir, PEFT_CHECKPOINTS_DIR);
    DIR *d = cap > 0 ? opendir(sub) : NULL;
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        long st = peft_checkpoint_step(de->d_name);
        if (st < 0) continue;
        int i = n < cap ? n++ : (st > steps[0] ? 0 : -1);  // full: the oldest (steps[0]) makes room
        if (i < 0) continue;
        steps[i] = st;
        for (; i > 0 && steps[i] < steps[i - 1]; i--) { long x = steps[i]; steps[i] = steps[i - 1]; steps[i - 1] = x; }
        for (; i + 1 < n && steps[i] > steps[i + 1]; i++) { long x = steps[i]; steps[i] = steps[i + 1]; steps[i + 1] = x; }
    }
    if (d) closedir(d);
    return n;
}

// The checkpoint --resume continues: the newest in dir/checkpoints/, else the
// checkpoint.safetensors that versions before checkpoints/ wrote beside the
// adapter. QL_EINVAL when there is none.
static int find_checkpoint(const char *dir, char *path, size_t cap) {
    long steps[1];
    if (list_checkpoints(dir, steps, 1)) {
        snprintf(path, cap, "%s/%s/checkpoint-%ld.safetensors", dir, PEFT_CHECKPOINTS_DIR, steps[0]);
        return QL_OK;
    }
    snprintf(path, cap, "%s/checkpoint.safetensors", dir);
    if (access(path, R_OK) == 0) return QL_OK;
    return ql_err(QL_EINVAL, "%s: --resume, but it holds no checkpoint (%s/checkpoint-<step>.safetensors); a run "
                  "writes one with --save-every, --stop-after or Ctrl-C", dir, PEFT_CHECKPOINTS_DIR);
}

// What --out may be: new, or an adapter directory when resuming or told to
// overwrite; never another kind of directory or a file (lora_peft_dir_kind).
static int check_out(const train_opts *o) {
    int kind;
    QL_CHECK(lora_peft_dir_kind(o->out, &kind));
    if (o->resume) {
        char ckpt[4400];
        if (kind != PEFT_DIR_ADAPTER) return ql_err(QL_EINVAL, "%s: --resume, but there is no adapter there", o->out);
        QL_CHECK(find_checkpoint(o->out, ckpt, sizeof ckpt));
    } else if (kind == PEFT_DIR_ADAPTER && !o->overwrite)
        return ql_err(QL_EINVAL, "--out %s already holds an adapter; give --overwrite to replace it (or --resume to "
                      "continue its checkpoint)", o->out);
    return QL_OK;
}

// What one version of the output directory holds besides the adapter.
typedef struct {
    const train_opts *o;
    const char *recipe, *rtext, *fingerprint;
    const dataset *ds, *vs;
    ds_template tmpl;
    int steps;
    const float *losses;
    const int *vstep;
    const float *vloss;
    int nval;
    strbuf *metrics;  // metrics.jsonl so far (docs/formats.md)
    double t0;        // when training started (this process), for the record's wall time
    int own;          // --out's checkpoints/ are this run's (or the resumed run's): carried to the next version
    int adapter_step; // the step whose adapter --out holds (--save-best: the best so far); -1: none yet
    int best_step;    // the evaluation with the lowest validation loss (after step 0); 0: none yet
    float best_val;
    int early;        // stopped by --early-stopping
} run_out;

// The run's options in readable form (training_record.json's "options"), malloc'd
static char *options_json(const train_opts *o, const dataset *ds) {
    strbuf b = {0};
    unsigned targets = 0;
    lora_targets_parse(&targets, o->targets);
    sb_add(&b, "{\"targets\": [");
    for (int k = 0, first = 1; k < LORA_NMODULES; k++)
        if (targets & (1u << k)) sb_addf(&b, "%s\"%s\"", first ? "" : ", ", LORA_MODULE_NAMES[k]), first = 0;
    sb_addf(&b, "], \"rank\": %d, \"alpha\": %g, \"use_rslora\": %s, \"dropout\": %g, ", o->rank, (double)o->alpha,
            o->rslora ? "true" : "false", (double)o->dropout);
    sb_addf(&b, "\"lr\": %g, \"schedule\": \"%s\", \"warmup_steps\": %d, \"epochs\": %d, \"max_steps\": %d, ",
            (double)o->lr, o->schedule, o->warmup, o->epochs, o->max_steps);
    sb_addf(&b, "\"batch_size\": %d, \"grad_accum\": %d, \"seq_len\": %d, \"seed\": %d, ", o->batch, o->accum,
            o->seq_len, o->seed);
    sb_addf(&b, "\"weight_decay\": %g, \"betas\": [%g, %g], \"eps\": %g, \"max_grad_norm\": %g, ", (double)o->wd,
            (double)o->beta1, (double)o->beta2, (double)o->eps, (double)o->max_grad_norm);
    sb_addf(&b, "\"val_split\": %g, \"base_dtype\": \"%s\", \"train_on_inputs\": %s, \"skip_invalid\": %s, ",
            (double)o->val_split, o->base_dtype, o->train_on_inputs ? "true" : "false", o->skip_invalid ? "true" : "false");
    char *qv = json_quote(o->val_data);
    sb_addf(&b, "\"val_data\": %s, \"grad_checkpoint\": %s, \"format\": \"%s\"}", o->val_data[0] && qv ? qv : "null",
            o->grad_ckpt ? "true" : "false", ds_format_name(ds->format));
    free(qv);
    return b.s;
}

// The lines of the metrics.jsonl at path whose "step" is at most step, into b: a
// resumed run keeps the history up to its checkpoint. A missing or unreadable
// file leaves b empty (the history starts again; training does not depend on it).
static void metrics_resume(strbuf *b, const char *path, int step) {
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, (size_t)256 << 20, &text, &len)) return;
    for (char *l = text; l && *l;) {
        char *e = strchr(l, '\n');
        const char *sp = strstr(l, "\"step\": ");
        if (!e) break;  // a cut last line is dropped
        if (sp && sp < e && atol(sp + 8) <= step) sb_addn(b, l, (size_t)(e - l) + 1);
        l = e + 1;
    }
    free(text);
}

// training_record.json after step steps of r->steps, malloc'd.
static char *record_json(const run_out *r, int step) {
    const train_opts *o = r->o;
    char *opts = options_json(o, r->ds);
    char *rec = malloc(8192 + (r->rtext ? strlen(r->rtext) : 0) + (opts ? strlen(opts) : 0));
    char *qdata = json_quote(o->data), *qbase = json_quote(o->base), *qfp = json_quote(r->fingerprint),
         *qrec = json_quote(r->recipe ? r->recipe : "");
    if (!rec || !qdata || !qbase || !qfp || !qrec || !opts) {
        free(rec), free(qdata), free(qbase), free(qfp), free(qrec), free(opts);
        return NULL;
    }
    double vfinal = r->nval ? r->vloss[r->nval - 1] : NAN;
    char vtext[32] = "null";
    if (isfinite(vfinal)) snprintf(vtext, sizeof vtext, "%.6f", vfinal);
    char btext[32] = "null", bstep[16] = "null";
    if (r->best_step > 0) snprintf(btext, sizeof btext, "%.6f", r->best_val), snprintf(bstep, sizeof bstep, "%d", r->best_step);
    // the template the adapter learned its turns in (qlora serve renders chat requests with it)
    int chat = r->ds->format == DS_FORMAT_CHAT || r->ds->format == DS_FORMAT_ALPACA ||
               r->ds->format == DS_FORMAT_SHAREGPT;
    sprintf(rec,
            "{\n  \"recipe\": %s,\n  \"recipe_values\": %s,\n  \"options\": %s,\n  \"fingerprint\": %s,\n"
            "  \"base\": %s,\n"
            "  \"dataset\": {\"path\": %s, \"fnv1a64\": \"%016llx\", \"format\": \"%s\", \"samples\": %d, "
            "\"val_samples\": %d, \"trained_tokens\": %ld, \"truncated\": %ld, \"skipped\": %ld},\n"
            "  \"chat_template\": %s%s%s,\n"
            "  \"final\": {\"steps\": %d, \"planned_steps\": %d, \"train_loss\": %.6f, \"val_loss\": %s, "
            "\"early_stopped\": %s},\n"
            "  \"adapter\": {\"step\": %d, \"best_step\": %s, \"best_val_loss\": %s, \"save_best\": %s},\n"
            "  \"resources\": {\"wall_s\": %.1f, \"peak_rss_mb\": %.1f}\n}\n",
            r->recipe ? qrec : "null", r->rtext ? r->rtext : "null", opts, qfp, qbase, qdata, (unsigned long long)fnv1a(o->data),
            ds_format_name(r->ds->format), r->ds->n_samples, r->vs->n_samples, r->ds->stats.trained_tokens,
            r->ds->stats.truncated, r->ds->stats.skipped, chat ? "\"" : "", chat ? ds_template_name(r->tmpl) : "null",
            chat ? "\"" : "", step, r->steps, step ? r->losses[step - 1] : 0.0, vtext, r->early ? "true" : "false",
            r->adapter_step, bstep, btext, o->save_best ? "true" : "false", time_now() - r->t0,
            mem_peak_rss() / 1e6);
    free(qdata), free(qbase), free(qfp), free(qrec), free(opts);
    return rec;
}

// Carries name (a file of --out) into the new version d->tmp unchanged.
static int carry(const adir *d, const char *out, const char *name) {
    char src[8600], dst[8600];
    snprintf(src, sizeof src, "%s/%s", out, name);
    snprintf(dst, sizeof dst, "%s/%s", d->tmp, name);
    return file_link_or_copy(src, dst);
}

// One version of --out after step steps: the adapter (new, or with --save-best
// the best one so far, carried), training_record.json, loss.svg, metrics.jsonl
// and checkpoints/: with_ckpt: this step's and the newest keep-1 before it, else
// the newest keep; older ones are dropped. Built in a hidden temp directory and
// swapped in with one rename (fileio.h adir): after a crash at any point, --out is
// the previous version or this one, each complete. Checkpoints are never changed
// once written, so a version shares them with the previous one (hard links).
static int write_out(run_out *r, trainer *t, int step, int with_ckpt, int new_adapter, int keep) {
    char path[4400];
    if (new_adapter || r->adapter_step < 0) r->adapter_step = step;
    char *rec = record_json(r, step);
    if (!rec) return ql_err(QL_ENOMEM, "out of memory");
    adir d;
    int rc = adir_open(&d, r->o->out);
    if (rc) { free(rec); return rc; }
    if (r->adapter_step == step) {
        trainer_pull(t);
        rc = lora_write_peft_files(t->a, d.tmp, rec, DT_F16);
    } else {  // --save-best: the adapter of an earlier step stays
        rc = carry(&d, r->o->out, PEFT_CONFIG_NAME);
        if (!rc) rc = carry(&d, r->o->out, PEFT_WEIGHTS_NAME);
        snprintf(path, sizeof path, "%s/%s", d.tmp, PEFT_RECORD_NAME);
        if (!rc) rc = file_write_atomic(path, rec, strlen(rec));
    }
    free(rec);
    long old[64];
    int nold = r->own ? list_checkpoints(r->o->out, old, keep < 64 ? keep : 64) : 0;
    if (with_ckpt && nold && old[nold - 1] == step) nold--;  // written again below
    int first = with_ckpt && nold >= keep ? nold - keep + 1 : 0;  // room for this step's
    snprintf(path, sizeof path, "%s/%s", d.tmp, PEFT_CHECKPOINTS_DIR);
    if (!rc && (with_ckpt || nold > first) && mkdir(path, 0755) != 0)
        rc = ql_err(QL_EIO, "%s: cannot create: %s", path, strerror(errno));
    for (int i = first; i < nold && !rc; i++) {
        snprintf(path, sizeof path, "%s/checkpoint-%ld.safetensors", PEFT_CHECKPOINTS_DIR, old[i]);
        rc = carry(&d, r->o->out, path);
    }
    snprintf(path, sizeof path, "%s/%s/checkpoint-%d.safetensors", d.tmp, PEFT_CHECKPOINTS_DIR, step);
    if (!rc && with_ckpt)
        rc = save_checkpoint(path, t, step, (float *)r->losses, r->nval, (int *)r->vstep, (float *)r->vloss, r->fingerprint);
    snprintf(path, sizeof path, "%s/loss.svg", d.tmp);
    if (!rc) rc = curve_write_svg(path, r->losses, step, r->vstep, r->vloss, r->nval, "qlora train: loss");
    snprintf(path, sizeof path, "%s/metrics.jsonl", d.tmp);
    if (!rc) rc = file_write_atomic(path, r->metrics->s ? r->metrics->s : "", r->metrics->n);
    if (rc) rc = adir_fail(&d, rc);  // --out stays as it was
    else rc = adir_commit(&d);
    if (rc) rc = ql_err(rc, "%s: cannot write the adapter and checkpoint of step %d (--out is left as it was): %s",
                        r->o->out, step, ql_errmsg());
    else r->own = 1;
    return rc;
}

// The memory plan request of a run with these options (the model's dtypes come
// from --base or --shape when it is made).
static plan_request plan_request_of(const train_opts *o, unsigned targets, int bd) {
    plan_request r = {.base = o->base, .shape = o->shape, .backend = o->backend, .base_dtype = (dtype)bd};
    r.o = (plan_opts){.B = o->batch, .T = o->seq_len, .rank = o->rank, .targets = targets, .dropout = o->dropout,
                      .grad_checkpoint = o->grad_ckpt, .grad_accum = o->accum,
                      .threads = o->threads > 0 ? o->threads : omp_get_max_threads()};
    return r;
}

int cmd_train(int argc, char **argv) {
    train_opts o;
    cli_opt opts[] = {OPTS(o)};
    int nopt = (int)(sizeof opts / sizeof *opts);
    // --plan reads no data and writes nothing (and with --shape reads no model): then
    // nothing is required (--shape without --plan is refused below, with its reason)
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--plan") || !strncmp(argv[i], "--shape", 7))
            for (int k = 0; k < nopt; k++)
                if (opts[k].type == OPT_STR && !opts[k].def) opts[k].def = "";
    // the recipe goes first so that the command line overrides it
    const char *recipe = NULL;
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--recipe")) recipe = argv[i + 1];
    char **rav = NULL, *rtext = NULL;
    int rac = 0;
    out_lock_t lock = {.fd = -1};
    if (recipe && recipe_args(recipe, opts, nopt, &rav, &rac, &rtext)) {
        fprintf(stderr, "qlora train: error: %s\n", ql_errmsg());
        return 2;
    }
    char **all = malloc(sizeof(char *) * (size_t)(rac + argc + 1));
    if (rac) memcpy(all, rav, sizeof(char *) * (size_t)rac);
    if (argc) memcpy(all + rac, argv, sizeof(char *) * (size_t)argc);
    int pr = cli_parse("train", SUMMARY, opts, nopt, rac + argc, all);
    int code = 0, rc = QL_OK, interrupted = 0;
    if (pr) { code = pr > 0 ? 0 : 2; goto done_args; }
    if (o.verbose) log_set_level(LOG_DEBUG);
    unsigned targets;
    int sched, bd = base_dtype_parse(o.base_dtype);
    ds_template tmpl;
    if ((rc = lora_targets_parse(&targets, o.targets)) || (rc = sched_parse(&sched, o.schedule)) ||
        (o.chat_template[0] && (rc = ds_template_parse(&tmpl, o.chat_template)))) {
        fprintf(stderr, "qlora train: error: %s\n", ql_errmsg());
        code = 2;
        goto done_args;
    }
    if (bd < 0 || o.batch < 1 || o.accum < 1 || o.seq_len < 2 || o.epochs < 1 || o.max_steps < 0 || !(o.lr > 0) ||
        o.warmup < 0 || o.stop_after < 0 || o.val_split < 0 || o.val_split >= 1 || o.eval_every < 0 || o.save_every < 0 ||
        o.log_every < 1 || o.keep_ckpts < 0 || o.early_stop < 0) {
        fprintf(stderr, "qlora train: error: bad value: --base-dtype must be nf4/f16/f32; --batch-size, --grad-accum, "
                        "--epochs, --log-every >= 1; --seq-len >= 2; --lr > 0; --val-split in [0, 1); counts >= 0\n");
        code = 2;
        goto done_args;
    }
    if (o.shape[0] && !o.plan) {
        fprintf(stderr, "qlora train: error: --shape is for --plan (a training run needs --base)\n");
        code = 2;
        goto done_args;
    }
    if (o.plan) {
        plan_request pr = plan_request_of(&o, targets, bd);
        code = plan_cmd_print(&pr);
        goto done_args;
    }
    // --out: checked before the model is loaded (no lock file beside what is refused), then
    // held by this process for the run (a second writer gets a clear error) and checked again
    if ((rc = check_out(&o)) || (rc = mkdir_parents(o.out)) || (rc = out_lock(&lock, o.out)) || (rc = check_out(&o))) {
        fprintf(stderr, "qlora train: error: %s\n", ql_errmsg());
        code = rc == QL_EINVAL ? 2 : 1;
        goto done_args;
    }
    {
        model m = {0};
        tokenizer *tok = NULL;
        ops *be = NULL;
        dataset ds = {0}, vs = {0};
        ds_packed tp_rows = {0}, vp_rows = {0};
        lora_adapter a = {0};
        trainer t = {0};
        strbuf metrics = {0};
        float *losses = NULL, *vloss = NULL;
        int *vstep = NULL, nval = 0, *buf = NULL, *perm = NULL;
        char ckpt[4400], fingerprint[1024];

        be = ops_new(o.backend, o.threads);
        if (!be) { rc = QL_EINVAL; goto done; }
        // a run that will not fit is refused here, before the model or the data is loaded
        plan_request pr = plan_request_of(&o, targets, bd);
        if (!o.no_mem_check && (rc = plan_cmd_check(&pr, be))) goto done;
        if ((rc = model_load(&m, o.base, (dtype)bd))) goto done;
        if ((rc = tok_load_bytes(&tok, (tok_kind)m.tokenizer_kind, m.tokenizer, m.tokenizer_len, o.base))) goto done;
        if ((rc = ds_template_choose(&tmpl, o.chat_template, m.chat_template))) goto done;
        dataset_options dopt;
        dataset_options_default(&dopt);
        dopt.chat_template = tmpl, dopt.train_on_inputs = o.train_on_inputs, dopt.skip_invalid = o.skip_invalid;
        dopt.seq_len = o.seq_len, dopt.add_bos = m.cfg.add_bos, dopt.bos_id = m.cfg.bos_id, dopt.eos_id = m.cfg.eos_id;
        if ((rc = dataset_load(&ds, o.data, tok, &dopt))) goto done;
        if (ds.skip_summary) log_warn("%s", ds.skip_summary);
        dataset_shuffle(&ds, (uint64_t)o.seed);
        if (o.val_data[0]) rc = dataset_load(&vs, o.val_data, tok, &dopt);
        else if (o.val_split > 0) rc = dataset_split(&ds, &vs, o.val_split);
        if (rc) goto done;
        log_info("data %s: %s format, %d training samples (%ld trained tokens), %d validation samples; %ld cut at "
                 "--seq-len %d, %ld invalid lines skipped", o.data, ds_format_name(ds.format), ds.n_samples,
                 ds.stats.trained_tokens, vs.n_samples, ds.stats.truncated + vs.stats.truncated, o.seq_len,
                 ds.stats.skipped);
        if ((rc = dataset_pack(&tp_rows, &ds, o.seq_len, 0))) goto done;
        if (vs.n_samples && (rc = dataset_pack(&vp_rows, &vs, o.seq_len, 0))) goto done;
        if ((o.early_stop || o.save_best) && !vp_rows.R) {
            rc = ql_err(QL_EINVAL, "%s needs a validation set, and there is none: give --val-split > 0 or --val-data",
                        o.early_stop ? "--early-stopping" : "--save-best");
            goto done;
        }
        if (o.early_stop && !o.eval_every) {
            rc = ql_err(QL_EINVAL, "--early-stopping %d counts evaluations, and --eval-every 0 evaluates only at the "
                        "end: give --eval-every > 0", o.early_stop);
            goto done;
        }
        int per_step = o.batch * o.accum;
        int steps = o.max_steps > 0 ? o.max_steps : (int)(((long)o.epochs * tp_rows.R + per_step - 1) / per_step);
        // runs that will not do what their options suggest: say so before the hours go
        if (o.warmup >= steps)
            log_warn("--warmup %d is as long as the whole run (%d steps): the learning rate never reaches --lr %g; "
                     "lower --warmup", o.warmup, steps, o.lr);
        if (tp_rows.R < per_step)
            log_warn("the data packs into %d rows of --seq-len %d but one step takes %d (--batch-size %d x "
                     "--grad-accum %d): each step repeats rows", tp_rows.R, o.seq_len, per_step, o.batch, o.accum);
        else if (o.max_steps > 0 && (long)o.max_steps * per_step < tp_rows.R)
            log_warn("--max-steps %d sees %ld of the data's %d packed rows: less than one epoch", o.max_steps,
                     (long)o.max_steps * per_step, tp_rows.R);
        int n_read = ds.n_samples + (o.val_data[0] ? 0 : vs.n_samples);  // ds.stats counts --val-split's too
        if (n_read > 0 && 2 * ds.stats.truncated > n_read)
            log_warn("%ld of %d samples of %s are longer than --seq-len %d and were cut; a longer --seq-len keeps "
                     "their ends", ds.stats.truncated, n_read, o.data, o.seq_len);
        adamw_config oc = {.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps, .weight_decay = o.wd,
                           .warmup = o.warmup, .schedule = sched, .total_steps = steps, .max_grad_norm = o.max_grad_norm};
        if ((rc = lora_init(&a, &m.cfg, o.rank, o.alpha, o.rslora, o.dropout, targets, (uint64_t)o.seed))) goto done;
        a.base_model = strdup(o.base);
        if ((rc = trainer_init(&t, &m, be, &a, o.batch, o.seq_len, o.grad_ckpt))) goto done;
        // everything a resumed run must share with the one it continues: the data (and how
        // it is read: template, prompt tokens, skipped lines), the options that shape the
        // steps, and the base itself (not only its dtype)
        snprintf(fingerprint, sizeof fingerprint,
                 "data=%016llx rank=%d alpha=%g rslora=%d dropout=%g targets=%u lr=%g steps=%d batch=%d accum=%d "
                 "seq=%d seed=%d warmup=%d sched=%d wd=%g b1=%g b2=%g eps=%g clip=%g val=%g base=%s "
                 "template=%s inputs=%d skip=%d val_data=%016llx base_id=%016llx",
                 (unsigned long long)fnv1a(o.data), o.rank, o.alpha, o.rslora, o.dropout, targets, o.lr, steps,
                 o.batch, o.accum, o.seq_len, o.seed, o.warmup, sched, o.wd, o.beta1, o.beta2, o.eps,
                 o.max_grad_norm, o.val_split, base_dtype_name(m.base_dtype), ds_template_name(tmpl),
                 o.train_on_inputs, o.skip_invalid, (unsigned long long)(o.val_data[0] ? fnv1a(o.val_data) : 0),
                 (unsigned long long)base_identity(o.base));
        losses = calloc((size_t)steps + 1, sizeof(float));
        vloss = calloc((size_t)steps + 3, sizeof(float));
        vstep = calloc((size_t)steps + 3, sizeof(int));
        int N = o.batch * o.seq_len;
        buf = malloc(sizeof(int) * 4 * (size_t)N * o.accum);
        perm = malloc(sizeof(int) * (size_t)tp_rows.R);
        int *rows = malloc(sizeof(int) * (size_t)o.batch);
        if (!losses || !vloss || !vstep || !buf || !perm || !rows) { free(rows); rc = ql_err(QL_ENOMEM, "out of memory"); goto done; }
        int step0 = 0;
        run_out ro = {.o = &o, .recipe = recipe, .rtext = rtext, .fingerprint = fingerprint, .ds = &ds, .vs = &vs,
                      .tmpl = tmpl, .steps = steps, .losses = losses, .vstep = vstep, .vloss = vloss,
                      .metrics = &metrics, .t0 = time_now(), .adapter_step = -1};
        int since_best = 0;  // evaluations since the best one (--early-stopping)
        if (o.resume) {
            if ((rc = find_checkpoint(o.out, ckpt, sizeof ckpt)) ||
                (rc = load_checkpoint(ckpt, &t, steps, fingerprint, &step0, losses, &nval, vstep, vloss))) { free(rows); goto done; }
            log_info("resumed from %s at step %d", ckpt, step0);
            char mp[4400];
            snprintf(mp, sizeof mp, "%s/metrics.jsonl", o.out);
            metrics_resume(&metrics, mp, step0);
            ro.own = 1;
            // the best evaluation so far; --save-best wrote its adapter when it came
            for (int i = 0; i < nval; i++) {
                if (vstep[i] < 1) continue;
                if (!ro.best_step || vloss[i] < ro.best_val) ro.best_val = vloss[i], ro.best_step = vstep[i], since_best = 0;
                else since_best++;
            }
            if (o.save_best && ro.best_step) ro.adapter_step = ro.best_step;
        }
        const int keep_now = o.keep_ckpts > 1 ? o.keep_ckpts : 1;  // while running, the newest is always kept
        const double rows_per_step = (double)o.batch * o.accum;  // for the epoch in metrics.jsonl
        if (vp_rows.R && step0 == 0 && nval == 0) {  // where training starts from
            double vl = val_loss(&t, &vp_rows, o.batch, buf, buf + N, buf + 2 * N, buf + 3 * N);
            vloss[nval] = (float)vl, vstep[nval++] = 0;
            fprintf(stderr, "step=0 val_loss=%.6f\n", vl);
            sb_addf(&metrics, "{\"step\": 0, \"epoch\": 0, \"val_loss\": %.6f, \"elapsed_s\": 0}\n", vl);
        }
        long perm_epoch = -1;
        int tty = isatty(2);
        intr_install("\nCtrl-C: stopping after this step, with a checkpoint and the adapter "
                     "(Ctrl-C again to quit at once, losing the step)\n");
        double t0 = time_now(), trained_total = 0;
        int stop = o.stop_after > 0 && o.stop_after < steps ? o.stop_after : steps;
        int done_steps = steps, improved = 0;  // the run's last step (--early-stopping ends it before steps)
        if (o.early_stop && since_best >= o.early_stop) stop = done_steps = step0, ro.early = 1;  // a resumed run that had stopped
        for (int step = step0; step < stop && !rc; step++) {
            // gather the step's micro-batches first: the loss is normalized by their total trained tokens
            long ntr = 0;
            for (int mb = 0; mb < o.accum; mb++) {
                int *tok_b = buf + (size_t)mb * 4 * N;
                for (int b = 0; b < o.batch; b++)
                    rows[b] = row_of(&tp_rows, (uint64_t)o.seed, ((long)step * o.accum + mb) * o.batch + b, perm, &perm_epoch);
                fill_batch(&tp_rows, rows, o.batch, tok_b, tok_b + N, tok_b + 2 * N, tok_b + 3 * N);
                for (int i = 0; i < N; i++) ntr += tok_b[N + i] >= 0;
            }
            trainer_zero_grads(&t);
            double loss = 0;
            for (int mb = 0; mb < o.accum && !rc && ntr > 0; mb++) {
                int *tok_b = buf + (size_t)mb * 4 * N;
                double nll;
                long k;
                uint64_t key = (uint64_t)o.seed * 0x9E3779B97F4A7C15ULL + (uint64_t)step * 1000003u + (uint64_t)mb;
                rc = trainer_step(&t, tok_b, tok_b + N, tok_b + 2 * N, tok_b + 3 * N, 1.0f / (float)ntr, key, &nll, &k);
                loss += nll / (double)ntr;
                crash_point("step");  // a kill in the middle of a step (test hook)
            }
            if (rc) break;
            float lr = lr_at(&oc, step);
            double norm = ntr > 0 ? train_update(&t, &oc, step + 1, lr) : 0;
            losses[step] = (float)loss;
            trained_total += (double)ntr;
            double el = time_now() - t0, tps = trained_total / (el > 0 ? el : 1e-9);
            const int last = step + 1 == steps, logged = (step + 1) % o.log_every == 0 || last;
            const double epoch = (step + 1) * rows_per_step / (double)tp_rows.R;
            if (tty) {
                char what[128];
                snprintf(what, sizeof what, "step %d/%d loss %.4f lr %.2e %.0f tok/s", step + 1, steps, loss, lr, tps);
                progress_bar(what, step + 1 - step0, steps - step0, "steps", t0);
            } else if (logged) {
                fprintf(stderr, "step=%d loss=%.6f lr=%.3e grad_norm=%.4f trained_tok/s=%.1f eta_s=%.0f\n", step + 1,
                        loss, lr, norm, tps, el / (step + 1 - step0) * (steps - step - 1));
            }
            if (logged)
                sb_addf(&metrics,
                        "{\"step\": %d, \"epoch\": %.4f, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
                        "\"tokens_per_s\": %.1f, \"elapsed_s\": %.3f}\n",
                        step + 1, epoch, loss, lr, norm, tps, el);
            improved = 0;
            if (vp_rows.R && ((o.eval_every && (step + 1) % o.eval_every == 0) || last)) {
                double vl = val_loss(&t, &vp_rows, o.batch, buf, buf + N, buf + 2 * N, buf + 3 * N);
                vloss[nval] = (float)vl, vstep[nval++] = step + 1;
                if (tty) fputc('\n', stderr);
                if ((improved = !ro.best_step || (float)vl < ro.best_val)) ro.best_val = (float)vl, ro.best_step = step + 1, since_best = 0;
                else since_best++;
                fprintf(stderr, "step=%d val_loss=%.6f%s\n", step + 1, vl, improved ? " (best)" : "");
                sb_addf(&metrics, "{\"step\": %d, \"epoch\": %.4f, \"val_loss\": %.6f, \"elapsed_s\": %.3f}\n",
                        step + 1, epoch, vl, time_now() - t0);
                if (!last && o.early_stop && since_best >= o.early_stop) {
                    log_info("early stopping after step %d: the validation loss has not improved for %d evaluations "
                             "(best %.6f at step %d)", step + 1, since_best, ro.best_val, ro.best_step);
                    done_steps = step + 1, ro.early = 1;
                    break;
                }
            }
            ro.nval = nval;
            // a checkpoint goes out with the adapter of its step (the final one below); --save-best
            // writes each new best adapter when it comes, so that a crash keeps it
            const int save =
                !last && ((o.save_every && (step + 1) % o.save_every == 0) || (stop < steps && step + 1 == stop));
            const int new_adapter = !o.save_best || improved;
            if (save || (!last && o.save_best && improved)) rc = write_out(&ro, &t, step + 1, save, new_adapter, keep_now);
            if (!rc && !last && intr_requested()) {  // Ctrl-C: keep what this run has done (once)
                if (tty) fputc('\n', stderr);
                if (!save) rc = write_out(&ro, &t, step + 1, 1, new_adapter, keep_now);
                if (!rc) {
                    log_info("interrupted after step %d of %d; %s holds the checkpoint (%s/) and the adapter%s. "
                             "Continue with the same command and --resume.", step + 1, steps, o.out, PEFT_CHECKPOINTS_DIR,
                             o.save_best ? " with the lowest validation loss so far" : " of that step");
                    interrupted = 1;
                }
                break;
            }
        }
        free(rows);
        if (tty && !interrupted) fputc('\n', stderr);
        if (rc || interrupted) goto done;
        if (stop < steps && !ro.early) {
            log_info("stopped after step %d of %d; %s holds the checkpoint and the adapter of that step (continue with "
                     "--resume)", stop, steps, o.out);
            goto done;
        }
        ro.nval = nval;
        // checkpoints/ after a run that completes: the final step's (--save-every) and the newest
        // before it, --keep-checkpoints in all; 0 removes them
        rc = write_out(&ro, &t, done_steps, o.save_every > 0 && o.keep_ckpts > 0, !o.save_best || improved, o.keep_ckpts);
        long kept[1];
        int nk = rc ? 0 : list_checkpoints(o.out, kept, 1);
        if (!rc && nk)
            log_info("checkpoints: %s/%s (the newest: step %ld; --keep-checkpoints %d)", o.out, PEFT_CHECKPOINTS_DIR,
                     kept[0], o.keep_ckpts);
        if (!rc && o.save_best)
            log_info("--save-best: the adapter in %s is the one of step %d (validation loss %.6f)", o.out,
                     ro.adapter_step, ro.best_val);
        if (!rc)
            log_info("wrote %s (adapter_config.json, adapter_model.safetensors, training_record.json, loss.svg, "
                     "metrics.jsonl%s); final train loss %.4f", o.out, nk ? ", checkpoints/" : "",
                     done_steps ? losses[done_steps - 1] : 0.0f);
    done:
        if (rc) {
            fprintf(stderr, "qlora train: error: %s\n", ql_errmsg());
            code = rc == QL_EINVAL ? 2 : 1;
        } else if (interrupted) {
            code = QL_EXIT_INTERRUPTED;
        }
        intr_restore();
        trainer_free(&t);
        lora_free(&a);
        ds_packed_free(&tp_rows), ds_packed_free(&vp_rows);
        dataset_free(&ds), dataset_free(&vs);
        free(losses), free(vloss), free(vstep), free(buf), free(perm);
        sb_free(&metrics);
        ops_delete(be);
        tok_free(tok);
        model_free(&m);
    }
done_args:
    out_unlock(&lock);
    recipe_args_free(rav, rac);
    free(rtext);
    free(all);
    return code;
}
