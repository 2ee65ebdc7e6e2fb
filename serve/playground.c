// playground.c: see playground.h.
#include "playground.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/err.h"
#include "../common/json.h"
#include "../infer/store.h"
#include "../model/lora.h"
#include "../train/peft.h"

#define CURVE_NAME "loss.svg"
#define RECORD_MAX ((size_t)1 << 20)  // training_record.json: a few KB from qlora train

const web_asset *pg_asset(const char *url) {
    for (int i = 0; i < web_n_assets; i++)
        if (!strcmp(web_assets[i].url, url)) return &web_assets[i];
    return NULL;
}

// ---- training_record.json ----

// The value of key in object obj (a token index), or -1 (obj < 0, not an object, absent).
static int member(const json_doc *d, int obj, const char *key) {
    return obj >= 0 && json_type(d, obj) == JSON_OBJECT ? json_find(d, obj, key) : -1;
}

// ", \"key\": " then the number at token v as the record wrote it, or null when
// v is absent or not a number (a record from another version or by hand).
static int number_field(strbuf *b, const char *key, const json_doc *d, int v) {
    QL_CHECK(sb_addf(b, ", \"%s\": ", key));
    const char *s = v >= 0 ? d->js + d->tok[v].start : NULL;
    if (!s || json_type(d, v) != JSON_PRIMITIVE || !(*s == '-' || (*s >= '0' && *s <= '9'))) return sb_add(b, "null");
    return sb_addn(b, s, (size_t)(d->tok[v].end - d->tok[v].start));
}

static int bool_field(strbuf *b, const char *key, const json_doc *d, int v) {
    int x = 0;
    if (v < 0 || json_type(d, v) != JSON_PRIMITIVE || json_get_bool(d, v, key, &x)) return sb_addf(b, ", \"%s\": null", key);
    return sb_addf(b, ", \"%s\": %s", key, x ? "true" : "false");
}

// ", \"key\": " then the string at v (its last path component when base_only), or null.
static int string_field(strbuf *b, const char *key, const json_doc *d, int v, int base_only) {
    QL_CHECK(sb_addf(b, ", \"%s\": ", key));
    char *s = NULL;
    if (v < 0 || json_type(d, v) != JSON_STRING || json_get_string(d, v, key, &s, NULL)) return sb_add(b, "null");
    const char *t = s;
    if (base_only) {
        const char *slash = strrchr(s, '/');
        if (slash && slash[1]) t = slash + 1;
    }
    int rc = sb_json(b, t, strlen(t));
    free(s);
    return rc;
}

// What qlora train recorded in dir's training_record.json (docs/formats.md):
// the data file's name and format, the final losses and steps, the step whose
// adapter the folder holds. Every field is null when there is no record or it
// does not parse; a field of another type (an older record) is null alone.
static int record_json(strbuf *b, const char *dir) {
    char p[PATH_MAX + 32], *text = NULL;
    size_t len = 0;
    snprintf(p, sizeof p, "%s/%s", dir, PEFT_RECORD_NAME);
    struct stat st;  // a FIFO would block the open
    json_doc d = {0};
    int parsed = stat(p, &st) == 0 && S_ISREG(st.st_mode) && !file_read_all(p, RECORD_MAX, &text, &len) &&
                 !json_parse(&d, text, len, p);
    int ok = parsed && json_type(&d, 0) == JSON_OBJECT;
    int root = ok ? 0 : -1;
    int ds = member(&d, root, "dataset"), fin = member(&d, root, "final"), ad = member(&d, root, "adapter");
    int rc = sb_addf(b, ", \"record\": %s", ok ? "true" : "false");
    if (!rc) rc = string_field(b, "data", &d, member(&d, ds, "path"), 1);
    if (!rc) rc = string_field(b, "format", &d, member(&d, ds, "format"), 0);
    if (!rc) rc = number_field(b, "samples", &d, member(&d, ds, "samples"));
    if (!rc) rc = number_field(b, "val_samples", &d, member(&d, ds, "val_samples"));
    if (!rc) rc = number_field(b, "steps", &d, member(&d, fin, "steps"));
    if (!rc) rc = number_field(b, "planned_steps", &d, member(&d, fin, "planned_steps"));
    if (!rc) rc = number_field(b, "train_loss", &d, member(&d, fin, "train_loss"));
    if (!rc) rc = number_field(b, "val_loss", &d, member(&d, fin, "val_loss"));
    if (!rc) rc = bool_field(b, "early_stopped", &d, member(&d, fin, "early_stopped"));
    if (!rc) rc = number_field(b, "adapter_step", &d, member(&d, ad, "step"));
    if (!rc) rc = number_field(b, "best_step", &d, member(&d, ad, "best_step"));
    if (!rc) rc = number_field(b, "best_val_loss", &d, member(&d, ad, "best_val_loss"));
    if (!rc) rc = number_field(b, "wall_s", &d, member(&d, member(&d, root, "resources"), "wall_s"));
    if (parsed) json_free(&d);
    free(text);
    return rc;
}

