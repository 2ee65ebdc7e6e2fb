// peft.c: see peft.h. The layout and why it conforms: docs/formats.md.
#include "peft.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/dtype.h"
#include "../common/err.h"
#include "../common/fileio.h"
#include "../common/json.h"
#include "../common/safetensors.h"
#include "../kernels/cpu/matmul_cpu.h"
#include "../model/model.h"

#define PEFT_PREFIX "base_model.model.model.layers."
#define PEFT_NAME_MAX 128
#define PEFT_CONFIG_LIMIT (1u << 20)  // adapter_config.json is a few hundred bytes
#define PEFT_RANK_MAX 4096            // r: far past any LoRA in use (PEFT's largest examples are 256)
#define PEFT_ALPHA_MAX 1e6

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

// mkdir -p: every missing component is created; an existing non-directory is an error.
static int mkdir_p(const char *dir) {
    char *p = strdup(dir);
    if (!p) return ql_err(QL_ENOMEM, "out of memory");
    for (char *s = p + 1; ; s++) {
        if (*s != '/' && *s != 0) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return ql_err(QL_EIO, "%s: cannot create directory: %s", dir, strerror(e));
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return ql_err(QL_EIO, "%s: not a directory", dir);
    return QL_OK;
}

// The shortest decimal that reads back as the same float, always with a '.'
// or an exponent so that Python reads a float (lora_alpha integral: an int, as
// PEFT writes it).
static void fmt_float(char *buf, size_t n, float v, int int_ok) {
    if (int_ok && v == floorf(v) && fabsf(v) < 1e9f) { snprintf(buf, n, "%d", (int)v); return; }
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", n - strlen(buf) - 1);
}

static unsigned present_modules(const lora_adapter *a) {
    unsigned m = 0;
    for (int l = 0; l < a->n_layers; l++)
        for (int k = 0; k < LORA_NMODULES; k++)
            if (a->w[l * LORA_NMODULES + k].A) m |= 1u << k;
    return m;
}

int lora_base_model_name(char **name, const char *base) {
    *name = NULL;
    struct stat st;
    size_t n = strlen(base);
    if (stat(base, &st) == 0 && model_name_of(name, base) == QL_OK) return QL_OK;
    if (n > 4 && !strcmp(base + n - 4, ".qlb")) {  // a base file no longer there: its stem
        const char *b = strrchr(base, '/') ? strrchr(base, '/') + 1 : base;
        *name = strndup(b, strlen(b) - 4);
    } else {
        *name = strdup(base);
    }
    return *name ? QL_OK : ql_err(QL_ENOMEM, "out of memory");
}

// adapter_config.json as PEFT writes it (PeftConfigMixin.save_pretrained:
// json.dumps(indent=2, sort_keys=True)), malloc'd. base_name: the model's name
// (lora_base_model_name of a->base_model), or NULL.
static char *config_json(const lora_adapter *a, const char *base_name) {
    char alpha[32], drop[32], mods[256] = "";
    fmt_float(alpha, sizeof alpha, a->alpha, 1);
    fmt_float(drop, sizeof drop, a->dropout, 0);
    unsigned m = present_modules(a);
    for (int k = 0; k < LORA_NMODULES; k++) {
        if (!(m & (1u << k))) continue;
        size_t len = strlen(mods);
        snprintf(mods + len, sizeof mods - len, "%s\n    \"%s\"", len ? "," : "", LORA_MODULE_NAMES[k]);
    }
    char *base = base_name ? json_quote(base_name) : strdup("null");
    if (!base) return NULL;
    size_t n = strlen(base) + strlen(mods) + 1024;
    char *s = malloc(n);
    if (s)
        snprintf(s, n,
                 "{\n"
                 "  \"alpha_pattern\": {},\n"
                 "  \"base_model_name_or_path\": %s,\n"
                 "  \"bias\": \"none\",\n"
                 "  \"fan_in_fan_out\": false,\n"
                 "  \"inference_mode\": true,\n"
                 "  \"init_lora_weights\": true,\n"
                 "  \"layers_pattern\": null,\n"
                 "  \"layers_to_transform\": null,\n"
                 "  \"lora_alpha\": %s,\n"
                 "  \"lora_dropout\": %s,\n"
                 "  \"modules_to_save\": null,\n"
                 "  \"peft_type\": \"LORA\",\n"
                 "  \"r\": %d,\n"
                 "  \"rank_pattern\": {},\n"
                 "  \"revision\": null,\n"
                 "  \"target_modules\": [%s\n  ],\n"
                 "  \"task_type\": \"CAUSAL_LM\",\n"
                 "  \"use_dora\": false,\n"
                 "  \"use_rslora\": %s\n"
                 "}\n",
                 base, alpha, drop, a->rank, mods, a->use_rslora ? "true" : "false");
    free(base);
    return s;
}

int lora_save_peft(const lora_adapter *a, const char *dir, const char *extra_record_json) {
    return lora_save_peft_as(a, dir, extra_record_json, DT_F16);
}

int lora_write_peft_files(const lora_adapter *a, const char *dir, const char *extra_record_json, dtype type) {
    QL_ASSERT(a && a->w && dir);
    if (type != DT_F16 && type != DT_BF16 && type != DT_F32)
        return ql_err(QL_EINVAL, "%s: adapters are written in F16, BF16 or F32", dir);
    int nt = 0;
    size_t elems = 0;
    for (int l = 0; l < a->n_layers; l++)
        for (int k = 0; k < LORA_NMODULES; k++) {
            const lora_pair *p = &a->w[l * LORA_NMODULES + k];
            if (!p->A) continue;
            QL_ASSERT(p->B);
            nt += 2;
            elems += (size_t)a->rank * p->in + (size_t)p->out * a->rank;
        }
    if (!nt) return ql_err(QL_EINVAL, "%s: the adapter targets no module", dir);
    st_out *t = calloc((size_t)nt, sizeof *t);
    char(*names)[PEFT_NAME_MAX] = calloc((size_t)nt, PEFT_NAME_MAX);
    size_t es = dtype_size(type);
    uint8_t *h = malloc(elems * es);
    char *bname = NULL, *cfg = NULL;
    int rc = a->base_model ? lora_base_model_name(&bname, a->base_model) : QL_OK;
    if (!rc) cfg = config_json(a, bname);
    free(bname);
    char *wpath = path_join(dir, PEFT_WEIGHTS_NAME), *cpath = path_join(dir, PEFT_CONFIG_NAME);
    if (!rc && (!t || !names || !h || !cfg || !wpath || !cpath)) rc = ql_err(QL_ENOMEM, "out of memory");
    int i = 0;
    size_t off = 0;
    for (int l = 0; !rc && l < a->n_layers; l++)
        for (int k = 0; k < LORA_NMODULES; k++) {
            const lora_pair *p = &a->w[l * LORA_NMODULES + k];
            if (!p->A) continue;
            for (int ab = 0; ab < 2; ab++, i++) {
                const float *src = ab ? p->B : p->A;
                int64_t rows = ab ? p->out : a->rank, cols = ab ? a->rank : p->in;
                snprintf(names[i], PEFT_NAME_MAX, PEFT_PREFIX "%d.%s.%s.lora_%c.weight", l, LORA_MODULE_PARENTS[k],
                         LORA_MODULE_NAMES[k], ab ? 'B' : 'A');
                uint8_t *dst = h + off * es;
                for (int64_t e = 0; e < rows * cols; e++) {
                    if (type == DT_F32) memcpy(dst + 4 * e, &src[e], 4);
                    else {
                        uint16_t v = type == DT_F16 ? f32_to_f16(src[e]) : f32_to_bf16(src[e]);
                        memcpy(dst + 2 * e, &v, 2);
                    }
                }
                t[i] = (st_out){.name = names[i], .type = type, .ndim = 2, .shape = {rows, cols}, .data = dst};
                off += (size_t)(rows * cols);
            }
        }
    // safetensors metadata {"format": "pt"}, as PEFT's save_pretrained writes it
    static const char *const meta[] = {"format", "pt", NULL};
    if (!rc) rc = st_write(wpath, t, nt, meta, NULL, 0, -1);
    if (!rc) rc = file_write_atomic(cpath, cfg, strlen(cfg));
    if (!rc && extra_record_json) {
        char *rpath = path_join(dir, PEFT_RECORD_NAME);
        rc = rpath ? file_write_atomic(rpath, extra_record_json, strlen(extra_record_json))
                   : ql_err(QL_ENOMEM, "out of memory");
        free(rpath);
    }
    free(t), free(names), free(h), free(cfg), free(wpath), free(cpath);
    return rc;
}

// The files an adapter directory may hold: what qlora writes, and a README
// (Hugging Face's hub adds one). Anything else makes it not an adapter directory.
static const char *const ADAPTER_FILES[] = {PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME, PEFT_RECORD_NAME, "loss.svg",
                                            "metrics.jsonl", "checkpoint.safetensors", "README.md", NULL};

static int dir_kind(const char *dir, int *kind);

int lora_peft_dir_kind(const char *dir_arg, int *kind) {
    // "a/link/" would follow the link: the name without its trailing slashes is what gets replaced
    char *dir = strdup(dir_arg);
    if (!dir) return ql_err(QL_ENOMEM, "out of memory");
    for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/';) dir[--n] = 0;
    int rc = dir_kind(dir, kind);
    free(dir);
    return rc;
}

// checkpoints/ of an adapter directory dir holds checkpoint-<step>.safetensors
// files (and temp files of ours), nothing else.
static int checkpoints_kind(const char *dir, const char *sub) {
    DIR *d = opendir(sub);
    if (!d) return ql_err(QL_EIO, "%s: cannot list: %s", sub, strerror(errno));
    struct dirent *de;
    int rc = QL_OK;
    while ((de = readdir(d)) && !rc) {
        const char *e = de->d_name;
        if (!strcmp(e, ".") || !strcmp(e, "..") || (e[0] == '.' && strstr(e, ".tmp-"))) continue;
        char *p = path_join(sub, e);
        struct stat st;
        if (!p) rc = ql_err(QL_ENOMEM, "out of memory");
        else if (peft_checkpoint_step(e) < 0 || lstat(p, &st) != 0 || !S_ISREG(st.st_mode))
            rc = ql_err(QL_EINVAL, "%s: not an adapter directory (its %s/ holds %s, which qlora does not write); not "
                        "replaced", dir, PEFT_CHECKPOINTS_DIR, e);
        free(p);
    }
    closedir(d);
    return rc;
}

long peft_checkpoint_step(const char *name) {
    const char *pre = "checkpoint-", *suf = ".safetensors";
    size_t n = strlen(name), lp = strlen(pre), ls = strlen(suf);
    if (n <= lp + ls || strncmp(name, pre, lp) || strcmp(name + n - ls, suf)) return -1;
    long v = 0;
    for (size_t i = lp; i < n - ls; i++) {
        if (name[i] < '0' || name[i] > '9' || v > 100000000L) return -1;
        v = v * 10 + (name[i] - '0');
    }
    return v;
}

static int dir_kind(const char *dir, int *kind) {
    struct stat st;
    *kind = PEFT_DIR_ABSENT;
    if (lstat(dir, &st) != 0) {
        if (errno == ENOENT) return QL_OK;
        return ql_err(QL_EIO, "%s: %s", dir, strerror(errno));
    }
    if (S_ISLNK(st.st_mode)) return ql_err(QL_EINVAL, "%s: is a symbolic link; give the directory it points to", dir);
    if (!S_ISDIR(st.st_mode)) return ql_err(QL_EINVAL, "%s: exists and is not a directory", dir);
    DIR *d = opendir(dir);
    if (!d) return ql_err(QL_EIO, "%s: cannot list: %s", dir, strerror(errno));
    int n = 0, rc = QL_OK;
    struct dirent *de;
    while ((de = readdir(d)) && !rc) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        int known = 0;
        for (int i = 0; ADAPTER_FILES[i]; i++) known |= !strcmp(de->d_name, ADAPTER_FILES[i]);
        known |= de->d_name[0] == '.' && strstr(de->d_name, ".tmp-") != NULL;  // a temp file of ours (fileio.h)
        char *p = path_join(dir, de->d_name);
        if (p && !strcmp(de->d_name, PEFT_CHECKPOINTS_DIR) && lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rc = checkpoints_kind(dir, p);  // train's checkpoints/: checkpoint-<step>.safetensors files only
        else if (!p) rc = ql_err(QL_ENOMEM, "out of memory");
        else if (!known || lstat(p, &st) != 0 || !S_ISREG(st.st_mode))
            rc = ql_err(QL_EINVAL, "%s: not an adapter directory (it holds %s, which qlora does not write); not replaced",
                        dir, de->d_name);
        free(p);
        n++;
    }
    closedir(d);
    if (rc || n == 0) return rc;  // an empty directory: nothing to lose
    lora_adapter a = {0};
    unsigned listed;
    rc = lora_peft_config(&a, &listed, dir);
    lora_free(&a);
    if (rc) return ql_err(QL_EINVAL, "%s: not an adapter directory, not replaced (%s)", dir, ql_errmsg());
    *kind = PEFT_DIR_ADAPTER;
    return QL_OK;
}

int lora_save_peft_as(const lora_adapter *a, const char *dir, const char *extra_record_json, dtype type) {
    QL_ASSERT(a && a->w && dir);
    int kind;
    QL_CHECK(lora_peft_dir_kind(dir, &kind));
    char *parent = strdup(dir);
    if (!parent) return ql_err(QL_ENOMEM, "out of memory");
    char *slash = strrchr(parent, '/');
    int rc = QL_OK;
    if (slash && slash != parent) *slash = 0, rc = mkdir_p(parent);
    free(parent);
    adir d;
    if (!rc) rc = adir_open(&d, dir);
    if (rc) return rc;
    rc = lora_write_peft_files(a, d.tmp, extra_record_json, type);
    return rc ? adir_fail(&d, rc) : adir_commit(&d);
}

// ---- reading ----

// Parses a PEFT tensor name: PREFIX {l}.{parent}.{module}.lora_{A|B}[.default].weight.
// Returns 0 and sets *layer, *k, *is_b, or -1 when the name is not of that form
// (the layer index is not range-checked here).
static int parse_name(const char *name, long *layer, int *k, int *is_b) {
    size_t pl = strlen(PEFT_PREFIX);
    if (strncmp(name, PEFT_PREFIX, pl)) return -1;
    const char *p = name + pl;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9')) return -1;
    char *e;
    errno = 0;
    long l = strtol(p, &e, 10);
    if (errno || *e != '.' || l > 1000000) return -1;
    p = e + 1;
    for (int m = 0; m < LORA_NMODULES; m++) {
        size_t np = strlen(LORA_MODULE_PARENTS[m]), nm = strlen(LORA_MODULE_NAMES[m]);
        if (strncmp(p, LORA_MODULE_PARENTS[m], np) || p[np] != '.' || strncmp(p + np + 1, LORA_MODULE_NAMES[m], nm) ||
            p[np + 1 + nm] != '.')
            continue;
        const char *r = p + np + 1 + nm + 1;
        if (strncmp(r, "lora_", 5) || (r[5] != 'A' && r[5] != 'B')) return -1;
        const char *tail = r + 6;
        // PEFT's get_peft_model_state_dict removes the adapter name; a raw
        // state_dict keeps it as ".default": both are accepted.
        if (strcmp(tail, ".weight") && strcmp(tail, ".default.weight")) return -1;
        *layer = l, *k = m, *is_b = r[5] == 'B';
        return 0;
    }
    return -1;
}

// Maps the whole pages inside [p, p+bytes) in one call (MADV_POPULATE_WRITE,
// Linux 5.14) instead of a page fault per page on first touch: a fresh 160 MB
// adapter is 40,000 faults of 4 KiB, and this cut a one-thread load by 16% on
// the development VM. Only a hint: an older kernel or an error leaves the faults.
static void prefault(void *p, size_t bytes) {
#ifdef MADV_POPULATE_WRITE
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t b = ((uintptr_t)p + pg - 1) & ~(pg - 1), e = ((uintptr_t)p + bytes) & ~(pg - 1);
    if (e > b) (void)madvise((void *)b, e - b, MADV_POPULATE_WRITE);
#else
    (void)p, (void)bytes;
#endif
}

// t (F16, BF16 or F32, 2-D) into dst as fp32: the CPU backend's exact SIMD
// conversion (nf4_dequantize_rows takes every weight type), through a qweight view.
// Returns the index of the first NaN or Inf in dst, or -1 when every value is finite.
static int64_t to_f32(float *dst, const st_tensor *t) {
    prefault(dst, sizeof(float) * (size_t)t->numel);
    qweight w = {.type = t->type, .rows = t->shape[0], .cols = t->shape[1], .data = t->data};
    nf4_dequantize_rows(dst, &w, 0, w.rows);
    return dtype_first_nonfinite(dst, DT_F32, t->numel);
}

// Element i of t as fp32 (exact), for a message about it
static float value_f32(const st_tensor *t, int64_t i) {
    if (t->type == DT_F16) return f16_to_f32(((const uint16_t *)t->data)[i]);
    if (t->type == DT_BF16) return bf16_to_f32(((const uint16_t *)t->data)[i]);
    return ((const float *)t->data)[i];
}

// A file the reader is about to open must be a regular one: a FIFO or a device
// named adapter_config.json would block the open or never end.
static int regular_file(const char *path, const char *dir, const char *name) {
    struct stat st;
    if (stat(path, &st) != 0)
        return ql_err(QL_EIO, "%s: missing %s (not a PEFT adapter directory)", dir, name);
    if (!S_ISREG(st.st_mode))
        return ql_err(QL_EFORMAT, "%s: not a regular file (a %s)", path,
                      S_ISDIR(st.st_mode) ? "directory" : S_ISFIFO(st.st_mode) ? "FIFO" : S_ISSOCK(st.st_mode) ? "socket"
                      : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "device" : "special file");
    return QL_OK;
}

// Reads adapter_config.json into a's scalars; *listed gets the modules named
// in target_modules (LORA_ALL when it is a pattern string we do not interpret).
static int read_config(lora_adapter *a, unsigned *listed, const char *path) {
    char *buf;
    size_t len;
    int rc = file_read_all(path, PEFT_CONFIG_LIMIT, &buf, &len);
    if (rc) return rc;
    json_doc d;
    rc = json_parse(&d, buf, len, path);
    if (rc) { free(buf); return rc; }
    if (json_type(&d, 0) != JSON_OBJECT) {
        rc = ql_err(QL_EFORMAT, "%s: expected a JSON object, found %s", path, json_type_name(&d, 0));
        goto done;
    }
    int v;
    char *s = NULL;
    // peft_type: "LORA" (PeftType); anything else is another method
    if ((v = json_find(&d, 0, "peft_type")) < 0) { rc = ql_err(QL_EFORMAT, "%s: missing field 'peft_type'", path); goto done; }
    if ((rc = json_get_string(&d, v, "peft_type", &s, NULL))) goto done;
    if (strcmp(s, "LORA")) {
        rc = ql_err(QL_EUNSUP, "%s: field 'peft_type': expected \"LORA\", found \"%s\"", path, s);
        free(s);
        goto done;
    }
    free(s);
    long long r;
    if ((v = json_find(&d, 0, "r")) < 0) { rc = ql_err(QL_EFORMAT, "%s: missing field 'r'", path); goto done; }
    if ((rc = json_get_int(&d, v, "r", &r))) goto done;
    if (r < 1 || r > PEFT_RANK_MAX) {
        rc = ql_err(QL_EFORMAT, "%s: field 'r': expected 1..%d, found %lld", path, PEFT_RANK_MAX, r);
        goto done;
    }
    a->rank = (int)r;
    double x;
    if ((v = json_find(&d, 0, "lora_alpha")) < 0) { rc = ql_err(QL_EFORMAT, "%s: missing field 'lora_alpha'", path); goto done; }
    if ((rc = json_get_double(&d, v, "lora_alpha", &x))) goto done;
    // PEFT's alphas are small multiples of r; past 1e6 the scaling is a corrupt file, not a choice
    if (!(x > 0 && x <= PEFT_ALPHA_MAX)) {
        rc = ql_err(QL_EFORMAT, "%s: field 'lora_alpha': expected a number in (0, %g], found %g", path, PEFT_ALPHA_MAX, x);
        goto done;
    }
    a->alpha = (float)x;
    if ((v = json_find(&d, 0, "lora_dropout")) >= 0 && !json_is_null(&d, v)) {
        if ((rc = json_get_double(&d, v, "lora_dropout", &x))) goto done;
        if (!(x >= 0 && x < 1)) { rc = ql_err(QL_EFORMAT, "%s: field 'lora_dropout': expected [0, 1), found %g", path, x); goto done; }
        a->dropout = (float)x;
    }
    if ((v = json_find(&d, 0, "use_rslora")) >= 0 && !json_is_null(&d, v))
        if ((rc = json_get_bool(&d, v, "use_rslora", &a->use_rslora))) goto done;
    // What we cannot apply: a transposed layout, trained biases, DoRA, extra
    // trained modules, per-module ranks or alphas.
    int b = 0;
    if ((v = json_find(&d, 0, "fan_in_fan_out")) >= 0 && !json_is_null(&d, v)) {
        if ((rc = json_get_bool(&d, v, "fan_in_fan_out", &b))) goto done;
        if (b) { rc = ql_err(QL_EUNSUP, "%s: field 'fan_in_fan_out': expected false (weights stored (out,in)), found true", path); goto done; }
    }
    if ((v = json_find(&d, 0, "use_dora")) >= 0 && !json_is_null(&d, v)) {
        if ((rc = json_get_bool(&d, v, "use_dora", &b))) goto done;
        if (b) { rc = ql_err(QL_EUNSUP, "%s: field 'use_dora': expected false, found true (DoRA is not supported)", path); goto done; }
    }
    if ((v = json_find(&d, 0, "bias")) >= 0 && !json_is_null(&d, v)) {
        if ((rc = json_get_string(&d, v, "bias", &s, NULL))) goto done;
        if (strcmp(s, "none")) {
            rc = ql_err(QL_EUNSUP, "%s: field 'bias': expected \"none\", found \"%s\"", path, s);
            free(s);
            goto done;
        }
        free(s);
    }
    // PiSSA, OLoRA, CorDA and LoftQ initialise from the base and subtract that from
    // it: such an adapter only fits the modified base, unless PEFT converted it on
    // save (path_initial_model_for_weight_conversion), which writes plain LoRA.
    if ((v = json_find(&d, 0, "init_lora_weights")) >= 0 && json_type(&d, v) == JSON_STRING) {
        if ((rc = json_get_string(&d, v, "init_lora_weights", &s, NULL))) goto done;
        if (!strncmp(s, "pissa", 5) || !strcmp(s, "olora") || !strcmp(s, "corda") || !strcmp(s, "loftq")) {
            rc = ql_err(QL_EUNSUP,
                        "%s: field 'init_lora_weights': \"%s\" adapters need the base their initialisation modified; "
                        "save them with PEFT's path_initial_model_for_weight_conversion to get a plain LoRA",
                        path, s);
            free(s);
            goto done;
        }
        free(s);
    }
    static const char *const empty_fields[] = {"modules_to_save", "rank_pattern", "alpha_pattern"};
    for (int i = 0; i < 3; i++)
        if ((v = json_find(&d, 0, empty_fields[i])) >= 0 && !json_is_null(&d, v) &&
            (json_type(&d, v) == JSON_PRIMITIVE || json_type(&d, v) == JSON_STRING || json_size(&d, v) > 0)) {
            rc = ql_err(QL_EUNSUP, "%s: field '%s': expected null or empty, found %s%s", path, empty_fields[i],
                        json_type_name(&d, v), json_size(&d, v) > 0 ? " with entries" : "");
            goto done;
        }
    // target_modules: a list of module names, or a string (PEFT: a regex, or "all-linear")
    if ((v = json_find(&d, 0, "target_modules")) < 0 || json_is_null(&d, v)) {
        rc = ql_err(QL_EFORMAT, "%s: missing field 'target_modules'", path);
        goto done;
    }
    *listed = 0;
    if (json_type(&d, v) == JSON_STRING) {
        if ((rc = json_get_string(&d, v, "target_modules", &s, NULL))) goto done;
        *listed = LORA_ALL;  // a pattern: the tensors say which modules are targeted
        for (int k = 0; k < LORA_NMODULES; k++)
            if (!strcmp(s, LORA_MODULE_NAMES[k])) *listed = 1u << k;
        free(s);
    } else if (json_type(&d, v) == JSON_ARRAY) {
        for (int i = 0; i < json_size(&d, v); i++) {
            if ((rc = json_get_string(&d, json_item(&d, v, i), "target_modules", &s, NULL))) goto done;
            int found = -1;
            for (int k = 0; k < LORA_NMODULES; k++)
                if (!strcmp(s, LORA_MODULE_NAMES[k])) found = k;
            if (found < 0) {
                rc = ql_err(QL_EUNSUP, "%s: field 'target_modules': expected names among q_proj, k_proj, v_proj, "
                                       "o_proj, gate_proj, up_proj, down_proj, found \"%s\"", path, s);
                free(s);
                goto done;
            }
            free(s);
            *listed |= 1u << found;
        }
    } else {
        rc = ql_err(QL_EFORMAT, "%s: field 'target_modules': expected a list of strings or a string, found %s", path,
                    json_type_name(&d, v));
        goto done;
    }
    if ((v = json_find(&d, 0, "base_model_name_or_path")) >= 0 && !json_is_null(&d, v))
        if ((rc = json_get_string(&d, v, "base_model_name_or_path", &a->base_model, NULL))) goto done;
done:
    json_free(&d);
    free(buf);
    return rc;
}

// Two passes over the tensors: the first, in file order (so that the first bad
// tensor is the one reported), checks every name, layer, module, dtype, shape and
// duplicate and allocates the fp32 arrays; the second converts, OpenMP across
// tensors. Most of a load is the first touch of the fresh arrays (a page fault
// and the kernel zeroing each page), which spreads over the threads too.
//
// Resident (a served adapter): nothing is converted or copied; the pairs point
// into the mapped file, which a keeps open (a->res_file), and the second pass
// only checks that every value is finite.
static int read_tensors(lora_adapter *a, const model_config *c, unsigned listed, const char *path, int resident) {
    st_file local, *fp = &local;
    if (resident) {
        fp = a->res_file = calloc(1, sizeof(st_file));
        if (!fp) return ql_err(QL_ENOMEM, "out of memory");
    }
    QL_CHECK(st_open(fp, path));  // on error, the caller's lora_free frees res_file
    float **dsts = calloc((size_t)fp->n + 1, sizeof *dsts);  // fp->n may be 0
    int rc = dsts ? QL_OK : ql_err(QL_ENOMEM, "out of memory");
    for (int i = 0; i < fp->n && !rc; i++) {
        const st_tensor *t = &fp->t[i];
        long l;
        int k, is_b;
        if (parse_name(t->name, &l, &k, &is_b)) {
            rc = ql_err(QL_EFORMAT, "%s: tensor '%s': unknown name (expected " PEFT_PREFIX
                        "{layer}.{self_attn|mlp}.{q|k|v|o|gate|up|down}_proj.lora_{A|B}.weight)", path, t->name);
            break;
        }
        if (l >= c->n_layers) {
            rc = ql_err(QL_EFORMAT, "%s: tensor '%s': layer %ld, but the model has %d layers (0..%d)", path, t->name, l,
                        c->n_layers, c->n_layers - 1);
            break;
        }
        if (!(listed & (1u << k))) {
            rc = ql_err(QL_EFORMAT, "%s: tensor '%s': module %s is not in adapter_config.json's target_modules", path,
                        t->name, LORA_MODULE_NAMES[k]);
            break;
        }
        if (t->type != DT_F16 && t->type != DT_BF16 && t->type != DT_F32) {
            rc = ql_err(QL_EUNSUP, "%s: tensor '%s': dtype %s, expected F16, BF16 or F32", path, t->name,
                        dtype_name(t->type));
            break;
        }
        lora_pair *p = &a->w[l * LORA_NMODULES + k];
        int64_t rows = is_b ? p->out : a->rank, cols = is_b ? a->rank : p->in;
        if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols) {
            char found[64] = "[";
            for (int d = 0; d < t->ndim; d++) {
                size_t n = strlen(found);
                snprintf(found + n, sizeof found - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            }
            strncat(found, "]", sizeof found - strlen(found) - 1);
            rc = ql_err(QL_EFORMAT, "%s: tensor '%s': shape %s, expected [%lld, %lld] (%s with r = %d from %s, %s %d)",
                        path, t->name, found, (long long)rows, (long long)cols, is_b ? "B [out, r]" : "A [r, in]",
                        a->rank, PEFT_CONFIG_NAME, is_b ? "out" : "in", is_b ? p->out : p->in);
            break;
        }
        float **dst = is_b ? &p->B : &p->A;
        const void **rdst = is_b ? &p->rB : &p->rA;
        if (*dst || *rdst) {
            rc = ql_err(QL_EFORMAT, "%s: tensor '%s': a second lora_%c for layer %ld %s", path, t->name,
                        is_b ? 'B' : 'A', l, LORA_MODULE_NAMES[k]);
            break;
        }
        if (resident) {
            *rdst = t->data;
            *(is_b ? &p->tB : &p->tA) = t->type;
            continue;
        }
        *dst = malloc(sizeof(float) * (size_t)t->numel);
        if (!*dst) { rc = ql_err(QL_ENOMEM, "out of memory"); break; }
        dsts[i] = *dst;
    }
    int n_pairs = 0;
    for (int l = 0; !rc && l < a->n_layers; l++)
        for (int k = 0; k < LORA_NMODULES && !rc; k++) {
            lora_pair *p = &a->w[l * LORA_NMODULES + k];
            int has_a = p->A || p->rA, has_b = p->B || p->rB;
            if (has_a != has_b)
                rc = ql_err(QL_EFORMAT, "%s: layer %d %s has lora_%c but no lora_%c", path, l, LORA_MODULE_NAMES[k],
                            has_a ? 'A' : 'B', has_a ? 'B' : 'A');
            if (has_a) n_pairs++, a->targets |= 1u << k;
        }
    if (!rc && !n_pairs) rc = ql_err(QL_EFORMAT, "%s: no LoRA tensors", path);
    int64_t *bad = rc ? NULL : malloc(sizeof *bad * (size_t)fp->n);
    if (!rc && !bad) rc = ql_err(QL_ENOMEM, "out of memory");
    if (!rc) {
#pragma omp parallel for schedule(dynamic, 1) if (fp->n > 1)
        for (int i = 0; i < fp->n; i++)
            bad[i] = resident ? dtype_first_nonfinite(fp->t[i].data, fp->t[i].type, fp->t[i].numel)
                              : to_f32(dsts[i], &fp->t[i]);
        for (int i = 0; i < fp->n && !rc; i++)  // the first in file order, whatever thread found it
            if (bad[i] >= 0) {
                const st_tensor *t = &fp->t[i];
                float x = resident ? value_f32(t, bad[i]) : dsts[i][bad[i]];
                rc = ql_err(QL_EFORMAT, "%s: tensor '%s': value %s at [%lld, %lld] (every value must be finite)",
                            path, t->name, isnan(x) ? "NaN" : x > 0 ? "+Inf" : "-Inf",
                            (long long)(bad[i] / t->shape[1]), (long long)(bad[i] % t->shape[1]));
            }
    }
    free(bad);
    free(dsts);
    if (!resident) st_close(fp);
    return rc;
}

int lora_peft_shapes(model_config *c, const char *dir) {
    memset(c, 0, sizeof *c);
    char *wpath = path_join(dir, PEFT_WEIGHTS_NAME);
    if (!wpath) return ql_err(QL_ENOMEM, "out of memory");
    st_file f;
    int rc = regular_file(wpath, dir, PEFT_WEIGHTS_NAME);
    if (!rc) rc = st_open(&f, wpath);
    free(wpath);
    if (rc) return rc;
    int in[LORA_NMODULES] = {0}, out[LORA_NMODULES] = {0};
    long layers = 0;
    for (int i = 0; i < f.n; i++) {
        long l;
        int k, is_b;
        if (parse_name(f.t[i].name, &l, &k, &is_b) || f.t[i].ndim != 2) continue;  // lora_load_peft says why
        if (l + 1 > layers) layers = l + 1;
        if (is_b) out[k] = (int)f.t[i].shape[0];
        else in[k] = (int)f.t[i].shape[1];
    }
    st_close(&f);
    if (!layers || layers > 100000) return ql_err(QL_EFORMAT, "%s: no LoRA tensors to take shapes from", dir);
    // q (H*D, C), k/v (Hkv*D, C), o (C, H*D), gate/up (F, C), down (C, F); with head_dim 1
    c->n_layers = (int)layers, c->head_dim = 1;
    c->dim = in[0] ? in[0] : in[1] ? in[1] : in[2] ? in[2] : in[4] ? in[4] : in[5] ? in[5] : out[3] ? out[3] : out[6];
    c->n_heads = out[0] ? out[0] : in[3] ? in[3] : 1;
    c->n_kv_heads = out[1] ? out[1] : out[2] ? out[2] : 1;
    c->hidden_dim = out[4] ? out[4] : out[5] ? out[5] : in[6] ? in[6] : 1;
    if (!c->dim) c->dim = 1;
    c->vocab_size = 1, c->max_pos = 1;
    return QL_OK;
}

int lora_peft_config(lora_adapter *a, unsigned *listed, const char *dir) {
    memset(a, 0, sizeof *a);
    *listed = 0;
    char *cpath = path_join(dir, PEFT_CONFIG_NAME);
    if (!cpath) return ql_err(QL_ENOMEM, "out of memory");
    int rc = regular_file(cpath, dir, PEFT_CONFIG_NAME);
    if (!rc) rc = read_config(a, listed, cpath);
    free(cpath);
    if (rc) lora_free(a);
    return rc;
}

static int load_peft(lora_adapter *a, const model_config *c, const char *dir, int resident) {
    memset(a, 0, sizeof *a);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return ql_err(QL_EIO, "%s: no such adapter directory", dir);
    char *cpath = path_join(dir, PEFT_CONFIG_NAME), *wpath = path_join(dir, PEFT_WEIGHTS_NAME);
    int rc = QL_OK;
    unsigned listed = 0;
    if (!cpath || !wpath) rc = ql_err(QL_ENOMEM, "out of memory");
    if (!rc) rc = regular_file(cpath, dir, PEFT_CONFIG_NAME);
    if (!rc) rc = read_config(a, &listed, cpath);
    if (!rc) {
        a->n_layers = c->n_layers;
        a->scaling = lora_scaling(a->rank, a->alpha, a->use_rslora);
        a->serial = lora_next_serial();
        a->w = calloc((size_t)c->n_layers * LORA_NMODULES, sizeof(lora_pair));
        if (!a->w) rc = ql_err(QL_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < c->n_layers * LORA_NMODULES; i++)
            lora_module_shape(c, i % LORA_NMODULES, &a->w[i].in, &a->w[i].out);
    }
    if (!rc) rc = regular_file(wpath, dir, PEFT_WEIGHTS_NAME);
    if (!rc) rc = read_tensors(a, c, listed, wpath, resident);
    free(cpath), free(wpath);
    if (rc) lora_free(a);
    return rc;
}

int lora_load_peft(lora_adapter *a, const model_config *c, const char *dir) { return load_peft(a, c, dir, 0); }

int lora_load_peft_resident(lora_adapter *a, const model_config *c, const char *dir) {
    return load_peft(a, c, dir, 1);
}
