// config.c: see config.h.
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "strbuf.h"

static int get_int(json_doc *d, const char *key, int required, int def, int lo, int hi, int *out) {
    int v = json_find(d, 0, key);
    if (v < 0 || json_is_null(d, v)) {
        if (required) return ql_err(QL_EFORMAT, "%s: missing required field '%s'", d->what, key);
        *out = def;
        return QL_OK;
    }
    long long x;
    QL_CHECK(json_get_int(d, v, key, &x));
    if (x < lo || x > hi)
        return ql_err(QL_EFORMAT, "%s: field '%s': expected an integer in [%d, %d], found %lld", d->what, key, lo, hi, x);
    *out = (int)x;
    return QL_OK;
}

static int get_float(json_doc *d, int obj, const char *key, int required, double def, float *out) {
    int v = json_find(d, obj, key);
    if (v < 0 || json_is_null(d, v)) {
        if (required) return ql_err(QL_EFORMAT, "%s: missing required field '%s'", d->what, key);
        *out = (float)def;
        return QL_OK;
    }
    double x;
    QL_CHECK(json_get_double(d, v, key, &x));
    // kept as a float: 1e-86 would become 0 (an rms_norm_eps of 0) and 1e300 infinity
    if (!(x > 0) || !isfinite(x) || !((float)x > 0) || !isfinite((float)x))
        return ql_err(QL_EFORMAT, "%s: field '%s': expected a positive number within float range, found %g", d->what,
                      key, x);
    *out = (float)x;
    return QL_OK;
}

// Adds id to c's end-of-sequence ids (once); eos_id is the first.
static int add_eos(model_config *c, long long id, const char *what) {
    if (id < 0 || id >= (1 << 24)) return ql_err(QL_EFORMAT, "%s: field 'eos_token_id': %lld is not a token id", what, id);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id) return QL_OK;
    if (c->n_eos == (int)(sizeof c->eos_ids / sizeof *c->eos_ids))
        return ql_err(QL_EFORMAT, "%s: field 'eos_token_id': more than %d ids", what, (int)(sizeof c->eos_ids / sizeof *c->eos_ids));
    c->eos_ids[c->n_eos++] = (int)id;
    c->eos_id = c->eos_ids[0];
    return QL_OK;
}

// eos_token_id: absent, null, a number, or a list of numbers.
static int get_eos(json_doc *d, model_config *c) {
    int v = json_find(d, 0, "eos_token_id");
    if (v < 0 || json_is_null(d, v)) return QL_OK;
    int arr = json_type(d, v) == JSON_ARRAY, n = arr ? json_size(d, v) : 1;
    for (int k = 0; k < n; k++) {
        long long id;
        QL_CHECK(json_get_int(d, arr ? json_item(d, v, k) : v, "eos_token_id", &id));
        QL_CHECK(add_eos(c, id, d->what));
    }
    return QL_OK;
}

int config_is_eos(const model_config *c, int id) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id) return 1;
    return 0;
}

// What the model may say that qlora does not implement is refused, not ignored:
// a "gelu" model run as SiLU, or one with biases run without them, gives wrong
// numbers quietly. Absent (or null) fields take Llama's defaults.
static int check_unsupported(json_doc *d, const char *path) {
    int v = json_find(d, 0, "model_type");
    if (v >= 0 && !json_is_null(d, v) && !json_eq(d, v, "llama") && !json_eq(d, v, "mistral")) {
        char *s = NULL;
        int rc = json_get_string(d, v, "model_type", &s, NULL);
        if (!rc) rc = ql_err(QL_EUNSUP, "%s: field 'model_type': \"%.60s\" is not supported (expected llama or mistral)", path, s);
        free(s);
        return rc;
    }
    v = json_find(d, 0, "hidden_act");
    if (v >= 0 && !json_is_null(d, v) && !json_eq(d, v, "silu") && !json_eq(d, v, "swish")) {
        char *s = NULL;
        int rc = json_get_string(d, v, "hidden_act", &s, NULL);
        if (!rc)
            rc = ql_err(QL_EUNSUP, "%s: field 'hidden_act': \"%.60s\" is not supported (qlora implements silu, also called swish)",
                        path, s);
        free(s);
        return rc;
    }
    static const char *const biases[] = {"attention_bias", "mlp_bias"};
    for (int k = 0; k < 2; k++) {
        int b = 0;
        v = json_find(d, 0, biases[k]);
        if (v < 0 || json_is_null(d, v)) continue;
        QL_CHECK(json_get_bool(d, v, biases[k], &b));
        if (b) return ql_err(QL_EUNSUP, "%s: field '%s': true is not supported (qlora's Llama has no bias terms)", path, biases[k]);
    }
    return QL_OK;
}

