// fuzz_qlb: a quantized base file (docs/formats.md: 32-byte prefix, then a
// safetensors image) written to a scratch file and loaded with model_load, as every
// command that takes --base does.
#include "fuzz_util.h"

#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[1100];
    fz_path(path, sizeof path, "base.qlb");
    fz_write("base.qlb", data, size);
    model m;
    if (model_load(&m, path, DT_NF4) == 0) {
        // what load promised: weights at the config's shapes, readable
        volatile float s = m.final_norm[0] + m.final_norm[m.cfg.dim - 1];
        (void)s;
        model_free(&m);
    }
    fz_remove("base.qlb");  // libFuzzer may end the process with _Exit (no atexit)
    return 0;
}
