// shapes.c: see shapes.h.
#include "shapes.h"

#include <stdio.h>
#include <string.h>

// Published shapes: TinyLlama-1.1B (TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json),
// Llama-2-7B (meta-llama/Llama-2-7b-hf config.json), Llama-3.2-1B and Llama-3.1-8B
// (meta-llama/Llama-3.2-1B and Llama-3.1-8B config.json: vocabulary 128256, tied
// embeddings in 3.2 1B only, RoPE theta 500000 with llama3 scaling).
const model_shape MODEL_SHAPES[] = {
    {"tinyllama-1.1b", {.dim = 2048, .hidden_dim = 5632, .n_layers = 22, .n_heads = 32, .n_kv_heads = 4,
                        .head_dim = 64, .vocab_size = 32000, .max_pos = 2048, .norm_eps = 1e-5f,
                        .rope_theta = 10000.0f, .bos_id = 1, .eos_id = 2, .eos_ids = {2}, .n_eos = 1, .add_bos = 1}},
    {"llama2-7b", {.dim = 4096, .hidden_dim = 11008, .n_layers = 32, .n_heads = 32, .n_kv_heads = 32,
                   .head_dim = 128, .vocab_size = 32000, .max_pos = 4096, .norm_eps = 1e-5f,
                   .rope_theta = 10000.0f, .bos_id = 1, .eos_id = 2, .eos_ids = {2}, .n_eos = 1, .add_bos = 1}},
    {"llama3.2-1b", {.dim = 2048, .hidden_dim = 8192, .n_layers = 16, .n_heads = 32, .n_kv_heads = 8, .head_dim = 64,
                     .vocab_size = 128256, .max_pos = 131072, .norm_eps = 1e-5f, .rope_theta = 500000.0f,
                     .tie_embeddings = 1, .bos_id = 128000, .eos_id = 128001, .eos_ids = {128001}, .n_eos = 1,
                     .add_bos = 1, .rope_scaling = ROPE_LLAMA3, .rope_factor = 32.0f, .rope_low_freq_factor = 1.0f,
                     .rope_high_freq_factor = 4.0f, .rope_original_max_pos = 8192}},
    {"llama3.1-8b", {.dim = 4096, .hidden_dim = 14336, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128,
                     .vocab_size = 128256, .max_pos = 131072, .norm_eps = 1e-5f, .rope_theta = 500000.0f,
                     .bos_id = 128000, .eos_id = 128001, .eos_ids = {128001}, .n_eos = 1, .add_bos = 1,
                     .rope_scaling = ROPE_LLAMA3, .rope_factor = 8.0f, .rope_low_freq_factor = 1.0f,
                     .rope_high_freq_factor = 4.0f, .rope_original_max_pos = 8192}},
};
const int MODEL_NSHAPES = (int)(sizeof MODEL_SHAPES / sizeof *MODEL_SHAPES);

const model_shape *model_shape_find(const char *name) {
    for (int i = 0; i < MODEL_NSHAPES; i++)
        if (!strcmp(name, MODEL_SHAPES[i].name)) return &MODEL_SHAPES[i];
    return NULL;
}

const char *model_shape_names(void) {
    static char names[256];  // from the table, so a new shape is listed without another edit
    if (!names[0])
        for (int i = 0; i < MODEL_NSHAPES; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", MODEL_SHAPES[i].name);
    return names;
}
