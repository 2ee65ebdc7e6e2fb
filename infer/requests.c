// requests.c: see requests.h. The file is read whole; each line is parsed and
// checked into a request (or an error result), the adapters the lines name are
// loaded from the store, and every runnable request goes to the batched engine
// at once (engine.c admits them as slots free up). Results are then written in
// input order.
#include "requests.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/fileio.h"
#include "../model/forward.h"
#include "../common/json.h"
#include "../common/log.h"
#include "../common/strbuf.h"
#include "engine.h"
#include "generate.h"
#include "store.h"

struct req_line {
    int line;
    char *id;            // the id as JSON text ("null" when absent)
    char *adapter;       // NULL: the base
    float scale;         // < 0: the store's
    int *ids, n;         // the prompt's tokens
    char *stop[ENGINE_MAX_STOPS];
    int max_tokens, top_k;
    float temperature, top_p;
    long long seed;
    sample_penalties pen;
    int n_choices;       // "n": answers to the prompt, each with its own seed (seed + k)
    ds_message *msg;     // "messages", kept to render again in the adapter's own template
    int nm;
    char err[1400];      // not empty: this line cannot run
};

static void line_free(req_line *q) {
    free(q->id), free(q->adapter), free(q->ids);
    ds_messages_free(q->msg, q->nm);
    for (int i = 0; i < ENGINE_MAX_STOPS; i++) free(q->stop[i]);
}

static const char *const fields[] = {"id",          "prompt", "messages", "adapter", "scale", "max_tokens",
                                     "temperature", "top_p",  "top_k",    "seed",    "stop",  "repetition_penalty",
                                     "frequency_penalty", "presence_penalty", "min_p", "n"};


static int get_stops(const json_doc *d, req_line *q) {
    int v = json_find(d, 0, "stop");
    if (v < 0 || json_is_null(d, v)) return QL_OK;
    int arr = json_type(d, v) == JSON_ARRAY, n = arr ? json_size(d, v) : 1;
    if (n > ENGINE_USER_STOPS)
        return ql_err(QL_EFORMAT, "%s: field 'stop': at most %d strings, found %d", d->what, ENGINE_USER_STOPS, n);
    for (int k = 0; k < n; k++) {
        QL_CHECK(json_get_string(d, arr ? json_item(d, v, k) : v, "stop", &q->stop[k], NULL));
        if (!q->stop[k][0]) return ql_err(QL_EFORMAT, "%s: field 'stop': an empty string", d->what);
    }
    return QL_OK;
}

// A field no request takes is ignored; the first line with each such name says so
// (at most 16 names are remembered; past that each is said again).
static void warn_unknown(const char *where, const char *key, int len) {
    static char seen[16][41];
    static int nseen;
    if (len > 40) len = 40;
    for (int i = 0; i < nseen; i++)
        if ((int)strlen(seen[i]) == len && !memcmp(seen[i], key, (size_t)len)) return;
    if (nseen < 16) memcpy(seen[nseen], key, (size_t)len), seen[nseen++][len] = '\0';
    log_warn("%s: unknown field \"%.*s\" ignored (a request takes id, prompt or messages, adapter, scale, max_tokens, "
             "temperature, top_p, top_k, seed, stop, repetition_penalty, frequency_penalty, presence_penalty, min_p, n)",
             where, len, key);
}

