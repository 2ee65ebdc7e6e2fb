// forward.c: see forward.h.
#include "forward.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"

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

// ---- adapter copies in backend memory ----

struct fwd_copy {
    const lora_adapter *a;  // where the adapter was when copied (only compared for serial 0)
    uint64_t serial;        // the adapter's serial
    void *mem;          // backend memory: every pair's A then B, each on a 64-byte boundary
    lora_pair *w;       // host array [L*7] pointing into mem
    uint64_t last_use;  // s->batches at the last batch that used it
};

#define COPY_ALIGN(bytes) (((size_t)(bytes) + 63) & ~(size_t)63)

static void copy_free(fwd_state *s, struct fwd_copy *c) {
    s->o->free(s->o, c->mem);
    free(c->w);
    *c = s->copies[--s->n_copies];  // the last takes its place
}

// Whether copy c is of adapter a: by serial (an adapter keeps it when its struct
// moves, as in a growing store), or by address for adapters made by hand (serial 0).
static int copy_of(const struct fwd_copy *c, const lora_adapter *a) {
    return a->serial ? c->serial == a->serial : (c->serial == 0 && c->a == a);
}

void fwd_forget_adapter(fwd_state *s, const lora_adapter *a) {
    for (int i = 0; i < s->n_copies; i++)
        if (copy_of(&s->copies[i], a)) copy_free(s, &s->copies[i--]);
}

// The pairs of a as the backend reads them: a->w itself in host memory, else a
// copy (made now if there is none for this adapter). NULL with ql_err set when
// the backend is out of memory.
static const lora_pair *adapter_pairs(fwd_state *s, const lora_adapter *a) {
    ops *o = s->o;
    if (o->host_memory) return a->w;
    for (int i = 0; i < s->n_copies; i++) {
        struct fwd_copy *c = &s->copies[i];
        if (copy_of(c, a)) {
            c->last_use = s->batches;
            return c->w;
        }
    }
    // make room: evict the least recently used copy that this batch does not use
    while (s->n_copies >= FWD_MAX_COPIES) {
        int lru = -1;
        for (int i = 0; i < s->n_copies; i++)
            if (s->copies[i].last_use < s->batches && (lru < 0 || s->copies[i].last_use < s->copies[lru].last_use))
                lru = i;
        if (lru < 0) break;  // all in this batch (more adapters than FWD_MAX_COPIES): keep them
        copy_free(s, &s->copies[lru]);
    }
    int L = s->m->cfg.n_layers;
    size_t total = 0;
    // bytes: fp32, or as held when the backend reads halves (a resident adapter's)
    for (int i = 0; i < L * LORA_NMODULES; i++) {
        const lora_pair *p = &a->w[i];
        if (!lora_pair_on(p)) continue;
        size_t ea = p->A || !o->lora_half ? sizeof(float) : dtype_size(p->tA);
        size_t eb = p->A || !o->lora_half ? sizeof(float) : dtype_size(p->tB);
        total += COPY_ALIGN(ea * a->rank * p->in) + COPY_ALIGN(eb * p->out * a->rank);
    }
    struct fwd_copy c = {a, a->serial, NULL, calloc((size_t)L * LORA_NMODULES, sizeof(lora_pair)), s->batches};
    struct fwd_copy *grown = realloc(s->copies, sizeof *grown * (size_t)(s->n_copies + 1));
    if (grown) s->copies = grown;
    if (c.w && grown) c.mem = o->alloc(o, total ? total : 1);
    if (!c.w || !grown || !c.mem) {
        if (c.mem) o->free(o, c.mem);
        free(c.w);
        ql_err(QL_ENOMEM, "out of %s memory for a copy of an adapter (%zu MB)", o->name, total >> 20);
        return NULL;
    }
    size_t off = 0;
    float *tmp = NULL;  // a resident matrix converted to fp32 for a backend without half kernels
    for (int i = 0; i < L * LORA_NMODULES; i++) {
        const lora_pair *p = &a->w[i];
        c.w[i] = (lora_pair){.in = p->in, .out = p->out};
        if (!lora_pair_on(p)) continue;
        size_t n[2] = {(size_t)a->rank * p->in, (size_t)p->out * a->rank};
        const void *src[2] = {p->A ? (const void *)p->A : p->rA, p->A ? (const void *)p->B : p->rB};
        dtype t[2] = {p->A ? DT_F32 : p->tA, p->A ? DT_F32 : p->tB};
        for (int m = 0; m < 2; m++) {
            if (t[m] != DT_F32 && !o->lora_half) {
                float *grown_tmp = realloc(tmp, sizeof(float) * n[m]);
                if (!grown_tmp) {
                    free(tmp);
                    o->free(o, c.mem);
                    free(c.w);
                    ql_err(QL_ENOMEM, "out of memory converting an adapter for the %s backend", o->name);
                    return NULL;
                }
                tmp = grown_tmp;
                for (size_t e = 0; e < n[m]; e++)
                    tmp[e] = t[m] == DT_F16 ? f16_to_f32(((const uint16_t *)src[m])[e])
                                            : bf16_to_f32(((const uint16_t *)src[m])[e]);
                src[m] = tmp, t[m] = DT_F32;
            }
            void *dst = (char *)c.mem + off;
            o->to_device(o, dst, src[m], dtype_size(t[m]) * n[m]);
            off += COPY_ALIGN(dtype_size(t[m]) * n[m]);
            if (m == 0) c.w[i].rA = dst, c.w[i].tA = t[m];
            else c.w[i].rB = dst, c.w[i].tB = t[m];
        }
    }
    free(tmp);
    s->copies[s->n_copies++] = c;
    return c.w;
}

