// safetensors.c: see safetensors.h.
#include "safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "json.h"

static int cmp_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    uintptr_t p = (uintptr_t)x->data, q = (uintptr_t)y->data;
    return p < q ? -1 : p > q ? 1 : 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int parse_entry(st_file *f, json_doc *d, int key, int val, const uint8_t *data, uint64_t data_len,
                       st_tensor *t) {
    char *name = NULL;
    QL_CHECK(json_get_string(d, key, "tensor name", &name, NULL));
    t->name = name;
    if (json_type(d, val) != JSON_OBJECT)
        return ql_err(QL_EFORMAT, "%s: tensor '%s': expected an object, found another JSON type", f->path, name);
    int jd = json_find(d, val, "dtype"), js = json_find(d, val, "shape"), jo = json_find(d, val, "data_offsets");
    if (jd < 0 || js < 0 || jo < 0)
        return ql_err(QL_EFORMAT, "%s: tensor '%s': missing field '%s'", f->path, name,
                      jd < 0 ? "dtype" : js < 0 ? "shape" : "data_offsets");
    if (json_type(d, jd) != JSON_STRING)
        return ql_err(QL_EFORMAT, "%s: tensor '%s': field 'dtype': expected a string", f->path, name);
    int dt = dtype_parse(d->js + d->tok[jd].start, (size_t)(d->tok[jd].end - d->tok[jd].start));
    if (dt < 0)
        return ql_err(QL_EUNSUP, "%s: tensor '%s': dtype '%.*s' is not supported (expected F32, F16, BF16, I32, I64, U8 or I8)",
                      f->path, name, d->tok[jd].end - d->tok[jd].start, d->js + d->tok[jd].start);
    t->type = (dtype)dt;
    if (json_type(d, js) != JSON_ARRAY || json_size(d, js) > ST_MAX_DIMS)
        return ql_err(QL_EFORMAT, "%s: tensor '%s': field 'shape': expected an array of at most %d integers",
                      f->path, name, ST_MAX_DIMS);
    t->ndim = json_size(d, js);
    uint64_t numel = 1;
    for (int k = 0; k < t->ndim; k++) {
        long long v;
        QL_CHECK(json_get_int(d, json_item(d, js, k), "shape", &v));
        if (v < 0 || v > (1LL << 40))
            return ql_err(QL_EFORMAT, "%s: tensor '%s': shape[%d] = %lld is out of range", f->path, name, k, v);
        t->shape[k] = v;
        if (v && numel > (UINT64_MAX >> 1) / (uint64_t)v)
            return ql_err(QL_EFORMAT, "%s: tensor '%s': shape overflows", f->path, name);
        numel *= (uint64_t)v;
    }
    if (json_type(d, jo) != JSON_ARRAY || json_size(d, jo) != 2)
        return ql_err(QL_EFORMAT, "%s: tensor '%s': field 'data_offsets': expected [begin, end]", f->path, name);
    long long b, e;
    QL_CHECK(json_get_int(d, json_item(d, jo, 0), "data_offsets", &b));
    QL_CHECK(json_get_int(d, json_item(d, jo, 1), "data_offsets", &e));
    if (b < 0 || e < b || (uint64_t)e > data_len)
        return ql_err(QL_EFORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] out of bounds (data area is %llu bytes)",
                      f->path, name, b, e, (unsigned long long)data_len);
    uint64_t want = numel * dtype_size(t->type);
    if ((uint64_t)(e - b) != want)
        return ql_err(QL_EFORMAT, "%s: tensor '%s': %lld bytes in the file but dtype %s x shape needs %llu",
                      f->path, name, e - b, dtype_name(t->type), (unsigned long long)want);
    t->numel = (int64_t)numel;
    t->data = data + b;
    t->nbytes = (size_t)want;
    return QL_OK;
}