// ---- the listing ----

static long long mtime_ms(const char *dir, const char *file, int *regular) {
    char p[PATH_MAX + 64];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, file);
    if (stat(p, &st) != 0) return 0;
    if (regular) *regular = S_ISREG(st.st_mode);
    return (long long)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
}

static const reg_info *find_info(const reg_info *v, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v[i].name, name)) return &v[i];
    return NULL;
}

// The template a chat request on this adapter is rendered with, and where it comes from.
static int template_json(strbuf *b, int has, ds_template t, const pg_base *base) {
    QL_CHECK(sb_add(b, ", \"chat_template\": "));
    QL_CHECK(sb_addf(b, "\"%s\", \"template_from\": ", ds_template_name(has ? t : base->tmpl)));
    return sb_json(b, has ? "training_record.json" : base->tmpl_from, strlen(has ? "training_record.json" : base->tmpl_from));
}

// One store folder: resolved, its adapter_config.json read (an error is shown, not fatal).
static int folder_json(strbuf *b, registry *g, const char *name, const reg_info *mem, const pg_base *base, int *first) {
    char dir[PATH_MAX];
    int rc = reg_store_path(g, name, dir, sizeof dir);
    if (rc == QL_ENOENT) return QL_OK;  // not an adapter (yet): nothing to show
    if (rc == QL_ENOMEM) return rc;
    QL_CHECK(sb_add(b, *first ? "{\"name\": " : ", {\"name\": "));
    *first = 0;
    QL_CHECK(sb_json(b, name, strlen(name)));
    if (rc) {  // a link out of the store, unreadable: say why
        QL_CHECK(sb_addf(b, ", \"in_store\": true, \"loaded\": %s, \"error\": ", mem ? "true" : "false"));
        QL_CHECK(sb_json(b, ql_errmsg(), strlen(ql_errmsg())));
        return sb_add(b, "}");
    }
    QL_CHECK(sb_add(b, ", \"in_store\": true, \"path\": "));
    QL_CHECK(sb_json(b, dir, strlen(dir)));
    QL_CHECK(sb_addf(b, ", \"loaded\": %s, \"pinned\": %s", mem ? "true" : "false", mem && mem->pinned ? "true" : "false"));
    lora_adapter cfg;
    unsigned listed = 0;
    rc = lora_peft_config(&cfg, &listed, dir);
    if (rc == QL_ENOMEM) return lora_free(&cfg), rc;
    if (rc) {
        QL_CHECK(sb_add(b, ", \"error\": "));
        QL_CHECK(sb_json(b, ql_errmsg(), strlen(ql_errmsg())));
    } else {
        QL_CHECK(sb_addf(b, ", \"rank\": %d, \"alpha\": %g, \"use_rslora\": %s, \"scaling\": %g, \"targets\": ", cfg.rank,
                         (double)cfg.alpha, cfg.use_rslora ? "true" : "false",
                         (double)lora_scaling(cfg.rank, cfg.alpha, cfg.use_rslora)));
        QL_CHECK(reg_targets_json(b, listed));
    }
    lora_free(&cfg);
    ds_template t = DS_TEMPLATE_LLAMA2;
    int has = mem ? mem->has_template : store_record_template(dir, &t);
    if (mem) t = mem->tmpl;
    QL_CHECK(template_json(b, has, t, base));
    QL_CHECK(record_json(b, dir));
    int regular = 0;
    long long m = 0;
    const char *files[] = {PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME, PEFT_RECORD_NAME, CURVE_NAME};
    for (int i = 0; i < 4; i++) {
        long long x = mtime_ms(dir, files[i], i == 3 ? &regular : NULL);
        if (x > m) m = x;
    }
    return sb_addf(b, ", \"curve\": %s, \"modified\": %lld}", regular ? "true" : "false", m);
}