int fwd_init_slots(fwd_state *s, model *m, ops *o, int max_T, int max_N, int n_slots) {
    memset(s, 0, sizeof *s);
    const model_config *c = &m->cfg;
    if (max_T < 1 || max_N < 1 || n_slots < 1)
        return ql_err(QL_EINVAL, "forward: context %d, batch %d and slots %d must be >= 1", max_T, max_N, n_slots);
    s->m = m, s->o = o, s->max_T = max_T, s->max_N = max_N, s->n_slots = n_slots;
    int L = c->n_layers, C = c->dim, F = c->hidden_dim, HD = c->n_heads * c->head_dim,
        KV = c->n_kv_heads * c->head_dim, V = c->vocab_size;
    int rc = model_upload(m, o, &s->norms);  // cleans up after itself on failure
    if (rc) { memset(s, 0, sizeof *s); return rc; }
    s->k_cache = calloc((size_t)L, sizeof(float *));
    s->v_cache = calloc((size_t)L, sizeof(float *));
    s->inv_freq = malloc(sizeof(float) * (size_t)(c->head_dim / 2));
    s->pos = malloc(sizeof(int) * (size_t)max_N);
    s->segs = malloc(sizeof(lora_seg) * (size_t)max_N);
    s->seq_pairs = calloc((size_t)n_slots, sizeof *s->seq_pairs);
    if (!s->k_cache || !s->v_cache || !s->inv_freq || !s->pos || !s->segs || !s->seq_pairs) {
        fwd_free(s);
        return ql_err(QL_ENOMEM, "out of memory");
    }
    size_t cache = (size_t)n_slots * max_T * KV;
    for (int l = 0; l < L && !rc; l++) {
        s->k_cache[l] = balloc(s, sizeof(float) * cache, &rc);
        s->v_cache[l] = balloc(s, sizeof(float) * cache, &rc);
    }
    size_t n = (size_t)max_N;
    s->x = balloc(s, sizeof(float) * n * C, &rc);
    s->xb = balloc(s, sizeof(float) * n * C, &rc);
    s->xb2 = balloc(s, sizeof(float) * n * C, &rc);
    s->q = balloc(s, sizeof(float) * n * HD, &rc);
    s->att = balloc(s, sizeof(float) * n * HD, &rc);
    s->kb = balloc(s, sizeof(float) * n * KV, &rc);
    s->vb = balloc(s, sizeof(float) * n * KV, &rc);
    s->hb = balloc(s, sizeof(float) * n * F, &rc);
    s->hb2 = balloc(s, sizeof(float) * n * F, &rc);
    s->logits = balloc(s, sizeof(float) * n * V, &rc);
    config_rope_inv_freq(c, s->inv_freq);
    if (rc) fwd_free(s);
    return rc;
}