int config_parse(model_config *c, const char *js, size_t len, const char *path) {
    memset(c, 0, sizeof *c);
    c->eos_id = -1;
    json_doc d;
    QL_CHECK(json_parse(&d, js, len, path));
    int rc = QL_OK;
    if (json_type(&d, 0) != JSON_OBJECT) { rc = ql_err(QL_EFORMAT, "%s: expected a JSON object", path); goto out; }
    int a = json_find(&d, 0, "architectures");
    if (a < 0 || json_type(&d, a) != JSON_ARRAY || json_size(&d, a) < 1) {
        rc = ql_err(QL_EFORMAT, "%s: field 'architectures': expected a non-empty array of strings", path);
        goto out;
    }
    int a0 = json_item(&d, a, 0);
    if (json_eq(&d, a0, "LlamaForCausalLM")) c->arch = ARCH_LLAMA;
    else if (json_eq(&d, a0, "MistralForCausalLM")) c->arch = ARCH_MISTRAL;
    else {
        char *s = NULL;
        json_get_string(&d, a0, "architectures", &s, NULL);
        rc = ql_err(QL_EUNSUP, "%s: unknown architecture '%s': expected LlamaForCausalLM or MistralForCausalLM", path,
                    s ? s : "(not a string)");
        free(s);
        goto out;
    }
    if ((rc = check_unsupported(&d, path))) goto out;
    const int BIG = 1 << 20;
    if ((rc = get_int(&d, "hidden_size", 1, 0, 1, BIG, &c->dim)) ||
        (rc = get_int(&d, "intermediate_size", 1, 0, 1, BIG, &c->hidden_dim)) ||
        (rc = get_int(&d, "num_hidden_layers", 1, 0, 1, 4096, &c->n_layers)) ||
        (rc = get_int(&d, "num_attention_heads", 1, 0, 1, 4096, &c->n_heads)) ||
        (rc = get_int(&d, "num_key_value_heads", 0, c->n_heads, 1, 4096, &c->n_kv_heads)) ||
        (rc = get_int(&d, "vocab_size", 1, 0, 1, 1 << 24, &c->vocab_size)) ||
        (rc = get_int(&d, "max_position_embeddings", 0, 2048, 1, 1 << 24, &c->max_pos)) ||
        (rc = get_int(&d, "bos_token_id", 0, -1, -1, 1 << 24, &c->bos_id)) ||
        (rc = get_eos(&d, c)))
        goto out;
    if ((rc = get_int(&d, "head_dim", 0, c->dim / c->n_heads, 2, 1024, &c->head_dim))) goto out;
    if (c->head_dim < 2 || c->head_dim > 1024) {  // the default (hidden_size / heads) is checked too
        rc = ql_err(QL_EFORMAT, "%s: head_dim %d (hidden_size %d / num_attention_heads %d, as head_dim is absent) is "
                    "outside [2, 1024]", path, c->head_dim, c->dim, c->n_heads);
        goto out;
    }
    if ((rc = get_float(&d, 0, "rms_norm_eps", 0, 1e-6, &c->norm_eps)) ||
        (rc = get_float(&d, 0, "rope_theta", 0, 10000.0, &c->rope_theta)))
        goto out;
    int tie = json_find(&d, 0, "tie_word_embeddings");
    c->tie_embeddings = 0;  // transformers' LlamaConfig default is False
    if (tie >= 0 && (rc = json_get_bool(&d, tie, "tie_word_embeddings", &c->tie_embeddings))) goto out;
    if (c->n_heads % c->n_kv_heads)
        { rc = ql_err(QL_EFORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path, c->n_heads, c->n_kv_heads); goto out; }
    if (c->head_dim % 2)
        { rc = ql_err(QL_EFORMAT, "%s: head_dim %d must be even for RoPE", path, c->head_dim); goto out; }
    for (int i = 0; i < c->n_eos && !rc; i++)
        if (c->eos_ids[i] >= c->vocab_size) rc = ql_err(QL_EFORMAT, "%s: eos token id %d out of range of vocab_size %d", path, c->eos_ids[i], c->vocab_size);
    if (rc) goto out;
    if (c->bos_id >= c->vocab_size)
        { rc = ql_err(QL_EFORMAT, "%s: bos token id %d out of range of vocab_size %d", path, c->bos_id, c->vocab_size); goto out; }
    c->add_bos = 1;
    int rs = json_find(&d, 0, "rope_scaling");
    if (rs >= 0 && !json_is_null(&d, rs)) {
        if (json_type(&d, rs) != JSON_OBJECT) { rc = ql_err(QL_EFORMAT, "%s: field 'rope_scaling': expected null or an object", path); goto out; }
        int t = json_find(&d, rs, "rope_type");
        if (t < 0) t = json_find(&d, rs, "type");
        if (t >= 0 && json_eq(&d, t, "llama3")) {
            c->rope_scaling = ROPE_LLAMA3;
            if ((rc = get_float(&d, rs, "factor", 1, 0, &c->rope_factor)) ||
                (rc = get_float(&d, rs, "low_freq_factor", 1, 0, &c->rope_low_freq_factor)) ||
                (rc = get_float(&d, rs, "high_freq_factor", 1, 0, &c->rope_high_freq_factor)))
                goto out;
            // a context length: an integer in [1, 2^24] (fuzz_config: 61e-4 became 0, 1e30 past INT_MAX)
            double om = 0;  // stays 0 only when absent (the range starts at 1)
            if ((rc = json_get_ranged(&d, rs, "original_max_position_embeddings", 1, 0, 1, 1 << 24, &om))) goto out;
            if (om == 0) {
                rc = ql_err(QL_EFORMAT, "%s: rope_scaling: missing required field 'original_max_position_embeddings'", path);
                goto out;
            }
            c->rope_original_max_pos = (int)om;
            if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
                { rc = ql_err(QL_EFORMAT, "%s: rope_scaling: high_freq_factor must exceed low_freq_factor", path); goto out; }
        } else if (t >= 0 && json_eq(&d, t, "default")) {
            c->rope_scaling = ROPE_NONE;
        } else {
            char *s = NULL;
            if (t >= 0) json_get_string(&d, t, "rope_type", &s, NULL);
            rc = ql_err(QL_EUNSUP, "%s: rope_scaling type '%s' is not supported (expected null or llama3)", path, s ? s : "?");
            free(s);
            goto out;
        }
    }
out:
    json_free(&d);
    return rc;
}