// Parses line text into q (the defaults already in q); an error leaves its message.
static int parse_line(req_line *q, const char *text, size_t len, const char *file, const model *m, const tokenizer *tok,
                      const requests_opts *ro) {
    char what[512];
    snprintf(what, sizeof what, "%s:%d", file, q->line);
    json_doc d;
    if (json_parse(&d, text, len, what)) {  // "what: invalid JSON at line 1 column C: why" -> "what:C: invalid JSON: why"
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ql_errmsg());
        const char *c = strstr(msg, ": invalid JSON at line 1 column "), *why = c ? strstr(c + 2, ": ") : NULL;
        if (!c) return ql_err(QL_EFORMAT, "%s", msg);  // another kind (a duplicate key) says where itself
        return ql_err(QL_EFORMAT, "%s:%d: invalid JSON%s", what, atoi(c + 32), why ? why : "");
    }
    int rc = QL_OK;
    if (json_type(&d, 0) != JSON_OBJECT) rc = ql_err(QL_EFORMAT, "%s: expected a JSON object, found %s", what, json_type_name(&d, 0));
    int v = rc ? -1 : json_find(&d, 0, "id");  // first: an error result keeps the id
    if (v >= 0) {
        int t = json_type(&d, v);
        if (t == JSON_STRING) {
            char *s = NULL;
            rc = json_get_string(&d, v, "id", &s, NULL);
            if (!rc) free(q->id), q->id = json_quote(s);
            free(s);
        } else if (t == JSON_PRIMITIVE) {
            free(q->id);
            q->id = strndup(d.js + d.tok[v].start, (size_t)(d.tok[v].end - d.tok[v].start));
        } else rc = ql_err(QL_EFORMAT, "%s: field 'id': expected a string or a number, found %s", what, json_type_name(&d, v));
        if (!rc && !q->id) rc = ql_err(QL_ENOMEM, "out of memory");
    }
    for (int k = 0; !rc && k < json_size(&d, 0); k++) {  // an unknown field is ignored, and said once per name
        int key = json_member(&d, 0, k, NULL), known = 0, kl = d.tok[key].end - d.tok[key].start;
        for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) known |= json_eq(&d, key, fields[f]);
        if (!known) warn_unknown(what, d.js + d.tok[key].start, kl);
    }
    double name_scale = -1;  // from "adapter": "name:scale"
    v = rc ? -1 : json_find(&d, 0, "adapter");
    if (v >= 0 && !json_is_null(&d, v)) {
        size_t an = 0;
        rc = json_get_string(&d, v, "adapter", &q->adapter, &an);
        if (!rc && !q->adapter[0] && an == 0) free(q->adapter), q->adapter = NULL;
        char *colon = !rc && q->adapter ? strrchr(q->adapter, ':') : NULL;
        if (colon) {  // name:scale, as --adapters takes it
            char *end;
            name_scale = strtod(colon + 1, &end);
            if (end == colon + 1 || *end || !(name_scale >= 0 && name_scale <= 100))
                rc = ql_err(QL_EFORMAT, "%s: field 'adapter': '%s': expected NAME or NAME:SCALE with a scale in [0, 100]",
                            what, q->adapter);
            else *colon = '\0', an = (size_t)(colon - q->adapter);
        }
        if (!rc && q->adapter && store_check_name(q->adapter, an))
            rc = ql_err(QL_EFORMAT, "%s: field 'adapter': %s", what, ql_errmsg());
    }
    double x = q->max_tokens, temp = q->temperature, tp = q->top_p, tk = q->top_k, sd = (double)q->seed, sc = -1;
    double nc = q->n_choices;
    if (!rc) rc = json_get_ranged(&d, 0, "n", 1, 0, 1, REQUESTS_MAX_N, &nc);
    q->n_choices = (int)nc;
    if (!rc) rc = json_get_ranged(&d, 0, "max_tokens", 1, 0, 0, 1 << 20, &x);
    if (!rc) rc = json_get_ranged(&d, 0, "temperature", 0, 0, 0, 100, &temp);
    if (!rc) rc = json_get_ranged(&d, 0, "top_p", 0, 0, 1e-9, 1, &tp);
    if (!rc) rc = json_get_ranged(&d, 0, "top_k", 1, 0, 0, 1 << 30, &tk);
    if (!rc) rc = json_get_ranged(&d, 0, "seed", 1, 0, 0, 9e15, &sd);
    if (!rc) rc = json_get_ranged(&d, 0, "scale", 0, 0, 0, 100, &sc);
    if (!rc && name_scale >= 0 && sc >= 0 && sc != name_scale)
        rc = ql_err(QL_EFORMAT, "%s: the scale in 'adapter' (%g) and the field 'scale' (%g) disagree", what, name_scale, sc);
    if (!rc && name_scale >= 0) sc = name_scale;
    q->max_tokens = (int)x, q->temperature = (float)temp, q->top_p = (float)tp, q->top_k = (int)tk;
    q->seed = (long long)sd, q->scale = (float)sc;
    double rp = q->pen.repetition, fp = q->pen.frequency, pp = q->pen.presence, mp = q->pen.min_p;
    if (!rc) rc = json_get_ranged(&d, 0, "repetition_penalty", 0, 0, 1e-6, 10, &rp);
    if (!rc) rc = json_get_ranged(&d, 0, "frequency_penalty", 0, 0, -2, 2, &fp);
    if (!rc) rc = json_get_ranged(&d, 0, "presence_penalty", 0, 0, -2, 2, &pp);
    if (!rc) rc = json_get_ranged(&d, 0, "min_p", 0, 0, 0, 1, &mp);
    q->pen = (sample_penalties){(float)rp, (float)fp, (float)pp, (float)mp};
    if (!rc) rc = get_stops(&d, q);
    int vp = rc ? -1 : json_find(&d, 0, "prompt"), vm = rc ? -1 : json_find(&d, 0, "messages");
    if (!rc && (vp >= 0) == (vm >= 0))
        rc = ql_err(QL_EFORMAT, "%s: expected one of \"prompt\" and \"messages\", found %s", what, vp >= 0 ? "both" : "neither");
    if (!rc && vp >= 0) {
        char *p = NULL;
        rc = json_get_string(&d, vp, "prompt", &p, NULL);
        if (!rc && !p[0]) rc = ql_err(QL_EFORMAT, "%s: field 'prompt' is empty", what);
        if (!rc) rc = tokenize_prompt(m, tok, p, &q->ids, &q->n);
        free(p);
    } else if (!rc) {
        rc = ds_parse_messages(&q->msg, &q->nm, &d, vm, file, q->line, 1);
        dataset_options dopt;
        prompt_options(&dopt, m, ro->tmpl);
        if (!rc) rc = ds_render_prompt(&q->ids, &q->n, q->msg, q->nm, tok, &dopt);
        if (rc == QL_EFORMAT && !strstr(ql_errmsg(), file))  // a template error has no location yet
            rc = ql_err(QL_EFORMAT, "%s: %s", what, ql_errmsg());
    }
    json_free(&d);
    return rc;
}

