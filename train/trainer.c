// trainer.c: see trainer.h. The block's forward mirrors common/forward.c, over
// a packed micro-batch and keeping what the backward pass needs.
#include "trainer.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../model/forward.h"
#include "plan.h"

train_dims train_dims_of(const model_config *c, int B, int T, int rank) {
    train_dims d = {.N = (size_t)B * (size_t)T, .C = (size_t)c->dim, .F = (size_t)c->hidden_dim,
                    .H = (size_t)c->n_heads, .HD = (size_t)c->n_heads * c->head_dim,
                    .KV = (size_t)c->n_kv_heads * c->head_dim, .V = (size_t)c->vocab_size, .R = (size_t)rank};
    d.WIDE = d.F > d.HD ? d.F : d.HD;
    if (d.WIDE < d.C) d.WIDE = d.C;
    return d;
}

// nfloats fp32 in backend memory (at least one: alloc(0) is no request), counted.
static float *balloc(trainer *t, size_t nfloats, int *rc) {
    size_t bytes = plan_buffer_bytes(nfloats);
    float *p = t->o->alloc(t->o, bytes);
    if (p) t->backend_bytes += bytes;
    if (!p && *rc == QL_OK) *rc = ql_err(QL_ENOMEM, "out of %s memory for training (%zu floats)", t->o->name, nfloats);
    return p;
}

static int acts_alloc(trainer *t, block_acts *b, int with_input, const train_dims *d) {
    int rc = QL_OK;
    if (with_input) b->x_in = balloc(t, d->N * d->C, &rc);
#define X(field, floats) b->field = balloc(t, floats, &rc);
    BLOCK_ACTS(X, *d)
#undef X
    for (int k = 0; k < LORA_NMODULES; k++) {
        const lora_pair *p = &t->a->w[k];  // every layer targets the same modules
        if (!p->A) continue;
        b->xa[k] = balloc(t, d->N * d->R, &rc);
        if (t->a->dropout > 0) b->xdrop[k] = balloc(t, d->N * (size_t)p->in, &rc);
    }
    return rc;
}

static void acts_free(trainer *t, block_acts *b) {
    ops *o = t->o;
    o->free(o, b->x_in);
#define X(field, floats) o->free(o, b->field);
    BLOCK_ACTS(X, _)
#undef X
    for (int k = 0; k < LORA_NMODULES; k++) o->free(o, b->xa[k]), o->free(o, b->xdrop[k]);
}

// The modules the trainer allocates for: those of layer 0 (every layer targets the same).
static unsigned trained_modules(const lora_adapter *a) {
    unsigned m = 0;
    for (int k = 0; k < LORA_NMODULES; k++)
        if (a->w[k].A) m |= 1u << k;
    return m;
}

