// bpe.c: see bpe.h.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "bpe.h"

#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "strbuf.h"

#define BPE_MAX_SPLITS 4
#define BPE_FILE_LIMIT ((size_t)256 << 20)

typedef struct {
    char *text;      // as written in the file
    int len, id, special, lstrip, rstrip;
} added_token;

// A hash table from byte strings (pieces, raw bytes) to ids, open addressing.
typedef struct {
    int *slot;       // id + 1, 0 empty
    size_t cap;      // a power of two
} str_map;

// (left id, right id) -> merge rank and merged id.
typedef struct {
    uint64_t *key;   // (left << 32 | right) + 1, 0 empty
    int *rank, *merged;
    size_t cap;
} pair_map;

struct bpe {
    int n_vocab;               // the model's pieces: ids 0..n_vocab-1 (holes allowed)
    int n_ids;                 // all ids, with the added tokens
    char **piece;              // [n_ids] the piece as stored, NUL-terminated (NULL: a hole)
    char **raw;                // [n_ids] its bytes (byte-level map undone); rawlen beside
    int *rawlen;
    str_map by_raw;            // raw bytes -> id (model pieces only)
    str_map by_piece;          // stored piece -> id (model pieces and added tokens)
    pair_map merges;
    int *mleft, *mright, n_merges;  // by rank (GGUF writes them)
    int ignore_merges;
    int byte_id[256];          // the id of each single byte
    added_token *added;
    int n_added;
    int *added_by_first[256];  // added token indices by first byte, longest first (-1 ended)
    int n_splits;
    pcre2_code *split[BPE_MAX_SPLITS];
    char *split_src[BPE_MAX_SPLITS];  // the patterns as written
    int add_prefix_space;
    int post_bos;              // the post-processor's leading special token (TemplateProcessing), or -1
    int post_template;         // 1 when the post-processor is (or holds) a TemplateProcessing
    char name[256];
};

// ---- GPT-2's byte <-> unicode map ----

// The code point byte b is written as in byte-level pieces.
static unsigned byte_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (unsigned)b;
    int n = 0;  // the other 68 bytes, in order, become 256, 257, ...
    for (int k = 0; k < b; k++)
        if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255))) n++;
    return 256u + (unsigned)n;
}

// Reads one UTF-8 code point (s must be valid UTF-8); returns its length.
static int utf8_get(const unsigned char *s, size_t n, unsigned *cp) {
    int k = utf8_seq_len(s, n);
    if (k == 1) *cp = s[0];
    else if (k == 2) *cp = (s[0] & 0x1Fu) << 6 | (s[1] & 0x3Fu);
    else if (k == 3) *cp = (s[0] & 0x0Fu) << 12 | (s[1] & 0x3Fu) << 6 | (s[2] & 0x3Fu);
    else if (k == 4) *cp = (s[0] & 0x07u) << 18 | (s[1] & 0x3Fu) << 12 | (s[2] & 0x3Fu) << 6 | (s[3] & 0x3Fu);
    return k;
}

// ---- UTF-8 repair: each maximal subpart of an ill-formed sequence becomes U+FFFD ----

// Length of the maximal subpart at s (>= 1), and *ok when it is a whole character.
static int utf8_subpart(const unsigned char *s, size_t n, int *ok) {
    unsigned c = s[0];
    *ok = 0;
    if (c < 0x80) return *ok = 1, 1;
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 1;
    int k = 1;
    for (; k <= need; k++) {
        if ((size_t)k >= n) return k;
        unsigned d = s[k];
        if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return k;
    }
    *ok = 1;
    return k;
}

// s with every ill-formed part replaced (malloc'd into *out, *out_n bytes).
static int utf8_lossy(const char *s, size_t n, char **out, size_t *out_n) {
    char *o = malloc(n * 3 + 1);  // U+FFFD is 3 bytes for at least 1 input byte
    if (!o) return ql_err(QL_ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        int ok, m = utf8_subpart((const unsigned char *)s + i, n - i, &ok);
        if (ok) memcpy(o + k, s + i, (size_t)m), k += (size_t)m;
        else memcpy(o + k, "\xEF\xBF\xBD", 3), k += 3;
        i += (size_t)m;
    }
    o[k] = '\0';
    *out = o, *out_n = k;
    return QL_OK;
}

// ---- hash tables ----

