// llama_gguf.h: a Llama base model and a LoRA adapter as GGUF files that
// llama.cpp loads (the base with -m, the adapter with --lora). Names, keys and
// the RoPE row order follow llama.cpp's converters (convert_hf_to_gguf.py with
// conversion/llama.py, convert_lora_to_gguf.py; docs/formats.md cites each).
#ifndef QL_LLAMA_GGUF_H
#define QL_LLAMA_GGUF_H

#include "../model/model.h"
#include "../common/tokenizer.h"
#include "../model/lora.h"

// llama.cpp's tensor name stem for LoRA module k (0..6): "attn_q", ... "ffn_down".
extern const char *const GGUF_MODULE_NAMES[LORA_NMODULES];

// Reorders the rows of a q or k projection (rows = n_head * head_dim, any
// columns) from Hugging Face's rotate-half RoPE layout to ggml's interleaved
// pairs: within each head, row 2i+j takes row j*head_dim/2 + i.
void gguf_rope_permute(float *dst, const float *src, int rows, int cols, int n_head);

// The base model: the matrices (token_embd, output, the seven linears of each
// block) as type (gguf.h: GGML_F16, GGML_BF16, GGML_F32, or GGML_Q8_0 / GGML_Q4_0
// as llama-quantize --pure writes them, where a matrix whose rows are not a
// multiple of 32 values falls back to F16, logged); NF4 weights are dequantized
// first; norms in F32, the tokenizer's pieces.
int gguf_write_base(const model *m, const tokenizer *tok, int type, const char *path);
// The adapter: lora_a (A as it is, ne {in, R}) and lora_b (B, ne {R, out}, q and
// k rows permuted) per targeted linear, in type; adapter.lora.alpha is set so that
// llama.cpp's alpha / R equals our scaling (rsLoRA included).
int gguf_write_lora(const lora_adapter *a, const model_config *c, dtype type, const char *path);

#endif
