// model.c: see model.h. Loading a Hugging Face checkpoint, quantizing its
// linear weights, and the quantized base file (docs/formats.md).
#include "model.h"
#include "../common/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/err.h"
#include "../common/json.h"
#include "../common/log.h"

#define BASE_PREFIX 32  // magic[8] version u32 flags u32 image_len u64 reserved u64

int base_dtype_parse(const char *s) {
    if (!strcmp(s, "nf4")) return DT_NF4;
    if (!strcmp(s, "f16")) return DT_F16;
    if (!strcmp(s, "f32")) return DT_F32;
    return -1;
}

const char *base_dtype_name(dtype t) { return t == DT_NF4 ? "nf4" : t == DT_F16 ? "f16" : "f32"; }

static void *own(model *m, size_t n) {
    if (m->nowned == m->capowned) {
        int nc = m->capowned ? 2 * m->capowned : 64;
        void **no = realloc(m->owned, sizeof(void *) * (size_t)nc);
        if (!no) return NULL;
        m->owned = no, m->capowned = nc;
    }
    void *p = malloc(n ? n : 1);
    if (p) m->owned[m->nowned++] = p;
    return p;
}

// ---- from a Hugging Face directory ----

static int find_hf(model *m, const char *name, int64_t rows, int64_t cols, const st_tensor **out) {
    const char *file = NULL;
    const st_tensor *t = st_set_find(&m->st, name, &file);
    if (!t && cols)
        return ql_err(QL_EFORMAT, "%s: tensor '%s' is missing from the checkpoint (expected shape [%lld, %lld])",
                      m->source, name, (long long)rows, (long long)cols);
    if (!t)
        return ql_err(QL_EFORMAT, "%s: tensor '%s' is missing from the checkpoint (expected shape [%lld])", m->source,
                      name, (long long)rows);
    int ok = cols ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols) : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok) {
        char got[128] = "[";
        for (int k = 0; k < t->ndim; k++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", k ? ", " : "", (long long)t->shape[k]);
        strcat(got, "]");
        if (cols)
            return ql_err(QL_EFORMAT, "%s: tensor '%s': expected shape [%lld, %lld], found %s", file, name,
                          (long long)rows, (long long)cols, got);
        return ql_err(QL_EFORMAT, "%s: tensor '%s': expected shape [%lld], found %s", file, name, (long long)rows, got);
    }
    if (t->type != DT_F32 && t->type != DT_F16 && t->type != DT_BF16)
        return ql_err(QL_EUNSUP, "%s: tensor '%s': dtype %s is not supported for weights (expected F32, F16 or BF16)",
                      file, name, dtype_name(t->type));
    *out = t;
    return QL_OK;
}

static void to_f32(float *out, const st_tensor *t) {
    const uint16_t *h = t->data;
    if (t->type == DT_F32) memcpy(out, t->data, (size_t)t->numel * 4);
    else if (t->type == DT_F16) for (int64_t i = 0; i < t->numel; i++) out[i] = f16_to_f32(h[i]);
    else for (int64_t i = 0; i < t->numel; i++) out[i] = bf16_to_f32(h[i]);
}

static int load_norm(model *m, const char *name, int C, const float **out) {
    const st_tensor *t;
    QL_CHECK(find_hf(m, name, C, 0, &t));
    float *p = own(m, sizeof(float) * (size_t)C);
    if (!p) return ql_err(QL_ENOMEM, "out of memory");
    to_f32(p, t);
    *out = p;
    return QL_OK;
}

// A weight kept in its own dtype (to_f32_only: converted to F32 for --base-dtype f32).
static int load_plain(model *m, const st_tensor *t, qweight *w, int64_t rows, int64_t cols, dtype target) {
    w->rows = rows, w->cols = cols;
    if (target == t->type || (target != DT_F32 && target != DT_F16)) {
        w->type = t->type;
        w->data = t->data;  // zero copy from the mapping
        return QL_OK;
    }
    size_t n = (size_t)(rows * cols);
    if (target == DT_F32) {
        float *p = own(m, n * 4);
        if (!p) return ql_err(QL_ENOMEM, "out of memory");
        to_f32(p, t);
        w->type = DT_F32, w->data = p;
    } else {  // DT_F16
        uint16_t *p = own(m, n * 2);
        if (!p) return ql_err(QL_ENOMEM, "out of memory");
        const uint16_t *h = t->data;
        for (size_t i = 0; i < n; i++)
            p[i] = t->type == DT_F32 ? f32_to_f16(((const float *)t->data)[i]) : f32_to_f16(bf16_to_f32(h[i]));
        w->type = DT_F16, w->data = p;
    }
    return QL_OK;
}

