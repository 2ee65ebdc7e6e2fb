// checkpoint.c: see checkpoint.h.
#include "checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/fileio.h"
#include "../common/safetensors.h"

#define CKPT_FORMAT "qlora-checkpoint"
static const char *const KIND[3] = {"w", "m", "v"};

static void tensor_name(char *buf, size_t len, int i, int which, const char *kind) {
    snprintf(buf, len, "layers.%d.%s.%s.%s", i / LORA_NMODULES, LORA_MODULE_NAMES[i % LORA_NMODULES], which ? "B" : "A",
             kind);
}

static size_t pair_count(const lora_adapter *a, int i, int which) {
    return which ? (size_t)a->w[i].out * a->rank : (size_t)a->rank * a->w[i].in;
}

int64_t ckpt_n_params(const lora_adapter *a) {
    int64_t n = 0;
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++)
        if (a->w[i].A) n += (int64_t)a->rank * (a->w[i].in + a->w[i].out);
    return n;
}

void ckpt_state_free(ckpt_state *s) {
    free(s->losses), free(s->val_step), free(s->val_loss), free(s->w), free(s->m), free(s->v);
    memset(s, 0, sizeof *s);
}

int ckpt_write(const char *path, const lora_adapter *a, const ckpt_state *s, const char *fingerprint) {
    int n = 0;
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++) n += a->w[i].A ? 6 : 0;
    st_out *t = calloc((size_t)n + 2, sizeof(st_out));
    char(*names)[96] = calloc((size_t)n + 1, sizeof *names);
    float *val = calloc(2 * (size_t)s->val_count + 1, sizeof(float));
    if (!t || !names || !val) { free(t), free(names), free(val); return ql_err(QL_ENOMEM, "%s: out of memory", path); }
    const float *flat[3] = {s->w, s->m, s->v};
    int k = 0;
    size_t off = 0;
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++) {
        if (!a->w[i].A) continue;
        for (int which = 0; which < 2; which++) {
            size_t cnt = pair_count(a, i, which);
            for (int j = 0; j < 3; j++, k++) {
                tensor_name(names[k], sizeof names[k], i, which, KIND[j]);
                t[k] = (st_out){.name = names[k], .type = DT_F32, .ndim = 1, .shape = {(int64_t)cnt}, .data = flat[j] + off};
            }
            off += cnt;
        }
    }
    QL_ASSERT((int64_t)off == s->n_params);
    static const float none = 0;  // a safetensors tensor has at least one element here
    t[k++] = (st_out){.name = "losses", .type = DT_F32, .ndim = 1, .shape = {s->step > 0 ? s->step : 1},
                      .data = s->step > 0 ? s->losses : &none};
    for (int i = 0; i < s->val_count; i++) val[2 * i] = (float)s->val_step[i], val[2 * i + 1] = s->val_loss[i];
    if (s->val_count)
        t[k++] = (st_out){.name = "val_loss", .type = DT_F32, .ndim = 1, .shape = {2 * (int64_t)s->val_count}, .data = val};
    char sstep[32], sval[32];
    snprintf(sstep, sizeof sstep, "%d", s->step);
    snprintf(sval, sizeof sval, "%d", s->val_count);
    const char *meta[] = {"format", CKPT_FORMAT, "step", sstep, "val_count", sval, "fingerprint", fingerprint, NULL};
    int rc = st_write(path, t, k, meta, NULL, 0, -1);
    free(t), free(names), free(val);
    return rc;
}

// A decimal integer in [lo, hi], all of s (no sign, spaces or suffix): atoi
// would read "abc" as 0 and "30junk" as 30.
static int parse_count(const char *name, const char *key, const char *s, long lo, long hi, const char *why, int *out) {
    long v = 0;
    int ok = s && s[0] && strlen(s) <= 10;
    for (const char *p = s; ok && *p; p++) {
        if (*p < '0' || *p > '9' || (p == s && *p == '0' && p[1])) ok = 0;
        else v = v * 10 + (*p - '0');
    }
    if (!ok) return ql_err(QL_EFORMAT, "%s: metadata '%s': expected a decimal integer, found '%.40s'", name, key, s ? s : "(none)");
    if (v < lo || v > hi)
        return ql_err(QL_EFORMAT, "%s: metadata '%s': %ld is outside [%ld, %ld] (%s)", name, key, v, lo, hi, why);
    *out = (int)v;
    return QL_OK;
}

// Copies tensor tname (F32, exactly cnt elements) into dst and checks its values:
// finite, and >= 0 when nonneg (AdamW's second moment).
static int take(const st_file *f, const char *name, const char *tname, size_t cnt, int nonneg, float *dst) {
    const st_tensor *t = st_find(f, tname);
    if (!t) return ql_err(QL_EFORMAT, "%s: tensor '%s' is missing", name, tname);
    if (t->type != DT_F32 || t->ndim != 1 || (uint64_t)t->numel != (uint64_t)cnt)
        return ql_err(QL_EFORMAT, "%s: tensor '%s': expected F32 of %zu elements, found %s of %lld", name, tname, cnt,
                      dtype_name(t->type), (long long)t->numel);
    memcpy(dst, t->data, sizeof(float) * cnt);  // the data may be unaligned in a crafted file
    for (size_t e = 0; e < cnt; e++)
        if (!isfinite(dst[e]) || (nonneg && dst[e] < 0))
            return ql_err(QL_EFORMAT, "%s: tensor '%s'[%zu] = %g: expected a finite value%s", name, tname, e,
                          (double)dst[e], nonneg ? " >= 0" : "");
    return QL_OK;
}

