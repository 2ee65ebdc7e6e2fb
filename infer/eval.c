// eval.c: see eval.h.
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/json.h"
#include "../common/log.h"

int eval_sample(fwd_state *f, const int *ids, int n, double *nll_sum) {
    int V = f->m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)f->max_N * V);
    if (!logits) return ql_err(QL_ENOMEM, "out of memory");
    double sum = 0;
    int rc = QL_OK;
    for (int p = 0; p < n - 1 && !rc; p += f->max_N) {
        int k = n - 1 - p < f->max_N ? n - 1 - p : f->max_N;
        rc = fwd_forward(f, logits, ids + p, k, p, 1);
        for (int i = 0; i < k && !rc; i++) {
            const float *l = logits + (size_t)i * V;
            float mx = l[0];
            for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
            double z = 0;
            for (int v = 0; v < V; v++) z += exp((double)l[v] - mx);
            sum += log(z) + mx - l[ids[p + i + 1]];
        }
    }
    free(logits);
    *nll_sum = sum;
    return rc;
}

static int is_jsonl(const char *path) {
    size_t n = strlen(path);
    return n > 6 && !strcmp(path + n - 6, ".jsonl");
}

typedef struct {
    int **ids;
    int *len;
    int n, cap, longest;
} sample_list;

static int samples_add(sample_list *l, int *ids, int len) {
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 64;
        int **ni = realloc(l->ids, sizeof(int *) * (size_t)nc);
        int *nl = realloc(l->len, sizeof(int) * (size_t)nc);
        if (ni) l->ids = ni;
        if (nl) l->len = nl;
        if (!ni || !nl) return ql_err(QL_ENOMEM, "out of memory");
        l->cap = nc;
    }
    l->ids[l->n] = ids, l->len[l->n++] = len;
    if (len > l->longest) l->longest = len;
    return QL_OK;
}

// Reads every sample of the file as BOS + tokens, cut at max_len.
static int read_samples(const char *path, const tokenizer *tok, const model_config *c, int max_len, sample_list *l,
                        int *truncated) {
    char *buf;
    size_t len;
    QL_CHECK(file_read_all(path, (size_t)4 << 30, &buf, &len));
    int jsonl = is_jsonl(path), rc = QL_OK, lineno = 0;
    char *line = buf;
    while (line < buf + len && !rc) {
        char *end = memchr(line, '\n', (size_t)(buf + len - line));
        if (!end) end = buf + len;
        *end = 0;
        lineno++;
        size_t n = (size_t)(end - line);
        if (n && line[n - 1] == '\r') line[--n] = 0;
        char *text = NULL;
        int blank = 1;
        for (size_t i = 0; i < n; i++) blank &= line[i] == ' ' || line[i] == '\t';
        if (!blank) {
            if (jsonl) {
                json_doc d;
                char what[4200];
                snprintf(what, sizeof what, "%s:%d", path, lineno);
                rc = json_parse(&d, line, n, what);
                if (!rc) {
                    int t = json_find(&d, 0, "text");
                    if (t < 0) rc = ql_err(QL_EFORMAT, "%s: expected an object with a \"text\" field", what);
                    else rc = json_get_string(&d, t, "text", &text, NULL);
                    json_free(&d);
                }
            } else {
                text = strdup(line);
                if (!text) rc = ql_err(QL_ENOMEM, "out of memory");
            }
        }
        if (text && !rc) {
            int *ids = NULL, k = 0, bos = c->bos_id >= 0;
            rc = tok_encode(tok, text, strlen(text), 0, &ids, &k);
            int *all = rc ? NULL : malloc(sizeof(int) * (size_t)(k + 1));
            if (!rc && !all) rc = ql_err(QL_ENOMEM, "out of memory");
            if (!rc) {
                if (bos) all[0] = c->bos_id;
                memcpy(all + bos, ids, sizeof(int) * (size_t)k);
                int total = k + bos;
                if (total > max_len) { total = max_len; (*truncated)++; }
                if (total >= 2) rc = samples_add(l, all, total);
                else free(all);
                all = NULL;
            }
            free(all);
            free(ids);
        }
        free(text);
        line = end + 1;
    }
    free(buf);
    return rc;
}

int eval_file(model *m, ops *o, const tokenizer *tok, const char *path, const lora_adapter *adapter, eval_result *r) {
    memset(r, 0, sizeof *r);
    sample_list l = {0};
    int rc = read_samples(path, tok, &m->cfg, m->cfg.max_pos, &l, &r->truncated);
    if (!rc && l.n == 0) rc = ql_err(QL_EFORMAT, "%s: no sample with at least one token to predict", path);
    fwd_state f = {0};
    // the KV cache holds the longest sample, not max_position_embeddings
    if (!rc) rc = fwd_init(&f, m, o, l.longest, l.longest < 512 ? l.longest : 512);
    if (!rc && adapter) rc = fwd_set_adapter(&f, adapter);
    double total = 0;
    for (int i = 0; i < l.n && !rc; i++) {
        double s;
        rc = eval_sample(&f, l.ids[i], l.len[i], &s);
        total += s;
        r->tokens += l.len[i] - 1;
        r->samples++;
    }
    if (f.o) fwd_free(&f);
    for (int i = 0; i < l.n; i++) free(l.ids[i]);
    free(l.ids);
    free(l.len);
    if (rc) return rc;
    r->loss = total / (double)r->tokens;
    r->ppl = exp(r->loss);
    return QL_OK;
}
