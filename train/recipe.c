// recipe.c: see recipe.h.
#include "recipe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/json.h"

#define RECIPE_LIMIT (1u << 20)  // recipes are a few hundred bytes

// The option a key names ("batch-size" or "batch_size" for "--batch-size"), or NULL.
static const cli_opt *find_opt(const cli_opt *opts, int nopts, const char *key) {
    for (int i = 0; i < nopts; i++) {
        const char *o = opts[i].name + 2, *k = key;
        while (*o && (*o == *k || (*o == '-' && *k == '_'))) o++, k++;
        if (!*o && !*k) return &opts[i];
    }
    return NULL;
}

// The value's JSON text for a message, quoted when a string, cut at 40 bytes.
static void found_text(const json_doc *d, int val, char *buf, size_t n) {
    int w = d->tok[val].end - d->tok[val].start;
    const char *q = json_type(d, val) == JSON_STRING ? "\"" : "", *ty = json_type_name(d, val);
    if (!strcmp(ty, "null") || !strcmp(ty, "a boolean")) ty = "";  // the literal says it
    snprintf(buf, n, "%s%s%s%.*s%s%s", ty, ty[0] ? " " : "", q, w > 40 ? 40 : w, d->js + d->tok[val].start,
             w > 40 ? "..." : "", q);
}

// An integer literal that fits an int: digits with an optional '-', nothing else.
static int is_int_text(const char *s, int w) {
    int i = s[0] == '-';
    if (i >= w) return 0;
    for (int k = i; k < w; k++)
        if (s[k] < '0' || s[k] > '9') return 0;
    char buf[32];
    if (w >= (int)sizeof buf) return 0;
    memcpy(buf, s, (size_t)w), buf[w] = 0;
    errno = 0;
    long long v = strtoll(buf, NULL, 10);
    return !errno && v >= -2147483647LL - 1 && v <= 2147483647LL;
}

// One member: appends "--opt [value]" to av (ac). Returns QL_OK or the error.
static int take_member(const char *name, const json_doc *d, int key, int val, const cli_opt *opts, int nopts, char **av,
                       int *ac) {
    char *k = NULL, found[96];
    QL_CHECK(json_get_string(d, key, "key", &k, NULL));
    int rc = QL_OK;
    if (k[0] == '_' || !strcmp(k, "comment")) { free(k); return QL_OK; }  // notes in the recipe
    const cli_opt *o = find_opt(opts, nopts, k);
    found_text(d, val, found, sizeof found);
    int ty = json_type(d, val), w = d->tok[val].end - d->tok[val].start, b = 0;
    double dv;
    const char *txt = d->js + d->tok[val].start;
    if (!strcmp(k, "help") || !strcmp(k, "recipe"))
        rc = ql_err(QL_EINVAL, "%s: key '%s': not allowed in a recipe (a recipe holds training options only)", name, k);
    else if (!o) rc = ql_err(QL_EINVAL, "%s: key '%s': not an option of qlora train (see qlora train --help)", name, k);
    else if (o->type == OPT_STR && ty != JSON_STRING)
        rc = ql_err(QL_EFORMAT, "%s: key '%s': expected a string, found %s", name, k, found);
    else if (o->type == OPT_INT && (ty != JSON_PRIMITIVE || !is_int_text(txt, w)))
        rc = ql_err(QL_EFORMAT, "%s: key '%s': expected an integer, found %s", name, k, found);
    else if (o->type == OPT_FLOAT && (ty != JSON_PRIMITIVE || json_get_double(d, val, k, &dv) != QL_OK))
        rc = ql_err(QL_EFORMAT, "%s: key '%s': expected a number, found %s", name, k, found);
    else if (o->type == OPT_FLAG && (ty != JSON_PRIMITIVE || json_get_bool(d, val, k, &b) != QL_OK))
        rc = ql_err(QL_EFORMAT, "%s: key '%s': expected true or false, found %s", name, k, found);
    free(k);
    if (rc) return rc;
    if (o->type == OPT_FLAG && !b) return QL_OK;  // false: the flag's default
    char *opt = strdup(o->name), *v = NULL;
    if (!opt) return ql_err(QL_ENOMEM, "%s: out of memory", name);
    if (o->type == OPT_STR) rc = json_get_string(d, val, o->name + 2, &v, NULL);
    else if (o->type != OPT_FLAG && !(v = malloc((size_t)w + 1))) rc = ql_err(QL_ENOMEM, "%s: out of memory", name);
    else if (v) memcpy(v, txt, (size_t)w), v[w] = 0;
    if (rc) { free(opt); return rc; }
    av[(*ac)++] = opt;
    if (v) av[(*ac)++] = v;
    return QL_OK;
}

int recipe_parse(const char *name, const char *js, size_t len, const cli_opt *opts, int nopts, char ***argv_out,
                 int *argc_out) {
    *argv_out = NULL, *argc_out = 0;
    json_doc d;
    QL_CHECK(json_parse(&d, js, len, name));
    int rc = QL_OK, ac = 0;
    if (json_type(&d, 0) != JSON_OBJECT) rc = ql_err(QL_EFORMAT, "%s: a recipe is a JSON object of option: value", name);
    int n = rc ? 0 : json_size(&d, 0);
    char **av = calloc(2 * (size_t)n + 1, sizeof(char *));
    if (!av && !rc) rc = ql_err(QL_ENOMEM, "%s: out of memory", name);
    for (int k = 0; k < n && !rc; k++) {
        int val, key = json_member(&d, 0, k, &val);
        rc = take_member(name, &d, key, val, opts, nopts, av, &ac);
    }
    json_free(&d);
    if (rc) { recipe_args_free(av, ac); return rc; }
    *argv_out = av, *argc_out = ac;
    return QL_OK;
}

int recipe_args(const char *path, const cli_opt *opts, int nopts, char ***argv_out, int *argc_out, char **text_out) {
    char *js;
    size_t len;
    *text_out = NULL;
    QL_CHECK(file_read_all(path, RECIPE_LIMIT, &js, &len));
    int rc = recipe_parse(path, js, len, opts, nopts, argv_out, argc_out);
    if (rc) free(js);
    else *text_out = js;
    return rc;
}

void recipe_args_free(char **argv, int argc) {
    for (int i = 0; argv && i < argc; i++) free(argv[i]);
    free(argv);
}