// The image at mem into f (f->path and f->map already set, or zero).
static int open_image(st_file *f, const void *mem, size_t len) {
    int rc = QL_OK;
    json_doc d = {0};
    char *hdr = NULL;
    f->base = mem;
    f->len = len;
    if (len < 8) { rc = ql_err(QL_EFORMAT, "%s: file is %zu bytes, too short for a safetensors header", f->path, len); goto out; }
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | f->base[k];
    if (hlen > ST_MAX_HEADER) {
        rc = ql_err(QL_EFORMAT, "%s: header size %llu exceeds the limit of %u bytes (corrupt or not a safetensors file)",
                    f->path, (unsigned long long)hlen, ST_MAX_HEADER);
        goto out;
    }
    if (hlen < 2 || hlen > len - 8) {
        rc = ql_err(QL_EFORMAT, "%s: header claims %llu bytes but the file has only %zu after the size field (truncated?)",
                    f->path, (unsigned long long)hlen, len - 8);
        goto out;
    }
    hdr = malloc(hlen + 1);
    if (!hdr) { rc = ql_err(QL_ENOMEM, "%s: out of memory", f->path); goto out; }
    memcpy(hdr, f->base + 8, hlen);
    hdr[hlen] = 0;
    char what[512];
    snprintf(what, sizeof what, "%s (header)", f->path);
    if ((rc = json_parse(&d, hdr, hlen, what)) != QL_OK) goto out;
    if (json_type(&d, 0) != JSON_OBJECT) { rc = ql_err(QL_EFORMAT, "%s: header is not a JSON object", f->path); goto out; }
    const uint8_t *data = f->base + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;
    int nmem = json_size(&d, 0);
    f->t = calloc((size_t)nmem + 1, sizeof(st_tensor));
    if (!f->t) { rc = ql_err(QL_ENOMEM, "%s: out of memory", f->path); goto out; }
    for (int k = 0; k < nmem; k++) {
        int val, key = json_member(&d, 0, k, &val);
        if (json_eq(&d, key, "__metadata__")) {
            if (json_type(&d, val) != JSON_OBJECT) {
                rc = ql_err(QL_EFORMAT, "%s: __metadata__ must be an object of strings", f->path);
                goto out;
            }
            int n = d.tok[val].end - d.tok[val].start;
            f->metadata = malloc((size_t)n + 1);
            if (!f->metadata) { rc = ql_err(QL_ENOMEM, "%s: out of memory", f->path); goto out; }
            memcpy(f->metadata, d.js + d.tok[val].start, (size_t)n);
            f->metadata[n] = 0;
            continue;
        }
        if ((rc = parse_entry(f, &d, key, val, data, data_len, &f->t[f->n++])) != QL_OK) goto out;
    }
    // unique names
    st_tensor *tmp = malloc(sizeof(st_tensor) * (f->n + 1));
    if (!tmp) { rc = ql_err(QL_ENOMEM, "%s: out of memory", f->path); goto out; }
    memcpy(tmp, f->t, sizeof(st_tensor) * f->n);
    qsort(tmp, (size_t)f->n, sizeof(st_tensor), cmp_name);
    for (int k = 1; k < f->n; k++)
        if (!strcmp(tmp[k].name, tmp[k - 1].name)) {
            rc = ql_err(QL_EFORMAT, "%s: tensor '%s' appears twice in the header", f->path, tmp[k].name);
            free(tmp);
            goto out;
        }
    // contiguous: sorted by offset, each begins where the previous ended, the last ends at the file's end
    qsort(tmp, (size_t)f->n, sizeof(st_tensor), cmp_offset);
    const uint8_t *expect = data;
    for (int k = 0; k < f->n; k++) {
        if ((const uint8_t *)tmp[k].data != expect) {
            rc = ql_err(QL_EFORMAT, "%s: tensor '%s' starts at data offset %lld but %lld was expected (%s)", f->path,
                        tmp[k].name, (long long)((const uint8_t *)tmp[k].data - data), (long long)(expect - data),
                        (const uint8_t *)tmp[k].data < expect ? "overlaps the previous tensor" : "hole in the data");
            free(tmp);
            goto out;
        }
        expect += tmp[k].nbytes;
    }
    free(tmp);
    if ((uint64_t)(expect - data) != data_len) {
        rc = ql_err(QL_EFORMAT, "%s: tensors cover %lld bytes but the data area has %llu (trailing bytes or truncated)",
                    f->path, (long long)(expect - data), (unsigned long long)data_len);
        goto out;
    }
    // The format does not align tensors (a 3-byte u8 tensor shifts the next one):
    // an f32 read through a misaligned pointer is undefined behaviour, so such a
    // tensor is copied once into memory aligned for its dtype.
    for (int k = 0; k < f->n && rc == QL_OK; k++) {
        st_tensor *t = &f->t[k];
        if (t->nbytes == 0 || (uintptr_t)t->data % dtype_size(t->type) == 0) continue;
        t->copy = malloc(t->nbytes);
        if (!t->copy) { rc = ql_err(QL_ENOMEM, "%s: out of memory", f->path); break; }
        memcpy(t->copy, t->data, t->nbytes);
        t->data = t->copy;
    }
out:
    json_free(&d);
    free(hdr);
    if (rc != QL_OK) st_close(f);
    return rc;
}

