// lora.c: see lora.h.
#include "lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/safetensors.h"
#include "../common/rng.h"

const char *const LORA_MODULE_NAMES[LORA_NMODULES] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                      "gate_proj", "up_proj", "down_proj"};
const char *const LORA_MODULE_PARENTS[LORA_NMODULES] = {"self_attn", "self_attn", "self_attn", "self_attn",
                                                        "mlp", "mlp", "mlp"};

void lora_module_shape(const model_config *c, int k, int *in, int *out) {
    int C = c->dim, F = c->hidden_dim, HD = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    static const int which_in[LORA_NMODULES] = {0, 0, 0, 1, 0, 0, 2};  // 0: C, 1: H*D, 2: F
    static const int which_out[LORA_NMODULES] = {1, 3, 3, 0, 2, 2, 0}; // 0: C, 1: H*D, 2: F, 3: Hkv*D
    int dims[4] = {C, HD, F, KV};
    *in = dims[which_in[k]];
    *out = dims[which_out[k]];
}

float lora_scaling(int rank, float alpha, int use_rslora) {
    return use_rslora ? alpha / sqrtf((float)rank) : alpha / (float)rank;
}

uint64_t lora_next_serial(void) {
    static uint64_t last;
    return __atomic_add_fetch(&last, 1, __ATOMIC_RELAXED);
}

int lora_init(lora_adapter *a, const model_config *c, int rank, float alpha, int use_rslora, float dropout,
              unsigned targets, uint64_t seed) {
    memset(a, 0, sizeof *a);
    if (rank < 1 || rank > 4096) return ql_err(QL_EINVAL, "--rank: expected 1..4096, found %d", rank);
    if (!(alpha > 0)) return ql_err(QL_EINVAL, "--alpha: expected a positive number, found %g", alpha);
    if (!(dropout >= 0 && dropout < 1)) return ql_err(QL_EINVAL, "--dropout: expected [0, 1), found %g", dropout);
    if (!targets || (targets & ~(unsigned)LORA_ALL)) return ql_err(QL_EINVAL, "--targets: no valid module selected");
    a->rank = rank, a->alpha = alpha, a->use_rslora = use_rslora, a->dropout = dropout, a->targets = targets;
    a->n_layers = c->n_layers;
    a->scaling = lora_scaling(rank, alpha, use_rslora);
    a->serial = lora_next_serial();
    a->w = calloc((size_t)c->n_layers * LORA_NMODULES, sizeof(lora_pair));
    if (!a->w) return ql_err(QL_ENOMEM, "out of memory");
    uint64_t s = seed;
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < LORA_NMODULES; k++) {
            lora_pair *p = &a->w[l * LORA_NMODULES + k];
            lora_module_shape(c, k, &p->in, &p->out);
            if (!(targets & (1u << k))) continue;
            p->A = malloc(sizeof(float) * (size_t)rank * p->in);
            p->B = calloc((size_t)p->out * rank, sizeof(float));
            if (!p->A || !p->B) { lora_free(a); return ql_err(QL_ENOMEM, "out of memory"); }
            // kaiming_uniform_(a=sqrt(5)) on (R, in): gain sqrt(2/(1+5)), bound gain*sqrt(3/in) = 1/sqrt(in)
            float bound = 1.0f / sqrtf((float)p->in);
            for (int64_t i = 0; i < (int64_t)rank * p->in; i++)
                p->A[i] = bound * (float)((double)(rng_next(&s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
        }
    return QL_OK;
}

void lora_free(lora_adapter *a) {
    if (a->w)
        for (int i = 0; i < a->n_layers * LORA_NMODULES; i++) free(a->w[i].A), free(a->w[i].B);
    free(a->w);
    free(a->base_model);
    if (a->res_file) st_close(a->res_file);
    free(a->res_file);
    free(a->res_mem);
    memset(a, 0, sizeof *a);
}

size_t lora_pair_bytes(const lora_pair *p, int R) {
    size_t na = (size_t)R * p->in, nb = (size_t)p->out * R;
    if (p->A) return sizeof(float) * (na + nb);
    if (p->rA) return dtype_size(p->tA) * na + dtype_size(p->tB) * nb;
    return 0;
}

int lora_make_resident(lora_adapter *a, dtype t) {
    if (t != DT_F16 && t != DT_BF16) return ql_err(QL_EINVAL, "lora_make_resident: expected F16 or BF16");
    if (a->res_file || a->res_mem) return ql_err(QL_EINVAL, "lora_make_resident: the adapter is resident already");
    size_t total = 0;
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++)
        if (a->w[i].A) total += (size_t)a->rank * (a->w[i].in + a->w[i].out);
    uint16_t *h = malloc(sizeof *h * (total ? total : 1));
    if (!h) return ql_err(QL_ENOMEM, "out of memory for a resident adapter (%zu MB)", total * 2 >> 20);
    size_t off = 0;
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++) {
        lora_pair *p = &a->w[i];
        if (!p->A) continue;
        size_t na = (size_t)a->rank * p->in, nb = (size_t)p->out * a->rank;
        for (size_t e = 0; e < na; e++) h[off + e] = t == DT_F16 ? f32_to_f16(p->A[e]) : f32_to_bf16(p->A[e]);
        for (size_t e = 0; e < nb; e++) h[off + na + e] = t == DT_F16 ? f32_to_f16(p->B[e]) : f32_to_bf16(p->B[e]);
        p->rA = h + off, p->rB = h + off + na, p->tA = p->tB = t;
        free(p->A), free(p->B);
        p->A = p->B = NULL;
        off += na + nb;
    }
    a->res_mem = h;
    return QL_OK;
}

int lora_targets_parse(unsigned *out, const char *csv) {
    *out = 0;
    if (!strcmp(csv, "all")) { *out = LORA_ALL; return QL_OK; }
    const char *p = csv;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = -1;
        for (int k = 0; k < LORA_NMODULES; k++) {
            const char *m = LORA_MODULE_NAMES[k];
            size_t short_len = strchr(m, '_') ? (size_t)(strchr(m, '_') - m) : strlen(m);
            if ((n == strlen(m) && !strncmp(p, m, n)) || (n == short_len && !strncmp(p, m, n))) found = k;
        }
        if (found < 0)
            return ql_err(QL_EINVAL, "--targets: unknown module '%.*s' (expected all, or a list of q_proj, k_proj, v_proj, "
                          "o_proj, gate_proj, up_proj, down_proj)", (int)n, p);
        *out |= 1u << found;
        p += n;
        if (*p == ',') p++;
    }
    if (!*out) return ql_err(QL_EINVAL, "--targets: empty list");
    return QL_OK;
}
