// llama_gguf.c: see llama_gguf.h. Facts from llama.cpp (ggml-org/llama.cpp at
// 34af94cd9, via the unslothai/llama.cpp snapshot): tensor names in
// gguf-py/gguf/constants.py (MODEL_TENSOR names "token_embd", "blk.{bid}.attn_q",
// ...), the q/k row permutation in conversion/llama.py (LlamaModel.permute), the
// adapter keys and the check of lora_a/lora_b shapes in src/llama-adapter.cpp,
// where the scale is alpha / rank with rank = lora_a's ne[1].
#include "llama_gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/log.h"
#include "gguf.h"
#include "gguf_quant.h"

const char *const GGUF_MODULE_NAMES[LORA_NMODULES] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                      "ffn_gate", "ffn_up", "ffn_down"};

void gguf_rope_permute(float *dst, const float *src, int rows, int cols, int n_head) {
    int hd = rows / n_head, half = hd / 2;
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(dst + (size_t)(h * hd + 2 * i + j) * cols, src + (size_t)(h * hd + j * half + i) * cols,
                       sizeof(float) * (size_t)cols);
}

// Architecture keys shared by the base and the adapter.
static int put_arch(gguf_out *g, const char *type) {
    QL_CHECK(gguf_kv_str(g, "general.architecture", "llama"));
    return gguf_kv_str(g, "general.type", type);
}

// ---- the base ----

typedef struct {
    const model *m;
    const qweight **w;   // per tensor: the weight, or NULL for a norm
    const float **norm;  // per tensor: the norm vector
    int *perm;           // per tensor: heads to permute by (q, k), else 0
} base_src;

// Llama 3's Split regex as tokenizer.json writes it (llama.cpp's LLAMA_VOCAB_PRE_TYPE_LLAMA3, "llama-bpe").
static const char *const LLAMA3_SPLIT =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static int fill_base(void *ctx, int i, float *dst) {
    base_src *b = ctx;
    if (!b->w[i]) {
        memcpy(dst, b->norm[i], sizeof(float) * (size_t)b->m->cfg.dim);
        return QL_OK;
    }
    const qweight *w = b->w[i];
    if (!b->perm[i]) {
        qweight_rows_f32(w, 0, w->rows, dst);
        return QL_OK;
    }
    float *tmp = malloc(sizeof(float) * (size_t)(w->rows * w->cols));
    if (!tmp) return ql_err(QL_ENOMEM, "out of memory");
    qweight_rows_f32(w, 0, w->rows, tmp);
    gguf_rope_permute(dst, tmp, (int)w->rows, (int)w->cols, b->perm[i]);
    free(tmp);
    return QL_OK;
}

// general.file_type: llama.h's llama_ftype (ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2,
// MOSTLY_Q8_0 7, MOSTLY_BF16 32), "mostly": norms stay F32.
static uint32_t file_type(int type) {
    return type == GGML_F32 ? 0 : type == GGML_F16 ? 1 : type == GGML_Q4_0 ? 2 : type == GGML_Q8_0 ? 7 : 32;
}

// A matrix's type in the file: type, or F16 for a quantized type the rows do not
// fit (as llama-quantize's tensor_type_fallback ends for a shape no block fits).
static int matrix_type(int type, const char *name, int64_t cols) {
    if ((type != GGML_Q8_0 && type != GGML_Q4_0) || cols % GGUF_QK == 0) return type;
    log_info("%s: rows of %lld values, not a multiple of %d: written as F16, not %s", name, (long long)cols, GGUF_QK,
             gguf_type_name(type));
    return GGML_F16;
}

