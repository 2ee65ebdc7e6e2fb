// tokenizer.c: see tokenizer.h. Each call goes to the kind the tokenizer holds.
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bpe.h"
#include "err.h"
#include "spm.h"

struct tokenizer {
    tok_kind kind;
    spm *s;
    bpe *b;
};

struct tok_stream {
    spm_stream *s;
    bpe_stream *b;
};

const char *tok_file_name(tok_kind kind) { return kind == TOK_BPE ? "tokenizer.json" : "tokenizer.model"; }

int tok_load_bytes(tokenizer **out, tok_kind kind, const void *data, size_t len, const char *name) {
    *out = NULL;
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ql_err(QL_ENOMEM, "out of memory");
    t->kind = kind;
    int rc = kind == TOK_BPE ? bpe_load_mem(&t->b, data, len, name)
             : kind == TOK_SPM ? spm_load_bytes(&t->s, data, len)
                               : ql_err(QL_EINVAL, "%s: unknown tokenizer kind %d", name, (int)kind);
    if (rc) {
        free(t);
        return rc;
    }
    *out = t;
    return QL_OK;
}

tok_kind tok_kind_of_path(const char *path) {
    size_t n = strlen(path);
    return n >= 5 && !strcmp(path + n - 5, ".json") ? TOK_BPE : TOK_SPM;
}

int tok_load_file(tokenizer **out, const char *path) {
    *out = NULL;
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ql_err(QL_ENOMEM, "out of memory");
    t->kind = tok_kind_of_path(path);
    int rc = t->kind == TOK_BPE ? bpe_load_file(&t->b, path) : spm_load_file(&t->s, path);
    if (rc) {
        free(t);
        return rc;
    }
    *out = t;
    return QL_OK;
}

int tok_load_dir(tokenizer **out, const char *dir) {
    *out = NULL;
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ql_err(QL_ENOMEM, "out of memory");
    int rc;
    if (stat(p, &st) == 0) {
        t->kind = TOK_BPE;
        rc = bpe_load_file(&t->b, p);
    } else {
        snprintf(p, sizeof p, "%s/tokenizer.model", dir);
        t->kind = TOK_SPM;
        rc = stat(p, &st) == 0 ? spm_load_file(&t->s, p)
                               : ql_err(QL_EIO, "%s: no tokenizer.json or tokenizer.model in it", dir);
    }
    if (rc) {
        free(t);
        return rc;
    }
    *out = t;
    return QL_OK;
}

void tok_free(tokenizer *t) {
    if (!t) return;
    spm_free(t->s);
    bpe_free(t->b);
    free(t);
}

tok_kind tok_kind_of(const tokenizer *t) { return t->kind; }
int tok_vocab_size(const tokenizer *t) { return t->b ? bpe_vocab_size(t->b) : spm_vocab_size(t->s); }
int tok_bos_id(const tokenizer *t) { return t->b ? (bpe_post_bos(t->b) >= 0 ? bpe_post_bos(t->b) : -1) : spm_bos_id(t->s); }
int tok_adds_bos(const tokenizer *t) { return t->b ? bpe_post_bos(t->b) >= 0 : -1; }
int tok_eos_id(const tokenizer *t) { return t->b ? -1 : spm_eos_id(t->s); }
int tok_unk_id(const tokenizer *t) { return t->b ? -1 : spm_unk_id(t->s); }
int tok_pad_id(const tokenizer *t) { return t->b ? -1 : spm_pad_id(t->s); }

int tok_encode(const tokenizer *t, const char *text, size_t len, int flags, int **ids_out, int *n_out) {
    return t->b ? bpe_encode(t->b, text, len, flags & TOK_SPECIAL ? BPE_SPECIAL : 0, ids_out, n_out)
                : spm_encode(t->s, text, len, ids_out, n_out);
}

int tok_decode(const tokenizer *t, const int *ids, int n, char **text_out) {
    return t->b ? bpe_decode(t->b, ids, n, text_out, NULL) : spm_decode(t->s, ids, n, text_out);
}

const char *tok_piece(const tokenizer *t, int id) { return t->b ? bpe_piece(t->b, id) : spm_piece(t->s, id); }
float tok_piece_score(const tokenizer *t, int id) { return t->b ? 0.0f : spm_piece_score(t->s, id); }

int tok_piece_kind(const tokenizer *t, int id) {
    if (!t->b) return spm_piece_kind(t->s, id);
    if (id < 0 || id >= bpe_vocab_size(t->b) || !bpe_piece(t->b, id)) return 0;
    return bpe_is_special(t->b, id) ? 3 : bpe_is_added(t->b, id) ? 4 : 1;
}

int tok_piece_to_id(const tokenizer *t, const char *piece) {
    return t->b ? bpe_token_id(t->b, piece) : spm_piece_to_id(t->s, piece);
}

int tok_merges(const tokenizer *t, char ***merges_out, int *n_out) {
    *merges_out = NULL, *n_out = 0;
    if (!t->b) return QL_OK;
    int n = bpe_n_merges(t->b);
    char **m = calloc((size_t)(n ? n : 1), sizeof *m);
    if (!m) return ql_err(QL_ENOMEM, "out of memory");
    for (int r = 0; r < n; r++) {
        int a, b;
        bpe_merge(t->b, r, &a, &b);
        const char *pa = bpe_piece(t->b, a), *pb = bpe_piece(t->b, b);
        size_t la = strlen(pa), lb = strlen(pb);
        if (!(m[r] = malloc(la + lb + 2))) {
            for (int k = 0; k < r; k++) free(m[k]);
            free(m);
            return ql_err(QL_ENOMEM, "out of memory");
        }
        memcpy(m[r], pa, la), m[r][la] = ' ', memcpy(m[r] + la + 1, pb, lb + 1);
    }
    *merges_out = m, *n_out = n;
    return QL_OK;
}

const char *tok_split_pattern(const tokenizer *t, int k) { return t->b ? bpe_split_pattern(t->b, k) : NULL; }

int tok_stream_init(tok_stream **out, const tokenizer *t) {
    *out = calloc(1, sizeof **out);
    if (!*out) return ql_err(QL_ENOMEM, "out of memory");
    int rc = t->b ? bpe_stream_init(&(*out)->b, t->b) : spm_stream_init(&(*out)->s, t->s);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

void tok_stream_free(tok_stream *st) {
    if (!st) return;
    spm_stream_free(st->s);
    bpe_stream_free(st->b);
    free(st);
}

void tok_stream_reset(tok_stream *st) {
    if (st->b) bpe_stream_reset(st->b);
    else spm_stream_reset(st->s);
}

int tok_stream_push(tok_stream *st, int id, const char **text_out, size_t *len_out) {
    return st->b ? bpe_stream_push(st->b, id, text_out, len_out) : spm_stream_push(st->s, id, text_out, len_out);
}

int tok_stream_finish(tok_stream *st, const char **text_out, size_t *len_out) {
    return st->b ? bpe_stream_finish(st->b, text_out, len_out) : spm_stream_finish(st->s, text_out, len_out);
}
