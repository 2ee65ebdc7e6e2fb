// jsonl.c: reading a JSONL file into samples. Each non-blank line is parsed with
// jsmn (common/json.h), its format detected or checked against the file's, its
// fields checked (types, emptiness, roles, UTF-8), then rendered (chat.c) and
// cut to seq_len. Every error names "file:line:column: what was wrong".
#include "datasets/dataset.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/json.h"

enum { MAX_SKIP_NAMED = 5 };

// One parsed line: messages with owned contents.
typedef struct {
    ds_format format;
    ds_message *m;
    int nm;
    int col;  // column to blame for whole-record errors (the messages array or the object)
} record;

static void record_free(record *r) {
    for (int i = 0; i < r->nm; i++) free((char *)r->m[i].content);
    free(r->m);
    memset(r, 0, sizeof *r);
}

typedef struct {
    const char *name;  // file name for messages
    int line;
    const json_doc *doc;
} where;

// 1-based column of token i (for a string: its opening quote).
static int tok_col(const json_doc *d, int i) {
    if (i < 0 || i >= d->ntok) return 1;
    return d->tok[i].type == JSMN_STRING ? d->tok[i].start : d->tok[i].start + 1;
}

__attribute__((format(printf, 3, 4))) static int bad(const where *w, int col, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ql_err(QL_EFORMAT, "%s:%d:%d: %s", w->name, w->line, col, msg);
}

// Offset of the first byte of s[0..n) that is not well-formed UTF-8, or -1.
// Rejects overlong forms, surrogates (U+D800..DFFF) and code points past U+10FFFF.
static long utf8_bad(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int k = utf8_seq_len(s + i, n - i);
        if (!k) return (long)i;
        i += (size_t)k;
    }
    return -1;
}

// A string field: the value token v of field `label`. Empty strings are an
// error unless allow_empty. *out is malloc'd.
static int get_text(const where *w, int v, const char *label, int allow_empty, char **out) {
    const json_doc *d = w->doc;
    *out = NULL;
    if (json_type(d, v) != JSON_STRING)
        return bad(w, tok_col(d, v), "field \"%s\": expected a string, found %s", label, json_type_name(d, v));
    const unsigned char *raw = (const unsigned char *)d->js + d->tok[v].start;
    long off = utf8_bad(raw, (size_t)(d->tok[v].end - d->tok[v].start));
    if (off >= 0)
        return bad(w, d->tok[v].start + (int)off + 1, "field \"%s\": invalid UTF-8 (byte 0x%02X) in string", label,
                   raw[off]);
    size_t len = 0;
    if (json_get_string(d, v, label, out, &len) != QL_OK)
        return bad(w, tok_col(d, v), "field \"%s\": invalid escape sequence in string", label);
    if (!allow_empty && len == 0) {
        free(*out);
        *out = NULL;
        return bad(w, tok_col(d, v), "field \"%s\" is empty", label);
    }
    if (memchr(*out, 0, len)) {  // "\u0000": the tokenizer takes NUL-terminated text
        free(*out);
        *out = NULL;
        return bad(w, tok_col(d, v), "field \"%s\": contains a NUL character (\\u0000)", label);
    }
    return QL_OK;
}

static int need(const where *w, int obj, const char *key, int *v) {
    *v = json_find(w->doc, obj, key);
    if (*v < 0) return bad(w, tok_col(w->doc, obj), "missing field \"%s\"", key);
    return QL_OK;
}

static int add_msg(record *r, ds_role role, char *content) {
    ds_message *m = realloc(r->m, sizeof *m * (size_t)(r->nm + 1));
    if (!m) {
        free(content);
        return ql_err(QL_ENOMEM, "out of memory reading a dataset");
    }
    r->m = m;
    r->m[r->nm++] = (ds_message){role, content};
    return QL_OK;
}