// Storage for an NF4 weight (serial: own() is not thread-safe).
static int alloc_nf4(model *m, qweight *w) {
    int64_t n = w->rows * w->cols;
    w->type = DT_NF4;
    w->nf4.n = n;
    uint8_t *codes = own(m, (size_t)(n + 1) / 2), *aq = own(m, (size_t)nf4_nblocks(n));
    float *sc = own(m, sizeof(float) * (size_t)nf4_ngroups(n));
    if (!codes || !aq || !sc) return ql_err(QL_ENOMEM, "out of memory for NF4 weights");
    w->nf4.codes = codes, w->nf4.absmax_q = aq, w->nf4.absmax_scale = sc;
    return QL_OK;
}

// Quantize t into w's storage (thread-safe).
static int quantize_into(const st_tensor *t, qweight *w) {
    float *tmp = malloc(sizeof(float) * (size_t)t->numel);
    if (!tmp) return ql_err(QL_ENOMEM, "out of memory quantizing '%s'", t->name);
    to_f32(tmp, t);
    nf4_quantize((uint8_t *)w->nf4.codes, (uint8_t *)w->nf4.absmax_q, (float *)w->nf4.absmax_scale,
                 &w->nf4.absmax_offset, tmp, t->numel);
    free(tmp);
    return QL_OK;
}

// dir/tokenizer_config.json's "chat_template": a string, or a list of {"name",
// "template"} of which "default" is taken. Absent is fine.
static int read_chat_template(model *m, const char *dir) {
    char path[4096], *js = NULL, *t = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (file_read_all(path, 64u << 20, &js, &len)) return QL_OK;
    json_doc d;
    int rc = json_parse(&d, js, len, path);
    if (!rc) {
        int v = json_type(&d, 0) == JSON_OBJECT ? json_find(&d, 0, "chat_template") : -1;
        if (v >= 0 && json_type(&d, v) == JSON_ARRAY)
            for (int k = 0, it; (it = json_item(&d, v, k)) >= 0; k++) {
                int nm = json_find(&d, it, "name");
                if (nm >= 0 && json_eq(&d, nm, "default")) {
                    v = json_find(&d, it, "template");
                    break;
                }
            }
        if (v >= 0 && json_type(&d, v) == JSON_STRING) rc = json_get_string(&d, v, "chat_template", &t, NULL);
        json_free(&d);
    }
    free(js);
    if (rc || !t) return rc;
    if (m->nowned == m->capowned && !own(m, 0)) {
        free(t);
        return ql_err(QL_ENOMEM, "out of memory");
    }
    m->owned[m->nowned++] = t;
    m->chat_template = t;
    return QL_OK;
}

// A BPE tokenizer's BOS rules (SentencePiece models keep config.json's and
// tokenizer_config.json's): add_bos is what the tokenizer.json's post-processor does,
// unless tokenizer_config.json says add_bos_token; without bos_token_id in config.json,
// BOS is the post-processor's, else tokenizer_config.json's "bos_token" (a string or
// {"content"}) looked up in the tokenizer.
static int bpe_bos_rules(model *m, const char *dir) {
    char path[4096], *js = NULL, *name = NULL;
    size_t len;
    int has_add_bos = 0, rc = QL_OK;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (file_read_all(path, 64u << 20, &js, &len) == QL_OK) {
        json_doc d;
        rc = json_parse(&d, js, len, path);
        if (!rc) {
            int obj = json_type(&d, 0) == JSON_OBJECT;
            int a = obj ? json_find(&d, 0, "add_bos_token") : -1, v = obj ? json_find(&d, 0, "bos_token") : -1;
            has_add_bos = a >= 0 && !json_is_null(&d, a);
            if (v >= 0 && json_type(&d, v) == JSON_OBJECT) v = json_find(&d, v, "content");
            if (v >= 0 && json_type(&d, v) == JSON_STRING) rc = json_get_string(&d, v, "bos_token", &name, NULL);
            json_free(&d);
        }
        free(js);
    }
    tokenizer *t = NULL;
    if (!rc) rc = tok_load_bytes(&t, (tok_kind)m->tokenizer_kind, m->tokenizer, m->tokenizer_len, dir);
    if (!rc && !has_add_bos) m->cfg.add_bos = tok_adds_bos(t) == 1;
    if (!rc && m->cfg.bos_id < 0) {
        int id = tok_bos_id(t) >= 0 ? tok_bos_id(t) : name ? tok_piece_to_id(t, name) : -1;
        if (name && id < 0) rc = ql_err(QL_EFORMAT, "%s: bos_token \"%.60s\" is not a token of the tokenizer", path, name);
        else if (id >= m->cfg.vocab_size) rc = ql_err(QL_EFORMAT, "%s: the BOS id %d is past vocab_size %d", dir, id, m->cfg.vocab_size);
        else m->cfg.bos_id = id;
    }
    tok_free(t);
    free(name);
    return rc;
}

