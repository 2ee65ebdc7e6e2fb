// eval.c: see eval.h.
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/json.h"
#include "../common/log.h"

void eval_options(dataset_options *o, const model *m, ds_template t, int seq_len, int train_on_inputs) {
    dataset_options_default(o);
    o->chat_template = t, o->train_on_inputs = train_on_inputs, o->seq_len = seq_len;
    o->add_bos = m->cfg.add_bos, o->bos_id = m->cfg.bos_id, o->eos_id = m->cfg.eos_id;
}

static int is_jsonl(const char *path) {
    size_t n = strlen(path);
    return n > 6 && !strcmp(path + n - 6, ".jsonl");
}

// Appends one plain-text sample: ids (n,) taken over; mask 0 then 1s.
static int text_add(dataset *d, int *cap, int *ids, int n, int line) {
    uint8_t *mask = malloc((size_t)n);
    if (!mask) { free(ids); return ql_err(QL_ENOMEM, "out of memory"); }
    mask[0] = 0;
    memset(mask + 1, 1, (size_t)n - 1);
    if (d->n_samples == *cap) {
        int nc = *cap ? 2 * *cap : 64;
        ds_sample *ns = realloc(d->samples, sizeof(ds_sample) * (size_t)nc);
        if (!ns) { free(ids), free(mask); return ql_err(QL_ENOMEM, "out of memory"); }
        d->samples = ns, *cap = nc;
    }
    d->samples[d->n_samples++] = (ds_sample){n, ids, mask, line};
    d->stats.samples++, d->stats.tokens += n, d->stats.trained_tokens += n - 1;
    return QL_OK;
}

// A plain text file: each non-blank line is BOS + its tokens, cut at seq_len.
static int load_text(dataset *d, const char *path, const tokenizer *tok, const dataset_options *opt) {
    char *buf;
    size_t len;
    QL_CHECK(file_read_all(path, opt->max_file_bytes, &buf, &len));
    int bos_id = opt->bos_id >= 0 ? opt->bos_id : tok_bos_id(tok);
    int bos = opt->add_bos && bos_id >= 0, rc = QL_OK, lineno = 0, cap = 0;
    for (char *line = buf; line < buf + len && !rc;) {
        char *end = memchr(line, '\n', (size_t)(buf + len - line));
        if (!end) end = buf + len;
        *end = 0;
        lineno++;
        size_t n = (size_t)(end - line);
        if (n && line[n - 1] == '\r') line[--n] = 0;
        int blank = 1;
        for (size_t i = 0; i < n; i++) blank &= line[i] == ' ' || line[i] == '\t';
        if (!blank) {
            d->stats.lines++;
            int *ids = NULL, k = 0;
            rc = tok_encode(tok, line, n, 0, &ids, &k);
            if (rc) rc = ql_err(rc, "%s:%d: %s", path, lineno, ql_errmsg());
            int *all = rc ? NULL : malloc(sizeof(int) * (size_t)(k + 1));
            if (!rc && !all) rc = ql_err(QL_ENOMEM, "out of memory");
            if (!rc) {
                if (bos) all[0] = bos_id;
                memcpy(all + bos, ids, sizeof(int) * (size_t)k);
                int total = k + bos;
                if (total > opt->seq_len) total = opt->seq_len, d->stats.truncated++;
                if (total >= 2) rc = text_add(d, &cap, all, total, lineno);
                else free(all);
            }
            free(ids);
        }
        line = end + 1;
    }
    free(buf);
    return rc;
}

int eval_load(dataset *d, const char *path, const tokenizer *tok, const dataset_options *opt) {
    memset(d, 0, sizeof *d);
    if (opt->seq_len < 2) return ql_err(QL_EINVAL, "sequence length: expected at least 2, found %d", opt->seq_len);
    int rc = is_jsonl(path) ? dataset_load(d, path, tok, opt) : load_text(d, path, tok, opt);
    if (!rc && d->stats.trained_tokens == 0)
        rc = ql_err(QL_EFORMAT, "%s: no sample with a token to predict (a trained token after the first)", path);
    if (rc) dataset_free(d);
    return rc;
}

// The position of the last trained target of s (0: none): tokens [0, last) are
// the inputs that predict every target.
static int last_target(const ds_sample *s) {
    int last = s->n - 1;
    while (last > 0 && !s->mask[last]) last--;
    return last;
}

// -log softmax(l)[y] for one row of V logits, summed in double.
static double row_nll(const float *l, int V, int y) {
    float mx = l[0];
    for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
    double z = 0;
    for (int v = 0; v < V; v++) z += exp((double)l[v] - mx);
    return log(z) + mx - l[y];
}

