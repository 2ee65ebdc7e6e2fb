// cli.c: see cli.h.
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_usage(const char *cmd, const char *summary, const cli_opt *opts, int nopts) {
    fprintf(stderr, "usage: qlora %s [options]\n%s\n\noptions:\n", cmd, summary);
    for (int i = 0; i < nopts; i++) {
        const cli_opt *o = &opts[i];
        const char *arg = o->type == OPT_INT ? " N" : o->type == OPT_FLOAT ? " X" : o->type == OPT_STR ? " S" : "";
        char left[64];
        snprintf(left, sizeof left, "%s%s", o->name, arg);
        fprintf(stderr, "  %-22s %s (default: %s)\n", left, o->help,
                o->def ? o->def : (o->type == OPT_FLAG ? "off" : "required"));
    }
    fprintf(stderr, "  %-22s %s\n", "--help", "show this help");
}

static int set(const cli_opt *o, const char *v, const char *cmd) {
    char *end;
    switch (o->type) {
    case OPT_STR: *(const char **)o->ptr = v; return 0;
    case OPT_INT: {
        errno = 0;
        long x = strtol(v, &end, 10);
        if (*v == 0 || *end || errno || x < -2147483647L || x > 2147483647L) {
            fprintf(stderr, "qlora %s: %s: expected an integer, found '%s'\n", cmd, o->name, v);
            return -1;
        }
        *(int *)o->ptr = (int)x;
        return 0;
    }
    case OPT_FLOAT: {
        errno = 0;
        double x = strtod(v, &end);
        if (*v == 0 || *end || errno || !isfinite(x)) {
            fprintf(stderr, "qlora %s: %s: expected a number, found '%s'\n", cmd, o->name, v);
            return -1;
        }
        *(float *)o->ptr = (float)x;
        return 0;
    }
    case OPT_FLAG: *(int *)o->ptr = 1; return 0;
    }
    return -1;
}

static void (*version_print)(FILE *f);

void cli_set_version(void (*print)(FILE *f)) { version_print = print; }

// Levenshtein distance, two rows; names are short (options, commands).
static int edits(const char *a, const char *b) {
    size_t n = strlen(b);
    if (n > 63) return 1 << 20;
    int prev[64], cur[64];
    for (size_t j = 0; j <= n; j++) prev[j] = (int)j;
    for (size_t i = 1; a[i - 1]; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= n; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]), del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(int) * (n + 1));
    }
    return prev[n];
}

const char *cli_suggest(const char *word, const char *const *cands, int n) {
    int best = 1 + (int)strlen(word) / 4 + 1;
    const char *pick = NULL;
    if (strlen(word) > 63) return NULL;
    for (int i = 0; i < n; i++) {
        int d = edits(word, cands[i]);
        if (d < best) best = d, pick = cands[i];
    }
    return pick;
}

int cli_parse(const char *cmd, const char *summary, cli_opt *opts, int nopts, int argc, char **argv) {
    for (int i = 0; i < nopts; i++) {
        if (opts[i].type == OPT_FLAG) *(int *)opts[i].ptr = 0;
        else if (opts[i].def && set(&opts[i], opts[i].def, cmd)) return -1;
        else if (!opts[i].def) *(const char **)opts[i].ptr = NULL;
    }
    for (int a = 0; a < argc; a++) {
        if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
            cli_usage(cmd, summary, opts, nopts);
            return 1;
        }
        if (!strcmp(argv[a], "--version") && version_print) {
            version_print(stdout);
            return 1;
        }
        const char *arg = argv[a], *eq = strchr(arg, '=');
        size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
        cli_opt *o = NULL;
        for (int i = 0; i < nopts; i++)
            if (strlen(opts[i].name) == n && !strncmp(opts[i].name, arg, n)) o = &opts[i];
        if (!o) {
            const char *names[256];
            int k = 0;
            for (int i = 0; i < nopts && k < 256; i++) names[k++] = opts[i].name;
            char word[64];
            snprintf(word, sizeof word, "%.*s", (int)(n < 63 ? n : 63), arg);
            const char *near = cli_suggest(word, names, k);
            if (near)
                fprintf(stderr, "qlora %s: unknown option '%s' (did you mean %s? see qlora %s --help)\n", cmd, arg, near,
                        cmd);
            else fprintf(stderr, "qlora %s: unknown option '%s' (see qlora %s --help)\n", cmd, arg, cmd);
            return -1;
        }
        const char *v = NULL;
        if (o->type != OPT_FLAG) {
            if (eq) v = eq + 1;
            else if (a + 1 < argc) v = argv[++a];
            else {
                fprintf(stderr, "qlora %s: %s needs a value\n", cmd, o->name);
                return -1;
            }
        } else if (eq) {
            fprintf(stderr, "qlora %s: %s takes no value\n", cmd, o->name);
            return -1;
        }
        if (set(o, v, cmd)) return -1;
    }
    for (int i = 0; i < nopts; i++)
        if (opts[i].type == OPT_STR && !opts[i].def && !*(const char **)opts[i].ptr) {
            fprintf(stderr, "qlora %s: missing required option %s (see qlora %s --help)\n", cmd, opts[i].name, cmd);
            return -1;
        }
    return 0;
}