static uint64_t fnv(const char *s, int n) {
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static int map_init(str_map *m, int n) {
    m->cap = 16;
    while (m->cap < (size_t)n * 2) m->cap *= 2;
    m->slot = calloc(m->cap, sizeof *m->slot);
    return m->slot ? QL_OK : ql_err(QL_ENOMEM, "out of memory");
}

// The id stored under s, or -1; strs/lens give each id's key.
static int map_get(const str_map *m, char *const *strs, const int *lens, const char *s, int n) {
    for (size_t i = fnv(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int id = m->slot[i] - 1;
        if (id < 0) return -1;
        int len = lens ? lens[id] : (int)strlen(strs[id]);
        if (len == n && !memcmp(strs[id], s, (size_t)n)) return id;
    }
}

// Puts id under its key; returns the id already there (a duplicate) or -1.
static int map_put(str_map *m, char *const *strs, const int *lens, int id) {
    const char *s = strs[id];
    int n = lens ? lens[id] : (int)strlen(s);
    size_t i = fnv(s, n) & (m->cap - 1);
    for (; m->slot[i]; i = (i + 1) & (m->cap - 1)) {
        int o = m->slot[i] - 1;
        int len = lens ? lens[o] : (int)strlen(strs[o]);
        if (len == n && !memcmp(strs[o], s, (size_t)n)) return o;
    }
    m->slot[i] = id + 1;
    return -1;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33, x *= 0xff51afd7ed558ccdULL, x ^= x >> 33;
    return x;
}

static int pairs_init(pair_map *p, int n) {
    p->cap = 16;
    while (p->cap < (size_t)n * 2) p->cap *= 2;
    p->key = calloc(p->cap, sizeof *p->key);
    p->rank = malloc(p->cap * sizeof *p->rank);
    p->merged = malloc(p->cap * sizeof *p->merged);
    return p->key && p->rank && p->merged ? QL_OK : ql_err(QL_ENOMEM, "out of memory");
}

// The slot of (a, b): found, or the empty one where it would go.
static size_t pairs_slot(const pair_map *p, int a, int b) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t i = mix64(k) & (p->cap - 1);
    while (p->key[i] && p->key[i] != k) i = (i + 1) & (p->cap - 1);
    return i;
}

// ---- loading ----

void bpe_free(bpe *b) {
    if (!b) return;
    for (int i = 0; i < b->n_ids; i++) free(b->piece[i]), free(b->raw[i]);
    free(b->piece), free(b->raw), free(b->rawlen);
    free(b->by_raw.slot), free(b->by_piece.slot);
    free(b->merges.key), free(b->merges.rank), free(b->merges.merged);
    free(b->mleft), free(b->mright);
    for (int i = 0; i < b->n_added; i++) free(b->added[i].text);
    free(b->added);
    for (int i = 0; i < 256; i++) free(b->added_by_first[i]);
    for (int i = 0; i < b->n_splits; i++) pcre2_code_free(b->split[i]), free(b->split_src[i]);
    free(b);
}

#define BAD(...) ql_err(QL_EFORMAT, __VA_ARGS__)

// A piece's bytes: each code point through the byte-level map reversed.
static int piece_raw(const bpe *b, const int *cp_byte, const char *piece, char **raw, int *rawlen) {
    size_t n = strlen(piece);
    char *o = malloc(n + 1);
    if (!o) return ql_err(QL_ENOMEM, "out of memory");
    int k = 0;
    for (size_t i = 0; i < n;) {
        unsigned cp = 0;
        int m = utf8_get((const unsigned char *)piece + i, n - i, &cp);
        if (m == 0 || cp >= 324 || cp_byte[cp] < 0) {
            free(o);
            return BAD("%s: model.vocab: the piece \"%.60s\" is not byte-level (a character outside GPT-2's byte map)",
                       b->name, piece);
        }
        o[k++] = (char)cp_byte[cp];
        i += (size_t)m;
    }
    o[k] = '\0';
    *raw = o, *rawlen = k;
    return QL_OK;
}

static int need_type(const json_doc *d, int v, const char *field, const char *want_type, const char *name) {
    int t = v >= 0 ? json_find(d, v, "type") : -1;
    if (t < 0 || json_type(d, t) != JSON_STRING) return BAD("%s: %s: expected an object with a \"type\"", name, field);
    if (!json_eq(d, t, want_type)) {
        int n = d->tok[t].end - d->tok[t].start;
        return ql_err(QL_EUNSUP, "%s: %s: type \"%.*s\" is not supported (only %s)", name, field, n > 40 ? 40 : n,
                      d->js + d->tok[t].start, want_type);
    }
    return QL_OK;
}

// A field that must be absent, null, false, or an empty string.
static int need_off(const json_doc *d, int obj, const char *key, const char *field, const char *name) {
    int v = json_find(d, obj, key);
    if (v < 0 || json_is_null(d, v)) return QL_OK;
    const char *s = d->js + d->tok[v].start;
    int n = d->tok[v].end - d->tok[v].start;
    if ((json_type(d, v) == JSON_PRIMITIVE && n == 5 && !memcmp(s, "false", 5)) || (json_type(d, v) == JSON_STRING && n == 0))
        return QL_OK;
    return ql_err(QL_EUNSUP, "%s: %s.%s is %.*s: not supported (only null)", name, field, key, n > 40 ? 40 : n, s);
}

static int add_split(bpe *b, const char *pattern, int literal, const char *field) {
    if (b->n_splits == BPE_MAX_SPLITS) return ql_err(QL_EUNSUP, "%s: %s: more than %d Split pre-tokenizers", b->name, field, BPE_MAX_SPLITS);
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0), &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return BAD("%s: %s.pattern: the regex does not compile at offset %zu: %s", b->name, field, (size_t)off, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // when JIT is unavailable, matching still works, slower
    if (!(b->split_src[b->n_splits] = strdup(pattern))) {
        pcre2_code_free(re);
        return ql_err(QL_ENOMEM, "out of memory");
    }
    b->split[b->n_splits++] = re;
    return QL_OK;
}

// GPT-2's own pattern, which ByteLevel with use_regex applies.
static const char *const gpt2_pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pretok(bpe *b, const json_doc *d, int v, const char *field) {
    int t = json_find(d, v, "type");
    if (t < 0) return BAD("%s: %s: expected an object with a \"type\"", b->name, field);
    char f[128];
    if (json_eq(d, t, "Sequence")) {
        int arr = json_find(d, v, "pretokenizers");
        if (arr < 0 || json_type(d, arr) != JSON_ARRAY) return BAD("%s: %s.pretokenizers: expected a list", b->name, field);
        for (int k = 0; k < json_size(d, arr); k++) {
            snprintf(f, sizeof f, "%s.pretokenizers[%d]", field, k);
            QL_CHECK(parse_pretok(b, d, json_item(d, arr, k), f));
        }
        return QL_OK;
    }
    if (json_eq(d, t, "Split")) {
        int pat = json_find(d, v, "pattern"), beh = json_find(d, v, "behavior"), inv = json_find(d, v, "invert");
        if (beh < 0 || !json_eq(d, beh, "Isolated"))
            return ql_err(QL_EUNSUP, "%s: %s.behavior: only \"Isolated\" is supported", b->name, field);
        if (inv >= 0 && !(json_type(d, inv) == JSON_PRIMITIVE && d->js[d->tok[inv].start] == 'f'))
            return ql_err(QL_EUNSUP, "%s: %s.invert: only false is supported", b->name, field);
        int re = pat >= 0 ? json_find(d, pat, "Regex") : -1, lit = pat >= 0 ? json_find(d, pat, "String") : -1;
        char *s = NULL;
        if (re < 0 && lit < 0) return BAD("%s: %s.pattern: expected {\"Regex\": ...} or {\"String\": ...}", b->name, field);
        snprintf(f, sizeof f, "%s.pattern", field);
        QL_CHECK(json_get_string(d, re >= 0 ? re : lit, f, &s, NULL));
        int rc = add_split(b, s, re < 0, field);
        free(s);
        return rc;
    }
    if (json_eq(d, t, "ByteLevel")) {
        int ap = json_find(d, v, "add_prefix_space"), ur = json_find(d, v, "use_regex");
        b->add_prefix_space = ap >= 0 && d->js[d->tok[ap].start] == 't';
        if (ur < 0 || d->js[d->tok[ur].start] == 't') QL_CHECK(add_split(b, gpt2_pattern, 0, field));
        return QL_OK;
    }
    int n = d->tok[t].end - d->tok[t].start;
    return ql_err(QL_EUNSUP, "%s: %s: pre-tokenizer \"%.*s\" is not supported (Sequence, Split, ByteLevel are)", b->name,
                  field, n > 40 ? 40 : n, d->js + d->tok[t].start);
}

// post_processor: ByteLevel (nothing to add), TemplateProcessing (its "single" template:
// a SpecialToken before the sequence is the BOS it adds), or a Sequence of those.
static int parse_post(bpe *b, const json_doc *d, int v, const char *field) {
    int t = json_find(d, v, "type");
    if (t < 0) return BAD("%s: %s: expected an object with a \"type\"", b->name, field);
    char f[128];
    if (json_eq(d, t, "ByteLevel")) return QL_OK;
    if (json_eq(d, t, "Sequence")) {
        int arr = json_find(d, v, "processors");
        if (arr < 0 || json_type(d, arr) != JSON_ARRAY) return BAD("%s: %s.processors: expected a list", b->name, field);
        for (int k = 0; k < json_size(d, arr); k++) {
            snprintf(f, sizeof f, "%s.processors[%d]", field, k);
            QL_CHECK(parse_post(b, d, json_item(d, arr, k), f));
        }
        return QL_OK;
    }
    if (json_eq(d, t, "TemplateProcessing")) {
        b->post_template = 1;
        int single = json_find(d, v, "single");
        if (single < 0 || json_type(d, single) != JSON_ARRAY || json_size(d, single) < 1)
            return BAD("%s: %s.single: expected a non-empty list", b->name, field);
        int first = json_item(d, single, 0), st = json_find(d, first, "SpecialToken");
        if (st < 0) return QL_OK;  // the sequence first: no BOS
        int id = json_find(d, st, "id");
        char *name = NULL;
        snprintf(f, sizeof f, "%s.single[0].SpecialToken.id", field);
        if (id < 0) return BAD("%s: %s: missing", b->name, f);
        QL_CHECK(json_get_string(d, id, f, &name, NULL));
        // the special_tokens table names its ids; one id is a BOS
        int sp = json_find(d, v, "special_tokens"), e = sp >= 0 ? json_find(d, sp, name) : -1;
        int ids = e >= 0 ? json_find(d, e, "ids") : -1;
        long long x = -1;
        int rc = ids >= 0 && json_size(d, ids) == 1 ? json_get_int(d, json_item(d, ids, 0), f, &x)
                                                    : BAD("%s: %s.special_tokens[\"%.60s\"].ids: expected one id", b->name, field, name);
        free(name);
        QL_CHECK(rc);
        b->post_bos = (int)x;
        return QL_OK;
    }
    int n = d->tok[t].end - d->tok[t].start;
    return ql_err(QL_EUNSUP, "%s: %s: post-processor \"%.*s\" is not supported (ByteLevel, TemplateProcessing, Sequence are)",
                  b->name, field, n > 40 ? 40 : n, d->js + d->tok[t].start);
}

static int cmp_added_len(const void *x, const void *y, void *ctx) {
    const bpe *b = ctx;
    return b->added[*(const int *)y].len - b->added[*(const int *)x].len;
}

static int load_doc(bpe *b, const json_doc *d) {
    const char *nm = b->name;
    if (json_type(d, 0) != JSON_OBJECT) return BAD("%s: expected a JSON object", nm);
    int v = json_find(d, 0, "normalizer");
    if (v >= 0 && !json_is_null(d, v)) {
        int t = json_find(d, v, "type");
        int n = t >= 0 ? d->tok[t].end - d->tok[t].start : 0;
        return ql_err(QL_EUNSUP, "%s: normalizer \"%.*s\" is not supported (byte-level BPE tokenizers have none)", nm,
                      n > 40 ? 40 : n, t >= 0 ? d->js + d->tok[t].start : "");
    }
    v = json_find(d, 0, "pre_tokenizer");
    if (v >= 0 && !json_is_null(d, v)) QL_CHECK(parse_pretok(b, d, v, "pre_tokenizer"));
    v = json_find(d, 0, "post_processor");
    b->post_bos = -1;
    if (v >= 0 && !json_is_null(d, v)) QL_CHECK(parse_post(b, d, v, "post_processor"));
    v = json_find(d, 0, "decoder");
    if (v < 0 || json_is_null(d, v)) return ql_err(QL_EUNSUP, "%s: decoder: missing (a ByteLevel decoder is needed)", nm);
    QL_CHECK(need_type(d, v, "decoder", "ByteLevel", nm));
    int model = json_find(d, 0, "model");
    if (model < 0 || json_type(d, model) != JSON_OBJECT) return BAD("%s: model: missing", nm);
    QL_CHECK(need_type(d, model, "model", "BPE", nm));
    QL_CHECK(need_off(d, model, "dropout", "model", nm));
    QL_CHECK(need_off(d, model, "continuing_subword_prefix", "model", nm));
    QL_CHECK(need_off(d, model, "end_of_word_suffix", "model", nm));
    QL_CHECK(need_off(d, model, "byte_fallback", "model", nm));
    int im = json_find(d, model, "ignore_merges");
    b->ignore_merges = im >= 0 && d->js[d->tok[im].start] == 't';
    // the vocabulary: {"piece": id, ...}
    int voc = json_find(d, model, "vocab");
    if (voc < 0 || json_type(d, voc) != JSON_OBJECT) return BAD("%s: model.vocab: expected an object of piece: id", nm);
    int nv = json_size(d, voc), maxid = -1;
    // members in order, each key's value right after it (json_member is linear per call)
    for (int k = 0, key = voc + 1, val; k < nv; k++, key = json_next(d, val)) {
        val = key + 1;
        long long id;
        if (json_get_int(d, val, "model.vocab", &id)) return BAD("%s: model.vocab: entry %d: expected an integer id", nm, k);
        if (id < 0 || id >= (1 << 24)) return BAD("%s: model.vocab: id %lld out of range", nm, id);
        if (id > maxid) maxid = (int)id;
    }
    // added tokens may use ids past the vocabulary
    int at = json_find(d, 0, "added_tokens");
    if (at >= 0 && json_type(d, at) != JSON_ARRAY) return BAD("%s: added_tokens: expected a list", nm);
    int na = at >= 0 ? json_size(d, at) : 0;
    for (int k = 0; k < na; k++) {
        int it = json_item(d, at, k), idv = json_find(d, it, "id");
        long long id;
        if (idv < 0 || json_get_int(d, idv, "added_tokens[].id", &id) || id < 0 || id >= (1 << 24))
            return BAD("%s: added_tokens[%d].id: expected an id in [0, 2^24)", nm, k);
        if (id > maxid) maxid = (int)id;
    }
    b->n_vocab = b->n_ids = maxid + 1;
    b->piece = calloc((size_t)b->n_ids, sizeof *b->piece);
    b->raw = calloc((size_t)b->n_ids, sizeof *b->raw);
    b->rawlen = calloc((size_t)b->n_ids, sizeof *b->rawlen);
    if (!b->piece || !b->raw || !b->rawlen) return ql_err(QL_ENOMEM, "out of memory");
    int cp_byte[324];
    for (int i = 0; i < 324; i++) cp_byte[i] = -1;
    for (int c = 0; c < 256; c++) cp_byte[byte_cp(c)] = c;
    QL_CHECK(map_init(&b->by_raw, nv));
    QL_CHECK(map_init(&b->by_piece, nv + na));
    for (int k = 0, key = voc + 1, val; k < nv; k++, key = json_next(d, val)) {
        val = key + 1;
        long long id;
        json_get_int(d, val, "model.vocab", &id);
        if (b->piece[id]) return BAD("%s: model.vocab: id %lld is given twice", nm, id);
        QL_CHECK(json_get_string(d, key, "model.vocab", &b->piece[id], NULL));
        QL_CHECK(piece_raw(b, cp_byte, b->piece[id], &b->raw[id], &b->rawlen[id]));
        if (map_put(&b->by_raw, b->raw, b->rawlen, (int)id) >= 0 || map_put(&b->by_piece, b->piece, NULL, (int)id) >= 0)
            return BAD("%s: model.vocab: the piece \"%.60s\" is given twice", nm, b->piece[id]);
    }
    for (int c = 0; c < 256; c++) {
        char s = (char)c;
        b->byte_id[c] = map_get(&b->by_raw, b->raw, b->rawlen, &s, 1);
        if (b->byte_id[c] < 0) return BAD("%s: model.vocab: no piece for the byte 0x%02X (a byte-level vocabulary has all 256)", nm, c);
    }
    // merges: "a b" strings or ["a", "b"] pairs, by rank
    int mg = json_find(d, model, "merges");
    if (mg < 0 || json_type(d, mg) != JSON_ARRAY) return BAD("%s: model.merges: expected a list", nm);
    int nm_ = json_size(d, mg);
    QL_CHECK(pairs_init(&b->merges, nm_));
    b->mleft = malloc(sizeof(int) * (size_t)(nm_ + 1));
    b->mright = malloc(sizeof(int) * (size_t)(nm_ + 1));
    if (!b->mleft || !b->mright) return ql_err(QL_ENOMEM, "out of memory");
    strbuf cat = {0};
    int rc = QL_OK;
    for (int r = 0, it = mg + 1; r < nm_ && !rc; r++, it = json_next(d, it)) {
        char *l = NULL, *rt = NULL;
        if (json_type(d, it) == JSON_STRING) {
            rc = json_get_string(d, it, "model.merges", &l, NULL);
            char *sp = rc ? NULL : strchr(l, ' ');
            if (!rc && (!sp || strchr(sp + 1, ' '))) rc = BAD("%s: model.merges[%d]: \"%.60s\": expected two pieces separated by one space", nm, r, l);
            if (!rc) *sp = '\0', rt = sp + 1;
        } else if (json_type(d, it) == JSON_ARRAY && json_size(d, it) == 2) {
            rc = json_get_string(d, json_item(d, it, 0), "model.merges", &l, NULL);
            char *r2 = NULL;
            if (!rc) rc = json_get_string(d, json_item(d, it, 1), "model.merges", &r2, NULL);
            if (!rc) {  // keep one allocation: "l\0r"
                size_t a = strlen(l), c = strlen(r2);
                char *both = realloc(l, a + c + 2);
                if (!both) rc = ql_err(QL_ENOMEM, "out of memory");
                else l = both, memcpy(l + a + 1, r2, c + 1), rt = l + a + 1;
            }
            free(r2);
        } else rc = BAD("%s: model.merges[%d]: expected \"a b\" or [\"a\", \"b\"]", nm, r);
        int a = rc ? -1 : map_get(&b->by_piece, b->piece, NULL, l, (int)strlen(l));
        int c = rc ? -1 : map_get(&b->by_piece, b->piece, NULL, rt, (int)strlen(rt));
        if (!rc && (a < 0 || c < 0))
            rc = BAD("%s: model.merges[%d]: \"%.60s\" is not a piece of model.vocab", nm, r, a < 0 ? l : rt);
        if (!rc) {
            cat.n = 0;
            rc = sb_addn(&cat, b->raw[a], (size_t)b->rawlen[a]);
            if (!rc) rc = sb_addn(&cat, b->raw[c], (size_t)b->rawlen[c]);
        }
        int m = rc ? -1 : map_get(&b->by_raw, b->raw, b->rawlen, cat.s, (int)cat.n);
        if (!rc && m < 0) rc = BAD("%s: model.merges[%d]: \"%s\" + \"%s\" is not a piece of model.vocab", nm, r, l, rt);
        if (!rc) {
            b->mleft[b->n_merges] = a, b->mright[b->n_merges++] = c;
            size_t s = pairs_slot(&b->merges, a, c);
            if (!b->merges.key[s]) {  // the first (lowest) rank of a pair given twice wins
                b->merges.key[s] = ((uint64_t)(uint32_t)a << 32 | (uint32_t)c) + 1;
                b->merges.rank[s] = r, b->merges.merged[s] = m;
            }
        }
        free(l);
    }
    sb_free(&cat);
    QL_CHECK(rc);
    // added tokens
    b->added = calloc((size_t)(na ? na : 1), sizeof *b->added);
    if (!b->added) return ql_err(QL_ENOMEM, "out of memory");
    for (int k = 0; k < na; k++) {
        int it = json_item(d, at, k), c = json_find(d, it, "content");
        added_token *t = &b->added[b->n_added];
        char f[64];
        snprintf(f, sizeof f, "added_tokens[%d].content", k);
        if (c < 0) return BAD("%s: %s: missing", nm, f);
        QL_CHECK(json_get_string(d, c, f, &t->text, NULL));
        b->n_added++;
        t->len = (int)strlen(t->text);
        if (t->len == 0) return BAD("%s: %s: empty", nm, f);
        long long id;
        json_get_int(d, json_find(d, it, "id"), "id", &id);
        t->id = (int)id;
        int sw = json_find(d, it, "single_word"), sp = json_find(d, it, "special"), ls = json_find(d, it, "lstrip"),
            rs = json_find(d, it, "rstrip");
        if (sw >= 0 && d->js[d->tok[sw].start] == 't')
            return ql_err(QL_EUNSUP, "%s: added_tokens[%d].single_word: true is not supported", nm, k);
        t->special = sp >= 0 && d->js[d->tok[sp].start] == 't';
        t->lstrip = ls >= 0 && d->js[d->tok[ls].start] == 't';
        t->rstrip = rs >= 0 && d->js[d->tok[rs].start] == 't';
        if (b->piece[id] && strcmp(b->piece[id], t->text))
            return BAD("%s: added_tokens[%d]: id %lld is already the piece \"%.60s\"", nm, k, id, b->piece[id]);
        if (!b->piece[id]) {
            if (!(b->piece[id] = strdup(t->text)) || !(b->raw[id] = strdup(t->text))) return ql_err(QL_ENOMEM, "out of memory");
            b->rawlen[id] = t->len;
            map_put(&b->by_piece, b->piece, NULL, (int)id);
        } else {  // an added token that is also a vocabulary piece: it decodes to its text
            free(b->raw[id]);
            if (!(b->raw[id] = strdup(t->text))) return ql_err(QL_ENOMEM, "out of memory");
            b->rawlen[id] = t->len;
        }
    }
    int count[256] = {0};
    for (int k = 0; k < b->n_added; k++) count[(unsigned char)b->added[k].text[0]]++;
    for (int c = 0; c < 256; c++) {
        if (!count[c]) continue;
        int *l = malloc(sizeof(int) * (size_t)(count[c] + 1)), n = 0;
        if (!l) return ql_err(QL_ENOMEM, "out of memory");
        for (int k = 0; k < b->n_added; k++)
            if ((unsigned char)b->added[k].text[0] == c) l[n++] = k;
        qsort_r(l, (size_t)n, sizeof *l, cmp_added_len, b);
        l[n] = -1;
        b->added_by_first[c] = l;
    }
    return QL_OK;
}

int bpe_load_mem(bpe **out, const char *js, size_t len, const char *name) {
    *out = NULL;
    bpe *b = calloc(1, sizeof *b);
    if (!b) return ql_err(QL_ENOMEM, "out of memory");
    snprintf(b->name, sizeof b->name, "%s", name);
    int ok, bad_at = -1;
    for (size_t i = 0; i < len && bad_at < 0;) {  // a JSON file is UTF-8
        int m = utf8_subpart((const unsigned char *)js + i, len - i, &ok);
        if (!ok) bad_at = (int)i;
        i += (size_t)m;
    }
    json_doc d;
    int rc = bad_at >= 0 ? BAD("%s: not UTF-8 (an ill-formed byte sequence at byte %d)", name, bad_at)
                         : json_parse(&d, js, len, b->name);
    if (!rc) {
        rc = load_doc(b, &d);
        json_free(&d);
    }
    if (rc) {
        bpe_free(b);
        return rc;
    }
    *out = b;
    return QL_OK;
}

int bpe_load_file(bpe **out, const char *path) {
    char *buf;
    size_t len;
    *out = NULL;
    QL_CHECK(file_read_all(path, BPE_FILE_LIMIT, &buf, &len));
    int rc = bpe_load_mem(out, buf, len, path);
    free(buf);
    return rc;
}

int bpe_vocab_size(const bpe *b) { return b->n_ids; }

int bpe_token_id(const bpe *b, const char *text) { return map_get(&b->by_piece, b->piece, NULL, text, (int)strlen(text)); }

const char *bpe_piece(const bpe *b, int id) { return id >= 0 && id < b->n_ids ? b->piece[id] : NULL; }

int bpe_n_merges(const bpe *b) { return b->n_merges; }

int bpe_post_bos(const bpe *b) { return b->post_template ? b->post_bos : -2; }

const char *bpe_split_pattern(const bpe *b, int k) { return k >= 0 && k < b->n_splits ? b->split_src[k] : NULL; }

void bpe_merge(const bpe *b, int r, int *left, int *right) { *left = b->mleft[r], *right = b->mright[r]; }

int bpe_is_added(const bpe *b, int id) {
    for (int k = 0; k < b->n_added; k++)
        if (b->added[k].id == id) return 1;
    return 0;
}

int bpe_is_special(const bpe *b, int id) {
    for (int k = 0; k < b->n_added; k++)
        if (b->added[k].id == id) return b->added[k].special;
    return 0;
}

// ---- encoding ----

typedef struct {
    int *ids;
    int n, cap;
} idvec;

static int push_id(idvec *v, int id) {
    if (v->n == v->cap) {
        int cap = v->cap ? 2 * v->cap : 256;
        int *p = realloc(v->ids, sizeof(int) * (size_t)cap);
        if (!p) return ql_err(QL_ENOMEM, "out of memory");
        v->ids = p, v->cap = cap;
    }
    v->ids[v->n++] = id;
    return QL_OK;
}

typedef struct {
    int rank, pos, left, right;
} merge_cand;

static int cand_less(const merge_cand *a, const merge_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(merge_cand *h, int *n, merge_cand c) {
    int i = (*n)++;
    h[i] = c;
    while (i > 0 && cand_less(&h[i], &h[(i - 1) / 2])) {
        merge_cand t = h[i];
        h[i] = h[(i - 1) / 2], h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static merge_cand heap_pop(merge_cand *h, int *n) {
    merge_cand top = h[0];
    h[0] = h[--*n];
    for (int i = 0;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && cand_less(&h[l], &h[m])) m = l;
        if (r < *n && cand_less(&h[r], &h[m])) m = r;
        if (m == i) break;
        merge_cand t = h[i];
        h[i] = h[m], h[m] = t;
        i = m;
    }
    return top;
}

// Scratch for one word's merges, reused across words.
typedef struct {
    int *sym, *prev, *next;
    merge_cand *heap;
    int cap;
} bpe_work;

static void try_pair(const bpe *b, bpe_work *w, int *nh, int i) {
    int j = w->next[i];
    if (j < 0) return;
    size_t s = pairs_slot(&b->merges, w->sym[i], w->sym[j]);
    if (b->merges.key[s]) heap_push(w->heap, nh, (merge_cand){b->merges.rank[s], i, w->sym[i], w->sym[j]});
}

// One pre-token's bytes -> ids.
static int encode_word(const bpe *b, bpe_work *w, const char *s, int n, idvec *out) {
    if (n == 0) return QL_OK;
    if (b->ignore_merges || n == 1) {
        int id = map_get(&b->by_raw, b->raw, b->rawlen, s, n);
        if (id >= 0) return push_id(out, id);
    }
    if (n > w->cap) {
        int cap = n * 2;
        int *a = realloc(w->sym, sizeof(int) * (size_t)cap), *p = a ? realloc(w->prev, sizeof(int) * (size_t)cap) : NULL;
        if (a) w->sym = a;
        if (p) w->prev = p;
        int *x = p ? realloc(w->next, sizeof(int) * (size_t)cap) : NULL;
        if (x) w->next = x;
        merge_cand *h = x ? realloc(w->heap, sizeof(merge_cand) * (size_t)cap * 2) : NULL;
        if (!h) return ql_err(QL_ENOMEM, "out of memory");
        w->heap = h, w->cap = cap;
    }
    for (int i = 0; i < n; i++) w->sym[i] = b->byte_id[(unsigned char)s[i]], w->prev[i] = i - 1, w->next[i] = i + 1 < n ? i + 1 : -1;
    int nh = 0;
    for (int i = 0; i + 1 < n; i++) try_pair(b, w, &nh, i);
    while (nh > 0) {
        merge_cand c = heap_pop(w->heap, &nh);
        int i = c.pos, j = w->next[i];
        if (w->sym[i] != c.left || j < 0 || w->sym[j] != c.right) continue;  // stale
        size_t slot = pairs_slot(&b->merges, c.left, c.right);
        w->sym[i] = b->merges.merged[slot];
        w->sym[j] = -1;  // gone
        w->next[i] = w->next[j];
        if (w->next[j] >= 0) w->prev[w->next[j]] = i;
        if (w->prev[i] >= 0) try_pair(b, w, &nh, w->prev[i]);
        try_pair(b, w, &nh, i);
    }
    for (int i = 0; i >= 0; i = w->next[i]) QL_CHECK(push_id(out, w->sym[i]));
    return QL_OK;
}

// Text without added tokens: prefix space, the Split regexes, then BPE per piece.
static int encode_plain(const bpe *b, bpe_work *w, pcre2_match_data *md, const char *s, size_t n, idvec *out) {
    if (n == 0) return QL_OK;
    char *tmp = NULL;
    if (b->add_prefix_space && s[0] != ' ') {
        if (!(tmp = malloc(n + 1))) return ql_err(QL_ENOMEM, "out of memory");
        tmp[0] = ' ', memcpy(tmp + 1, s, n), s = tmp, n++;
    }
    // pieces: [start, end) pairs, split by each regex in turn
    size_t cap = 64, np = 1;
    size_t *pc = malloc(sizeof(size_t) * 2 * cap);
    int rc = pc ? QL_OK : ql_err(QL_ENOMEM, "out of memory");
    if (pc) pc[0] = 0, pc[1] = n;
    for (int r = 0; r < b->n_splits && !rc; r++) {
        size_t *npc = malloc(sizeof(size_t) * 2 * cap), nn = 0, ncap = cap;
        if (!npc) { rc = ql_err(QL_ENOMEM, "out of memory"); break; }
#define EMIT(a, z)                                                               \
    do {                                                                         \
        if (nn == ncap) {                                                        \
            size_t *g = realloc(npc, sizeof(size_t) * 4 * ncap);                 \
            if (!g) { rc = ql_err(QL_ENOMEM, "out of memory"); goto split_done; } \
            npc = g, ncap *= 2;                                                  \
        }                                                                        \
        npc[2 * nn] = (a), npc[2 * nn + 1] = (z), nn++;                          \
    } while (0)
        for (size_t p = 0; p < np; p++) {
            size_t a = pc[2 * p], z = pc[2 * p + 1], at = a;
            while (at < z) {
                // the text is valid UTF-8 already (utf8_lossy): no check per call, which would make this quadratic
                int m = pcre2_match(b->split[r], (PCRE2_SPTR)s + a, z - a, at - a, PCRE2_NO_UTF_CHECK, md, NULL);
                if (m < 0) break;
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                size_t ms = a + ov[0], me = a + ov[1];
                if (me == ms) {  // an empty match: step one character
                    int ok, k = utf8_subpart((const unsigned char *)s + ms, z - ms, &ok);
                    if (ms >= z) break;
                    at = ms + (size_t)k;
                    continue;
                }
                if (ms > at) EMIT(at, ms);
                EMIT(ms, me);
                at = me;
            }
            if (at < z) EMIT(at, z);
        }
#undef EMIT
    split_done:
        free(pc);
        pc = npc, np = nn, cap = ncap;
    }
    for (size_t p = 0; p < np && !rc; p++) rc = encode_word(b, w, s + pc[2 * p], (int)(pc[2 * p + 1] - pc[2 * p]), out);
    free(pc), free(tmp);
    return rc;
}

// The longest added token whose text starts at s[i], or -1 (special ones only with BPE_SPECIAL).
static int match_added(const bpe *b, const char *s, size_t i, size_t n, int flags) {
    const int *l = b->added_by_first[(unsigned char)s[i]];
    for (int k = 0; l && l[k] >= 0; k++) {
        const added_token *t = &b->added[l[k]];
        if (t->special && !(flags & BPE_SPECIAL)) continue;
        if ((size_t)t->len <= n - i && !memcmp(s + i, t->text, (size_t)t->len)) return l[k];
    }
    return -1;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

int bpe_encode(const bpe *b, const char *text, size_t len, int flags, int **ids_out, int *n_out) {
    *ids_out = NULL, *n_out = 0;
    char *s;
    size_t n;
    QL_CHECK(utf8_lossy(text, len, &s, &n));
    idvec out = {0};
    bpe_work w = {0};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = md ? QL_OK : ql_err(QL_ENOMEM, "out of memory");
    size_t from = 0;
    for (size_t i = 0; i < n && !rc;) {
        int k = b->n_added ? match_added(b, s, i, n, flags) : -1;
        if (k < 0) {
            i++;
            continue;
        }
        const added_token *t = &b->added[k];
        size_t a = i, z = i + (size_t)t->len;
        if (t->lstrip) while (a > from && is_space(s[a - 1])) a--;
        if (t->rstrip) while (z < n && is_space(s[z])) z++;
        rc = encode_plain(b, &w, md, s + from, a - from, &out);
        if (!rc) rc = push_id(&out, t->id);
        from = i = z;
    }
    if (!rc) rc = encode_plain(b, &w, md, s + from, n - from, &out);
    pcre2_match_data_free(md);
    free(w.sym), free(w.prev), free(w.next), free(w.heap), free(s);
    if (rc) {
        free(out.ids);
        return rc;
    }
    if (!out.ids && !(out.ids = malloc(sizeof(int)))) return ql_err(QL_ENOMEM, "out of memory");
    *ids_out = out.ids, *n_out = out.n;
    return QL_OK;
}

// ---- decoding ----

int bpe_token_bytes(const bpe *b, int id, char *buf, size_t cap) {
    if (id < 0 || id >= b->n_ids || !b->raw[id] || (size_t)b->rawlen[id] > cap) return -1;
    memcpy(buf, b->raw[id], (size_t)b->rawlen[id]);
    return b->rawlen[id];
}

int bpe_decode(const bpe *b, const int *ids, int n, char **text_out, size_t *len_out) {
    *text_out = NULL;
    strbuf raw = {0};
    int rc = QL_OK;
    for (int i = 0; i < n && !rc; i++) {
        if (ids[i] < 0 || ids[i] >= b->n_ids || !b->raw[ids[i]])
            rc = ql_err(QL_EINVAL, "decode: id %d at index %d is not a token (0..%d)", ids[i], i, b->n_ids - 1);
        else rc = sb_addn(&raw, b->raw[ids[i]], (size_t)b->rawlen[ids[i]]);
    }
    size_t k = 0;
    if (!rc) rc = utf8_lossy(raw.s ? raw.s : "", raw.n, text_out, &k);
    sb_free(&raw);
    if (len_out) *len_out = k;
    return rc;
}

// ---- streaming decode ----

struct bpe_stream {
    const bpe *b;
    strbuf held;   // bytes of a character not yet whole
    strbuf out;    // what the last call returns
};

int bpe_stream_init(bpe_stream **out, const bpe *b) {
    *out = calloc(1, sizeof **out);
    if (!*out) return ql_err(QL_ENOMEM, "out of memory");
    (*out)->b = b;
    return QL_OK;
}

void bpe_stream_free(bpe_stream *st) {
    if (!st) return;
    sb_free(&st->held), sb_free(&st->out);
    free(st);
}

void bpe_stream_reset(bpe_stream *st) { st->held.n = 0; }

// Moves what is final from held to out: every whole character and every ill-formed
// part, but not a tail that more bytes could still complete (all of it when last).
static int stream_flush(bpe_stream *st, int last) {
    st->out.n = 0;
    QL_CHECK(sb_add(&st->out, ""));
    const unsigned char *s = (const unsigned char *)st->held.s;
    size_t n = st->held.n, i = 0;
    while (i < n) {
        int ok, k = utf8_subpart(s + i, n - i, &ok);
        if (!ok && !last && i + (size_t)k == n && k < 4) {  // ran out of bytes: maybe the rest is coming
            unsigned c = s[i];
            if ((c >= 0xC2 && c <= 0xF4)) break;
        }
        QL_CHECK(ok ? sb_addn(&st->out, (const char *)s + i, (size_t)k) : sb_addn(&st->out, "\xEF\xBF\xBD", 3));
        i += (size_t)k;
    }
    sb_consume(&st->held, i);
    return QL_OK;
}

int bpe_stream_push(bpe_stream *st, int id, const char **text_out, size_t *len_out) {
    const bpe *b = st->b;
    if (id < 0 || id >= b->n_ids || !b->raw[id])
        return ql_err(QL_EINVAL, "decode: id %d is not a token (0..%d)", id, b->n_ids - 1);
    QL_CHECK(sb_addn(&st->held, b->raw[id], (size_t)b->rawlen[id]));
    QL_CHECK(stream_flush(st, 0));
    *text_out = st->out.s, *len_out = st->out.n;
    return QL_OK;
}

int bpe_stream_finish(bpe_stream *st, const char **text_out, size_t *len_out) {
    QL_CHECK(stream_flush(st, 1));
    *text_out = st->out.s, *len_out = st->out.n;
    return QL_OK;
}