int st_open_mem(st_file *f, const void *mem, size_t len, const char *name) {
    memset(f, 0, sizeof *f);  // f may hold anything: nothing in it is ours yet
    f->path = strdup(name ? name : "safetensors");
    if (!f->path) return ql_err(QL_ENOMEM, "out of memory");
    return open_image(f, mem, len);
}

// Only a regular file is opened: opening a FIFO to map it would wait for a writer.
static int check_regular(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) return ql_err(QL_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return ql_err(QL_EIO, "%s: not a regular file (a directory, FIFO or device is never read)", path);
    return QL_OK;
}

int st_open(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    QL_CHECK(check_regular(path));
    QL_CHECK(fmap_open(&f->map, path));
    f->path = strdup(path);
    if (!f->path) { fmap_close(&f->map); return ql_err(QL_ENOMEM, "out of memory"); }
    return open_image(f, f->map.data, f->map.len);
}

void st_close(st_file *f) {
    for (int k = 0; k < f->n; k++) free(f->t[k].name), free(f->t[k].copy);
    free(f->t);
    free(f->metadata);
    free(f->path);
    fmap_close(&f->map);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int k = 0; k < f->n; k++)
        if (!strcmp(f->t[k].name, name)) return &f->t[k];
    return NULL;
}

char *st_metadata_get(const st_file *f, const char *key) {
    if (!f->metadata) return NULL;
    json_doc d;
    char *out = NULL;
    if (json_parse(&d, f->metadata, strlen(f->metadata), "__metadata__") != QL_OK) return NULL;
    int v = json_find(&d, 0, key);
    if (v >= 0 && json_get_string(&d, v, key, &out, NULL) != QL_OK) out = NULL;
    json_free(&d);
    return out;
}

// ---- sharded models ----

