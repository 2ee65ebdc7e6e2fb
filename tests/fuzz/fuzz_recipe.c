// fuzz_recipe: a training recipe (qlora train --recipe FILE) through recipe_parse,
// which recipe_args calls on the file's text. The option table is train's, by name
// and type (train_cmd.c keeps its own inside cmd_train): strings, integers, floats
// and flags, as a recipe's values are checked against them.
#include "fuzz_util.h"

#include "train/recipe.h"

static const char *s_;
static int i_;
static float f_;
static cli_opt opts[] = {
    {"--base", OPT_STR, &s_, NULL, ""},          {"--data", OPT_STR, &s_, NULL, ""},
    {"--out", OPT_STR, &s_, NULL, ""},           {"--recipe", OPT_STR, &s_, "", ""},
    {"--rank", OPT_INT, &i_, "16", ""},          {"--alpha", OPT_FLOAT, &f_, "32", ""},
    {"--rslora", OPT_FLAG, &i_, NULL, ""},       {"--dropout", OPT_FLOAT, &f_, "0.05", ""},
    {"--targets", OPT_STR, &s_, "all", ""},      {"--lr", OPT_FLOAT, &f_, "2e-4", ""},
    {"--epochs", OPT_INT, &i_, "1", ""},         {"--max-steps", OPT_INT, &i_, "0", ""},
    {"--batch-size", OPT_INT, &i_, "4", ""},     {"--grad-accum", OPT_INT, &i_, "1", ""},
    {"--seq-len", OPT_INT, &i_, "512", ""},      {"--seed", OPT_INT, &i_, "42", ""},
    {"--schedule", OPT_STR, &s_, "cosine", ""},  {"--weight-decay", OPT_FLOAT, &f_, "0", ""},
    {"--val-split", OPT_FLOAT, &f_, "0.1", ""},  {"--save-every", OPT_INT, &i_, "0", ""},
    {"--resume", OPT_FLAG, &i_, NULL, ""},       {"--overwrite", OPT_FLAG, &i_, NULL, ""},
    {"--chat-template", OPT_STR, &s_, "", ""},   {"--train-on-inputs", OPT_FLAG, &i_, NULL, ""},
    {"--skip-invalid", OPT_FLAG, &i_, NULL, ""}, {"--base-dtype", OPT_STR, &s_, "nf4", ""},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_dir();
    char **argv = NULL;
    int argc = 0;
    if (recipe_parse("recipe.json", (const char *)data, size, opts, (int)(sizeof opts / sizeof *opts), &argv, &argc))
        return 0;
    for (int k = 0; k < argc; k++)
        if (!argv[k]) abort();
    recipe_args_free(argv, argc);
    return 0;
}
