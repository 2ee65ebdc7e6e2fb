// registry.c: see registry.h.
#include "registry.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/err.h"
#include "../model/forward.h"
#include "../common/json.h"
#include "../common/log.h"
#include "../infer/store.h"
#include "../train/peft.h"

int reg_init(registry *g, const model_config *c, const char *dir, int max_loras, int allow_any_path,
             int follow_symlinks) {
    memset(g, 0, sizeof *g);
    g->cfg = c, g->max_loras = max_loras, g->allow_any_path = allow_any_path, g->follow_symlinks = follow_symlinks;
    if (dir[0]) {
        g->dir = realpath(dir, NULL);
        struct stat st;
        if (!g->dir || stat(g->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            int rc = ql_err(QL_EIO, "--adapter-dir %s: not a readable directory%s%s", dir, errno ? ": " : "",
                            errno ? strerror(errno) : "");
            free(g->dir);
            g->dir = NULL;
            return rc;
        }
    }
    pthread_mutex_init(&g->mu, NULL);
    return QL_OK;
}

static void entry_free(reg_adapter *a) {
    if (!a) return;
    lora_free(&a->a);
    free(a->path);
    free(a);
}

void reg_free(registry *g) {
    for (reg_adapter *a = g->live, *n; a; a = n) n = a->next, entry_free(a);
    for (reg_adapter *a = g->retired, *n; a; a = n) n = a->next, entry_free(a);
    free(g->dir);
    pthread_mutex_destroy(&g->mu);
    memset(g, 0, sizeof *g);
}

// mtime and size of the adapter's two files, folded together; 0 when either is missing.
static uint64_t stamp_of(const char *dir) {
    uint64_t s = 0;
    const char *files[] = {PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME};
    for (int i = 0; i < 2; i++) {
        char p[PATH_MAX];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (stat(p, &st) != 0) return 0;
        s = s * 1000003u + (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec + (uint64_t)st.st_size;
    }
    return s ? s : 1;
}

// Loads path into a new entry (no lock held: loading takes milliseconds).
static int load_entry(registry *g, const char *name, const char *path, reg_adapter **out) {
    reg_adapter *a = calloc(1, sizeof *a);
    if (!a || !(a->path = strdup(path))) {
        free(a);
        return ql_err(QL_ENOMEM, "out of memory");
    }
    snprintf(a->name, sizeof a->name, "%s", name);
    a->stamp = stamp_of(path);
    double t0 = time_now();
    int rc = lora_load_peft_resident(&a->a, g->cfg, path);
    if (!rc) rc = fwd_check_adapter(g->cfg, &a->a);
    if (rc) {
        entry_free(a);
        return rc;
    }
    a->has_template = store_record_template(path, &a->tmpl);
    a->load_s = time_now() - t0;
    a->last_used = time_now();
    log_info("adapter %s: loaded from %s in %.1f ms (r %d, scaling %g%s%s)", name, path, a->load_s * 1e3, a->a.rank,
             (double)a->a.scaling, a->has_template ? ", chat template " : "",
             a->has_template ? ds_template_name(a->tmpl) : "");
    *out = a;
    return QL_OK;
}

static reg_adapter **find(registry *g, const char *name) {
    reg_adapter **p = &g->live;
    while (*p && strcmp((*p)->name, name)) p = &(*p)->next;
    return p;
}

// Moves *p from the name table to the retired list (g->mu held).
static void retire(registry *g, reg_adapter **p) {
    reg_adapter *a = *p;
    *p = a->next;
    a->next = g->retired;
    g->retired = a;
}

// Past max_loras: retire the least recently used entries no request holds (g->mu held).
static void evict(registry *g) {
    for (;;) {
        int n = 0;
        reg_adapter **lru = NULL;
        for (reg_adapter **p = &g->live; *p; p = &(*p)->next) {
            n++;
            if (!(*p)->refs && !(*p)->pinned && (!lru || (*p)->last_used < (*lru)->last_used)) lru = p;
        }
        if (n <= g->max_loras || !lru) return;
        log_info("adapter %s: unloaded (least recently used; --max-loras %d)", (*lru)->name, g->max_loras);
        g->evictions++;
        retire(g, lru);
    }
}

// name's folder in the store, resolved and checked to be inside it (infer/store.h).
static int store_path(registry *g, const char *name, char *out, size_t cap) {
    if (store_check_name(name, strlen(name))) return QL_EINVAL;
    if (!g->dir) return ql_err(QL_ENOENT, "no adapter called '%s' (the server has no --adapter-dir)", name);
    char *real = NULL;
    int rc = store_resolve(&real, g->dir, name, g->follow_symlinks);
    if (rc == QL_ENOENT) return ql_err(rc, "no adapter called '%s' (%s)", name, ql_errmsg());
    if (rc) return ql_err(rc, "adapter '%s': %s", name, ql_errmsg());
    snprintf(out, cap, "%s", real);
    free(real);
    struct stat st;
    char cfg[PATH_MAX];
    snprintf(cfg, sizeof cfg, "%s/%s", out, PEFT_CONFIG_NAME);
    if (stat(cfg, &st) != 0)
        return ql_err(QL_ENOENT, "adapter '%s': %s/%s has no %s yet (is it still training?)", name, g->dir, name,
                      PEFT_CONFIG_NAME);
    return QL_OK;
}

// Puts a (just loaded) in the table as name, unless a current one is there:
// then a is freed and that one used. Returns the entry with a reference.
static reg_adapter *insert(registry *g, reg_adapter *a, int pinned) {
    reg_adapter **p = find(g, a->name);
    if (*p && !pinned && (*p)->stamp == a->stamp) {  // loaded by another thread meanwhile
        entry_free(a);
        a = *p;
    } else {
        if (*p) retire(g, p);  // an older copy (changed files) or a replaced pinned one
        a->next = g->live;
        g->live = a;
        a->pinned = pinned;
        g->loads++;
    }
    a->refs++;
    a->last_used = time_now();
    evict(g);
    return a;
}

int reg_acquire(registry *g, const char *name, reg_adapter **out) {
    *out = NULL;
    QL_CHECK(store_check_name(name, strlen(name)));
    char path[PATH_MAX] = "";
    int pinned = 0;
    pthread_mutex_lock(&g->mu);
    reg_adapter *a = *find(g, name);
    if (a) snprintf(path, sizeof path, "%s", a->path), pinned = a->pinned;
    pthread_mutex_unlock(&g->mu);
    if (path[0]) {  // in memory: current unless its files changed
        uint64_t st = stamp_of(path);
        pthread_mutex_lock(&g->mu);
        a = *find(g, name);
        if (a && (a->stamp == st || st == 0)) {  // files gone (being rewritten): keep serving what is loaded
            a->refs++;
            a->last_used = time_now();
            *out = a;
        }
        pthread_mutex_unlock(&g->mu);
        if (*out) return QL_OK;
        if (a) log_info("adapter %s: its files changed; loading it again", name);
        else path[0] = '\0', pinned = 0;  // unloaded meanwhile
    }
    if (!path[0]) QL_CHECK(store_path(g, name, path, sizeof path));
    reg_adapter *na;
    QL_CHECK(load_entry(g, name, path, &na));
    pthread_mutex_lock(&g->mu);
    *out = insert(g, na, pinned);
    pthread_mutex_unlock(&g->mu);
    return QL_OK;
}

void reg_release(registry *g, reg_adapter *a) {
    if (!a) return;
    pthread_mutex_lock(&g->mu);
    QL_ASSERT(a->refs > 0);
    a->refs--;
    pthread_mutex_unlock(&g->mu);
}

// 1 when path's parent folder resolves to the store or inside it: path is then an
// entry of the store (its last component may be a link out of it).
static int in_store_lexically(const char *root, const char *path) {
    char *copy = strdup(path);
    if (!copy) return 0;
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/') copy[--n] = '\0';
    char *slash = strrchr(copy, '/');
    const char *parent = !slash ? "." : slash == copy ? "/" : (*slash = '\0', copy);
    char *rp = realpath(parent, NULL);
    int in = rp && (!strcmp(rp, root) || store_path_inside(root, rp));
    free(rp), free(copy);
    return in;
}

int reg_load(registry *g, const char *name, const char *path) {
    if (store_check_name(name, strlen(name))) return ql_err(QL_EINVAL, "lora_name: %s", ql_errmsg());
    char *real = realpath(path, NULL);
    if (!real) return ql_err(QL_ENOENT, "lora_path %s: %s", path, strerror(errno));
    int rc = QL_OK;
    if (g->allow_any_path) {
        // anywhere, as the option says
    } else if (g->dir && store_path_inside(g->dir, real)) {
        rc = store_check_inside(g->dir, real, path, g->follow_symlinks);  // its files may still link out
    } else if (g->dir && in_store_lexically(g->dir, path)) {
        rc = store_check_inside(g->dir, real, path, g->follow_symlinks);  // a link in the store to outside
    } else {
        rc = ql_err(QL_EINVAL, "lora_path %s: not inside --adapter-dir %s (start the server with "
                    "--allow-any-adapter-path to load from anywhere)", path, g->dir ? g->dir : "(none)");
    }
    if (rc && rc != QL_ENOMEM && strncmp(ql_errmsg(), "lora_path", 9)) rc = ql_err(rc, "lora_path: %s", ql_errmsg());
    reg_adapter *a = NULL;
    if (!rc) rc = load_entry(g, name, real, &a);
    free(real);
    QL_CHECK(rc);
    pthread_mutex_lock(&g->mu);
    a = insert(g, a, 1);
    a->refs--;
    pthread_mutex_unlock(&g->mu);
    return QL_OK;
}

int reg_unload(registry *g, const char *name) {
    if (store_check_name(name, strlen(name))) return ql_err(QL_EINVAL, "lora_name: %s", ql_errmsg());
    pthread_mutex_lock(&g->mu);
    reg_adapter **p = find(g, name);
    int found = *p != NULL;
    if (found) retire(g, p);
    pthread_mutex_unlock(&g->mu);
    if (!found) return ql_err(QL_ENOENT, "no adapter called '%s' is loaded", name);
    log_info("adapter %s: unloaded (on request)", name);
    return QL_OK;
}

void reg_collect(registry *g, void (*forget)(void *ctx, const lora_adapter *a), void *ctx) {
    pthread_mutex_lock(&g->mu);
    reg_adapter *done = NULL;
    for (reg_adapter **p = &g->retired; *p;) {
        reg_adapter *a = *p;
        if (a->refs) {
            p = &a->next;
            continue;
        }
        *p = a->next;
        a->next = done;
        done = a;
    }
    pthread_mutex_unlock(&g->mu);
    for (reg_adapter *a = done, *n; a; a = n) {
        n = a->next;
        if (forget) forget(ctx, &a->a);
        entry_free(a);
    }
}

int reg_loaded(registry *g) {
    pthread_mutex_lock(&g->mu);
    int n = 0;
    for (reg_adapter *a = g->live; a; a = a->next) n++;
    pthread_mutex_unlock(&g->mu);
    return n;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int reg_targets_json(strbuf *b, unsigned t) {
    QL_CHECK(sb_add(b, "["));
    for (int k = 0, first = 1; k < LORA_NMODULES; k++)
        if (t & (1u << k)) {
            QL_CHECK(sb_addf(b, "%s\"%s\"", first ? "" : ", ", LORA_MODULE_NAMES[k]));
            first = 0;
        }
    return sb_add(b, "]");
}

static int model_json(strbuf *b, const char *id, const char *parent, long long created, int rank, unsigned targets,
                      int loaded, const char *err) {
    int first = b->n == 0 || b->s[b->n - 1] == '[';
    QL_CHECK(sb_add(b, first ? "" : ", "));
    QL_CHECK(sb_add(b, "{\"id\": "));
    QL_CHECK(sb_json(b, id, strlen(id)));
    QL_CHECK(sb_addf(b, ", \"object\": \"model\", \"created\": %lld, \"owned_by\": \"qlora\", \"root\": ", created));
    QL_CHECK(sb_json(b, id, strlen(id)));
    QL_CHECK(sb_add(b, ", \"parent\": "));
    QL_CHECK(sb_json(b, parent, strlen(parent)));
    if (err) {
        QL_CHECK(sb_add(b, ", \"loaded\": false, \"error\": "));
        QL_CHECK(sb_json(b, err, strlen(err)));
        return sb_add(b, "}");
    }
    QL_CHECK(sb_addf(b, ", \"rank\": %d, \"targets\": ", rank));
    QL_CHECK(reg_targets_json(b, targets));
    return sb_addf(b, ", \"loaded\": %s}", loaded ? "true" : "false");
}

int reg_model_json(registry *g, strbuf *b, const char *name, const char *parent, long long created) {
    QL_CHECK(store_check_name(name, strlen(name)));
    pthread_mutex_lock(&g->mu);
    reg_adapter *a = *find(g, name);
    int loaded = a != NULL, rank = a ? a->a.rank : 0;
    unsigned targets = a ? a->a.targets : 0;
    pthread_mutex_unlock(&g->mu);
    if (loaded) return model_json(b, name, parent, created, rank, targets, 1, NULL);
    char path[PATH_MAX];
    QL_CHECK(store_path(g, name, path, sizeof path));
    lora_adapter cfg;
    unsigned listed;
    int rc = lora_peft_config(&cfg, &listed, path) ? model_json(b, name, parent, created, 0, 0, 0, ql_errmsg())
                                                   : model_json(b, name, parent, created, cfg.rank, listed, 0, NULL);
    lora_free(&cfg);
    return rc;
}

int reg_store_names(registry *g, char ***out, int *n_out) {
    char **names = NULL;
    int n = 0, cap = 0, rc = QL_OK;
    DIR *d = g->dir ? opendir(g->dir) : NULL;
    for (struct dirent *de; d && !rc && (de = readdir(d));) {
        // hidden folders (adapters being written) and names no request could give
        if (de->d_name[0] == '.' || store_check_name(de->d_name, strlen(de->d_name))) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, sizeof *nn * (size_t)cap);
            if (!nn) { rc = ql_err(QL_ENOMEM, "out of memory"); break; }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) rc = ql_err(QL_ENOMEM, "out of memory");
        else n++;
    }
    if (d) closedir(d);
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_str);
    *out = names, *n_out = n;
    return rc;
}