// ---- the model's name ----

// The last component of path without its trailing slashes and without suffix
// (when it ends so); the real path's last component when that is "." or "..".
static char *path_stem(const char *path, const char *suffix) {
    char *real = NULL, *p = strdup(path);
    if (!p) return NULL;
    for (size_t n = strlen(p); n > 1 && p[n - 1] == '/';) p[--n] = 0;
    const char *b = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
    if ((!strcmp(b, ".") || !strcmp(b, "..") || !*b) && (real = realpath(path, NULL)))
        b = strrchr(real, '/') ? strrchr(real, '/') + 1 : real;
    size_t n = strlen(b), ls = suffix ? strlen(suffix) : 0;
    if (ls && n > ls && !strcmp(b + n - ls, suffix)) n -= ls;
    char *out = *b ? strndup(b, n) : strdup(path);
    free(p), free(real);
    return out;
}

// A Hugging Face directory's name: config.json's "_name_or_path" (what
// transformers' save_pretrained records) when it is a non-empty string, else the
// directory's own name (also when _name_or_path cannot be read as one: a name
// never stops a model from loading).
static int dir_model_name(char **name, const char *dir) {
    char path[4200], *js = NULL;
    size_t len;
    *name = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    QL_CHECK(file_read_all(path, 16u << 20, &js, &len));
    json_doc d;
    int rc = json_parse(&d, js, len, path);
    if (!rc) {
        int v = json_type(&d, 0) == JSON_OBJECT ? json_find(&d, 0, "_name_or_path") : -1;
        if (v >= 0 && json_type(&d, v) == JSON_STRING && json_get_string(&d, v, "_name_or_path", name, NULL) != QL_OK)
            *name = NULL;
        if (*name && !**name) free(*name), *name = NULL;
        json_free(&d);
    }
    free(js);
    if (!rc && !*name && !(*name = path_stem(dir, NULL))) rc = ql_err(QL_ENOMEM, "out of memory");
    return rc;
}

int model_name_of(char **name, const char *path) {
    struct stat st;
    *name = NULL;
    if (stat(path, &st) != 0) return ql_err(QL_EIO, "%s: no such model directory or base file", path);
    if (S_ISDIR(st.st_mode)) return dir_model_name(name, path);
    model m;  // a base file: mapped, nothing converted
    QL_CHECK(model_load(&m, path, DT_NF4));
    *name = strdup(m.name);
    model_free(&m);
    return *name ? QL_OK : ql_err(QL_ENOMEM, "out of memory");
}