// Which format the object's keys say; QL_EFORMAT for none or two.
static int detect(const where *w, int obj, ds_format *f) {
    const json_doc *d = w->doc;
    static const struct { const char *key; ds_format f; } keys[] = {
        {"text", DS_FORMAT_TEXT},           {"prompt", DS_FORMAT_PROMPT},  {"completion", DS_FORMAT_PROMPT},
        {"messages", DS_FORMAT_CHAT},       {"instruction", DS_FORMAT_ALPACA}, {"input", DS_FORMAT_ALPACA},
        {"output", DS_FORMAT_ALPACA},       {"conversations", DS_FORMAT_SHAREGPT},
    };
    *f = DS_FORMAT_NONE;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        if (json_find(d, obj, keys[k].key) < 0) continue;
        if (*f != DS_FORMAT_NONE && *f != keys[k].f)
            return bad(w, 1, "keys of two formats on one line (%s and %s)", ds_format_name(*f),
                       ds_format_name(keys[k].f));
        *f = keys[k].f;
    }
    if (*f == DS_FORMAT_NONE) {
        char found[200] = "";
        size_t o = 0;
        for (int k = 0; k < json_size(d, obj) && o + 40 < sizeof found; k++) {
            int key = json_member(d, obj, k, NULL);
            int n = d->tok[key].end - d->tok[key].start;
            o += (size_t)snprintf(found + o, sizeof found - o, "%s\"%.*s\"", k ? ", " : "", n > 30 ? 30 : n,
                                  d->js + d->tok[key].start);
        }
        return bad(w, 1,
                   "unknown format: expected {\"text\"}, {\"prompt\",\"completion\"}, {\"messages\"}, "
                   "{\"instruction\",\"input\",\"output\"} or {\"conversations\"}; found keys %s",
                   o ? found : "(none)");
    }
    return QL_OK;
}

// The keys of a conversation: OpenAI's messages, or ShareGPT's conversations
// (as axolotl reads them: "from" human / gpt / system, "value"; "user" and
// "assistant" are taken too).
typedef struct {
    const char *field, *role, *content;
    int sharegpt;
} convo_keys;
static const convo_keys KEYS_MESSAGES = {"messages", "role", "content", 0};
static const convo_keys KEYS_SHAREGPT = {"conversations", "from", "value", 1};

static int parse_convo(const where *w, int arr, record *r, int for_prompt, const convo_keys *ck) {
    const json_doc *d = w->doc;
    if (json_type(d, arr) != JSON_ARRAY)
        return bad(w, tok_col(d, arr), "field \"%s\": expected an array, found %s", ck->field, json_type_name(d, arr));
    int n = json_size(d, arr);
    if (n == 0) return bad(w, tok_col(d, arr), "field \"%s\" is empty", ck->field);
    int has_assistant = 0;
    for (int k = 0; k < n; k++) {
        int it = json_item(d, arr, k), v;
        char label[48];
        if (json_type(d, it) != JSON_OBJECT)
            return bad(w, tok_col(d, it), "%s[%d]: expected an object, found %s", ck->field, k, json_type_name(d, it));
        v = json_find(d, it, ck->role);
        if (v < 0) return bad(w, tok_col(d, it), "%s[%d]: missing field \"%s\"", ck->field, k, ck->role);
        snprintf(label, sizeof label, "%s[%d].%s", ck->field, k, ck->role);
        char *role = NULL;
        QL_CHECK(get_text(w, v, label, 0, &role));
        ds_role rl;
        if (!strcmp(role, "system")) rl = DS_ROLE_SYSTEM;
        else if (!strcmp(role, "user") || (ck->sharegpt && !strcmp(role, "human"))) rl = DS_ROLE_USER;
        else if (!strcmp(role, "assistant") || (ck->sharegpt && !strcmp(role, "gpt"))) rl = DS_ROLE_ASSISTANT;
        else {
            int rc = bad(w, tok_col(d, v), "%s[%d]: unknown %s \"%.40s\" (expected %s)", ck->field, k, ck->role, role,
                         ck->sharegpt ? "system, human or gpt" : "system, user or assistant");
            free(role);
            return rc;
        }
        free(role);
        has_assistant |= rl == DS_ROLE_ASSISTANT;
        v = json_find(d, it, ck->content);
        if (v < 0) return bad(w, tok_col(d, it), "%s[%d]: missing field \"%s\"", ck->field, k, ck->content);
        snprintf(label, sizeof label, "%s[%d].%s", ck->field, k, ck->content);
        char *content = NULL;
        QL_CHECK(get_text(w, v, label, 0, &content));
        QL_CHECK(add_msg(r, rl, content));
    }
    if (for_prompt && r->m[r->nm - 1].role != DS_ROLE_USER)
        return bad(w, tok_col(d, arr), "%s: the last message must be the user's turn to answer, found %s", ck->field,
                   r->m[r->nm - 1].role == DS_ROLE_SYSTEM ? "system" : "assistant");
    if (!for_prompt && !has_assistant)
        return bad(w, tok_col(d, arr), "%s: no %s turn (nothing to train)", ck->field,
                   ck->sharegpt ? "gpt" : "assistant");
    return QL_OK;
}

