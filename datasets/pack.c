// pack.c: seeded shuffle, validation split and packing of samples into rows
// (see dataset.h for the contracts).
#include "datasets/dataset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/rng.h"

void dataset_shuffle(dataset *d, uint64_t seed) {
    uint64_t s = seed;
    for (int i = d->n_samples - 1; i > 0; i--) {
        int j = (int)rng_below(&s, (uint64_t)i + 1);
        ds_sample t = d->samples[i];
        d->samples[i] = d->samples[j];
        d->samples[j] = t;
    }
}

static void add_stats(dataset_stats *st, const ds_sample *s, int sign) {
    long trained = 0;
    for (int t = 0; t < s->n; t++) trained += s->mask[t];
    st->samples += sign;
    st->tokens += sign * s->n;
    st->trained_tokens += sign * trained;
}

int dataset_split(dataset *d, dataset *val, double frac) {
    memset(val, 0, sizeof *val);
    if (!(frac >= 0 && frac < 1)) return ql_err(QL_EINVAL, "val_split must be in [0, 1), got %g", frac);
    int nv = (int)lround(frac * d->n_samples);
    if (nv >= d->n_samples)
        return ql_err(QL_EINVAL, "val_split %g of %d samples leaves no training sample", frac, d->n_samples);
    val->format = d->format;
    if (nv == 0) return QL_OK;
    val->samples = malloc(sizeof *val->samples * (size_t)nv);
    if (!val->samples) return ql_err(QL_ENOMEM, "out of memory splitting a dataset");
    int keep = d->n_samples - nv;
    memcpy(val->samples, d->samples + keep, sizeof *val->samples * (size_t)nv);
    val->n_samples = nv;
    d->n_samples = keep;
    for (int i = 0; i < nv; i++) {
        add_stats(&val->stats, &val->samples[i], 1);
        add_stats(&d->stats, &val->samples[i], -1);
    }
    return QL_OK;
}

int dataset_pack(ds_packed *p, const dataset *d, int seq_len, int pad_id) {
    memset(p, 0, sizeof *p);
    if (seq_len < 2) return ql_err(QL_EINVAL, "dataset_pack: seq_len must be at least 2, got %d", seq_len);
    // count rows first (same greedy rule as the fill below)
    int R = 0, used = seq_len;
    for (int i = 0; i < d->n_samples; i++) {
        int n = d->samples[i].n;
        if (n > seq_len)
            return ql_err(QL_EINVAL, "dataset_pack: sample from line %d has %d tokens, more than seq_len %d",
                          d->samples[i].line, n, seq_len);
        if (used + n > seq_len) R++, used = 0;
        used += n;
    }
    p->R = R, p->T = seq_len;
    size_t nt = (size_t)R * (size_t)seq_len;
    p->tokens = malloc(sizeof(int) * (nt ? nt : 1));
    p->targets = malloc(sizeof(int) * (nt ? nt : 1));
    p->pos = malloc(sizeof(int) * (nt ? nt : 1));
    p->seg = malloc(sizeof(int) * (nt ? nt : 1));
    if (!p->tokens || !p->targets || !p->pos || !p->seg) {
        ds_packed_free(p);
        return ql_err(QL_ENOMEM, "dataset_pack: out of memory for %d rows of %d", R, seq_len);
    }
    for (size_t k = 0; k < nt; k++) p->tokens[k] = pad_id, p->targets[k] = -1, p->pos[k] = 0, p->seg[k] = -1;
    int r = -1, seg = 0;
    used = seq_len;
    for (int i = 0; i < d->n_samples; i++) {
        const ds_sample *s = &d->samples[i];
        if (used + s->n > seq_len) r++, used = 0, seg = 0;
        size_t o = (size_t)r * (size_t)seq_len + (size_t)used;
        for (int t = 0; t < s->n; t++) {
            p->tokens[o + t] = s->ids[t];
            p->pos[o + t] = t;
            p->seg[o + t] = seg;
            if (t + 1 < s->n && s->mask[t + 1]) {
                p->targets[o + t] = s->ids[t + 1];
                p->n_targets++;
            }
        }
        used += s->n;
        seg++;
    }
    return QL_OK;
}

void ds_packed_free(ds_packed *p) {
    if (!p) return;
    free(p->tokens);
    free(p->targets);
    free(p->pos);
    free(p->seg);
    memset(p, 0, sizeof *p);
}

int ds_packed_nbatches(const ds_packed *p, int B) {
    QL_ASSERT(B > 0);
    return (p->R + B - 1) / B;
}

ds_batch ds_packed_batch(const ds_packed *p, int b, int B) {
    QL_ASSERT(B > 0 && b >= 0 && b < ds_packed_nbatches(p, B));
    int r0 = b * B, nb = p->R - r0 < B ? p->R - r0 : B;
    size_t o = (size_t)r0 * (size_t)p->T;
    return (ds_batch){.B = nb, .T = p->T, .tokens = p->tokens + o, .targets = p->targets + o, .pos = p->pos + o,
                      .seg = p->seg + o};
}
