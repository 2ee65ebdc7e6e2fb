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

int eval_file(fwd_state *f, const spm *tok, const char *path, eval_result *r) {
    memset(r, 0, sizeof *r);
    char *buf;
    size_t len;
    QL_CHECK(file_read_all(path, (size_t)4 << 30, &buf, &len));
    const model_config *c = &f->m->cfg;
    int max_len = c->max_pos < f->max_T ? c->max_pos : f->max_T;
    int jsonl = is_jsonl(path), rc = QL_OK, lineno = 0;
    double total = 0;
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
            int *ids, k;
            int bos = c->bos_id >= 0;
            rc = spm_encode(tok, text, strlen(text), &ids, &k);
            if (!rc) {
                int *all = malloc(sizeof(int) * (size_t)(k + 1));
                if (!all) rc = ql_err(QL_ENOMEM, "out of memory");
                else {
                    if (bos) all[0] = c->bos_id;
                    memcpy(all + bos, ids, sizeof(int) * (size_t)k);
                    int total_len = k + bos;
                    if (total_len > max_len) { total_len = max_len; r->truncated++; }
                    if (total_len >= 2) {
                        double s;
                        rc = eval_sample(f, all, total_len, &s);
                        total += s;
                        r->tokens += total_len - 1;
                        r->samples++;
                    }
                    free(all);
                }
                free(ids);
            }
        }
        free(text);
        line = end + 1;
    }
    free(buf);
    if (rc) return rc;
    if (r->tokens == 0) return ql_err(QL_EFORMAT, "%s: no sample with at least one token to predict", path);
    r->loss = total / (double)r->tokens;
    r->ppl = exp(r->loss);
    return QL_OK;
}