int reg_store_path(registry *g, const char *name, char *out, size_t cap) { return store_path(g, name, out, cap); }

int reg_snapshot(registry *g, reg_info **out, int *n_out) {
    *out = NULL, *n_out = 0;
    pthread_mutex_lock(&g->mu);
    int n = 0;
    for (reg_adapter *a = g->live; a; a = a->next) n++;
    reg_info *v = n ? calloc((size_t)n, sizeof *v) : NULL;
    if (n && !v) {
        pthread_mutex_unlock(&g->mu);
        return ql_err(QL_ENOMEM, "out of memory");
    }
    int i = 0;
    for (reg_adapter *a = g->live; a; a = a->next, i++) {
        reg_info *r = &v[i];
        snprintf(r->name, sizeof r->name, "%s", a->name);
        r->rank = a->a.rank, r->use_rslora = a->a.use_rslora, r->pinned = a->pinned, r->targets = a->a.targets;
        r->alpha = a->a.alpha, r->scaling = a->a.scaling, r->has_template = a->has_template, r->tmpl = a->tmpl;
    }
    pthread_mutex_unlock(&g->mu);
    *out = v, *n_out = n;
    return QL_OK;
}

int reg_list_json(registry *g, strbuf *b, const char *parent, long long created) {
    char **names = NULL;
    int n = 0, rc = reg_store_names(g, &names, &n);
    for (int i = 0; i < n && !rc; i++) {
        rc = reg_model_json(g, b, names[i], parent, created);
        if (rc == QL_ENOENT || rc == QL_EINVAL) rc = QL_OK;  // not an adapter (yet), or out of the store
    }
    // loaded adapters that are not folders of the store (/v1/load_lora_adapter)
    pthread_mutex_lock(&g->mu);
    for (reg_adapter *a = g->live; a && !rc; a = a->next) {
        int in_store = 0;
        for (int i = 0; i < n && !in_store; i++) in_store = !strcmp(names[i], a->name);
        if (!in_store) rc = model_json(b, a->name, parent, created, a->a.rank, a->a.targets, 1, NULL);
    }
    pthread_mutex_unlock(&g->mu);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}
