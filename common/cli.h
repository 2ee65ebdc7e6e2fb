// cli.h: a small table-driven option parser. Every option has a default that
// --help prints, so `qlora <command> --help` always lists them all.
#ifndef QL_CLI_H
#define QL_CLI_H

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

#endif