int config_load_dir(model_config *c, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *js;
    size_t len;
    QL_CHECK(file_read_all(path, 16u << 20, &js, &len));
    int rc = config_parse(c, js, len, path);
    free(js);
    if (rc) return rc;
    // generation_config.json may name more end-of-sequence ids (Llama 3.1 Instruct)
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (file_read_all(path, 16u << 20, &js, &len) == QL_OK) {
        rc = config_parse_generation(c, js, len, path);
        free(js);
        if (rc) return rc;
    }
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (file_read_all(path, 64u << 20, &js, &len) == QL_OK) {
        rc = config_parse_tokenizer_config(c, js, len, path);
        free(js);
    }
    return rc;
}

int config_parse_generation(model_config *c, const char *js, size_t len, const char *path) {
    json_doc d;
    QL_CHECK(json_parse(&d, js, len, path));
    int rc = json_type(&d, 0) == JSON_OBJECT ? get_eos(&d, c) : ql_err(QL_EFORMAT, "%s: expected a JSON object", path);
    json_free(&d);
    for (int i = 0; i < c->n_eos && !rc; i++)
        if (c->eos_ids[i] >= c->vocab_size)
            rc = ql_err(QL_EFORMAT, "%s: eos token id %d out of range of vocab_size %d", path, c->eos_ids[i], c->vocab_size);
    return rc;
}

