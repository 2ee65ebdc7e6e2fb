// openai.c: see openai.h.
#include "openai.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/json.h"
#include "../infer/store.h"

#define WHAT "request body"

// Fields each endpoint reads. Fields a client library may send that change
// nothing here are accepted when they hold their neutral value (checked below).
static const char *const common_fields[] = {
    "model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options", "n",
    "ignore_eos", "lora_scale", "adapters", "user", "presence_penalty", "frequency_penalty", "logprobs", NULL};
static const char *const completion_fields[] = {"prompt", "echo", "best_of", "suffix", NULL};
static const char *const chat_fields[] = {"messages", "max_completion_tokens", "top_logprobs", NULL};

static int in_list(const json_doc *d, int key, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (json_eq(d, key, list[i])) return 1;
    return 0;
}

static int fail(char *param, size_t cap, const char *field, int rc) {
    snprintf(param, cap, "%s", field ? field : "");
    return rc;
}


static int get_flag(const json_doc *d, const char *name, int *out) {
    int v = json_find(d, 0, name);
    if (v < 0 || json_is_null(d, v)) return QL_OK;
    return json_get_bool(d, v, name, out);
}

int oai_check_name(const char *name) { return store_check_name(name, strlen(name)); }

static int get_stops(const json_doc *d, oai_request *r) {
    int v = json_find(d, 0, "stop");
    if (v < 0 || json_is_null(d, v)) return QL_OK;
    int arr = json_type(d, v) == JSON_ARRAY, n = arr ? json_size(d, v) : 1;
    if (!arr && json_type(d, v) != JSON_STRING)
        return ql_err(QL_EFORMAT, "%s: field 'stop': expected a string or a list of strings, found %s", WHAT,
                      json_type_name(d, v));
    if (n > ENGINE_USER_STOPS)
        return ql_err(QL_EFORMAT, "%s: field 'stop': at most %d strings, found %d", WHAT, ENGINE_USER_STOPS, n);
    for (int k = 0; k < n; k++) {
        QL_CHECK(json_get_string(d, arr ? json_item(d, v, k) : v, "stop", &r->stop[k], NULL));
        if (!r->stop[k][0]) return ql_err(QL_EFORMAT, "%s: field 'stop': an empty string", WHAT);
    }
    return QL_OK;
}

// "adapters": ["a", "b:0.5", "base"]
static int get_targets(const json_doc *d, oai_request *r) {
    int v = json_find(d, 0, "adapters");
    if (v < 0 || json_is_null(d, v)) return QL_OK;
    if (json_type(d, v) != JSON_ARRAY)
        return ql_err(QL_EFORMAT, "%s: field 'adapters': expected a list of names (\"name\" or \"name:scale\"), found %s",
                      WHAT, json_type_name(d, v));
    int n = json_size(d, v);
    if (n < 1 || n > OAI_MAX_TARGETS)
        return ql_err(QL_EFORMAT, "%s: field 'adapters': expected 1 to %d names, found %d", WHAT, OAI_MAX_TARGETS, n);
    r->targets = calloc((size_t)n, sizeof *r->targets);
    if (!r->targets) return ql_err(QL_ENOMEM, "out of memory");
    for (int k = 0; k < n; k++) {
        char *s = NULL;
        QL_CHECK(json_get_string(d, json_item(d, v, k), "adapters", &s, NULL));
        oai_target *t = &r->targets[r->n_targets++];
        t->scale = -1;
        char *colon = strrchr(s, ':');
        if (colon) {
            char *end;
            errno = 0;
            double x = strtod(colon + 1, &end);
            if (colon[1] == '\0' || *end || errno || !(x >= 0 && x <= 100)) {
                int rc = ql_err(QL_EFORMAT, "%s: field 'adapters': '%s': expected name:scale with a scale in [0, 100]",
                                WHAT, s);
                free(s);
                return rc;
            }
            t->scale = (float)x, *colon = '\0';
        }
        int rc = oai_check_name(s);
        if (rc) rc = ql_err(QL_EFORMAT, "%s: field 'adapters': %s", WHAT, ql_errmsg());
        else snprintf(t->name, sizeof t->name, "%s", s);
        free(s);
        QL_CHECK(rc);
    }
    return QL_OK;
}