static int load_dir(model *m, const char *dir, dtype base_dtype) {
    model_config *c = &m->cfg;
    QL_CHECK(config_load_dir(c, dir));
    QL_CHECK(dir_model_name(&m->name, dir));
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, tok_file_name(TOK_BPE));
    m->tokenizer_kind = stat(path, &sb) == 0 ? TOK_BPE : TOK_SPM;
    snprintf(path, sizeof path, "%s/%s", dir, tok_file_name(m->tokenizer_kind));
    char *tok;
    size_t toklen;
    int rc = file_read_all(path, 1u << 30, &tok, &toklen);
    if (rc) {
        char why[1024];
        snprintf(why, sizeof why, "%s", ql_errmsg());
        return ql_err(rc, "%s: cannot read the tokenizer (a model directory needs tokenizer.json or tokenizer.model): %s",
                      dir, why);
    }
    if (m->nowned == m->capowned && !own(m, 0)) { free(tok); return ql_err(QL_ENOMEM, "out of memory"); }
    m->owned[m->nowned++] = tok;
    m->tokenizer = tok, m->tokenizer_len = toklen;
    QL_CHECK(read_chat_template(m, dir));
    if (m->tokenizer_kind == TOK_BPE) QL_CHECK(bpe_bos_rules(m, dir));
    QL_CHECK(st_set_open_dir(&m->st, dir));
    m->base_dtype = base_dtype;
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, V = c->vocab_size;
    const st_tensor *t;
    QL_CHECK(find_hf(m, "model.embed_tokens.weight", V, C, &t));
    QL_CHECK(load_plain(m, t, &m->embed, V, C, base_dtype == DT_F32 ? DT_F32 : t->type));
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
        const st_tensor *lt = st_set_find(&m->st, "lm_head.weight", NULL);
        if (lt) QL_CHECK(find_hf(m, "lm_head.weight", V, C, &lt));  // present: must at least be well formed
    } else {
        QL_CHECK(find_hf(m, "lm_head.weight", V, C, &t));
        QL_CHECK(load_plain(m, t, &m->lm_head, V, C, base_dtype == DT_F32 ? DT_F32 : t->type));
    }
    QL_CHECK(load_norm(m, "model.norm.weight", C, &m->final_norm));
    m->layers = own(m, sizeof(layer_weights) * (size_t)c->n_layers);
    if (!m->layers) return ql_err(QL_ENOMEM, "out of memory");
    memset(m->layers, 0, sizeof(layer_weights) * (size_t)c->n_layers);
    // find and check everything first, then convert in parallel
    int nlin = c->n_layers * LAYER_NLINEARS;
    const st_tensor **src = calloc((size_t)nlin, sizeof *src);
    qweight **dst = calloc((size_t)nlin, sizeof *dst);
    if (!src || !dst) { free(src); free(dst); return ql_err(QL_ENOMEM, "out of memory"); }
    rc = QL_OK;
    for (int l = 0; l < c->n_layers && rc == QL_OK; l++) {
        layer_weights *lw = &m->layers[l];
        char name[256];
        int k = 0;
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        if ((rc = load_norm(m, name, C, &lw->attn_norm))) break;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if ((rc = load_norm(m, name, C, &lw->ffn_norm))) break;
#define X(field, hf, R_, C_)                                                       \
        if (rc == QL_OK) {                                                             \
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, hf);           \
            rc = find_hf(m, name, (R_), (C_), &src[l * LAYER_NLINEARS + k]);       \
            lw->field.rows = (R_), lw->field.cols = (C_);                          \
            dst[l * LAYER_NLINEARS + k++] = &lw->field;                                \
        }
        LAYER_LINEARS(X)
#undef X
    }
    if (rc == QL_OK) {
        double t0 = time_now();
        int fail = QL_OK;
        for (int i = 0; i < nlin && rc == QL_OK; i++)
            rc = base_dtype == DT_NF4 ? alloc_nf4(m, dst[i])
                                      : load_plain(m, src[i], dst[i], dst[i]->rows, dst[i]->cols, base_dtype);
        if (base_dtype == DT_NF4 && rc == QL_OK) {
            int done = 0, tty = isatty(2);
            #pragma omp parallel for schedule(dynamic, 1)
            for (int i = 0; i < nlin; i++) {
                int r = quantize_into(src[i], dst[i]);
                #pragma omp critical(model_progress)
                {
                    if (r) fail = r;
                    done++;
                    if (tty) progress_bar("quantizing", done, nlin, "tensors", t0);
                }
            }
            if (tty) fputc('\n', stderr);
        }
        if (rc == QL_OK) rc = fail;
        if (base_dtype == DT_NF4) log_debug("quantized %d weights to NF4 in %.2f s", nlin, time_now() - t0);
    }
    free(src);
    free(dst);
    return rc;
}

// ---- the quantized base file ----
// Container: 32-byte prefix (magic "QLORABAS", u32 version, u32 flags = 0,
// u64 length of the image that follows, u64 reserved = 0), then a safetensors
// image: F32 tensors first, then 16-bit, then bytes, so every tensor is aligned.
// An NF4 weight "X.weight" is stored as X.weight.nf4_codes (U8), .nf4_absmax_q (U8),
// .nf4_absmax_scale (F32), .nf4_absmax_offset (F32 [1]); its shape comes from the config.

typedef struct {
    st_out *t;
    int n, cap;
    char **names;
} outlist;

static int out_add(outlist *o, const char *name, dtype type, int64_t d0, int64_t d1, const void *data) {
    if (o->n == o->cap) {
        int nc = o->cap ? 2 * o->cap : 256;
        st_out *nt = realloc(o->t, sizeof(st_out) * (size_t)nc);
        char **nn = realloc(o->names, sizeof(char *) * (size_t)nc);
        if (nt) o->t = nt;
        if (nn) o->names = nn;
        if (!nt || !nn) return ql_err(QL_ENOMEM, "out of memory");
        o->cap = nc;
    }
    char *nm = strdup(name);
    if (!nm) return ql_err(QL_ENOMEM, "out of memory");
    o->names[o->n] = nm;
    st_out *t = &o->t[o->n++];
    memset(t, 0, sizeof *t);
    t->name = nm, t->type = type, t->data = data;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0, t->shape[1] = d1;
    return QL_OK;
}

