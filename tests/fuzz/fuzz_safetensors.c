// fuzz_safetensors: a safetensors image (u64 header length, JSON header, data) through
// st_open_mem, which parses as st_open (every .safetensors the program reads) does on
// the mapping. An accepted header's tensors lie inside the image (or in their aligned copy).
#include "fuzz_util.h"

#include "common/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_dir();
    st_file f;
    if (st_open_mem(&f, data, size, "fuzz.safetensors") != 0) return 0;
    for (int k = 0; k < f.n; k++) {  // what an accepted header promises: every tensor inside the image
        const st_tensor *t = &f.t[k];
        if (st_find(&f, t->name) != t) abort();
        const uint8_t *p = t->data;
        if (t->nbytes && p != t->copy && (p < (const uint8_t *)data || p + t->nbytes > (const uint8_t *)data + size))
            abort();
        volatile uint8_t sink = t->nbytes ? p[0] ^ p[t->nbytes - 1] : 0;
        (void)sink;
    }
    free(st_metadata_get(&f, "format"));
    st_close(&f);
    return 0;
}