// Targets t[0..nt) over every sample of d, in one KV slot each; longest: the
// most inputs of a sample. Adds the NLL sums into sum (nt).
static int run_group(double *sum, model *m, ops *o, const dataset *d, const eval_target *t, int nt, int longest) {
    int V = m->cfg.vocab_size;
    // rows per target and call: every target runs the same chunk of a sample; 512
    // rows in all at most (logits are rows x V floats)
    int chunk = 512 / nt > 0 ? 512 / nt : 1;
    if (chunk > longest) chunk = longest;
    fwd_state f = {0};
    // the KV cache holds the longest sample's inputs, not max_position_embeddings
    int rc = fwd_init_slots(&f, m, o, longest, chunk * nt, nt);
    float *logits = rc ? NULL : malloc(sizeof(float) * (size_t)chunk * nt * V);
    int *tokens = rc ? NULL : malloc(sizeof(int) * (size_t)chunk * nt);
    fwd_seq *seqs = rc ? NULL : calloc((size_t)nt, sizeof(fwd_seq));
    if (!rc && (!logits || !tokens || !seqs)) rc = ql_err(QL_ENOMEM, "out of memory");
    for (int i = 0; i < d->n_samples && !rc; i++) {
        const ds_sample *s = &d->samples[i];
        int last = last_target(s);
        for (int p = 0; p < last && !rc; p += chunk) {
            int k = last - p < chunk ? last - p : chunk;
            for (int j = 0; j < nt; j++) {
                memcpy(tokens + (size_t)j * k, s->ids + p, sizeof(int) * (size_t)k);
                seqs[j] = (fwd_seq){k, p, j, t[j].adapter, t[j].adapter ? t[j].scale : 0.0f};
            }
            rc = fwd_batch(&f, logits, tokens, seqs, nt, 1);
            for (int j = 0; j < nt && !rc; j++)
                for (int q = 0; q < k; q++)  // row q of target j predicts ids[p+q+1]
                    if (s->mask[p + q + 1]) sum[j] += row_nll(logits + ((size_t)j * k + q) * V, V, s->ids[p + q + 1]);
        }
    }
    if (f.o) fwd_free(&f);
    free(logits), free(tokens), free(seqs);
    return rc;
}

int eval_run(eval_result *r, model *m, ops *o, const dataset *d, const eval_target *t, int nt) {
    QL_ASSERT(nt >= 1);
    memset(r, 0, sizeof *r * (size_t)nt);
    int longest = 0, n_samples = 0;
    long long n_targets = 0;
    for (int i = 0; i < d->n_samples; i++) {
        const ds_sample *s = &d->samples[i];
        int last = last_target(s);
        if (last > longest) longest = last;
        for (int q = 1; q <= last; q++) n_targets += s->mask[q];
        n_samples += last > 0;
    }
    if (n_targets == 0) return ql_err(QL_EFORMAT, "no sample has a trained token to score");
    // targets per pass: their KV caches (fp32 keys and values of every layer)
    // within EVAL_KV_BUDGET, and at most EVAL_MAX_SLOTS
    const model_config *c = &m->cfg;
    double kv_slot = 2.0 * sizeof(float) * c->n_layers * (double)longest * c->n_kv_heads * c->head_dim;
    int group = (int)(EVAL_KV_BUDGET / kv_slot);
    group = group < 1 ? 1 : group > EVAL_MAX_SLOTS ? EVAL_MAX_SLOTS : group;
    double *sum = calloc((size_t)nt, sizeof(double));
    if (!sum) return ql_err(QL_ENOMEM, "out of memory");
    int rc = QL_OK;
    for (int j0 = 0; j0 < nt && !rc; j0 += group)
        rc = run_group(sum + j0, m, o, d, t + j0, nt - j0 < group ? nt - j0 : group, longest);
    for (int j = 0; j < nt && !rc; j++) {
        r[j].tokens = n_targets, r[j].samples = n_samples;
        r[j].loss = sum[j] / (double)n_targets;
        r[j].ppl = exp(r[j].loss);
    }
    free(sum);
    return rc;
}

int eval_file(model *m, ops *o, const tokenizer *tok, const char *path, const lora_adapter *adapter, eval_result *r) {
    memset(r, 0, sizeof *r);
    dataset_options opt;
    eval_options(&opt, m, DS_TEMPLATE_LLAMA2, m->cfg.max_pos, 0);
    dataset d;
    QL_CHECK(eval_load(&d, path, tok, &opt));
    eval_target t = {adapter, 1.0f};
    int rc = eval_run(r, m, o, &d, &t, 1);
    r->truncated = (int)d.stats.truncated;
    dataset_free(&d);
    return rc;
}