// The store entry for name (loaded or not), or NULL.
static const store_entry *entry(const adapter_store *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->e[i].name, name)) return &st->e[i];
    return NULL;
}

// Loads --adapters, or else the adapters the lines name, from --adapter-dir.
static int open_store(adapter_store *st, const model *m, const requests_opts *ro, const req_line *q, int n) {
    memset(st, 0, sizeof *st);
    if (ro->adapters[0]) return store_open(st, &m->cfg, ro->adapter_dir, ro->adapters, ro->follow_symlinks);
    if (!ro->adapter_dir[0]) return QL_OK;
    size_t cap = 1;
    for (int i = 0; i < n; i++) cap += q[i].adapter ? strlen(q[i].adapter) + 1 : 0;
    char *list = calloc(cap, 1);
    if (!list) return ql_err(QL_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        if (q[i].err[0] || !q[i].adapter) continue;
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !q[j].err[0] && q[j].adapter && !strcmp(q[j].adapter, q[i].adapter);
        if (!seen) strcat(strcat(list, list[0] ? "," : ""), q[i].adapter);
    }
    int rc = list[0] ? store_open(st, &m->cfg, ro->adapter_dir, list, ro->follow_symlinks) : QL_OK;
    free(list);
    return rc;
}

// One result line: r[0..q->n_choices) are its answers.
static int add_result(strbuf *b, const req_line *q, const eng_req *r) {
    char *qa = q->adapter ? json_quote(q->adapter) : NULL;
    const char *err = q->err[0] ? q->err : r && r->finish && !strcmp(r->finish, "error") ? r->err : NULL;
    char *qe = err ? json_quote(err) : NULL, *qt = !err ? json_quote(r->text ? r->text : "") : NULL;
    char num[96];
    int rc = (q->adapter && !qa) || (err && !qe) || (!err && !qt) ? ql_err(QL_ENOMEM, "out of memory") : QL_OK;
    if (!rc) rc = sb_add(b, "{\"id\": ");
    if (!rc) rc = sb_add(b, q->id ? q->id : "null");
    if (!rc) rc = sb_add(b, ", \"adapter\": ");
    if (!rc) rc = sb_add(b, qa ? qa : "null");
    if (!rc && err) {
        rc = sb_add(b, ", \"error\": ");
        if (!rc) rc = sb_add(b, qe);
        if (!rc) rc = sb_add(b, ", \"finish_reason\": \"error\"}\n");
    } else if (!rc && q->n_choices == 1) {
        rc = sb_add(b, ", \"text\": ");
        if (!rc) rc = sb_add(b, qt);
        snprintf(num, sizeof num, ", \"tokens\": %d, \"prompt_tokens\": %d, \"finish_reason\": \"%s\"}\n", r->n_ids,
                 r->n_prompt, r->finish);
        if (!rc) rc = sb_add(b, num);
    } else if (!rc) {  // "n": {"choices": [{"index", "text", "tokens", "finish_reason"}, ...]} as OpenAI's
        rc = sb_addf(b, ", \"prompt_tokens\": %d, \"choices\": [", r->n_prompt);
        for (int k = 0; k < q->n_choices && !rc; k++) {
            char *t = json_quote(r[k].text ? r[k].text : "");
            const int bad = r[k].finish && !strcmp(r[k].finish, "error");
            char *e = bad ? json_quote(r[k].err) : NULL;
            if (!t || (bad && !e)) rc = ql_err(QL_ENOMEM, "out of memory");
            else if (bad) rc = sb_addf(b, "%s{\"index\": %d, \"error\": %s, \"finish_reason\": \"error\"}", k ? ", " : "", k, e);
            else rc = sb_addf(b, "%s{\"index\": %d, \"text\": %s, \"tokens\": %d, \"finish_reason\": \"%s\"}", k ? ", " : "",
                              k, t, r[k].n_ids, r[k].finish);
            free(t), free(e);
        }
        if (!rc) rc = sb_add(b, "]}\n");
    }
    free(qa), free(qe), free(qt);
    return rc;
}

