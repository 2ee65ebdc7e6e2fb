// model.h: a Llama-family base model in memory: config, frozen weights (the
// seven linear kinds of every block in NF4, F16 or F32; embeddings, norms and
// lm_head in 16/32 bits, as in QLoRA) and the tokenizer bytes.
//
// Loaded from a Hugging Face directory (config.json, model.safetensors or
// shards, tokenizer.model) or from a quantized base file written by
// `qlora quantize` (docs/formats.md), which is mmapped and used in place.
#ifndef QL_MODEL_H
#define QL_MODEL_H

#include <stddef.h>

#include "../kernels/ops.h"
#include "../common/config.h"
#include "../common/fileio.h"
#include "../common/safetensors.h"

// The seven linear weights of a block: X(field, Hugging Face name, rows, cols),
// with C, F, H, Hkv, D in scope. Rows are outputs, cols inputs.
#define LAYER_LINEARS(X)                       \
    X(wq, "self_attn.q_proj", H * D, C)        \
    X(wk, "self_attn.k_proj", Hkv * D, C)      \
    X(wv, "self_attn.v_proj", Hkv * D, C)      \
    X(wo, "self_attn.o_proj", C, H * D)        \
    X(w_gate, "mlp.gate_proj", F, C)           \
    X(w_up, "mlp.up_proj", F, C)               \
    X(w_down, "mlp.down_proj", C, F)

#define LAYER_NLINEARS 7

typedef struct {
#define X(field, name, rows, cols) qweight field;
    LAYER_LINEARS(X)
#undef X
    const float *attn_norm;  // (C) input_layernorm
    const float *ffn_norm;   // (C) post_attention_layernorm
} layer_weights;

typedef struct {
    model_config cfg;
    dtype base_dtype;        // of the linear weights: DT_NF4, DT_F16 or DT_F32
    qweight embed;           // (V,C)
    qweight lm_head;         // (V,C); shares embed's storage when tied
    const float *final_norm; // (C)
    layer_weights *layers;   // [L]
    const void *tokenizer;   // the tokenizer file's bytes: tokenizer.model (SentencePiece) or
    size_t tokenizer_len;    // tokenizer.json (byte-level BPE), as tokenizer_kind says
    int tokenizer_kind;      // tok_kind (common/tokenizer.h); 0 when there is none
    const char *chat_template;  // tokenizer_config.json's Jinja "chat_template", or NULL (kept in the base file)

    // storage
    st_set st;               // the HF checkpoint, mmapped (weights may point into it)
    fmap map;                // a quantized base file, mmapped
    st_file base;            // its safetensors image
    void **owned;            // allocations to free
    int nowned, capowned;
    char *source;            // the path it was loaded from
    char *name;              // the model's name (model_name_of), NULL for random weights; a base file records it
} model;

// path: a Hugging Face model directory or a quantized base file.
// base_dtype applies to directories; a base file keeps the dtype it was written with.
int model_load(model *m, const char *path, dtype base_dtype);
void model_free(model *m);
// A model with random weights at the shape of c, for benchmarks: NF4 codes and
// absmax codes drawn uniformly (a typical weight scale of ~0.02), 16-bit
// embeddings. No tokenizer.
int model_init_random(model *m, const model_config *c, dtype base_dtype, uint64_t seed);
// Write the quantized base file (atomically); m->name goes with it.
int model_save_base(const model *m, const char *path);
// The name of the model at path, as an adapter's base_model_name_or_path gives it:
// a Hugging Face directory's config.json "_name_or_path" when it is a non-empty
// string, else the directory's name; a base file's recorded name (metadata
// "name_or_path", from its directory at quantize time), else, for a file written
// before qlora recorded one, the file's name without ".qlb". *name malloc'd.
int model_name_of(char **name /* out */, const char *path);
// Bytes of the linear (quantized) weights and their parameter count.
size_t model_linear_bytes(const model *m, size_t *n_params /* out */);
// Bytes of all weights.
size_t model_weight_bytes(const model *m);
// "nf4" / "f16" / "f32" <-> dtype; -1 when unknown
int base_dtype_parse(const char *s);
const char *base_dtype_name(dtype t);

#define QLORA_BASE_MAGIC "QLORABAS"
#define QLORA_BASE_VERSION 1

#endif
