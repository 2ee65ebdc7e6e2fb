// store.c: see store.h.
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/err.h"
#include "../common/json.h"
#include "../model/forward.h"
#include "../common/log.h"
#include "../train/peft.h"

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

// name[0..len) for a message: at most 60 bytes, control bytes and NUL as \xNN.
static void shown_name(char *out, size_t cap, const char *name, size_t len) {
    size_t k = 0;
    for (size_t i = 0; i < len && i < 60 && k + 5 < cap; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f) k += (size_t)snprintf(out + k, cap - k, "\\x%02x", c);
        else out[k++] = (char)c;
    }
    if (len > 60 && k + 4 < cap) memcpy(out + k, "...", 3), k += 3;
    out[k] = '\0';
}

int store_check_name(const char *name, size_t len) {
    const char *why = NULL;
    char buf[64];
    if (len == 0) why = "an empty name";
    else if (len >= STORE_NAME_MAX) snprintf(buf, sizeof buf, "%zu bytes", len), why = buf;
    else if (memchr(name, '\0', len)) why = "a NUL byte in it";
    else if (!strcmp(name, ".") || !strcmp(name, "..")) why = "not a folder name";
    else if (strpbrk(name, "/\\")) why = name[0] == '/' ? "an absolute path" : "a path, not a name";
    else if (name[0] == '.') why = "names starting with '.' are hidden";
    else if (strpbrk(name, ",:")) why = "',' and ':' separate --adapters items and scales";
    for (size_t i = 0; !why && i < len; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            snprintf(buf, sizeof buf, "a control byte 0x%02x", (unsigned char)name[i]), why = buf;
    if (!why) return QL_OK;
    char shown[256];
    shown_name(shown, sizeof shown, name, len);
    return ql_err(QL_EINVAL, "'%s' is not an adapter name (%s): " STORE_NAME_RULE, shown, why);
}

int store_path_inside(const char *root, const char *real) {
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/') return real[0] == '/' && real[1] != '\0';
    return !strncmp(real, root, n) && real[n] == '/' && real[n + 1] != '\0';
}

static int link_out(const char *shown, const char *target) {
    return ql_err(QL_EINVAL, "%s is a symbolic link to %s outside the store; pass --follow-symlinks to use it", shown,
                  target);
}

int store_check_inside(const char *root_real, const char *dir_real, const char *shown, int follow_symlinks) {
    if (follow_symlinks) return QL_OK;
    if (!store_path_inside(root_real, dir_real)) return link_out(shown, dir_real);
    // the files the loaders open: a link among them counts as the folder would
    static const char *const files[] = {PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME, PEFT_RECORD_NAME};
    for (int i = 0; i < 3; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir_real, files[i]);
        char *real = realpath(p, NULL);  // missing: the loader says so
        int in = !real || store_path_inside(root_real, real);
        if (!in) {
            char s[PATH_MAX + 64];
            snprintf(s, sizeof s, "%s/%s", shown, files[i]);
            int rc = link_out(s, real);
            free(real);
            return rc;
        }
        free(real);
    }
    return QL_OK;
}

int store_resolve(char **out, const char *dir, const char *name, int follow_symlinks) {
    *out = NULL;
    QL_CHECK(store_check_name(name, strlen(name)));
    char *root = realpath(dir, NULL);
    if (!root) return ql_err(QL_EIO, "--adapter-dir %s: %s", dir, strerror(errno));
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat ls;
    int rc = QL_OK;
    char *real = NULL;
    if (lstat(p, &ls) != 0) rc = ql_err(QL_ENOENT, "%s: no such adapter directory", p);
    else if (!(real = realpath(p, NULL)))
        rc = ql_err(QL_ENOENT, "%s: %s%s", p, S_ISLNK(ls.st_mode) ? "a symbolic link to nothing: " : "",
                    strerror(errno));
    if (!rc) rc = store_check_inside(root, real, p, follow_symlinks);
    if (!rc && !is_dir(real)) rc = ql_err(QL_EINVAL, "%s is not a folder", p);
    free(root);
    if (rc) free(real);
    else *out = real;
    return rc;
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
        if (de->d_name[0] == '.') continue;  // hidden: adapters being written, ".", ".."
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        char *p = malloc(len);
        if (!p) { rc = ql_err(QL_ENOMEM, "out of memory"); break; }
        snprintf(p, len, "%s/%s", dir, de->d_name);
        int sub = is_dir(p);  // a link to a folder too: store_resolve judges where it points
        free(p);
        if (!sub) continue;
        if (store_check_name(de->d_name, strlen(de->d_name))) {  // it could never be named
            log_warn("--adapter-dir %s: skipping %s", dir, ql_errmsg());
            continue;
        }
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
        b += lora_pair_bytes(&a->w[i], a->rank);
    return b;
}

int store_record_template(const char *dir, ds_template *t) {
    char p[PATH_MAX], *buf = NULL, *name = NULL;
    size_t len;
    int found = 0;
    snprintf(p, sizeof p, "%s/%s", dir, PEFT_RECORD_NAME);
    struct stat st;  // a FIFO would block the open
    if (stat(p, &st) != 0 || !S_ISREG(st.st_mode) || file_read_all(p, 1 << 20, &buf, &len)) return 0;
    json_doc d;
    if (!json_parse(&d, buf, len, p)) {
        int v = json_type(&d, 0) == JSON_OBJECT ? json_find(&d, 0, "chat_template") : -1;
        if (v >= 0 && json_type(&d, v) == JSON_STRING && !json_get_string(&d, v, "chat_template", &name, NULL))
            found = ds_template_parse(t, name) == QL_OK;
        json_free(&d);
    }
    free(name), free(buf);
    return found;
}