int requests_parse(req_line **out, int *n_out, const char *text, size_t len, const char *path, const model *m,
                   const tokenizer *tok, const requests_opts *ro) {
    req_line *q = NULL;
    int n = 0, cap = 0, rc = QL_OK, line = 0;
    for (size_t p = 0; p < len && !rc;) {
        size_t e = p;
        while (e < len && text[e] != '\n') e++;
        size_t l = e;
        if (l > p && text[l - 1] == '\r') l--;
        line++;
        size_t s = p;
        while (s < l && (text[s] == ' ' || text[s] == '\t')) s++;
        p = e + 1;
        if (s == l) continue;  // blank
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            req_line *nq = realloc(q, sizeof *q * (size_t)cap);
            if (!nq) { rc = ql_err(QL_ENOMEM, "out of memory"); break; }
            q = nq;
        }
        req_line *r = &q[n++];
        *r = (req_line){.line = line, .max_tokens = ro->max_tokens, .top_k = ro->top_k, .temperature = ro->temperature,
                        .top_p = ro->top_p, .seed = ro->seed, .pen = ro->pen, .n_choices = ro->n_choices > 0 ? ro->n_choices : 1};
        int prc = parse_line(r, text + s, l - s, path, m, tok, ro);
        if (prc == QL_ENOMEM) rc = prc;
        else if (prc) snprintf(r->err, sizeof r->err, "%s", ql_errmsg());
    }
    if (!rc && n == 0) rc = ql_err(QL_EFORMAT, "%s: no requests in it (every line is blank)", path);
    if (rc) {
        requests_lines_free(q, n);
        q = NULL, n = 0;
    }
    *out = q, *n_out = n;
    return rc;
}

void requests_lines_free(req_line *q, int n) {
    for (int i = 0; i < n; i++) line_free(&q[i]);
    free(q);
}

const char *requests_line_error(const req_line *q, int i) { return q[i].err; }