static int out_weight(outlist *o, const char *name, const qweight *w) {
    if (w->type != DT_NF4) return out_add(o, name, w->type, w->rows, w->cols, w->data);
    char nm[300];
    int64_t n = w->rows * w->cols;
    snprintf(nm, sizeof nm, "%s.nf4_codes", name);
    QL_CHECK(out_add(o, nm, DT_U8, (n + 1) / 2, 0, w->nf4.codes));
    snprintf(nm, sizeof nm, "%s.nf4_absmax_q", name);
    QL_CHECK(out_add(o, nm, DT_U8, nf4_nblocks(n), 0, w->nf4.absmax_q));
    snprintf(nm, sizeof nm, "%s.nf4_absmax_scale", name);
    QL_CHECK(out_add(o, nm, DT_F32, nf4_ngroups(n), 0, w->nf4.absmax_scale));
    snprintf(nm, sizeof nm, "%s.nf4_absmax_offset", name);
    return out_add(o, nm, DT_F32, 1, 0, &w->nf4.absmax_offset);
}

static int align_rank(dtype t) { return t == DT_F32 || t == DT_I32 ? 0 : (t == DT_F16 || t == DT_BF16) ? 1 : 2; }

static int cmp_align(const void *a, const void *b) {
    const st_out *x = a, *y = b;
    return align_rank(x->type) - align_rank(y->type);
}

int model_save_base(const model *m, const char *path) {
    const model_config *c = &m->cfg;
    outlist o = {0};
    int rc = out_weight(&o, "model.embed_tokens.weight", &m->embed);
    if (!rc && !c->tie_embeddings) rc = out_weight(&o, "lm_head.weight", &m->lm_head);
    if (!rc) rc = out_add(&o, "model.norm.weight", DT_F32, c->dim, 0, m->final_norm);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        const layer_weights *lw = &m->layers[l];
        char nm[256];
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        rc = out_add(&o, nm, DT_F32, c->dim, 0, lw->attn_norm);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        if (!rc) rc = out_add(&o, nm, DT_F32, c->dim, 0, lw->ffn_norm);
#define X(field, hf, R_, C_)                                      \
        if (!rc) {                                                    \
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, hf); \
            rc = out_weight(&o, nm, &lw->field);                      \
        }
        LAYER_LINEARS(X)
#undef X
    }
    if (!rc)  // a model made without one (bench's random weights) keeps an empty tokenizer.model
        rc = out_add(&o, tok_file_name(m->tokenizer_kind ? (tok_kind)m->tokenizer_kind : TOK_SPM), DT_U8,
                     (int64_t)m->tokenizer_len, 0, m->tokenizer);
    char *cfg = config_to_json(c);
    if (!cfg && !rc) rc = ql_err(QL_ENOMEM, "out of memory");
    if (!rc) {
        // a stable sort keeps the natural order within each alignment class
        for (int i = 1; i < o.n; i++)
            for (int j = i; j > 0 && cmp_align(&o.t[j - 1], &o.t[j]) > 0; j--) {
                st_out t = o.t[j]; o.t[j] = o.t[j - 1]; o.t[j - 1] = t;
            }
        // optional keys last: a NULL key ends the list
        const char *meta[] = {"format", "qlora-base", "config", cfg, "base_dtype", base_dtype_name(m->base_dtype),
                              "add_bos_token", m->cfg.add_bos ? "true" : "false", NULL, NULL, NULL, NULL, NULL};
        int k = 8;
        if (m->name) meta[k++] = "name_or_path", meta[k++] = m->name;
        if (m->chat_template) meta[k++] = "chat_template", meta[k++] = m->chat_template;
        uint8_t prefix[BASE_PREFIX] = {0};
        memcpy(prefix, QLORA_BASE_MAGIC, 8);
        prefix[8] = QLORA_BASE_VERSION;
        rc = st_write(path, o.t, o.n, meta, prefix, BASE_PREFIX, 16);
    }
    free(cfg);
    for (int i = 0; i < o.n; i++) free(o.names[i]);
    free(o.names);
    free(o.t);
    return rc;
}

static int base_find(model *m, const char *name, dtype type, int64_t numel, const void **out) {
    const st_tensor *t = st_find(&m->base, name);
    if (!t) return ql_err(QL_EFORMAT, "%s: tensor '%s' is missing from the base file", m->source, name);
    if (t->type != type || t->numel != numel)
        return ql_err(QL_EFORMAT, "%s: tensor '%s': expected %s with %lld elements, found %s with %lld", m->source, name,
                      dtype_name(type), (long long)numel, dtype_name(t->type), (long long)t->numel);
    *out = t->data;
    return QL_OK;
}

