// peft.h: the adapter directory in Hugging Face PEFT layout (docs/formats.md,
// "The adapter directory (PEFT layout)"), which PEFT, vLLM, TensorRT-LLM and
// NIM load as it is:
//   adapter_config.json        LoraConfig fields (peft_type "LORA", r, lora_alpha, ...)
//   adapter_model.safetensors  base_model.model.model.layers.{l}.{self_attn|mlp}.{module}.lora_{A|B}.weight
//                              A [R, in], B [out, R], F16
//   training_record.json       optional, ours (PEFT and vLLM ignore unknown files)
#ifndef QL_PEFT_H
#define QL_PEFT_H

#include "../common/config.h"
#include "../common/dtype.h"
#include "../model/lora.h"

#define PEFT_CONFIG_NAME "adapter_config.json"
#define PEFT_WEIGHTS_NAME "adapter_model.safetensors"
#define PEFT_RECORD_NAME "training_record.json"
// qlora train's checkpoints: PEFT_CHECKPOINTS_DIR/checkpoint-<step>.safetensors
#define PEFT_CHECKPOINTS_DIR "checkpoints"
// The step of a checkpoint file's name ("checkpoint-120.safetensors": 120), or -1
// when name is not one.
long peft_checkpoint_step(const char *name);

// Writes a's directory atomically: the whole directory is built aside (a hidden
// temp sibling) and swapped in with one rename (fileio.h adir), so a reader sees
// the old adapter or the new one, never a mix. dir's parents are created when
// missing; an existing dir must be an adapter directory (lora_peft_dir_kind),
// else nothing is written. A and B are rounded to F16 (round-to-nearest-even).
// extra_record_json: NULL, or a JSON document written as training_record.json.
int lora_save_peft(const lora_adapter *a, const char *dir, const char *extra_record_json);
// The same in type: DT_F16 (what training writes), DT_BF16 or DT_F32.
int lora_save_peft_as(const lora_adapter *a, const char *dir, const char *extra_record_json, dtype type);
// The adapter's files (config, weights, the record when not NULL) into the
// existing directory dir, each atomically: for a caller that builds a directory
// aside with more files in it (qlora train adds its checkpoint and loss.svg).
int lora_write_peft_files(const lora_adapter *a, const char *dir, const char *extra_record_json, dtype type);
// adapter_config.json's base_model_name_or_path names the model, never a local
// path: the writers above put lora_base_model_name(a->base_model) there. base, a
// local model (what train's and export's --base give: a Hugging Face directory or
// a qlora base file), gives model_name_of's name; a path to a .qlb file that is no
// longer there gives its name without ".qlb"; anything else (a Hub id such as
// "meta-llama/Llama-3.2-1B") stays as it is. *name malloc'd.
int lora_base_model_name(char **name /* out */, const char *base);

// What is at dir, before writing an adapter there: PEFT_DIR_ABSENT (nothing, or
// an empty directory) or PEFT_DIR_ADAPTER (a directory of only adapter files,
// and train's checkpoints/ of only checkpoint files; adapter_config.json a LoRA config). Anything else (a file, a symbolic link, a
// directory with other files or an adapter_config.json that is not a LoRA one)
// is QL_EINVAL with a message that says why it is not replaced.
enum { PEFT_DIR_ABSENT, PEFT_DIR_ADAPTER };
int lora_peft_dir_kind(const char *dir, int *kind /* out */);

// Reads and validates dir against the model config c into a (fp32 A and B,
// scaling from r, lora_alpha and use_rslora). Accepts F16, BF16 and F32
// tensors; a module without tensors is not targeted. Every error names the
// file, the field or tensor, what was expected and what was found; on error a
// is left empty (lora_free is still safe).
int lora_load_peft(lora_adapter *a, const model_config *c, const char *dir);
// The same checks, but resident (model/lora.h), for serving: the weights file is
// mapped and A and B are used in place as stored (F16, BF16 or F32), with no
// conversion or copy; the load only checks that every value is finite. The file
// is read through the mapping for as long as a lives, as the .qlb base is: replace
// it by rename (as qlora does), never by rewriting it in place.
int lora_load_peft_resident(lora_adapter *a, const model_config *c, const char *dir);
// Reads only dir's adapter_config.json: rank, alpha, use_rslora, and in *listed
// the LORA_* bits of its target_modules (a listing of the store, without loading
// weights). a holds no weights; lora_free is still safe.
int lora_peft_config(lora_adapter *a /* out */, unsigned *listed /* out */, const char *dir);
// A model config that dir's tensors fit, for handling an adapter without its base
// (qlora export --format peft): layers, and each targeted module's in and out
// (head_dim 1, so n_heads is q's rows). It checks nothing else; lora_load_peft does.
int lora_peft_shapes(model_config *c, const char *dir);

#endif