int config_parse_tokenizer_config(model_config *c, const char *js, size_t len, const char *path) {
    json_doc d;
    QL_CHECK(json_parse(&d, js, len, path));
    int rc = QL_OK;
    if (json_type(&d, 0) != JSON_OBJECT) rc = ql_err(QL_EFORMAT, "%s: expected a JSON object", path);
    int v = rc ? -1 : json_find(&d, 0, "add_bos_token");
    if (v >= 0 && !json_is_null(&d, v)) rc = json_get_bool(&d, v, "add_bos_token", &c->add_bos);
    json_free(&d);
    return rc;
}

// The shortest decimal that reads back as the same float, with a '.' or an
// exponent, as Python's json writes a float (1e-05, 500000.0).
static void fmt_f32(char *buf, size_t n, float v) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", n - strlen(buf) - 1);
}

// The top-level keys qlora writes itself (head_dim and torch_dtype only at times,
// "dtype" never: newer transformers write torch_dtype under that name, and a
// stale one would name the base's dtype, not the one written): a base's own
// value of any of them is never copied.
static const char *const OWN_KEYS[] = {
    "architectures", "model_type", "hidden_act", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
    "rms_norm_eps", "rope_theta", "rope_scaling", "tie_word_embeddings", "bos_token_id", "eos_token_id",
    "attention_bias", "mlp_bias", "torch_dtype", "dtype", NULL};

static int own_key(const json_doc *d, int k) {
    for (int i = 0; OWN_KEYS[i]; i++)
        if (json_eq(d, k, OWN_KEYS[i])) return 1;
    return 0;
}

static int build_json(strbuf *b, const model_config *c, dtype torch_dtype, const json_doc *base) {
    char eps[32], theta[32];
    fmt_f32(eps, sizeof eps, c->norm_eps);
    fmt_f32(theta, sizeof theta, c->rope_theta);
    int mistral = c->arch == ARCH_MISTRAL;
    QL_CHECK(sb_addf(b,
        "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"hidden_act\": \"silu\",\n"
        "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
        "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n",
        mistral ? "MistralForCausalLM" : "LlamaForCausalLM", mistral ? "mistral" : "llama", c->dim, c->hidden_dim,
        c->n_layers, c->n_heads, c->n_kv_heads));
    // head_dim: only when it is not hidden_size / heads, the default of config_parse and of transformers
    if (c->head_dim != c->dim / c->n_heads) QL_CHECK(sb_addf(b, "  \"head_dim\": %d,\n", c->head_dim));
    QL_CHECK(sb_addf(b, "  \"vocab_size\": %d,\n  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %s,\n"
                        "  \"rope_theta\": %s,\n  \"rope_scaling\": ", c->vocab_size, c->max_pos, eps, theta));
    if (c->rope_scaling == ROPE_LLAMA3) {
        char f[32], lo[32], hi[32];
        fmt_f32(f, sizeof f, c->rope_factor);
        fmt_f32(lo, sizeof lo, c->rope_low_freq_factor);
        fmt_f32(hi, sizeof hi, c->rope_high_freq_factor);
        QL_CHECK(sb_addf(b, "{\"rope_type\": \"llama3\", \"factor\": %s, \"low_freq_factor\": %s, \"high_freq_factor\": "
                            "%s, \"original_max_position_embeddings\": %d}", f, lo, hi, c->rope_original_max_pos));
    } else {
        QL_CHECK(sb_add(b, "null"));
    }
    QL_CHECK(sb_addf(b, ",\n  \"tie_word_embeddings\": %s,\n  \"bos_token_id\": ", c->tie_embeddings ? "true" : "false"));
    QL_CHECK(c->bos_id >= 0 ? sb_addf(b, "%d", c->bos_id) : sb_add(b, "null"));
    QL_CHECK(sb_add(b, ",\n  \"eos_token_id\": "));  // a number when one, as most configs write it
    if (c->n_eos == 0) QL_CHECK(sb_add(b, "null"));
    else if (c->n_eos == 1) QL_CHECK(sb_addf(b, "%d", c->eos_ids[0]));
    for (int i = 0; c->n_eos > 1 && i < c->n_eos; i++) QL_CHECK(sb_addf(b, "%s%d", i ? ", " : "[", c->eos_ids[i]));
    if (c->n_eos > 1) QL_CHECK(sb_add(b, "]"));
    QL_CHECK(sb_add(b, ",\n  \"attention_bias\": false,\n  \"mlp_bias\": false"));
    for (int k = 0, n = base ? json_size(base, 0) : 0; k < n; k++) {  // the base's other fields, as they are
        int v, key = json_member(base, 0, k, &v);
        if (own_key(base, key)) continue;
        const jsmntok_t *tk = &base->tok[key], *tv = &base->tok[v];
        int str = json_type(base, v) == JSON_STRING;  // jsmn's string tokens exclude the quotes
        QL_CHECK(sb_addf(b, ",\n  \"%.*s\": %s%.*s%s", tk->end - tk->start, base->js + tk->start, str ? "\"" : "",
                         tv->end - tv->start, base->js + tv->start, str ? "\"" : ""));
    }
    const char *td = torch_dtype == DT_F16 ? "float16" : torch_dtype == DT_BF16 ? "bfloat16"
                   : torch_dtype == DT_F32 ? "float32" : NULL;
    if (td) QL_CHECK(sb_addf(b, ",\n  \"torch_dtype\": \"%s\"", td));
    return sb_add(b, "\n}\n");
}