static int base_weight(model *m, const char *name, qweight *w, int64_t rows, int64_t cols) {
    w->rows = rows, w->cols = cols;
    int64_t n = rows * cols;
    const st_tensor *t = st_find(&m->base, name);
    if (t) {
        if (t->type != DT_F32 && t->type != DT_F16 && t->type != DT_BF16)
            return ql_err(QL_EFORMAT, "%s: tensor '%s': unexpected dtype %s", m->source, name, dtype_name(t->type));
        w->type = t->type;
        return base_find(m, name, t->type, n, &w->data);
    }
    char nm[300];
    const void *p;
    w->type = DT_NF4;
    w->nf4.n = n;
    snprintf(nm, sizeof nm, "%s.nf4_codes", name);
    QL_CHECK(base_find(m, nm, DT_U8, (n + 1) / 2, &p));
    w->nf4.codes = p;
    snprintf(nm, sizeof nm, "%s.nf4_absmax_q", name);
    QL_CHECK(base_find(m, nm, DT_U8, nf4_nblocks(n), &p));
    w->nf4.absmax_q = p;
    snprintf(nm, sizeof nm, "%s.nf4_absmax_scale", name);
    QL_CHECK(base_find(m, nm, DT_F32, nf4_ngroups(n), &p));
    w->nf4.absmax_scale = p;
    snprintf(nm, sizeof nm, "%s.nf4_absmax_offset", name);
    QL_CHECK(base_find(m, nm, DT_F32, 1, &p));
    w->nf4.absmax_offset = *(const float *)p;
    return QL_OK;
}