int st_set_open_dir(st_set *s, const char *dir) {
    memset(s, 0, sizeof *s);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    char *js = NULL;
    size_t len;
    struct stat sb;
    if (stat(path, &sb) != 0) {  // no index: one model.safetensors
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        s->files = calloc(1, sizeof(st_file));
        if (!s->files) return ql_err(QL_ENOMEM, "out of memory");
        int rc = st_open(&s->files[0], path);
        if (rc != QL_OK) { free(s->files); s->files = NULL; return rc; }
        s->nfiles = 1;
        return QL_OK;
    }
    QL_CHECK(file_read_all(path, 64u << 20, &js, &len));
    json_doc d;
    int rc = json_parse(&d, js, len, path);
    if (rc != QL_OK) { free(js); return rc; }
    int wm = json_find(&d, 0, "weight_map");
    if (wm < 0 || json_type(&d, wm) != JSON_OBJECT) {
        rc = ql_err(QL_EFORMAT, "%s: missing object 'weight_map'", path);
        goto out;
    }
    int nm = json_size(&d, wm);
    char **names = calloc((size_t)nm + 1, sizeof(char *));
    if (!names) { rc = ql_err(QL_ENOMEM, "out of memory"); goto out; }
    int nn = 0;
    for (int k = 0; k < nm && rc == QL_OK; k++) {
        int val;
        json_member(&d, wm, k, &val);
        char *fn;
        if ((rc = json_get_string(&d, val, "weight_map", &fn, NULL)) != QL_OK) break;
        if (strchr(fn, '/') || !strcmp(fn, "..")) {
            rc = ql_err(QL_EFORMAT, "%s: weight_map names file '%s' outside the model directory", path, fn);
            free(fn);
            break;
        }
        int seen = 0;
        for (int j = 0; j < nn; j++) seen |= !strcmp(names[j], fn);
        if (seen) free(fn);
        else names[nn++] = fn;
    }
    if (rc == QL_OK) {
        s->files = calloc((size_t)nn + 1, sizeof(st_file));
        if (!s->files) rc = ql_err(QL_ENOMEM, "out of memory");
        for (int j = 0; j < nn && rc == QL_OK; j++) {
            char fp[4096];
            snprintf(fp, sizeof fp, "%s/%s", dir, names[j]);
            rc = st_open(&s->files[j], fp);
            if (rc == QL_OK) s->nfiles++;
        }
    }
    // every name in the index must be in the file it names
    for (int k = 0; k < nm && rc == QL_OK; k++) {
        int val, key = json_member(&d, wm, k, &val);
        char *tn = NULL, *fn = NULL;
        if ((rc = json_get_string(&d, key, "weight_map key", &tn, NULL)) == QL_OK &&
            (rc = json_get_string(&d, val, "weight_map", &fn, NULL)) == QL_OK) {
            const char *got = NULL;
            if (!st_set_find(s, tn, &got))
                rc = ql_err(QL_EFORMAT, "%s: weight_map lists tensor '%s' in %s but no shard holds it", path, tn, fn);
            else if (!strstr(got, fn))
                rc = ql_err(QL_EFORMAT, "%s: weight_map puts tensor '%s' in %s but it is in %s", path, tn, fn, got);
        }
        free(tn);
        free(fn);
    }
    // no tensor in two shards
    for (int a = 0; a < s->nfiles && rc == QL_OK; a++)
        for (int k = 0; k < s->files[a].n && rc == QL_OK; k++)
            for (int b = a + 1; b < s->nfiles; b++)
                if (st_find(&s->files[b], s->files[a].t[k].name)) {
                    rc = ql_err(QL_EFORMAT, "tensor '%s' is in both %s and %s", s->files[a].t[k].name,
                                s->files[a].path, s->files[b].path);
                    break;
                }
    for (int j = 0; j < nn; j++) free(names[j]);
    free(names);
out:
    json_free(&d);
    free(js);
    if (rc != QL_OK) st_set_close(s);
    return rc;
}

void st_set_close(st_set *s) {
    for (int j = 0; j < s->nfiles; j++) st_close(&s->files[j]);
    free(s->files);
    memset(s, 0, sizeof *s);
}

const st_tensor *st_set_find(const st_set *s, const char *name, const char **file) {
    for (int j = 0; j < s->nfiles; j++) {
        const st_tensor *t = st_find(&s->files[j], name);
        if (t) {
            if (file) *file = s->files[j].path;
            return t;
        }
    }
    return NULL;
}

// ---- writing ----

static int append(char **buf, size_t *len, size_t *cap, const char *s) {
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        size_t nc = (*cap + n + 1) * 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return ql_err(QL_ENOMEM, "out of memory");
        *buf = nb, *cap = nc;
    }
    memcpy(*buf + *len, s, n + 1);
    *len += n;
    return QL_OK;
}