static int parse_messages(const where *w, int arr, record *r, int for_prompt) {
    return parse_convo(w, arr, r, for_prompt, &KEYS_MESSAGES);
}

int ds_parse_messages(ds_message **m, int *nm, const json_doc *d, int arr, const char *name, int line,
                      int for_prompt) {
    where w = {name, line, d};
    record r = {0};
    int rc = parse_messages(&w, arr, &r, for_prompt);
    if (rc) record_free(&r);
    *m = r.m, *nm = r.nm;
    return rc;
}

void ds_messages_free(ds_message *m, int nm) {
    record r = {.m = m, .nm = nm};
    record_free(&r);
}

// Parses and checks one line. *file_format is set by the first valid line.
static int parse_record(const where *w, int first_line, ds_format file_format, record *r) {
    const json_doc *d = w->doc;
    memset(r, 0, sizeof *r);  // (a key without a value, or with two, is a json_parse error already)
    if (json_type(d, 0) != JSON_OBJECT) return bad(w, 1, "expected a JSON object, found %s", json_type_name(d, 0));
    QL_CHECK(detect(w, 0, &r->format));
    if (file_format != DS_FORMAT_NONE && r->format != file_format)
        return bad(w, 1, "mixed formats: this line is %s but the file is %s (from line %d)", ds_format_name(r->format),
                   ds_format_name(file_format), first_line);
    r->col = 1;
    int v;
    char *s = NULL;
    switch (r->format) {
    case DS_FORMAT_TEXT:
        QL_CHECK(need(w, 0, "text", &v));
        QL_CHECK(get_text(w, v, "text", 0, &s));
        return add_msg(r, DS_ROLE_USER, s);
    case DS_FORMAT_PROMPT:
        QL_CHECK(need(w, 0, "prompt", &v));
        QL_CHECK(get_text(w, v, "prompt", 0, &s));
        QL_CHECK(add_msg(r, DS_ROLE_USER, s));
        QL_CHECK(need(w, 0, "completion", &v));
        QL_CHECK(get_text(w, v, "completion", 0, &s));
        return add_msg(r, DS_ROLE_ASSISTANT, s);
    case DS_FORMAT_CHAT:
        v = json_find(d, 0, "messages");
        r->col = tok_col(d, v);
        return parse_messages(w, v, r, 0);
    case DS_FORMAT_SHAREGPT:
        v = json_find(d, 0, "conversations");
        r->col = tok_col(d, v);
        return parse_convo(w, v, r, 0, &KEYS_SHAREGPT);
    case DS_FORMAT_ALPACA: {
        char *ins = NULL, *inp = NULL;
        QL_CHECK(need(w, 0, "instruction", &v));
        QL_CHECK(get_text(w, v, "instruction", 0, &ins));
        v = json_find(d, 0, "input");
        if (v >= 0 && !json_is_null(d, v)) {
            int rc = get_text(w, v, "input", 1, &inp);
            if (rc != QL_OK) { free(ins); return rc; }
        }
        if (inp && inp[0]) {  // user = instruction "\n\n" input
            size_t a = strlen(ins), b = strlen(inp);
            char *u = malloc(a + b + 3);
            if (!u) { free(ins); free(inp); return ql_err(QL_ENOMEM, "out of memory reading a dataset"); }
            memcpy(u, ins, a);
            memcpy(u + a, "\n\n", 2);
            memcpy(u + a + 2, inp, b + 1);
            free(ins);
            ins = u;
        }
        free(inp);
        QL_CHECK(add_msg(r, DS_ROLE_USER, ins));
        QL_CHECK(need(w, 0, "output", &v));
        QL_CHECK(get_text(w, v, "output", 0, &s));
        return add_msg(r, DS_ROLE_ASSISTANT, s);
    }
    default: break;
    }
    return ql_err(QL_EFORMAT, "unreachable");
}