static int read_state(ckpt_state *s, const st_file *f, const char *name, const lora_adapter *a, int max_step,
                      const char *fingerprint) {
    char *fmt = st_metadata_get(f, "format"), *ss = st_metadata_get(f, "step"), *sv = st_metadata_get(f, "val_count"),
         *fp = st_metadata_get(f, "fingerprint");
    int rc = QL_OK;
    if (!fmt || strcmp(fmt, CKPT_FORMAT) || !fp)
        rc = ql_err(QL_EFORMAT, "%s: not a qlora checkpoint (metadata 'format' \"" CKPT_FORMAT "\" and 'fingerprint' expected)", name);
    else if (fingerprint && strcmp(fp, fingerprint))
        rc = ql_err(QL_EINVAL, "%s: the checkpoint was made with other options or data; resuming needs the same "
                    "(checkpoint: %s; now: %s)", name, fp, fingerprint);
    if (!rc) rc = parse_count(name, "step", ss, 0, max_step, "this run's steps", &s->step);
    if (!rc) rc = parse_count(name, "val_count", sv, 0, (long)s->step + 1, "step 0 and one per step at most",
                                &s->val_count);
    free(fmt), free(ss), free(sv), free(fp);
    if (rc) return rc;
    int ntensors = 1 + (s->val_count > 0);
    for (int i = 0; i < a->n_layers * LORA_NMODULES; i++) ntensors += a->w[i].A ? 6 : 0;
    if (f->n != ntensors)
        return ql_err(QL_EFORMAT, "%s: expected %d tensors for this adapter, found %d", name, ntensors, f->n);
    s->n_params = ckpt_n_params(a);
    size_t np = (size_t)s->n_params ? (size_t)s->n_params : 1;
    s->w = malloc(sizeof(float) * np), s->m = malloc(sizeof(float) * np), s->v = malloc(sizeof(float) * np);
    s->losses = malloc(sizeof(float) * ((size_t)s->step + 1));
    s->val_step = malloc(sizeof(int) * ((size_t)s->val_count + 1));
    s->val_loss = malloc(sizeof(float) * (2 * (size_t)s->val_count + 1));
    if (!s->w || !s->m || !s->v || !s->losses || !s->val_step || !s->val_loss)
        return ql_err(QL_ENOMEM, "%s: out of memory", name);
    float *flat[3] = {s->w, s->m, s->v};
    size_t off = 0;
    for (int i = 0; i < a->n_layers * LORA_NMODULES && !rc; i++) {
        if (!a->w[i].A) continue;
        for (int which = 0; which < 2 && !rc; which++) {
            size_t cnt = pair_count(a, i, which);
            for (int j = 0; j < 3 && !rc; j++) {
                char tn[96];
                tensor_name(tn, sizeof tn, i, which, KIND[j]);
                rc = take(f, name, tn, cnt, j == 2, flat[j] + off);
            }
            off += cnt;
        }
    }
    if (!rc) rc = take(f, name, "losses", s->step > 0 ? (size_t)s->step : 1, 0, s->losses);
    if (!rc && s->val_count) {
        // pairs (step, loss) read into val_loss as scratch, then split
        const st_tensor *t = st_find(f, "val_loss");
        size_t cnt = 2 * (size_t)s->val_count;
        if (!t || t->type != DT_F32 || t->ndim != 1 || (uint64_t)t->numel != (uint64_t)cnt)
            return ql_err(QL_EFORMAT, "%s: tensor 'val_loss': expected F32 of %zu elements (val_count %d)", name, cnt,
                          s->val_count);
        memcpy(s->val_loss, t->data, sizeof(float) * cnt);
        for (int i = 0; i < s->val_count && !rc; i++) {
            float st = s->val_loss[2 * i], vl = s->val_loss[2 * i + 1];
            int prev = i ? s->val_step[i - 1] : -1;
            if (!(st >= 0 && st <= (float)s->step && st == floorf(st) && (int)st > prev))
                rc = ql_err(QL_EFORMAT, "%s: tensor 'val_loss' pair %d: step %g is not an integer in (%d, %d]", name, i,
                            (double)st, prev, s->step);
            else if (isinf(vl))
                rc = ql_err(QL_EFORMAT, "%s: tensor 'val_loss' pair %d: loss %g is infinite", name, i, (double)vl);
            else s->val_step[i] = (int)st, s->val_loss[i] = vl;
        }
    }
    return rc;
}

int ckpt_read_mem(ckpt_state *s, const void *data, size_t len, const char *name, const lora_adapter *a, int max_step,
                  const char *fingerprint) {
    memset(s, 0, sizeof *s);
    st_file f;
    memset(&f, 0, sizeof f);
    QL_CHECK(st_open_mem(&f, data, len, name));
    int rc = read_state(s, &f, name, a, max_step, fingerprint);
    st_close(&f);
    if (rc) ckpt_state_free(s);
    return rc;
}

int ckpt_read(ckpt_state *s, const char *path, const lora_adapter *a, int max_step, const char *fingerprint) {
    memset(s, 0, sizeof *s);
    fmap m;
    QL_CHECK(fmap_open(&m, path));
    int rc = ckpt_read_mem(s, m.data, m.len, path, a, max_step, fingerprint);
    fmap_close(&m);
    return rc;
}
