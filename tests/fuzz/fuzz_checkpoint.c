// fuzz_checkpoint: a training checkpoint (checkpoint.safetensors) through
// ckpt_read_mem, which ckpt_read calls on the file (train --resume), for an adapter
// of rank 2 on q_proj and v_proj of the tiny_gqa fixture's shape, a run of 20 steps,
// with and without the fingerprint check. An accepted state must be what the header
// promised: step in range, finite losses, moments v >= 0.
#include "fuzz_util.h"

#include <math.h>

#include "common/config.h"
#include "train/checkpoint.h"

#define MAX_STEP 20

static lora_adapter a;

static void setup(void) {
    static int ready;
    if (ready) return;
    if (lora_init(&a, fz_fixture_config(), 2, 4, 0, 0, LORA_Q | LORA_V, 1)) {
        fprintf(stderr, "fuzz: %s\n", ql_errmsg());
        abort();
    }
    ready = 1;
}

#ifdef FZ_WRITE_SEEDS
// make_seeds.py builds this (cc ... -DFZ_WRITE_SEEDS) to write the valid seeds.
int main(int argc, char **argv) {
    setup();
    for (int step = 0; step <= 3 && argc > 1; step += 3) {
        ckpt_state s = {.step = step, .n_params = ckpt_n_params(&a), .val_count = step ? 1 : 0};
        s.losses = calloc((size_t)(step + 1), sizeof(float));
        s.w = calloc((size_t)s.n_params, sizeof(float)), s.m = calloc((size_t)s.n_params, sizeof(float));
        s.v = calloc((size_t)s.n_params, sizeof(float));
        int vs = 2;
        float vl = 1.5f;
        s.val_step = &vs, s.val_loss = &vl;
        for (int i = 0; i < step; i++) s.losses[i] = 2.0f - 0.1f * (float)i;
        for (int64_t i = 0; i < s.n_params; i++) s.w[i] = 0.01f * (float)(i % 7), s.v[i] = 1e-6f;
        char path[1024];
        snprintf(path, sizeof path, "%s/seed-step%d", argv[1], step);
        if (ckpt_write(path, &a, &s, "fp")) { fprintf(stderr, "%s\n", ql_errmsg()); return 1; }
        free(s.losses), free(s.w), free(s.m), free(s.v);
    }
    lora_free(&a);
    return 0;
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    for (int pass = 0; pass < 2; pass++) {
        ckpt_state s;
        if (ckpt_read_mem(&s, data, size, "checkpoint.safetensors", &a, MAX_STEP, pass ? "fp" : NULL) == 0) {
            if (s.step < 0 || s.step > MAX_STEP || s.n_params != ckpt_n_params(&a)) abort();
            for (int i = 0; i < s.step; i++)
                if (!isfinite(s.losses[i])) abort();
            for (int i = 0; i < s.val_count; i++)
                if (s.val_step[i] < 0 || s.val_step[i] > s.step) abort();
            for (int64_t i = 0; i < s.n_params; i++)
                if (!isfinite(s.w[i]) || !(s.v[i] >= 0)) abort();
        }
        ckpt_state_free(&s);
    }
    return 0;
}
