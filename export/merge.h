// merge.h: an adapter merged into its base, W' = W + scaling * B A for every
// targeted linear, written as a Hugging Face model directory (config.json,
// model.safetensors or shards with model.safetensors.index.json, tokenizer.model
// and the base's tokenizer/generation configs) for runtimes without LoRA.
// W is what m holds: load the base directory with DT_F32 to merge into the
// original weights; a qlora base file holds NF4, which then is dequantized
// first (outputs then differ from the original model plus adapter: peft#1043).
#ifndef QL_MERGE_H
#define QL_MERGE_H

#include "../model/model.h"
#include "../model/lora.h"

// config.json is made from m->cfg (config_to_hf_json: AutoConfig's fields,
// torch_dtype = type); when base_dir is a directory, its config.json's other
// fields are kept and its tokenizer and generation configs are copied (a file
// path, such as a base file, gives a tokenizer_config.json from what it kept).
// type: DT_F16, DT_BF16 or DT_F32. out must not exist; it appears only when complete.
int export_merged(const model *m, const lora_adapter *a, const char *base_dir, dtype type, const char *out);

#endif