int requests_run(const model *m, const tokenizer *tok, ops *o, const requests_opts *ro, int *n_failed) {
    *n_failed = 0;
    char *text = NULL;
    size_t len = 0;
    QL_CHECK(file_read_all(ro->path, (size_t)1 << 30, &text, &len));
    req_line *q = NULL;
    int n = 0, rc = requests_parse(&q, &n, text, len, ro->path, m, tok, ro);
    free(text);
    // adapters
    adapter_store st = {0};
    if (!rc) rc = open_store(&st, m, ro, q, n);
    size_t nreq = 0;
    for (int i = 0; i < n; i++) nreq += (size_t)q[i].n_choices;
    eng_req *er = rc ? NULL : calloc(nreq ? nreq : 1, sizeof *er);
    int *of = rc ? NULL : malloc(sizeof(int) * (size_t)n);  // line -> its first engine request, or -1
    int warned[64] = {0};  // the store entries whose recorded template a --chat-template overrode (said once)
    if (!rc && (!er || !of)) rc = ql_err(QL_ENOMEM, "out of memory");
    int ne = 0;
    long long T = 0;
    for (int i = 0; i < n && !rc; i++) {
        of[i] = -1;
        const store_entry *se = NULL;
        if (!q[i].err[0] && q[i].adapter) {
            se = entry(&st, q[i].adapter);
            if (!se && !ro->adapter_dir[0] && !ro->adapters[0])
                snprintf(q[i].err, sizeof q[i].err, "%s:%d: adapter '%s': no --adapter-dir to find it in", ro->path,
                         q[i].line, q[i].adapter);
            else if (!se)
                snprintf(q[i].err, sizeof q[i].err, "%s:%d: adapter '%s' is not among --adapters", ro->path, q[i].line,
                         q[i].adapter);
            else if (!se->ok)
                snprintf(q[i].err, sizeof q[i].err, "%s:%d: adapter '%s' not loaded: %s", ro->path, q[i].line,
                         q[i].adapter, se->err);
        }
        if (q[i].err[0]) continue;
        // "messages" in the template the adapter was trained in (its training_record.json),
        // unless --chat-template says otherwise
        if (q[i].msg && se && se->has_tmpl && se->tmpl != ro->tmpl) {
            int k = (int)(se - st.e);
            ds_template t = store_pick_template(se->name, 1, se->tmpl, ro->tmpl_given, ro->tmpl, ro->tmpl,
                                                "its \"messages\" requests use", k < 64 ? &warned[k] : NULL);
            if (t != ro->tmpl) {  // the parse rendered them in ro->tmpl
                dataset_options dopt;
                prompt_options(&dopt, m, t);
                free(q[i].ids), q[i].ids = NULL;
                int prc = ds_render_prompt(&q[i].ids, &q[i].n, q[i].msg, q[i].nm, tok, &dopt);
                if (prc == QL_ENOMEM) { rc = prc; break; }
                if (prc) {
                    snprintf(q[i].err, sizeof q[i].err, "%s:%d: in adapter %s's chat template %s: %s", ro->path,
                             q[i].line, se->name, ds_template_name(se->tmpl), ql_errmsg());
                    continue;
                }
            }
        }
        of[i] = ne;
        for (int c = 0; c < q[i].n_choices; c++) {
            eng_req *r = &er[ne++];
            *r = (eng_req){.prompt = q[i].ids, .n_prompt = q[i].n, .max_tokens = q[i].max_tokens,
                           .stop_at_eos = ro->stop_at_eos};
            if (se) r->adapter = &se->a, r->scale = q[i].scale >= 0 ? q[i].scale : se->scale;
            for (int k = 0; k < ENGINE_MAX_STOPS; k++) r->stop[k] = q[i].stop[k];
            sampler_init(&r->smp, q[i].temperature, q[i].top_k, q[i].top_p, (uint64_t)q[i].seed + (uint64_t)c);
            sampler_penalties(&r->smp, q[i].pen.repetition, q[i].pen.frequency, q[i].pen.presence, q[i].pen.min_p);
        }
        long long need = (long long)q[i].n + (q[i].max_tokens > 0 ? q[i].max_tokens : 1);
        if (need > T) T = need;
    }
    if (ro->ctx > 0) T = ro->ctx;
    if (T > m->cfg.max_pos) T = m->cfg.max_pos;
    fwd_state f = {0};
    eng_stats es = {0};
    if (!rc && ne) {
        int slots = ne < ro->batch ? ne : ro->batch;
        log_info("%d requests (%d runnable, %d adapters loaded): %d sequences per batch, context %lld", n, ne,
                 store_loaded(&st), slots, T);
        rc = fwd_init_slots(&f, (model *)m, o, (int)T, slots > 512 ? slots : 512, slots);
        if (!rc) rc = engine_run(&f, tok, er, ne, &es);
    }
    // results, in input order
    strbuf out = {0};
    for (int i = 0; i < n && !rc; i++) {
        const eng_req *r = of[i] >= 0 ? &er[of[i]] : NULL;
        if (r && q[i].n_choices == 1 && r->finish && !strcmp(r->finish, "error") && !q[i].err[0])  // the engine's reason, located
            snprintf(q[i].err, sizeof q[i].err, "%s:%d: %s", ro->path, q[i].line, r->err);
        for (int c = 1; r && c < q[i].n_choices && !q[i].err[0]; c++)  // a prompt too long fails every choice: one error
            if (r[0].finish && !strcmp(r[0].finish, "error") && r[c].finish && !strcmp(r[c].finish, "error"))
                snprintf(q[i].err, sizeof q[i].err, "%s:%d: %s", ro->path, q[i].line, r[0].err);
        *n_failed += q[i].err[0] != 0;
        rc = add_result(&out, &q[i], q[i].err[0] ? NULL : r);
    }
    if (!rc && ro->out[0]) rc = file_write_atomic(ro->out, out.s, out.n);
    else if (!rc) {
        fwrite(out.s, 1, out.n, stdout);
        fflush(stdout);
    }
    if (!rc)
        log_info("%d results (%d failed): %lld prompt + %lld generated tokens in %d steps, %.2f s (%.1f tok/s)%s%s", n,
                 *n_failed, es.prompt_tokens, es.generated, es.steps, es.seconds,
                 es.generated / (es.seconds + 1e-9), ro->out[0] ? "; written to " : "", ro->out);
    free(out.s);
    for (int i = 0; i < ne; i++) eng_req_free(&er[i]);
    for (int i = 0; i < n; i++) line_free(&q[i]);
    free(er), free(of), free(q);
    fwd_free(&f);
    store_free(&st);
    return rc;
}
