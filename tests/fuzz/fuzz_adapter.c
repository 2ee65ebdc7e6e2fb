// fuzz_adapter: an adapter directory (adapter_config.json, then FZ_SEP, then
// adapter_model.safetensors) written into a scratch directory and read as the
// program reads a store entry: lora_peft_config (the listing), lora_peft_shapes
// (export without a base), lora_load_peft and lora_load_peft_resident (what infer,
// chat and serve call) against the tiny_gqa fixture's config.
// An input without the separator is the config alone (no weights file).
#include "fuzz_util.h"

#include "common/config.h"
#include "train/peft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const model_config *cfg = fz_fixture_config();
    size_t n1, n2;
    const uint8_t *w;
    fz_split(data, size, &n1, &w, &n2);
    fz_write(PEFT_CONFIG_NAME, data, n1);
    if (w == data + size && n2 == 0) fz_remove(PEFT_WEIGHTS_NAME);
    else fz_write(PEFT_WEIGHTS_NAME, w, n2);
    lora_adapter a;
    unsigned listed = 0;
    if (lora_peft_config(&a, &listed, fz_dir()) == 0) lora_free(&a);
    model_config shapes;
    (void)lora_peft_shapes(&shapes, fz_dir());
    lora_load_peft(&a, cfg, fz_dir());
    lora_free(&a);  // after success, and after an error ("a is left empty; lora_free is still safe")
    lora_load_peft_resident(&a, cfg, fz_dir());
    lora_free(&a);
    // libFuzzer may end the process with _Exit (no atexit): leave nothing between inputs
    fz_remove(PEFT_CONFIG_NAME), fz_remove(PEFT_WEIGHTS_NAME);
    return 0;
}
