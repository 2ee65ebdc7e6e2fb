// config.c: see config.h.
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"

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

char *config_to_json(const model_config *c) {
    char *s = malloc(2048);
    if (!s) return NULL;
    int n = snprintf(s, 2048,
        "{\"architectures\":[\"%s\"],\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":%d,"
        "\"num_attention_heads\":%d,\"num_key_value_heads\":%d,\"head_dim\":%d,\"vocab_size\":%d,"
        "\"max_position_embeddings\":%d,\"rms_norm_eps\":%.9g,\"rope_theta\":%.9g,\"tie_word_embeddings\":%s,"
        "\"bos_token_id\":%d,\"eos_token_id\":[",
        c->arch == ARCH_MISTRAL ? "MistralForCausalLM" : "LlamaForCausalLM", c->dim, c->hidden_dim, c->n_layers,
        c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->max_pos, c->norm_eps, c->rope_theta,
        c->tie_embeddings ? "true" : "false", c->bos_id);
    for (int i = 0; i < c->n_eos; i++) n += snprintf(s + n, 2048 - (size_t)n, i ? ",%d" : "%d", c->eos_ids[i]);
    n += snprintf(s + n, 2048 - (size_t)n, "],\"rope_scaling\":");
    if (c->rope_scaling == ROPE_LLAMA3)
        snprintf(s + n, 2048 - (size_t)n,
                 "{\"rope_type\":\"llama3\",\"factor\":%.9g,\"low_freq_factor\":%.9g,\"high_freq_factor\":%.9g,"
                 "\"original_max_position_embeddings\":%d}}",
                 c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max_pos);
    else
        snprintf(s + n, 2048 - (size_t)n, "null}");
    return s;
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