// json_parse's message "X: invalid JSON at line 1 column C: why" -> "name:line:C: invalid JSON: why".
static int bad_json(const where *w) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", ql_errmsg());
    int col = 1;
    const char *c = strstr(msg, " column ");
    if (c) col = atoi(c + 8);
    const char *why = c ? strstr(c, ": ") : NULL;
    if (strstr(msg, "unexpected text after")) why = ": unexpected text after the JSON value";
    else if (strstr(msg, "top level")) why = ": expected a JSON object";
    return bad(w, col, "invalid JSON%s", why ? why : "");
}

// Renders a record into a sample and applies the truncation rule: a sample
// longer than seq_len keeps its first seq_len tokens; one with no trained token
// among them is an error.
static int make_sample(const where *w, const record *r, const tokenizer *tok, const dataset_options *opt, ds_sample *out,
                       int *truncated) {
    int *ids = NULL, n = 0;
    uint8_t *mask = NULL;
    ds_format f = r->format == DS_FORMAT_ALPACA || r->format == DS_FORMAT_SHAREGPT ? DS_FORMAT_CHAT : r->format;
    int rc = ds_render(&ids, &mask, &n, f, r->m, r->nm, tok, opt);
    if (rc == QL_EFORMAT) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", ql_errmsg());
        return bad(w, r->col, "%s", msg);
    }
    if (rc != QL_OK) return rc;
    *truncated = 0;
    if (n > opt->seq_len) {
        int trained = 0;
        for (int t = 0; t < opt->seq_len; t++) trained += mask[t];
        if (!trained) {
            free(ids);
            free(mask);
            return bad(w, r->col, "over-long sample: %d tokens, and none of the first %d (seq_len) is trained", n,
                       opt->seq_len);
        }
        n = opt->seq_len;
        *truncated = 1;
    }
    *out = (ds_sample){.n = n, .ids = ids, .mask = mask, .line = w->line};
    return QL_OK;
}

static int check_options(const dataset_options *o) {
    if (o->seq_len < 2) return ql_err(QL_EINVAL, "dataset: seq_len must be at least 2, got %d", o->seq_len);
    if (o->chat_template < DS_TEMPLATE_LLAMA2 || o->chat_template > DS_TEMPLATE_LLAMA3)
        return ql_err(QL_EINVAL, "dataset: unknown chat template %d", (int)o->chat_template);
    return QL_OK;
}