int config_to_hf_json(char **out, const model_config *c, dtype torch_dtype, const char *base, size_t base_len,
                      const char *what) {
    *out = NULL;
    if (torch_dtype != DT_F16 && torch_dtype != DT_BF16 && torch_dtype != DT_F32 && torch_dtype != DT_COUNT)
        return ql_err(QL_EINVAL, "config.json: torch_dtype %s: expected F16, BF16 or F32", dtype_name(torch_dtype));
    json_doc d;
    int have = base != NULL;
    if (have) QL_CHECK(json_parse(&d, base, base_len, what));
    strbuf b = {0};
    int rc = have && json_type(&d, 0) != JSON_OBJECT ? ql_err(QL_EFORMAT, "%s: expected a JSON object", what) : QL_OK;
    if (!rc) rc = build_json(&b, c, torch_dtype, have ? &d : NULL);
    if (have) json_free(&d);
    if (rc) sb_free(&b);
    else *out = b.s;
    return rc;
}

char *config_to_json(const model_config *c) {
    char *s = NULL;
    return config_to_hf_json(&s, c, DT_COUNT, NULL, 0, NULL) ? NULL : s;
}

void config_rope_inv_freq(const model_config *c, float *inv_freq) {
    int D = c->head_dim;
    for (int i = 0; i < D / 2; i++) {
        // HF: 1 / theta^(arange(0, D, 2) / D), in fp32
        float f = (float)(1.0 / pow((double)c->rope_theta, (double)(2 * i) / D));
        if (c->rope_scaling == ROPE_LLAMA3) {
            // transformers _compute_llama3_parameters: long wavelengths are divided by factor,
            // short ones kept, and the band between low and high frequency is interpolated.
            double old = c->rope_original_max_pos;
            double low_wl = old / c->rope_low_freq_factor, high_wl = old / c->rope_high_freq_factor;
            double wl = 2 * M_PI / f;
            if (wl > low_wl) f = f / c->rope_factor;
            else if (wl >= high_wl) {
                double smooth = (old / wl - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (float)((1 - smooth) * f / c->rope_factor + smooth * f);
            }
        }
        inv_freq[i] = f;
    }
}
