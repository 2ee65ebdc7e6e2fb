// qlora.c: the command-line entry point. Everything else is in the library.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cli.h"
#include "export/export_cmd.h"
#include "infer/commands.h"
#include "kernels/cpu/blas_cpu.h"
#include "kernels/cpu/matmul_cpu.h"
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

// Two libraries read their settings from the environment when they load, before
// main, so the program sets them by starting itself again, once, unless the user
// chose:
// - libgomp's wait policy: by default a thread waiting at a barrier spins about
//   300000 iterations before it sleeps. When another process takes a core, each
//   thread spins its slice away waiting for a partner that is not running (decode
//   beside two busy loops: 1.0-1.2 tok/s, 3.9-4.9 with a short spin; solo
//   unchanged). GOMP_SPINCOUNT=10000.
// - OpenBLAS's kernels: chosen from a table of CPU models, generic SSE3 ones on a
//   CPU newer than the library (kernels/cpu/blas_cpu.h). OPENBLAS_CORETYPE.
static void startup_env(char **argv) {
    int spin = !getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT");
    const char *core = getenv("OPENBLAS_CORETYPE") ? NULL : blas_coretype_override();
    if (!spin && !core) return;
    if (spin && setenv("GOMP_SPINCOUNT", "10000", 1) != 0) return;
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) != 0) return;
    execv("/proc/self/exe", argv);  // returns only on failure: carry on as we are
}

// qlora --version, and every command's --version (through cli_parse)
static void version(FILE *f) {
    fprintf(f, "qlora %s (commit %s)\nbackends: cpu (SIMD %s, sgemm by %s)%s\n", QLORA_VERSION, QLORA_COMMIT,
            matmul_cpu_simd(), blas_describe(),
#ifdef QLORA_HAVE_CUDA
            ", cuda"
#else
            "; cuda not built"
#endif
    );
}

int main(int argc, char **argv) {
    startup_env(argv);
    cli_set_version(version);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        version(stdout);
        return 0;
    }
    enum { NCMD = sizeof commands / sizeof *commands };
    const char *names[NCMD];
    for (size_t i = 0; i < NCMD; i++) {
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 2, argv + 2);
        names[i] = commands[i].name;
    }
    const char *near = cli_suggest(argv[1], names, NCMD);
    if (near) fprintf(stderr, "qlora: unknown command '%s' (did you mean '%s'?)\n\n", argv[1], near);
    else fprintf(stderr, "qlora: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