static int load_base_file(model *m, const char *path) {
    QL_CHECK(fmap_open(&m->map, path));
    const uint8_t *b = m->map.data;
    if (m->map.len < BASE_PREFIX || memcmp(b, QLORA_BASE_MAGIC, 8) != 0)
        return ql_err(QL_EFORMAT, "%s: not a qlora base file (no %s magic) and not a model directory", path,
                      QLORA_BASE_MAGIC);
    uint32_t version = b[8] | b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
    if (version != QLORA_BASE_VERSION)
        return ql_err(QL_EUNSUP, "%s: base file version %u, this qlora reads version %d (re-run qlora quantize)", path,
                      version, QLORA_BASE_VERSION);
    uint32_t flags = b[12] | b[13] << 8 | (uint32_t)b[14] << 16 | (uint32_t)b[15] << 24;
    if (flags != 0)
        return ql_err(QL_EUNSUP, "%s: base file flags 0x%x: this qlora knows none (expected 0; written by a newer qlora?)",
                      path, flags);
    uint64_t image = 0, reserved = 0, hlen = 0;
    for (int k = 7; k >= 0; k--) image = image << 8 | b[16 + k], reserved = reserved << 8 | b[24 + k];
    if (reserved != 0)
        return ql_err(QL_EFORMAT, "%s: the reserved field (bytes 24..31) is 0x%llx, expected 0", path,
                      (unsigned long long)reserved);
    if (image != m->map.len - BASE_PREFIX)
        return ql_err(QL_EFORMAT, "%s: header says %llu bytes follow but the file has %zu (truncated?)", path,
                      (unsigned long long)image, m->map.len - BASE_PREFIX);
    // the data area starts 64-aligned (docs/formats.md): weights are used in place, and
    // an f32 or NF4 kernel load through a misaligned pointer is undefined behaviour
    if (image >= 8) {
        for (int k = 7; k >= 0; k--) hlen = hlen << 8 | b[BASE_PREFIX + k];
        if (hlen <= image - 8 && (BASE_PREFIX + 8 + hlen) % 64 != 0)
            return ql_err(QL_EFORMAT, "%s: the data area starts at byte %llu, not a multiple of 64 as a base file's must",
                          path, (unsigned long long)(BASE_PREFIX + 8 + hlen));
    }
    QL_CHECK(st_open_mem(&m->base, b + BASE_PREFIX, (size_t)image, path));
    for (int k = 0; k < m->base.n; k++)  // and every tensor aligned for its dtype in place (the reader would copy it)
        if (m->base.t[k].copy)
            return ql_err(QL_EFORMAT, "%s: tensor '%s' is not aligned for %s in the file (a base file orders F32, "
                          "then 16-bit, then byte tensors from a 64-aligned data area)", path, m->base.t[k].name,
                          dtype_name(m->base.t[k].type));
    char *fmt = st_metadata_get(&m->base, "format"), *cfg = st_metadata_get(&m->base, "config"),
         *bd = st_metadata_get(&m->base, "base_dtype"), *ab = st_metadata_get(&m->base, "add_bos_token");
    int rc = QL_OK;
    if (!fmt || strcmp(fmt, "qlora-base") || !cfg || !bd)
        rc = ql_err(QL_EFORMAT, "%s: metadata must hold format=qlora-base, config and base_dtype", path);
    else if (base_dtype_parse(bd) < 0)
        rc = ql_err(QL_EFORMAT, "%s: metadata base_dtype \"%.40s\": expected nf4, f16 or f32", path, bd);
    else if (ab && strcmp(ab, "true") && strcmp(ab, "false"))
        rc = ql_err(QL_EFORMAT, "%s: metadata add_bos_token \"%.40s\": expected true or false", path, ab);
    if (!rc) {
        char what[4200];
        snprintf(what, sizeof what, "%s (config)", path);
        rc = config_parse(&m->cfg, cfg, strlen(cfg), what);
    }
    if (!rc) {
        m->base_dtype = (dtype)base_dtype_parse(bd);
        m->cfg.add_bos = !ab || strcmp(ab, "false") != 0;
        // the name recorded at quantize time; a file written before there was one: its stem
        char *nm = st_metadata_get(&m->base, "name_or_path");
        m->name = nm && *nm ? nm : path_stem(path, ".qlb");
        if (nm && !*nm) free(nm);
        if (!m->name) rc = ql_err(QL_ENOMEM, "out of memory");
        char *ct = rc ? NULL : st_metadata_get(&m->base, "chat_template");
        if (ct) {
            if (m->nowned == m->capowned && !own(m, 0)) rc = ql_err(QL_ENOMEM, "out of memory");
            else m->owned[m->nowned++] = ct, m->chat_template = ct;
            if (rc) free(ct);
        }
    }
    free(fmt), free(cfg), free(bd), free(ab);
    if (rc) return rc;
    model_config *c = &m->cfg;
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, V = c->vocab_size;
    const st_tensor *tk = st_find(&m->base, tok_file_name(TOK_SPM));
    m->tokenizer_kind = TOK_SPM;
    if (!tk) tk = st_find(&m->base, tok_file_name(TOK_BPE)), m->tokenizer_kind = TOK_BPE;
    if (!tk || tk->type != DT_U8)
        return ql_err(QL_EFORMAT, "%s: the tokenizer (a U8 tensor 'tokenizer.model' or 'tokenizer.json') is missing", path);
    m->tokenizer = tk->data, m->tokenizer_len = tk->nbytes;
    QL_CHECK(base_weight(m, "model.embed_tokens.weight", &m->embed, V, C));
    if (c->tie_embeddings) m->lm_head = m->embed;
    else QL_CHECK(base_weight(m, "lm_head.weight", &m->lm_head, V, C));
    const void *p;
    QL_CHECK(base_find(m, "model.norm.weight", DT_F32, C, &p));
    m->final_norm = p;
    m->layers = own(m, sizeof(layer_weights) * (size_t)c->n_layers);
    if (!m->layers) return ql_err(QL_ENOMEM, "out of memory");
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights *lw = &m->layers[l];
        char nm[256];
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        QL_CHECK(base_find(m, nm, DT_F32, C, &p));
        lw->attn_norm = p;
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        QL_CHECK(base_find(m, nm, DT_F32, C, &p));
        lw->ffn_norm = p;
#define X(field, hf, R_, C_)                                     \
        snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, hf); \
        QL_CHECK(base_weight(m, nm, &lw->field, (R_), (C_)));         \
        if (lw->field.type != m->base_dtype)                           \
            return ql_err(QL_EFORMAT, "%s: tensor '%s' is %s but the metadata says base_dtype %s", path, nm, \
                          lw->field.type == DT_NF4 ? "nf4" : dtype_name(lw->field.type), base_dtype_name(m->base_dtype));
        LAYER_LINEARS(X)
#undef X
    }
    return QL_OK;
}

int model_load(model *m, const char *path, dtype base_dtype) {
    memset(m, 0, sizeof *m);
    m->source = strdup(path);
    struct stat st;
    int rc;
    if (stat(path, &st) != 0) rc = ql_err(QL_EIO, "%s: no such model directory or base file", path);
    else if (S_ISDIR(st.st_mode)) rc = load_dir(m, path, base_dtype);
    else if (!S_ISREG(st.st_mode))  // a FIFO would block the mapping's open
        rc = ql_err(QL_EIO, "%s: not a model directory or a regular file", path);
    else rc = load_base_file(m, path);
    if (rc) model_free(m);
    return rc;
}

