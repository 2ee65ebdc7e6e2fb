// forward.c: see forward.h.
#include "forward.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

static void *balloc(fwd_state *s, size_t n, int *rc) {
    void *p = s->o->alloc(s->o, n);
    if (!p && *rc == QL_OK) *rc = ql_err(QL_ENOMEM, "out of %s memory allocating %zu bytes", s->o->name, n);
    return p;
}

int model_upload(model *m, ops *o, float ***norms_out) {
    const model_config *c = &m->cfg;
    int L = c->n_layers, rc = o->weight_upload(o, &m->embed);
    if (!rc && !c->tie_embeddings) rc = o->weight_upload(o, &m->lm_head);
    if (c->tie_embeddings) m->lm_head = m->embed;  // share the backend copy too
    for (int l = 0; l < L && !rc; l++) {
#define X(field, hf, R_, C_) if (!rc) rc = o->weight_upload(o, &m->layers[l].field);
        LAYER_LINEARS(X)
#undef X
    }
    float **norms = calloc(2 * (size_t)L + 1, sizeof(float *));
    if (!rc && !norms) rc = ql_err(QL_ENOMEM, "out of memory");
    for (int i = 0; i <= 2 * L && !rc; i++) {
        const float *src = i == 2 * L ? m->final_norm : (i & 1) ? m->layers[i / 2].ffn_norm : m->layers[i / 2].attn_norm;
        norms[i] = o->alloc(o, sizeof(float) * (size_t)c->dim);
        if (!norms[i]) rc = ql_err(QL_ENOMEM, "out of %s memory for the norms", o->name);
        else o->to_device(o, norms[i], src, sizeof(float) * (size_t)c->dim);
    }
    *norms_out = norms;
    if (rc) model_release(m, o, norms_out);
    return rc;
}

void model_release(model *m, ops *o, float ***norms) {
    const model_config *c = &m->cfg;
    for (int i = 0; *norms && i <= 2 * c->n_layers; i++) o->free(o, (*norms)[i]);
    free(*norms);
    *norms = NULL;
    o->weight_release(o, &m->embed);
    if (!c->tie_embeddings) o->weight_release(o, &m->lm_head);
    for (int l = 0; l < c->n_layers; l++) {
#define X(field, hf, R_, C_) o->weight_release(o, &m->layers[l].field);
        LAYER_LINEARS(X)
#undef X
    }
    if (c->tie_embeddings) m->lm_head = m->embed;
}

int fwd_init(fwd_state *s, model *m, ops *o, int max_T, int max_N) {
    memset(s, 0, sizeof *s);
    const model_config *c = &m->cfg;
    s->m = m, s->o = o, s->max_T = max_T, s->max_N = max_N;
    int L = c->n_layers, C = c->dim, F = c->hidden_dim, HD = c->n_heads * c->head_dim,
        KV = c->n_kv_heads * c->head_dim, V = c->vocab_size;
    int rc = model_upload(m, o, &s->norms);  // cleans up after itself on failure
    if (rc) { memset(s, 0, sizeof *s); return rc; }
    s->k_cache = calloc((size_t)L, sizeof(float *));
    s->v_cache = calloc((size_t)L, sizeof(float *));
    s->inv_freq = malloc(sizeof(float) * (size_t)(c->head_dim / 2));
    s->pos = malloc(sizeof(int) * (size_t)max_N);
    if (!s->k_cache || !s->v_cache || !s->inv_freq || !s->pos) {
        fwd_free(s);
        return ql_err(QL_ENOMEM, "out of memory");
    }
    for (int l = 0; l < L && !rc; l++) {
        s->k_cache[l] = balloc(s, sizeof(float) * (size_t)max_T * KV, &rc);
        s->v_cache[l] = balloc(s, sizeof(float) * (size_t)max_T * KV, &rc);
    }
    size_t n = (size_t)max_N;
    s->x = balloc(s, sizeof(float) * n * C, &rc);
    s->xb = balloc(s, sizeof(float) * n * C, &rc);
    s->xb2 = balloc(s, sizeof(float) * n * C, &rc);
    s->q = balloc(s, sizeof(float) * n * HD, &rc);
    s->att = balloc(s, sizeof(float) * n * HD, &rc);
    s->hb = balloc(s, sizeof(float) * n * F, &rc);
    s->hb2 = balloc(s, sizeof(float) * n * F, &rc);
    s->logits = balloc(s, sizeof(float) * n * V, &rc);
    config_rope_inv_freq(c, s->inv_freq);
    if (rc) fwd_free(s);
    return rc;
}

void fwd_free(fwd_state *s) {
    if (!s->o) return;
    ops *o = s->o;
    const model_config *c = &s->m->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        if (s->k_cache) o->free(o, s->k_cache[l]);
        if (s->v_cache) o->free(o, s->v_cache[l]);
    }
    float *bufs[] = {s->x, s->xb, s->xb2, s->q, s->att, s->hb, s->hb2, s->logits, s->xa};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) o->free(o, bufs[i]);
    model_release(s->m, o, &s->norms);
    free(s->k_cache), free(s->v_cache), free(s->inv_freq), free(s->pos);
    memset(s, 0, sizeof *s);
}