int gguf_write_base(const model *m, const tokenizer *tok, int type, const char *path) {
    const model_config *c = &m->cfg;
    if (type != GGML_F32 && type != GGML_F16 && type != GGML_BF16 && type != GGML_Q8_0 && type != GGML_Q4_0)
        return ql_err(QL_EINVAL, "%s: a GGUF base is written in F32, F16, BF16, Q8_0 or Q4_0, not ggml type %d", path, type);
    int V = c->vocab_size, nv = tok_vocab_size(tok);
    gguf_out g;
    gguf_init(&g);
    int rc = put_arch(&g, "model");
    char name[64];
    if (!rc) rc = gguf_kv_str(&g, "general.name", "qlora export");
    if (!rc) rc = gguf_kv_u32(&g, "general.file_type", file_type(type));
    if (!rc) rc = gguf_kv_u32(&g, "llama.context_length", (uint32_t)c->max_pos);
    if (!rc) rc = gguf_kv_u32(&g, "llama.embedding_length", (uint32_t)c->dim);
    if (!rc) rc = gguf_kv_u32(&g, "llama.block_count", (uint32_t)c->n_layers);
    if (!rc) rc = gguf_kv_u32(&g, "llama.feed_forward_length", (uint32_t)c->hidden_dim);
    if (!rc) rc = gguf_kv_u32(&g, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    if (!rc) rc = gguf_kv_u32(&g, "llama.attention.head_count", (uint32_t)c->n_heads);
    if (!rc) rc = gguf_kv_u32(&g, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    if (!rc) rc = gguf_kv_u32(&g, "llama.attention.key_length", (uint32_t)c->head_dim);
    if (!rc) rc = gguf_kv_u32(&g, "llama.attention.value_length", (uint32_t)c->head_dim);
    if (!rc) rc = gguf_kv_f32(&g, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    if (!rc) rc = gguf_kv_f32(&g, "llama.rope.freq_base", c->rope_theta);
    if (!rc) rc = gguf_kv_u32(&g, "llama.vocab_size", (uint32_t)V);
    // the tokenizer: SentencePiece pieces, scores and kinds; ids past the
    // tokenizer's pieces (a padded vocabulary) are unused placeholders
    const char **pieces = malloc(sizeof(char *) * (size_t)V);
    char **made = calloc((size_t)V, sizeof(char *));
    float *scores = malloc(sizeof(float) * (size_t)V);
    int32_t *kinds = malloc(sizeof(int32_t) * (size_t)V);
    if (!rc && (!pieces || !made || !scores || !kinds)) rc = ql_err(QL_ENOMEM, "out of memory");
    for (int i = 0; i < V && !rc; i++) {
        if (i < nv && tok_piece(tok, i)) {
            pieces[i] = tok_piece(tok, i), scores[i] = tok_piece_score(tok, i), kinds[i] = tok_piece_kind(tok, i);
        } else if (i < nv && tok_kind_of(tok) != TOK_BPE) {
            rc = ql_err(QL_EFORMAT, "the tokenizer has no piece for id %d", i);
        } else {  // past the tokenizer's ids, or a hole in a BPE vocabulary: llama.cpp's converter writes [PADi], unused
            snprintf(name, sizeof name, "[PAD%d]", i);
            if (!(made[i] = strdup(name))) rc = ql_err(QL_ENOMEM, "out of memory");
            pieces[i] = made[i], scores[i] = 0, kinds[i] = 5;
        }
    }
    int bpe = tok_kind_of(tok) == TOK_BPE;
    const char *pre = NULL;
    if (bpe) {  // llama.cpp knows a BPE pre-tokenizer by name; we name only the one we can prove
        const char *re = tok_split_pattern(tok, 0);
        if (re && !strcmp(re, LLAMA3_SPLIT) && !tok_split_pattern(tok, 1)) pre = "llama-bpe";
        else if (!rc)
            rc = ql_err(QL_EUNSUP, "GGUF: this BPE tokenizer's pre-tokenizer is not Llama 3's, the only one qlora "
                        "names for llama.cpp (tokenizer.ggml.pre)");
    }
    if (!rc) rc = gguf_kv_str(&g, "tokenizer.ggml.model", bpe ? "gpt2" : "llama");
    if (!rc && bpe) rc = gguf_kv_str(&g, "tokenizer.ggml.pre", pre);
    if (!rc) rc = gguf_kv_strs(&g, "tokenizer.ggml.tokens", pieces, V);
    if (!rc && !bpe) rc = gguf_kv_f32s(&g, "tokenizer.ggml.scores", scores, V);
    if (!rc) rc = gguf_kv_i32s(&g, "tokenizer.ggml.token_type", kinds, V);
    if (!rc && bpe) {
        char **merges = NULL;
        int nm = 0;
        rc = tok_merges(tok, &merges, &nm);
        if (!rc) rc = gguf_kv_strs(&g, "tokenizer.ggml.merges", (const char *const *)merges, nm);
        for (int i = 0; i < nm; i++) free(merges[i]);
        free(merges);
    }
    int bos = c->bos_id >= 0 ? c->bos_id : tok_bos_id(tok), eos = c->eos_id >= 0 ? c->eos_id : tok_eos_id(tok);
    if (!rc && bos >= 0) rc = gguf_kv_u32(&g, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (!rc && eos >= 0) rc = gguf_kv_u32(&g, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (!rc && tok_unk_id(tok) >= 0) rc = gguf_kv_u32(&g, "tokenizer.ggml.unknown_token_id", (uint32_t)tok_unk_id(tok));
    if (!rc) rc = gguf_kv_bool(&g, "tokenizer.ggml.add_bos_token", c->add_bos);
    if (!rc) rc = gguf_kv_bool(&g, "tokenizer.ggml.add_eos_token", 0);
    // tensors, in llama.cpp's order
    int nt = 3 + 9 * c->n_layers;  // with rope_freqs: 1 more, not a fill_base tensor
    base_src b = {m, calloc((size_t)nt, sizeof(qweight *)), calloc((size_t)nt, sizeof(float *)),
                  calloc((size_t)nt, sizeof(int))};
    if (!rc && (!b.w || !b.norm || !b.perm)) rc = ql_err(QL_ENOMEM, "out of memory");
    int k = 0;
    int64_t ne[2];
    float *rope_freqs = NULL;
#define MAT(nm, wt, heads)                                                       \
    do {                                                                         \
        b.w[k] = (wt), b.perm[k] = (heads);                                      \
        ne[0] = (wt)->cols, ne[1] = (wt)->rows;                                  \
        if (!rc) rc = gguf_tensor(&g, nm, 2, ne, matrix_type(type, nm, ne[0]), NULL, fill_base, &b); \
        k++;                                                                     \
    } while (0)
#define VEC(nm, v)                                                                      \
    do {                                                                                \
        b.norm[k] = (v);                                                                \
        ne[0] = c->dim;                                                                 \
        if (!rc) rc = gguf_tensor(&g, nm, 1, ne, GGML_F32, NULL, fill_base, &b);        \
        k++;                                                                            \
    } while (0)
    MAT("token_embd.weight", &m->embed, 0);
    VEC("output_norm.weight", m->final_norm);
    if (!c->tie_embeddings) MAT("output.weight", &m->lm_head, 0);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        const layer_weights *lw = &m->layers[l];
        const qweight *lin[LORA_NMODULES] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w_gate, &lw->w_up, &lw->w_down};
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        VEC(name, lw->attn_norm);
        for (int j = 0; j < LORA_NMODULES; j++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, GGUF_MODULE_NAMES[j]);
            MAT(name, lin[j], j == 0 ? c->n_heads : j == 1 ? c->n_kv_heads : 0);
        }
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        VEC(name, lw->ffn_norm);
    }
#undef MAT
#undef VEC
    // last, as fill_base's indices are the tensors above. Llama 3 RoPE scaling:
    // llama.cpp divides each frequency by rope_freqs[i]
    // (conversion/llama.py, generate_extra_tensors): the unscaled over the scaled
    if (!rc && c->rope_scaling != ROPE_NONE) {
        int half = c->head_dim / 2;
        rope_freqs = malloc(sizeof(float) * (size_t)half);
        if (!rope_freqs) rc = ql_err(QL_ENOMEM, "out of memory");
        else {
            config_rope_inv_freq(c, rope_freqs);
            for (int i = 0; i < half; i++)
                rope_freqs[i] = (float)(pow((double)c->rope_theta, -2.0 * i / c->head_dim) / rope_freqs[i]);
            ne[0] = half;
            rc = gguf_tensor(&g, "rope_freqs.weight", 1, ne, GGML_F32, rope_freqs, NULL, NULL);
        }
    }
    if (!rc) rc = gguf_write(&g, path);
    for (int i = 0; i < V && made; i++) free(made[i]);
    free(made), free(pieces), free(scores), free(kinds);
    free(b.w), free(b.norm), free(b.perm), free(rope_freqs);
    gguf_free(&g);
    return rc;
}

// ---- the adapter ----

int gguf_write_lora(const lora_adapter *a, const model_config *c, dtype type, const char *path) {
    int gt = gguf_type_of(type);
    if (gt < 0) return ql_err(QL_EINVAL, "%s: a GGUF LoRA is written in F32, F16 or BF16, not %s", path, dtype_name(type));
    gguf_out g;
    gguf_init(&g);
    int rc = put_arch(&g, "adapter");
    if (!rc) rc = gguf_kv_str(&g, "adapter.type", "lora");
    // llama.cpp scales by alpha / rank: alpha = scaling * rank gives our scaling, rsLoRA too
    if (!rc) rc = gguf_kv_f32(&g, "adapter.lora.alpha", a->scaling * (float)a->rank);
    int n = a->n_layers * LORA_NMODULES;
    float **permuted = calloc((size_t)n, sizeof(float *));
    if (!rc && !permuted) rc = ql_err(QL_ENOMEM, "out of memory");
    char name[96];
    for (int i = 0; i < n && !rc; i++) {
        const lora_pair *p = &a->w[i];
        if (!p->A) continue;
        int l = i / LORA_NMODULES, k = i % LORA_NMODULES, R = a->rank;
        const float *B = p->B;
        if (k <= 1) {  // q, k: the base's rows are permuted, so are B's (its rows are outputs)
            permuted[i] = malloc(sizeof(float) * (size_t)p->out * R);
            if (!permuted[i]) { rc = ql_err(QL_ENOMEM, "out of memory"); break; }
            gguf_rope_permute(permuted[i], p->B, p->out, R, k == 0 ? c->n_heads : c->n_kv_heads);
            B = permuted[i];
        }
        int64_t na[2] = {p->in, R}, nb[2] = {R, p->out};
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", l, GGUF_MODULE_NAMES[k]);
        rc = gguf_tensor(&g, name, 2, na, gt, p->A, NULL, NULL);
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", l, GGUF_MODULE_NAMES[k]);
        if (!rc) rc = gguf_tensor(&g, name, 2, nb, gt, B, NULL, NULL);
    }
    if (!rc) rc = gguf_write(&g, path);
    for (int i = 0; i < n && permuted; i++) free(permuted[i]);
    free(permuted);
    gguf_free(&g);
    return rc;
}