void model_free(model *m) {
    for (int i = 0; i < m->nowned; i++) free(m->owned[i]);
    free(m->owned);
    st_set_close(&m->st);
    st_close(&m->base);
    fmap_close(&m->map);
    free(m->source);
    free(m->name);
    memset(m, 0, sizeof *m);
}

size_t model_linear_bytes(const model *m, size_t *n_params) {
    size_t bytes = 0, n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
#define X(field, hf, R_, C_)                    \
        bytes += qweight_bytes(&m->layers[l].field); \
        n += (size_t)(m->layers[l].field.rows * m->layers[l].field.cols);
        LAYER_LINEARS(X)
#undef X
    }
    if (n_params) *n_params = n;
    return bytes;
}

size_t model_weight_bytes(const model *m) {
    size_t b = model_linear_bytes(m, NULL) + qweight_bytes(&m->embed);
    if (!m->cfg.tie_embeddings) b += qweight_bytes(&m->lm_head);
    return b + sizeof(float) * (size_t)m->cfg.dim * (2 * (size_t)m->cfg.n_layers + 1);
}

// ---- random models for benchmarks ----

static uint64_t rnd(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void fill_bytes(uint8_t *p, size_t n, uint64_t seed) {
    uint64_t s = seed | 1;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t r = rnd(&s);
        memcpy(p + i, &r, 8);
    }
    for (; i < n; i++) p[i] = (uint8_t)rnd(&s);
}

// fp16 values around +-0.02
static void fill_f16(uint16_t *p, size_t n, uint64_t seed) {
    uint64_t s = seed | 1;
    for (size_t i = 0; i < n; i++) p[i] = f32_to_f16(((float)(rnd(&s) >> 40) / 16777216.0f - 0.5f) * 0.04f);
}

int model_init_random(model *m, const model_config *c, dtype base_dtype, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->base_dtype = base_dtype;
    m->source = strdup("(random)");
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, V = c->vocab_size;
    int rc = QL_OK;
    uint16_t *emb = own(m, sizeof(uint16_t) * (size_t)V * C);
    float *norm = own(m, sizeof(float) * (size_t)C);
    m->layers = own(m, sizeof(layer_weights) * (size_t)c->n_layers);
    if (!emb || !norm || !m->layers) { model_free(m); return ql_err(QL_ENOMEM, "out of memory"); }
    memset(m->layers, 0, sizeof(layer_weights) * (size_t)c->n_layers);
    fill_f16(emb, (size_t)V * C, seed);
    for (int i = 0; i < C; i++) norm[i] = 1.0f;
    m->embed = (qweight){.type = DT_F16, .rows = V, .cols = C, .data = emb};
    m->lm_head = m->embed;
    if (!c->tie_embeddings) {
        uint16_t *lm = own(m, sizeof(uint16_t) * (size_t)V * C);
        if (!lm) { model_free(m); return ql_err(QL_ENOMEM, "out of memory"); }
        fill_f16(lm, (size_t)V * C, seed + 1);
        m->lm_head.data = lm;
    }
    m->final_norm = norm;
    uint64_t k = seed + 2;
    for (int l = 0; l < c->n_layers && !rc; l++) {
        layer_weights *lw = &m->layers[l];
        lw->attn_norm = lw->ffn_norm = norm;
#define X(field, hf, R_, C_)                                                                          \
        if (!rc) {                                                                                    \
            qweight *w = &lw->field;                                                                  \
            w->rows = (R_), w->cols = (C_);                                                           \
            int64_t n = w->rows * w->cols;                                                            \
            if (base_dtype == DT_NF4) {                                                               \
                rc = alloc_nf4(m, w);                                                                 \
                if (!rc) {                                                                            \
                    fill_bytes((uint8_t *)w->nf4.codes, (size_t)(n + 1) / 2, k++);                    \
                    fill_bytes((uint8_t *)w->nf4.absmax_q, (size_t)nf4_nblocks(n), k++);              \
                    float *sc = (float *)w->nf4.absmax_scale;                                         \
                    for (int64_t g = 0; g < nf4_ngroups(n); g++) sc[g] = 0.01f;                       \
                    w->nf4.absmax_offset = 0.05f;                                                     \
                }                                                                                     \
            } else {                                                                                  \
                uint16_t *p = own(m, sizeof(uint16_t) * (size_t)n);                                   \
                if (!p) rc = ql_err(QL_ENOMEM, "out of memory");                                      \
                else { fill_f16(p, (size_t)n, k++); w->type = DT_F16, w->data = p; }                  \
            }                                                                                         \
        }
        LAYER_LINEARS(X)
#undef X
    }
    if (rc) model_free(m);
    return rc;
}