int fwd_set_adapter(fwd_state *s, const lora_adapter *a) {
    ops *o = s->o;
    const model_config *c = &s->m->cfg;
    if (a && (!o->lora_forward))
        return ql_err(QL_EUNSUP, "the %s backend cannot apply LoRA adapters yet", o->name);
    if (a && a->n_layers != c->n_layers)
        return ql_err(QL_EINVAL, "adapter has %d layers, the model %d", a->n_layers, c->n_layers);
    for (int l = 0; a && l < c->n_layers; l++)
        for (int k = 0; k < LORA_NMODULES; k++) {
            int in, out;
            lora_module_shape(c, k, &in, &out);
            const lora_pair *p = &a->w[l * LORA_NMODULES + k];
            if (p->A && (p->in != in || p->out != out))
                return ql_err(QL_EINVAL, "adapter layer %d %s is (%d -> %d), the model's is (%d -> %d)", l,
                              LORA_MODULE_NAMES[k], p->in, p->out, in, out);
        }
    o->free(o, s->xa);
    s->xa = NULL;
    if (a) {
        s->xa = o->alloc(o, sizeof(float) * (size_t)s->max_N * a->rank);
        if (!s->xa) return ql_err(QL_ENOMEM, "out of memory");
    }
    s->lora = a;
    return QL_OK;
}

// y (N,out) = x W^T (+ the adapter's term for module k of layer l)
static void linear(fwd_state *s, float *y, const float *x, const qweight *w, int l, int k, int N) {
    ops *o = s->o;
    o->matmul(o, y, x, w, N);
    const lora_adapter *a = s->lora;
    if (a) {
        const lora_pair *p = &a->w[l * LORA_NMODULES + k];
        if (p->A) o->lora_forward(o, y, s->xa, x, p->A, p->B, N, p->in, p->out, a->rank, a->scaling);
    }
}

int fwd_forward(fwd_state *s, float *logits, const int *tokens, int N, int T0, int all_logits) {
    const model_config *c = &s->m->cfg;
    ops *o = s->o;
    if (N < 1 || N > s->max_N || T0 < 0 || T0 + N > s->max_T)
        return ql_err(QL_EINVAL, "forward: %d tokens at position %d exceed the context of %d (or %d per call)", N, T0,
                      s->max_T, s->max_N);
    for (int i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return ql_err(QL_EINVAL, "forward: token id %d is outside the vocabulary [0, %d)", tokens[i], c->vocab_size);
        s->pos[i] = T0 + i;
    }
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, V = c->vocab_size;
    int KV = Hkv * D;
    o->embed(o, s->x, &s->m->embed, tokens, N);
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *w = &s->m->layers[l];
        float *kc = s->k_cache[l], *vc = s->v_cache[l];
        float *k_new = kc + (size_t)T0 * KV, *v_new = vc + (size_t)T0 * KV;
        // attention block: x += wo(attn(rope(wq xn), rope(wk xn), wv xn)), xn = rmsnorm(x)
        o->rmsnorm(o, s->xb, s->x, s->norms[2 * l], N, C, c->norm_eps);
        linear(s, s->q, s->xb, &w->wq, l, 0, N);
        linear(s, k_new, s->xb, &w->wk, l, 1, N);  // K and V go straight into the cache
        linear(s, v_new, s->xb, &w->wv, l, 2, N);
        o->rope(o, s->q, s->pos, N, H, D, s->inv_freq);
        o->rope(o, k_new, s->pos, N, Hkv, D, s->inv_freq);
        o->attention(o, s->att, s->q, kc, vc, N, T0, H, Hkv, D);
        linear(s, s->xb2, s->att, &w->wo, l, 3, N);
        o->add(o, s->x, s->xb2, N * C);
        // MLP block: x += down(silu(gate xn) * up xn)
        o->rmsnorm(o, s->xb, s->x, s->norms[2 * l + 1], N, C, c->norm_eps);
        linear(s, s->hb, s->xb, &w->w_gate, l, 4, N);
        linear(s, s->hb2, s->xb, &w->w_up, l, 5, N);
        o->swiglu(o, s->hb, s->hb, s->hb2, N * F);
        linear(s, s->xb2, s->hb, &w->w_down, l, 6, N);
        o->add(o, s->x, s->xb2, N * C);
    }
    int first = all_logits ? 0 : N - 1, n_out = N - first;
    float *xl = s->x + (size_t)first * C;
    o->rmsnorm(o, s->xb, xl, s->norms[2 * c->n_layers], n_out, C, c->norm_eps);
    o->matmul(o, s->logits, s->xb, &s->m->lm_head, n_out);
    o->to_host(o, logits, s->logits, sizeof(float) * (size_t)n_out * V);
    return QL_OK;
}