int trainer_init(trainer *t, model *m, ops *o, lora_adapter *a, int B, int T, int grad_checkpoint) {
    memset(t, 0, sizeof *t);
    const model_config *c = &m->cfg;
    if (!o->attention_train || !o->lora_backward || !o->dropout || !o->adamw)
        return ql_err(QL_EUNSUP, "the %s backend cannot train yet (no backward ops)", o->name);
    if (B < 1 || T < 2) return ql_err(QL_EINVAL, "training batch %d x %d: expected B >= 1 and T >= 2", B, T);
    if ((int64_t)B * T > INT_MAX)
        return ql_err(QL_EINVAL, "training batch %d x %d: more than %d tokens", B, T, INT_MAX);
    t->m = m, t->o = o, t->a = a, t->B = B, t->T = T, t->N = B * T, t->checkpoint = grad_checkpoint;
    int L = c->n_layers, rc = QL_OK;
    const train_dims d = train_dims_of(c, B, T, a->rank);
    size_t N = d.N;
    if ((rc = model_upload(m, o, &t->norms))) return rc;
    int nacts = grad_checkpoint ? 1 : L;
    t->acts = calloc((size_t)nacts, sizeof(block_acts));
    t->x_saved = calloc((size_t)L + 1, sizeof(float *));
    t->dA = calloc((size_t)L * LORA_NMODULES, sizeof(float *));
    t->dB = calloc((size_t)L * LORA_NMODULES, sizeof(float *));
    t->w = calloc((size_t)L * LORA_NMODULES, sizeof(lora_pair));
    t->inv_freq = malloc(sizeof(float) * (size_t)(c->head_dim / 2));
    t->pos = malloc(sizeof(int) * N), t->seg_start = malloc(sizeof(int) * N), t->targets = malloc(sizeof(int) * N);
    if (!t->acts || !t->x_saved || !t->dA || !t->dB || !t->w || !t->inv_freq || !t->pos || !t->seg_start || !t->targets) {
        trainer_free(t);
        return ql_err(QL_ENOMEM, "out of memory");
    }
    config_rope_inv_freq(c, t->inv_freq);
    for (int i = 0; i < nacts && !rc; i++) rc = acts_alloc(t, &t->acts[i], !grad_checkpoint, &d);
    for (int l = 0; l <= L && !rc && grad_checkpoint; l++) t->x_saved[l] = balloc(t, d.N * d.C, &rc);
#define X(field, floats, part) t->field = balloc(t, floats, &rc);
    TRAINER_BUFS(X, d)
#undef X
    for (int i = 0; i < L * LORA_NMODULES; i++)
        if (a->w[i].A) t->n_params += (int64_t)a->rank * (a->w[i].in + a->w[i].out);
    size_t np = (size_t)t->n_params;
    t->params = balloc(t, np, &rc), t->grads = balloc(t, np, &rc);
    t->adam_m = balloc(t, np, &rc), t->adam_v = balloc(t, np, &rc);
    if (rc) { trainer_free(t); return rc; }
    // the memory plan of a run (qlora train --plan, and the check before a run) is
    // what was just allocated, to the byte
    QL_ASSERT(t->backend_bytes == plan_trainer_bytes(c, B, T, a->rank, trained_modules(a), a->dropout, grad_checkpoint));
    int64_t off = 0;
    for (int i = 0; i < L * LORA_NMODULES; i++) {
        const lora_pair *p = &a->w[i];
        t->w[i] = (lora_pair){NULL, NULL, p->in, p->out};
        if (!p->A) continue;
        t->w[i].A = t->params + off, t->dA[i] = t->grads + off, off += (int64_t)a->rank * p->in;
        t->w[i].B = t->params + off, t->dB[i] = t->grads + off, off += (int64_t)p->out * a->rank;
    }
    trainer_push(t);  // gradients and moments start at zero: alloc zeroes
    return rc;
}

void trainer_free(trainer *t) {
    if (!t->o) return;
    ops *o = t->o;
    const model_config *c = &t->m->cfg;
    int L = c->n_layers, nacts = t->checkpoint ? 1 : L;
    for (int i = 0; t->acts && i < nacts; i++) acts_free(t, &t->acts[i]);
    for (int l = 0; t->x_saved && l <= L; l++) o->free(o, t->x_saved[l]);
    float *p[] = {t->params, t->grads, t->adam_m, t->adam_v};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) o->free(o, p[i]);
#define X(field, floats, part) o->free(o, t->field);
    TRAINER_BUFS(X, _)
#undef X
    model_release(t->m, o, &t->norms);
    free(t->acts), free(t->x_saved), free(t->dA), free(t->dB), free(t->w), free(t->inv_freq);
    free(t->pos), free(t->seg_start), free(t->targets);
    memset(t, 0, sizeof *t);
}


// Zero n floats of backend memory.
static void zero(trainer *t, float *p, size_t n) { t->o->zero(t->o, p, n * sizeof(float)); }

static uint64_t module_key(uint64_t key, int l, int k) {
    return key ^ (0xD1B54A32D192ED03ULL * (uint64_t)(l * LORA_NMODULES + k + 1));
}

// y (N,out) = x W^T + the adapter's term of module k
static void lin_fwd(trainer *t, block_acts *b, int l, int k, float *y, const float *x, const qweight *w,
                    uint64_t key) {
    ops *o = t->o;
    o->matmul(o, y, x, w, t->N);
    const lora_pair *p = &t->w[l * LORA_NMODULES + k];
    if (!p->A) return;
    const float *xin = x;
    if (t->a->dropout > 0) {
        o->dropout(o, b->xdrop[k], x, (int64_t)t->N * p->in, t->a->dropout, module_key(key, l, k));
        xin = b->xdrop[k];
    }
    o->lora_forward(o, y, b->xa[k], xin, p->A, p->B, t->N, p->in, p->out, t->a->rank, t->a->scaling);
}

