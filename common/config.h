// config.h: a Llama-family model's hyperparameters, from a Hugging Face config.json.
#ifndef QL_CONFIG_H
#define QL_CONFIG_H

#include <stddef.h>

#include "dtype.h"

enum { ARCH_LLAMA = 0, ARCH_MISTRAL = 1 };
enum { ROPE_NONE = 0, ROPE_LLAMA3 = 1 };

typedef struct {
    int arch;            // ARCH_*
    int dim;             // C: hidden_size
    int hidden_dim;      // F: intermediate_size
    int n_layers;        // L
    int n_heads;         // H
    int n_kv_heads;      // Hkv
    int head_dim;        // D (head_dim if present, else dim / n_heads)
    int vocab_size;      // V
    int max_pos;         // max_position_embeddings
    float norm_eps;      // rms_norm_eps
    float rope_theta;
    int tie_embeddings;  // tie_word_embeddings
    int bos_id, eos_id;  // -1 when absent; eos_id is eos_ids[0]
    int eos_ids[8];      // every end-of-sequence id (Llama 3 Instruct: 128001, 128008, 128009):
    int n_eos;           // eos_token_id as a number or a list, and generation_config.json's
    int add_bos;         // tokenizer_config.json add_bos_token (default 1)
    int rope_scaling;    // ROPE_*
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
} model_config;

// Parse config.json text. path names the file in messages.
int config_parse(model_config *c, const char *json, size_t len, const char *path);
// generation_config.json text: its eos_token_id (a number or a list) adds to c's
// end-of-sequence ids, each checked against c->vocab_size (parse config.json first).
int config_parse_generation(model_config *c, const char *json, size_t len, const char *path);
// tokenizer_config.json text: add_bos_token (true, false or null) into c->add_bos.
int config_parse_tokenizer_config(model_config *c, const char *json, size_t len, const char *path);
// Read dir/config.json and (optionally) dir/generation_config.json and dir/tokenizer_config.json.
int config_load_dir(model_config *c, const char *dir);
// 1 when id ends a sequence (any of eos_ids).
int config_is_eos(const model_config *c, int id);
// config.json for a Hugging Face directory, one that transformers' AutoConfig
// loads: every field of c in Hugging Face's names, with model_type ("llama" or
// "mistral"), hidden_act "silu", attention_bias and mlp_bias false, head_dim only
// when it is not hidden_size / num_attention_heads, eos_token_id a number (one id)
// or a list, floats as the shortest decimal that reads back the same. torch_dtype:
// the weights' dtype beside it (DT_F16 "float16", DT_BF16 "bfloat16", DT_F32
// "float32"), or DT_COUNT to leave it out. base: a base directory's own
// config.json text (base_len bytes, named what in errors) or NULL; its other
// top-level fields (pad_token_id, sliding_window, _name_or_path, ...) are kept as
// they are, while a field written here (and "dtype") is never copied from it.
// *out: malloc'd JSON text.
int config_to_hf_json(char **out, const model_config *c, dtype torch_dtype, const char *base, size_t base_len,
                      const char *what);
// The same with neither torch_dtype nor a base (the quantized base file's
// "config"); malloc'd, NULL when out of memory. config_parse reads it back to c.
char *config_to_json(const model_config *c);
// RoPE inverse frequencies, D/2 values, including llama3 scaling, as HF computes them.
void config_rope_inv_freq(const model_config *c, float *inv_freq /* out: D/2 */);

#endif
