// commands.h: the subcommands behind `qlora <command>`. Each parses its own
// options, prints results to stdout and messages to stderr, and returns the
// process exit code.
#ifndef QL_COMMANDS_H
#define QL_COMMANDS_H

#include "../model/model.h"
#include "../common/tokenizer.h"
#include "../kernels/ops.h"

// What every command that runs a model shares: the model (--base, --base-dtype),
// its tokenizer, and the backend (--backend, --threads). session_open logs what it
// loaded; on failure the message says why (QL_EINVAL for a bad option value).
typedef struct {
    model m;
    tokenizer *tok;
    ops *o;
} session;

int session_open(session *s, const char *base, const char *base_dtype, const char *backend, int threads);
void session_close(session *s);

int cmd_infer(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);

#endif