int fwd_init(fwd_state *s, model *m, ops *o, int max_T, int max_N) { return fwd_init_slots(s, m, o, max_T, max_N, 1); }

void fwd_free(fwd_state *s) {
    if (!s->o) return;
    ops *o = s->o;
    const model_config *c = &s->m->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        if (s->k_cache) o->free(o, s->k_cache[l]);
        if (s->v_cache) o->free(o, s->v_cache[l]);
    }
    float *bufs[] = {s->x, s->xb, s->xb2, s->q, s->att, s->kb, s->vb, s->hb, s->hb2, s->logits, s->xa};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) o->free(o, bufs[i]);
    model_release(s->m, o, &s->norms);
    while (s->n_copies) copy_free(s, &s->copies[0]);
    free(s->copies), free(s->seq_pairs);
    free(s->k_cache), free(s->v_cache), free(s->inv_freq), free(s->pos), free(s->segs);
    memset(s, 0, sizeof *s);
}

int fwd_check_adapter(const model_config *c, const lora_adapter *a) {
    if (a->n_layers != c->n_layers)
        return ql_err(QL_EINVAL, "adapter has %d layers, the model %d", a->n_layers, c->n_layers);
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < LORA_NMODULES; k++) {
            int in, out;
            lora_module_shape(c, k, &in, &out);
            const lora_pair *p = &a->w[l * LORA_NMODULES + k];
            if (lora_pair_on(p) && (p->in != in || p->out != out))
                return ql_err(QL_EINVAL, "adapter layer %d %s is (%d -> %d), the model's is (%d -> %d)", l,
                              LORA_MODULE_NAMES[k], p->in, p->out, in, out);
        }
    return QL_OK;
}

int fwd_set_adapter(fwd_state *s, const lora_adapter *a) {
    if (a && !s->o->lora_shrink)
        return ql_err(QL_EUNSUP, "the %s backend cannot apply LoRA adapters yet", s->o->name);
    if (a) QL_CHECK(fwd_check_adapter(&s->m->cfg, a));
    s->lora = a;
    return QL_OK;
}

// The LoRA segments of module k of layer l for a batch: consecutive sequences on
// the same pair and scale share one segment. Returns their count.
static int lora_segments(fwd_state *s, const fwd_seq *seqs, int nseq, int l, int k) {
    int ns = 0, row = 0;
    for (int i = 0; i < nseq; row += seqs[i++].n) {
        const lora_adapter *a = seqs[i].adapter;
        if (!a || seqs[i].scale == 0.0f) continue;
        const lora_pair *p = &s->seq_pairs[i][l * LORA_NMODULES + k];
        if (!lora_pair_on(p)) continue;
        float scale = a->scaling * seqs[i].scale;
        const void *A = p->A ? (const void *)p->A : p->rA;
        lora_seg *last = ns ? &s->segs[ns - 1] : NULL;
        if (last && last->A == A && last->scale == scale && last->row0 + last->n == row) last->n += seqs[i].n;
        else
            s->segs[ns++] = (lora_seg){row, seqs[i].n, a->rank, scale, A, p->A ? (const void *)p->B : p->rB,
                                       p->A ? DT_F32 : p->tA, p->A ? DT_F32 : p->tB};
    }
    return ns;
}

