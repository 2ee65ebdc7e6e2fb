// store.c: see store.h.
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/err.h"
#include "../model/forward.h"
#include "../common/log.h"
#include "../train/peft.h"

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// The subfolders of dir, sorted (a stable order for listings and fan-out).
static int list_dir(const char *dir, char ***names_out, int *n_out) {
    DIR *d = opendir(dir);
    if (!d) return ql_err(QL_EIO, "--adapter-dir %s: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0, rc = QL_OK;
    struct dirent *de;
    while ((de = readdir(d)) && !rc) {
        if (de->d_name[0] == '.') continue;
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        char *p = malloc(len);
        if (!p) { rc = ql_err(QL_ENOMEM, "out of memory"); break; }
        snprintf(p, len, "%s/%s", dir, de->d_name);
        int sub = is_dir(p);
        free(p);
        if (!sub) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, sizeof(char *) * (size_t)cap);
            if (!nn) { rc = ql_err(QL_ENOMEM, "out of memory"); break; }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) rc = ql_err(QL_ENOMEM, "out of memory");
        else n++;
    }
    closedir(d);
    if (n > 1) qsort(names, (size_t)n, sizeof(char *), cmp_str);
    *names_out = names, *n_out = n;
    return rc;
}

static size_t adapter_bytes(const lora_adapter *a) {
    size_t b = 0;
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++)
        if (a->w[i].A) b += sizeof(float) * (size_t)a->rank * (a->w[i].in + a->w[i].out);
    return b;
}

// Adds an entry for name at path with scale, and loads it (a failure is recorded).
static int add_entry(adapter_store *st, const model_config *c, const char *name, const char *path, float scale) {
    if (strlen(name) >= STORE_NAME_MAX) return ql_err(QL_EINVAL, "--adapters: name '%s' is too long", name);
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->e[i].name, name))
            return ql_err(QL_EINVAL, "--adapters: '%s' is named twice (names are the folders' last components)", name);
    store_entry *ne = realloc(st->e, sizeof(store_entry) * (size_t)(st->n + 1));
    if (!ne) return ql_err(QL_ENOMEM, "out of memory");
    st->e = ne;
    store_entry *e = &st->e[st->n];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    if (!(e->path = strdup(path))) return ql_err(QL_ENOMEM, "out of memory");
    e->scale = scale;
    e->serial = ++st->serials;
    st->n++;
    double t0 = time_now();
    int rc = lora_load_peft(&e->a, c, path);
    if (!rc) rc = fwd_check_adapter(c, &e->a);
    e->load_s = time_now() - t0;
    if (rc == QL_ENOMEM) return rc;
    if (rc) {
        snprintf(e->err, sizeof e->err, "%s", ql_errmsg());
        lora_free(&e->a);
        log_warn("adapter %s: not loaded: %s", name, e->err);
        return QL_OK;
    }
    e->ok = 1;
    e->bytes = adapter_bytes(&e->a);
    log_info("adapter %s: r %d, alpha %g, scaling %g, scale %g, %.1f MB, loaded in %.3f s", name, e->a.rank,
             (double)e->a.alpha, (double)e->a.scaling, (double)scale, e->bytes / 1e6, e->load_s);
    return QL_OK;
}

// One --adapters item: "name", "name:scale", "path" or "path:scale".
static int add_item(adapter_store *st, const model_config *c, const char *dir, char *item) {
    float scale = 1.0f;
    char *colon = strrchr(item, ':');
    if (colon) {
        char *end;
        errno = 0;
        double v = strtod(colon + 1, &end);
        if (colon[1] == '\0' || *end || errno || !(v >= 0 && v <= 100))
            return ql_err(QL_EINVAL, "--adapters: '%s': expected name:scale with a scale in [0, 100], found '%s'",
                          item, colon + 1);
        scale = (float)v, *colon = '\0';
    }
    if (!item[0]) return ql_err(QL_EINVAL, "--adapters: an empty name");
    char path[4096];
    int by_path = strchr(item, '/') != NULL || !dir[0];
    if (by_path) snprintf(path, sizeof path, "%s", item);
    else snprintf(path, sizeof path, "%s/%s", dir, item);
    const char *name = item;
    if (by_path) {  // the last non-empty component
        size_t len = strlen(item);
        while (len > 1 && item[len - 1] == '/') item[--len] = '\0';
        const char *slash = strrchr(item, '/');
        name = slash && slash[1] ? slash + 1 : item;
    }
    return add_entry(st, c, name, path, scale);
}

int store_open(adapter_store *st, const model_config *c, const char *adapter_dir, const char *list) {
    memset(st, 0, sizeof *st);
    int rc = QL_OK;
    if (adapter_dir[0] && !is_dir(adapter_dir))
        return ql_err(QL_EIO, "--adapter-dir %s: not a readable directory", adapter_dir);
    if (list[0]) {
        char *copy = strdup(list), *save = NULL;
        if (!copy) return ql_err(QL_ENOMEM, "out of memory");
        for (char *it = strtok_r(copy, ",", &save); it && !rc; it = strtok_r(NULL, ",", &save))
            rc = add_item(st, c, adapter_dir, it);
        free(copy);
    } else if (adapter_dir[0]) {
        char **names = NULL;
        int n = 0;
        rc = list_dir(adapter_dir, &names, &n);
        for (int i = 0; i < n; i++) {
            if (!rc) {
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", adapter_dir, names[i]);
                rc = add_entry(st, c, names[i], path, 1.0f);
            }
            free(names[i]);
        }
        free(names);
        if (!rc && n == 0) rc = ql_err(QL_EINVAL, "--adapter-dir %s: no adapter folders in it", adapter_dir);
    }
    if (rc) store_free(st);
    return rc;
}

int store_add(adapter_store *st, const model_config *c, const char *adapter_dir, const char *item) {
    char *copy = strdup(item);
    if (!copy) return ql_err(QL_ENOMEM, "out of memory");
    int rc = add_item(st, c, adapter_dir, copy);
    free(copy);
    return rc;
}

int store_drop(adapter_store *st, const char *name) {
    for (int i = 0; i < st->n; i++) {
        if (strcmp(st->e[i].name, name)) continue;
        lora_free(&st->e[i].a);
        free(st->e[i].path);
        memmove(st->e + i, st->e + i + 1, sizeof *st->e * (size_t)(st->n - i - 1));
        st->n--;
        log_info("adapter %s: unloaded", name);
        return QL_OK;
    }
    return ql_err(QL_EINVAL, "no adapter called '%s' in the store", name);
}

void store_free(adapter_store *st) {
    for (int i = 0; i < st->n; i++) {
        lora_free(&st->e[i].a);
        free(st->e[i].path);
    }
    free(st->e);
    memset(st, 0, sizeof *st);
}

const store_entry *store_find(const adapter_store *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (st->e[i].ok && !strcmp(st->e[i].name, name)) return &st->e[i];
    return NULL;
}

int store_loaded(const adapter_store *st) {
    int n = 0;
    for (int i = 0; i < st->n; i++) n += st->e[i].ok;
    return n;
}
