// test_train_real.c (label real): QLoRA on the real stories260K with the
// pirate sample dataset (datasets/samples/pirate.jsonl, prompt/completion).
//  - 150 steps lower the validation loss to under half its starting value.
//    (Measured at this commit: 4.48 -> 0.24. The completions follow a few
//    templates, so a working trainer gets far below half; a broken backward,
//    mask or optimizer stays near the start.)
//  - Greedy continuations of prompts the data does not contain speak like a
//    pirate (Arr, Avast, Ahoy, matey, ye, me hearty, Shiver): at least 2 of 3 with
//    the adapter, none with the base alone.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static char *run(const char *cmd) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    size_t k;
    while ((k = fread(out + n, 1, cap - n - 1, p)) > 0) n += k;
    out[n] = 0;
    int rc = pclose(p);
    if (rc != 0) fprintf(stderr, "command failed (%d): %s\n%s\n", rc, cmd, out);
    return out;
}

static int pirate(const char *s) {
    const char *words[] = {"Arr", "Avast", "Ahoy", "matey", " ye ", "hearty", "Shiver", "Yo ho"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strstr(s, words[i])) return 1;
    return 0;
}

int main(void) {
    const char *models = test_models_dir();
    if (!models) { fprintf(stderr, "no test models: skipped\n"); return TEST_SKIP; }
    char dir[256], cmd[8192];
    snprintf(dir, sizeof dir, "/tmp/qlora_train_real_%d", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "%s train --base %s/stories260K --data %s/datasets/samples/pirate.jsonl --out %s --max-steps 150 "
             "--batch-size 4 --seq-len 128 --lr 2e-3 --rank 8 --alpha 16 --eval-every 50 --log-every 50 2>&1",
             QL_BINARY, models, test_source_dir(), dir);
    char *log = run(cmd);
    CHECK(log != NULL);
    if (!log) return test_finish("test_train_real");
    double first = -1, last = -1;
    for (char *p = log; (p = strstr(p, "val_loss=")); p++) {
        double v = atof(p + 9);
        if (first < 0) first = v;
        last = v;
    }
    fprintf(stderr, "validation loss: %.4f -> %.4f\n", first, last);
    CHECKF(first > 0 && last > 0, "no validation losses in the log:\n%s", log);
    CHECKF(last < 0.5 * first, "validation loss fell only from %.4f to %.4f", first, last);
    free(log);
    const char *prompts[] = {"How do I bake bread?", "Where is the library?", "Can you help me with my homework?"};
    int with = 0, without = 0;
    for (int i = 0; i < 3; i++) {
        for (int ad = 0; ad < 2; ad++) {
            snprintf(cmd, sizeof cmd, "%s infer --base %s/stories260K %s%s --prompt '%s' --temperature 0 --max-tokens 40 2>/dev/null",
                     QL_BINARY, models, ad ? "--adapter " : "", ad ? dir : "", prompts[i]);
            char *out = run(cmd);
            fprintf(stderr, "%s | %s:%s", ad ? "adapter" : "base   ", prompts[i], out ? out : "(none)\n");
            if (out && pirate(out)) { if (ad) with++; else without++; }
            free(out);
        }
    }
    CHECKF(with >= 2, "only %d of 3 adapter continuations show the pirate style", with);
    CHECKF(without == 0, "%d base continuations already look like a pirate's", without);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_finish("test_train_real");
}
