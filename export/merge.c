// merge.c: see merge.h. The directory is built aside (a hidden temp sibling,
// fileio.h adir) and renamed into place when complete, so a failure leaves
// nothing at <out>.
#include "merge.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/err.h"
#include "../common/strbuf.h"
#include "../common/tokenizer.h"
#include "../common/fileio.h"
#include "../common/json.h"
#include "../common/log.h"
#include "../common/safetensors.h"

#define SHARD_BYTES ((size_t)2 << 30)  // Hugging Face's shards are a few GB; ours at most 2 GiB

// One output tensor: its Hugging Face name and where its fp32 values come from.
typedef struct {
    char name[96];
    const qweight *w;     // a matrix, or NULL
    const float *vec;     // a norm (C)
    const lora_pair *p;   // the adapter's pair for w, or NULL
} mtensor;

static int64_t mt_numel(const mtensor *t, const model *m) { return t->w ? t->w->rows * t->w->cols : m->cfg.dim; }

// The tensor's values, merged, as type; malloc'd.
static void *tensor_bytes(const mtensor *t, const model *m, const lora_adapter *a, dtype type, int64_t *n_out) {
    int64_t n = mt_numel(t, m);
    float *f = malloc(sizeof(float) * (size_t)n);
    if (!f) return NULL;
    if (!t->w) memcpy(f, t->vec, sizeof(float) * (size_t)n);
    else {
        qweight_rows_f32(t->w, 0, t->w->rows, f);
        if (t->p)  // W += scaling * B A
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t->p->out, t->p->in, a->rank, a->scaling, t->p->B,
                        a->rank, t->p->A, t->p->in, 1.0f, f, t->p->in);
    }
    *n_out = n;
    if (type == DT_F32) return f;
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    for (int64_t i = 0; h && i < n; i++) h[i] = type == DT_F16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
    free(f);
    return h;
}

static int copy_file(const char *src, const char *dst) {
    char *buf = NULL;
    size_t len = 0;
    QL_CHECK(file_read_all(src, (size_t)64 << 20, &buf, &len));
    int rc = file_write_atomic(dst, buf, len);
    free(buf);
    return rc;
}

static int write_shards(const char *tmp, const model *m, const lora_adapter *a, dtype type, const mtensor *t, int nt,
                        int *n_shards) {
    size_t es = dtype_size(type), total = 0;
    for (int i = 0; i < nt; i++) total += es * (size_t)mt_numel(&t[i], m);
    // shard boundaries: greedy, at most SHARD_BYTES each (one tensor may exceed it alone)
    int *shard = malloc(sizeof(int) * (size_t)nt), ns = 0;
    if (!shard) return ql_err(QL_ENOMEM, "out of memory");
    size_t cur = 0;
    for (int i = 0; i < nt; i++) {
        size_t b = es * (size_t)mt_numel(&t[i], m);
        if (i > 0 && cur + b > SHARD_BYTES) ns++, cur = 0;
        shard[i] = ns;
        cur += b;
    }
    ns++;
    char path[8400], fname[64];
    int rc = QL_OK;
    st_out *so = malloc(sizeof(st_out) * (size_t)nt);
    void **data = calloc((size_t)nt, sizeof(void *));
    if (!so || !data) rc = ql_err(QL_ENOMEM, "out of memory");
    for (int s = 0, i = 0; s < ns && !rc; s++) {
        int i0 = i;
        for (; i < nt && shard[i] == s && !rc; i++) {
            int64_t n;
            if (!(data[i] = tensor_bytes(&t[i], m, a, type, &n))) rc = ql_err(QL_ENOMEM, "out of memory merging %s", t[i].name);
            so[i] = (st_out){.name = t[i].name, .type = type, .ndim = t[i].w ? 2 : 1, .data = data[i]};
            so[i].shape[0] = t[i].w ? t[i].w->rows : m->cfg.dim;
            if (t[i].w) so[i].shape[1] = t[i].w->cols;
        }
        if (ns == 1) snprintf(fname, sizeof fname, "model.safetensors");
        else snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, ns);
        snprintf(path, sizeof path, "%s/%s", tmp, fname);
        const char *meta[] = {"format", "pt", NULL};
        if (!rc) rc = st_write(path, so + i0, i - i0, meta, NULL, 0, -1);
        for (int k = i0; k < i; k++) free(data[k]), data[k] = NULL;
    }
    if (!rc && ns > 1) {  // model.safetensors.index.json
        size_t cap = 256 + (size_t)nt * 160, o = 0;
        char *js = malloc(cap);
        if (!js) rc = ql_err(QL_ENOMEM, "out of memory");
        if (js) o += (size_t)snprintf(js, cap, "{\n  \"metadata\": {\"total_size\": %zu},\n  \"weight_map\": {", total);
        for (int i = 0; js && i < nt; i++)
            o += (size_t)snprintf(js + o, cap - o, "%s\n    \"%s\": \"model-%05d-of-%05d.safetensors\"", i ? "," : "",
                                  t[i].name, shard[i] + 1, ns);
        if (js) o += (size_t)snprintf(js + o, cap - o, "\n  }\n}\n");
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", tmp);
        if (js) rc = file_write_atomic(path, js, o);
        free(js);
    }
    free(so), free(data), free(shard);
    *n_shards = ns;
    return rc;
}