int dataset_load_mem(dataset *d, const char *text, size_t len, const char *name, const tokenizer *tok,
                     const dataset_options *opt) {
    memset(d, 0, sizeof *d);
    QL_CHECK(check_options(opt));
    char *named[MAX_SKIP_NAMED] = {0};
    int cap = 0, first_line = 0, rc = QL_OK;
    where w = {.name = name, .line = 0};
    for (size_t p = 0; p < len && rc == QL_OK;) {
        const char *s = text + p;
        const char *nl = memchr(s, '\n', len - p);
        size_t n = nl ? (size_t)(nl - s) : len - p;
        p += n + 1;
        w.line++;
        if (n && s[n - 1] == '\r') n--;
        size_t k = 0;
        while (k < n && (s[k] == ' ' || s[k] == '\t')) k++;
        if (k == n) continue;  // blank lines are ignored
        d->stats.lines++;

        char what[300];
        snprintf(what, sizeof what, "%s:%d", name, w.line);
        json_doc doc;
        record r = {0};
        ds_sample smp;
        int cut = 0, lrc = json_parse(&doc, s, n, what);
        w.doc = &doc;
        if (lrc == QL_OK) {
            lrc = parse_record(&w, first_line, d->format, &r);
            if (lrc == QL_OK) lrc = make_sample(&w, &r, tok, opt, &smp, &cut);
            json_free(&doc);
        } else if (lrc == QL_EFORMAT) {
            lrc = bad_json(&w);
        }
        if (lrc == QL_OK) {
            if (d->format == DS_FORMAT_NONE) d->format = r.format, first_line = w.line;
            if (d->n_samples == cap) {
                cap = cap ? 2 * cap : 256;
                ds_sample *ns = realloc(d->samples, sizeof *ns * (size_t)cap);
                if (!ns) {
                    free(smp.ids), free(smp.mask);
                    lrc = ql_err(QL_ENOMEM, "%s: out of memory", name);
                } else d->samples = ns;
            }
            if (lrc == QL_OK) {
                d->samples[d->n_samples++] = smp;
                d->stats.truncated += cut;
                d->stats.tokens += smp.n;
                for (int t = 0; t < smp.n; t++) d->stats.trained_tokens += smp.mask[t];
            }
        } else if (lrc == QL_EFORMAT && opt->skip_invalid) {
            if (d->stats.skipped < MAX_SKIP_NAMED) named[d->stats.skipped] = strdup(ql_errmsg());
            d->stats.skipped++;
            lrc = QL_OK;
        }
        record_free(&r);
        rc = lrc;
    }
    d->stats.samples = d->n_samples;
    if (rc == QL_OK && d->stats.skipped) {
        size_t cap_s = 128 + MAX_SKIP_NAMED * 600, o = 0;
        d->skip_summary = malloc(cap_s);
        if (d->skip_summary) {
            o += (size_t)snprintf(d->skip_summary, cap_s, "%s: skipped %ld invalid line%s; first: ", name,
                                  d->stats.skipped, d->stats.skipped == 1 ? "" : "s");
            for (int i = 0; i < MAX_SKIP_NAMED && i < d->stats.skipped && o < cap_s; i++)
                o += (size_t)snprintf(d->skip_summary + o, cap_s - o, "%s%s", i ? "; " : "",
                                      named[i] ? named[i] : "(out of memory)");
        }
    }
    if (rc == QL_OK && d->n_samples == 0)
        rc = d->stats.skipped ? ql_err(QL_EFORMAT, "%s: no valid samples (%s)", name,
                                       d->skip_summary ? d->skip_summary : "all lines invalid")
                              : ql_err(QL_EFORMAT, "%s: no samples (the file has no non-blank line)", name);
    for (int i = 0; i < MAX_SKIP_NAMED; i++) free(named[i]);
    if (rc != QL_OK) dataset_free(d);
    return rc;
}

int dataset_load(dataset *d, const char *path, const tokenizer *tok, const dataset_options *opt) {
    memset(d, 0, sizeof *d);
    char *text = NULL;
    size_t len = 0;
    QL_CHECK(file_read_all(path, opt->max_file_bytes, &text, &len));
    int rc = dataset_load_mem(d, text, len, path, tok, opt);
    free(text);
    return rc;
}