ds_template store_pick_template(const char *name, int has_rec, ds_template rec, int given_set, ds_template given,
                                ds_template fallback, const char *use, int *warned) {
    if (given_set && has_rec && rec != given && !(warned && *warned)) {
        log_warn("adapter %s was trained in the %s chat template; %s --chat-template %s as asked", name,
                 ds_template_name(rec), use, ds_template_name(given));
        if (warned) *warned = 1;
    }
    return given_set ? given : has_rec ? rec : fallback;
}

// Adds an entry for name at path with scale, and loads it; a failure to load is
// recorded in the entry, as is a reason given in why (not loaded at all).
static int add_entry(adapter_store *st, const model_config *c, const char *name, const char *path, float scale,
                     const char *why) {
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
    int rc = why ? QL_EINVAL : lora_load_peft_resident(&e->a, c, path);
    if (!rc) rc = fwd_check_adapter(c, &e->a);
    e->load_s = time_now() - t0;
    if (rc == QL_ENOMEM) return rc;
    if (rc) {
        snprintf(e->err, sizeof e->err, "%s", why ? why : ql_errmsg());
        lora_free(&e->a);
        log_warn("adapter %s: not loaded: %s", name, e->err);
        return QL_OK;
    }
    e->ok = 1;
    e->bytes = adapter_bytes(&e->a);
    e->has_tmpl = store_record_template(path, &e->tmpl);
    log_info("adapter %s: r %d, alpha %g, scaling %g, scale %g, %.1f MB, loaded in %.3f s", name, e->a.rank,
             (double)e->a.alpha, (double)e->a.scaling, (double)scale, e->bytes / 1e6, e->load_s);
    return QL_OK;
}

// One --adapters item: "name" or "name:scale" with a store dir, "path" or
// "path:scale" without. what names the source in messages.
static int add_item(adapter_store *st, const model_config *c, const char *dir, char *item, const char *what) {
    float scale = 1.0f;
    char *colon = strrchr(item, ':');
    if (colon) {
        char *end;
        errno = 0;
        double v = strtod(colon + 1, &end);
        if (colon[1] == '\0' || *end || errno || !(v >= 0 && v <= 100))
            return ql_err(QL_EINVAL, "%s: '%s': expected name:scale with a scale in [0, 100], found '%s'", what, item,
                          colon + 1);
        scale = (float)v, *colon = '\0';
    }
    if (dir[0]) {  // a folder of the store, and nothing else
        if (store_check_name(item, strlen(item))) return ql_err(QL_EINVAL, "%s: %s", what, ql_errmsg());
        char *real = NULL, lexical[PATH_MAX];
        snprintf(lexical, sizeof lexical, "%s/%s", dir, item);
        int rc = store_resolve(&real, dir, item, st->follow_symlinks);
        if (rc == QL_ENOMEM || rc == QL_EIO) return rc;
        rc = add_entry(st, c, item, real ? real : lexical, scale, rc ? ql_errmsg() : NULL);
        free(real);
        return rc;
    }
    // no store: a path the user gave, named after its last non-empty component
    if (!item[0]) return ql_err(QL_EINVAL, "%s: an empty path", what);
    size_t len = strlen(item);
    while (len > 1 && item[len - 1] == '/') item[--len] = '\0';
    const char *slash = strrchr(item, '/');
    const char *name = slash && slash[1] ? slash + 1 : item;
    if (store_check_name(name, strlen(name)))
        return ql_err(QL_EINVAL, "%s: '%s': its last component names the adapter, and %s", what, item, ql_errmsg());
    return add_entry(st, c, name, item, scale, NULL);
}

int store_open(adapter_store *st, const model_config *c, const char *adapter_dir, const char *list,
               int follow_symlinks) {
    memset(st, 0, sizeof *st);
    st->follow_symlinks = follow_symlinks;
    int rc = QL_OK;
    if (adapter_dir[0] && !is_dir(adapter_dir))
        return ql_err(QL_EIO, "--adapter-dir %s: not a readable directory", adapter_dir);
    if (list[0]) {
        char *copy = strdup(list), *save = NULL;
        if (!copy) return ql_err(QL_ENOMEM, "out of memory");
        // strtok_r would skip an empty item (",," or a trailing ','): split by hand
        for (char *it = copy; it && !rc; it = save) {
            save = strchr(it, ',');
            if (save) *save++ = '\0';
            rc = add_item(st, c, adapter_dir, it, "--adapters");
        }
        free(copy);
    } else if (adapter_dir[0]) {
        char **names = NULL;
        int n = 0;
        rc = list_dir(adapter_dir, &names, &n);
        for (int i = 0; i < n; i++) {
            if (!rc) rc = add_item(st, c, adapter_dir, names[i], "--adapter-dir");
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
    int rc = add_item(st, c, adapter_dir, copy, adapter_dir[0] ? "adapter" : "adapter path");
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