// Fields that must hold their neutral value, since nothing here implements them.
static int check_neutral(const json_doc *d) {
    static const char *const zero[] = {"presence_penalty", "frequency_penalty", NULL};
    for (int i = 0; zero[i]; i++) {
        double x = 0;
        QL_CHECK(json_get_ranged(d, 0, zero[i], 0, 1, -2, 2, &x));
        if (x != 0)
            return ql_err(QL_EFORMAT, "%s: field '%s': only 0 is supported, found %g", WHAT, zero[i], x);
    }
    static const char *const off[] = {"logprobs", "echo", NULL};
    for (int i = 0; off[i]; i++) {
        int v = json_find(d, 0, off[i]);
        if (v < 0 || json_is_null(d, v)) continue;
        const char *s = d->js + d->tok[v].start;
        int len = d->tok[v].end - d->tok[v].start;
        int neutral = json_type(d, v) == JSON_PRIMITIVE && ((len == 5 && !memcmp(s, "false", 5)) || (len == 1 && *s == '0'));
        if (!neutral) return ql_err(QL_EFORMAT, "%s: field '%s': not supported (only false or null)", WHAT, off[i]);
    }
    double best_of = 1;
    QL_CHECK(json_get_ranged(d, 0, "best_of", 1, 1, 1, 1, &best_of));
    int v = json_find(d, 0, "suffix");
    if (v >= 0 && !json_is_null(d, v)) return ql_err(QL_EFORMAT, "%s: field 'suffix': not supported", WHAT);
    v = json_find(d, 0, "top_logprobs");
    if (v >= 0 && !json_is_null(d, v) && !(json_type(d, v) == JSON_PRIMITIVE && d->js[d->tok[v].start] == '0'))
        return ql_err(QL_EFORMAT, "%s: field 'top_logprobs': not supported", WHAT);
    v = json_find(d, 0, "user");
    if (v >= 0 && !json_is_null(d, v) && json_type(d, v) != JSON_STRING)
        return ql_err(QL_EFORMAT, "%s: field 'user': expected a string, found %s", WHAT, json_type_name(d, v));
    return QL_OK;
}

// The field a message names ("... field 'x' ...") or the key being read.
static const char *field_of(const char *msg, char *buf, size_t cap) {
    const char *f = strstr(msg, "field '");
    if (!f) return NULL;
    f += 7;
    const char *e = strchr(f, '\'');
    if (!e || (size_t)(e - f) >= cap) return NULL;
    memcpy(buf, f, (size_t)(e - f));
    buf[e - f] = '\0';
    return buf;
}