// dx (N,in) (+)= dy W + the adapter's part; the adapter's gradients accumulate
static void lin_bwd(trainer *t, block_acts *b, int l, int k, float *dx, int accumulate, const float *dy,
                    const float *x, const qweight *w, uint64_t key) {
    ops *o = t->o;
    o->matmul_backward_input(o, dx, dy, w, t->N, accumulate);
    int i = l * LORA_NMODULES + k;
    const lora_pair *p = &t->w[i];
    if (!p->A) return;
    if (t->a->dropout > 0) {
        // gradient of the dropped-out input, then through the same mask
        float *g = t->tmp;
        zero(t, g, (size_t)t->N * p->in);
        o->lora_backward(o, t->dA[i], t->dB[i], g, t->dxa, dy, b->xdrop[k], b->xa[k], p->A, p->B, t->N, p->in,
                         p->out, t->a->rank, t->a->scaling);
        o->dropout(o, g, g, (int64_t)t->N * p->in, t->a->dropout, module_key(key, l, k));
        o->add(o, dx, g, t->N * p->in);
    } else {
        o->lora_backward(o, t->dA[i], t->dB[i], dx, t->dxa, dy, x, b->xa[k], p->A, p->B, t->N, p->in, p->out,
                         t->a->rank, t->a->scaling);
    }
}

void trainer_zero_grads(trainer *t) { zero(t, t->grads, (size_t)t->n_params); }

// One block forward: x (N,C) -> out (N,C), keeping its activations in b.
static void block_fwd(trainer *t, block_acts *b, int l, const float *x, float *out, uint64_t key) {
    ops *o = t->o;
    const model_config *c = &t->m->cfg;
    const layer_weights *w = &t->m->layers[l];
    int N = t->N, C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim;
    // attention: x_mid = x + wo(attn(rope(q), rope(k), v)), q/k/v from rmsnorm(x)
    o->rmsnorm(o, b->xn1, x, t->norms[2 * l], N, C, c->norm_eps);
    lin_fwd(t, b, l, 0, b->q, b->xn1, &w->wq, key);
    lin_fwd(t, b, l, 1, b->k, b->xn1, &w->wk, key);
    lin_fwd(t, b, l, 2, b->v, b->xn1, &w->wv, key);
    o->rope(o, b->q, t->pos, N, H, D, t->inv_freq);
    o->rope(o, b->k, t->pos, N, Hkv, D, t->inv_freq);
    o->attention_train(o, b->att, b->lse, b->q, b->k, b->v, t->seg_start, N, H, Hkv, D);
    lin_fwd(t, b, l, 3, b->x_mid, b->att, &w->wo, key);
    o->add(o, b->x_mid, x, N * C);
    // MLP: out = x_mid + down(silu(gate) * up), gate/up from rmsnorm(x_mid)
    o->rmsnorm(o, b->xn2, b->x_mid, t->norms[2 * l + 1], N, C, c->norm_eps);
    lin_fwd(t, b, l, 4, b->gate, b->xn2, &w->w_gate, key);
    lin_fwd(t, b, l, 5, b->up, b->xn2, &w->w_up, key);
    o->swiglu(o, b->hact, b->gate, b->up, N * F);
    lin_fwd(t, b, l, 6, out, b->hact, &w->w_down, key);
    o->add(o, out, b->x_mid, N * C);
}

