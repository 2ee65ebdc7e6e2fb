// qlora.c: the command-line entry point. Everything else is in the library.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export/export_cmd.h"
#include "infer/commands.h"
#include "serve/serve_cmd.h"
#include "train/train_cmd.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"train", cmd_train, "train a LoRA adapter on a frozen NF4 base from JSONL (PEFT adapter directory)"},
    {"infer", cmd_infer, "generate: one prompt, fan-out to adapters, or a JSONL file of requests, in batches"},
    {"chat", cmd_chat, "chat through a template; switch adapters mid-conversation"},
    {"serve", cmd_serve, "an OpenAI-compatible HTTP server over the base and a LoRA store (hot-loading, batching)"},
    {"eval", cmd_eval, "mean token loss and perplexity on a text or JSONL file"},
    {"quantize", cmd_quantize, "freeze a Hugging Face model in NF4 into one mmap-able base file"},
    {"export", cmd_export, "an adapter or the base in another runtime's format (GGUF for llama.cpp)"},
    {"tokenize", cmd_tokenize, "text to token ids and back (tokenizer.json or tokenizer.model), one JSON value per line"},
    {"bench", cmd_bench, "prompt and decode speed and peak memory at real model shapes"},
};

static void usage(FILE *f) {
    fprintf(f, "qlora: QLoRA on a workstation: NF4 base models, LoRA adapters, batched inference\n\n"
               "usage: qlora <command> [options]   (qlora <command> --help lists every option)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
}

// libgomp, when it loads (before main), reads how long a thread waiting at a
// barrier spins before it sleeps: by default about 300000 iterations. That is
// fine on idle cores; when another process takes one, each thread spins its whole
// slice waiting for a partner that is not running, and every OpenMP region pays
// it (measured: a short training run 6x slower beside a busy process; see
// docs/benchmarks.md). Unless the user chose a policy, the program starts again
// once with a short spin, which costs idle-machine speed nothing measurable.
static void omp_wait_policy(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", "10000", 1) != 0) return;
    execv("/proc/self/exe", argv);  // returns only on failure: carry on as we are
}

int main(int argc, char **argv) {
    omp_wait_policy(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "qlora: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