static int parse_doc(oai_request *r, const json_doc *d, char *param, size_t cap) {
    if (json_type(d, 0) != JSON_OBJECT)
        return fail(param, cap, NULL, ql_err(QL_EFORMAT, "%s: expected a JSON object, found %s", WHAT, json_type_name(d, 0)));
    const char *const *own = r->kind == OAI_CHAT ? chat_fields : completion_fields;
    for (int k = 0; k < json_size(d, 0); k++) {
        int key = json_member(d, 0, k, NULL), n = d->tok[key].end - d->tok[key].start;
        if (json_type(d, key) != JSON_STRING || !(in_list(d, key, common_fields) || in_list(d, key, own)))
            return fail(param, cap, NULL,
                        ql_err(QL_EFORMAT, "%s: unknown field \"%.*s\" for %s", WHAT, n > 40 ? 40 : n,
                               d->js + d->tok[key].start, r->kind == OAI_CHAT ? "/v1/chat/completions" : "/v1/completions"));
    }
    char fb[64];
    int rc = QL_OK;
    int v = json_find(d, 0, "model");
    if (v < 0) return fail(param, cap, "model", ql_err(QL_EFORMAT, "%s: field 'model' is missing (the base or an adapter)", WHAT));
    if ((rc = json_get_string(d, v, "model", &r->model, NULL))) return fail(param, cap, "model", rc);
    double mt = -1, temp = 1, tp = 1, tk = 0, sd = -1, n = 1, ls = 1;
    if (!rc) rc = json_get_ranged(d, 0, "max_tokens", 1, 1, 0, 1 << 24, &mt);
    if (!rc && r->kind == OAI_CHAT) rc = json_get_ranged(d, 0, "max_completion_tokens", 1, 1, 0, 1 << 24, &mt);
    if (!rc) rc = json_get_ranged(d, 0, "temperature", 0, 1, 0, 2, &temp);
    if (!rc) rc = json_get_ranged(d, 0, "top_p", 0, 1, 1e-9, 1, &tp);
    if (!rc) rc = json_get_ranged(d, 0, "top_k", 1, 1, -1, 1 << 30, &tk);
    if (!rc) rc = json_get_ranged(d, 0, "seed", 1, 1, 0, 9e15, &sd);
    if (!rc) rc = json_get_ranged(d, 0, "n", 1, 1, 1, OAI_MAX_N, &n);
    if (!rc) rc = json_get_ranged(d, 0, "lora_scale", 0, 1, 0, 100, &ls);
    if (!rc) rc = get_flag(d, "stream", &r->stream);
    if (!rc) rc = get_flag(d, "ignore_eos", &r->ignore_eos);
    if (rc) return fail(param, cap, field_of(ql_errmsg(), fb, sizeof fb), rc);
    r->max_tokens = (int)mt, r->temperature = (float)temp, r->top_p = (float)tp, r->top_k = tk < 0 ? 0 : (int)tk;
    r->seed = (long long)sd, r->n = (int)n, r->lora_scale = (float)ls;
    v = json_find(d, 0, "stream_options");
    if (v >= 0 && !json_is_null(d, v)) {
        if (json_type(d, v) != JSON_OBJECT)
            return fail(param, cap, "stream_options",
                        ql_err(QL_EFORMAT, "%s: field 'stream_options': expected an object, found %s", WHAT, json_type_name(d, v)));
        int u = json_find(d, v, "include_usage");
        if (u >= 0 && (rc = json_get_bool(d, u, "stream_options.include_usage", &r->include_usage)))
            return fail(param, cap, "stream_options", rc);
    }
    if ((rc = get_stops(d, r))) return fail(param, cap, "stop", rc);
    if ((rc = get_targets(d, r))) return fail(param, cap, "adapters", rc);
    if ((rc = check_neutral(d))) return fail(param, cap, field_of(ql_errmsg(), fb, sizeof fb), rc);
    if (r->kind == OAI_COMPLETIONS) {
        v = json_find(d, 0, "prompt");
        if (v < 0) return fail(param, cap, "prompt", ql_err(QL_EFORMAT, "%s: field 'prompt' is missing", WHAT));
        if (json_type(d, v) == JSON_ARRAY && json_size(d, v) == 1) v = json_item(d, v, 0);  // ["text"]
        if (json_type(d, v) != JSON_STRING)
            return fail(param, cap, "prompt",
                        ql_err(QL_EFORMAT, "%s: field 'prompt': expected a string (or a list of one), found %s", WHAT,
                               json_type_name(d, v)));
        if ((rc = json_get_string(d, v, "prompt", &r->prompt, NULL))) return fail(param, cap, "prompt", rc);
        if (!r->prompt[0]) return fail(param, cap, "prompt", ql_err(QL_EFORMAT, "%s: field 'prompt' is empty", WHAT));
    } else {
        v = json_find(d, 0, "messages");
        if (v < 0) return fail(param, cap, "messages", ql_err(QL_EFORMAT, "%s: field 'messages' is missing", WHAT));
        if ((rc = ds_parse_messages(&r->msgs, &r->n_msgs, d, v, WHAT, 1, 1))) return fail(param, cap, "messages", rc);
    }
    return QL_OK;
}

int oai_parse(oai_request *r, oai_kind kind, const char *body, size_t len, char *param, size_t cap) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    param[0] = '\0';
    json_doc d;
    int rc = json_parse(&d, body, len, WHAT);
    if (rc) return rc;
    rc = parse_doc(r, &d, param, cap);
    json_free(&d);
    return rc;
}

void oai_request_free(oai_request *r) {
    free(r->model), free(r->prompt), free(r->targets);
    ds_messages_free(r->msgs, r->n_msgs);
    for (int i = 0; i < ENGINE_USER_STOPS; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

int oai_error_json(strbuf *b, const char *message, const char *type, const char *param, const char *code,
                   const char *adapter, int index) {
    QL_CHECK(sb_add(b, "{\"error\": {\"message\": "));
    QL_CHECK(sb_json(b, message, strlen(message)));
    QL_CHECK(sb_addf(b, ", \"type\": \"%s\", \"param\": ", type));
    if (param && param[0]) QL_CHECK(sb_json(b, param, strlen(param)));
    else QL_CHECK(sb_add(b, "null"));
    QL_CHECK(sb_add(b, ", \"code\": "));
    if (code) QL_CHECK(sb_addf(b, "\"%s\"", code));
    else QL_CHECK(sb_add(b, "null"));
    if (adapter) {
        QL_CHECK(sb_add(b, ", \"adapter\": "));
        QL_CHECK(sb_json(b, adapter, strlen(adapter)));
    }
    if (index >= 0) QL_CHECK(sb_addf(b, ", \"index\": %d", index));
    return sb_add(b, "}}");
}