// One block backward: on entry t->dx is d(out); on return d(x). x is the block's input.
static void block_bwd(trainer *t, block_acts *b, int l, const float *x, uint64_t key) {
    ops *o = t->o;
    const model_config *c = &t->m->cfg;
    const layer_weights *w = &t->m->layers[l];
    int N = t->N, C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim;
    // MLP branch; the residual passes dx through unchanged, so dx becomes d(x_mid)
    lin_bwd(t, b, l, 6, t->dh, 0, t->dx, b->hact, &w->w_down, key);
    o->swiglu_backward(o, t->dgate, t->dup, t->dh, b->gate, b->up, N * F);
    lin_bwd(t, b, l, 4, t->dxn, 0, t->dgate, b->xn2, &w->w_gate, key);
    lin_bwd(t, b, l, 5, t->dxn, 1, t->dup, b->xn2, &w->w_up, key);
    o->rmsnorm_backward(o, t->dx, NULL, t->dxn, b->x_mid, t->norms[2 * l + 1], N, C, c->norm_eps);
    // attention branch; dx becomes d(x)
    lin_bwd(t, b, l, 3, t->datt, 0, t->dx, b->att, &w->wo, key);
    o->attention_backward(o, t->dq, t->dk, t->dv, t->datt, b->q, b->k, b->v, b->att, b->lse, t->seg_start, N, H,
                          Hkv, D);
    o->rope_backward(o, t->dq, t->pos, N, H, D, t->inv_freq);
    o->rope_backward(o, t->dk, t->pos, N, Hkv, D, t->inv_freq);
    lin_bwd(t, b, l, 0, t->dxn, 0, t->dq, b->xn1, &w->wq, key);
    lin_bwd(t, b, l, 1, t->dxn, 1, t->dk, b->xn1, &w->wk, key);
    lin_bwd(t, b, l, 2, t->dxn, 1, t->dv, b->xn1, &w->wv, key);
    o->rmsnorm_backward(o, t->dx, NULL, t->dxn, x, t->norms[2 * l], N, C, c->norm_eps);
}

// Block l's input buffer.
static float *block_input(trainer *t, int l) {
    if (t->checkpoint) return t->x_saved[l];
    return l < t->m->cfg.n_layers ? t->acts[l].x_in : t->x_final;
}

static void set_batch(trainer *t, const int *targets, const int *pos, const int *seg) {
    for (int n = 0; n < t->N; n++) {
        int row_start = n % t->T == 0;
        t->pos[n] = seg[n] < 0 ? 0 : pos[n];
        t->seg_start[n] = (row_start || seg[n] < 0 || seg[n] != seg[n - 1]) ? n : t->seg_start[n - 1];
        t->targets[n] = targets[n];
    }
}

// Forward through every block and the head; the loss per token goes to t->loss_tok.
static int forward_all(trainer *t, const int *tokens, uint64_t key, float scale, int want_grad) {
    ops *o = t->o;
    const model_config *c = &t->m->cfg;
    int L = c->n_layers, N = t->N;
    for (int n = 0; n < N; n++)
        if (tokens[n] < 0 || tokens[n] >= c->vocab_size)
            return ql_err(QL_EINVAL, "training batch: token id %d outside the vocabulary [0, %d)", tokens[n],
                          c->vocab_size);
    o->embed(o, block_input(t, 0), &t->m->embed, tokens, N);
    for (int l = 0; l < L; l++) {
        block_acts *b = t->checkpoint ? &t->acts[0] : &t->acts[l];
        block_fwd(t, b, l, block_input(t, l), block_input(t, l + 1), key);
    }
    float *xf = block_input(t, L);
    o->rmsnorm(o, t->xn_final, xf, t->norms[2 * L], N, c->dim,
               c->norm_eps);
    o->matmul(o, t->logits, t->xn_final, &t->m->lm_head, N);
    o->cross_entropy(o, t->loss_tok, want_grad ? t->logits : NULL, t->logits, t->targets, N, c->vocab_size, scale);
    return QL_OK;
}

static void sum_loss(trainer *t, double *nll_sum, long *n_trained) {
    float *l = malloc(sizeof(float) * (size_t)t->N);
    QL_ASSERT(l);
    t->o->to_host(t->o, l, t->loss_tok, sizeof(float) * (size_t)t->N);
    double s = 0;
    long n = 0;
    for (int i = 0; i < t->N; i++)
        if (t->targets[i] >= 0) s += l[i], n++;
    free(l);
    *nll_sum = s;
    *n_trained = n;
}