int export_merged(const model *m, const lora_adapter *a, const char *base_dir, dtype type, const char *out) {
    const model_config *c = &m->cfg;
    struct stat sb;
    if (strlen(out) > 4000) return ql_err(QL_EINVAL, "--out: the path is too long");
    if (stat(out, &sb) == 0) return ql_err(QL_EINVAL, "--out %s already exists; remove it or choose another", out);
    adir od;
    QL_CHECK(adir_open(&od, out));
    od.no_replace = 1;
    const char *tmp = od.tmp;
    // tensors in Hugging Face's names
    int nt = 3 + 9 * c->n_layers, k = 0;
    mtensor *t = calloc((size_t)nt, sizeof *t);
    int rc = t ? QL_OK : ql_err(QL_ENOMEM, "out of memory");
    if (!rc) {
        snprintf(t[k].name, sizeof t[k].name, "model.embed_tokens.weight"), t[k++].w = &m->embed;
        snprintf(t[k].name, sizeof t[k].name, "model.norm.weight"), t[k++].vec = m->final_norm;
        if (!c->tie_embeddings) snprintf(t[k].name, sizeof t[k].name, "lm_head.weight"), t[k++].w = &m->lm_head;
        for (int l = 0; l < c->n_layers; l++) {
            const layer_weights *lw = &m->layers[l];
            const qweight *lin[LORA_NMODULES] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w_gate, &lw->w_up, &lw->w_down};
            snprintf(t[k].name, sizeof t[k].name, "model.layers.%d.input_layernorm.weight", l), t[k++].vec = lw->attn_norm;
            snprintf(t[k].name, sizeof t[k].name, "model.layers.%d.post_attention_layernorm.weight", l);
            t[k++].vec = lw->ffn_norm;
            for (int j = 0; j < LORA_NMODULES; j++) {
                snprintf(t[k].name, sizeof t[k].name, "model.layers.%d.%s.%s.weight", l, LORA_MODULE_PARENTS[j],
                         LORA_MODULE_NAMES[j]);
                t[k].w = lin[j];
                if (a->w[l * LORA_NMODULES + j].A) t[k].p = &a->w[l * LORA_NMODULES + j];
                k++;
            }
        }
    }
    int ns = 0;
    if (!rc) rc = write_shards(tmp, m, a, type, t, k, &ns);
    // config.json: ours (every field of the model, torch_dtype = the dtype written),
    // with a base directory's other fields kept; the tokenizer and generation
    // configs: the base directory's own
    char src[8400], dst[8400];
    int from_dir = stat(base_dir, &sb) == 0 && S_ISDIR(sb.st_mode);
    char *base_cfg = NULL, *js = NULL;
    size_t base_len = 0;
    snprintf(src, sizeof src, "%s/config.json", base_dir);
    snprintf(dst, sizeof dst, "%s/config.json", tmp);
    if (!rc && from_dir) rc = file_read_all(src, 16u << 20, &base_cfg, &base_len);
    if (!rc) rc = config_to_hf_json(&js, c, type, base_cfg, base_len, src);
    if (!rc) rc = file_write_atomic(dst, js, strlen(js));
    free(base_cfg), free(js);
    static const char *const extra[] = {"tokenizer_config.json", "special_tokens_map.json", "generation_config.json"};
    for (int i = 0; i < 3 && !rc && from_dir; i++) {
        snprintf(src, sizeof src, "%s/%s", base_dir, extra[i]);
        snprintf(dst, sizeof dst, "%s/%s", tmp, extra[i]);
        if (stat(src, &sb) == 0) rc = copy_file(src, dst);
    }
    // the tokenizer file the base has (tokenizer.model or tokenizer.json); from a base file,
    // a tokenizer_config.json with what it kept: the chat template and add_bos_token
    snprintf(dst, sizeof dst, "%s/%s", tmp, tok_file_name(m->tokenizer_kind ? (tok_kind)m->tokenizer_kind : TOK_SPM));
    if (!rc) rc = file_write_atomic(dst, m->tokenizer, m->tokenizer_len);
    if (!rc && !from_dir) {
        strbuf tc = {0};
        rc = sb_addf(&tc, "{\"add_bos_token\": %s", c->add_bos ? "true" : "false");
        if (!rc && m->chat_template && !(rc = sb_add(&tc, ", \"chat_template\": ")))
            rc = sb_json(&tc, m->chat_template, strlen(m->chat_template));
        if (!rc) rc = sb_add(&tc, "}\n");
        snprintf(dst, sizeof dst, "%s/tokenizer_config.json", tmp);
        if (!rc) rc = file_write_atomic(dst, tc.s, tc.n);
        sb_free(&tc);
    }
    if (rc) rc = adir_fail(&od, rc);  // nothing half-written stays
    else rc = adir_commit(&od);
    if (!rc) log_info("wrote %s: %d safetensors file%s, %s", out, ns, ns > 1 ? "s" : "", dtype_name(type));
    free(t);
    return rc;
}