int pg_store_json(strbuf *b, registry *g, const pg_base *base) {
    reg_info *mem = NULL;
    char **names = NULL;
    int n_mem = 0, n = 0;
    int rc = reg_snapshot(g, &mem, &n_mem);
    if (!rc) rc = reg_store_names(g, &names, &n);
    if (!rc) rc = sb_add(b, "{\"object\": \"qlora.store\", \"base\": {\"id\": ");
    if (!rc) rc = sb_json(b, base->id, strlen(base->id));
    if (!rc) rc = sb_addf(b, ", \"max_model_len\": %d", base->max_model_len);
    if (!rc) rc = template_json(b, 0, base->tmpl, base);
    if (!rc) rc = sb_add(b, "}, \"adapter_dir\": ");
    if (!rc) rc = g->dir ? sb_json(b, g->dir, strlen(g->dir)) : sb_add(b, "null");
    if (!rc) rc = sb_add(b, ", \"adapters\": [");
    int first = 1;
    for (int i = 0; i < n && !rc; i++) rc = folder_json(b, g, names[i], find_info(mem, n_mem, names[i]), base, &first);
    // in memory but not a folder of the store (/v1/load_lora_adapter with --allow-any-adapter-path)
    for (int i = 0; i < n_mem && !rc; i++) {
        int in_store = 0;
        for (int k = 0; k < n && !in_store; k++) in_store = !strcmp(names[k], mem[i].name);
        if (in_store) continue;
        const reg_info *r = &mem[i];
        rc = sb_add(b, first ? "{\"name\": " : ", {\"name\": ");
        first = 0;
        if (!rc) rc = sb_json(b, r->name, strlen(r->name));
        if (!rc) rc = sb_addf(b, ", \"in_store\": false, \"loaded\": true, \"pinned\": %s, \"rank\": %d, \"alpha\": %g, "
                              "\"use_rslora\": %s, \"scaling\": %g, \"targets\": ", r->pinned ? "true" : "false", r->rank,
                              (double)r->alpha, r->use_rslora ? "true" : "false", (double)r->scaling);
        if (!rc) rc = reg_targets_json(b, r->targets);
        if (!rc) rc = template_json(b, r->has_template, r->tmpl, base);
        if (!rc) rc = sb_add(b, ", \"record\": false, \"curve\": false, \"modified\": 0}");
    }
    if (!rc) rc = sb_add(b, "]}");
    for (int i = 0; i < n; i++) free(names[i]);
    free(names), free(mem);
    return rc;
}

// ---- loss.svg ----

int pg_curve_url(const char *url, char *name, size_t cap) {
    static const char pre[] = "/v1/qlora/store/", post[] = "/" CURVE_NAME;
    size_t n = strlen(url), a = sizeof pre - 1, z = sizeof post - 1;
    if (n <= a + z || strncmp(url, pre, a) || strcmp(url + n - z, post)) return 0;
    if (n - a - z >= cap) return 0;
    memcpy(name, url + a, n - a - z);
    name[n - a - z] = '\0';
    return 1;
}

int pg_curve(registry *g, const char *name, char **svg, size_t *len) {
    *svg = NULL, *len = 0;
    char dir[PATH_MAX], p[PATH_MAX + 32];
    QL_CHECK(reg_store_path(g, name, dir, sizeof dir));
    snprintf(p, sizeof p, "%s/%s", dir, CURVE_NAME);
    struct stat st;
    if (lstat(p, &st) != 0) return ql_err(QL_ENOENT, "adapter '%s' has no %s (qlora train writes one)", name, CURVE_NAME);
    if (S_ISLNK(st.st_mode) && !g->follow_symlinks) {  // a link must stay inside the store too
        char *real = realpath(p, NULL);
        int in = real && store_path_inside(g->dir, real);
        free(real);
        if (!in) return ql_err(QL_EINVAL, "adapter '%s': %s is a symbolic link out of the store; pass --follow-symlinks "
                               "to use it", name, CURVE_NAME);
    }
    if (stat(p, &st) != 0) return ql_err(QL_ENOENT, "adapter '%s': %s is a symbolic link to nothing", name, CURVE_NAME);
    if (!S_ISREG(st.st_mode)) return ql_err(QL_EFORMAT, "adapter '%s': %s is not a regular file", name, CURVE_NAME);
    if ((size_t)st.st_size > PG_CURVE_MAX)
        return ql_err(QL_EFORMAT, "adapter '%s': %s has %lld bytes, over the limit of %zu", name, CURVE_NAME,
                      (long long)st.st_size, PG_CURVE_MAX);
    return file_read_all(p, PG_CURVE_MAX, svg, len);
}