int st_write(const char *path, const st_out *t, int n, const char *const *metadata, const void *prefix,
             size_t prefix_len, int len_at) {
    char *h = NULL, item[1024];
    size_t hl = 0, hc = 0;
    int rc = append(&h, &hl, &hc, "{");
    if (metadata && metadata[0]) {
        rc = rc ? rc : append(&h, &hl, &hc, "\"__metadata__\":{");
        for (int k = 0; metadata[k] && rc == QL_OK; k += 2) {
            char *kq = json_quote(metadata[k]), *vq = json_quote(metadata[k + 1] ? metadata[k + 1] : "");
            if (!kq || !vq) rc = ql_err(QL_ENOMEM, "out of memory");
            if (rc == QL_OK && k) rc = append(&h, &hl, &hc, ",");
            if (rc == QL_OK) rc = append(&h, &hl, &hc, kq);
            if (rc == QL_OK) rc = append(&h, &hl, &hc, ":");
            if (rc == QL_OK) rc = append(&h, &hl, &hc, vq);
            free(kq);
            free(vq);
        }
        rc = rc ? rc : append(&h, &hl, &hc, "}");
    }
    uint64_t off = 0;
    for (int k = 0; k < n && rc == QL_OK; k++) {
        int64_t numel = 1;
        for (int j = 0; j < t[k].ndim; j++) numel *= t[k].shape[j];
        uint64_t nb = (uint64_t)numel * dtype_size(t[k].type);
        char *nq = json_quote(t[k].name);
        if (!nq) { rc = ql_err(QL_ENOMEM, "out of memory"); break; }
        int w = snprintf(item, sizeof item, "%s%s:{\"dtype\":\"%s\",\"shape\":[", (k || (metadata && metadata[0])) ? "," : "",
                         nq, dtype_name(t[k].type));
        free(nq);
        for (int j = 0; j < t[k].ndim; j++)
            w += snprintf(item + w, sizeof item - (size_t)w, "%s%lld", j ? "," : "", (long long)t[k].shape[j]);
        snprintf(item + w, sizeof item - (size_t)w, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + nb));
        rc = append(&h, &hl, &hc, item);
        off += nb;
    }
    rc = rc ? rc : append(&h, &hl, &hc, "}");
    // pad with spaces so the data area starts 64-aligned in the file
    while (rc == QL_OK && (prefix_len + 8 + hl) % 64) rc = append(&h, &hl, &hc, " ");
    afile f;
    if (rc == QL_OK) rc = afile_open(&f, path);
    if (rc == QL_OK) {
        uint8_t len8[8];
        for (int k = 0; k < 8; k++) len8[k] = (uint8_t)((uint64_t)hl >> (8 * k));
        if (prefix_len) {
            uint8_t *pre = malloc(prefix_len);
            if (!pre) rc = ql_err(QL_ENOMEM, "out of memory");
            else {
                memcpy(pre, prefix, prefix_len);
                uint64_t image = 8 + hl + off;
                if (len_at >= 0 && (size_t)len_at + 8 <= prefix_len)
                    for (int k = 0; k < 8; k++) pre[len_at + k] = (uint8_t)(image >> (8 * k));
                rc = afile_write(&f, pre, prefix_len);
                free(pre);
            }
        }
        if (rc == QL_OK) rc = afile_write(&f, len8, 8);
        if (rc == QL_OK) rc = afile_write(&f, h, hl);
        for (int k = 0; k < n && rc == QL_OK; k++) {
            int64_t numel = 1;
            for (int j = 0; j < t[k].ndim; j++) numel *= t[k].shape[j];
            rc = afile_write(&f, t[k].data, (size_t)numel * dtype_size(t[k].type));
        }
        rc = rc == QL_OK ? afile_commit(&f) : (afile_abort(&f), rc);
    }
    free(h);
    return rc;
}
