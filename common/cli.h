// cli.h: a small table-driven option parser. Every option has a default that
// --help prints, so `qlora <command> --help` always lists them all.
#ifndef QL_CLI_H
#define QL_CLI_H

#include <stdio.h>

enum { OPT_STR, OPT_INT, OPT_FLOAT, OPT_FLAG };

typedef struct {
    const char *name;  // "--max-tokens"
    int type;          // OPT_*
    void *ptr;         // const char **, int *, float *, int * (flag)
    const char *def;   // default as text (NULL: required for OPT_STR, "off" for flags)
    const char *help;
} cli_opt;

// Parses argv[0..argc) into opts (defaults first). Returns 0 on success, 1 when
// --help was printed, -1 on error (message printed to stderr).
int cli_parse(const char *cmd, const char *summary, cli_opt *opts, int nopts, int argc, char **argv);
void cli_usage(const char *cmd, const char *summary, const cli_opt *opts, int nopts);

// The candidate closest to word by edit distance, when it is close enough to be
// a typo (at most 1 + strlen(word) / 4 edits), else NULL: "did you mean ...?".
const char *cli_suggest(const char *word, const char *const *cands, int n);

// What `--version` prints (qlora.c sets it: the library cannot see the kernels);
// cli_parse answers --version with it and returns 1, as for --help.
void cli_set_version(void (*print)(FILE *f));

#endif