int trainer_step(trainer *t, const int *tokens, const int *targets, const int *pos, const int *seg, float scale,
                 uint64_t dropout_key, double *nll_sum, long *n_trained) {
    ops *o = t->o;
    const model_config *c = &t->m->cfg;
    int L = c->n_layers, N = t->N, C = c->dim;
    set_batch(t, targets, pos, seg);
    QL_CHECK(forward_all(t, tokens, dropout_key, scale, 1));
    sum_loss(t, nll_sum, n_trained);
    // head: logits now hold dlogits; dxn_final = dlogits @ lm_head; dx = rmsnorm backward
    o->matmul_backward_input(o, t->dxn, t->logits, &t->m->lm_head, N, 0);
    zero(t, t->dx, (size_t)N * C);
    o->rmsnorm_backward(o, t->dx, NULL, t->dxn, block_input(t, L),
                        t->norms[2 * L], N, C, c->norm_eps);
    for (int l = L - 1; l >= 0; l--) {
        block_acts *b = t->checkpoint ? &t->acts[0] : &t->acts[l];
        // recompute this block's activations from its saved input (scratch output)
        if (t->checkpoint) block_fwd(t, b, l, block_input(t, l), t->dmid, dropout_key);
        block_bwd(t, b, l, block_input(t, l), dropout_key);
    }
    return QL_OK;
}

int trainer_eval(trainer *t, const int *tokens, const int *targets, const int *pos, const int *seg, double *nll_sum,
                 long *n_trained) {
    set_batch(t, targets, pos, seg);
    lora_adapter *a = t->a;
    float p = a->dropout;
    a->dropout = 0;  // no dropout when evaluating
    int rc = forward_all(t, tokens, 0, 0.0f, 0);
    a->dropout = p;
    if (!rc) sum_loss(t, nll_sum, n_trained);
    return rc;
}

// Copies between the host adapter's pairs and one flat host or backend array.
static void pairs_copy(trainer *t, float *flat, int to_flat, int on_backend) {
    const lora_adapter *a = t->a;
    int64_t off = 0;
    for (int i = 0; i < t->m->cfg.n_layers * LORA_NMODULES; i++) {
        lora_pair *p = &a->w[i];
        if (!p->A) continue;
        float *h[2] = {p->A, p->B};
        size_t n[2] = {(size_t)a->rank * p->in, (size_t)p->out * a->rank};
        for (int j = 0; j < 2; off += (int64_t)n[j], j++) {
            size_t bytes = sizeof(float) * n[j];
            if (on_backend && to_flat) t->o->to_device(t->o, flat + off, h[j], bytes);
            else if (on_backend) t->o->to_host(t->o, h[j], flat + off, bytes);
            else if (to_flat) memcpy(flat + off, h[j], bytes);
            else memcpy(h[j], flat + off, bytes);
        }
    }
}

void trainer_push(trainer *t) { pairs_copy(t, t->params, 1, 1); }
void trainer_pull(trainer *t) { pairs_copy(t, t->params, 0, 1); }

void trainer_get_state(trainer *t, float *w, float *m, float *v) {
    size_t bytes = sizeof(float) * (size_t)t->n_params;
    t->o->to_host(t->o, w, t->params, bytes);
    t->o->to_host(t->o, m, t->adam_m, bytes);
    t->o->to_host(t->o, v, t->adam_v, bytes);
}

void trainer_set_state(trainer *t, const float *w, const float *m, const float *v) {
    size_t bytes = sizeof(float) * (size_t)t->n_params;
    t->o->to_device(t->o, t->params, w, bytes);
    t->o->to_device(t->o, t->adam_m, m, bytes);
    t->o->to_device(t->o, t->adam_v, v, bytes);
    pairs_copy(t, (float *)w, 0, 0);
}

double train_update(trainer *t, const adamw_config *c, int step, float lr) {
    ops *o = t->o;
    double norm = sqrt(o->sumsq(o, t->grads, t->n_params));
    float clip = 1.0f;
    if (c->max_grad_norm > 0 && norm + 1e-6 > c->max_grad_norm) clip = (float)(c->max_grad_norm / (norm + 1e-6));
    adamw_args args = {.lr = lr, .beta1 = c->beta1, .beta2 = c->beta2, .eps = c->eps, .weight_decay = c->weight_decay,
                       .step = step, .clip = clip};
    o->adamw(o, t->params, t->grads, t->adam_m, t->adam_v, t->n_params, &args);
    return norm;
}
