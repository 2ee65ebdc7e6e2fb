// fuzz_st_index: model.safetensors.index.json through st_set_open_dir, in a scratch
// directory that holds the two shards of tests/fixtures/models/tiny_f16_sharded.
#include "fuzz_util.h"

#include "common/json.h"
#include "common/safetensors.h"

static void copy_fixture(const char *name) {
    char src[1024], *buf = NULL;
    size_t len = 0;
    snprintf(src, sizeof src, "%s/%s", FZ_FIXTURE("models/tiny_f16_sharded"), name);
    if (file_read_all(src, (size_t)64 << 20, &buf, &len)) { fprintf(stderr, "fuzz: %s\n", src); abort(); }
    fz_write(name, buf, len);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        copy_fixture("model-00001-of-00002.safetensors");
        copy_fixture("model-00002-of-00002.safetensors");
        ready = 1;
    }
    fz_write("model.safetensors.index.json", data, size);
    st_set s;
    if (st_set_open_dir(&s, fz_dir()) == 0) st_set_close(&s);
    fz_remove("model.safetensors.index.json");
    return 0;
}