// y (N,out) = x W^T, plus the LoRA term of every sequence whose adapter targets
// module k of layer l
static void linear(fwd_state *s, float *y, const float *x, const qweight *w, const fwd_seq *seqs, int nseq, int l,
                   int k, int N) {
    ops *o = s->o;
    o->matmul(o, y, x, w, N);
    int ns = lora_segments(s, seqs, nseq, l, k);
    if (ns) {
        o->lora_shrink(o, s->xa, x, s->segs, ns, (int)w->cols);
        o->lora_expand(o, y, s->xa, s->segs, ns, (int)w->rows);
    }
}

// Checks a batch against the state's limits; *N_out = its rows, *max_rank = the
// largest rank of an adapter in it.
static int batch_check(fwd_state *s, const int *tokens, const fwd_seq *seqs, int nseq, int *N_out, int *max_rank) {
    const model_config *c = &s->m->cfg;
    if (nseq < 1 || nseq > s->n_slots)
        return ql_err(QL_EINVAL, "forward: %d sequences in a batch; the cache has %d slots", nseq, s->n_slots);
    int N = 0, R = 0;
    for (int i = 0; i < nseq; i++) {
        const fwd_seq *q = &seqs[i];
        if (q->n < 1 || q->pos < 0 || q->pos + q->n > s->max_T)
            return ql_err(QL_EINVAL, "forward: sequence %d: %d tokens at position %d exceed the context of %d", i, q->n,
                          q->pos, s->max_T);
        if (q->slot < 0 || q->slot >= s->n_slots)
            return ql_err(QL_EINVAL, "forward: sequence %d: slot %d outside [0, %d)", i, q->slot, s->n_slots);
        for (int j = 0; j < i; j++)
            if (seqs[j].slot == q->slot) return ql_err(QL_EINVAL, "forward: sequences %d and %d share slot %d", j, i, q->slot);
        if (q->adapter) {
            if (!s->o->lora_shrink)
                return ql_err(QL_EUNSUP, "the %s backend cannot apply LoRA adapters yet", s->o->name);
            if (q->adapter->n_layers != c->n_layers)
                return ql_err(QL_EINVAL, "forward: sequence %d: adapter has %d layers, the model %d", i,
                              q->adapter->n_layers, c->n_layers);
            if (q->adapter->rank > R) R = q->adapter->rank;
        }
        if (q->n > s->max_N - N)
            return ql_err(QL_EINVAL, "forward: the batch has more than %d tokens", s->max_N);
        N += q->n;
    }
    for (int i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return ql_err(QL_EINVAL, "forward: token id %d is outside the vocabulary [0, %d)", tokens[i], c->vocab_size);
    *N_out = N, *max_rank = R;
    return QL_OK;
}

int fwd_forward(fwd_state *s, float *logits, const int *tokens, int N, int T0, int all_logits) {
    fwd_seq q = {N, T0, 0, s->lora, 1.0f};
    return fwd_batch(s, logits, tokens, &q, 1, all_logits);
}

int fwd_batch(fwd_state *s, float *logits, const int *tokens, const fwd_seq *seqs, int nseq, int all_logits) {
    const model_config *c = &s->m->cfg;
    ops *o = s->o;
    int N = 0, R = 0;
    QL_CHECK(batch_check(s, tokens, seqs, nseq, &N, &R));
    if ((size_t)N * R > s->xa_cap) {  // LoRA scratch for the worst case of this batch
        o->free(o, s->xa);
        s->xa_cap = 0;
        s->xa = o->alloc(o, sizeof(float) * (size_t)N * R);
        if (!s->xa) return ql_err(QL_ENOMEM, "out of %s memory for LoRA scratch", o->name);
        s->xa_cap = (size_t)N * R;
    }
    s->batches++;
    if (o->step_begin) o->step_begin(o, N);
    for (int i = 0; i < nseq; i++) {
        s->seq_pairs[i] = NULL;
        if (seqs[i].adapter && seqs[i].scale != 0.0f && !(s->seq_pairs[i] = adapter_pairs(s, seqs[i].adapter)))
            return QL_ENOMEM;  // adapter_pairs set the message
    }
    for (int i = 0, row = 0; i < nseq; row += seqs[i++].n)
        for (int j = 0; j < seqs[i].n; j++) s->pos[row + j] = seqs[i].pos + j;
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, V = c->vocab_size;
    int KV = Hkv * D, HD = H * D;
    size_t slot_rows = (size_t)s->max_T;
    o->embed(o, s->x, &s->m->embed, tokens, N);
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *w = &s->m->layers[l];
        float *kc = s->k_cache[l], *vc = s->v_cache[l];
        // One sequence writes its keys and values straight into its cache slot;
        // a batch computes them in kb, vb and copies each sequence's rows there.
        float *k_new = s->kb, *v_new = s->vb;
        if (nseq == 1) {
            k_new = kc + (seqs[0].slot * slot_rows + (size_t)seqs[0].pos) * KV;
            v_new = vc + (seqs[0].slot * slot_rows + (size_t)seqs[0].pos) * KV;
        }
        // attention block: x += wo(attn(rope(wq xn), rope(wk xn), wv xn)), xn = rmsnorm(x)
        o->rmsnorm(o, s->xb, s->x, s->norms[2 * l], N, C, c->norm_eps);
        linear(s, s->q, s->xb, &w->wq, seqs, nseq, l, 0, N);
        linear(s, k_new, s->xb, &w->wk, seqs, nseq, l, 1, N);
        linear(s, v_new, s->xb, &w->wv, seqs, nseq, l, 2, N);
        o->rope(o, s->q, s->pos, N, H, D, s->inv_freq);
        o->rope(o, k_new, s->pos, N, Hkv, D, s->inv_freq);
        for (int i = 0, row = 0; i < nseq; row += seqs[i++].n) {
            const fwd_seq *q = &seqs[i];
            float *ks = kc + q->slot * slot_rows * KV, *vs = vc + q->slot * slot_rows * KV;
            if (nseq > 1) {
                o->copy(o, ks + (size_t)q->pos * KV, s->kb + (size_t)row * KV, sizeof(float) * (size_t)q->n * KV);
                o->copy(o, vs + (size_t)q->pos * KV, s->vb + (size_t)row * KV, sizeof(float) * (size_t)q->n * KV);
            }
            o->attention(o, s->att + (size_t)row * HD, s->q + (size_t)row * HD, ks, vs, q->n, q->pos, H, Hkv, D);
        }
        linear(s, s->xb2, s->att, &w->wo, seqs, nseq, l, 3, N);
        o->add(o, s->x, s->xb2, N * C);
        // MLP block: x += down(silu(gate xn) * up xn)
        o->rmsnorm(o, s->xb, s->x, s->norms[2 * l + 1], N, C, c->norm_eps);
        linear(s, s->hb, s->xb, &w->w_gate, seqs, nseq, l, 4, N);
        linear(s, s->hb2, s->xb, &w->w_up, seqs, nseq, l, 5, N);
        o->swiglu(o, s->hb, s->hb, s->hb2, N * F);
        linear(s, s->xb2, s->hb, &w->w_down, seqs, nseq, l, 6, N);
        o->add(o, s->x, s->xb2, N * C);
    }
    // The rows whose logits are wanted: all, or each sequence's last (gathered into xb2).
    int n_out = N;
    const float *xl = s->x;
    if (!all_logits) {
        n_out = nseq;
        if (nseq == 1) {
            xl = s->x + (size_t)(N - 1) * C;
        } else {
            for (int i = 0, row = 0; i < nseq; i++) {
                row += seqs[i].n;
                o->copy(o, s->xb2 + (size_t)i * C, s->x + (size_t)(row - 1) * C, sizeof(float) * (size_t)C);
            }
            xl = s->xb2;
        }
    }
    o->rmsnorm(o, s->xb, xl, s->norms[2 * c->n_layers], n_out, C, c->norm_eps);
    o->matmul(o, s->logits, s->xb, &s->m->lm_head, n_out);
    o->to_host(o, logits, s->logits, sizeof(float) * (size_t)n_out * V);
    return QL_OK;
}
